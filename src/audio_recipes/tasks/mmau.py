"""MMAU: audio understanding and reasoning over sound, music and speech (mmau-test-mini.json as published)."""

from __future__ import annotations

from typing import Any

from audio_recipes.tasks.base import register_task
from audio_recipes.tasks.multiple_choice import MultipleChoiceTask


@register_task
class MmauTask(MultipleChoiceTask):
    name = "mmau"
    audio_field = "audio_id"
    prediction_field = "model_output"
    group_fields = ("task", "category", "sub-category", "difficulty")

    def prediction_of(self, row: dict[str, Any]) -> Any:
        # MMAU's script reads model_output; some releases of it wrote model_prediction
        return row.get("model_output", row.get("model_prediction"))
