#!/usr/bin/env python3
"""ReST from a recipe: `scripts/rest.py RECIPE.yaml [--key value ...]`.

Each iteration samples K answers per training question, keeps those the recipe's rewards score correct,
fine-tunes the LoRA adapter on them, and reports the kept fraction and held-out accuracy
against the starting model's (`<output_dir>/rest_summary.json`, printed as `{"start": {...}, "iterations": [...]}`).
Rerunning the same command resumes an interrupted loop.
"""

import logging

from audio_recipes.cli import print_result, run
from audio_recipes.config import (
    EvalArguments,
    ModelArguments,
    RestArguments,
    RewardArguments,
    SFTConfig,
    TaskArguments,
)
from audio_recipes.pipelines.rest import RestLoop
from audio_recipes.recipe import parse_recipe


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    *parsed, recipe_path = parse_recipe(
        (ModelArguments, TaskArguments, RewardArguments, SFTConfig, EvalArguments, RestArguments),
        description=__doc__, return_recipe_path=True,
    )
    loop = RestLoop(*parsed, recipe_path=recipe_path)
    iterations = loop.run()
    print_result({"start": loop.start, "iterations": iterations})


if __name__ == "__main__":
    run(main)
