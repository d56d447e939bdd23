#!/usr/bin/env python3
"""Build a task's data: `scripts/prepare_data.py NAME [options]` (`NAME --help` lists a builder's options)."""

import sys

from audio_recipes.cli import fail, run
from audio_recipes.prepare import DATA_BUILDERS, run_builder


def main() -> None:
    builders = ", ".join(DATA_BUILDERS.names()) or "none yet"
    if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        print("builders:", builders)
        return
    if len(sys.argv) < 2 or sys.argv[1] not in DATA_BUILDERS:
        given = f"unknown data builder {sys.argv[1]!r}" if len(sys.argv) >= 2 else "no data builder named"
        fail(f"{given}: usage: prepare_data.py NAME [options], NAME one of {builders}")
    run_builder(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    run(main)
