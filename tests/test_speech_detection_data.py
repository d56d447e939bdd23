"""The speech detection data builder: factorial balance, split hygiene, SNR and peak of each clip, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audio_recipes.audio import mean_power
from audio_recipes.paths import ASSETS_DIR
from audio_recipes.tasks.speech_detection.builder import (
    SAMPLING_RATE,
    SpeechDetectionDataError,
    build_clip,
    build_speech_detection,
)
from audio_recipes.testing.tiny_data import SYNTHETIC_SOUNDS, write_synthetic_sounds

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ASSETS_DIR / "audio"  # the speech and noise recordings the repository carries
DURATIONS, SNRS = (200, 600, 1000), (0.0, 10.0, 20.0)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    """The tiny data's synthetic non-speech sounds (3 recordings of each of 6 kinds, with categories.csv), and two
    kinds with fewer recordings than splits: one bell, one of two knocks."""
    folder = write_synthetic_sounds(tmp_path_factory.mktemp("sounds"))
    write_tone(folder / "bell.wav", 5.0, 880)
    write_tone(folder / "knock-0.wav", 5.0, 90)
    write_tone(folder / "knock-1.wav", 5.0, 95)
    with (folder / "categories.csv").open("a") as table:
        table.write("bell.wav,bell\nknock-0.wav,knock\nknock-1.wav,knock\n")
    return folder


@pytest.fixture(scope="module")
def built(sounds, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("speech-detection")
    metadata = build_speech_detection([str(AUDIO / "speech")], [str(sounds), str(AUDIO / "noise")], out,
                                      durations_ms=DURATIONS, snrs_db=SNRS, clips_per_condition=5, seed=7,
                                      log=lambda message: None)
    return out, metadata


def test_balanced_factorial_design_in_every_split(built):
    out, metadata = built
    assert metadata.equals(pd.read_csv(out / "metadata.csv"))
    required = {"segment_id", "path", "label", "duration_ms", "snr_db", "source", "dataset", "split", "condition"}
    assert required <= set(metadata.columns)
    assert metadata["segment_id"].is_unique
    counts = metadata.groupby(["split", "label", "duration_ms", "snr_db"]).size()
    # 5 clips per cell shared 60/20/20: 3 train, 1 validation, 1 test, in each of 2 x 3 x 3 cells
    assert len(counts) == 3 * 2 * 3 * 3
    for split, expected in (("train", 3), ("validation", 1), ("test", 1)):
        assert (counts[split] == expected).all(), counts[split]
    assert set(metadata["dataset"]) == {"speech", sounds_name(built), "noise"}
    assert set(metadata.loc[metadata["label"] == "SPEECH", "dataset"]) == {"speech"}


def test_no_recording_in_two_splits_as_source_or_as_noise(built):
    _, metadata = built
    used = pd.concat([metadata[["source", "split"]],
                      metadata[["noise_source", "split"]].rename(columns={"noise_source": "source"})])
    splits_per_recording = used.groupby("source")["split"].nunique()
    assert (splits_per_recording == 1).all(), splits_per_recording[splits_per_recording > 1]
    assert (metadata["source"] != metadata["noise_source"]).all()


def test_a_recording_given_twice_is_refused_instead_of_split_apart(sounds, tmp_path):
    """A noise folder given twice put the same noise file into train and test; a copy under another name did too."""
    noise = [str(AUDIO / "noise"), str(AUDIO / "noise")]
    with pytest.raises(SpeechDetectionDataError, match=r"noise1\.wav is listed twice among the noise recordings "
                                                        r"\(--noise_dir .*noise and --noise_dir .*noise\)"):
        build_speech_detection([str(AUDIO / "speech")], [str(sounds)], tmp_path / "a", noise_dirs=noise,
                               durations_ms=(400,), snrs_db=(5,), log=lambda message: None)
    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / "renamed.wav").write_bytes((AUDIO / "speech" / "spk1_snt1.wav").read_bytes())
    with pytest.raises(SpeechDetectionDataError, match=r"spk1_snt1\.wav and .*renamed\.wav \(speech and non-speech "
                                                        r"recordings\) hold the same audio"):
        build_speech_detection([str(AUDIO / "speech"), str(copies)], [str(sounds)], tmp_path / "b",
                               durations_ms=(400,), snrs_db=(5,), log=lambda message: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_noise_that_copies_a_source_stays_in_the_sources_split(sounds, tmp_path):
    copies = tmp_path / "noise-copies"
    copies.mkdir()
    for index, path in enumerate(sorted(AUDIO.glob("noise/*.wav"))):
        (copies / f"copy-{index}.wav").write_bytes(path.read_bytes())
    metadata = build_speech_detection([str(AUDIO / "speech")], [str(sounds), str(AUDIO / "noise")], tmp_path / "out",
                                      noise_dirs=[str(copies)], durations_ms=(400,), snrs_db=(5,),
                                      clips_per_condition=10, seed=3, log=lambda message: None)
    source_split = metadata.drop_duplicates("source").set_index("source")["split"]
    checked = 0
    for index, path in enumerate(sorted(AUDIO.glob("noise/*.wav"))):
        used = set(metadata.loc[metadata["noise_source"] == str(copies / f"copy-{index}.wav"), "split"])
        if str(path) in source_split and used:  # the copy mixed only into clips of its original's split
            assert used == {source_split[str(path)]}, (path, used)
            checked += 1
    assert checked >= 2


def test_a_silent_noise_file_is_named_with_the_reason(sounds, tmp_path):
    noise = tmp_path / "noise"
    for index in range(2):
        write_tone(noise / f"hum-{index}.wav", 2.0, 60 + 10 * index)
    sf.write(noise / "zeros.wav", np.zeros(2 * SAMPLING_RATE), SAMPLING_RATE)
    with pytest.raises(SpeechDetectionDataError, match=r"--noise_dir .*zeros\.wav: digital silence"):
        build_speech_detection([str(AUDIO / "speech")], [str(sounds)], tmp_path / "out", noise_dirs=[str(noise)],
                               durations_ms=(400,), snrs_db=(5,), log=lambda message: None)


def sounds_name(built) -> str:
    return next(name for name in built[1]["dataset"].unique() if name not in ("speech", "noise"))


def categories_per_split(out: Path, label: str = "NONSPEECH") -> dict[str, set[str]]:
    """category -> the splits its recordings went to (summary.json: every recording, used by a clip or not)."""
    summary = json.loads((out / "summary.json").read_text())
    splits_of: dict[str, set[str]] = {}
    for split, categories in summary["categories_per_split"][label].items():
        for category in categories:
            splits_of.setdefault(category, set()).add(split)
    return splits_of


def test_sources_are_split_by_sound_category(built):
    """Categories come from the folder's categories.csv; a category with fewer recordings than splits (the one bell,
    the two knocks) stays in training, each synthetic kind's three recordings go one to each split; a folder
    without a table (noise) is one category."""
    out, metadata = built
    splits_of = categories_per_split(out)
    assert set(splits_of) == {*SYNTHETIC_SOUNDS, "bell", "knock", "noise"}
    assert set(metadata["category"]) <= {*splits_of, "speech"}
    assert categories_per_split(out, "SPEECH") == {"speech": {"train", "validation", "test"}}
    assert splits_of["bell"] == splits_of["knock"] == {"train"}
    for category in (*SYNTHETIC_SOUNDS, "noise"):
        assert splits_of[category] == {"train", "validation", "test"}, category


def test_esc50_categories_come_from_its_metadata(shared_data, tmp_path):
    """ESC-50's esc50.csv names the categories: the one dog and the one car horn stay in training, the three
    thunderstorms go one to each split."""
    audio = shared_data / "audio"
    build_speech_detection([str(audio / "speech")], [str(audio / "esc50"), str(audio / "noise")], tmp_path,
                           durations_ms=(400,), snrs_db=(10,), clips_per_condition=5, seed=7, log=lambda message: None)
    splits_of = categories_per_split(tmp_path)
    assert splits_of["dog"] == splits_of["car_horn"] == {"train"}
    assert splits_of["thunderstorm"] == {"train", "validation", "test"}


def test_clips_have_the_asked_length_rate_and_peak(built):
    out, metadata = built
    for row in metadata.sample(20, random_state=0).itertuples():
        audio, rate = sf.read(out / row.path, dtype="float32")
        assert rate == SAMPLING_RATE and audio.ndim == 1
        assert len(audio) == row.duration_ms * SAMPLING_RATE // 1000
        assert np.max(np.abs(audio)) == pytest.approx(1.0)  # peak-normalised, not RMS-normalised


def test_a_clip_is_the_source_window_plus_noise_at_the_snr_then_peak_normalised():
    rng = np.random.default_rng(0)
    source = np.sin(np.arange(40000) * 0.05).astype(np.float32) * np.linspace(0.1, 1, 40000, dtype=np.float32)
    noise = rng.standard_normal(3200).astype(np.float32)  # as long as the clip: the noise window is all of it
    for snr in (0.0, 7.5, 20.0):
        clip = build_clip(source, 10000, 3200, noise, snr, np.random.default_rng(1))
        signal = source[10000:13200]
        # clip = (signal + gain * noise) / peak: recover both weights by least squares
        (a, b), *_ = np.linalg.lstsq(np.column_stack([signal, noise]), clip, rcond=None)
        assert 10 * np.log10(mean_power(a * signal) / mean_power(b * noise)) == pytest.approx(snr, abs=1e-3)
        assert np.max(np.abs(clip)) == pytest.approx(1.0)


def write_tone(path: Path, seconds: float, frequency: float = 220.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    sf.write(path, 0.5 * np.sin(2 * np.pi * frequency * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), SAMPLING_RATE)


def test_too_short_sources_are_skipped_and_counted(tmp_path):
    for index in range(6):
        write_tone(tmp_path / "speech" / f"long{index}.wav", 1.5, 200 + 50 * index)
        write_tone(tmp_path / "other" / f"n{index}.wav", 2.0, 1000 + 100 * index)
    write_tone(tmp_path / "speech" / "short.wav", 0.3)  # long enough for 200 ms clips, not for 1000 ms ones
    messages = []
    # 7 speech recordings in thirds: 3 / 2 / 2, so the short one never is the only source of its split
    metadata = build_speech_detection([str(tmp_path / "speech")], [str(tmp_path / "other")], tmp_path / "out",
                                      durations_ms=(200, 1000), snrs_db=(5,), clips_per_condition=6,
                                      split_ratios=(1, 1, 1), seed=0, log=messages.append)
    summary = (tmp_path / "out" / "summary.json").read_text()
    short_in_split = metadata[metadata["source"].str.endswith("short.wav")]
    assert (short_in_split["duration_ms"] == 200).all()
    assert '"skipped_source_duration_pairs": 1' in summary
    assert any("skipped 1 (source, duration) pairs" in message and "short.wav" in message for message in messages)


def test_bad_input_gets_a_message_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    for index in range(3):
        write_tone(tmp_path / "speech" / f"s{index}.wav", 0.5, 200 + 50 * index)
        write_tone(tmp_path / "other" / f"n{index}.wav", 2.0, 1000 + 100 * index)
    with pytest.raises(SpeechDetectionDataError, match=rf"--nonspeech_dir {empty}: no audio files found"):
        build_speech_detection([str(tmp_path / "speech")], [str(empty)], tmp_path / "out")
    with pytest.raises(SpeechDetectionDataError, match=r"--speech_dir .*missing: not a folder"):
        build_speech_detection([str(tmp_path / "missing")], [str(tmp_path / "other")], tmp_path / "out")
    with pytest.raises(SpeechDetectionDataError, match=r"no SPEECH recording of the \w+ split has a 1000 ms window"):
        build_speech_detection([str(tmp_path / "speech")], [str(tmp_path / "other")], tmp_path / "out",
                               durations_ms=(1000,), log=lambda message: None)
    (tmp_path / "speech" / "s2.wav").unlink()
    with pytest.raises(SpeechDetectionDataError, match="2 recording.*each of train, validation, test needs its own"):
        build_speech_detection([str(tmp_path / "speech")], [str(tmp_path / "other")], tmp_path / "out")


def test_prepare_data_script_runs_the_builder_and_reports_errors(sounds, tmp_path):
    command = [sys.executable, "scripts/prepare_data.py", "speech_detection", "--speech_dir",
               f"librispeechlike={AUDIO / 'speech'}", "--nonspeech_dir", str(sounds), str(AUDIO / "noise"),
               "--durations_ms", "400", "--snrs_db", "5", "--clips_per_condition", "5", "--output_dir",
               str(tmp_path / "out"), "--seed", "3"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = pd.read_csv(tmp_path / "out" / "metadata.csv")
    assert len(metadata) == 2 * 5 and set(metadata["dataset"]) >= {"librispeechlike"}
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([*command[:4], str(empty), *command[5:], "--overwrite"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and f"--speech_dir {empty}: no audio files found" in bad.stderr


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_failed_rebuild_leaves_the_previous_build_whole(sounds, tmp_path):
    """Rerun into its folder with a setting that fails (a duration longer than every recording), the builder
    changes nothing: it builds beside the folder and swaps the result in only when complete."""
    out = tmp_path / "out"
    base = [sys.executable, "scripts/prepare_data.py", "speech_detection", "--speech_dir", str(AUDIO / "speech"),
            "--nonspeech_dir", str(sounds), str(AUDIO / "noise"), "--snrs_db", "5", "--clips_per_condition", "5",
            "--output_dir", str(out)]
    first = subprocess.run([*base, "--durations_ms", "400"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = folder_bytes(out)
    again = subprocess.run([*base, "--durations_ms", "400"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already holds this build" in again.stdout
    other = subprocess.run([*base, "--durations_ms", "600"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "holds another speech_detection build (other durations_ms)" in other.stderr
    failing = subprocess.run([*base, "--durations_ms", "60000", "--overwrite"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert failing.returncode != 0 and "window of activity" in failing.stderr
    assert folder_bytes(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    replaced = subprocess.run([*base, "--durations_ms", "600", "--overwrite"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert set(pd.read_csv(out / "metadata.csv")["duration_ms"]) == {600}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_a_folder_the_builder_did_not_make_is_never_written(sounds, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        result = subprocess.run(
            [sys.executable, "scripts/prepare_data.py", "speech_detection", "--speech_dir", str(AUDIO / "speech"),
             "--nonspeech_dir", str(sounds), "--durations_ms", "400", "--snrs_db", "5", "--output_dir", str(user),
             *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "was not made by `prepare_data.py speech_detection`" in result.stderr
        assert folder_bytes(user) == {"notes.txt": b"my notes"}
