"""Reading data files; writing results, and building data folders, atomically; the numbers of a metrics dict."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError, InputError


def read_text(path: str | Path) -> str:
    """The text of a data or prediction file (JSON, JSON lines, CSV); one that is not UTF-8 raises a DataError
    naming the file and the line of its first undecodable byte."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, line_start = data.count(b"\n", 0, error.start) + 1, data.rfind(b"\n", 0, error.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at byte "
                        f"{error.start - line_start + 1} of the line); save the file as UTF-8") from error


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line raises a DataError naming the file and line."""
    path = Path(path)
    rows = []
    with io.StringIO(read_text(path), newline=None) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {line_number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_json(path: str | Path) -> Any:
    """A JSON file's value; one that is not JSON raises a DataError naming the file and the position."""
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg})") from error


def write_atomic(path: str | Path, write) -> Path:
    """`write(temporary_path)` then a rename over `path`: a reader never sees a half-written file, and an
    interruption leaves the previous file whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, value: Any) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_atomic(path, write)


def write_rows_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """JSON lines; a JSON list or parquet when the file's suffix (.json, .parquet) says so."""
    if Path(path).suffix == ".json":
        return write_text_atomic(path, json.dumps(list(rows), indent=1, ensure_ascii=False) + "\n")
    if Path(path).suffix != ".parquet":
        return write_jsonl_atomic(path, rows)
    import pandas as pd

    return write_atomic(path, lambda tmp: pd.DataFrame(list(rows)).to_parquet(tmp, index=False))


def numeric_metrics(metrics: dict) -> dict:
    """The numbers of a metrics dict (for JSON files and model cards)."""
    return {key: value for key, value in metrics.items() if isinstance(value, int | float)}


BUILD_RECORD = "build.json"


class OutputFolderError(InputError, ValueError):
    """An output folder the builder may not replace; nothing was written."""


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
