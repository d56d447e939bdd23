"""SLURP: spoken language understanding (scenario, action, entities) from audio, audio + transcript, or text."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, read_jsonl_lines
from audio_recipes.metrics.slu import score_slurp, slurp_gold_entities
from audio_recipes.tasks.base import Example, Task, register_task
from audio_recipes.tasks.slu_format import (
    SLU_INPUT_MODES,
    official_slu_row,
    parse_slu_output,
    slu_prompt,
    slu_target,
)

REQUIRED_KEYS = ("slurp_id", "sentence", "scenario", "action", "tokens", "entities", "recordings")
SYSTEM_PROMPT = "You are a spoken language understanding system for a voice assistant."


def validate_row(row: dict[str, Any], where: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise DataError(f"{where}: SLURP row lacks {', '.join(missing)} (expected keys: {', '.join(REQUIRED_KEYS)})")
    for key in ("tokens", "entities", "recordings"):
        if not isinstance(row[key], list):
            raise DataError(f"{where}: {key} is a {type(row[key]).__name__}, expected a list")
    positions = range(len(row["tokens"]))  # spans index the tokens by position (metrics.slu.slurp_gold_entities)
    for index, entity in enumerate(row["entities"]):
        if not isinstance(entity, dict):
            raise DataError(f"{where}: entities[{index}] is a {type(entity).__name__}, expected an object with type "
                            "and span")
        span = entity.get("span", [None])
        if "type" not in entity or not isinstance(span, list) or not set(span) <= set(positions):
            raise DataError(f"{where}: entity {entity} has no type or a span outside the sentence's tokens")
    for index, recording in enumerate(row["recordings"]):
        if not isinstance(recording, dict) or not isinstance(recording.get("file"), str) or not recording["file"]:
            shown = type(recording).__name__ if not isinstance(recording, dict) else f"an object without it ({recording})"
            raise DataError(f"{where}: recordings[{index}] is {shown}; expected an object with file (the recording's "
                            "name) and wer")


def check_prediction_keys(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Every prediction row keyed the same way: rows keyed by `file` make the scorer ignore rows keyed by
    `slurp_id` alone, scoring their items as missing."""
    by_file = [row for row in rows if "file" in row]
    by_sentence = [row for row in rows if "file" not in row and "slurp_id" in row]
    if by_file and by_sentence:
        raise DataError(f"{path}: prediction rows mix keys: {len(by_file)} keyed by 'file' (first: "
                        f"{by_file[0]['file']!r}), {len(by_sentence)} by 'slurp_id' alone (first: "
                        f"{by_sentence[0]['slurp_id']!r}); key every row by 'file' (one row per recording) or every "
                        "row by 'slurp_id' (one per sentence)")


def best_recording(recordings: list[dict[str, Any]]) -> dict[str, Any]:
    """The recording with the lowest WER (the first of equals), as SLURP's own baselines pick."""
    return min(recordings, key=lambda recording: recording.get("wer", 0.0))


@register_task
class SlurpTask(Task):
    name = "slurp"
    default_system_prompt = SYSTEM_PROMPT
    primary_metric = "slu_f1"
    input_modes = SLU_INPUT_MODES

    @property
    def prediction_key(self) -> str:  # type: ignore[override]
        return "slurp_id" if self.args.input_mode == "text" else "file"

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task slurp: the recipe sets no {split}_file")
        mode = self.args.input_mode
        slu_prompt(mode, "")  # fails early on an unknown input_mode
        audio_dir = Path(self.args.audio_dir) if self.args.audio_dir else None
        if mode != "text" and audio_dir is None:
            raise DataError(f"task slurp with input_mode {mode!r} needs audio_dir (where the SLURP recordings are)")

        examples = []
        for line_number, row in read_jsonl_lines(path):
            where = f"{path}, line {line_number} (slurp_id {row.get('slurp_id')})"
            validate_row(row, where)
            entities = slurp_gold_entities(row)
            completion = slu_target(row["scenario"], row["action"], entities)
            prompt = slu_prompt(mode, row["sentence"])
            if mode == "text":
                reference = {**row, "recordings": []}
                examples.append(Example(str(row["slurp_id"]), None, self.system_prompt, prompt, completion,
                                        json.dumps(reference)))
                continue
            if not row["recordings"]:
                raise DataError(f"{where}: no recordings, but input_mode {mode!r} needs audio")
            recordings = row["recordings"] if self.args.use_all_recordings else [best_recording(row["recordings"])]
            for recording in recordings:
                reference = {**row, "recordings": [recording]}
                examples.append(Example(recording["file"], str(audio_dir / recording["file"]), self.system_prompt,
                                        prompt, completion, json.dumps(reference)))
        self.check_audio(examples, path)
        return examples

    def sentence_id(self, example: Example) -> str:
        return str(json.loads(example.reference)["slurp_id"])

    def stratum(self, example: Example) -> str:
        return json.loads(example.reference)["scenario"]

    def parse(self, text: str) -> dict[str, Any]:
        return parse_slu_output(text)

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        return official_slu_row(self.prediction_key, example.id, prediction)

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:

        gold_rows = [json.loads(example.reference) for example in examples]
        return score_slurp(gold_rows, list(predictions.values()), skip_missing=skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:

        gold_lines = read_jsonl_lines(gold_path)
        for line_number, row in gold_lines:
            validate_row(row, f"{gold_path}, line {line_number} (slurp_id {row.get('slurp_id')})")
        gold_rows = [row for _, row in gold_lines]
        predictions = read_jsonl(predictions_path)
        check_prediction_keys(predictions, predictions_path)
        return score_slurp(gold_rows, predictions, skip_missing=skip_missing)



def sample_rows(rows: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:count]
