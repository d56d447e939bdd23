"""Data and prediction files the tasks cannot use are one clear DataError naming the file and row, and scoring
counts what it leaves out: files that are not UTF-8, another task's gold file, repeated ids, mixed keys."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_short_wav

from audio_recipes.config import TaskArguments
from audio_recipes.decoding import read_finished
from audio_recipes.errors import DataError
from audio_recipes.io import read_jsonl, write_atomic, write_text_atomic
from audio_recipes.paths import ASSETS_DIR
from audio_recipes.tasks import get_task
from audio_recipes.tasks.multiple_choice import read_rows

SLURP_GOLD = ASSETS_DIR / "slurp" / "test.jsonl"
CHOICES = ["Yes", "No"]
MMAR_ITEM = {"id": "q1", "audio_path": "a.wav", "question": "Speech?", "choices": CHOICES, "answer": "Yes",
             "modality": "speech", "category": "c", "sub-category": "s"}
MASSIVE_ROW = {"id": "1", "locale": "fr-FR", "utt": "réveille-moi", "annot_utt": "réveille-moi",
               "intent_str": "alarm_set", "path": "a.wav"}
TOKENS_ROW = {"id": "t1", "messages": [{"role": "user", "content": "Capital of France?"},
                                       {"role": "assistant", "content": "Paris.\n<|speech_start|><|s_1|><|speech_end|>"}]}
NOT_UTF8 = "café".encode("latin-1")  # é in Latin-1 is no UTF-8


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def with_latin1_line_3(path: Path, lines: list[str]) -> Path:
    """A file whose third line holds a Latin-1 byte."""
    path.write_bytes("\n".join(lines[:2]).encode() + b"\n" + lines[2].encode().replace(b"cafe", NOT_UTF8) + b"\n")
    return path


# ---------------------------------------------------------------- files that are not UTF-8


def test_a_json_lines_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = with_latin1_line_3(tmp_path / "test.jsonl", [json.dumps({"a": 1}), json.dumps({"b": 2}),
                                                        json.dumps({"c": "cafe"})])
    for read in (read_jsonl, read_rows):
        with pytest.raises(DataError, match=rf"{path}, line 3: not UTF-8 text \(byte 0xe9 at byte 11 of the line\)"):
            read(path)


def test_a_json_list_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = with_latin1_line_3(tmp_path / "mmau.json", ["[", json.dumps(MMAR_ITEM) + ",", json.dumps({"x": "cafe"}),
                                                       "]"])
    with pytest.raises(DataError, match=rf"{path}, line 3: not UTF-8"):
        read_rows(path)


def test_a_csv_table_that_is_not_utf8_names_the_file_and_line(tmp_path):
    from audio_recipes.tasks.speech_detection import read_table
    from audio_recipes.tasks.speech_detection.builder import folder_categories

    table = tmp_path / "esc50.csv"
    with_latin1_line_3(table, ["filename,category", "a.wav,dog", "b.wav,cafe"])
    with pytest.raises(DataError, match=rf"{table}, line 3: not UTF-8"):
        folder_categories(tmp_path)
    with pytest.raises(DataError, match=rf"{table}, line 3: not UTF-8"):
        read_table(table)


@pytest.mark.parametrize(("task", "gold_rows"), [("slurp", None), ("mmar", [MMAR_ITEM]),
                                                 ("speech_massive", [MASSIVE_ROW]), ("speech_tokens", [TOKENS_ROW])])
def test_gold_and_prediction_files_that_are_not_utf8_name_the_file(task, gold_rows, tmp_path):
    gold = SLURP_GOLD if gold_rows is None else write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    predictions = with_latin1_line_3(tmp_path / "predictions.jsonl", ['{"id": "1"}', '{"id": "2"}', '{"id": "cafe"}'])
    with pytest.raises(DataError, match=rf"{predictions}, line 3: not UTF-8"):
        get_task(task).score_files(gold, predictions)
    bad_gold = with_latin1_line_3(tmp_path / "bad_gold.jsonl", [gold.read_text().splitlines()[0], "", '{"x": "cafe"}'])
    with pytest.raises(DataError, match=rf"{bad_gold}, line 3: not UTF-8"):
        get_task(task).score_files(bad_gold, write_jsonl(tmp_path / "p.jsonl", [{"id": "1"}]))


def test_raw_outputs_cut_inside_a_character_drop_the_torn_line(tmp_path):
    path = tmp_path / "raw_outputs.jsonl"
    whole = json.dumps({"id": "a", "raw_output": "déjà"}, ensure_ascii=False) + "\n"
    torn = json.dumps({"id": "b", "raw_output": "déjà"}, ensure_ascii=False).encode()
    path.write_bytes(whole.encode() + torn[:torn.index("é".encode()) + 1])  # the write stopped inside "é"
    assert list(read_finished(path)) == ["a"]


# ---------------------------------------------------------------- another task's gold file


@pytest.mark.parametrize(("task", "gold_of", "message"), [
    ("mmar", "slurp", r"gold\.jsonl, line 1 \(id None\): lacks id, choices, answer \(a mmar item has id, choices, "
                      r"answer\)"),
    ("mmau", "slurp", r"gold\.jsonl, line 1 \(id None\): lacks id, choices, answer"),
    ("slurp", "mmar", r"gold\.jsonl, line 1 \(slurp_id None\): SLURP row lacks slurp_id, sentence, scenario, action, "
                      r"tokens, entities, recordings \(expected keys: slurp_id, "),
    ("speech_massive", "slurp", r"gold\.jsonl, line 1 \(id None\): Speech-MASSIVE row lacks id, locale, utt, "
                                r"annot_utt, intent_str \(expected keys: "),
    ("speech_tokens", "speech_tokens without id", r"gold\.jsonl, line 1: no 'id'"),
])
def test_another_tasks_gold_file_is_a_data_error_naming_file_row_and_fields(task, gold_of, message, tmp_path):
    rows = {"slurp": read_jsonl(SLURP_GOLD)[:2], "mmar": [MMAR_ITEM],
            "speech_tokens without id": [{key: value for key, value in TOKENS_ROW.items() if key != "id"}]}[gold_of]
    gold = write_jsonl(tmp_path / "gold.jsonl", rows)
    predictions = write_jsonl(tmp_path / "predictions.jsonl", [{"id": "q1", "answer_prediction": "Yes"}])
    with pytest.raises(DataError, match=message):
        get_task(task).score_files(gold, predictions)


def test_a_speech_detection_prediction_file_of_another_format_is_a_data_error(tmp_path):
    from audio_recipes.tasks.speech_detection import REQUIRED_COLUMNS

    gold = tmp_path / "metadata.csv"
    pd.DataFrame([dict.fromkeys(REQUIRED_COLUMNS, "x")]).to_csv(gold, index=False)
    not_parquet = write_jsonl(tmp_path / "predictions.parquet", [{"segment_id": "x"}])
    with pytest.raises(DataError, match=rf"{not_parquet}: not a readable parquet table"):
        get_task("speech_detection").score_files(gold, not_parquet)
    other_columns = tmp_path / "other.parquet"
    pd.DataFrame([{"segment_id": "x", "label": "SPEECH"}]).to_parquet(other_columns)
    with pytest.raises(DataError, match=rf"{other_columns}: lacks column\(s\) true_label, pred_label, "):
        get_task("speech_detection").score_files(gold, other_columns)


# ---------------------------------------------------------------- repeated ids, mixed keys, unknown ids


def slurp_rows_sharing_a_recording(folder: Path) -> Path:
    """Two SLURP test rows whose best recording is the same file, each with its own slurp_id."""
    first, second = read_jsonl(SLURP_GOLD)[:2]
    second = {**second, "recordings": first["recordings"]}
    for recording in first["recordings"]:
        write_short_wav(folder / "audio" / recording["file"])
    return write_jsonl(folder / "test.jsonl", [first, second])


def test_evaluation_data_with_a_repeated_id_is_an_error_naming_the_ids_and_the_file(tmp_path):
    path = slurp_rows_sharing_a_recording(tmp_path)
    args = TaskArguments(task="slurp", train_file=str(path), test_file=str(path), audio_dir=str(tmp_path / "audio"))
    first = read_jsonl(path)[0]
    shared = re.escape(min(first["recordings"], key=lambda recording: recording.get("wer", 0.0))["file"])
    # It was 2 outputs, 1 prediction and num_gold 1 with no word said
    with pytest.raises(DataError, match=rf"{path}: 1 item id\(s\) occur more than once \('{shared}' "
                                        r"\(2 items\)\); evaluation keys outputs and scores by id"):
        get_task("slurp", args).examples("test")
    assert len(get_task("slurp", args).examples("train")) == 2  # training rows may repeat
    text_path = write_jsonl(tmp_path / "text.jsonl", [read_jsonl(SLURP_GOLD)[0]] * 2)
    with pytest.raises(DataError, match=rf"\('{first['slurp_id']}' \(2 items\)\)"):
        get_task("slurp", TaskArguments(task="slurp", test_file=str(text_path), input_mode="text")).examples("test")
    mmar = write_jsonl(tmp_path / "mmar.jsonl", [MMAR_ITEM, MMAR_ITEM])
    with pytest.raises(DataError, match=r"\('q1' \(2 items\)\)"):
        get_task("mmar", TaskArguments(task="mmar", eval_file=str(mmar), input_mode="text")).examples("eval")


def slurp_prediction(row: dict, key: str = "file", scenario: str | None = None) -> dict:
    item_id = row["recordings"][0]["file"] if key == "file" else str(row["slurp_id"])  # the official key: a string
    return {key: item_id, "scenario": scenario or row["scenario"], "action": row["action"], "entities": []}


def test_slurp_repeated_prediction_rows_are_counted_and_the_last_one_scored(tmp_path):
    gold_rows = read_jsonl(SLURP_GOLD)[:2]
    gold = write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    rows = [slurp_prediction(gold_rows[0], scenario="wrong"), slurp_prediction(gold_rows[0]),
            slurp_prediction(gold_rows[1], key="file")]
    metrics = get_task("slurp").score_files(gold, write_jsonl(tmp_path / "predictions.jsonl", rows))
    assert metrics["num_duplicates"] == 1 and metrics["num_predicted"] == 2
    gold_recordings = len(gold_rows[0]["recordings"]) + len(gold_rows[1]["recordings"])
    assert metrics["scenario_accuracy"] == pytest.approx(2 / gold_recordings)  # the last row of the repeated id
    by_sentence = [slurp_prediction(row, key="slurp_id") for row in (*gold_rows, gold_rows[1])]
    metrics = get_task("slurp").score_files(gold, write_jsonl(tmp_path / "by_sentence.jsonl", by_sentence))
    assert metrics["num_duplicates"] == 1 and metrics["scenario_accuracy"] == 1.0


def test_slurp_predictions_mixing_file_and_slurp_id_keys_are_an_error_naming_both(tmp_path):
    gold_rows = read_jsonl(SLURP_GOLD)[:2]
    gold = write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    mixed = write_jsonl(tmp_path / "predictions.jsonl", [slurp_prediction(gold_rows[0], key="slurp_id"),
                                                         slurp_prediction(gold_rows[1], key="file")])
    # It scored every row keyed by slurp_id as missing
    first_file, first_id = re.escape(gold_rows[1]["recordings"][0]["file"]), gold_rows[0]["slurp_id"]
    with pytest.raises(DataError, match=rf"{mixed}: prediction rows mix keys: 1 keyed by 'file' \(first: "
                                        rf"'{first_file}'\), 1 by 'slurp_id' alone \(first: '{first_id}'\)"):
        get_task("slurp").score_files(gold, mixed)


@pytest.mark.parametrize("task", ["mmar", "mmau"])
def test_choice_predictions_count_repeated_rows_and_unknown_ids(task, tmp_path):
    field = {"mmar": "answer_prediction", "mmau": "model_output"}[task]
    items = [MMAR_ITEM, {**MMAR_ITEM, "id": "q2", "answer": "No"}]
    gold = write_jsonl(tmp_path / "gold.jsonl", items)
    rows = [{"id": "q1", field: "No"}, {"id": "q1", field: "Yes"}, {"id": "q2", field: "No"},
            {"id": "not-in-gold", field: "Yes"}]
    metrics = get_task(task).score_files(gold, write_jsonl(tmp_path / "predictions.jsonl", rows))
    assert metrics["num_duplicates"] == 1 and metrics["num_unmatched_predictions"] == 1
    # One figure per gold item, the repeated id's last row scored
    assert metrics["accuracy"] == 1.0 and metrics["num_gold"] == 2 and metrics["num_missing"] == 0
    # The official scripts score every row, the repeated one twice; the unknown id has no answer to score against
    assert metrics["accuracy_official"] == pytest.approx(2 / 3) and metrics["num_scored_official"] == 3


@pytest.mark.parametrize(("task", "row"), [("speech_massive", MASSIVE_ROW), ("speech_tokens", TOKENS_ROW)])
def test_other_scorers_count_repeated_prediction_rows(task, row, tmp_path):
    gold = write_jsonl(tmp_path / "gold.jsonl", [row])
    prediction = {"id": row["id"], "scenario": "alarm", "action": "set", "entities": [], "text": "Paris.",
                  "speech_tokens": [1], "valid": True}
    metrics = get_task(task).score_files(gold, write_jsonl(tmp_path / "predictions.jsonl", [prediction] * 3))
    assert metrics["num_duplicates"] == 2


def test_atomic_writes_leave_a_users_tmp_file_alone_and_clean_up_after_a_failure(tmp_path):
    target, users_file = tmp_path / "report.md", tmp_path / "report.md.tmp"
    users_file.write_text("the user's own notes", encoding="utf-8")
    write_text_atomic(target, "first")
    assert users_file.read_text(encoding="utf-8") == "the user's own notes"

    def fails_half_way(tmp):
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, fails_half_way)
    assert target.read_text(encoding="utf-8") == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.md", "report.md.tmp"]


RATIONALE_ROW = {"filename": "a.flac", "candidates": ["wake me at five"],
                 "final": {"scenario": "alarm", "action": "set", "entities": [{"time": "five"}]}}


@pytest.mark.parametrize(("task", "row", "key"), [
    ("mmar", MMAR_ITEM, "id"), ("mmau", MMAR_ITEM, "id"), ("speech_massive", MASSIVE_ROW, "id"),
    ("slurp_rationale", RATIONALE_ROW, "filename"),
])
def test_a_gold_file_repeating_an_id_is_an_error_naming_both_lines_and_the_id(task, row, key, tmp_path):
    # Scores are keyed by id: the later row would replace the earlier one (or count twice) without a word
    other = {**row, key: "other"}
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join([json.dumps(row), json.dumps(other), "", json.dumps(row)]) + "\n")
    predictions = write_jsonl(tmp_path / "predictions.jsonl", [{key: row[key]}])
    with pytest.raises(DataError, match=rf"{gold}: line 1 and line 4 have the same {key} '{row[key]}'"):
        get_task(task).score_files(gold, predictions)
    gold.write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")
    assert get_task(task).score_files(gold, predictions)["num_gold"] == 2
