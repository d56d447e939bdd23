"""MMLU-Redux from its local CSV files, scored zero-shot as lm-eval scores it, in one of two variants.

Reading: each `mmlu_<subject>.csv` is decoded as UTF-8 (a file that is not is read as Mac Roman or
Windows-1252, whichever gives typographic punctuation, and named in a warning), its delimiter (`,` or `;`)
read from the header, its columns found by name in any order. `choices` is a Python list literal;
`answer` an index 0-3; `error_type` (any case) kept. A row without an answer is skipped and counted; any other
malformed row is an error naming the file and row.

Variants (metrics.json says which, under `variant` and `lm_eval_task`):

* `generative` (the default; what published MMLU-Redux figures use): lm-eval's `mmlu_redux_generative`
  (`lm_eval/tasks/mmlu-redux/generative`). Only the rows whose `error_type` is "ok" (5,330 of 5,700, the rows of
  its data set `fxmarty/mmlu-redux-2.0-ok`); the prompt is the subject description, then "QUESTION\nA. ...\nB.
  ...\nC. ...\nD. ...\nPlease respond with the correct letter (A, B, C or D) without any additional comments, only
  the correct letter:"; greedy generation (up to 256 tokens, cut at "</s>" and the end-of-sequence token); the
  prediction is the first of A, B, C, D in the text ("[invalid]" if none); accuracy is its exact match.
* `loglikelihood`: lm-eval's `mmlu` template on every row with an answer: "...\nAnswer:", the choices " A" ..
  " D", the most likely one (lm-eval's `acc`).

The same items can be run through lm-eval itself (`run_lm_eval`), over local tasks written by `write_lm_eval_tasks`
from the installed package's own templates.
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
    error_type: str = "ok"  # MMLU-Redux's annotation, lowercased: "ok" or the error found


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
        error_type = (row.get(columns["error_type"]) or "ok").strip().lower() if "error_type" in columns else "ok"
        items.append(MmluItem(f"{subject}/{row_number}", subject, question, [str(c) for c in choices], int(answer),
                              error_type))
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


VARIANTS = ("generative", "loglikelihood")
LM_EVAL_TASKS = {"generative": "mmlu_redux_generative", "loglikelihood": "mmlu (its template on MMLU-Redux rows)"}
INSTRUCTION = ("Please respond with the correct letter (A, B, C or D) without any additional comments, only the "
               "correct letter:")
MAX_GEN_TOKS = 256  # lm-eval's default for generate_until
STOP = ("</s>",)  # the task's `until`; the tokenizer's end-of-sequence text is added, as lm-eval adds it
FIRST_LETTER = re.compile(r"([ABCD])")
INVALID = "[invalid]"


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown MMLU-Redux variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def variant_items(data: MmluData, variant: str) -> list[MmluItem]:
    """The items a variant scores: the generative task's data set holds only the rows annotated "ok"."""
    check_variant(variant)
    return [item for item in data.items if variant != "generative" or item.error_type == "ok"]


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def prompt(item: MmluItem) -> str:
    """Zero-shot context: lm-eval's MMLU description and doc_to_text."""
    options = "".join(f"\n{label}. {choice}" for label, choice in zip(CHOICE_LABELS, item.choices, strict=True))
    return f"{description(item.subject)}{item.question.strip()}{options}\nAnswer:"


def generative_prompt(item: MmluItem) -> str:
    """Zero-shot context of lm-eval's mmlu_redux_generative: the description and its doc_to_text."""
    options = "".join(f"\n{label}. {choice}" for label, choice in zip(CHOICE_LABELS, item.choices, strict=True))
    return f"{description(item.subject)}{item.question.strip()}{options}\n{INSTRUCTION}"


def first_letter(response: str) -> str:
    """lm-eval's filter: the first of A, B, C, D anywhere in the response, else "[invalid]"."""
    match = FIRST_LETTER.search(response)
    return match.group(1) if match else INVALID


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


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


def generate_items(model, tokenizer, items: list[MmluItem], output_path: Path, *, batch_size: int = 8,
                   resume: bool = False, max_new_tokens: int = MAX_GEN_TOKS) -> dict[str, dict[str, Any]]:
    """Per item, as lm-eval's HF model answers a generate_until request: the prompt encoded with the tokenizer's
    defaults, left-padded, greedy generation, decoded without special tokens and cut at the stop strings; the
    first letter; whether it is the answer. Written to `output_path` as it goes; `resume` keeps what is there."""
    import torch

    output_path.parent.mkdir(parents=True, exist_ok=True)
    finished = start_output(output_path, resume)
    todo = [item for item in items if item.id not in finished]
    stop = (*STOP, tokenizer.decode([tokenizer.eos_token_id], skip_special_tokens=False))
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with output_path.open("a", encoding="utf-8") as handle:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                encoded = tokenizer([generative_prompt(item) for item in chunk], padding="longest",
                                    return_tensors="pt").to(model.device)
                with torch.no_grad():
                    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                            temperature=None, top_p=None, top_k=None,
                                            pad_token_id=tokenizer.pad_token_id)
                for item, tokens in zip(chunk, output[:, encoded["input_ids"].shape[1]:].tolist(), strict=True):
                    response = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop)
                    prediction = first_letter(response)
                    answer = CHOICE_LABELS[item.answer]
                    row = {"id": item.id, "subject": item.subject, "response": response, "prediction": prediction,
                           "answer": answer, "correct": prediction == answer}
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                    finished[item.id] = row
                handle.flush()
                logger.info("answered %d / %d items", len(finished), len(items))
    finally:
        tokenizer.padding_side = padding_side
    return finished


def summarize(data: MmluData, rows: dict[str, dict[str, Any]], variant: str = "loglikelihood") -> dict[str, Any]:
    """Accuracy by subject and overall (micro: over items; macro: mean of the subjects). An item without a
    row counts as wrong."""
    items = variant_items(data, variant)
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for item in items:
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
        "variant": variant,
        "lm_eval_task": LM_EVAL_TASKS[variant],
        "accuracy": correct / len(items) if items else None,
        "macro_accuracy": sum(scored) / len(scored) if scored else None,
        "items": len(items),
        "items_not_ok": len(data.items) - len(items),  # left out by the generative task (error_type not "ok")
        "items_without_output": sum(item.id not in rows for item in items),
        "skipped_no_answer": sum(data.skipped_no_answer.values()),
        "decoded_as": data.decoded_as,
        "subjects": subjects,
    }


# ---------------------------------------------------------------------------------------------------------
# The same items through lm-eval


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def lm_eval_mmlu_template() -> dict[str, Any]:
    """lm-eval's own MMLU task template (prompt, choices, target, metric), read from the installed package."""
    import yaml

    template = yaml.safe_load((lm_eval_tasks_dir() / "mmlu" / "default" / "_default_template_yaml").read_text())
    return {key: template[key] for key in ("output_type", "doc_to_text", "doc_to_choice", "doc_to_target",
                                           "metric_list")}


def lm_eval_generative_template() -> dict[str, Any]:
    """lm-eval's mmlu_redux_generative template (prompt, target, generation, filter, metric), read from the
    installed package: everything but its Hub data set."""
    import yaml

    path = lm_eval_tasks_dir() / "mmlu-redux" / "generative" / "_default_template_yaml"
    template = yaml.safe_load(path.read_text())
    return {key: template[key] for key in ("output_type", "doc_to_text", "doc_to_target", "target_delimiter",
                                           "generation_kwargs", "metric_list", "filter_list")}


def lm_eval_generative_description(subject: str) -> str:
    """The description of lm-eval's mmlu_redux_<subject>_generative task, from the installed package."""
    import yaml

    path = lm_eval_tasks_dir() / "mmlu-redux" / "generative" / f"mmlu_{subject}.yaml"
    return yaml.safe_load(path.read_text())["description"]


def lm_eval_task_name(subject: str, variant: str = "loglikelihood") -> str:
    return f"mmlu_redux_local_{variant}_{subject}"


def write_lm_eval_tasks(data: MmluData, folder: Path, variant: str = "loglikelihood") -> list[str]:
    """One lm-eval task per subject over a JSON-lines copy of the variant's items: lm-eval's own template (MMLU's,
    or mmlu_redux_generative's with its subject description), local data. Returns the task names."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    template = lm_eval_generative_template() if variant == "generative" else lm_eval_mmlu_template()
    by_subject: dict[str, list[MmluItem]] = defaultdict(list)
    for item in variant_items(data, variant):
        by_subject[item.subject].append(item)
    names = []
    for subject, items in sorted(by_subject.items()):
        name = lm_eval_task_name(subject, variant)
        data_file = folder / f"{name}.jsonl"
        data_file.write_text("".join(json.dumps({k: v for k, v in asdict(item).items() if k != "subject"}) + "\n"
                                     for item in items), encoding="utf-8")
        text = lm_eval_generative_description(subject) if variant == "generative" else description(subject)
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
                "test_split": "test", "description": text, **template}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True))
        names.append(name)
    return names


def lm_eval_requests(data: MmluData, folder: Path, variant: str) -> dict[str, list[tuple]]:
    """The requests lm-eval builds for the variant's items (item id -> each request's arguments), without a model."""
    from lm_eval.tasks import TaskManager, get_task_dict

    names = write_lm_eval_tasks(data, folder, variant)
    tasks = get_task_dict(names, TaskManager(include_path=str(folder), include_defaults=False))
    requests = {}
    for task in tasks.values():
        task.build_all_requests(rank=0, world_size=1)
        for instance in task.instances:
            requests.setdefault(instance.doc["id"], []).append(instance.args)
    return requests


def run_lm_eval(model_path: str, data: MmluData, folder: Path, *, batch_size: int = 8, device: str = "cpu",
                dtype: str = "auto", variant: str = "loglikelihood",
                max_new_tokens: int = MAX_GEN_TOKS) -> dict[str, dict[str, Any]]:
    """Score the variant's items with lm-eval's harness (its HF model wrapper; loglikelihood requests and `acc`, or
    generate_until requests, its first-letter filter and `exact_match`): the same per-item rows as ours."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = write_lm_eval_tasks(data, folder, variant)
    extra = {"gen_kwargs": f"max_gen_toks={max_new_tokens}"} if variant == "generative" else {}
    results = simple_evaluate(
        model="hf", model_args={"pretrained": model_path, "dtype": dtype}, tasks=names, num_fewshot=0,
        batch_size=batch_size, device=device, task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True, bootstrap_iters=0, **extra,
    )
    rows = {}
    for name, samples in results["samples"].items():
        subject = name.removeprefix(f"mmlu_redux_local_{variant}_")
        for sample in samples:
            doc = sample["doc"]
            row = {"id": doc["id"], "subject": subject, "contexts": [a[0] for a in sample["arguments"]]}
            if variant == "generative":
                filtered = sample["filtered_resps"]
                row.update(response=sample["resps"][0][0], prediction=filtered[0] if isinstance(filtered, list)
                           else filtered, answer=CHOICE_LABELS[doc["answer"]], correct=bool(sample["exact_match"]),
                           gen_kwargs=sample["arguments"][0][1])
            else:
                lls = [float(response[0]) for response in sample["filtered_resps"]]
                row.update(loglikelihoods=lls, prediction=max(range(len(lls)), key=lls.__getitem__),
                           answer=doc["answer"], correct=bool(sample["acc"]))
            rows[doc["id"]] = row
    return rows


# ---------------------------------------------------------------------------------------------------------
# Before / after: several models, one table


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/")).strip("-")


def evaluate_model(name: str, data: MmluData, output_dir: Path, *, backend: str = "project", batch_size: int = 8,
                   dtype: str = "auto", resume: bool = False, variant: str = "generative",
                   max_new_tokens: int = MAX_GEN_TOKS) -> dict[str, Any]:
    """Score one model (local folder, adapter or Hub id) on a variant and write items.jsonl and metrics.json in
    output_dir."""
    import torch

    check_variant(variant)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    items = variant_items(data, variant)
    if backend == "lm_eval":
        if (Path(name) / "adapter_config.json").is_file():
            raise ValueError(f"{name} is an adapter; the lm_eval backend here takes full models (use the project's)")
        rows = run_lm_eval(name, data, output_dir / "lm_eval_tasks", batch_size=batch_size, device=device,
                           dtype=dtype, variant=variant, max_new_tokens=max_new_tokens)
        write_jsonl_atomic(output_dir / "items.jsonl", rows.values())
    elif backend == "project":
        model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=name, dtype=dtype),
                                                       for_training=False)
        model.to(device).eval()
        tokenizer = getattr(processor, "tokenizer", processor)
        if variant == "generative":
            rows = generate_items(model, tokenizer, items, output_dir / "items.jsonl", batch_size=batch_size,
                                  resume=resume, max_new_tokens=max_new_tokens)
        else:
            rows = score_items(model, tokenizer, items, output_dir / "items.jsonl", batch_size=batch_size,
                               resume=resume)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'project' or 'lm_eval'")
    metrics = {"model": name, "backend": backend, **summarize(data, rows, variant)}
    if variant == "generative":
        metrics["max_new_tokens"] = max_new_tokens
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


def comparison_table(results: list[dict[str, Any]]) -> str:
    """Markdown: accuracy (%) by subject and overall for each model, and each model's change from the first."""
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    names = [result["model"] for result in results]
    header = ["subject", "items", *names, *[f"Δ {name}" for name in names[1:]]]
    variants = sorted({f"{result['variant']} ({result['lm_eval_task']})" for result in results if "variant" in result})
    caption = [f"MMLU-Redux, variant: {', '.join(variants)}", ""] if variants else []
    lines = [*caption, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def line(label: str, items: int, values: list[float | None]) -> str:
        deltas = [None if v is None or values[0] is None else v - values[0] for v in values[1:]]
        signed = ["-" if d is None else f"{100 * d:+.1f}" for d in deltas]
        return "| " + " | ".join([label, str(items), *map(cell, values), *signed]) + " |"

    for subject, first in results[0]["subjects"].items():
        lines.append(line(subject, first["items"], [r["subjects"][subject]["accuracy"] for r in results]))
    lines.append(line("**overall (micro)**", results[0]["items"], [r["accuracy"] for r in results]))
    lines.append(line("**overall (macro)**", results[0]["items"], [r["macro_accuracy"] for r in results]))
    return "\n".join(lines) + "\n"
