"""Rationales for n-best rows (prepare_data.py slurp_nbest), written by a local chat model: the training rows of the
slurp_rationale task.

    scripts/prepare_data.py slurp_rationale --input data/slurp_rationale/train.nbest.jsonl \\
        --recipe recipes/slurp_rationale.yaml --model Qwen/Qwen3-8B --output_file data/slurp_rationale/train.jsonl \\
        [--batch_size 16] [--max_new_tokens 256] [--temperature 0] [--seed 0] [--enable_thinking] [--limit N] \\
        [--dtype bfloat16] [--overwrite]

The model is asked, row by row, with the recipe's `rationale_prompt_template` (fields {candidates}, {label},
{scenario}, {action}, {entities}, {sentence}), through the project's batched generation (audio_recipes.decoding),
greedily, or with --temperature sampled from each row's own seed (a resumed run draws what a whole one draws). Its answer, without a <think> block and cut before any `Final answer:` line of its own, becomes the row's
`rationale_text`; a row whose answer is empty is left out and listed in OUTPUT.rejected.jsonl. Answers are appended
to OUTPUT.partial.jsonl as they come (a run interrupted resumes with the same settings); OUTPUT is written whole, in
the input's order, at the end, then OUTPUT.build.json (its settings): the same command again says "already built" and
generates nothing; other settings are refused unless --overwrite. An output that is an input, or an existing OUTPUT or
OUTPUT.rejected.jsonl the project did not write (no .build.json beside it), is refused unless --overwrite (never an
input). Prints statistics as one JSON object (last line).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path
from typing import Any

from audio_recipes.config import ModelArguments, TaskArguments
from audio_recipes.errors import DataError, InputError
from audio_recipes.io import (
    check_output_files,
    finished_output,
    read_jsonl_lines,
    remove_recorded,
    write_recorded_jsonl,
)
from audio_recipes.prepare.resumable import may_resume, partial_paths, remove_partial
from audio_recipes.recipe import load_recipe
from audio_recipes.tasks.base import Example
from audio_recipes.tasks.slu_format import slu_target
from audio_recipes.tasks.slurp_rationale import clean_rationale, gold_label, numbered

TEMPLATE_FIELDS = ("candidates", "label", "scenario", "action", "entities", "sentence")
SYSTEM_PROMPT = "You annotate spoken commands to a voice assistant."


class RationaleTemplateError(InputError, ValueError):
    """A recipe's rationale_prompt_template that cannot be filled in; the message says why."""


def teacher_answer(example: Example, text: str) -> dict[str, Any]:
    """The teacher's answer as the run writes it: the rationale, valid when not empty."""
    rationale = clean_rationale(text)
    return {"rationale": rationale, "valid": bool(rationale)}


def recipe_template(recipe: Path) -> str:
    template = load_recipe(recipe).get("rationale_prompt_template")
    if not isinstance(template, str) or not template.strip():
        raise RationaleTemplateError(f"recipe {recipe} has no rationale_prompt_template (a string with the fields "
                                     f"{', '.join('{' + name + '}' for name in TEMPLATE_FIELDS)})")
    unknown = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None
               and name not in TEMPLATE_FIELDS]
    if unknown:
        raise RationaleTemplateError(f"rationale_prompt_template of {recipe} names {', '.join(map(repr, unknown))}; "
                                     f"its fields are {', '.join(TEMPLATE_FIELDS)} (write a literal brace as {{{{ }}}})")
    return template


def teacher_prompt(template: str, row: dict[str, Any], label: dict[str, Any]) -> str:
    entities = "; ".join(f"{entity['type']}: {entity['filler']}" for entity in label["entities"]) or "none"
    return template.format(candidates=numbered(row["candidates"]), label=slu_target(**label),
                           scenario=label["scenario"], action=label["action"], entities=entities,
                           sentence=row.get("sentence", "")).strip()


def teacher_examples(path: Path, template: str, limit: int | None) -> tuple[list[dict[str, Any]], list[Example]]:
    rows, examples = [], []
    for line_number, row in read_jsonl_lines(path):
        where = f"{path}, line {line_number}"
        if not isinstance(row.get("filename"), str) or not isinstance(row.get("candidates"), list):
            raise DataError(f"{where}: an n-best row needs filename and candidates (prepare_data.py slurp_nbest)")
        label = gold_label(row.get("final"), where)
        rows.append(row)
        examples.append(Example(row["filename"], None, SYSTEM_PROMPT, teacher_prompt(template, row, label), "",
                                json.dumps(label)))
    if len({example.id for example in examples}) != len(examples):
        raise DataError(f"{path}: a filename occurs more than once; rationales are keyed by filename")
    return (rows[:limit], examples[:limit]) if limit is not None else (rows, examples)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare_data.py slurp_rationale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="n-best rows (prepare_data.py slurp_nbest)")
    parser.add_argument("--recipe", required=True, type=Path, help="recipe holding rationale_prompt_template")
    parser.add_argument("--model", required=True, help="chat model: local path or Hub id")
    parser.add_argument("--output_file", required=True, type=Path, help="rows with rationale_text (JSON lines)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; above: sampled, seeded per row")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (with --temperature)")
    parser.add_argument("--enable_thinking", action="store_true", help="let a thinking model think first (Qwen3)")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output (or partial rows) of other settings, or a file the project did not write")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    template = recipe_template(args.recipe)
    settings = {"input": str(args.input.resolve()), "model": args.model, "template": template,
                "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
                "enable_thinking": args.enable_thinking, "limit": args.limit, "dtype": args.dtype}
    rejected_file = args.output_file.with_name(args.output_file.stem + ".rejected.jsonl")
    check_output_files("slurp_rationale", [args.output_file, rejected_file], [args.input, args.recipe], args.overwrite)
    if finished_output(args.output_file, "slurp_rationale", settings, args.overwrite):
        print(f"already built: {args.output_file} (the same settings); nothing to do", file=sys.stderr)
        print(json.dumps({"output_file": str(args.output_file), "already_built": True}))
        return
    rows, examples = teacher_examples(args.input, template, args.limit)
    partial, _ = partial_paths(args.output_file)
    resume = may_resume(args.output_file, settings, args.overwrite)

    import torch

    from audio_recipes.collators import build_collator
    from audio_recipes.decoding import item_seed, read_finished, run_generation
    from audio_recipes.models import load_model_and_processor

    task_args = TaskArguments(enable_thinking=args.enable_thinking)  # the chat template's switch
    done = read_finished(partial) if resume else {}
    resumed = sum(example.id in done for example in examples)
    if resumed < len(examples):
        model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=args.model, dtype=args.dtype),
                                                       for_training=False)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        collator = build_collator(processor, task_args, with_completion=False, padding_side="left")
        kwargs = {"max_new_tokens": args.max_new_tokens, "num_beams": 1, "do_sample": False,
                  "temperature": args.temperature or None, "top_p": None, "top_k": None,
                  "pad_token_id": collator.tokenizer.pad_token_id}
        sample_seed = (lambda example: item_seed(args.seed, example.id)) if args.temperature > 0 else None
        done = run_generation(model, collator, None, examples, partial, batch_size=args.batch_size, resume=resume,
                              generation_kwargs=kwargs, sample_seed=sample_seed, parse=teacher_answer)
    kept, rejected = [], []
    for row in rows:
        answer = done[row["filename"]]
        if answer["prediction"]["valid"]:
            kept.append({**row, "rationale_text": answer["prediction"]["rationale"]})
        else:
            rejected.append({"filename": row["filename"], "reason": "empty rationale",
                             "raw_output": answer["raw_output"]})
    if rejected:
        write_recorded_jsonl(rejected_file, rejected, "slurp_rationale", settings)
        print(f"left out {len(rejected)} rows whose rationale is empty; listed in {rejected_file}", file=sys.stderr)
    else:
        remove_recorded(rejected_file)  # an earlier run's list, if the project wrote it; a file it did not is kept
    if not kept:
        raise DataError(f"{args.model} wrote no usable rationale for {args.input} (all {len(rows)} answers empty)")
    write_recorded_jsonl(args.output_file, kept, "slurp_rationale", settings)
    remove_partial(args.output_file)
    words = [len(row["rationale_text"].split()) for row in kept]
    print(json.dumps({"output_file": str(args.output_file), "rows": len(kept), "rows_rejected": len(rejected),
                      "resumed": resumed,
                      "mean_rationale_words": round(sum(words) / len(words), 2)}))
