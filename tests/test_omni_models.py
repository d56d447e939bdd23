"""The Qwen2.5-Omni and Qwen3-Omni (MoE) thinkers: tiny checkpoints in the Hub's layout, thinker-only loading,
audio-only processors, LoRA presets (experts included), 4-bit training, adapter merging, SFT."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model
from safetensors import safe_open

from audio_recipes.config import ModelArguments
from audio_recipes.models import (
    family_for_model_type,
    load_model_and_processor,
    load_processor,
    lora_config,
    merge_adapter,
    model_class_for,
)
from audio_recipes.testing import tiny_omni_models
from audio_recipes.testing.tiny_models import TINY_MODEL_BUILDERS, ensure_tiny_model, smoke_check

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
OMNI = {"qwen2.5-omni": "qwen2_5_omni", "qwen3-omni-moe": "qwen3_omni_moe"}
THINKER_CLASSES = {"qwen2.5-omni": "Qwen2_5OmniThinkerForConditionalGeneration",
                   "qwen3-omni-moe": "Qwen3OmniMoeThinkerForConditionalGeneration"}
SPEECH_PARTS = {"qwen2.5-omni": ("talker", "token2wav"), "qwen3-omni-moe": ("talker", "code2wav")}
SYSTEM = "Be brief."


def sine(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def audio_chat(text: str = "What is this?") -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module", params=list(OMNI))
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(name) -> Path:
    return ensure_tiny_model(name)


@pytest.fixture(scope="module")
def processor(name, model_dir):
    return load_processor(str(model_dir), model_type=OMNI[name])


def checkpoint_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(model_dir / "model.safetensors", "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def hub_tensor(tensors: dict[str, torch.Tensor], parameter: str) -> torch.Tensor:
    """The Hub checkpoint's tensor for a parameter of the loaded thinker: keys under `thinker.`, the text model at
    `thinker.model`, and Qwen3's experts one tensor per expert and projection (gate and up fused on load)."""
    if parameter.startswith("model.language_model."):
        key = "thinker.model." + parameter.removeprefix("model.language_model.")
    else:
        key = "thinker." + parameter.removeprefix("model.")
    if key.endswith("mlp.experts.gate_up_proj") or key.endswith("mlp.experts.down_proj"):
        prefix, projection = key.rsplit(".", 1)
        count = sum(1 for k in tensors if k.startswith(prefix + ".") and k.endswith(".down_proj.weight"))
        parts = ("gate_proj", "up_proj") if projection == "gate_up_proj" else ("down_proj",)
        return torch.stack([torch.cat([tensors[f"{prefix}.{e}.{p}.weight"] for p in parts]) for e in range(count)])
    return tensors[key]


# ---------------------------------------------------------------- 1. the tiny checkpoints


def test_builders_are_registered_and_builds_are_bit_identical(name, model_dir, tmp_path):
    again = TINY_MODEL_BUILDERS.get(name)(tmp_path / name)
    built = sorted(p.name for p in model_dir.iterdir() if p.name != "tiny_model_build.json")
    assert built == sorted(p.name for p in again.iterdir())
    for file in built:
        assert (model_dir / file).read_bytes() == (again / file).read_bytes(), f"{file} differs between builds"


def test_checkpoint_is_laid_out_as_the_hub_full_omni_model(name, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == OMNI[name]
    assert config["enable_audio_output"] is True
    assert {"thinker_config", "talker_config"} <= set(config)
    prefixes = {key.split(".")[0] for key in checkpoint_tensors(model_dir)}
    assert prefixes == {"thinker", *SPEECH_PARTS[name]}
    preprocessor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert preprocessor["processor_class"] == {"qwen2.5-omni": "Qwen2_5OmniProcessor",
                                               "qwen3-omni-moe": "Qwen3OmniMoeProcessor"}[name]
    assert (preprocessor["feature_extractor_type"], preprocessor["feature_size"]) == ("WhisperFeatureExtractor", 128)
    assert preprocessor["image_processor_type"] == "Qwen2VLImageProcessor"


def test_qwen3_experts_are_stored_one_tensor_per_expert_as_on_the_hub():
    keys = checkpoint_tensors(ensure_tiny_model("qwen3-omni-moe"))
    for expert in range(4):
        for projection in ("gate_proj", "up_proj", "down_proj"):
            assert f"thinker.model.layers.0.mlp.experts.{expert}.{projection}.weight" in keys


@pytest.mark.parametrize("name_, specials, named", [
    ("qwen2.5-omni", tiny_omni_models.QWEN2_5_OMNI_SPECIAL_TOKENS + tiny_omni_models.QWEN2_5_OMNI_ADDED_TOKENS,
     tiny_omni_models.QWEN2_5_OMNI_NAMED_TOKENS),
    ("qwen3-omni-moe", tiny_omni_models.QWEN3_OMNI_SPECIAL_TOKENS + tiny_omni_models.QWEN3_OMNI_ADDED_TOKENS
     + tiny_omni_models.QWEN3_OMNI_AUDIO_TOKENS, tiny_omni_models.QWEN3_OMNI_NAMED_TOKENS),
])
def test_added_tokens_follow_the_bpe_in_qwen_order_and_the_config_names_them(name_, specials, named):
    model_dir = ensure_tiny_model(name_)
    tokenizer = load_processor(str(model_dir), model_type=OMNI[name_]).tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(specials))
    assert ids == list(range(ids[0], ids[0] + len(specials)))  # 151643.. in the real vocabularies
    assert ids[0] == 2048 and len(tokenizer) == 2048 + len(specials)
    for attribute, token in named.items():
        assert getattr(tokenizer, attribute) == token
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    thinker = json.loads((model_dir / "config.json").read_text())["thinker_config"]
    audio_id = thinker.get("audio_token_id", thinker.get("audio_token_index"))
    assert audio_id == tokenizer.convert_tokens_to_ids(named["audio_token"])
    # <think> is an ordinary token (kept in decoded text, where answer extraction removes the reasoning)
    if "<think>" in specials:
        think = tokenizer.convert_tokens_to_ids("<think>")
        assert tokenizer.decode([think, 100], skip_special_tokens=True).startswith("<think>")


def test_qwen2_5_omni_template_as_published():
    processor = load_processor(str(ensure_tiny_model("qwen2.5-omni")), model_type="qwen2_5_omni")
    assert processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>What is this?<|im_end|>\n<|im_start|>assistant\n")
    # Without a system turn the template adds Qwen's default one
    assert processor.apply_chat_template(audio_chat()[1:], tokenize=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")


def test_qwen3_omni_template_renders_contents_in_place_and_keeps_the_last_reasoning():
    processor = load_processor(str(ensure_tiny_model("qwen3-omni-moe")), model_type="qwen3_omni_moe")
    assert processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>What is this?<|im_end|>\n<|im_start|>assistant\n")
    text_turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nA tone.\n</think>\n\nB"}]
    assert processor.apply_chat_template(text_turns, tokenize=False) == (  # no default system turn, as Qwen3
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nA tone.\n</think>\n\nB<|im_end|>\n")
    assert processor.apply_chat_template(text_turns[:1], tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False).endswith("assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_processor_expands_audio_into_the_encoder_output_length(name, processor, seconds):
    prompt = processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=prompt, audio=[sine(seconds)], sampling_rate=SR, return_tensors="pt")
    frames = int(seconds * 100)
    if name == "qwen2.5-omni":  # Whisper-style: stride-2 conv, stride-2 pooling; features padded to the window
        expected, padded = (((frames - 1) // 2 + 1) - 2) // 2 + 1, 3000
    else:  # AuT: 13 tokens per 100-frame chunk (three stride-2 convs) plus the rest's; padded to the clip
        chunks, rest = divmod(frames, 100)
        for _ in range(3):
            rest = (rest - 1) // 2 + 1 if rest else 0
        expected, padded = 13 * chunks + rest, frames
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(processor.audio_token_id) == expected
    first = ids.index(processor.audio_token_id)
    assert ids[first - 1] == processor.tokenizer.convert_tokens_to_ids(processor.audio_bos_token)
    assert ids[first + expected] == processor.tokenizer.convert_tokens_to_ids(processor.audio_eos_token)
    assert tuple(inputs["input_features"].shape) == (1, 128, padded)
    assert int(inputs["feature_attention_mask"].sum()) == frames


def test_smoke_check_loads_processes_forwards_and_generates(name, model_dir):
    figures = smoke_check(model_dir)
    assert figures["num_audio_tokens"] == {"qwen2.5-omni": 25, "qwen3-omni-moe": 13}[name]
    assert np.isfinite(figures["loss"]) and len(figures["new_tokens"]) == 5


# ---------------------------------------------------------------- 2. the thinker alone, from the full checkpoint


def test_full_omni_checkpoint_loads_as_its_thinker_without_the_talker(name, model_dir):
    model, processor, resolved = load_model_and_processor(ModelArguments(model_name_or_path=str(model_dir)),
                                                          for_training=False)
    assert type(model).__name__ == THINKER_CLASSES[name] and resolved.adapter is None
    modules = [module_name for module_name, _ in model.named_modules()]
    assert not [m for m in modules if any(part in m.split(".") for part in SPEECH_PARTS[name])]
    tensors = checkpoint_tensors(model_dir)
    parameters = dict(model.named_parameters())
    for parameter, value in parameters.items():
        assert torch.equal(value.detach(), hub_tensor(tensors, parameter)), parameter
    # Every thinker tensor of the checkpoint is in the model; the talker's are left on disk
    assert sum(v.numel() for v in parameters.values()) == sum(
        v.numel() for k, v in tensors.items() if k.startswith("thinker."))
    assert isinstance(processor, family_for_model_type(OMNI[name]).audio_only_processor)


def test_a_saved_thinker_loads_back_by_its_own_model_type(name, model_dir, tmp_path):
    model = model_class_for(OMNI[name]).from_pretrained(model_dir)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == OMNI[name] + "_thinker"
    again = model_class_for(OMNI[name] + "_thinker").from_pretrained(tmp_path)
    assert type(again) is type(model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))


def test_audio_only_processor_is_the_real_class_and_saves_as_it(name, processor, tmp_path):
    real = family_for_model_type(OMNI[name]).audio_only_processor.__mro__[2]
    assert real.__name__ == type(processor).__name__ and isinstance(processor, real)
    assert real.__module__.startswith("transformers.models.")
    assert not hasattr(processor, "video_processor") and not hasattr(processor, "image_processor")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == real.__name__
    again = load_processor(str(tmp_path), model_type=OMNI[name])
    prompt = processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True)
    first, second = (p(text=prompt, audio=[sine(1.3)], sampling_rate=SR, return_tensors="pt") for p in (processor, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ---------------------------------------------------------------- 3. LoRA presets


def lora_targets(model) -> tuple[set[str], set[str]]:
    """Names of the modules holding LoRA weights, and of the parameters wrapped by LoRA (PEFT's ParamWrapper)."""
    modules = {n.split(".lora_")[0] for n, _ in model.named_parameters() if ".lora_" in n}
    wrapped = {f"{n}.{m.parameter_name}".replace(".base_layer", "") for n, m in model.named_modules()
               if type(m).__name__ == "ParamWrapper"}
    return {m for m in modules if not m.endswith(".experts") and ".experts." not in m}, wrapped


@pytest.mark.parametrize("name_, preset", [("qwen2.5-omni", "attention"), ("qwen2.5-omni", "attention_mlp"),
                                           ("qwen3-omni-moe", "attention"), ("qwen3-omni-moe", "attention_experts")])
def test_lora_presets_reach_the_language_model_only(name_, preset):
    model = model_class_for(OMNI[name_]).from_pretrained(ensure_tiny_model(name_))
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset=preset, lora_dropout=0.0))
    modules, wrapped = lora_targets(get_peft_model(model, config))
    projections = {"attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
                   "attention_mlp": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                   "attention_experts": ("q_proj", "k_proj", "v_proj", "o_proj")}[preset]
    prefix = "base_model.model.model.language_model.layers"
    assert modules == {f"{prefix}.{layer}.{'self_attn' if p.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{p}"
                       for layer in range(2) for p in projections}
    experts = {f"{prefix}.{layer}.mlp.experts.{p}" for layer in range(2) for p in ("gate_up_proj", "down_proj")}
    assert wrapped == (experts if preset == "attention_experts" else set())


def test_expert_preset_trains_the_experts_lora_and_leaves_their_weights(tmp_path):
    model = model_class_for("qwen3_omni_moe").from_pretrained(ensure_tiny_model("qwen3-omni-moe"))
    peft_model = get_peft_model(model, lora_config(ModelArguments(
        use_peft=True, lora_target_preset="attention_experts", lora_dropout=0.0, lora_r=4)))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    experts = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "experts" in n}
    ids = torch.randint(0, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    after = dict(peft_model.named_parameters())
    changed = {n for n in experts if not torch.equal(experts[n], after[n])}
    assert changed and all(".lora_" in n for n in changed)
    assert any("experts" in n and "lora_B" in n for n in changed)


def test_expert_preset_refuses_what_peft_cannot_do():
    with pytest.raises(ValueError, match="lora_dropout: 0"):
        lora_config(ModelArguments(use_peft=True, lora_target_preset="attention_experts", lora_dropout=0.05))
    dense = model_class_for("qwen2_5_omni").from_pretrained(ensure_tiny_model("qwen2.5-omni"))
    with pytest.raises(ValueError, match="no mlp.experts.gate_up_proj, mlp.experts.down_proj"):
        lora_config(ModelArguments(use_peft=True, lora_target_preset="attention_experts", lora_dropout=0.0), dense)


# ---------------------------------------------------------------- 4. SFT and merging (4-bit: tests/test_training.py)


# SFT (the loss sees the audio and falls, frozen parts stay): tests/test_family_sft.py


@pytest.mark.parametrize("name_, preset", [("qwen2.5-omni", "attention_mlp"), ("qwen3-omni-moe", "attention_experts")])
def test_merged_adapter_gives_the_unmerged_logits(name_, preset, tmp_path):
    model_dir = ensure_tiny_model(name_)
    model = model_class_for(OMNI[name_]).from_pretrained(model_dir)
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset=preset, lora_dropout=0.0, lora_r=4))
    config.init_lora_weights = False  # random A and B, so that the adapter changes the outputs
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    args = dict(model_name_or_path=str(tmp_path / "adapter"))
    adapted, processor, resolved = load_model_and_processor(ModelArguments(**args), for_training=False)
    assert resolved.adapter is not None
    prompt = processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], audio=[sine(1.2)], sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        unmerged = adapted.eval()(**inputs).logits
        with adapted.disable_adapter():
            base = adapted(**inputs).logits
        merged_model = merge_adapter(adapted)
        merged = merged_model(**inputs).logits
    assert (unmerged - base).abs().max() > 0.1  # the adapter matters...
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=0)  # ...and merging keeps what it does
    assert type(merged_model).__name__ == THINKER_CLASSES[name_]
    assert not any(".lora_" in n or "base_layer" in n for n, _ in merged_model.named_parameters())


def run_evaluate(args: list[str], monkeypatch, capsys) -> dict:
    """scripts/evaluate.py as a user runs it (in this process); its metrics line."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args])
    runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_omni_recipe_evaluates_an_adapter_merged_or_not_with_the_same_answers(name, tmp_path, monkeypatch, capsys):
    preset = {"qwen2.5-omni": "attention_mlp", "qwen3-omni-moe": "attention_experts"}[name]
    base = model_class_for(OMNI[name]).from_pretrained(ensure_tiny_model(name))
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset=preset, lora_dropout=0.0, lora_r=4))
    config.init_lora_weights = False
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    recipe_file = ROOT / "recipes" / "tiny" / f"mmar_{OMNI[name].removesuffix('_moe')}.yaml"
    outputs = {}
    for merge in ("false", "true"):
        metrics = run_evaluate([str(recipe_file), "--model_name_or_path", str(tmp_path / "adapter"), "--output_dir",
                                str(tmp_path / f"merge-{merge}"), "--max_eval_samples", "3", "--max_new_tokens", "8",
                                "--merge_adapter", merge], monkeypatch, capsys)
        assert metrics["num_gold"] == 3 and metrics["num_missing"] == 0
        rows = [json.loads(line) for line in (tmp_path / f"merge-{merge}" / "raw_outputs.jsonl").open()]
        outputs[merge] = [row["raw_output"] for row in rows]
    assert len(outputs["true"]) == 3 and outputs["true"] == outputs["false"]
