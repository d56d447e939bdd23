#!/usr/bin/env python3
"""After `make demo`: what it trained on, and its result against what to expect (exit 1 when not as expected).

    scripts/demo_report.py RECIPE.yaml EVAL_DIR
"""

from pathlib import Path

from audio_recipes.cli import ArgumentParser, fail, run
from audio_recipes.pipelines.demo import demo_report
from audio_recipes.recipe import load_recipe


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("recipe", help="the demo's recipe (recipes/tiny/slurp.yaml)")
    parser.add_argument("eval_dir", type=Path, help="the folder evaluate.py wrote")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    lines, ok = demo_report(Path(recipe["train_file"]), Path(recipe["test_file"]), args.eval_dir)
    print("\n".join(lines))
    if not ok:
        fail("the demo's result is not what it should be", status=1)


if __name__ == "__main__":
    run(main)
