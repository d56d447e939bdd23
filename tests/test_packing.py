"""Padding-free (packed) batches on the tiny Qwen2-Audio and both Omni thinkers: the same per-token losses and
gradients as the padded batch within 1e-5, labels and placeholders exact, and the silent clip still changing
no loss under packing."""

import numpy as np
import pytest
import soundfile as sf
import torch
from trl import SFTConfig

from audio_recipes.collators import IGNORE_INDEX, AudioChatCollator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.models import load_model_and_processor
from audio_recipes.packing import (
    PACKED_SDPA,
    pack_rows,
    packed_lengths,
    packed_position_ids,
    register_packed_sdpa,
    segment_lengths,
)
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

MODELS = ["qwen2-audio", "qwen2.5-omni", "qwen3-omni-moe"]
SYSTEM = "You are a spoken language understanding system."


def test_pack_rows_restarts_positions_and_never_trains_across_examples():
    batch = pack_rows([[5, 6, 7], [8, 9], [10, 11, 12, 13]], [[-100, 6, 7], [8, 9], [-100, -100, 12, 13]])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    # The first label of each example is never a target: the previous example's last token would predict it
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, -100, 12, 13]]
    assert "attention_mask" not in batch
    assert segment_lengths(batch["position_ids"]) == [3, 2, 4]
    rope = packed_position_ids([3, 2], multimodal_rope=True)
    assert rope.shape == (4, 1, 5) and all(row.tolist() == [[0, 1, 2, 0, 1]] for row in rope)
    assert segment_lengths(rope) == [3, 2]
    with pytest.raises(ValueError, match="empty"):
        pack_rows([[1], []])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three clips of different lengths (2 s, 1 s, 0.5 s): the padded batch pads two of them."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for index, seconds in enumerate((2.0, 1.0, 0.5)):
        path = folder / f"clip{index}.wav"
        sf.write(path, 0.1 * rng.standard_normal(int(seconds * 16000)), 16000)
        paths.append(str(path))
    return paths


def rows(clips):
    """Audio rows of three lengths and a text-only row, answers of different lengths."""
    return [
        {"id": "a", "audio": clips[0], "system": SYSTEM, "prompt": "What is said?", "completion": '{"x": "wake me up"}'},
        {"id": "t", "audio": None, "system": SYSTEM, "prompt": "Command: stop the music", "completion": "stop"},
        {"id": "b", "audio": clips[1], "system": SYSTEM, "prompt": "Intent?", "completion": '{"scenario": "alarm"}'},
        {"id": "c", "audio": clips[2], "system": SYSTEM, "prompt": "Say it", "completion": "ok"},
    ]


@pytest.fixture(scope="module", params=MODELS)
def loaded(request):
    model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=str(ensure_tiny_model(
        request.param))))
    return request.param, model.float().eval(), processor


def test_packed_batch_is_the_padded_batch_without_padding(loaded, clips):
    name, model, processor = loaded
    padded = AudioChatCollator(processor)(rows(clips))
    packed = AudioChatCollator(processor, packing=True)(rows(clips))
    lengths = padded["attention_mask"].sum(dim=1).tolist()
    unpadded = [ids[:n].tolist() for ids, n in zip(padded["input_ids"], lengths, strict=True)]
    labels = [row[:n].tolist() for row, n in zip(padded["labels"], lengths, strict=True)]
    assert packed["input_ids"].tolist() == [sum(unpadded, [])]
    assert packed["labels"].tolist() == [sum(labels, [])]  # exact: every example starts with a prompt token
    assert all(row[0] == IGNORE_INDEX for row in labels)
    assert segment_lengths(packed["position_ids"]) == lengths
    assert packed["position_ids"].shape == ((4, 1, sum(lengths)) if name != "qwen2-audio" else (1, sum(lengths)))
    assert "attention_mask" not in packed
    # The same clips' features, one per clip, and the same placeholders, in the same order
    assert {key for key in packed if key.startswith(("input_features", "feature_"))} == {
        "input_features", "feature_attention_mask"}
    assert all(torch.equal(packed[key], padded[key]) for key in ("input_features", "feature_attention_mask"))
    placeholder = model.config.audio_token_id if hasattr(model.config, "audio_token_id") else (
        model.config.audio_token_index)
    assert (packed["input_ids"] == placeholder).sum() == (padded["input_ids"] == placeholder).sum() > 0


def per_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of every trained token (row by row, in order) and the targets themselves."""
    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return nll[trained], targets[trained]


def loss_and_gradients(model, batch):
    model.zero_grad(set_to_none=True)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    nll, targets = per_token_nll(model(**inputs, use_cache=False).logits, batch["labels"])
    nll.sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return nll.detach(), targets, gradients


@pytest.mark.parametrize("attention", ["sdpa", PACKED_SDPA])
def test_packed_training_gives_the_padded_per_token_losses_and_gradients(loaded, clips, attention):
    """Every trained token's loss and every parameter's gradient within 1e-5 of the padded batch's: no token
    attends across examples (or to padding), and each clip's features reach their own example only. With sdpa
    through the block-diagonal mask transformers builds from the positions, and with sdpa_packed (sdpa on each
    example alone, what the SFT pipeline uses)."""
    _, model, processor = loaded
    model.set_attn_implementation(register_packed_sdpa() if attention == PACKED_SDPA else "sdpa")
    for parameter in model.parameters():  # the encoder too: its gradient depends on which tokens saw each clip
        parameter.requires_grad_(True)
    padded = AudioChatCollator(processor)(rows(clips))
    packed = AudioChatCollator(processor, packing=True)(rows(clips))
    nll_padded, targets_padded, grads_padded = loss_and_gradients(model, padded)
    nll_packed, targets_packed, grads_packed = loss_and_gradients(model, packed)
    assert torch.equal(targets_packed, targets_padded) and len(targets_packed) > 20
    torch.testing.assert_close(nll_packed, nll_padded, atol=1e-5, rtol=0)
    assert grads_packed.keys() == grads_padded.keys()
    assert any("audio_tower" in name for name in grads_packed) and len(grads_packed) > 20
    for name, gradient in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], gradient, atol=1e-5, rtol=0, msg=name)
    # Without restarting positions (one long example), the losses differ: the test would see a leak
    leaky = {**packed, "position_ids": torch.arange(packed["input_ids"].shape[1]).unsqueeze(0)}
    if packed["position_ids"].ndim == 3:
        leaky["position_ids"] = leaky["position_ids"].expand(4, 1, -1)
    nll_leaky, _, _ = loss_and_gradients(model, leaky)
    assert (nll_leaky - nll_padded).abs().max() > 1e-3
    model.set_attn_implementation("sdpa")


def test_packed_attention_finds_the_examples_of_a_packed_row_only():
    query = torch.zeros(1, 2, 5, 4)
    assert packed_lengths(torch.tensor([[0, 1, 2, 0, 1]]), query, query) == [3, 2]
    assert packed_lengths(packed_position_ids([1, 4], multimodal_rope=True), query, query) == [1, 4]
    assert packed_lengths(torch.tensor([[0, 1, 2, 3, 4]]), query, query) is None  # one example: plain sdpa
    assert packed_lengths(None, query, query) is None
    assert packed_lengths(torch.tensor([[0, 1, 2, 0, 1]] * 2), torch.zeros(2, 2, 5, 4), torch.zeros(2, 2, 5, 4)) is None
    assert packed_lengths(torch.tensor([[7]]), query[:, :, :1], query) is None  # a decoding step


def test_packed_text_batch_keeps_the_silent_clip_apart(loaded, clips):
    """ZeRO-3's rule under packing: a text-only batch gets the silent clip as an example of its own, the encoder
    runs, the losses are those without the clip, and a trainable encoder gets a zero gradient, not none."""
    _, model, processor = loaded
    text_rows = [{**row, "audio": None} for row in rows(clips)[:2]]
    plain = AudioChatCollator(processor, packing=True)(text_rows)
    collator = AudioChatCollator(processor, packing=True, silent_clip_for_text_batches=True)
    with_clip = collator(text_rows)
    assert collator.silent_clip_batches == 1 and "input_features" in with_clip and "input_features" not in plain
    clip_length = segment_lengths(with_clip["position_ids"])[-1]
    assert segment_lengths(with_clip["position_ids"])[:-1] == segment_lengths(plain["position_ids"])
    assert with_clip["input_ids"][0, :-clip_length].tolist() == plain["input_ids"][0].tolist()
    assert (with_clip["labels"][0, -clip_length:] == IGNORE_INDEX).all()

    for parameter in model.parameters():
        parameter.requires_grad_(True)
    calls = []
    hook = model.model.audio_tower.register_forward_hook(lambda *_: calls.append(1))
    try:
        nll_plain, _, _ = loss_and_gradients(model, plain)
        nll_clip, _, gradients = loss_and_gradients(model, with_clip)
    finally:
        hook.remove()
    assert calls == [1]
    torch.testing.assert_close(nll_clip, nll_plain, atol=1e-6, rtol=0)
    encoder = [(n, g) for n, g in gradients.items() if "audio_tower" in n]
    assert encoder and all(not g.any() for _, g in encoder)
    assert any(g.any() for n, g in gradients.items() if "layers" in n and "audio_tower" not in n)


def test_generation_batches_cannot_be_packed(loaded):
    with pytest.raises(ValueError, match="training"):
        AudioChatCollator(loaded[2], with_completion=False, packing=True)


def packed_recipe(tmp_path, model: str, *overrides: str):
    return parse_recipe(
        (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
        [str(PROJECT_ROOT / "recipes" / "tiny" / "slurp.yaml"), "--output_dir", str(tmp_path / "out"),
         "--model_name_or_path", str(ensure_tiny_model(model)), "--packing", "true", "--max_train_samples", "4",
         "--per_device_train_batch_size", "4", "--save_strategy", "no", "--eval_strategy", "no", *overrides])[:3]


def test_recipe_key_packing_gives_the_trainer_packed_batches_and_the_same_loss(tmp_path):
    """`packing: true` in a recipe: TRL's own packing stays off (it refuses our collator), ours packs, and TRL's
    loss on a packed batch is the padded batch's."""
    model_args, task_args, training_args = packed_recipe(tmp_path, "qwen2-audio", "--max_steps", "2",
                                                         "--logging_steps", "1")
    run = build_trainer(model_args, task_args, training_args)
    trainer, model = run.trainer, run.trainer.model
    assert run.collator.packing and not trainer.args.packing and not trainer.args.padding_free
    assert model.config._attn_implementation == PACKED_SDPA
    examples = [trainer.train_dataset[i] for i in range(4)]
    packed = run.collator(examples)
    padded = AudioChatCollator(run.collator.processor)(examples)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(model, dict(packed)), trainer.compute_loss(model, dict(padded)),
                                   atol=1e-5, rtol=0)
    model.train()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_trainer_counts_an_omni_packed_batchs_tokens(tmp_path):
    """TRL counts a packed batch as position_ids.size(1) tokens, 1 for an Omni thinker's (4, 1, N) positions."""
    run = build_trainer(*packed_recipe(tmp_path, "qwen2.5-omni"))
    batch = run.collator([run.trainer.train_dataset[i] for i in range(4)])
    assert batch["position_ids"].ndim == 3
    run.trainer.model.train()
    run.trainer.compute_loss(run.trainer.model, dict(batch))
    assert run.trainer._total_train_tokens == batch["input_ids"].shape[1]
