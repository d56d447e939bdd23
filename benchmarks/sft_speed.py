"""Training speed and memory of a tiny SFT run on CPU: tokens per second (all tokens the model sees,
audio placeholders included) and the peak resident memory of the training process.

    python benchmarks/sft_speed.py [--steps 30] [--runs 5] [--recipe recipes/tiny/slurp.yaml]
"""

import argparse
import json
import subprocess
import sys
import tempfile

import harness

CHILD = """
import json, resource, sys
sys.argv = ["sft.py", *sys.argv[1:]]
from trl import SFTConfig
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.recipe import parse_recipe
from audio_recipes.pipelines.sft import build_trainer
model_args, task_args, training_args, _ = parse_recipe((ModelArguments, TaskArguments, SFTConfig, EvalArguments))
trainer = build_trainer(model_args, task_args, training_args).trainer
result = trainer.train()
tokens = trainer.state.num_input_tokens_seen or trainer._total_train_tokens
print(json.dumps({"runtime": result.metrics["train_runtime"], "tokens": tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recipe", default="recipes/tiny/slurp.yaml")
    args = parser.parse_args()

    tokens_per_s, peak_rss = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as output:
            # A fresh process per run, so that the peak memory is this run's alone
            result = subprocess.run(
                [sys.executable, "-c", CHILD, args.recipe, "--max_steps", str(args.steps), "--output_dir", output,
                 "--logging_steps", str(args.steps), "--include_num_input_tokens_seen", "true"],
                cwd=harness.ROOT, capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        tokens_per_s.append(figures["tokens"] / figures["runtime"])
        peak_rss.append(figures["peak_rss_mb"])
    section = harness.Section("sft", "Tiny SFT on CPU",
                              f"python benchmarks/sft_speed.py --steps {args.steps} --runs {args.runs} "
                              f"--recipe {args.recipe}")
    section.add("sft_tokens_per_s", tokens_per_s, "tokens/s", f"{args.recipe}, {args.steps} steps")
    section.add("peak_rss_mb", peak_rss, "MiB", "the training process")
    harness.publish(section)


if __name__ == "__main__":
    main()
