"""SFT through TRL's trainer on the tiny Qwen2-Audio: audio reaches the loss, loss falls, frozen parts stay."""

import json
import math
from pathlib import Path

import pytest
import torch
from trl import SFTConfig

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.pipelines.sft import build_trainer, run_sft
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    return ensure_tiny_model("qwen2-audio")


def recipe(name, tmp_path, *overrides):
    model_args, task_args, training_args, _ = parse_recipe(
        TYPES, [str(ROOT / "recipes" / "tiny" / f"{name}.yaml"), "--output_dir", str(tmp_path / name), *overrides]
    )
    return model_args, task_args, training_args


def test_trainer_loss_sees_the_audio(tmp_path):
    """TRL's SFT loss (its fused LM head) equals the model's own loss, and changes when the audio does."""
    model_args, task_args, training_args = recipe("slurp", tmp_path, "--max_train_samples", "4")
    run = build_trainer(model_args, task_args, training_args)
    trainer, model = run.trainer, run.trainer.model
    model.eval()
    batch = run.collator([run.trainer.train_dataset[i] for i in range(4)])
    assert batch["input_features"].shape[0] == 4
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        reference = model(**batch).loss
        silent = trainer.compute_loss(model, {**batch, "input_features": torch.zeros_like(batch["input_features"])})
    assert torch.allclose(trl_loss, reference, atol=1e-5)
    assert abs(silent.item() - trl_loss.item()) > 1e-4


def test_audio_recipe_loss_falls_and_frozen_parts_stay(tmp_path):
    model_args, task_args, training_args = recipe(
        "slurp", tmp_path, "--max_steps", "30", "--learning_rate", "3e-3", "--max_train_samples", "64",
        "--logging_steps", "1",
    )
    run = build_trainer(model_args, task_args, training_args)
    model = run.trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run.trainer.train()
    losses = [entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, losses
    after = dict(model.named_parameters())
    encoder = [name for name in before if "audio_tower" in name or "multi_modal_projector" in name]
    language = [name for name in before if "language_model" in name and "layers" in name]
    assert encoder and language
    assert all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in language)


def test_run_sft_writes_model_state_and_card(tmp_path):
    model_args, task_args, training_args = recipe("slurp_text", tmp_path, "--max_steps", "3", "--logging_steps", "1")
    metrics = run_sft(model_args, task_args, training_args, recipe_path="recipes/tiny/slurp_text.yaml")
    output = tmp_path / "slurp_text"
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and any("loss" in entry for entry in state["log_history"])
    assert (output / "model.safetensors").is_file() and not (output / "pytorch_model.bin").exists()
    assert (output / "processor_config.json").is_file()
    card = (output / "README.md").read_text()
    assert "recipes/tiny/slurp_text.yaml" in card and "tiny-models/qwen2-audio" in card
    assert metrics["train_loss"] > 0 and metrics["audio_clips_loaded"] == 0
    assert metrics["audio_clips_digital_silence"] == 0  # counted, the tiny data holds none


# Qwen2-Audio, the Omni thinkers and Audio Flamingo 3; Qwen3-Omni's LoRA reaches its experts (3-D parameters, not
# quantised)
@pytest.mark.parametrize("model_name, preset", [("qwen2-audio", "attention_mlp"), ("qwen2.5-omni", "attention_mlp"),
                                                ("qwen3-omni-moe", "attention_experts"),
                                                ("audio-flamingo3", "attention_mlp"), ("voxtral", "attention_mlp")])
def test_qlora_recipe_quantises_the_language_model_only(tmp_path, model_name, preset):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    model_args, task_args, training_args = recipe(
        "slurp_qlora", tmp_path, "--max_steps", "2", "--max_train_samples", "4", "--per_device_train_batch_size", "2",
        "--model_name_or_path", str(ensure_tiny_model(model_name)), "--lora_target_preset", preset,
        "--lora_dropout", "0", "--logging_steps", "1")
    run = build_trainer(model_args, task_args, training_args)
    model = run.trainer.model
    quantised = [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert any("language_model" in name for name in quantised)
    assert not any(part in name for name in quantised for part in ("audio_tower", "multi_modal_projector", "lm_head"))
    lora = [name for name, _ in model.named_parameters() if "lora_" in name]
    assert lora and all("language_model" in name for name in lora)
    assert any(("mlp.experts" if preset == "attention_experts" else "mlp.down_proj") in name for name in lora)
    assert all(not p.requires_grad for name, p in model.named_parameters() if "lora_" not in name)
    run.trainer.train()
    losses = [entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    run.trainer.save_model(training_args.output_dir)
    adapter = json.loads((Path(training_args.output_dir) / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"].endswith(f"tiny-models/{model_name}")
    if preset == "attention_experts":
        assert sorted(adapter["target_parameters"]) == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]


def test_qlora_without_bf16_trains_its_parameters_in_float32(tmp_path):
    """TRL casts a 4-bit model's trainable parameters (LoRA and the full copies of lora_modules_to_save) to bf16
    whatever `bf16` says; a recipe with bf16 off gets them back in float32, and they stay so through a step."""
    pytest.importorskip("bitsandbytes")
    from audio_recipes.pipelines.sft import keep_trainable_parameters_in_full_precision

    model_args, task_args, training_args = recipe(
        "speech_detection", tmp_path, "--max_steps", "1", "--max_train_samples", "4", "--per_device_train_batch_size",
        "2", "--logging_steps", "1", "--warmup_steps", "0")
    assert not training_args.bf16 and model_args.lora_modules_to_save
    run = build_trainer(model_args, task_args, training_args)
    trainable = {name: p for name, p in run.trainer.model.named_parameters() if p.requires_grad}
    assert any("audio_tower" in name for name in trainable) and any("lora_" in name for name in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    before = {name: p.detach().clone() for name, p in trainable.items()}
    run.trainer.train()
    assert {p.dtype for p in run.trainer.model.parameters() if p.requires_grad} == {torch.float32}
    assert any(not torch.equal(before[name], p) for name, p in trainable.items())
    # What TRL leaves behind, and what bf16 training keeps: bf16
    for p in trainable.values():
        p.data = p.data.to(torch.bfloat16)
    training_args.bf16 = True
    assert keep_trainable_parameters_in_full_precision(run.trainer.model, training_args) == 0
    training_args.bf16 = False
    assert keep_trainable_parameters_in_full_precision(run.trainer.model, training_args) == sum(
        p.numel() for p in trainable.values())


def test_silent_clip_changes_no_loss_and_keeps_the_trainable_encoder_in_the_backward_pass(tmp_path):
    """A text-only batch with the clip: the same loss as without it, and the encoder gets a zero gradient (not
    none), as on a rank whose batch has audio: ranks then run the same backward pass."""
    model_args, task_args, training_args = recipe(
        "slurp", tmp_path, "--freeze_audio_encoder", "false", "--silent_clip_for_text_batches", "true")
    run = build_trainer(model_args, task_args, training_args)
    trainer, model = run.trainer, run.trainer.model
    rows = [{**run.trainer.train_dataset[i], "audio": None} for i in range(2)]
    plain = AudioChatCollator(run.collator.processor)(rows)
    with_clip = run.collator(rows)
    assert "input_features" in with_clip and "input_features" not in plain

    encoder_calls = []
    model.model.audio_tower.register_forward_hook(lambda *_: encoder_calls.append(1))
    model.train()
    reference = trainer.compute_loss(model, dict(plain))
    loss = trainer.compute_loss(model, dict(with_clip))
    assert encoder_calls == [1]
    assert torch.allclose(loss, reference, atol=1e-6)
    loss.backward()
    encoder = [p for name, p in model.named_parameters() if "audio_tower" in name and p.requires_grad]
    assert encoder and all(p.grad is not None and not p.grad.any() for p in encoder)
    assert any(p.grad is not None and p.grad.any() for name, p in model.named_parameters() if "language_model" in name)


def test_training_the_encoder_keeps_its_fixed_positions(tmp_path):
    # transformers 5 loads Qwen2-Audio's sinusoidal positions trainable; ZeRO-3 init loads them frozen
    model_args, task_args, training_args = recipe("slurp", tmp_path, "--freeze_audio_encoder", "false")
    model = build_trainer(model_args, task_args, training_args).trainer.model
    encoder = {name: p.requires_grad for name, p in model.named_parameters() if "audio_tower" in name}
    assert not encoder.pop("model.audio_tower.embed_positions.weight")
    assert all(encoder.values())


def test_a_resumed_run_reports_the_whole_runs_loss_and_clips(tmp_path):
    """Resumed from its checkpoint at step 2, a run reports the same train_loss and clip count as uninterrupted
    (the Trainer's own figures cover the resumed steps only)."""
    import shutil

    common = ["--max_steps", "4", "--max_train_samples", "8", "--per_device_train_batch_size", "2",
              "--logging_steps", "3", "--save_strategy", "steps", "--save_steps", "2", "--warmup_steps", "0"]
    whole = run_sft(*recipe("slurp", tmp_path / "whole", *common), recipe_path="recipes/tiny/slurp.yaml")
    resumed_dir = tmp_path / "resumed" / "slurp"
    resumed_dir.mkdir(parents=True)
    # A run killed after its step-2 checkpoint: only that checkpoint is left
    shutil.copytree(tmp_path / "whole" / "slurp" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = run_sft(*recipe("slurp", tmp_path / "resumed", *common, "--resume_from_checkpoint", "true"),
                      recipe_path="recipes/tiny/slurp.yaml")
    assert resumed["resumed_at_step"] == 2 and whole["resumed_at_step"] == 0
    assert whole["audio_clips_loaded"] == 8
    assert resumed["audio_clips_loaded"] == whole["audio_clips_loaded"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    saved = json.loads((resumed_dir / "train_metrics.json").read_text())
    assert saved["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5) and saved["audio_clips_loaded"] == 8
    card = (resumed_dir / "README.md").read_text()
    assert f"| train_loss | {whole['train_loss']:.4f} |" in card


def test_a_hub_token_is_written_to_no_file_and_pushed_nowhere(tmp_path, monkeypatch):
    from audio_recipes.hub import files_to_push

    secret = "hf_NotARealTokenButUniqueEnough12345"
    monkeypatch.delenv("HF_TOKEN", raising=False)  # restored after the test: the token goes to the environment
    run_sft(*recipe("slurp", tmp_path, "--max_steps", "2", "--max_train_samples", "4", "--save_strategy", "steps",
                    "--save_steps", "1", "--hub_token", secret), recipe_path="recipes/tiny/slurp.yaml")
    output_dir = tmp_path / "slurp"
    written = [path for path in output_dir.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in written)  # the Trainer's pickled arguments
    assert [path for path in written if secret.encode() in path.read_bytes()] == []
    pushed = files_to_push(output_dir)
    assert "README.md" in pushed and "model.safetensors" in pushed
    assert not [name for name in pushed if name.endswith("training_args.bin") or name.startswith("checkpoint-")]
    import os

    assert os.environ["HF_TOKEN"] == secret  # where the Hub client still finds it


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system (tmpfs; needs root): a tiny model's first checkpoint does not fit."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_saving_says_so_and_leaves_no_half_checkpoint(small_disk):
    from audio_recipes.distributed import last_complete_checkpoint

    with pytest.raises(OSError, match=r"the disk holding .* is full .* while saving checkpoint-1: the partial "
                                      "checkpoint was removed"):
        run_sft(*recipe("slurp", small_disk, "--max_steps", "2", "--max_train_samples", "4", "--save_strategy",
                        "steps", "--save_steps", "1"), recipe_path="recipes/tiny/slurp.yaml")
    assert not (small_disk / "slurp" / "checkpoint-1").exists()
    assert last_complete_checkpoint(small_disk / "slurp") is None
