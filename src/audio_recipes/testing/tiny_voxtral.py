"""A tiny Voxtral checkpoint, laid out as the Hub publishes ``mistralai/Voxtral-Mini-3B-2507``.

The real classes with random weights: ``VoxtralForConditionalGeneration`` (Whisper-style encoder, 4 frames stacked
into the projector, Llama decoder, untied head) and ``VoxtralProcessor`` (Whisper feature extractor: 128 mels,
16 kHz, 30 s chunks; mistral_common's tokenizer through ``MistralCommonBackend``). The tokenizer is a ``tekken.json``
written here, deterministically: a byte-level BPE trained on the project's fixed corpus with Tekken's split
pattern, after the 1000 special tokens of mistral_common's audio layout (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2,
``[INST]`` 3, ``[/INST]`` 4, ... ``<pad>`` 11, ..., ``[SYSTEM_PROMPT]`` 17, ``[/SYSTEM_PROMPT]`` 18, ``[AUDIO]`` 24,
``[BEGIN_AUDIO]`` 25, ``[TRANSCRIBE]`` 34), so the control ids are the real ones and text ids start at 1000, as
there. Its ``audio`` entry is Voxtral's (16 kHz, 12.5 tokens a second, 30 s chunks): a clip of up to 30 s expands
to 375 ``[AUDIO]`` tokens.

Departures, for speed: every width is tiny and the BPE has 2048 ranks (the real one 130072 of 150000).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

SEED = 0
BPE_RANKS = 2048
NUM_SPECIAL_TOKENS = 1000  # tekken reserves the first 1000 ids for control tokens
TEKKEN_VERSION = "v7"  # the version whose instruct tokenizer gained audio (mistral_common's test_tokenizer_v7_audio)
# Tekken's pre-tokenisation split, as mistral_common ships it in data/tekken_240911.json
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Named control tokens by rank: mistral_common's deprecated (pre-v7) 20, then the audio ones where Voxtral has them
NAMED_SPECIAL_TOKENS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]",
}
AUDIO = {  # tekken.json's audio entry: Whisper features at 16 kHz, 50 Hz encoder frames stacked by 4 -> 12.5 Hz
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    "chunk_length_s": 30.0,
}
TEXT_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 131072,  # as the real text_config
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000000.0,  # as the real text_config
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
AUDIO_CONFIG = {
    "model_type": "voxtral_encoder",
    "hidden_size": 32,
    "intermediate_size": 128,  # 4 x hidden_size: the projector stacks 4 encoder frames, as 5120 = 4 x 1280
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_mel_bins": 128,
    "max_source_positions": 1500,  # the encoder takes whole 30 s chunks (3000 frames)
}
# Whisper-large-v3's feature extractor, which the Voxtral checkpoints ship (preprocessor_config.json)
FEATURE_EXTRACTOR_KWARGS = {
    "feature_size": 128, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
    "padding_value": 0.0, "return_attention_mask": False,
}
AUDIO_TOKEN_ID, BEGIN_AUDIO_ID, PAD_ID = 24, 25, 11


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable character map, which byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def bpe_ranks(size: int = BPE_RANKS) -> list[bytes]:
    """Tekken's ranks: the 256 bytes in order, then the merges of a byte-level BPE trained on the project's fixed
    corpus with Tekken's split pattern, in merge order."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    from audio_recipes.testing.tokenizer import _tokenizer_corpus

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                        byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = BpeTrainer(vocab_size=size, min_frequency=1, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}
    ranks = [bytes([byte]) for byte in range(256)]
    for left, right in json.loads(bpe.to_str())["model"]["merges"]:
        ranks.append(bytes(byte_of[c] for c in left + right))
    if len(set(ranks)) != len(ranks) or len(ranks) != size:
        raise RuntimeError(f"BPE ranks are not {size} distinct byte strings")
    return ranks


def _token_str(token: bytes) -> str | None:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return None


def special_tokens() -> list[dict]:
    """All 1000 control tokens: the named ones at their ranks, `<SPECIAL_i>` (Tekkenizer's filler name) elsewhere."""
    return [{"rank": rank, "token_str": NAMED_SPECIAL_TOKENS.get(rank, f"<SPECIAL_{rank}>"), "is_control": True}
            for rank in range(NUM_SPECIAL_TOKENS)]


def tekken_json() -> dict:
    ranks = bpe_ranks()
    return {
        "config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": len(ranks),
                   "default_vocab_size": NUM_SPECIAL_TOKENS + len(ranks),
                   "default_num_special_tokens": NUM_SPECIAL_TOKENS, "version": TEKKEN_VERSION},
        "vocab": [{"rank": rank, "token_bytes": base64.b64encode(token).decode("ascii"), "token_str": _token_str(token)}
                  for rank, token in enumerate(ranks)],
        "special_tokens": special_tokens(),
        "audio": AUDIO,
    }


def build_tiny_voxtral(output_dir: Path) -> Path:
    """Write a tiny random ``VoxtralForConditionalGeneration`` + ``VoxtralProcessor`` into ``output_dir``."""
    import torch
    from transformers import (
        GenerationConfig,
        MistralCommonBackend,
        VoxtralConfig,
        VoxtralForConditionalGeneration,
        VoxtralProcessor,
        WhisperFeatureExtractor,
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tekken = tekken_json()
    tekken_path = output_dir / "tekken.json"
    tekken_path.write_text(json.dumps(tekken, ensure_ascii=False) + "\n", encoding="utf-8")
    tokenizer = MistralCommonBackend(tokenizer_path=str(tekken_path))
    processor = VoxtralProcessor(feature_extractor=WhisperFeatureExtractor(**FEATURE_EXTRACTOR_KWARGS),
                                 tokenizer=tokenizer)

    vocab_size = tekken["config"]["default_vocab_size"]  # the model's rows are the tokenizer's ids, as released
    config = VoxtralConfig(text_config={**TEXT_CONFIG, "vocab_size": vocab_size}, audio_config=AUDIO_CONFIG,
                           audio_token_id=AUDIO_TOKEN_ID, projector_hidden_act="gelu")
    config.architectures = ["VoxtralForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's RNG state alone
        torch.manual_seed(SEED)
        model = VoxtralForConditionalGeneration(config)
    _he_init_audio_stem(model)
    model = model.to(torch.float32).eval()
    # What the released checkpoints' generation_config.json holds (the conversion script sets pad 11)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=PAD_ID)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    _match_hub_processor_layout(output_dir)
    return output_dir


def _match_hub_processor_layout(output_dir: Path) -> None:
    """The Hub checkpoint keeps the feature extractor's settings in ``preprocessor_config.json`` (naming the
    processor class) beside ``tekken.json``; transformers 5 writes them nested in ``processor_config.json``."""
    nested = output_dir / "processor_config.json"
    config = json.loads(nested.read_text())
    preprocessor = {**config.pop("feature_extractor"), "processor_class": config.pop("processor_class")}
    if config:
        raise RuntimeError(f"unexpected processor settings {sorted(config)}")
    (output_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2, sort_keys=True) + "\n")
    nested.unlink()


def _he_init_audio_stem(model) -> None:
    """Re-draw the encoder's two convolutions with He initialisation, so that a random encoder's output depends on
    its audio (at std 0.02 the sinusoidal positions swamp it; see tiny_omni_models._he_init_audio_stem)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    for conv in (model.model.audio_tower.conv1, model.model.audio_tower.conv2):
        with torch.no_grad():
            conv.weight.normal_(0.0, (2.0 / conv.weight[0].numel()) ** 0.5, generator=generator)
