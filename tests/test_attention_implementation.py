"""flash_attention_2 where flash-attn is installed, sdpa with one warning line where not; Qwen2-Audio's encoder on
sdpa either way; the GPU extras."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import tomllib
import torch

from audio_recipes.config import ModelArguments
from audio_recipes.models import attention_implementation, load_model_and_processor
from audio_recipes.models import loading as loading_module
from audio_recipes.models.families import FAMILIES, QWEN2_AUDIO, QWEN3
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.recipe import load_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model


def without_flash_attention(monkeypatch):
    monkeypatch.setattr(loading_module, "is_flash_attn_2_available", lambda: False)


def test_flash_attention_falls_back_to_sdpa_with_one_warning_line(monkeypatch, caplog):
    without_flash_attention(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="audio_recipes.models.loading"):
        assert attention_implementation("flash_attention_2", QWEN2_AUDIO) == "sdpa"
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "flash-attn is not installed" in lines[0] and "using sdpa" in lines[0]


def test_other_implementations_pass_through_without_a_warning(monkeypatch, caplog):
    without_flash_attention(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert [attention_implementation(name, QWEN2_AUDIO) for name in (None, "sdpa", "eager")] == [
            None, "sdpa", "eager"]
    assert not caplog.records


def test_with_flash_attention_qwen2_audio_keeps_its_encoder_on_sdpa(monkeypatch):
    monkeypatch.setattr(loading_module, "is_flash_attn_2_available", lambda: True)
    assert attention_implementation("flash_attention_2", QWEN2_AUDIO) == {
        "": "flash_attention_2", "text_config": "flash_attention_2", "audio_config": "sdpa"}
    assert attention_implementation("flash_attention_2", QWEN3) == "flash_attention_2"
    # AF3 pads and masks 30 s windows as Qwen2-Audio does; the Omni encoders build their windows from cu_seqlens and
    # Voxtral's takes whole unmasked 30 s chunks: those take flash attention
    names = [family.name for _, family in FAMILIES.items() if family.sdpa_sub_configs]
    assert names == ["qwen2_audio", "audioflamingo3"]


def test_a_per_sub_config_implementation_reaches_the_encoder_only():
    """The mechanism the Qwen2-Audio exemption relies on, checked with two implementations that run on CPU."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32},
        text_config={"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2})
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration._from_config(
            config, attn_implementation={"": "eager", "text_config": "eager", "audio_config": "sdpa"})
    assert model.model.audio_tower.config._attn_implementation == "sdpa"
    assert model.model.language_model.config._attn_implementation == "eager"


def test_loading_a_model_asking_for_flash_attention_without_it_gives_sdpa(monkeypatch, caplog):
    without_flash_attention(monkeypatch)
    args = ModelArguments(model_name_or_path=str(ensure_tiny_model()), attn_implementation="flash_attention_2")
    with caplog.at_level(logging.WARNING, logger="audio_recipes.models.loading"):
        model, _, _ = load_model_and_processor(args, for_training=False)
    assert model.config._attn_implementation == "sdpa"
    assert model.model.language_model.config._attn_implementation == "sdpa"
    warnings = [record for record in caplog.records if record.name == "audio_recipes.models.loading"
                and "flash" in record.getMessage()]
    assert len(warnings) == 1


REAL_RECIPES = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", REAL_RECIPES, ids=[path.stem for path in REAL_RECIPES])
def test_gpu_recipes_ask_for_flash_attention_and_tiny_ones_do_not(recipe):
    assert load_recipe(recipe)["attn_implementation"] == "flash_attention_2"
    tiny = PROJECT_ROOT / "recipes" / "tiny" / recipe.name
    assert load_recipe(tiny).get("attn_implementation") in (None, "sdpa", "eager")


def test_the_gpu_extras_name_flash_attn_and_install_as_an_extra():
    lines = [line.split("#")[0].strip() for line in (PROJECT_ROOT / "requirements-gpu.txt").read_text().splitlines()]
    packages = [line for line in lines if line]
    assert any(line.startswith("flash-attn") for line in packages)
    assert not [line for line in packages if line.startswith("-")]  # setuptools reads it as a list of requirements
    project = tomllib.loads(Path(PROJECT_ROOT / "pyproject.toml").read_text())
    assert "optional-dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["optional-dependencies"]["gpu"]["file"] == ["requirements-gpu.txt"]
