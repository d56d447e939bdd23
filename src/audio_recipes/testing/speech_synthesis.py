"""Turn text into a speech recording with the espeak-ng command-line synthesiser.

espeak-ng is small, offline and deterministic (same text and voice give the same bytes),
which makes it a good source of spoken test prompts when no recorded speech is at hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_recipes.audio import load_audio

ESPEAK_BINARY = "espeak-ng"
INSTALL_HINT = (
    "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
)


def espeak_available() -> bool:
    """True when the espeak-ng binary is on PATH."""
    return shutil.which(ESPEAK_BINARY) is not None


def run_espeak(text: str, wav_path: Path, *, voice: str, speed: int) -> None:
    """Have espeak-ng write `text` to wav_path (mono 16-bit WAV at its own rate, 22.05 kHz)."""
    binary = shutil.which(ESPEAK_BINARY)
    if binary is None:
        raise RuntimeError(f"{ESPEAK_BINARY} is not installed (not found on PATH); {INSTALL_HINT}")
    # "--" ends the options, so text that starts with "-" is spoken rather than parsed as a flag.
    command = [binary, "-v", voice, "-s", str(speed), "-w", str(wav_path), "--", text]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not wav_path.exists() or wav_path.stat().st_size == 0:
        detail = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise RuntimeError(f"{ESPEAK_BINARY} failed for voice {voice!r} and text {text!r}: {detail}")


def synthesize_speech(
    text: str,
    path: str | os.PathLike,
    *,
    voice: str = "en-us",
    speed: int = 160,
    sampling_rate: int = 16000,
) -> Path:
    """Speak `text` into `path`: mono 16-bit PCM WAV, or FLAC when path ends in .flac.

    The file appears atomically (written beside it, then renamed), so a reader never sees half a file.
    Returns the path written.
    """
    if not text or not text.strip():
        raise ValueError("text to synthesise is empty")
    path = Path(path)
    file_format = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    with tempfile.TemporaryDirectory(prefix="espeak-") as scratch:
        raw_wav = Path(scratch) / "espeak.wav"
        run_espeak(text, raw_wav, voice=voice, speed=speed)
        audio = load_audio(raw_wav, sampling_rate, max_seconds=None)
    # Resampling can overshoot full scale a little; clip so 16-bit conversion cannot wrap around.
    audio = np.clip(audio, -1.0, 1.0)

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        sf.write(partial, audio, sampling_rate, subtype="PCM_16", format=file_format)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path
