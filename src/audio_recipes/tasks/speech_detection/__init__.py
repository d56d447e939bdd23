"""Speech detection: SPEECH or NONSPEECH in a short, noisy clip. The task (task.py), its data builder
(builder.py, `prepare_data.py speech_detection`), its tables and metrics (scoring.py), its report with
psychometric curves (report.py) and the Silero VAD baseline (silero.py)."""

from audio_recipes.tasks.speech_detection.scoring import (
    PREDICTION_COLUMNS,
    REQUIRED_COLUMNS,
    read_predictions_table,
    read_table,
    score_detection,
)
from audio_recipes.tasks.speech_detection.task import ANSWER_LETTERS, SpeechDetectionTask, parse_answer

__all__ = ["ANSWER_LETTERS", "PREDICTION_COLUMNS", "REQUIRED_COLUMNS", "SpeechDetectionTask", "parse_answer",
           "read_predictions_table", "read_table", "score_detection"]
