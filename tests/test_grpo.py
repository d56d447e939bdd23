"""Audio GRPO: every forward that sees audio placeholder tokens gets the audio features."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers import json_object_lines, warning_lines
from trl import GRPOConfig

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import ModelArguments, TaskArguments
from audio_recipes.models import load_model_and_processor
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.grpo import AudioGRPOTrainer, reward_quarters
from audio_recipes.rewards import get_reward_funcs
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows():
    ensure_tiny_model("qwen2-audio")
    data = ROOT / "data/tiny/audio_choice"
    args = TaskArguments(task="mmar", train_file=str(data / "mmar_train.jsonl"), test_file=str(data / "mmar_test.jsonl"),
                         audio_dir=str(data), build_data_if_missing=True)
    return [example.to_row() for example in recipe_task(args).examples("train")[:2]]


# The audio GRPO trainer on a Whisper-style audio LM, an Omni thinker (M-RoPE, its own processor), Audio Flamingo 3
# (its features' mask under another name) and Voxtral (prompts through mistral_common, one feature row per 30 s chunk)
MODELS = ["qwen2-audio", "qwen2.5-omni", "audio-flamingo3", "voxtral"]


def make_trainer(rows, tmp_path, model_name="qwen2-audio", **overrides):
    model_path = ensure_tiny_model(model_name)
    model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=str(model_path)))
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                    max_completion_length=5, max_steps=2, beta=0.04, num_iterations=2, use_cpu=True, bf16=False,
                    report_to="none", save_strategy="no", logging_steps=1, seed=0,
                    activation_checkpointing=True)  # TRL's default, under transformers 5's name
    args = GRPOConfig(**{**settings, **overrides})
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left")
    return AudioGRPOTrainer(model=model, args=args, reward_funcs=get_reward_funcs(["choice_accuracy"]),
                            train_dataset=Dataset.from_list(rows), processing_class=processor, audio_collator=collator)


def record_forwards(model, audio_token_id, calls, name):
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        features = kwargs.get("input_features")
        calls.append({
            "model": name,
            "audio_rows": int((ids == audio_token_id).any(dim=1).sum()) if ids is not None else 0,
            "feature_rows": 0 if features is None else features.shape[0],
            "log_probs": bool(kwargs.get("fused_lm_head")),
        })

    return model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("model_name", MODELS)
def test_every_forward_with_audio_tokens_gets_the_features(rows, tmp_path, model_name):
    trainer = make_trainer(rows, tmp_path, model_name)
    audio_token_id = trainer.model.config.audio_token_id
    assert audio_token_id in trainer.generation_config.suppress_tokens  # a sampled placeholder would have no features
    assert trainer.ref_model is not None  # beta > 0 without PEFT: a separate reference model
    # of the policy's class: TRL would build it from config.architectures, for an Omni checkpoint the talker's model
    assert type(trainer.ref_model) is type(trainer.model)
    calls = []
    record_forwards(trainer.model, audio_token_id, calls, "policy")
    record_forwards(trainer.ref_model, audio_token_id, calls, "reference")
    trainer.train()

    with_audio = [call for call in calls if call["audio_rows"]]
    assert with_audio and all(call["feature_rows"] == call["audio_rows"] for call in with_audio), calls
    log_prob_calls = [call for call in calls if call["log_probs"]]
    # One generation batch reused for 2 steps (num_iterations 2): old policy once, reference once, policy twice
    assert [c["model"] for c in log_prob_calls].count("policy") == 3
    assert [c["model"] for c in log_prob_calls].count("reference") == 1
    assert all(call["audio_rows"] == 4 and call["feature_rows"] == 4 for call in log_prob_calls)
    # Generation's first forward (the prompt) sees the audio too
    generation = [call for call in calls if not call["log_probs"] and call["model"] == "policy"]
    assert generation[0]["audio_rows"] == 4 and generation[0]["feature_rows"] == 4


@pytest.mark.parametrize("model_name", MODELS)
def test_log_probs_depend_on_the_audio(rows, tmp_path, model_name):
    trainer = make_trainer(rows, tmp_path, model_name)
    batch_rows = [rows[0], rows[1]]
    trainer._batch_rows = batch_rows
    prompt_ids, _, features = trainer._tokenize_prompts([row["prompt"] for row in batch_rows])
    longest = max(len(ids) for ids in prompt_ids)
    pad = trainer.processing_class.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (longest - len(ids)) + ids + [11, 12, 13] for ids in prompt_ids])
    mask = (torch.arange(input_ids.shape[1]) >= torch.tensor([[longest - len(ids)] for ids in prompt_ids])).long()
    with torch.no_grad():
        with_audio, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 3)
        trainer._audio_inputs = {**features, "input_features": torch.zeros_like(features["input_features"])}
        silent, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 3)
        # The model's own forward with the same features gives the same log-probs
        logits = trainer.model(input_ids=input_ids, attention_mask=mask, **features).logits[:, -4:-1]
    reference = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, -3:, None]).squeeze(-1)
    assert torch.allclose(with_audio, reference, atol=1e-4)
    assert (with_audio - silent).abs().max() > 1e-4


def test_grpo_script_trains_an_adapter(tmp_path):
    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "grpo"
    # The recipe starts from the SFT warm start; the script's plumbing is the same from the bare tiny model
    result = subprocess.run([sys.executable, str(ROOT / "scripts/grpo.py"), str(ROOT / "recipes/tiny/mmar_grpo.yaml"),
                             "--model_name_or_path", "tiny-models/qwen2-audio", "--max_steps", "2",
                             "--output_dir", str(output)], cwd=ROOT, check=True,
                            capture_output=True, text=True, timeout=900)
    assert [sorted(line) for line in json_object_lines(result.stdout)] == [
        ["reward_first_quarter", "reward_last_quarter", "train_loss"]]
    assert warning_lines(result.stderr) == []  # TRL's "model_init_kwargs will be ignored" is wrong here: dropped
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and any("reward" in entry for entry in state["log_history"])
    assert (output / "adapter_model.safetensors").is_file() and "mmar" in (output / "README.md").read_text()


def test_reward_quarters_average_the_first_and_last_quarter_of_the_logged_steps():
    history = [{"reward": r, "step": i} for i, r in enumerate([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 1.0], 1)]
    history.insert(3, {"loss": 0.1, "step": 3})  # entries without a reward are not steps of the curve
    assert reward_quarters(history) == {"reward_first_quarter": 0.5, "reward_last_quarter": 1.5}
    assert reward_quarters([{"reward": 0.25}]) == {"reward_first_quarter": 0.25, "reward_last_quarter": 0.25}
    assert reward_quarters([]) == {"reward_first_quarter": 0.0, "reward_last_quarter": 0.0}


@pytest.mark.slow
def test_grpo_from_the_warm_start_raises_the_mean_reward(tmp_path):
    """The tiny recipes in order (about a minute): the short SFT warm start, then GRPO; the last quarter's mean
    reward is above the first quarter's."""
    ensure_tiny_model("qwen2-audio")
    warm, output = tmp_path / "sft", tmp_path / "grpo"
    subprocess.run([sys.executable, str(ROOT / "scripts/sft.py"), str(ROOT / "recipes/tiny/mmar_sft.yaml"),
                    "--output_dir", str(warm)], cwd=ROOT, check=True, capture_output=True, text=True, timeout=900)
    result = subprocess.run([sys.executable, str(ROOT / "scripts/grpo.py"), str(ROOT / "recipes/tiny/mmar_grpo.yaml"),
                             "--model_name_or_path", str(warm), "--output_dir", str(output)], cwd=ROOT, check=True,
                            capture_output=True, text=True, timeout=900)
    metrics = json_object_lines(result.stdout)[-1]
    assert metrics["reward_last_quarter"] > metrics["reward_first_quarter"] + 0.1, metrics


def test_unknown_reward_fails_before_loading(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/grpo.py"), str(ROOT / "recipes/tiny/mmar_grpo.yaml"),
                             "--reward_funcs", "choice_acuracy", "--output_dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "did you mean 'choice_accuracy'" in result.stderr


@pytest.mark.parametrize("peft", ["true", "false"], ids=["lora", "full"])
def test_grpo_resumes_from_its_last_checkpoint_with_resume_true(tmp_path, peft):
    """`resume_from_checkpoint: "true"` (the recipes' string) is the last complete checkpoint, as for SFT: it was
    passed to the Trainer as a folder named "true"; full weights load through from_pretrained's key conversion."""
    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "grpo"
    command = [sys.executable, str(ROOT / "scripts/grpo.py"), str(ROOT / "recipes/tiny/mmar_grpo.yaml"),
               "--model_name_or_path", "tiny-models/qwen2-audio", "--output_dir", str(output), "--use_peft", peft,
               "--save_strategy", "steps", "--save_steps", "1", "--resume_from_checkpoint", "true",
               "--per_device_train_batch_size", "4", "--max_completion_length", "8"]
    subprocess.run([*command, "--max_steps", "1"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    assert (output / "checkpoint-1" / "trainer_state.json").is_file()
    resumed = subprocess.run([*command, "--max_steps", "2"], cwd=ROOT, check=True, capture_output=True, text=True,
                             timeout=900)
    assert f"resuming from {output / 'checkpoint-1'}" in resumed.stderr
    if peft == "false":
        assert f"model weights loaded from {output / 'checkpoint-1'}" in resumed.stderr
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (output / "checkpoint-2").is_dir()
