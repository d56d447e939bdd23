"""What a recipe does to a loaded model before training: LoRA on the language model only (presets by family),
4-bit / 8-bit quantisation that keeps the audio encoder whole, freezing, merging an adapter back."""

from __future__ import annotations

import logging
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import BitsAndBytesConfig

from audio_recipes.config import ModelArguments
from audio_recipes.distributed import parameter_count
from audio_recipes.models.families import (
    EXPERT_PARAMETERS,
    FAMILIES,
    QWEN2_AUDIO,
    ModelFamily,
    family_for_model,
)

logger = logging.getLogger(__name__)

# preset -> (which of the family's module groups, whether its experts too)
LORA_TARGET_PRESETS = {
    "attention": (("attention",), False),
    "attention_mlp": (("attention", "mlp"), False),
    "attention_experts": (("attention",), True),
}


def torch_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    if not hasattr(torch, name) or not isinstance(getattr(torch, name), torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; expected e.g. 'bfloat16', 'float16', 'float32' or 'auto'")
    return getattr(torch, name)


def not_language_model_regex(family: ModelFamily | None) -> str | None:
    """PEFT's exclusion regex: every module inside the family's audio encoder, projector and other encoders (the
    audio encoder also has q/k/v projections). Without a family, those of every registered family.
    (A path regex in target_modules would not do: for MoE models PEFT 0.21 reduces it to bare leaf names.)"""
    names = family.not_language_model if family is not None else tuple(
        dict.fromkeys(name for _, known in FAMILIES.items() for name in known.not_language_model))
    if not names:  # a text model: nothing to exclude (an empty alternation would match, and exclude, every module)
        return None
    return rf".*\b(?:{'|'.join(names)})\b.*"


def lora_config(model_args: ModelArguments, model: torch.nn.Module | None = None) -> LoraConfig | None:
    """LoRA on the language model: a preset (default: attention) over the family's module names, or the recipe's
    own lora_target_modules.

    Given the model, a preset naming expert parameters that it does not have (a dense model) is an error, where PEFT
    would quietly train the attention alone.
    """
    if not model_args.use_peft:
        return None
    targets: dict[str, Any] = {}
    if model_args.lora_target_modules and model_args.lora_target_preset is None:
        targets["target_modules"] = model_args.lora_target_modules
    else:
        preset = model_args.lora_target_preset or "attention"
        if preset not in LORA_TARGET_PRESETS:
            raise ValueError(f"unknown lora_target_preset {preset!r}; expected one of {', '.join(LORA_TARGET_PRESETS)}")
        groups, with_experts = LORA_TARGET_PRESETS[preset]
        family = family_for_model(model) if model is not None else None
        modules = family or QWEN2_AUDIO  # without a model: the families' shared names (all use q/k/v/o, gate/up/down)
        projections = tuple(name for group in groups for name in getattr(modules, f"{group}_modules"))
        parameters = (family.expert_parameters if family is not None and family.expert_parameters
                      else EXPERT_PARAMETERS) if with_experts else ()
        if parameters and model_args.lora_dropout:
            raise ValueError(
                f"lora_target_preset {preset!r} puts LoRA on expert parameters, which PEFT supports without dropout "
                f"only: set lora_dropout: 0 (got {model_args.lora_dropout})"
            )
        if parameters and model is not None:
            names = [name for name, _ in model.named_parameters()]
            missing = [p for p in parameters if not any(name.endswith(f".{p}") for name in names)]
            if missing:
                raise ValueError(f"lora_target_preset {preset!r}: the model has no {', '.join(missing)} (no MoE "
                                 "experts); use 'attention' or 'attention_mlp'")
        targets = {"target_modules": list(projections), "exclude_modules": not_language_model_regex(family),
                   "target_parameters": list(parameters) or None}
    return LoraConfig(
        task_type=model_args.lora_task_type,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        bias="none",
        **targets,
    )


def quantization_config(model_args: ModelArguments, family: ModelFamily) -> BitsAndBytesConfig | None:
    """4-bit NF4 (QLoRA) or 8-bit; the family's audio encoder, projector and the head stay unquantised."""
    # transformers 5 matches these from the start of the module path (or as a suffix), so a bare
    # "audio_tower" never matches "model.audio_tower.layers.0..."; the regex form does
    skip = [f".*{name}" for name in family.audio_encoder + family.projector] + ["lm_head"]
    if model_args.load_in_4bit:
        compute_dtype = torch_dtype(model_args.dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=torch.float32 if compute_dtype == "auto" else compute_dtype,
            bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage,
            llm_int8_skip_modules=skip,
        )
    if model_args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return None


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with its LoRA weights folded in (merge_and_unload); a model without an adapter as it is."""
    if not isinstance(model, PeftModel):
        logger.info("merge_adapter: the model has no adapter; nothing to merge")
        return model
    if is_quantized(model.get_base_model()):
        logger.warning("merging a LoRA adapter into 4/8-bit weights rounds them: outputs may differ slightly")
    return model.merge_and_unload()


def freeze_modules(model: torch.nn.Module, model_args: ModelArguments) -> dict[str, int]:
    """Freeze the audio encoder and / or projector, the parts never trained (a vision encoder), and always the audio
    encoder's fixed parameters; returns the trainable and frozen parameter counts."""
    family = family_for_model(model)
    frozen_names = (family.audio_encoder if model_args.freeze_audio_encoder else ()) + (
        family.projector if model_args.freeze_projector else ()
    ) + family.never_trained
    for name, parameter in model.named_parameters():
        in_encoder = any(f".{part}." in f".{name}" for part in family.audio_encoder)
        fixed = in_encoder and any(f".{part}." in f".{name}" for part in family.fixed_encoder_parameters)
        if fixed or any(f".{part}." in f".{name}" for part in frozen_names):
            parameter.requires_grad_(False)
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    return {"trainable_parameters": trainable, "frozen_parameters": total - trainable}
