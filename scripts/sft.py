#!/usr/bin/env python3
"""Supervised fine-tuning from a recipe: `scripts/sft.py RECIPE.yaml [--key value ...]`; a recipe with
`curriculum:` trains its stages in turn (output_dir/stage_1, stage_2, ...)."""

import logging
import sys

from audio_recipes.cli import print_result, run
from audio_recipes.config import EvalArguments, ModelArguments, SFTConfig, TaskArguments
from audio_recipes.pipelines.curriculum import run_curriculum
from audio_recipes.pipelines.sft import run_sft
from audio_recipes.recipe import parse_recipe

# EvalArguments are parsed too, so that one recipe serves sft.py and evaluate.py (and the generation log decodes
# as evaluation does)
ARGUMENT_TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:]
    model_args, task_args, training_args, eval_args, recipe_path = parse_recipe(
        ARGUMENT_TYPES, argv, description=__doc__, return_recipe_path=True
    )
    if task_args.curriculum:
        print_result(run_curriculum(ARGUMENT_TYPES, argv, task_args, training_args, recipe_path))
    else:
        print_result(run_sft(model_args, task_args, training_args, recipe_path=recipe_path, eval_args=eval_args))


if __name__ == "__main__":
    run(main)
