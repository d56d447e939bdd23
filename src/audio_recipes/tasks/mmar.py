"""MMAR: deep reasoning over speech, sound, music and their mixes (MMAR-meta.jsonl as published)."""

from __future__ import annotations

from audio_recipes.tasks.base import register_task
from audio_recipes.tasks.multiple_choice import MultipleChoiceTask


@register_task
class MmarTask(MultipleChoiceTask):
    name = "mmar"
    audio_field = "audio_path"
    prediction_field = "answer_prediction"
    group_fields = ("modality", "category", "sub-category")
    official_group_fields = ("modality", "category", "sub-category")  # code/evaluation.py's breakdowns
