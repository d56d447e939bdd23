"""Classification statistics: accuracy, per-class precision / recall / F1, confusion, calibration,
bootstrap confidence intervals, McNemar's exact test and psychometric fits (logistic, rising from chance).

Invalid predictions (an output that names no label) stay in every count: they are wrong for accuracy
and recall, and appear as their own column of the confusion matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

INVALID = "INVALID"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def confusion_matrix(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{true label: {predicted label or INVALID: count}}; a prediction outside `labels` counts as INVALID."""
    matrix = {t: {p: 0 for p in (*labels, INVALID)} for t in labels}
    for t, p in zip(true, pred, strict=True):
        if t not in matrix:
            raise ValueError(f"true label {t!r} is not one of {list(labels)}")
        matrix[t][p if p in labels else INVALID] += 1
    return matrix


def classification_metrics(
    true: Sequence[str], pred: Sequence[str], labels: Sequence[str], positive: str | None = None
) -> dict:
    """Accuracy, per-class accuracy (= recall), precision, recall, F1, macro-F1 and the confusion matrix.

    `positive` names the class whose precision / recall / F1 are also given as the headline
    `precision`, `recall`, `f1` (e.g. SPEECH for speech detection).
    """
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions")
    matrix = confusion_matrix(true, pred, labels)
    total = len(true)
    correct = sum(matrix[label][label] for label in labels)
    metrics: dict = {"num_items": total, "accuracy": _ratio(correct, total),
                     "num_invalid_outputs": sum(row[INVALID] for row in matrix.values())}
    f1s = []
    for label in labels:
        true_positive = matrix[label][label]
        predicted = sum(matrix[t][label] for t in labels)
        actual = sum(matrix[label].values())
        precision, recall = _ratio(true_positive, predicted), _ratio(true_positive, actual)
        f1 = _ratio(2 * precision * recall, precision + recall)
        f1s.append(f1)
        metrics[f"{label}_accuracy"] = recall  # per-class accuracy: the share of that class answered right
        metrics[f"{label}_precision"], metrics[f"{label}_recall"], metrics[f"{label}_f1"] = precision, recall, f1
        metrics[f"{label}_count"] = actual
    metrics["macro_f1"] = sum(f1s) / len(f1s)
    if positive is not None:
        metrics["precision"] = metrics[f"{positive}_precision"]
        metrics["recall"] = metrics[f"{positive}_recall"]
        metrics["f1"] = metrics[f"{positive}_f1"]
    metrics["confusion_matrix"] = matrix
    return metrics


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], num_bins: int = 10) -> float:
    """ECE with equal-width bins on [0, 1]: sum over bins of (bin share) x |accuracy - mean confidence|.

    A confidence of exactly 0 falls in the first bin; bins are (lo, hi] otherwise.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    if np.any((confidence < 0) | (confidence > 1)) or np.any(np.isnan(confidence)):
        raise ValueError("confidences must lie in [0, 1]")
    # searchsorted on the edges, not ceil(c * bins): 0.7 * 10 is 7.000000000000001 in floating point
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def calibration_metrics(confidence: Sequence[float | None], correct: Sequence[bool], num_bins: int = 10) -> dict:
    """ECE and mean confidence when right and when wrong, over the items that have a confidence."""
    pairs = [(float(c), bool(k)) for c, k in zip(confidence, correct, strict=True)
             if c is not None and not math.isnan(float(c))]
    if not pairs:
        return {"ece": None, "mean_confidence_correct": None, "mean_confidence_wrong": None, "num_with_confidence": 0}
    conf = np.array([c for c, _ in pairs])
    right = np.array([k for _, k in pairs])
    return {
        "ece": expected_calibration_error(conf, right, num_bins),
        "mean_confidence_correct": float(conf[right].mean()) if right.any() else None,
        "mean_confidence_wrong": float(conf[~right].mean()) if (~right).any() else None,
        "num_with_confidence": len(pairs),
    }


def bootstrap_ci(
    correct: Sequence[bool], num_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of accuracy (resampling items with replacement)."""
    values = np.asarray(correct, dtype=np.float64)
    if values.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, 500):  # chunks keep memory flat for large test sets
        stop = min(start + 500, num_resamples)
        means[start:stop] = values[rng.integers(0, values.size, (stop - start, values.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class McNemarResult:
    only_first_correct: int  # b: the first system right, the second wrong
    only_second_correct: int  # c
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's exact test on paired outcomes: two-sided binomial test of b against Binomial(b + c, 1/2)."""
    first = np.asarray(first_correct, dtype=bool)
    second = np.asarray(second_correct, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired outcomes differ in length: {first.size} and {second.size}")
    from scipy.stats import binomtest

    b = int(np.sum(first & ~second))
    c = int(np.sum(~first & second))
    if b + c == 0:
        return McNemarResult(b, c, 1.0)
    # scipy's binomial test, not a sum over 2.0 ** n: that float overflows from 1024 discordant pairs on
    return McNemarResult(b, c, min(1.0, float(binomtest(min(b, c), b + c, 0.5).pvalue)))


@dataclass
class LogisticFit:
    """P(correct) = chance + (1 - chance) / (1 + exp(-(intercept + slope * log(duration_ms)))).

    `chance` is the guessing floor (0.5 for a two-way task): a listener who hears nothing is still right half the
    time, so the curve rises from chance, not from 0, and `target` is read on that curve.
    """

    intercept: float | None
    slope: float | None
    threshold_ms: float | None  # duration at which the curve crosses `target`
    target: float
    converged: bool
    note: str = ""
    chance: float = 0.5

    def predict(self, duration_ms: np.ndarray) -> np.ndarray:
        if self.intercept is None or self.slope is None:
            return np.full(np.shape(duration_ms), np.nan)
        rise = 1.0 / (1.0 + np.exp(-(self.intercept + self.slope * np.log(duration_ms))))
        return self.chance + (1.0 - self.chance) * rise

    def to_dict(self) -> dict:
        return asdict(self)


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -eta))  # 1 / (1 + exp(-eta)) without overflow for large |eta|


def fit_logistic(x: np.ndarray, y: np.ndarray, max_iterations: int = 100, tolerance: float = 1e-10,
                 chance: float = 0.0):
    """Maximum-likelihood fit of P(y) = chance + (1 - chance) * sigmoid(intercept + slope * x) by Fisher scoring
    with step halving (with chance 0: logistic regression by IRLS).

    Returns (intercept, slope, converged); (None, None, False) where no finite fit exists (separable data, or data
    at or below chance where the curve must start).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance must lie in [0, 1), got {chance}")
    design = np.column_stack([np.ones_like(x), x])

    def log_likelihood(beta: np.ndarray) -> float:
        eta = design @ beta
        p = chance + (1 - chance) * _sigmoid(eta)
        miss = (1 - chance) * _sigmoid(-eta)  # 1 - p, computed apart so that it does not round to 0
        return float(np.sum(y * np.log(np.maximum(p, 1e-300)) + (1 - y) * np.log(np.maximum(miss, 1e-300))))

    beta = np.zeros(2)
    current = log_likelihood(beta)
    for _ in range(max_iterations):
        eta = design @ beta
        rise, fall = _sigmoid(eta), _sigmoid(-eta)
        p = chance + (1 - chance) * rise
        # d p / d eta = (1 - chance) * rise * fall and p (1 - p) = p * (1 - chance) * fall: their ratio is rise / p
        weights = (1 - chance) * rise * fall * rise / p
        information = design.T @ (design * weights[:, None])
        if not np.all(np.isfinite(information)) or np.linalg.cond(information) > 1e12:
            return None, None, False
        step = np.linalg.solve(information, design.T @ ((y - p) * rise / p))
        scale = 1.0
        while (candidate := log_likelihood(beta + scale * step)) < current and scale > 1e-10:
            scale /= 2  # a full Fisher step can overshoot away from the logistic case
        beta, current = beta + scale * step, candidate
        if np.max(np.abs(scale * step)) < tolerance:
            return float(beta[0]), float(beta[1]), True
    return None, None, False


def psychometric_fit(duration_ms: Sequence[float], correct: Sequence[bool], target: float = 0.75,
                     chance: float = 0.5) -> LogisticFit:
    """Fit of correctness against log duration rising from `chance` (1 / number of labels); the duration where it
    crosses `target`."""
    if not chance < target < 1:
        raise ValueError(f"target {target} must lie between chance ({chance}) and 1")
    durations = np.asarray(duration_ms, dtype=np.float64)
    outcomes = np.asarray(correct, dtype=np.float64)

    def no_fit(note: str, intercept=None, slope=None, converged=False) -> LogisticFit:
        return LogisticFit(intercept, slope, None, target, converged, note, chance)

    if durations.size == 0 or np.unique(durations).size < 2:
        return no_fit("needs at least two durations")
    if outcomes.min() == outcomes.max():
        return no_fit("all right or all wrong: no curve to fit")
    intercept, slope, converged = fit_logistic(np.log(durations), outcomes, chance=chance)
    if not converged:
        return no_fit("no finite maximum-likelihood fit: separable data, or accuracy at or below chance")
    if slope <= 0:  # a psychometric threshold needs accuracy that rises with duration
        return no_fit("accuracy does not rise with duration", intercept, slope, True)
    rise = (target - chance) / (1 - chance)  # the share of the way from chance to 1 that `target` is
    log_threshold = (math.log(rise / (1 - rise)) - intercept) / slope
    if abs(log_threshold) > 50:  # a nearly flat curve crosses at an absurd duration (and exp would overflow)
        return no_fit("nearly flat curve: no crossing at any real duration", intercept, slope, True)
    threshold = math.exp(log_threshold)
    note = "" if durations.min() <= threshold <= durations.max() else "crossing outside the tested durations"
    return LogisticFit(intercept, slope, threshold, target, True, note, chance)
