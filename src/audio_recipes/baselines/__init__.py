"""Classic systems run on a task's items beside the model, registered by name (`baseline: silero_vad`)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from audio_recipes.tasks.base import Example, Task

# name -> module under audio_recipes.baselines, with `predict(examples) -> [{"raw_output", "confidence", "latency_ms"}]`
BASELINES: dict[str, str] = {"silero_vad": "silero_vad"}


def run_baseline(name: str, task: Task, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Output rows shaped like the model's (`id, raw_output, prediction, confidence, latency_ms`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(sorted(BASELINES))})")
    module = importlib.import_module(f"audio_recipes.baselines.{BASELINES[name]}")
    outputs = module.predict(examples)
    return [{"id": example.id, **output, "prediction": task.parse_for_item(example, output["raw_output"])}
            for example, output in zip(examples, outputs, strict=True)]
