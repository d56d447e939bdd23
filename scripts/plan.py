#!/usr/bin/env python3
"""A plan before the run, without loading weights: parameters (total, trainable), memory per GPU (weights, gradients,
optimizer states, activations) for the recipe's batch, sequence and audio lengths, tokens per optimizer step, and a
verdict for the GPU's memory with the first knob to turn when it does not fit. The last line is one JSON object.

    scripts/plan.py RECIPE.yaml [--config_file accelerate_configs/X.yaml] [--num_processes N] [--gpu_memory_gb G]
                    [--audio_seconds S] [--key value ...]
"""

import logging
import sys

from audio_recipes.cli import print_result, run
from audio_recipes.pipelines.plan import run_plan


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    print_result(run_plan(sys.argv[1:]))


if __name__ == "__main__":
    run(main)
