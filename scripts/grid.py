#!/usr/bin/env python3
"""Run an experiment grid: `scripts/grid.py GRID.yaml [--output_dir DIR]`.

Every combination of the grid's axes is a cell: the base recipe with the cell's overrides, written to
DIR/CELL/recipe.yaml, trained by scripts/sft.py and evaluated by scripts/evaluate.py in its own folder. A finished
cell (DIR/CELL/result.json) is skipped and an interrupted one resumes, so rerunning the command completes a grid.
DIR/grid.md, grid.csv (one row per cell: axes, metrics) and grid.png (one subplot per metric) hold the results.
See docs/usage.md for the grid file.
"""

import argparse
import logging
from pathlib import Path

from audio_recipes.cli import ArgumentParser, run
from audio_recipes.pipelines.grid import TABLE_MD, load_grid, run_grid


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--output_dir", type=Path, help="Where the cells and the table go (default: the grid's).")
    args = parser.parse_args()
    run_grid(args.grid, args.output_dir)
    print((load_grid(args.grid, args.output_dir).output_dir / TABLE_MD).read_text())


if __name__ == "__main__":
    run(main)
