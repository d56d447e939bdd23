"""Small local data sets for the tiny recipes, built on first use.

Everything comes from what the repository carries (assets/, licences in assets/README.md) or is synthesised, so
the data is the same on every machine. SLURP: real annotations (assets/slurp), with speech synthesised by
espeak-ng for each sentence's chosen recording. Multiple choice and speech detection: the speech and noise
recordings in assets/audio and synthetic non-speech sounds.
Speech tokens: synthetic questions and answers with token sequences derived from the answer's words,
in the source schema a user converts (question, answer, speech_tokens), through the same converter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, write_jsonl_atomic
from audio_recipes.paths import ASSETS_DIR
from audio_recipes.registry import Registry
from audio_recipes.tasks import Task
from audio_recipes.testing.speech_synthesis import synthesize_speech

logger = logging.getLogger(__name__)

TINY_SLURP_SIZES = {"train": 200, "devel": 40, "test": 100}
COMPLETE_MARKER = ".complete"


def tiny_slurp_splits() -> dict[str, list[dict[str, Any]]]:
    """train and devel from the SLURP devel rows the repository carries (disjoint sentences), test from its test
    rows: real annotations, unchanged (assets/slurp, CC BY 4.0)."""
    devel = read_jsonl(ASSETS_DIR / "slurp" / "devel.jsonl")
    test = read_jsonl(ASSETS_DIR / "slurp" / "test.jsonl")
    train_size = TINY_SLURP_SIZES["train"]
    return {"train": devel[:train_size], "devel": devel[train_size:train_size + TINY_SLURP_SIZES["devel"]],
            "test": test[: TINY_SLURP_SIZES["test"]]}


MARKER_TEXT = "built by audio_recipes.testing.tiny_data\n"
# The marker of folders built before the tiny data moved to audio_recipes.testing: still ours to rebuild
EARLIER_MARKER_TEXTS = ("built by audio_recipes.tiny_data\n",)


def owned_by_project(folder: Path) -> bool:
    """A folder this project built (it carries the marker it writes last): the only kind it may replace."""
    marker = Path(folder) / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().startswith((MARKER_TEXT, *EARLIER_MARKER_TEXTS))


def build_once(output_dir: Path, write: Callable[[Path], None], version: int = 1) -> Path:
    """Run `write(staging_dir)` and move the result to output_dir: atomic, and a no-op once complete (a folder
    built by an older `version` of the builder is built again). Never replaces a folder it did not build."""
    output_dir = Path(output_dir)
    marker = MARKER_TEXT + (f"version {version}\n" if version > 1 else "")
    if (output_dir / COMPLETE_MARKER).is_file() and (output_dir / COMPLETE_MARKER).read_text() == marker:
        return output_dir
    if output_dir.exists() and not owned_by_project(output_dir):
        raise DataError(f"{output_dir} exists and was not built by audio-recipes (no {COMPLETE_MARKER} in it): "
                        "the tiny data is built only into a new folder or one it built before")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        # A builder's report (prepare_data prints its stats) goes to stderr: stdout is the calling script's result
        with contextlib.redirect_stdout(sys.stderr):
            write(staging)
        (staging / COMPLETE_MARKER).write_text(marker)
        if output_dir.exists():
            shutil.rmtree(output_dir)  # an older build of ours (checked above)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def build_tiny_data_if_missing(task: Task) -> None:
    """The entry from production code (audio_recipes.pipelines.data): the task's tiny data built where a recipe with
    `build_data_if_missing: true` names data paths that are missing."""
    if task.name not in TINY_DATA:
        raise DataError(f"task {task.name} has no tiny data set: build_data_if_missing cannot be used with it")
    builder = TINY_DATA.get(task.name)
    build_missing_data(task.name, lambda folder: builder(folder, task.args), task.named_data_paths())


def build_missing_data(task: str, builder: Callable[[Path], Path], named: dict[str, str]) -> None:
    """Build a task's tiny data set where the recipe's data paths (`named`: option -> path) are missing.

    It is built into the folder of the first data file, and only where that folder is new or was built by this
    project before; afterwards every named path must exist. Anything else is an error naming the missing paths:
    the project never writes into, or deletes, a folder of the user's.
    """
    files = [Path(path) for key, path in named.items() if key != "audio_dir"]
    if not files:
        raise DataError(f"task {task}: build_data_if_missing needs the recipe's data files (train_file, ...)")
    folder = files[0].parent
    missing = {key: path for key, path in named.items() if not Path(path).exists()}
    owned = owned_by_project(folder)
    if not missing and not owned:
        return  # the user's own data
    listed = "; ".join(f"{key} {path}" for key, path in missing.items())
    if missing and folder.exists() and not owned:
        raise DataError(f"not found: {listed}. build_data_if_missing builds the tiny {task} data only into a folder "
                        f"it owns, and {folder} was not built by audio-recipes: nothing was written there. Correct "
                        "the path, or name a new folder for the tiny data")
    outside = [f"{key} {path}" for key, path in missing.items()
               if folder.resolve() != Path(path).resolve() and folder.resolve() not in Path(path).resolve().parents]
    if outside:
        raise DataError(f"not found: {'; '.join(outside)} (outside {folder}, where the tiny {task} data would be "
                        "built): correct the path")
    if not folder.exists():
        logger.warning("building the tiny %s data into %s (build_data_if_missing)", task, folder)
    builder(folder)
    still_missing = [f"{key} {path}" for key, path in named.items() if not Path(path).exists()]
    if still_missing:
        raise DataError(f"not found: {'; '.join(still_missing)}; the tiny {task} data in {folder} holds "
                        f"{', '.join(sorted(p.name for p in folder.iterdir() if not p.name.startswith('.')))}")


def build_tiny_slurp(output_dir: Path) -> Path:
    """train/devel/test.jsonl and audio/ in SLURP's schema, speech synthesised for the lowest-WER recording."""

    def write(staging: Path) -> None:
        for split, rows in tiny_slurp_splits().items():
            kept = []
            for row in rows:
                # Only the lowest-WER recording is synthesised, so it is the only one listed
                recording = min(row["recordings"], key=lambda r: r.get("wer", 0.0))
                synthesize_speech(row["sentence"], staging / "audio" / recording["file"])
                kept.append({**row, "recordings": [recording]})
            write_jsonl_atomic(staging / f"{split}.jsonl", kept)

    return build_once(output_dir, write, version=2)  # 2: four scenarios (assets/README.md says why)


# Words an ASR system confuses, for the tiny n-best lists (each way round)
_CONFUSIONS = [("to", "two"), ("for", "four"), ("the", "a"), ("me", "my"), ("light", "lights"), ("on", "and"),
               ("set", "sit"), ("play", "pay"), ("wake", "make"), ("weather", "whether"), ("off", "of"),
               ("alarm", "a alarm"), ("in", "and"), ("at", "add"), ("song", "son"), ("music", "muse it")]
TINY_NBEST_SIZE = 4


def tiny_nbest(sentence: str, seed: int) -> list[str]:
    """A made-up ASR n-best list of `sentence`: the sentence and variants with a word confused, dropped or
    repeated, the sentence itself not always first (the audio tells which is right)."""
    rng = random.Random(seed)
    words = sentence.split()
    confusions = dict(_CONFUSIONS) | {b: a for a, b in _CONFUSIONS}
    variants: list[str] = []
    for _ in range(20):
        changed = list(words)
        position = rng.randrange(len(changed))
        kind = rng.choice(("confuse", "drop", "repeat")) if len(changed) > 1 else "repeat"
        if kind == "confuse" and changed[position].lower() in confusions:
            changed[position] = confusions[changed[position].lower()]
        elif kind == "drop":
            del changed[position]
        else:
            changed.insert(position, changed[position])
        variant = " ".join(changed)
        if variant != sentence and variant not in variants:
            variants.append(variant)
        if len(variants) == TINY_NBEST_SIZE - 1:
            break
    candidates = variants[:TINY_NBEST_SIZE - 1]
    candidates.insert(rng.randrange(min(2, len(candidates)) + 1), sentence)
    return candidates


def tiny_rationale(label: dict[str, Any]) -> str:
    """A short rationale written from the gold label, as a teacher shown the label would write one."""
    entities = "; ".join(f"'{entity['filler']}' is the {entity['type'].replace('_', ' ')}" for entity in label["entities"])
    return (f"The command is about {label['scenario']} and asks to {label['action'].replace('_', ' ')}. "
            + (f"{entities[0].upper()}{entities[1:]}." if entities else "It names no entities."))


def build_tiny_slurp_rationale(output_dir: Path) -> Path:
    """train/devel/test.jsonl rows for slurp_rationale (filename, candidates, final, rationale_text) and audio/,
    from the tiny SLURP data (built beside it): real annotations, espeak-ng speech, made-up n-best lists and
    rationales written from the gold labels (prepare_data.py slurp_nbest and slurp_rationale write real ones)."""
    from audio_recipes.metrics.slu import slurp_gold_entities

    slurp = build_tiny_slurp(Path(output_dir).parent / "slurp")

    def write(staging: Path) -> None:
        (staging / "audio").mkdir()
        for split in TINY_SLURP_SIZES:
            rows = []
            for row in read_jsonl(slurp / f"{split}.jsonl"):
                recording = row["recordings"][0]["file"]
                shutil.copyfile(slurp / "audio" / recording, staging / "audio" / recording)
                label = {"scenario": row["scenario"], "action": row["action"], "entities": slurp_gold_entities(row)}
                rows.append({"slurp_id": row["slurp_id"], "filename": recording, "sentence": row["sentence"],
                             "candidates": tiny_nbest(row["sentence"], seed=int(row["slurp_id"])), "final": label,
                             "rationale_text": tiny_rationale(label)})
            write_jsonl_atomic(staging / f"{split}.jsonl", rows)

    return build_once(output_dir, write)


# A fixture in Speech-MASSIVE's schema (fr-FR): (annot_utt, intent_str)
FIXTURE_MASSIVE_FR = [
    ("réveille-moi à [time : sept heures]", "alarm_set"),
    ("mets une alarme pour [time : huit heures du matin]", "alarm_set"),
    ("supprime l'alarme de [time : six heures]", "alarm_remove"),
    ("quelles alarmes sont programmées", "alarm_query"),
    ("monte le son", "audio_volume_up"),
    ("coupe le son", "audio_volume_mute"),
    ("joue [song_name : la vie en rose] de [artist_name : édith piaf]", "play_music"),
    ("mets de la musique [music_genre : jazz]", "play_music"),
    ("quel temps fait-il à [place_name : paris]", "weather_query"),
    ("va-t-il pleuvoir [date : demain]", "weather_query"),
    ("éteins les lumières de la [house_place : cuisine]", "iot_hue_lightoff"),
    ("baisse la lumière dans la [house_place : chambre]", "iot_hue_lightdim"),
    ("rappelle-moi la [event_name : réunion] de [date : vendredi]", "calendar_set"),
    ("qu'est-ce que j'ai prévu [date : aujourd'hui]", "calendar_query"),
    ("raconte-moi une blague", "general_joke"),
    ("quelle heure est-il à [place_name : londres]", "datetime_query"),
    ("envoie un courriel à [person : marie]", "email_sendemail"),
    ("commande une [food_type : pizza]", "takeaway_order"),
    ("quelles sont les nouvelles [date : aujourd'hui]", "news_query"),
    ("que veut dire [definition_word : bonjour]", "qa_definition"),
    ("allume les lumières du [house_place : salon]", "iot_hue_lighton"),
    ("mets une alarme à [time : midi]", "alarm_set"),
    ("baisse le volume", "audio_volume_down"),
    ("fera-t-il beau à [place_name : lyon] [date : ce week-end]", "weather_query"),
]


def build_tiny_speech_massive(output_dir: Path, locale: str = "fr-FR") -> Path:
    """train_115/validation/test.jsonl and audio/ in Speech-MASSIVE's schema, speech synthesised."""
    from audio_recipes.tasks.slu_format import strip_annotation

    def write(staging: Path) -> None:
        rows = []
        for index, (annotation, intent) in enumerate(FIXTURE_MASSIVE_FR):
            utterance = strip_annotation(annotation)
            path = f"{locale}-{index:04d}.wav"
            synthesize_speech(utterance, staging / "audio" / path, voice=locale.split("-")[0].lower())
            rows.append({"id": str(index), "locale": locale, "scenario_str": intent.partition("_")[0],
                         "intent_str": intent, "utt": utterance, "annot_utt": annotation, "path": path})
        splits = {"train_115": rows[:16], "validation": rows[16:20], "test": rows[20:]}
        for split, split_rows in splits.items():
            write_jsonl_atomic(staging / f"{split}.jsonl", [{**row, "partition": split} for row in split_rows])

    return build_once(output_dir, write)


# Non-speech sounds synthesised for the tiny data (the repository may not carry ESC-50's NC-licensed clips):
# category -> what can be heard, as a choice of the multiple-choice items
SYNTHETIC_SOUNDS = {
    "tone": "A steady tone",
    "siren": "A siren",
    "clicks": "Clicking",
    "hum": "An engine hum",
    "chirps": "Bird-like chirps",
    "chords": "Musical chords",
}
SYNTHETIC_SOUND_SECONDS = 5.0
SYNTHETIC_SOUNDS_PER_CATEGORY = 3  # one for each split of the speech detection data
SAMPLING_RATE = 16000


def synthetic_sound(category: str, seed: int, seconds: float = SYNTHETIC_SOUND_SECONDS) -> Any:
    """A few seconds of a non-speech sound of `category` (SYNTHETIC_SOUNDS), varied by seed; float32 at 16 kHz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE

    def harmonics(frequency, count: int):  # frequency: a number or a per-sample array (Hz)
        phase = 2 * np.pi * np.cumsum(np.broadcast_to(frequency, time.shape)) / SAMPLING_RATE
        return sum(np.sin(k * phase) / k for k in range(1, count + 1))

    if category == "tone":
        base = rng.uniform(150, 600)
        sound = harmonics(base * (1 + 0.005 * np.sin(2 * np.pi * 5 * time)), int(rng.integers(2, 5)))
    elif category == "siren":
        low, high, rate = rng.uniform(500, 800), rng.uniform(1000, 1600), rng.uniform(0.4, 1.5)
        sound = harmonics(low + (high - low) * (0.5 + 0.5 * np.sin(2 * np.pi * rate * time)), 2)
    elif category == "clicks":
        sound = np.zeros_like(time)
        decay = np.exp(-np.arange(int(0.01 * SAMPLING_RATE)) / (0.002 * SAMPLING_RATE))
        ring = decay * np.sin(2 * np.pi * rng.uniform(1500, 3500) * np.arange(len(decay)) / SAMPLING_RATE)
        position, period = 0, rng.uniform(0.03, 0.06)
        while position + len(ring) < len(time):
            sound[position:position + len(ring)] += ring * rng.uniform(0.6, 1.0)
            position += int(period * SAMPLING_RATE * rng.uniform(0.8, 1.2))
    elif category == "hum":
        base = rng.uniform(40, 90)
        sound = harmonics(base, 12) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 8) * time))
        sound += 0.2 * np.convolve(rng.standard_normal(len(time)), np.ones(32) / 32, mode="same")
    elif category == "chirps":
        sound = np.zeros_like(time)
        position = 0
        while position < len(time):
            length = int(rng.uniform(0.05, 0.12) * SAMPLING_RATE)
            start, stop = rng.uniform(2500, 4000), rng.uniform(4000, 6500)
            chirp_time = np.arange(min(length, len(time) - position)) / SAMPLING_RATE
            frequency = start + (stop - start) * chirp_time / (length / SAMPLING_RATE)
            envelope = np.sin(np.pi * chirp_time / (length / SAMPLING_RATE))
            phase = 2 * np.pi * np.cumsum(frequency) / SAMPLING_RATE
            sound[position:position + len(chirp_time)] += envelope * np.sin(phase)
            position += length + int(rng.uniform(0.01, 0.04) * SAMPLING_RATE)
    elif category == "chords":
        sound = np.zeros_like(time)
        step = int(rng.uniform(0.3, 0.6) * SAMPLING_RATE)
        for position in range(0, len(time), step):
            root = 220 * 2 ** (int(rng.integers(0, 12)) / 12)
            part = time[position:position + step] - time[position]
            envelope = np.exp(-part * rng.uniform(1, 4))
            sound[position:position + step] = envelope * sum(np.sin(2 * np.pi * root * ratio * part)
                                                             for ratio in (1, 1.26, 1.5))
    else:
        raise ValueError(f"unknown synthetic sound {category!r}; expected one of {', '.join(SYNTHETIC_SOUNDS)}")
    sound = sound + 0.01 * rng.standard_normal(len(time))  # a recording's floor: never digital silence
    return (0.8 * sound / np.max(np.abs(sound))).astype("float32")


def write_synthetic_sounds(folder: Path) -> Path:
    """SYNTHETIC_SOUNDS_PER_CATEGORY wav files per category and `categories.csv` (filename, category), the table
    the speech detection builder reads to spread each kind of sound over the splits."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filename,category"]
    for number, category in enumerate(SYNTHETIC_SOUNDS):
        for index in range(SYNTHETIC_SOUNDS_PER_CATEGORY):
            name = f"{category}-{index}.wav"
            sf.write(folder / name, synthetic_sound(category, seed=100 * number + index), SAMPLING_RATE,
                     subtype="PCM_16")
            lines.append(f"{name},{category}")
    (folder / "categories.csv").write_text("\n".join(lines) + "\n")
    return folder


CHOICE_QUESTION = "What can be heard in this recording?"
CLIP_SECONDS = 2.0
CLIPS_PER_LABEL = 30


def _choice_recordings(scratch: Path) -> list[tuple[str, str, list[Path]]]:
    """(label, MMAR modality, recordings): the speech and noise the repository carries, and synthetic sounds."""
    sounds = write_synthetic_sounds(scratch / "sounds")
    speech = sorted((ASSETS_DIR / "audio" / "speech").glob("*.wav")) + [ASSETS_DIR / "audio/speech/jfk.flac"]
    sources = [("Speech", "speech", speech), ("Noise", "sound", sorted((ASSETS_DIR / "audio/noise").glob("*.wav")))]
    sources += [(label, "music" if category == "chords" else "sound", sorted(sounds.glob(f"{category}-*.wav")))
                for category, label in SYNTHETIC_SOUNDS.items()]
    return sources


def _choice_clips(rng: random.Random, scratch: Path) -> dict[str, list[tuple[str, str, Any]]]:
    """{split: [(label, modality, 2 s clip at 16 kHz)]} cut from the recordings.

    No recording lends clips to both splits: a label's files are split (every third to the test split).
    """
    import numpy as np

    from audio_recipes.audio import load_audio, peak_normalize

    length, hop = int(CLIP_SECONDS * SAMPLING_RATE), int(0.5 * SAMPLING_RATE)
    splits: dict[str, list] = {"train": [], "test": []}
    for label, modality, files in _choice_recordings(scratch):
        candidates: dict[str, list] = {"train": [], "test": []}
        for number, path in enumerate(files):
            audio = load_audio(path, SAMPLING_RATE, max_seconds=None)
            split = "test" if number % 3 == 2 else "train"
            for start in range(0, len(audio) - length + 1, hop):  # overlapping windows: more items per file
                clip = audio[start:start + length]
                if np.abs(clip).max() > 1e-3:
                    candidates[split].append((label, modality, peak_normalize(clip)))
        for split, limit in (("train", CLIPS_PER_LABEL), ("test", CLIPS_PER_LABEL // 2)):
            rng.shuffle(candidates[split])
            splits[split] += candidates[split][:limit]
    for clips in splits.values():
        rng.shuffle(clips)
    return splits


def build_tiny_audio_choice(output_dir: Path) -> Path:
    """Multiple-choice items about recordings in MMAR's schema (`mmar_{train,test}.jsonl`) and MMAU's
    (`mmau_{train,test}.json`), sharing `audio/`. MMAR rows carry thinking / cue / rubric like the real ones."""
    import soundfile as sf

    def write(staging: Path) -> None:
        rng = random.Random(0)
        with tempfile.TemporaryDirectory() as scratch:
            splits = _choice_clips(rng, Path(scratch))
        labels = sorted({label for clips in splits.values() for label, _, _ in clips})
        (staging / "audio").mkdir()
        for split, clips in splits.items():
            mmar, mmau = [], []
            for index, (label, modality, clip) in enumerate(clips):
                name = f"{split}-{index:04d}.wav"
                sf.write(staging / "audio" / name, clip, SAMPLING_RATE, subtype="PCM_16")
                others = rng.sample([other for other in labels if other != label], k=min(3, len(labels) - 1))
                choices = [label, *others]
                rng.shuffle(choices)
                common = {"id": f"tiny-{split}-{index:04d}", "question": CHOICE_QUESTION, "choices": choices,
                          "answer": label}
                mmar.append({**common, "audio_path": f"./audio/{name}", "modality": modality,
                             "category": "Perception Layer", "sub-category": "Content Analysis",
                             "thinking": f"The recording contains {label.lower()}.", "cue": [label],
                             "rubric": [{"name": "Source", "scoring_point": f"Identifies {label.lower()}.",
                                         "note": "", "choices": [0, 1]}]})
                mmau.append({**common, "audio_id": f"./audio/{name}", "task": modality,
                             "category": "Reasoning", "sub-category": "Acoustic Source Inference",
                             "difficulty": "easy", "dataset": "audio-recipes tiny", "split": split})
            write_jsonl_atomic(staging / f"mmar_{split}.jsonl", mmar)
            (staging / f"mmau_{split}.json").write_text(json.dumps(mmau, indent=1))

    return build_once(output_dir, write, version=2)  # 2: the repository's recordings and synthetic sounds


# The tiny speech detection set: every (class, duration, SNR) cell
TINY_SPEECH_DETECTION = {"durations_ms": (200, 400, 600, 800, 1000), "snrs_db": (0, 5, 10, 15, 20),
                         "clips_per_condition": 10, "seed": 0}


def build_tiny_speech_detection(output_dir: Path) -> Path:
    """metadata.csv and clips/ from the speech and noise recordings the repository carries (assets/audio) and
    synthetic non-speech sounds (built beside it, in synthetic_sounds/)."""
    from audio_recipes.tasks.speech_detection.builder import build_speech_detection

    audio = ASSETS_DIR / "audio"

    sounds = build_once(Path(output_dir).parent / "synthetic_sounds", write_synthetic_sounds)

    def write(staging: Path) -> None:
        build_speech_detection([f"speech={audio / 'speech'}"], [f"noise={audio / 'noise'}", f"synthetic={sounds}"],
                               staging, log=logger.info, **TINY_SPEECH_DETECTION)

    return build_once(output_dir, write, version=3)  # 3: the repository's recordings and synthetic sounds


# Speech tokens: synthetic questions and answers, each answer word "pronounced" as a fixed run of token ids
_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty").split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_MONTHS = "january february march april may june july august september october november december".split()
_CAPITALS = [("france", "paris"), ("germany", "berlin"), ("spain", "madrid"), ("italy", "rome"),
             ("japan", "tokyo"), ("china", "beijing"), ("england", "london"), ("ireland", "dublin")]
_OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("open", "closed"), ("light", "dark"),
              ("high", "low"), ("early", "late"), ("happy", "sad"), ("loud", "quiet"), ("wet", "dry"),
              ("old", "young"), ("left", "right"), ("strong", "weak"), ("easy", "hard")]
TINY_SPEECH_TOKEN_SPLITS = {"eval": 0.1, "test": 0.1}


def tiny_questions_and_answers() -> list[tuple[str, str]]:
    pairs = [(f"What is {_NUMBERS[a]} plus {_NUMBERS[b]}?", f"{_NUMBERS[a]} plus {_NUMBERS[b]} is {_NUMBERS[a + b]}.")
             for a in range(11) for b in range(11) if a + b <= 20]
    pairs += [(f"What day comes after {day}?", f"The day after {day} is {_DAYS[(i + 1) % 7]}.")
              for i, day in enumerate(_DAYS)]
    pairs += [(f"What month comes after {month}?", f"The month after {month} is {_MONTHS[(i + 1) % 12]}.")
              for i, month in enumerate(_MONTHS)]
    pairs += [(f"What is the capital of {country}?", f"The capital of {country} is {city}.")
              for country, city in _CAPITALS]
    pairs += [(f"What is the opposite of {a}?", f"The opposite of {a} is {b}.")
              for x, y in _OPPOSITES for a, b in ((x, y), (y, x))]
    pairs += [(f"What number comes after {_NUMBERS[i]}?", f"After {_NUMBERS[i]} comes {_NUMBERS[i + 1]}.")
              for i in range(20)]
    return [(question[0].upper() + question[1:], answer[0].upper() + answer[1:]) for question, answer in pairs]


def word_speech_tokens(word: str, num_speech_tokens: int = 4096) -> list[int]:
    """A fixed 'pronunciation' of a word: 2 + len/3 ids from its hash, so speech follows from the text."""
    import hashlib

    digest = hashlib.sha256(word.lower().strip(".,?!").encode()).digest()
    return [int.from_bytes(digest[2 * i:2 * i + 2], "big") % num_speech_tokens for i in range(2 + len(word) // 3)]


def build_tiny_speech_tokens(output_dir: Path) -> Path:
    """source.parquet (question, answer, speech_tokens) converted by the speech_tokens builder into
    train/eval/test.jsonl, as a user converts real data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audio_recipes.prepare import run_builder

    def write(staging: Path) -> None:
        pairs = tiny_questions_and_answers()
        table = pa.table({
            "question": [question for question, _ in pairs],
            "answer": [answer for _, answer in pairs],
            "speech_tokens": [[t for word in answer.split() for t in word_speech_tokens(word)] for _, answer in pairs],
        })
        pq.write_table(table, staging / "source.parquet")
        run_builder("speech_tokens", [
            "--input", str(staging / "source.parquet"), "--output_file", str(staging / "train.jsonl"),
            "--eval_file", str(staging / "eval.jsonl"), "--eval_ratio", str(TINY_SPEECH_TOKEN_SPLITS["eval"]),
            "--test_file", str(staging / "test.jsonl"), "--test_ratio", str(TINY_SPEECH_TOKEN_SPLITS["test"]),
            "--seed", "0",
        ])

    return build_once(output_dir, write)


# Task name -> builder(folder, the recipe's task options) of its tiny data set
TINY_DATA: Registry[Callable[[Path, TaskArguments], Path]] = Registry("tiny data set")
TINY_DATA.add("slurp", lambda folder, args: build_tiny_slurp(folder))
TINY_DATA.add("slurp_rationale", lambda folder, args: build_tiny_slurp_rationale(folder))
TINY_DATA.add("speech_massive", lambda folder, args: build_tiny_speech_massive(folder, locale=args.locale or "fr-FR"))
TINY_DATA.add("mmar", lambda folder, args: build_tiny_audio_choice(folder))
TINY_DATA.add("mmau", lambda folder, args: build_tiny_audio_choice(folder))
TINY_DATA.add("speech_detection", lambda folder, args: build_tiny_speech_detection(folder))
TINY_DATA.add("speech_tokens", lambda folder, args: build_tiny_speech_tokens(folder))
