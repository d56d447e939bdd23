"""GRPO for audio language models, on top of TRL's GRPOTrainer.

TRL's trainer knows images, not audio: given Qwen2-Audio it tokenises the prompts without the audio, and
its policy, old-policy and reference log-probability forwards pass image fields only. Here the prompts
go through the project's collator (audio decoded once, placeholders expanded), generation sees the audio
features, and the same row-aligned features reach every forward that sees audio placeholder tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from trl import GRPOTrainer

from audio_recipes.collators import AudioChatCollator, build_collator
from audio_recipes.distributed import joined_process_state, resume_checkpoint
from audio_recipes.hub import check_push_access
from audio_recipes.library_noise import dropped_log_messages
from audio_recipes.models import family_for_model, freeze_modules, load_model_and_processor, lora_config
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.mixture import refuse_sft_data_options
from audio_recipes.pipelines.saving import FullWeightsResume, save_trained
from audio_recipes.rewards import check_rewards_fit_the_task, get_reward_funcs


class AudioGRPOTrainer(FullWeightsResume, GRPOTrainer):
    """GRPOTrainer over rows `{id, audio, system, prompt, reference, ...}`; rewards get the rows' columns."""

    def __init__(self, *args, audio_collator: AudioChatCollator, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "image_token_id", None) is None:
            # TRL suppresses the image placeholder during sampling; for audio models that is the audio token
            config.image_token_id = getattr(config, "audio_token_id", getattr(config, "audio_token_index", None))
        training_args = kwargs.get("args")
        given_init_kwargs = getattr(training_args, "model_init_kwargs", None)
        if isinstance(model, torch.nn.Module) and training_args is not None:
            # TRL builds the reference model with config.architectures[0]: for a full Omni checkpoint that is the
            # model with its talker. The reference is the policy's class (the thinker).
            training_args.model_init_kwargs = {"architecture": type(model), **(given_init_kwargs or {})}
        try:
            # TRL says these kwargs are ignored for an instantiated model; they are used, for the reference model
            with dropped_log_messages("trl.trainer.grpo_trainer", "You passed `model_init_kwargs` to the `GRPOConfig`"):
                super().__init__(*args, **kwargs)
        finally:
            if training_args is not None:
                training_args.model_init_kwargs = given_init_kwargs
        self._never_sample_audio_placeholder(self.model.config)
        self.audio_collator = audio_collator
        self.audio_input_keys = family_for_model(self.model).audio_inputs  # what carries the audio, by family
        self._batch_rows: list[dict[str, Any]] | None = None
        self._audio_inputs: dict[str, torch.Tensor] = {}

    def _never_sample_audio_placeholder(self, config) -> None:
        """A sampled audio placeholder would mismatch the audio features. TRL suppresses config.image_token_id,
        which the Omni models have too (their image token): add the audio token."""
        audio_token_id = getattr(config, "audio_token_id", getattr(config, "audio_token_index", None))
        generation_config = getattr(self, "generation_config", None)
        if audio_token_id is None or generation_config is None:  # vLLM rollouts keep their own settings
            return
        suppressed = list(generation_config.suppress_tokens or [])
        if audio_token_id not in suppressed:
            generation_config.suppress_tokens = suppressed + [audio_token_id]
            self.generation_kwargs["suppress_tokens"] = generation_config.suppress_tokens

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._batch_rows = inputs  # read by _tokenize_prompts, in the same order as the prompts
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._batch_rows = None
        # Row-aligned, so TRL's shuffle and split of the generation batch keep them with their rows
        output.update(self._audio_inputs)
        return output

    def _tokenize_prompts(self, prompts: list):
        rows = self._batch_rows
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("AudioGRPOTrainer tokenises prompts only inside _generate_and_score_completions")
        with_audio = sum(bool(row.get("audio")) for row in rows)
        if 0 < with_audio < len(rows):
            raise ValueError("a GRPO batch mixes rows with and without audio; use a data set where all or none have it")
        prompt_ids, audio_inputs = self.audio_collator.encode_prompts(rows)
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        self._audio_inputs = {
            key: value.to(self.accelerator.device, dtype=dtype if value.is_floating_point() else value.dtype)
            for key, value in audio_inputs.items() if key in self.audio_input_keys
        }
        # Generation gets the audio features with the prompt ids
        return prompt_ids, None, dict(self._audio_inputs)

    def _compute_loss(self, model, inputs):
        self._audio_inputs = {key: inputs[key] for key in self.audio_input_keys if key in inputs}
        return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
        compute_aux_loss=False, **image_inputs,
    ):
        """Per-token log-probs of the completion, in chunks, each with its rows' audio features."""
        batch_size = batch_size or input_ids.size(0)
        audio = self._audio_inputs
        rows = {key: value.size(0) for key, value in audio.items()}
        if any(count != input_ids.size(0) for count in rows.values()):
            raise RuntimeError(f"audio inputs of {rows} rows for {input_ids.size(0)} sequences")
        all_logps, all_entropies, all_aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            model_inputs = {"input_ids": ids, "attention_mask": mask}
            model_inputs.update({key: value[start:end] for key, value in audio.items()})
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only the completion is scored
            with self.accelerator.autocast():
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            all_logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                all_entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                all_aux.append(outputs.aux_loss)
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux_loss = torch.stack(all_aux).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss


def reward_quarters(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """Mean reward of the first and last quarter of the logged steps: one step's reward is too noisy to compare."""
    rewards = [entry["reward"] for entry in log_history if "reward" in entry]
    if not rewards:
        return {"reward_first_quarter": 0.0, "reward_last_quarter": 0.0}
    quarter = max(1, len(rewards) // 4)
    return {"reward_first_quarter": sum(rewards[:quarter]) / quarter,
            "reward_last_quarter": sum(rewards[-quarter:]) / quarter}


def run_grpo(model_args, task_args, reward_args, training_args, recipe_path: str) -> dict:
    """Recipe -> task rows -> model (frozen parts, LoRA) -> AudioGRPOTrainer -> adapter or model -> Hub."""
    refuse_sft_data_options(task_args, "GRPO")
    reward_funcs = get_reward_funcs(reward_args.reward_funcs)  # an unknown name fails before the model loads
    push_repo = check_push_access(training_args.hub_model_id) if training_args.push_to_hub else None
    training_args.push_to_hub = False
    state = joined_process_state()
    with state.main_process_first():  # a tiny recipe's data is built on first use: by one process, not each
        task = recipe_task(task_args)
        examples = task.examples("train")
        train_dataset = Dataset.from_list([example.to_row() for example in examples])
    check_rewards_fit_the_task(reward_args.reward_funcs, examples[0], task.name)  # not at the first step
    model, processor, resolved = load_model_and_processor(
        model_args, trust_remote_code=training_args.trust_remote_code, for_training=True
    )
    freeze_modules(model, model_args)
    collator = build_collator(processor, task_args, with_completion=False, padding_side="left")
    trainer = AudioGRPOTrainer(
        model=model, args=training_args, reward_funcs=reward_funcs, train_dataset=train_dataset,
        processing_class=processor, peft_config=lora_config(model_args, model) if resolved.adapter is None else None,
        audio_collator=collator,
    )
    # "true" (a recipe's string) is the last complete checkpoint in output_dir: the Trainer takes only a bool for it
    checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {"train_loss": result.training_loss, **reward_quarters(trainer.state.log_history)}
    save_trained(trainer, processor, metrics, model_args, task_args, training_args, resolved, recipe_path,
                 push_repo, evaluation_recipe=reward_args.evaluation_recipe)
    return metrics
