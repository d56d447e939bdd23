"""Small models of the real architectures for measuring memory on CPU: a tiny model's folder (its processor,
tokenizer and chat template) with wider, deeper layers and the real vocabulary size, random weights.

The tiny models are too small for memory to tell anything (their embedding is a few hundred rows); these keep every
part of the real layer structure (GQA, q/k norms, experts, the audio encoder, an untied or tied head) at widths a CPU
trains in seconds, and the released vocabulary, which sizes the embedding, the head and the loss.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from audio_recipes.testing.tiny_models import ensure_tiny_model

SEED = 0

# name -> (tiny model it starts from, overrides by sub-config path)
SCALED_MODELS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    # Qwen2-Audio: full multi-head attention, MLP 2.69 x hidden as the 7B's 11008 / 4096, untied head
    "qwen2-audio-small": ("qwen2-audio", {
        "text_config": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                        "num_key_value_heads": 8, "intermediate_size": 688, "vocab_size": 156032},
        "audio_config": {"d_model": 128, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 512},
    }),
    # Qwen3-0.6B: GQA 2:1, q/k norms, head 32, MLP 3 x hidden, tied embedding and head
    "qwen3-small": ("qwen3", {
        "": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
             "head_dim": 32, "intermediate_size": 768, "vocab_size": 151936, "tie_word_embeddings": True},
    }),
    # Qwen3-Omni thinker: MoE in every layer (16 experts, 4 routed), GQA 8:1, q/k norms (head 16 keeps M-RoPE's
    # sections), untied head
    "qwen3-omni-moe-small": ("qwen3-omni-moe", {
        "thinker_config.text_config": {"hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 16,
                                       "num_key_value_heads": 2, "num_experts": 16, "num_experts_per_tok": 4,
                                       "moe_intermediate_size": 96, "vocab_size": 152064},
        "thinker_config.audio_config": {"d_model": 128, "encoder_layers": 2, "encoder_attention_heads": 4,
                                        "encoder_ffn_dim": 512, "output_dim": 256},
        "thinker_config.vision_config": {"out_hidden_size": 256},
        "talker_config": {"thinker_hidden_size": 256},
    }),
    # Qwen2.5-Omni thinker: GQA 8:1 (head 16 keeps M-RoPE's sections), MLP 5.3 x hidden, untied head
    "qwen2.5-omni-small": ("qwen2.5-omni", {
        "thinker_config.text_config": {"hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 16,
                                       "num_key_value_heads": 2, "intermediate_size": 1352, "vocab_size": 152064},
        "thinker_config.audio_config": {"d_model": 128, "encoder_layers": 2, "encoder_attention_heads": 4,
                                        "encoder_ffn_dim": 512, "output_dim": 256},
        "thinker_config.vision_config": {"out_hidden_size": 256},
        "talker_config": {"embedding_size": 256},
    }),
}


def _sub_config(config, path: str):
    for name in filter(None, path.split(".")):
        config = getattr(config, name)
    return config


def build_scaled_model(name: str, output_dir: Path, tiny_root: Path | None = None) -> Path:
    """Write `name` (SCALED_MODELS) into output_dir: the tiny model's processor files, the scaled weights."""
    import torch
    import transformers
    from transformers import AutoConfig

    tiny_name, overrides = SCALED_MODELS[name]
    tiny = ensure_tiny_model(tiny_name, root=tiny_root)
    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return output_dir
    staging = output_dir.with_name(output_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    config = AutoConfig.from_pretrained(tiny)
    for path, values in overrides.items():
        sub_config = _sub_config(config, path)
        for key, value in values.items():
            setattr(sub_config, key, value)
        layer_types = getattr(sub_config, "layer_types", None)
        if layer_types and len(layer_types) != sub_config.num_hidden_layers:  # one entry per layer
            sub_config.layer_types = [layer_types[0]] * sub_config.num_hidden_layers
            if hasattr(sub_config, "max_window_layers"):
                sub_config.max_window_layers = sub_config.num_hidden_layers
    model_class = getattr(transformers, config.architectures[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.to(torch.float32).save_pretrained(staging)
    for file in tiny.iterdir():  # the processor, tokenizer, chat template and generation config, as the tiny model's
        if file.is_file() and file.suffix != ".safetensors" and file.name not in ("config.json", "tiny_model_build.json"):
            shutil.copy2(file, staging / file.name)
    staging.rename(output_dir)
    return output_dir
