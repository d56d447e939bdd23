"""Small local data sets for the tiny recipes, built on first use.

SLURP: real annotations from `../shared/data/slurp` (or a fixture written here when that folder is
absent), with speech synthesised by espeak-ng for each sentence's chosen recording.
Speech tokens: synthetic questions and answers with token sequences derived from the answer's words,
in the source schema a user converts (question, answer, speech_tokens), through the same converter.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audio_recipes.paths import SHARED_DATA_DIR
from audio_recipes.speech_synthesis import synthesize_speech

TINY_SLURP_SIZES = {"train": 200, "devel": 40, "test": 100}
COMPLETE_MARKER = ".complete"

# A fixture in SLURP's schema for machines without ../shared: (sentence annotation, scenario, action)
FIXTURE_SENTENCES = [
    ("wake me up at [time : seven am]", "alarm", "set"),
    ("set an alarm for [time : eight o'clock]", "alarm", "set"),
    ("cancel my [time : six am] alarm", "alarm", "remove"),
    ("what alarms do i have", "alarm", "query"),
    ("turn the volume up", "audio", "volume_up"),
    ("mute the speakers", "audio", "volume_mute"),
    ("play [song_name : yesterday] by [artist_name : the beatles]", "play", "music"),
    ("play some [music_genre : jazz]", "play", "music"),
    ("what is the weather like in [place_name : london]", "weather", "query"),
    ("will it rain [date : tomorrow]", "weather", "query"),
    ("turn off the [house_place : kitchen] lights", "iot", "hue_lightoff"),
    ("dim the lights in the [house_place : bedroom]", "iot", "hue_lightdim"),
    ("remind me about the [event_name : meeting] on [date : friday]", "calendar", "set"),
    ("what is on my calendar [date : today]", "calendar", "query"),
    ("tell me a joke", "general", "joke"),
    ("what time is it in [place_name : paris]", "datetime", "query"),
    ("send an email to [person : john]", "email", "sendemail"),
    ("order a [food_type : pizza] from [business_name : dominos]", "takeaway", "order"),
    ("what is the news [date : today]", "news", "query"),
    ("how do you say [definition_word : hello] in [language : french]", "qa", "definition"),
]


def _fixture_rows() -> list[dict[str, Any]]:
    from audio_recipes.tasks.slu_format import entities_from_annotation, strip_annotation

    rows = []
    for index, (annotation, scenario, action) in enumerate(FIXTURE_SENTENCES):
        sentence = strip_annotation(annotation)
        words = sentence.split()
        entities = []
        for entity in entities_from_annotation(annotation):
            filler = entity["filler"].split()
            start = next(i for i in range(len(words)) if words[i:i + len(filler)] == filler)
            entities.append({"span": list(range(start, start + len(filler))), "type": entity["type"]})
        rows.append({
            "slurp_id": 90000 + index, "sentence": sentence, "sentence_annotation": annotation,
            "intent": f"{scenario}_{action}", "scenario": scenario, "action": action,
            "tokens": [{"surface": word, "id": i, "lemma": word, "pos": "NN"} for i, word in enumerate(words)],
            "entities": entities,
            "recordings": [{"file": f"audio-fixture-{index}.flac", "wer": 0.0, "ent_wer": 0.0, "status": "correct"}],
        })
    return rows


def _select(rows: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    rows = [row for row in rows if row.get("recordings")]
    random.Random(seed).shuffle(rows)
    return rows[:count]


def tiny_slurp_splits() -> dict[str, list[dict[str, Any]]]:
    """train and devel from SLURP's devel set (disjoint sentences), test from its test set."""
    slurp_dir = SHARED_DATA_DIR / "slurp"
    if not (slurp_dir / "devel.jsonl").is_file():
        rows = _fixture_rows()
        return {"train": rows, "devel": rows[:8], "test": rows}
    from audio_recipes.tasks.base import read_jsonl

    devel = _select(read_jsonl(slurp_dir / "devel.jsonl"), TINY_SLURP_SIZES["train"] + TINY_SLURP_SIZES["devel"], 0)
    test = _select(read_jsonl(slurp_dir / "test.jsonl"), TINY_SLURP_SIZES["test"], 0)
    return {"train": devel[: TINY_SLURP_SIZES["train"]], "devel": devel[TINY_SLURP_SIZES["train"]:], "test": test}


def build_once(output_dir: Path, write: Callable[[Path], None], version: int = 1) -> Path:
    """Run `write(staging_dir)` and move the result to output_dir: atomic, and a no-op once complete (a folder
    built by an older `version` of the builder is built again)."""
    output_dir = Path(output_dir)
    marker = "built by audio_recipes.tiny_data\n" + (f"version {version}\n" if version > 1 else "")
    if (output_dir / COMPLETE_MARKER).is_file() and (output_dir / COMPLETE_MARKER).read_text() == marker:
        return output_dir
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        write(staging)
        (staging / COMPLETE_MARKER).write_text(marker)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


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
            write_jsonl(staging / f"{split}.jsonl", kept)

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
            write_jsonl(staging / f"{split}.jsonl", [{**row, "partition": split} for row in split_rows])

    return build_once(output_dir, write)


# Sound sources of the tiny multiple-choice data: (what can be heard, MMAR modality, files under shared/data/audio)
CHOICE_SOURCES = [
    ("Speech", "speech", ["speech/spk1_snt*.wav", "speech/spk2_snt*.wav", "speech/jfk.flac"]),
    ("A dog barking", "sound", ["esc50/1-100032-A-0.wav"]),
    ("A car horn", "sound", ["esc50/2-100648-A-43.wav"]),
    ("A thunderstorm", "sound", ["esc50/*-19.wav"]),
    ("Noise", "sound", ["noise/noise*.wav"]),
]
CHOICE_QUESTION = "What can be heard in this recording?"
CLIP_SECONDS = 2.0
CLIPS_PER_LABEL = 30


def _choice_clips(rng: random.Random) -> dict[str, list[tuple[str, str, Any]]]:
    """{split: [(label, modality, 2 s clip at 16 kHz)]} cut from the real recordings.

    No recording lends clips to both splits: with several files a label's files are split; with one file,
    its start is for training and its end, after a gap, for testing.
    """
    import numpy as np

    from audio_recipes.audio import load_audio, peak_normalize

    length, hop = int(CLIP_SECONDS * 16000), int(0.5 * 16000)
    splits: dict[str, list] = {"train": [], "test": []}
    for label, modality, patterns in CHOICE_SOURCES:
        files = sorted(path for pattern in patterns for path in (SHARED_DATA_DIR / "audio").glob(pattern))
        candidates: dict[str, list] = {"train": [], "test": []}
        for number, path in enumerate(files):
            audio = load_audio(path, 16000, max_seconds=None)
            boundary = int(0.6 * len(audio))
            for start in range(0, len(audio) - length + 1, hop):  # overlapping windows: more items per file
                if len(files) > 1:
                    split = "test" if number % 3 == 2 else "train"
                elif start + length <= boundary:
                    split = "train"
                elif start >= boundary + length:
                    split = "test"
                else:
                    continue
                clip = audio[start:start + length]
                if np.abs(clip).max() > 1e-3:
                    candidates[split].append((label, modality, peak_normalize(clip)))
        for split, limit in (("train", CLIPS_PER_LABEL), ("test", CLIPS_PER_LABEL // 2)):
            rng.shuffle(candidates[split])
            splits[split] += candidates[split][:limit]
    for clips in splits.values():
        rng.shuffle(clips)
    return splits


def _generated_choice_clips(rng: random.Random) -> list[tuple[str, str, Any]]:
    """Without ../shared: espeak speech, tones and noise, so the pipeline still runs on a fresh machine."""
    import numpy as np

    from audio_recipes.audio import load_audio

    time = np.arange(int(CLIP_SECONDS * 16000)) / 16000
    noise = np.random.default_rng(0)
    clips = []
    with tempfile.TemporaryDirectory() as folder:
        for index, (sentence, *_rest) in enumerate(FIXTURE_SENTENCES[:12]):
            path = Path(folder) / f"{index}.wav"
            synthesize_speech(sentence.replace("[", "").replace("]", "").replace(":", ""), path)
            from audio_recipes.audio import crop_or_pad

            clips.append(("Speech", "speech", crop_or_pad(load_audio(path, 16000), len(time))))
    for index in range(12):
        clips.append(("A steady tone", "sound", 0.5 * np.sin(2 * np.pi * (300 + 40 * index) * time)))
        clips.append(("Noise", "sound", 0.3 * noise.standard_normal(len(time))))
    rng.shuffle(clips)
    clips = [(label, modality, clip.astype("float32")) for label, modality, clip in clips]
    cut = int(len(clips) * 0.7)
    return {"train": clips[:cut], "test": clips[cut:]}


def build_tiny_audio_choice(output_dir: Path) -> Path:
    """Multiple-choice items about real recordings in MMAR's schema (`mmar_{train,test}.jsonl`) and MMAU's
    (`mmau_{train,test}.json`), sharing `audio/`. MMAR rows carry thinking / cue / rubric like the real ones."""
    import soundfile as sf

    def write(staging: Path) -> None:
        rng = random.Random(0)
        splits = _choice_clips(rng) if (SHARED_DATA_DIR / "audio").is_dir() else _generated_choice_clips(rng)
        labels = sorted({label for clips in splits.values() for label, _, _ in clips})
        (staging / "audio").mkdir()
        for split, clips in splits.items():
            mmar, mmau = [], []
            for index, (label, modality, clip) in enumerate(clips):
                name = f"{split}-{index:04d}.wav"
                sf.write(staging / "audio" / name, clip, 16000, subtype="PCM_16")
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
            write_jsonl(staging / f"mmar_{split}.jsonl", mmar)
            (staging / f"mmau_{split}.json").write_text(json.dumps(mmau, indent=1))

    return build_once(output_dir, write)


# The tiny speech detection set: the real recordings of ../shared/data/audio, every (class, duration, SNR) cell
TINY_SPEECH_DETECTION = {"durations_ms": (200, 400, 600, 800, 1000), "snrs_db": (0, 5, 10, 15, 20),
                         "clips_per_condition": 10, "seed": 0}


def build_tiny_speech_detection(output_dir: Path) -> Path:
    """metadata.csv and clips/ from the real speech, ESC-50 clips and noise recordings in ../shared/data/audio."""
    from audio_recipes.prepare.speech_detection import build_speech_detection

    audio = SHARED_DATA_DIR / "audio"
    if not (audio / "speech").is_dir():
        raise FileNotFoundError(
            f"the tiny speech detection data is cut from the real recordings in {audio} (absent here); build it "
            "from your own folders with scripts/prepare_data.py speech_detection --speech_dir ... --nonspeech_dir ..."
        )

    def write(staging: Path) -> None:
        build_speech_detection([f"speech={audio / 'speech'}"], [f"esc50={audio / 'esc50'}", f"noise={audio / 'noise'}"],
                               staging, **TINY_SPEECH_DETECTION)

    return build_once(output_dir, write, version=2)  # 2: sources split by sound category


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
