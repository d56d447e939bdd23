"""The JSON answer shared by the SLU tasks: build the target, parse a model's output."""

from __future__ import annotations

import json
import re
from typing import Any

from audio_recipes.output_tags import remove_tagged

SLU_INSTRUCTION = (
    "Identify the scenario, the action and the entities of {subject}. Answer with JSON only, in the form "
    '{{"scenario": "...", "action": "...", "entities": [{{"<entity type>": "<words>"}}]}}.'
)

_ANNOTATION_SPAN = re.compile(r"\[\s*([^\[\]:]+?)\s*:\s*([^\[\]]*?)\s*\]")
# Where an object may begin: `{`, then JSON whitespace, then a key or `}` (anything else fails at once)
_OBJECT_START = re.compile(r'\{[ \t\n\r]*["}]')
# Starts tried before an output counts as holding no object: each failed try costs up to the text's length (the
# decoder's error message counts the lines before it), so trying every `{` is quadratic on a degenerate output
MAX_OBJECT_STARTS = 64


# The SLU tasks' input modes: audio, audio with its transcript in the prompt, transcript alone
SLU_INPUT_MODES = ("audio", "audio_transcript", "text")


def slu_prompt(input_mode: str, transcript: str | None) -> str:
    """The user turn's text for each input mode (the audio itself comes before it)."""
    if input_mode == "audio":
        return SLU_INSTRUCTION.format(subject="this spoken command")
    if input_mode == "audio_transcript":
        return f"Transcript: {transcript}\n" + SLU_INSTRUCTION.format(subject="this spoken command")
    if input_mode == "text":
        return f"Command: {transcript}\n" + SLU_INSTRUCTION.format(subject="this command")
    raise ValueError(f"unknown input_mode {input_mode!r}; expected 'audio', 'audio_transcript' or 'text'")


def normalize_filler(text: str) -> str:
    """Fillers are compared lowercased with single spaces, as SLURP's gold fillers are written."""
    return " ".join(text.lower().split())


def slu_target(scenario: str, action: str, entities: list[dict[str, str]]) -> str:
    """Compact JSON: {"scenario": "alarm", "action": "set", "entities": [{"time": "eight o'clock"}]}."""
    answer = {
        "scenario": scenario,
        "action": action,
        "entities": [{entity["type"]: entity["filler"]} for entity in entities],
    }
    return json.dumps(answer, ensure_ascii=False)


def entities_from_annotation(annotation: str) -> list[dict[str, str]]:
    """`[slot : value]` spans (SLURP's sentence_annotation, MASSIVE's annot_utt) -> [{type, filler}]."""
    return [
        {"type": slot.strip(), "filler": normalize_filler(value)}
        for slot, value in _ANNOTATION_SPAN.findall(annotation)
    ]


def strip_annotation(annotation: str) -> str:
    """`wake me at [time : five am]` -> `wake me at five am`."""
    return " ".join(_ANNOTATION_SPAN.sub(lambda match: match.group(2), annotation).split())


def official_slu_row(key: str, item_id: str, prediction: dict[str, Any]) -> dict[str, Any]:
    """A row of SLURP's official prediction file: {key, scenario, action, entities: [{type, filler}]}."""
    return {
        key: item_id,
        "scenario": prediction["scenario"],
        "action": prediction["action"],
        "entities": [{"type": e["type"], "filler": e["filler"]} for e in prediction["entities"]],
    }


def empty_prediction() -> dict[str, Any]:
    return {"scenario": "", "action": "", "entities": [], "valid": False}


def _first_json_object(text: str) -> Any:
    """The first JSON object of `text`, found in at most MAX_OBJECT_STARTS tries; None where there is none."""
    decoder = json.JSONDecoder()
    for tries, match in enumerate(_OBJECT_START.finditer(text), start=1):
        if tries > MAX_OBJECT_STARTS:
            return None
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):  # RecursionError: an object nested too deep
            continue
        if isinstance(value, dict):
            return value
    return None


def _parse_entity(entity: Any) -> dict[str, str] | None:
    if not isinstance(entity, dict):
        return None
    if "type" in entity and "filler" in entity:
        entity_type, filler = entity["type"], entity["filler"]
    elif len(entity) == 1:
        (entity_type, filler), = entity.items()
    else:
        return None
    if not isinstance(entity_type, str) or not isinstance(filler, str | int | float):
        return None
    return {"type": entity_type.strip(), "filler": normalize_filler(str(filler))}


def parse_slu_output(text: str) -> dict[str, Any]:
    """Model text -> {scenario, action, entities: [{type, filler}], valid}. Never raises.

    Output that holds no JSON object with string `scenario` and `action` is an empty prediction with
    `valid: False`; malformed entities are dropped and counted in `num_malformed_entities`.
    """
    answer = _first_json_object(remove_tagged(text or "", "think", ignore_case=False))
    if answer is None or not isinstance(answer.get("scenario"), str) or not isinstance(answer.get("action"), str):
        return empty_prediction()
    raw_entities = answer.get("entities", [])
    raw_entities = raw_entities if isinstance(raw_entities, list) else []
    entities = [parsed for parsed in map(_parse_entity, raw_entities) if parsed is not None]
    prediction = {
        "scenario": answer["scenario"].strip(),
        "action": answer["action"].strip(),
        "entities": entities,
        "valid": True,
    }
    if len(entities) != len(raw_entities) or not isinstance(answer.get("entities", []), list):
        prediction["num_malformed_entities"] = max(len(raw_entities) - len(entities), 1)
    return prediction
