"""`prepare_data.py speech_tokens`: parquet rows -> chat rows, rejected rows named, statistics, seeded split."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_recipes.errors import DataError
from audio_recipes.io import OutputFileError
from audio_recipes.models.speech_vocabulary import speech_answer
from audio_recipes.prepare import DATA_BUILDERS, run_builder
from audio_recipes.prepare.speech_tokens import split_rows
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def write_parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return str(path)


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run(argv, capsys):
    run_builder("speech_tokens", argv)
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err


def test_rows_become_chat_rows_and_bad_ones_are_named(tmp_path, capsys):
    source = write_parquet(
        tmp_path / "src.parquet",
        q=["What is the capital of France?", "Bad id?", "Empty answer?", "Text tokens?", "Not a number?", "Big?"],
        a=["Paris.", "No.", " ", "Yes.", "No.", "Yes, the largest id."],
        toks=["[12, 0, 7]", "1 4096 2", "3", "5 6, 7", "5 x", "4095"],  # as some data sets store them
        key=["k1", "k2", "k3", "k4", "k5", "k6"],
    )
    out = tmp_path / "out" / "train.jsonl"
    stats, err = run(["--input", source, "--output_file", str(out), "--columns", "question=q,answer=a,speech_tokens=toks,id=key"],
                     capsys)
    rows = read(out)
    assert rows[0] == {"id": "k1", "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris.\n<|speech_start|><|s_12|><|s_0|><|s_7|><|speech_end|>"}]}
    assert [row["id"] for row in rows] == ["k1", "k4", "k6"]
    assert rows[1]["messages"][1]["content"] == speech_answer("Yes.", [5, 6, 7])
    assert "row 1 (id k2): speech token id 4096 is out of range [0, 4096)" in err
    assert "row 2 (id k3): empty or missing answer" in err and "row 4 (id k5): speech token 'x' is not an integer" in err
    rejected = read(tmp_path / "out" / "train.rejected.jsonl")
    assert [r["where"].split(", ")[1] for r in rejected] == ["row 1 (id k2)", "row 2 (id k3)", "row 4 (id k5)"]
    assert stats["rows_written"] == 3 and stats["rows_rejected"] == 3
    assert stats["train"]["speech_tokens"] == {"mean": round((3 + 3 + 1) / 3, 2), "min": 1, "max": 3}


def test_integer_lists_and_non_integer_values(tmp_path, capsys):
    source = write_parquet(tmp_path / "f.parquet", question=["Q?", "Q?", "Q?"], answer=["A.", "B.", "C."],
                           speech_tokens=[[1.0, 2.0], [1.5], [-1.0]])
    stats, err = run(["--input", source, "--output_file", str(tmp_path / "t.jsonl")], capsys)
    assert read(tmp_path / "t.jsonl")[0]["messages"][1]["content"] == speech_answer("A.", [1, 2])
    assert "row 1 (id f-1): speech token 1.5 is not an integer" in err
    assert "row 2 (id f-2): speech token id -1 is out of range" in err
    assert stats["rejected_by_reason"] == {"speech token N.N is not an integer": 1,
                                           "speech token id -N is out of range [N, N)": 1}


def test_columns_default_num_samples_and_token_lengths(tmp_path, capsys):
    source = write_parquet(tmp_path / "a.parquet", question=["Q1?", "Q2?", "Q3?"], answer=["A one.", "A two.", "A3."],
                           speech_tokens=[[1, 2], [3, 4, 5, 6], [7]])
    out = tmp_path / "train.jsonl"
    tokenizer = ensure_tiny_model("qwen3")
    stats, _ = run(["--input", source, "--output_file", str(out), "--num_samples", "2", "--tokenizer", str(tokenizer)],
                   capsys)
    assert [row["id"] for row in read(out)] == ["a-0", "a-1"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    text = [len(tok(f"Q{i}?\nA {w}.\n", add_special_tokens=False)["input_ids"]) for i, w in ((1, "one"), (2, "two"))]
    assert stats["train"]["text_tokens"]["max"] == max(text)
    assert stats["train"]["total_tokens"] == {"mean": (text[0] + 4 + text[1] + 6) / 2, "min": min(text[0] + 4, text[1] + 6),
                                              "max": max(text[0] + 4, text[1] + 6)}


def test_missing_column_names_the_file_and_the_columns(tmp_path):
    source = write_parquet(tmp_path / "s.parquet", question=["Q"], text=["A"], speech_tokens=[[1]])
    with pytest.raises(DataError, match=r"s\.parquet: no column answer \(columns: question, text, speech_tokens\)"):
        run_builder("speech_tokens", ["--input", source, "--output_file", str(tmp_path / "o.jsonl")])


def test_split_is_seeded_disjoint_and_complete(tmp_path, capsys):
    count = 50
    source = write_parquet(tmp_path / "s.parquet", question=[f"Q{i}?" for i in range(count)],
                           answer=[f"A{i}." for i in range(count)], speech_tokens=[[i] for i in range(count)])
    files = {name: tmp_path / f"{name}.jsonl" for name in ("train", "eval", "test")}
    argv = ["--input", source, "--output_file", str(files["train"]), "--eval_file", str(files["eval"]),
            "--eval_ratio", "0.1", "--test_file", str(files["test"]), "--test_ratio", "0.2", "--seed", "3"]
    stats, _ = run(argv, capsys)
    ids = {name: [row["id"] for row in read(path)] for name, path in files.items()}
    assert (len(ids["train"]), len(ids["eval"]), len(ids["test"])) == (35, 5, 10)
    assert sorted(sum(ids.values(), []), key=lambda i: int(i.split("-")[1])) == [f"s-{i}" for i in range(count)]
    assert ids["eval"] == sorted(ids["eval"], key=lambda i: int(i.split("-")[1])), "each split keeps the input order"
    assert stats["eval"]["rows"] == 5
    again, _ = run(argv, capsys)
    assert {name: [row["id"] for row in read(path)] for name, path in files.items()} == ids
    run([*argv[:-1], "4"], capsys)
    assert [row["id"] for row in read(files["eval"])] != ids["eval"], "another seed, another split"

    # Converted rows split again: the .jsonl input path
    resplit = tmp_path / "resplit.jsonl"
    run(["--input", str(files["train"]), "--output_file", str(resplit), "--eval_file", str(tmp_path / "e2.jsonl"),
         "--eval_ratio", "0.2"], capsys)
    assert len(read(resplit)) == 28 and read(resplit)[0] in read(files["train"])


def test_split_rows_keeps_at_least_one_row_and_refuses_impossible_ratios():
    rows = [{"id": str(i)} for i in range(5)]
    assert [len(part) for part in split_rows(rows, {"eval": 0.01}, seed=0).values()] == [4, 1]
    with pytest.raises(SystemExit, match="leave rows for training"):
        split_rows(rows, {"eval": 0.5, "test": 0.5}, seed=0)


def test_prepare_data_script_dispatches_by_name(tmp_path):
    assert DATA_BUILDERS.get("speech_tokens") == "audio_recipes.prepare.speech_tokens"
    source = write_parquet(tmp_path / "s.parquet", question=["Q?"], answer=["A."], speech_tokens=[[9]])
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "speech_tokens", "--input", source,
                             "--output_file", str(tmp_path / "t.jsonl")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["rows_written"] == 1


def chat_jsonl(path, count, blank_before=None):
    """`count` chat rows as speech_tokens writes them; a blank line before row `blank_before` (0-based)."""
    lines = []
    for i in range(count):
        if i == blank_before:
            lines.append("")
        lines.append(json.dumps({"id": f"r{i}", "messages": [
            {"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": speech_answer(f"A{i}.", [i])}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path):
    source = chat_jsonl(tmp_path / "chat.jsonl", 10)
    before = source.read_bytes()
    for output in (source, tmp_path / "." / "chat.jsonl"):
        with pytest.raises(OutputFileError, match="is also an input"):
            run_builder("speech_tokens", ["--input", str(source), "--output_file", str(output), "--eval_file",
                                          str(tmp_path / "eval.jsonl"), "--eval_ratio", "0.3", "--overwrite"])
    with pytest.raises(OutputFileError, match="is also an input"):
        run_builder("speech_tokens", ["--input", str(source), "--output_file", str(tmp_path / "train.jsonl"),
                                      "--eval_file", str(source), "--eval_ratio", "0.3"])
    assert source.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["chat.jsonl"]


def test_a_file_the_project_did_not_write_is_replaced_only_with_overwrite(tmp_path, capsys):
    source = chat_jsonl(tmp_path / "chat.jsonl", 3)
    notes = tmp_path / "mine.txt"
    notes.write_text("my notes\n")
    argv = ["--input", str(source), "--output_file", str(notes)]
    with pytest.raises(OutputFileError, match=r"mine\.txt exists and was not made by the project"):
        run_builder("speech_tokens", argv)
    assert notes.read_text() == "my notes\n"
    # the rejected-rows file too, checked before anything is written
    theirs = tmp_path / "out.rejected.jsonl"
    theirs.write_text("theirs\n")
    with pytest.raises(OutputFileError, match=r"out\.rejected\.jsonl exists and was not made"):
        run_builder("speech_tokens", ["--input", str(source), "--output_file", str(tmp_path / "out.jsonl")])
    assert theirs.read_text() == "theirs\n" and not (tmp_path / "out.jsonl").exists()
    theirs.unlink()
    # a file it wrote it replaces (a rerun), and with --overwrite one it did not
    run(["--input", str(source), "--output_file", str(tmp_path / "out.jsonl")], capsys)
    run(["--input", str(source), "--output_file", str(tmp_path / "out.jsonl"), "--num_samples", "2"], capsys)
    assert len(read(tmp_path / "out.jsonl")) == 2
    run([*argv, "--overwrite"], capsys)
    assert len(read(notes)) == 3 and json.loads((tmp_path / "mine.txt.build.json").read_text())["builder"] == \
        "speech_tokens"


def test_a_bad_row_after_a_blank_line_is_named_by_its_line(tmp_path, capsys):
    source = chat_jsonl(tmp_path / "chat.jsonl", 3, blank_before=1)
    rows = source.read_text().splitlines()
    rows[3] = json.dumps({"id": "bad", "messages": [{"role": "user", "content": "Q?"},
                                                     {"role": "assistant", "content": "no speech"}]})
    source.write_text("\n".join(rows) + "\n")  # line 1 good, line 2 blank, line 3 good, line 4 bad
    stats, err = run(["--input", str(source), "--output_file", str(tmp_path / "out.jsonl")], capsys)
    assert stats["rows_rejected"] == 1
    assert read(tmp_path / "out.rejected.jsonl")[0]["where"] == f"{source}, line 4"


def test_the_speech_tokens_task_names_a_bad_row_by_its_line(tmp_path):
    from audio_recipes.config import TaskArguments
    from audio_recipes.tasks import get_task

    source = chat_jsonl(tmp_path / "chat.jsonl", 3, blank_before=1)
    rows = source.read_text().splitlines()
    rows[3] = json.dumps({k: v for k, v in json.loads(rows[3]).items() if k != "id"})
    source.write_text("\n".join(rows) + "\n")  # line 2 blank, line 4 has no id
    task = get_task("speech_tokens", TaskArguments(task="speech_tokens", train_file=str(source)))
    with pytest.raises(DataError, match=r"chat\.jsonl, line 4 \(id None\): no 'id'"):
        task.load_examples("train")
