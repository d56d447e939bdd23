"""slurp_rationale: the target (rationale, then the label; loss on both), the parser, the rows it reads, the files
evaluation writes and the label metrics, on the tiny Qwen2-Audio and on SLURP's real annotations and predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import examples_of, recipe_args, run_script_in_process
from trl import SFTConfig

from audio_recipes.collators import IGNORE_INDEX
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, write_jsonl_atomic
from audio_recipes.metrics.slu import METRIC_KEYS, slurp_gold_entities
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.evaluate import score_outputs
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.recipe import parse_recipe
from audio_recipes.tasks import get_task
from audio_recipes.tasks.slurp_rationale import FINAL_MARKER, parse_rationale_output
from audio_recipes.testing.tiny_models import ensure_tiny_model

RECIPE = "recipes/tiny/slurp_rationale.yaml"
LABEL = '{"scenario": "alarm", "action": "set", "entities": [{"time": "Eight  AM"}]}'


@pytest.fixture(scope="module")
def tiny_model() -> str:
    model = str(ensure_tiny_model("qwen2-audio"))
    examples_of(RECIPE, 1)  # the tiny data, built once
    return model


# ---------------------------------------------------------------- target and parser


def test_the_loss_falls_on_the_rationale_and_the_label(tiny_model, tmp_path):
    model_args, task_args, training_args, _ = parse_recipe(
        (ModelArguments, TaskArguments, SFTConfig, EvalArguments),
        [str(PROJECT_ROOT / RECIPE), "--output_dir", str(tmp_path), "--max_train_samples", "2",
         "--model_name_or_path", tiny_model])
    run = build_trainer(model_args, task_args, training_args)
    rows = [run.trainer.train_dataset[i] for i in range(2)]
    batch = run.collator(rows)
    tokenizer = run.collator.tokenizer
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"], strict=True):
        trained = tokenizer.decode(ids[labels != IGNORE_INDEX])
        assert trained == row["completion"] + "<|im_end|>"
        rationale, label = row["completion"].split(f"\n{FINAL_MARKER} ")
        assert rationale.startswith("The command is about ") and json.loads(label)["scenario"]
        assert rationale not in tokenizer.decode(ids[labels == IGNORE_INDEX])  # the prompt holds no rationale


@pytest.mark.parametrize(("text", "rationale", "valid"), [
    (f"Heard 'eight am'.\n{FINAL_MARKER} {LABEL}", "Heard 'eight am'.", True),
    (f"<think>x</think>It says {{\"scenario\": \"x\", \"action\": \"y\"}}.\nfinal answer: {LABEL}<|im_end|>",
     'It says {"scenario": "x", "action": "y"}.', True),  # the label after the last marker, any case
    (f"No marker, the label last: {LABEL}", "No marker, the label last:", True),
    (f"{FINAL_MARKER} not JSON", f"{FINAL_MARKER} not JSON", False),
    ("a rationale and no label", "a rationale and no label", False),
    (f"{FINAL_MARKER} " + '{"scenario": 3, "action": "set"}', None, False),
    ("{" * 5000, None, False),
    ("", "", False),
])
def test_the_label_is_read_after_any_rationale_and_a_missing_one_is_invalid(text, rationale, valid):
    prediction = parse_rationale_output(text)
    assert prediction["valid"] is valid
    if rationale is not None:
        assert prediction["rationale"] == rationale
    if valid:
        assert (prediction["scenario"], prediction["action"]) == ("alarm", "set")
        assert prediction["entities"] == [{"type": "time", "filler": "eight am"}]
    else:
        assert prediction["missing_label"] and (prediction["scenario"], prediction["entities"]) == ("", [])


def test_rows_are_checked_and_eval_rows_need_no_rationale(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    import numpy as np
    import soundfile as sf

    sf.write(audio / "a.flac", np.zeros(1600, dtype="float32"), 16000)
    good = {"filename": "a.flac", "candidates": ["wake me at eight"], "final": json.loads(LABEL)}
    write_jsonl_atomic(tmp_path / "eval.jsonl", [good])
    task = get_task("slurp_rationale", TaskArguments(task="slurp_rationale", train_file=str(tmp_path / "eval.jsonl"),
                                                     eval_file=str(tmp_path / "eval.jsonl"), audio_dir=str(audio)))
    example = task.examples("eval")[0]
    assert example.completion == f'{FINAL_MARKER} {{"scenario": "alarm", "action": "set", "entities": [{{"time": ' \
                                 '"eight am"}]}'
    assert "1. wake me at eight" in example.prompt
    with pytest.raises(DataError, match=r"eval\.jsonl, line 1: row lacks rationale_text"):
        task.examples("train")
    for bad, message in ((dict(good, candidates=[]), "candidates must be a non-empty list"),
                         (dict(good, final={"scenario": "alarm"}), "`final` must be"),
                         (dict(good, final={**good["final"], "entities": [{"time": 8}]}), "is not"),
                         ({k: v for k, v in good.items() if k != "filename"}, "row lacks filename")):
        write_jsonl_atomic(tmp_path / "eval.jsonl", [bad])
        with pytest.raises(DataError, match=message):
            task.examples("eval")


# ---------------------------------------------------------------- evaluation files and metrics


def test_evaluation_writes_full_rows_official_labels_and_label_metrics(tiny_model, tmp_path):
    task, examples = examples_of(RECIPE, 4)
    outputs = [examples[0].completion, examples[1].completion.split(FINAL_MARKER)[0], "garbage",
               examples[3].completion.replace('"action": "', '"action": "not_')]
    rows = [{"id": example.id, "raw_output": text, "prediction": task.parse(text)}
            for example, text in zip(examples, outputs, strict=True)]
    official, metrics = score_outputs(task, examples, rows, tmp_path / task.predictions_file)
    task.write_report(tmp_path, examples, {"model": official}, {"model": metrics})

    full = read_jsonl(tmp_path / "full_predictions.jsonl")
    assert [row["file"] for row in full] == [example.id for example in examples]
    assert set(full[0]) >= {"candidates", "rationale", "raw_output", "target", "scenario", "action", "entities"}
    assert full[0]["target"] == examples[0].completion and full[0]["raw_output"] == outputs[0]
    assert full[0]["rationale"] == examples[0].completion.split("\n")[0]
    labels_only = read_jsonl(tmp_path / "predictions.jsonl")
    assert all(set(row) == {"file", "scenario", "action", "entities"} for row in labels_only)

    assert metrics["num_invalid_outputs"] == metrics["num_missing_labels"] == 2
    assert metrics["scenario_accuracy"] == 0.5 and metrics["intent_accuracy"] == 0.25
    assert set(METRIC_KEYS) | {"entity_precision", "entity_recall"} <= set(metrics)
    # score.py on the labels-only file and the data file agrees with evaluation (the validity count aside)
    scored = get_task("slurp_rationale").score_files(Path(task.args.test_file), tmp_path / "predictions.jsonl")
    assert scored["num_missing"] == len(read_jsonl(task.args.test_file)) - 4
    scored = get_task("slurp_rationale").score_files(Path(task.args.test_file), tmp_path / "predictions.jsonl",
                                                     skip_missing=True)
    assert all(scored[key] == pytest.approx(metrics[key]) for key in (*METRIC_KEYS, "entity_precision"))


def test_evaluate_script_runs_the_tiny_recipe(tiny_model, tmp_path, capsys):
    run_script_in_process("evaluate.py", [RECIPE, "--model_name_or_path", tiny_model, "--output_dir", str(tmp_path),
                                          "--max_eval_samples", "2", "--max_new_tokens", "8"])
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["num_gold"] == 2 and metrics["num_missing_labels"] == metrics["num_invalid_outputs"]
    assert len(read_jsonl(tmp_path / "full_predictions.jsonl")) == len(read_jsonl(tmp_path / "predictions.jsonl")) == 2


def test_label_metrics_follow_slurps_scorer_on_published_predictions(shared_data, tmp_path):
    """SLURP's test set as slurp_rationale rows (one per recording) and a published system's predictions: the same
    scores as the slurp task's scorer, and entity precision / recall consistent with its span F1."""
    gold_path = shared_data / "slurp" / "test.jsonl"
    rows = [{"filename": recording["file"], "candidates": [row["sentence"]],
             "final": {"scenario": row["scenario"], "action": row["action"], "entities": slurp_gold_entities(row)}}
            for row in read_jsonl(gold_path) for recording in row["recordings"]]
    write_jsonl_atomic(tmp_path / "test.jsonl", rows)
    predictions = shared_data / "slurp" / "predictions" / "multi_slurp_hermit_predictions.jsonl"
    ours = get_task("slurp_rationale").score_files(tmp_path / "test.jsonl", predictions)
    theirs = get_task("slurp").score_files(gold_path, predictions)
    for key in (*METRIC_KEYS, "num_gold", "num_missing"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    precision, recall = ours["entity_precision"], ours["entity_recall"]
    assert 2 * precision * recall / (precision + recall) == pytest.approx(ours["entity_span_f1"])
    assert 0.5 < ours["slu_f1"] < 1 and ours["num_missing_labels"] == 0


def test_the_recipes_parse_and_name_the_task():
    for recipe in ("recipes/slurp_rationale.yaml", RECIPE):
        task_args = recipe_args(TaskArguments, recipe)
        assert task_args.task == "slurp_rationale" and "{candidates}" in task_args.rationale_prompt_template
