#!/usr/bin/env python3
"""Text ability before and after speech-token training: MMLU-Redux, zero-shot, accuracy by subject and overall.

    scripts/eval_mmlu_redux.py --model Qwen/Qwen3-0.6B --model outputs/qwen3-speech-tokens \
        [--variant generative|loglikelihood] [--data_dir ../shared/data/mmlu_redux] [--output_dir outputs/mmlu_redux] \
        [--subjects anatomy ...] [--max_items_per_subject N] [--batch_size 8] [--dtype bfloat16] \
        [--max_new_tokens 256] [--backend project|lm_eval] [--resume]

--variant generative (the default) is lm-eval's mmlu_redux_generative, what published MMLU-Redux figures use: the
5,330 rows annotated "ok", a prompt asking for the letter, greedy generation, the first A-D in the answer;
--variant loglikelihood is lm-eval's mmlu log-likelihood template on every row with an answer. Each metrics.json and
the table say which. The first model is the baseline; the table shows each other model's change from it. Per model,
OUTPUT_DIR/<variant>/<model>/ holds items.jsonl (written as it goes; --resume continues) and metrics.json;
OUTPUT_DIR/<variant>/comparison.md and comparison.json hold the table. The project's scorer follows lm-eval exactly
(tests/test_mmlu_redux.py checks it against lm-eval); --backend lm_eval runs lm-eval itself.
Prints the overall accuracies as one JSON object (last line).
"""

import argparse
import json
import logging
from pathlib import Path

from audio_recipes.cli import ArgumentParser, run
from audio_recipes.io import write_json_atomic
from audio_recipes.paths import SHARED_DATA_DIR
from audio_recipes.pipelines.mmlu_redux import (
    MAX_GEN_TOKS,
    VARIANTS,
    comparison_table,
    evaluate_model,
    model_slug,
    read_mmlu_redux,
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="model folder or Hub id (repeat)")
    parser.add_argument("--data_dir", type=Path, default=SHARED_DATA_DIR / "mmlu_redux")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/mmlu_redux"))
    parser.add_argument("--subjects", nargs="+", help="subjects to score (default: all)")
    parser.add_argument("--max_items_per_subject", type=int, help="score only the first N items of each subject")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float32, ...")
    parser.add_argument("--variant", choices=VARIANTS, default="generative",
                        help="generative: lm-eval's mmlu_redux_generative (published figures); loglikelihood: "
                        "lm-eval's mmlu template")
    parser.add_argument("--max_new_tokens", type=int, default=MAX_GEN_TOKS, help="generative: tokens generated at most")
    parser.add_argument("--backend", choices=["project", "lm_eval"], default="project")
    parser.add_argument("--resume", action="store_true", help="keep the items an interrupted run scored")
    args = parser.parse_args()

    data = read_mmlu_redux(args.data_dir, args.subjects, args.max_items_per_subject)
    output_dir = args.output_dir / args.variant
    results = [evaluate_model(name, data, output_dir / model_slug(name), backend=args.backend,
                              batch_size=args.batch_size, dtype=args.dtype, resume=args.resume, variant=args.variant,
                              max_new_tokens=args.max_new_tokens)
               for name in args.model]
    table = comparison_table(results)
    (output_dir / "comparison.md").write_text(table, encoding="utf-8")
    write_json_atomic(output_dir / "comparison.json", results)
    print(table)
    print(f"variant: {args.variant}; items scored: {results[0]['items']} of {len(data.items)}; "
          f"skipped (no answer): {sum(data.skipped_no_answer.values())}; "
          f"decoded as: {data.decoded_as or 'utf-8'}")
    print(json.dumps({result["model"]: {"accuracy": result["accuracy"], "macro_accuracy": result["macro_accuracy"],
                                        "variant": result["variant"], "lm_eval_task": result["lm_eval_task"]}
                      for result in results}))


if __name__ == "__main__":
    run(main)
