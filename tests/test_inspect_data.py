import json
import subprocess
import sys
from pathlib import Path

import pytest

from audio_recipes.config import EvalArguments, InspectArguments, ModelArguments, SFTConfig, TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.inspect import inspect_examples, recipe_or_stage
from audio_recipes.pipelines.mixture import training_data
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_inspect_data_shows_prompt_target_and_loss_tokens(tmp_path):
    ensure_tiny_model("qwen2-audio")
    save = tmp_path / "seen.jsonl"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "inspect_data.py"), str(ROOT / "recipes/tiny/slurp.yaml"),
         "--num_samples", "2", "--save_path", str(save)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    records = [json.loads(line) for line in save.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert set(record) == {"prompt", "target", "loss_text"}
        assert record["loss_text"] == record["target"] + "<|im_end|>"
        assert record["prompt"].endswith("<|im_start|>assistant\n") and "<|AUDIO|>" in record["prompt"]
        assert record["prompt"].count("<|AUDIO|>") > 10  # the placeholder is expanded per clip
        json.loads(record["target"])
    assert "tokens carrying loss" in result.stdout


def test_inspect_shows_the_training_rows_as_training_reads_them_text_rows_as_text():
    ensure_tiny_model("qwen2-audio")
    types = (ModelArguments, TaskArguments, SFTConfig, EvalArguments, InspectArguments)
    model_args, task_args, training_args, _, inspect_args = parse_recipe(
        types, [str(ROOT / "recipes/tiny/slurp_speech_fraction.yaml"), "--speech_fraction", "0.5", "--num_samples", "12"])
    records = list(inspect_examples(model_args, task_args, inspect_args, seed=training_args.seed))
    trained = training_data(recipe_task(task_args), seed=training_args.seed).examples[:12]
    assert [(record["id"], record["audio"]) for record in records] == [(e.id, e.audio) for e in trained]
    text = [record for record in records if record["audio"] is None]
    speech = [record for record in records if record["audio"] is not None]
    assert text and speech
    assert all("<|AUDIO|>" not in record["prompt"] for record in text)
    assert all(record["prompt"].count("<|AUDIO|>") > 10 for record in speech)


def test_a_curriculum_shows_the_rows_of_the_stage_named_and_needs_one_for_training():
    ensure_tiny_model("qwen2-audio")
    types = (ModelArguments, TaskArguments, SFTConfig, EvalArguments, InspectArguments)
    recipe = str(ROOT / "recipes/tiny/slurp_curriculum.yaml")

    def stage_rows(stage: str) -> list[tuple[str, str | None]]:
        argv = [recipe, "--num_samples", "300", "--curriculum_stage", stage]
        model_args, task_args, training_args, _, inspect_args = recipe_or_stage(types, argv, parse_recipe(types, argv))
        return [(r["id"], r["audio"]) for r in inspect_examples(model_args, task_args, inspect_args, seed=42)]

    first, second = stage_rows("1"), stage_rows("2")
    assert len(first) == 200 and all(audio is None for _, audio in first)  # stage 1: the gold transcripts
    assert len(second) == 10 and all(audio is not None for _, audio in second)  # stage 2: 5 % as speech, rest dropped
    with pytest.raises(RecipeError, match=r"curriculum of 2 stages.*--curriculum_stage N \(1 to 2\)"):
        recipe_or_stage(types, [recipe], parse_recipe(types, [recipe]))
    with pytest.raises(RecipeError, match=r"--curriculum_stage 3: the recipe's curriculum has stages 1 to 2"):
        argv = [recipe, "--curriculum_stage", "3"]
        recipe_or_stage(types, argv, parse_recipe(types, argv))
    plain = [str(ROOT / "recipes/tiny/slurp.yaml"), "--curriculum_stage", "1"]
    with pytest.raises(RecipeError, match="--curriculum_stage 1: the recipe has no curriculum"):
        recipe_or_stage(types, plain, parse_recipe(types, plain))
