"""Data and prediction files the tasks cannot use are one clear DataError naming the file and row, and scoring
counts what it leaves out: files that are not UTF-8, another task's gold file, repeated ids, mixed keys."""

import json
from pathlib import Path

import pandas as pd
import pytest

from audio_recipes.generation import read_finished
from audio_recipes.paths import ASSETS_DIR
from audio_recipes.tasks import DataError, get_task
from audio_recipes.tasks.base import read_jsonl
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
    from audio_recipes.prepare.speech_detection import folder_categories
    from audio_recipes.tasks.speech_detection import read_table

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
    ("mmar", "slurp", r"gold\.jsonl, item 0 \(id None\): lacks id, choices, answer \(a mmar item has id, choices, "
                      r"answer\)"),
    ("mmau", "slurp", r"gold\.jsonl, item 0 \(id None\): lacks id, choices, answer"),
    ("slurp", "mmar", r"gold\.jsonl, line 1 \(slurp_id None\): SLURP row lacks slurp_id, sentence, scenario, action, "
                      r"tokens, entities, recordings \(expected keys: slurp_id, "),
    ("speech_massive", "slurp", r"gold\.jsonl, row 0 \(id None\): Speech-MASSIVE row lacks id, locale, utt, "
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
