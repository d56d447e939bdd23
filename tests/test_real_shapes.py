"""The released models' shapes (audio_recipes.models.real_shapes), built on the meta device through the project's
loading code: parameter totals against the published ones, LoRA presets and the 4-bit plan on the real shapes."""

from __future__ import annotations

import math

import pytest
import torch

from audio_recipes.config import ModelArguments
from audio_recipes.models import build_empty_model, family_for_model, lora_config
from audio_recipes.models.adapters import LORA_TARGET_PRESETS
from audio_recipes.models.real_shapes import REAL_SHAPES

SHAPES = list(REAL_SHAPES.values())


def empty(shape, **options) -> torch.nn.Module:
    return build_empty_model(shape.build_config(), ModelArguments(model_name_or_path=shape.hub_id, dtype="bfloat16",
                                                                   **options))


def counted(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not prefixes or name.startswith(prefixes))


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.hub_id for shape in SHAPES])
def test_the_meta_model_has_the_published_parameter_counts(shape):
    model = empty(shape)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.dtype == torch.bfloat16
    for published in shape.published:
        if published.built == "full":  # the whole checkpoint (the Omni talker too), never loaded by a recipe
            from transformers import Qwen2_5OmniForConditionalGeneration

            config = shape.build_config(full=True)
            assert config.model_type == "qwen2_5_omni"
            with torch.device("meta"):
                total = counted(Qwen2_5OmniForConditionalGeneration(config), published.prefixes)
        else:
            total = counted(model, published.prefixes)
        assert total == pytest.approx(published.parameters, rel=0.01), (published.what, total)


def test_the_loader_builds_the_family_class_and_the_omni_thinker_only():
    classes = {shape.hub_id: type(empty(shape)).__name__ for shape in SHAPES}
    assert classes == {
        "Qwen/Qwen2-Audio-7B-Instruct": "Qwen2AudioForConditionalGeneration",
        "Qwen/Qwen2.5-Omni-7B": "Qwen2_5OmniThinkerForConditionalGeneration",
        "Qwen/Qwen3-Omni-30B-A3B-Instruct": "Qwen3OmniMoeThinkerForConditionalGeneration",
        "Qwen/Qwen3-0.6B": "Qwen3ForCausalLM",
        "mistralai/Voxtral-Mini-3B-2507": "VoxtralForConditionalGeneration",
        "nvidia/audio-flamingo-3-hf": "AudioFlamingo3ForConditionalGeneration",
    }


# (hidden, layers, heads, KV heads, MLP, vocabulary rows, untied head), (encoder width, layers, heads, MLP): the
# widths each config.json publishes (sources in real_shapes.py), read back from the model the loader builds
PUBLISHED_WIDTHS = {
    "Qwen/Qwen2-Audio-7B-Instruct": ((4096, 32, 32, 32, 11008, 156032, True), (1280, 32, 20, 5120)),
    "Qwen/Qwen2.5-Omni-7B": ((3584, 28, 28, 4, 18944, 152064, True), (1280, 32, 20, 5120)),
    "Qwen/Qwen3-Omni-30B-A3B-Instruct": ((2048, 48, 32, 4, 768, 152064, True), (1280, 32, 20, 5120)),
    "Qwen/Qwen3-0.6B": ((1024, 28, 16, 8, 3072, 151936, False), None),
    "mistralai/Voxtral-Mini-3B-2507": ((3072, 30, 32, 8, 8192, 131072, True), (1280, 32, 20, 5120)),
    "nvidia/audio-flamingo-3-hf": ((3584, 28, 28, 4, 18944, 151672, True), (1280, 32, 20, 5120)),
}


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.hub_id for shape in SHAPES])
def test_the_built_model_has_the_published_widths_and_nothing_outside_its_parts(shape):
    model = empty(shape)
    text = model.config.get_text_config()
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    untied = head is not embedding
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, embedding.shape[0], untied) == PUBLISHED_WIDTHS[shape.hub_id][0]
    assert head.shape == embedding.shape  # the head counted in the published language-model sizes
    audio = getattr(model.config, "audio_config", None)
    widths = (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim) if audio \
        else None
    assert widths == PUBLISHED_WIDTHS[shape.hub_id][1]
    family = family_for_model(model)
    if family.has_audio:  # every parameter in a part the family names (the published part sizes add up)
        parts = tuple(f".{part}." for part in family.not_language_model) + (".language_model.",)
        assert [name for name, _ in model.named_parameters()
                if not any(part in f".{name}" for part in parts) and not name.startswith("lm_head.")] == []


def test_transformers_defaults_are_not_the_released_qwen2_audio():
    """Why the shapes are written down: the default config builds another model (12.7 B, vocabulary 151936)."""
    from transformers import Qwen2AudioConfig

    default = Qwen2AudioConfig()
    real = REAL_SHAPES["Qwen/Qwen2-Audio-7B-Instruct"].build_config()
    assert (default.text_config.vocab_size, default.text_config.intermediate_size) != (156032, 11008)
    assert (real.text_config.vocab_size, real.text_config.intermediate_size) == (156032, 11008)
    with torch.device("meta"):
        from transformers import Qwen2AudioForConditionalGeneration

        assert counted(Qwen2AudioForConditionalGeneration(default), ()) > 12e9


def lora_expected(model: torch.nn.Module, modules: tuple[str, ...], rank: int) -> int:
    """r x (in + out) for every language-model linear named in `modules`, counted from the base model's shapes."""
    family = family_for_model(model)
    total = 0
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, torch.nn.Linear) and parts[-1] in modules and not set(parts) & set(
                family.not_language_model):
            total += rank * (module.in_features + module.out_features)
    return total


PRESET_CASES = [(shape, preset) for shape in SHAPES for preset in LORA_TARGET_PRESETS
                if preset != "attention_experts" or "Omni-30B" in shape.hub_id]


@pytest.mark.parametrize("shape,preset", PRESET_CASES,
                         ids=[f"{shape.hub_id.split('/')[1]}-{preset}" for shape, preset in PRESET_CASES])
def test_lora_presets_train_the_language_model_only(shape, preset):
    from peft import get_peft_model

    args = ModelArguments(model_name_or_path=shape.hub_id, dtype="bfloat16", use_peft=True, lora_r=16,
                          lora_alpha=32, lora_dropout=0.0, lora_target_preset=preset)
    model = build_empty_model(shape.build_config(), args)
    family = family_for_model(model)
    groups, with_experts = LORA_TARGET_PRESETS[preset]
    modules = tuple(name for group in groups for name in getattr(family, f"{group}_modules"))
    expected = lora_expected(model, modules, 16)
    experts = [(name, p) for name, p in model.named_parameters() if name.endswith(family.expert_parameters or ("-",))]
    if with_experts:  # one rank-16 adapter per expert, on each 3-D expert parameter (experts x out x in)
        expected += sum(16 * p.shape[0] * (p.shape[1] + p.shape[2]) for _, p in experts)
    elif "mlp" in groups and experts:
        # PEFT 0.21 maps gate/up/down_proj onto a MoE model's fused 3-D experts: attention_mlp trains the experts
        # too, gate_up at twice the rank (gate and up each keep rank 16)
        expected += sum((32 if name.endswith("gate_up_proj") else 16) * p.shape[0] * (p.shape[1] + p.shape[2])
                        for name, p in experts)
    peft_model = get_peft_model(model, lora_config(args, model))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == expected
    assert trainable and all("lora_" in name for name in trainable)
    assert not [name for name in trainable if any(f".{part}." in name for part in family.not_language_model)]


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.hub_id for shape in SHAPES])
def test_the_4bit_plan_quantises_language_model_linears_only(shape):
    import bitsandbytes as bnb

    model = empty(shape, load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True)
    family = family_for_model(model)
    quantised = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert quantised
    kept_whole = family.audio_encoder + family.projector
    assert not [name for name in quantised if any(f".{part}." in f".{name}." for part in kept_whole)]
    assert not [name for name in quantised if name.endswith("lm_head")]
    language_model = [name for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear,
                      bnb.nn.Linear4bit)) and ".layers." in name and not any(
                          f".{part}." in f".{name}." for part in family.not_language_model)]
    unquantised = [name for name in language_model if name not in quantised and not name.endswith("mlp.gate")]
    assert unquantised == []  # every attention / MLP linear of the language model (a MoE router excepted)
    if family.expert_parameters:
        # bitsandbytes quantises nn.Linear only: transformers 5 stores the experts as 3-D parameters, left in bf16
        experts = [p for name, p in model.named_parameters() if name.endswith(family.expert_parameters)]
        share = sum(p.numel() for p in experts) / sum(p.numel() for p in model.parameters())
        assert share > 0.9 and all(p.dtype == torch.bfloat16 for p in experts)


def test_qwen3_omni_active_parameters_match_the_published_3_3b():
    shape = REAL_SHAPES["Qwen/Qwen3-Omni-30B-A3B-Instruct"]
    text = shape.build_config().thinker_config.text_config
    model = empty(shape)
    language = counted(model, ("model.language_model.", "lm_head."))
    experts = sum(p.numel() for name, p in model.named_parameters()
                  if name.startswith("model.language_model.") and ".mlp.experts." in name)
    active = language - experts + experts * text.num_experts_per_tok / text.num_experts
    assert active == pytest.approx(3.3e9, rel=0.02)  # "3.3 B activated" on Qwen3-30B-A3B's card
    assert math.isclose(text.num_experts_per_tok / text.num_experts, 8 / 128)
