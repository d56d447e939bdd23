"""One recipe under several seeds: train and evaluate each, then a summary table (mean, spread) of the metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_recipes.config import RECIPE_ARGUMENT_TYPES
from audio_recipes.errors import RecipeError
from audio_recipes.io import numeric_metrics, read_json, write_json_atomic, write_text_atomic
from audio_recipes.pipelines.curriculum import run_training
from audio_recipes.pipelines.evaluate import run_evaluation
from audio_recipes.recipe import parse_recipe

logger = logging.getLogger(__name__)

SUMMARY_JSON = "seeds_summary.json"
SUMMARY_MD = "seeds_summary.md"
RUN_RECORD = "seeds_run.json"  # what the seed-N folders were trained and evaluated with
ONE_SEED_NOTE = "One seed: no standard deviation (a spread needs two or more seeds)."
# Options that do not change what a seed trains or scores: where it writes (set per seed), the seed, resuming,
# the Hub and logging
NOT_IN_RUN_IDENTITY = frozenset({
    "output_dir", "seed", "resume_from_checkpoint", "push_to_hub", "report_to", "run_name", "disable_tqdm",
    "log_level", "log_level_replica", "log_on_each_node", "logging_dir", "logging_first_step",
    "logging_nan_inf_filter", "logging_steps", "logging_strategy",
})
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


def run_identity(recipe: str, overrides: Sequence[str], evaluate_only: bool) -> dict[str, Any]:
    """What every seed of the run shares: each option the recipe and the command line give (but those of
    NOT_IN_RUN_IDENTITY and the Hub's), and whether it trains."""
    options = {}
    for instance in parse_recipe(RECIPE_ARGUMENT_TYPES, [recipe, *overrides]):
        for option in dataclasses.fields(instance):
            if option.init and option.name not in NOT_IN_RUN_IDENTITY and not option.name.startswith("hub_"):
                options[option.name] = getattr(instance, option.name)
    return json.loads(json.dumps({"evaluate_only": evaluate_only, "options": options}, default=str))


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a recorded run identity and this one, one short phrase per setting."""
    if not isinstance(then, dict) or not isinstance(then.get("options"), dict):
        return [f"{RUN_RECORD} is not a seeds run record"]
    differences = [f"evaluate_only: {then.get('evaluate_only')} then, {now['evaluate_only']} now"
                   if then.get("evaluate_only") != now["evaluate_only"] else ""]
    old, new = then["options"], now["options"]
    differences += [f"{key}: {_shown(old.get(key))} then, {_shown(new.get(key))} now"
                    for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return [difference for difference in differences if difference]


def check_run_record(output_dir: Path, identity: dict[str, Any]) -> None:
    """output_dir's record of the run its seeds belong to: written on the first run, refused when it differs (the
    seeds evaluated before would be summarised with this run's), or missing where seeds were run before."""
    record = output_dir / RUN_RECORD
    if record.is_file():
        differences = run_differences(read_json(record), identity)
        if differences:
            raise RecipeError(f"{output_dir} holds seeds of another run ({'; '.join(differences)}; {record}): name "
                              "another --seeds_dir, or remove it to start over")
        return
    earlier = sorted(path.name for pattern in ("seed-*", "seeds_summary.*") for path in output_dir.glob(pattern))
    if earlier:
        raise RecipeError(f"{output_dir} holds {', '.join(earlier[:3])} but no {RUN_RECORD} says which run made them:"
                          " name another --seeds_dir, or remove them to start over")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, identity)


def run_seeds(recipe: str, seeds: Sequence[int], overrides: Sequence[str], output_dir: Path,
              evaluate_only: bool = False) -> dict[str, Any]:
    """Train (unless evaluate_only) and evaluate the recipe once per seed into output_dir/seed-N; a seed whose
    metrics.json exists is not run again, so an interrupted run resumes (into a folder of the same run only:
    RUN_RECORD)."""
    types = RECIPE_ARGUMENT_TYPES
    check_run_record(output_dir, run_identity(recipe, overrides, evaluate_only))
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
