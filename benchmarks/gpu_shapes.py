"""Real model shapes for the GPU check, built with random weights (nothing downloaded), their synthetic training
batches (padded or packed), their model FLOPs and a rough memory plan.

The shapes are a small local table, each from the released checkpoint's config.json on the Hub (sources below).
TODO(real-scale-plan): once src/audio_recipes/models/real_shapes.py and its memory planner are merged, take the
configs from there and the predicted peak from the planner, and drop REAL / plan_memory here.

Kept to torch, transformers, peft and audio_recipes' leaf modules (packing, audio.window): the GPU check runs
on a compute node with the wheels of requirements-gpu-check.txt and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from audio_recipes.audio.window import allow_short_audio_windows, short_window_samples
from audio_recipes.packing import IGNORE_INDEX, pack_rows

QWEN_LM_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NOT_LANGUAGE_MODEL = ("audio_tower", "multi_modal_projector", "visual")  # never LoRA'd, kept out of 4-bit


@dataclass(frozen=True)
class Shape:
    name: str
    model_class: str
    config_class: str
    source: str
    config: dict[str, Any]
    placeholders: str  # "whisper" (Qwen2-Audio, Qwen2.5-Omni) or "aut" (Qwen3-Omni's chunks of 100 frames)
    multimodal_rope: bool
    audio_start_token_id: int
    audio_end_token_id: int
    whisper_window: bool = False  # Qwen2-Audio: features cut to the batch's longest clip (audio.window)
    lora_modules: tuple[str, ...] = QWEN_LM_MODULES
    experts: tuple[int, int] | None = None  # (experts, routed per token) of a MoE language model


REAL = {
    "qwen2-audio-7b": Shape(
        "qwen2-audio-7b", "Qwen2AudioForConditionalGeneration", "Qwen2AudioConfig",
        "https://huggingface.co/Qwen/Qwen2-Audio-7B-Instruct/blob/main/config.json (8.397 B parameters)",
        {"text_config": {"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
                         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                         "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                         "tie_word_embeddings": False},
         "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                          "encoder_ffn_dim": 5120, "num_mel_bins": 128, "max_source_positions": 1500},
         "audio_token_index": 151646},
        "whisper", False, 151647, 151648, whisper_window=True),
    "qwen2.5-omni-7b": Shape(
        "qwen2.5-omni-7b", "Qwen2_5OmniThinkerForConditionalGeneration", "Qwen2_5OmniThinkerConfig",
        "https://huggingface.co/Qwen/Qwen2.5-Omni-7B/blob/main/config.json, thinker_config (8.93 B parameters)",
        {"text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                         "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
                         "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "use_sliding_window": False,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
         "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                          "num_mel_bins": 128, "max_source_positions": 1500, "n_window": 100, "output_dim": 3584},
         "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                           "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                           "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31]},
         "audio_token_index": 151646, "image_token_index": 151655, "video_token_index": 151656,
         "audio_start_token_id": 151647, "audio_end_token_id": 151648, "vision_start_token_id": 151652,
         "vision_end_token_id": 151653, "position_id_per_seconds": 25, "seconds_per_chunk": 2, "user_token_id": 872},
        "whisper", True, 151647, 151648),
    "qwen3-omni-30b-a3b": Shape(
        "qwen3-omni-30b-a3b", "Qwen3OmniMoeThinkerForConditionalGeneration", "Qwen3OmniMoeThinkerConfig",
        "https://huggingface.co/Qwen/Qwen3-Omni-30B-A3B-Instruct/blob/main/config.json, thinker_config (language "
        "model 30.53 B parameters, 3.3 B active)",
        {"text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 768, "num_hidden_layers": 48,
                         "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                         "max_position_embeddings": 65536, "rms_norm_eps": 1e-6, "num_experts": 128,
                         "num_experts_per_tok": 8, "moe_intermediate_size": 768, "norm_topk_prob": True,
                         "decoder_sparse_step": 1, "mlp_only_layers": [], "shared_expert_intermediate_size": 0,
                         "use_qk_norm": True, "tie_word_embeddings": False,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [24, 20, 20],
                                             "interleaved": True, "mrope_interleaved": True}},
         "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                          "num_mel_bins": 128, "max_source_positions": 1500, "n_window": 50, "n_window_infer": 800,
                          "conv_chunksize": 500, "downsample_hidden_size": 480, "output_dim": 2048},
         "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                           "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048,
                           "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]},
         "audio_token_id": 151675, "image_token_id": 151655, "video_token_id": 151656, "audio_start_token_id": 151669,
         "audio_end_token_id": 151670, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
         "position_id_per_seconds": 13, "seconds_per_chunk": 2, "user_token_id": 872},
        "aut", True, 151669, 151670, lora_modules=QWEN_LM_MODULES[:4], experts=(128, 8)),
}

# The same structures at the tiny models' widths (vocabulary and token ids kept): the `--device cpu` smoke path
TINY_WIDTHS = {
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2},
    "audio_config": {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64},
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2},
}
TINY_SPECIFIC = {
    "qwen2.5-omni-7b": {"text_config": {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                            "mrope_section": [2, 3, 3]}},
                        "audio_config": {"output_dim": 64}, "vision_config": {"out_hidden_size": 64,
                                                                              "fullatt_block_indexes": [1]}},
    "qwen3-omni-30b-a3b": {"text_config": {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                           "moe_intermediate_size": 32, "intermediate_size": 64,
                                           "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                               "mrope_section": [4, 2, 2], "interleaved": True,
                                                               "mrope_interleaved": True}},
                           "audio_config": {"downsample_hidden_size": 8, "output_dim": 64},
                           "vision_config": {"out_hidden_size": 64, "num_position_embeddings": 64,
                                             "deepstack_visual_indexes": [1]}},
}


def tiny(shape: Shape) -> Shape:
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in shape.config.items()}
    for part, widths in TINY_WIDTHS.items():
        if part in config:
            config[part].update(widths)
    for part, values in TINY_SPECIFIC.get(shape.name, {}).items():
        config[part].update(values)
    experts = (4, 2) if shape.experts else None
    return Shape(**{**shape.__dict__, "config": config, "experts": experts})


def build_config(shape: Shape):
    import transformers

    return getattr(transformers, shape.config_class)(**shape.config)


def build_model(shape: Shape, device: str, dtype: torch.dtype):
    """Random weights, initialised on the device (a 7B model in seconds on a GPU, no file read)."""
    import transformers

    if shape.whisper_window:
        allow_short_audio_windows()
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, shape.model_class)._from_config(build_config(shape), dtype=dtype)
    return model


def placeholder_count(shape: Shape, frames: int) -> int:
    if shape.placeholders == "whisper":
        return (((frames - 1) // 2 + 1) - 2) // 2 + 1
    chunks, rest = divmod(frames, 100)  # Qwen3-Omni's AuT: chunks of 100 frames -> 13 positions each
    for _ in range(3):
        rest = (rest - 1) // 2 + 1 if rest else 0
    return chunks * 13 + rest


def audio_token_id(config) -> int:
    return getattr(config, "audio_token_id", None) or config.audio_token_index


@dataclass
class Example:
    ids: list[int]
    labels: list[int]
    frames: int | None  # mel frames of its clip (None: text only)


def length_mix(count: int, seed: int) -> list[float]:
    """Clip seconds: log-normal, median 4 s, sigma 0.7, within 0.5-30 s (as benchmarks/real_width.py)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(4.0), 0.7, count), 0.5, 30.0).tolist()


def synthetic_examples(shape: Shape, config, count: int, seed: int) -> list[Example]:
    """Chat-shaped rows: system and user text, the clip's placeholders between its start and end tokens, then an
    answer (trained) and the end of turn. Text ids are random ordinary tokens."""
    rng = np.random.default_rng(seed + 1)
    audio = audio_token_id(config)
    im_start, im_end = 151644, 151645
    examples = []
    for seconds in length_mix(count, seed):
        frames = int(round(seconds * 100))
        prompt = ([im_start, *rng.integers(0, 150000, 20).tolist(), im_end, im_start]
                  + [shape.audio_start_token_id, *[audio] * placeholder_count(shape, frames), shape.audio_end_token_id]
                  + rng.integers(0, 150000, int(rng.integers(10, 40))).tolist() + [im_end, im_start])
        answer = [*rng.integers(0, 150000, int(rng.integers(5, 60))).tolist(), im_end]
        examples.append(Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, frames))
    return examples


def features(shape: Shape, examples: list[Example], seed: int) -> dict[str, torch.Tensor]:
    """Random log-mel features, one row per clip, padded to the batch's longest clip (Qwen2-Audio: its cut window)."""
    frames = [example.frames for example in examples if example.frames]
    longest = max(frames)
    if shape.whisper_window:
        longest = short_window_samples(longest * 160, 160, 480000) // 160
    generator = torch.Generator().manual_seed(seed)
    mels = torch.randn(len(frames), 128, longest, generator=generator)
    mask = torch.zeros(len(frames), longest, dtype=torch.long)
    for row, count in enumerate(frames):
        mask[row, :count] = 1
        mels[row, :, count:] = 0
    return {"input_features": mels, "feature_attention_mask": mask}


def padded_batch(shape: Shape, examples: list[Example], pad_id: int, seed: int) -> dict[str, torch.Tensor]:
    longest = max(len(example.ids) for example in examples)
    ids = torch.full((len(examples), longest), pad_id)
    labels = torch.full((len(examples), longest), IGNORE_INDEX)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, :len(example.ids)] = torch.tensor(example.ids)
        labels[row, :len(example.ids)] = torch.tensor(example.labels)
        mask[row, :len(example.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, **features(shape, examples, seed)}


def packed_batch(shape: Shape, examples: list[Example], seed: int) -> dict[str, torch.Tensor]:
    return {**pack_rows([e.ids for e in examples], [e.labels for e in examples], shape.multimodal_rope),
            **features(shape, examples, seed)}


# ---------------------------------------------------------------- FLOPs and memory


@dataclass
class Counts:
    """Parameter counts that set the FLOPs and the memory (matrices in the token path, as run per token)."""

    total: int
    language_model_matmul: int  # per token: attention, dense MLP or routed experts only, lm_head
    audio_encoder: int
    trainable: int = 0
    extra: dict = field(default_factory=dict)


def parameter_counts(model, shape: Shape) -> Counts:
    total = lm = encoder = 0
    routed = shape.experts[1] / shape.experts[0] if shape.experts else 1.0
    for name, parameter in model.named_parameters():
        count = parameter.numel() * (2 if getattr(parameter, "quant_state", None) is not None else 1)
        total += count
        parts = name.split(".")
        if "audio_tower" in parts:
            encoder += count
        elif not any(part in NOT_LANGUAGE_MODEL for part in parts) and "embed_tokens" not in parts and (
                parameter.ndim >= 2):
            lm += count * (routed if ".experts." in name else 1)
    return Counts(total, int(lm), encoder)


def training_flops(counts: Counts, config, method: str, lengths: list[int], encoder_positions: int) -> float:
    """Model FLOPs of one step (no recomputation counted): matrices 2 per parameter and token forward, backward 4
    (full) or 2 (frozen base: activations' gradients only); causal attention 2 * 2 * layers * width * context per
    token forward, backward twice that; the frozen audio encoder forward on its positions."""
    text = config.get_text_config()
    tokens = sum(lengths)
    matrices = 2 * counts.language_model_matmul * tokens * (3 if method == "full" else 2)
    width = text.num_attention_heads * (getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    attention = 3 * sum(4 * text.num_hidden_layers * width * (length + 1) / 2 * length for length in lengths)
    encoder = 2 * counts.audio_encoder * encoder_positions
    return matrices + attention + encoder


def plan_memory(counts: Counts, config, method: str, positions: int, trainable: int) -> float:
    """Rough peak bytes: weights (bf16, or 4-bit language-model matrices for QLoRA), bf16 gradients and two AdamW
    states of the trainable parameters, checkpointed layer inputs plus one layer's activations, and the logits in
    float32 with their gradient."""
    text = config.get_text_config()
    if method == "qlora":
        weights = (counts.total - counts.language_model_matmul) * 2 + counts.language_model_matmul * 0.55
    else:
        weights = counts.total * 2
    states = trainable * (2 + 4)
    hidden, layers = text.hidden_size, text.num_hidden_layers
    inner = getattr(text, "intermediate_size", 4 * hidden)
    activations = positions * (layers * hidden * 2 + (16 * hidden + 6 * inner) * 2)
    logits = positions * text.vocab_size * (2 + 4 + 4)
    return weights + states + activations + logits


GPU_BF16_PEAK_TFLOPS = {  # dense bf16, from the vendors' data sheets
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.2,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    for key in sorted(GPU_BF16_PEAK_TFLOPS, key=len, reverse=True):  # the most specific name first
        if key.lower() in device_name.lower():
            return GPU_BF16_PEAK_TFLOPS[key]
    return None


def round_gib(value: float) -> float:
    return math.floor(value / 2**30 * 100 + 0.5) / 100
