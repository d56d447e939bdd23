"""Question / answer / speech-token rows -> chat rows for the speech_tokens task; optional train/eval split.

    scripts/prepare_data.py speech_tokens --input data/*.parquet --output_file train.jsonl \\
        [--num_samples N] [--columns question=instruction,answer=response,speech_tokens=answer_tokens[,id=key]] \\
        [--num_speech_tokens 4096] [--eval_file eval.jsonl --eval_ratio 0.02] \\
        [--test_file test.jsonl --test_ratio 0.02] [--seed 42] [--tokenizer Qwen/Qwen3-0.6B] [--overwrite]

Inputs are parquet files (speech tokens as a list of integers, or a string of integers separated by spaces
or commas) or JSON-lines files of chat rows already converted (to re-split them). Each row becomes
`{"id", "messages": [user: question, assistant: "answer\\n<|speech_start|><|s_i|>...<|speech_end|>"]}`.
Rows with an out-of-range or malformed speech token, or an empty field, are rejected and named (all of them
in OUTPUT.rejected.jsonl). With --eval_ratio / --test_ratio, a seeded shuffle sends that share of the rows to
--eval_file / --test_file and the rest to --output_file. Each file written gets FILE.build.json beside it (the
builder and its settings); an output that is an input is refused, and so is an existing file without that record
unless --overwrite. Prints statistics as one JSON object (last line).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.io import check_output_files, read_jsonl_lines, remove_recorded, write_recorded_jsonl
from audio_recipes.models.speech_vocabulary import COSYVOICE_V1_SPEECH_TOKENS, speech_answer
from audio_recipes.tasks.speech_tokens import chat_row_fields

FIELDS = ("question", "answer", "speech_tokens", "id")
DEFAULT_COLUMNS = {"question": "question", "answer": "answer", "speech_tokens": "speech_tokens"}
SHOWN_REJECTIONS = 10


class RejectedRow(ValueError):
    """A source row that cannot become a training row; the message says why."""


def parse_columns(spec: str | None) -> dict[str, str]:
    """`question=q,answer=a,speech_tokens=t[,id=i]` -> field -> source column (defaults: same names)."""
    columns = dict(DEFAULT_COLUMNS)
    for item in filter(None, (spec or "").split(",")):
        field, _, column = item.partition("=")
        if field.strip() not in FIELDS or not column.strip():
            raise SystemExit(f"--columns: {item!r} is not FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}")
        columns[field.strip()] = column.strip()
    return columns


def speech_token_ids(value: Any, num_speech_tokens: int) -> list[int]:
    """A list of integers, or a string of them; each in [0, num_speech_tokens)."""
    if isinstance(value, str):
        items: list[Any] = [item for item in re.split(r"[\s,\[\]]+", value) if item]
    elif hasattr(value, "tolist"):
        items = value.tolist()
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise RejectedRow(f"speech tokens are a {type(value).__name__}, not a list of integers")
    ids = []
    for item in items:
        try:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ValueError
            token = int(item)
        except (TypeError, ValueError):
            raise RejectedRow(f"speech token {item!r} is not an integer") from None
        if not 0 <= token < num_speech_tokens:
            raise RejectedRow(f"speech token id {token} is out of range [0, {num_speech_tokens})")
        ids.append(token)
    if not ids:
        raise RejectedRow("no speech tokens")
    return ids


def chat_row(row_id: str, question: Any, answer: Any, speech_tokens: list[int], system: str | None = None) -> dict:
    for name, value in (("question", question), ("answer", answer)):
        if not isinstance(value, str) or not value.strip():
            raise RejectedRow(f"empty or missing {name}")
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question.strip()},
                 {"role": "assistant", "content": speech_answer(answer.strip(), speech_tokens)}]
    return {"id": row_id, "messages": messages}


def parquet_rows(path: Path, columns: dict[str, str]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    absent = [column for column in columns.values() if column not in source.schema_arrow.names]
    if absent:
        raise DataError(f"{path}: no column {', '.join(absent)} (columns: {', '.join(source.schema_arrow.names)}); "
                        "map them with --columns question=...,answer=...,speech_tokens=...")
    index = 0
    for batch in source.iter_batches(batch_size=1024, columns=list(dict.fromkeys(columns.values()))):
        for values in batch.to_pylist():
            yield index, {field: values[column] for field, column in columns.items()}
            index += 1


def converted_rows(path: Path, columns: dict[str, str], num_speech_tokens: int) -> Iterator[tuple[str, Any]]:
    """(where, chat row or RejectedRow) for each row of a parquet or chat JSON-lines file."""
    if path.suffix == ".jsonl":
        for index, (line_number, row) in enumerate(read_jsonl_lines(path), start=1):
            where = f"{path}, line {line_number}"
            try:
                fields = chat_row_fields(row)
                ids = speech_token_ids(fields["speech_tokens"], num_speech_tokens)
                yield where, chat_row(str(row.get("id", f"{path.stem}-{index}")), fields["question"],
                                      fields["text"], ids, fields["system"])
            except ValueError as error:
                yield where, RejectedRow(str(error))
        return
    if path.suffix != ".parquet":
        raise DataError(f"{path}: expected a .parquet file (or .jsonl chat rows)")
    for index, values in parquet_rows(path, columns):
        row_id = str(values["id"]) if values.get("id") is not None else f"{path.stem}-{index}"
        where = f"{path}, row {index} (id {row_id})"
        try:
            ids = speech_token_ids(values["speech_tokens"], num_speech_tokens)
            yield where, chat_row(row_id, values["question"], values["answer"], ids)
        except RejectedRow as error:
            yield where, error


def split_rows(rows: list[dict], ratios: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """A seeded shuffle picks round(ratio * n) rows (at least one) for each named split; 'train' keeps the
    rest. Each split keeps the input's order."""
    if any(not 0 <= ratio < 1 for ratio in ratios.values()) or sum(ratios.values()) >= 1:
        raise SystemExit(f"split ratios {ratios} must each be in [0, 1) and leave rows for training")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    assigned: dict[int, str] = {}
    start = 0
    for name, ratio in ratios.items():
        count = max(1, round(ratio * len(rows))) if ratio > 0 else 0
        assigned.update((index, name) for index in order[start:start + count])
        start += count
    splits: dict[str, list[dict]] = {"train": [], **{name: [] for name in ratios}}
    for index, row in enumerate(rows):
        splits[assigned.get(index, "train")].append(row)
    return splits


def summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "min": 0, "max": 0}
    return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values)}


def statistics(rows: list[dict], tokenizer=None) -> dict[str, Any]:
    """Rows and their lengths in speech tokens; with a tokenizer, in text tokens and in all (text + speech)."""
    speech = [len(chat_row_fields(row)["speech_tokens"]) for row in rows]
    stats: dict[str, Any] = {"rows": len(rows), "speech_tokens": summary(speech)}
    if tokenizer is not None:
        text = []
        for row in rows:
            fields = chat_row_fields(row)
            text.append(len(tokenizer(fields["question"] + "\n" + fields["text"] + "\n",
                                      add_special_tokens=False)["input_ids"]))
        stats["text_tokens"] = summary(text)
        # Each speech token is one token of the extended vocabulary, plus the two markers
        stats["total_tokens"] = summary([t + s + 2 for t, s in zip(text, speech, strict=True)])
    return stats


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare_data.py speech_tokens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, type=Path, help="parquet (or chat .jsonl) files")
    parser.add_argument("--output_file", required=True, type=Path, help="training rows (JSON lines)")
    parser.add_argument("--num_samples", type=int, help="keep the first N valid rows")
    parser.add_argument("--columns", help="FIELD=COLUMN,... for question, answer, speech_tokens, id")
    parser.add_argument("--num_speech_tokens", type=int, default=COSYVOICE_V1_SPEECH_TOKENS,
                        help="ids must be below this (CosyVoice v1: 4096)")
    parser.add_argument("--eval_file", type=Path, help="validation rows, with --eval_ratio")
    parser.add_argument("--eval_ratio", type=float, default=0.0)
    parser.add_argument("--test_file", type=Path, help="test rows, with --test_ratio")
    parser.add_argument("--test_ratio", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42, help="seed of the split's shuffle")
    parser.add_argument("--tokenizer", help="tokenizer (path or Hub id) to report lengths in text tokens")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files the project did not write (never an input)")
    args = parser.parse_args(argv)
    for name in ("eval", "test"):
        if (getattr(args, f"{name}_file") is None) != (getattr(args, f"{name}_ratio") == 0):
            parser.error(f"--{name}_file and --{name}_ratio go together")
    return args


def rejected_path(output_file: Path) -> Path:
    return output_file.with_name(output_file.stem + ".rejected.jsonl")


def convert(args: argparse.Namespace) -> dict[str, Any]:
    columns = parse_columns(args.columns)
    rejected_file = rejected_path(args.output_file)
    check_output_files("speech_tokens", [args.output_file, args.eval_file, args.test_file, rejected_file], args.input,
                       args.overwrite)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                if key not in ("overwrite", "input")} | {"input": [str(path.resolve()) for path in args.input]}
    rows: list[dict] = []
    rejected: list[dict[str, str]] = []
    for path in args.input:
        for where, row in converted_rows(path, columns, args.num_speech_tokens):
            if isinstance(row, RejectedRow):
                rejected.append({"where": where, "reason": str(row)})
                if len(rejected) <= SHOWN_REJECTIONS:
                    print(f"rejected {where}: {row}", file=sys.stderr)
            else:
                rows.append(row)
            if args.num_samples is not None and len(rows) >= args.num_samples:
                break
        if args.num_samples is not None and len(rows) >= args.num_samples:
            break
    duplicates = [key for key, count in Counter(row["id"] for row in rows).items() if count > 1]
    if duplicates:
        raise DataError(f"{len(duplicates)} ids occur more than once (first: {duplicates[:3]}); map a unique "
                        "column with --columns id=...")
    if rejected:
        args.output_file.parent.mkdir(parents=True, exist_ok=True)
        write_recorded_jsonl(rejected_file, rejected, "speech_tokens", settings)
        more = f"; {len(rejected) - SHOWN_REJECTIONS} more" if len(rejected) > SHOWN_REJECTIONS else ""
        print(f"rejected {len(rejected)} rows{more}; all listed in {rejected_file}", file=sys.stderr)
    else:
        remove_recorded(rejected_file)  # an earlier run's list, not this one's
    if not rows:
        raise DataError(f"no valid rows in {', '.join(map(str, args.input))}")

    ratios = {name: getattr(args, f"{name}_ratio") for name in ("eval", "test") if getattr(args, f"{name}_file")}
    splits = split_rows(rows, ratios, args.seed)
    files = {"train": args.output_file, "eval": args.eval_file, "test": args.test_file}
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    stats: dict[str, Any] = {"rows_written": len(rows), "rows_rejected": len(rejected),
                             "rejected_by_reason": dict(Counter(re.sub(r"\d+", "N", r["reason"]) for r in rejected))}
    for name, split in splits.items():
        files[name].parent.mkdir(parents=True, exist_ok=True)
        write_recorded_jsonl(files[name], split, "speech_tokens", settings)
        stats[name] = {"file": str(files[name]), **statistics(split, tokenizer)}
    return stats


def main(argv: list[str]) -> None:
    stats = convert(parse_args(argv))
    print(json.dumps(stats))
