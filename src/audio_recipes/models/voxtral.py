"""Voxtral (Mistral): what its family spec needs beyond names. Its processor's tokenizer is mistral_common's
(`MistralCommonBackend`), which encodes a chat request itself and renders no chat as text: the processor refuses
text holding the audio token. So prompts and answers are encoded here, through mistral_common, with the clips the
collator has already read. The released model's configuration is in audio_recipes.models.real_shapes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile
import torch


def _mistral_tokenizer(processor: Any):
    """mistral_common's MistralTokenizer inside the processor (or a bare MistralCommonBackend)."""
    backend = getattr(processor, "tokenizer", processor)
    return backend.tokenizer


def _audio_encoder(processor: Any):
    encoder = _mistral_tokenizer(processor).instruct_tokenizer.audio_encoder
    if encoder is None:
        raise ValueError("this Voxtral tokenizer has no audio configuration (tekken.json without an `audio` entry)")
    return encoder


def voxtral_placeholder_count(processor: Any, samples: int) -> int:
    """[AUDIO] tokens of a clip: mistral_common pads it to whole 30 s chunks, 375 tokens each (12.5 Hz)."""
    encoder = _audio_encoder(processor)
    config = encoder.audio_config
    padded = encoder.next_multiple_of_chunk_frames(max(samples, 1), config.sampling_rate)
    return config.num_audio_tokens(padded)


def _wav_bytes(clip: np.ndarray, sampling_rate: int) -> bytes:
    """The clip as float WAV: mistral_common reads audio from bytes; float samples come back bit for bit."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(clip, dtype=np.float32), sampling_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _content_chunks(content: Any, clip: np.ndarray | None, sampling_rate: int) -> list:
    from mistral_common.protocol.instruct.chunk import AudioChunk, TextChunk

    if isinstance(content, str):
        return [TextChunk(text=content)]
    chunks = []
    for part in content:
        if part.get("type") == "audio":
            if clip is None:
                raise ValueError("a message holds an audio part but no clip was given for it")
            chunks.append(AudioChunk(input_audio=_wav_bytes(clip, sampling_rate)))
        elif part.get("type") == "text":
            chunks.append(TextChunk(text=part["text"]))
    return chunks


def system_into_user_turn(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat with its system text leading the user's text (a blank line between), where the user turn holds
    audio: Voxtral's tokenizer refuses a system prompt beside audio (mistral_common allows it from tokenizer v13
    on; Voxtral's is v7). A chat without audio keeps its system turn, as the model's format has it."""
    system = [message["content"] for message in chat if message["role"] == "system"]
    has_audio = any(not isinstance(message["content"], str) and any(part.get("type") == "audio"
                                                                     for part in message["content"])
                    for message in chat if message["role"] == "user")
    if not (system and has_audio):
        return chat
    lead = "\n\n".join(system) + "\n\n"
    folded = []
    for message in chat:
        if message["role"] == "user" and lead:
            parts = list(message["content"])
            texts = [index for index, part in enumerate(parts) if part.get("type") == "text"]
            if texts:
                parts[texts[0]] = {**parts[texts[0]], "text": lead + parts[texts[0]]["text"]}
            else:
                parts.append({"type": "text", "text": lead.rstrip("\n")})
            folded.append({**message, "content": parts})
            lead = ""
        elif message["role"] != "system":
            folded.append(message)
    return folded


def _request(chat: list[dict[str, Any]], clip: np.ndarray | None, sampling_rate: int):
    from mistral_common.protocol.instruct.messages import SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages = []
    for message in system_into_user_turn(chat):
        if message["role"] == "system":
            messages.append(SystemMessage(content=message["content"]))
        elif message["role"] == "user":
            messages.append(UserMessage(content=_content_chunks(message["content"], clip, sampling_rate)))
        else:
            raise ValueError(f"a prompt holds system and user turns only, got {message['role']!r}")
    return ChatCompletionRequest(messages=messages)


def input_features(processor: Any, clips: Sequence[np.ndarray]) -> torch.Tensor:
    """Log-mel features of padded clips, one row per 30 s chunk, as VoxtralProcessor computes them (its
    `_retrieve_input_features`: Whisper features of each clip, cut into chunks of the encoder's 3000 frames).
    Clips of one length go through the extractor together (the same values, in half the time)."""
    extractor = processor.feature_extractor
    by_length: dict[int, list[int]] = {}
    for index, clip in enumerate(clips):
        by_length.setdefault(len(clip), []).append(index)
    per_clip: dict[int, torch.Tensor] = {}
    for indices in by_length.values():
        features = extractor([clips[index] for index in indices], sampling_rate=extractor.sampling_rate,
                             padding=True, truncation=False, pad_to_multiple_of=extractor.n_samples,
                             return_tensors="pt")["input_features"]
        for index, row in zip(indices, features, strict=True):
            per_clip[index] = row.reshape(extractor.feature_size, -1, extractor.nb_max_frames).transpose(0, 1)
    return torch.cat([per_clip[index] for index in range(len(clips))])


class MistralChatEncoder:
    """Chats -> token ids through mistral_common, as the released Voxtral tokenises them:
    `<s>[SYSTEM_PROMPT]system[/SYSTEM_PROMPT][INST][BEGIN_AUDIO][AUDIO]x375 prompt[/INST]`, the answer then `</s>`."""

    def encode_prompts(self, processor: Any, chats: Sequence[list[dict[str, Any]]],
                       clips: Sequence[np.ndarray | None], *, features: bool = True
                       ) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        mistral = _mistral_tokenizer(processor)
        sampling_rate = processor.feature_extractor.sampling_rate
        prompt_ids, padded = [], []
        for chat, clip in zip(chats, clips, strict=True):
            tokenized = mistral.encode_chat_completion(_request(chat, clip, sampling_rate))
            prompt_ids.append(list(tokenized.tokens))
            padded.extend(audio.audio_array for audio in tokenized.audios)
        if not (features and padded):
            return prompt_ids, {}
        return prompt_ids, {"input_features": input_features(processor, padded)}

    def encode_completion(self, processor: Any, completion: str) -> list[int]:
        tekken = _mistral_tokenizer(processor).instruct_tokenizer.tokenizer
        # as mistral_common encodes an assistant turn: trailing spaces dropped, then </s>
        return tekken.encode(completion.rstrip(" "), bos=False, eos=True)


MISTRAL_CHAT = MistralChatEncoder()
