"""Load audio (and text) models and processors by architecture; quantisation, LoRA presets, freezing,
vocabulary extension with speech tokens."""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from accelerate import PartialState
from peft import LoraConfig, PeftModel
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    BitsAndBytesConfig,
    TrainerCallback,
)
from transformers.processing_utils import ProcessorMixin

from audio_recipes.configs import ModelArguments
from audio_recipes.distributed import parameter_count
from audio_recipes.hub import ResolvedModel, resolve_model
from audio_recipes.library_noise import dropped_log_messages
from audio_recipes.speech_vocabulary import SpeechVocabulary, speech_vocabulary_tokens

logger = logging.getLogger(__name__)

# AutoModelForCausalLM would load a text-only model and drop the audio encoder: pick the class by model type
AUDIO_MODEL_CLASSES = {
    "qwen2_audio": "Qwen2AudioForConditionalGeneration",
    "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
}

# Module-name prefixes of the parts that are not the language model
AUDIO_ENCODER_NAMES = ("audio_tower", "audio_encoder")
PROJECTOR_NAMES = ("multi_modal_projector", "audio_projector")
# The Omni thinkers' vision encoder: recipes here are audio-only, so it is never trained
VISION_ENCODER_NAMES = ("visual",)

# Whisper-style encoders' fixed sinusoidal positions: built frozen, but transformers 5's from_pretrained hands
# them back trainable (ZeRO-3 init does not), so training the encoder would move them on one path only
FIXED_AUDIO_PARAMETERS = ("embed_positions",)

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# transformers 5 stores a MoE layer's experts as 3-D parameters (gate and up fused), not as nn.Linear modules:
# PEFT reaches them with target_parameters. Only the language model has experts (the talker is never loaded).
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
LORA_TARGET_PRESETS = {
    "attention": (ATTENTION, ()),
    "attention_mlp": (ATTENTION + MLP, ()),
    "attention_experts": (ATTENTION, EXPERT_PARAMETERS),
}


# PEFT exclusion regex: the audio encoder also has q/k/v projections, and LoRA goes on the language model only.
# (A path regex in target_modules would not do: for MoE models PEFT 0.21 reduces it to bare leaf names.)
NOT_LANGUAGE_MODEL = rf".*\b(?:{'|'.join(AUDIO_ENCODER_NAMES + PROJECTOR_NAMES + VISION_ENCODER_NAMES)})\b.*"


def lora_config(model_args: ModelArguments, model: torch.nn.Module | None = None) -> LoraConfig | None:
    """LoRA on the language model: a preset (default: attention), or the recipe's own lora_target_modules.

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
        projections, parameters = LORA_TARGET_PRESETS[preset]
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
        targets = {"target_modules": list(projections), "exclude_modules": NOT_LANGUAGE_MODEL,
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


def model_class_for(model_type: str) -> type:
    name = AUDIO_MODEL_CLASSES.get(model_type)
    return getattr(transformers, name) if name else AutoModelForCausalLM


def torch_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    if not hasattr(torch, name) or not isinstance(getattr(torch, name), torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; expected e.g. 'bfloat16', 'float16', 'float32' or 'auto'")
    return getattr(torch, name)


def quantization_config(model_args: ModelArguments) -> BitsAndBytesConfig | None:
    """4-bit NF4 (QLoRA) or 8-bit; the audio encoder, projector and head stay unquantised."""
    # transformers 5 matches these from the start of the module path (or as a suffix), so a bare
    # "audio_tower" never matches "model.audio_tower.layers.0..."; the regex form does
    skip = [f".*{name}" for name in AUDIO_ENCODER_NAMES + PROJECTOR_NAMES] + ["lm_head"]
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


class AudioOnlyOmniProcessor:
    """An Omni processor without its image and video processors; audio and text go through the real class's code.

    Mixed in before ``Qwen2_5OmniProcessor`` / ``Qwen3OmniMoeProcessor``: their video processor needs torchvision
    (absent from CPU-only installs, and never used by audio recipes), so the full class cannot even be built there.
    Saved files name the real class and load with it where torchvision is installed.
    """

    def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None):
        ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
        # What the real classes' __init__ reads from the tokenizer (its named multimodal tokens)
        for modality in ("image", "audio", "video"):
            setattr(self, f"{modality}_token", getattr(tokenizer, f"{modality}_token"))
            setattr(self, f"{modality}_token_id", getattr(tokenizer, f"{modality}_token_id"))
        for name in ("vision_bos_token", "vision_eos_token", "audio_bos_token", "audio_eos_token"):
            setattr(self, name, getattr(tokenizer, name))


def _audio_only(processor_class: type) -> type:
    # Named as the real class, so that what it saves names the real class
    return type(processor_class.__name__, (AudioOnlyOmniProcessor, processor_class), {"__module__": __name__})


AUDIO_ONLY_PROCESSORS = {
    model_type: _audio_only(processor_class)
    for model_types, processor_class in (
        (("qwen2_5_omni", "qwen2_5_omni_thinker"), transformers.Qwen2_5OmniProcessor),
        (("qwen3_omni_moe", "qwen3_omni_moe_thinker"), transformers.Qwen3OmniMoeProcessor),
    )
    for model_type in model_types
}


def load_processor(
    name_or_path: str, trust_remote_code: bool = False, revision: str = "main", model_type: str | None = None
):
    """The processor of an audio model (audio-only for the Omni models), or the tokenizer of a text model."""
    if model_type in AUDIO_ONLY_PROCESSORS:
        return AUDIO_ONLY_PROCESSORS[model_type].from_pretrained(name_or_path, revision=revision)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError, TypeError):
        processor = None
    if processor is None or not hasattr(processor, "feature_extractor"):
        processor = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    return processor


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))


def load_model_and_processor(
    model_args: ModelArguments, *, trust_remote_code: bool = False, for_training: bool = True
) -> tuple[torch.nn.Module, Any, ResolvedModel]:
    """Model and processor from a local path or Hub id, of a full model or of an adapter (its base read from it)."""
    resolved = resolve_model(model_args.model_name_or_path, revision=model_args.model_revision)
    config = AutoConfig.from_pretrained(resolved.base_model, trust_remote_code=trust_remote_code)
    model_class = model_class_for(config.model_type)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(model_args.dtype), "trust_remote_code": trust_remote_code}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = quantization_config(model_args)
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


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with its LoRA weights folded in (merge_and_unload); a model without an adapter as it is."""
    if not isinstance(model, PeftModel):
        logger.info("merge_adapter: the model has no adapter; nothing to merge")
        return model
    if is_quantized(model.get_base_model()):
        logger.warning("merging a LoRA adapter into 4/8-bit weights rounds them: outputs may differ slightly")
    return model.merge_and_unload()


def freeze_modules(model: torch.nn.Module, model_args: ModelArguments) -> dict[str, int]:
    """Freeze the audio encoder and / or projector, any vision encoder, and always the audio encoder's fixed
    positions; returns the trainable and frozen parameter counts."""
    frozen_names = (AUDIO_ENCODER_NAMES if model_args.freeze_audio_encoder else ()) + (
        PROJECTOR_NAMES if model_args.freeze_projector else ()
    ) + VISION_ENCODER_NAMES
    for name, parameter in model.named_parameters():
        in_encoder = any(f".{part}." in f".{name}" for part in AUDIO_ENCODER_NAMES)
        fixed = in_encoder and any(f".{part}." in f".{name}" for part in FIXED_AUDIO_PARAMETERS)
        if fixed or any(f".{part}." in f".{name}" for part in frozen_names):
            parameter.requires_grad_(False)
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    return {"trainable_parameters": trainable, "frozen_parameters": total - trainable}


# ----------------------------------------------------------------------------------------------------------
# Vocabulary extension: speech tokens after the text vocabulary

SPEECH_EMBEDDING_INITS = ("mean", "normal", "copy")


def embedding_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The input embedding and the output head; one tensor when they are tied (Qwen3-0.6B)."""
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weights[0]:
        weights.append(output.weight)
    return weights


def extend_speech_vocabulary(
    model: torch.nn.Module, tokenizer, model_args: ModelArguments, seed: int = 0
) -> SpeechVocabulary | None:
    """Add `num_speech_tokens` speech tokens and the two markers after the text vocabulary (offset = the
    tokenizer's size before), resize the embedding and head, and initialise the new rows.

    A tokenizer that already has speech tokens (a trained checkpoint) is kept as it is. Returns where the
    speech tokens sit, or None when the model has none and the recipe asks for none.
    """
    existing = SpeechVocabulary.of(tokenizer)
    if existing is not None:
        if model_args.num_speech_tokens and model_args.num_speech_tokens != existing.num_speech_tokens:
            raise ValueError(
                f"the model already has {existing.num_speech_tokens} speech tokens; the recipe asks for "
                f"{model_args.num_speech_tokens}"
            )
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < existing.offset + existing.size:
            raise ValueError(f"the tokenizer has speech tokens up to id {existing.end_id} but the model only "
                             f"{rows} embedding rows: tokenizer and weights come from different models")
        return existing
    if not model_args.num_speech_tokens:
        return None
    if model_args.speech_embedding_init not in SPEECH_EMBEDDING_INITS:
        raise ValueError(f"unknown speech_embedding_init {model_args.speech_embedding_init!r}; expected one of "
                         f"{', '.join(SPEECH_EMBEDDING_INITS)}")
    if model_args.speech_embedding_init == "copy" and not model_args.speech_embedding_source:
        raise ValueError("speech_embedding_init 'copy' needs speech_embedding_source (the model to copy from)")

    from tokenizers import AddedToken

    offset = len(tokenizer)
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False)
                          for token in speech_vocabulary_tokens(model_args.num_speech_tokens)])
    vocabulary = SpeechVocabulary.of(tokenizer)
    if vocabulary is None or vocabulary.offset != offset:
        raise RuntimeError(f"speech tokens were not placed after the text vocabulary (offset {offset})")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # Rounded up as the checkpoints round theirs, for efficient matrix shapes
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    new_rows = slice(offset, len(tokenizer))
    if model_args.speech_embedding_init == "copy":
        copy_speech_rows(model, vocabulary, model_args.speech_embedding_source)
    else:
        generator = torch.Generator().manual_seed(seed)
        for weight in embedding_weights(model):
            with torch.no_grad():
                weight[new_rows] = initial_rows(weight[:offset], new_rows.stop - offset, model_args, generator,
                                                getattr(model.config, "initializer_range", 0.02))
    logger.info("added %d speech tokens and 2 markers at ids %d..%d (%s init)", vocabulary.num_speech_tokens,
                offset, vocabulary.end_id, model_args.speech_embedding_init)
    return vocabulary


def initial_rows(text_rows: torch.Tensor, count: int, model_args: ModelArguments, generator: torch.Generator,
                 initializer_range: float) -> torch.Tensor:
    """'mean': the text rows' mean plus noise (a fraction of their std); 'normal': N(0, initializer_range)."""
    text = text_rows.detach().float().cpu()
    noise = torch.randn(count, text.shape[1], generator=generator)
    if model_args.speech_embedding_init == "mean":
        rows = text.mean(dim=0) + noise * (model_args.speech_embedding_noise * text.std())
    else:
        rows = noise * initializer_range
    return rows.to(device=text_rows.device, dtype=text_rows.dtype)


def copy_speech_rows(model: torch.nn.Module, vocabulary: SpeechVocabulary, source: str) -> None:
    """Warm start: the speech rows of another model that has the same speech tokens (matched by token)."""
    source_tokenizer = AutoTokenizer.from_pretrained(source)
    source_vocabulary = SpeechVocabulary.of(source_tokenizer)
    if source_vocabulary is None or source_vocabulary.num_speech_tokens < vocabulary.num_speech_tokens:
        found = 0 if source_vocabulary is None else source_vocabulary.num_speech_tokens
        raise ValueError(f"speech_embedding_source {source} has {found} speech tokens; "
                         f"{vocabulary.num_speech_tokens} are needed")
    source_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    source_ids = list(range(source_vocabulary.offset, source_vocabulary.offset + vocabulary.num_speech_tokens))
    source_ids += [source_vocabulary.start_id, source_vocabulary.end_id]
    targets, sources = embedding_weights(model), embedding_weights(source_model)
    if len(targets) != len(sources):
        raise ValueError(f"cannot copy speech rows from {source}: one model ties its embedding and output head, "
                         "the other does not")
    for target, rows in zip(targets, sources, strict=True):
        if target.shape[1] != rows.shape[1]:
            raise ValueError(f"cannot copy speech rows from {source}: hidden size {rows.shape[1]}, "
                             f"not {target.shape[1]}")
        with torch.no_grad():
            target[vocabulary.offset:vocabulary.end_id + 1] = rows[source_ids].to(target.dtype)


class TextEmbeddingRowsFreezer(TrainerCallback):
    """Keep rows [0, offset) of the input embedding and output head bit-identical during training.

    The rows share one tensor with the trained speech rows, so `requires_grad` cannot tell them apart: a
    gradient hook zeroes their gradient, and since AdamW's weight decay (and momentum, with other
    optimisers) moves a row whose gradient is zero, the saved rows are written back after each step.
    """

    def __init__(self, model: torch.nn.Module, offset: int):
        self.offset = offset
        self.weights = embedding_weights(model)
        self.saved: list[torch.Tensor] = []
        for weight in self.weights:
            if not weight.requires_grad:
                raise ValueError("freeze_text_embeddings: the embedding is frozen, so the speech rows cannot train")
            weight.register_hook(self.mask_text_rows)

    def mask_text_rows(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.offset] = 0
        return grad

    def on_train_begin(self, args, state, control, **kwargs):
        # Saved here, not at construction: by now the trainer has placed the model on its device
        self.saved = [weight.detach()[: self.offset].clone() for weight in self.weights]

    def on_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for weight, saved in zip(self.weights, self.saved, strict=True):
                weight[: self.offset] = saved
