"""Speech detection: is there human speech in a short, noisy clip? Two answers, A (SPEECH) or B (NONSPEECH).

Data: the metadata table written by `scripts/prepare_data.py speech_detection` (CSV or parquet, one row per
clip, a `split` column); train_file / eval_file / test_file may all name the same table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from audio_recipes.errors import DataError
from audio_recipes.metrics.classification import INVALID
from audio_recipes.tasks.base import Example, Task, register_task
from audio_recipes.tasks.speech_detection import silero
from audio_recipes.tasks.speech_detection.builder import LABELS
from audio_recipes.tasks.speech_detection.report import write_detection_report
from audio_recipes.tasks.speech_detection.scoring import (
    PREDICTION_COLUMNS,
    read_predictions_table,
    read_table,
    score_detection,
)

# Letters are single tokens with distinct ids in Qwen's vocabulary (and the tiny one); the words are not
ANSWER_LETTERS = {"SPEECH": "A", "NONSPEECH": "B"}
LETTER_LABELS = {letter: label for label, letter in ANSWER_LETTERS.items()}
PROMPT = (
    "Is there human speech in this audio clip?\n"
    "A. SPEECH: someone is speaking.\n"
    "B. NONSPEECH: no speech, only other sounds or noise.\n"
    "Answer with the letter A or B."
)
SYSTEM_PROMPT = "You are an audio classifier that detects human speech."

_LETTER_ANSWER = re.compile(r"^\W*([AB])(?:\W|$)")
_LABEL_WORD = re.compile(r"\b(NON[\s-]?SPEECH|SPEECH)\b")


def parse_answer(text: str) -> str | None:
    """A, B, SPEECH or NONSPEECH (in any case, with punctuation) -> the label; anything else -> None."""
    upper = text.strip().upper()
    letter = _LETTER_ANSWER.match(upper)
    if letter:
        return LETTER_LABELS[letter.group(1)]
    named = {"NONSPEECH" if word.startswith("NON") else "SPEECH" for word in _LABEL_WORD.findall(upper)}
    return named.pop() if len(named) == 1 else None  # neither, or both: no answer


@register_task
class SpeechDetectionTask(Task):
    name = "speech_detection"
    default_system_prompt = SYSTEM_PROMPT
    prediction_key = "segment_id"
    predictions_file = "predictions.parquet"
    baselines = {"silero_vad": silero.predict}

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task speech_detection: the recipe sets no {split}_file")
        table = read_table(path)
        name = self.split_name(split)
        rows = table[table["split"] == name]
        if rows.empty:
            raise DataError(f"{path}: no rows with split {name!r} (splits present: {sorted(table['split'].unique())})")
        audio_dir = Path(self.args.audio_dir) if self.args.audio_dir else Path(path).parent
        examples = []
        for line, row in rows.iterrows():
            if row["label"] not in LABELS:
                raise DataError(f"{path}, data row {line + 1} (segment_id {row['segment_id']}): label {row['label']!r} "
                                f"is not one of {', '.join(LABELS)}")
            reference = {"label": row["label"], "duration_ms": int(row["duration_ms"]), "snr_db": float(row["snr_db"]),
                         "dataset": str(row["dataset"]),
                         "condition": str(row.get("condition", f"{row['duration_ms']}ms_{row['snr_db']:g}dB"))}
            examples.append(Example(str(row["segment_id"]), str(audio_dir / row["path"]), self.system_prompt, PROMPT,
                                    ANSWER_LETTERS[row["label"]], json.dumps(reference)))
        self.check_audio(examples, path)
        return examples

    def choices(self, example: Example) -> list[str]:
        return list(LETTER_LABELS)

    def parse(self, text: str) -> dict[str, Any]:
        label = parse_answer(text)
        return {"label": label if label is not None else INVALID, "valid": label is not None}

    def prediction_row(self, example: Example, output: dict[str, Any]) -> dict[str, Any]:
        reference = json.loads(example.reference)
        confidence = output.get("confidence")
        return {
            "segment_id": example.id, "true_label": reference["label"], "pred_label": output["prediction"]["label"],
            "confidence": float("nan") if confidence is None else float(confidence),
            "latency_ms": float(output.get("latency_ms", float("nan"))), "duration_ms": reference["duration_ms"],
            "snr_db": reference["snr_db"], "dataset": reference["dataset"], "condition": reference["condition"],
            "raw_output": output["raw_output"],
        }

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        rows = []
        missing = [example for example in examples if example.id not in predictions]
        for example in examples:
            if example.id in predictions:
                rows.append(predictions[example.id])
            elif not skip_missing:  # a missing prediction is wrong, not dropped
                rows.append(self.prediction_row(example, {"raw_output": "", "prediction": self.parse("")}))
        metrics = score_detection(pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)))
        metrics["num_missing"] = len(missing)
        return metrics

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        predictions = read_predictions_table(predictions_path)
        gold = read_table(gold_path)
        gold = gold[gold["segment_id"].isin(predictions["segment_id"])] if skip_missing else gold
        by_id = {row["segment_id"]: row for row in predictions.to_dict("records")}
        examples = [Example(str(row["segment_id"]), None, "", "", "", json.dumps(
            {"label": row["label"], "duration_ms": int(row["duration_ms"]), "snr_db": float(row["snr_db"]),
             "dataset": str(row["dataset"]), "condition": str(row.get("condition", ""))}))
            for row in gold.to_dict("records")]
        return self.score(examples, by_id, skip_missing=skip_missing)

    def write_report(self, output_dir: Path, examples: list[Example], systems: dict[str, dict[str, dict]],
                     metrics: dict[str, dict]) -> None:
        write_detection_report(output_dir, {name: pd.DataFrame(list(rows.values()), columns=list(PREDICTION_COLUMNS))
                                            for name, rows in systems.items()})
