"""Timing, figures and the report: shared by the benchmark scripts.

Every timed figure is the median of at least 5 runs, with its spread (min and max). A ratio compares two variants
timed in turns in one process (`interleaved`: A B, B A, A B, ...) and is the ratio of their medians, so that a load
from other jobs that comes and goes slows both alike; its spread is that of the ratios of the rounds.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results.json"
REPORT = ROOT / "docs" / "benchmarks.md"


@dataclass
class Figure:
    name: str
    values: list[float]
    unit: str
    note: str = ""
    center: float | None = None  # the figure itself where it is not the values' median (a ratio of medians)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.center is None else self.center


@dataclass
class Section:
    """One benchmark's figures, the command that produced them and what they mean."""

    name: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, values: list[float] | float, unit: str, note: str = "") -> Figure:
        figure = Figure(name, list(values) if isinstance(values, list) else [values], unit, note)
        self.figures.append(figure)
        return figure

    def add_ratio(self, name: str, slow: list[float], fast: list[float], note: str = "") -> Figure:
        """How many times faster `fast` is than `slow` (interleaved timings): median over median, spread of the
        rounds' ratios."""
        figure = Figure(name, [s / f for s, f in zip(slow, fast, strict=True)], "x", note,
                        center=statistics.median(slow) / statistics.median(fast))
        self.figures.append(figure)
        return figure


def run(script: str, *args: str) -> str:
    """Run scripts/SCRIPT with ARGS from the repository root, as a user would; its stdout, or exit with its
    stderr's tail."""
    command = [sys.executable, str(ROOT / "scripts" / script), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def tiny_slurp_examples(split: str):
    """The tiny SLURP recipe's examples (real annotations, espeak-ng speech; built on first use)."""
    from audio_recipes.config import TaskArguments
    from audio_recipes.pipelines.data import recipe_task

    data = ROOT / "data/tiny/slurp"
    task = recipe_task(TaskArguments(task="slurp", train_file=str(data / "train.jsonl"),
                                           eval_file=str(data / "devel.jsonl"), test_file=str(data / "test.jsonl"),
                                           audio_dir=str(data / "audio"), build_data_if_missing=True))
    return task.examples(split)


def repeat(func: Callable[[], object], runs: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def interleaved(variants: dict[str, Callable[[], object]], runs: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Wall-clock seconds of each variant, `runs` each, timed in turns after `warmup` untimed rounds: round i runs
    them in order, the next round in reverse (A B, B A, ...), so that neither always follows the other. Medians of
    such timings keep their ratio on a machine whose load from other jobs changes from second to second, where
    runs of one variant after the other do not."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(runs):
        for name in names if round_ % 2 == 0 else reversed(names):
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU"


def load_average() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} over 1 min"
    except OSError:
        return "load unknown"


def _format(value: float) -> str:
    return f"{value:.4g}"


def section_markdown(section: Section) -> str:
    date = datetime.date.today().isoformat()
    lines = [f"### {section.title}", "", f"Command: `{section.command}`  ",
             f"Machine: {machine()}; {date}, {load_average()} at the end", "",
             "| figure | median | spread (min - max) | runs | unit |", "|---|---|---|---|---|"]
    for figure in section.figures:
        spread = f"{_format(min(figure.values))} - {_format(max(figure.values))}" if len(figure.values) > 1 else "-"
        lines.append(f"| `{figure.name}` | {_format(figure.median)} | {spread} | {len(figure.values)} | "
                     f"{figure.unit}{' (' + figure.note + ')' if figure.note else ''} |")
    lines += ["", *section.notes] if section.notes else []
    return "\n".join(lines) + "\n"


def publish(section: Section) -> None:
    """Merge the figures (medians) into results.json and replace this section's table in the report."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update({figure.name: round(figure.median, 6) for figure in section.figures})
    RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")

    begin, end = f"<!-- bench:{section.name} -->", f"<!-- /bench:{section.name} -->"
    block = f"{begin}\n{section_markdown(section)}{end}"
    report = REPORT.read_text() if REPORT.is_file() else "# Benchmarks\n"
    if begin in report:
        report = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, report, flags=re.DOTALL)
    else:
        report = report.rstrip() + "\n\n" + block + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report)
    print(section_markdown(section))
