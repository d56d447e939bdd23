"""What the builders that run a model share: a record of the settings beside the rows written so far, so that an
interrupted run resumes only the same run, and the finished file written whole at the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from audio_recipes.errors import InputError
from audio_recipes.io import changed_settings, write_json_atomic


class PartialRunError(InputError, ValueError):
    """Rows of another run where this one would resume; nothing was written."""


def partial_paths(output_file: Path) -> tuple[Path, Path]:
    """Where rows are appended as they come, and the record of the settings that wrote them."""
    return (output_file.with_name(output_file.name + ".partial.jsonl"),
            output_file.with_name(output_file.name + ".partial.json"))


def may_resume(output_file: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Record `settings` beside output_file and say whether the rows already there are this run's (resume them).
    Rows of a run with other settings are an error unless `overwrite` (then they are replaced)."""
    rows, record_path = partial_paths(output_file)
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if rows.is_file() and rows.stat().st_size and record != settings:
        if not overwrite:
            changed = changed_settings(record or {}, settings)
            raise PartialRunError(f"{rows} holds rows of another run (other {', '.join(changed) or 'settings'}): pass "
                                  "--overwrite to start over, or name another --output_file")
        print(f"replacing the rows of another run in {rows} (--overwrite)", file=sys.stderr)
        rows.unlink()
    output_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path, settings)
    return rows.is_file()


def remove_partial(output_file: Path) -> None:
    for path in partial_paths(output_file):
        path.unlink(missing_ok=True)
