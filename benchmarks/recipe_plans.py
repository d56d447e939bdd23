"""scripts/plan.py for every real recipe (recipes/*.yaml) with the accelerate config its header comment launches it
with, on an 80 GB GPU (24 GB for a recipe that loads its weights in 4 bits); the outputs go to docs/scaling.md.

    python benchmarks/recipe_plans.py [RECIPE_STEM ...]      # about a minute a recipe on 2 cores
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
STORE = ROOT / "benchmarks" / "recipe_plans.json"
BEGIN, END = "<!-- recipe-plans:begin -->", "<!-- recipe-plans:end -->"

LAUNCH = re.compile(r"--config_file (accelerate_configs/\S+\.yaml)")
PLAIN_LAUNCH = re.compile(r"^#.*\bpython scripts/\w+\.py recipes/")
# A recipe that loads its weights in 4 bits is a small-GPU recipe (QLoRA: what it is for); the others are planned on
# an 80 GB GPU
SMALL_GPU_GB, GPU_GB = 24, 80


def launch_of(stem: str) -> tuple[str | None, int]:
    """(the accelerate config the recipe's header comment launches it with, or None for a plain `python
    scripts/X.py` launch: one process; the GPU memory planned for, GiB)."""
    path = ROOT / "recipes" / f"{stem}.yaml"
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    configs = {match.group(1) for line in header for match in LAUNCH.finditer(line)}
    if len(configs) > 1:
        raise SystemExit(f"{path}: its header names several launches ({', '.join(sorted(configs))}): keep one")
    if not configs and not any(PLAIN_LAUNCH.search(line) for line in header):
        raise SystemExit(f"{path}: its header comment names no launch (accelerate launch --config_file "
                         "accelerate_configs/X.yaml ... or python scripts/X.py ...): add one")
    recipe = yaml.safe_load(path.read_text()) or {}
    return (configs.pop() if configs else None), SMALL_GPU_GB if recipe.get("load_in_4bit") else GPU_GB


def run(stem: str) -> dict:
    config, memory = launch_of(stem)
    command = ["scripts/plan.py", f"recipes/{stem}.yaml", *(["--config_file", config] if config else []),
               "--gpu_memory_gb", str(memory)]
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if result.returncode:
        raise RuntimeError(f"{stem}: {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    return {"command": " ".join(command), "lines": lines[:-1], "summary": json.loads(lines[-1])}


def main() -> None:
    real = [path.stem for path in sorted((ROOT / "recipes").glob("*.yaml"))]
    stems = sys.argv[1:] or real
    for stem in stems:
        launch_of(stem)  # every recipe names its launch before any is planned
    store = json.loads(STORE.read_text()) if STORE.is_file() else {}
    store = {stem: entry for stem, entry in store.items() if stem in real}  # recipes since removed drop out
    for stem in stems:
        store[stem] = run(stem)
        summary = store[stem]["summary"]
        print(f"{stem}: {summary['memory_gb_per_gpu']} GiB, fits {summary['fits']}", flush=True)
    STORE.write_text(json.dumps(store, indent=2, sort_keys=True) + "\n")
    rows = ["| recipe | kind: model | launch (GPUs x GiB) | parameters (trainable) | GiB per GPU | fits | first knob |",
            "|---|---|---|---|---|---|---|"]
    blocks = []
    for stem in sorted(store):
        summary = store[stem]["summary"]
        launch = Path(summary["launch"]).name if summary["launch"] else "python (one process)"
        rows.append(f"| `{stem}` | {summary['kind']}: {summary['model']} | `{launch}` ({summary['num_processes']} x "
                    f"{summary['gpu_memory_gb']:g}) | {summary['total_parameters'] / 1e9:.2f} B "
                    f"({summary['trainable_parameters'] / 1e9:.3f} B) | {summary['memory_gb_per_gpu']:.1f} | "
                    f"{'yes' if summary['fits'] else 'no'} | {summary['first_knob'] or ''} |")
        blocks.append(f"```\n$ {store[stem]['command']}\n" + "\n".join(store[stem]["lines"]) + "\n```")
    block = f"{BEGIN}\n" + "\n".join(rows) + "\n\n" + "\n\n".join(blocks) + f"\n{END}"
    text = DOC.read_text()
    DOC.write_text(re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: block, text, flags=re.S)
                   if BEGIN in text else text.rstrip() + "\n\n" + block + "\n")


if __name__ == "__main__":
    main()
