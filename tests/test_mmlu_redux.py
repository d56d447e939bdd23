"""MMLU-Redux: the CSVs' quirks, lm-eval's MMLU prompt, the scorer against lm-eval itself, the summary."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from audio_recipes.decoding import continuation_loglikelihoods, encode_pair
from audio_recipes.errors import DataError
from audio_recipes.pipelines.mmlu_redux import (
    MmluData,
    MmluItem,
    comparison_table,
    lm_eval_mmlu_template,
    prompt,
    read_mmlu_redux,
    run_lm_eval,
    score_items,
    summarize,
)
from audio_recipes.testing.tiny_models import ensure_tiny_model

HEADER = "question,choices,answer,error_type,source,correct_answer,potential_reason"


@pytest.fixture(scope="module")
def tiny():
    path = ensure_tiny_model("qwen3")
    return path, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def write(folder, name, data: bytes):
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)


def test_csv_quirks_are_read_and_rows_without_answer_counted(tmp_path):
    write(tmp_path, "mmlu_plain.csv", (HEADER + '\n"Q1, with comma?","[\'a\', \'b\', \'c\', \'d\']",2,ok,,,\n'
                                       "Q2?,\"['w', 'x', 'y', 'z']\",,ok,,,\n").encode())
    # ';'-delimited, CRLF, columns in another order, and a choice holding the other delimiter
    write(tmp_path, "mmlu_semicolon.csv", (b"answer;error_type;choices;question\r\n"
                                           b"0;OK;['1, 2', '3', '4', '5'];Which?\r\n"))
    # Not UTF-8: Mac Roman's right quote (0xD5), as mmlu_moral_scenarios.csv has it
    write(tmp_path, "mmlu_legacy.csv", HEADER.encode() + b"\r\nI slapped my sister\xd5s head?,\"['a', 'b', 'c', 'd']\",3,ok,,,\r\n")
    data = read_mmlu_redux(tmp_path)
    by_id = {item.id: item for item in data.items}
    assert by_id["plain/1"] == MmluItem("plain/1", "plain", "Q1, with comma?", ["a", "b", "c", "d"], 2)
    assert "plain/2" not in by_id and data.skipped_no_answer == {"legacy": 0, "plain": 1, "semicolon": 0}
    assert by_id["semicolon/1"].choices == ["1, 2", "3", "4", "5"] and by_id["semicolon/1"].answer == 0
    assert by_id["legacy/1"].question == "I slapped my sister\u2019s head?"
    assert data.decoded_as == {"mmlu_legacy.csv": "mac_roman"}
    summary = summarize(data, {})
    assert summary["skipped_no_answer"] == 1 and summary["items"] == 3


def test_windows_1252_file_reads_as_such(tmp_path):
    write(tmp_path, "mmlu_cafe.csv", HEADER.encode() + b"\nCaf\xe9 \x93menu\x94?,\"['a', 'b', 'c', 'd']\",1,ok,,,\n")
    assert read_mmlu_redux(tmp_path).items[0].question == "Café \u201cmenu\u201d?"


@pytest.mark.parametrize("row, message", [
    ("Q?,\"['a', 'b', 'c', 'd']\",7,ok,,,", r"mmlu_bad\.csv, row 1: answer '7' is not an index 0-3"),
    ("Q?,\"['a', 'b']\",1,ok,,,", r"mmlu_bad\.csv, row 1: expected 4 choices"),
    ("Q?,\"[a, b\",1,ok,,,", r"mmlu_bad\.csv, row 1: choices .* are not a list literal"),
])
def test_malformed_rows_are_errors_naming_file_and_row(tmp_path, row, message):
    write(tmp_path, "mmlu_bad.csv", f"{HEADER}\n{row}\n".encode())
    with pytest.raises(DataError, match=message):
        read_mmlu_redux(tmp_path)


def test_shared_mmlu_redux_reads_whole(shared_data):
    data = read_mmlu_redux(shared_data / "mmlu_redux")
    assert len(data.subjects) == 57 and len(data.items) == 5700
    # The 9 ';'-delimited files read as one column by a ','-only reader: 900 rows that seem to lack an answer
    assert sum(data.skipped_no_answer.values()) == 0
    assert data.decoded_as == {"mmlu_moral_scenarios.csv": "mac_roman"}
    assert any("my sister\u2019s head" in item.question for item in data.items)
    assert {item.answer for item in data.items} == {0, 1, 2, 3}


def test_prompt_is_lm_evals_mmlu_prompt():
    from jinja2 import Template

    item = MmluItem("high_school_physics/1", "high_school_physics", "  What falls?\n", ["a", "b", "c", "d"], 1)
    template = lm_eval_mmlu_template()
    assert template["doc_to_choice"] == ["A", "B", "C", "D"] and template["output_type"] == "multiple_choice"
    expected = ("The following are multiple choice questions (with answers) about high school physics.\n\n"
                + Template(template["doc_to_text"]).render(question=item.question, choices=item.choices))
    assert prompt(item) == expected == ("The following are multiple choice questions (with answers) about high school "
                                        "physics.\n\nWhat falls?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tiny):
    _, _, tokenizer = tiny
    context, continuation = encode_pair(tokenizer, "Answer: ", "B")
    assert context == tokenizer.encode("Answer:") and context + continuation == tokenizer.encode("Answer: B")


def test_loglikelihood_is_the_sum_over_continuation_tokens_in_any_batch(tiny):
    _, model, tokenizer = tiny
    requests = [("The capital of France is", " Paris"), ("Hello", " world, again"), ("A much longer context here", " x")]
    batched = continuation_loglikelihoods(model, tokenizer, requests, batch_size=3)
    for (context, continuation), score in zip(requests, batched, strict=True):
        ids = tokenizer.encode(context + continuation)
        n = len(tokenizer.encode(context))
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = sum(log_probs[i - 1, ids[i]].item() for i in range(n, len(ids)))
        assert score == pytest.approx(expected, abs=1e-4)
    assert continuation_loglikelihoods(model, tokenizer, requests, batch_size=1) == pytest.approx(batched, abs=1e-4)


def test_scorer_matches_lm_eval_harness(tiny, shared_data, tmp_path, monkeypatch):
    """The same items through lm-eval (its HF wrapper, multiple_choice, acc) and through ours."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path, model, tokenizer = tiny
    data = read_mmlu_redux(shared_data / "mmlu_redux", subjects=["anatomy", "machine_learning", "moral_scenarios"],
                           max_items_per_subject=3)
    harness = run_lm_eval(str(path), data, tmp_path / "tasks", batch_size=4, dtype="float32")
    ours = score_items(model, tokenizer, data.items, tmp_path / "items.jsonl", batch_size=5)
    assert sorted(harness) == sorted(ours) == sorted(item.id for item in data.items)
    for item in data.items:
        assert harness[item.id]["contexts"] == [prompt(item)] * 4
        assert ours[item.id]["loglikelihoods"] == pytest.approx(harness[item.id]["loglikelihoods"], abs=1e-4)
        assert ours[item.id]["prediction"] == harness[item.id]["prediction"]
        assert ours[item.id]["correct"] == harness[item.id]["correct"]


def test_scoring_resumes_without_losing_or_repeating_items(tiny, tmp_path):
    _, model, tokenizer = tiny
    items = [MmluItem(f"s/{i}", "s", f"Question {i}?", ["w", "x", "y", "z"], i % 4) for i in range(6)]
    output = tmp_path / "items.jsonl"
    full = score_items(model, tokenizer, items, output, items_per_write=2)
    lines = output.read_text().splitlines()
    output.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # interrupted mid-line
    resumed = score_items(model, tokenizer, items, output, resume=True, items_per_write=2)
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [f"s/{i}" for i in range(6)]
    assert {k: v["prediction"] for k, v in resumed.items()} == {k: v["prediction"] for k, v in full.items()}


def test_summary_by_subject_counts_missing_rows_as_wrong():
    items = [MmluItem(f"{s}/{i}", s, "Q", ["a", "b", "c", "d"], 0) for s, n in (("x", 3), ("y", 1)) for i in range(n)]
    data = MmluData(items, {"x": 2, "y": 0, "z": 4})
    rows = {"x/0": {"correct": True}, "x/1": {"correct": False}, "y/0": {"correct": True}}
    summary = summarize(data, rows)
    assert summary["subjects"]["x"] == {"accuracy": pytest.approx(1 / 3), "items": 3, "skipped_no_answer": 2}
    assert summary["subjects"]["z"] == {"accuracy": None, "items": 0, "skipped_no_answer": 4}
    assert summary["accuracy"] == pytest.approx(2 / 4) and summary["macro_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["items_without_output"] == 1 and summary["skipped_no_answer"] == 6

    other = {**summary, "model": "after", "accuracy": 0.25, "subjects": {**summary["subjects"],
             "x": {**summary["subjects"]["x"], "accuracy": 0.0}}}
    table = comparison_table([{**summary, "model": "before"}, other])
    assert "| subject | items | before | after | Δ after |" in table
    assert "| x | 3 | 33.3 | 0.0 | -33.3 |" in table and "| z | 0 | - | - | - |" in table
    assert "| **overall (micro)** | 4 | 50.0 | 25.0 | -25.0 |" in table
    assert not math.isnan(summary["macro_accuracy"])


# ---------------------------------------------------------------- the generative variant (lm-eval's mmlu_redux_generative)


def test_first_letter_is_lm_evals_filter():
    from audio_recipes.pipelines.mmlu_redux import first_letter

    assert first_letter("C") == "C" and first_letter(" (d) or C.") == "C"
    assert first_letter("Based on the passage, A") == "B"  # the first capital A-D anywhere, as lm-eval's regex reads
    assert first_letter("none of these") == "[invalid]"


def test_the_generative_variant_scores_the_ok_rows(shared_data):
    from audio_recipes.pipelines.mmlu_redux import variant_items

    data = read_mmlu_redux(shared_data / "mmlu_redux")
    assert len(variant_items(data, "generative")) == 5330  # error_type "ok" in any case: fxmarty/mmlu-redux-2.0-ok
    assert len(variant_items(data, "loglikelihood")) == 5700
    assert {item.error_type for item in data.items} >= {"ok", "wrong groundtruth", "bad question clarity"}
    rows = {item.id: {"correct": True} for item in variant_items(data, "generative")}
    summary = summarize(data, rows, "generative")
    assert (summary["accuracy"], summary["items"], summary["items_not_ok"]) == (1.0, 5330, 370)
    assert (summary["variant"], summary["lm_eval_task"]) == ("generative", "mmlu_redux_generative")


def test_prompts_and_items_are_lm_evals_request_by_request(shared_data, tmp_path, monkeypatch):
    """Every request the installed lm-eval builds from its own templates (mmlu_redux_generative's, with each
    subject's description from its task file; mmlu's) over the local rows, against ours."""
    from audio_recipes.pipelines.mmlu_redux import (
        INSTRUCTION,
        description,
        generative_prompt,
        lm_eval_generative_description,
        lm_eval_generative_template,
        lm_eval_requests,
        variant_items,
    )

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = read_mmlu_redux(shared_data / "mmlu_redux")
    assert all(lm_eval_generative_description(subject) == description(subject) for subject in data.subjects)
    template = lm_eval_generative_template()
    assert template["output_type"] == "generate_until" and template["generation_kwargs"] == {"until": ["</s>"]}
    assert template["doc_to_text"].endswith(INSTRUCTION)
    assert template["filter_list"][0]["filter"][0]["regex_pattern"] == "([ABCD])"

    requests = lm_eval_requests(data, tmp_path / "generative", "generative")
    items = variant_items(data, "generative")
    assert sorted(requests) == sorted(item.id for item in items)  # the same 5,330 items
    for item in items:
        (context, gen_kwargs), = requests[item.id]
        assert context == generative_prompt(item), item.id
        assert gen_kwargs["until"] == ["</s>"]

    # The log-likelihood variant, by name, on three subjects (all 5,700 rows: its items, not only the "ok" ones)
    some = read_mmlu_redux(shared_data / "mmlu_redux", subjects=["anatomy", "virology", "moral_scenarios"])
    requests = lm_eval_requests(some, tmp_path / "loglikelihood", "loglikelihood")
    assert len(requests) == 300
    for item in some.items:
        assert requests[item.id] == [(prompt(item), f" {label}") for label in "ABCD"], item.id


def test_generative_scorer_matches_lm_eval_harness(tiny, shared_data, tmp_path, monkeypatch):
    """The same items through lm-eval (its HF wrapper, generate_until, first-letter filter, exact_match) and ours."""
    from audio_recipes.pipelines.mmlu_redux import generate_items, generative_prompt, variant_items

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path, model, tokenizer = tiny
    data = read_mmlu_redux(shared_data / "mmlu_redux", subjects=["anatomy", "machine_learning", "moral_scenarios"],
                           max_items_per_subject=4)
    items = variant_items(data, "generative")
    harness = run_lm_eval(str(path), data, tmp_path / "tasks", batch_size=4, dtype="float32", variant="generative",
                          max_new_tokens=8)
    ours = generate_items(model, tokenizer, items, tmp_path / "items.jsonl", batch_size=3, max_new_tokens=8)
    assert sorted(harness) == sorted(ours) == sorted(item.id for item in items)
    for item in items:
        assert harness[item.id]["contexts"] == [generative_prompt(item)]
        for key in ("response", "prediction", "answer", "correct"):
            assert ours[item.id][key] == harness[item.id][key], (item.id, key)
