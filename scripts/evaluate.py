#!/usr/bin/env python3
"""Evaluate a model on a recipe's task: `scripts/evaluate.py RECIPE.yaml --model_name_or_path M [--output_dir D]`.

M is a local checkpoint or adapter, or a Hub id of either. Results go to D, or to
`<recipe output_dir>/eval/<model>/<split>` when --output_dir is not given (a Hub id `org/name` is `org--name`, a
local path `outputs/x` is `outputs--x`), so that evaluations of two models never share a folder. Under
`accelerate launch` with several processes, each process takes a shard and the main process merges them and
prints the metrics as one JSON object (the last line of stdout).
"""

import logging
import sys
from pathlib import Path

from audio_recipes.cli import print_result, run
from audio_recipes.config import evaluation_argument_types
from audio_recipes.pipelines.evaluate import default_evaluation_dir, run_evaluation
from audio_recipes.recipe import parse_recipe


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:]
    model_args, task_args, training_args, eval_args = parse_recipe(evaluation_argument_types(), argv,
                                                                   description=__doc__)
    explicit_output = any(arg == "--output_dir" or arg.startswith("--output_dir=") for arg in argv)
    output_dir = Path(training_args.output_dir)
    if not explicit_output:
        output_dir = default_evaluation_dir(output_dir, model_args.model_name_or_path, eval_args.split)
    metrics = run_evaluation(model_args, task_args, training_args, eval_args, output_dir)
    if metrics:  # the main process's; the others return none
        print_result(metrics)


if __name__ == "__main__":
    run(main)
