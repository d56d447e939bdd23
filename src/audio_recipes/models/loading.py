"""Load a model and its processor by family (never AutoModelForCausalLM for an audio model), from a local path or a
Hub id, of a full model or of an adapter."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch
from accelerate import PartialState
from peft import PeftModel
from transformers import AutoConfig, AutoProcessor, AutoTokenizer, PretrainedConfig
from transformers.utils import is_flash_attn_2_available

from audio_recipes.config import ModelArguments
from audio_recipes.hub import ResolvedModel, resolve_model
from audio_recipes.library_noise import dropped_log_messages
from audio_recipes.models.adapters import quantization_config, torch_dtype
from audio_recipes.models.families import ModelFamily, family_for_model_type, model_class_for

logger = logging.getLogger(__name__)


def load_processor(
    name_or_path: str, trust_remote_code: bool = False, revision: str = "main", model_type: str | None = None
):
    """The processor of an audio model (the family's audio-only one where it has one), or the tokenizer of a text
    model."""
    family = family_for_model_type(model_type)
    if family.audio_only_processor is not None:
        return family.audio_only_processor.from_pretrained(name_or_path, revision=revision)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError, TypeError):
        processor = None
    if processor is None or not hasattr(processor, "feature_extractor"):
        processor = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    return processor


def load_model_and_processor(
    model_args: ModelArguments, *, trust_remote_code: bool = False, for_training: bool = True
) -> tuple[torch.nn.Module, Any, ResolvedModel]:
    """Model and processor from a local path or Hub id, of a full model or of an adapter (its base read from it)."""
    resolved = resolve_model(model_args.model_name_or_path, revision=model_args.model_revision)
    config = AutoConfig.from_pretrained(resolved.base_model, trust_remote_code=trust_remote_code)
    family = family_for_model_type(config.model_type)
    model_class = model_class_for(config.model_type)
    import_modeling_modules(config)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(model_args.dtype), "trust_remote_code": trust_remote_code}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = attention_implementation(model_args.attn_implementation, family)
    quantization = quantization_config(model_args, family)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if torch.cuda.is_available():
            # Quantised weights are placed at load time (they cannot be moved after): one GPU per process
            kwargs["device_map"] = {"": PartialState().local_process_index}
    model = model_class.from_pretrained(resolved.base_model, **kwargs)
    keep_used_key_conversions(model)
    if resolved.adapter is not None:
        model = PeftModel.from_pretrained(model, resolved.adapter, is_trainable=for_training)
    processor = load_processor(
        model_args.processor_name_or_path or resolved.processor_source, trust_remote_code=trust_remote_code,
        model_type=config.model_type,
    )
    align_special_tokens_with_tokenizer(model, processor)
    return model, processor, resolved


def import_modeling_modules(config: PretrainedConfig) -> None:
    """Import the transformers modeling module of the config and of each config nested in it, before a model is
    built.

    Why: DeepSpeed's ZeRO-3 init (transformers enters it in from_pretrained) wraps the `__init__` of every module
    class created inside it and, on exit, puts back the `__init__` it saw when the class was created. A decorator
    applied after that (kernels' `use_kernelized_func` on Qwen2Attention, imported lazily by Qwen2-Audio's
    `__init__`) is then lost: the next model built in the process (a curriculum's stage 2) crashes in forward
    (`'Qwen2Attention' object has no attribute '_kernel_funcs'`). Classes imported outside the init keep it."""
    configs, seen = [config], set()
    while configs:
        current = configs.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        package, _, name = type(current).__module__.rpartition(".")
        if package.startswith("transformers.models.") and name.startswith("configuration_"):
            module = f"{package}.modeling_{name.removeprefix('configuration_')}"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != module:  # a package the modeling module needs: from_pretrained says so too
                    raise
        configs += [value for value in vars(current).values() if isinstance(value, PretrainedConfig)]


FLASH_ATTENTION = "flash_attention_2"


def attention_implementation(requested: str | None, family: ModelFamily) -> str | dict[str, str] | None:
    """transformers' attn_implementation for a recipe's: flash_attention_2 where flash-attn is installed (and a GPU
    runs it), else sdpa with one warning line; the family's sdpa_sub_configs (Qwen2-Audio's encoder) stay on sdpa."""
    if requested != FLASH_ATTENTION:
        return requested
    if not is_flash_attn_2_available():
        logger.warning("attn_implementation flash_attention_2: flash-attn is not installed here (or no CUDA GPU); "
                       "using sdpa (pip install -r requirements-gpu.txt on a GPU machine)")
        return "sdpa"
    if not family.sdpa_sub_configs:
        return requested
    # "" is the model's own config; every other sub-config is named so that none falls back to a default
    return {"": requested, "text_config": requested, **dict.fromkeys(family.sdpa_sub_configs, "sdpa")}


def build_empty_model(config: PretrainedConfig, model_args: ModelArguments) -> torch.nn.Module:
    """The model that load_model_and_processor loads from a checkpoint with this config, built on the meta device:
    the same class (the thinker of an Omni checkpoint), dtype and 4-bit / 8-bit layers, with no memory and no
    weights. For planning: parameter names, shapes and which layers are quantised."""
    from transformers.quantizers import AutoHfQuantizer

    family = family_for_model_type(config.model_type)
    model_class = model_class_for(config.model_type)
    wanted = getattr(model_class, "config_class", None)
    for name, sub_config_class in getattr(config, "sub_configs", {}).items():
        if sub_config_class is wanted:  # an Omni checkpoint's config holds the thinker's
            config = getattr(config, name)
            break
    dtype = torch_dtype(model_args.dtype)
    if dtype == "auto":
        dtype = getattr(config, "dtype", None) or torch.float32
    with torch.device("meta"):
        build = getattr(model_class, "_from_config", None) or model_class.from_config  # the Auto classes
        model = build(config, dtype=dtype)
    quantization = quantization_config(model_args, family)
    if quantization is not None:
        AutoHfQuantizer.from_config(quantization, pre_quantized=False).preprocess_model(model, device_map=None,
                                                                                         dtype=dtype)
    return model


def align_special_tokens_with_tokenizer(model: torch.nn.Module, processor: Any) -> None:
    """The model's pad / bos / eos ids as its tokenizer's, by transformers' own rule, at load time: training and
    evaluation then use the same ids. The Trainer does this too, with a warning each run (Qwen2-Audio's released
    config has no pad_token_id; its tokenizer pads with <|endoftext|>)."""
    try:
        from transformers.trainer_utils import align_special_tokens
    except ImportError:  # transformers before 5.25 leaves the configs alone
        return
    text_config = model.config.get_text_config()
    before = {name: getattr(text_config, name, None) for name in ("pad_token_id", "bos_token_id", "eos_token_id")}
    with dropped_log_messages("transformers.trainer_utils", "The tokenizer has new PAD/BOS/EOS tokens"):
        align_special_tokens(model, processor)
    changed = {name: getattr(text_config, name, None) for name in before
               if getattr(text_config, name, None) != before[name]}
    if changed:
        logger.info("special token ids set from the tokenizer: %s", changed)


def keep_used_key_conversions(model: torch.nn.Module) -> None:
    """Save in the checkpoint's own key layout under ZeRO-3 too.

    save_pretrained reverts the key renamings that loading applied. Loading under ZeRO-3 init keeps all of the
    model's renamings, legacy ones that matched nothing included, and reverting those writes Qwen2-Audio's
    `language_model.model.*` as `language_model.model.model.*`; the other loading path keeps the used ones only.
    """
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [conversion for conversion in conversions if conversion.was_used()]
