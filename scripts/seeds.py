#!/usr/bin/env python3
"""Train and evaluate a recipe under several seeds, with a summary table (mean, std, min, max):

    scripts/seeds.py RECIPE.yaml --seeds 42 123 456 --seeds_dir DIR [--evaluate_only] [--key value ...]

Each seed goes to DIR/seed-N (model) and DIR/seed-N/eval (evaluation); DIR/seeds_summary.md and .json hold the
table. A seed already evaluated is not run again; DIR/seeds_run.json records the run's settings (recipe options and
command line but the seed), and a DIR of another run is refused, naming what differs. --evaluate_only evaluates the
recipe's model as it is (a zero-shot recipe), one evaluation per seed. Other options are recipe keys, as for sft.py and evaluate.py.
"""

import argparse
import logging
import sys
from pathlib import Path

from audio_recipes.cli import ArgumentParser, run
from audio_recipes.pipelines.seeds import SUMMARY_MD, run_seeds


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--seeds_dir", type=Path, required=True, help="Where each seed's model and evaluation go.")
    parser.add_argument("--evaluate_only", action="store_true", help="Evaluate the recipe's model without training.")
    args, overrides = parser.parse_known_args(sys.argv[1:])
    run_seeds(args.recipe, args.seeds, overrides, args.seeds_dir, evaluate_only=args.evaluate_only)
    print((args.seeds_dir / SUMMARY_MD).read_text())


if __name__ == "__main__":
    run(main)
