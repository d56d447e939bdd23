"""A tiny Audio Flamingo 3 (``nvidia/audio-flamingo-3-hf``), from the real classes, with random weights.

What mirrors the Hub checkpoint (as converted by transformers' ``convert_audioflamingo3_to_hf.py`` and loaded by
transformers 5):

* model: ``AudioFlamingo3ForConditionalGeneration`` (an AF-Whisper encoder, 128 mel bins, 1500 positions, then
  stride-2 pooling; a two-layer GELU projector with biases; a Qwen2 language model with untied ``lm_head``),
  ``audio_token_id`` = id of ``<sound>``, ``bos_token_id`` of the text config = id of ``[BOS]``;
* processor: ``AudioFlamingo3Processor`` = ``WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)``
  (16 kHz, 30 s windows, clips longer than 30 s cut into several) + ``Qwen2Tokenizer``; one ``<sound>`` in the text
  per clip, which the processor expands to one token per pooled encoder frame;
* the tokenizer: the project's byte-level BPE (audio_recipes.testing.tokenizer) with the real added tokens after it in
  the real order (151643.. in the real vocabulary): Qwen2.5's 22, then AF3's 7, ``<sound>`` at 151669; eos
  ``<|im_end|>``, pad ``[PAD]``, bos ``[BOS]`` (never prepended);
* one chat template (``chat_template.jinja``) for processor and tokenizer, the converter's: a default system turn,
  a user turn's ``<sound>`` before its text whatever the order of the contents;
* generation config: the converter's (eos ``<|im_end|>`` and ``<|endoftext|>``, pad ``<|endoftext|>``, sampling by
  default: pass ``do_sample=False`` for reproducible generation).

Departures, for speed on CPU: every width is tiny, and the audio encoder's convolutional stem is drawn with He
initialisation (as the Omni builders do) so that a random encoder's output depends on the audio.
"""

from __future__ import annotations

from pathlib import Path

from audio_recipes.models.real_shapes import AUDIO_FLAMINGO3_CONFIG

SEED = 0
VOCAB_MULTIPLE = 64

SOUND = "<sound>"
BOS = "[BOS]"
PAD = "[PAD]"
ENDOFTEXT = "<|endoftext|>"
IM_END = "<|im_end|>"

# Qwen2.5's added tokens (151643..151664): 14 special, then 8 ordinary ones that decoding keeps
QWEN2_5_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT, "<|im_start|>", IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>",
)
QWEN2_5_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
# AF3's own special tokens (151665..151671; vocabulary 151672). From the Hub config: <sound> = audio_token_id 151669,
# [BOS] = text_config.bos_token_id 151670, [PAD] the last id. The VILA media tokens before them (NVIDIA/audio-flamingo
# llava/constants.py: SENTINEL_TOKEN, MEDIA_TOKENS speech then sound; NVILA's tokenizer: <vila/sentinel>, <image>,
# <vila/video>) in the order the code adds them: an inference, the Hub's tokenizer_config.json was not at hand.
AF3_SPECIAL_TOKENS: tuple[str, ...] = ("<vila/sentinel>", "<image>", "<vila/video>", "<speech>", SOUND, BOS, PAD)

# transformers' convert_audioflamingo3_to_hf.py, processor_chat_template, verbatim
AF3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages if m['content'] is not none %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}"
    "{{ m['content'] }}"
    "{% else %}"
    "{% set audio = namespace(found=False) %}"
    "{% set text_buf = namespace(v='') %}"
    "{% for c in m['content'] %}"
    "{% if c.get('type') == 'audio' or 'audio' in c %}"
    "{% set audio.found = True %}"
    "{% elif c.get('type') == 'text' or 'text' in c %}"
    "{% set text_buf.v = text_buf.v + c['text'] %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if audio.found %}{{ '<sound>' }}{% endif %}{{ text_buf.v }}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# The converter's generation_config.json
GENERATION_SETTINGS = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20, "top_p": 0.8}

TEXT_CONFIG = {  # the released widths: RELEASED_TEXT_CONFIG
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
}
AUDIO_CONFIG = {  # the released widths: real_shapes.AUDIO_FLAMINGO3
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "num_mel_bins": 128,
    "max_source_positions": 1500,  # 3000 mel frames (30 s) after the stride-2 convolution, as the real one
}


# The released nvidia/audio-flamingo-3-hf: audio_recipes.models.real_shapes.AUDIO_FLAMINGO3 (every number with its
# source); the tiny model keeps its token ids and its non-width settings
RELEASED_TEXT_CONFIG = AUDIO_FLAMINGO3_CONFIG["text_config"]
RELEASED_AUDIO_TOKEN_ID = AUDIO_FLAMINGO3_CONFIG["audio_token_id"]


# ----------------------------------------------------------------------------------------------------------
# The tiny model


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def af3_tokenizer():
    """The tiny BPE as a ``Qwen2Tokenizer`` with AF3's added tokens, in order, right after its vocabulary."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from audio_recipes.testing.tokenizer import train_bpe

    backend = train_bpe()
    n_bpe = backend.get_vocab_size()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_5_SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN2_5_ADDED_TOKENS])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in AF3_SPECIAL_TOKENS])
    specials = [t for t in QWEN2_5_SPECIAL_TOKENS + AF3_SPECIAL_TOKENS if t not in (IM_END, BOS, PAD)]
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend, eos_token=IM_END, pad_token=PAD, bos_token=BOS, unk_token=None,
        extra_special_tokens=specials, chat_template=AF3_CHAT_TEMPLATE, model_max_length=8192, errors="replace",
        clean_up_tokenization_spaces=False, split_special_tokens=False,
    )
    order = list(QWEN2_5_SPECIAL_TOKENS + QWEN2_5_ADDED_TOKENS + AF3_SPECIAL_TOKENS)
    ids = tokenizer.convert_tokens_to_ids(order)
    if ids != list(range(n_bpe, n_bpe + len(order))):
        raise RuntimeError(f"added token ids {ids} are not {n_bpe}..{n_bpe + len(order) - 1}")
    return tokenizer


def audio_flamingo3_config(tokenizer):
    from transformers import AudioFlamingo3Config

    sound, bos, im_end = tokenizer.convert_tokens_to_ids([SOUND, BOS, IM_END])
    text = {"model_type": "qwen2", **TEXT_CONFIG, "vocab_size": _round_up(len(tokenizer), VOCAB_MULTIPLE),
            "bos_token_id": bos, "eos_token_id": im_end}
    audio = {"model_type": "audioflamingo3_encoder", **AUDIO_CONFIG}
    return AudioFlamingo3Config(audio_config=audio, text_config=text, audio_token_id=sound,
                                projector_hidden_act="gelu", projector_bias=True,
                                architectures=["AudioFlamingo3ForConditionalGeneration"])


def _he_init_audio_stem(model, generator) -> None:
    """At the default std 0.02 each convolution shrinks its input ~50x and the sinusoid-sized position embedding
    swamps the audio; He initialisation (std sqrt(2 / fan_in)) keeps the signal, as a trained encoder does."""
    import torch

    for conv in (model.model.audio_tower.conv1, model.model.audio_tower.conv2):
        with torch.no_grad():
            conv.weight.normal_(0.0, (2.0 / conv.weight[0].numel()) ** 0.5, generator=generator)


def build_tiny_audio_flamingo3(output_dir: Path) -> Path:
    """Write a tiny random ``AudioFlamingo3ForConditionalGeneration`` + ``AudioFlamingo3Processor``."""
    import torch
    from transformers import (
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        GenerationConfig,
        WhisperFeatureExtractor,
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = af3_tokenizer()
    processor = AudioFlamingo3Processor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
        tokenizer=tokenizer, chat_template=AF3_CHAT_TEMPLATE,
    )
    config = audio_flamingo3_config(tokenizer)
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's RNG state alone
        torch.manual_seed(SEED)
        model = AudioFlamingo3ForConditionalGeneration(config)
        _he_init_audio_stem(model, torch.Generator().manual_seed(SEED))
    model = model.to(torch.float32).eval()
    endoftext, im_end = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    model.generation_config = GenerationConfig(bos_token_id=endoftext, eos_token_id=[im_end, endoftext],
                                               pad_token_id=endoftext, **GENERATION_SETTINGS)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
