"""SFT on each audio family's tiny model through the pipeline a user runs (build_trainer, TRL's SFTTrainer): TRL's
loss is the model's own and sees the audio, the loss falls, the frozen parts (audio encoder, projector, the Omni
thinkers' vision encoder) stay as they were and the language model moves. One test over the families: the
per-family files (test_omni_models.py, test_audio_flamingo3.py, test_voxtral.py) test what differs between them."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from trl import SFTConfig

from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.models import family_for_model
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    tiny_model: str
    recipe: str  # recipes/tiny/<recipe>.yaml
    steps: int = 10
    samples: int = 16
    extra: tuple[str, ...] = ()


CASES = [
    Case("qwen2.5-omni", "slurp"),
    Case("qwen3-omni-moe", "slurp"),
    Case("audio-flamingo3", "slurp_audio_flamingo3"),
    Case("voxtral", "slurp_voxtral", steps=8, samples=8, extra=("--warmup_steps", "0")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.tiny_model for case in CASES])
def test_sft_loss_sees_the_audio_falls_and_frozen_parts_stay(case, tmp_path):
    model_args, task_args, training_args, _ = parse_recipe(
        (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
        [str(ROOT / "recipes" / "tiny" / f"{case.recipe}.yaml"), "--output_dir", str(tmp_path / case.tiny_model),
         "--model_name_or_path", str(ensure_tiny_model(case.tiny_model)), "--max_steps", str(case.steps),
         "--learning_rate", "3e-3", "--max_train_samples", str(case.samples), "--per_device_train_batch_size", "4",
         "--logging_steps", "1", "--lr_scheduler_type", "constant", *case.extra])
    run = build_trainer(model_args, task_args, training_args)
    trainer, model = run.trainer, run.trainer.model
    family = family_for_model(model)
    assert type(model).__name__ == family.model_class
    model.eval()
    batch = run.collator([trainer.train_dataset[i] for i in range(4)])
    assert set(family.audio_inputs) <= set(batch)
    if family.whisper_window:  # one feature row per clip, the 30 s window cut to the batch's longest clip
        assert batch["input_features"].shape[0] == 4 and batch["input_features"].shape[-1] < 3000
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        silent = trainer.compute_loss(model, {**batch, "input_features": torch.zeros_like(batch["input_features"])})
        assert torch.allclose(trl_loss, model(**batch).loss, atol=1e-5)
    assert abs(silent.item() - trl_loss.item()) > 1e-3
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == case.steps and sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    after = dict(model.named_parameters())
    frozen = [name for name in before if any(f".{part}." in f".{name}." for part in family.not_language_model)]
    language = [name for name in before if ".language_model.layers." in name]
    assert frozen and language
    assert all(torch.equal(before[name], after[name]) for name in frozen)
    assert all(not p.requires_grad for name, p in model.named_parameters() if name in frozen)
    assert any(not torch.equal(before[name], after[name]) for name in language)
