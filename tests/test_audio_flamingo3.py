"""Audio Flamingo 3 as one family spec: the tiny checkpoint (real classes, AF3's tokens and template, deterministic),
the processor's placeholder rule, batched generation, LoRA presets, SFT, evaluation through scripts/evaluate.py.
(The released architecture's size: tests/test_real_shapes.py; its loss masks token by token: tests/test_collators.py; its window cut:
tests/test_audio_window.py; QLoRA: tests/test_training.py; GRPO: tests/test_grpo.py.)"""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from peft import get_peft_model
from transformers import AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor, Qwen2Tokenizer
from trl import SFTConfig

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.decoding import generate_batch
from audio_recipes.models import (
    family_for_model_type,
    family_for_processor,
    load_model_and_processor,
    load_processor,
    lora_config,
    model_class_for,
)
from audio_recipes.models.families import AUDIO_FLAMINGO3
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.recipe import parse_recipe
from audio_recipes.tasks.base import Example
from audio_recipes.testing import tiny_audio_flamingo3 as af3
from audio_recipes.testing.tiny_models import TINY_MODEL_BUILDERS, ensure_tiny_model, smoke_check
from audio_recipes.testing.tokenizer import BPE_VOCAB_SIZE

ROOT = Path(__file__).resolve().parents[1]
NAME = "audio-flamingo3"
SR = 16000
SYSTEM = "Be brief."


def sine(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def audio_chat(text: str = "What is this?", system: bool = True) -> list[dict]:
    user = {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}]}
    return [{"role": "system", "content": SYSTEM}, user] if system else [user]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return ensure_tiny_model(NAME)


@pytest.fixture(scope="module")
def processor(model_dir):
    return load_processor(str(model_dir), model_type="audioflamingo3")


@pytest.fixture(scope="module")
def model(model_dir):
    return model_class_for("audioflamingo3").from_pretrained(model_dir).eval()


# ---------------------------------------------------------------- 1. the tiny checkpoint


def test_builder_is_registered_and_builds_are_bit_identical(model_dir, tmp_path):
    assert TINY_MODEL_BUILDERS.get(NAME) is af3.build_tiny_audio_flamingo3
    assert AUDIO_FLAMINGO3.tiny_model == NAME
    again = af3.build_tiny_audio_flamingo3(tmp_path / NAME)
    built = sorted(p.name for p in model_dir.iterdir() if p.name != "tiny_model_build.json")
    assert built == sorted(p.name for p in again.iterdir())
    assert {"model.safetensors", "chat_template.jinja", "processor_config.json", "tokenizer.json"} <= set(built)
    for file in built:
        assert (model_dir / file).read_bytes() == (again / file).read_bytes(), f"{file} differs between builds"


def test_loads_with_the_real_classes_and_the_family(model_dir, processor, model):
    assert type(processor) is AudioFlamingo3Processor and isinstance(processor.tokenizer, Qwen2Tokenizer)
    assert type(model) is AudioFlamingo3ForConditionalGeneration
    assert family_for_processor(processor) is AUDIO_FLAMINGO3 is family_for_model_type(model.config.model_type)
    extractor = processor.feature_extractor
    assert (extractor.feature_size, extractor.sampling_rate, extractor.n_samples, extractor.nb_max_frames) == (
        128, SR, 30 * SR, 3000)
    config = model.config
    assert (config.audio_config.num_mel_bins, config.audio_config.max_source_positions) == (128, 1500)
    assert config.text_config.model_type == "qwen2" and config.text_config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    vocab = config.text_config.vocab_size
    assert vocab % 64 == 0 and len(processor.tokenizer) <= vocab < len(processor.tokenizer) + 64
    # The family's module names are the model's: encoder, projector, and a Qwen2 language model's projections
    modules = {name.split(".")[1] for name, _ in model.named_modules() if name.count(".") >= 1 and
               name.startswith("model.")}
    assert {*AUDIO_FLAMINGO3.audio_encoder, *AUDIO_FLAMINGO3.projector, "language_model"} == modules
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.model.language_model.named_modules()}
    assert set(AUDIO_FLAMINGO3.attention_modules + AUDIO_FLAMINGO3.mlp_modules) <= leaves


def test_added_tokens_follow_the_bpe_in_af3_order_and_the_configs_name_them(model_dir, processor, model):
    tokenizer = processor.tokenizer
    order = list(af3.QWEN2_5_SPECIAL_TOKENS + af3.QWEN2_5_ADDED_TOKENS + af3.AF3_SPECIAL_TOKENS)
    assert len(order) == 29 and len(tokenizer) == BPE_VOCAB_SIZE + 29  # 151643..151671 in the real vocabulary
    assert tokenizer.convert_tokens_to_ids(order) == list(range(BPE_VOCAB_SIZE, BPE_VOCAB_SIZE + 29))
    # <sound> at 151669 - 151643 past the first added token, [BOS] one after it, as in the released config
    sound = tokenizer.convert_tokens_to_ids("<sound>")
    assert sound - BPE_VOCAB_SIZE == af3.RELEASED_AUDIO_TOKEN_ID - 151643
    assert model.config.audio_token_id == processor.audio_token_id == sound
    assert model.config.text_config.bos_token_id == tokenizer.convert_tokens_to_ids("[BOS]")
    assert model.config.text_config.bos_token_id - BPE_VOCAB_SIZE == af3.RELEASED_TEXT_CONFIG["bos_token_id"] - 151643
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "[PAD]", "[BOS]")
    # No [BOS] prepended (the released tokenizer's prompts start at <|im_start|>)
    assert tokenizer("hi there")["input_ids"] == tokenizer("hi there", add_special_tokens=False)["input_ids"]
    # Special tokens are dropped when decoding; Qwen2.5's ordinary added tokens are kept
    text_ids = tokenizer("hi", add_special_tokens=False)["input_ids"]
    tool_call = tokenizer.convert_tokens_to_ids("<tool_call>")
    assert tokenizer.decode([sound, tool_call, *text_ids], skip_special_tokens=True) == "<tool_call>hi"
    generation = json.loads((model_dir / "generation_config.json").read_text())
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert (generation["eos_token_id"], generation["pad_token_id"]) == ([im_end, endoftext], endoftext)
    assert generation["top_p"] == 0.8 and generation["repetition_penalty"] == 1.05


def test_template_as_published_for_processor_and_tokenizer(processor):
    expected = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
                "<|im_start|>user\n<sound>What is this?<|im_end|>\n<|im_start|>assistant\n")
    assert processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True) == expected
    assert processor.tokenizer.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True) == expected
    # A default system turn; <sound> first whatever the order of the contents
    text_first = [{"role": "user", "content": [{"type": "text", "text": "Q?"}, {"type": "audio", "audio_url": "a"}]}]
    assert processor.apply_chat_template(text_first, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound>Q?<|im_end|>\n")


@pytest.mark.parametrize("seconds", [1.0, 2.37, 31.0, 65.5])
def test_family_placeholder_rule_is_the_processors_count(processor, seconds):
    """The family's count (used for length-grouped batching without decoding) equals what the processor expands,
    over 30 s windows for the long clips."""
    clip = sine(seconds)
    prompt = processor.apply_chat_template(audio_chat(), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=prompt, audio=[clip], sampling_rate=SR, return_tensors="pt")
    expanded = int((inputs["input_ids"] == processor.audio_token_id).sum())
    assert AUDIO_FLAMINGO3.placeholder_count(processor, len(clip)) == expanded
    windows = -(-len(clip) // (30 * SR))
    assert tuple(inputs["input_features"].shape) == (windows, 128, 3000)  # one 30 s window each, padded
    frames = -(-len(clip) // 160)
    assert int(inputs["input_features_mask"].sum()) == frames
    assert expanded == ((frames - 1) // 2 + 1 - 2) // 2 + 1  # stride-2 convolution, pooling by 2


def test_smoke_check_loads_processes_forwards_and_generates(model_dir):
    figures = smoke_check(model_dir)
    assert figures["num_audio_tokens"] == 25 and np.isfinite(figures["loss"]) and len(figures["new_tokens"]) == 5


# ---------------------------------------------------------------- 2. generation and LoRA


@pytest.fixture(scope="module")
def clip_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("af3_clips")
    rows = []
    for index, (seconds, frequency) in enumerate([(2.3, 220.0), (0.7, 880.0), (1.6, 440.0), (None, None)]):
        path = None
        if seconds:
            path = folder / f"clip{index}.wav"
            sf.write(path, sine(seconds, frequency), SR)
        rows.append(Example(id=f"r{index}", audio=str(path) if path else None, system=SYSTEM,
                            prompt=f"What is clip {index}?" + " Answer in a word." * index, completion="x",
                            reference="{}"))
    return rows


def test_batched_generation_is_one_by_one_generation(model, processor, clip_rows):
    """Left-padded batches (clips of different lengths, a row without audio) generate what each row does alone."""
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left")
    settings = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False,
                "pad_token_id": processor.tokenizer.pad_token_id}
    with torch.no_grad():
        batched = generate_batch(model, collator, clip_rows, **settings)
        alone = [generate_batch(model, collator, [row], **settings)[0] for row in clip_rows]
    assert batched == alone
    assert len(set(alone)) > 1  # the rows differ: the comparison means something
    # and the audio is what the model answers about: silence instead of the first clip changes its answer
    batch = collator([clip_rows[0].to_row()])
    with torch.no_grad():
        heard = model.generate(**batch, **settings)
        silent = model.generate(**{**batch, "input_features": torch.zeros_like(batch["input_features"])}, **settings)
    assert not torch.equal(heard, silent)


@pytest.mark.parametrize("preset", ["attention", "attention_mlp"])
def test_lora_presets_reach_the_language_model_only(model_dir, preset):
    model = model_class_for("audioflamingo3").from_pretrained(model_dir)
    peft_model = get_peft_model(model, lora_config(ModelArguments(use_peft=True, lora_target_preset=preset), model))
    modules = {name.split(".lora_")[0] for name, _ in peft_model.named_parameters() if ".lora_" in name}
    projections = {"attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
                   "attention_mlp": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    prefix = "base_model.model.model.language_model.layers"
    assert modules == {f"{prefix}.{layer}.{'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{p}"
                       for layer in range(2) for p in projections[preset]}
    # The encoder has q/k/v projections of its own: none of them got LoRA
    encoder_projections = [name for name, _ in peft_model.named_modules() if ".audio_tower." in name
                           and name.endswith(("q_proj", "k_proj", "v_proj"))]
    assert encoder_projections and not any(".lora_" in name for name, _ in peft_model.named_parameters()
                                           if ".audio_tower." in name or ".multi_modal_projector." in name)


# ---------------------------------------------------------------- 3. SFT through the project's trainer


def recipe(tmp_path, base, *overrides):
    model_args, task_args, training_args, _ = parse_recipe(
        (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
        [str(ROOT / "recipes" / "tiny" / f"{base}.yaml"), "--output_dir", str(tmp_path / base), *overrides])
    return model_args, task_args, training_args


# SFT (the loss sees the audio and falls, frozen parts stay): tests/test_family_sft.py


def test_unfrozen_encoder_trains_but_its_fixed_positions_stay(tmp_path):
    model_args, task_args, training_args = recipe(
        tmp_path, "slurp_audio_flamingo3", "--max_steps", "2", "--max_train_samples", "4",
        "--per_device_train_batch_size", "4", "--freeze_audio_encoder", "false", "--freeze_projector", "false")
    run = build_trainer(model_args, task_args, training_args)
    model = run.trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run.trainer.train()
    after = dict(model.named_parameters())
    positions = [name for name in before if name.endswith("audio_tower.embed_positions.weight")]
    assert positions and all(torch.equal(before[name], after[name]) for name in positions)
    for part in (".audio_tower.layers.", ".multi_modal_projector."):
        assert any(not torch.equal(before[name], after[name]) for name in before if part in name), part


# ---------------------------------------------------------------- 4. evaluation through scripts/evaluate.py


def run_evaluate(args: list[str], monkeypatch, capsys) -> dict:
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args])
    runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_tiny_recipe_evaluates_an_adapter_merged_or_not_with_the_same_answers(model_dir, tmp_path, monkeypatch,
                                                                              capsys):
    base = model_class_for("audioflamingo3").from_pretrained(model_dir)
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset="attention_mlp", lora_dropout=0.0,
                                        lora_r=4), base)
    config.init_lora_weights = False  # random A and B: the adapter changes the answers
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    recipe_file = ROOT / "recipes" / "tiny" / "mmar_audio_flamingo3.yaml"
    outputs = {}
    for merge in ("false", "true"):
        metrics = run_evaluate([str(recipe_file), "--model_name_or_path", str(tmp_path / "adapter"), "--output_dir",
                                str(tmp_path / f"merge-{merge}"), "--max_eval_samples", "3", "--max_new_tokens", "8",
                                "--merge_adapter", merge], monkeypatch, capsys)
        assert metrics["num_gold"] == 3 and metrics["num_missing"] == 0
        rows = [json.loads(line) for line in (tmp_path / f"merge-{merge}" / "raw_outputs.jsonl").open()]
        outputs[merge] = [row["raw_output"] for row in rows]
    assert len(outputs["true"]) == 3 and outputs["true"] == outputs["false"]
    # The adapter is on the loaded model: the base model answers otherwise
    adapted, _, resolved = load_model_and_processor(ModelArguments(model_name_or_path=str(tmp_path / "adapter")),
                                                    for_training=False)
    assert resolved.adapter is not None and type(adapted.get_base_model()) is AudioFlamingo3ForConditionalGeneration
