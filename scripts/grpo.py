#!/usr/bin/env python3
"""GRPO for audio models from a recipe: `scripts/grpo.py RECIPE.yaml [--key value ...]`.

The rewards are named in the recipe (`reward_funcs`); every forward of the policy, old policy and
reference model sees the audio (audio_recipes.pipelines.grpo).
"""

import logging

from audio_recipes.cli import print_result, run
from audio_recipes.config import GRPOConfig, ModelArguments, RewardArguments, TaskArguments
from audio_recipes.pipelines.grpo import run_grpo
from audio_recipes.recipe import parse_recipe


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    model_args, task_args, reward_args, training_args, recipe_path = parse_recipe(
        (ModelArguments, TaskArguments, RewardArguments, GRPOConfig), description=__doc__, return_recipe_path=True
    )
    print_result(run_grpo(model_args, task_args, reward_args, training_args, recipe_path=recipe_path))


if __name__ == "__main__":
    run(main)
