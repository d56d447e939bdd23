"""Tasks registered by name: `get_task("slurp", task_args)`. One module per task; the contract is tasks.base.Task."""

from audio_recipes.tasks import (  # noqa: F401 (registers them)
    mmar,
    mmau,
    slurp,
    slurp_rationale,
    speech_detection,
    speech_massive,
    speech_tokens,
)
from audio_recipes.tasks.base import TASKS, Example, Task, get_task, register_task

__all__ = ["TASKS", "Example", "Task", "get_task", "register_task"]
