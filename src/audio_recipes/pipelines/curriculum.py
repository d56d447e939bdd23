"""A curriculum: the recipe's stages trained one after another, stage k in output_dir/stage_k from stage k-1's
weights (the same LoRA adapter, or the saved model), each a fresh fine-tuning run (its own optimiser and learning
rate schedule, as the stages of arXiv 2509.15389 are). A finished stage leaves a marker, written last and atomically,
and is skipped on a rerun with the same options and the same previous stage; the last stage's model is copied to
output_dir, with a card that describes the curriculum, where evaluate.py and the Hub push look."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trl import SFTConfig

from audio_recipes.config import EvalArguments, TaskArguments
from audio_recipes.distributed import joined_process_state
from audio_recipes.errors import RecipeError
from audio_recipes.hub import (
    base_model_hub_id,
    check_push_access,
    path_from_project_root,
    push_folder,
    read_card_fields,
    write_model_card,
)
from audio_recipes.io import numeric_metrics, write_atomic, write_json_atomic
from audio_recipes.pipelines.sft import run_sft
from audio_recipes.recipe import parse_recipe, recipe_dict

logger = logging.getLogger(__name__)

STAGE_DONE = "stage_done.json"
CURRICULUM_RECORD = "curriculum.json"


def stage_dir(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / f"stage_{index}"


# Options that do not change what a stage trains: where it writes, the Hub, resuming, logging (and `hub_*`)
NOT_IN_STAGE_IDENTITY = frozenset({
    "output_dir", "push_to_hub", "resume_from_checkpoint", "curriculum", "report_to", "run_name", "disable_tqdm",
    "log_level", "log_level_replica", "log_on_each_node", "logging_dir", "logging_first_step",
    "logging_nan_inf_filter", "logging_steps", "logging_strategy",
})


def marker_fingerprint(folder: Path) -> str:
    """A hash of a finished stage's marker, which changes whenever the stage trains again (the marker records when)."""
    return hashlib.sha256((folder / STAGE_DONE).read_bytes()).hexdigest()


def stage_identity(stage_args: tuple, output_dir: Path, previous: Path | None) -> dict[str, Any]:
    """What a finished stage must match to be reused: every option it was parsed with (recipe, stage, command line)
    but those of NOT_IN_STAGE_IDENTITY and the evaluation ones (they decode the generation log only), the model it
    starts from (stage k-1 by its folder name: output_dir written relative or absolute is the same curriculum), and
    the fingerprint of stage k-1's marker (a stage k-1 trained again makes stage k stale)."""
    options = {}
    for instance in stage_args:
        if isinstance(instance, EvalArguments):
            continue
        for option in dataclasses.fields(instance):
            if option.init and option.name not in NOT_IN_STAGE_IDENTITY and not option.name.startswith("hub_"):
                options[option.name] = getattr(instance, option.name)
    if previous is not None:
        options["model_name_or_path"] = str(previous.relative_to(output_dir))
    identity = {"options": options, "previous_stage": marker_fingerprint(previous) if previous is not None else None}
    return json.loads(json.dumps(identity, default=str))


_UNSET = object()


def _shown(value: Any) -> str:
    text = "unset" if value is _UNSET else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def identity_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a finished stage's identity and this run's, one short phrase per option."""
    if not isinstance(then, dict) or "options" not in then:
        return ["its marker was written before stage markers recorded every option"]
    old, new = then.get("options") or {}, now["options"]
    differences = [f"{key}: {_shown(old.get(key, _UNSET))} then, {_shown(new.get(key, _UNSET))} now"
                   for key in sorted(old.keys() | new.keys()) if old.get(key, _UNSET) != new.get(key, _UNSET)]
    if then.get("previous_stage") != now["previous_stage"]:
        differences.append("the previous stage was trained again since")
    return differences


def finished_stage(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a stage finished with the same options, or None where it did not finish; one finished with
    other options is an error (its weights are not what this curriculum's next stage should start from)."""
    marker = folder / STAGE_DONE
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"{marker} is not a stage marker ({error}): remove {folder} and the stages after it to "
                          "train them again") from None
    differences = identity_differences(done.get("identity"), identity) if isinstance(done, dict) else ["no marker"]
    if differences:
        raise RecipeError(f"{folder} holds a stage finished with other options ({'; '.join(differences)}): give the "
                          f"curriculum another output_dir, or remove {folder} and the stages after it to train them "
                          "again")
    return done


def refuse_finished_later_stages(output_dir: Path, index: int, count: int) -> None:
    """Before stage `index` trains: a later stage finished before started from other weights, so the run would stop
    there; say so now rather than after this stage's training."""
    for later in range(index + 1, count + 1):
        folder = stage_dir(output_dir, later)
        if (folder / STAGE_DONE).is_file():
            raise RecipeError(f"{folder} holds a stage finished from another stage {index} than the one about to "
                              f"train in {stage_dir(output_dir, index)}: give the curriculum another output_dir, or "
                              f"remove {folder} and the stages after it to train them again")


def publish_final_model(stage_folder: Path, output_dir: Path) -> None:
    """The last stage's files (model or adapter, processor, trainer state, metrics, card) into output_dir, each
    copied to a temporary name and renamed: a reader never sees half a file."""
    for path in sorted(stage_folder.iterdir()):
        if not path.is_file() or path.name == STAGE_DONE:
            continue  # checkpoints and evaluation folders stay with their stage
        write_atomic(output_dir / path.name, lambda temporary, source=path: shutil.copy2(source, temporary))


def write_curriculum_card(output_dir: Path, recipe_args: tuple, stages: list[dict[str, Any]], repo_id: str,
                          push_repo: str | None) -> None:
    """output_dir's model card (the last stage's, copied there) rewritten for the curriculum: its title, the base
    model stage 1 started from, the recipe with its stages, and what each stage set over the recipe."""
    fields = read_card_fields(output_dir)
    if fields is None:  # the last stage wrote no card
        return
    first = read_card_fields(stage_dir(output_dir, 1)) or {}
    model_args, task_args = recipe_args[:2]
    fields.update(
        repo_id=repo_id, base_model=first.get("base_model", base_model_hub_id(model_args.model_name_or_path)),
        recipe=recipe_dict(model_args, task_args), use_model=push_repo or path_from_project_root(output_dir),
        data_files={"train": task_args.train_file or task_args.dataset_name, "eval": task_args.eval_file},
        curriculum=[{"stage": stage["stage"], "folder": f"stage_{stage['stage']}", "overrides": stage["overrides"]}
                    for stage in stages],
    )
    write_model_card(output_dir, **fields)


def run_curriculum(dataclass_types: tuple[type, ...], argv: list[str], task_args: TaskArguments,
                   training_args: SFTConfig, recipe_path: str) -> dict[str, Any]:
    """Each stage of `task_args.curriculum` parsed as the recipe with the stage's options over it (the command line
    over both), trained by run_sft unless finished before; returns the last stage's metrics and the stage count."""
    output_dir = Path(training_args.output_dir)
    push_repo = check_push_access(training_args.hub_model_id) if training_args.push_to_hub else None
    state = joined_process_state()
    stages, previous, count = [], None, len(task_args.curriculum)
    for index, overrides in enumerate(task_args.curriculum, start=1):
        folder = stage_dir(output_dir, index)
        stage_argv = [*argv, "--output_dir", str(folder), "--push_to_hub", "false"]  # the last given wins
        if previous is not None:
            stage_argv += ["--model_name_or_path", str(previous)]
        stage_args = parse_recipe(dataclass_types, stage_argv, overrides=overrides,
                                  overrides_name=f"curriculum stage {index}")
        stage_model, stage_task, stage_training = stage_args[:3]
        stage_eval = next((args for args in stage_args[3:] if isinstance(args, EvalArguments)), None)
        identity = stage_identity(stage_args, output_dir, previous)
        done = finished_stage(folder, identity)
        if done is not None:
            logger.info("curriculum stage %d of %d finished before (%s): skipped", index, count, folder)
            metrics = done["metrics"]
        else:
            refuse_finished_later_stages(output_dir, index, count)
            logger.info("curriculum stage %d of %d: %s from %s, in %s", index, count,
                        json.dumps(overrides), stage_model.model_name_or_path, folder)
            metrics = numeric_metrics(run_sft(stage_model, stage_task, stage_training, recipe_path,
                                              eval_args=stage_eval))
            if state.is_main_process:
                write_json_atomic(folder / STAGE_DONE, {
                    "stage": index, "identity": identity, "metrics": metrics,
                    "finished_at": datetime.now(timezone.utc).isoformat()})
            state.wait_for_everyone()  # the next stage loads what the main process wrote
        # Folders relative to output_dir: the record is pushed with the model, and names no path of this machine
        stages.append({"stage": index, "output_dir": folder.name, "overrides": overrides, "metrics": metrics})
        previous = folder
    if state.is_main_process:
        publish_final_model(previous, output_dir)
        write_curriculum_card(output_dir, parse_recipe(dataclass_types, argv), stages,
                              push_repo or training_args.hub_model_id or output_dir.name, push_repo)
        write_json_atomic(output_dir / CURRICULUM_RECORD, {"final_model": ".", "stages": stages})
        if push_repo:
            logger.info("pushed %s to %s", output_dir, push_folder(output_dir, push_repo,
                                                                    private=training_args.hub_private_repo))
    state.wait_for_everyone()
    return {**stages[-1]["metrics"], "curriculum_stages": len(stages)}


def run_training(dataclass_types: tuple[type, ...], argv: list[str], parsed: tuple, recipe_path: str) -> dict[str, Any]:
    """Fine-tuning from a parsed recipe (model, task, training, evaluation arguments): its curriculum's stages where it
    has one, else one run."""
    model_args, task_args, training_args, eval_args = parsed
    if task_args.curriculum:
        return run_curriculum(dataclass_types, argv, task_args, training_args, recipe_path)
    return run_sft(model_args, task_args, training_args, recipe_path=recipe_path, eval_args=eval_args)
