"""Does the tiny SLURP recipe learn? Text-only SFT on SLURP's real devel annotations, scored on held-out
test sentences against the majority-scenario baseline; and the audio recipe's loss over training.

    python benchmarks/slurp_learning.py [--epochs 6] [--eval_items 300] [--audio_steps 40]

Prints one JSON object as its last line (also written to --results when given).
"""

import argparse
import collections
import json
from pathlib import Path

from harness import ROOT, run  # also puts src/ on the path, for the imports below

from audio_recipes.paths import SHARED_DATA_DIR  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def text_recipe_learns(output_dir: Path, epochs: float, eval_items: int) -> dict:
    train_file = SHARED_DATA_DIR / "slurp" / "devel.jsonl"
    test_file = SHARED_DATA_DIR / "slurp" / "test.jsonl"
    model_dir, eval_dir = output_dir / "text-model", output_dir / "text-eval"
    run("sft.py", "recipes/tiny/slurp_text.yaml", "--train_file", str(train_file), "--num_train_epochs", str(epochs),
        "--learning_rate", "3e-3", "--per_device_train_batch_size", "16", "--logging_steps", "20",
        "--output_dir", str(model_dir))
    run("evaluate.py", "recipes/tiny/slurp_text.yaml", "--model_name_or_path", str(model_dir),
        "--test_file", str(test_file), "--max_eval_samples", str(eval_items), "--per_device_eval_batch_size", "32",
        "--output_dir", str(eval_dir))
    metrics = json.loads((eval_dir / "metrics.json").read_text())

    majority = collections.Counter(row["scenario"] for row in read_jsonl(train_file)).most_common(1)[0][0]
    evaluated = read_jsonl(test_file)[:eval_items]
    baseline = sum(row["scenario"] == majority for row in evaluated) / len(evaluated)
    return {
        "text_scenario_accuracy": metrics["scenario_accuracy"],
        "text_intent_accuracy": metrics["intent_accuracy"],
        "text_slu_f1": metrics["slu_f1"],
        "text_invalid_outputs": metrics["num_invalid_outputs"],
        "text_eval_items": len(evaluated),
        "majority_scenario": majority,
        "majority_scenario_accuracy": baseline,
        "text_train_epochs": epochs,
    }


def audio_recipe_loss(output_dir: Path, steps: int) -> dict:
    model_dir = output_dir / "audio-model"
    run("sft.py", "recipes/tiny/slurp.yaml", "--max_steps", str(steps), "--learning_rate", "3e-3",
        "--logging_steps", "1", "--output_dir", str(model_dir))
    history = json.loads((model_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    window = max(1, len(losses) // 10)
    return {
        "audio_loss_first": sum(losses[:window]) / window,
        "audio_loss_last": sum(losses[-window:]) / window,
        "audio_train_steps": len(losses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--eval_items", type=int, default=300)
    parser.add_argument("--audio_steps", type=int, default=40)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "bench" / "slurp_learning")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    if not (SHARED_DATA_DIR / "slurp" / "devel.jsonl").is_file():
        raise SystemExit(f"needs SLURP's real annotations at {SHARED_DATA_DIR / 'slurp'}")
    run("make_tiny_models.py")
    results = {**text_recipe_learns(args.output_dir, args.epochs, args.eval_items),
               **audio_recipe_loss(args.output_dir, args.audio_steps)}
    if args.results:
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
