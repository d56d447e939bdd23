"""A curriculum: the recipe's stages trained one after another, stage k in output_dir/stage_k from stage k-1's
weights (the same LoRA adapter, or the saved model), each a fresh fine-tuning run (its own optimiser and learning
rate schedule, as the stages of arXiv 2509.15389 are). A finished stage leaves a marker, written last and atomically,
and is skipped on a rerun; the last stage's model is copied to output_dir, where evaluate.py and the Hub push look."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from trl import SFTConfig

from audio_recipes.config import EvalArguments, TaskArguments
from audio_recipes.distributed import joined_process_state
from audio_recipes.errors import RecipeError
from audio_recipes.hub import check_push_access, push_folder
from audio_recipes.io import numeric_metrics, write_json_atomic
from audio_recipes.pipelines.sft import run_sft
from audio_recipes.recipe import parse_recipe

logger = logging.getLogger(__name__)

STAGE_DONE = "stage_done.json"
CURRICULUM_RECORD = "curriculum.json"


def stage_dir(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / f"stage_{index}"


def finished_stage(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a stage finished with the same options, or None where it did not finish; one finished with
    other options is an error (its weights are not what this curriculum's next stage should start from)."""
    marker = folder / STAGE_DONE
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text())
    if done.get("identity") != identity:
        raise RecipeError(f"{folder} holds a stage finished with other options ({done.get('identity')}, now "
                          f"{identity}): give the curriculum another output_dir, or remove {folder} and the stages "
                          "after it to train them again")
    return done


def publish_final_model(stage_folder: Path, output_dir: Path) -> None:
    """The last stage's files (model or adapter, processor, trainer state, metrics, card) into output_dir, each
    copied to a temporary name and renamed: a reader never sees half a file."""
    for path in sorted(stage_folder.iterdir()):
        if not path.is_file() or path.name == STAGE_DONE:
            continue  # checkpoints and evaluation folders stay with their stage
        temporary = output_dir / f".{path.name}.tmp"
        shutil.copy2(path, temporary)
        os.replace(temporary, output_dir / path.name)


def run_curriculum(dataclass_types: tuple[type, ...], argv: list[str], task_args: TaskArguments,
                   training_args: SFTConfig, recipe_path: str) -> dict[str, Any]:
    """Each stage of `task_args.curriculum` parsed as the recipe with the stage's options over it (the command line
    over both), trained by run_sft unless finished before; returns the last stage's metrics and the stage count."""
    output_dir = Path(training_args.output_dir)
    push_repo = check_push_access(training_args.hub_model_id) if training_args.push_to_hub else None
    state = joined_process_state()
    stages, previous = [], None
    for index, overrides in enumerate(task_args.curriculum, start=1):
        folder = stage_dir(output_dir, index)
        stage_argv = [*argv, "--output_dir", str(folder), "--push_to_hub", "false"]  # the last given wins
        if previous is not None:
            stage_argv += ["--model_name_or_path", str(previous)]
        stage_args = parse_recipe(dataclass_types, stage_argv, overrides=overrides,
                                  overrides_name=f"curriculum stage {index}")
        stage_model, stage_task, stage_training = stage_args[:3]
        stage_eval = next((args for args in stage_args[3:] if isinstance(args, EvalArguments)), None)
        identity = json.loads(json.dumps({"overrides": overrides, "model": stage_model.model_name_or_path}))
        done = finished_stage(folder, identity)
        if done is not None:
            logger.info("curriculum stage %d of %d finished before (%s): skipped", index,
                        len(task_args.curriculum), folder)
            metrics = done["metrics"]
        else:
            logger.info("curriculum stage %d of %d: %s from %s, in %s", index, len(task_args.curriculum),
                        json.dumps(overrides), stage_model.model_name_or_path, folder)
            metrics = numeric_metrics(run_sft(stage_model, stage_task, stage_training, recipe_path,
                                              eval_args=stage_eval))
            if state.is_main_process:
                write_json_atomic(folder / STAGE_DONE, {"stage": index, "identity": identity, "metrics": metrics})
            state.wait_for_everyone()  # the next stage loads what the main process wrote
        stages.append({"stage": index, "output_dir": str(folder), "overrides": overrides, "metrics": metrics})
        previous = folder
    if state.is_main_process:
        publish_final_model(previous, output_dir)
        write_json_atomic(output_dir / CURRICULUM_RECORD, {"final_model": str(output_dir), "stages": stages})
        if push_repo:
            logger.info("pushed %s to %s", output_dir, push_folder(output_dir, push_repo,
                                                                    private=training_args.hub_private_repo))
    state.wait_for_everyone()
    return {**stages[-1]["metrics"], "curriculum_stages": len(stages)}
