"""Speech detection clips: SPEECH / NONSPEECH, in a balanced factorial design (class x duration x SNR).

    scripts/prepare_data.py speech_detection --speech_dir DIR... --nonspeech_dir DIR... \
        --durations_ms 200 400 600 800 1000 --snrs_db 0 5 10 15 20 --output_dir OUT [--seed S]

Every recording is assigned to one split (train / validation / test), so no source appears in two. Within each
class, recordings are spread over the splits by sound category: the `category` where a folder holds ESC-50's
metadata (esc50.csv, beside the clips or in meta/) or a categories.csv (filename, category), else the dataset name. A category with fewer
recordings than there are splits stays in training (a test split should hold unseen recordings, not unseen kinds
of sound). Each
clip is a window of a source recording in which the source is active (not a pause), mixed with a window
of a noise recording of the same split at the SNR (signal power over noise power, over the clip), then
peak-normalised (not RMS-normalised, so the SNR cue survives). Every (class, duration, SNR) cell gets the
same number of clips in each split. A DIR may be written NAME=DIR to name its `dataset` column.

Writes OUT/clips/<split>/<segment_id>.wav (16 kHz mono), OUT/metadata.csv (last, atomically) and
OUT/summary.json (counts, skipped sources).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from audio_recipes.audio import load_audio, mix_at_snr, peak_normalize
from audio_recipes.errors import InputError
from audio_recipes.io import OutputFolderError, build_folder_atomically, read_text

SAMPLING_RATE = 16000
LABELS = ("SPEECH", "NONSPEECH")
SPLIT_NAMES = ("train", "validation", "test")
METADATA = "metadata.csv"
AUDIO_SUFFIXES = tuple(f".{name.lower()}" for name in sf.available_formats()) + (".oga",)
FRAME_SECONDS = 0.01
ACTIVE_FLOOR_DB = -35.0  # a 10 ms frame is active within 35 dB of the recording's loud frames
MIN_ACTIVE_SHARE = 0.5  # a window is usable when at least half of its frames are active


class SpeechDetectionDataError(InputError, ValueError):
    """Input the builder cannot use; the message names the folder or file."""


@dataclass
class Recording:
    path: Path
    dataset: str
    duration_s: float
    active: np.ndarray = field(repr=False)  # one bool per 10 ms frame
    category: str = ""  # the kind of sound (ESC-50's category), or the dataset name
    fingerprint: str = ""  # a hash of the decoded audio: one recording under two names is one recording
    option: str = ""  # the option that gave it (--speech_dir, --nonspeech_dir, --noise_dir)

    @property
    def source(self) -> str:
        return str(self.path)


def parse_dir_argument(value: str) -> tuple[str, Path]:
    """`NAME=DIR` or `DIR` (the dataset named after the folder)."""
    name, sep, path = value.partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return Path(value).resolve().name, Path(value)


def find_audio_files(directory: Path, option: str) -> list[Path]:
    if not directory.is_dir():
        raise SpeechDetectionDataError(f"{option} {directory}: not a folder")
    files = sorted(path for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SpeechDetectionDataError(
            f"{option} {directory}: no audio files found (looked for {', '.join(sorted(set(AUDIO_SUFFIXES))[:8])}...)"
        )
    return files


def active_frames(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Frames whose RMS is within ACTIVE_FLOOR_DB of the recording's 95th-percentile frame RMS."""
    frame = int(FRAME_SECONDS * sampling_rate)
    count = len(audio) // frame
    if count == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(np.square(audio[: count * frame].reshape(count, frame), dtype=np.float64), axis=1))
    loud = np.quantile(rms, 0.95)
    if loud == 0:
        return np.zeros(count, dtype=bool)
    return rms >= loud * 10 ** (ACTIVE_FLOOR_DB / 20)


def window_activity(recording: Recording, duration_ms: int) -> np.ndarray:
    """Active frames in each window of `duration_ms`, by start frame (empty when the recording is shorter)."""
    frames = round(duration_ms / 1000 / FRAME_SECONDS)
    if len(recording.active) < frames:
        return np.zeros(0, dtype=int)
    return np.convolve(recording.active.astype(np.int32), np.ones(frames, dtype=np.int32), mode="valid")


def usable_starts(recording: Recording, duration_ms: int) -> np.ndarray:
    """Start frames of windows of `duration_ms` with at least MIN_ACTIVE_SHARE active frames."""
    return np.flatnonzero(window_activity(recording, duration_ms) >= MIN_ACTIVE_SHARE * duration_ms / 1000 / FRAME_SECONDS)


@lru_cache(maxsize=32)
def read_16k(path: str) -> np.ndarray:
    return load_audio(path, SAMPLING_RATE, max_seconds=None)


def folder_categories(directory: Path) -> dict[str, str]:
    """File name -> category from a table in the folder with `filename` and `category` columns: ESC-50's metadata
    (esc50.csv, or meta/esc50.csv) or a categories.csv of your own, if there."""
    for table in (directory / "esc50.csv", directory / "meta" / "esc50.csv", directory / "categories.csv"):
        if table.is_file():
            metadata = pd.read_csv(io.StringIO(read_text(table)))
            if {"filename", "category"} <= set(metadata.columns):
                return dict(zip(metadata["filename"], metadata["category"], strict=True))
    return {}


def scan(files: list[Path], dataset: str, categories: dict[str, str] | None = None, option: str = "") -> list[Recording]:
    recordings = []
    for path in files:
        audio = read_16k(str(path))
        category = (categories or {}).get(path.name, dataset)
        fingerprint = hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest()
        recordings.append(Recording(path, dataset, len(audio) / SAMPLING_RATE, active_frames(audio), category,
                                    fingerprint, option))
    return recordings


def refuse_repeated_recordings(recordings: list[Recording], what: str) -> None:
    """No recording twice among `what` (one file reached through two folders, or a copy under another name): its
    copies would be split apart, the same sound in training and test."""
    seen: dict[str, Recording] = {}
    for recording in recordings:
        first = seen.setdefault(recording.fingerprint, recording)
        if first is recording:
            continue
        if first.path.resolve() == recording.path.resolve():
            raise SpeechDetectionDataError(
                f"{recording.path} is listed twice among the {what} ({first.option} {first.path.parent} and "
                f"{recording.option} {recording.path.parent}): a recording given twice can land in two splits; "
                "give each folder once")
        raise SpeechDetectionDataError(
            f"{first.path} and {recording.path} ({what}) hold the same audio: copies can land in two splits, the same "
            "sound in training and test; remove one")


def assign_splits(
    recordings: list[Recording], ratios: Sequence[float], rng: np.random.Generator, what: str
) -> dict[str, list[Recording]]:
    """Whole recordings to splits, in proportion to `ratios` within each category, each split getting at least
    one; a category with fewer recordings than splits goes to training."""
    if len(recordings) < len(SPLIT_NAMES):
        raise SpeechDetectionDataError(
            f"{what}: {len(recordings)} recording(s), but each of {', '.join(SPLIT_NAMES)} needs its own source "
            f"(no recording may appear in two splits): give at least {len(SPLIT_NAMES)}"
        )
    categories: dict[str, list[Recording]] = {}
    for recording in recordings:
        categories.setdefault(recording.category, []).append(recording)
    splits: dict[str, list[Recording]] = {name: [] for name in SPLIT_NAMES}
    for members in categories.values():
        if len(members) < len(SPLIT_NAMES):
            splits["train"] += members
            continue
        for name, share in split_recordings(members, ratios, rng).items():
            splits[name] += share
    if any(not members for members in splits.values()):
        # Every category too small to split: spread the recordings themselves
        splits = split_recordings(recordings, ratios, rng)
    return splits


def split_recordings(
    recordings: list[Recording], ratios: Sequence[float], rng: np.random.Generator
) -> dict[str, list[Recording]]:
    order = [recordings[i] for i in rng.permutation(len(recordings))]
    total = sum(ratios)
    counts = [max(1, math.floor(len(order) * ratio / total)) for ratio in ratios[1:]]
    counts = [len(order) - sum(counts), *counts]
    if counts[0] < 1:
        raise SpeechDetectionDataError(f"{len(order)} recordings are too few for the split ratios {list(ratios)}")
    splits, start = {}, 0
    for name, count in zip(SPLIT_NAMES, counts, strict=True):
        splits[name] = order[start:start + count]
        start += count
    return splits


@dataclass
class BuildReport:
    clips: int = 0
    skipped: Counter = field(default_factory=Counter)  # (source, duration_ms) pairs with no usable window
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, recording: Recording, duration_ms: int) -> None:
        self.skipped[duration_ms] += 1
        if len(self.skipped_examples) < 10:
            self.skipped_examples.append(
                f"{recording.path} ({recording.duration_s:.2f} s) has no {duration_ms} ms window of activity"
            )


def cell_count(clips_per_condition: int, ratios: Sequence[float]) -> dict[str, int]:
    total = sum(ratios)
    counts = {name: max(1, round(clips_per_condition * ratio / total)) for name, ratio in zip(SPLIT_NAMES, ratios,
                                                                                             strict=True)}
    return counts


def build_clip(
    source: np.ndarray, start: int, num_samples: int, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """A window of the source, mixed with noise at snr_db over the window, peak-normalised."""
    signal = source[start:start + num_samples]
    return peak_normalize(mix_at_snr(signal, noise, snr_db, rng))


def build_speech_detection(
    speech_dirs: Sequence[str], nonspeech_dirs: Sequence[str], output_dir: str | Path, *,
    durations_ms: Sequence[int] = (200, 400, 600, 800, 1000), snrs_db: Sequence[float] = (0, 5, 10, 15, 20),
    noise_dirs: Sequence[str] = (), clips_per_condition: int = 10, split_ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0, log=print,
) -> pd.DataFrame:
    """Build the clips and metadata; returns the metadata table."""
    if len(split_ratios) != len(SPLIT_NAMES) or min(split_ratios) <= 0:
        raise SpeechDetectionDataError(f"split_ratios must be three positive numbers, got {list(split_ratios)}")
    if not durations_ms or min(durations_ms) <= 0:
        raise SpeechDetectionDataError(f"durations_ms must be positive, got {list(durations_ms)}")
    rng = np.random.default_rng(seed)
    output_dir = Path(output_dir)

    def scan_dirs(dirs: Sequence[str], option: str) -> list[Recording]:
        recordings = []
        for value in dirs:
            dataset, directory = parse_dir_argument(value)
            recordings += scan(find_audio_files(directory, option), dataset, folder_categories(directory), option)
        return recordings

    pools = {"SPEECH": scan_dirs(speech_dirs, "--speech_dir"), "NONSPEECH": scan_dirs(nonspeech_dirs, "--nonspeech_dir")}
    overlap = {r.path.resolve() for r in pools["SPEECH"]} & {r.path.resolve() for r in pools["NONSPEECH"]}
    if overlap:
        raise SpeechDetectionDataError(f"{len(overlap)} file(s) given as both speech and non-speech, e.g. {min(overlap)}")
    refuse_repeated_recordings(pools["SPEECH"] + pools["NONSPEECH"], "speech and non-speech recordings")
    splits = {label: assign_splits(pools[label], split_ratios, rng, f"{label.lower()} recordings") for label in LABELS}

    # Noise comes from the same split as the clip, so no recording reaches two splits through the noise either: a
    # noise recording that is also a source (by its audio, whatever its name) goes to the source's split
    split_of = {r.fingerprint: name for label in LABELS for name, rs in splits[label].items() for r in rs}
    if noise_dirs:
        noise = scan_dirs(noise_dirs, "--noise_dir")
        for recording in noise:
            if not recording.active.any():  # mix_at_snr would fail later with a bare "noise is silent"
                raise SpeechDetectionDataError(
                    f"--noise_dir {recording.path}: digital silence (no sound in 95 % or more of its 10 ms frames): "
                    "no gain brings silence to an SNR; remove it")
        refuse_repeated_recordings(noise, "noise recordings")
        fresh = [r for r in noise if r.fingerprint not in split_of]
        fresh_splits = assign_splits(fresh, split_ratios, rng, "noise recordings") if fresh else {}
        noise_pools = {name: [r for r in noise if split_of.get(r.fingerprint) == name] + fresh_splits.get(name, [])
                       for name in SPLIT_NAMES}
    else:
        # a silent non-speech recording (never a source: no window of activity) is no noise either
        noise_pools = {name: [r for r in splits["NONSPEECH"][name] if r.active.any()] for name in SPLIT_NAMES}

    counts = cell_count(clips_per_condition, split_ratios)
    report = BuildReport()
    rows = []
    for split in SPLIT_NAMES:
        for label in LABELS:
            for duration_ms in durations_ms:
                usable = []
                for recording in splits[label][split]:
                    starts = usable_starts(recording, duration_ms)
                    if len(starts):
                        usable.append((recording, starts))
                    else:
                        report.skip(recording, duration_ms)
                if not usable:
                    longest = max(r.duration_s for r in splits[label][split])
                    raise SpeechDetectionDataError(
                        f"no {label} recording of the {split} split has a {duration_ms} ms window of activity "
                        f"(longest: {longest:.2f} s): give longer recordings or shorter durations"
                    )
                for snr_db in snrs_db:
                    first = int(rng.integers(len(usable)))  # round robin from a random source: sources used evenly
                    for index in range(counts[split]):
                        recording, starts = usable[(first + index) % len(usable)]
                        rows.append(write_clip(output_dir, split, label, duration_ms, float(snr_db), index,
                                               recording, starts, noise_pools[split], rng))
    report.clips = len(rows)
    metadata = pd.DataFrame(rows)
    tmp = output_dir / (METADATA + ".tmp")
    metadata.to_csv(tmp, index=False)
    os.replace(tmp, output_dir / METADATA)
    summary = {
        "clips": report.clips, "clips_per_split": metadata["split"].value_counts().to_dict(),
        "clips_per_cell_and_split": counts, "durations_ms": list(durations_ms), "snrs_db": list(snrs_db),
        "sources_per_split": {label: {name: len(rs) for name, rs in splits[label].items()} for label in LABELS},
        "categories_per_split": {label: {name: sorted({r.category for r in rs}) for name, rs in splits[label].items()}
                                 for label in LABELS},
        "skipped_source_duration_pairs": sum(report.skipped.values()),
        "skipped_by_duration_ms": dict(report.skipped), "skipped_examples": report.skipped_examples, "seed": seed,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if report.skipped:
        log(f"skipped {sum(report.skipped.values())} (source, duration) pairs with no window of activity that long, "
            f"e.g. {report.skipped_examples[0]}")
    log(f"wrote {report.clips} clips")
    return metadata


def write_clip(
    output_dir: Path, split: str, label: str, duration_ms: int, snr_db: float, index: int,
    recording: Recording, starts: np.ndarray, noise_pool: list[Recording], rng: np.random.Generator,
) -> dict:
    num_samples = round(duration_ms * SAMPLING_RATE / 1000)
    start = int(rng.choice(starts)) * int(FRAME_SECONDS * SAMPLING_RATE)
    others = [r for r in noise_pool if r.path != recording.path] or noise_pool
    if not others:
        raise SpeechDetectionDataError(f"the {split} split has no noise recording to mix with")
    # A window where the noise is active: ESC-50 clips can be digital silence between events
    active = [(r, starts) for r in others if len(starts := usable_starts(r, duration_ms))]
    if active:
        noise_recording, noise_starts = active[int(rng.integers(len(active)))]
        noise_start = int(rng.choice(noise_starts)) * int(FRAME_SECONDS * SAMPLING_RATE)
        noise = read_16k(str(noise_recording.path))[noise_start:noise_start + num_samples]
    else:  # no window half active: the most active window (or, shorter than the clip, the whole noise, looped)
        noise_recording = others[int(rng.integers(len(others)))]
        noise = read_16k(str(noise_recording.path))
        activity = window_activity(noise_recording, duration_ms)
        if len(activity):
            noise_start = int(np.argmax(activity)) * int(FRAME_SECONDS * SAMPLING_RATE)
            noise = noise[noise_start:noise_start + num_samples]
    clip = build_clip(read_16k(str(recording.path)), start, num_samples, noise, snr_db, rng)
    condition = f"{duration_ms}ms_{snr_db:g}dB"
    segment_id = f"{split}-{label.lower()}-{condition}-{index:03d}"
    path = Path("clips") / split / f"{segment_id}.wav"
    (output_dir / path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(output_dir / path, clip, SAMPLING_RATE, subtype="FLOAT")
    return {
        "segment_id": segment_id, "path": str(path), "label": label, "duration_ms": duration_ms, "snr_db": snr_db,
        "condition": condition, "source": recording.source, "start_s": start / SAMPLING_RATE,
        "dataset": recording.dataset, "category": recording.category, "noise_source": noise_recording.source,
        "split": split,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prepare_data.py speech_detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech_dir", nargs="+", required=True, help="Folders of speech recordings ([NAME=]DIR).")
    parser.add_argument("--nonspeech_dir", nargs="+", required=True,
                        help="Folders of non-speech recordings: environmental sounds, noise, music ([NAME=]DIR).")
    parser.add_argument("--noise_dir", nargs="*", default=[],
                        help="Folders of noise to mix in; default: the non-speech recordings of the same split.")
    parser.add_argument("--durations_ms", nargs="+", type=int, default=[200, 400, 600, 800, 1000])
    parser.add_argument("--snrs_db", nargs="+", type=float, default=[0, 5, 10, 15, 20])
    parser.add_argument("--clips_per_condition", type=int, default=10,
                        help="Clips per (class, duration, SNR) cell over all splits, shared by --split_ratios.")
    parser.add_argument("--split_ratios", nargs=3, type=float, default=[0.6, 0.2, 0.2],
                        help="train, validation, test shares of the recordings and of each cell's clips.")
    parser.add_argument("--output_dir", required=True,
                        help="A new folder, or one this builder made: built beside it and swapped in when complete.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace a build with other settings in --output_dir (a folder it did not make never is).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = {key: value for key, value in vars(args).items() if key not in ("output_dir", "overwrite")}
    for key in ("speech_dir", "nonspeech_dir", "noise_dir"):  # where the recordings are, not how they are named
        settings[key] = [f"{name}={Path(path).resolve()}" for name, path in map(parse_dir_argument, settings[key])]

    def build(staging: Path) -> None:
        build_speech_detection(
            args.speech_dir, args.nonspeech_dir, staging, durations_ms=args.durations_ms,
            snrs_db=args.snrs_db, noise_dirs=args.noise_dir, clips_per_condition=args.clips_per_condition,
            split_ratios=args.split_ratios, seed=args.seed,
        )

    try:
        built = build_folder_atomically(args.output_dir, "speech_detection", settings, args.overwrite, build)
    except (SpeechDetectionDataError, OutputFolderError) as error:
        raise SystemExit(f"prepare_data.py speech_detection: {error}") from error
    print(f"{args.output_dir}: " + ("built (clips/, metadata.csv, summary.json)" if built
                                    else "already holds this build (same settings): nothing to do"))
