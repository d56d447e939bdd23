"""The released models' architectures, written down from their published config.json files, keyed by Hub id.

transformers' config defaults are not the released models (Qwen2AudioConfig() builds 12.7 B parameters with the wrong
vocabulary and MLP width; Qwen3OmniMoeThinkerConfig() has a 3,584-token vocabulary), and no model can be downloaded
here. Each entry gives every field that shapes a parameter, with its source, and the parameter totals published for
the model, which tests/test_real_shapes.py checks against a model built from it on the meta device.

Fields a config.json leaves out take the default of the transformers version that wrote it; where that default
matters (Qwen2-Audio's hidden size) it is written out here and marked so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, PretrainedConfig

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class PublishedCount:
    """A parameter total published for a model, and which part of the loaded model it counts."""

    parameters: float
    what: str
    source: str
    # Parameter-name prefixes counted (of the model the project loads); () = all of it. `built` = "full": a model
    # with every part of the checkpoint (the Omni talker too), which the project never loads
    prefixes: tuple[str, ...] = ()
    built: str = "loaded"


@dataclass(frozen=True)
class RealShape:
    hub_id: str
    config: dict[str, Any]  # config.json, the fields that shape parameters (nested as published)
    source: str
    published: tuple[PublishedCount, ...]
    # len(tokenizer) where a plan needs it (speech tokens are added after it); the embedding has padding rows past it
    tokenizer_size: int | None = None
    # The parts of the checkpoint the project does not load, for the `built="full"` counts (the Omni talker)
    full_config: dict[str, Any] = field(default_factory=dict)

    def build_config(self, full: bool = False) -> PretrainedConfig:
        """The model's config object (for the Omni models the whole checkpoint's, thinker inside)."""
        values = {**self.config, **(self.full_config if full else {})}
        return AutoConfig.for_model(**values)


# Qwen2-Audio-7B-Instruct. Source: HUB/Qwen/Qwen2-Audio-7B-Instruct/blob/main/config.json: audio_config (Whisper
# large-v3's encoder shape), text_config vocab_size 156032, intermediate_size 11008, max_position_embeddings 8192,
# rope_theta 10000, rms_norm_eps 1e-5. Its text_config omits hidden_size, num_hidden_layers, num_attention_heads and
# num_key_value_heads: the Qwen2Config defaults of transformers 4.4x (4096, 32, 32, 32), which the released weight
# shapes have (8,397,094,912 parameters in the safetensors index: 8.4 B on the model page).
QWEN2_AUDIO_7B_INSTRUCT = RealShape(
    hub_id="Qwen/Qwen2-Audio-7B-Instruct",
    source=f"{HUB}/Qwen/Qwen2-Audio-7B-Instruct/blob/main/config.json",
    config={
        "model_type": "qwen2_audio",
        "audio_token_index": 151646,
        "audio_config": {
            "model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "encoder_layers": 32,
            "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280, "max_source_positions": 1500,
            "activation_function": "gelu", "scale_embedding": False,
        },
        "text_config": {
            "model_type": "qwen2", "vocab_size": 156032, "intermediate_size": 11008, "max_position_embeddings": 8192,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "bos_token_id": 151643, "eos_token_id": 151645,
            "tie_word_embeddings": False,
            # not in config.json: transformers 4.4x Qwen2Config defaults (see above)
            "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        },
    },
    published=(
        PublishedCount(8.397e9, "the whole checkpoint (8,397,094,912 in model.safetensors.index.json; 8.4 B on the "
                       "model page)", f"{HUB}/Qwen/Qwen2-Audio-7B-Instruct"),
    ),
)


# Qwen2.5-Omni-7B: the project loads the thinker (Qwen2_5OmniThinkerForConditionalGeneration). Source:
# HUB/Qwen/Qwen2.5-Omni-7B/blob/main/config.json, thinker_config: text_config as Qwen2.5-7B (hidden 3584, MLP 18944,
# 28 layers, 28 heads, 4 KV heads, vocabulary 152064, untied head), audio_config (Whisper large-v3's encoder shape,
# n_window 100, output_dim 3584), vision_config (Qwen2.5-VL's ViT: depth 32, width 1280, MLP 3420, out 3584).
QWEN2_5_OMNI_7B = RealShape(
    hub_id="Qwen/Qwen2.5-Omni-7B",
    source=f"{HUB}/Qwen/Qwen2.5-Omni-7B/blob/main/config.json",
    config={
        "model_type": "qwen2_5_omni",
        "thinker_config": {
            "text_config": {
                "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
            },
            "audio_config": {
                "num_mel_bins": 128, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                "d_model": 1280, "max_source_positions": 1500, "n_window": 100, "output_dim": 3584,
            },
            "vision_config": {
                "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
                "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu",
            },
        },
    },
    # The talker (speech out), same source; token2wav's DiT and BigVGAN shapes are transformers' defaults, which are
    # the released ones. Only for the whole-checkpoint count: audio recipes never load them.
    full_config={
        "talker_config": {
            "hidden_size": 896, "intermediate_size": 18944, "num_hidden_layers": 24, "num_attention_heads": 12,
            "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 8448, "embedding_size": 3584,
            "tie_word_embeddings": False,
        },
    },
    published=(
        PublishedCount(10.7e9, "the whole checkpoint: thinker, talker and token2wav (10.7 B on the model page)",
                       f"{HUB}/Qwen/Qwen2.5-Omni-7B", built="full"),
        PublishedCount(7.61e9, "the thinker's language model: Qwen2.5-7B's shape (7.61 B on its model card)",
                       f"{HUB}/Qwen/Qwen2.5-7B", prefixes=("model.language_model.", "lm_head.")),
    ),
)


# Qwen3-Omni-30B-A3B-Instruct: the project loads the thinker (Qwen3OmniMoeThinkerForConditionalGeneration). Source:
# HUB/Qwen/Qwen3-Omni-30B-A3B-Instruct/blob/main/config.json, thinker_config: text_config as Qwen3-30B-A3B (48 MoE
# layers, width 2048, 32 heads, 4 KV heads, head 128, 128 experts of width 768, 8 routed per token, vocabulary
# 152064), audio_config (the AuT encoder: 32 layers, width 1280, conv stem 480, output 2048), vision_config
# (SigLIP2-So400m's shape: depth 27, width 1152, MLP 4304, patch 16, out 2048).
QWEN3_OMNI_30B_A3B_INSTRUCT = RealShape(
    hub_id="Qwen/Qwen3-Omni-30B-A3B-Instruct",
    source=f"{HUB}/Qwen/Qwen3-Omni-30B-A3B-Instruct/blob/main/config.json",
    config={
        "model_type": "qwen3_omni_moe",
        "enable_audio_output": False,  # the talker is not built: only the thinker's shapes are written here
        "thinker_config": {
            "text_config": {
                "vocab_size": 152064, "hidden_size": 2048, "intermediate_size": 768, "moe_intermediate_size": 768,
                "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
                "mlp_only_layers": [], "max_position_embeddings": 65536, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False,
            },
            "audio_config": {
                "num_mel_bins": 128, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                "d_model": 1280, "max_source_positions": 1500, "n_window": 50, "n_window_infer": 800,
                "conv_chunksize": 500, "downsample_hidden_size": 480, "output_dim": 2048,
            },
            "vision_config": {
                "depth": 27, "hidden_size": 1152, "hidden_act": "gelu_pytorch_tanh", "intermediate_size": 4304,
                "num_heads": 16, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "out_hidden_size": 2048, "num_position_embeddings": 2304,
                "deepstack_visual_indexes": [8, 16, 24],
            },
        },
    },
    published=(
        # Qwen3-Omni-30B-A3B-Thinking and -Captioner hold the thinker alone (no talker, no code2wav)
        PublishedCount(31.7e9, "the thinker: the thinker-only checkpoint Qwen3-Omni-30B-A3B-Thinking (31.7 B on its "
                       "model page)", f"{HUB}/Qwen/Qwen3-Omni-30B-A3B-Thinking"),
        PublishedCount(30.5e9, "the thinker's language model: Qwen3-30B-A3B's shape (30.5 B in total, 3.3 B "
                       "activated, on its model card)", f"{HUB}/Qwen/Qwen3-30B-A3B",
                       prefixes=("model.language_model.", "lm_head.")),
    ),
)


# Qwen3-0.6B. Source: HUB/Qwen/Qwen3-0.6B/blob/main/config.json (hidden 1024, MLP 3072, 28 layers, 16 heads, 8 KV
# heads, head 128, vocabulary 151936, tied embedding and head).
QWEN3_0_6B = RealShape(
    hub_id="Qwen/Qwen3-0.6B",
    source=f"{HUB}/Qwen/Qwen3-0.6B/blob/main/config.json",
    config={
        "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    published=(
        PublishedCount(0.6e9, "the model, embedding counted once (0.6 B; 0.44 B without the embedding, on its model "
                       "card)", f"{HUB}/Qwen/Qwen3-0.6B"),
        PublishedCount(0.44e9, "the model without its embedding (0.44 B on its model card)",
                       f"{HUB}/Qwen/Qwen3-0.6B", prefixes=("model.layers.", "model.norm.")),
    ),
    # Qwen3's tokenizer: 151643 BPE tokens + 26 added ones, the last </think> at 151668 (tokenizer_config.json)
    tokenizer_size=151669,
)


# mistralai/Voxtral-Mini-3B-2507 (VoxtralForConditionalGeneration). Its config.json, every number as it is published
# there; sources: [default] transformers' VoxtralConfig / VoxtralEncoderConfig defaults, documented as this checkpoint
# ("ensure default is 3B", huggingface/transformers#39429); [convert] transformers'
# models/voxtral/convert_voxtral_weights_to_hf.py, which writes the Hub config from Mistral's params.json (audio token
# 24, GELU projector, vocabulary and head untied: `output.weight` -> lm_head); [ports] third-party HF-style configs
# quoting its text_config (3072, 30 layers, 32 heads, 8 KV heads, head 128, MLP 8192, vocabulary 131072, rope 1e8,
# untied).
VOXTRAL_MINI_3B_2507_CONFIG: dict[str, Any] = {
    "model_type": "voxtral",
    "audio_token_id": 24,  # [convert]: [AUDIO], rank 24 of tekken's 1000 control tokens
    "projector_hidden_act": "gelu",  # [convert]
    "text_config": {  # Ministral-3B-style Llama decoder: [default], [ports]
        "model_type": "llama", "vocab_size": 131072, "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 100000000.0, "hidden_act": "silu",
        "tie_word_embeddings": False,  # [convert], [ports]
    },
    "audio_config": {  # Whisper-large-v3's encoder: [default]
        "model_type": "voxtral_encoder", "hidden_size": 1280,
        "intermediate_size": 5120,  # also the projector's input: 4 encoder frames stacked (50 Hz -> 12.5 Hz)
        "num_hidden_layers": 32, "num_attention_heads": 20, "num_mel_bins": 128,
        "max_source_positions": 1500,  # 3000 mel frames = 30 s after the stride-2 convolution
        "vocab_size": 51866,
    },
}
VOXTRAL_PAPER = "https://arxiv.org/abs/2507.13264"
VOXTRAL_MINI_3B_2507 = RealShape(
    hub_id="mistralai/Voxtral-Mini-3B-2507",
    source=f"{HUB}/mistralai/Voxtral-Mini-3B-2507/blob/main/config.json",
    config=VOXTRAL_MINI_3B_2507_CONFIG,
    # The Voxtral paper (arXiv 2507.13264), Table 1: Voxtral Mini has 4.7 B parameters: audio encoder 0.64 B, adapter
    # 25 M, text embeddings 0.4 B, decoder 3.6 B (its layers and the untied head); the Hub's "3B" counts the decoder
    published=(
        PublishedCount(4.7e9, "the whole model (Voxtral paper, Table 1)", VOXTRAL_PAPER),
        PublishedCount(0.64e9, "the audio encoder (Voxtral paper, Table 1)", VOXTRAL_PAPER,
                       prefixes=("model.audio_tower.",)),
        PublishedCount(25e6, "the adapter (Voxtral paper, Table 1)", VOXTRAL_PAPER,
                       prefixes=("model.multi_modal_projector.",)),
        PublishedCount(0.4e9, "the text embeddings (Voxtral paper, Table 1)", VOXTRAL_PAPER,
                       prefixes=("model.language_model.embed_tokens.",)),
        PublishedCount(3.6e9, "the decoder: layers, final norm and head (Voxtral paper, Table 1)", VOXTRAL_PAPER,
                       prefixes=("model.language_model.layers.", "model.language_model.norm.", "lm_head.")),
    ),
)


# nvidia/audio-flamingo-3-hf (AudioFlamingo3ForConditionalGeneration). Sources: [convert] transformers'
# models/audioflamingo3/convert_audioflamingo3_to_hf.py, the Qwen2Config it writes for the Hub checkpoint (hidden 3584,
# MLP 18944, 28 layers, 28 heads, 4 KV heads, vocabulary 151672, rope 1e6); [config] the Hub config.json as copied
# into hf-internal-testing/tiny-processor-audioflamingo3 ("created from nvidia/audio-flamingo-3-hf", real widths);
# [encoder] AudioFlamingo3EncoderConfig's defaults, documented as this checkpoint's (Whisper-large-v3's encoder).
AUDIO_FLAMINGO3_CONFIG: dict[str, Any] = {
    "model_type": "audioflamingo3",
    "audio_token_id": 151669,  # [config]: <sound>
    "projector_hidden_act": "gelu", "projector_bias": True,  # [config]
    "text_config": {
        "model_type": "qwen2",
        "hidden_size": 3584, "intermediate_size": 18944,  # [convert], [config]: Qwen2.5-7B's
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,  # [convert]
        "vocab_size": 151672,  # [convert], [config]: Qwen2.5's 151665 tokens and AF3's 7
        "rope_theta": 1000000.0,  # [convert]
        "bos_token_id": 151670,  # [config] ([BOS]; the converter's code says 151643)
        "eos_token_id": 151645,  # [convert], [config]: <|im_end|>
        "tie_word_embeddings": False,  # Qwen2.5-7B's; the published language model size counts a separate head
    },
    "audio_config": {
        "model_type": "audioflamingo3_encoder", "hidden_size": 1280, "intermediate_size": 5120,
        "num_hidden_layers": 32, "num_attention_heads": 20,  # [encoder]
        "num_mel_bins": 128, "max_source_positions": 1500,  # [encoder], [config]
    },
}
AF3_CHAT_FILES = f"{HUB}/nvidia/audio-flamingo-3-chat/tree/main"
AUDIO_FLAMINGO3 = RealShape(
    hub_id="nvidia/audio-flamingo-3-hf",
    source=f"{HUB}/nvidia/audio-flamingo-3-hf/blob/main/config.json",
    config=AUDIO_FLAMINGO3_CONFIG,
    # bf16 file sizes (2 bytes a parameter) in the file listing of nvidia/audio-flamingo-3-chat, the same architecture
    # in its original layout (llm/, sound_tower/, sound_mm_projector/): the repository 16.6 GB, llm/ 15.2 GB,
    # sound_mm_projector/model.safetensors 34.9 MB; and Qwen2.5-7B's card for the language model
    published=(
        PublishedCount(16.6e9 / 2, "the whole model (16.6 GB of bf16 weights; 8.3 B)", AF3_CHAT_FILES),
        PublishedCount(15.2e9 / 2, "the language model (llm/: 15.2 GB of bf16 weights)", AF3_CHAT_FILES,
                       prefixes=("model.language_model.", "lm_head.")),
        PublishedCount(7.61e9, "the language model: Qwen2.5-7B's shape (7.61 B on its model card; AF3's vocabulary "
                       "is 392 rows shorter)", f"{HUB}/Qwen/Qwen2.5-7B", prefixes=("model.language_model.", "lm_head.")),
        PublishedCount(34.9e6 / 2, "the projector (sound_mm_projector/: 34.9 MB of bf16 weights)", AF3_CHAT_FILES,
                       prefixes=("model.multi_modal_projector.",)),
    ),
)

REAL_SHAPES: dict[str, RealShape] = {shape.hub_id: shape for shape in (
    QWEN2_AUDIO_7B_INSTRUCT, QWEN2_5_OMNI_7B, QWEN3_OMNI_30B_A3B_INSTRUCT, QWEN3_0_6B, VOXTRAL_MINI_3B_2507,
    AUDIO_FLAMINGO3)}


def real_shape(hub_id: str) -> RealShape | None:
    """The written-down shape of a released model, or None for a model not listed here."""
    return REAL_SHAPES.get(hub_id)
