"""The speech detection report: systems side by side on the same clips (fine-tuned, zero-shot, Silero VAD).

report.md (metrics with bootstrap intervals, breakdowns by duration and SNR, calibration, latency, confusion
matrices, McNemar's exact test between every pair), psychometric.png with psychometric.csv (accuracy against
duration for each SNR, fitted logistic curves rising from chance) and psychometric_fits.json (the 75 % crossing
durations).
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from audio_recipes.metrics.classification import INVALID, LogisticFit, mcnemar_exact, psychometric_fit
from audio_recipes.tasks.speech_detection.builder import LABELS
from audio_recipes.tasks.speech_detection.scoring import score_detection

REPORT = "report.md"
PSYCHOMETRIC_PNG = "psychometric.png"
PSYCHOMETRIC_CSV = "psychometric.csv"
PSYCHOMETRIC_FITS = "psychometric_fits.json"
TARGET = 0.75
CHANCE = 1 / len(LABELS)  # a system that hears nothing is still right this often: the curves rise from here


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def aligned(systems: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The systems' rows on the same clips in the same order; clips that one system lacks are an error."""
    first_name, first = next(iter(systems.items()))
    ids = list(first["segment_id"])
    out = {}
    for name, table in systems.items():
        if set(table["segment_id"]) != set(ids):
            raise ValueError(f"{name} and {first_name} were not evaluated on the same clips")
        out[name] = table.set_index("segment_id").loc[ids].reset_index()
    return out


def psychometric(systems: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """Observed accuracy per (system, SNR, duration) and a logistic fit per (system, SNR)."""
    points, fits = [], {}
    for name, table in systems.items():
        correct = table["true_label"] == table["pred_label"]
        fits[name] = {}
        for snr, group in table.groupby("snr_db", sort=True):
            fit = psychometric_fit(group["duration_ms"].to_numpy(), correct[group.index].to_numpy(), TARGET,
                                   CHANCE)
            fits[name][f"{snr:g}"] = fit.to_dict()
            for duration, cell in group.groupby("duration_ms", sort=True):
                points.append({"system": name, "snr_db": snr, "duration_ms": duration, "num_items": len(cell),
                               "accuracy": float(correct[cell.index].mean()),
                               "fitted_accuracy": float(fit.predict(np.array([duration]))[0])})
    return pd.DataFrame(points), fits


# Per SNR: a marker, a line style and a small sideways offset (a factor on log duration), so that points of
# different SNRs at the same duration do not hide each other and curves that coincide stay visible
SNR_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SNR_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1, 1, 1)))
SNR_OFFSET = 0.035
REFERENCE_LINES = {f"{TARGET * 100:g} % (threshold)": (TARGET, (0, (1, 3))), "50 % (chance)": (0.5, (0, (6, 4)))}


def psychometric_figure(points: pd.DataFrame, fits: dict):
    """One panel per system: observed accuracy per (SNR, duration) and the fitted curves; a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    names = list(fits)
    snrs = list(fits[names[0]])
    durations = sorted(points["duration_ms"].unique())
    figure, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names) + 1.4, 4.0), sharey=True, squeeze=False)
    low, high = durations[0] / 1.15, durations[-1] * 1.15
    grid = np.geomspace(low, high, 200)
    # viridis up to 0.85: its last tenth (yellow) hardly shows on white
    colors = {snr: plt.cm.viridis(0.85 * index / max(1, len(snrs) - 1)) for index, snr in enumerate(snrs)}
    style = {snr: (SNR_MARKERS[i % len(SNR_MARKERS)], SNR_LINESTYLES[i % len(SNR_LINESTYLES)])
             for i, snr in enumerate(snrs)}
    for axis, name in zip(axes[0], names, strict=True):
        unfitted = []
        for index, snr in enumerate(snrs):
            marker, linestyle = style[snr]
            offset = np.exp(SNR_OFFSET * (index - (len(snrs) - 1) / 2))
            cells = points[(points["system"] == name) & (points["snr_db"] == float(snr))]
            axis.plot(cells["duration_ms"] * offset, cells["accuracy"], linestyle="none", marker=marker,
                      color=colors[snr], markersize=6, markeredgecolor="white", markeredgewidth=0.6, zorder=3,
                      gid=f"observed {snr} dB")
            fitted = LogisticFit(**fits[name][snr]).predict(grid)
            if np.isnan(fitted).all():
                unfitted.append(f"{snr} dB")
            else:
                axis.plot(grid, fitted, linestyle=linestyle, color=colors[snr], linewidth=1.4, zorder=2,
                          gid=f"fit {snr} dB")
        for level, linestyle in REFERENCE_LINES.values():
            axis.axhline(level, color="grey", linestyle=linestyle, linewidth=0.9, zorder=1)
        axis.set_xscale("log")
        # Plain ms at the tested durations, not the log axis's 2x10^2
        axis.xaxis.set_major_locator(FixedLocator(durations))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xlim(low, high)
        # A curve left out says so: all right, all wrong or separable (psychometric_fits.json says which)
        axis.set_title(name + (f"\nno fitted curve: {', '.join(unfitted)}" if unfitted else ""),
                       fontsize="medium")
        axis.set_xlabel("duration (ms)")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(axis="y", color="0.92", linewidth=0.6, zorder=0)
    axes[0][0].set_ylabel("accuracy")
    handles = [Line2D([], [], color=colors[snr], marker=style[snr][0], linestyle=style[snr][1],
                      markeredgecolor="white", label=f"{snr} dB") for snr in snrs]
    handles += [Line2D([], [], color="grey", linestyle=linestyle, linewidth=0.9, label=label)
                for label, (_, linestyle) in REFERENCE_LINES.items()]
    figure.legend(handles=handles, title="SNR\n(points: observed,\nlines: logistic fit)", loc="center right",
                  fontsize="small", title_fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - 1.4 / figure.get_figwidth(), 1))
    return figure


def plot_psychometric(points: pd.DataFrame, fits: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = psychometric_figure(points, fits)
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)


def write_detection_report(output_dir: str | Path, systems: dict[str, pd.DataFrame], title: str = "") -> str:
    """Write report.md, the psychometric plot and data for systems evaluated on the same clips; the markdown."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    systems = aligned(systems)
    metrics = {name: score_detection(table) for name, table in systems.items()}
    names = list(systems)
    lines = [f"# Speech detection report{': ' + title if title else ''}", "",
             f"{len(next(iter(systems.values())))} clips; systems: {', '.join(names)}. Accuracy intervals: "
             "95 % percentile bootstrap over clips. Invalid outputs (naming neither label) count as wrong.", ""]
    lines += ["## Overall", "", _table(
        ["system", "accuracy", "95% CI", "SPEECH acc", "NONSPEECH acc", "precision", "recall", "F1", "invalid",
         "ECE", "conf. right", "conf. wrong", "latency ms/clip"],
        [[name, m["accuracy"], f"{m['accuracy_ci95_low']:.3f}-{m['accuracy_ci95_high']:.3f}", m["SPEECH_accuracy"],
          m["NONSPEECH_accuracy"], m["precision"], m["recall"], m["f1"], m["num_invalid_outputs"], m["ece"],
          m["mean_confidence_correct"], m["mean_confidence_wrong"], m["latency_ms_mean"]] for name, m in metrics.items()],
    ), "", "Precision, recall and F1 take SPEECH as the positive class.", ""]
    for key, heading, unit in (("by_duration_ms", "By duration", "ms"), ("by_snr_db", "By SNR", "dB")):
        values = list(next(iter(metrics.values()))[key])
        header = [f"{heading.split()[-1]} ({unit})"] + [f"{name} {column}" for name in names
                                                        for column in ("acc", "SPEECH acc", "NONSPEECH acc", "F1")]
        rows = [[value] + [cell for name in names for cell in (
            metrics[name][key][value]["accuracy"], metrics[name][key][value]["SPEECH_accuracy"],
            metrics[name][key][value]["NONSPEECH_accuracy"], metrics[name][key][value]["f1"])] for value in values]
        lines += [f"## {heading}", "", _table(header, rows), ""]
    lines += ["## Confusion matrices (rows: true label, columns: prediction)", ""]
    for name, m in metrics.items():
        matrix = m["confusion_matrix"]
        lines += [f"**{name}**", "", _table(["true \\ predicted", *LABELS, INVALID],
                                            [[t, *[matrix[t][p] for p in (*LABELS, INVALID)]] for t in LABELS]), ""]
    if len(names) > 1:
        correct = {name: (table["true_label"] == table["pred_label"]).to_numpy() for name, table in systems.items()}
        rows = []
        for first, second in combinations(names, 2):
            result = mcnemar_exact(correct[first], correct[second])
            rows.append([first, second, result.only_first_correct, result.only_second_correct, result.p_value])
        lines += ["## McNemar's exact test (paired, same clips)", "",
                  _table(["system 1", "system 2", "only 1 right", "only 2 right", "p-value"], rows), ""]
    points, fits = psychometric(systems)
    points.to_csv(output_dir / PSYCHOMETRIC_CSV, index=False)
    (output_dir / PSYCHOMETRIC_FITS).write_text(json.dumps(fits, indent=2) + "\n")
    plot_psychometric(points, fits, output_dir / PSYCHOMETRIC_PNG)
    snrs = list(next(iter(fits.values())))
    lines += ["## Psychometric curves", "",
              f"Accuracy against duration for each SNR, with a logistic fit on log duration rising from chance "
              f"({CHANCE:.0%}); the table gives the duration (ms) at which the fit crosses {TARGET:.0%} (n/a: no finite fit or no crossing; * outside "
              f"the tested durations). Plot: `{PSYCHOMETRIC_PNG}`; data: `{PSYCHOMETRIC_CSV}`, `{PSYCHOMETRIC_FITS}`.",
              "", _table(["SNR (dB)", *names], [[snr, *[
                  (_fmt(fits[name][snr]["threshold_ms"], 0) + ("*" if fits[name][snr]["note"].startswith("crossing")
                                                                else "")) for name in names]] for snr in snrs]), ""]
    text = "\n".join(lines)
    tmp = output_dir / (REPORT + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, output_dir / REPORT)
    return text
