"""One specification per model family: all the project knows of a family, read by the loader, the adapters, the
collator and the GRPO trainer. Adding a family is one `ModelFamily` here (or in a module that registers one) plus
its tiny builder in audio_recipes.testing.

A family is found from a model's `config.model_type` (`family_for_model_type`), or from a processor's class
(`family_for_processor`), so that a collator built from a processor alone knows its family too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import transformers
from transformers.processing_utils import ProcessorMixin

from audio_recipes.models.voxtral import MISTRAL_CHAT, voxtral_placeholder_count
from audio_recipes.registry import Registry

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# transformers 5 stores a MoE layer's experts as 3-D parameters (gate and up fused), not as nn.Linear modules:
# PEFT reaches them with target_parameters
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def whisper_placeholder_count(processor: Any, samples: int) -> int:
    """Placeholders of a Whisper-style encoder (Qwen2-Audio): 10 ms frames, a stride-2 convolution, pooling by 2."""
    frames = math.ceil(samples / processor.feature_extractor.hop_length)
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def processor_placeholder_count(processor: Any, samples: int) -> int:
    """The processor's own count (the Omni processors: Qwen3-Omni's encoder is not Whisper's)."""
    return processor._get_num_multimodal_tokens(audio_lengths=[samples])["num_audio_tokens"][0]


def windowed_placeholder_count(processor: Any, samples: int) -> int:
    """The processor's own count over a clip cut into 30 s windows (AF3): each window's mel frames, summed, through
    its `_get_audio_token_length` (a stride-2 convolution, pooling by 2), at most `max_audio_len` seconds."""
    extractor = processor.feature_extractor
    window = extractor.sampling_rate * extractor.chunk_length
    windows = min(max(1, math.ceil(samples / window)), int(processor.max_audio_len // extractor.chunk_length))
    kept = min(samples, windows * window)
    frames = sum(math.ceil(min(window, kept - start) / extractor.hop_length) for start in range(0, kept, window))
    return int(processor._get_audio_token_length(torch.tensor(frames)))


def feature_window_seconds(processor: Any) -> float:
    """The window the feature extractor pads and cuts every clip to (Qwen2-Audio's 30 s, Qwen2.5-Omni's 300 s)."""
    extractor = processor.feature_extractor
    return extractor.n_samples / extractor.sampling_rate


def max_audio_len_seconds(processor: Any) -> float:
    """AF3's processor keeps at most `max_audio_len` seconds of a clip (its 30 s windows past it are dropped)."""
    return float(processor.max_audio_len)


class ChatEncoder(Protocol):
    """How a family whose processor cannot render a chat as text (mistral_common's tokenizer encodes requests itself)
    turns the collator's chats into token ids; the collator uses it in place of the chat template."""

    def encode_prompts(self, processor: Any, chats: Sequence[list[dict[str, Any]]], clips: Sequence[Any], *,
                       features: bool = True) -> tuple[list[list[int]], dict[str, Any]]:
        """Each chat's prompt ids, up to where the answer starts (audio placeholders expanded), and, with
        `features`, the processor outputs that carry the clips (`clips[i]`: chat i's clip at the processor's
        rate, or None)."""
        ...

    def encode_completion(self, processor: Any, completion: str) -> list[int]:
        """An answer's ids, its end-of-turn token included."""
        ...


@dataclass(frozen=True)
class ModelFamily:
    """What one family of models needs from the project."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values of its checkpoints
    model_class: str | None = None  # transformers class; None: AutoModelForCausalLM (a text language model)
    processor_classes: tuple[str, ...] = ()  # the processors' class names (a tokenizer alone: a text model)
    # Module names (path components) of the parts that are not the language model
    audio_encoder: tuple[str, ...] = ()
    projector: tuple[str, ...] = ()
    never_trained: tuple[str, ...] = ()  # e.g. the Omni thinkers' vision encoder: recipes here are audio-only
    # Encoder parameters that are fixed by design (Whisper's sinusoidal positions): frozen whatever the recipe says
    fixed_encoder_parameters: tuple[str, ...] = ()
    attention_modules: tuple[str, ...] = ATTENTION
    mlp_modules: tuple[str, ...] = MLP
    expert_parameters: tuple[str, ...] = ()  # MoE experts' 3-D parameters (LoRA through target_parameters)
    end_of_turn: str = "<|im_end|>"  # the token that ends an assistant turn: trained after every completion
    # Processor outputs that carry the audio: passed with the prompt ids to generation and every forward
    audio_inputs: tuple[str, ...] = ()
    audio_placeholders: Callable[[Any, int], int] | None = None  # (processor, samples) -> placeholder tokens
    # (processor) -> seconds: its processor silently cuts a longer clip there; None: it takes clips of any length
    longest_clip_seconds: Callable[[Any], float] | None = None
    # Whisper-style 30 s feature window with masked padding (Qwen2-Audio, AF3): the project cuts it to the batch's
    # longest clip (audio.window)
    whisper_window: bool = False
    # The processor takes exactly one clip per text (AF3 checks it): rows without audio are tokenised apart from it
    one_clip_per_text: bool = False
    # Multimodal rope (the Omni thinkers): packed rows carry (4, 1, N) position ids (audio_recipes.packing)
    multimodal_rope: bool = False
    audio_only_processor: type | None = None  # loaded instead of the full processor (the Omni processors)
    chat_encoder: ChatEncoder | None = None  # None: the chat template rendered as text, then the processor
    # Sub-configs kept on sdpa when a recipe asks for flash_attention_2 (models.loading.attention_implementation)
    sdpa_sub_configs: tuple[str, ...] = ()
    tiny_model: str | None = None  # its tiny model under tiny-models/ (audio_recipes.testing.tiny_models)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_encoder)

    @property
    def not_language_model(self) -> tuple[str, ...]:
        """Module names that LoRA never targets: the audio encoder also has q/k/v projections."""
        return self.audio_encoder + self.projector + self.never_trained

    def placeholder_count(self, processor: Any, samples: int) -> int:
        if self.audio_placeholders is None:
            raise ValueError(f"model family {self.name} takes no audio")
        return self.audio_placeholders(processor, samples)

    def longest_clip(self, processor: Any) -> float | None:
        """Seconds of a clip the processor keeps (the rest it drops without a word); None: no limit."""
        return None if self.longest_clip_seconds is None else self.longest_clip_seconds(processor)


FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: ModelFamily) -> ModelFamily:
    return FAMILIES.add(family.name, family)


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


QWEN_AUDIO_INPUTS = ("input_features", "feature_attention_mask")

QWEN2_AUDIO = register_family(ModelFamily(
    name="qwen2_audio",
    model_types=("qwen2_audio",),
    model_class="Qwen2AudioForConditionalGeneration",
    processor_classes=("Qwen2AudioProcessor",),
    audio_encoder=("audio_tower",),
    projector=("multi_modal_projector",),
    # built frozen, but transformers 5's from_pretrained hands them back trainable (ZeRO-3 init does not)
    fixed_encoder_parameters=("embed_positions",),
    audio_inputs=QWEN_AUDIO_INPUTS,
    audio_placeholders=whisper_placeholder_count,
    longest_clip_seconds=feature_window_seconds,
    whisper_window=True,
    # Its encoder on flash-attention-2 failed on the padding mask ("cu_seqlens_q must have shape (batch_size + 1)",
    # QwenLM/Qwen2-Audio#51), and the 30 s window cut and the ZeRO-3 silent clip are checked with sdpa's masking only;
    # the encoder is frozen in every recipe and its clips are short, so flash attention would gain little there
    sdpa_sub_configs=("audio_config",),
    tiny_model="qwen2-audio",
))

QWEN2_5_OMNI = register_family(ModelFamily(
    name="qwen2_5_omni",
    model_types=("qwen2_5_omni", "qwen2_5_omni_thinker"),
    model_class="Qwen2_5OmniThinkerForConditionalGeneration",  # the thinker: text out, no talker
    processor_classes=("Qwen2_5OmniProcessor",),
    audio_encoder=("audio_tower",),
    projector=(),  # its projection is the encoder's last layer (audio_tower.proj)
    never_trained=("visual",),
    audio_inputs=QWEN_AUDIO_INPUTS,
    multimodal_rope=True,
    audio_placeholders=processor_placeholder_count,
    longest_clip_seconds=feature_window_seconds,  # its processor truncates to the extractor's window (300 s released)
    audio_only_processor=_audio_only(transformers.Qwen2_5OmniProcessor),
    tiny_model="qwen2.5-omni",
))

QWEN3_OMNI_MOE = register_family(ModelFamily(
    name="qwen3_omni_moe",
    model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
    model_class="Qwen3OmniMoeThinkerForConditionalGeneration",
    processor_classes=("Qwen3OmniMoeProcessor",),
    audio_encoder=("audio_tower",),
    never_trained=("visual",),
    expert_parameters=EXPERT_PARAMETERS,  # only the language model has experts (the talker is never loaded)
    audio_inputs=QWEN_AUDIO_INPUTS,
    multimodal_rope=True,
    audio_placeholders=processor_placeholder_count,
    audio_only_processor=_audio_only(transformers.Qwen3OmniMoeProcessor),
    tiny_model="qwen3-omni-moe",
))

QWEN3 = register_family(ModelFamily(
    name="qwen3",
    model_types=("qwen3",),
    tiny_model="qwen3",
))

AUDIO_FLAMINGO3 = register_family(ModelFamily(
    name="audioflamingo3",
    model_types=("audioflamingo3",),
    model_class="AudioFlamingo3ForConditionalGeneration",
    processor_classes=("AudioFlamingo3Processor",),
    audio_encoder=("audio_tower",),  # AF-Whisper: Whisper-large-v3's encoder, then pooling by 2
    projector=("multi_modal_projector",),  # two linear layers with a GELU
    fixed_encoder_parameters=("embed_positions",),  # built frozen, as Qwen2-Audio's: handed back trainable on load
    # Its encoder masks each window's padding as Qwen2-Audio's does: kept on sdpa under flash_attention_2 too
    sdpa_sub_configs=("audio_config",),
    # Its language model is Qwen2 (Qwen2.5-7B): the default attention and MLP names, <|im_end|> ends a turn
    audio_inputs=("input_features", "input_features_mask"),
    audio_placeholders=windowed_placeholder_count,
    longest_clip_seconds=max_audio_len_seconds,
    # Its processor pads each clip (each 30 s window of a longer one) to 3000 mel frames and its encoder masks the
    # padding, as Qwen2-Audio's: the window cut applies (audio.window replaces its encoder's forward too)
    whisper_window=True,
    one_clip_per_text=True,
    tiny_model="audio-flamingo3",
))

VOXTRAL = register_family(ModelFamily(
    name="voxtral",
    model_types=("voxtral",),
    model_class="VoxtralForConditionalGeneration",
    processor_classes=("VoxtralProcessor",),
    audio_encoder=("audio_tower",),
    projector=("multi_modal_projector",),
    fixed_encoder_parameters=("embed_positions",),  # Whisper's sinusoids, built frozen as in Qwen2-Audio
    end_of_turn="</s>",  # mistral_common ends an assistant turn with the eos token
    audio_inputs=("input_features",),  # one row per 30 s chunk; no mask (the encoder takes whole chunks)
    audio_placeholders=voxtral_placeholder_count,
    chat_encoder=MISTRAL_CHAT,  # its processor refuses text holding [AUDIO]: prompts go through mistral_common
    tiny_model="voxtral",
))

# A text language model of a family the project does not list: loaded with AutoModelForCausalLM
TEXT_LM = ModelFamily(name="text_lm", model_types=())


def family_for_model_type(model_type: str | None) -> ModelFamily:
    for _, family in FAMILIES.items():
        if model_type in family.model_types:
            return family
    return TEXT_LM


def family_for_model(model: Any) -> ModelFamily:
    """The family of a loaded model (a PEFT model passes its base model's config through)."""
    return family_for_model_type(getattr(getattr(model, "config", None), "model_type", None))


def family_for_processor(processor: Any) -> ModelFamily:
    """The family whose processor this is; a tokenizer alone is a text model's."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    for _, family in FAMILIES.items():
        if names & set(family.processor_classes):
            return family
    return TEXT_LM


def model_class_for(model_type: str) -> type:
    """The class that loads a checkpoint of `model_type`: never AutoModelForCausalLM for an audio model, which
    would drop the audio encoder."""
    family = family_for_model_type(model_type)
    return getattr(transformers, family.model_class) if family.model_class else transformers.AutoModelForCausalLM
