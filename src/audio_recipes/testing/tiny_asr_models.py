"""A tiny, random-weight but real Whisper (English-only layout, like openai/whisper-tiny.en) for the ASR tests.

It loads with the classes a real checkpoint loads with (`AutoModelForSpeechSeq2Seq`, `AutoProcessor`), has
Whisper's special tokens in Whisper's order after a byte-level BPE (GPT-2's pre-tokenizer), and a generation config
that Whisper's `generate` accepts (start of transcript, no timestamps), so code written against it runs unchanged on
`openai/whisper-*`. Deterministic: the BPE is trained on the tiny tokenizer's fixed corpus, the weights come from a
seeded init. Kept apart from tiny_models.py, whose fingerprint decides when the shared tiny models are rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

SEED = 0
BPE_VOCAB_SIZE = 1024
ENDOFTEXT = "<|endoftext|>"
START_OF_TRANSCRIPT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
# Whisper's specials in Whisper's order (English-only: one language token), after the BPE entries
WHISPER_SPECIAL_TOKENS = (ENDOFTEXT, START_OF_TRANSCRIPT, "<|en|>", "<|translate|>", "<|transcribe|>",
                          "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", NO_TIMESTAMPS)
WHISPER_CONFIG = {
    "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": 80,
    "max_source_positions": 1500, "max_target_positions": 128,
}
BUILD_MARKER = "tiny_asr_model_build.json"


def _train_whisper_bpe():
    """GPT-2-style byte-level BPE (Whisper's) trained on the tiny tokenizer's fixed corpus: (vocab, merges)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    from audio_recipes.testing.tokenizer import _tokenizer_corpus

    backend = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=BPE_VOCAB_SIZE, min_frequency=1, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    backend.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return model["vocab"], merges


def build_tiny_whisper(output_dir: Path) -> Path:
    """Write a tiny random `WhisperForConditionalGeneration` and its `WhisperProcessor` into output_dir."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _train_whisper_bpe()
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, unk_token=ENDOFTEXT, bos_token=ENDOFTEXT,
                                 eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, model_max_length=1024)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        AddedToken(token, special=True, normalized=False) for token in WHISPER_SPECIAL_TOKENS[1:]]})
    ids = tokenizer.convert_tokens_to_ids(list(WHISPER_SPECIAL_TOKENS))
    if ids != list(range(len(vocab), len(vocab) + len(WHISPER_SPECIAL_TOKENS))):
        raise RuntimeError(f"Whisper special token ids {ids} do not follow the {len(vocab)} BPE entries")
    tokenizer.set_prefix_tokens(predict_timestamps=False)
    eot, sot, no_timestamps = tokenizer.convert_tokens_to_ids([ENDOFTEXT, START_OF_TRANSCRIPT, NO_TIMESTAMPS])
    config = WhisperConfig(**WHISPER_CONFIG, vocab_size=len(tokenizer), pad_token_id=eot, bos_token_id=eot,
                           eos_token_id=eot, decoder_start_token_id=sot, architectures=["WhisperForConditionalGeneration"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = WhisperForConditionalGeneration(config)
    model = model.to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=no_timestamps, is_multilingual=False, max_initial_timestamp_index=50,
        suppress_tokens=[], begin_suppress_tokens=[eot],
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=WHISPER_CONFIG["num_mel_bins"], sampling_rate=16000)
    model.save_pretrained(output_dir)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


def ensure_tiny_whisper(root: Path) -> Path:
    """`root/whisper`, built first when absent (into a folder beside it, renamed into place when complete)."""
    target = Path(root) / "whisper"
    if (target / BUILD_MARKER).is_file():
        return target
    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper.building.", dir=root))
    try:
        build_tiny_whisper(staging)
        (staging / BUILD_MARKER).write_text(json.dumps({"name": "whisper", "seed": SEED}) + "\n")
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            if not (target / BUILD_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
