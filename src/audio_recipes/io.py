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


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each row of a JSON-lines file, blank lines skipped (so a row's number in an error is its
    line in the file, not its position among the rows); a malformed line raises a DataError naming the file and line."""
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
            rows.append((line_number, row))
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line raises a DataError naming the file and line."""
    return [row for _, row in read_jsonl_lines(path)]


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
    # A fresh hidden name: a user's own `NAME.tmp` is never clobbered, and two writers never share a temporary
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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


def holds_build(output_dir: str | Path, builder: str, settings: dict[str, Any], overwrite: bool) -> bool:
    """True when output_dir already holds this builder's build with these settings; False when it may be built
    (new, empty, or another build of this builder with `overwrite`); else an OutputFolderError. A builder that
    downloads asks before downloading, not after."""
    output_dir = Path(output_dir)
    if not output_dir.exists() or (output_dir.is_dir() and not any(output_dir.iterdir())):
        return False
    record_path = output_dir / BUILD_RECORD
    if not record_path.is_file():
        raise OutputFolderError(f"{output_dir} exists and was not made by `prepare_data.py {builder}` (no "
                                f"{BUILD_RECORD}): nothing was written; name a new folder")
    previous = json.loads(record_path.read_text())
    if previous == json.loads(json.dumps({"builder": builder, "settings": settings}, default=str)):
        return True
    if not overwrite:
        changed = (changed_settings(previous.get("settings", {}), settings) if previous.get("builder") == builder
                   else [f"builder: {previous.get('builder')}"])
        raise OutputFolderError(f"{output_dir} holds another {builder} build (other {', '.join(changed) or 'settings'}):"
                                " nothing was written; pass --overwrite to replace it, or name a new folder")
    return False


def build_folder_atomically(output_dir: str | Path, builder: str, settings: dict[str, Any], overwrite: bool,
                            build: Callable[[Path], Any]) -> bool:
    """Run `build(staging)` in a folder beside output_dir and put it in place only once complete, so that a failed
    build leaves the old folder as it was. Returns False when output_dir already holds this build.

    output_dir may be new, or hold a build of this builder (its BUILD_RECORD): the same settings are not built
    again; other settings replace it only with `overwrite`. A folder the builder did not make is never touched.
    """
    output_dir = Path(output_dir)
    record = {"builder": builder, "settings": settings}
    if holds_build(output_dir, builder, settings, overwrite):
        return False
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


# ---------------------------------------------------------------- output files of the builders

# A builder's output file carries a record beside it, FILE.build.json ({"builder", "settings"}, the same record as a
# built folder's BUILD_RECORD), written after the file: a file without one was not made by the project.
FILE_RECORD_SUFFIX = ".build.json"


class OutputFileError(InputError, ValueError):
    """An output file a builder may not write or replace; nothing was written."""


def file_record_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + FILE_RECORD_SUFFIX)


def read_file_record(path: str | Path) -> dict[str, Any] | None:
    """The build record beside a file the project wrote; None when there is none (or it is not one)."""
    record_path = file_record_path(path)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "builder" in record else None


def changed_settings(previous: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two settings records."""
    return sorted(key for key in {*previous, *settings} if previous.get(key) != settings.get(key))


def check_output_files(builder: str, outputs: Iterable[str | Path | None], inputs: Iterable[str | Path],
                       overwrite: bool, command: str | None = None) -> None:
    """Before a builder writes anything: no output is one of its inputs or named twice (whatever `overwrite` says),
    and none exists unless the project wrote it (its FILE.build.json) or `overwrite` is given. `command` names the
    builder in messages (default: `prepare_data.py BUILDER`)."""
    command = command or f"prepare_data.py {builder}"
    outputs = [Path(output) for output in outputs if output is not None]
    resolved_inputs = {Path(path).resolve(): Path(path) for path in inputs}
    seen: dict[Path, Path] = {}
    for output in outputs:
        resolved = output.resolve()
        if resolved in resolved_inputs:
            raise OutputFileError(f"{output} is also an input ({resolved_inputs[resolved]}) of `{command}`: "
                                  "nothing was written; name another output file")
        if resolved in seen:
            raise OutputFileError(f"{output} is named twice as an output of `{command}` (also as "
                                  f"{seen[resolved]}): nothing was written; name different files")
        seen[resolved] = output
        if output.exists() and read_file_record(output) is None and not overwrite:
            raise OutputFileError(f"{output} exists and was not made by the project (no "
                                  f"{file_record_path(output).name}): nothing was written; name a new file, or pass "
                                  "--overwrite to replace it")


def finished_output(output: str | Path, builder: str, settings: dict[str, Any], overwrite: bool) -> bool:
    """True when `output` already holds this builder's output with these settings (nothing to do). An output of other
    settings (or of another builder) is an OutputFileError unless `overwrite`; one without a record is left to
    check_output_files."""
    output = Path(output)
    previous = read_file_record(output) if output.exists() else None
    if previous is None:
        return False
    record = {"builder": builder, "settings": settings}
    if json.loads(json.dumps(record, default=str)) == previous:
        return True
    if not overwrite:
        changed = (changed_settings(previous.get("settings") or {}, json.loads(json.dumps(settings, default=str)))
                   if previous.get("builder") == builder else [f"builder: {previous.get('builder')}"])
        raise OutputFileError(f"{output} holds another `prepare_data.py {previous.get('builder')}` output (other "
                              f"{', '.join(changed) or 'settings'}): nothing was written; pass --overwrite to replace "
                              "it, or name another --output_file")
    return False


def write_recorded_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], builder: str,
                         settings: dict[str, Any]) -> Path:
    """JSON lines written atomically, then the record that the project wrote them (FILE.build.json)."""
    write_jsonl_atomic(path, rows)
    write_text_atomic(file_record_path(path), json.dumps({"builder": builder, "settings": settings}, indent=2,
                                                         ensure_ascii=False, default=str) + "\n")
    return Path(path)


def write_recorded_json(path: str | Path, value: Any, builder: str, settings: dict[str, Any]) -> Path:
    """A JSON file written atomically, then the record that the project wrote it (FILE.build.json)."""
    write_json_atomic(path, value)
    write_text_atomic(file_record_path(path), json.dumps({"builder": builder, "settings": settings}, indent=2,
                                                         ensure_ascii=False, default=str) + "\n")
    return Path(path)


def remove_recorded(path: str | Path) -> bool:
    """Delete a file the project wrote (it has a record) and its record; a file without one is left as it is."""
    path = Path(path)
    if not path.is_file() or read_file_record(path) is None:
        return False
    path.unlink()
    file_record_path(path).unlink(missing_ok=True)
    return True
