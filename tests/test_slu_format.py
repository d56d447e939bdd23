import json

import pytest
from helpers import call_with_timeout

from audio_recipes.tasks.slu_format import (
    entities_from_annotation,
    parse_slu_output,
    slu_prompt,
    slu_target,
    strip_annotation,
)


def test_target_is_compact_json_with_type_filler_pairs():
    target = slu_target("alarm", "set", [{"type": "time", "filler": "eight o'clock"}])
    assert target == '{"scenario": "alarm", "action": "set", "entities": [{"time": "eight o\'clock"}]}'


def test_parse_round_trips_the_target():
    entities = [{"type": "time", "filler": "eight o'clock"}, {"type": "date", "filler": "tomorrow"}]
    parsed = parse_slu_output(slu_target("alarm", "set", entities))
    assert parsed == {"scenario": "alarm", "action": "set", "entities": entities, "valid": True}


def test_parse_accepts_type_filler_objects_and_surrounding_text():
    text = 'Sure! ```json\n{"scenario": "iot", "action": "hue_lightoff", "entities": [{"type": "house_place", ' \
           '"filler": "Kitchen"}]}\n```'
    parsed = parse_slu_output(text)
    assert parsed["scenario"] == "iot" and parsed["entities"] == [{"type": "house_place", "filler": "kitchen"}]


def test_malformed_output_is_an_invalid_empty_prediction():
    for text in ["", "no json here", '{"scenario": "alarm"', '["a"]', '{"scenario": 3, "action": "set"}', None]:
        parsed = parse_slu_output(text)
        assert parsed == {"scenario": "", "action": "", "entities": [], "valid": False}, text


def test_malformed_entities_are_dropped_and_counted():
    parsed = parse_slu_output(json.dumps({"scenario": "a", "action": "b",
                                          "entities": [{"time": "now"}, "junk", {"x": 1, "y": 2}]}))
    assert parsed["entities"] == [{"type": "time", "filler": "now"}]
    assert parsed["num_malformed_entities"] == 2


def test_thinking_is_removed_before_parsing():
    text = '<think>{"scenario": "wrong", "action": "x"}</think>{"scenario": "weather", "action": "query"}'
    assert parse_slu_output(text)["scenario"] == "weather"


ONE_MEGABYTE = 1_000_000
TARGET = slu_target("alarm", "set", [{"type": "time", "filler": "five"}])


def repeated(unit: str, size: int = ONE_MEGABYTE) -> str:
    return unit * (size // len(unit))


@pytest.mark.parametrize(("output", "valid"), [
    (repeated("{"), False),
    (repeated('{"a'), False),  # unterminated keys
    (repeated('{"a": "x'), False),  # unterminated strings
    (repeated('{"a": "\\'), False),
    (repeated('{"a":'), False),  # nested, never closed
    (repeated('{"a":', ONE_MEGABYTE // 2) + "1" + repeated("}", ONE_MEGABYTE // 10), False),  # nested too deep
    (repeated("<think>"), False),
    (repeated("<think>") + "</think>" + TARGET, True),
    (repeated("{") + TARGET, True),
    (repeated("[") + TARGET, True),
], ids=["braces", "keys", "strings", "backslashes", "open-nesting", "deep-nesting", "think", "closed-think",
        "braces-then-json", "brackets-then-json"])
def test_parse_is_linear_on_one_megabyte_adversarial_outputs(output, valid):
    # The JSON finder retried at every `{` (224 KB of unterminated strings: 8 s) and a deep object raised
    # RecursionError; 10 s is far beyond a linear pass over 1 MB
    parsed = call_with_timeout(parse_slu_output, output, timeout=10)
    assert parsed["valid"] is valid
    if valid:
        assert parsed["scenario"] == "alarm" and parsed["entities"] == [{"type": "time", "filler": "five"}]


def test_annotation_spans():
    annotation = "wake me at [time : Five AM] on [date : monday]"
    assert entities_from_annotation(annotation) == [{"type": "time", "filler": "five am"},
                                                    {"type": "date", "filler": "monday"}]
    assert strip_annotation(annotation) == "wake me at Five AM on monday"


def test_prompts_per_input_mode():
    assert "Transcript: hello" in slu_prompt("audio_transcript", "hello")
    assert "Command: hello" in slu_prompt("text", "hello")
    assert "hello" not in slu_prompt("audio", "hello")
