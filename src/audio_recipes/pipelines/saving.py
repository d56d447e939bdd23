"""A trained model's folder: the model or adapter, its processor, trainer state, metrics and model card; then the
push to the Hub. Shared by the SFT, GRPO and ReST pipelines."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from audio_recipes.config import ModelArguments, TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.hub import (
    ResolvedModel,
    base_model_hub_id,
    path_from_project_root,
    push_folder,
    write_model_card,
)
from audio_recipes.io import numeric_metrics, write_json_atomic
from audio_recipes.recipe import options_evaluate_lacks, recipe_dict

logger = logging.getLogger(__name__)



class FullWeightsResume:
    """A Trainer mixin (SFT and GRPO) that resumes full-model checkpoints with their weights.

    transformers 5 resumes with `load_state_dict` on the keys as saved, but `save_pretrained` writes them in the
    checkpoint's original layout (`audio_tower.*`, not `model.audio_tower.*`): nothing loads, with only a warning,
    and training goes on from the initial weights (transformers issue 43701). from_pretrained converts the keys.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = self.model if model is None else model
        folder = Path(resume_from_checkpoint)
        full_weights = (folder / SAFE_WEIGHTS_NAME).is_file() or (folder / SAFE_WEIGHTS_INDEX_NAME).is_file()
        if not full_weights or not isinstance(target, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(target).from_pretrained(folder, dtype=target.dtype)
        target.load_state_dict(saved.state_dict(), strict=True)
        logger.info("model weights loaded from %s", folder)


def save_trained(trainer, processor, metrics: dict, model_args: ModelArguments, task_args: TaskArguments,
                 training_args, resolved: ResolvedModel, recipe_path: str, push_repo: str | None,
                 evaluation_recipe: str | None = None) -> Path:
    """Model or adapter, processor, trainer_state.json, metrics and model card in output_dir; then the push.

    The card's Use command evaluates the model with `evaluation_recipe`, by default the training recipe where
    scripts/evaluate.py takes it."""
    trainer.save_model(training_args.output_dir)  # on every rank: ZeRO-3 gathers the weights from all of them
    trainer.save_state()  # trainer_state.json with the log history
    output_dir = Path(training_args.output_dir)
    if not trainer.is_world_process_zero():
        return output_dir
    processor.save_pretrained(training_args.output_dir)
    write_json_atomic(output_dir / "train_metrics.json", numeric_metrics(metrics))
    try:
        if evaluation_recipe is None and not options_evaluate_lacks(recipe_path):
            evaluation_recipe = recipe_path
    except RecipeError as error:  # the recipe moved since it was parsed: the card names no evaluation recipe
        logger.warning("model card: %s", error)
    write_model_card(
        output_dir, repo_id=push_repo or training_args.hub_model_id or output_dir.name,
        base_model=base_model_hub_id(resolved.base_model), recipe_path=path_from_project_root(recipe_path), task=task_args.task,
        data_files={"train": task_args.train_file or task_args.dataset_name, "eval": task_args.eval_file},
        metrics=numeric_metrics(metrics), is_adapter=(output_dir / "adapter_config.json").is_file(),
        recipe=recipe_dict(model_args, task_args), use_model=push_repo or path_from_project_root(output_dir),
        evaluation_recipe=path_from_project_root(evaluation_recipe) if evaluation_recipe else None,
    )
    if push_repo:
        logger.info("pushed %s to %s", output_dir, push_folder(output_dir, push_repo,
                                                                private=training_args.hub_private_repo))
    return output_dir
