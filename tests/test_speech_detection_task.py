"""The speech_detection task: examples from the metadata table, answer parsing, scoring with bad outputs kept."""

import json

import pandas as pd
import pytest
from helpers import write_short_wav

from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.metrics.classification import INVALID
from audio_recipes.tasks import get_task
from audio_recipes.tasks.speech_detection import PREDICTION_COLUMNS, parse_answer


@pytest.mark.parametrize("text,label", [
    ("A", "SPEECH"), ("B", "NONSPEECH"), (" a.", "SPEECH"), ("(B) NONSPEECH", "NONSPEECH"), ("A: SPEECH", "SPEECH"),
    ("speech", "SPEECH"), ("Non-speech.", "NONSPEECH"), ("The clip is NONSPEECH", "NONSPEECH"),
    ("There is speech in it", "SPEECH"),
    ("", None), ("C", None), ("Absolutely", None), ("speech or non speech, hard to say", None), ("dog barking", None),
])
def test_parse_answer(text, label):
    assert parse_answer(text) == label


def write_table(tmp_path, rows, name="metadata.csv"):
    for row in rows:
        (tmp_path / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        write_short_wav(tmp_path / row["path"])  # load_examples checks each file's header
    path = tmp_path / name
    table = pd.DataFrame(rows)
    table.to_parquet(path) if name.endswith(".parquet") else table.to_csv(path, index=False)
    return path


def row(i, label="SPEECH", split="test", duration=200, snr=5.0):
    return {"segment_id": f"c{i}", "path": f"clips/c{i}.wav", "label": label, "duration_ms": duration, "snr_db": snr,
            "dataset": "d", "split": split, "condition": f"{duration}ms_{snr:g}dB"}


def task_for(path):
    return get_task("speech_detection", TaskArguments(task="speech_detection", train_file=str(path),
                                                       eval_file=str(path), test_file=str(path)))


@pytest.mark.parametrize("name", ["metadata.csv", "metadata.parquet"])
def test_examples_of_a_split_with_letter_targets(tmp_path, name):
    path = write_table(tmp_path, [row(0), row(1, "NONSPEECH"), row(2, split="train"), row(3, split="validation")], name)
    task = task_for(path)
    test = task.examples("test")
    assert [e.id for e in test] == ["c0", "c1"]
    assert [e.completion for e in test] == ["A", "B"]
    assert test[0].audio == str(tmp_path / "clips" / "c0.wav")
    assert "A. SPEECH" in test[0].prompt and "B. NONSPEECH" in test[0].prompt
    assert task.choices(test[0]) == ["A", "B"]
    assert [e.id for e in task.examples("train")] == ["c2"] and [e.id for e in task.examples("eval")] == ["c3"]


def test_data_errors_name_the_file_row_and_column(tmp_path):
    path = write_table(tmp_path, [row(0), row(1, "MUSIC")])
    with pytest.raises(DataError, match=r"metadata.csv, data row 2 \(segment_id c1\): label 'MUSIC'"):
        task_for(path).examples("test")
    pd.DataFrame([row(0)]).drop(columns=["snr_db"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks column.*snr_db"):
        task_for(path).examples("test")
    write_table(tmp_path, [row(0, split="train")])
    with pytest.raises(DataError, match=r"no rows with split 'test'.*\['train'\]"):
        task_for(path).examples("test")
    write_table(tmp_path, [row(0)])
    (tmp_path / "clips" / "c0.wav").unlink()
    with pytest.raises(DataError, match="1 of 1 audio files cannot be used: .*c0.wav: not found"):
        task_for(path).examples("test")


def test_invalid_and_missing_predictions_count_as_wrong(tmp_path):
    rows = [row(0), row(1), row(2, "NONSPEECH"), row(3, "NONSPEECH", duration=1000)]
    task = task_for(write_table(tmp_path, rows))
    examples = task.examples("test")
    outputs = {"c0": "A", "c1": "I cannot tell", "c2": "B"}  # c3 has no prediction at all
    predictions = {}
    for example in examples:
        if example.id in outputs:
            output = {"raw_output": outputs[example.id], "prediction": task.parse(outputs[example.id]),
                      "confidence": 0.8, "latency_ms": 5.0}
            predictions[example.id] = task.prediction_row(example, output)
    assert list(predictions["c1"]) == list(PREDICTION_COLUMNS)
    assert predictions["c1"]["pred_label"] == INVALID and predictions["c1"]["raw_output"] == "I cannot tell"
    metrics = task.score(examples, predictions)
    assert metrics["num_items"] == 4 and metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["num_invalid_outputs"] == 2 and metrics["num_missing"] == 1
    assert metrics["confusion_matrix"]["SPEECH"] == {"SPEECH": 1, "NONSPEECH": 0, INVALID: 1}
    assert metrics["by_duration_ms"]["1000"]["accuracy"] == 0.0
    assert metrics["by_duration_ms"]["200"]["accuracy"] == pytest.approx(2 / 3)
    assert metrics["by_snr_db"]["5"]["num_items"] == 4
    skipped = task.score(examples, predictions, skip_missing=True)
    assert skipped["num_items"] == 3
    json.dumps(metrics)  # metrics.json must be writable
