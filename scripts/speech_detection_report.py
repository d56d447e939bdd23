#!/usr/bin/env python3
"""Compare speech detection systems evaluated on the same clips, side by side in one report:

    scripts/speech_detection_report.py finetuned=outputs/ft/eval-test zeroshot=outputs/zs/eval-test \
        silero=outputs/ft/eval-test/silero_vad_predictions.parquet --output_dir outputs/report

Each system is NAME=PATH, PATH an evaluation folder (its predictions.parquet) or a predictions parquet file.
Writes report.md (metrics with bootstrap intervals, breakdowns, calibration, latency, McNemar's exact test for
every pair) and the psychometric plot and data into --output_dir.
"""

import argparse
from pathlib import Path

import pandas as pd

from audio_recipes.cli import ArgumentParser, fail, run
from audio_recipes.tasks.speech_detection.report import write_detection_report


def read_system(argument: str) -> tuple[str, pd.DataFrame]:
    name, sep, path = argument.partition("=")
    if not sep or not name:
        fail(f"expected NAME=PATH, got {argument!r}")
    path = Path(path)
    file = path / "predictions.parquet" if path.is_dir() else path
    if not file.is_file():
        fail(f"{name}: no predictions file at {file}")
    return name, pd.read_parquet(file)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", help="NAME=PATH for each system")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    systems = dict(read_system(argument) for argument in args.systems)
    print(write_detection_report(args.output_dir, systems, title=args.title))


if __name__ == "__main__":
    run(main)
