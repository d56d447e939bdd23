"""Experiment grids: cells from the axes, overrides checked before anything trains, the table and plot of finished
cells, finished cells skipped; the tiny 2 x 2 grid trained and evaluated end to end (slow)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audio_recipes.errors import InputError
from audio_recipes.pipelines import grid as grid_module
from audio_recipes.pipelines.grid import (
    CELL_RECIPE,
    CELL_RESULT,
    PLOT,
    TABLE_CSV,
    TABLE_MD,
    GridError,
    load_grid,
    run_grid,
)
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recipes" / "tiny" / "grids" / "slurp_text_only.yaml"
CELLS = ["text_only_fraction-0.0__learning_rate-1e-3", "text_only_fraction-0.0__learning_rate-3e-3",
         "text_only_fraction-0.5__learning_rate-1e-3", "text_only_fraction-0.5__learning_rate-3e-3"]


def write_grid(tmp_path, **changes) -> Path:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["base"] = str(ROOT / spec["base"])
    spec["output_dir"] = str(tmp_path / "grid")
    spec.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def patch_cell_commands(monkeypatch, handler) -> None:
    """subprocess.run answered by `handler` for the grid's cell commands (python SCRIPT.py ...) only: other commands
    (matplotlib's fc-list building its font cache on a fresh machine) run as they are."""
    real_run = subprocess.run

    def run(command, *args, **kwargs):
        if isinstance(command, list) and len(command) > 1 and str(command[1]).endswith(".py"):
            return handler(command, *args, **kwargs)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)


def fake_results(grid_dir: Path, figures: dict[str, tuple[float, float]]) -> None:
    """What a finished cell leaves: its recipe and result.json (metrics chosen by the test)."""
    for name, (slu_f1, intent) in figures.items():
        labels = dict(part.split("-", 1) for part in name.split("__"))
        (grid_dir / name).mkdir(parents=True)
        (grid_dir / name / CELL_RESULT).write_text(json.dumps({
            "cell": name, "axes": labels, "overrides": {},
            "metrics": {"slu_f1": slu_f1, "intent_accuracy": intent, "scenario_accuracy": 0.5},
            "train_loss": 1.5}))


def test_cells_are_every_combination_of_the_axes_with_their_overrides(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    cells = grid.cells()
    assert [cell.name for cell in cells] == CELLS
    assert cells[3].overrides == {"text_only_fraction": 0.5, "learning_rate": 3e-3}
    assert cells[3].labels == {"text_only_fraction": "0.5", "learning_rate": "3e-3"}
    recipe = grid_module.cell_recipe(grid, cells[3])
    assert recipe["learning_rate"] == 3e-3 and recipe["text_only_fraction"] == 0.5 and recipe["max_steps"] == 6
    assert recipe["output_dir"] == str(tmp_path / "grid" / CELLS[3])
    assert "resume_from_checkpoint" not in recipe  # the tiny recipe saves no checkpoints
    assert grid_module.cell_recipe(load_grid(write_grid(tmp_path, overrides={"save_strategy": "steps"})),
                                   cells[0])["resume_from_checkpoint"] == "true"
    assert grid_module.evaluate_arguments(grid, cells[0]) == [
        "--split", "test", "--max_eval_samples", "8", "--max_new_tokens", "24",
        "--model_name_or_path", str(tmp_path / "grid" / CELLS[0]),
        "--output_dir", str(tmp_path / "grid" / CELLS[0] / "eval" / "test")]


def test_every_shipped_grid_and_its_cells_parse(tmp_path):
    grids = sorted((ROOT / "recipes").rglob("grids/*.yaml"))
    assert EXAMPLE in grids
    assert ROOT / "recipes" / "slurp_limited_speech" / "grids" / "monolingual.yaml" in grids
    for path in grids:
        grid = load_grid(path, tmp_path / path.parent.parent.name / path.stem)
        # GPU recipes ask for bf16, which TrainingArguments refuses on a machine without a GPU
        grid.overrides = {**grid.overrides, "bf16": False}
        grid_module.check_cells(grid)


def test_finished_cells_are_skipped_and_tabled_and_plotted(tmp_path, monkeypatch):
    figures = {CELLS[0]: (0.1, 0.25), CELLS[1]: (0.2, 0.5), CELLS[2]: (0.3, 0.125), CELLS[3]: (0.4, 1.0)}
    fake_results(tmp_path / "grid", figures)

    def no_run(*args, **kwargs):
        raise AssertionError(f"a finished cell was run again: {args}")

    patch_cell_commands(monkeypatch, no_run)
    rows = run_grid(write_grid(tmp_path))
    assert [(row["cell"], row["slu_f1"], row["intent_accuracy"]) for row in rows] == [
        (name, *figure) for name, figure in figures.items()]
    with (tmp_path / "grid" / TABLE_CSV).open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["cell", "text_only_fraction", "learning_rate", "slu_f1", "intent_accuracy",
                              "train_loss"]
    assert [(row["text_only_fraction"], row["learning_rate"], float(row["slu_f1"])) for row in table] == [
        ("0.0", "1e-3", 0.1), ("0.0", "3e-3", 0.2), ("0.5", "1e-3", 0.3), ("0.5", "3e-3", 0.4)]
    markdown = (tmp_path / "grid" / TABLE_MD).read_text().splitlines()
    assert markdown[2] == "| cell | text_only_fraction | learning_rate | slu_f1 | intent_accuracy | train_loss |"
    assert markdown[4] == f"| {CELLS[0]} | 0.0 | 1e-3 | 0.1000 | 0.2500 | 1.5000 |"
    assert len(markdown) == 8
    assert (tmp_path / "grid" / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_partial_grid_tables_its_finished_cells_and_a_missing_metric_is_named(tmp_path):
    fake_results(tmp_path / "grid", {CELLS[1]: (0.2, 0.5)})
    grid = load_grid(write_grid(tmp_path))
    assert [row["cell"] for row in grid_module.write_report(grid)] == [CELLS[1]]
    assert "1 of 4 cells" in (tmp_path / "grid" / TABLE_MD).read_text()
    with pytest.raises(GridError, match=f"cell {CELLS[1]}: no metric slu_f2 .* it has intent_accuracy"):
        grid_module.write_report(load_grid(write_grid(tmp_path, metrics=["slu_f2"])))


def test_an_unknown_override_key_names_the_cell_and_the_key(tmp_path):
    axes = {"text_only_fraction": [0.0, 0.5],
            "scheme": [{"label": "direct", "overrides": {}},
                       {"label": "warm", "overrides": {"learning_rat": 1e-3}}]}
    with pytest.raises(GridError, match=r"unknown option 'learning_rat' in grid .*axis 'scheme', value 'warm' "
                       r"\(cells text_only_fraction-0.0__scheme-warm, text_only_fraction-0.5__scheme-warm\); "
                       r"did you mean 'learning_rate'"):
        run_grid(write_grid(tmp_path, axes=axes, lines="scheme"))
    assert not (tmp_path / "grid").exists() or not any((tmp_path / "grid").iterdir())


def test_bad_values_and_changed_cells_are_refused_before_anything_trains(tmp_path, monkeypatch):
    patch_cell_commands(monkeypatch, lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(GridError, match="cell text_only_fraction-2.0__learning_rate-1e-3: invalid value for "
                       "text_only_fraction"):
        run_grid(write_grid(tmp_path, axes={"text_only_fraction": [2.0], "learning_rate": [
            {"label": "1e-3", "overrides": {"learning_rate": 1e-3}}]}))
    with pytest.raises(GridError, match="'max_new_token' in the evaluate block"):
        run_grid(write_grid(tmp_path, evaluate={"max_new_token": 3}))
    with pytest.raises(GridError, match="x 'seed' is not an axis"):
        load_grid(write_grid(tmp_path, x="seed"))
    # A cell folder from an earlier version of the grid: refused, never mixed in
    (tmp_path / "grid" / CELLS[0]).mkdir(parents=True)
    (tmp_path / "grid" / CELLS[0] / CELL_RECIPE).write_text("learning_rate: 0.5\n")
    with pytest.raises(GridError, match=f"cell {CELLS[0]}: .* holds another recipe"):
        run_grid(write_grid(tmp_path))


@pytest.mark.slow
def test_the_tiny_grid_trains_evaluates_tables_and_skips_on_rerun(tmp_path):
    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "grid"
    command = [sys.executable, str(ROOT / "scripts" / "grid.py"), str(EXAMPLE), "--output_dir", str(output)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    with (output / TABLE_CSV).open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["cell"] for row in table] == CELLS
    for row in table:
        assert 0.0 <= float(row["slu_f1"]) <= 1.0 and 0.0 <= float(row["intent_accuracy"]) <= 1.0
        metrics = json.loads((output / row["cell"] / "eval" / "test" / "metrics.json").read_text())
        assert float(row["slu_f1"]) == metrics["slu_f1"]
        assert (output / row["cell"] / "model.safetensors").is_file()
        recipe = yaml.safe_load((output / row["cell"] / CELL_RECIPE).read_text())
        assert recipe["text_only_fraction"] == float(row["text_only_fraction"])
        assert recipe["max_steps"] == 6
    # Different overrides train differently
    assert len({float(row["train_loss"]) for row in table}) == 4
    assert (output / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    produced = {path: path.stat().st_mtime_ns for path in output.rglob("*") if path.is_file()
                and path.parent != output}
    rerun = subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.stderr.count("finished, skipped") == 4
    assert {path: path.stat().st_mtime_ns for path in produced} == produced  # nothing trained or evaluated again


@pytest.mark.slow
def test_the_tiny_limited_speech_grid_trains_each_cell_on_its_speech_fraction(tmp_path):
    """The tiny twin of the paper's monolingual grid (about 6 minutes): 12 cells, each trained on the speech share its
    fraction names (of the tiny SLURP's 200 sentences), the curriculum cells in two stages (text, then speech)."""
    ensure_tiny_model("qwen2-audio")
    grid = ROOT / "recipes" / "tiny" / "grids" / "slurp_limited_speech.yaml"
    output = tmp_path / "grid"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "grid.py"), str(grid), "--output_dir", str(output)],
                   check=True, cwd=ROOT, env=env, capture_output=True)
    with (output / TABLE_CSV).open() as handle:
        table = list(csv.DictReader(handle))
    fractions = ["0.0", "0.01", "0.02", "0.05", "0.1", "1.0"]
    assert [(row["speech_fraction"], row["scheme"]) for row in table] == [
        (fraction, scheme) for fraction in fractions for scheme in ("direct", "curriculum")]
    for row in table:
        cell = output / row["cell"]
        speech = {"0.0": 0, "0.01": 2, "0.02": 4, "0.05": 10, "0.1": 20, "1.0": 200}[row["speech_fraction"]]
        trained = json.loads((cell / "train_metrics.json").read_text())
        assert (trained["train_speech_examples"], trained["train_text_examples"]) == (speech, 200 - speech)
        assert len(json.loads((cell / "speech_ids.json").read_text())["sources"][0]["speech_ids"]) == speech
        if row["scheme"] == "curriculum":
            first = json.loads((cell / "stage_1" / "train_metrics.json").read_text())
            assert (first["train_speech_examples"], first["train_text_examples"]) == (0, 200)
            assert (cell / "stage_2" / "stage_done.json").is_file()
        else:
            assert not (cell / "stage_1").exists()
        metrics = json.loads((cell / "eval" / "test" / "metrics.json").read_text())
        assert metrics["num_gold"] == 48 and float(row["intent_accuracy"]) == metrics["intent_accuracy"]
    assert (output / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("changes", "message"), [
    ({"axes": {"text_only_fraction": [0.0, 0.5],
               "learning_rate": [{"label": "a", "overrides": {"text_only_fraction": 0.9}}]}},
     "axes learning_rate, text_only_fraction all set text_only_fraction: each recipe key may vary along one axis"),
    ({"overrides": {"max_steps": 6, "output_dir": "elsewhere"}},
     "output_dir is set by the grid itself for each cell; remove it from overrides"),
    ({"axes": {"text_only_fraction": [0.0], "resume_from_checkpoint": ["true", "false"]}, "lines": None},
     "resume_from_checkpoint is set by the grid itself for each cell; remove it from axis 'resume_from_checkpoint'"),
    ({"evaluate": {"split": "test", "model_name_or_path": "other"}},
     "model_name_or_path is set by the grid itself for each cell's evaluation"),
    ({"axes": {"../../escape": [1, 2]}, "x": "../../escape", "lines": None},
     r"axis name '../../escape' must be letters, digits"),
    ({"x": ["text_only_fraction"]}, r"`x` must be one string, got \['text_only_fraction'\]"),
    ({"base": ["recipes/tiny/slurp.yaml"]}, "`base` must be one string"),
    ({"launcher": 5}, "`launcher` must be a command, as one string or a list of strings, got 5"),
])
def test_a_grid_whose_keys_would_be_overwritten_or_are_malformed_is_refused_naming_them(tmp_path, changes, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path, **changes))


def test_a_bad_cell_value_names_the_grid_not_the_vanished_staging_file(tmp_path):
    with pytest.raises(GridError) as caught:
        grid_module.check_cells(load_grid(write_grid(tmp_path, overrides={"max_steps": "six"})))
    assert ".check.yaml" not in str(caught.value) and str(tmp_path / "grid.yaml") in str(caught.value)


def fake_commands(monkeypatch, calls: list[str], fail: str | None = None):
    """subprocess.run for a cell's two commands: training leaves train_metrics.json, evaluation metrics.json."""

    def run(command, *args, **kwargs):
        script = Path(command[1]).name
        calls.append(script)
        if script == fail:
            return subprocess.CompletedProcess(command, 1)
        if script == "sft.py":
            recipe = yaml.safe_load(Path(command[2]).read_text())
            Path(recipe["output_dir"], "train_metrics.json").write_text('{"train_loss": 2.5}')
        else:
            output = Path(command[command.index("--output_dir") + 1])
            output.mkdir(parents=True, exist_ok=True)
            (output / "metrics.json").write_text('{"slu_f1": 0.25, "intent_accuracy": 0.5, "n": 4}')
        return subprocess.CompletedProcess(command, 0)

    patch_cell_commands(monkeypatch, run)


def test_a_cell_is_trained_until_its_training_command_succeeds_then_only_evaluated(tmp_path, monkeypatch):
    """train_metrics.json alone is not "trained": a curriculum copies it into the cell before the rest of the model,
    so a cell killed then would skip training for good. The grid's own marker comes after the command's success."""
    grid = load_grid(write_grid(tmp_path, axes={"text_only_fraction": [0.0], "learning_rate": [1e-3]},
                                lines=None))
    cell = grid.cells()[0]
    calls: list[str] = []
    fake_commands(monkeypatch, calls, fail="evaluate.py")
    with pytest.raises(grid_module.CellFailed, match=f"cell {cell.name}: evaluation failed .* rerun the grid"):
        run_grid(grid.path)
    assert calls == ["sft.py", "evaluate.py"] and (cell.folder / grid_module.CELL_TRAINED).is_file()
    calls.clear()
    fake_commands(monkeypatch, calls)
    rows = run_grid(grid.path)
    assert calls == ["evaluate.py"]  # trained before: evaluated only
    assert rows == [{"cell": cell.name, "text_only_fraction": "0.0", "learning_rate": "0.001", "slu_f1": 0.25,
                     "intent_accuracy": 0.5, "train_loss": 2.5}]
    # A model whose training was cut short after train_metrics.json appeared: trained again
    (tmp_path / "b").mkdir()
    other = load_grid(write_grid(tmp_path / "b", axes={"text_only_fraction": [0.5], "learning_rate": [1e-3]},
                                 lines=None))
    folder = other.cells()[0].folder
    folder.mkdir(parents=True)
    (folder / "train_metrics.json").write_text('{"train_loss": 9.0}')
    calls.clear()
    assert run_grid(other.path)[0]["train_loss"] == 2.5 and calls == ["sft.py", "evaluate.py"]


def test_a_finished_cell_evaluated_otherwise_than_the_grid_now_asks_is_refused(tmp_path, monkeypatch):
    path = write_grid(tmp_path, axes={"text_only_fraction": [0.0], "learning_rate": [1e-3]}, lines=None)
    fake_commands(monkeypatch, [])
    run_grid(path)
    changed = write_grid(tmp_path, axes={"text_only_fraction": [0.0], "learning_rate": [1e-3]}, lines=None,
                         evaluate={"split": "test", "max_eval_samples": 100})
    with pytest.raises(GridError, match="evaluated with --split test --max_eval_samples 8 .* now gives --split test "
                       "--max_eval_samples 100"):
        run_grid(changed)


def test_a_torn_train_metrics_file_is_named(tmp_path, monkeypatch):
    path = write_grid(tmp_path, axes={"text_only_fraction": [0.0], "learning_rate": [1e-3]}, lines=None)
    cell = load_grid(path).cells()[0]
    cell.folder.mkdir(parents=True)
    (cell.folder / grid_module.CELL_TRAINED).write_text("{}")
    (cell.folder / "train_metrics.json").write_text('{"train_lo')
    fake_commands(monkeypatch, [])
    with pytest.raises(InputError, match="train_metrics.json, line 1 column 2: not valid JSON"):
        run_grid(path)


def test_a_metric_missing_from_a_finished_cell_fails_before_the_other_cells_train(tmp_path, monkeypatch):
    fake_results(tmp_path / "grid", {CELLS[1]: (0.2, 0.5)})

    def no_run(*args, **kwargs):
        raise AssertionError(f"a cell trained before the missing metric was reported: {args}")

    patch_cell_commands(monkeypatch, no_run)
    with pytest.raises(GridError, match=f"cell {CELLS[1]}: no metric slu_f2 in its results .* it has intent_accuracy, "
                       "scenario_accuracy, slu_f1: name metrics the task reports"):
        run_grid(write_grid(tmp_path, metrics=["slu_f1", "slu_f2"]))


def test_a_hub_token_in_the_grid_never_reaches_a_cells_recipe_file(tmp_path, monkeypatch):
    token = "hf_FakeGridToken0123456789abcdef"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    grid = load_grid(write_grid(tmp_path, axes={"text_only_fraction": [0.0], "learning_rate": [1e-3]}, lines=None,
                                overrides={"hub_token": token}))
    seen: list[str | None] = []
    calls: list[str] = []
    fake_commands(monkeypatch, calls)
    real_run = grid_module.subprocess.run
    monkeypatch.setattr(grid_module.subprocess, "run", lambda command, *a, **k: (
        seen.append(os.environ.get("HF_TOKEN")), real_run(command, *a, **k))[1])
    run_grid(grid.path)
    assert calls == ["sft.py", "evaluate.py"] and set(seen) == {token}  # the cell runs read it from HF_TOKEN
    written = [path for path in tmp_path.rglob("*") if path.is_file() and token in path.read_text(errors="ignore")]
    assert written == [grid.path]  # the user's own grid file only: no cell recipe, staging file or result
