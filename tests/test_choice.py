"""Multiple-choice extraction and the MMAR / MMAU matching rule, on hand cases and the real metadata."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import call_with_timeout

from audio_recipes.config import TaskArguments
from audio_recipes.metrics.choice import extract_choice, score_choice_rows, string_match, strip_thinking
from audio_recipes.tasks import get_task
from audio_recipes.tasks.multiple_choice import SYSTEM_PROMPT, choice_prompt, choice_target, read_rows

ROOT = Path(__file__).resolve().parents[1]
CHOICES = ["Mountain Canyon", "Dense Forest", "Open Grassland", "City Streets"]


@pytest.mark.parametrize(("prediction", "expected"), [
    ("Open Grassland", True),
    ("It is open grassland.", True),
    ("open", False),  # not every answer token
    ("Open Grassland or Dense Forest", False),  # a token only a wrong choice has
    ("", False),
    ("C", False),  # the rule matches words, not letters: evaluate.py writes the choice's text
])
def test_string_match_rule(prediction, expected):
    assert string_match("Open Grassland", prediction, CHOICES) is expected


def test_string_match_ignores_words_shared_with_the_answer():
    choices = ["A man speaking", "A woman speaking"]
    assert string_match("A man speaking", "a man is speaking", choices)
    assert not string_match("A man speaking", "a woman speaking", choices)


@pytest.mark.parametrize(("text", "expected"), [
    ("<answer>(C) Open Grassland</answer>", 2),
    ("<think>Maybe (A)... no.</think><answer>C</answer>", 2),
    ("reasoning about (A) first</think>\nThe answer is (B).", 1),
    ("B. Dense Forest", 1),
    ("(A) Dense Forest", 1),  # the text of a choice wins over a letter that disagrees
    ("(A) something else", 0),
    ("A dense forest, surely", 1),
    ("Answer: D", 3),
    ("dense forest", 1),
    ("Because of the echo, it must be a canyon.", None),  # "Because" is no letter, and "canyon" alone is not enough
    ("(F)", None),  # no sixth choice
    ("I cannot tell.", None),
    ("", None),
])
def test_extract_choice(text, expected):
    assert extract_choice(text, CHOICES) == expected


def test_strip_thinking():
    assert strip_thinking("<think>a</think> b <think>c</think>d") == "b d"
    assert strip_thinking("hidden</think>shown") == "shown"


ONE_MEGABYTE = 1_000_000


def repeated(unit: str, size: int = ONE_MEGABYTE) -> str:
    return unit * (size // len(unit))


@pytest.mark.parametrize(("output", "expected"), [
    (repeated("<think>"), None),
    (repeated("<answer>"), None),
    (repeated("<think><answer>"), None),  # nested, none closed
    (repeated("</think><think>"), None),
    (repeated("<answer>(B"), None),
    ("The answer" + " " * ONE_MEGABYTE + "!", None),
    (repeated("<think>") + "</think><answer>(B) Dense Forest</answer>", 1),
    ("<answer>" + repeated("<answer>") + "(C) Open Grassland</answer>", 2),
], ids=["think", "answer", "think-answer", "close-open", "answer-letter", "spaces", "closed-think", "closed-answer"])
def test_answer_extraction_is_linear_on_one_megabyte_adversarial_outputs(output, expected):
    # The regexes were quadratic there (<think> x 32,000: 248 s); 10 s is far beyond a linear pass over 1 MB
    assert call_with_timeout(extract_choice, output, CHOICES, timeout=10) == expected


def test_tag_spans_are_the_lazy_regexs():
    import random
    import re

    from audio_recipes.output_tags import last_tagged, remove_tagged

    thinking = re.compile(r"<think>.*?</think>", flags=re.DOTALL | re.IGNORECASE)
    answer = re.compile(r"<answer>(.*?)</answer>", flags=re.DOTALL | re.IGNORECASE)
    parts = ["<think>", "</think>", "<THINK>", "</Think>", "<answer>", "</answer>", "<Answer>", "a", " ", "\n"]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))
        assert remove_tagged(text, "think") == thinking.sub("", text), text
        found = answer.findall(text)
        assert last_tagged(text, "answer") == (found[-1] if found else None), text


def test_score_choice_rows_counts_missing_and_empty_as_wrong_and_skip_missing_leaves_out_only_missing():
    items = [
        {"id": "1", "answer": "Yes", "choices": ["Yes", "No"], "modality": "speech"},
        {"id": "2", "answer": "No", "choices": ["Yes", "No"], "modality": "speech"},
        {"id": "3", "answer": "Dense Forest", "choices": CHOICES, "modality": "music"},
        {"id": "4", "answer": "Open Grassland", "choices": CHOICES, "modality": "music"},
        {"id": "5", "answer": "Open Grassland", "choices": CHOICES, "modality": "music"},
    ]
    rows = [{"id": "1", "out": "Yes"}, {"id": "2", "out": "Yes"}, {"id": "3", "out": "Dense Forest"},
            {"id": "4", "out": "  "}, {"id": "5"}]
    score = functools.partial(score_choice_rows, prediction_key="out", group_fields=("modality",),
                              official_group_fields=("modality",))
    metrics = score(items, rows)
    assert metrics["accuracy"] == pytest.approx(2 / 5) and metrics["num_scored"] == 5
    assert (metrics["num_missing"], metrics["num_empty"]) == (1, 1)
    assert metrics["accuracy[modality=speech]"] == 0.5 and metrics["accuracy[modality=music]"] == pytest.approx(1 / 3)
    # The official rule: the row without the key is skipped, the empty one is wrong
    assert metrics["accuracy_official"] == pytest.approx(2 / 4) and metrics["num_scored_official"] == 4
    assert metrics["accuracy_official[modality=music]"] == 0.5
    skipped = score(items, rows, skip_missing=True)
    assert skipped["accuracy"] == pytest.approx(2 / 4) and skipped["accuracy[modality=music]"] == 0.5


def test_mmar_prompts_never_carry_reasoning_annotations(shared_data):
    task = get_task("mmar", TaskArguments(task="mmar", test_file=str(shared_data / "mmar/MMAR-meta.jsonl"),
                                          input_mode="text"))
    examples = task.examples("test")
    items = [json.loads(line) for line in (shared_data / "mmar/MMAR-meta.jsonl").open()]
    assert len(examples) == len(items) == 1000
    for example, item in zip(examples, items, strict=True):
        # Built from the question and choices alone, with the fixed system prompt and instruction
        assert example.system == SYSTEM_PROMPT
        assert example.prompt == choice_prompt(item["question"], item["choices"])
        assert example.completion == choice_target(item["choices"], item["answer"])
        if item["thinking"] not in item["question"] + " ".join(item["choices"]):
            assert item["thinking"] not in example.prompt + example.completion
        assert not {"thinking", "cue", "rubric"} & set(json.loads(example.reference))
        assert item["question"] in example.prompt and all(c in example.prompt for c in item["choices"])
        assert extract_choice(example.completion, item["choices"]) == item["choices"].index(item["answer"])


def test_the_prediction_file_holds_the_raw_output_under_the_official_key_and_our_extraction_beside_it(shared_data):
    task = get_task("mmau", TaskArguments(task="mmau", test_file=str(shared_data / "mmau/mmau-test-mini.json"),
                                          input_mode="text"))
    examples = task.examples("test")[:3]
    items = [json.loads(e.reference) for e in examples]
    letter = "ABCD"[items[0]["choices"].index(items[0]["answer"])]
    outputs = [f"<answer>{letter}</answer>", "no idea", ""]
    rows = {e.id: task.prediction_row(e, {"raw_output": o, "prediction": task.parse(o)})
            for e, o in zip(examples, outputs, strict=True)}
    first = rows[examples[0].id]
    assert first["model_output"] == outputs[0] and first["extracted_choice"] == items[0]["answer"]
    assert {key: first[key] for key in items[0]} == items[0]  # the benchmark file's row, as its script reads it
    assert rows[examples[1].id]["extracted_choice"] is None
    metrics = task.score(examples, rows)
    # The official rule on the raw outputs: a letter alone names no choice's words
    assert metrics["accuracy"] == metrics["accuracy_official"] == 0.0 and metrics["num_empty"] == 1
    assert metrics["accuracy_extracted"] == pytest.approx(1 / 3)


# What the untrained tiny Qwen2-Audio answered on the tiny MMAR items (evaluate.py --max_new_tokens 16)
UNTRAINED_OUTPUTS = [
    "Udateio Sure Sorry\u0645 that Bebreokenem not_ m Sorry\u0645",
    "kable date\ufffd\ufffd n GoodRreakfast\ufffdrink Neighbester\ufffd[OW",
]


@pytest.mark.parametrize("task_name", ["mmar", "mmau"])
def test_an_output_that_names_no_choice_is_invalid_counted_and_wrong(task_name, tmp_path):
    from audio_recipes.pipelines.evaluate import score_outputs
    from audio_recipes.tasks import Example

    task = get_task(task_name)
    item = {"id": "x", "question": "Where?", "choices": CHOICES, "answer": "Dense Forest"}
    outputs = [*UNTRAINED_OUTPUTS, "<answer>(B) Dense Forest</answer>", "B", "<think>(A)?</think>It is dense forest.",
               "<answer>(C) Open Grassland</answer>", "<answer></answer>"]
    examples = [Example(str(number), None, "", "", "", json.dumps({**item, "id": str(number)}))
                for number in range(len(outputs))]
    rows = [{"id": example.id, "raw_output": text, "prediction": task.parse_for_item(example, text)}
            for example, text in zip(examples, outputs, strict=True)]
    assert [row["prediction"]["valid"] for row in rows] == [False, False, True, True, True, True, False]
    official, metrics = score_outputs(task, examples, rows, tmp_path / "predictions.jsonl")
    assert metrics["num_invalid_outputs"] == 3
    assert metrics["accuracy_extracted"] == pytest.approx(3 / 7)  # the three valid right answers; the rest are wrong
    # The official rule on the raw outputs: "B" alone names no choice's words
    assert metrics["accuracy"] == metrics["accuracy_official"] == pytest.approx(2 / 7)


def test_score_script_mmar_and_mmau(shared_data, tmp_path):
    items = [json.loads(line) for line in (shared_data / "mmar/MMAR-meta.jsonl").open()]
    # Right on the first 10, wrong on the next 10, nothing for the rest (as a JSON list, like MMAR's script)
    predictions = [{"id": i["id"], "answer_prediction": i["answer"]} for i in items[:10]]
    predictions += [{"id": i["id"], "answer_prediction": next(c for c in i["choices"] if c != i["answer"])}
                    for i in items[10:20]]
    path = tmp_path / "mmar.json"
    path.write_text(json.dumps(predictions))

    def score(task, gold, *extra):
        result = subprocess.run([sys.executable, str(ROOT / "scripts/score.py"), task, "--gold", str(gold),
                                 "--predictions", str(path), *extra], capture_output=True, text=True, check=True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    metrics = score("mmar", shared_data / "mmar/MMAR-meta.jsonl")
    assert metrics["accuracy"] == pytest.approx(10 / 1000) and metrics["num_missing"] == 980
    assert metrics["accuracy_official"] == 0.5 and metrics["num_scored_official"] == 20
    assert "accuracy[modality=speech]" in metrics and "accuracy[sub-category=Music Theory]" in metrics
    assert score("mmar", shared_data / "mmar/MMAR-meta.jsonl", "--skip_missing")["accuracy"] == 0.5

    mmau = json.loads((shared_data / "mmau/mmau-test-mini.json").read_text())
    path.write_text("".join(json.dumps({"id": i["id"], "model_output": i["answer"]}) + "\n" for i in mmau[:40]))
    metrics = score("mmau", shared_data / "mmau/mmau-test-mini.json")
    assert metrics["accuracy"] == pytest.approx(40 / 1000) and metrics["num_missing"] == 960
    assert any(key.startswith("accuracy[difficulty=") for key in metrics)


GOOD_ITEM = {"id": "ok", "audio_path": "a.wav", "question": "q", "choices": ["a", "b"], "answer": "a"}
BAD_ITEM = {"id": "x", "audio_path": "a.wav", "question": "q", "choices": ["a", "b"], "answer": "c"}


@pytest.mark.parametrize(("name", "text", "position"), [
    # Counted from 1 as the builders count: a JSON-lines row by its line (blank lines counted), a list's by its item
    ("meta.jsonl", json.dumps(GOOD_ITEM) + "\n\n" + json.dumps(BAD_ITEM) + "\n", "line 3"),
    ("meta.json", json.dumps([GOOD_ITEM, BAD_ITEM]), "item 2"),
])
def test_answer_not_among_choices_is_a_data_error_naming_the_line_or_item(name, text, position, tmp_path):
    from audio_recipes.errors import DataError

    path = tmp_path / name
    path.write_text(text)
    message = rf"{name}, {position} \(id x\): answer 'c' is not one of its choices"
    with pytest.raises(DataError, match=message):
        get_task("mmar", TaskArguments(task="mmar", test_file=str(path), input_mode="text")).examples("test")
    with pytest.raises(DataError, match=message):
        get_task("mmar").score_files(path, path)


@pytest.mark.parametrize("task", ["mmar", "mmau"])
def test_tiny_recipe_evaluates_into_the_benchmark_format(task, tmp_path):
    from audio_recipes.testing.tiny_models import ensure_tiny_model

    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/evaluate.py"), str(ROOT / f"recipes/tiny/{task}.yaml"),
         "--model_name_or_path", "tiny-models/qwen2-audio", "--max_eval_samples", "4", "--max_new_tokens", "8",
         "--output_dir", str(output)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    predictions = output / {"mmar": "predictions.jsonl", "mmau": "predictions.json"}[task]
    rows = read_rows(predictions)
    field = {"mmar": "answer_prediction", "mmau": "model_output"}[task]
    gold = ROOT / "data/tiny/audio_choice" / {"mmar": "mmar_test.jsonl", "mmau": "mmau_test.json"}[task]
    items = {str(item["id"]): item for item in read_rows(gold)}
    raw = {row["id"]: row for row in map(json.loads, (output / "raw_outputs.jsonl").read_text().splitlines())}
    assert len(rows) == 4
    for row in rows:  # the gold row, the raw output under the official key, our extraction beside it
        assert row[field] == raw[row["id"]]["raw_output"] and "extracted_choice" in row
        assert {key: row[key] for key in ("question", "choices", "answer")} == {
            key: items[row["id"]][key] for key in ("question", "choices", "answer")}
    # An output is valid when it names one of its item's choices, as the extraction reads it
    named = [extract_choice(row["prediction"]["answer_text"], items[row["id"]]["choices"]) is not None
             for row in raw.values()]
    assert [row["prediction"]["valid"] for row in raw.values()] == named
    assert metrics["num_invalid_outputs"] == named.count(False)
    scored = subprocess.run([sys.executable, str(ROOT / "scripts/score.py"), task, "--gold", str(gold),
                             "--predictions", str(predictions)], capture_output=True, text=True, check=True)
    from_file = json.loads(scored.stdout.strip().splitlines()[-1])
    for key in ("accuracy", "accuracy_official", "accuracy_extracted"):
        assert from_file[key] == metrics[key], key


@pytest.mark.parametrize(("change", "message"), [
    ({"choices": ["a", "b", "a"]}, r"choices \['a'\] occur more than once in \['a', 'b', 'a'\]"),
    ({"choices": "a b"}, r"choices must be a list of 2 to 10 strings, got 'a b'"),  # "a" in "a b" held before
    ({"choices": ["a", None]}, r"choices must be a list of 2 to 10 strings"),
    ({"choices": ["a"]}, r"choices must be a list of 2 to 10 strings"),
    ({"choices": [str(n) for n in range(11)], "answer": "0"}, r"choices must be a list of 2 to 10 strings"),
])
def test_mmar_items_with_choices_repeated_or_not_a_list_of_strings_are_refused_naming_the_item(change, message,
                                                                                             tmp_path):
    from audio_recipes.errors import DataError

    path = tmp_path / "meta.jsonl"
    path.write_text(json.dumps(GOOD_ITEM) + "\n" + json.dumps({**BAD_ITEM, "answer": "a", **change}) + "\n")
    with pytest.raises(DataError, match=rf"meta.jsonl, line 2 \(id x\): {message}"):
        get_task("mmar", TaskArguments(task="mmar", test_file=str(path), input_mode="text")).examples("test")
    with pytest.raises(DataError, match=rf"meta.jsonl, line 2 \(id x\): {message}"):
        get_task("mmar").score_files(path, path)


def test_mmau_keeps_its_published_items_whose_choices_repeat(tmp_path):
    # MMAU's test-mini repeats a choice's text on 27 items (e.g. ["thirteen", "twenty", "thirteen", "five"])
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps([{**GOOD_ITEM, "audio_id": "a.wav", "choices": ["a", "b", "a"]}]))
    examples = get_task("mmau", TaskArguments(task="mmau", test_file=str(path), input_mode="text")).examples("test")
    assert examples[0].completion == "<answer>(A) a</answer>"
