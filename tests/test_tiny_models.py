"""The tiny Qwen2-Audio: real classes, Qwen's tokens and templates, deterministic, and it trains/generates."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from audio_recipes.testing import tiny_models, tokenizer
from audio_recipes.testing.tiny_models import (
    TINY_MODEL_BUILDERS,
    build_tiny_qwen2_audio,
    ensure_tiny_model,
    smoke_check,
)
from audio_recipes.testing.tokenizer import (
    AUDIO_BOS,
    AUDIO_EOS,
    AUDIO_TOKEN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    build_tiny_tokenizer,
)

SR = 16000


def sine(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def audio_messages(text: str = "what is this?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}],
        }
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny") / "qwen2-audio")


@pytest.fixture(scope="module")
def processor(model_dir):
    return AutoProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return Qwen2AudioForConditionalGeneration.from_pretrained(model_dir).eval()


def test_registry_names_the_builder():
    assert TINY_MODEL_BUILDERS.get("qwen2-audio") is build_tiny_qwen2_audio


def test_every_family_names_a_registered_tiny_model():
    from audio_recipes.models.families import FAMILIES

    named = {family.tiny_model for _, family in FAMILIES.items()}
    assert None not in named, "a family without a tiny model cannot be tested on CPU"
    assert named == set(TINY_MODEL_BUILDERS.names())


def test_two_builds_are_bit_identical(model_dir, tmp_path):
    again = build_tiny_qwen2_audio(tmp_path / "again")
    first = sorted(p.name for p in model_dir.iterdir())
    second = sorted(p.name for p in again.iterdir())
    assert first == second
    assert "model.safetensors" in first
    for name in first:
        assert (model_dir / name).read_bytes() == (again / name).read_bytes(), (
            f"{name} differs between builds"
        )


def test_loads_with_the_real_classes_and_shapes(model_dir, processor, model):
    assert isinstance(processor, Qwen2AudioProcessor)
    assert isinstance(processor.tokenizer, Qwen2Tokenizer)
    assert isinstance(AutoTokenizer.from_pretrained(model_dir), Qwen2Tokenizer)
    fe = processor.feature_extractor
    assert isinstance(fe, WhisperFeatureExtractor)
    assert (fe.feature_size, fe.sampling_rate, fe.n_samples, fe.nb_max_frames) == (128, SR, 30 * SR, 3000)

    cfg = model.config
    assert cfg.model_type == "qwen2_audio"
    assert cfg.audio_config.num_mel_bins == 128
    assert cfg.audio_config.max_source_positions == 1500
    assert cfg.text_config.model_type == "qwen2"
    assert cfg.text_config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    vocab = cfg.text_config.vocab_size
    assert vocab % 64 == 0 and len(processor.tokenizer) <= vocab < len(processor.tokenizer) + 64
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_special_tokens_match_qwen2_audio(model_dir, processor, model):
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS])
    n_bpe = tokenizer.BPE_VOCAB_SIZE
    assert ids == list(range(n_bpe, n_bpe + 6)), "specials follow the BPE vocabulary in Qwen's order"
    assert [ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS] == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|AUDIO|>",
        "<|audio_bos|>",
        "<|audio_eos|>",
    ]
    assert set(tok.all_special_tokens) == {ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS}
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == (IM_END, ENDOFTEXT, None)
    assert tok("hi there")["input_ids"] == tok("hi there", add_special_tokens=False)["input_ids"], (
        "no bos/eos added"
    )
    for token, token_id in zip(
        [ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS], ids, strict=True
    ):
        assert tok.encode(token, add_special_tokens=False) == [token_id]
    audio_id = tok.convert_tokens_to_ids(AUDIO_TOKEN)
    assert model.config.audio_token_id == model.config.audio_token_index == audio_id
    assert processor.audio_token == AUDIO_TOKEN and processor.audio_token_id == audio_id

    gen = model.generation_config
    assert sorted(gen.eos_token_id) == sorted(
        [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)]
    )
    assert gen.pad_token_id == tok.convert_tokens_to_ids(ENDOFTEXT)
    saved = json.loads((model_dir / "generation_config.json").read_text())
    assert saved["eos_token_id"] == gen.eos_token_id


def test_chat_template_renders_like_qwen2_audio_instruct(processor):
    rendered = processor.apply_chat_template(audio_messages(), add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nwhat is this?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Multi-turn, own system prompt, numbered audios, {"type": "audio"} without a source, assistant turn.
    messages = [
        {"role": "system", "content": "Be brief."},
        *audio_messages("first?"),
        {"role": "assistant", "content": "A tone."},
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "second?"}]},
    ]
    assert processor.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nfirst?<|im_end|>\n"
        "<|im_start|>assistant\nA tone.<|im_end|>\n"
        "<|im_start|>user\nAudio 2: <|audio_bos|><|AUDIO|><|audio_eos|>\nsecond?<|im_end|>\n"
    )
    # As on the Hub: the processor has no saved template and uses Qwen2AudioProcessor's default...
    assert processor.chat_template == tiny_models.qwen2_audio_processor_chat_template()


def test_tokenizer_keeps_qwen2_chatml_template(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    )
    assert not (model_dir / "chat_template.jinja").exists()


@pytest.mark.parametrize("seconds, expected_tokens", [(2.0, 50), (1.0, 25), (30.0, 750)])
def test_processor_expands_audio_token(processor, seconds, expected_tokens):
    frames = int(seconds * 100)
    assert expected_tokens == (((frames - 1) // 2 + 1) - 2) // 2 + 1
    text = processor.apply_chat_template(audio_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[sine(seconds)], sampling_rate=SR, return_tensors="pt")
    audio_id = processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(audio_id) == expected_tokens
    first = ids.index(audio_id)
    assert ids[first - 1] == processor.tokenizer.convert_tokens_to_ids(AUDIO_BOS)
    assert ids[first + expected_tokens] == processor.tokenizer.convert_tokens_to_ids(AUDIO_EOS)
    assert tuple(inputs["input_features"].shape) == (1, 128, 3000)
    assert int(inputs["feature_attention_mask"].sum()) == frames


def test_forward_with_labels_gives_finite_loss_and_gradients(processor, model):
    prompt = processor.apply_chat_template(audio_messages(), add_generation_prompt=True, tokenize=False)
    answer = '{"scenario": "alarm", "action": "set"}<|im_end|>\n'
    batch = processor(
        text=[prompt + answer, prompt + "no" + "<|im_end|>\n"],
        audio=[sine(2.0), sine(1.0, 880.0)],
        sampling_rate=SR,
        padding=True,
        return_tensors="pt",
    )
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    labels[labels == model.config.audio_token_id] = -100
    model.zero_grad()
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    assert 0 < out.loss.item() < 3 * math.log(model.config.text_config.vocab_size)
    out.loss.backward()
    projector_grad = model.model.multi_modal_projector.linear.weight.grad
    assert projector_grad is not None and projector_grad.abs().sum() > 0, "audio path gets no gradient"
    model.zero_grad()


def test_generate_produces_new_tokens(processor, model):
    prompt = processor.apply_chat_template(audio_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, audio=[sine(1.0)], sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
    assert out[0, : inputs["input_ids"].shape[1]].tolist() == inputs["input_ids"][0].tolist()
    assert all(0 <= t < model.config.text_config.vocab_size for t in out[0].tolist())


ROUND_TRIP_TEXTS = [
    '{"scenario": "alarm", "entities": [{"time": "eight o\'clock"}]}',
    "wake me up at eight o'clock tomorrow",
    "Zebra quokka xylophone: words the corpus never saw!",
    "café naïve Straße 東京 こんにちは 안녕하세요 привет مرحبا 😀🎉 \u200b \ufffd",
    "  leading spaces\ttabs\r\nwindows\n\n\ntrailing   ",
    "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nhi<|im_end|>\n",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trips(processor, text):
    tok = processor.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert all(0 <= i < len(tok) for i in ids)


def test_tokenizer_matches_transformers_qwen2_pipeline():
    """Same vocab/merges through transformers' own Qwen2Tokenizer pipeline give the same ids."""
    ours = build_tiny_tokenizer()
    model = json.loads(ours.backend_tokenizer.to_str())["model"]
    reference = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    for text in ROUND_TRIP_TEXTS[:-2] + ["It's 7:30; we've 12,345 items (ok?)"]:
        assert ours.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False)
    assert len(model["vocab"]) == tokenizer.BPE_VOCAB_SIZE
    assert ours.backend_tokenizer.normalizer.__class__.__name__ == "NFC"


def test_smoke_check_reports_figures(model_dir):
    figures = smoke_check(model_dir)
    assert figures["num_audio_tokens"] == 25
    assert math.isfinite(figures["loss"])
    assert len(figures["new_tokens"]) >= 1
    assert figures["num_parameters"] > 0


def test_smoke_check_fails_clearly(tmp_path):
    with pytest.raises(RuntimeError, match="smoke check failed at 'load processor'"):
        smoke_check(tmp_path / "missing")


def test_ensure_tiny_model_builds_once_and_rebuilds_when_stale(tmp_path):
    path = ensure_tiny_model("qwen2-audio", root=tmp_path)
    assert path == tmp_path / "qwen2-audio"
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert ensure_tiny_model("qwen2-audio", root=tmp_path) == path
    assert weights.stat().st_mtime_ns == stamp, "an up-to-date build must not be rebuilt"
    marker = path / tiny_models.BUILD_MARKER
    marker.write_text(json.dumps({"name": "qwen2-audio", "fingerprint": "old"}))
    ensure_tiny_model("qwen2-audio", root=tmp_path)
    assert json.loads(marker.read_text())["fingerprint"] != "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen2-audio"], "no staging folders left behind"
    with pytest.raises(ValueError, match="unknown tiny model 'no-such-model' .*qwen2-audio"):
        ensure_tiny_model("no-such-model", root=tmp_path)
