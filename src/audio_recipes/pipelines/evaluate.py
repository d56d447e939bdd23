"""Evaluate a model on a task: batched generation, official prediction file, metrics; resumable and sharded."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers.integrations import unset_hf_deepspeed_config
from trl import SFTConfig

from audio_recipes.collators import build_collator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.decoding import (
    DECODING_MODES,
    batches,
    generate_batch,
    item_seed,
    merge_shards,
    read_finished,
    run_generation,
    shard_file,
)
from audio_recipes.distributed import broadcast_object, joined_process_state
from audio_recipes.errors import InputError
from audio_recipes.hub import add_evaluation_to_card, resolve_model
from audio_recipes.io import (
    changed_settings,
    numeric_metrics,
    write_json_atomic,
    write_jsonl_atomic,
    write_rows_atomic,
)
from audio_recipes.models import is_quantized, load_model_and_processor, merge_adapter
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.tasks import Example, Task

logger = logging.getLogger(__name__)

METRICS = "metrics.json"
RUN_RECORD = "evaluation_run.json"
# Options that shape neither a prompt nor an answer: a run that differs only in these can be resumed
NOT_IN_RUN_IDENTITY = ("train_file", "max_train_samples", "text_only_fraction", "silent_clip_for_text_batches",
                       "build_data_if_missing", "train_split", "max_eval_samples", "resume", "overwrite", "baseline",
                       "rationale_prompt_template", "speech_fraction", "speech_fraction_rest", "sources", "curriculum",
                       "generation_log_steps", "generation_log_samples")


class EvaluationRunError(InputError, RuntimeError):
    """An output folder holding another run's results: never mixed with or replaced by this run's silently."""


def model_folder_name(name_or_path: str) -> str:
    """A folder name that tells evaluated models apart: a Hub id `org/name` -> `org--name`; a local path as
    written under the current folder (`outputs/tiny/slurp` -> `outputs--tiny--slurp`), else its absolute path."""
    path = Path(name_or_path)
    if path.exists():
        resolved = path.resolve()
        try:
            name_or_path = str(resolved.relative_to(Path.cwd().resolve()))
        except ValueError:
            name_or_path = str(resolved)
    parts = [part for part in Path(name_or_path).parts if part not in ("/", ".", "..")]
    return "--".join(parts) or "model"


def default_evaluation_dir(recipe_output_dir: str | Path, model_name_or_path: str, split: str) -> Path:
    """`<recipe output_dir>/eval/<model>/<split>`: two models (or splits) never share a folder."""
    return Path(recipe_output_dir) / "eval" / model_folder_name(model_name_or_path) / split


# How the model is loaded: what, besides the weights, changes its answers
MODEL_LOADING_OPTIONS = ("model_revision", "dtype", "processor_name_or_path", "load_in_4bit", "load_in_8bit",
                         "bnb_4bit_quant_type", "use_bnb_nested_quant", "num_speech_tokens")


def run_identity(resolved_name: str, model_args: ModelArguments, task_args: TaskArguments,
                 eval_args: EvalArguments) -> dict[str, Any]:
    """What decides each output row: the model and how it is loaded, the task's data and prompts, the decoding."""
    model = str(Path(resolved_name).resolve()) if Path(resolved_name).exists() else resolved_name
    options = {**dataclasses.asdict(task_args), **dataclasses.asdict(eval_args)}
    return {"model": model, "model_files": model_files(resolved_name),
            **{key: getattr(model_args, key, None) for key in MODEL_LOADING_OPTIONS},
            **{key: value for key, value in options.items() if key not in NOT_IN_RUN_IDENTITY}}


WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def model_files(name_or_path: str) -> list[list] | None:
    """A local model folder's weight files as [name, size, modification time in ns]: a model trained again into the
    same folder is another model, whose outputs are not resumed. None for a Hub id (its revision is recorded)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return None
    files = sorted({path for pattern in WEIGHT_FILE_PATTERNS for path in folder.glob(pattern)})
    return [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files]


# Names evaluation writes in its folder (raw outputs and shards, metrics, official predictions, reports): a folder
# without a run record holding a raw output file and nothing else is an evaluation of a version older than the record
EVALUATION_FILE_PATTERNS = ("raw_outputs*.jsonl", "*_raw_outputs.jsonl", "*metrics.json", "*predictions.json",
                            "*predictions.jsonl", "*predictions.parquet", "report.md", "*psychometric*")
# The files an evaluation resumes from: all of them go when a run starts over, whatever process count wrote them
RAW_OUTPUT_PATTERNS = ("raw_outputs.jsonl", "raw_outputs.rank*-of-*.jsonl")


def raw_output_files(output_dir: Path) -> list[Path]:
    return sorted({path for pattern in RAW_OUTPUT_PATTERNS for path in output_dir.glob(pattern) if path.is_file()})


def is_earlier_evaluation(output_dir: Path) -> bool:
    """A folder without a run record that holds raw outputs and only names evaluation writes."""
    entries = list(output_dir.iterdir())
    return bool(raw_output_files(output_dir)) and all(
        entry.is_file() and any(entry.match(pattern) for pattern in EVALUATION_FILE_PATTERNS) for entry in entries)


def prepare_output_dir(output_dir: Path, identity: dict[str, Any], resume: bool | None, overwrite: bool,
                       num_processes: int = 1) -> bool:
    """Record this run in output_dir and say whether to resume the rows already there.

    A folder holding the same run (model, data, prompts, decoding, process count) is resumed unless `resume` is
    false (then started over, with a warning); one holding another run's rows is an error unless `overwrite`.
    Starting over removes every raw output file of the folder (each process's shard, whatever the process count
    that wrote it). A non-empty folder that is not an evaluation's (no run record, other files) is never written.
    """
    identity = {**identity, "num_processes": num_processes}  # each process count shards the items its own way
    record_path = output_dir / RUN_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record is None and output_dir.is_dir() and any(output_dir.iterdir()) and not is_earlier_evaluation(output_dir):
        names = sorted(entry.name for entry in output_dir.iterdir())
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise EvaluationRunError(
            f"{output_dir} is not empty ({shown}) and holds no {RUN_RECORD}: it is not an evaluation folder of this "
            "project, and its files are never replaced (not even with --overwrite true): name another --output_dir")
    shards = raw_output_files(output_dir) if output_dir.is_dir() else []
    rows = sum(len(read_finished(path)) for path in shards)
    if rows and record != identity and not overwrite:
        if record is None:
            differences = f"no {RUN_RECORD} says which run wrote its {rows} rows"
        else:
            changed = changed_settings(record, identity)
            differences = "differs in " + ", ".join(f"{key}: {record.get(key)!r} -> {identity.get(key)!r}"
                                                    for key in changed)
        raise EvaluationRunError(
            f"{output_dir} holds the outputs of another evaluation run ({differences}): name another --output_dir, "
            "or pass --overwrite true to replace them")
    resuming = bool(rows) and record == identity and resume is not False
    if rows and record != identity:
        logger.warning("replacing the %d output rows of another run in %s (--overwrite true)", rows, output_dir)
    elif rows and not resuming:
        logger.warning("starting over: the %d output rows of the same run in %s are discarded (--resume false)",
                       rows, output_dir)
    if not resuming:
        # Before the record changes: a kill in between leaves the old record over a subset of its own rows
        for path in shards:
            path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path, identity)
    if resuming:
        logger.info("resuming the run in %s: %d rows already done (--resume false starts over)", output_dir, rows)
    return resuming


def generation_kwargs(eval_args: EvalArguments, tokenizer) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": eval_args.max_new_tokens,
        "num_beams": eval_args.num_beams,
        "do_sample": eval_args.do_sample,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if eval_args.do_sample:
        kwargs.update(temperature=eval_args.temperature, top_p=eval_args.top_p)
    else:
        # Greedy / beam search: the model's generation_config may carry sampling settings
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def run_evaluation(
    model_args: ModelArguments, task_args: TaskArguments, training_args: SFTConfig, eval_args: EvalArguments,
    output_dir: Path,
) -> dict[str, Any]:
    if eval_args.decoding not in DECODING_MODES:
        raise ValueError(f"unknown decoding {eval_args.decoding!r}; expected one of {', '.join(DECODING_MODES)}")
    sampled = eval_args.do_sample and eval_args.decoding == "generate"
    if sampled and eval_args.num_beams > 1:
        raise InputError(f"do_sample with num_beams {eval_args.num_beams} (beam sampling) cannot draw each item from "
                         "its own seed, so its outputs could not be resumed or repeated: set num_beams: 1 or "
                         "do_sample: false")
    state = joined_process_state()
    with state.main_process_first():  # a tiny recipe's data is built on first use: by one process, not by each
        task = recipe_task(task_args)
        examples = task.examples(eval_args.split)
    resolved_name = resolve_model(model_args.model_name_or_path, revision=model_args.model_revision).name_or_path
    resume, refusal = False, None
    if state.is_main_process:
        try:
            identity = run_identity(resolved_name, model_args, task_args, eval_args)
            # Sampling draws each item from a seed of its own (training args' seed, item id): a resumed run writes
            # the samples an uninterrupted one would, and a run with another seed is another run
            identity["sample_seed"] = training_args.seed if sampled else None
            resume = prepare_output_dir(output_dir, identity, eval_args.resume, eval_args.overwrite,
                                        num_processes=state.num_processes)
        except EvaluationRunError as error:
            refusal = str(error)
    resume, refusal = broadcast_object((resume, refusal))  # every process stops, or none
    if refusal:
        raise EvaluationRunError(refusal)

    # Each process generates with a whole model: launched with a ZeRO-3 config, loading would otherwise shard
    # the weights (ZeRO-3 init), and no DeepSpeed engine gathers them during generation
    unset_hf_deepspeed_config()
    model, processor, resolved = load_model_and_processor(
        model_args, trust_remote_code=training_args.trust_remote_code, for_training=False
    )
    if eval_args.merge_adapter:
        model = merge_adapter(model)
    if not is_quantized(model):
        model.to(state.device)
    model.eval()
    task.check_tokenizer(getattr(processor, "tokenizer", processor))
    collator = build_collator(processor, task_args, with_completion=False, padding_side="left")
    shard = examples[state.process_index :: state.num_processes]
    run_generation(
        model, collator, task, shard, shard_file(output_dir, state.process_index, state.num_processes),
        batch_size=training_args.per_device_eval_batch_size, resume=resume,
        generation_kwargs=generation_kwargs(eval_args, collator.tokenizer), decoding=eval_args.decoding,
        sample_seed=(lambda example: item_seed(training_args.seed, example.id)) if sampled else None,
    )
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    rows = merge_shards(output_dir, state.num_processes, examples)
    official, metrics = score_outputs(task, examples, rows, output_dir / task.predictions_file)
    metrics["audio_clips_cropped"] = collator.stats.cropped
    metrics["model"] = resolved.name_or_path
    metrics["split"] = eval_args.split
    metrics["data"] = task.data_source(eval_args.split)  # which data that split was: a file, or a Hub dataset
    metrics["decoding"] = eval_args.decoding
    systems, system_metrics = {"model": official}, {"model": metrics}
    if eval_args.baseline:
        name = eval_args.baseline
        baseline_rows = task.run_baseline(name, examples)
        write_jsonl_atomic(output_dir / f"{name}_raw_outputs.jsonl", baseline_rows)
        systems[name], system_metrics[name] = score_outputs(task, examples, baseline_rows,
                                                            output_dir / f"{name}_{task.predictions_file}")
        write_json_atomic(output_dir / f"{name}_{METRICS}", system_metrics[name])
        metrics["baselines"] = {name: numeric_metrics(system_metrics[name])}
    write_json_atomic(output_dir / METRICS, metrics)
    task.write_report(output_dir, examples, systems, system_metrics)
    if Path(resolved.name_or_path).is_dir():
        add_evaluation_to_card(resolved.name_or_path, eval_args.split, metrics)
    logger.info("wrote %s, %s and %s in %s", task.predictions_file, METRICS, "raw_outputs.jsonl", output_dir)
    return metrics


def score_outputs(task: Task, examples: list[Example], rows: list[dict[str, Any]], predictions_path: Path):
    """Output rows -> the task's prediction rows (written to predictions_path) and its metrics."""
    by_id = {example.id: example for example in examples}
    official = {row["id"]: task.prediction_row(by_id[row["id"]], row) for row in rows}
    write_rows_atomic(predictions_path, official.values())
    metrics = task.score(examples, official)
    metrics["num_invalid_outputs"] = sum(not row["prediction"].get("valid", True) for row in rows)
    return official, metrics


def answer_prompts(model_args: ModelArguments, task_args: TaskArguments, eval_args: EvalArguments,
                   prompts: list[str], batch_size: int = 8) -> list[dict[str, Any]]:
    """Free prompts (no data file) through a task's chat format, generation and parser: one
    {id, raw_output, prediction} per prompt, as evaluation writes them."""
    task = recipe_task(task_args)
    model, processor, _ = load_model_and_processor(model_args, for_training=False)
    if not is_quantized(model):
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    task.check_tokenizer(getattr(processor, "tokenizer", processor))
    collator = build_collator(processor, task_args, with_completion=False, padding_side="left")
    examples = [Example(str(number), None, task.system_prompt, prompt, "", "{}")
                for number, prompt in enumerate(prompts)]
    kwargs = generation_kwargs(eval_args, collator.tokenizer)
    rows = []
    for batch in batches(examples, batch_size):
        for example, text in zip(batch, generate_batch(model, collator, batch, **kwargs), strict=True):
            rows.append({"id": example.id, "raw_output": text, "prediction": task.parse(text)})
    return rows
