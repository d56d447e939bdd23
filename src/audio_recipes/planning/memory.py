"""Memory per GPU of a training step, or of generation, from a model built on the meta device and the step's shape.

What is estimated is the peak of what torch's allocator holds (torch.cuda.max_memory_allocated): weights, gradients,
optimizer states, the activations autograd keeps for the backward pass, and the largest temporary buffers. The CUDA
context and the allocator's cached but free blocks come on top (pipelines.plan leaves room for them in its verdict).

Activations are counted per layer from what each operation saves for its backward pass (transformers' Qwen layers:
RMSNorm upcasts to fp32, the attention keeps q, k, v and its output, the SwiGLU MLP four intermediates), so that the
same count holds on a GPU and on the CPU where tests measure it; `device` changes only what differs between them
(TRL's fused loss head scores only the labelled positions with Triton, every position without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from audio_recipes.distributed import parameter_count
from audio_recipes.models.families import ModelFamily

GIB = 2**30
# bitsandbytes NF4 / FP4: 4 bits per weight plus one absmax per 64-weight block: fp32, or with nested quantisation
# 8 bits plus one fp32 per 256 blocks
FOUR_BIT_BYTES = {False: 0.5 + 4 / 64, True: 0.5 + 1 / 64 + 4 / (64 * 256)}
INT8_BYTES = 1.0  # LLM.int8(): one byte per weight (row scales are negligible)
# TRL's fused loss head (trl.kernels.chunked_logprob): tiles of up to 4096 positions x 32768 vocabulary entries
LOSS_TILE_POSITIONS, LOSS_TILE_VOCABULARY = 4096, 32768
# Its torch fallback (no Triton: the CPU) holds about this many fp32 copies of a tile at once in backward (the
# logits, their log-probabilities, probabilities, the one-hot target, the gradient and its products): 7.25 measured
# with torch's profiler around the function alone (1052 and 2000 positions, vocabulary 156032), on top of its buffer
LOSS_TILE_FP32_COPIES_WITHOUT_TRITON = 7.25


@dataclass
class ParameterInventory:
    """The parameters of a model as it would train: counts, bytes as stored, what trains."""

    total: int = 0
    trainable: int = 0
    weight_bytes: float = 0.0
    trainable_bytes: float = 0.0  # as stored: gradients and torch's AdamW states take the parameter's dtype
    quantized: int = 0  # elements stored in 4 or 8 bits
    largest_quantized: int = 0  # the largest such weight (dequantised one at a time in forward and backward)
    head_elements: int = 0  # the output head (its gradient is built in fp32 by TRL's fused loss)
    head_trainable: bool = False
    parts: dict[str, int] = field(default_factory=dict)  # elements by part: language_model, audio_encoder, ...
    trainable_parts: dict[str, int] = field(default_factory=dict)
    lora_inputs_per_layer: int = 0  # input features of the LoRA'd linears in one decoder layer
    lora_rank_per_layer: int = 0  # LoRA ranks summed over those linears
    adapter_bytes: int = 0  # bytes per element of the LoRA weights
    # Experts with LoRA (PEFT's target_parameters): each forward folds W + BA into a new tensor of the experts' size,
    # which autograd keeps for the backward pass; elements of one layer's wrapped experts and their bytes
    wrapped_per_layer: int = 0
    wrapped_bytes: int = 0


def _part(name: str, family: ModelFamily) -> str:
    padded = f".{name}."
    if ".lora_" in padded or "lora_" in name:
        return "lora"
    for part in ("audio_encoder", "projector", "never_trained"):
        if any(f".{module}." in padded for module in getattr(family, part)):
            return part
    return "language_model"


def parameter_inventory(model: torch.nn.Module, family: ModelFamily, nested_quantization: bool = True,
                        adapter_dtype: torch.dtype | None = None) -> ParameterInventory:
    """Counts and bytes of `model`'s parameters (a meta model: shapes and dtypes only). `adapter_dtype` is the dtype
    the LoRA weights train in (TRL casts them to bf16 on a 4-bit model; PEFT keeps them in fp32 otherwise)."""
    import bitsandbytes as bnb

    storage: dict[int, float] = {}
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            storage[id(module.weight)] = FOUR_BIT_BYTES[nested_quantization]
        elif isinstance(module, bnb.nn.Linear8bitLt):
            storage[id(module.weight)] = INT8_BYTES
    from peft.tuners.lora.layer import ParamWrapper

    wrapped_layer: str | None = None
    inventory_wrapped, wrapped_bytes = 0, 0
    for name, module in model.named_modules():
        if isinstance(module, ParamWrapper) and ".layers." in name:
            layer = name.split(".layers.")[0] + ".layers." + name.split(".layers.")[1].split(".")[0]
            if wrapped_layer in (None, layer):
                wrapped_layer = layer
                parameter = module.get_param()
                inventory_wrapped += parameter_count(parameter)
                wrapped_bytes = parameter.element_size()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    inventory = ParameterInventory(wrapped_per_layer=inventory_wrapped, wrapped_bytes=wrapped_bytes)
    lora_layer: str | None = None
    for name, parameter in model.named_parameters():
        elements = parameter_count(parameter)
        part = _part(name, family)
        element_bytes = storage.get(id(parameter))
        if element_bytes is not None:
            inventory.quantized += elements
            inventory.largest_quantized = max(inventory.largest_quantized, elements)
        elif part == "lora" and adapter_dtype is not None:
            element_bytes = torch.empty((), dtype=adapter_dtype).element_size()
        else:
            element_bytes = parameter.element_size()
        inventory.total += elements
        inventory.weight_bytes += elements * element_bytes
        inventory.parts[part] = inventory.parts.get(part, 0) + elements
        if parameter.requires_grad:
            inventory.trainable += elements
            inventory.trainable_bytes += elements * element_bytes
            inventory.trainable_parts[part] = inventory.trainable_parts.get(part, 0) + elements
        if parameter is head_weight:
            inventory.head_elements = elements
            inventory.head_trainable = parameter.requires_grad
        if part == "lora" and ".lora_A." in name and parameter.dim() == 2 and ".layers." in name:
            layer = name.split(".layers.")[0] + ".layers." + name.split(".layers.")[1].split(".")[0]
            if lora_layer in (None, layer) and not any(f".{m}." in f".{name}." for m in family.not_language_model):
                lora_layer = layer
                inventory.lora_rank_per_layer += parameter.shape[0]
                inventory.lora_inputs_per_layer += parameter.shape[1]
                inventory.adapter_bytes = element_bytes
    return inventory


@dataclass(frozen=True)
class ModelShape:
    """The widths that size activations, read from the config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocabulary: int
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    qk_norm: bool = False
    encoder_width: int = 0
    encoder_layers: int = 0
    encoder_ffn: int = 0
    encoder_heads: int = 0

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        config = model.config
        text = config.get_text_config()
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        names = [name for name, _ in model.named_parameters()]
        audio = getattr(config, "audio_config", None)
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        vocabulary = embedding.weight.shape[0] if embedding is not None else text.vocab_size
        experts = getattr(text, "num_experts", 0) or 0
        return cls(
            hidden=text.hidden_size, layers=text.num_hidden_layers, heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", heads) or heads, head_dim=head_dim,
            intermediate=getattr(text, "intermediate_size", 0) or 0, vocabulary=vocabulary, experts=experts,
            experts_per_token=getattr(text, "num_experts_per_tok", 0) or 0 if experts else 0,
            expert_intermediate=getattr(text, "moe_intermediate_size", 0) or 0 if experts else 0,
            qk_norm=any(name.endswith("self_attn.q_norm.weight") for name in names),
            encoder_width=getattr(audio, "d_model", 0) or 0, encoder_layers=getattr(audio, "encoder_layers", 0) or 0,
            encoder_ffn=getattr(audio, "encoder_ffn_dim", 0) or 0,
            encoder_heads=getattr(audio, "encoder_attention_heads", 0) or 0,
        )


@dataclass(frozen=True)
class StepShape:
    """One micro-batch: the longest one, padded as the collator pads it."""

    rows: int
    tokens: int  # padded length (text + audio placeholders)
    label_tokens: int  # positions with a loss, over the micro-batch
    clips: int = 0
    encoder_positions: int = 0  # encoder positions of the longest clip (the batch's window)

    @property
    def positions(self) -> int:
        return self.rows * self.tokens


@dataclass(frozen=True)
class Precision:
    parameter_bytes: int  # the model's dtype (the recipe's `dtype`)
    activation_bytes: int  # 2 under bf16 / fp16 (weights or autocast), else 4
    mixed: bool  # bf16 / fp16 training: DeepSpeed keeps fp32 master weights


@dataclass
class MemoryEstimate:
    """Bytes per GPU at the step's peak, by kind."""

    weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0
    buffers: float = 0.0  # the largest temporaries: loss tiles and the head's fp32 gradient, gathered ZeRO-3 weights
    # Gradients held while a micro-batch's activations are (accumulation over micro-batches, DeepSpeed's buffers);
    # else they are built as the activations are freed, and the peak is the larger of the two
    gradients_with_activations: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        step = self.activations + self.buffers
        moving = self.gradients + step if self.gradients_with_activations else max(self.gradients, step)
        return self.weights + self.optimizer + moving

    def gib(self) -> dict[str, float]:
        return {"weights": self.weights / GIB, "gradients": self.gradients / GIB, "optimizer": self.optimizer / GIB,
                "activations": self.activations / GIB, "buffers": self.buffers / GIB, "total": self.total / GIB}


def decoder_layer_bytes_per_position(shape: ModelShape, inventory: ParameterInventory, e: int) -> float:
    """Bytes one decoder layer keeps for backward, per position (batch row x token)."""
    h, a, g, d = shape.hidden, shape.heads, shape.kv_heads, shape.head_dim
    norm = (4 + 2 * e) * h  # fp32 copy of the input, the normalised value in the model's dtype, the output
    # q and k after RoPE, v: sdpa gets k and v repeated to every query head (transformers' repeat_kv)
    attention = e * (a * d + 2 * a * d) + 2 * e * a * d  # q, k, v as sdpa sees them; its output; o_proj's input
    if shape.qk_norm:  # Qwen3's RMSNorm over each head of q and k
        attention += (4 + 2 * e) * (a + g) * d
    if shape.experts:
        # the router's logits and softmax (fp32); each routed copy of a position through one expert's SwiGLU
        mlp = 8 * shape.experts + shape.experts_per_token * e * (2 * h + 4 * shape.expert_intermediate)
    else:
        mlp = 4 * e * shape.intermediate  # gate, SiLU(gate), up, their product
    lora = 0.0
    if inventory.lora_inputs_per_layer:
        a_bytes = inventory.adapter_bytes or e
        # the input cast to the adapter's dtype (and dropped out: the mask, a byte) for lora_A; lora_A's output
        copy = a_bytes if a_bytes != e else 0
        lora = inventory.lora_inputs_per_layer * (copy + 1) + inventory.lora_rank_per_layer * a_bytes
    return 2 * norm + attention + mlp + lora


def encoder_layer_bytes_per_position(shape: ModelShape, e: int) -> float:
    """A Whisper-style encoder layer (LayerNorm, attention, GELU MLP), when it trains."""
    d, f = shape.encoder_width, shape.encoder_ffn
    return e * (2 * 2 * d + 5 * d + 2 * f)


def activation_bytes(shape: ModelShape, inventory: ParameterInventory, step: StepShape, precision: Precision,
                     checkpointing: bool, encoder_trains: bool, device: str) -> tuple[float, float, list[str]]:
    """(kept for backward, largest temporaries) of one micro-batch."""
    e = precision.activation_bytes
    positions = step.positions
    layer = decoder_layer_bytes_per_position(shape, inventory, e) * positions
    # experts with LoRA: each layer's folded weights W + BA (see ParameterInventory.wrapped_per_layer)
    layer_folded = inventory.wrapped_per_layer * inventory.wrapped_bytes
    layer += layer_folded
    notes = []
    if layer_folded:
        notes.append(f"LoRA on experts: each layer's experts folded with their adapters ({layer_folded / GIB:.2f} GiB a "
                     "layer) are kept for backward")
    if checkpointing:
        # each layer keeps its input; during backward one layer at a time is recomputed, with its gradients
        kept = shape.layers * e * shape.hidden * positions + 2 * layer
        notes.append("activation checkpointing: every layer's input kept, one layer recomputed at a time")
    else:
        kept = shape.layers * layer
    kept += (4 + 2 * e) * shape.hidden * positions  # the final norm
    # TRL's fused loss head: with Triton (GPU) it scores the labelled positions only; without it, every position
    scored = step.label_tokens if device == "cuda" else positions
    kept += e * shape.hidden * scored  # the hidden states it keeps for backward
    tile = min(scored, LOSS_TILE_POSITIONS) * min(shape.vocabulary, LOSS_TILE_VOCABULARY)
    loss_buffers = tile * e + (0 if device == "cuda" else LOSS_TILE_FP32_COPIES_WITHOUT_TRITON * 4 * tile)
    loss_buffers += (4 + e) * shape.hidden * scored  # the hidden states' gradient, in fp32 then cast
    if inventory.head_trainable:  # the head's gradient, accumulated in fp32 then cast to the parameter's dtype
        loss_buffers += (4 + precision.parameter_bytes) * inventory.head_elements
    if step.clips and shape.encoder_layers:
        encoder_positions = step.clips * step.encoder_positions
        if encoder_trains:
            kept += shape.encoder_layers * encoder_layer_bytes_per_position(shape, e) * encoder_positions
        else:  # no graph through a frozen encoder: one layer's working set at a time
            loss_buffers = max(loss_buffers, encoder_layer_bytes_per_position(shape, e) * encoder_positions)
    return kept, loss_buffers, notes


def training_memory(shape: ModelShape, inventory: ParameterInventory, step: StepShape, precision: Precision, *,
                    num_processes: int = 1, zero_stage: int = 0, offload_optimizer: bool = False,
                    max_live_parameters: float = 1e9, checkpointing: bool = False, encoder_trains: bool = False,
                    device: str = "cuda", accumulation: int = 1) -> MemoryEstimate:
    """Peak bytes per GPU of a training step (AdamW). With gradient accumulation the gradients of the earlier
    micro-batches are held through the next one's forward and backward; without it (and without DeepSpeed, whose
    gradient buffers stay allocated) they are freed after each optimizer step."""
    estimate = MemoryEstimate(gradients_with_activations=accumulation > 1 or zero_stage > 0)
    n = num_processes if zero_stage else 1
    trainable = inventory.trainable
    if zero_stage == 3:
        # each rank holds its shard; a layer's full weights are gathered around its forward and backward, and
        # DeepSpeed keeps up to stage3_max_live_parameters of them gathered
        estimate.weights = inventory.weight_bytes / n
        gathered = min(inventory.total, max_live_parameters) * precision.parameter_bytes
        estimate.buffers += gathered
        estimate.notes.append(f"ZeRO-3: weights sharded over {n} ranks, up to {gathered / GIB:.2f} GiB gathered")
    else:
        estimate.weights = inventory.weight_bytes
    if zero_stage:
        # DeepSpeed: the gradient shard in the parameter dtype, an fp32 copy for the step; fp32 master weights
        # (under bf16 / fp16) and AdamW's two fp32 moments, all over n ranks
        estimate.gradients = trainable * (precision.parameter_bytes + 4) / (n if zero_stage >= 2 else 1)
        state_bytes = 8 + (4 if precision.mixed or zero_stage == 3 else 0)
        estimate.optimizer = 0.0 if offload_optimizer else trainable * state_bytes / n
    else:
        estimate.gradients = inventory.trainable_bytes
        estimate.optimizer = 2 * inventory.trainable_bytes  # torch AdamW: two moments in the parameter's dtype
    kept, buffers, notes = activation_bytes(shape, inventory, step, precision, checkpointing, encoder_trains, device)
    estimate.activations = kept
    estimate.buffers += buffers
    if inventory.quantized:  # a 4/8-bit weight dequantised for its matmul, one at a time
        estimate.buffers += inventory.largest_quantized * precision.activation_bytes
    estimate.notes.extend(notes)
    return estimate


def generation_memory(shape: ModelShape, inventory: ParameterInventory, rows: int, prompt_tokens: int,
                      new_tokens: int, precision: Precision, clips: int = 0, encoder_positions: int = 0
                      ) -> MemoryEstimate:
    """Peak bytes of batched generation: weights, the KV cache at its longest, the prefill's largest temporaries."""
    e = precision.activation_bytes
    estimate = MemoryEstimate(weights=inventory.weight_bytes)
    total_tokens = prompt_tokens + new_tokens
    kv_cache = 2 * shape.layers * shape.kv_heads * shape.head_dim * e * rows * total_tokens
    positions = rows * prompt_tokens
    width = shape.expert_intermediate * shape.experts_per_token if shape.experts else shape.intermediate
    prefill = e * positions * (4 * shape.hidden + 3 * width + 4 * shape.heads * shape.head_dim)
    encoder = encoder_layer_bytes_per_position(shape, e) * clips * encoder_positions if clips else 0
    estimate.activations = kv_cache
    estimate.buffers = max(prefill, encoder) + 4 * rows * shape.vocabulary  # the last position's logits in fp32
    if inventory.quantized:
        estimate.buffers += inventory.largest_quantized * e
    estimate.notes.append(f"KV cache for {rows} x {total_tokens} tokens: {kv_cache / GIB:.2f} GiB")
    return estimate
