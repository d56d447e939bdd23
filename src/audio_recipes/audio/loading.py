"""Load audio files as mono float32 arrays at a chosen rate, and mix noise in at a set SNR.

Every failure names the file and, when the caller gives one, the dataset row, so a bad
clip in a 10,000-row dataset can be found without a debugger.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from audio_recipes.errors import InputError

ON_TOO_LONG_CHOICES = ("crop", "reject")


class AudioError(InputError, ValueError):
    """An audio file could not be used; the message names the file, the row and what was expected."""

    def __init__(self, path: str | os.PathLike, reason: str, *, row: Any = None):
        self.path = os.fspath(path) if is_path(path) else repr(path)
        self.row = row
        self.reason = reason
        super().__init__(f"{describe_file(path, row)}: {reason}")


class AudioTooLongWarning(UserWarning):
    """A clip was longer than max_seconds and was cropped."""


class SilentAudioWarning(UserWarning):
    """A clip was digital silence (every sample 0 after the mix to mono): a broken file is the usual cause."""


@dataclass
class AudioStats:
    """Counts what load_audio did, so a caller can report how many clips were cropped or rejected."""

    loaded: int = 0
    cropped: int = 0
    rejected: int = 0
    silent: int = 0
    cropped_files: list[str] = field(default_factory=list)
    rejected_files: list[str] = field(default_factory=list)
    silent_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.loaded} clips loaded, {self.cropped} cropped, {self.rejected} rejected as too long, "
                f"{self.silent} digital silence")


def is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def describe_file(path: str | os.PathLike, row: Any = None) -> str:
    """`audio file 'x.wav' (row 'slurp-12')`, the prefix of every message about a file."""
    text = f"audio file '{os.fspath(path)}'" if is_path(path) else f"audio {path!r}"
    if row is not None:
        text += f" (row {row!r})"
    return text


def peak_normalize(x: np.ndarray) -> np.ndarray:
    """Scale so that max|x| == 1; a silent clip stays all zeros (no division by zero)."""
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x.copy()
    return x / np.float32(peak)


def crop_or_pad(x: np.ndarray, num_samples: int) -> np.ndarray:
    """Keep the first num_samples, or zero-pad at the end up to num_samples."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    x = np.asarray(x)
    if len(x) >= num_samples:
        return x[:num_samples].copy()
    return np.concatenate([x, np.zeros(num_samples - len(x), dtype=x.dtype)])


# load_audio's `peak_normalize` flag shadows this function inside its body; the alias reaches it.
_peak_normalize = peak_normalize


def mix_down_to_mono(frames: np.ndarray) -> np.ndarray:
    """Mean of the channels of a (frames, channels) array; equal weights keep L=R unchanged."""
    if frames.ndim == 1:
        return frames
    return frames.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """soxr high-quality resampling; output length is round(len(x) * out_rate / in_rate)."""
    if in_rate == out_rate:
        return x
    return soxr.resample(x, in_rate, out_rate, quality="HQ").astype(np.float32, copy=False)


UNREADABLE = "unreadable or corrupt audio; expected a format soundfile can read (wav, flac, ogg)"


def check_audio_path(path: str | os.PathLike, *, row: Any = None) -> None:
    """AudioError unless path is a non-empty file."""
    if not is_path(path):  # os.path reads an int as a file descriptor; a dict is datasets' Audio column
        raise AudioError(path, f"expected the path of an audio file (a string), got {type(path).__name__}", row=row)
    if not os.path.exists(path):
        raise AudioError(path, "file not found", row=row)
    if os.path.isdir(path):
        raise AudioError(path, "expected an audio file, found a directory", row=row)
    if os.path.getsize(path) == 0:
        raise AudioError(
            path, "empty file (0 bytes); expected audio soundfile can read (wav, flac, ogg)", row=row
        )


def read_audio_info(path: str | os.PathLike, *, row: Any = None) -> Any:
    """The file's header (frames, samplerate, channels) without decoding it; failures are AudioError as on reading."""
    check_audio_path(path, row=row)
    try:
        return sf.info(os.fspath(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(path, f"{UNREADABLE}: {error}", row=row) from error


def read_audio_file(path: str | os.PathLike, *, row: Any = None) -> tuple[np.ndarray, int]:
    """Decode a whole file as (frames, channels) float32, turning every failure into AudioError."""
    check_audio_path(path, row=row)
    try:
        frames, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(path, f"{UNREADABLE}: {error}", row=row) from error
    if len(frames) == 0:
        raise AudioError(path, "no audio frames (0 samples)", row=row)
    if not np.all(np.isfinite(frames)):
        raise AudioError(path, "contains NaN or infinite samples", row=row)
    return frames, int(rate)


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int,
    *,
    row: Any = None,
    peak_normalize: bool = False,
    max_seconds: float | None = 30.0,
    on_too_long: str = "crop",
    stats: AudioStats | None = None,
) -> np.ndarray:
    """Read a file as a 1-D float32 mono array at sampling_rate.

    A clip longer than max_seconds is cropped to exactly round(max_seconds * sampling_rate)
    samples with an AudioTooLongWarning (on_too_long="crop"), or raises AudioError ("reject").
    """
    if on_too_long not in ON_TOO_LONG_CHOICES:
        raise ValueError(f"on_too_long must be one of {ON_TOO_LONG_CHOICES}, got {on_too_long!r}")
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be positive, got {sampling_rate}")
    frames, in_rate = read_audio_file(path, row=row)
    audio = mix_down_to_mono(frames)
    duration = len(audio) / in_rate
    if not np.any(audio):
        warn_silent(path, row, channels_cancel=bool(np.any(frames)), stats=stats)

    too_long = max_seconds is not None and duration > max_seconds
    if too_long and on_too_long == "reject":
        if stats is not None:
            stats.rejected += 1
            stats.rejected_files.append(os.fspath(path))
        raise AudioError(path, f"{duration:.2f} s is longer than max_seconds={max_seconds}", row=row)
    if too_long:
        # Crop before resampling (with a few samples spare) so a 1-hour file is not resampled whole.
        spare = 2 * math.ceil(in_rate / sampling_rate) + 1
        audio = audio[: math.ceil(max_seconds * in_rate) + spare]

    audio = resample(audio, in_rate, sampling_rate)

    if too_long:
        audio = crop_or_pad(audio, round(max_seconds * sampling_rate))
        warnings.warn(
            f"{describe_file(path, row)}: {duration:.2f} s is longer than max_seconds={max_seconds}; "
            f"cropped to the first {max_seconds} s",
            AudioTooLongWarning,
            stacklevel=2,
        )
        if stats is not None:
            stats.cropped += 1
            stats.cropped_files.append(os.fspath(path))

    if peak_normalize:
        audio = _peak_normalize(audio)
    if stats is not None:
        stats.loaded += 1
    return np.ascontiguousarray(audio, dtype=np.float32)


def warn_silent(path: str | os.PathLike, row: Any, *, channels_cancel: bool, stats: AudioStats | None) -> None:
    """Loaded all the same (a speech detection set may hold real silence), but never unseen: warned and counted."""
    cause = "its channels cancel out when mixed to mono" if channels_cancel else "every sample is 0"
    warnings.warn(f"{describe_file(path, row)}: digital silence ({cause}); expected audible audio",
                  SilentAudioWarning, stacklevel=3)
    if stats is not None:
        stats.silent += 1
        stats.silent_files.append(os.fspath(path))


def load_audio_batch(
    paths: Sequence[str | os.PathLike],
    sampling_rate: int,
    *,
    rows: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[np.ndarray]:
    """load_audio for each path; a path that appears twice is decoded once (the repeat gets a copy)."""
    if rows is not None and len(rows) != len(paths):
        raise ValueError(f"rows has {len(rows)} entries but paths has {len(paths)}")
    decoded: dict[str, np.ndarray] = {}
    batch = []
    for index, path in enumerate(paths):
        row = rows[index] if rows is not None else index
        if not is_path(path):
            check_audio_path(path, row=row)  # an AudioError naming the row, before os.fspath fails bare
        key = os.path.abspath(os.fspath(path))
        if key in decoded:
            batch.append(decoded[key].copy())  # a copy, so editing one clip in place cannot change its twin
            continue
        decoded[key] = load_audio(path, sampling_rate, row=row, **kwargs)
        batch.append(decoded[key])
    return batch


def fit_noise_to_length(noise: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Loop a short noise clip, or take a random window of a long one, to get num_samples."""
    if len(noise) < num_samples:
        repeats = math.ceil(num_samples / len(noise))
        return np.tile(noise, repeats)[:num_samples]
    offset = int(rng.integers(0, len(noise) - num_samples + 1))
    return noise[offset : offset + num_samples]


def mean_power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(
    signal: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """signal + scaled noise, where 10*log10(mean(signal**2) / mean(scaled_noise**2)) == snr_db.

    The mix is not clipped (clipping would break the SNR); peak_normalize it if it must fit [-1, 1].
    """
    signal = np.asarray(signal)
    noise = np.asarray(noise)
    if signal.ndim != 1 or noise.ndim != 1:
        raise ValueError(f"signal and noise must be 1-D, got shapes {signal.shape} and {noise.shape}")
    if len(noise) == 0:
        raise ValueError("noise is empty")
    rng = np.random.default_rng(rng)
    noise = fit_noise_to_length(noise.astype(np.float64), len(signal), rng)
    signal_power = mean_power(signal)
    noise_power = mean_power(noise)
    if signal_power == 0.0:
        raise ValueError("signal is silent (zero power); an SNR relative to it is undefined")
    if noise_power == 0.0:
        raise ValueError("noise is silent over the chosen window; no gain can reach the requested SNR")
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (signal.astype(np.float64) + gain * noise).astype(np.float32)
