"""Data builders run by `scripts/prepare_data.py NAME [options]`, registered by name.

Each builder is a module with `main(argv: list[str]) -> None` that parses its own options.
"""

from __future__ import annotations

import importlib

from audio_recipes.registry import Registry

# name -> the module whose main(argv) builds it (imported when run: each pulls in its own dependencies)
DATA_BUILDERS: Registry[str] = Registry("data builder")
DATA_BUILDERS.add("speech_detection", "audio_recipes.tasks.speech_detection.builder")
DATA_BUILDERS.add("speech_tokens", "audio_recipes.prepare.speech_tokens")
DATA_BUILDERS.add("slurp", "audio_recipes.prepare.slurp")
DATA_BUILDERS.add("slurp_nbest", "audio_recipes.prepare.slurp_nbest")
DATA_BUILDERS.add("slurp_rationale", "audio_recipes.prepare.slurp_rationale")


def run_builder(name: str, argv: list[str]) -> None:
    try:
        module = DATA_BUILDERS.get(name)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    importlib.import_module(module).main(argv)
