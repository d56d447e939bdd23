"""The task contract: what sft.py, evaluate.py and score.py ask of every task."""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any, ClassVar

from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.registry import Registry

SPLITS = ("train", "eval", "test")
SPEECH_FRACTION_RESTS = ("text", "drop")  # what speech_fraction makes of the sentences it keeps no audio of


@dataclass
class Example:
    """One training or evaluation item, as stored in a `datasets.Dataset` (audio kept as a path)."""

    id: str
    audio: str | None  # absolute path, or None for text-only rows
    system: str
    prompt: str  # the user turn's text (the audio, if any, comes before it)
    completion: str  # the target answer, without the end-of-turn token
    reference: str  # JSON of what the scorer needs for this item

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


class Task(ABC):
    """Base class of a task; subclasses register themselves with `@register_task`."""

    name: ClassVar[str]
    default_system_prompt: ClassVar[str] = "You are a helpful assistant."
    prediction_key: ClassVar[str] = "id"
    primary_metric: ClassVar[str] = "accuracy"  # what loops such as ReST report per iteration
    predictions_file: ClassVar[str] = "predictions.jsonl"  # .jsonl, .json (a list) or .parquet
    # What the model may be given (TaskArguments.input_mode); the first is the default. The recipe parser refuses
    # any other, so a task that reads no input_mode never runs in a mode it does not have
    input_modes: ClassVar[tuple[str, ...]] = ("audio",)
    # Classic systems run on the same items beside the model (`baseline: NAME`): name -> a function from examples
    # to output rows (`raw_output`, `confidence`, `latency_ms`)
    baselines: ClassVar[dict[str, Callable[[list[Example]], list[dict[str, Any]]]]] = {}

    # load_examples checks every row's audio file (check_audio); False leaves that to a caller that keeps some of the
    # rows and checks those (speech_fraction reads the chosen sentences' recordings only)
    checks_audio_on_load: bool = True

    def __init__(self, args: TaskArguments):
        if args.input_mode is None:
            args = dataclasses.replace(args, input_mode=self.input_modes[0])
        elif args.input_mode not in self.input_modes:
            raise ValueError(f"task {self.name} has no input_mode {args.input_mode!r}; its modes: "
                             f"{', '.join(self.input_modes)}")
        self.args = args

    @property
    def system_prompt(self) -> str:
        return self.args.system_prompt or self.default_system_prompt

    def split_name(self, split: str) -> str:
        """The data set's own name of a split (e.g. Speech-MASSIVE's train_115), from the recipe."""
        return {"train": self.args.train_split, "eval": self.args.eval_split, "test": self.args.test_split}[split]

    def data_file(self, split: str) -> str | None:
        return {"train": self.args.train_file, "eval": self.args.eval_file, "test": self.args.test_file}[split]

    def data_source(self, split: str) -> str | None:
        """The data `split` reads, as metrics.json names it: its file, or the Hub dataset."""
        return self.data_file(split) or self.args.dataset_name

    def examples(self, split: str) -> list[Example]:
        """The items of `split` ('train', 'eval' or 'test'), with prompt and target built."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        examples = self.load_examples(split)
        source = self.data_file(split) or self.args.dataset_name
        if not examples:
            raise DataError(f"task {self.name}: the {split} data ({source}) holds no items")
        if split != "train":
            check_unique_ids(examples, source)
        limit = self.args.max_train_samples if split == "train" else self.args.max_eval_samples
        examples = examples[:limit] if limit is not None else examples
        if split == "train" and self.args.text_only_fraction:
            fraction = self.args.text_only_fraction
            refuse_count_of_zero("text_only_fraction", fraction, len(examples), "rows", f"task {self.name} ({source})")
            examples = examples + self.text_only_examples(count_of(fraction, len(examples)))
        return examples

    def text_only_examples(self, count: int) -> list[Example]:
        """The first `count` training rows in the task's 'text' input mode (no audio), to mix with audio rows."""
        if not 0 <= self.args.text_only_fraction <= 1 or self.args.input_mode == "text":
            raise ValueError(f"text_only_fraction {self.args.text_only_fraction} needs an audio input_mode and a "
                             f"value in [0, 1] (input_mode is {self.args.input_mode!r})")
        text_args = dataclasses.replace(self.args, input_mode="text", text_only_fraction=0.0)
        return type(self)(text_args).load_examples("train")[:count]

    def sentence_id(self, example: Example) -> str:
        """The sentence an example says, shared by its recordings and its text row (speech_fraction picks sentences)."""
        return example.id

    def stratum(self, example: Example) -> str | None:
        """The class a subset of the training examples keeps the proportions of (SLU: the scenario); None: none."""
        return None

    @abstractmethod
    def load_examples(self, split: str) -> list[Example]:
        """The items of `split` as the data holds them; their audio files checked with `check_audio`."""
        ...

    def check_audio(self, examples: list[Example], source: str | Path | None) -> None:
        """Every audio file of `examples` usable (check_audio_files), unless checks_audio_on_load is off."""
        if self.checks_audio_on_load:
            check_audio_files(examples, source, self.args)

    def check_tokenizer(self, tokenizer) -> None:  # noqa: B027 (an optional hook: most tasks need none)
        """Fail before training or evaluation when the model's tokenizer cannot write this task's targets."""

    def data_files_exist(self) -> bool:
        """Every data file the recipe names is there."""
        return all(f is None or Path(f).is_file()
                   for f in (self.args.train_file, self.args.eval_file, self.args.test_file))

    def named_data_paths(self) -> dict[str, str]:
        """The data paths the recipe sets: option name -> path."""
        keys = ("train_file", "eval_file", "test_file", "audio_dir")
        return {key: getattr(self.args, key) for key in keys if getattr(self.args, key)}

    @abstractmethod
    def parse(self, text: str) -> dict[str, Any]:
        """Model text -> prediction. Never raises: a malformed output gives a prediction with `valid: False`."""
        ...

    def parse_for_item(self, example: Example, text: str) -> dict[str, Any]:
        """Model text -> the prediction for one item, as evaluation writes it: `parse(text)`, unless the task needs
        the item to tell a valid answer (a multiple-choice answer must name one of the item's choices)."""
        return self.parse(text)

    def choices(self, example: Example) -> list[str] | None:
        """The completions the model may give, for label scoring and constrained decoding; None: free text only."""
        return None

    def run_baseline(self, name: str, examples: list[Example]) -> list[dict[str, Any]]:
        """A baseline's output rows, shaped like the model's (`id, raw_output, prediction, confidence, latency_ms`)."""
        if name not in self.baselines:
            raise ValueError(f"task {self.name} has no baseline {name!r} (its baselines: "
                             f"{', '.join(sorted(self.baselines)) or 'none'})")
        outputs = self.baselines[name](examples)
        return [{"id": example.id, **output, "prediction": self.parse_for_item(example, output["raw_output"])}
                for example, output in zip(examples, outputs, strict=True)]

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        """One row of the task's official prediction file."""
        return {self.prediction_key: example.id, **prediction}

    def prediction_row(self, example: Example, output: dict[str, Any]) -> dict[str, Any]:
        """One row of `predictions_file` from an output row (`raw_output`, `prediction`, and where the decoding
        gives them `confidence` and `latency_ms`); the official row unless a task reports more."""
        return self.official_prediction(example, output["prediction"])

    def write_report(self, output_dir: Path, examples: list[Example], systems: dict[str, dict[str, dict]],  # noqa: B027 (an optional hook: most tasks need none)
                     metrics: dict[str, dict]) -> None:
        """A human-readable report of the systems evaluated on the same items (the model, baselines)."""

    @abstractmethod
    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        """Official prediction rows keyed by example id -> a flat dict of metrics over `examples`."""
        ...

    @abstractmethod
    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        """score.py: a gold file as published and an official prediction file -> metrics (every task has one)."""
        ...


def rows_by_id(rows: list[dict[str, Any]], key: str = "id") -> tuple[dict[str, dict[str, Any]], int]:
    """Prediction rows keyed by their `key` as a string (of rows repeating an id, the last), and how many rows
    repeat an earlier row's id."""
    by_id: dict[str, dict[str, Any]] = {}
    num_duplicates = 0
    for row in rows:
        item_id = str(row.get(key))
        num_duplicates += item_id in by_id
        by_id[item_id] = row
    return by_id, num_duplicates


MAX_LISTED_FILES = 10


def check_unique_ids(examples: list[Example], source: str | Path | None) -> None:
    """Evaluation items each have an id of their own: outputs, predictions and scores are keyed by id, so a repeated
    one would be generated twice and scored once."""
    counts = Counter(example.id for example in examples)
    repeated = [(item_id, count) for item_id, count in counts.items() if count > 1]
    if repeated:
        shown = ", ".join(f"{item_id!r} ({count} items)" for item_id, count in repeated[:MAX_LISTED_FILES])
        more = f", first {MAX_LISTED_FILES} shown" if len(repeated) > MAX_LISTED_FILES else ""
        raise DataError(f"{source}: {len(repeated)} item id(s) occur more than once ({shown}{more}); evaluation keys "
                        "outputs and scores by id, so each item needs its own")


def check_unique_keys(located_keys: Iterable[tuple[str, str]], source: str | Path, key_name: str = "id") -> None:
    """A gold file's rows each have a key of their own: scores are keyed by it, so a repeated one would let one row
    replace the other, or count twice. `located_keys`: (where the row is, e.g. `line 3`, its key)."""
    first_seen: dict[str, str] = {}
    for position, key in located_keys:
        if key in first_seen:
            raise DataError(f"{source}: {first_seen[key]} and {position} have the same {key_name} {key!r}; the scores "
                            f"are keyed by {key_name}, so each gold row needs its own")
        first_seen[key] = position


def audio_file_problem(path: str) -> str | None:
    """Why an audio file cannot be used (missing, empty, unreadable header, no frames), or None."""
    import soundfile

    file = Path(path)
    if not file.is_file():
        return "not found" if not file.exists() else "not a file"
    if file.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        info = soundfile.info(str(file))
    except Exception as error:  # soundfile raises several kinds for unreadable files
        return f"not readable as audio ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if info.frames == 0:
        return "no audio frames (0 samples)"
    return None


def check_audio_files(examples: list[Example], data_file: str | Path, args: TaskArguments) -> None:
    """Before any model loads: every audio file exists and has a readable header and frames, and lies under
    audio_dir (a path leaving it, `../` or absolute, is refused unless allow_audio_outside_audio_dir). One error
    lists the bad files; a 0-byte file would otherwise stop training at the step that first reads it."""
    from concurrent.futures import ThreadPoolExecutor

    with_audio = [example for example in examples if example.audio is not None]
    if args.audio_dir and not args.allow_audio_outside_audio_dir:
        root = os.path.normpath(os.path.abspath(args.audio_dir))
        outside = [example for example in with_audio
                   if os.path.commonpath([root, os.path.normpath(os.path.abspath(example.audio))]) != root]
        if outside:
            shown = "; ".join(f"row {example.id!r}: {example.audio}" for example in outside[:MAX_LISTED_FILES])
            raise DataError(f"{data_file}: {len(outside)} audio path(s) leave audio_dir {args.audio_dir} ({shown}); "
                            "set allow_audio_outside_audio_dir: true if the data set is meant to point there")
    with ThreadPoolExecutor(max_workers=8) as pool:  # header reads: I/O-bound on network file systems
        problems = list(pool.map(audio_file_problem, [example.audio for example in with_audio]))
    bad = [(example, problem) for example, problem in zip(with_audio, problems, strict=True) if problem]
    if bad:
        shown = "; ".join(f"row {example.id!r}: {example.audio}: {problem}" for example, problem in bad[:MAX_LISTED_FILES])
        more = f" (first {MAX_LISTED_FILES} shown)" if len(bad) > MAX_LISTED_FILES else ""
        raise DataError(f"{data_file}: {len(bad)} of {len(with_audio)} audio files cannot be used{more}: {shown}")


TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: the task under its `name` (tasks/__init__.py imports every task module)."""
    return TASKS.add(cls.name, cls)


def get_task(name: str, args: TaskArguments | None = None) -> Task:
    """The task `name`, with the recipe's task options (the task's defaults when none are given)."""
    return TASKS.get(name)(args or TaskArguments(task=name))


def count_of(fraction: float, total: int) -> int:
    """round(fraction x total), halves up, in exact decimal arithmetic: in floats 0.145 x 100 is 14.4999..., here
    14.5, which gives 15."""
    return int((Decimal(str(fraction)) * total).to_integral_value(rounding=ROUND_HALF_UP))


def refuse_count_of_zero(key: str, fraction: float, total: int, what: str, where: str) -> None:
    """A positive `fraction` (option `key`) of `total` `what` that rounds to none fails, with the smallest fraction
    that gives one (0.5 / total, rounded up to 3 significant digits so that it still does)."""
    if fraction > 0 and count_of(fraction, total) == 0:
        smallest = Context(prec=3, rounding=ROUND_CEILING).divide(Decimal(1), Decimal(2 * total))
        product = (Decimal(str(fraction)) * total).normalize()
        raise DataError(f"{key} {fraction} of the {total} training {what} of {where} gives 0 {what} ({fraction} x "
                        f"{total} = {product:f}, rounded half up): the smallest {key} that gives one is "
                        f"{smallest.normalize():f}")
