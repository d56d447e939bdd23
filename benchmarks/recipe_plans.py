"""scripts/plan.py for every real recipe (recipes/*.yaml) with the accelerate config it is launched with; the outputs
go to docs/scaling.md.

    python benchmarks/recipe_plans.py [RECIPE_STEM ...]      # about a minute a recipe on 2 cores
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
STORE = ROOT / "benchmarks" / "recipe_plans.json"
BEGIN, END = "<!-- recipe-plans:begin -->", "<!-- recipe-plans:end -->"

# recipe -> (accelerate config, GPU memory in GiB): as each recipe's Launch line says (evaluation and the one-GPU
# recipes on one 80 GB GPU; QLoRA on a 24 GB one, which is what it is for)
LAUNCHES = {
    "slurp": ("zero3.yaml", 80), "slurp_audio_transcript": ("zero3.yaml", 80), "slurp_text": ("zero3.yaml", 80),
    "speech_massive": ("zero3.yaml", 80),
    "slurp_qlora": ("single_gpu.yaml", 24), "speech_detection": ("single_gpu.yaml", 24),
    "speech_detection_mlp": ("single_gpu.yaml", 24),
    "speech_tokens": ("single_gpu.yaml", 80), "speech_tokens_frozen_text": ("single_gpu.yaml", 80),
    "mmar_grpo": ("single_gpu.yaml", 80), "mmar_rest": ("single_gpu.yaml", 80),
    "mmar": ("single_gpu.yaml", 80), "mmau": ("single_gpu.yaml", 80), "mmar_qwen2_5_omni": ("single_gpu.yaml", 80),
    "mmar_qwen3_omni": ("single_gpu.yaml", 80), "speech_detection_zeroshot": ("single_gpu.yaml", 80),
}


def run(stem: str) -> dict:
    config, memory = LAUNCHES[stem]
    command = ["scripts/plan.py", f"recipes/{stem}.yaml", "--config_file", f"accelerate_configs/{config}",
               "--gpu_memory_gb", str(memory)]
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if result.returncode:
        raise RuntimeError(f"{stem}: {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    return {"command": " ".join(command), "lines": lines[:-1], "summary": json.loads(lines[-1])}


def main() -> None:
    stems = sys.argv[1:] or [path.stem for path in sorted((ROOT / "recipes").glob("*.yaml"))]
    missing = [stem for stem in stems if stem not in LAUNCHES]
    if missing:
        raise SystemExit(f"no launch listed for {', '.join(missing)}: add it to LAUNCHES")
    store = json.loads(STORE.read_text()) if STORE.is_file() else {}
    for stem in stems:
        store[stem] = run(stem)
        summary = store[stem]["summary"]
        print(f"{stem}: {summary['memory_gb_per_gpu']} GiB, fits {summary['fits']}", flush=True)
    STORE.write_text(json.dumps(store, indent=2, sort_keys=True) + "\n")
    rows = ["| recipe | launch | parameters (trainable) | GiB per GPU | fits | first knob |", "|---|---|---|---|---|---|"]
    blocks = []
    for stem in sorted(store):
        summary = store[stem]["summary"]
        config, memory = LAUNCHES[stem]
        rows.append(f"| `{stem}` | `{config}` x {summary['num_processes']}, {memory} GiB | "
                    f"{summary['total_parameters'] / 1e9:.2f} B ({summary['trainable_parameters'] / 1e9:.3f} B) | "
                    f"{summary['memory_gb_per_gpu']:.1f} | {'yes' if summary['fits'] else 'no'} | "
                    f"{summary['first_knob'] or ''} |")
        blocks.append(f"```\n$ {store[stem]['command']}\n" + "\n".join(store[stem]["lines"]) + "\n```")
    block = f"{BEGIN}\n" + "\n".join(rows) + "\n\n" + "\n\n".join(blocks) + f"\n{END}"
    text = DOC.read_text()
    DOC.write_text(re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: block, text, flags=re.S)
                   if BEGIN in text else text.rstrip() + "\n\n" + block + "\n")


if __name__ == "__main__":
    main()
