"""Does the plan's memory estimate hold? Measured CPU peaks against scripts/plan.py, on small real architectures.

    python benchmarks/plan_memory.py [CASE ...]      # all cases: about 30 minutes on 2 cores
    python benchmarks/plan_memory.py --replan        # the estimates again, against the peaks measured before

Each case trains 2 optimizer steps on the same 8 rows in one micro-batch (so that the second step runs the longest
batch with the optimizer states allocated, the worst case the plan estimates) with scripts/sft.py on a small model of a real architecture
(audio_recipes.testing.scaled_models: real layer structure and vocabulary, small widths), under
audio_recipes.testing.peak_memory (the peak of live tensor bytes while training, from torch's profiler), and asks
scripts/plan.py for the same recipe, overrides and launch with `--plan_device cpu`. The table goes to
docs/scaling.md, the figures to benchmarks/plan_memory.json.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MODELS = ROOT / "outputs" / "plan-memory" / "models"
RESULTS = ROOT / "benchmarks" / "plan_memory.json"
DOC = ROOT / "docs" / "scaling.md"
BEGIN, END = "<!-- plan-memory:begin -->", "<!-- plan-memory:end -->"
GIB = 2**30
TOLERANCE = 0.20

COMMON = ["--dtype", "bfloat16", "--bf16", "true", "--use_cpu", "true", "--max_steps", "2",
          "--gradient_accumulation_steps", "1", "--per_device_train_batch_size", "8", "--max_train_samples", "8",
          "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1", "--report_to", "none"]
LORA = ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32"]


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # audio_recipes.testing.scaled_models.SCALED_MODELS
    recipe: str
    overrides: list[str] = field(default_factory=list)
    processes: int = 1
    accelerate_config: str | None = None


CASES = [
    Case("qwen2-audio full", "qwen2-audio-small", "recipes/tiny/slurp.yaml"),
    Case("qwen2-audio full, checkpointing", "qwen2-audio-small", "recipes/tiny/slurp.yaml",
         ["--activation_checkpointing", "true"]),
    Case("qwen2-audio LoRA attention_mlp", "qwen2-audio-small", "recipes/tiny/slurp.yaml",
         [*LORA, "--lora_target_preset", "attention_mlp", "--lora_dropout", "0.05"]),
    Case("qwen2-audio QLoRA attention_mlp", "qwen2-audio-small", "recipes/tiny/slurp_qlora.yaml"),
    Case("qwen3 full, speech tokens", "qwen3-small", "recipes/tiny/speech_tokens.yaml"),
    Case("qwen2.5-omni full", "qwen2.5-omni-small", "recipes/tiny/slurp.yaml"),
    Case("qwen3-omni MoE LoRA attention_experts", "qwen3-omni-moe-small", "recipes/tiny/slurp.yaml",
         [*LORA, "--lora_target_preset", "attention_experts", "--lora_dropout", "0"]),
    # 16 rows: 8 on each rank
    Case("qwen2-audio full, ZeRO-3 x 2", "qwen2-audio-small", "recipes/tiny/slurp.yaml", ["--max_train_samples", "16"],
         processes=2, accelerate_config="accelerate_configs/zero3.yaml"),
]


def arguments(case: Case, output_dir: Path) -> list[str]:
    return [case.recipe, "--model_name_or_path", str(MODELS / case.model), *COMMON, *case.overrides,
            "--output_dir", str(output_dir)]


def measure(case: Case, scratch: Path) -> float:
    """The peak of live tensor bytes while training, the largest over the processes (GiB)."""
    out = scratch / "peak.json"
    wrapped = ["-m", "audio_recipes.testing.peak_memory", str(out), "scripts/sft.py", *arguments(case, scratch / "run")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    if case.processes > 1:
        env["DS_ACCELERATOR"] = "cpu"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", case.accelerate_config,
                   "--num_processes", str(case.processes), *wrapped]
    else:
        command = [sys.executable, *wrapped]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{case.name}: training failed:\n{result.stderr[-3000:]}")
    peaks = [json.loads(path.read_text())["peak_bytes"] for path in scratch.glob("peak*.json")]
    return max(peaks) / GIB


def plan(case: Case, scratch: Path) -> dict:
    launch = ["--config_file", case.accelerate_config, "--num_processes", str(case.processes)] \
        if case.accelerate_config else []
    command = [sys.executable, "scripts/plan.py", *arguments(case, scratch / "run"), *launch, "--plan_device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{case.name}: plan failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| case | parameters (trainable) | measured peak | estimate | estimate / measured | weights + grads + "
             "optimizer / activations + buffers (estimate) |", "|---|---|---|---|---|---|"]
    for row in rows:
        parts = row["breakdown"]
        static = parts["weights"] + parts["gradients"] + parts["optimizer"]
        lines.append(
            f"| {row['case']} | {row['total_parameters'] / 1e6:.1f} M ({row['trainable_parameters'] / 1e6:.1f} M) | "
            f"{row['measured_gib']:.3f} GiB | {row['estimated_gib']:.3f} GiB | {row['ratio']:.2f} | "
            f"{static:.3f} / {parts['activations'] + parts['buffers']:.3f} GiB |")
    return "\n".join(lines)


def main() -> None:
    from audio_recipes.testing.scaled_models import build_scaled_model

    replan = "--replan" in sys.argv
    wanted = set(sys.argv[1:]) - {"--replan"}
    cases = [case for case in CASES if not wanted or case.name in wanted or case.model in wanted]
    previous = {row["case"]: row for row in json.loads(RESULTS.read_text())["rows"]} if RESULTS.is_file() else {}
    if replan:
        cases = [case for case in cases if case.name in previous]
    for case in cases:
        build_scaled_model(case.model, MODELS / case.model)
        with tempfile.TemporaryDirectory(prefix="plan-memory-") as scratch:
            measured = previous[case.name]["measured_gib"] if replan else measure(case, Path(scratch))
            planned = plan(case, Path(scratch))
        estimated = planned["memory_gb_per_gpu"]
        row = {"case": case.name, "model": case.model, "recipe": case.recipe, "overrides": case.overrides,
               "processes": case.processes, "total_parameters": planned["total_parameters"],
               "trainable_parameters": planned["trainable_parameters"], "measured_gib": measured,
               "estimated_gib": estimated, "ratio": estimated / measured,
               "breakdown": planned["memory_breakdown_gb"]}
        previous[case.name] = row
        print(f"{case.name}: measured {measured:.3f} GiB, estimated {estimated:.3f} GiB "
              f"({estimated / measured:.2f})", flush=True)
    rows = [previous[case.name] for case in CASES if case.name in previous]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {__import__('torch').__version__}"
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": machine,
                                   "tolerance": TOLERANCE, "rows": rows}, indent=2) + "\n")
    text = DOC.read_text()
    block = f"{BEGIN}\n{table(rows)}\n\nMeasured on {datetime.date.today().isoformat()} ({machine}).\n{END}"
    DOC.write_text(re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: block, text, flags=re.S) if BEGIN in text
                   else text.rstrip() + "\n\n" + block + "\n")
    off = [row["case"] for row in rows if abs(row["ratio"] - 1) > TOLERANCE]
    if off:
        raise SystemExit(f"estimate more than {TOLERANCE:.0%} from the measured peak: {', '.join(off)}")


if __name__ == "__main__":
    main()
