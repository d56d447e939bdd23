"""evaluate.py and score.py on the tiny Qwen2-Audio: official files, resume, sharding, batching, bad outputs.

Generation runs for real (tiny model, real tokeniser, espeak-ng audio); an untrained model's answers are not
JSON, so "right" answers are planted into a finished raw-output file where a test needs non-zero scores.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    accelerate_command,
    examples_of,
    free_port,
    json_object_lines,
    recipe_args,
    run_command,
    run_script_in_process,
    subprocess_env,
)

from audio_recipes import decoding
from audio_recipes.collators import AudioChatCollator, audio_options
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.decoding import generate_batch
from audio_recipes.metrics.slu import METRIC_KEYS
from audio_recipes.models import load_model_and_processor
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.evaluate import (
    EvaluationRunError,
    default_evaluation_dir,
    generation_kwargs,
    prepare_output_dir,
)
from audio_recipes.testing.tiny_models import ensure_tiny_model

AUDIO_RECIPE = "recipes/tiny/slurp.yaml"
TEXT_RECIPE = "recipes/tiny/slurp_text.yaml"
GOLD_TEST = PROJECT_ROOT / "data" / "tiny" / "slurp" / "test.jsonl"
COUNT_KEYS = ("num_gold", "num_predicted", "num_missing", "num_unmatched_predictions", "num_malformed_predictions")
FAST = ["--per_device_eval_batch_size", "2", "--max_new_tokens", "16"]


# ---------------------------------------------------------------- helpers


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")






def script_output(script: str, args: list[str], capsys) -> str:
    """scripts/<script> run in this process; its stdout."""
    capsys.readouterr()
    run_script_in_process(script, args)
    return capsys.readouterr().out


def script_error(script: str, args: list[str], capsys) -> tuple[int, str]:
    """scripts/<script> run in this process, expected to stop on an error: its exit status and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_script_in_process(script, args)
    return stopped.value.code, capsys.readouterr().err


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def score_py(gold: Path, predictions: Path, capsys, *extra: str) -> dict:
    return last_json_line(script_output(
        "score.py", ["slurp", "--gold", str(gold), "--predictions", str(predictions), *extra], capsys
    ))


def gold_rows_for(evaluated_files: list[str]) -> list[dict]:
    """The test rows whose recordings were evaluated, each restricted to its evaluated recordings."""
    wanted = set(evaluated_files)
    rows = []
    for row in read_jsonl(GOLD_TEST):
        recordings = [recording for recording in row["recordings"] if recording["file"] in wanted]
        if recordings:
            rows.append({**row, "recordings": recordings})
    return rows


def assert_same_scores(scored: dict, metrics: dict) -> None:
    for key in METRIC_KEYS:
        assert scored[key] == pytest.approx(metrics[key], abs=1e-12), key
    for key in COUNT_KEYS:
        assert scored[key] == metrics[key], key






@pytest.fixture
def generated_ids(monkeypatch) -> list[str]:
    """Ids of the items handed to the model, in order, however the evaluation is launched in this process."""
    seen: list[str] = []
    real = decoding.generate_batch

    def counting(model, collator, examples, **kwargs):
        seen.extend(example.id for example in examples)
        return real(model, collator, examples, **kwargs)

    monkeypatch.setattr(decoding, "generate_batch", counting)
    return seen


# ---------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def tiny_model() -> str:
    model = str(ensure_tiny_model())
    examples_of(AUDIO_RECIPE, 1)  # builds the tiny SLURP data once, before any subprocess needs it
    return model


@pytest.fixture(scope="module")
def audio_eval(tiny_model, tmp_path_factory) -> tuple[Path, str]:
    """evaluate.py as a user runs it, in its own process: 5 items in batches of 2 (a partial last batch)."""
    output_dir = tmp_path_factory.mktemp("eval-audio")
    result = run_command([sys.executable, "scripts/evaluate.py", AUDIO_RECIPE, "--model_name_or_path", tiny_model,
                          "--output_dir", str(output_dir), "--max_eval_samples", "5", *FAST])
    return output_dir, result.stdout


# ---------------------------------------------------------------- 1. official files and score.py


def test_audio_predictions_are_keyed_by_file_one_row_per_item_and_score_py_agrees(audio_eval, capsys):
    output_dir, stdout = audio_eval
    _, examples = examples_of(AUDIO_RECIPE, 5)
    expected_ids = [example.id for example in examples]

    raw = read_jsonl(output_dir / "raw_outputs.jsonl")
    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert [row["id"] for row in raw] == expected_ids
    assert [row["file"] for row in predictions] == expected_ids
    assert all(set(row) == {"file", "scenario", "action", "entities"} for row in predictions)
    assert all(isinstance(entity, dict) and set(entity) == {"type", "filler"}
               for row in predictions for entity in row["entities"])

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert last_json_line(stdout) == metrics  # the metrics are the last stdout line
    assert set(METRIC_KEYS) <= set(metrics)
    assert (metrics["num_gold"], metrics["num_predicted"], metrics["num_missing"]) == (5, 5, 0)
    assert metrics["num_invalid_outputs"] == sum(not row["prediction"]["valid"] for row in raw)
    assert metrics["split"] == "test"
    assert metrics["data"] == "data/tiny/slurp/test.jsonl"  # which data the split was
    assert {f"{key}_official" for key in METRIC_KEYS} <= set(metrics)

    gold = output_dir.parent / "gold-audio.jsonl"
    write_jsonl(gold, gold_rows_for(expected_ids))
    assert_same_scores(score_py(gold, output_dir / "predictions.jsonl", capsys), metrics)


def test_text_predictions_are_keyed_by_slurp_id_and_score_py_agrees(tiny_model, tmp_path, capsys):
    output_dir = tmp_path / "eval-text"
    stdout = script_output("evaluate.py", [TEXT_RECIPE, "--model_name_or_path", tiny_model,
                                           "--output_dir", str(output_dir), "--max_eval_samples", "4", *FAST], capsys)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert last_json_line(stdout) == metrics

    gold_rows = read_jsonl(GOLD_TEST)[:4]
    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert [row["slurp_id"] for row in predictions] == [str(row["slurp_id"]) for row in gold_rows]
    assert all("file" not in row for row in predictions)
    assert (metrics["num_gold"], metrics["num_predicted"], metrics["num_missing"]) == (4, 4, 0)

    gold = tmp_path / "gold-text.jsonl"
    write_jsonl(gold, gold_rows)
    assert_same_scores(score_py(gold, output_dir / "predictions.jsonl", capsys), metrics)


# ---------------------------------------------------------------- 2. resume, 6. bad outputs in the pipeline


def test_resume_keeps_finished_rows_redoes_the_torn_one_and_scores_bad_outputs_as_wrong(
    tiny_model, tmp_path, capsys, generated_ids
):
    task, examples = examples_of(AUDIO_RECIPE, 6)
    ids = [example.id for example in examples]
    output_dir = tmp_path / "eval"
    common = [AUDIO_RECIPE, "--model_name_or_path", tiny_model, "--output_dir", str(output_dir), *FAST]

    # An interrupted run: 3 items finished...
    script_output("evaluate.py", [*common, "--max_eval_samples", "3"], capsys)
    assert generated_ids == ids[:3]
    raw_path = output_dir / "raw_outputs.jsonl"
    finished = read_jsonl(raw_path)
    assert all(not row["prediction"]["valid"] for row in finished)  # the untrained model does not answer JSON
    # ...two of them with distinctive outputs (a right answer with entities, a non-JSON one) that must survive...
    right = next(index for index in range(3) if json.loads(examples[index].completion)["entities"])
    planted = (right + 1) % 3
    finished[right] = {"id": ids[right], "raw_output": examples[right].completion,
                       "prediction": task.parse(examples[right].completion)}
    finished[planted] = {"id": ids[planted], "raw_output": "PLANTED: not JSON", "prediction": task.parse("PLANTED: not JSON")}
    assert finished[right]["prediction"]["valid"] and not finished[planted]["prediction"]["valid"]
    write_jsonl(raw_path, finished)
    # ...and the 4th cut off mid-line
    torn = json.dumps({"id": ids[3], "raw_output": "TORN-LINE {", "prediction": {}})[:-20]
    with raw_path.open("a", encoding="utf-8") as handle:
        handle.write(torn)

    generated_ids.clear()
    stdout = script_output("evaluate.py", [*common, "--max_eval_samples", "6", "--resume", "true"], capsys)
    assert generated_ids == ids[3:]  # finished items are not generated again; the torn one is

    raw = read_jsonl(raw_path)  # every line is whole JSON: the torn fragment is gone
    assert [row["id"] for row in raw] == ids
    assert raw[:3] == finished
    assert "TORN-LINE" not in raw_path.read_text()
    assert [row["file"] for row in read_jsonl(output_dir / "predictions.jsonl")] == ids

    metrics = last_json_line(stdout)
    assert metrics == json.loads((output_dir / "metrics.json").read_text())
    # Bad outputs are predictions that score as wrong, not dropped: 1 right answer out of 6
    assert metrics["num_invalid_outputs"] == 5
    assert (metrics["num_gold"], metrics["num_predicted"], metrics["num_missing"]) == (6, 6, 0)
    assert metrics["scenario_accuracy"] == metrics["intent_accuracy"] == pytest.approx(1 / 6)
    assert metrics["entity_span_f1"] > 0

    # score.py on the same gold gives the same numbers; on the whole test set, the items not evaluated
    # count as wrong unless --skip_missing (the original script's behaviour)
    predictions = output_dir / "predictions.jsonl"
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, gold_rows_for(ids))
    assert_same_scores(score_py(gold, predictions, capsys), metrics)
    skipped = score_py(GOLD_TEST, predictions, capsys, "--skip_missing")
    for key in METRIC_KEYS:
        assert skipped[key] == pytest.approx(metrics[key], abs=1e-12), key
    everything = score_py(GOLD_TEST, predictions, capsys)
    total = len(read_jsonl(GOLD_TEST))
    assert everything["num_missing"] == total - 6
    assert everything["scenario_accuracy"] == pytest.approx(1 / total)


# ---------------------------------------------------------------- 3. the same run resumes, another is refused


class Interrupted(Exception):
    """Stands for a job killed mid-run."""


def test_resume_false_starts_the_same_run_over_and_says_so(audio_eval, tiny_model, tmp_path, monkeypatch, capsys,
                                                            generated_ids, caplog):
    output_dir = tmp_path / "eval"
    shutil.copytree(audio_eval[0], output_dir)
    raw_path = output_dir / "raw_outputs.jsonl"
    old = read_jsonl(raw_path)
    ids = [row["id"] for row in old]
    write_jsonl(raw_path, [{**row, "raw_output": "PLANTED"} for row in old] * 2)
    args = [AUDIO_RECIPE, "--model_name_or_path", tiny_model, "--output_dir", str(output_dir), "--max_eval_samples", "5",
            *FAST]

    # --resume false, killed after its first batch: only that batch's rows are left, none of the old ones, so
    # that a later run cannot take the discarded rows as finished
    counting = decoding.generate_batch

    def interrupt_after_one_batch(model, collator, examples, **kwargs):
        if generated_ids:
            raise Interrupted
        return counting(model, collator, examples, **kwargs)

    monkeypatch.setattr(decoding, "generate_batch", interrupt_after_one_batch)
    with pytest.raises(Interrupted):
        script_output("evaluate.py", [*args, "--resume", "false"], capsys)
    assert "starting over: the 5 output rows of the same run" in caplog.text
    assert [row["id"] for row in read_jsonl(raw_path)] == ids[:2]
    assert "PLANTED" not in raw_path.read_text()

    # Rerun without --resume: the same run is resumed by default, and says so
    monkeypatch.setattr(decoding, "generate_batch", counting)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="audio_recipes.pipelines.evaluate")
    script_output("evaluate.py", args, capsys)
    assert "resuming the run" in caplog.text and "2 rows already done" in caplog.text
    assert generated_ids == ids
    raw = read_jsonl(raw_path)
    assert [row["id"] for row in raw] == ids
    assert [row["raw_output"] for row in raw] == [row["raw_output"] for row in old]
    assert [row["file"] for row in read_jsonl(output_dir / "predictions.jsonl")] == ids


def test_another_model_or_decoding_never_resumes_or_replaces_a_run(audio_eval, tiny_model, tmp_path, capsys,
                                                                   generated_ids):
    output_dir = tmp_path / "eval"
    shutil.copytree(audio_eval[0], output_dir)
    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model, other_model)
    base = [AUDIO_RECIPE, "--output_dir", str(output_dir), "--max_eval_samples", "5", *FAST]
    for change, args in (("model", ["--model_name_or_path", str(other_model), "--resume", "true"]),
                         ("model", ["--model_name_or_path", str(other_model)]),
                         ("max_new_tokens", ["--model_name_or_path", tiny_model, "--max_new_tokens", "8"]),
                         ("model", ["--model_name_or_path", str(other_model), "--resume", "false"])):
        status, stderr = script_error("evaluate.py", [*base, *args], capsys)
        assert status == 1 and stderr.count("\n") == 1  # an InputError: one line, no traceback
        assert re.search(f"holds the outputs of another evaluation run .*{change}", stderr)
        assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before
    assert generated_ids == []  # refused before any generation

    script_output("evaluate.py", [*base, "--model_name_or_path", str(other_model), "--overwrite", "true"], capsys)
    assert len(generated_ids) == 5
    record = json.loads((output_dir / "evaluation_run.json").read_text())
    assert record["model"] == str(other_model.resolve())


def test_a_model_trained_again_into_the_same_folder_is_another_run(tiny_model, tmp_path, capsys, generated_ids):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    args = [AUDIO_RECIPE, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "eval"),
            "--max_eval_samples", "2", *FAST]
    script_output("evaluate.py", args, capsys)
    assert len(generated_ids) == 2
    script_output("evaluate.py", args, capsys)  # the same weights: resumed, nothing generated again
    assert len(generated_ids) == 2
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # written again, as a new training run into the folder would
    status, stderr = script_error("evaluate.py", args, capsys)
    assert status == 1 and re.search("another evaluation run .*model_files", stderr)
    assert len(generated_ids) == 2


def test_two_models_evaluated_by_default_keep_their_own_folders(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    first, second = tmp_path / "models" / "first", tmp_path / "models" / "second"
    shutil.copytree(tiny_model, first)
    shutil.copytree(tiny_model, second)
    recipe = PROJECT_ROOT / AUDIO_RECIPE
    common = ["--max_eval_samples", "2", *FAST, "--test_file", str(GOLD_TEST), "--audio_dir", str(GOLD_TEST.parent / "audio")]
    script_output("evaluate.py", [str(recipe), "--model_name_or_path", "models/first", *common], capsys)
    script_output("evaluate.py", [str(recipe), "--model_name_or_path", "models/second", *common], capsys)
    # The recipe's output_dir (outputs/tiny/slurp) holds one folder per evaluated model and split
    for name, model in (("models--first", first), ("models--second", second)):
        folder = tmp_path / "outputs/tiny/slurp/eval" / name / "test"
        assert json.loads((folder / "evaluation_run.json").read_text())["model"] == str(model.resolve())
        assert json.loads((folder / "metrics.json").read_text())["num_gold"] == 2
    assert default_evaluation_dir("out", "Qwen/Qwen2-Audio-7B-Instruct", "eval") == \
        Path("out/eval/Qwen--Qwen2-Audio-7B-Instruct/eval")


def test_a_run_started_over_on_another_process_count_leaves_no_shard_of_the_old_run(tmp_path, caplog):
    output_dir = tmp_path / "eval"
    run_a, run_b = {"model": "a"}, {"model": "b"}

    def shard_rows() -> dict[str, list[str]]:
        return {path.name: [row["raw_output"] for row in read_jsonl(path)]
                for path in sorted(output_dir.glob("raw_outputs*.jsonl"))}

    # Run A on 2 processes, interrupted: a shard per rank
    assert prepare_output_dir(output_dir, run_a, None, False, num_processes=2) is False
    for rank in range(2):
        write_jsonl(decoding.shard_file(output_dir, rank, 2), [{"id": f"item{rank}", "raw_output": "A"}])
    # Run B on 1 process with --overwrite: A's shards go too, not only this process's own file
    assert prepare_output_dir(output_dir, run_b, None, True, num_processes=1) is False
    assert shard_rows() == {}
    write_jsonl(decoding.shard_file(output_dir, 0, 1), [{"id": "item0", "raw_output": "B"}])
    # Run B again on 2 processes: another sharding of the items, so another run; never A's rows resumed
    with pytest.raises(EvaluationRunError, match="num_processes: 1 -> 2"):
        prepare_output_dir(output_dir, run_b, None, False, num_processes=2)
    assert shard_rows() == {"raw_outputs.jsonl": ["B"]}
    assert prepare_output_dir(output_dir, run_b, None, True, num_processes=2) is False
    assert shard_rows() == {}
    # The same run on the same process count resumes; --resume false removes every shard
    write_jsonl(decoding.shard_file(output_dir, 1, 2), [{"id": "item1", "raw_output": "B2"}])
    assert prepare_output_dir(output_dir, run_b, None, False, num_processes=2) is True
    assert prepare_output_dir(output_dir, run_b, False, False, num_processes=2) is False
    assert shard_rows() == {}


def test_a_folder_the_project_did_not_make_is_refused_and_left_as_it_was(tmp_path):
    users = tmp_path / "results"
    users.mkdir()
    (users / "metrics.json").write_text('{"mine": 1}')
    (users / "predictions.jsonl").write_text('{"id": "mine"}\n')
    (users / "raw_outputs.jsonl").write_text('{"id": "x", "raw_output": "mine"}\n')
    (users / "notes.txt").write_text("mine")
    before = {path.name: path.read_bytes() for path in users.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(EvaluationRunError) as refused:
            prepare_output_dir(users, {"model": "m"}, None, overwrite)
        message = str(refused.value)
        assert str(users) in message and "evaluation_run.json" in message
        assert "metrics.json" in message and "notes.txt" in message
        assert {path.name: path.read_bytes() for path in users.iterdir()} == before

    # An evaluation of a version before the run record (raw outputs, metrics, predictions, nothing else) is ours:
    # refused as another run, replaced with --overwrite true
    (users / "notes.txt").unlink()
    with pytest.raises(EvaluationRunError, match="no evaluation_run.json says which run wrote its 1 rows"):
        prepare_output_dir(users, {"model": "m"}, None, False)
    assert prepare_output_dir(users, {"model": "m"}, None, True) is False
    assert not (users / "raw_outputs.jsonl").exists()
    # A folder with a user's metrics and predictions but no raw outputs is not an evaluation's
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    with pytest.raises(EvaluationRunError, match="not empty"):
        prepare_output_dir(other, {"model": "m"}, None, True)
    assert [path.name for path in other.iterdir()] == ["metrics.json"]


def test_sampled_evaluation_interrupted_and_resumed_writes_what_an_uninterrupted_one_does(
    tiny_model, tmp_path, capsys, monkeypatch, generated_ids
):
    sampled = [TEXT_RECIPE, "--model_name_or_path", tiny_model, "--max_eval_samples", "4", "--do_sample", "true",
               "--temperature", "1.5", "--per_device_eval_batch_size", "2", "--max_new_tokens", "8"]
    whole = tmp_path / "whole"
    script_output("evaluate.py", [*sampled, "--output_dir", str(whole)], capsys)
    expected = read_jsonl(whole / "raw_outputs.jsonl")
    ids = [row["id"] for row in expected]

    counting = decoding.generate_batch

    def interrupt_after_one_batch(model, collator, examples, **kwargs):
        if generated_ids[len(ids):]:
            raise Interrupted
        return counting(model, collator, examples, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(decoding, "generate_batch", interrupt_after_one_batch)
    with pytest.raises(Interrupted):
        script_output("evaluate.py", [*sampled, "--output_dir", str(resumed)], capsys)
    assert [row["id"] for row in read_jsonl(resumed / "raw_outputs.jsonl")] == ids[:2]
    monkeypatch.setattr(decoding, "generate_batch", counting)
    script_output("evaluate.py", [*sampled, "--output_dir", str(resumed)], capsys)
    assert generated_ids[len(ids):] == ids  # the first batch once, then the rest
    rows = read_jsonl(resumed / "raw_outputs.jsonl")
    assert [row["raw_output"] for row in rows] == [row["raw_output"] for row in expected]
    assert len({row["raw_output"] for row in rows}) > 1  # sampled text, not one repeated greedy answer

    # Another seed draws other samples: another run, refused
    status, stderr = script_error("evaluate.py", [*sampled, "--output_dir", str(resumed), "--seed", "7"], capsys)
    assert status == 1 and "sample_seed: 42 -> 7" in stderr
    # Beam sampling cannot draw an item from its own seed: an error, before anything is written
    beams = tmp_path / "beams"
    status, stderr = script_error("evaluate.py", [*sampled, "--output_dir", str(beams), "--num_beams", "2"], capsys)
    assert status == 1 and "num_beams 2 (beam sampling)" in stderr and not beams.exists()


# ---------------------------------------------------------------- 4. batched left padding == one by one


@pytest.fixture(scope="module")
def load_tiny(tiny_model):
    """Model and processor of a tiny model by name, each loaded once for the module."""
    loaded = {}

    def load(name: str):
        if name not in loaded:
            model, processor, _ = load_model_and_processor(
                ModelArguments(model_name_or_path=str(ensure_tiny_model(name))), for_training=False)
            loaded[name] = model.eval(), processor
        return loaded[name]

    return load


# Qwen3-Omni's processor pads features to the batch's longest clip, and the Whisper features of a clip's last frames
# depend on what follows it (zero padding, or the STFT's reflection when alone): one by one, a row keeps the batch's
# features, so that the comparison is of the model's handling of left padding (M-RoPE positions included)
FEATURES_PADDED_TO_LONGEST = {"qwen3-omni-moe"}


def row_alone(batch: dict, row: int) -> dict:
    keep = batch["attention_mask"][row].bool()
    alone = {"input_ids": batch["input_ids"][row][keep][None], "attention_mask": batch["attention_mask"][row][keep][None]}
    for key in ("input_features", "feature_attention_mask"):
        if key in batch:
            alone[key] = batch[key][row:row + 1]
    return alone


@pytest.mark.parametrize("model_name, recipe", [("qwen2-audio", AUDIO_RECIPE), ("qwen2-audio", TEXT_RECIPE),
                                                ("qwen2.5-omni", AUDIO_RECIPE), ("qwen3-omni-moe", AUDIO_RECIPE),
                                                ("audio-flamingo3", AUDIO_RECIPE),
                                                # Voxtral: every SLURP prompt has the same length (each clip is
                                                # 375 tokens); MMAR's questions differ
                                                ("voxtral", "recipes/tiny/mmar_voxtral.yaml"), ("voxtral", TEXT_RECIPE)])
def test_batched_left_padded_greedy_generation_equals_one_by_one(load_tiny, model_name, recipe):
    model, processor = load_tiny(model_name)
    task_args = recipe_args(TaskArguments, recipe)
    eval_args = recipe_args(EvalArguments, recipe, max_new_tokens=12)
    _, examples = examples_of(recipe, 5)
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left",
                                 audio_options=audio_options(task_args))
    kwargs = generation_kwargs(eval_args, collator.tokenizer)

    batch = collator([example.to_row() for example in examples])
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 1, "the items must differ in length for padding to be exercised"
    assert bool((batch["attention_mask"][:, -1] == 1).all()), "prompts must be left-padded"

    # The scores of every greedy step, which catch what the decoded text of a tiny model may hide
    def greedy(inputs) -> tuple[torch.Tensor, list[int]]:
        with torch.no_grad():
            output = model.generate(**inputs, **kwargs, output_scores=True, return_dict_in_generate=True)
        return torch.stack(output.scores, dim=1), output.sequences[:, inputs["input_ids"].shape[1]:]

    batched, batched_tokens = greedy(batch)
    for row, example in enumerate(examples):
        one = row_alone(batch, row) if model_name in FEATURES_PADDED_TO_LONGEST else collator([example.to_row()])
        alone, alone_tokens = greedy(one)
        assert batched_tokens[row].tolist() == alone_tokens[0].tolist()
        assert batched[row].shape == alone[0].shape
        torch.testing.assert_close(batched[row], alone[0], atol=1e-4, rtol=0)

    # The code path evaluate.py uses decodes those tokens
    texts = generate_batch(model, collator, examples, **kwargs)
    assert texts == collator.tokenizer.batch_decode(batched_tokens, skip_special_tokens=True)
    if model_name not in FEATURES_PADDED_TO_LONGEST:
        assert texts == [generate_batch(model, collator, [example], **kwargs)[0] for example in examples]


# ---------------------------------------------------------------- 5. sharded across 2 CPU processes






def test_sharded_evaluation_on_two_cpu_processes_merges_every_item_once(audio_eval, tiny_model, tmp_path):
    output_dir = tmp_path / "eval"
    launched = run_command([*accelerate_command(), "launch", "--config_file", "accelerate_configs/cpu_ddp.yaml",
                            "--main_process_port", str(free_port()),
                            "scripts/evaluate.py", AUDIO_RECIPE, "--model_name_or_path", tiny_model,
                            "--output_dir", str(output_dir), "--max_eval_samples", "7", *FAST], timeout=400)
    _, examples = examples_of(AUDIO_RECIPE, 7)
    ids = [example.id for example in examples]

    # Two processes really ran, each on its own shard
    shards = sorted(path.name for path in output_dir.glob("raw_outputs.rank*.jsonl"))
    assert shards == ["raw_outputs.rank0-of-2.jsonl", "raw_outputs.rank1-of-2.jsonl"]
    assert [row["id"] for row in read_jsonl(output_dir / shards[0])] == ids[0::2]
    assert [row["id"] for row in read_jsonl(output_dir / shards[1])] == ids[1::2]

    raw = read_jsonl(output_dir / "raw_outputs.jsonl")
    assert [row["id"] for row in raw] == ids
    assert [row["file"] for row in read_jsonl(output_dir / "predictions.jsonl")] == ids
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (metrics["num_gold"], metrics["num_predicted"], metrics["num_missing"]) == (7, 7, 0)
    assert json_object_lines(launched.stdout) == [metrics]  # printed once, by the main process

    # Greedy outputs do not depend on the sharding
    single = {row["id"]: row["raw_output"] for row in read_jsonl(audio_eval[0] / "raw_outputs.jsonl")}
    assert {row["id"]: row["raw_output"] for row in raw if row["id"] in single} == single


def test_processes_that_do_not_join_one_group_fail_instead_of_each_evaluating_everything(tiny_model, tmp_path):
    # Without use_cpu on a machine without GPUs, the 2 processes would each run alone on the same output file
    output_dir = tmp_path / "eval"
    result = subprocess.run(
        [*accelerate_command(), "launch", "--config_file", "accelerate_configs/cpu_ddp.yaml",
         "--main_process_port", str(free_port()), "scripts/evaluate.py", AUDIO_RECIPE, "--use_cpu", "false",
         "--model_name_or_path", tiny_model, "--output_dir", str(output_dir), "--max_eval_samples", "4", *FAST],
        cwd=PROJECT_ROOT, env={**subprocess_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
        timeout=400,
    )
    assert result.returncode != 0
    assert "launched as 2 processes, but this one runs alone" in result.stderr
    assert not list(output_dir.glob("raw_outputs*.jsonl"))


# ---------------------------------------------------------------- 6. bad outputs, at the task and file level


def test_bad_model_outputs_are_counted_and_scored_as_wrong_not_dropped(tmp_path, capsys):
    task, examples = examples_of(AUDIO_RECIPE, 6)
    outputs = [
        examples[0].completion,  # right
        "not JSON at all",
        examples[2].completion[:-5],  # cut short
        '["a", "list"]',
        '{"scenario": 3, "action": "set"}',  # no string scenario
        '{"scenario": "x", "action": "y", "entities": "none"}',  # valid labels, entities not a list
    ]
    parsed = [task.parse(text) for text in outputs]  # never raises
    assert [prediction["valid"] for prediction in parsed] == [True, False, False, False, False, True]

    rows = [task.official_prediction(example, prediction) for example, prediction in zip(examples, parsed, strict=True)]
    predictions = tmp_path / "predictions.jsonl"
    write_jsonl(predictions, rows)
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, gold_rows_for([example.id for example in examples]))

    in_memory = task.score(examples, {row["file"]: row for row in rows})
    from_files = score_py(gold, predictions, capsys)
    assert_same_scores(from_files, in_memory)
    assert (from_files["num_gold"], from_files["num_predicted"], from_files["num_missing"]) == (6, 6, 0)
    assert from_files["scenario_accuracy"] == pytest.approx(1 / 6)
