#!/usr/bin/env python3
"""Build the tiny random-weight models used by the tests and smoke runs, and check each one.

python scripts/make_tiny_models.py                       # all, into tiny-models/ (skips up-to-date ones)
python scripts/make_tiny_models.py --models qwen2-audio --force
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from audio_recipes.cli import ArgumentParser, run
from audio_recipes.paths import TINY_MODELS_DIR
from audio_recipes.testing.tiny_models import TINY_MODEL_BUILDERS, ensure_tiny_model, smoke_check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output_dir", type=Path, default=TINY_MODELS_DIR, help="models go to OUTPUT_DIR/<name>"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(TINY_MODEL_BUILDERS),
        default=sorted(TINY_MODEL_BUILDERS),
        help="which tiny models to build (default: all)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date build exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name in args.models:
        start = time.perf_counter()
        path = ensure_tiny_model(name, root=args.output_dir, force=args.force)
        elapsed = time.perf_counter() - start
        figures = smoke_check(path)
        print(f"{name}: {path} (ready in {elapsed:.1f} s)")
        print(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    run(main)
