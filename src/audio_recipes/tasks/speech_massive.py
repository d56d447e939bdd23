"""Speech-MASSIVE: multilingual spoken language understanding (MASSIVE's intents and slots, spoken).

Scored twice over: the SLURP metrics (metrics.slu) and the data set's own (metrics.massive: intent accuracy,
exact match, seqeval slot micro-F1, s3prl's slot-type F1 and slot-value CER). The test split is published apart
(FBK-MT/Speech-MASSIVE-test): `test_dataset_name` names it, and metrics.json names the data it scored (`data`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, read_jsonl_lines
from audio_recipes.metrics.massive import annotation_tags, score_massive
from audio_recipes.metrics.slu import score_slu
from audio_recipes.tasks.base import Example, Task, check_unique_keys, register_task, rows_by_id
from audio_recipes.tasks.slu_format import (
    SLU_INPUT_MODES,
    entities_from_annotation,
    official_slu_row,
    parse_slu_output,
    slu_prompt,
    slu_target,
)

REQUIRED_KEYS = ("id", "locale", "utt", "annot_utt", "intent_str")
HUB_DATASET = "FBK-MT/Speech-MASSIVE"
HUB_TEST_DATASET = "FBK-MT/Speech-MASSIVE-test"  # the test split, published apart
SPLITS = ("train", "train_115", "validation", "test")
LOCALES = ("ar-SA", "de-DE", "es-ES", "fr-FR", "hu-HU", "ko-KR", "nl-NL", "pl-PL", "pt-PT", "ru-RU", "tr-TR", "vi-VN")
SYSTEM_PROMPT = "You are a multilingual spoken language understanding system for a voice assistant."


def split_intent(intent: str) -> tuple[str, str]:
    """MASSIVE's `intent_str` is scenario_action, the scenario being the part before the first '_'."""
    scenario, _, action = intent.partition("_")
    return scenario, action


def check_row(row: dict[str, Any], where: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise DataError(f"{where}: Speech-MASSIVE row lacks {', '.join(missing)} (expected keys: "
                        f"{', '.join(REQUIRED_KEYS)})")


def numbered_rows(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a table (parquet, a Hub split) with their position as errors name it: `row N`, 1 = the first."""
    return [(f"row {number}", row) for number, row in enumerate(rows, start=1)]


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Local files exported from the Hub dataset, JSON lines (each row named by its line) or parquet (by its row)."""
    if path.suffix == ".parquet":
        import pandas as pd

        return numbered_rows(pd.read_parquet(path).to_dict(orient="records"))
    return [(f"line {number}", row) for number, row in read_jsonl_lines(path)]


def read_hub_split(dataset_name: str, locale: str, split: str, audio_cache: Path) -> list[dict[str, Any]]:
    """Rows of a Hub split, audio written once into `audio_cache` (datasets' decoder needs torchcodec)."""
    try:
        from datasets import Audio, load_dataset

        dataset = load_dataset(dataset_name, locale, split=split).cast_column("audio", Audio(decode=False))
    except Exception as error:  # the Hub client raises many types for "offline" and "not found"
        raise DataError(
            f"could not read {dataset_name} ({locale}, {split}) from the Hub: {error}. "
            "Without Hub access, export the split to a local file and set train_file / eval_file / test_file."
        ) from error
    rows = []
    for row in dataset:
        audio = row.pop("audio") or {}
        target = audio_cache / Path(audio.get("path") or row.get("path") or f"{row['id']}.wav").name
        if audio.get("bytes") and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(audio["bytes"])
        rows.append({**row, "path": target.name})
    return rows


@register_task
class SpeechMassiveTask(Task):
    name = "speech_massive"
    default_system_prompt = SYSTEM_PROMPT
    primary_metric = "slu_f1"
    prediction_key = "id"
    input_modes = SLU_INPUT_MODES

    def rows(self, split: str) -> tuple[list[tuple[str, dict[str, Any]]], str, Path | None]:
        """The rows of `split`, each with where it is (`line N`, `row N`), what they were read from, the audio."""
        path = self.data_file(split)
        if path is not None:
            audio_dir = Path(self.args.audio_dir) if self.args.audio_dir else Path(path).parent / "audio"
            return read_rows(Path(path)), str(path), audio_dir
        dataset = self.hub_dataset(split)
        if dataset is None:
            raise DataError(f"task speech_massive: the recipe sets neither {split}_file nor dataset_name")
        locale = self.args.locale or "fr-FR"
        cache = Path(self.args.audio_dir or f"data/speech_massive/{locale}/audio")
        rows = read_hub_split(dataset, locale, self.split_name(split), cache)
        return numbered_rows(rows), self.data_source(split), cache

    def hub_dataset(self, split: str) -> str | None:
        if split == "test" and self.args.test_dataset_name:
            return self.args.test_dataset_name
        return self.args.dataset_name

    def data_source(self, split: str) -> str:
        """What `split` reads: the local file, or the Hub dataset, locale and split."""
        if self.data_file(split) is not None:
            return str(self.data_file(split))
        return f"{self.hub_dataset(split)}[{self.args.locale or 'fr-FR'}/{self.split_name(split)}]"

    def load_examples(self, split: str) -> list[Example]:
        rows, source, audio_dir = self.rows(split)
        mode = self.args.input_mode
        examples = []
        for position, row in rows:
            where = f"{source}, {position} (id {row.get('id')})"
            check_row(row, where)
            if self.args.locale and row["locale"] != self.args.locale:
                continue
            reference = gold_item(row, where)
            scenario, action, entities = reference["scenario"], reference["action"], reference["entities"]
            audio = None
            if mode != "text":
                if not row.get("path"):
                    raise DataError(f"{where}: no audio `path`, but input_mode {mode!r} needs audio")
                audio = str(audio_dir / Path(row["path"]).name)
            examples.append(Example(
                id=str(row["id"]), audio=audio, system=self.system_prompt, prompt=slu_prompt(mode, row["utt"]),
                completion=slu_target(scenario, action, entities), reference=json.dumps(reference),
            ))
        if not examples:
            raise DataError(f"{source}: no rows for locale {self.args.locale!r}")
        self.check_audio(examples, source)
        return examples

    def stratum(self, example: Example) -> str:
        return json.loads(example.reference)["scenario"]

    def parse(self, text: str) -> dict[str, Any]:
        return parse_slu_output(text)

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        return official_slu_row("id", example.id, prediction)

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        return score_items([json.loads(example.reference) for example in examples], predictions, skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        items, located_ids = [], []
        for position, row in read_rows(Path(gold_path)):
            where = f"{gold_path}, {position} (id {row.get('id')})"
            check_row(row, where)
            items.append(gold_item(row, where))
            located_ids.append((position, items[-1]["id"]))
        check_unique_keys(located_ids, gold_path)
        predictions, num_duplicates = rows_by_id(read_jsonl(predictions_path))
        return {**score_items(items, predictions, skip_missing), "num_duplicates": num_duplicates}


def gold_item(row: dict[str, Any], where: str) -> dict[str, Any]:
    """What both scorers need of a row: the labels and entities (SLURP's metrics), the intent, tokens and tags
    (MASSIVE's)."""
    scenario, action = split_intent(row["intent_str"])
    tokens, tags = annotation_tags(row["utt"], row["annot_utt"], where)
    return {"id": str(row["id"]), "scenario": scenario, "action": action,
            "entities": entities_from_annotation(row["annot_utt"]), "intent": row["intent_str"],
            "tokens": tokens, "tags": tags, "annotated": bool(row["annot_utt"].split())}


def score_items(items: list[dict[str, Any]], predictions: dict[str, dict], skip_missing: bool) -> dict:
    gold = {item["id"]: item for item in items}
    return {**score_slu(gold, predictions, skip_missing=skip_missing),
            **score_massive(items, predictions, skip_missing=skip_missing)}

