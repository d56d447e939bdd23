"""Supervised fine-tuning: recipe -> task examples -> collator -> TRL's SFTTrainer -> adapter or model -> Hub."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import SFTConfig, SFTTrainer

from audio_recipes.collators import AudioChatCollator, build_collator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.distributed import (
    joined_process_state,
    parameters_are_sharded,
    resume_checkpoint,
    zero3_partition,
)
from audio_recipes.errors import RecipeError
from audio_recipes.hub import ResolvedModel, check_push_access
from audio_recipes.io import write_json_atomic
from audio_recipes.models import (
    TextEmbeddingRowsFreezer,
    extend_speech_vocabulary,
    freeze_modules,
    load_model_and_processor,
    lora_config,
)
from audio_recipes.packing import register_packed_sdpa
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.generation_log import GenerationLogCallback
from audio_recipes.pipelines.mixture import SPEECH_IDS_FILE, TrainingData, task_with, training_data
from audio_recipes.pipelines.saving import FullWeightsResume, save_trained
from audio_recipes.tasks import Example, Task
from audio_recipes.tasks.base import check_audio_files

logger = logging.getLogger(__name__)


def extend_vocabulary_for_training(model, processor, model_args: ModelArguments, training_args: SFTConfig,
                                   has_adapter: bool) -> list[TrainerCallback]:
    """Speech tokens added (when the recipe asks), and the callbacks that keep the text rows frozen."""
    if model_args.num_speech_tokens and (model_args.use_peft or has_adapter):
        raise RecipeError("num_speech_tokens with LoRA: the added embedding rows must train, and LoRA freezes "
                          "the embeddings; train the full model (use_peft: false)")
    tokenizer = getattr(processor, "tokenizer", processor)
    vocabulary = extend_speech_vocabulary(model, tokenizer, model_args, seed=training_args.seed)
    if not model_args.freeze_text_embeddings:
        return []
    if vocabulary is None:
        raise RecipeError("freeze_text_embeddings keeps the text rows and trains the added speech rows: "
                          "set num_speech_tokens")
    if training_args.deepspeed or training_args.fsdp:
        raise RecipeError("freeze_text_embeddings restores rows of a whole tensor after each step, which a "
                          "sharded (DeepSpeed / FSDP) model does not hold: use DDP or one GPU")
    return [TextEmbeddingRowsFreezer(model, vocabulary.offset)]


def prepare_sft_config(training_args: SFTConfig) -> SFTConfig:
    """TRL's SFTTrainer has no audio path: our collator builds inputs and labels, so TRL must not.

    `packing` (or `padding_free`) is our collator's padding-free batch (`packing_requested`): TRL's own packs text
    rows to max_length and refuses a custom collator, so both are switched off for TRL."""
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    if training_args.max_length is not None:
        logger.debug("max_length=%s ignored: truncation could cut audio placeholder tokens", training_args.max_length)
        training_args.max_length = None
    if training_args.packing or training_args.padding_free:
        training_args.packing_requested = True
        training_args.packing = training_args.padding_free = False
        training_args.eval_packing = False
    return training_args


def packing_requested(training_args: SFTConfig) -> bool:
    """Whether the recipe asked for padding-free batches (`packing: true`), read after prepare_sft_config."""
    return getattr(training_args, "packing_requested", False) or training_args.packing or training_args.padding_free


def task_datasets(task: Task, with_eval: bool, seed: int) -> tuple[Dataset, Dataset | None, TrainingData]:
    """The training rows (the recipe's sources, speech_fraction, ...: pipelines.mixture) and the evaluation rows."""
    data = training_data(task, seed)
    train = Dataset.from_list([example.to_row() for example in data.examples])
    evaluation = None
    if with_eval and task.args.eval_file is not None or (with_eval and task.args.dataset_name):
        evaluation = Dataset.from_list([example.to_row() for example in task.examples("eval")])
    return train, evaluation, data


class TrainingDataRecord(TrainerCallback, ExportableState):
    """What the run trains on (examples with speech and as text, per source), kept in trainer_state.json under
    `stateful_callbacks` (the Trainer's place for what a callback adds to its state), in every checkpoint too."""

    def __init__(self, training_data: dict):
        self.training_data = training_data

    def state(self) -> dict:
        return {"args": {"training_data": self.training_data}, "attributes": {}}


class AudioSFTTrainer(FullWeightsResume, SFTTrainer):
    """TRL's SFTTrainer, resuming full-model checkpoints with their weights, counting the clips it trains on."""

    clips_trained = 0  # by this process, in this run

    def training_step(self, model, inputs, num_items_in_batch=None):
        pending = getattr(self.data_collator, "batch_clips", None)
        if pending:
            self.clips_trained += pending.popleft()
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        positions = inputs.get("position_ids")
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.model.training and positions is not None and positions.ndim == 3 and "attention_mask" not in inputs:
            # TRL counts a packed batch as position_ids.size(1) tokens: 1 for the Omni thinkers' (4, 1, N) positions
            missing = torch.tensor(positions.shape[-1] - positions.shape[1], device=positions.device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(missing).sum().item()
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result

    def evaluate(self, *args, **kwargs):
        pending = getattr(self.data_collator, "batch_clips", None)
        kept = len(pending) if pending is not None else 0
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            while pending is not None and len(pending) > kept:  # evaluation batches are not trained on
                pending.pop()

    def _save_checkpoint(self, model, trial):
        """A full disk while saving says so (torch reports it as `unexpected pos`), and the half-written checkpoint
        folder is removed, so that nothing looks resumable that is not."""
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        existed = folder.exists()
        try:
            return super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as error:
            disk_full = getattr(error, "errno", None) == errno.ENOSPC or "unexpected pos" in str(error)
            if not disk_full:
                raise
            if not existed and folder.is_dir() and not (folder / "trainer_state.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
            free_mb = shutil.disk_usage(self.args.output_dir).free / 2**20
            raise OSError(errno.ENOSPC, f"the disk holding {self.args.output_dir} is full ({free_mb:.0f} MB free) "
                          f"while saving {folder.name}: the partial checkpoint was removed; free some space and "
                          "rerun with resume_from_checkpoint: true to continue from the last whole one") from error

    def clips_trained_all_processes(self) -> int:
        """Clips trained on in this run, summed over processes (a collective: every process calls it)."""
        count = torch.tensor([self.clips_trained], device=self.accelerator.device)
        return int(self.accelerator.reduce(count, "sum").item())


class WholeRunTotals(TrainerCallback):
    """The whole run's training loss and audio clip count, also when it was resumed from a checkpoint.

    The Trainer's `training_loss` and the collator's counts cover the steps of this process only: after a resume,
    the steps before the checkpoint are missing. A log entry is forced at every checkpoint, carrying the clip count
    so far (summed over processes), so that the log history restored with the checkpoint holds both up to it.
    """

    def __init__(self, trainer: AudioSFTTrainer):
        self.trainer = trainer
        self.initial_step = 0
        self.loss_sum_before = 0.0
        self.clips_before = 0
        self.clips_total = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.initial_step = state.global_step
        previous = 0
        for entry in state.log_history:
            if "loss" in entry and entry["step"] <= self.initial_step:
                self.loss_sum_before += entry["loss"] * (entry["step"] - previous)  # a log's loss: its window's mean
                self.clips_before = entry.get("audio_clips_loaded", self.clips_before)
                previous = entry["step"]
        if previous != self.initial_step:
            logger.warning("the checkpoint's log ends at step %d, not %d: the whole run's train_loss is of the "
                           "logged steps", previous, self.initial_step)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True  # the checkpoint's log history then reaches its step
        if control.should_log:
            self.clips_total = self.clips_before + self.trainer.clips_trained_all_processes()
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.log_history:
            state.log_history[-1]["audio_clips_loaded"] = self.clips_total

    def whole_run(self, training_loss: float, global_step: int) -> dict[str, float]:
        """train_loss and audio_clips_loaded (clips in the trained batches) of the whole run."""
        steps_this_run = global_step - self.initial_step
        loss = (self.loss_sum_before + training_loss * steps_this_run) / max(global_step, 1)
        return {"train_loss": loss, "audio_clips_loaded": self.clips_before + self.trainer.clips_trained_all_processes(),
                "resumed_at_step": self.initial_step}


@dataclass
class SftRun:
    trainer: AudioSFTTrainer
    collator: AudioChatCollator
    task: Task
    resolved: ResolvedModel
    totals: WholeRunTotals
    data: TrainingData | None = None  # None where the caller gave the examples


def build_trainer(
    model_args: ModelArguments, task_args: TaskArguments, training_args: SFTConfig,
    train_examples: list[Example] | None = None, eval_args: EvalArguments | None = None,
) -> SftRun:
    """Task data (or the given examples), model (frozen parts, LoRA), collator and TRL's SFTTrainer; with
    eval_args asking for it (generation_log_steps), the generations logged during training."""
    training_args = prepare_sft_config(training_args)
    state = joined_process_state()
    with state.main_process_first():  # a tiny recipe's data is built on first use: by one process, not each
        task = recipe_task(task_args)
        data = None
        if train_examples is not None:
            train_dataset, eval_dataset = Dataset.from_list([example.to_row() for example in train_examples]), None
        else:
            train_dataset, eval_dataset, data = task_datasets(task, training_args.eval_strategy != "no",
                                                              training_args.seed)

    model, processor, resolved = load_model_and_processor(
        model_args, trust_remote_code=training_args.trust_remote_code, for_training=True
    )
    callbacks = extend_vocabulary_for_training(model, processor, model_args, training_args,
                                               has_adapter=resolved.adapter is not None)
    task.check_tokenizer(getattr(processor, "tokenizer", processor))
    logger.info("parameters: %s", freeze_modules(model, model_args))
    packing = packing_requested(training_args)
    if packing and model.config._attn_implementation == "sdpa":
        # Attention over each example alone, not through a block-diagonal mask over the whole row
        model.set_attn_implementation(register_packed_sdpa())
    silent_clip = task_args.silent_clip_for_text_batches
    collator = build_collator(
        processor, task_args, with_completion=True,
        silent_clip_for_text_batches=parameters_are_sharded(training_args) if silent_clip is None else silent_clip,
        packing=packing,
    )
    if training_args.train_sampling_strategy == "group_by_length":
        # Lengths from text and audio headers, so that the sampler never decodes a clip
        lengths = [collator.example_length(row) for row in train_dataset]
        train_dataset = train_dataset.add_column(training_args.length_column_name, lengths)
    trainer = AudioSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=collator,
        peft_config=lora_config(model_args, model) if resolved.adapter is None else None,
        callbacks=callbacks,
    )
    totals = WholeRunTotals(trainer)
    trainer.add_callback(totals)
    if data is not None:
        trainer.add_callback(TrainingDataRecord(data.summary))
    if eval_args is not None and eval_args.generation_log_steps:
        trainer.add_callback(generation_log(task, processor, task_args, training_args, eval_args, train_dataset,
                                            eval_dataset))
    restored = keep_trainable_parameters_in_full_precision(trainer.model, training_args)
    if restored:
        logger.info("%d trainable parameters kept in float32 (bf16 is off)", restored)
    return SftRun(trainer, collator, task, resolved, totals, data)


def generation_log(task: Task, processor, task_args: TaskArguments, training_args: SFTConfig,
                   eval_args: EvalArguments, train_dataset: Dataset, eval_dataset: Dataset | None
                   ) -> GenerationLogCallback:
    """The callback generating on the first generation_log_samples examples of the eval data, else of the training
    rows, every generation_log_steps optimizer steps."""
    count = eval_args.generation_log_samples
    if eval_dataset is not None:
        rows = list(eval_dataset.select(range(min(count, len(eval_dataset)))))
    elif task_args.eval_file is not None or task_args.dataset_name:
        # Only the logged examples' audio is read: not every eval recording's (the run does not evaluate)
        examples = task_with(task, checks_audio_on_load=False).examples("eval")[:count]
        check_audio_files(examples, task.data_source("eval"), task.args)
        rows = [example.to_row() for example in examples]
    else:
        logger.info("generation log: the recipe has no eval data; the first %d training rows are used", count)
        rows = list(train_dataset.select(range(min(count, len(train_dataset)))))
    fields = Example.__dataclass_fields__
    examples = [Example(**{key: row[key] for key in fields}) for row in rows]
    collator = build_collator(processor, task_args, with_completion=False, padding_side="left")
    return GenerationLogCallback(examples, collator, eval_args, every_steps=eval_args.generation_log_steps,
                                 output_dir=training_args.output_dir,
                                 batch_size=training_args.per_device_eval_batch_size,
                                 sharded=parameters_are_sharded(training_args), seed=training_args.seed)


def keep_trainable_parameters_in_full_precision(model: torch.nn.Module, training_args: SFTConfig) -> int:
    """Undo TRL's cast of a quantised model's trainable parameters to bf16 when the recipe trains without bf16.

    SFTTrainer casts every trainable parameter of a 4-bit model to bf16 (QLoRA's choice for bf16 training),
    whatever `bf16` says: LoRA matrices and the full copies in `lora_modules_to_save` then train as bf16 weights,
    where AdamW steps smaller than 1/256 of a weight are rounded away. Returns the parameter count restored.
    """
    if training_args.bf16 or training_args.fp16:
        return 0
    restored = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype == torch.bfloat16:
            parameter.data = parameter.data.float()
            restored += parameter.numel()
    return restored


def run_sft(model_args: ModelArguments, task_args: TaskArguments, training_args: SFTConfig, recipe_path: str,
            eval_args: EvalArguments | None = None) -> dict:
    if task_args.curriculum:  # one run of a recipe with stages would train none of them as the recipe says
        raise RecipeError("the recipe has a curriculum: its stages are trained by pipelines.curriculum.run_training "
                          "(scripts/sft.py), not as one run")
    push_repo = check_push_access(training_args.hub_model_id) if training_args.push_to_hub else None
    # We push once at the end with our own model card, not at every save
    training_args.push_to_hub = False
    run = build_trainer(model_args, task_args, training_args, eval_args=eval_args)
    trainer, collator, resolved = run.trainer, run.collator, run.resolved
    processor = trainer.processing_class
    eval_dataset = trainer.eval_dataset
    checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if run.data is not None and run.data.speech_ids and trainer.is_world_process_zero():
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(training_args.output_dir) / SPEECH_IDS_FILE,
                          {"seed": training_args.seed, "sources": run.data.speech_ids})
    metrics = {"num_processes": trainer.accelerator.num_processes, **collator_counts(trainer, collator),
               **(run.data.flat_counts() if run.data is not None else {}),
               **partition_metrics(trainer), **run.totals.whole_run(result.training_loss, trainer.state.global_step)}
    if metrics["audio_clips_cropped"]:
        logger.warning("%d clips were longer than %s s and cropped", metrics["audio_clips_cropped"],
                       task_args.max_audio_seconds)
    if metrics["audio_clips_digital_silence"]:
        logger.warning("%d clips were digital silence (every sample 0): see the warnings naming them",
                       metrics["audio_clips_digital_silence"])
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    save_trained(trainer, processor, metrics, model_args, task_args, training_args, resolved, recipe_path, push_repo)
    return metrics


def collator_counts(trainer: SFTTrainer, collator: AudioChatCollator) -> dict[str, int]:
    """The collator's counts summed over all processes (each rank collates its own batches)."""
    counts = {"audio_clips_loaded": collator.stats.loaded, "audio_clips_cropped": collator.stats.cropped,
              "audio_clips_digital_silence": collator.stats.silent, "silent_clip_batches": collator.silent_clip_batches}
    summed = trainer.accelerator.reduce(torch.tensor(list(counts.values()), device=trainer.accelerator.device), "sum")
    return dict(zip(counts, summed.tolist(), strict=True))


def partition_metrics(trainer: SFTTrainer) -> dict[str, int]:
    """Under ZeRO-3, what this rank holds of the model (logged by every rank; the main one's go in the metrics)."""
    partition = zero3_partition(trainer.model_wrapped)
    if partition is None:
        return {}
    state = trainer.accelerator.state
    logger.info("ZeRO-3 partition, rank %d of %d: %s", state.process_index, state.num_processes, json.dumps(partition))
    return {f"zero3_{key}": value for key, value in partition.items()}
