"""Generations logged during training: rows at the expected steps, the training result unchanged, resume without
duplicates, LoRA models."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_recipes.config import EvalArguments, ModelArguments, SFTConfig, TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.pipelines.generation_log import GENERATIONS_FILE, preserved_random_state
from audio_recipes.pipelines.sft import build_trainer, run_sft
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)
RECIPE = str(ROOT / "recipes" / "tiny" / "slurp.yaml")
# 16 rows in batches of 8: 2 steps an epoch, so the sampler draws a new order (from torch's global generator) 5 times
# in 10 steps; LoRA dropout draws at every step. Any random number the generations took would change the losses.
SHORT_RUN = ["--max_steps", "10", "--max_train_samples", "16", "--logging_steps", "1", "--warmup_steps", "0",
             "--use_peft", "true", "--lora_target_preset", "attention", "--lora_dropout", "0.2",
             "--max_new_tokens", "6"]


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    return ensure_tiny_model("qwen2-audio")


def parsed(output_dir, *overrides):
    return parse_recipe(TYPES, [RECIPE, "--output_dir", str(output_dir), *SHORT_RUN, *overrides])


def train(output_dir, *overrides):
    model_args, task_args, training_args, eval_args = parsed(output_dir, *overrides)
    run = build_trainer(model_args, task_args, training_args, eval_args=eval_args)
    run.trainer.train()
    return run


def losses(run):
    return [(entry["step"], entry["loss"], entry["grad_norm"]) for entry in run.trainer.state.log_history
            if "loss" in entry]


def test_generations_are_logged_and_leave_training_unchanged(tmp_path):
    plain = train(tmp_path / "plain")
    logged = train(tmp_path / "logged", "--generation_log_steps", "4", "--generation_log_samples", "3")
    assert len(losses(plain)) == 10
    assert losses(logged) == losses(plain)  # exact: same data order, same dropout, same updates
    assert not (tmp_path / "plain" / GENERATIONS_FILE).exists()
    assert type(logged.trainer.model).__name__ == "PeftModelForCausalLM"

    rows = [json.loads(line) for line in (tmp_path / "logged" / GENERATIONS_FILE).read_text().splitlines()]
    # The recipe has eval data (eval_file): its first 3 items, at steps 4 and 8 (10 is no multiple of 4)
    eval_examples = {example.id: example for example in logged.task.examples("eval")[:3]}
    expected_ids = list(eval_examples)
    assert [(row["step"], row["id"]) for row in rows] == [(4, i) for i in expected_ids] + [(8, i) for i in expected_ids]
    for row in rows:
        assert row["target"] == eval_examples[row["id"]].completion and row["prompt"] == eval_examples[row["id"]].prompt
        assert row["audio"] == eval_examples[row["id"]].audio and isinstance(row["output"], str)
    assert logged.trainer.model.training  # back in train mode


def test_without_eval_data_the_first_training_rows_are_used(tmp_path):
    model_args, task_args, training_args, eval_args = parsed(
        tmp_path, "--max_steps", "2", "--generation_log_steps", "2", "--generation_log_samples", "2",
        "--use_peft", "false")
    task_args.eval_file = None  # a recipe without eval data
    run = build_trainer(model_args, task_args, training_args, eval_args=eval_args)
    run.trainer.train()
    rows = [json.loads(line) for line in (tmp_path / GENERATIONS_FILE).read_text().splitlines()]
    first_train = [run.trainer.train_dataset[i]["id"] for i in range(2)]
    assert [(row["step"], row["id"]) for row in rows] == [(2, first_train[0]), (2, first_train[1])]


def test_only_the_logged_eval_examples_audio_is_read_when_the_run_does_not_evaluate(tmp_path):
    """eval_strategy "no": the log reads its first examples of the eval data; a missing recording further down the
    eval file is none of its business (it failed the run before)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    real_audio = ROOT / "data" / "tiny" / "slurp" / "audio"
    for path in real_audio.iterdir():
        (audio / path.name).symlink_to(path)
    eval_rows = [json.loads(line) for line in (ROOT / "data" / "tiny" / "slurp" / "devel.jsonl").read_text().splitlines()]
    for row in eval_rows[3:]:
        for recording in row["recordings"]:
            (audio / recording["file"]).unlink(missing_ok=True)
    run = train(tmp_path / "out", "--max_steps", "2", "--generation_log_steps", "2", "--generation_log_samples", "2",
                "--audio_dir", str(audio), "--use_peft", "false")
    rows = [json.loads(line) for line in (tmp_path / "out" / GENERATIONS_FILE).read_text().splitlines()]
    recordings = [recording["file"] for row in eval_rows for recording in row["recordings"]]  # an item a recording
    assert [row["id"] for row in rows] == recordings[:2]
    assert run.trainer.state.global_step == 2


def test_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path):
    """Killed after step 6 with a checkpoint at 4: the resumed run redoes steps 5-10, and the file holds each logged
    step once, as an uninterrupted run writes it."""
    common = ["--generation_log_steps", "2", "--generation_log_samples", "1", "--save_strategy", "steps",
              "--save_steps", "4", "--use_peft", "false"]
    whole_dir, resumed_dir = tmp_path / "whole", tmp_path / "resumed"
    train(whole_dir, *common)
    whole = [json.loads(line) for line in (whole_dir / GENERATIONS_FILE).read_text().splitlines()]
    assert [row["step"] for row in whole] == [2, 4, 6, 8, 10]
    resumed_dir.mkdir()
    shutil.copytree(whole_dir / "checkpoint-4", resumed_dir / "checkpoint-4")
    # What the killed run had written by step 6, its last line torn
    lines = (whole_dir / GENERATIONS_FILE).read_text().splitlines()
    (resumed_dir / GENERATIONS_FILE).write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    model_args, task_args, training_args, eval_args = parsed(resumed_dir, *common, "--resume_from_checkpoint", "true")
    run_sft(model_args, task_args, training_args, recipe_path=RECIPE, eval_args=eval_args)
    resumed = [json.loads(line) for line in (resumed_dir / GENERATIONS_FILE).read_text().splitlines()]
    assert [row["step"] for row in resumed] == [2, 4, 6, 8, 10]
    assert [row["output"] for row in resumed] == [row["output"] for row in whole]


def test_random_states_are_restored():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_random_state():
        random.random(), np.random.rand(), torch.rand(3)
    after = random.random(), float(np.random.rand()), torch.rand(1).item()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert after == (random.random(), float(np.random.rand()), torch.rand(1).item())


def test_bad_values_are_refused_before_loading():
    with pytest.raises(RecipeError, match="generation_log_samples"):
        parse_recipe(TYPES, [RECIPE, "--generation_log_samples", "0"])
    with pytest.raises(RecipeError, match="generation_log_steps"):
        parse_recipe(TYPES, [RECIPE, "--generation_log_steps", "-1"])
