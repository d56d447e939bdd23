"""Quiet runs: the tiny recipes, the tiny model build and the library imports print no warning a user cannot act on
(the causes fixed where they are ours; library warnings known to be harmless dropped by their exact text)."""

import logging
import sys

from helpers import run_command, subprocess_env, warning_lines

from audio_recipes.library_noise import dropped_log_messages, silence_known_harmless


class Collect(logging.Handler):
    """The messages a logger lets through (its own filters applied), whatever other handlers it has."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def messages_through(logger_name: str, *messages: str) -> list[str]:
    logger = logging.getLogger(logger_name)
    collect, level = Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.WARNING)
    try:
        for message in messages:
            logger.warning(message)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return collect.messages


def test_known_harmless_messages_are_dropped_and_others_kept():
    silence_known_harmless()
    for name, message in (("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from "
                           "kernels-community: no network"),
                          ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were "
                           "unable to detect it."),
                          ("transformers.modeling_rope_utils", "Unrecognized keys in `rope_parameters` for "
                           "'rope_type'='default': {'interleaved', 'mrope_section'}")):
        assert messages_through(name, message, "something else went wrong") == ["something else went wrong"], name
    # A key that is not one of Qwen3-Omni's multimodal RoPE keys is a real mistake: kept
    kept = "Unrecognized keys in `rope_parameters` for 'rope_type'='default': {'mrope_section', 'factor'}"
    assert messages_through("transformers.modeling_rope_utils", kept) == [kept]


def test_a_message_dropped_in_one_block_only():
    message = "You passed `model_init_kwargs` to the `GRPOConfig`, but ..."
    with dropped_log_messages("trl.trainer.grpo_trainer", "You passed `model_init_kwargs`"):
        assert messages_through("trl.trainer.grpo_trainer", f"[RANK 0] {message}", message) == []
    assert messages_through("trl.trainer.grpo_trainer", message) == [message]


def test_building_the_tiny_models_prints_no_warning(tmp_path):
    result = run_command([sys.executable, "scripts/make_tiny_models.py", "--output_dir", str(tmp_path), "--force"],
                         timeout=600, env=subprocess_env())
    assert warning_lines(result.stderr) + warning_lines(result.stdout) == []


def test_tiny_qlora_training_and_an_omni_evaluation_print_no_warning(tmp_path):
    # QLoRA imports bitsandbytes and saves through accelerate (which imports DeepSpeed): both used to warn
    result = run_command([sys.executable, "scripts/sft.py", "recipes/tiny/slurp_qlora.yaml", "--max_steps", "1",
                          "--max_train_samples", "2", "--output_dir", str(tmp_path / "qlora")], timeout=600)
    assert warning_lines(result.stderr) + warning_lines(result.stdout) == []
    result = run_command([sys.executable, "scripts/evaluate.py", "recipes/tiny/mmar_qwen3_omni.yaml",
                          "--max_eval_samples", "2", "--output_dir", str(tmp_path / "omni")], timeout=600)
    assert warning_lines(result.stderr) + warning_lines(result.stdout) == []
