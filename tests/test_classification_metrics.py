"""Classification statistics against hand-computed values, scipy and statsmodels."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from audio_recipes.metrics.classification import (
    INVALID,
    bootstrap_ci,
    calibration_metrics,
    classification_metrics,
    expected_calibration_error,
    fit_logistic,
    mcnemar_exact,
    psychometric_fit,
)

LABELS = ("SPEECH", "NONSPEECH")


def test_counts_precision_recall_f1_and_invalid_by_hand():
    true = ["SPEECH"] * 5 + ["NONSPEECH"] * 5
    pred = ["SPEECH", "SPEECH", "SPEECH", "NONSPEECH", INVALID, "SPEECH", "NONSPEECH", "NONSPEECH", "NONSPEECH", "oops"]
    m = classification_metrics(true, pred, LABELS, positive="SPEECH")
    # SPEECH: 3 right of 5; predicted SPEECH 4 times (3 right); NONSPEECH: 3 right of 5, predicted 4 times
    assert m["confusion_matrix"] == {"SPEECH": {"SPEECH": 3, "NONSPEECH": 1, INVALID: 1},
                                     "NONSPEECH": {"SPEECH": 1, "NONSPEECH": 3, INVALID: 1}}
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["num_invalid_outputs"] == 2
    assert m["SPEECH_accuracy"] == m["SPEECH_recall"] == pytest.approx(3 / 5)
    assert m["SPEECH_precision"] == pytest.approx(3 / 4)
    assert m["SPEECH_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["NONSPEECH_precision"] == pytest.approx(3 / 4)
    assert (m["precision"], m["recall"], m["f1"]) == (m["SPEECH_precision"], m["SPEECH_recall"], m["SPEECH_f1"])
    assert m["macro_f1"] == pytest.approx((m["SPEECH_f1"] + m["NONSPEECH_f1"]) / 2)
    with pytest.raises(ValueError, match="true label 'x'"):
        classification_metrics(["x"], ["SPEECH"], LABELS)


def test_expected_calibration_error_by_hand():
    confidence = [0.95, 0.95, 0.65, 0.65, 0.55, 0.0]
    correct = [True, False, True, True, False, False]
    # bins (0.9, 1]: acc 0.5 vs 0.95; (0.6, 0.7]: acc 1 vs 0.65; (0.5, 0.6]: 0 vs 0.55; [0, 0.1]: 0 vs 0
    expected = 2 / 6 * 0.45 + 2 / 6 * 0.35 + 1 / 6 * 0.55 + 1 / 6 * 0.0
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)
    # a confidence on a bin edge belongs to the bin below: 0.7 and 0.65 share (0.6, 0.7]
    assert expected_calibration_error([0.7, 0.65], [True, False]) == pytest.approx(abs(0.5 - 0.675))
    calibration = calibration_metrics([0.9, 0.7, float("nan"), 0.6], [True, False, False, True])
    assert calibration["num_with_confidence"] == 3  # the item without a confidence is left out of calibration only
    assert calibration["mean_confidence_correct"] == pytest.approx(0.75)
    assert calibration["mean_confidence_wrong"] == pytest.approx(0.7)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (7, 2), (12, 11), (40, 25), (5, 5)])
def test_mcnemar_exact_equals_statsmodels(b, c):
    both, neither = 20, 4
    first = [True] * both + [True] * b + [False] * c + [False] * neither
    second = [True] * both + [False] * b + [True] * c + [False] * neither
    result = mcnemar_exact(first, second)
    assert (result.only_first_correct, result.only_second_correct) == (b, c)
    reference = mcnemar([[both, b], [c, neither]], exact=True).pvalue
    assert result.p_value == pytest.approx(reference, abs=1e-12)
    if b + c:
        assert result.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, abs=1e-12)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (0, 1), (600, 423), (0, 1023), (612, 412), (1, 1023), (0, 1024),
                                 (2400, 2600), (0, 5000), (49_000, 51_000), (50_000, 50_000), (0, 100_000)])
def test_mcnemar_exact_on_many_discordant_pairs_equals_statsmodels(b, c):
    # b + c in {0, 1, 1023, 1024, 5000, 100000}: the sum over 2.0 ** (b + c) overflowed from 1024 on
    first = [True] * b + [False] * c + [True, False]
    second = [False] * b + [True] * c + [True, False]
    result = mcnemar_exact(first, second)
    reference = mcnemar([[1, b], [c, 1]], exact=True).pvalue
    assert (result.only_first_correct, result.only_second_correct) == (b, c)
    assert result.p_value == pytest.approx(reference, rel=1e-12, abs=1e-300)
    assert 0.0 <= result.p_value <= 1.0


def test_bootstrap_interval_agrees_with_scipy_and_the_normal_approximation():
    rng = np.random.default_rng(1)
    correct = rng.random(400) < 0.7
    low, high = bootstrap_ci(correct, num_resamples=5000, seed=3)
    reference = stats.bootstrap((correct.astype(float),), np.mean, n_resamples=5000, method="percentile",
                                confidence_level=0.95, rng=np.random.default_rng(3)).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.01) and high == pytest.approx(reference.high, abs=0.01)
    p, se = correct.mean(), math.sqrt(correct.mean() * (1 - correct.mean()) / correct.size)
    assert low == pytest.approx(p - 1.96 * se, abs=0.012) and high == pytest.approx(p + 1.96 * se, abs=0.012)
    assert bootstrap_ci(correct, num_resamples=1000, seed=3) == bootstrap_ci(correct, num_resamples=1000, seed=3)
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)


def psychometric_data(seed=0):
    rng = np.random.default_rng(seed)
    durations = np.repeat([200, 400, 600, 800, 1000], 1000)
    true_p = 0.5 + 0.5 / (1 + np.exp(-(-18 + 3.0 * np.log(durations))))  # from chance; crosses 75 % at 403 ms
    return durations, rng.random(durations.size) < true_p


def test_logistic_fit_without_a_floor_equals_statsmodels_glm():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    durations = np.repeat([200, 400, 600, 800, 1000], 100)
    correct = rng.random(durations.size) < 1 / (1 + np.exp(-(-18 + 3.0 * np.log(durations))))
    intercept, slope, converged = fit_logistic(np.log(durations), correct)
    reference = sm.GLM(correct.astype(float), sm.add_constant(np.log(durations)), family=sm.families.Binomial()).fit()
    assert converged
    np.testing.assert_allclose([intercept, slope], reference.params, rtol=1e-6)


def test_psychometric_fit_rises_from_chance_on_a_hand_computed_curve():
    # 11, 15 and 19 of 20 right at 100, 200, 400 ms: 0.55, 0.75, 0.95 lie on 0.5 + 0.5 * sigmoid(b * log(d / 200))
    # with b = log(9) / log(2) (sigmoid 0.1, 0.5, 0.9), so that curve is the maximum-likelihood fit, crossing 75 %
    # at 200 ms. A logistic from 0 (logits 0.20, 1.10, 2.94: not on a line) put the crossing below 200 ms.
    durations = np.repeat([100, 200, 400], 20)
    correct = np.concatenate([np.arange(20) < right for right in (11, 15, 19)])
    fit = psychometric_fit(durations, correct, target=0.75)
    assert fit.converged and fit.note == "" and fit.chance == 0.5
    assert fit.slope == pytest.approx(math.log(9) / math.log(2), rel=1e-6)
    assert fit.intercept == pytest.approx(-math.log(9) / math.log(2) * math.log(200), rel=1e-6)
    assert fit.threshold_ms == pytest.approx(200, rel=1e-6)
    np.testing.assert_allclose(fit.predict(np.array([100, 200, 400, 1e9])), [0.55, 0.75, 0.95, 1.0], rtol=1e-6)


def test_psychometric_fit_is_the_maximum_likelihood_curve_from_chance():
    from scipy.optimize import minimize

    durations, correct = psychometric_data()
    x = np.log(durations)

    def negative_log_likelihood(beta):
        p = 0.5 + 0.5 / (1 + np.exp(-(beta[0] + beta[1] * x)))
        return -np.sum(np.where(correct, np.log(p), np.log(1 - p)))

    reference = minimize(negative_log_likelihood, [-10.0, 1.0], method="Nelder-Mead",
                         options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20_000}).x
    fit = psychometric_fit(durations, correct, target=0.75)
    assert fit.converged and fit.note == ""
    np.testing.assert_allclose([fit.intercept, fit.slope], reference, rtol=1e-4)
    assert fit.predict(np.array([fit.threshold_ms]))[0] == pytest.approx(0.75, abs=1e-9)
    assert fit.threshold_ms == pytest.approx(403, rel=0.05)  # the curve the data were drawn from
    # a logistic from 0 bends to reach the below-75 % cells sooner: its crossing is biased short
    assert psychometric_fit(durations, correct, target=0.75, chance=0.0).threshold_ms < 0.9 * 403


def test_psychometric_fit_says_why_there_is_no_threshold():
    durations = np.repeat([200, 400, 600], 10)
    assert psychometric_fit(durations, np.ones(30, bool)).note.startswith("all right or all wrong")
    separable = durations >= 400
    assert psychometric_fit(durations, separable).note.startswith("no finite maximum-likelihood fit")
    falling = np.array([k < right for right in (9, 8, 6) for k in range(10)])  # 90 %, 80 %, 60 % right
    fit = psychometric_fit(durations, falling)
    assert fit.slope < 0 and fit.threshold_ms is None and "does not rise" in fit.note
    assert psychometric_fit([400] * 5, [True, False] * 2 + [True]).note == "needs at least two durations"
    with pytest.raises(ValueError, match="between chance"):
        psychometric_fit(durations, falling, target=0.5)


def test_nearly_flat_psychometric_curve_has_no_threshold_instead_of_overflowing():
    durations = [200, 200, 400, 400, 600, 600, 800, 800, 1000, 1000] * 2
    correct = [False, False, False, False, False, False, False, True, False, True,
               True, True, True, True, True, True, True, False, False, True]
    fit = psychometric_fit(durations, correct, 0.75)
    assert fit.threshold_ms is None or 200 / 1e9 < fit.threshold_ms < 200 * 1e9
    flat = np.array([k < right for right in (600, 601) for k in range(1000)])  # 60.0 % then 60.1 % right
    fit = psychometric_fit(np.repeat([200, 1000], 1000), flat)
    assert 0 < fit.slope < 0.01 and fit.threshold_ms is None and fit.note.startswith("nearly flat")
