"""ReST (reinforced self-training): generate K sampled answers per question, keep those the reward
registry scores correct, fine-tune with LoRA on them, repeat with a lower learning rate.

Each phase writes its output under `output_dir/iteration-N/` and marks itself done, so an interrupted
loop resumes at the phase where it stopped (generation within a phase resumes item by item):

    samples.jsonl   K sampled answers per training question (appended as they come), each drawn from its own
                    seed (seed, iteration, sample id): a resumed phase draws what an uninterrupted one would
    kept.jsonl      the samples kept, with their rewards; filter.json the kept fraction
    adapter/        the LoRA adapter after this iteration's fine-tuning
    heldout/        greedy answers on held-out questions and metrics.json

and before the first iteration `output_dir/start/heldout/` holds the starting model's held-out answers: the baseline
the iterations are read against. `rest_summary.json` has both: `{"start": {...}, "iterations": [...]}`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl import SFTConfig

from audio_recipes.collators import build_collator
from audio_recipes.config import EvalArguments, ModelArguments, RestArguments, RewardArguments, TaskArguments
from audio_recipes.decoding import item_seed, read_finished, run_generation
from audio_recipes.distributed import joined_process_state
from audio_recipes.errors import DataError, RecipeError
from audio_recipes.io import changed_settings, read_json, write_json_atomic, write_jsonl_atomic
from audio_recipes.models import load_model_and_processor
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.evaluate import generation_kwargs
from audio_recipes.pipelines.mixture import refuse_sft_data_options
from audio_recipes.pipelines.saving import save_trained
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.rewards import check_rewards_fit_the_task, get_reward_funcs
from audio_recipes.tasks import Example, Task

logger = logging.getLogger(__name__)
DONE = ".done"
RUN_RECORD = "rest_run.json"  # what the samples, kept rows and adapters in output_dir were made with


def sample_examples(examples: list[Example], k: int) -> list[Example]:
    """Each question K times, under ids `<id>#<k>` so that generation resumes sample by sample."""
    return [dataclasses.replace(example, id=f"{example.id}#{i}") for example in examples for i in range(k)]


def score_samples(samples: list[dict[str, Any]], examples: dict[str, Example], reward_names: list[str]) -> None:
    """Add `rewards` (by name) and `reward` (their sum) to each sample, in place."""
    funcs = get_reward_funcs(reward_names)
    completions = [sample["raw_output"] for sample in samples]
    references = [examples[sample["question_id"]].reference for sample in samples]
    per_func = {name: func(completions, reference=references) for name, func in zip(reward_names, funcs, strict=True)}
    for index, sample in enumerate(samples):
        sample["rewards"] = {name: values[index] for name, values in per_func.items()}
        sample["reward"] = sum(sample["rewards"].values())


def keep_samples(samples: list[dict[str, Any]], min_reward: float, top_k: int | None) -> list[dict[str, Any]]:
    """Samples at or above min_reward; with top_k, the k best distinct answers per question."""
    by_question: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample["reward"] >= min_reward:
            by_question.setdefault(sample["question_id"], []).append(sample)
    kept = []
    for group in by_question.values():
        distinct = list({sample["raw_output"].strip(): sample for sample in group}.values())
        distinct.sort(key=lambda sample: -sample["reward"])
        kept += distinct[:top_k] if top_k is not None else group
    return kept


class RestLoop:
    def __init__(self, model_args: ModelArguments, task_args: TaskArguments, reward_args: RewardArguments,
                 training_args: SFTConfig, eval_args: EvalArguments, rest_args: RestArguments, recipe_path: str):
        if not model_args.use_peft:
            raise ValueError("ReST fine-tunes LoRA adapters: set use_peft: true in the recipe")
        refuse_sft_data_options(task_args, "ReST")
        get_reward_funcs(reward_args.reward_funcs)  # an unknown name fails before any model loads
        if joined_process_state().num_processes > 1:  # each process would generate every sample into one file
            raise RecipeError("ReST runs in one process (its generation is not sharded): launch it with python or "
                              "accelerate_configs/single_gpu.yaml")
        if training_args.push_to_hub:  # the per-iteration trainers would push on their own
            raise RecipeError("push_to_hub: ReST does not push; push the last iteration's adapter "
                              "(output_dir/iteration-N/adapter) with scripts/push_to_hub.py")
        self.model_args, self.task_args, self.reward_args = model_args, task_args, reward_args
        self.training_args, self.eval_args, self.rest_args = training_args, eval_args, rest_args
        self.recipe_path = recipe_path
        self.output_dir = Path(training_args.output_dir)
        self.task: Task = recipe_task(task_args)
        self.train_examples = self.task.examples("train")
        self.heldout_examples = self.task.examples(rest_args.heldout_split)
        self.min_reward = rest_args.min_reward if rest_args.min_reward is not None else float(
            len(reward_args.reward_funcs))
        check_rewards_fit_the_task(reward_args.reward_funcs, self.train_examples[0], self.task.name)
        self.start: dict[str, Any] | None = None  # the starting model's held-out figures, once run() has them

    def run_settings(self) -> dict[str, Any]:
        """What the phases' outputs depend on: a folder made with other settings is not resumed into."""
        return json.loads(json.dumps({
            "model": self.model_args.model_name_or_path, "task": self.task.name,
            "train_data": self.task.data_source("train"), "num_train_items": len(self.train_examples),
            "heldout_split": self.rest_args.heldout_split, "seed": self.training_args.seed,
            "samples_per_question": self.rest_args.samples_per_question,
            "sample_temperature": self.rest_args.sample_temperature, "sample_top_p": self.rest_args.sample_top_p,
            "reward_funcs": self.reward_args.reward_funcs, "min_reward": self.min_reward,
            "keep_top_k": self.rest_args.keep_top_k,
            "iteration_learning_rates": self.rest_args.iteration_learning_rates,
            "max_new_tokens": self.eval_args.max_new_tokens,
        }, default=str))

    def check_run_record(self) -> None:
        """output_dir's record of the run its phases belong to: written on the first run, refused when it differs
        (old samples, kept rows and adapters would be taken for this run's)."""
        record = self.output_dir / RUN_RECORD
        settings = self.run_settings()
        if record.is_file():
            previous = read_json(record)
            changed = changed_settings(previous, settings) if isinstance(previous, dict) else ["the record"]
            if changed:
                raise RecipeError(f"{self.output_dir} holds a ReST run made with other settings (other "
                                  f"{', '.join(changed)}; {record}): name another output_dir, or remove it to "
                                  "start over")
            return
        if self.output_dir.is_dir() and any(self.output_dir.glob("iteration-*")):
            raise RecipeError(f"{self.output_dir} holds ReST iterations but no {RUN_RECORD} says which run made "
                              "them: name another output_dir, or remove it to start over")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, settings)

    def iteration_dir(self, iteration: int) -> Path:
        return self.output_dir / f"iteration-{iteration}"

    def model_path(self, iteration: int) -> str:
        """The base model before the first iteration, then the adapter of the one before."""
        if iteration == 0:
            return self.model_args.model_name_or_path
        return str(self.iteration_dir(iteration - 1) / "adapter")

    def learning_rate(self, iteration: int) -> float:
        rates = self.rest_args.iteration_learning_rates
        return rates[min(iteration, len(rates) - 1)]

    def run(self) -> list[dict[str, Any]]:
        """The iterations' summaries; `self.start` holds the starting model's held-out figures (or None)."""
        primary = self.task.primary_metric
        self.check_run_record()
        if self.rest_args.heldout_start:
            heldout = self.evaluate(self.model_path(0), self.output_dir / "start")
            self.start = {f"heldout_{primary}": heldout[primary],
                          "heldout_num_invalid": heldout.get("num_invalid_outputs", 0)}
            logger.info("ReST start (%s): held-out %s %.3f", self.model_path(0), primary, heldout[primary])
        summary = []
        for iteration in range(self.rest_args.rest_iterations):
            folder = self.iteration_dir(iteration)
            folder.mkdir(parents=True, exist_ok=True)
            self.generate(iteration, folder)
            kept_fraction = self.filter(folder)
            self.train(iteration, folder)
            heldout = self.evaluate(str(folder / "adapter"), folder)
            summary.append({"iteration": iteration, "learning_rate": self.learning_rate(iteration),
                            "kept_fraction": kept_fraction, f"heldout_{primary}": heldout[primary],
                            "heldout_num_invalid": heldout.get("num_invalid_outputs", 0)})
            logger.info("ReST iteration %d: kept %.3f of the samples, held-out %s %.3f",
                        iteration, kept_fraction, primary, heldout[primary])
            write_json_atomic(self.output_dir / "rest_summary.json", {"start": self.start, "iterations": summary})
        return summary

    def _generate(self, model_path: str, examples: list[Example], output: Path,
                  sample_seed: Callable[[Example], int] | None = None, **sampling) -> dict[str, dict]:
        model_args = copy.copy(self.model_args)
        model_args.model_name_or_path = model_path
        model, processor, _ = load_model_and_processor(
            model_args, trust_remote_code=self.training_args.trust_remote_code, for_training=False
        )
        model.eval()
        collator = build_collator(processor, self.task_args, with_completion=False, padding_side="left")
        kwargs = {**generation_kwargs(self.eval_args, collator.tokenizer), **sampling}
        return run_generation(model, collator, self.task, examples, output, resume=True, generation_kwargs=kwargs,
                              batch_size=self.training_args.per_device_eval_batch_size, sample_seed=sample_seed)

    def generate(self, iteration: int, folder: Path) -> None:
        if (folder / f"samples{DONE}").exists():
            return
        sampling = {"temperature": self.rest_args.sample_temperature, "top_p": self.rest_args.sample_top_p}
        samples = sample_examples(self.train_examples, self.rest_args.samples_per_question)

        def sample_seed(sample: Example) -> int:  # per sample: a resumed phase redraws exactly what was lost
            return item_seed(self.training_args.seed, iteration, sample.id)

        self._generate(self.model_path(iteration), samples, folder / "samples.jsonl", sample_seed, **sampling)
        (folder / f"samples{DONE}").touch()

    def filter(self, folder: Path) -> float:
        if (folder / "filter.json").exists():
            return json.loads((folder / "filter.json").read_text())["kept_fraction"]
        samples = list(read_finished(folder / "samples.jsonl").values())
        expected = {sample.id for sample in sample_examples(self.train_examples, self.rest_args.samples_per_question)}
        unexpected = sorted(sample["id"] for sample in samples if sample["id"] not in expected)
        if unexpected or len(samples) != len(expected):
            raise DataError(f"{folder / 'samples.jsonl'}: {len(samples)} samples, {len(expected)} expected "
                            f"({len(unexpected)} of ids this run does not sample, e.g. {unexpected[:3]}): remove "
                            f"{folder} to generate its samples again")
        for sample in samples:
            sample["question_id"] = sample["id"].rsplit("#", 1)[0]
        score_samples(samples, {example.id: example for example in self.train_examples}, self.reward_args.reward_funcs)
        kept = keep_samples(samples, self.min_reward, self.rest_args.keep_top_k)
        write_jsonl_atomic(folder / "kept.jsonl", kept)
        stats = {"samples": len(samples), "kept": len(kept), "kept_fraction": len(kept) / max(len(samples), 1),
                 "questions_with_a_kept_answer": len({sample["question_id"] for sample in kept})}
        write_json_atomic(folder / "filter.json", stats)  # written last: marks the phase done
        return stats["kept_fraction"]

    def train(self, iteration: int, folder: Path) -> None:
        if (folder / f"adapter{DONE}").exists():
            return
        by_id = {example.id: example for example in self.train_examples}
        kept = list(read_finished(folder / "kept.jsonl").values())
        adapter = folder / "adapter"
        model_args = copy.copy(self.model_args)
        model_args.model_name_or_path = self.model_path(iteration)
        if not kept:
            logger.warning("iteration %d kept no sample: the adapter is carried over unchanged", iteration)
        training_args = copy.deepcopy(self.training_args)
        training_args.output_dir = str(adapter)
        training_args.learning_rate = self.learning_rate(iteration)
        examples = [dataclasses.replace(by_id[sample["question_id"]], id=sample["id"], completion=sample["raw_output"])
                    for sample in kept]
        run = build_trainer(model_args, self.task_args, training_args, train_examples=examples or None,
                            eval_args=self.eval_args)
        metrics: dict[str, Any] = {"kept_examples": len(examples)}
        if examples:
            metrics["train_loss"] = run.trainer.train().training_loss
        save_trained(run.trainer, run.trainer.processing_class, metrics, model_args, self.task_args, training_args,
                     run.resolved, self.recipe_path, push_repo=None,
                     evaluation_recipe=self.reward_args.evaluation_recipe)
        (folder / f"adapter{DONE}").touch()

    def evaluate(self, model_path: str, folder: Path) -> dict[str, Any]:
        """Greedy answers of model_path on the held-out questions, scored, in folder/heldout/."""
        heldout = folder / "heldout"
        if (heldout / "metrics.json").exists():
            return json.loads((heldout / "metrics.json").read_text())
        heldout.mkdir(parents=True, exist_ok=True)
        rows = self._generate(model_path, self.heldout_examples, heldout / "raw_outputs.jsonl")
        by_id = {example.id: example for example in self.heldout_examples}
        official = {key: self.task.prediction_row(by_id[key], row) for key, row in rows.items()}
        metrics = self.task.score(self.heldout_examples, official)
        metrics["num_invalid_outputs"] = sum(not row["prediction"].get("valid", True) for row in rows.values())
        write_json_atomic(heldout / "metrics.json", metrics)
        return metrics
