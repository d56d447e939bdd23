"""Experiment grids: a base recipe under every combination of the axes' overrides, each cell trained and evaluated in
its own folder, then one table (markdown and CSV) and one plot of the chosen metrics.

Each cell's training and evaluation run as subprocesses of scripts/sft.py and scripts/evaluate.py on the cell's own
recipe file: a fresh process per cell frees the accelerator's memory and the global state a run leaves (DeepSpeed's
config, accelerate's process state), a `launcher` (`accelerate launch --config_file ...`) can spread each cell over
several GPUs while the grid itself stays one process, and the commands are those a user reruns by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import logging
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from audio_recipes.config import RECIPE_ARGUMENT_TYPES
from audio_recipes.errors import InputError, RecipeError
from audio_recipes.io import (
    changed_settings,
    numeric_metrics,
    read_json,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.recipe import load_recipe, parse_recipe, read_yaml, unknown_key_message

logger = logging.getLogger(__name__)

CELL_RECIPE = "recipe.yaml"
CELL_TRAINED = "grid_trained.json"  # written once the training command succeeded: the trained model is whole
CELL_RESULT = "result.json"  # written last, atomically: a cell that has it is finished
TRAIN_METRICS = "train_metrics.json"
# Keys the grid sets in every cell itself: an axis or block giving them would be overwritten without a word
GRID_SET_RECIPE_KEYS = ("output_dir", "resume_from_checkpoint")
GRID_SET_EVALUATE_KEYS = ("model_name_or_path", "output_dir")
TABLE_MD, TABLE_CSV, PLOT = "grid.md", "grid.csv", "grid.png"
GRID_KEYS = {"base", "output_dir", "overrides", "axes", "evaluate", "x", "lines", "metrics", "launcher"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class GridError(RecipeError):
    """A grid file that cannot be run; raised before anything trains."""


class CellFailed(InputError, RuntimeError):
    """A cell's training or evaluation command failed; the message names the cell and the command."""


@dataclass(frozen=True)
class AxisValue:
    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Cell:
    name: str
    labels: dict[str, str]  # axis -> value label
    overrides: dict[str, Any]
    folder: Path


@dataclass
class Grid:
    path: Path
    base: Path
    output_dir: Path
    overrides: dict[str, Any]
    axes: dict[str, list[AxisValue]]
    evaluate: dict[str, Any]
    x: str
    lines: str | None
    metrics: list[str]
    launcher: list[str]

    def cells(self) -> list[Cell]:
        cells = []
        for values in itertools.product(*self.axes.values()):
            labels = {axis: value.label for axis, value in zip(self.axes, values, strict=True)}
            overrides = {key: item for value in values for key, item in value.overrides.items()}
            name = "__".join(f"{axis}-{label}" for axis, label in labels.items())
            cells.append(Cell(name, labels, overrides, self.output_dir / name))
        return cells


def _axis_values(path: Path, axis: str, values: Any) -> list[AxisValue]:
    where = f"grid {path}, axis {axis!r}"
    if not isinstance(values, list) or not values:
        raise GridError(f"{where}: expected a list of values, got {values!r}")
    parsed = []
    for value in values:
        if isinstance(value, dict):
            unknown = set(value) - {"label", "overrides"}
            if unknown or "label" not in value or not isinstance(value.get("overrides", {}), dict):
                raise GridError(f"{where}: a value is a scalar (the recipe key {axis} takes it) or "
                                f"{{label: NAME, overrides: {{key: value, ...}}}}, got {value!r}")
            label, overrides = str(value["label"]), dict(value.get("overrides") or {})
        elif isinstance(value, bool | int | float | str):
            label, overrides = str(value).lower() if isinstance(value, bool) else str(value), {axis: value}
        else:
            raise GridError(f"{where}: unusable value {value!r}")
        if not LABEL.match(label):
            raise GridError(f"{where}: label {label!r} must be letters, digits, '.', '_', '+' or '-' (it names the "
                            "cell's folder)")
        parsed.append(AxisValue(label, overrides))
    labels = [value.label for value in parsed]
    if len(set(labels)) != len(labels):
        raise GridError(f"{where}: labels repeat: {labels}")
    return parsed


def _check_keys_set_once(path: Path, overrides: dict[str, Any], axes: dict[str, list[AxisValue]],
                         evaluate: dict[str, Any]) -> None:
    """No recipe key set by two axes (the later one would win unseen, two cells labelled apart training alike), nor
    a key the grid sets itself."""
    setters: dict[str, set[str]] = {}
    for axis, values in axes.items():
        for value in values:
            for key in value.overrides:
                setters.setdefault(key, set()).add(axis)
    shared = {key: sorted(axes) for key, axes in setters.items() if len(axes) > 1}
    if shared:
        raise GridError(f"grid {path}: " + "; ".join(f"axes {', '.join(names)} all set {key}"
                                                    for key, names in sorted(shared.items()))
                        + ": each recipe key may vary along one axis only")
    for key in GRID_SET_RECIPE_KEYS:
        where = ["overrides"] * (key in overrides) + [f"axis {axis!r}" for axis in sorted(setters.get(key, ()))]
        if where:
            raise GridError(f"grid {path}: {key} is set by the grid itself for each cell; remove it from "
                            f"{', '.join(where)}")
    for key in GRID_SET_EVALUATE_KEYS:
        if key in evaluate:
            raise GridError(f"grid {path}: {key} is set by the grid itself for each cell's evaluation; remove it "
                            "from the evaluate block")


def load_grid(path: str | Path, output_dir: str | Path | None = None) -> Grid:
    """Read and check a grid file (its shape, the axes named by x and lines); the overrides are checked against the
    recipe keys by check_cells."""
    path = Path(path)
    spec = read_yaml(path, "grid", GridError)
    if not isinstance(spec, dict):
        raise GridError(f"grid {path} must be a mapping with base, output_dir, axes, x, metrics")
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise GridError(f"grid {path}: unknown key(s) {', '.join(unknown)}; a grid has {', '.join(sorted(GRID_KEYS))}")
    for key in ("base", "axes", "x", "metrics"):
        if key not in spec:
            raise GridError(f"grid {path}: `{key}` is missing")
    if output_dir is None and "output_dir" not in spec:
        raise GridError(f"grid {path}: `output_dir` is missing")
    for key in ("base", "output_dir", "x", "lines"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise GridError(f"grid {path}: `{key}` must be one string, got {spec[key]!r}")
    if not isinstance(spec["axes"], dict) or not spec["axes"]:
        raise GridError(f"grid {path}: `axes` must map axis names to lists of values")
    for axis in spec["axes"]:
        if not isinstance(axis, str) or not LABEL.match(axis):
            raise GridError(f"grid {path}: axis name {axis!r} must be letters, digits, '.', '_', '+' or '-' (it "
                            "names the cells' folders)")
    axes = {axis: _axis_values(path, axis, values) for axis, values in spec["axes"].items()}
    for key in ("x", "lines"):
        if spec.get(key) is not None and spec[key] not in axes:
            raise GridError(f"grid {path}: {key} {spec[key]!r} is not an axis; the axes: {', '.join(axes)}")
    if spec.get("lines") == spec["x"]:
        raise GridError(f"grid {path}: x and lines are both {spec['x']!r}: give lines another axis")
    metrics = spec["metrics"] if isinstance(spec["metrics"], list) else [spec["metrics"]]
    if not metrics or not all(isinstance(metric, str) for metric in metrics):
        raise GridError(f"grid {path}: `metrics` must be a list of metric names, got {spec['metrics']!r}")
    evaluate = spec.get("evaluate") or {}
    if not isinstance(evaluate, dict) or not all(isinstance(v, bool | int | float | str) for v in evaluate.values()):
        raise GridError(f"grid {path}: `evaluate` must map evaluate.py options to single values, got {evaluate!r}")
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise GridError(f"grid {path}: `overrides` must map recipe keys to values, got {overrides!r}")
    _check_keys_set_once(path, overrides, axes, evaluate)
    launcher = spec.get("launcher") or [sys.executable]
    if not isinstance(launcher, str) and not (isinstance(launcher, list)
                                              and all(isinstance(part, str) for part in launcher)):
        raise GridError(f"grid {path}: `launcher` must be a command, as one string or a list of strings, got "
                        f"{launcher!r}")
    launcher = shlex.split(launcher) if isinstance(launcher, str) else launcher
    return Grid(path, Path(spec["base"]), Path(output_dir or spec["output_dir"]), overrides, axes, evaluate,
                spec["x"], spec.get("lines"), metrics, launcher)


def cell_recipe(grid: Grid, cell: Cell) -> dict[str, Any]:
    """The base recipe with the grid's and the cell's overrides merged in, training into the cell's folder; it
    resumes from the cell's last checkpoint where the recipe saves checkpoints."""
    recipe = {**load_recipe(grid.base), **grid.overrides, **cell.overrides, "output_dir": str(cell.folder)}
    token = recipe.pop("hub_token", None)  # the cell's recipe file is on disk: its run reads HF_TOKEN instead
    if token:
        os.environ["HF_TOKEN"] = token
    if str(recipe.get("save_strategy", "steps")) != "no":
        recipe["resume_from_checkpoint"] = "true"  # a string: the recipe key is one (a path or "true")
    return recipe


def evaluate_arguments(grid: Grid, cell: Cell) -> list[str]:
    split = str(grid.evaluate.get("split", "test"))
    options = {"split": split, **grid.evaluate, "model_name_or_path": str(cell.folder),
               "output_dir": str(cell.folder / "eval" / split)}
    return [part for key, value in options.items()
            for part in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))]


def check_cells(grid: Grid) -> None:
    """Every override key a recipe key, every cell's recipe parsed (types, ranges, allowed values), and no cell
    folder holding a recipe other than its own, before anything trains."""
    known = sorted({field.name for cls in RECIPE_ARGUMENT_TYPES for field in dataclasses.fields(cls) if field.init})
    for key in grid.overrides:
        if key not in known:
            raise GridError(unknown_key_message(key, known, f"in the overrides of grid {grid.path}"))
    for axis, values in grid.axes.items():
        for value in values:
            for key in value.overrides:
                if key not in known:
                    raise GridError(unknown_key_message(
                        key, known, f"in grid {grid.path}, axis {axis!r}, value {value.label!r} (cells "
                        f"{', '.join(c.name for c in grid.cells() if c.labels[axis] == value.label)})"))
    for key in grid.evaluate:
        if key not in known:
            raise GridError(unknown_key_message(key, known, f"in the evaluate block of grid {grid.path}"))
    for cell in grid.cells():
        recipe = cell_recipe(grid, cell)
        written = cell.folder / CELL_RECIPE
        if written.is_file():
            before = {k: v for k, v in load_recipe(written).items() if k != "hub_token"}  # written before it was left out
            changed = changed_settings(before, recipe)
            if changed:
                raise GridError(f"cell {cell.name}: {written} holds another recipe (differs in {', '.join(changed)})"
                                f": the grid changed since the cell ran; remove {cell.folder} or name another "
                                "output_dir")
        result = cell.folder / CELL_RESULT
        finished = read_json(result) if result.is_file() else {}
        missing = [metric for metric in grid.metrics if metric not in finished.get("metrics", {metric: None})]
        if missing:  # known now, not after the cells still to run have trained
            raise GridError(f"cell {cell.name}: no metric {', '.join(missing)} in its results ({result}); it has "
                            f"{', '.join(sorted(finished['metrics']))}: name metrics the task reports in the grid's "
                            "`metrics`")
        evaluated_with = finished.get("evaluate")
        if evaluated_with is not None and evaluated_with != evaluate_arguments(grid, cell):
            raise GridError(f"cell {cell.name}: evaluated with {shlex.join(evaluated_with)}, the grid's evaluate block "
                            f"now gives {shlex.join(evaluate_arguments(grid, cell))}: the table would mix the two; "
                            f"remove {result} and {cell.folder / 'eval'} to evaluate it again, or name another "
                            "output_dir")
        staging = cell.folder.parent / f".{cell.name}.check.yaml"
        staging.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(staging, yaml.safe_dump(recipe, sort_keys=False))
        try:
            parse_recipe(RECIPE_ARGUMENT_TYPES, [str(staging), *evaluate_arguments(grid, cell)])
        except RecipeError as error:  # named by the grid and cell: the staging file is gone once this is read
            message = str(error).replace(str(staging), f"the recipe of cell {cell.name} (grid {grid.path})")
            raise GridError(f"cell {cell.name}: {message}") from None
        finally:
            staging.unlink()


def run_command(command: list[str], cell: Cell, what: str) -> None:
    logger.info("cell %s: %s: %s", cell.name, what, shlex.join(command))
    completed = subprocess.run(command)
    if completed.returncode:
        raise CellFailed(f"cell {cell.name}: {what} failed (exit status {completed.returncode}): "
                         f"{shlex.join(command)}; rerun the grid to resume it")


def run_cell(grid: Grid, cell: Cell) -> dict[str, Any]:
    """Train (unless trained), evaluate (resuming its rows), then write the cell's result last."""
    recipe_path = cell.folder / CELL_RECIPE
    cell.folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(recipe_path, f"# Cell {cell.name} of grid {grid.path}: {grid.base} with the overrides below\n"
                      + yaml.safe_dump(cell_recipe(grid, cell), sort_keys=False))
    trained = cell.folder / CELL_TRAINED
    if not trained.is_file():  # an interrupted training (or copy of the final model) runs again, resuming
        command = [*grid.launcher, str(PROJECT_ROOT / "scripts" / "sft.py"), str(recipe_path)]
        run_command(command, cell, "training")
        write_json_atomic(trained, {"command": command})
    evaluate = evaluate_arguments(grid, cell)
    run_command([*grid.launcher, str(PROJECT_ROOT / "scripts" / "evaluate.py"), str(recipe_path), *evaluate], cell,
                "evaluation")
    split = str(grid.evaluate.get("split", "test"))
    metrics = read_json(cell.folder / "eval" / split / "metrics.json")
    train = read_json(cell.folder / TRAIN_METRICS)
    result = {"cell": cell.name, "axes": cell.labels, "overrides": cell.overrides, "evaluate": evaluate,
              "metrics": numeric_metrics(metrics), "train_loss": train.get("train_loss")}
    write_json_atomic(cell.folder / CELL_RESULT, result)
    return result


def read_results(grid: Grid) -> list[dict[str, Any]]:
    """The finished cells' results, in grid order."""
    return [read_json(cell.folder / CELL_RESULT) for cell in grid.cells() if (cell.folder / CELL_RESULT).is_file()]


def table_rows(grid: Grid, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished cell: its name, each axis's label, each metric, the training loss."""
    rows = []
    for result in results:
        missing = [metric for metric in grid.metrics if metric not in result["metrics"]]
        if missing:
            raise GridError(f"cell {result['cell']}: no metric {', '.join(missing)} in its results; it has "
                            f"{', '.join(sorted(result['metrics']))}")
        rows.append({"cell": result["cell"], **result["axes"],
                     **{metric: result["metrics"][metric] for metric in grid.metrics},
                     "train_loss": result.get("train_loss")})
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def markdown_table(grid: Grid, rows: list[dict[str, Any]]) -> str:
    columns = ["cell", *grid.axes, *grid.metrics, "train_loss"]
    lines = [f"# Grid {grid.path}: {len(rows)} of {len(grid.cells())} cells", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_shown(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(grid: Grid, rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["cell", *grid.axes, *grid.metrics, "train_loss"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _number(label: str) -> float | None:
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def spans_decades(values: list[float]) -> bool:
    """Whether non-negative x values span two or more orders of magnitude (a log-like axis shows them apart)."""
    positive = [value for value in values if value > 0]
    return (len(positive) >= 2 and all(value >= 0 for value in values)
            and max(positive) / min(positive) >= 100)


def plot(grid: Grid, rows: list[dict[str, Any]], path: Path) -> Path:
    """One subplot per metric: the metric against the x axis's values (numbers where every label is one, else its
    labels in grid order), one line per value of the other axes (`lines` first)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a cluster node
    import matplotlib.pyplot as plt

    x_labels = [value.label for value in grid.axes[grid.x]]
    numeric = all(_number(label) is not None for label in x_labels)
    position = {label: (_number(label) if numeric else index) for index, label in enumerate(x_labels)}
    others = ([grid.lines] if grid.lines else []) + [axis for axis in grid.axes if axis not in (grid.x, grid.lines)]
    figure, subplots = plt.subplots(1, len(grid.metrics), figsize=(5 * len(grid.metrics), 4), squeeze=False)
    for axes, metric in zip(subplots[0], grid.metrics, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            name = ", ".join(f"{axis}={row[axis]}" for axis in others) or metric
            lines.setdefault(name, []).append((position[row[grid.x]], row[metric]))
        for name, points in lines.items():
            points.sort()
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        if not numeric:
            axes.set_xticks(range(len(x_labels)), x_labels)
        elif spans_decades(list(position.values())):
            # Speech fractions 0.01 ... 1 crowd a linear axis; symlog keeps 0 and spaces the small ones
            positive = [value for value in position.values() if value > 0]
            axes.set_xscale("symlog", linthresh=min(positive))
            axes.set_xticks(list(position.values()), x_labels)
        axes.set_xlabel(grid.x)
        axes.set_ylabel(metric)
        axes.set_title(metric)
        axes.grid(alpha=0.3)
        if len(lines) > 1:
            axes.legend(fontsize="small")
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
    return path


def write_report(grid: Grid) -> list[dict[str, Any]]:
    """The table (markdown and CSV) and the plot of the finished cells, each written atomically."""
    rows = table_rows(grid, read_results(grid))
    grid.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(grid.output_dir / TABLE_MD, markdown_table(grid, rows))
    write_text_atomic(grid.output_dir / TABLE_CSV, csv_table(grid, rows))
    if rows:
        plot(grid, rows, grid.output_dir / PLOT)
    return rows


def run_grid(path: str | Path, output_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every cell not finished yet trained and evaluated, then the table and the plot; returns the table's rows."""
    grid = load_grid(path, output_dir)
    check_cells(grid)
    cells = grid.cells()
    for number, cell in enumerate(cells, start=1):
        if (cell.folder / CELL_RESULT).is_file():
            logger.info("cell %d/%d %s: finished, skipped", number, len(cells), cell.name)
            continue
        logger.info("cell %d/%d %s", number, len(cells), cell.name)
        run_cell(grid, cell)
        write_report(grid)  # the table so far, readable while the next cells run
    return write_report(grid)
