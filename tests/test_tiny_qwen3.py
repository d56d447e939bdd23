"""The tiny Qwen3: real classes, Qwen3's added tokens in order, its chat template, tied embeddings, deterministic."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Tokenizer, Qwen3ForCausalLM

from audio_recipes.testing.tiny_models import (
    QWEN3_ADDED_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    TINY_MODEL_BUILDERS,
    build_tiny_qwen3,
    smoke_check,
)
from audio_recipes.testing.tokenizer import BPE_VOCAB_SIZE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "qwen3")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


def test_registry_names_the_builder():
    assert TINY_MODEL_BUILDERS.get("qwen3") is build_tiny_qwen3


def test_two_builds_are_bit_identical(model_dir, tmp_path):
    again = build_tiny_qwen3(tmp_path / "again")
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir()) and "model.safetensors" in names
    for name in names:
        assert (model_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_model_mirrors_qwen3_0_6b(model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert isinstance(model, Qwen3ForCausalLM) and isinstance(tokenizer, Qwen2Tokenizer)
    config = model.config
    # Qwen/Qwen3-0.6B: tie_word_embeddings true, rows rounded up past the tokenizer (151936 for 151669)
    assert config.tie_word_embeddings is True
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert config.vocab_size % 64 == 0 and len(tokenizer) < config.vocab_size < len(tokenizer) + 64
    assert (config.head_dim, config.attention_bias, config.max_position_embeddings) == (16, False, 40960)
    assert config.bos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    generation = json.loads((model_dir / "generation_config.json").read_text())
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert generation["eos_token_id"] == ids and generation["pad_token_id"] == ids[1]
    assert (generation["temperature"], generation["top_k"], generation["top_p"]) == (0.6, 20, 0.95)


def test_added_tokens_follow_the_bpe_in_qwen3s_order(tokenizer):
    n_bpe = BPE_VOCAB_SIZE
    tokens = list(QWEN3_SPECIAL_TOKENS + QWEN3_ADDED_TOKENS)
    assert len(tokens) == 26  # 151643..151668 in the real tokenizer
    assert tokenizer.convert_tokens_to_ids(tokens) == list(range(n_bpe, n_bpe + 26))
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and tokens[-2:] == ["<think>", "</think>"]
    assert len(tokenizer) == n_bpe + 26
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    # Special ones are dropped by skip_special_tokens; <think>, <tool_call>... are ordinary added tokens in Qwen3
    ids = tokenizer("<|im_start|>a<think>b</think><tool_call><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a<think>b</think><tool_call>"


def test_chat_template_renders_like_qwen3(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    no_thinking = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                enable_thinking=False)
    assert no_thinking.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # The final assistant turn carries the (empty) think block, as Qwen3's template writes it
    full = tokenizer.apply_chat_template(messages[1:] + [{"role": "assistant", "content": "A"}], tokenize=False)
    assert full == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n"


def test_smoke_check_dispatches_to_the_text_lm_check(model_dir):
    figures = smoke_check(model_dir)
    assert figures["tied_embeddings"] is True and figures["tokenizer_size"] == BPE_VOCAB_SIZE + 26
    assert len(figures["new_tokens"]) == 5 and torch.isfinite(torch.tensor(figures["loss"]))
