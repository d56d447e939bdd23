"""MMAR / MMAU: the official figure beside the strict one, the extraction's hard cases, MMAU's list categories,
releases and withheld answers; on the real metadata and on files the tests write."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audio_recipes.config import TaskArguments
from audio_recipes.metrics.choice import extract_choice, word_tokens
from audio_recipes.pipelines.evaluate import score_outputs
from audio_recipes.tasks import get_task
from audio_recipes.tasks.multiple_choice import read_rows

ROOT = Path(__file__).resolve().parents[1]
NO_CHOICE = "zzzz"  # a word of no MMAR or MMAU choice: wrong under the word rule whatever the item


def mmar_items(shared_data):
    return read_rows(shared_data / "mmar/MMAR-meta.jsonl")


def mmau_items(shared_data):
    return read_rows(shared_data / "mmau/mmau-test-mini.json")


def score_py(task, gold, predictions, *extra):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/score.py"), task, "--gold", str(gold),
                             "--predictions", str(predictions), *extra], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def score_file(task, gold, predictions, skip_missing=False):
    """What score.py computes, in this process (score.py itself costs an import of the training stack)."""
    return get_task(task).score_files(gold, predictions, skip_missing=skip_missing)


def mixed_rows(items, key):
    """66 rows without the key, 124 empty or blank outputs, 440 right, 370 wrong: 1000 rows, one per item."""
    rows = []
    for number, item in enumerate(items):
        row = {**item}
        if number >= 66:
            row[key] = ("" if number % 2 else " \n\t") if number < 190 else item["answer"] if number < 630 else NO_CHOICE
        rows.append(row)
    return rows


# ---------------------------------------------------------------- 1. strict and official figures


@pytest.mark.parametrize(("task", "key"), [("mmar", "answer_prediction"), ("mmau", "model_output")])
def test_missing_keys_and_empty_outputs_give_the_strict_and_the_official_figure(task, key, shared_data, tmp_path):
    gold = shared_data / {"mmar": "mmar/MMAR-meta.jsonl", "mmau": "mmau/mmau-test-mini.json"}[task]
    rows = mixed_rows(read_rows(gold), key)
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(rows))
    metrics = score_file(task, gold, predictions)
    assert metrics["accuracy"] == pytest.approx(440 / 1000)  # every gold item: missing and empty wrong
    assert metrics["accuracy_official"] == pytest.approx(440 / 934)  # the scripts skip the 66 rows without the key
    assert (metrics["num_missing"], metrics["num_empty"], metrics["num_scored_official"]) == (66, 124, 934)
    # It was 440/810 with --skip_missing (missing and empty both dropped): now only the missing leave
    assert score_file(task, gold, predictions, skip_missing=True)["accuracy"] == pytest.approx(440 / 934)

    # Repeated rows: the scripts score each row; the strict figure each gold item once (its last row)
    predictions.write_text(json.dumps(rows + rows[300:310] + [{**rows[700], key: rows[700]["answer"]}]))
    metrics = score_file(task, gold, predictions)
    assert metrics["num_duplicates"] == 11
    assert metrics["accuracy_official"] == pytest.approx(451 / 945)
    assert metrics["accuracy"] == pytest.approx(441 / 1000)
    if task == "mmar":  # score.py's last line and its --output file carry both figures
        assert score_py(task, gold, predictions, "--output", str(tmp_path / "metrics.json")) == metrics
        assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_the_official_breakdowns_are_reported_beside_ours(shared_data, tmp_path):
    items = mmar_items(shared_data)
    rows = [{**item, "answer_prediction": item["answer"] if item["modality"] == "speech" else NO_CHOICE}
            for item in items]
    metrics = get_task("mmar").score_rows(items, rows, hidden=False, skip_missing=False)
    speech = sum(item["modality"] == "speech" for item in items)
    assert metrics["accuracy"] == metrics["accuracy_official"] == pytest.approx(speech / 1000)
    assert metrics["accuracy_official[modality=speech]"] == metrics["accuracy[modality=speech]"] == 1.0
    assert metrics["accuracy_official[modality=sound]"] == 0.0
    assert {key for key in metrics if key.startswith("accuracy_official[category=")} == {
        f"accuracy_official[category={layer} Layer]" for layer in ("Signal", "Perception", "Semantic", "Cultural")}


def test_a_prediction_that_is_not_a_string_is_wrong_and_counted(shared_data):
    items = mmar_items(shared_data)[:3]
    rows = [{"id": items[0]["id"], "answer_prediction": None}, {"id": items[1]["id"], "answer_prediction": 3},
            {"id": items[2]["id"], "answer_prediction": items[2]["answer"]}]
    metrics = get_task("mmar").score_rows(items, rows, hidden=False, skip_missing=False)
    assert metrics["num_not_text"] == 2  # the scripts stop on these (None.lower())
    assert metrics["accuracy"] == metrics["accuracy_official"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- 2. the raw output in the file, and extraction


def item_by_id(items, item_id):
    return next(item for item in items if item["id"] == item_id)


def test_choice_text_naming_one_choice_exactly_wins_over_a_letter(shared_data):
    # MMAR: two choices share the words of "From far to near"; the text names one of them exactly
    item = item_by_id(mmar_items(shared_data), "BV1pr421M7A6_00-00-06_00-00-10")
    assert item["choices"] == ["Circling around", "In a fixed position", "From far to near", "From near to far"]
    for output in ("<answer>(A) From far to near</answer>", "(D) From far to near.", "From far to near",
                   "<answer>(C) From far to near</answer>"):
        assert extract_choice(output, item["choices"]) == 2, output
    assert extract_choice("(A) From near to far", item["choices"]) == 3
    assert extract_choice("(A)", item["choices"]) == 0


def test_an_empty_choice_never_captures_a_bare_letter(shared_data):
    # MMAR has four items with a '' choice: a bare letter was read as that choice (its words: none of the others')
    items = [item for item in mmar_items(shared_data) if "" in item["choices"]]
    assert len(items) == 4
    for item in items:
        for index in range(len(item["choices"])):
            letter = "ABCDE"[index]
            for output in (f"<answer>({letter})</answer>", f"{letter}", f"The answer is {letter}."):
                assert extract_choice(output, item["choices"]) == index, (item["id"], output)
        assert extract_choice("I do not know", item["choices"]) is None


def test_a_letter_answer_against_a_choice_that_is_a_single_capital(shared_data):
    item = item_by_id(mmau_items(shared_data), "6976d332-711d-45ca-aba5-c5c5109220c9")
    assert item["choices"] == ["C", "Gm", "Cm7b5", "Eb/G"] and item["answer"] == "Cm7b5"
    assert extract_choice("<answer>(C)</answer>", item["choices"]) == 2  # the letter, not the choice "C"
    assert extract_choice("C", item["choices"]) == 2
    assert extract_choice("<answer>(C) Cm7b5</answer>", item["choices"]) == 2
    assert extract_choice("<answer>(A) C</answer>", item["choices"]) == 0
    assert extract_choice("(C) C", item["choices"]) == 0  # the text names choice "C" exactly


def test_repeated_choice_texts_are_one_choice(shared_data):
    # MMAU repeats a choice's text on some items: naming it names one answer
    item = item_by_id(mmau_items(shared_data), "16964657-d35e-426a-8c3e-6aac228a2577")
    assert item["choices"] == ["thirteen", "twenty", "thirteen", "five"]
    assert item["choices"][extract_choice("thirteen", item["choices"])] == "thirteen"
    assert extract_choice("(C) thirteen", item["choices"]) == 2


@pytest.mark.parametrize("task_name", ["mmar", "mmau"])
def test_evaluation_writes_the_raw_output_where_the_official_script_reads_it(task_name, shared_data, tmp_path):
    gold = shared_data / {"mmar": "mmar/MMAR-meta.jsonl", "mmau": "mmau/mmau-test-mini.json"}[task_name]
    task = get_task(task_name, TaskArguments(task=task_name, test_file=str(gold), input_mode="text"))
    examples = task.examples("test")[:4]
    items = [json.loads(example.reference) for example in examples]
    letters = ["ABCDE"[item["choices"].index(item["answer"])] for item in items]
    other = next(choice for choice in items[2]["choices"] if word_tokens(choice) - word_tokens(items[2]["answer"]))
    outputs = [f"<answer>({letters[0]}) {items[0]['answer']}</answer>", f"<answer>({letters[1]})</answer>",
               f"<think>Is it {other}? No.</think>{items[2]['answer']}", ""]
    rows = [{"id": example.id, "raw_output": text, "prediction": task.parse_for_item(example, text)}
            for example, text in zip(examples, outputs, strict=True)]
    path = tmp_path / task.predictions_file
    official, metrics = score_outputs(task, examples, rows, path)
    written = json.loads(path.read_text()) if path.suffix == ".json" else read_rows(path)  # MMAU: a JSON list
    key = task.prediction_field
    assert [row[key] for row in written] == outputs
    assert [row["extracted_choice"] for row in written] == [*(item["answer"] for item in items[:3]), None]
    assert all(row["answer"] == item["answer"] and row["choices"] == item["choices"]
               for row, item in zip(written, items, strict=True))
    # Official rule on the raw outputs: the first (its words: the answer's, plus "answer" and the letter) is right;
    # the letter alone names no choice's words, the third's thinking names a wrong choice, the last is empty
    assert metrics["accuracy_official"] == metrics["accuracy"] == pytest.approx(1 / 4)
    assert metrics["accuracy_extracted"] == pytest.approx(3 / 4)
    assert score_file(task_name, gold, path)["accuracy_official"] == pytest.approx(1 / 4)


# ---------------------------------------------------------------- 3. MMAU: list categories, releases, the test set


def test_mmau_list_categories_are_grouped_under_their_names(shared_data):
    items = mmau_items(shared_data)
    listed = [item for item in items if isinstance(item["category"], list)]
    assert len(listed) == 13 and all(item["category"] == ["Reasoning"] for item in listed)
    rows = [{**item, "model_output": item["answer"] if isinstance(item["category"], list) else NO_CHOICE}
            for item in items]
    metrics = get_task("mmau").score_rows(items, rows, hidden=False, skip_missing=False)
    categories = {key for key in metrics if key.startswith("accuracy[category=")}
    assert categories == {"accuracy[category=Reasoning]", "accuracy[category=Information Extraction]"}
    reasoning = sum(item["category"] in ("Reasoning", ["Reasoning"]) for item in items)
    assert reasoning == 677 and metrics["accuracy[category=Reasoning]"] == pytest.approx(13 / 677)


def test_rows_of_another_mmau_release_are_scored_against_their_own_answers_and_counted(shared_data, tmp_path):
    """The official script reads the answer and choices from each row: a file made on the other release (here:
    20 rows whose answer is another of their choices, as the v05.15.25 revision changed 209 test-mini answers) is
    scored against its own answers; the strict figure against the gold file given."""
    items = mmau_items(shared_data)
    rows = []
    for number, item in enumerate(items):
        row = {**item, "model_output": item["answer"]}
        if number < 20:
            row["answer"] = next(choice for choice in item["choices"] if choice != item["answer"])
            row["model_output"] = row["answer"]
        rows.append(row)
    predictions = tmp_path / "other_release.json"
    predictions.write_text(json.dumps(rows))
    metrics = score_file("mmau", shared_data / "mmau/mmau-test-mini.json", predictions)
    assert metrics["num_metadata_differs"] == 20
    assert metrics["accuracy_official"] == 1.0  # every row right by its own answer
    wrong = sum(not get_task("mmau").score_rows([item], [row], False, False)["accuracy"]
                for item, row in zip(items[:20], rows[:20], strict=True))
    assert metrics["accuracy"] == pytest.approx((1000 - wrong) / 1000) and wrong >= 15
    # Scored against a gold file that is that release, the two figures agree again
    release = tmp_path / "release.json"
    release.write_text(json.dumps([{key: value for key, value in row.items() if key != "model_output"}
                                   for row in rows]))
    again = score_file("mmau", release, predictions)
    assert again["accuracy"] == again["accuracy_official"] == 1.0 and again["num_metadata_differs"] == 0


def test_mmau_test_set_with_withheld_answers_is_written_as_a_submission(shared_data, tmp_path):
    hidden = [{key: value for key, value in item.items() if key != "answer"} for item in mmau_items(shared_data)[:5]]
    gold = tmp_path / "mmau-test.json"
    gold.write_text(json.dumps(hidden))
    task = get_task("mmau", TaskArguments(task="mmau", test_file=str(gold), input_mode="text"))
    examples = task.examples("test")
    assert [example.completion for example in examples] == [""] * 5
    outputs = ["<answer>(A) x</answer>", "B", "", "C", "D"]
    rows = [{"id": example.id, "raw_output": text, "prediction": task.parse_for_item(example, text)}
            for example, text in zip(examples, outputs, strict=True)]
    path = tmp_path / "predictions.json"
    _, metrics = score_outputs(task, examples, rows, path)
    assert metrics["answers_withheld"] is True and "accuracy" not in metrics
    assert (metrics["num_predicted"], metrics["num_empty"], metrics["num_missing"]) == (5, 1, 0)
    submission = json.loads(path.read_text())
    for row, item, text in zip(submission, hidden, outputs, strict=True):
        # The test file's row with the output under the script's key and the README's
        assert row["model_output"] == row["model_prediction"] == text and "answer" not in row
        assert {key: row[key] for key in item} == item
    assert score_file("mmau", gold, path)["answers_withheld"] is True
    with pytest.raises(Exception, match="no item has an answer"):
        get_task("mmau", TaskArguments(task="mmau", train_file=str(gold), input_mode="text")).examples("train")
