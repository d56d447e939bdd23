"""Does the tiny speech-token recipe learn? For each variant (text embedding rows trained or frozen): the
held-out loss before training (step 0) and after, measured in the same run; the share of well-formed
generations (text, start marker, speech tokens, end marker) on the test rows; whether the text rows of the
embedding stayed bit-identical; and MMLU-Redux zero-shot accuracy of the base model and of each trained one
(a random-weight tiny model scores near chance: this exercises the before/after comparison, it does not
measure text ability).

    python benchmarks/speech_tokens_learning.py [--epochs 30] [--learning_rate 3e-3] [--mmlu_items 10]

Prints one JSON object as its last line (also written to --results when given).
"""

import argparse
import json
from pathlib import Path

from harness import ROOT, run  # also puts src/ on the path, for the imports below

from audio_recipes.paths import SHARED_DATA_DIR, TINY_MODELS_DIR

VARIANTS = ("speech_tokens", "speech_tokens_frozen_text")
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "high_school_geography", "moral_scenarios", "world_religions")


def text_rows_identical(base: Path, trained: Path) -> bool:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    offset = len(AutoTokenizer.from_pretrained(base))
    before = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    after = load_file(trained / "model.safetensors")["model.embed_tokens.weight"]
    return bool((before[:offset] == after[:offset]).all())


def train_and_generate(variant: str, output_dir: Path, epochs: float, learning_rate: float) -> dict:
    model_dir, eval_dir = output_dir / variant, output_dir / f"{variant}-eval"
    recipe = f"recipes/tiny/{variant}.yaml"
    run("sft.py", recipe, "--num_train_epochs", str(epochs), "--learning_rate", str(learning_rate),
        "--eval_strategy", "epoch", "--eval_on_start", "true", "--logging_steps", "10", "--output_dir", str(model_dir))
    history = json.loads((model_dir / "trainer_state.json").read_text())["log_history"]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    train_losses = [entry["loss"] for entry in history if "loss" in entry]
    run("evaluate.py", recipe, "--model_name_or_path", str(model_dir), "--output_dir", str(eval_dir))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    example = json.loads(run("generate_speech.py", "--model", str(model_dir), "--question",
                             "What is the capital of france?", "--max_new_tokens", "64").strip().splitlines()[-1])
    return {
        "held_out_loss_before": eval_losses[0],
        "held_out_loss_after": eval_losses[-1],
        "held_out_loss_by_epoch": [round(loss, 3) for loss in eval_losses],
        "train_loss_first_logged": train_losses[0],
        "train_loss_last_logged": train_losses[-1],
        "test_items": metrics["num_items"],
        "well_formed_rate": metrics["well_formed_rate"],
        "text_exact_match": metrics["text_exact_match"],
        "text_wer": metrics["text_wer"],
        "speech_token_error_rate": metrics["speech_token_error_rate"],
        "speech_length_ratio": metrics["speech_length_ratio"],
        "text_rows_identical": text_rows_identical(TINY_MODELS_DIR / "qwen3", model_dir),
        "example_answer": example,
    }


def mmlu_before_after(output_dir: Path, items: int) -> dict:
    models = [str(TINY_MODELS_DIR / "qwen3"), *(str(output_dir / variant) for variant in VARIANTS)]
    args = [argument for model in models for argument in ("--model", model)]
    # The log-likelihood variant, as the recorded results were measured (random tiny models: one forward per choice,
    # not 256 generated tokens per item)
    summary = json.loads(run("eval_mmlu_redux.py", *args, "--subjects", *MMLU_SUBJECTS, "--max_items_per_subject",
                             str(items), "--dtype", "float32", "--output_dir", str(output_dir / "mmlu_redux"),
                             "--variant", "loglikelihood")
                         .strip().splitlines()[-1])
    names = ["base", *VARIANTS]
    return {f"mmlu_accuracy_{name}": summary[model]["accuracy"] for name, model in zip(names, models, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--mmlu_items", type=int, default=10, help="items per subject (0: skip MMLU-Redux)")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "bench" / "speech_tokens_learning")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    run("make_tiny_models.py", "--models", "qwen3")
    results: dict = {"epochs": args.epochs, "learning_rate": args.learning_rate}
    for variant in VARIANTS:
        results[variant] = train_and_generate(variant, args.output_dir, args.epochs, args.learning_rate)
    if args.mmlu_items and (SHARED_DATA_DIR / "mmlu_redux").is_dir():
        results.update(mmlu_before_after(args.output_dir, args.mmlu_items))
    if args.results:
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
