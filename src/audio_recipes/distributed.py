"""Process groups, sharded parameters and checkpoints: what training and evaluation need to scale out."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from accelerate import PartialState
from transformers.integrations import is_deepspeed_zero3_enabled

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def joined_process_state() -> PartialState:
    """The process state, failing when a multi-process launch left each process running alone."""
    state = PartialState()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes == 1:
        # Each process would do all the work into the same folder: double work, or rows lost to a race
        raise RuntimeError(
            f"launched as {launched} processes, but this one runs alone ({state.distributed_type}): on a machine "
            "without GPUs set use_cpu: true in the recipe (or --use_cpu true) so that they join one group over gloo"
        )
    return state


def broadcast_object(value):
    """The main process's `value` on every process (a no-op with one process)."""
    from accelerate.utils import broadcast_object_list

    if PartialState().num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


def parameters_are_sharded(training_args) -> bool:
    """ZeRO-3 or FSDP: each module's forward gathers its weights from every rank, so all ranks must run it."""
    return is_deepspeed_zero3_enabled() or bool(getattr(training_args, "fsdp", None))


def parameter_count(parameter: torch.nn.Parameter) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it (its local tensor is then empty)."""
    return getattr(parameter, "ds_numel", parameter.numel())


def zero3_partition(model: torch.nn.Module) -> dict[str, int] | None:
    """What this rank holds of a ZeRO-3 model: tensors partitioned or kept whole, elements held locally and in all.

    None when the model is not partitioned.
    """
    parameters = [parameter for parameter in model.parameters() if hasattr(parameter, "ds_tensor")]
    if not parameters:
        return None
    persistent = [parameter for parameter in parameters if getattr(parameter, "ds_persist", False)]
    return {
        "partitioned_tensors": len(parameters) - len(persistent),
        "persistent_tensors": len(persistent),
        # A persistent parameter stays gathered on every rank; a partitioned one keeps its shard only
        "local_elements": sum(p.ds_numel if getattr(p, "ds_persist", False) else p.ds_tensor.numel() for p in parameters),
        "total_elements": sum(p.ds_numel for p in parameters),
    }


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer state was written: the Trainer writes it last, so a checkpoint
    cut short by a kill is skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted(
        ((int(match.group(1)), path) for path in output_dir.iterdir()
         if path.is_dir() and (match := CHECKPOINT_PATTERN.match(path.name))),
        reverse=True,
    )
    for _, path in steps:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("skipping %s: its trainer_state.json is missing or cut short (a run killed mid-save)", path)
            continue
        return path
    return None


def resume_checkpoint(value: str | bool | None, output_dir: str | Path) -> str | None:
    """`resume_from_checkpoint` as a recipe or the command line gives it -> the checkpoint to resume from.

    `true` is the newest complete checkpoint in output_dir (a fresh start where there is none yet, so that a
    requeued job can always pass it); `false` or unset starts afresh; anything else is a checkpoint folder.
    """
    if value is None or str(value).lower() in ("false", ""):
        return None
    if str(value).lower() == "true":
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning("resume_from_checkpoint is true but %s holds no complete checkpoint: starting afresh",
                           output_dir)
            return None
        logger.info("resuming from %s", checkpoint)
        return str(checkpoint)
    if not (Path(value) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"resume_from_checkpoint {value!r} is not a checkpoint folder (no trainer_state.json)")
    return str(value)
