"""The training examples of a recipe: its task's, or a mixture of sources (`sources`), each with some sentences
kept as speech and the rest as text (`speech_fraction`); every subset chosen by seed, stratified by scenario.

The one place where training data is assembled; each source's rows come from its task's `examples("train")`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError, RecipeError
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.recipe import SOURCE_COUNT_KEYS, source_task_options
from audio_recipes.tasks import Example, Task
from audio_recipes.tasks.base import check_audio_files, count_of, refuse_count_of_zero

logger = logging.getLogger(__name__)

SPEECH_IDS_FILE = "speech_ids.json"
# Options that choose what supervised fine-tuning trains on; GRPO and ReST sample from the task's own rows
SFT_DATA_OPTIONS = ("speech_fraction", "speech_fraction_rest", "sources", "curriculum")


def refuse_sft_data_options(task_args: TaskArguments, runner: str) -> None:
    """A recipe setting speech_fraction, speech_fraction_rest, sources or curriculum for a runner that would ignore
    them fails, naming them."""
    defaults = {f.name: f.default for f in dataclasses.fields(TaskArguments)}
    given = [name for name in SFT_DATA_OPTIONS if getattr(task_args, name) != defaults[name]]
    if given:
        raise RecipeError(f"{', '.join(given)}: only scripts/sft.py reads {'these' if len(given) > 1 else 'this'}; "
                          f"{runner} samples from the task's training rows (remove {'them' if len(given) > 1 else 'it'}"
                          " from the recipe)")


@dataclass
class TrainingData:
    """The training examples, what each source gave (`summary`), and the sentences chosen to keep their audio."""

    examples: list[Example]
    sources: list[dict[str, Any]] = field(default_factory=list)
    speech_ids: list[dict[str, Any]] = field(default_factory=list)  # one entry per source with a speech_fraction

    @property
    def summary(self) -> dict[str, Any]:
        """Counts for logs, train_metrics.json and trainer_state.json."""
        speech = sum(example.audio is not None for example in self.examples)
        return {"examples": len(self.examples), "speech_examples": speech,
                "text_examples": len(self.examples) - speech, "sources": self.sources}

    def flat_counts(self) -> dict[str, int]:
        """The counts as flat numbers (train_metrics.json keeps numbers only)."""
        summary = self.summary
        counts = {f"train_{key}": summary[key] for key in ("examples", "speech_examples", "text_examples")}
        if len(self.sources) > 1:
            for index, source in enumerate(self.sources):
                counts.update({f"train_source_{index}_{key}": source[key]
                               for key in ("examples", "speech_examples", "text_examples")})
        return counts


def stratified_choice(strata: dict[str, str | None], count: int, seed: int) -> set[str]:
    """`count` keys of `strata` (key -> its class), each class given its share by the largest remainder (ties: the
    larger class, then the name), the keys within a class drawn by a generator seeded by `seed` and the class."""
    if not 0 <= count <= len(strata):
        raise ValueError(f"cannot choose {count} of {len(strata)} items")
    groups: dict[str, list[str]] = defaultdict(list)
    for key, stratum in strata.items():
        groups[str(stratum)].append(key)
    quotas = {stratum: count * len(keys) / len(strata) for stratum, keys in groups.items()}
    allotted = {stratum: math.floor(quota) for stratum, quota in quotas.items()}
    by_remainder = sorted(groups, key=lambda s: (-(quotas[s] - allotted[s]), -len(groups[s]), s))
    for stratum in by_remainder[: count - sum(allotted.values())]:
        allotted[stratum] += 1
    chosen: set[str] = set()
    for stratum, keys in groups.items():  # a generator per class: one class's choice never moves another's
        chosen.update(random.Random(f"{seed}:{stratum}").sample(sorted(keys), allotted[stratum]))
    return chosen


def task_with(task: Task, checks_audio_on_load: bool = True, **changes: Any) -> Task:
    """The same task with some options changed (another input mode, no limit, ...); with checks_audio_on_load
    False, its rows' audio files are left for the caller to check (those of the rows it keeps)."""
    changed = type(task)(dataclasses.replace(task.args, **changes))
    changed.checks_audio_on_load = checks_audio_on_load
    return changed


def speech_fraction_examples(task: Task, seed: int) -> tuple[list[Example], dict[str, Any]]:
    """The training sentences, a stratified `speech_fraction` of them with their audio (every recording the task
    gives), the others as text or left out (`speech_fraction_rest`), in the data's order; and the chosen ids."""
    fraction = task.args.speech_fraction
    text_task = task_with(task, input_mode="text", speech_fraction=None)
    text = text_task.examples("train")  # max_train_samples counts sentences here
    sentences = {text_task.sentence_id(example): text_task.stratum(example) for example in text}
    refuse_count_of_zero("speech_fraction", fraction, len(sentences), "sentences",
                         f"task {task.name} ({task.data_source('train')})")
    chosen = stratified_choice(sentences, count_of(fraction, len(sentences)), seed)
    speech_by_sentence: dict[str, list[Example]] = defaultdict(list)
    if chosen:  # the chosen sentences' recordings are the audio read: only theirs are checked (below)
        speech_task = task_with(task, checks_audio_on_load=False, speech_fraction=None, max_train_samples=None)
        for example in speech_task.examples("train"):
            speech_by_sentence[speech_task.sentence_id(example)].append(example)
    missing = sorted(chosen - set(speech_by_sentence))
    if missing:
        raise DataError(f"task {task.name}: {len(missing)} chosen sentence(s) have no {task.args.input_mode} rows "
                        f"(first: {missing[0]!r})")
    examples = []
    for example in text:
        sentence = text_task.sentence_id(example)
        if sentence in chosen:
            examples.extend(speech_by_sentence.pop(sentence, []))  # a sentence's recordings once
        elif task.args.speech_fraction_rest == "text":
            examples.append(example)
    check_audio_files(examples, task.data_source("train"), task.args)
    by_stratum = Counter(str(sentences[sentence]) for sentence in chosen)
    record = {"task": task.name, "input_mode": task.args.input_mode, "speech_fraction": fraction,
              "speech_fraction_rest": task.args.speech_fraction_rest, "seed": seed, "sentences": len(sentences),
              "speech_sentences": len(chosen), "speech_sentences_by_scenario": dict(sorted(by_stratum.items())),
              "speech_ids": sorted(chosen)}
    return examples, record


def source_examples(task: Task, seed: int, number: int | None = None,
                    fraction: float | None = None) -> tuple[list[Example], dict[str, Any] | None]:
    """One source's training examples (its speech_fraction applied), or `number` / `fraction` of its examples
    chosen by seed and stratified by scenario; and its speech ids record where it has a speech_fraction."""
    if task.args.speech_fraction is not None:
        return speech_fraction_examples(task, seed)
    if number is None and fraction is None:
        return task.examples("train"), None
    examples = task_with(task, checks_audio_on_load=False).examples("train")  # the kept rows' audio checked below
    if fraction is not None:
        refuse_count_of_zero("fraction", fraction, len(examples), "examples",
                             f"task {task.name} ({task.data_source('train')})")
    count = number if number is not None else count_of(fraction, len(examples))
    if not 1 <= count <= len(examples):
        raise DataError(f"num_examples {number} of task {task.name}'s {len(examples)} training examples "
                        f"({task.data_source('train')}): expected 1 to {len(examples)}")
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        raise DataError(f"task {task.name}'s training data ({task.data_source('train')}) repeats example ids: a "
                        "subset chosen by id needs them unique")
    kept = stratified_choice({example.id: task.stratum(example) for example in examples}, count, seed)
    examples = [example for example in examples if example.id in kept]
    check_audio_files(examples, task.data_source("train"), task.args)
    return examples, None


def source_task_args(task_args: TaskArguments, source: dict[str, Any]) -> TaskArguments:
    """A source's task options: its own over the recipe's (checked by the recipe parser)."""
    return dataclasses.replace(task_args, **source_task_options(task_args.task, source), sources=None, curriculum=None)


def training_data(task: Task, seed: int) -> TrainingData:
    """The recipe's training examples: its sources' (each named in errors by its index), else its task's."""
    sources = task.args.sources or [{}]
    data = TrainingData(examples=[])
    for index, source in enumerate(sources):
        try:
            source_task = task if not source else recipe_task(source_task_args(task.args, source))
            examples, speech_ids = source_examples(source_task, seed, *(source.get(key) for key in SOURCE_COUNT_KEYS))
        except (DataError, ValueError) as error:
            if not task.args.sources:
                raise
            raise DataError(f"sources[{index}] (task {source_task_args(task.args, source).task}): {error}") from error
        speech = sum(example.audio is not None for example in examples)
        data.sources.append({"source": index, "task": source_task.name, "input_mode": source_task.args.input_mode,
                             "locale": source_task.args.locale, "data": source_task.data_source("train"),
                             "examples": len(examples), "speech_examples": speech,
                             "text_examples": len(examples) - speech})
        if speech_ids is not None:
            data.speech_ids.append({"source": index, **speech_ids})
        data.examples.extend(examples)  # the trainer's sampler shuffles the sources together
    for source in data.sources:
        logger.info("training source %d (%s, %s, %s): %d examples, %d with speech, %d text", source["source"],
                    source["task"], source["input_mode"], source["data"], source["examples"],
                    source["speech_examples"], source["text_examples"])
    return data
