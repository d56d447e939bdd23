"""Speech detection's tables and metrics: the data and prediction tables, and every metric of the report (overall,
by duration and SNR, calibration, latency), shared by the task and its report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from audio_recipes.errors import DataError
from audio_recipes.io import read_text
from audio_recipes.metrics.classification import bootstrap_ci, calibration_metrics, classification_metrics
from audio_recipes.tasks.speech_detection.builder import LABELS

REQUIRED_COLUMNS = ("segment_id", "path", "label", "duration_ms", "snr_db", "dataset", "split")
PREDICTION_COLUMNS = ("segment_id", "true_label", "pred_label", "confidence", "latency_ms", "duration_ms", "snr_db",
                      "dataset", "condition", "raw_output")
POSITIVE = "SPEECH"


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(io.StringIO(read_text(path)))
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: not a readable CSV or parquet table ({error})") from error
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks column(s) {', '.join(missing)} (expected at least {', '.join(REQUIRED_COLUMNS)})")
    return table


def read_predictions_table(path: str | Path) -> pd.DataFrame:
    """A predictions.parquet as evaluation writes it; another file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    try:
        table = pd.read_parquet(path)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: not a readable parquet table ({error})") from error
    missing = [column for column in PREDICTION_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks column(s) {', '.join(missing)} (a speech_detection prediction "
                        f"file has {', '.join(PREDICTION_COLUMNS)})")
    return table


def group_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, per-class accuracy, precision, recall, F1 and confusion matrix of a set of prediction rows."""
    return classification_metrics(list(table["true_label"]), list(table["pred_label"]), LABELS, positive=POSITIVE)


def score_detection(table: pd.DataFrame, num_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every metric of the report from predictions.parquet rows: overall, by duration, by SNR; calibration; latency."""
    correct = (table["true_label"] == table["pred_label"]).to_numpy()
    metrics = group_metrics(table)
    low, high = bootstrap_ci(correct, num_resamples=num_bootstrap, seed=seed)
    metrics["accuracy_ci95_low"], metrics["accuracy_ci95_high"] = low, high
    metrics.update(calibration_metrics(table["confidence"].tolist(), correct))
    latency = table["latency_ms"].dropna()
    metrics["latency_ms_mean"] = float(latency.mean()) if len(latency) else None
    metrics["latency_ms_median"] = float(latency.median()) if len(latency) else None
    for column, key in (("duration_ms", "by_duration_ms"), ("snr_db", "by_snr_db")):
        metrics[key] = {f"{value:g}": group_metrics(group) for value, group in table.groupby(column, sort=True)}
    return metrics
