"""Tiny Qwen2.5-Omni and Qwen3-Omni-MoE checkpoints, laid out as the Hub publishes the real ones.

``Qwen/Qwen2.5-Omni-7B`` and ``Qwen/Qwen3-Omni-30B-A3B-Instruct`` are *full* Omni checkpoints: one ``config.json``
of model type ``qwen2_5_omni`` / ``qwen3_omni_moe`` holding ``thinker_config``, ``talker_config`` and the speech
decoder's config, and one set of weights prefixed ``thinker.``, ``talker.`` and ``token2wav.`` / ``code2wav.`` (the
Qwen3 experts stored one per tensor, ``experts.0.gate_proj.weight``). The builders here write that layout from the
real classes (``Qwen2_5OmniForConditionalGeneration``, ``Qwen3OmniMoeForConditionalGeneration``) with random
weights, so that loading the thinker alone, without the talker, is tested on what a user downloads.

Beside the weights: a byte-level BPE trained here (the Qwen2-Audio tiny model's) with each model's added tokens in
Qwen's order after it (the real ids start at 151643), the named multimodal tokens the processors read
(``audio_token`` ...), the model's chat template, and the processor files (``preprocessor_config.json`` with the
Whisper feature extractor's and the image processor's settings, ``processor_class`` naming the real processor).

Departures from the real checkpoints, each for speed on CPU: every dimension is tiny; the Qwen2.5-Omni feature
extractor pads to 30 s rather than the Hub's 300 s (its processor always pads to the full window, and 300 s of
features cost over a second a clip on CPU; transformers' own processor tests make the same change).
"""

from __future__ import annotations

import json
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen/Qwen2.5-Omni-7B's added tokens, in id order from 151643: special ones, then ordinary ones
QWEN2_5_OMNI_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT, IM_START, IM_END, "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
)
QWEN2_5_OMNI_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
QWEN2_5_OMNI_NAMED_TOKENS = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Qwen/Qwen3-Omni-30B-A3B-*: Qwen3's 26 added tokens (151643..151668), then the Omni ones from 151669
# (<|audio_start|> 151669, <|audio_end|> 151670, the talker's tts markers 151671..151674, <|audio_pad|> 151675)
QWEN3_OMNI_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>",
)
QWEN3_OMNI_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
QWEN3_OMNI_AUDIO_TOKENS: tuple[str, ...] = (
    "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>",
    "<|audio_pad|>",
)
QWEN3_OMNI_NAMED_TOKENS = {
    "audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>",
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}

# Qwen/Qwen2.5-Omni-7B's chat template, verbatim: a default system turn, audio as <|audio_bos|><|AUDIO|><|audio_eos|>
QWEN2_5_OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-Omni's template is Qwen3's (no default system turn; <think> kept on the turns after the last user query)
# with multimodal contents rendered in place: audio as <|audio_start|><|audio_pad|><|audio_end|>, text right after
QWEN3_OMNI_CHAT_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}{%- else -%}{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif item.type == 'audio' or 'audio' in item or 'audio_url' in item -%}<|audio_start|><|audio_pad|><|audio_end|>
{%- elif item.type == 'video' or 'video' in item -%}<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in item -%}{{- item.text -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if messages[0].role == 'system' -%}
{{- '<|im_start|>system\\n' + render(messages[0].content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) -%}
{%- for message in messages[::-1] -%}
{%- set index = (messages|length - 1) - loop.index0 -%}
{%- if ns.multi_step_tool and message.role == 'user' and message.content is string and \
not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) -%}
{%- set ns.multi_step_tool = false -%}{%- set ns.last_query_index = index -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- set content = render(message.content) -%}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) -%}
{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' -}}
{%- elif message.role == 'assistant' -%}
{%- set reasoning_content = '' -%}
{%- if message.reasoning_content is string -%}{%- set reasoning_content = message.reasoning_content -%}
{%- elif '</think>' in content -%}
{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}
{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) -%}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') -}}
{%- else -%}{{- '<|im_start|>assistant\\n' + content -}}{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}
"""

# The Hub's preprocessor_config.json: Whisper features (128 mels, 16 kHz) and the Qwen2-VL image processor's settings
_WHISPER_FEATURES = {
    "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128, "sampling_rate": 16000,
    "hop_length": 160, "n_fft": 400, "dither": 0.0, "padding_side": "right", "padding_value": 0.0,
    "return_attention_mask": True,
}
_QWEN2_VL_IMAGES = {
    "image_processor_type": "Qwen2VLImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "min_pixels": 3136, "max_pixels": 12845056,
    "temporal_patch_size": 2, "merge_size": 2,
}
QWEN2_5_OMNI_PREPROCESSOR = {
    **_WHISPER_FEATURES, **_QWEN2_VL_IMAGES, "patch_size": 14, "processor_class": "Qwen2_5OmniProcessor",
    "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000,  # the Hub's: 300, 4800000, 30000
}
QWEN3_OMNI_PREPROCESSOR = {
    **_WHISPER_FEATURES, **_QWEN2_VL_IMAGES, "patch_size": 16, "processor_class": "Qwen3OmniMoeProcessor",
    "chunk_length": 300, "n_samples": 4800000, "nb_max_frames": 30000,  # padded to the batch's longest clip
}

SEED = 0
VOCAB_MULTIPLE = 64


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def omni_tokenizer(special_tokens: tuple[str, ...], added_tokens: tuple[str, ...], named_tokens: dict[str, str],
                   chat_template: str, trailing_special_tokens: tuple[str, ...] = ()):
    """The tiny byte-level BPE as a ``Qwen2Tokenizer``, with the given added tokens in order after its vocabulary.

    ``special_tokens`` and ``trailing_special_tokens`` (added after the ordinary ``added_tokens``) are special, so
    decoding with ``skip_special_tokens`` drops them; ``named_tokens`` become attributes (``tokenizer.audio_token``)
    as the Hub's tokenizer configs make them; ``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from audio_recipes.testing.tokenizer import train_bpe

    backend = train_bpe()
    n_bpe = backend.get_vocab_size()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in trailing_special_tokens])
    specials = [t for t in special_tokens + trailing_special_tokens if t != ENDOFTEXT]
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None, bos_token=None,
        extra_special_tokens=specials, chat_template=chat_template, model_max_length=32768, errors="replace",
        clean_up_tokenization_spaces=False, split_special_tokens=False, **named_tokens,
    )
    order = list(special_tokens + added_tokens + trailing_special_tokens)
    ids = tokenizer.convert_tokens_to_ids(order)
    if ids != list(range(n_bpe, n_bpe + len(order))):
        raise RuntimeError(f"added token ids {ids} are not {n_bpe}..{n_bpe + len(order) - 1}")
    return tokenizer


def _ids(tokenizer, *tokens: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(tokens))


def _first_id(tokenizer, word: str) -> int:
    # Qwen's vocabulary has "user", "system", "assistant" as single tokens; the tiny BPE splits them. Only the
    # talker reads these role ids, so the first piece stands in for each.
    return tokenizer.encode(word, add_special_tokens=False)[0]


def _save_processor_files(output_dir: Path, tokenizer, preprocessor: dict) -> None:
    """Tokenizer, chat template and preprocessor_config.json as the Hub's repository has them.

    Written directly rather than through the processor class: ``Qwen2_5OmniProcessor`` cannot be built without
    torchvision (its video processor needs it), and these folders must build on CPU-only machines too.
    """
    tokenizer.save_pretrained(output_dir)
    (output_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2, sort_keys=True) + "\n")


def _he_init_audio_stem(model) -> None:
    """Re-draw the audio encoder's convolutional stem with He initialisation (std sqrt(2 / fan_in)).

    At the default std 0.02 each conv shrinks its input ~50x, so after the stem the sinusoidal position embedding
    swamps the audio and a random encoder's output barely depends on it (Qwen3-Omni's three-conv stem: a
    1e-6 change in the audio embeddings between a tone and silence). Trained encoders keep the signal; so does this.
    """
    import torch

    generator = torch.Generator().manual_seed(SEED)
    for name, module in model.named_modules():
        stem = isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) or name.endswith("audio_tower.conv_out")
        if "audio_tower" in name and stem:
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5, generator=generator)


def _save(model, output_dir: Path, tokenizer, preprocessor: dict) -> Path:
    import torch

    _he_init_audio_stem(model)
    model = model.to(torch.float32).eval()
    with _silenced_config_warnings():  # saving builds each config class's defaults, which warn the same way
        model.save_pretrained(output_dir)
    _save_processor_files(output_dir, tokenizer, preprocessor)
    return output_dir


def _silenced_config_warnings():
    """The real configs' talker token ids are text ids, outside the talker's own (codec) vocabulary, which
    transformers logs about (for the released checkpoints too)."""
    from transformers.utils import logging

    class Silenced:
        def __enter__(self):
            self.level = logging.get_verbosity()
            logging.set_verbosity_error()

        def __exit__(self, *exc):
            logging.set_verbosity(self.level)

    return Silenced()


# ----------------------------------------------------------------------------------------------------------
# Qwen2.5-Omni


def qwen2_5_omni_config(tokenizer):
    """Qwen2.5-Omni-7B's structure at tiny sizes: thinker (Qwen2 text model with M-RoPE, Whisper-style audio
    encoder with 2 s windows, ViT), talker and token2wav (DiT + BigVGAN)."""
    from transformers import Qwen2_5OmniConfig

    endoftext, im_end, audio, audio_bos, audio_eos, vision_bos, vision_eos, image, video = _ids(
        tokenizer, ENDOFTEXT, IM_END, "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|vision_bos|>",
        "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>")
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}  # real: [16, 24, 24]
    text = {
        "vocab_size": _round_up(len(tokenizer), VOCAB_MULTIPLE), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_parameters": rope, "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": 32768, "max_window_layers": 2, "bos_token_id": endoftext, "eos_token_id": im_end,
        "pad_token_id": endoftext,
    }
    audio_encoder = {
        "num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32,
        "max_source_positions": 1500, "n_window": 100, "output_dim": 64,
    }
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
    }
    thinker = {
        "text_config": text, "audio_config": audio_encoder, "vision_config": vision, "audio_token_index": audio,
        "image_token_index": image, "video_token_index": video, "audio_start_token_id": audio_bos,
        "audio_end_token_id": audio_eos, "vision_start_token_id": vision_bos, "vision_end_token_id": vision_eos,
        "user_token_id": _first_id(tokenizer, "user"), "position_id_per_seconds": 25, "seconds_per_chunk": 2,
    }
    codec_size = 64
    talker = {
        "vocab_size": codec_size, "embedding_size": 64, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "rope_parameters": rope, "audio_token_index": audio, "image_token_index": image, "video_token_index": video,
        "vision_start_token_id": vision_bos, "vision_end_token_id": vision_eos, "audio_start_token_id": audio_bos,
        "audio_end_token_id": audio_eos, "tts_codec_start_token_id": codec_size - 4,
        "tts_codec_end_token_id": codec_size - 3, "tts_codec_pad_token_id": codec_size - 2,
        "tts_codec_mask_token_id": codec_size - 1,
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ff_mult": 2, "emb_dim": 16,
            "head_dim": 16, "num_embeds": codec_size, "mel_dim": 16, "enc_emb_dim": 16, "enc_dim": 16,
            "enc_channels": [16, 16, 16, 16, 48], "enc_attention_channels": 8, "enc_se_channels": 8,
            "look_ahead_layers": [1], "look_backward_layers": [0],
        },
        "bigvgan_config": {
            # 64 channels, halved by each of the 6 upsampling layers, leave 1 (32 left none: an empty layer)
            "mel_dim": 16, "upsample_initial_channel": 64, "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
    }
    with _silenced_config_warnings():
        return Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav,
                                 enable_audio_output=True, architectures=["Qwen2_5OmniForConditionalGeneration"])


def build_tiny_qwen2_5_omni(output_dir: Path) -> Path:
    """Write a tiny random ``Qwen2_5OmniForConditionalGeneration`` checkpoint (thinker, talker, token2wav)."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = omni_tokenizer(QWEN2_5_OMNI_SPECIAL_TOKENS, QWEN2_5_OMNI_ADDED_TOKENS, QWEN2_5_OMNI_NAMED_TOKENS,
                               QWEN2_5_OMNI_CHAT_TEMPLATE)
    config = qwen2_5_omni_config(tokenizer)
    with torch.random.fork_rng(devices=[]), _silenced_config_warnings():
        torch.manual_seed(SEED)
        model = Qwen2_5OmniForConditionalGeneration(config)
    return _save(model, output_dir, tokenizer, QWEN2_5_OMNI_PREPROCESSOR)


# ----------------------------------------------------------------------------------------------------------
# Qwen3-Omni (MoE)


def qwen3_omni_config(tokenizer):
    """Qwen3-Omni-30B-A3B's structure at tiny sizes: thinker (Qwen3-MoE text model, 4 experts of which 2 are
    routed per token, M-RoPE; the AuT audio encoder with its conv2d stem; ViT), MoE talker with code predictor,
    and code2wav."""
    from transformers import Qwen3OmniMoeConfig

    endoftext, im_start, im_end, audio, audio_start, audio_end, vision_start, vision_end, image, video = _ids(
        tokenizer, ENDOFTEXT, IM_START, IM_END, "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>",
        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    tts_pad, tts_bos, tts_eos = _ids(tokenizer, "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>")
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2], "interleaved": True,
            "mrope_interleaved": True}  # real: [24, 20, 20] for head_dim 128
    text = {
        "vocab_size": _round_up(len(tokenizer), VOCAB_MULTIPLE), "hidden_size": 64, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 65536, "rms_norm_eps": 1e-6, "rope_parameters": rope, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "shared_expert_intermediate_size": 0, "use_qk_norm": True,
        "tie_word_embeddings": False, "bos_token_id": endoftext, "eos_token_id": im_end, "pad_token_id": endoftext,
    }
    audio_encoder = {
        "num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32,
        "max_source_positions": 1500, "n_window": 50, "n_window_infer": 800, "conv_chunksize": 500,
        "downsample_hidden_size": 8, "output_dim": 64,
    }
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64, "num_position_embeddings": 64,
        "deepstack_visual_indexes": [1],
    }
    thinker = {
        "text_config": text, "audio_config": audio_encoder, "vision_config": vision, "audio_token_id": audio,
        "image_token_id": image, "video_token_id": video, "audio_start_token_id": audio_start,
        "audio_end_token_id": audio_end, "vision_start_token_id": vision_start, "vision_end_token_id": vision_end,
        "position_id_per_seconds": 13, "seconds_per_chunk": 2, "user_token_id": _first_id(tokenizer, "user"),
    }
    codec_size = 64
    talker = {
        "text_config": {
            "vocab_size": codec_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "rope_parameters": rope,
            "num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 32,
        },
        "code_predictor_config": {
            "vocab_size": codec_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "num_code_groups": 4,
        },
        "num_code_groups": 4, "thinker_hidden_size": 64, "accept_hidden_layer": 1,
        "codec_pad_id": codec_size - 8, "codec_bos_id": codec_size - 7, "codec_eos_token_id": codec_size - 6,
        "codec_nothink_id": codec_size - 5, "codec_think_bos_id": codec_size - 4, "codec_think_eos_id": codec_size - 3,
        "speaker_id": {"chelsie": codec_size - 2, "ethan": codec_size - 1}, "audio_token_id": audio,
        "image_token_id": image, "video_token_id": video, "vision_start_token_id": vision_start,
        "audio_start_token_id": audio_start, "audio_end_token_id": audio_end, "position_id_per_seconds": 13,
        "seconds_per_chunk": 2, "spatial_merge_size": 2,
    }
    code2wav = {
        "codebook_size": codec_size, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64, "num_hidden_layers": 1, "num_quantizers": 4, "decoder_dim": 32,
    }
    with _silenced_config_warnings():
        return Qwen3OmniMoeConfig(
            thinker_config=thinker, talker_config=talker, code2wav_config=code2wav, enable_audio_output=True,
            im_start_token_id=im_start, im_end_token_id=im_end, tts_pad_token_id=tts_pad, tts_bos_token_id=tts_bos,
            tts_eos_token_id=tts_eos, system_token_id=_first_id(tokenizer, "system"),
            user_token_id=_first_id(tokenizer, "user"), assistant_token_id=_first_id(tokenizer, "assistant"),
            architectures=["Qwen3OmniMoeForConditionalGeneration"],
        )


def build_tiny_qwen3_omni_moe(output_dir: Path) -> Path:
    """Write a tiny random ``Qwen3OmniMoeForConditionalGeneration`` checkpoint (thinker, talker, code2wav)."""
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = omni_tokenizer(QWEN3_OMNI_SPECIAL_TOKENS, QWEN3_OMNI_ADDED_TOKENS, QWEN3_OMNI_NAMED_TOKENS,
                               QWEN3_OMNI_CHAT_TEMPLATE, trailing_special_tokens=QWEN3_OMNI_AUDIO_TOKENS)
    config = qwen3_omni_config(tokenizer)
    with torch.random.fork_rng(devices=[]), _silenced_config_warnings():
        torch.manual_seed(SEED)
        model = Qwen3OmniMoeForConditionalGeneration(config)
        # transformers 5.23 leaves the talker's experts as allocated (torch.empty): draw them, or builds differ
        for parameter_name, parameter in model.talker.named_parameters():
            if ".experts." in parameter_name:
                torch.nn.init.normal_(parameter, std=config.talker_config.initializer_range)
    return _save(model, output_dir, tokenizer, QWEN3_OMNI_PREPROCESSOR)
