"""Speech answers as text: writing them, parsing model outputs (never raising), the tokenizer's layout."""

import pytest
from transformers import AutoTokenizer

from audio_recipes.models.speech_vocabulary import (
    SPEECH_END,
    SPEECH_START,
    SpeechVocabulary,
    parse_speech_answer,
    speech_answer,
    speech_token,
    speech_vocabulary_tokens,
)
from audio_recipes.testing.tiny_models import ensure_tiny_model


def test_answer_format_round_trips():
    text = speech_answer("Paris is the capital.", [12, 0, 4095])
    assert text == "Paris is the capital.\n<|speech_start|><|s_12|><|s_0|><|s_4095|><|speech_end|>"
    assert parse_speech_answer(text) == {"text": "Paris is the capital.", "speech_tokens": [12, 0, 4095],
                                         "valid": True}
    assert parse_speech_answer(text + "\n")["valid"]  # trailing whitespace after the end marker is fine


@pytest.mark.parametrize("output, error, tokens", [
    ("Paris.", "no speech start marker", []),
    ("Paris.<|speech_start|><|s_1|><|speech_end|>", "no newline between the text", [1]),
    ("Paris.\n<|speech_start|><|s_1|><|s_2|>", "no speech end marker", [1, 2]),
    ("Paris.\n<|speech_start|><|s_1|>oops<|s_2|><|speech_end|>", "something other than speech tokens", [1, 2]),
    ("Paris.\n<|speech_start|><|speech_end|>", "no speech tokens", []),
    ("Paris.\n<|speech_start|><|s_3|><|speech_end|> and more", "text after the speech end marker", [3]),
    ("", "no speech start marker", []),
])
def test_malformed_outputs_are_invalid_with_a_reason(output, error, tokens):
    prediction = parse_speech_answer(output)
    assert prediction["valid"] is False and prediction["error"].startswith(error)
    assert prediction["speech_tokens"] == tokens


def test_vocabulary_of_a_tokenizer_checks_the_layout():
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model("qwen3"))
    assert SpeechVocabulary.of(tokenizer) is None
    offset = len(tokenizer)
    tokenizer.add_tokens(speech_vocabulary_tokens(8))
    vocabulary = SpeechVocabulary.of(tokenizer)
    assert vocabulary == SpeechVocabulary(offset, 8)
    assert (vocabulary.start_id, vocabulary.end_id, vocabulary.size) == (offset + 8, offset + 9, 10)
    assert tokenizer.convert_tokens_to_ids([speech_token(7), SPEECH_START, SPEECH_END]) == [offset + 7, offset + 8,
                                                                                             offset + 9]

    shuffled = AutoTokenizer.from_pretrained(ensure_tiny_model("qwen3"))
    shuffled.add_tokens([speech_token(0), speech_token(1), SPEECH_END, SPEECH_START])
    with pytest.raises(ValueError, match="misplaced or missing: <\\|speech_start\\|>, <\\|speech_end\\|>"):
        SpeechVocabulary.of(shuffled)
