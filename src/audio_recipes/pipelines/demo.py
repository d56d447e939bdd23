"""What `make demo` trained on and how its result compares with what to expect, in a few lines a newcomer reads.

The demo trains the tiny SLURP recipe (a random-weight Qwen2-Audio of 0.4 M parameters, on four of SLURP's
scenarios) and evaluates it on the test sentences. A model that small does not understand speech; what the run shows
is that the whole path works: the model learns to answer in SLURP's JSON and, from the audio alone, tells the
scenarios apart better than always answering the most frequent one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from audio_recipes.io import read_jsonl

# What the demo must show (issue 11): valid JSON on most test items, scenario accuracy above the majority scenario
MIN_VALID_FRACTION = 0.9


def majority_scenario(train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]) -> tuple[str, float]:
    """The training data's most frequent scenario and the test accuracy of always answering it."""
    scenario, _ = Counter(row["scenario"] for row in train_rows).most_common(1)[0]
    return scenario, sum(row["scenario"] == scenario for row in test_rows) / len(test_rows)


def demo_report(train_file: Path, test_file: Path, eval_dir: Path) -> tuple[list[str], bool]:
    """Lines to print, and whether the result is what the demo should show."""
    train_rows, test_rows = read_jsonl(train_file), read_jsonl(test_file)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    shared = {row["slurp_id"] for row in train_rows} & {row["slurp_id"] for row in test_rows}
    baseline_scenario, baseline = majority_scenario(train_rows, test_rows)
    scenarios = sorted({row["scenario"] for row in train_rows})
    num_gold = metrics["num_gold"]
    valid = num_gold - metrics["num_invalid_outputs"] - metrics["num_missing"]
    valid_ok = valid >= MIN_VALID_FRACTION * num_gold
    scenario_ok = metrics["scenario_accuracy"] > baseline
    lines = [
        f"trained on: {len(train_rows)} SLURP sentences of {len(scenarios)} scenarios ({', '.join(scenarios)}; "
        f"{train_file}), speech synthesised by espeak-ng",
        f"tested on:  {len(test_rows)} other SLURP sentences ({test_file}); sentences in both: {len(shared)}",
        f"valid JSON: {valid}/{num_gold} test outputs (expected at least {MIN_VALID_FRACTION:.0%}) "
        f"{'ok' if valid_ok else 'LOW'}",
        f"scenario accuracy: {metrics['scenario_accuracy']:.2f} against {baseline:.2f} for always answering "
        f"'{baseline_scenario}' (the training data's most frequent scenario) {'ok' if scenario_ok else 'LOW'}",
        f"intent accuracy {metrics['intent_accuracy']:.2f}, SLU-F1 {metrics['slu_f1']:.2f}: a 0.4 M-parameter model "
        "trained on 200 sentences does not understand speech; the real recipe (recipes/slurp.yaml) is for that",
        f"all metrics: {eval_dir / 'metrics.json'}",
    ]
    ok = valid_ok and scenario_ok and not shared
    lines.append("demo: as expected" if ok else "demo: NOT as expected (see the lines above)")
    return lines, ok
