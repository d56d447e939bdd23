"""One recipe under several seeds: train and evaluate each, then a summary table (mean, spread) of the metrics."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_recipes.config import RECIPE_ARGUMENT_TYPES
from audio_recipes.io import numeric_metrics, write_json_atomic, write_text_atomic
from audio_recipes.pipelines.curriculum import run_training
from audio_recipes.pipelines.evaluate import run_evaluation
from audio_recipes.recipe import parse_recipe

logger = logging.getLogger(__name__)

SUMMARY_JSON = "seeds_summary.json"
SUMMARY_MD = "seeds_summary.md"
ONE_SEED_NOTE = "One seed: no standard deviation (a spread needs two or more seeds)."
HEADLINE = ("accuracy", "SPEECH_accuracy", "NONSPEECH_accuracy", "precision", "recall", "f1", "macro_f1", "ece",
            "num_invalid_outputs", "intent_accuracy", "scenario_accuracy", "slu_f1")


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """For every number the seeds share: mean, sample standard deviation (None with one seed: there is no spread to
    measure), min, max and the seed count."""
    numbers = [numeric_metrics(metrics) for metrics in per_seed.values()]
    shared = [key for key in numbers[0] if all(key in m and m[key] is not None for m in numbers)]
    summary = {}
    for key in shared:
        values = [float(m[key]) for m in numbers]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        summary[key] = {"mean": mean, "std": std, "min": min(values), "max": max(values), "num_seeds": len(values)}
    return summary


def summary_table(per_seed: dict[int, dict[str, Any]], summary: dict[str, dict[str, float | None]]) -> str:
    keys = [key for key in HEADLINE if key in summary] or list(summary)[:12]
    lines = ["| metric | " + " | ".join(f"seed {seed}" for seed in per_seed) + " | mean | std | min | max |",
             "|---|" + "---|" * (len(per_seed) + 4)]
    for key in keys:
        cells = [f"{per_seed[seed][key]:.4f}" for seed in per_seed]
        stats = summary[key]
        cells += ["n/a" if stats[name] is None else f"{stats[name]:.4f}" for name in ("mean", "std", "min", "max")]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    note = f"\n{ONE_SEED_NOTE}\n" if len(per_seed) == 1 else ""
    return "\n".join(lines) + "\n" + note


def run_seeds(recipe: str, seeds: Sequence[int], overrides: Sequence[str], output_dir: Path,
              evaluate_only: bool = False) -> dict[str, Any]:
    """Train (unless evaluate_only) and evaluate the recipe once per seed into output_dir/seed-N; a seed whose
    metrics.json exists is not run again, so an interrupted run resumes."""
    types = RECIPE_ARGUMENT_TYPES
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        seed_dir = output_dir / f"seed-{seed}"
        eval_dir = seed_dir / "eval"
        if (eval_dir / "metrics.json").is_file():
            per_seed[seed] = json.loads((eval_dir / "metrics.json").read_text())
            logger.info("seed %s: already evaluated in %s", seed, eval_dir)
            continue
        argv = [recipe, *overrides, "--seed", str(seed), "--output_dir", str(seed_dir)]
        if not evaluate_only and not (seed_dir / "train_metrics.json").is_file():
            run_training(types, argv, parse_recipe(types, argv), recipe)  # a curriculum's stages where it has one
        model_args, task_args, training_args, eval_args = parse_recipe(types, argv)
        if not evaluate_only:
            model_args.model_name_or_path = str(seed_dir)
        per_seed[seed] = run_evaluation(model_args, task_args, training_args, eval_args, eval_dir)
    summary = summarize(per_seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / SUMMARY_JSON, {"recipe": recipe, "seeds": list(seeds), "summary": summary,
                                                  "per_seed": {str(s): numeric_metrics(m) for s, m in per_seed.items()},
                                                  "note": ONE_SEED_NOTE if len(per_seed) == 1 else ""})
    write_text_atomic(output_dir / SUMMARY_MD, f"# {recipe}: {len(per_seed)} seeds\n\n" + summary_table(per_seed, summary))
    return summary
