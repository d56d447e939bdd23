"""Warnings from the libraries below the project that are known to be harmless here, each dropped by its exact text.

Installed by `import audio_recipes` (before any script imports TRL, which imports PEFT and bitsandbytes). Every
other warning still shows; a filter here names its source and says why its message is not for the user.
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager

RANK_PREFIX = re.compile(r"^\[RANK \d+\] ")

# (logger name, start of the message), each with why it is harmless
KNOWN_HARMLESS_LOGS: tuple[tuple[str, str], ...] = (
    # bitsandbytes asks the Hub for an optional CPU kernel on import (remote code, which the project never loads)
    # and falls back to its own kernels
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    # the same probe under HF_HUB_OFFLINE (kernels >= 0.19): no publisher check offline, and nothing loads anyway
    ("kernels._internals.hf_hub", "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"),
    # accelerate imports DeepSpeed whenever it is installed (even with no DeepSpeed config); torch sees no GPU
    # either, and a run with a DeepSpeed config on CPU sets DS_ACCELERATOR=cpu itself
    ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator"),
)

# transformers 5 renamed gradient checkpointing to activation checkpointing; TRL and PEFT still call the old
# methods inside their trainers, which a user cannot change
KNOWN_HARMLESS_WARNINGS: tuple[str, ...] = (
    r"`is_gradient_checkpointing` is deprecated",
    r"`gradient_checkpointing_enable` is deprecated",
    r"`gradient_checkpointing_disable` is deprecated",
)


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = RANK_PREFIX.sub("", str(record.msg))  # accelerate's logger adapter puts the rank first
        return not message.startswith(self.prefixes)


class DropOmniTalkerRopeKeys(logging.Filter):
    """Qwen3-Omni's talker config holds the multimodal RoPE keys of the released checkpoint, which its config class
    does not declare (the thinker's does): transformers warns on every load of the full config."""

    OMNI_ROPE_KEYS = {"mrope_section", "interleaved", "mrope_interleaved"}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith("Unrecognized keys in `rope_parameters` for 'rope_type'='default': {"):
            return True
        keys = {key.strip(" '") for key in message.rsplit("{", 1)[1].rstrip("}").split(",")}
        return not keys <= self.OMNI_ROPE_KEYS


def silence_known_harmless() -> None:
    """Install the filters above (idempotent)."""
    by_logger: dict[str, list[str]] = {}
    for logger_name, prefix in KNOWN_HARMLESS_LOGS:
        by_logger.setdefault(logger_name, []).append(prefix)
    for logger_name, prefixes in by_logger.items():
        logger = logging.getLogger(logger_name)
        if not any(isinstance(existing, DropMessages) for existing in logger.filters):
            logger.addFilter(DropMessages(tuple(prefixes)))
    rope_logger = logging.getLogger("transformers.modeling_rope_utils")
    if not any(isinstance(existing, DropOmniTalkerRopeKeys) for existing in rope_logger.filters):
        rope_logger.addFilter(DropOmniTalkerRopeKeys())
    for message in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


@contextmanager
def dropped_log_messages(logger_name: str, *prefixes: str):
    """Drop `logger_name`'s records starting with `prefixes` within the block (for a warning that is wrong in one
    known call only)."""
    logger = logging.getLogger(logger_name)
    dropping = DropMessages(prefixes)
    logger.addFilter(dropping)
    try:
        yield
    finally:
        logger.removeFilter(dropping)
