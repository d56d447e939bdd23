"""Audio in: reading any file soundfile reads, mono, resampled, normalised, cropped or padded, mixed with noise
(audio.loading); Qwen2-Audio's encoder window cut to the batch's longest clip (audio.window)."""

from audio_recipes.audio.loading import (
    ON_TOO_LONG_CHOICES,
    AudioError,
    AudioStats,
    AudioTooLongWarning,
    SilentAudioWarning,
    crop_or_pad,
    describe_file,
    load_audio,
    load_audio_batch,
    mean_power,
    mix_at_snr,
    peak_normalize,
    read_audio_file,
    read_audio_info,
    resample,
)

__all__ = [
    "ON_TOO_LONG_CHOICES", "AudioError", "AudioStats", "AudioTooLongWarning", "SilentAudioWarning", "crop_or_pad",
    "describe_file", "load_audio", "load_audio_batch", "mean_power", "mix_at_snr", "peak_normalize", "read_audio_file",
    "read_audio_info", "resample",
]
