"""Run a script and record the peak of the tensor memory it holds while the Trainer trains, on CPU.

    python -m audio_recipes.testing.peak_memory OUT.json SCRIPT.py [ARGS ...]

What is measured: the bytes of live tensors, from torch's profiler (`profile_memory`: every allocation and free of
torch's CPU allocator, the optimizer's, autograd's, DeepSpeed's and bitsandbytes' alike), and their maximum while
`Trainer.train` runs, on top of what the model holds when training starts (its parameters and buffers: transformers
loads them through storages the profiler does not see). That is the CPU counterpart of
`torch.cuda.max_memory_allocated`, which the plan (audio_recipes.planning.memory) estimates. The resident set size
(`ru_maxrss`) is recorded beside it, but it also counts the interpreter, the libraries and malloc's free blocks;
tracemalloc sees none of torch's memory. Under `accelerate launch` each process writes OUT.json with its rank.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
from pathlib import Path

TRAIN_MARK = "audio_recipes.peak_memory.train"
MODEL_BYTES: list[int] = []  # what the model holds when training starts


def model_state_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (each storage once; a ZeRO-3 shard as the rank holds it)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        for held in (tensor, getattr(tensor, "ds_tensor", None)):
            if held is None or held.device.type == "meta":
                continue
            storage = held.untyped_storage()
            if storage.data_ptr() not in seen and storage.nbytes():
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def _mark_training() -> None:
    import torch
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        MODEL_BYTES.append(model_state_bytes(self.model))
        with torch.profiler.record_function(TRAIN_MARK):
            return original(self, *args, **kwargs)

    Trainer.train = train


def peak_during(events, start_ns: int, end_ns: int) -> tuple[int, int]:
    """(live bytes when the window opens, their maximum inside it) from the profiler's memory events."""
    live, at_start, peak = 0, None, 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        if event.start_ns() > end_ns:
            break
        if at_start is None and event.start_ns() >= start_ns:
            at_start = live
        live += event.nbytes()
        if event.start_ns() >= start_ns:
            peak = max(peak, live)
    return (live if at_start is None else at_start), peak


def main(argv: list[str]) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    out, script, *args = argv
    rank = int(os.environ.get("RANK", "0"))
    _mark_training()
    sys.argv = [script, *args]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
    events = prof.profiler.kineto_results.events()
    marks = [event for event in events if event.name() == TRAIN_MARK]
    if not marks:
        raise RuntimeError(f"{script} did not train (no Trainer.train call)")
    start, end = min(m.start_ns() for m in marks), max(m.end_ns() for m in marks)
    at_start, peak = peak_during([event for event in events if event.name() == "[memory]"], start, end)
    # Tensors alive at the start that the profiler saw are the model's state, or part of it: count it once
    baseline = max(at_start, MODEL_BYTES[0])
    result = {"rank": rank, "peak_bytes": peak - at_start + baseline, "model_bytes_at_train_start": MODEL_BYTES[0],
              "profiled_bytes_at_train_start": at_start,
              "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "torch": torch.__version__}
    path = Path(out)
    if rank:
        path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
    path.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
