"""Speech tokens as text, and the vocabulary extension that gives them embedding rows: `<|s_0|>`..`<|s_N-1|>` between `<|speech_start|>` and `<|speech_end|>`.

An answer with speech is its text, a newline, then the speech tokens between the markers:
`Paris.\\n<|speech_start|><|s_12|><|s_7|>...<|speech_end|>`. The ids written here are CosyVoice's own
(0..N-1): the tokenizer places `<|s_i|>` at `offset + i`, offset being the text vocabulary's size.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from audio_recipes.config import ModelArguments

logger = logging.getLogger(__name__)

COSYVOICE_V1_SPEECH_TOKENS = 4096
SPEECH_START = "<|speech_start|>"
SPEECH_END = "<|speech_end|>"
SPEECH_TOKEN_PATTERN = re.compile(r"<\|s_(\d+)\|>")


def speech_token(index: int) -> str:
    return f"<|s_{index}|>"


def speech_vocabulary_tokens(num_speech_tokens: int) -> list[str]:
    """What vocabulary extension adds, in id order: the speech tokens, then the start and end markers."""
    return [speech_token(i) for i in range(num_speech_tokens)] + [SPEECH_START, SPEECH_END]


def speech_answer(text: str, speech_tokens: list[int]) -> str:
    """The assistant turn: the text answer, a newline, the speech tokens between the markers."""
    return f"{text}\n{SPEECH_START}{''.join(speech_token(i) for i in speech_tokens)}{SPEECH_END}"


def parse_speech_answer(output: str) -> dict[str, Any]:
    """Model output -> {text, speech_tokens, valid, error}. Never raises.

    Well formed: text, a newline, the start marker, one or more speech tokens and nothing else, the end
    marker, nothing after it (trailing whitespace aside). A malformed output keeps what could be read
    (the text before the marker, the speech tokens found) with `valid: False` and the reason.
    """
    head, start, rest = output.partition(SPEECH_START)
    text = head[:-1] if head.endswith("\n") else head
    found = [int(match) for match in SPEECH_TOKEN_PATTERN.findall(rest)]
    body, end, tail = rest.partition(SPEECH_END)
    if not start:
        error = "no speech start marker"
    elif not head.endswith("\n"):
        error = "no newline between the text and the speech start marker"
    elif not end:
        error = "no speech end marker"
    elif SPEECH_TOKEN_PATTERN.sub("", body):
        error = "something other than speech tokens between the markers"
    elif not body:
        error = "no speech tokens between the markers"
    elif tail.strip():
        error = "text after the speech end marker"
    else:
        error = None
    prediction: dict[str, Any] = {"text": text.strip(), "speech_tokens": found, "valid": error is None}
    if error:
        prediction["error"] = error
    return prediction


@dataclass(frozen=True)
class SpeechVocabulary:
    """Where the speech tokens sit in a tokenizer: `<|s_i|>` = offset + i, then the two markers."""

    offset: int
    num_speech_tokens: int

    @property
    def start_id(self) -> int:
        return self.offset + self.num_speech_tokens

    @property
    def end_id(self) -> int:
        return self.offset + self.num_speech_tokens + 1

    @property
    def size(self) -> int:
        """Rows the extension adds: the speech tokens and the two markers."""
        return self.num_speech_tokens + 2

    @classmethod
    def of(cls, tokenizer) -> SpeechVocabulary | None:
        """The speech vocabulary of an extended tokenizer; None when it has none. Checks the ids are in order."""
        if not hasattr(tokenizer, "get_added_vocab"):  # mistral_common's tokenizers (Voxtral) take no added tokens
            return None
        added = tokenizer.get_added_vocab()
        if speech_token(0) not in added:
            return None
        offset = added[speech_token(0)]
        count = 0
        while speech_token(count) in added:
            count += 1
        vocabulary = cls(offset, count)
        expected = dict(zip(speech_vocabulary_tokens(count), range(offset, offset + count + 2), strict=True))
        wrong = [token for token, index in expected.items() if added.get(token) != index]
        if wrong:
            raise ValueError(
                f"the tokenizer's speech tokens are not laid out as offset + i then the markers "
                f"(offset {offset}; misplaced or missing: {', '.join(wrong[:5])})"
            )
        return vocabulary


# ----------------------------------------------------------------------------------------------------------
# Vocabulary extension: speech tokens after the text vocabulary

SPEECH_EMBEDDING_INITS = ("mean", "normal", "copy")


def embedding_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The input embedding and the output head; one tensor when they are tied (Qwen3-0.6B)."""
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weights[0]:
        weights.append(output.weight)
    return weights


def extend_speech_vocabulary(
    model: torch.nn.Module, tokenizer, model_args: ModelArguments, seed: int = 0
) -> SpeechVocabulary | None:
    """Add `num_speech_tokens` speech tokens and the two markers after the text vocabulary (offset = the
    tokenizer's size before), resize the embedding and head, and initialise the new rows.

    A tokenizer that already has speech tokens (a trained checkpoint) is kept as it is. Returns where the
    speech tokens sit, or None when the model has none and the recipe asks for none.
    """
    existing = SpeechVocabulary.of(tokenizer)
    if existing is not None:
        if model_args.num_speech_tokens and model_args.num_speech_tokens != existing.num_speech_tokens:
            raise ValueError(
                f"the model already has {existing.num_speech_tokens} speech tokens; the recipe asks for "
                f"{model_args.num_speech_tokens}"
            )
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < existing.offset + existing.size:
            raise ValueError(f"the tokenizer has speech tokens up to id {existing.end_id} but the model only "
                             f"{rows} embedding rows: tokenizer and weights come from different models")
        return existing
    if not model_args.num_speech_tokens:
        return None
    if not hasattr(tokenizer, "add_tokens"):
        raise ValueError(f"num_speech_tokens: this model's tokenizer ({type(tokenizer).__name__}, mistral_common's) "
                         "cannot take added tokens")
    if model_args.speech_embedding_init not in SPEECH_EMBEDDING_INITS:
        raise ValueError(f"unknown speech_embedding_init {model_args.speech_embedding_init!r}; expected one of "
                         f"{', '.join(SPEECH_EMBEDDING_INITS)}")
    if model_args.speech_embedding_init == "copy" and not model_args.speech_embedding_source:
        raise ValueError("speech_embedding_init 'copy' needs speech_embedding_source (the model to copy from)")

    from tokenizers import AddedToken

    offset = len(tokenizer)
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False)
                          for token in speech_vocabulary_tokens(model_args.num_speech_tokens)])
    vocabulary = SpeechVocabulary.of(tokenizer)
    if vocabulary is None or vocabulary.offset != offset:
        raise RuntimeError(f"speech tokens were not placed after the text vocabulary (offset {offset})")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # Rounded up as the checkpoints round theirs, for efficient matrix shapes
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    new_rows = slice(offset, len(tokenizer))
    if model_args.speech_embedding_init == "copy":
        copy_speech_rows(model, vocabulary, model_args.speech_embedding_source)
    else:
        generator = torch.Generator().manual_seed(seed)
        for weight in embedding_weights(model):
            with torch.no_grad():
                weight[new_rows] = initial_rows(weight[:offset], new_rows.stop - offset, model_args, generator,
                                                getattr(model.config, "initializer_range", 0.02))
    logger.info("added %d speech tokens and 2 markers at ids %d..%d (%s init)", vocabulary.num_speech_tokens,
                offset, vocabulary.end_id, model_args.speech_embedding_init)
    return vocabulary


def initial_rows(text_rows: torch.Tensor, count: int, model_args: ModelArguments, generator: torch.Generator,
                 initializer_range: float) -> torch.Tensor:
    """'mean': the text rows' mean plus noise (a fraction of their std); 'normal': N(0, initializer_range)."""
    text = text_rows.detach().float().cpu()
    noise = torch.randn(count, text.shape[1], generator=generator)
    if model_args.speech_embedding_init == "mean":
        rows = text.mean(dim=0) + noise * (model_args.speech_embedding_noise * text.std())
    else:
        rows = noise * initializer_range
    return rows.to(device=text_rows.device, dtype=text_rows.dtype)


def copy_speech_rows(model: torch.nn.Module, vocabulary: SpeechVocabulary, source: str) -> None:
    """Warm start: the speech rows of another model that has the same speech tokens (matched by token)."""
    source_tokenizer = AutoTokenizer.from_pretrained(source)
    source_vocabulary = SpeechVocabulary.of(source_tokenizer)
    if source_vocabulary is None or source_vocabulary.num_speech_tokens < vocabulary.num_speech_tokens:
        found = 0 if source_vocabulary is None else source_vocabulary.num_speech_tokens
        raise ValueError(f"speech_embedding_source {source} has {found} speech tokens; "
                         f"{vocabulary.num_speech_tokens} are needed")
    source_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
    source_ids = list(range(source_vocabulary.offset, source_vocabulary.offset + vocabulary.num_speech_tokens))
    source_ids += [source_vocabulary.start_id, source_vocabulary.end_id]
    targets, sources = embedding_weights(model), embedding_weights(source_model)
    if len(targets) != len(sources):
        raise ValueError(f"cannot copy speech rows from {source}: one model ties its embedding and output head, "
                         "the other does not")
    for target, rows in zip(targets, sources, strict=True):
        if target.shape[1] != rows.shape[1]:
            raise ValueError(f"cannot copy speech rows from {source}: hidden size {rows.shape[1]}, "
                             f"not {target.shape[1]}")
        with torch.no_grad():
            target[vocabulary.offset:vocabulary.end_id + 1] = rows[source_ids].to(target.dtype)


class TextEmbeddingRowsFreezer(TrainerCallback):
    """Keep rows [0, offset) of the input embedding and output head bit-identical during training.

    The rows share one tensor with the trained speech rows, so `requires_grad` cannot tell them apart: a
    gradient hook zeroes their gradient, and since AdamW's weight decay (and momentum, with other
    optimisers) moves a row whose gradient is zero, the saved rows are written back after each step.
    """

    def __init__(self, model: torch.nn.Module, offset: int):
        self.offset = offset
        self.weights = embedding_weights(model)
        self.saved: list[torch.Tensor] = []
        for weight in self.weights:
            if not weight.requires_grad:
                raise ValueError("freeze_text_embeddings: the embedding is frozen, so the speech rows cannot train")
            weight.register_hook(self.mask_text_rows)

    def mask_text_rows(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.offset] = 0
        return grad

    def on_train_begin(self, args, state, control, **kwargs):
        # Saved here, not at construction: by now the trainer has placed the model on its device
        self.saved = [weight.detach()[: self.offset].clone() for weight in self.weights]

    def on_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for weight, saved in zip(self.weights, self.saved, strict=True):
                weight[: self.offset] = saved
