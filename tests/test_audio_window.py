"""Qwen2-Audio and Audio Flamingo 3 with their window cut to the batch's longest clip compute what the 30 s window
computes: the same features, token ids, logits, loss and gradients, and the same greedy generations."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_recipes.audio.window import FRAME_MULTIPLE, allow_short_audio_windows, short_window_samples
from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import ModelArguments
from audio_recipes.models import family_for_model, load_model_and_processor
from audio_recipes.testing.tiny_models import ensure_tiny_model

SECONDS = (2.37, 0.2, 1.0, 0.61)  # lengths that are no whole number of frames, and one that is


@pytest.fixture(scope="module", params=["qwen2-audio", "audio-flamingo3"])
def loaded(request):
    model, processor, _ = load_model_and_processor(ModelArguments(
        model_name_or_path=str(ensure_tiny_model(request.param))))
    assert family_for_model(model).whisper_window
    return model.eval(), processor


def mask_key(model) -> str:
    return family_for_model(model).audio_inputs[1]  # feature_attention_mask, AF3's input_features_mask


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("window")
    rng = np.random.default_rng(1)
    rows = []
    for index, seconds in enumerate(SECONDS):
        path = folder / f"clip{index}.wav"
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * (index + 1) * t) + 0.05 * rng.standard_normal(len(t)), 16000)
        rows.append({"id": f"r{index}", "audio": str(path), "system": "", "prompt": f"Clip {index}?",
                     "completion": f"answer {index}"})
    return rows


def collate(processor, rows, short, **kwargs):
    return AudioChatCollator(processor, short_audio_window=short, **kwargs)(rows)


def test_window_size_is_the_longest_clip_plus_two_frames_in_multiples_of_eight():
    assert short_window_samples(16000, 160, 480000) == 104 * 160  # 100 frames + 2, up to 104
    assert short_window_samples(16001, 160, 480000) == 104 * 160  # 101 frames + 2
    assert short_window_samples(16000 + 7 * 160, 160, 480000) == 112 * 160  # 107 + 2
    assert short_window_samples(479000, 160, 480000) == 480000  # never past the 30 s window
    assert FRAME_MULTIPLE % 2 == 0


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_features_and_tokens_are_the_30_s_windows_first_frames(loaded, rows, padding_side):
    model, processor = loaded
    mask = mask_key(model)
    full = collate(processor, rows, False, padding_side=padding_side)
    short = collate(processor, rows, True, padding_side=padding_side)
    frames = short["input_features"].shape[-1]
    assert full["input_features"].shape[-1] == 3000 and frames == 240  # 237 frames + 2, up to 240
    assert torch.equal(short["input_features"], full["input_features"][..., :frames])
    assert torch.equal(short[mask], full[mask][:, :frames])
    assert full[mask][:, frames:].sum() == 0  # nothing valid was cut off
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(short[key], full[key])


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_logits_loss_and_gradients_match_the_30_s_window(loaded, rows, padding_side):
    model, processor = loaded
    outputs = {}
    for short in (False, True):
        batch = collate(processor, rows, short, padding_side=padding_side)
        model.zero_grad()
        result = model(**batch)
        result.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if "audio_tower" in name}
        outputs[short] = (batch["attention_mask"].bool(), result.logits.detach(), result.loss.item(), grads)
    mask, full_logits, full_loss, full_grads = outputs[False]
    _, short_logits, short_loss, short_grads = outputs[True]
    assert torch.allclose(short_logits[mask], full_logits[mask], atol=1e-5)
    assert short_loss == pytest.approx(full_loss, abs=1e-5)
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name  # the audio encoder gets a gradient at all: the check below means something
        assert torch.allclose(short_grads[name], grad, atol=1e-6, rtol=1e-4), name
    model.zero_grad()


def test_greedy_generations_match_the_30_s_window(loaded, rows):
    model, processor = loaded
    texts = []
    for short in (False, True):
        batch = collate(processor, rows, short, with_completion=False, padding_side="left")
        with torch.inference_mode():
            output = model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                    pad_token_id=processor.tokenizer.pad_token_id)
        texts.append(processor.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:]))
    assert texts[0] == texts[1]


def test_encoder_rejects_windows_it_cannot_take(loaded):
    model, _ = loaded
    allow_short_audio_windows()
    encoder = model.model.audio_tower if hasattr(model, "model") else model.audio_tower
    with pytest.raises(ValueError, match="even number of mel frames, at most 3000; got 3008"):
        encoder(torch.zeros(1, 128, 3008))
    with pytest.raises(ValueError, match="got 101"):
        encoder(torch.zeros(1, 128, 101))
    # 104 frames -> 52 -> pooled 26 (AF3's encoder reads the feature mask itself)
    mask = {"input_features_mask": torch.ones(1, 104, dtype=torch.long)} if mask_key(model) == "input_features_mask" else {}
    assert encoder(torch.zeros(1, 128, 104), **mask).last_hidden_state.shape[1] == 26
