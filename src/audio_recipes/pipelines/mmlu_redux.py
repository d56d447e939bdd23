"""MMLU-Redux from its local CSV files, scored zero-shot as lm-eval's MMLU task scores it.

Reading: each `mmlu_<subject>.csv` is decoded as UTF-8 (a file that is not is read as Mac Roman or
Windows-1252, whichever gives typographic punctuation, and named in a warning), its delimiter (`,` or `;`)
read from the header, its columns found by name in any order. `choices` is a Python list literal;
`answer` an index 0-3. A row without an answer is skipped and counted; any other malformed row is an error
naming the file and row.

Scoring: lm-eval's `mmlu` task (`lm_eval/tasks/mmlu/default`): the prompt is "The following are multiple
choice questions (with answers) about SUBJECT.\\n\\nQUESTION\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer:",
the choices are " A" .. " D", the prediction is the most likely one (accuracy = lm-eval's `acc`). The
same items can be run through lm-eval itself (`run_lm_eval`), over a local task written by `write_lm_eval_tasks`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audio_recipes.config import ModelArguments
from audio_recipes.decoding import continuation_loglikelihoods, start_output
from audio_recipes.errors import DataError
from audio_recipes.io import write_json_atomic, write_jsonl_atomic
from audio_recipes.models import load_model_and_processor

logger = logging.getLogger(__name__)

CHOICE_LABELS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "choices", "answer")
# Single-byte encodings tried for a file that is not UTF-8; the one giving more of these characters wins
FALLBACK_ENCODINGS = ("cp1252", "mac_roman")
TYPOGRAPHIC = set("‘’“”–—…")


@dataclass
class MmluItem:
    id: str  # subject/row number (1 = first data row)
    subject: str
    question: str
    choices: list[str]
    answer: int


@dataclass
class MmluData:
    items: list[MmluItem] = field(default_factory=list)
    skipped_no_answer: dict[str, int] = field(default_factory=dict)  # subject -> rows without an answer
    decoded_as: dict[str, str] = field(default_factory=dict)  # file -> encoding, for files not in UTF-8

    @property
    def subjects(self) -> list[str]:
        return sorted({item.subject for item in self.items} | set(self.skipped_no_answer))


def decode_csv(data: bytes, path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was read with."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = {encoding: data.decode(encoding, errors="replace") for encoding in FALLBACK_ENCODINGS}
    encoding = max(FALLBACK_ENCODINGS, key=lambda e: sum(char in TYPOGRAPHIC for char in candidates[e]))
    logger.warning("%s is not UTF-8; read as %s", path, encoding)
    return candidates[encoding], encoding


def subject_of(path: Path) -> str:
    return re.sub(r"^mmlu_", "", path.stem)


def read_subject(path: Path) -> tuple[list[MmluItem], int, str]:
    """Items of one subject file, the number of rows without an answer, and the encoding used."""
    text, encoding = decode_csv(path.read_bytes(), path)
    header = text[: text.find("\n")] if "\n" in text else text
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = {name.strip().lower(): name for name in reader.fieldnames or [] if name}
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (header: {header.strip()[:200]!r})")
    subject, items, skipped = subject_of(path), [], 0
    for row_number, row in enumerate(reader, start=1):
        where = f"{path}, row {row_number}"
        answer = (row.get(columns["answer"]) or "").strip()
        if not answer:
            skipped += 1
            continue
        if answer not in {str(i) for i in range(len(CHOICE_LABELS))}:
            raise DataError(f"{where}: answer {answer!r} is not an index 0-{len(CHOICE_LABELS) - 1}")
        try:
            choices = ast.literal_eval(row.get(columns["choices"]) or "")
        except (ValueError, SyntaxError) as error:
            raise DataError(f"{where}: choices {row.get(columns['choices'])!r:.80} are not a list literal") from error
        if not isinstance(choices, list) or len(choices) != len(CHOICE_LABELS):
            raise DataError(f"{where}: expected {len(CHOICE_LABELS)} choices, got {choices!r:.80}")
        question = row.get(columns["question"]) or ""
        if not question.strip():
            raise DataError(f"{where}: empty question")
        items.append(MmluItem(f"{subject}/{row_number}", subject, question, [str(c) for c in choices], int(answer)))
    return items, skipped, encoding


def read_mmlu_redux(folder: str | Path, subjects: list[str] | None = None,
                    max_items_per_subject: int | None = None) -> MmluData:
    folder = Path(folder)
    files = sorted(folder.glob("mmlu_*.csv"))
    if not files:
        raise DataError(f"no mmlu_<subject>.csv files in {folder}")
    known = [subject_of(path) for path in files]
    unknown = sorted(set(subjects or []) - set(known))
    if unknown:
        raise DataError(f"unknown subjects {unknown} (in {folder}: {', '.join(known)})")
    data = MmluData()
    for path in files:
        if subjects and subject_of(path) not in subjects:
            continue
        items, skipped, encoding = read_subject(path)
        data.items += items[:max_items_per_subject] if max_items_per_subject is not None else items
        data.skipped_no_answer[subject_of(path)] = skipped
        if encoding != "utf-8":
            data.decoded_as[path.name] = encoding
    return data


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def prompt(item: MmluItem) -> str:
    """Zero-shot context: lm-eval's MMLU description and doc_to_text."""
    options = "".join(f"\n{label}. {choice}" for label, choice in zip(CHOICE_LABELS, item.choices, strict=True))
    return f"{description(item.subject)}{item.question.strip()}{options}\nAnswer:"


# ---------------------------------------------------------------------------------------------------------
# Scoring with the project's scorer


def score_items(model, tokenizer, items: list[MmluItem], output_path: Path, *, batch_size: int = 8,
                resume: bool = False, items_per_write: int = 32) -> dict[str, dict[str, Any]]:
    """Per item: the log-likelihood of each choice, the prediction, whether it is right. Written to
    `output_path` (JSON lines) as it goes; `resume` keeps what an interrupted run wrote."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    finished = start_output(output_path, resume)
    todo = [item for item in items if item.id not in finished]
    with output_path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), items_per_write):
            chunk = todo[start:start + items_per_write]
            requests = [(prompt(item), f" {label}") for item in chunk for label in CHOICE_LABELS]
            scores = continuation_loglikelihoods(model, tokenizer, requests, batch_size=batch_size)
            for number, item in enumerate(chunk):
                lls = scores[number * len(CHOICE_LABELS):(number + 1) * len(CHOICE_LABELS)]
                prediction = max(range(len(lls)), key=lls.__getitem__)  # first of equals, as numpy's argmax
                row = {"id": item.id, "subject": item.subject, "loglikelihoods": lls, "prediction": prediction,
                       "answer": item.answer, "correct": prediction == item.answer}
                handle.write(json.dumps(row) + "\n")
                finished[item.id] = row
            handle.flush()
            logger.info("scored %d / %d items", len(finished), len(items))
    return finished


def summarize(data: MmluData, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy by subject and overall (micro: over items; macro: mean of the subjects). An item without a
    row counts as wrong."""
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for item in data.items:
        by_subject[item.subject].append(bool(rows.get(item.id, {}).get("correct", False)))
    subjects = {
        subject: {"accuracy": sum(marks) / len(marks) if marks else None, "items": len(marks),
                  "skipped_no_answer": data.skipped_no_answer.get(subject, 0)}
        for subject in data.subjects
        for marks in [by_subject.get(subject, [])]
    }
    scored = [s["accuracy"] for s in subjects.values() if s["accuracy"] is not None]
    correct = sum(sum(marks) for marks in by_subject.values())
    return {
        "accuracy": correct / len(data.items) if data.items else None,
        "macro_accuracy": sum(scored) / len(scored) if scored else None,
        "items": len(data.items),
        "items_without_output": sum(item.id not in rows for item in data.items),
        "skipped_no_answer": sum(data.skipped_no_answer.values()),
        "decoded_as": data.decoded_as,
        "subjects": subjects,
    }


# ---------------------------------------------------------------------------------------------------------
# The same items through lm-eval


def lm_eval_mmlu_template() -> dict[str, Any]:
    """lm-eval's own MMLU task template (prompt, choices, target, metric), read from the installed package."""
    import lm_eval
    import yaml

    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    template = yaml.safe_load(path.read_text())
    return {key: template[key] for key in ("output_type", "doc_to_text", "doc_to_choice", "doc_to_target",
                                           "metric_list")}


def lm_eval_task_name(subject: str) -> str:
    return f"mmlu_redux_local_{subject}"


def write_lm_eval_tasks(data: MmluData, folder: Path) -> list[str]:
    """One lm-eval task per subject over a JSON-lines copy of the items read here: lm-eval's MMLU template,
    local data. Returns the task names."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    template = lm_eval_mmlu_template()
    by_subject: dict[str, list[MmluItem]] = defaultdict(list)
    for item in data.items:
        by_subject[item.subject].append(item)
    names = []
    for subject, items in sorted(by_subject.items()):
        data_file = folder / f"{subject}.jsonl"
        data_file.write_text("".join(json.dumps({k: v for k, v in asdict(item).items() if k != "subject"}) + "\n"
                                     for item in items), encoding="utf-8")
        task = {"task": lm_eval_task_name(subject), "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data_file)}}, "test_split": "test",
                "description": description(subject), **template}
        (folder / f"{lm_eval_task_name(subject)}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True))
        names.append(lm_eval_task_name(subject))
    return names


def run_lm_eval(model_path: str, data: MmluData, folder: Path, *, batch_size: int = 8, device: str = "cpu",
                dtype: str = "auto") -> dict[str, dict[str, Any]]:
    """Score the items with lm-eval's harness (its HF model wrapper, loglikelihood requests, `acc`): the same
    per-item rows as `score_items`."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = write_lm_eval_tasks(data, folder)
    results = simple_evaluate(
        model="hf", model_args={"pretrained": model_path, "dtype": dtype}, tasks=names, num_fewshot=0,
        batch_size=batch_size, device=device, task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True, bootstrap_iters=0,
    )
    rows = {}
    for name, samples in results["samples"].items():
        for sample in samples:
            doc = sample["doc"]
            lls = [float(response[0]) for response in sample["filtered_resps"]]
            prediction = max(range(len(lls)), key=lls.__getitem__)
            rows[doc["id"]] = {"id": doc["id"], "subject": name.removeprefix("mmlu_redux_local_"),
                               "loglikelihoods": lls, "prediction": prediction, "answer": doc["answer"],
                               "correct": bool(sample["acc"]), "contexts": [a[0] for a in sample["arguments"]]}
    return rows


# ---------------------------------------------------------------------------------------------------------
# Before / after: several models, one table


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/")).strip("-")


def evaluate_model(name: str, data: MmluData, output_dir: Path, *, backend: str = "project", batch_size: int = 8,
                   dtype: str = "auto", resume: bool = False) -> dict[str, Any]:
    """Score one model (local folder, adapter or Hub id) and write items.jsonl and metrics.json in output_dir."""
    import torch

    output_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "lm_eval":
        if (Path(name) / "adapter_config.json").is_file():
            raise ValueError(f"{name} is an adapter; the lm_eval backend here takes full models (use the project's)")
        rows = run_lm_eval(name, data, output_dir / "lm_eval_tasks", batch_size=batch_size, device=device,
                           dtype=dtype)
        write_jsonl_atomic(output_dir / "items.jsonl", rows.values())
    elif backend == "project":
        model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=name, dtype=dtype),
                                                       for_training=False)
        model.to(device).eval()
        rows = score_items(model, getattr(processor, "tokenizer", processor), data.items,
                           output_dir / "items.jsonl", batch_size=batch_size, resume=resume)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'project' or 'lm_eval'")
    metrics = {"model": name, "backend": backend, **summarize(data, rows)}
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


def comparison_table(results: list[dict[str, Any]]) -> str:
    """Markdown: accuracy (%) by subject and overall for each model, and each model's change from the first."""
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    names = [result["model"] for result in results]
    header = ["subject", "items", *names, *[f"Δ {name}" for name in names[1:]]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def line(label: str, items: int, values: list[float | None]) -> str:
        deltas = [None if v is None or values[0] is None else v - values[0] for v in values[1:]]
        signed = ["-" if d is None else f"{100 * d:+.1f}" for d in deltas]
        return "| " + " | ".join([label, str(items), *map(cell, values), *signed]) + " |"

    for subject, first in results[0]["subjects"].items():
        lines.append(line(subject, first["items"], [r["subjects"][subject]["accuracy"] for r in results]))
    lines.append(line("**overall (micro)**", results[0]["items"], [r["accuracy"] for r in results]))
    lines.append(line("**overall (macro)**", results[0]["items"], [r["macro_accuracy"] for r in results]))
    return "\n".join(lines) + "\n"
