"""Audio loading, mixing and speech synthesis, checked on synthetic files and real recordings."""

import math
import re
import warnings

import numpy as np
import pytest
import soundfile as sf

from audio_recipes.audio import (
    AudioError,
    AudioStats,
    AudioTooLongWarning,
    SilentAudioWarning,
    crop_or_pad,
    load_audio,
    load_audio_batch,
    mix_at_snr,
    peak_normalize,
)
from audio_recipes.testing import speech_synthesis
from audio_recipes.testing.speech_synthesis import espeak_available, synthesize_speech


def sine(frequency, seconds, rate, amplitude=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_frequency(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


def measured_snr_db(signal, mixture):
    signal = signal.astype(np.float64)
    noise = mixture.astype(np.float64) - signal
    return 10 * math.log10(np.mean(signal**2) / np.mean(noise**2))


# ---------------------------------------------------------------- mono mixdown


def test_stereo_opposite_channels_mix_down_to_exact_zeros(tmp_path):
    k = np.random.default_rng(0).integers(-20000, 20000, size=8000).astype(np.int16)
    path = tmp_path / "opposite.flac"
    sf.write(path, np.stack([k, -k], axis=1), 16000)  # int16 in, so the file holds k exactly

    stats = AudioStats()
    with pytest.warns(SilentAudioWarning, match=r"opposite\.flac' \(row 'r1'\): digital silence \(its channels cancel"):
        audio = load_audio(path, 16000, row="r1", stats=stats)

    assert stats.silent == 1 and stats.silent_files == [str(path)] and stats.loaded == 1  # kept, but counted
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    assert np.count_nonzero(k) > 7000  # the channels themselves are not silent
    np.testing.assert_array_equal(audio, np.zeros(8000, dtype=np.float32))


def test_stereo_equal_channels_mix_down_to_that_channel(tmp_path):
    k = np.random.default_rng(1).integers(-20000, 20000, size=8000).astype(np.int16)
    path = tmp_path / "equal.flac"
    sf.write(path, np.stack([k, k], axis=1), 16000)

    audio = load_audio(path, 16000)

    np.testing.assert_array_equal(audio, k.astype(np.float32) / 32768)


def test_stereo_mix_down_is_the_mean_of_the_channels(tmp_path):
    left, right = sine(300, 0.5, 16000), sine(700, 0.5, 16000, amplitude=0.25)
    path = tmp_path / "two_tones.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")

    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-7)


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    ("suffix", "subtype", "in_rate", "out_rate"),
    [
        (".wav", "PCM_16", 44100, 16000),
        (".flac", "PCM_24", 8000, 16000),
        (".ogg", "VORBIS", 48000, 16000),
        (".wav", "FLOAT", 44100, 8000),
    ],
)
def test_resampling_keeps_duration_and_frequency(tmp_path, suffix, subtype, in_rate, out_rate):
    frequency = 440.0
    tone = sine(frequency, 1.3, in_rate)
    path = tmp_path / f"tone_{in_rate}{suffix}"
    sf.write(path, np.stack([tone, tone], axis=1), in_rate, subtype=subtype)
    frames = sf.info(path).frames

    audio = load_audio(path, out_rate)

    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - round(frames * out_rate / in_rate)) <= 1
    assert abs(peak_frequency(audio, out_rate) - frequency) < 2.0
    assert 0.4 < np.max(np.abs(audio)) < 0.6  # amplitude 0.5 survives resampling


def test_no_resampling_when_rates_match(tmp_path):
    tone = sine(1000, 0.25, 16000)
    path = tmp_path / "same_rate.wav"
    sf.write(path, tone, 16000, subtype="FLOAT")

    np.testing.assert_array_equal(load_audio(path, 16000), tone)


# ---------------------------------------------------------------- peak normalisation


def test_peak_normalize_on_load_reaches_exactly_one(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, sine(440, 0.5, 44100, amplitude=0.1), 44100)

    plain = load_audio(path, 16000)
    audio = load_audio(path, 16000, peak_normalize=True)

    assert np.max(np.abs(plain)) < 0.11
    assert np.max(np.abs(audio)) == 1.0
    np.testing.assert_allclose(audio, plain / np.max(np.abs(plain)), rtol=1e-6)


def test_peak_normalize_leaves_silence_as_zeros(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(4000, dtype=np.float32), 8000)

    with pytest.warns(SilentAudioWarning, match=r"silence\.wav': digital silence \(every sample is 0\)"):
        audio = load_audio(path, 16000, peak_normalize=True)

    assert len(audio) == 8000
    assert not np.any(np.isnan(audio))
    np.testing.assert_array_equal(audio, 0.0)


def test_peak_normalize_helper():
    np.testing.assert_array_equal(peak_normalize(np.array([0.25, -0.5, 0.1])), np.float32([0.5, -1.0, 0.2]))
    np.testing.assert_array_equal(peak_normalize(np.zeros(3)), [0.0, 0.0, 0.0])


def test_crop_or_pad():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 2), [1.0, 2.0])
    np.testing.assert_array_equal(crop_or_pad(x, 5), [1.0, 2.0, 3.0, 0.0, 0.0])
    assert crop_or_pad(x, 5).dtype == np.float32
    np.testing.assert_array_equal(crop_or_pad(x, 3), x)
    with pytest.raises(ValueError, match="num_samples"):
        crop_or_pad(x, -1)


# ---------------------------------------------------------------- too-long clips


@pytest.fixture
def three_second_clip(tmp_path):
    path = tmp_path / "long_clip.wav"
    sf.write(path, sine(440, 3.0, 44100), 44100)
    return path


def test_too_long_clip_is_cropped_with_a_warning_and_counted(three_second_clip):
    stats = AudioStats()
    with pytest.warns(AudioTooLongWarning, match=r"long_clip\.wav.*row 'slurp-12'"):
        audio = load_audio(three_second_clip, 16000, row="slurp-12", max_seconds=2.0, stats=stats)

    assert len(audio) == 2.0 * 16000
    assert (stats.loaded, stats.cropped, stats.rejected) == (1, 1, 0)
    assert stats.cropped_files == [str(three_second_clip)]
    full = load_audio(three_second_clip, 16000, max_seconds=None)
    assert len(full) == 48000
    # the crop keeps the start of the clip (the resampler's edge effects aside)
    np.testing.assert_allclose(audio[:31000], full[:31000], atol=1e-4)


def test_clip_within_max_seconds_is_not_cropped(three_second_clip):
    stats = AudioStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio = load_audio(three_second_clip, 16000, max_seconds=3.5, stats=stats)
    assert len(audio) == 48000
    assert (stats.loaded, stats.cropped) == (1, 0)


def test_too_long_clip_is_rejected_naming_file_and_row(three_second_clip):
    stats = AudioStats()
    with pytest.raises(
        AudioError, match=r"long_clip\.wav.*row 'slurp-12'.*longer than max_seconds=2\.0"
    ) as info:
        load_audio(
            three_second_clip, 16000, row="slurp-12", max_seconds=2.0, on_too_long="reject", stats=stats
        )
    assert info.value.row == "slurp-12"
    assert (stats.loaded, stats.cropped, stats.rejected) == (0, 0, 1)


def test_unknown_on_too_long_is_a_plain_value_error(three_second_clip):
    with pytest.raises(ValueError, match="on_too_long") as info:
        load_audio(three_second_clip, 16000, on_too_long="truncate")
    assert not isinstance(info.value, AudioError)


# ---------------------------------------------------------------- bad files


def write_bad_file(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "missing.wav"
    if kind == "zero_bytes":
        path = tmp_path / "zero_bytes.wav"
        path.write_bytes(b"")
    elif kind == "garbage":
        path = tmp_path / "garbage.flac"
        path.write_bytes(np.random.default_rng(2).bytes(4096))
    elif kind == "no_frames":
        path = tmp_path / "no_frames.wav"
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "file not found"),
        ("zero_bytes", "empty file"),
        ("garbage", "unreadable or corrupt"),
        ("no_frames", "no audio frames"),
    ],
)
def test_bad_file_raises_audio_error_naming_file_and_row(tmp_path, kind, reason):
    path = write_bad_file(tmp_path, kind)

    with pytest.raises(AudioError) as info:
        load_audio(path, 16000, row="slurp-12")

    message = str(info.value)
    assert message.startswith(f"audio file '{path}' (row 'slurp-12'): ")
    assert reason in message
    assert info.value.path == str(path)


def test_audio_error_names_an_integer_row_and_works_without_one(tmp_path):
    with pytest.raises(AudioError, match=r"'.*missing\.wav' \(row 7\): file not found"):
        load_audio(tmp_path / "missing.wav", 16000, row=7)
    with pytest.raises(AudioError) as info:
        load_audio(tmp_path / "missing.wav", 16000)
    assert "row" not in str(info.value)


# ---------------------------------------------------------------- batches


def test_batch_decodes_a_repeated_path_once(tmp_path, monkeypatch):
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    sf.write(first, sine(440, 0.5, 22050), 22050)
    sf.write(second, sine(880, 0.25, 22050), 22050)
    decoded = []
    real_read = sf.read

    def counting_read(file, *args, **kwargs):
        decoded.append(str(file))
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr(sf, "read", counting_read)

    batch = load_audio_batch([first, second, first], 16000)

    assert decoded == [str(first), str(second)]
    assert [len(x) for x in batch] == [8000, 4000, 8000]
    np.testing.assert_array_equal(batch[0], batch[2])
    assert batch[2] is not batch[0]  # editing one in place must not change the other
    assert abs(peak_frequency(batch[1], 16000) - 880) < 5


def test_batch_error_names_the_row_of_the_bad_file(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, sine(440, 0.1, 16000), 16000)
    with pytest.raises(AudioError, match=r"missing\.wav' \(row 'b'\)"):
        load_audio_batch([good, tmp_path / "missing.wav"], 16000, rows=["a", "b"])
    with pytest.raises(AudioError, match=r"missing\.wav' \(row 1\)"):
        load_audio_batch([good, tmp_path / "missing.wav"], 16000)
    with pytest.raises(ValueError, match="rows has 1"):
        load_audio_batch([good, good], 16000, rows=["a"])


@pytest.mark.parametrize("value, kind", [({"path": "a.wav", "bytes": None}, "dict"), (3, "int"), (float("nan"), "float")])
def test_audio_that_is_not_a_path_names_the_row(value, kind):
    """datasets' Audio column (a dict), a number from a spreadsheet: a bare TypeError without the row before."""
    with pytest.raises(AudioError, match=rf"audio {re.escape(repr(value))} \(row 'b'\): expected the path of an "
                                         rf"audio file \(a string\), got {kind}"):
        load_audio_batch([value], 16000, rows=["b"])
    with pytest.raises(AudioError, match=rf"\(row 'c'\): expected the path .* got {kind}"):
        load_audio(value, 16000, row="c")


def test_batch_passes_options_through(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, sine(440, 2.0, 16000), 16000)
    stats = AudioStats()
    with pytest.warns(AudioTooLongWarning):
        batch = load_audio_batch([path, path], 16000, max_seconds=1.0, stats=stats)
    assert [len(x) for x in batch] == [16000, 16000]
    assert (stats.loaded, stats.cropped) == (1, 1)


# ---------------------------------------------------------------- real recordings


def test_real_stereo_24bit_flac_loads_as_16khz_mono(shared_data):
    path = shared_data / "audio" / "speech" / "jfk.flac"
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")

    audio = load_audio(path, 16000)

    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - round(info.frames * 16000 / 44100)) <= 1
    assert abs(len(audio) / 16000 - 11.0) < 0.05
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert 0.01 < rms < 0.5 and np.max(np.abs(audio)) <= 1.0


def test_real_16khz_recording_loads_unchanged(shared_data):
    path = shared_data / "audio" / "speech" / "spk1_snt1.wav"
    raw, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and raw.ndim == 1

    audio = load_audio(path, 16000)

    np.testing.assert_array_equal(audio, raw)
    assert 2.5 < len(audio) / 16000 < 3.5


def test_mix_real_speech_with_noise(shared_data):
    speech = load_audio(shared_data / "audio" / "speech" / "spk1_snt1.wav", 16000)
    noise = np.random.default_rng(3).normal(size=16000 * 5).astype(np.float32)
    mixture = mix_at_snr(speech, noise, 10.0, rng=0)
    assert abs(measured_snr_db(speech, mixture) - 10.0) < 1e-3


# ---------------------------------------------------------------- mixing at an SNR


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 20.0])
@pytest.mark.parametrize("noise_seconds", [0.3, 1.0, 4.0])  # shorter (looped), equal, longer (random window)
def test_mix_at_snr_hits_the_requested_snr(snr_db, noise_seconds):
    signal = sine(440, 1.0, 16000)
    noise = np.random.default_rng(4).normal(scale=0.3, size=round(noise_seconds * 16000)).astype(np.float32)

    mixture = mix_at_snr(signal, noise, snr_db, rng=5)

    assert mixture.shape == signal.shape and mixture.dtype == np.float32
    assert abs(measured_snr_db(signal, mixture) - snr_db) < 1e-3


def test_mix_at_snr_loops_short_noise():
    signal = sine(440, 0.1, 16000)
    noise = np.random.default_rng(6).normal(size=300)
    added = mix_at_snr(signal, noise, 0.0).astype(np.float64) - signal
    gain = added[0] / noise[0]
    np.testing.assert_allclose(added, gain * np.tile(noise, 6)[:1600], rtol=1e-4, atol=1e-6)


def test_mix_at_snr_window_of_long_noise_depends_on_rng():
    signal = sine(440, 0.1, 16000)
    noise = np.random.default_rng(7).normal(size=16000)
    np.testing.assert_array_equal(
        mix_at_snr(signal, noise, 5.0, rng=1), mix_at_snr(signal, noise, 5.0, rng=1)
    )
    assert not np.allclose(mix_at_snr(signal, noise, 5.0, rng=1), mix_at_snr(signal, noise, 5.0, rng=2))


def test_mix_at_snr_rejects_silence():
    with pytest.raises(ValueError, match="noise is silent"):
        mix_at_snr(sine(440, 0.1, 16000), np.zeros(100), 5.0)
    with pytest.raises(ValueError, match="signal is silent"):
        mix_at_snr(np.zeros(100), np.ones(100), 5.0)


# ---------------------------------------------------------------- speech synthesis


def test_synthesis_without_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_synthesis, "ESPEAK_BINARY", "espeak-ng-not-installed-for-this-test")
    assert not espeak_available()
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize_speech("hello", tmp_path / "hello.wav")
    assert not (tmp_path / "hello.wav").exists()


needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


@needs_espeak
def test_synthesized_speech_is_16khz_audible_and_deterministic(tmp_path):
    first = synthesize_speech("set an alarm for eight", tmp_path / "first.wav")
    second = synthesize_speech("set an alarm for eight", tmp_path / "second.wav")

    info = sf.info(first)
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "WAV", "PCM_16")
    assert 0.5 < info.duration < 5.0
    audio = load_audio(first, 16000)
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.wav", "second.wav"]  # no partial files left


@needs_espeak
def test_synthesized_speech_as_flac_and_at_another_rate(tmp_path):
    path = synthesize_speech(
        "set an alarm for eight", tmp_path / "nested" / "alarm.flac", sampling_rate=22050
    )
    info = sf.info(path)
    assert (info.samplerate, info.format, info.subtype) == (22050, "FLAC", "PCM_16")
    different = synthesize_speech("cancel my alarm", tmp_path / "other.wav")
    assert (
        different.read_bytes()
        != synthesize_speech("set an alarm for eight", tmp_path / "same.wav").read_bytes()
    )


@needs_espeak
def test_synthesis_rejects_unknown_voice_and_empty_text(tmp_path):
    with pytest.raises(RuntimeError, match="nosuchvoice"):
        synthesize_speech("hello", tmp_path / "x.wav", voice="nosuchvoice")
    with pytest.raises(ValueError, match="empty"):
        synthesize_speech("   ", tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []
