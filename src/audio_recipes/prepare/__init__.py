"""Data builders run by `scripts/prepare_data.py NAME [options]`, registered by name.

Each builder is a module with `main(argv: list[str]) -> None` that parses its own options.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audio_recipes.errors import InputError

BUILD_RECORD = "build.json"


class OutputFolderError(InputError, ValueError):
    """An output folder the builder may not replace; nothing was written."""

# name -> module under audio_recipes.prepare
PREPARE_BUILDERS: dict[str, str] = {
    "speech_detection": "speech_detection",
    "speech_tokens": "speech_tokens",
}


def run_builder(name: str, argv: list[str]) -> None:
    if name not in PREPARE_BUILDERS:
        known = ", ".join(sorted(PREPARE_BUILDERS)) or "none yet"
        raise SystemExit(f"unknown data builder {name!r} (known: {known})")
    importlib.import_module(f"audio_recipes.prepare.{PREPARE_BUILDERS[name]}").main(argv)


def build_folder_atomically(output_dir: str | Path, builder: str, settings: dict[str, Any], overwrite: bool,
                            build: Callable[[Path], Any]) -> bool:
    """Run `build(staging)` in a folder beside output_dir and put it in place only once complete, so that a failed
    build leaves the old folder as it was. Returns False when output_dir already holds this build.

    output_dir may be new, or hold a build of this builder (its BUILD_RECORD): the same settings are not built
    again; other settings replace it only with `overwrite`. A folder the builder did not make is never touched.
    """
    output_dir = Path(output_dir)
    record = {"builder": builder, "settings": settings}
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        record_path = output_dir / BUILD_RECORD
        if not record_path.is_file():
            raise OutputFolderError(f"{output_dir} exists and was not made by `prepare_data.py {builder}` (no "
                                    f"{BUILD_RECORD}): nothing was written; name a new folder")
        previous = json.loads(record_path.read_text())
        if previous == record:
            return False
        if not overwrite:
            changed = sorted(key for key in {*settings, *previous.get("settings", {})}
                             if settings.get(key) != previous.get("settings", {}).get(key))
            raise OutputFolderError(f"{output_dir} holds another {builder} build (other {', '.join(changed) or 'builder'}):"
                                    " nothing was written; pass --overwrite to replace it, or name a new folder")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-building-", dir=output_dir.parent))
    try:
        build(staging)
        (staging / BUILD_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if output_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-replaced-", dir=output_dir.parent))
            os.replace(output_dir, retired / output_dir.name)
            os.replace(staging, output_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
