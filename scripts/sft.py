#!/usr/bin/env python3
"""Supervised fine-tuning from a recipe: `scripts/sft.py RECIPE.yaml [--key value ...]`; a recipe with
`curriculum:` trains its stages in turn (output_dir/stage_1, stage_2, ...)."""

import logging
import sys

from audio_recipes.cli import print_result, run
from audio_recipes.config import RECIPE_ARGUMENT_TYPES
from audio_recipes.pipelines.curriculum import run_training
from audio_recipes.recipe import parse_recipe


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:]
    # EvalArguments are parsed too, so that one recipe serves sft.py and evaluate.py (and the generation log decodes
    # as evaluation does)
    *parsed, recipe_path = parse_recipe(RECIPE_ARGUMENT_TYPES, argv, description=__doc__, return_recipe_path=True)
    print_result(run_training(RECIPE_ARGUMENT_TYPES, argv, tuple(parsed), recipe_path))


if __name__ == "__main__":
    run(main)
