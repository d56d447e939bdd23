"""What the model sees: rendered prompts, targets and the exact text of the tokens that carry loss."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from audio_recipes.collators import IGNORE_INDEX, build_collator
from audio_recipes.config import ModelArguments, TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.hub import resolve_model
from audio_recipes.io import write_text_atomic
from audio_recipes.models import load_processor
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.mixture import training_data
from audio_recipes.recipe import parse_recipe


def loss_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decode the tokens whose label is not ignored, special tokens kept."""
    return tokenizer.decode([token for token, label in zip(input_ids, labels, strict=True) if label != IGNORE_INDEX],
                            skip_special_tokens=False)


def recipe_or_stage(dataclass_types: tuple[type, ...], argv: list[str], parsed: tuple) -> tuple:
    """The parsed recipe, or for a curriculum the stage that --curriculum_stage names (the stage's options over the
    recipe, the command line over both, as training parses it); the training split of a curriculum needs a stage."""
    task_args = next(args for args in parsed if isinstance(args, TaskArguments))
    inspect_args = parsed[-1]
    stage, stages = inspect_args.curriculum_stage, task_args.curriculum or []
    if stage is None:
        if stages and inspect_args.inspect_split == "train":
            raise RecipeError(f"the recipe has a curriculum of {len(stages)} stages, each training on other rows: "
                              f"pass --curriculum_stage N (1 to {len(stages)}) to see what stage N trains on")
        return parsed
    if not stages:
        raise RecipeError(f"--curriculum_stage {stage}: the recipe has no curriculum")
    if not 1 <= stage <= len(stages):
        raise RecipeError(f"--curriculum_stage {stage}: the recipe's curriculum has stages 1 to {len(stages)}")
    return parse_recipe(dataclass_types, argv, overrides=stages[stage - 1], overrides_name=f"curriculum stage {stage}")


def inspect_examples(model_args: ModelArguments, task_args: TaskArguments, inspect_args,
                     seed: int) -> Iterator[dict[str, Any]]:
    """The first num_samples examples of the split as the model sees them; the training split as training reads it
    (its sources and speech_fraction, chosen with `seed`), so that the rows shown are the rows trained on."""
    resolved = resolve_model(model_args.model_name_or_path, revision=model_args.model_revision)
    processor = load_processor(model_args.processor_name_or_path or resolved.processor_source,
                               model_type=AutoConfig.from_pretrained(resolved.base_model).model_type)
    collator = build_collator(processor, task_args, with_completion=True)
    task = recipe_task(task_args)
    split = inspect_args.inspect_split
    examples = training_data(task, seed).examples if split == "train" else task.examples(split)
    examples = examples[: inspect_args.num_samples]
    records = []
    for example in examples:
        row = example.to_row()
        batch = collator([row])
        input_ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        prompt_length = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        records.append({
            "id": example.id,
            "audio": example.audio,
            # Decoded from the batch, so audio placeholders appear expanded, as the model sees them
            "prompt": collator.tokenizer.decode(input_ids[:prompt_length], skip_special_tokens=False),
            "target": example.completion,
            "loss_text": loss_text(collator.tokenizer, input_ids, labels),
        })
        yield records[-1]
    if inspect_args.save_path:
        path = Path(inspect_args.save_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps({k: r[k] for k in ("prompt", "target", "loss_text")},
                                           ensure_ascii=False) + "\n" for r in records))
