"""Models by family: the family specifications, loading, adapters (LoRA, 4-bit, freezing), the speech vocabulary."""

from audio_recipes.models.adapters import (
    LORA_TARGET_PRESETS,
    freeze_modules,
    is_quantized,
    lora_config,
    merge_adapter,
    not_language_model_regex,
    quantization_config,
    torch_dtype,
)
from audio_recipes.models.families import (
    FAMILIES,
    ModelFamily,
    family_for_model,
    family_for_model_type,
    family_for_processor,
    model_class_for,
)
from audio_recipes.models.loading import (
    align_special_tokens_with_tokenizer,
    attention_implementation,
    build_empty_model,
    keep_used_key_conversions,
    load_model_and_processor,
    load_processor,
)
from audio_recipes.models.speech_vocabulary import (
    SPEECH_EMBEDDING_INITS,
    TextEmbeddingRowsFreezer,
    extend_speech_vocabulary,
)

__all__ = [
    "FAMILIES", "LORA_TARGET_PRESETS", "SPEECH_EMBEDDING_INITS", "ModelFamily", "TextEmbeddingRowsFreezer",
    "align_special_tokens_with_tokenizer", "attention_implementation", "build_empty_model", "extend_speech_vocabulary", "family_for_model", "family_for_model_type",
    "family_for_processor", "freeze_modules", "is_quantized", "keep_used_key_conversions", "load_model_and_processor",
    "load_processor", "lora_config", "merge_adapter", "model_class_for", "not_language_model_regex",
    "quantization_config", "torch_dtype",
]
