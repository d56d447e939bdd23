"""SLURP with ASR n-best lists and rationales: the audio and its n-best list in, a rationale then the label out.

Rows (JSON lines, written by `prepare_data.py slurp_nbest` then `slurp_rationale`): `filename` (the recording,
under audio_dir), `candidates` (the ASR n-best list, best first), `final` (the gold label: scenario, action,
entities as [{type, filler}]) and, for training, `rationale_text`. The target is the rationale, then a line
`Final answer: {JSON}`; the loss falls on both. Only the label is scored, by SLURP's rules, keyed by recording
`file` as SLURP's official prediction files are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, read_jsonl_lines, write_jsonl_atomic
from audio_recipes.metrics.slu import F1Counter, score_slu, span_f1_counts
from audio_recipes.output_tags import remove_tagged
from audio_recipes.tasks.base import Example, Task, check_unique_keys, register_task
from audio_recipes.tasks.slu_format import (
    MAX_OBJECT_STARTS,
    empty_prediction,
    normalize_filler,
    official_slu_row,
    parse_slu_output,
    slu_target,
)

FINAL_MARKER = "Final answer:"
_FINAL_MARKER = re.compile(r"final\s+answer\s*:", flags=re.IGNORECASE)
_OBJECT_START = re.compile(r'\{[ \t\n\r]*["}]')  # where a JSON object may begin (as in tasks.slu_format)
SYSTEM_PROMPT = "You are a spoken language understanding system for a voice assistant."
PROMPT = (
    "Speech recognition hypotheses of this spoken command, most likely first:\n{candidates}\n"
    "The hypotheses may be wrong: listen to the audio. Explain briefly what was said and what it asks for, then "
    f"write a last line '{FINAL_MARKER}' followed by its scenario, action and entities as JSON only, in the form "
    '{{"scenario": "...", "action": "...", "entities": [{{"<entity type>": "<words>"}}]}}.'
)
PREDICTIONS_FILE = "predictions.jsonl"  # the labels alone, in SLURP's official format (written by write_report)


def numbered(candidates: list[str]) -> str:
    return "\n".join(f"{number}. {candidate}" for number, candidate in enumerate(candidates, start=1))


def rationale_prompt(candidates: list[str]) -> str:
    return PROMPT.format(candidates=numbered(candidates))


def gold_label(final: Any, where: str) -> dict[str, Any]:
    """A row's `final` as {scenario, action, entities: [{type, filler}]}: entities given as {type, filler} or
    {type: filler}, fillers lowercased with single spaces as SLURP's gold fillers are. Malformed: a DataError."""
    if not isinstance(final, dict) or not isinstance(final.get("scenario"), str) \
            or not isinstance(final.get("action"), str) or not isinstance(final.get("entities", []), list):
        raise DataError(f"{where}: `final` must be {{\"scenario\": str, \"action\": str, \"entities\": [...]}}, got "
                        f"{json.dumps(final)[:200]}")
    entities = []
    for entity in final.get("entities", []):
        if isinstance(entity, dict) and set(entity) == {"type", "filler"}:
            entity_type, filler = entity["type"], entity["filler"]
        elif isinstance(entity, dict) and len(entity) == 1:
            (entity_type, filler), = entity.items()
        else:
            entity_type = filler = None
        if not isinstance(entity_type, str) or not isinstance(filler, str):
            raise DataError(f"{where}: entity {json.dumps(entity)} is not {{\"type\": ..., \"filler\": ...}}")
        entities.append({"type": entity_type.strip(), "filler": normalize_filler(filler)})
    return {"scenario": final["scenario"].strip(), "action": final["action"].strip(), "entities": entities}


def rationale_target(rationale: str | None, label: dict[str, Any]) -> str:
    """The rationale, then `Final answer: {JSON}` on its own line (the label alone where there is no rationale)."""
    answer = f"{FINAL_MARKER} {slu_target(label['scenario'], label['action'], label['entities'])}"
    rationale = (rationale or "").strip()
    return f"{rationale}\n{answer}" if rationale else answer


def clean_rationale(text: str) -> str:
    """A rationale as a target holds it: no <think> block, and nothing from a `Final answer:` on (the gold label
    follows it in the target, so a teacher's own label is cut)."""
    text = remove_tagged(text or "", "think", ignore_case=False)
    marker = _FINAL_MARKER.search(text)
    return (text[:marker.start()] if marker else text).strip()


def _last_label(text: str) -> tuple[dict[str, Any] | None, int]:
    """The last JSON object of `text` with string scenario and action, and where it starts; tried from the end, at
    most MAX_OBJECT_STARTS starts (each costs up to the text's length)."""
    decoder = json.JSONDecoder()
    starts = [match.start() for match in _OBJECT_START.finditer(text)]
    for start in reversed(starts[-MAX_OBJECT_STARTS:]):
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict) and isinstance(value.get("scenario"), str) and isinstance(value.get("action"), str):
            return value, start
    return None, -1


def parse_rationale_output(text: str) -> dict[str, Any]:
    """Model text -> {scenario, action, entities, valid, rationale}. Never raises.

    The label is the JSON after the last `Final answer:`; without that line, the last JSON object with a scenario
    and an action. The rationale is the text before it. No label: an empty prediction with `valid: False` and
    `missing_label: True`, its whole text kept as the rationale.
    """
    text = remove_tagged(text or "", "think", ignore_case=False)
    markers = list(_FINAL_MARKER.finditer(text))
    if markers:
        rationale, prediction = text[:markers[-1].start()], parse_slu_output(text[markers[-1].end():])
    else:
        _, start = _last_label(text)
        rationale, prediction = (text[:start], parse_slu_output(text[start:])) if start >= 0 else (text, None)
    if prediction is None or not prediction["valid"]:
        return {**empty_prediction(), "missing_label": True, "rationale": text.strip()}
    return {**prediction, "rationale": rationale.strip()}


def entity_counts(gold: dict[str, dict], predicted: dict[str, dict], skip_missing: bool) -> F1Counter:
    """Exact (type, filler) entity matches summed over the items, by the span F1's rule."""
    counts = F1Counter()
    for item_id, label in gold.items():
        row = predicted.get(item_id)
        if row is None and skip_missing:
            continue
        gold_entities = [{"type": entity["type"], "filler": entity["filler"]} for entity in label["entities"]]
        raw = row.get("entities") if row is not None else []
        # Whole-dict matching as span_f1_counts does it; malformed entities count for nothing here
        predicted_entities = [{"type": entity["type"], "filler": entity["filler"]} for entity in raw
                              if isinstance(entity, dict)
                              and isinstance(entity.get("type"), str) and isinstance(entity.get("filler"), str)] \
            if isinstance(raw, list) else []
        counts += span_f1_counts(gold_entities, predicted_entities)
    return counts


@register_task
class SlurpRationaleTask(Task):
    name = "slurp_rationale"
    default_system_prompt = SYSTEM_PROMPT
    prediction_key = "file"
    primary_metric = "slu_f1"
    predictions_file = "full_predictions.jsonl"  # n-best, rationale, raw output, target and label of each item

    def load_examples(self, split: str) -> list[Example]:
        path = self.data_file(split)
        if path is None:
            raise DataError(f"task slurp_rationale: the recipe sets no {split}_file")
        if self.args.audio_dir is None:
            raise DataError("task slurp_rationale needs audio_dir (where the SLURP recordings are)")
        examples = []
        for line_number, row in read_jsonl_lines(path):
            where = f"{path}, line {line_number}"
            missing = [key for key in ("filename", "candidates", "final") if key not in row]
            if split == "train" and not isinstance(row.get("rationale_text"), str):
                missing.append("rationale_text (a string)")
            if missing:
                raise DataError(f"{where}: row lacks {', '.join(missing)} (rows need filename, candidates, final, and "
                                "for training rationale_text: see prepare_data.py slurp_nbest and slurp_rationale)")
            candidates = row["candidates"]
            if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
                raise DataError(f"{where}: candidates must be a non-empty list of strings (the ASR n-best list)")
            label = gold_label(row["final"], where)
            reference = {"filename": row["filename"], "slurp_id": row.get("slurp_id"), "candidates": candidates,
                         "final": label}
            examples.append(Example(row["filename"], str(Path(self.args.audio_dir) / row["filename"]),
                                    self.system_prompt, rationale_prompt(candidates),
                                    rationale_target(row.get("rationale_text"), label), json.dumps(reference)))
        self.check_audio(examples, path)
        return examples

    def parse(self, text: str) -> dict[str, Any]:
        return parse_rationale_output(text)

    def official_prediction(self, example: Example, prediction: dict[str, Any]) -> dict[str, Any]:
        return official_slu_row("file", example.id, prediction)

    def prediction_row(self, example: Example, output: dict[str, Any]) -> dict[str, Any]:
        prediction = output["prediction"]
        reference = json.loads(example.reference)
        return {**self.official_prediction(example, prediction), "valid": prediction.get("valid", False),
                "slurp_id": reference.get("slurp_id"), "candidates": reference["candidates"],
                "rationale": prediction.get("rationale", ""), "raw_output": output["raw_output"],
                "target": example.completion, "gold": reference["final"]}

    def score(self, examples: list[Example], predictions: dict[str, dict], skip_missing: bool = False) -> dict:
        gold = {example.id: json.loads(example.reference)["final"] for example in examples}
        return label_metrics(gold, predictions, skip_missing)

    def score_files(self, gold_path: Path, predictions_path: Path, skip_missing: bool = False) -> dict:
        """A data file of this task (filename, final) against prediction rows keyed by `file`."""
        gold, located_files = {}, []
        for line_number, row in read_jsonl_lines(gold_path):
            where = f"{gold_path}, line {line_number}"
            if "filename" not in row or "final" not in row:
                raise DataError(f"{where}: a gold row needs filename and final")
            gold[row["filename"]] = gold_label(row["final"], where)
            located_files.append((f"line {line_number}", row["filename"]))
        check_unique_keys(located_files, gold_path, "filename")
        predictions = {str(row.get("file")): row for row in read_jsonl(predictions_path)}
        return label_metrics(gold, predictions, skip_missing)

    def write_report(self, output_dir: Path, examples: list[Example], systems: dict[str, dict[str, dict]],
                     metrics: dict[str, dict]) -> None:
        """The labels alone, in SLURP's official format (`file, scenario, action, entities`), beside the full rows."""
        by_id = {example.id: example for example in examples}
        for name, rows in systems.items():
            path = output_dir / (PREDICTIONS_FILE if name == "model" else f"{name}_{PREDICTIONS_FILE}")
            write_jsonl_atomic(path, [self.official_prediction(by_id[item_id], row) for item_id, row in rows.items()])


def label_metrics(gold: dict[str, dict], predictions: dict[str, dict], skip_missing: bool) -> dict:
    """SLURP's metrics of the labels (scenario / action / intent accuracy, entity span P / R / F1, SLU-F1), and how
    many predictions held no label."""
    metrics = score_slu(gold, predictions, skip_missing=skip_missing)
    counts = entity_counts(gold, {key: row for key, row in predictions.items() if key in gold}, skip_missing)
    metrics["entity_precision"], metrics["entity_recall"] = counts.precision, counts.recall
    metrics["num_missing_labels"] = sum(1 for key, row in predictions.items() if key in gold
                                        and row.get("valid") is False)
    return metrics
