"""MMAU: audio understanding and reasoning over sound, music and speech (mmau-test-mini.json as published).

Releases: the metadata was revised on 15 May 2025 (MMAU-v05.15.25: about a quarter of the questions and answers
rewritten, 106 test-mini ids replaced). The strict accuracy scores against the gold file given (either release);
the official figure, like MMAU's evaluation.py, against the answers each prediction row carries; rows whose answers
differ from the gold file's are counted in `num_metadata_differs`. The test set's answers are withheld: its
prediction file is the submission to the benchmark's service.
"""

from __future__ import annotations

from typing import Any

from audio_recipes.tasks.base import Example, register_task
from audio_recipes.tasks.multiple_choice import MultipleChoiceTask


@register_task
class MmauTask(MultipleChoiceTask):
    name = "mmau"
    audio_field = "audio_id"
    prediction_field = "model_output"  # what evaluation.py reads
    # MMAU's README names the key model_prediction (its script reads model_output): the strict figure reads either
    fallback_prediction_fields = ("model_prediction",)
    group_fields = ("task", "category", "sub-category", "difficulty")
    official_group_fields = ("task", "difficulty", "sub-category")  # evaluation.py's breakdowns
    predictions_file = "predictions.json"  # a JSON list: evaluation.py reads the file with json.load
    repeated_choices_allowed = True  # 27 test-mini items repeat a choice's text; its scripts score them as they are

    def official_row(self, example: Example, raw_output: str, answer_text: str) -> dict[str, Any]:
        row = super().official_row(example, raw_output, answer_text)
        if "answer" not in row:  # a test-set submission: the README's key as well as the script's
            row["model_prediction"] = raw_output
        return row
