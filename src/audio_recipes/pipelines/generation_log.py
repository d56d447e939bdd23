"""Generations during training: every N optimizer steps, the model's answers to a few fixed examples, in the log and
in <output_dir>/generations.jsonl, so that a user sees the answer format being learned. It leaves the training
result unchanged: eval mode, no gradients, and every random state it could touch restored."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import EvalArguments
from audio_recipes.decoding import batches, generate_batch, item_seed
from audio_recipes.io import write_jsonl_atomic
from audio_recipes.pipelines.evaluate import generation_kwargs
from audio_recipes.tasks import Example

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """torch (CPU and every CUDA device), numpy and Python random states as they were on entry, on exit."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def read_generation_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a run wrote; a torn last line (a run killed mid-write by another writer) is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


class GenerationLogCallback(TrainerCallback):
    """Generates on `examples` at every `every_steps`-th optimizer step; the main process writes the rows.

    With parameters sharded over the ranks (ZeRO-3, FSDP) each forward gathers weights from every rank, so every
    rank generates (in step, synced_gpus) and only the main one writes; otherwise the main process alone generates.
    """

    def __init__(self, examples: list[Example], collator: AudioChatCollator, eval_args: EvalArguments,
                 every_steps: int, output_dir: str | Path, batch_size: int, sharded: bool, seed: int):
        if collator.with_completion:
            raise ValueError("the generation log needs a prompt-only collator (with_completion=False)")
        self.examples, self.collator, self.every_steps, self.batch_size = examples, collator, every_steps, batch_size
        self.sharded, self.seed, self.do_sample = sharded, seed, eval_args.do_sample
        self.kwargs = generation_kwargs(eval_args, collator.tokenizer)
        self.path = Path(output_dir) / GENERATIONS_FILE
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # A resumed run redoes the steps after its checkpoint: their rows are dropped, not duplicated
        earlier = read_generation_rows(self.path)
        self.rows = [row for row in earlier if row["step"] <= state.global_step]
        if len(self.rows) < len(earlier):
            logger.info("%s: %d rows after step %d dropped (this run redoes those steps)", self.path,
                        len(earlier) - len(self.rows), state.global_step)
            write_jsonl_atomic(self.path, self.rows)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_steps:
            return
        if not (state.is_world_process_zero or self.sharded):
            return
        outputs = self.generate(model, state.global_step)
        if not state.is_world_process_zero:
            return
        new_rows = [{"step": state.global_step, "epoch": state.epoch, "id": example.id, "audio": example.audio,
                     "prompt": example.prompt, "target": example.completion, "output": output}
                    for example, output in zip(self.examples, outputs, strict=True)]
        for row in new_rows:
            logger.info("generation at step %d, %s\n  prompt: %s\n  target: %s\n  output: %s", row["step"], row["id"],
                        row["prompt"], row["target"], row["output"])
        self.rows.extend(new_rows)
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(self.path, self.rows)  # the whole file each time: a kill never leaves a torn line

    def generate(self, model, step: int) -> list[str]:
        was_training = model.training
        kwargs = {**self.kwargs, "synced_gpus": True} if self.sharded else self.kwargs
        outputs: list[str] = []
        with preserved_random_state():
            model.eval()  # dropout off; no_grad is generate_batch's
            try:
                for batch in batches(self.examples, self.batch_size):
                    seeds = [item_seed(self.seed, step, example.id) for example in batch] if self.do_sample else None
                    outputs.extend(generate_batch(model, self.collator, batch, seeds=seeds, **kwargs))
            finally:
                model.train(was_training)
        return outputs
