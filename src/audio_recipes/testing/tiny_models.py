"""Tiny, random-weight but *real* audio language models for fast tests.

Each builder writes a folder that loads with the same classes as the full-size checkpoint
(``Qwen2AudioForConditionalGeneration.from_pretrained(dir)`` and ``AutoProcessor.from_pretrained(dir)``),
with the same special tokens, chat template and generation settings, so code written against the tiny
model runs unchanged on the real id (``Qwen/Qwen2-Audio-7B-Instruct``).

Everything is deterministic: the tokenizer is a byte-level BPE trained here on a fixed corpus embedded
in this module, and the weights come from a seeded init, so two builds give bit-identical files.

What mirrors ``Qwen/Qwen2-Audio-7B-Instruct`` (as loaded by transformers 5):

* model: ``Qwen2AudioForConditionalGeneration`` (Whisper-style encoder, 128 mel bins,
  ``max_source_positions=1500``; Qwen2 decoder, untied ``lm_head``), ``audio_token_index`` = id of ``<|AUDIO|>``;
* processor: ``Qwen2AudioProcessor`` = ``WhisperFeatureExtractor`` (128 mels, 16 kHz, pads to 30 s)
  + ``Qwen2Tokenizer`` (Qwen2's pre-tokenizer regex, ByteLevel, NFC, ByteLevel decoder);
* special tokens, in Qwen's order, right after the BPE vocabulary (151643.. in the real one):
  ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos), ``<|AUDIO|>``, ``<|audio_bos|>``, ``<|audio_eos|>``;
* chat templates: the Hub checkpoint ships no processor chat template, so the processor falls back to
  ``Qwen2AudioProcessor.default_chat_template`` (the audio-aware one, "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>");
  the tokenizer keeps Qwen2's text-only ChatML template in ``tokenizer_config.json`` (it cannot render
  list contents: use the processor for audio messages, as with the real checkpoint);
* generation config: eos = [``<|endoftext|>``, ``<|im_end|>``], pad = bos = ``<|endoftext|>`` and the real
  checkpoint's sampling defaults (do_sample, top_k 20, top_p 0.5, temperature 0.7, repetition_penalty 1.1):
  pass ``do_sample=False`` for reproducible generation, as with the real model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from audio_recipes.paths import TINY_MODELS_DIR
from audio_recipes.registry import Registry
from audio_recipes.testing.tiny_audio_flamingo3 import build_tiny_audio_flamingo3
from audio_recipes.testing.tiny_omni_models import build_tiny_qwen2_5_omni, build_tiny_qwen3_omni_moe
from audio_recipes.testing.tiny_voxtral import build_tiny_voxtral
from audio_recipes.testing.tokenizer import AUDIO_TOKEN, ENDOFTEXT, IM_END, IM_START, build_tiny_tokenizer

VOCAB_MULTIPLE = 64  # the model's embedding rows: tokenizer size rounded up to this
SEED = 0

TEXT_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 8192,  # as the real text_config
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "sliding_window": None,
}
AUDIO_CONFIG = {
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 128,
    "max_source_positions": 1500,  # 3000 mel frames (30 s) after the stride-2 conv
    "scale_embedding": False,
    "activation_function": "gelu",
}
FEATURE_EXTRACTOR_KWARGS = {
    "feature_size": 128,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
    "padding_value": 0.0,
    "return_attention_mask": True,
}
# Qwen/Qwen2-Audio-7B-Instruct generation_config.json (sampling defaults included).
GENERATION_SAMPLING_DEFAULTS = {
    "do_sample": True,
    "top_k": 20,
    "top_p": 0.5,
    "temperature": 0.7,
    "repetition_penalty": 1.1,
}

BUILD_MARKER = "tiny_model_build.json"

# ----------------------------------------------------------------------------------------------------------
# Model


def qwen2_audio_processor_chat_template() -> str:
    """The template ``Qwen2AudioProcessor`` falls back to when a checkpoint ships none (as the Hub's)."""
    from transformers import Qwen2AudioProcessor

    return Qwen2AudioProcessor.default_chat_template.fget(None)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _qwen2_audio_config(tokenizer):
    from transformers import Qwen2AudioConfig

    vocab_size = _round_up(len(tokenizer), VOCAB_MULTIPLE)
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    text_config = {
        "model_type": "qwen2",
        **TEXT_CONFIG,
        "vocab_size": vocab_size,
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "pad_token_id": None,  # as the real text_config
    }
    audio_config = {"model_type": "qwen2_audio_encoder", **AUDIO_CONFIG}
    return Qwen2AudioConfig(
        audio_config=audio_config,
        text_config=text_config,
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
    )


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    return GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[endoftext, im_end],
        pad_token_id=endoftext,
        **GENERATION_SAMPLING_DEFAULTS,
    )


def _builder_fingerprint() -> str:
    """Changes when this module or the libraries that shape the files change: stale builds get rebuilt."""
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256(Path(__file__).read_bytes())
    for module in ("tiny_omni_models.py", "tiny_audio_flamingo3.py", "tiny_voxtral.py", "tokenizer.py"):  # the other builders, the tokenizer
        h.update(Path(__file__).with_name(module).read_bytes())
    h.update(f"{transformers.__version__}|{tokenizers.__version__}|{torch.__version__}".encode())
    return h.hexdigest()[:16]


def build_tiny_qwen2_audio(output_dir: Path) -> Path:
    """Write a tiny random ``Qwen2AudioForConditionalGeneration`` + ``Qwen2AudioProcessor`` into ``output_dir``."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, WhisperFeatureExtractor

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tiny_tokenizer()
    feature_extractor = WhisperFeatureExtractor(**FEATURE_EXTRACTOR_KWARGS)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    config = _qwen2_audio_config(tokenizer)
    config.architectures = ["Qwen2AudioForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's RNG state alone
        torch.manual_seed(SEED)
        model = Qwen2AudioForConditionalGeneration(config)
    model = model.to(torch.float32).eval()
    model.generation_config = _generation_config(tokenizer)

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    _match_hub_chat_template_layout(output_dir, tokenizer.chat_template)
    return output_dir


def _match_hub_chat_template_layout(output_dir: Path, tokenizer_template: str | None) -> None:
    """Lay the templates out as the Hub checkpoint does.

    transformers 5 writes one ``chat_template.jinja`` shared by tokenizer and processor. The Hub checkpoint
    has none: its tokenizer's ChatML template sits in ``tokenizer_config.json`` and its processor falls back
    to ``Qwen2AudioProcessor.default_chat_template``. Reproduce that, so both load as they would from the Hub.
    """
    jinja = output_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
    shutil.rmtree(output_dir / "additional_chat_templates", ignore_errors=True)
    tokenizer_config_path = output_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    if tokenizer_template is not None:
        tokenizer_config["chat_template"] = tokenizer_template
    tokenizer_config_path.write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    )
    processor_config_path = output_dir / "processor_config.json"
    if processor_config_path.exists():
        processor_config = json.loads(processor_config_path.read_text())
        processor_config.pop("chat_template", None)
        processor_config_path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Qwen3 (text LM), mirroring Qwen/Qwen3-0.6B: Qwen3ForCausalLM with tied input/output embeddings, the
# embedding rows padded past the tokenizer (151936 rows for 151669 tokens there), Qwen3's 26 added tokens
# in its order (14 special, then 12 ordinary ones: <tool_call>..</think>), its chat template (the original,
# as TRL ships it) and its generation settings.

QWEN3_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>",
)
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
QWEN3_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "max_position_embeddings": 40960,  # as the real config
    "max_window_layers": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "attention_bias": False,
    "tie_word_embeddings": True,  # Qwen3-0.6B ties them: one tensor is both embedding and output head
    "use_sliding_window": False,
    "sliding_window": None,
}
# Qwen/Qwen3-0.6B generation_config.json
QWEN3_GENERATION_SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95}


def qwen3_chat_template() -> str:
    """Qwen3's original chat template (thinking switch included), from TRL's copy of it."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")


def build_tiny_qwen3(output_dir: Path) -> Path:
    """Write a tiny random ``Qwen3ForCausalLM`` and its ``Qwen2Tokenizer`` into ``output_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(
        chat_template=qwen3_chat_template(), special_tokens=QWEN3_SPECIAL_TOKENS, added_tokens=QWEN3_ADDED_TOKENS,
        model_max_length=131072,
    )
    endoftext, im_end = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    config = Qwen3Config(
        **QWEN3_CONFIG, vocab_size=_round_up(len(tokenizer), VOCAB_MULTIPLE), bos_token_id=endoftext,
        eos_token_id=im_end, architectures=["Qwen3ForCausalLM"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen3ForCausalLM(config)
    model = model.to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext,
        **QWEN3_GENERATION_SAMPLING_DEFAULTS,
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def smoke_check_text_lm(model_dir: Path) -> dict:
    """Load tokenizer + causal LM; a chat prompt through the template, forward with labels, greedy 5 tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    step = "load tokenizer"
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        step = "load model"
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        step = "apply the chat template"
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is this?"}], add_generation_prompt=True, tokenize=False,
            enable_thinking=False,
        )
        if not prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"):
            raise RuntimeError(f"unexpected generation prompt {prompt!r}")
        inputs = tokenizer(prompt, return_tensors="pt")
        step = "forward with labels"
        with torch.no_grad():
            loss = model(**inputs, labels=inputs["input_ids"]).loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is not finite: {float(loss)}")
        step = "generate"
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        new_tokens = generated[0, inputs["input_ids"].shape[1]:]
    except Exception as err:
        raise RuntimeError(f"tiny model smoke check failed at '{step}' for {model_dir}: {err}") from err
    return {
        "model_dir": str(model_dir),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "tied_embeddings": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        "prompt_tokens": inputs["input_ids"].shape[1],
        "loss": float(loss),
        "new_tokens": new_tokens.tolist(),
    }


# Name (a family's `tiny_model`) -> builder writing the model into a folder
TINY_MODEL_BUILDERS: Registry[Callable[[Path], Path]] = Registry("tiny model")
for _name, _builder in (("qwen2-audio", build_tiny_qwen2_audio), ("qwen3", build_tiny_qwen3),
                        ("qwen2.5-omni", build_tiny_qwen2_5_omni), ("qwen3-omni-moe", build_tiny_qwen3_omni_moe),
                        ("audio-flamingo3", build_tiny_audio_flamingo3), ("voxtral", build_tiny_voxtral)):
    TINY_MODEL_BUILDERS.add(_name, _builder)


# ----------------------------------------------------------------------------------------------------------
# Checks and cache


def _sine(seconds: float, sampling_rate: int = 16000, frequency: float = 440.0):
    import numpy as np

    t = np.arange(int(seconds * sampling_rate), dtype=np.float64) / sampling_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# 1 s = 100 mel frames. Whisper-style encoders (Qwen2-Audio, Qwen2.5-Omni, AF3): a stride-2 conv, then stride-2
# pooling -> 25. Qwen3-Omni's AuT: 100-frame chunks, each 3 stride-2 convs -> 13 per chunk.
# Voxtral: every clip padded to whole 30 s chunks, 375 tokens each (12.5 Hz).
AUDIO_TOKENS_FOR_ONE_SECOND = {"qwen2_audio": 25, "qwen2_5_omni": 25, "qwen3_omni_moe": 13, "audioflamingo3": 25,
                               "voxtral": 375}


def smoke_check(model_dir: Path) -> dict:
    """Load processor + model from ``model_dir``; process a 1 s sine + chat prompt, forward, generate 5 tokens.

    Text LMs (no processor) go through ``smoke_check_text_lm``. Returns figures (parameters, audio tokens,
    loss, ...). Raises ``RuntimeError`` saying which step failed.
    """
    import torch

    from audio_recipes.models import family_for_model_type, load_processor, model_class_for

    model_dir = Path(model_dir)
    if _model_type(model_dir) in TEXT_LM_TYPES:
        return smoke_check_text_lm(model_dir)
    step = "load processor"
    try:
        model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
        processor = load_processor(str(model_dir), model_type=model_type)
        step = "load model"
        model = model_class_for(model_type).from_pretrained(model_dir).eval()
        step = "apply the chat template"
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio_url": "sine.wav"},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ]
        sampling_rate = processor.feature_extractor.sampling_rate
        chat_encoder = family_for_model_type(model_type).chat_encoder
        if chat_encoder is not None:  # a processor that renders no chat as text (Voxtral's): its family encodes it
            step = "encode the chat"
            ids, features = chat_encoder.encode_prompts(processor, [messages], [_sine(1.0, sampling_rate)])
            inputs = {"input_ids": torch.tensor(ids), **features}
        else:
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            step = "run the processor"
            inputs = processor(
                text=prompt, audio=[_sine(1.0, sampling_rate)], sampling_rate=sampling_rate, return_tensors="pt"
            )
        audio_token_id = model.config.audio_token_id
        num_audio_tokens = int((inputs["input_ids"] == audio_token_id).sum())
        expected = AUDIO_TOKENS_FOR_ONE_SECOND[model_type]
        if num_audio_tokens != expected:
            raise RuntimeError(
                f"expected {expected} {processor.audio_token} tokens for 1 s of audio, got {num_audio_tokens}"
            )
        step = "forward with labels"
        with torch.no_grad():
            out = model(**inputs, labels=inputs["input_ids"])
        loss = float(out.loss)
        if not torch.isfinite(out.loss):
            raise RuntimeError(f"loss is not finite: {loss}")
        step = "generate"
        prompt_len = inputs["input_ids"].shape[1]
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        new_tokens = generated[0, prompt_len:]
        if new_tokens.numel() == 0:
            raise RuntimeError("generate produced no new tokens")
    except Exception as err:
        raise RuntimeError(f"tiny model smoke check failed at '{step}' for {model_dir}: {err}") from err
    return {
        "model_dir": str(model_dir),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.text_config.vocab_size,
        "tokenizer_size": len(processor.tokenizer),
        "audio_token_id": audio_token_id,
        "num_audio_tokens": num_audio_tokens,
        "prompt_tokens": prompt_len,
        "loss": loss,
        "new_tokens": new_tokens.tolist(),
        "new_text": processor.tokenizer.decode(new_tokens, skip_special_tokens=False),
    }


TEXT_LM_TYPES = ("qwen3",)


def _model_type(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def _is_built(path: Path, name: str) -> bool:
    marker = path / BUILD_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("name") == name and info.get("fingerprint") == _builder_fingerprint()


def ensure_tiny_model(name: str = "qwen2-audio", root: Path | None = None, force: bool = False) -> Path:
    """Return ``root/name`` (root defaults to ``TINY_MODELS_DIR``), building it first when needed.

    It is rebuilt when absent, when ``force``, or when built by another version of this module or of
    transformers/tokenizers/torch (a fingerprint in ``tiny_model_build.json``). Safe from tests and from
    concurrent processes: the build goes to a temporary sibling folder renamed into place, so readers never
    see a half-written model.
    """
    builder = TINY_MODEL_BUILDERS.get(name)  # an unknown name: ValueError listing the known ones
    root = Path(root) if root is not None else TINY_MODELS_DIR
    target = root / name
    if not force and _is_built(target, name):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.building.", dir=root))
    try:
        builder(staging)
        staging.chmod(0o755)  # mkdtemp makes it private
        for file in staging.rglob("*"):
            file.chmod(0o755 if file.is_dir() else 0o644)
        (staging / BUILD_MARKER).write_text(
            json.dumps({"name": name, "fingerprint": _builder_fingerprint()}, indent=2) + "\n"
        )
        if not force and _is_built(target, name):  # another process finished first
            return target
        stale = root / f".{name}.stale.{os.getpid()}.{time.time_ns()}"
        try:
            target.rename(stale)
        except FileNotFoundError:
            stale = None
        try:
            staging.rename(target)
        except OSError:  # a concurrent build got there between our rename and this one
            if not _is_built(target, name):
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
