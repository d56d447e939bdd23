"""The scripts' command line as a user meets it: executable scripts, one-line errors with argparse's exit statuses,
`--help` and TRL's `--config`, and one JSON result line. Each script runs in its own process, started by its path
(its shebang) as the README writes it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import json_object_lines

from audio_recipes.paths import PROJECT_ROOT

SCRIPTS = sorted((PROJECT_ROOT / "scripts").glob("*.py"))
TINY_RECIPE = "recipes/tiny/slurp.yaml"


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`scripts/NAME.py ARGS` from the project root, the interpreter found on PATH as a user's shell finds it."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(list(args), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, script: str, *fragments: str) -> str:
    """The script exited with `status` after one `SCRIPT: error: ...` line (the last on stderr) and no traceback;
    libraries' own warnings on import may come before it."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if ": error:" in line] == lines[-1:], result.stderr[-3000:]
    assert lines[-1].startswith(f"{script}: error: "), lines[-1]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def write_recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_every_script_is_executable_with_a_python3_shebang():
    tracked = subprocess.run(["git", "ls-files", "-s", "scripts"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    modes = {line.split()[-1]: line.split()[0] for line in tracked.stdout.splitlines()}
    for script in SCRIPTS:
        relative = f"scripts/{script.name}"
        assert modes.get(relative) == "100755", f"{relative}: git mode {modes.get(relative)}"
        assert os.access(script, os.X_OK), relative
        assert script.read_text().startswith("#!/usr/bin/env python3\n"), relative


def test_unknown_recipe_key_is_one_line_and_status_2_before_any_model_loads(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: Qwen/does-not-exist\nlerning_rate: 1\n")
    result = run_script("scripts/sft.py", recipe)
    assert_one_line_error(result, 2, "sft.py", "unknown option 'lerning_rate' in recipe", "did you mean 'learning_rate'?")
    assert result.stdout == ""


def test_bad_value_on_the_command_line_is_one_line_and_status_2(tmp_path):
    # --max_audio_seconds 0 was a TypeError in generation, after the model had loaded
    result = run_script("scripts/evaluate.py", TINY_RECIPE, "--max_audio_seconds", "0", "--output_dir", str(tmp_path))
    assert_one_line_error(result, 2, "evaluate.py", "max_audio_seconds on the command line", "> 0", "got 0")
    # Through TRL's --config, the recipe is read and checked the same way
    recipe = write_recipe(tmp_path, "model_name_or_path: m\ntask: mmar\ninput_mode: txt\n")
    result = run_script("scripts/sft.py", "--config", recipe)
    assert_one_line_error(result, 2, "sft.py", f"input_mode in recipe {recipe}", "task mmar", "got 'txt'")


def test_missing_and_empty_recipes_are_one_line_and_status_2(tmp_path):
    assert_one_line_error(run_script("scripts/grpo.py"), 2, "grpo.py", "no recipe")
    assert_one_line_error(run_script("scripts/rest.py", str(tmp_path / "absent.yaml")), 2, "rest.py",
                          "recipe file not found")
    empty = write_recipe(tmp_path, "")
    assert_one_line_error(run_script("scripts/sft.py", empty), 2, "sft.py", f"recipe {empty} is empty")


@pytest.mark.parametrize("args", [["--help"], [TINY_RECIPE, "--help"]], ids=["without-recipe", "with-recipe"])
def test_help_works_with_or_without_a_recipe(args):
    result = run_script("scripts/sft.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: sft.py RECIPE.yaml [--key value ...]\n")
    assert "--config RECIPE" in result.stdout and "--learning_rate" in result.stdout
    assert "Supervised fine-tuning from a recipe" in result.stdout  # the script's own description
    if len(args) == 2:  # the recipe's values are the defaults shown
        assert "(default: 0.003)" in result.stdout


def test_score_py_usage_and_data_errors_are_one_line(tmp_path):
    result = run_script("scripts/score.py", "slurpp", "--gold", "g", "--predictions", "p")
    assert_one_line_error(result, 2, "score.py", "invalid choice: 'slurpp'")
    # A data file the task cannot read: a DataError, status 1
    result = run_script("scripts/score.py", "slurp", "--gold", str(tmp_path / "absent.jsonl"),
                        "--predictions", str(tmp_path / "absent.jsonl"))
    assert_one_line_error(result, 1, "score.py", "data file not found")


def test_score_py_on_a_file_that_is_not_utf8_or_another_tasks_gold_is_one_line(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(b'{"slurp_id": 1}\n{"sentence": "caf\xe9"}\n')  # a Latin-1 byte on line 2
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"id": "1"}\n')
    result = run_script("scripts/score.py", "slurp", "--gold", str(gold), "--predictions", str(predictions))
    assert_one_line_error(result, 1, "score.py", f"{gold}, line 2: not UTF-8 text")
    # MMAR scored against SLURP's gold was a KeyError
    slurp_gold = PROJECT_ROOT / "assets/slurp/test.jsonl"
    result = run_script("scripts/score.py", "mmar", "--gold", str(slurp_gold), "--predictions", str(predictions))
    assert_one_line_error(result, 1, "score.py", f"{slurp_gold}, line 1", "lacks id, choices, answer",
                          "a mmar item has id, choices, answer")


def test_sft_prints_one_json_object_as_its_last_line(tmp_path):
    result = run_script("scripts/sft.py", TINY_RECIPE, "--max_steps", "1", "--max_train_samples", "2",
                        "--output_dir", str(tmp_path / "model"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    objects = json_object_lines(result.stdout)
    assert len(objects) == 1 and objects[0] == json.loads(result.stdout.strip().splitlines()[-1])
    assert objects[0]["num_processes"] == 1 and math.isfinite(objects[0]["train_loss"])


def test_print_result_is_one_strict_json_line_from_the_main_process_only(monkeypatch, capsys):
    from audio_recipes.cli import print_result

    result = {"accuracy": np.float32(0.5), "count": np.int64(3), "ece": float("nan"), "path": PROJECT_ROOT,
              "nested": {"values": (1, float("inf"))}}
    monkeypatch.setenv("RANK", "1")
    print_result(result)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    print_result(result)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"accuracy": 0.5, "count": 3, "ece": None, "path": str(PROJECT_ROOT),
                               "nested": {"values": [1, None]}}


@pytest.mark.parametrize("target, message", [("eval", "usage: make eval MODEL="), ("push", "usage: make push MODEL="),
                                             ("mmlu-redux", "usage: make mmlu-redux MODELS=")])
def test_make_targets_check_their_arguments_before_installing_anything(tmp_path, target, message):
    venv = tmp_path / "venv"  # a fresh clone has none: a target that installed first would create it
    result = subprocess.run(["make", target, f"VENV={venv}"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and message in result.stdout, result.stdout + result.stderr
    assert not venv.exists()
    result = subprocess.run(["make", "eval", "MODEL=m", "TASK=slurpp", f"VENV={venv}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no recipe recipes/slurpp.yaml; TASK is one of:" in result.stdout
    assert "slurp" in result.stdout.split("TASK is one of:")[1].split() and not venv.exists()


def test_a_model_path_holding_no_model_is_one_line_and_status_1(tmp_path):
    result = run_script("scripts/evaluate.py", TINY_RECIPE, "--model_name_or_path", str(tmp_path / "absent"),
                        "--output_dir", str(tmp_path / "eval"))
    assert_one_line_error(result, 1, "evaluate.py", f"model path {tmp_path / 'absent'} is not a folder holding a model")


def test_score_py_output_never_replaces_an_input_or_a_users_file(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"q{n}", "question": "Which?", "choices": ["yes", "no"],
                                        "answer": "yes"}) + "\n" for n in range(2)))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"id": "q0", "answer_prediction": "yes"}) + "\n"
                           + json.dumps({"id": "q1", "answer_prediction": "no"}) + "\n")
    before = predictions.read_bytes()
    score = ["scripts/score.py", "mmar", "--gold", str(gold), "--predictions", str(predictions)]
    result = run_script(*score, "--output", str(predictions))
    assert_one_line_error(result, 1, "score.py", f"{predictions} is also an input", "nothing was written")
    assert predictions.read_bytes() == before
    users = tmp_path / "metrics.json"
    users.write_text("my notes")
    assert_one_line_error(run_script(*score, "--output", str(users)), 1, "score.py",
                          f"{users} exists and was not made by the project", "--overwrite")
    assert users.read_text() == "my notes"
    assert run_script(*score, "--output", str(users), "--overwrite").returncode == 0
    assert json.loads(users.read_text())["accuracy"] == 0.5
    written = run_script(*score, "--output", str(users))  # score.py's own file: replaced without --overwrite
    assert written.returncode == 0, written.stderr[-2000:]
    assert json.loads(users.read_text())["accuracy"] == 0.5
