"""Decoding: batched generation with left padding, label scoring and constrained decoding, continuation
log-likelihoods; outputs written as they come, resumable, sharded across processes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from audio_recipes.collators import AudioChatCollator
from audio_recipes.errors import InputError
from audio_recipes.io import write_jsonl_atomic
from audio_recipes.tasks.base import Example, Task

RAW_OUTPUTS = "raw_outputs.jsonl"
DECODING_MODES = ("generate", "scoring", "constrained")


class LabelTokenError(InputError, ValueError):
    """Label answers that the tokenizer cannot tell apart by their first token."""


def shard_file(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / (RAW_OUTPUTS if world_size == 1 else f"raw_outputs.rank{rank}-of-{world_size}.jsonl")


def read_finished(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already written; a line cut short by an interruption is dropped and its item redone."""
    finished: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return finished
    with path.open("rb") as handle:  # bytes: a line cut inside a character is not UTF-8, and is dropped too
        for line in handle:
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(row, dict) and "id" in row:
                finished[row["id"]] = row
    return finished


def rewrite_clean(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Drop a torn last line before appending again, so that the file stays valid JSON lines."""
    write_jsonl_atomic(path, rows.values())


def batches(items: Sequence[Example], size: int) -> Iterator[list[Example]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def model_inputs(model, collator: AudioChatCollator, examples: list[Example]) -> dict[str, torch.Tensor]:
    """The left-padded prompt batch on the model's device, floating inputs in the model's dtype."""
    inputs = collator([example.to_row() for example in examples])
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    return {
        key: value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        for key, value in inputs.items()
    }


@contextmanager
def last_position_logits(model) -> Iterator[None]:
    """The output head runs on the last position only, which is all that generation and label scoring read.

    Qwen2-Audio's forward has no `logits_to_keep`: its head otherwise runs over every prompt position, batch x
    prompt x vocabulary (for the 7B's 156k vocabulary and 16 prompts of 200 tokens, 2 GB of float32 logits).
    """
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][:, -1:], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def item_seed(*parts: Any) -> int:
    """A seed from its parts (e.g. run seed, iteration, item id): the same in every run and on every machine."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # torch seeds are below 2**63


class SeededRowSampler(LogitsProcessor):
    """A logits processor that samples each row's next token from that row's own generator, then leaves only that
    token allowed (generate runs greedy after it). An item's samples depend on its seed alone, not on the batch it
    falls in nor on the items generated before it: a resumed run draws what an uninterrupted one drew.

    Temperature and top-p are applied here; the model's other processors (repetition penalty, suppressed tokens)
    run before it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}")
        self.seeds, self.temperature, self.top_p = list(seeds), temperature, top_p
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(self.seeds) != scores.shape[0]:
            raise ValueError(f"{len(self.seeds)} seeds for a batch of {scores.shape[0]} rows")
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(seed) for seed in self.seeds]
        warped = scores.float() / self.temperature
        if self.top_p < 1.0:
            warped = TopPLogitsWarper(self.top_p)(input_ids, warped)
        probabilities = torch.softmax(warped, dim=-1)
        chosen = torch.cat([torch.multinomial(row, 1, generator=generator)
                            for row, generator in zip(probabilities, self.generators, strict=True)])
        only_chosen = torch.full_like(scores, float("-inf"))
        return only_chosen.scatter_(1, chosen[:, None], 0.0)


def seeded_sampling_kwargs(generation_kwargs: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """generate() arguments that sample with the kwargs' temperature and top_p, each row from its own seed."""
    sampler = SeededRowSampler(seeds, generation_kwargs.get("temperature") or 1.0,
                               generation_kwargs.get("top_p") or 1.0)
    return {**generation_kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
            "logits_processor": LogitsProcessorList([sampler])}


@torch.no_grad()
def generate_batch(model, collator: AudioChatCollator, examples: list[Example], seeds: Sequence[int] | None = None,
                   **generation_kwargs) -> list[str]:
    """Decoded new text of each example's answer, special tokens removed. With `seeds` (one per example), sampled
    with each example's own seed (SeededRowSampler)."""
    if seeds is not None:
        generation_kwargs = seeded_sampling_kwargs(generation_kwargs, seeds)
    inputs = model_inputs(model, collator, examples)
    with last_position_logits(model):
        output = model.generate(**inputs, **generation_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return collator.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def label_token_ids(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    """Each label's token ids (as the collator tokenises a completion); their first tokens must all differ."""
    sequences = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
    firsts: dict[int, str] = {}
    for label, ids in zip(labels, sequences, strict=True):
        if not ids:
            raise LabelTokenError(f"label {label!r} encodes to no tokens")
        if ids[0] in firsts:
            token = tokenizer.convert_ids_to_tokens(ids[0])
            raise LabelTokenError(
                f"labels {firsts[ids[0]]!r} and {label!r} begin with the same token {token!r} (id {ids[0]}) in this "
                "tokenizer: scoring and constrained decoding tell labels apart by their first token; use labels "
                "whose first tokens differ (single letters such as A / B)"
            )
        firsts[ids[0]] = label
    return sequences


def label_distribution(logits: torch.Tensor, first_ids: list[int]) -> torch.Tensor:
    """Softmax over the labels' first-token logits only."""
    return torch.softmax(logits[first_ids].float(), dim=-1)


def _choice_output(labels: list[str], probabilities: torch.Tensor) -> dict[str, Any]:
    best = int(probabilities.argmax())
    return {"raw_output": labels[best], "confidence": float(probabilities[best]),
            "label_probabilities": {label: float(p) for label, p in zip(labels, probabilities, strict=True)}}


@torch.no_grad()
def score_labels_batch(model, collator: AudioChatCollator, examples: list[Example],
                       choices: list[list[str]]) -> list[dict[str, Any]]:
    """One forward pass on the prompts; each item's label is the argmax of a softmax over its labels' first tokens."""
    inputs = model_inputs(model, collator, examples)
    with last_position_logits(model):
        # Left padding: the last position is every prompt's end; no cache, as nothing follows
        last_logits = model(**inputs, use_cache=False).logits[:, -1, :]
    outputs = []
    for row, labels in enumerate(choices):
        first_ids = [ids[0] for ids in label_token_ids(collator.tokenizer, labels)]
        outputs.append(_choice_output(labels, label_distribution(last_logits[row], first_ids)))
    return outputs


def allowed_label_tokens(label_ids: list[list[int]], generated: list[int], end_ids: list[int]) -> list[int]:
    """Tokens that keep `generated` on the way to one of the labels; once a label is complete, the end tokens."""
    allowed = {ids[len(generated)] for ids in label_ids if len(ids) > len(generated) and ids[:len(generated)] == generated}
    if any(ids == generated for ids in label_ids):
        allowed.update(end_ids)
    return sorted(allowed) or list(end_ids)


@torch.no_grad()
def constrained_generate_batch(model, collator: AudioChatCollator, examples: list[Example],
                               choices: list[list[str]], **generation_kwargs) -> list[dict[str, Any]]:
    """Greedy decoding restricted to each item's label token sequences, then an end-of-turn token."""
    inputs = model_inputs(model, collator, examples)
    prompt_length = inputs["input_ids"].shape[1]
    tokenizer = collator.tokenizer
    label_ids = [label_token_ids(tokenizer, labels) for labels in choices]
    end_ids = [tokenizer.convert_tokens_to_ids(collator.end_of_turn)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in end_ids:
        end_ids.append(tokenizer.eos_token_id)

    def allowed(batch_index: int, input_ids: torch.Tensor) -> list[int]:
        return allowed_label_tokens(label_ids[batch_index], input_ids[prompt_length:].tolist(), end_ids)

    # The ranking of the labels must be the model's own: no sampling and no repetition penalty (the letters
    # appear in the prompt, and the penalty would change their scores)
    kwargs = {**generation_kwargs, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0,
              "temperature": None, "top_p": None, "top_k": None,
              "max_new_tokens": max(len(ids) for row in label_ids for ids in row) + 1,
              "prefix_allowed_tokens_fn": allowed, "output_scores": True, "return_dict_in_generate": True,
              "eos_token_id": end_ids}
    with last_position_logits(model):
        output = model.generate(**inputs, **kwargs)
    texts = tokenizer.batch_decode(output.sequences[:, prompt_length:], skip_special_tokens=True)
    outputs = []
    for row, labels in enumerate(choices):
        first_ids = [ids[0] for ids in label_ids[row]]
        probabilities = label_distribution(output.scores[0][row], first_ids)
        outputs.append({**_choice_output(labels, probabilities), "raw_output": texts[row]})
    return outputs


def decode_batch(model, collator: AudioChatCollator, task: Task | None, examples: list[Example], decoding: str,
                 generation_kwargs: dict[str, Any], seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Each item's output under a decoding mode: `raw_output`, and for label decodings `confidence`."""
    if decoding == "generate":
        texts = generate_batch(model, collator, examples, seeds=seeds, **generation_kwargs)
        return [{"raw_output": text} for text in texts]
    if seeds is not None:
        raise ValueError(f"seeded sampling is a way to generate; decoding {decoding!r} samples nothing")
    choices = [task.choices(example) if task is not None else None for example in examples]
    if any(labels is None for labels in choices):
        owner = f"task {task.name} has none" if task is not None else "this run has no task"
        raise ValueError(f"decoding {decoding!r} needs labels to choose from, and {owner}: use --decoding generate")
    if decoding == "scoring":
        return score_labels_batch(model, collator, examples, choices)
    if decoding == "constrained":
        return constrained_generate_batch(model, collator, examples, choices, **generation_kwargs)
    raise ValueError(f"unknown decoding {decoding!r}; expected one of {', '.join(DECODING_MODES)}")


def start_output(output_path: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """Ready `output_path` for appending: with `resume`, the rows an interrupted run wrote (its torn last line
    dropped); otherwise none, and the old file removed."""
    finished = read_finished(output_path) if resume else {}
    if resume:
        rewrite_clean(output_path, finished)
    elif output_path.exists():
        output_path.unlink()
    return finished


def append_in_batches(
    output_path: Path, items: Sequence[Any], *, item_id: Callable[[Any], str], resume: bool, batch_size: int,
    process: Callable[[list[Any]], list[dict[str, Any]]], log_every: int = 10, what: str = "items",
) -> dict[str, dict[str, Any]]:
    """The resumable loop of every long run that writes a row per item: the items not yet in output_path, batch by
    batch through `process` (one row per item, in order), each row appended with its `id` and synced to disk before
    the next batch. Returns every row by id, earlier runs' included."""
    finished = start_output(output_path, resume)
    todo = [item for item in items if item_id(item) not in finished]
    with output_path.open("a", encoding="utf-8") as handle:
        for number, batch in enumerate(batches(todo, batch_size), start=1):
            for item, row in zip(batch, process(batch), strict=True):
                row = {"id": item_id(item), **row}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                finished[row["id"]] = row
            handle.flush()
            os.fsync(handle.fileno())
            if number % log_every == 0:
                print(f"done {len(finished)} / {len(items)} {what}", flush=True)
    return finished


def run_generation(
    model, collator: AudioChatCollator, task: Task | None, examples: Sequence[Example], output_path: Path,
    *, batch_size: int, resume: bool, generation_kwargs: dict[str, Any], log_every: int = 10,
    decoding: str = "generate", sample_seed: Callable[[Example], int] | None = None,
    parse: Callable[[Example, str], dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Decode each example not yet in output_path, appending one JSON line per item as it comes.

    `latency_ms` is the batch's wall time over its size (with batch size 1, each item's own latency).
    `sample_seed`: sample (temperature and top_p from generation_kwargs) each example from its own seed, so that a
    resumed run writes the samples an uninterrupted one would have. `parse`: output text -> prediction, by default
    the task's (a run without a task, such as writing rationales, gives its own).
    """
    parse = parse or task.parse_for_item

    def decode(batch: list[Example]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        seeds = [sample_seed(example) for example in batch] if sample_seed is not None else None
        outputs = decode_batch(model, collator, task, batch, decoding, generation_kwargs, seeds)
        latency_ms = 1000 * (time.perf_counter() - started) / len(batch)
        return [{**output, "prediction": parse(example, output["raw_output"]), "latency_ms": latency_ms}
                for example, output in zip(batch, outputs, strict=True)]

    return append_in_batches(output_path, examples, item_id=lambda example: example.id, resume=resume,
                             batch_size=batch_size, process=decode, log_every=log_every, what="items generated")


def merge_shards(output_dir: Path, world_size: int, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Every item once, in the examples' order; a missing item is an error, not a silent gap."""
    rows: dict[str, dict[str, Any]] = {}
    for rank in range(world_size):
        rows.update(read_finished(shard_file(output_dir, rank, world_size)))
    missing = [example.id for example in examples if example.id not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no output after generation (first: {missing[:5]})")
    merged = [rows[example.id] for example in examples]
    write_jsonl_atomic(output_dir / RAW_OUTPUTS, merged)
    return merged


# ----------------------------------------------------------------------------------------------------------
# Log-likelihood of continuations given a context, by lm-eval's rule (`lm_eval.api.model.LM._encode_pair`
# and `HFLM._loglikelihood_tokens`): trailing spaces of the context move to the continuation; context +
# continuation are encoded together and the continuation is what follows the context's own encoding; the
# score is the sum of the continuation tokens' log-probabilities.


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation, split as lm-eval splits them."""
    if not context:
        raise ValueError("the context of a log-likelihood request cannot be empty")
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def continuation_loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]],
                                batch_size: int = 8) -> list[float]:
    """Sum of log-probabilities of each continuation after its context, in the requests' order."""
    encoded = [encode_pair(tokenizer, context, continuation) for context, continuation in requests]
    # Longest first, so that a batch's padding is small and memory trouble shows at once
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    device = next(model.parameters()).device
    scores: list[float] = [0.0] * len(encoded)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        inputs = [(encoded[i][0] + encoded[i][1])[:-1] for i in indices]
        longest = max(len(row) for row in inputs)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([row + [pad] * (longest - len(row)) for row in inputs], device=device)
        attention = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in inputs], device=device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        for row, i in enumerate(indices):
            context, continuation = encoded[i]
            positions = torch.arange(len(context) - 1, len(context) - 1 + len(continuation), device=device)
            log_probs = torch.log_softmax(logits[row, positions].float(), dim=-1)
            targets = torch.tensor(continuation, device=device)
            scores[i] = float(log_probs.gather(1, targets[:, None]).sum())
    return scores
