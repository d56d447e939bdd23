"""What the scripts' command lines share: an error as one line, and the result as one JSON line.

Exit statuses, as argparse and the tools the scripts sit on use them:

- 0: done; sft.py, grpo.py, rest.py, evaluate.py and score.py print their result as one JSON object, the last
  line of stdout, from the main process only;
- 1: an InputError: a data file or row the task cannot read, an unusable audio file, a model path that holds no
  model, an evaluation folder holding another run (the message names it);
- 2: a usage or recipe error (RecipeError): no recipe, an unknown option, a value of the wrong type, out of
  range or not among the allowed ones.

An error prints one line on stderr, `SCRIPT: error: MESSAGE`, and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from audio_recipes.errors import InputError, RecipeError

DATA_ERROR = 1
USAGE_ERROR = 2


def fail(message: object, status: int = USAGE_ERROR) -> NoReturn:
    """`SCRIPT: error: MESSAGE` on one line of stderr, then exit with `status`."""
    print(f"{Path(sys.argv[0]).name}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def run(main: Callable[[], object]) -> None:
    """A script's entry point: `if __name__ == "__main__": run(main)`. A RecipeError or an InputError, wherever it is
    raised, ends the script with one line on stderr; any other exception keeps its traceback."""
    try:
        main()
    except RecipeError as error:
        fail(error, USAGE_ERROR)
    except InputError as error:
        fail(error, DATA_ERROR)
    leave_process_group()


def leave_process_group() -> None:
    """Wait for every rank, then destroy a joined process group, before the interpreter exits. A rank that left
    while the main one still wrote the model aborted ("terminate called without an active exception": Gloo's
    threads torn down during finalisation, pytorch/pytorch#190489), failing finished ZeRO-3 runs."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the scripts that take no recipe: a usage error is one line (status 2), not the usage and the
    error."""

    def error(self, message: str) -> NoReturn:
        fail(message, USAGE_ERROR)


def is_main_process() -> bool:
    """Rank 0 of the process group, or of the launch when no group is joined (every process of `accelerate launch`
    runs the whole script); a process started alone is the main one."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _plain(value: Any) -> Any:
    """`value` as JSON has it: numpy and torch scalars as numbers, paths as strings, NaN and infinities as null."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def print_result(result: Mapping[str, Any]) -> None:
    """The script's result as one JSON object on one line of stdout, from the main process only."""
    if is_main_process():
        print(json.dumps(_plain(result), sort_keys=True, allow_nan=False), flush=True)
