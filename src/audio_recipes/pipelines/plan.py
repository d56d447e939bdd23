"""A plan before the run: parameters, memory per GPU, tokens per step and a verdict, for a recipe and a launch,
without loading a weight (scripts/plan.py)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from audio_recipes.config import (
    EvalArguments,
    GRPOConfig,
    ModelArguments,
    RestArguments,
    RewardArguments,
    SFTConfig,
    TaskArguments,
)
from audio_recipes.errors import DataError, RecipeError
from audio_recipes.models import (
    build_empty_model,
    family_for_model_type,
    freeze_modules,
    load_processor,
    lora_config,
)
from audio_recipes.models.families import ModelFamily
from audio_recipes.models.real_shapes import real_shape
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.planning.launch import Launch, read_launch
from audio_recipes.planning.memory import (
    GIB,
    MemoryEstimate,
    ModelShape,
    ParameterInventory,
    Precision,
    StepShape,
    generation_memory,
    parameter_inventory,
    training_memory,
)
from audio_recipes.planning.tokens import ROWS_COUNTED, TokenStats, count_tokens, tokens_per_step
from audio_recipes.recipe import load_recipe

logger = logging.getLogger(__name__)

# Room the verdict leaves beside the estimate: the CUDA context and kernels (about 1 GiB outside torch's allocator)
# and the allocator's fragmentation (blocks cached but not reusable: a few percent at the peak)
CUDA_CONTEXT_GIB = 1.0
FRAGMENTATION = 0.05


@dataclass
class PlanArguments:
    """Options of scripts/plan.py (besides the recipe's own)."""

    config_file: str | None = field(
        default=None, metadata={"help": "The accelerate config the run is launched with (accelerate_configs/X.yaml); "
                                "unset: one process, no DeepSpeed."})
    num_processes: int | None = field(
        default=None, metadata={"help": "Processes (GPUs) of the launch; unset: the accelerate config's."})
    gpu_memory_gb: float = field(
        default=80.0, metadata={"help": "Memory of one GPU in GiB (what nvidia-smi shows / 1024), for the verdict."})
    audio_seconds: float | None = field(
        default=None, metadata={"help": "Clip length to plan for; unset: read from the recipe's audio files, or "
                                "max_audio_seconds (the longest clip kept) where they are absent."})
    plan_device: str = field(
        default="cuda", metadata={"help": "'cuda' (a GPU run) or 'cpu' (what differs on CPU: TRL's loss head scores "
                                  "every position without Triton). Tests compare 'cpu' with measured peaks."})


def recipe_kind(recipe: dict[str, Any]) -> str:
    """Which script runs a recipe: rest.py, grpo.py, sft.py or (no training options) evaluate.py."""
    if "rest_iterations" in recipe or "samples_per_question" in recipe:
        return "rest"
    if "reward_funcs" in recipe or "num_generations" in recipe:
        return "grpo"
    if any(key in recipe for key in ("num_train_epochs", "max_steps", "per_device_train_batch_size", "learning_rate")):
        return "sft"
    return "evaluate"


ARGUMENT_TYPES = {
    "sft": (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
    "evaluate": (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
    "grpo": (ModelArguments, TaskArguments, RewardArguments, GRPOConfig),
    "rest": (ModelArguments, TaskArguments, RewardArguments, SFTConfig, EvalArguments, RestArguments),
}


@dataclass
class ParsedRecipe:
    kind: str
    path: str
    model: ModelArguments
    task: TaskArguments
    training: Any  # SFTConfig or GRPOConfig
    plan: PlanArguments
    evaluation: EvalArguments | None = None
    rest: RestArguments | None = None


def recipe_argument(argv: list[str]) -> str | None:
    """The recipe in a command line: `--config PATH`, else the first argument that is not an option nor an option's
    value (`--config_file accelerate_configs/zero3.yaml RECIPE.yaml` names RECIPE.yaml)."""
    if "--config" in argv[:-1]:
        return argv[argv.index("--config") + 1]
    for index, arg in enumerate(argv):
        previous = argv[index - 1] if index else ""
        if not arg.startswith("-") and not (previous.startswith("--") and "=" not in previous):
            return arg
    return None


def parse_plan_arguments(argv: list[str]) -> ParsedRecipe:
    """The recipe with the script's dataclasses (those of the script that runs it) and the plan's options."""
    from audio_recipes.recipe import parse_recipe

    recipe_path = recipe_argument(argv)
    if recipe_path is None:
        raise RecipeError("no recipe: scripts/plan.py RECIPE.yaml [--config_file accelerate_configs/X.yaml] ...")
    kind = recipe_kind(load_recipe(recipe_path))
    types = (*ARGUMENT_TYPES[kind], PlanArguments)
    # TrainingArguments refuses bf16 where no GPU is present unless told the run is on CPU: the plan runs nothing
    extra = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    *parsed, located = parse_recipe(types, [*argv, *extra], return_recipe_path=True)
    if located != recipe_path:  # the kind was read off another file: never plan one recipe as another's script
        raise RecipeError(f"the recipe is {located}, but {recipe_path} was taken for it: give the recipe first "
                          "(scripts/plan.py RECIPE.yaml --config_file ...)")
    by_type = {type(instance): instance for instance in parsed}
    plan_args = by_type[PlanArguments]
    if plan_args.num_processes is not None and plan_args.num_processes < 1:
        raise RecipeError(f"--num_processes {plan_args.num_processes}: a launch has at least 1 process")
    if not plan_args.gpu_memory_gb > 0:
        raise RecipeError(f"--gpu_memory_gb {plan_args.gpu_memory_gb}: one GPU's memory in GiB, above 0")
    if plan_args.plan_device not in ("cuda", "cpu"):
        raise RecipeError(f"--plan_device {plan_args.plan_device!r}: expected 'cuda' or 'cpu'")
    training = by_type.get(GRPOConfig) or by_type.get(SFTConfig)
    if extra:
        training.use_cpu = False
    return ParsedRecipe(kind=kind, path=recipe_path, model=by_type[ModelArguments], task=by_type[TaskArguments],
                        training=training, plan=by_type[PlanArguments], evaluation=by_type.get(EvalArguments),
                        rest=by_type.get(RestArguments))


def model_config(model_args: ModelArguments):
    """The config of the model a recipe names: a released model's written-down shape, or a local checkpoint's."""
    from transformers import AutoConfig

    from audio_recipes.hub import resolve_model

    shape = real_shape(model_args.model_name_or_path)
    if shape is not None:
        return shape.build_config(), shape, model_args.model_name_or_path
    if not Path(model_args.model_name_or_path).is_dir():
        raise RecipeError(f"no written-down shape for {model_args.model_name_or_path} (audio_recipes.models.real_shapes "
                          "lists the released models the recipes name) and no local folder of that name")
    resolved = resolve_model(model_args.model_name_or_path)
    shape = real_shape(resolved.base_model)
    if shape is not None:
        return shape.build_config(), shape, resolved.base_model
    return AutoConfig.from_pretrained(resolved.base_model), None, resolved.base_model


def planning_processor(model_args: ModelArguments, family: ModelFamily, base: str, model_type: str):
    """The processor that renders the chat template: a local model's own, or for a Hub id the family's tiny twin
    (the same template and special tokens; audio_recipes.testing.tiny_models)."""
    if Path(base).is_dir():
        return load_processor(model_args.processor_name_or_path or base, model_type=model_type)
    if family.tiny_model is None:
        raise RecipeError(f"no local processor for {base}: its family {family.name} has no tiny twin")
    from audio_recipes.testing.tiny_models import ensure_tiny_model

    return load_processor(str(ensure_tiny_model(family.tiny_model)), model_type=model_type)


def adapter_dtype(model_args: ModelArguments, training, launch: Launch, quantized: bool) -> torch.dtype:
    """The dtype LoRA weights train in: TRL casts them to bf16 on a 4-bit model (back to fp32 here without bf16);
    PEFT keeps them in fp32 on a 16-bit model, except under ZeRO-3 where TRL keeps the model's dtype."""
    if quantized:
        return torch.bfloat16 if training.bf16 else torch.float32
    if launch.zero_stage == 3:
        return _model_dtype(model_args)
    return torch.float32


def _model_dtype(model_args: ModelArguments) -> torch.dtype:
    name = model_args.dtype if model_args.dtype not in (None, "auto") else "float32"
    return getattr(torch, name)


def precision_of(model_args: ModelArguments, training) -> Precision:
    parameter_bytes = torch.empty((), dtype=_model_dtype(model_args)).element_size()
    mixed = bool(training.bf16 or training.fp16)
    return Precision(parameter_bytes=parameter_bytes, activation_bytes=2 if (parameter_bytes == 2 or mixed) else 4,
                     mixed=mixed)


@dataclass
class PlannedModel:
    model: torch.nn.Module
    family: ModelFamily
    inventory: ParameterInventory
    shape: ModelShape
    vocabulary_rows: int


def plan_model(model_args: ModelArguments, config, training, launch: Launch, tokenizer_size: int | None,
               trains: bool) -> PlannedModel:
    """The model as the recipe trains it, on the meta device: frozen parts, speech rows, LoRA (experts included)."""
    from peft import get_peft_model

    family = family_for_model_type(config.model_type)
    model = build_empty_model(config, model_args)
    if model_args.num_speech_tokens and tokenizer_size:
        rows = tokenizer_size + model_args.num_speech_tokens + 2
        if rows > model.get_input_embeddings().weight.shape[0]:
            # as models.speech_vocabulary does it: rounded up to a multiple of 64
            model.resize_token_embeddings(rows, pad_to_multiple_of=64, mean_resizing=False)
    quantized = bool(model_args.load_in_4bit or model_args.load_in_8bit)
    if trains:
        freeze_modules(model, model_args)
        if model_args.use_peft:
            dtype = adapter_dtype(model_args, training, launch, quantized)
            model = get_peft_model(model, lora_config(model_args, model),
                                   autocast_adapter_dtype=dtype == torch.float32)
    else:
        model.requires_grad_(False)
    inventory = parameter_inventory(model, family, nested_quantization=model_args.use_bnb_nested_quant,
                                    adapter_dtype=adapter_dtype(model_args, training, launch, quantized)
                                    if model_args.use_peft else None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return PlannedModel(model, family, inventory, ModelShape.of(base), base.get_input_embeddings().weight.shape[0])


@dataclass
class Plan:
    recipe: str
    kind: str
    model: str
    launch: Launch
    planned: PlannedModel
    tokens: TokenStats
    step: StepShape
    memory: MemoryEstimate
    gpu_memory_gb: float
    checkpointing: bool
    rows_per_step: int
    completion_tokens: int | None = None  # GRPO: each row's completion is generated, up to this many tokens
    knob: str | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def needed_gib(self) -> float:
        return self.memory.total / GIB

    @property
    def fits(self) -> bool:
        return fits(self.memory.total, self.gpu_memory_gb)

    def tokens_per_step(self) -> dict[str, float]:
        per_step = tokens_per_step(self.tokens, self.rows_per_step)
        if self.completion_tokens is not None:  # the data's answers are not what GRPO trains on: its completions are
            labelled = self.completion_tokens * self.rows_per_step
            per_step = {**per_step, "labelled": labelled, "labelled_is_at_most": True,
                        "total": per_step["total"] - per_step["labelled"] + labelled}
        return per_step

    def summary(self) -> dict[str, Any]:
        inventory = self.planned.inventory
        per_step = self.tokens_per_step()
        return {
            "recipe": self.recipe, "kind": self.kind, "model": self.model, "launch": self.launch.config_file,
            "num_processes": self.launch.num_processes, "zero_stage": self.launch.zero_stage,
            "total_parameters": inventory.total, "trainable_parameters": inventory.trainable,
            "memory_gb_per_gpu": round(self.needed_gib, 2),
            "memory_breakdown_gb": {key: round(value, 2) for key, value in self.memory.gib().items()},
            "gpu_memory_gb": self.gpu_memory_gb, "fits": self.fits, "first_knob": self.knob,
            "activation_checkpointing": self.checkpointing,
            "audio_tokens_per_clip": {"mean": round(self.tokens.audio_tokens_mean, 1),
                                      "max": self.tokens.audio_tokens_max},
            "tokens_per_optimizer_step": per_step, "micro_batch": dataclasses.asdict(self.step),
        }


def fits(total_bytes: float, gpu_memory_gb: float) -> bool:
    return total_bytes / GIB <= gpu_memory_gb * (1 - FRAGMENTATION) - CUDA_CONTEXT_GIB


def micro_batch(kind: str, parsed: ParsedRecipe, tokens: TokenStats, rows: int | None = None) -> StepShape:
    """The largest micro-batch the run trains on (or generates for): its rows padded to the longest row."""
    training = parsed.training
    clips = 1 if tokens.clips_per_row else 0
    if kind == "grpo":
        rows = rows or training.per_device_train_batch_size
        completion = training.max_completion_length
        prompt = tokens.prompt_max  # the longest prompt, not the longest row less the longest answer
        return StepShape(rows=rows, tokens=prompt + completion, label_tokens=rows * completion, clips=rows * clips,
                         encoder_positions=tokens.encoder_positions_max)
    if kind == "evaluate":
        rows = rows or training.per_device_eval_batch_size
        return StepShape(rows=rows, tokens=tokens.sequence_max, label_tokens=0, clips=rows * clips,
                         encoder_positions=tokens.encoder_positions_max)
    rows = rows or training.per_device_train_batch_size
    return StepShape(rows=rows, tokens=tokens.sequence_max, label_tokens=rows * tokens.label_max, clips=rows * clips,
                     encoder_positions=tokens.encoder_positions_max)


def grpo_steps_per_generation(training) -> int:
    """Micro-batches TRL generates for at once (GRPOConfig fills it from gradient_accumulation_steps when unset)."""
    return getattr(training, "steps_per_generation", None) or training.gradient_accumulation_steps


def estimate(kind: str, parsed: ParsedRecipe, planned: PlannedModel, tokens: TokenStats, launch: Launch,
             step: StepShape, checkpointing: bool) -> MemoryEstimate:
    precision = precision_of(parsed.model, parsed.training)
    device = parsed.plan.plan_device
    if kind == "evaluate":
        new = parsed.evaluation.max_new_tokens if parsed.evaluation else 128
        beams = parsed.evaluation.num_beams if parsed.evaluation else 1  # generate expands every input by the beams
        memory = generation_memory(planned.shape, planned.inventory, step.rows * beams, step.tokens, new, precision,
                                   clips=step.clips * beams, encoder_positions=step.encoder_positions)
        if beams > 1:
            memory.notes.append(f"beam search: {step.rows} rows x {beams} beams")
        return memory
    encoder_trains = bool(planned.inventory.trainable_parts.get("audio_encoder"))
    memory = training_memory(
        planned.shape, planned.inventory, step, precision, num_processes=launch.num_processes,
        zero_stage=launch.zero_stage, offload_optimizer=launch.offload_optimizer,
        max_live_parameters=launch.stage3_max_live_parameters, checkpointing=checkpointing,
        encoder_trains=encoder_trains, device=device, accumulation=parsed.training.gradient_accumulation_steps)
    if launch.offload_parameters:
        memory.notes.append("ZeRO-3 parameter offload is not modelled: the weights are counted on the GPU (an "
                            "overestimate)")
    if kind == "grpo":
        beta = getattr(parsed.training, "beta", 0.0)
        if beta and not parsed.model.use_peft:  # a frozen reference copy (LoRA: the adapter is switched off instead)
            memory.weights += planned.inventory.weight_bytes / (launch.num_processes if launch.zero_stage == 3 else 1)
            memory.notes.append("GRPO: a frozen reference model beside the policy (beta > 0, no LoRA)")
        # TRL generates a whole generation batch in one call: steps_per_generation micro-batches of rows
        rows = step.rows * grpo_steps_per_generation(parsed.training)
        generation = generation_memory(planned.shape, planned.inventory, rows, step.tokens - step.label_tokens
                                       // max(step.rows, 1), step.label_tokens // max(step.rows, 1), precision)
        memory.buffers = max(memory.buffers, generation.activations + generation.buffers)
        memory.notes.append(f"GRPO: generation's KV cache ({rows} rows at once: per_device_train_batch_size x "
                            "steps_per_generation) counted where it exceeds the training step's buffers")
    if kind == "rest":
        rows = parsed.training.per_device_eval_batch_size
        new = parsed.evaluation.max_new_tokens if parsed.evaluation else 128
        prompt = tokens.prompt_max  # the longest prompt, not the longest row less the longest answer
        generation = generation_memory(planned.shape, planned.inventory, rows, prompt, new, precision)
        memory.buffers = max(memory.buffers, generation.activations + generation.buffers)
        memory.notes.append("ReST: its sampling phase (per_device_eval_batch_size rows) counted where it needs more")
    return memory


def training_rows(task_args: TaskArguments, tiny_twin: Path | None, split: str = "train"
                  ) -> tuple[list[dict[str, Any]], str]:
    """The recipe's rows of `split` (train; test for an evaluation), or where they are absent its tiny twin's (built
    on first use), or none."""
    try:
        examples = recipe_task(task_args).examples(split)
        return ([example.to_row() for example in examples[:ROWS_COUNTED]],
                f"the recipe's data ({_source(task_args, split)})")
    except (DataError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
    if tiny_twin is None or not tiny_twin.is_file():
        return [], f"none (the recipe's data is absent: {reason})"
    twin = load_recipe(tiny_twin)
    fields = {name for name in TaskArguments.__dataclass_fields__}
    twin_args = TaskArguments(**{key: value for key, value in twin.items() if key in fields})
    twin_args = dataclasses.replace(twin_args, input_mode=task_args.input_mode, build_data_if_missing=True,
                        text_only_fraction=task_args.text_only_fraction)
    try:
        examples = recipe_task(twin_args).examples(split)
    except (DataError, OSError, ValueError) as error:
        return [], f"none (the recipe's data is absent and its tiny twin's could not be built: {error})"
    return ([example.to_row() for example in examples[:ROWS_COUNTED]],
            f"the tiny twin's data ({tiny_twin}: the recipe's own is absent)")


def _source(task_args: TaskArguments, split: str) -> str:
    files = {"train": task_args.train_file, "eval": task_args.eval_file, "test": task_args.test_file}
    return files.get(split) or task_args.dataset_name or "?"


def build_plan(parsed: ParsedRecipe) -> Plan:
    launch = read_launch(parsed.plan.config_file, parsed.plan.num_processes)
    config, shape, base = model_config(parsed.model)
    family = family_for_model_type(config.model_type)
    kind = parsed.kind
    trains = kind != "evaluate"
    processor = planning_processor(parsed.model, family, base, config.model_type)
    tokenizer_size = shape.tokenizer_size if shape is not None else len(getattr(processor, "tokenizer", processor))
    planned = plan_model(parsed.model, config, parsed.training, launch, tokenizer_size, trains)
    tiny_twin = Path(parsed.path).parent / "tiny" / Path(parsed.path).name
    split = (parsed.evaluation.split if parsed.evaluation else "test") if kind == "evaluate" else "train"
    rows, source = training_rows(parsed.task, tiny_twin if tiny_twin.is_file() else None, split)
    # Text counted with Qwen's real BPE for a released Qwen model (the tiny twin's vocabulary is not the real one)
    speech_tokens = r"<\|s_\d+\|>|<\|speech_start\|>|<\|speech_end\|>" if parsed.model.num_speech_tokens else None
    tokens = count_tokens(rows, source, processor, family, parsed.task, real_vocabulary=shape is not None,
                          audio_seconds=parsed.plan.audio_seconds, with_completion=kind != "evaluate",
                          extra_tokens=speech_tokens)
    checkpointing = bool(trains and (getattr(parsed.training, "activation_checkpointing", None)
                                     or parsed.training.gradient_checkpointing))
    step = micro_batch(kind, parsed, tokens)
    memory = estimate(kind, parsed, planned, tokens, launch, step, checkpointing)
    per_device = parsed.training.per_device_train_batch_size if trains else parsed.training.per_device_eval_batch_size
    accumulation = parsed.training.gradient_accumulation_steps if trains else 1
    plan = Plan(recipe=parsed.path, kind=kind, model=parsed.model.model_name_or_path, launch=launch, planned=planned,
                tokens=tokens, step=step, memory=memory, gpu_memory_gb=parsed.plan.gpu_memory_gb,
                checkpointing=checkpointing, rows_per_step=per_device * accumulation * launch.num_processes,
                completion_tokens=parsed.training.max_completion_length if kind == "grpo" else None)
    if not plan.fits:
        plan.knob = first_knob(plan, parsed)
    plan.lines = describe(plan, parsed)
    return plan


def first_knob(plan: Plan, parsed: ParsedRecipe) -> str:
    """The first change, least disruptive first, that makes the run fit; else the one that gets closest."""
    kind, launch = plan.kind, plan.launch
    if kind == "evaluate":
        for rows in _halvings(plan.step.rows):
            memory = estimate(kind, parsed, plan.planned, plan.tokens, launch,
                              micro_batch(kind, parsed, plan.tokens, rows), False)
            if fits(memory.total, plan.gpu_memory_gb):
                return f"per_device_eval_batch_size: {rows} ({memory.total / GIB:.1f} GiB)"
        return "load_in_4bit: true (the weights alone do not fit)"
    if not plan.checkpointing:
        memory = estimate(kind, parsed, plan.planned, plan.tokens, launch, plan.step, True)
        if fits(memory.total, plan.gpu_memory_gb):
            return f"activation_checkpointing: true ({memory.total / GIB:.1f} GiB)"
    accumulation = parsed.training.gradient_accumulation_steps
    for rows in _halvings(plan.step.rows):
        memory = estimate(kind, parsed, plan.planned, plan.tokens, launch, micro_batch(kind, parsed, plan.tokens, rows),
                          True)
        if fits(memory.total, plan.gpu_memory_gb):
            factor = plan.step.rows // rows
            return (f"activation_checkpointing: true, per_device_train_batch_size: {rows}, "
                    f"gradient_accumulation_steps: {accumulation * factor} (same global batch; "
                    f"{memory.total / GIB:.1f} GiB)")
    if not parsed.model.use_peft and launch.zero_stage < 3:
        for processes in (launch.num_processes, 8, 16, 32, 64):
            if processes < 2:
                continue
            sharded = dataclasses.replace(launch, zero_stage=3, num_processes=processes, config_file=launch.config_file)
            memory = estimate(kind, parsed, plan.planned, plan.tokens, sharded, plan.step, True)
            if fits(memory.total, plan.gpu_memory_gb):
                return (f"--config_file accelerate_configs/zero3.yaml --num_processes {processes} "
                        f"(ZeRO-3 over {processes} GPUs, activation_checkpointing: true; {memory.total / GIB:.1f} GiB)")
    if not parsed.model.use_peft:
        return "use_peft: true (LoRA): the full model's gradients and AdamW states do not fit"
    if not (parsed.model.load_in_4bit or parsed.model.load_in_8bit):
        return "load_in_4bit: true (QLoRA): the 16-bit weights do not fit"
    return "a GPU with more memory: nothing in the recipe brings it under the limit"


def _halvings(rows: int) -> list[int]:
    out = []
    while rows > 1:
        rows = max(1, rows // 2)
        out.append(rows)
    return out


def _g(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _count(value: float) -> str:
    return f"{value / 1e9:.3f} B" if value >= 1e8 else f"{value / 1e6:.2f} M"


def describe(plan: Plan, parsed: ParsedRecipe) -> list[str]:
    """The plan as lines a person reads."""
    inventory, memory, tokens, step = plan.planned.inventory, plan.memory, plan.tokens, plan.step
    lines = [f"plan for {plan.recipe} ({plan.kind}): {plan.model}", f"launch: {plan.launch.description}"]
    parts = ", ".join(f"{name} {_count(count)}" for name, count in sorted(inventory.parts.items()))
    lines.append(f"parameters: {_count(inventory.total)} in total ({parts})")
    trained = ", ".join(f"{name} {_count(count)}" for name, count in sorted(inventory.trainable_parts.items()))
    lines.append(f"trainable: {_count(inventory.trainable)} ({trained or 'none'})"
                 + (f"; {_count(inventory.quantized)} stored in 4/8 bits" if inventory.quantized else ""))
    lines.append(f"data: {tokens.rows} rows from {tokens.source}; text counted with {tokens.counted_with}")
    lines.append(f"text tokens per row: mean {tokens.text_mean:.0f}, max {tokens.text_max}; labelled (completion): "
                 f"mean {tokens.label_mean:.0f}, max {tokens.label_max}")
    if tokens.clips_per_row:
        lines.append(f"audio: {tokens.clips_per_row:.2f} clips per row, {tokens.clip_seconds_mean:.1f} s mean, "
                     f"{tokens.clip_seconds_max:.1f} s max ({tokens.clip_seconds_source}); placeholder tokens per "
                     f"clip: mean {tokens.audio_tokens_mean:.0f}, max {tokens.audio_tokens_max}")
    lines.append(f"largest micro-batch: {step.rows} rows x {step.tokens} tokens ({step.label_tokens} labelled)")
    if plan.kind != "evaluate":
        per_step = plan.tokens_per_step()
        at_most = "at most " if per_step.get("labelled_is_at_most") else ""
        lines.append(f"tokens per optimizer step: {at_most}{per_step['total']:,} ({plan.rows_per_step} rows: text "
                     f"{per_step['text']:,}, audio {per_step['audio']:,}; {at_most}{per_step['labelled']:,} with a "
                     "loss)")
        lines.append(f"activation checkpointing: {'on' if plan.checkpointing else 'off'}; ZeRO stage: "
                     f"{plan.launch.zero_stage or 'none'}")
    lines.append(f"memory per GPU: weights {_g(memory.weights)}, gradients {_g(memory.gradients)}, optimizer states "
                 f"{_g(memory.optimizer)}, activations {_g(memory.activations)}, buffers {_g(memory.buffers)}: "
                 f"{_g(memory.total)}")
    if not memory.gradients_with_activations:
        lines.append("  note: no gradient accumulation: the gradients build up as the activations are freed, so the "
                     "peak counts the larger of the two")
    lines.extend(f"  note: {note}" for note in memory.notes)
    room = plan.gpu_memory_gb * (1 - FRAGMENTATION) - CUDA_CONTEXT_GIB
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(f"verdict: {verdict} in {plan.gpu_memory_gb:g} GiB per GPU ({plan.needed_gib:.1f} GiB needed, "
                 f"{room:.1f} GiB usable after the CUDA context and fragmentation)")
    if plan.knob:
        lines.append(f"first knob to turn: {plan.knob}")
    return lines


def run_plan(argv: list[str]) -> dict[str, Any]:
    parsed = parse_plan_arguments(argv)
    plan = build_plan(parsed)
    for line in plan.lines:
        print(line, flush=True)
    return plan.summary()
