"""The speech detection report's psychometric plot reads well: plain ms ticks, labelled reference lines, SNRs
told apart by marker and position, fitted curves drawn (and the ones that cannot be fitted named)."""

import matplotlib
import numpy as np
import pandas as pd

from audio_recipes.tasks.speech_detection.report import (
    PSYCHOMETRIC_PNG,
    psychometric,
    psychometric_figure,
    write_detection_report,
)

matplotlib.use("Agg")

DURATIONS, SNRS = (200, 400, 600, 800, 1000), (0, 5, 10, 15, 20)


def predictions(system_offset: float, seed: int) -> pd.DataFrame:
    """20 clips per (duration, SNR), right more often when longer and cleaner."""
    rng = np.random.default_rng(seed)
    rows = [{"segment_id": f"{duration}-{snr}-{index}", "true_label": "SPEECH" if index % 2 else "NONSPEECH",
             "duration_ms": duration, "snr_db": snr, "confidence": 0.8, "latency_ms": 5.0, "dataset": "synthetic",
             "condition": f"{duration}-{snr}", "raw_output": "A"}
            for duration in DURATIONS for snr in SNRS for index in range(20)]
    table = pd.DataFrame(rows)
    logit = -6 + system_offset + 1.2 * np.log(table["duration_ms"]) + 0.1 * table["snr_db"]
    right = rng.random(len(table)) < 0.5 + 0.5 / (1 + np.exp(-logit))
    wrong_label = np.where(table["true_label"] == "SPEECH", "NONSPEECH", "SPEECH")
    return table.assign(pred_label=np.where(right, table["true_label"], wrong_label))


def test_psychometric_plot_has_plain_ms_ticks_labelled_references_and_distinct_snrs(tmp_path):
    systems = {"finetuned": predictions(0.0, seed=0), "perfect": predictions(0.0, seed=1).assign(
        pred_label=lambda table: table["true_label"])}
    points, fits = psychometric(systems)
    figure = psychometric_figure(points, fits)
    finetuned, perfect = figure.axes
    for axis in (finetuned, perfect):
        figure.canvas.draw()
        assert [tick.get_text() for tick in axis.get_xticklabels()] == [str(d) for d in DURATIONS]
        assert not [tick for tick in axis.get_xticklabels(minor=True) if tick.get_text()]
        assert axis.get_xlabel() == "duration (ms)"
        assert sorted(line.get_ydata()[0] for line in axis.get_lines() if line.get_gid() is None) == [0.5, 0.75]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [f"{snr} dB" for snr in SNRS] + ["75 % (threshold)", "50 % (chance)"]

    observed = {line.get_gid(): line for line in finetuned.get_lines() if (line.get_gid() or "").startswith("obs")}
    assert len({line.get_marker() for line in observed.values()}) == len(SNRS)  # a marker and a colour per SNR
    assert len({tuple(line.get_color()) for line in observed.values()}) == len(SNRS)
    first_points = sorted(line.get_xdata()[0] for line in observed.values())  # all at 200 ms, side by side
    assert len(set(first_points)) == len(SNRS) and 180 < first_points[0] < 200 < first_points[-1] < 220
    curves = [line for line in finetuned.get_lines() if (line.get_gid() or "").startswith("fit")]
    fitted = [snr for snr in SNRS if fits["finetuned"][f"{snr}"]["intercept"] is not None]
    assert fitted and len(curves) == len(fitted)
    assert all(fits["finetuned"][f"{snr}"]["chance"] == 0.5 for snr in SNRS)  # two labels: curves rise from 50 %
    assert all(min(line.get_ydata()) > 0.5 for line in curves)
    assert len({tuple(line.get_color()) for line in curves}) == len(curves)
    # All right at every SNR: nothing to fit, which the panel says
    assert not [line for line in perfect.get_lines() if (line.get_gid() or "").startswith("fit")]
    assert "no fitted curve: 0 dB, 5 dB, 10 dB, 15 dB, 20 dB" in perfect.get_title()

    write_detection_report(tmp_path, systems)
    assert (tmp_path / PSYCHOMETRIC_PNG).stat().st_size > 10_000
