"""A recipe's task, with its data: the one place where a pipeline reaches the tiny data builders of
audio_recipes.testing (recipes with `build_data_if_missing: true`, the tiny ones)."""

from __future__ import annotations

from audio_recipes.config import TaskArguments
from audio_recipes.tasks import Task, get_task


def recipe_task(task_args: TaskArguments) -> Task:
    """The recipe's task; its tiny data built first where the recipe asks for it and it is missing."""
    task = get_task(task_args.task, task_args)
    if task_args.build_data_if_missing:
        from audio_recipes.testing.tiny_data import (
            build_tiny_data_if_missing,  # test data: loaded only when asked
        )

        build_tiny_data_if_missing(task)
    return task
