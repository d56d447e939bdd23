#!/usr/bin/env python3
"""Score an official prediction file: `scripts/score.py TASK --gold GOLD --predictions PRED [--skip_missing]`.

Prints one JSON object of metrics as its last line (and writes it to --output when given: a file that exists is
replaced only where score.py wrote it, beside its OUTPUT.build.json record, or with --overwrite).
"""

from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from audio_recipes.cli import ArgumentParser, print_result, run
from audio_recipes.io import check_output_files, write_recorded_json
from audio_recipes.tasks import TASKS, get_task


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASKS), help="task whose scorer to use")
    parser.add_argument("--gold", required=True, type=Path, help="gold file, as the data set publishes it")
    parser.add_argument("--predictions", required=True, type=Path,
                        help="official prediction file (JSON lines; for mmar and mmau also a JSON list)")
    parser.add_argument("--skip_missing", action="store_true",
                        help="leave gold items without a prediction out of the scores (the original scripts do)")
    parser.add_argument("--output", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output file score.py did not write")
    args = parser.parse_args()

    check_output_files("score", [args.output], [args.gold, args.predictions], args.overwrite, command="score.py")
    metrics = get_task(args.task).score_files(args.gold, args.predictions, skip_missing=args.skip_missing)
    if args.output:
        write_recorded_json(args.output, metrics, "score", {
            "task": args.task, "gold": args.gold, "predictions": args.predictions, "skip_missing": args.skip_missing})
    print_result(metrics)


if __name__ == "__main__":
    run(main)
