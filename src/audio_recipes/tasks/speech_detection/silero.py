"""Silero VAD as a clip-level speech detector: SPEECH when its speech probability reaches the threshold in any
32 ms frame of the clip. The weights ship in the `silero-vad` wheel (TorchScript), so it runs offline; audio is
read with soundfile (the package's own reader needs torchaudio)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

from audio_recipes.audio import load_audio
from audio_recipes.tasks.base import Example

SAMPLING_RATE = 16000
THRESHOLD = 0.5  # Silero's own default speech threshold


@lru_cache(maxsize=1)
def load_model():
    try:
        from silero_vad import load_silero_vad
    except ImportError as error:
        raise ImportError("the silero_vad baseline needs the silero-vad package: pip install silero-vad") from error
    threads = torch.get_num_threads()
    model = load_silero_vad(onnx=False)
    torch.set_num_threads(threads)  # silero_vad sets one thread for the whole process on import
    return model


@torch.no_grad()
def speech_probability(audio: torch.Tensor) -> float:
    """The highest frame speech probability of a clip (states reset per clip)."""
    return float(load_model().audio_forward(audio, SAMPLING_RATE).max())


def predict(examples: Sequence[Example], threshold: float = THRESHOLD) -> list[dict[str, Any]]:
    outputs = []
    for example in examples:
        started = time.perf_counter()  # reading the clip counts, as it does in the model's latency
        audio = torch.from_numpy(load_audio(example.audio, SAMPLING_RATE, row=example.id, max_seconds=None))
        probability = speech_probability(audio)
        latency_ms = 1000 * (time.perf_counter() - started)
        label = "SPEECH" if probability >= threshold else "NONSPEECH"
        outputs.append({"raw_output": f"{label} p_speech={probability:.4f}",
                        "confidence": probability if label == "SPEECH" else 1 - probability,
                        "latency_ms": latency_ms})
    return outputs
