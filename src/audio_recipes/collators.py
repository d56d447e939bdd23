"""Batch audio + chat text through the processor, with labels on the assistant completion only."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from audio_recipes.audio import AudioError, AudioStats, load_audio_batch, read_audio_info
from audio_recipes.audio.window import allow_short_audio_windows, short_window_samples
from audio_recipes.config import TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.models.families import ModelFamily, family_for_processor
from audio_recipes.packing import pack_rows

IGNORE_INDEX = -100
SILENT_CLIP_SECONDS = 1.0


def chat_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    """System (unless empty) and user turns of an example; the audio, if any, comes before the user's text.

    Without audio the user turn is a plain string: text-only chat templates (Qwen3's) render list contents
    as nothing.
    """
    if example.get("audio"):
        user: Any = [{"type": "audio", "audio_url": example["audio"]}, {"type": "text", "text": example["prompt"]}]
    else:
        user = example["prompt"]
    system = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    return [*system, {"role": "user", "content": user}]


@dataclass
class AudioOptions:
    """How clips are read before the processor sees them."""

    max_seconds: float | None = 30.0
    on_too_long: str = "crop"
    peak_normalize: bool = False


@dataclass
class AudioChatCollator:
    """Examples (`id, audio, system, prompt, completion`) -> model inputs.

    Training (`with_completion=True`): prompt then completion then the end-of-turn token; labels are
    -100 everywhere except the completion and its end-of-turn token. Generation: prompts only, no labels.
    Each clip is decoded once per batch; rows without audio may share a batch with rows that have it.
    A text model's tokenizer serves as `processor` for rows without audio.

    `silent_clip_for_text_batches`: a batch with no audio at all gets a 1 s silent clip, its placeholder tokens
    put after the first row's last token (before it with left padding), with attention mask 0 and no labels
    (LLaMA-Factory's fix). The audio encoder then runs on every rank in every step, which ZeRO-3 and FSDP need:
    each module's forward gathers its sharded weights from all ranks. No real token attends to the clip and it
    carries no loss, yet its encoder output stays in the autograd graph (attention weighs it by exactly 0), so a
    trainable encoder gets a zero gradient there, as on ranks with audio.

    `short_audio_window`: a Whisper-style window (Qwen2-Audio's, AF3's) is cut to the batch's longest clip instead
    of 30 s, features and encoder, with the same outputs (see audio_recipes.audio.window).

    `packing` (training only): the batch's examples joined into one row without padding, position ids restarting
    at each example and no attention mask (audio_recipes.packing); the features stay one per clip. The silent clip
    then comes as an example of its own after the others: no real token attends to it, and it carries no loss.
    """

    processor: Any
    with_completion: bool = True
    padding_side: str = "right"
    audio_options: AudioOptions = field(default_factory=AudioOptions)
    family: ModelFamily | None = None
    stats: AudioStats = field(default_factory=AudioStats)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. enable_thinking for Qwen3
    silent_clip_for_text_batches: bool = False
    short_audio_window: bool = True
    packing: bool = False
    silent_clip_batches: int = field(default=0, init=False)  # how many batches got the silent clip
    # Clips read for each batch not yet trained on: the trainer takes one per step (data loaders fetch ahead)
    batch_clips: deque = field(default_factory=deque, init=False, repr=False)
    _silent_clip: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.packing and not self.with_completion:
            raise ValueError("packing is for training batches: generation needs one padded row per prompt")
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if self.family is None:
            self.family = family_for_processor(self.processor)
        self.end_of_turn = self.family.end_of_turn
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (Qwen models pad with <|endoftext|>)")
        feature_extractor = getattr(self.processor, "feature_extractor", None)
        self.sampling_rate = feature_extractor.sampling_rate if feature_extractor is not None else None
        if feature_extractor is not None:
            check_max_seconds(self.audio_options.max_seconds, self.family, self.processor)
        self.short_audio_window = self.short_audio_window and self.family.whisper_window
        if self.short_audio_window:
            allow_short_audio_windows()

    def prompt_texts(self, examples: Sequence[dict[str, Any]]) -> list[str]:
        return [
            self.processor.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True,
                                               **self.chat_template_kwargs)
            for example in examples
        ]

    def encode_prompts(self, examples: Sequence[dict[str, Any]]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Token ids of each prompt (audio placeholders expanded) and the audio features of the batch."""
        texts = self.prompt_texts(examples) if self.family.chat_encoder is None else []
        with_audio = [example for example in examples if example.get("audio")]
        if with_audio and self.sampling_rate is None:
            raise ValueError(f"row {with_audio[0]['id']!r} has audio, but the model has no audio processor "
                             f"({type(self.processor).__name__})")
        audios = load_audio_batch(
            [example["audio"] for example in with_audio],
            self.sampling_rate,
            rows=[example["id"] for example in with_audio],
            max_seconds=self.audio_options.max_seconds,
            on_too_long=self.audio_options.on_too_long,
            peak_normalize=self.audio_options.peak_normalize,
            stats=self.stats,
        )
        for example, audio in zip(with_audio, audios, strict=True):
            self.check_clip_length(example, audio)
        if self.family.chat_encoder is not None:
            clips = iter(audios)
            return self.family.chat_encoder.encode_prompts(
                self.processor, [chat_messages(example) for example in examples],
                [next(clips) if example.get("audio") else None for example in examples])
        if audios and self.family.one_clip_per_text and len(with_audio) < len(examples):
            # Rows with audio through the processor, the others through the tokenizer, back in the batch's order
            has_audio = [bool(example.get("audio")) for example in examples]
            with_clip, audio_inputs = self.encode_texts([t for t, a in zip(texts, has_audio, strict=True) if a], audios)
            without_clip, _ = self.encode_texts([t for t, a in zip(texts, has_audio, strict=True) if not a], [])
            with_clip, without_clip = iter(with_clip), iter(without_clip)
            return [next(with_clip) if a else next(without_clip) for a in has_audio], audio_inputs
        return self.encode_texts(texts, audios)

    def check_clip_length(self, example: dict[str, Any], audio: np.ndarray) -> None:
        """A clip shorter than one STFT window gave Qwen3-Omni's extractor a bare padding error, and the Whisper-style
        families no audio token at all (features with no placeholder): refused, naming the file and row."""
        shortest = getattr(self.processor.feature_extractor, "n_fft", 0)
        if len(audio) < shortest or self.audio_token_count(len(audio)) < 1:
            raise AudioError(example["audio"], f"{len(audio) / self.sampling_rate:.3f} s is too short: expected at "
                             f"least {shortest / self.sampling_rate:g} s (one {shortest}-sample analysis window) "
                             f"for {self.family.name}", row=example["id"])

    def encode_texts(self, texts: list[str], audios: list[np.ndarray]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        if audios:
            # Padding is the text's: a processor that passes `padding` on to its feature extractor (AF3's) would pad
            # the features to the longest clip, which a Whisper-style encoder refuses
            encoded = self.processor(text=texts, audio=audios, sampling_rate=self.sampling_rate,
                                     text_kwargs={"padding": True}, return_tensors="pt", **self.window_kwargs(audios))
        else:
            encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        # Unpad so that prompt and completion are joined without padding between them
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=False)]
        audio_inputs = {key: value for key, value in encoded.items() if key not in ("input_ids", "attention_mask")}
        return prompt_ids, audio_inputs

    def window_kwargs(self, audios: Sequence[np.ndarray]) -> dict[str, Any]:
        if not self.short_audio_window:
            return {}
        extractor = self.processor.feature_extractor
        samples = short_window_samples(max(len(audio) for audio in audios), extractor.hop_length, extractor.n_samples)
        return {"audio_kwargs": {"max_length": samples}}

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        loaded_before = self.stats.loaded
        prompt_ids, audio_inputs = self.encode_prompts(examples)
        if self.with_completion:
            self.batch_clips.append(self.stats.loaded - loaded_before)
        if self.with_completion:
            completion_ids = self.completion_ids([example["completion"] for example in examples])
        else:
            completion_ids = [[] for _ in examples]

        sequences = [prompt + completion for prompt, completion in zip(prompt_ids, completion_ids, strict=False)]
        labels = [[IGNORE_INDEX] * len(prompt) + completion for prompt, completion in zip(prompt_ids, completion_ids, strict=False)]
        attention = [[1] * len(sequence) for sequence in sequences]
        if self.silent_clip_for_text_batches and not audio_inputs:
            clip_ids, audio_inputs = self.silent_clip_inputs()
            self.silent_clip_batches += 1
            if self.packing:  # an example of its own: the packed mask keeps every other token from it
                sequences.append(clip_ids)
                labels.append([IGNORE_INDEX] * len(clip_ids))
            else:  # on the padding side of the first row, masked: no real token attends to it
                before = self.padding_side == "left"
                sequences[0] = attach(sequences[0], clip_ids, before)
                labels[0] = attach(labels[0], [IGNORE_INDEX] * len(clip_ids), before)
                attention[0] = attach(attention[0], [0] * len(clip_ids), before)
        if self.packing:
            audio_inputs.pop("num_audio_tokens", None)
            return {**pack_rows(sequences, labels, self.family.multimodal_rope), **audio_inputs}
        batch = {
            "input_ids": self.pad(sequences, self.tokenizer.pad_token_id),
            "attention_mask": self.pad(attention, 0),
            **audio_inputs,
        }
        if self.with_completion:
            batch["labels"] = self.pad(labels, IGNORE_INDEX)
        batch.pop("num_audio_tokens", None)
        return batch

    def completion_ids(self, completions: Sequence[str]) -> list[list[int]]:
        """Each answer's token ids followed by the end-of-turn token: the tokens that carry loss."""
        if self.family.chat_encoder is not None:
            return [self.family.chat_encoder.encode_completion(self.processor, text) for text in completions]
        texts = [completion + self.end_of_turn for completion in completions]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def example_length(self, example: dict[str, Any]) -> int:
        """Tokens of an example without decoding its audio: text tokens plus the audio placeholders that
        the clip's duration (from the file header) expands to. For length-grouped batching."""
        if self.family.chat_encoder is not None:
            return self.encoded_example_length(example)
        rendered = self.prompt_texts([example])[0] + (example["completion"] + self.end_of_turn
                                                       if self.with_completion else "")
        text = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        audio_tokens = self.audio_token_count(self.header_samples(example)) if example.get("audio") else 0
        # The rendered prompt holds one placeholder per clip, which the processor expands
        return len(text) + max(audio_tokens - 1, 0)

    def encoded_example_length(self, example: dict[str, Any]) -> int:
        """example_length through the family's chat encoder: the prompt encoded with a silent stand-in of the
        clip's length (read from the header, never decoded), no features computed."""
        clip = np.zeros(self.header_samples(example), dtype=np.float32) if example.get("audio") else None
        prompt_ids, _ = self.family.chat_encoder.encode_prompts(self.processor, [chat_messages(example)], [clip],
                                                                features=False)
        answer = self.completion_ids([example["completion"]])[0] if self.with_completion else []
        return len(prompt_ids[0]) + len(answer)

    def header_samples(self, example: dict[str, Any]) -> int:
        """Samples of the example's clip as loaded (resampled, cropped), read from the file's header."""
        info = read_audio_info(example["audio"], row=example["id"])
        samples = round(info.frames * self.sampling_rate / info.samplerate)  # after resampling
        max_seconds = self.audio_options.max_seconds
        return samples if max_seconds is None else min(samples, int(max_seconds * self.sampling_rate))

    def audio_token_count(self, samples: int) -> int:
        """Placeholders a clip of `samples` expands to, by the family's rule."""
        return self.family.placeholder_count(self.processor, samples)

    def silent_clip_inputs(self) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Token ids of a user turn holding a silent clip (placeholders expanded by the processor) and its features."""
        if self._silent_clip is None:
            messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "silence"}]}]
            silence = np.zeros(int(SILENT_CLIP_SECONDS * self.sampling_rate), dtype=np.float32)
            if self.family.chat_encoder is not None:
                clip_ids, features = self.family.chat_encoder.encode_prompts(self.processor, [messages], [silence])
                self._silent_clip = (clip_ids[0], features)
            else:
                text = self.processor.apply_chat_template(messages, tokenize=False)
                encoded = self.processor(text=[text], audio=[silence], sampling_rate=self.sampling_rate,
                                         return_tensors="pt", **self.window_kwargs([silence]))
                features = {key: value for key, value in encoded.items()
                            if key not in ("input_ids", "attention_mask", "num_audio_tokens")}
                self._silent_clip = (encoded["input_ids"][0].tolist(), features)
        clip_ids, features = self._silent_clip
        return list(clip_ids), {key: value.clone() for key, value in features.items()}

    def pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        longest = max(len(row) for row in rows)
        if self.padding_side == "right":
            padded = [row + [value] * (longest - len(row)) for row in rows]
        else:
            padded = [[value] * (longest - len(row)) + row for row in rows]
        return torch.tensor(padded, dtype=torch.long)


def check_max_seconds(max_seconds: float | None, family: ModelFamily, processor: Any) -> None:
    """A max_audio_seconds past what the family's processor keeps would have longer clips cut there silently,
    uncounted and unwarned: refused, naming the limit."""
    longest = family.longest_clip(processor)
    if longest is not None and (max_seconds is None or max_seconds > longest):
        raise RecipeError(
            f"max_audio_seconds={max_seconds} is longer than the {longest:g} s of a clip that {family.name}'s "
            f"processor keeps (it would cut longer clips to {longest:g} s without a warning); expected at most "
            f"{longest:g}: longer clips are then cropped with a warning and counted, or refused with "
            f"on_too_long: reject")


def attach(row: list[int], extra: list[int], before: bool) -> list[int]:
    return extra + row if before else row + extra


def audio_options(task_args: TaskArguments) -> AudioOptions:
    return AudioOptions(task_args.max_audio_seconds, task_args.on_too_long, task_args.peak_normalize)


def build_collator(processor, task_args: TaskArguments, *, with_completion: bool, padding_side: str = "right",
                   silent_clip_for_text_batches: bool = False, packing: bool = False) -> AudioChatCollator:
    """The collator a recipe asks for (its audio options and chat template switches): the one way the pipelines
    build one, so that training, sampling and evaluation render the same template."""
    template_kwargs = {} if task_args.enable_thinking is None else {"enable_thinking": task_args.enable_thinking}
    return AudioChatCollator(processor, with_completion=with_completion, padding_side=padding_side,
                             audio_options=audio_options(task_args), chat_template_kwargs=template_kwargs,
                             silent_clip_for_text_batches=silent_clip_for_text_batches, packing=packing)
