"""Loss masks checked token by token on the tiny models' real processors and tokenisation (Qwen2-Audio, the
Qwen2.5-Omni and Qwen3-Omni thinkers, Audio Flamingo 3 and Voxtral: different audio placeholders, templates, feature
padding and mask names, and for Voxtral a tokenizer that encodes chats itself)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_recipes.audio import AudioError
from audio_recipes.audio import loading as audio_loading
from audio_recipes.collators import IGNORE_INDEX, AudioChatCollator, AudioOptions
from audio_recipes.errors import RecipeError
from audio_recipes.models import family_for_model_type, family_for_processor, load_processor
from audio_recipes.testing.tiny_models import ensure_tiny_model

SYSTEM = "You are a spoken language understanding system."
COMPLETION = '{"scenario": "alarm", "action": "set", "entities": [{"time": "eight am"}]}'


def whisper_tokens(seconds: float) -> int:
    """Qwen2-Audio, Qwen2.5-Omni: 100 mel frames a second, halved by the encoder's conv, halved again by pooling."""
    frames = int(seconds * 100)
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def aut_tokens(seconds: float) -> int:
    """Qwen3-Omni: frames in chunks of 100, each through three stride-2 convs (100 -> 50 -> 25 -> 13)."""
    chunks, rest = divmod(int(seconds * 100), 100)
    for _ in range(3):
        rest = (rest - 1) // 2 + 1 if rest else 0
    return chunks * 13 + rest


def voxtral_tokens(seconds: float) -> int:
    """Voxtral: every clip padded to whole 30 s chunks, 375 tokens each (12.5 Hz)."""
    return 375 * -(-int(seconds * 100) // 3000)


# model: (model type, how the template writes one clip, its placeholder, placeholders for N s, padded frames or None
# for padding to the longest clip). Qwen2-Audio's and AF3's windows are cut to the longest clip (2 s: 200 frames + 2,
# to 8s); AF3 writes its bare placeholder before the text.
LAYOUTS = {
    "qwen2-audio": ("qwen2_audio", "Audio 1: <|audio_bos|>{}<|audio_eos|>\n", "<|AUDIO|>", whisper_tokens, 208),
    "qwen2.5-omni": ("qwen2_5_omni", "<|audio_bos|>{}<|audio_eos|>", "<|AUDIO|>", whisper_tokens, 3000),
    "qwen3-omni-moe": ("qwen3_omni_moe", "<|audio_start|>{}<|audio_end|>", "<|audio_pad|>", aut_tokens, None),
    "audio-flamingo3": ("audioflamingo3", "{}", "<sound>", whisper_tokens, 208),
    "voxtral": ("voxtral", None, "[AUDIO]", voxtral_tokens, 3000),  # prompts: expected_prompt_ids
}
# Voxtral's control tokens (its tekken.json): <s>, [INST], [/INST], [SYSTEM_PROMPT], [/SYSTEM_PROMPT], [BEGIN_AUDIO]
VOXTRAL_BOS, VOXTRAL_INST, VOXTRAL_END_INST, VOXTRAL_SYSTEM, VOXTRAL_END_SYSTEM, VOXTRAL_BEGIN_AUDIO = 1, 3, 4, 17, 18, 25


@pytest.fixture(scope="module", params=list(LAYOUTS))
def model(request):
    return request.param


@pytest.fixture(scope="module")
def processor(model):
    return load_processor(str(ensure_tiny_model(model)), model_type=LAYOUTS[model][0])


@pytest.fixture(scope="module")
def qwen2_audio():
    """Qwen2-Audio's processor alone, for the silent clip tests (its template and 30 s window)."""
    return load_processor(str(ensure_tiny_model("qwen2-audio")), model_type="qwen2_audio")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two clips of known length (2 s and 1 s), written as real audio files at 44.1 kHz stereo / 16 kHz mono."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    long_clip = folder / "two_seconds.flac"
    sf.write(long_clip, 0.1 * rng.standard_normal((88200, 2)), 44100)
    short_clip = folder / "one_second.wav"
    sf.write(short_clip, 0.1 * rng.standard_normal(16000), 16000)
    return {"long": str(long_clip), "short": str(short_clip)}


def feature_mask(processor) -> str:
    """The name of the processor output that masks the features' padding (feature_attention_mask, AF3's
    input_features_mask), as the family lists it."""
    return family_for_processor(processor).audio_inputs[1]


def audio_token_count(model: str, seconds: float) -> int:
    return LAYOUTS[model][3](seconds)


def expected_prompt(model: str, prompt: str, audio_tokens: int | None) -> str:
    _, clip, placeholder, _, _ = LAYOUTS[model]
    audio = "" if audio_tokens is None else clip.format(placeholder * audio_tokens)
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{audio}{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n")


def expected_prompt_ids(model: str, tokenizer, prompt: str, audio_tokens: int | None) -> list[int]:
    if model == "voxtral":  # mistral_common's layout; beside audio the system text leads the user's text
        def text(value: str) -> list[int]:
            return tokenizer.encode(value, add_special_tokens=False)

        if audio_tokens is None:
            return [VOXTRAL_BOS, VOXTRAL_SYSTEM, *text(SYSTEM), VOXTRAL_END_SYSTEM, VOXTRAL_INST, *text(prompt),
                    VOXTRAL_END_INST]
        placeholder = tokenizer.convert_tokens_to_ids(LAYOUTS[model][2])
        return [VOXTRAL_BOS, VOXTRAL_INST, VOXTRAL_BEGIN_AUDIO, *[placeholder] * audio_tokens,
                *text(f"{SYSTEM}\n\n{prompt}"), VOXTRAL_END_INST]
    return tokenizer(expected_prompt(model, prompt, audio_tokens), add_special_tokens=False)["input_ids"]


def end_of_turn(model: str) -> str:
    return "</s>" if model == "voxtral" else "<|im_end|>"


def answer_ids(model: str, tokenizer, completion: str) -> list[int]:
    if model == "voxtral":  # tekken reads "</s>" in text as text: the eos id follows the answer
        return tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
    return tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]


def has_feature_mask(model: str) -> bool:
    return len(family_for_model_type(LAYOUTS[model][0]).audio_inputs) > 1  # features and their mask


def example(id_, audio, prompt, completion=COMPLETION):
    return {"id": id_, "audio": audio, "system": SYSTEM, "prompt": prompt, "completion": completion}


def check_row(model, tokenizer, input_ids, attention, labels, prompt_ids, completion, padding_side):
    """The row is exactly prompt + completion + end of turn + padding, and only the answer carries loss."""
    answer = answer_ids(model, tokenizer, completion)
    real = prompt_ids + answer
    pad = len(input_ids) - len(real)
    expected_ids = real + [tokenizer.pad_token_id] * pad if padding_side == "right" else (
        [tokenizer.pad_token_id] * pad + real)
    loss = [IGNORE_INDEX] * len(prompt_ids) + answer
    expected_labels = loss + [IGNORE_INDEX] * pad if padding_side == "right" else [IGNORE_INDEX] * pad + loss
    expected_attention = [1] * len(real) + [0] * pad if padding_side == "right" else [0] * pad + [1] * len(real)
    assert input_ids == expected_ids
    assert labels == expected_labels
    assert attention == expected_attention
    # What carries loss reads back as the answer and its end-of-turn token, nothing else
    kept = [token for token, label in zip(input_ids, labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(kept, skip_special_tokens=False) == completion + end_of_turn(model)
    placeholder = tokenizer.convert_tokens_to_ids(LAYOUTS[model][2])
    assert placeholder is not None and placeholder not in kept


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_audio_batch_masks(model, processor, clips, padding_side):
    collator = AudioChatCollator(processor, padding_side=padding_side)
    rows = [example("a", clips["long"], "What is said?"), example("b", clips["short"], "And here?", '{"x": 1}')]
    batch = collator(rows)
    tokenizer = processor.tokenizer
    for index, (row, seconds) in enumerate(zip(rows, (2.0, 1.0), strict=True)):
        check_row(model, tokenizer, batch["input_ids"][index].tolist(), batch["attention_mask"][index].tolist(),
                  batch["labels"][index].tolist(),
                  expected_prompt_ids(model, tokenizer, row["prompt"], audio_token_count(model, seconds)),
                  row["completion"], padding_side)
    assert batch["input_features"].shape == (2, 128, LAYOUTS[model][4] or 200)
    if has_feature_mask(model):  # Voxtral's encoder takes whole 30 s chunks, unmasked
        assert batch[feature_mask(processor)].sum(-1).tolist() == [200, 100]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_text_only_batch_masks(model, processor, padding_side):
    collator = AudioChatCollator(processor, padding_side=padding_side)
    rows = [example("t1", None, "Command: wake me at eight"), example("t2", None, "Command: hi", '{"a": "b"}')]
    batch = collator(rows)
    assert "input_features" not in batch
    for index, row in enumerate(rows):
        check_row(model, processor.tokenizer, batch["input_ids"][index].tolist(),
                  batch["attention_mask"][index].tolist(), batch["labels"][index].tolist(),
                  expected_prompt_ids(model, processor.tokenizer, row["prompt"], None), row["completion"], padding_side)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_mixed_batch_masks(model, processor, clips, padding_side):
    collator = AudioChatCollator(processor, padding_side=padding_side)
    rows = [example("t", None, "Command: stop"), example("a", clips["short"], "What is said?"),
            example("t2", None, "Command: play jazz please")]
    batch = collator(rows)
    expected_audio = [None, audio_token_count(model, 1.0), None]
    for index, (row, tokens) in enumerate(zip(rows, expected_audio, strict=True)):
        check_row(model, processor.tokenizer, batch["input_ids"][index].tolist(),
                  batch["attention_mask"][index].tolist(), batch["labels"][index].tolist(),
                  expected_prompt_ids(model, processor.tokenizer, row["prompt"], tokens), row["completion"],
                  padding_side)
    # Features only for the one row with audio: the model places them at that row's placeholders
    assert batch["input_features"].shape[0] == 1


def test_generation_mode_left_pads_prompts_without_labels(model, processor, clips):
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left")
    rows = [example("a", clips["long"], "Q?"), example("t", None, "Command: hi")]
    batch = collator(rows)
    assert "labels" not in batch
    assistant = [VOXTRAL_END_INST] if model == "voxtral" else processor.tokenizer(
        "<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for ids in batch["input_ids"].tolist():
        assert ids[-len(assistant):] == assistant  # every prompt ends where generation starts
    assert batch["attention_mask"][1].tolist()[0] == 0


def test_each_clip_is_decoded_once_per_batch(processor, clips, monkeypatch):
    reads = []
    original = audio_loading.sf.read

    def counting_read(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(audio_loading.sf, "read", counting_read)
    collator = AudioChatCollator(processor)
    collator([example("a", clips["short"], "Q1"), example("b", clips["short"], "Q2"), example("c", None, "Q3")])
    assert len(reads) == 1


def test_missing_audio_names_file_and_row(processor, tmp_path):
    collator = AudioChatCollator(processor)
    with pytest.raises(AudioError, match=r"nowhere\.wav.*row 'slurp-7'"):
        collator([example("slurp-7", str(tmp_path / "nowhere.wav"), "Q")])


@pytest.mark.parametrize("seconds", [0.001, 0.02])
def test_clip_shorter_than_one_analysis_window_names_file_and_row(model, processor, tmp_path, seconds):
    path = tmp_path / "blip.wav"
    sf.write(path, np.full(round(16000 * seconds), 0.1, dtype=np.float32), 16000)
    collator = AudioChatCollator(processor)
    with pytest.raises(AudioError, match=rf"blip\.wav.*row 'slurp-3'.*{seconds:.3f} s is too short: expected at least "
                                         r"0\.025 s"):
        collator([example("slurp-3", str(path), "Q"), example("ok", None, "Q")])


def test_clip_of_one_analysis_window_gives_audio_tokens(model, processor, tmp_path):
    path = tmp_path / "window.wav"
    sf.write(path, np.full(400, 0.1, dtype=np.float32), 16000)
    batch = AudioChatCollator(processor)([example("w", str(path), "Q")])
    placeholder = processor.tokenizer.convert_tokens_to_ids(LAYOUTS[model][2])
    assert batch["input_ids"][0].tolist().count(placeholder) >= 1


def test_long_clip_is_cropped_and_counted(model, processor, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 31, dtype=np.float32) + 0.01, 16000)
    collator = AudioChatCollator(processor)
    with pytest.warns(UserWarning, match="long.wav"):
        batch = collator([example("x", str(path), "Q")])
    assert collator.stats.cropped == 1
    if has_feature_mask(model):
        assert batch[feature_mask(processor)].sum().item() == 3000
    else:  # one 30 s chunk, not two
        assert batch["input_features"].shape[0] == 1
    placeholder = processor.tokenizer.convert_tokens_to_ids(LAYOUTS[model][2])
    assert batch["input_ids"][0].tolist().count(placeholder) == audio_token_count(model, 30.0)


# Seconds of a clip each tiny processor keeps (its feature extractor's window, AF3's max_audio_len); None: any length
LONGEST_CLIP = {"qwen2-audio": 30.0, "qwen2.5-omni": 30.0, "qwen3-omni-moe": None, "audio-flamingo3": 600.0,
                "voxtral": None}


def test_max_seconds_past_what_the_processor_keeps_is_refused(model, processor, tmp_path):
    longest = LONGEST_CLIP[model]
    if longest is None:  # no cut: a 40 s clip with no max keeps all its audio tokens
        path = tmp_path / "forty.wav"
        sf.write(path, np.full(16000 * 40, 0.01, dtype=np.float32), 16000)
        batch = AudioChatCollator(processor, audio_options=AudioOptions(max_seconds=None))([example("x", str(path), "Q")])
        placeholder = processor.tokenizer.convert_tokens_to_ids(LAYOUTS[model][2])
        assert batch["input_ids"][0].tolist().count(placeholder) == audio_token_count(model, 40.0)
        collator = AudioChatCollator(processor, audio_options=AudioOptions(max_seconds=None))
        assert collator.example_length(example("x", str(path), "Q")) == batch["input_ids"].shape[1]  # not cut at 30 s
        return
    for too_long in (longest + 1, None):
        with pytest.raises(RecipeError, match=rf"max_audio_seconds={too_long}.* {longest:g} s .*at most {longest:g}"):
            AudioChatCollator(processor, audio_options=AudioOptions(max_seconds=too_long))
    assert AudioChatCollator(processor, audio_options=AudioOptions(max_seconds=longest)).audio_options.max_seconds == longest


def test_qwen2_audio_processor_cuts_clips_at_30_seconds_itself(qwen2_audio):
    """Why a longer max_audio_seconds is refused: the processor keeps 3000 frames of a 40 s clip, without a word."""
    features = qwen2_audio(text=["<|AUDIO|>"], audio=[np.full(16000 * 40, 0.01, dtype=np.float32)],
                           sampling_rate=16000, return_tensors="pt")
    assert features["feature_attention_mask"].sum().item() == 3000


def test_example_length_matches_the_collated_length_without_decoding(processor, clips, monkeypatch):
    collator = AudioChatCollator(processor)
    rows = [example("a", clips["long"], "What is said?"), example("b", clips["short"], "Q"),
            example("t", None, "Command: play some jazz")]
    expected = [collator([row])["input_ids"].shape[1] for row in rows]
    monkeypatch.setattr(audio_loading.sf, "read", lambda *a, **k: pytest.fail("length estimation decoded a clip"))
    assert [collator.example_length(row) for row in rows] == expected


@pytest.mark.parametrize("content, reason", [(None, "file not found"), (b"RIFF not audio", "unreadable or corrupt")])
def test_example_length_of_a_bad_file_names_file_and_row(processor, tmp_path, content, reason):
    """Length grouping reads every row's header before training: a bad file says which row, as the collator does."""
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=rf"bad\.wav' \(row 'slurp-9'\): {reason}"):
        AudioChatCollator(processor).example_length(example("slurp-9", str(path), "Q"))


SILENT_CLIP_TURN = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"Audio 1: <|audio_bos|>{'<|AUDIO|>' * audio_token_count('qwen2-audio', 1.0)}<|audio_eos|>\n<|im_end|>\n")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_text_only_batch_gets_a_masked_silent_clip_when_asked(qwen2_audio, padding_side):
    rows = [example("t1", None, "Command: wake me at eight"), example("t2", None, "Command: hi", '{"a": "b"}')]
    plain = AudioChatCollator(qwen2_audio, padding_side=padding_side)(rows)
    collator = AudioChatCollator(qwen2_audio, padding_side=padding_side, silent_clip_for_text_batches=True)
    batch = collator(rows)
    tokenizer = qwen2_audio.tokenizer
    clip_ids = tokenizer(SILENT_CLIP_TURN, add_special_tokens=False)["input_ids"]
    width = batch["input_ids"].shape[1]
    assert width == len(clip_ids) + int(plain["attention_mask"][0].sum())

    # First row: its own tokens, untouched, then (right padding) or before them (left) the clip: masked, no loss
    ids, attention, labels = (batch[key][0].tolist() for key in ("input_ids", "attention_mask", "labels"))
    clip = slice(width - len(clip_ids), width) if padding_side == "right" else slice(0, len(clip_ids))
    own = slice(0, width - len(clip_ids)) if padding_side == "right" else slice(len(clip_ids), width)
    assert ids[clip] == clip_ids and attention[clip] == [0] * len(clip_ids)
    assert labels[clip] == [IGNORE_INDEX] * len(clip_ids)
    check_row("qwen2-audio", tokenizer, ids[own], attention[own], labels[own],
              expected_prompt_ids("qwen2-audio", tokenizer, rows[0]["prompt"], None), rows[0]["completion"],
              padding_side)
    # Second row: as without the clip, padded further
    check_row("qwen2-audio", tokenizer, batch["input_ids"][1].tolist(), batch["attention_mask"][1].tolist(),
              batch["labels"][1].tolist(), expected_prompt_ids("qwen2-audio", tokenizer, rows[1]["prompt"], None),
              rows[1]["completion"], padding_side)
    # The clip's features: one second of silence, in a window cut to 104 frames
    assert batch["input_features"].shape == (1, 128, 104)
    assert batch["feature_attention_mask"].sum().item() == 100
    assert collator.silent_clip_batches == 1 and collator.stats.loaded == 0


def test_batch_with_audio_gets_no_silent_clip(qwen2_audio, clips):
    rows = [example("t", None, "Command: stop"), example("a", clips["short"], "What is said?")]
    plain = AudioChatCollator(qwen2_audio)(rows)
    collator = AudioChatCollator(qwen2_audio, silent_clip_for_text_batches=True)
    batch = collator(rows)
    assert batch.keys() == plain.keys() and all(torch.equal(batch[key], plain[key]) for key in plain)
    assert collator.silent_clip_batches == 0
