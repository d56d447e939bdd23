#!/usr/bin/env python3
"""Show exactly what the model sees: `scripts/inspect_data.py RECIPE.yaml --num_samples N [--save_path F]`.

The training split is read as scripts/sft.py reads it (sources, speech_fraction, seed): the rows shown are
rows trained on; for a curriculum, those of the stage --curriculum_stage N names. For each example: the rendered
prompt, the target, and the text of the tokens that carry loss (special tokens included). --save_path writes
JSON lines with the keys prompt, target, loss_text.
"""

import sys

from audio_recipes.cli import run
from audio_recipes.config import EvalArguments, InspectArguments, ModelArguments, SFTConfig, TaskArguments
from audio_recipes.pipelines.inspect import inspect_examples, recipe_or_stage
from audio_recipes.recipe import parse_recipe


def main() -> None:
    types = (ModelArguments, TaskArguments, SFTConfig, EvalArguments, InspectArguments)
    parsed = parse_recipe(types, description=__doc__)
    model_args, task_args, training_args, _, inspect_args = recipe_or_stage(types, sys.argv[1:], parsed)
    records = inspect_examples(model_args, task_args, inspect_args, seed=training_args.seed)
    for number, record in enumerate(records, start=1):
        print(f"===== example {number}: {record['id']} (audio: {record['audio']})")
        print("----- prompt\n" + record["prompt"])
        print("----- target\n" + record["target"])
        print("----- tokens carrying loss\n" + record["loss_text"])


if __name__ == "__main__":
    run(main)
