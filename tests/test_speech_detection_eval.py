"""evaluate.py on the tiny speech detection recipes: predictions.parquet, metrics, report with Silero VAD beside the
model, the comparison script, and several seeds in one command."""

import json
import runpy
import statistics
import sys

import numpy as np
import pandas as pd
import pytest

from audio_recipes.errors import RecipeError
from audio_recipes.metrics.classification import INVALID, mcnemar_exact
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.seeds import (
    ONE_SEED_NOTE,
    RUN_RECORD,
    check_run_record,
    run_identity,
    run_seeds,
    summarize,
    summary_table,
)
from audio_recipes.tasks.speech_detection import PREDICTION_COLUMNS
from audio_recipes.testing.tiny_models import ensure_tiny_model

RECIPE = "recipes/tiny/speech_detection_zeroshot.yaml"


def run_script(script, args, monkeypatch, capsys) -> str:
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(PROJECT_ROOT / "scripts" / script), run_name="__main__")
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def scored_eval(shared_data, tmp_path_factory):
    """The zero-shot tiny recipe on the whole test split (100 clips), label scoring, Silero VAD beside it."""
    ensure_tiny_model()
    output_dir = tmp_path_factory.mktemp("eval-scoring")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", ["evaluate.py", RECIPE, "--output_dir", str(output_dir)])
        runpy.run_path(str(PROJECT_ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    return output_dir


def test_predictions_parquet_has_every_clip_with_the_listed_columns(scored_eval):
    predictions = pd.read_parquet(scored_eval / "predictions.parquet")
    metadata = pd.read_csv(PROJECT_ROOT / "data" / "tiny" / "speech_detection" / "metadata.csv")
    test = metadata[metadata["split"] == "test"]
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert list(predictions["segment_id"]) == list(test["segment_id"])
    assert list(predictions["true_label"]) == list(test["label"])
    assert set(predictions["pred_label"]) <= {"SPEECH", "NONSPEECH"}
    assert predictions["confidence"].between(0.5, 1.0).all() and (predictions["latency_ms"] > 0).all()
    assert set(predictions["raw_output"]) <= {"A", "B"}
    assert (predictions["condition"] == test["condition"].to_numpy()).all()


def test_metrics_match_the_predictions_and_the_baseline_is_scored_the_same_way(scored_eval):
    predictions = pd.read_parquet(scored_eval / "predictions.parquet")
    metrics = json.loads((scored_eval / "metrics.json").read_text())
    right = predictions["true_label"] == predictions["pred_label"]
    assert metrics["accuracy"] == pytest.approx(right.mean())
    assert metrics["decoding"] == "scoring" and metrics["num_items"] == 100
    for duration, group in predictions.groupby("duration_ms"):
        assert metrics["by_duration_ms"][str(duration)]["accuracy"] == pytest.approx(right[group.index].mean())
    assert metrics["accuracy_ci95_low"] <= metrics["accuracy"] <= metrics["accuracy_ci95_high"]

    silero = pd.read_parquet(scored_eval / "silero_vad_predictions.parquet")
    assert list(silero["segment_id"]) == list(predictions["segment_id"])
    silero_metrics = json.loads((scored_eval / "silero_vad_metrics.json").read_text())
    assert silero_metrics["accuracy"] == pytest.approx((silero["true_label"] == silero["pred_label"]).mean())
    # a pretrained VAD on real recordings: well above chance, where the untrained tiny model is not
    assert silero_metrics["accuracy"] >= 0.75
    assert metrics["baselines"]["silero_vad"]["accuracy"] == silero_metrics["accuracy"]


def test_report_puts_model_and_baseline_side_by_side_with_mcnemar_and_psychometric_curves(scored_eval):
    report = (scored_eval / "report.md").read_text()
    for heading in ("## Overall", "## By duration", "## By SNR", "## Confusion matrices", "## McNemar",
                    "## Psychometric curves"):
        assert heading in report
    predictions = pd.read_parquet(scored_eval / "predictions.parquet")
    silero = pd.read_parquet(scored_eval / "silero_vad_predictions.parquet")
    result = mcnemar_exact(predictions["true_label"] == predictions["pred_label"],
                           silero["true_label"] == silero["pred_label"])
    assert f"| model | silero_vad | {result.only_first_correct} | {result.only_second_correct} |" in report
    assert (scored_eval / "psychometric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = pd.read_csv(scored_eval / "psychometric.csv")
    assert set(curve["system"]) == {"model", "silero_vad"}
    assert len(curve) == 2 * 5 * 5  # systems x SNRs x durations
    cell = curve[(curve["system"] == "silero_vad") & (curve["snr_db"] == 0) & (curve["duration_ms"] == 200)].iloc[0]
    in_cell = silero[(silero["snr_db"] == 0) & (silero["duration_ms"] == 200)]
    assert cell["accuracy"] == pytest.approx((in_cell["true_label"] == in_cell["pred_label"]).mean())
    fits = json.loads((scored_eval / "psychometric_fits.json").read_text())
    assert set(fits["silero_vad"]) == {"0", "5", "10", "15", "20"}


def test_free_generation_counts_outputs_that_name_no_label(scored_eval, tmp_path, monkeypatch, capsys):
    out = tmp_path / "generate"
    stdout = run_script("evaluate.py", [RECIPE, "--output_dir", str(out), "--decoding", "generate", "--max_eval_samples",
                                        "4", "--baseline", "", "--max_new_tokens", "4"], monkeypatch, capsys)
    metrics = json.loads(stdout.strip().splitlines()[-1])
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == 4 and (predictions["pred_label"] == INVALID).all()  # the untrained model babbles
    assert metrics["num_invalid_outputs"] == 4 and metrics["accuracy"] == 0.0
    assert metrics["confusion_matrix"]["SPEECH"][INVALID] == 4
    assert predictions["confidence"].isna().all() and metrics["ece"] is None


def test_report_script_compares_systems_on_the_same_clips(scored_eval, tmp_path, monkeypatch, capsys):
    stdout = run_script("speech_detection_report.py", [
        f"zeroshot={scored_eval}", f"silero={scored_eval / 'silero_vad_predictions.parquet'}",
        "--output_dir", str(tmp_path / "report")], monkeypatch, capsys)
    assert "| zeroshot | silero |" in stdout and (tmp_path / "report" / "psychometric.png").is_file()
    predictions = pd.read_parquet(scored_eval / "predictions.parquet")
    predictions.iloc[:10].to_parquet(tmp_path / "fewer.parquet")
    with pytest.raises(ValueError, match="not evaluated on the same clips"):
        run_script("speech_detection_report.py", [f"a={scored_eval}", f"b={tmp_path / 'fewer.parquet'}",
                                                  "--output_dir", str(tmp_path / "r2")], monkeypatch, capsys)


def test_seed_summary_is_mean_and_sample_std():
    per_seed = {42: {"accuracy": 0.6, "f1": 0.5, "by_snr_db": {}}, 123: {"accuracy": 0.7, "f1": 0.55},
                456: {"accuracy": 0.8, "f1": 0.65, "model": "x"}}
    summary = summarize(per_seed)
    assert set(summary) == {"accuracy", "f1"}
    assert summary["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["accuracy"]["std"] == pytest.approx(statistics.stdev([0.6, 0.7, 0.8]))
    assert (summary["f1"]["min"], summary["f1"]["max"], summary["f1"]["num_seeds"]) == (0.5, 0.65, 3)



def test_one_seed_has_no_standard_deviation_and_says_so():
    one = summarize({7: {"accuracy": 0.5}})
    assert one["accuracy"]["std"] is None  # not 0.0: one seed measures no spread
    assert (one["accuracy"]["mean"], one["accuracy"]["num_seeds"]) == (0.5, 1)
    table = summary_table({7: {"accuracy": 0.5}}, one)
    assert "| accuracy | 0.5000 | 0.5000 | n/a | 0.5000 | 0.5000 |" in table and ONE_SEED_NOTE in table
    assert ONE_SEED_NOTE not in summary_table({7: {"accuracy": 0.5}, 8: {"accuracy": 0.7}},
                                              summarize({7: {"accuracy": 0.5}, 8: {"accuracy": 0.7}}))


def test_several_seeds_in_one_command_with_a_summary_table(scored_eval, tmp_path, monkeypatch, capsys):
    stdout = run_script("seeds.py", [RECIPE, "--seeds", "42", "123", "--seeds_dir", str(tmp_path / "seeds"),
                                     "--evaluate_only", "--max_eval_samples", "6", "--baseline", ""], monkeypatch, capsys)
    summary = json.loads((tmp_path / "seeds" / "seeds_summary.json").read_text())
    per_seed = [json.loads((tmp_path / "seeds" / f"seed-{s}" / "eval" / "metrics.json").read_text()) for s in (42, 123)]
    assert summary["summary"]["accuracy"]["mean"] == pytest.approx(np.mean([m["accuracy"] for m in per_seed]))
    assert "| accuracy |" in stdout and "seed 123" in stdout
    assert json.loads((tmp_path / "seeds" / RUN_RECORD).read_text())["options"]["max_eval_samples"] == 6


def test_seeds_refuse_a_folder_of_another_run_naming_what_differs(tmp_path):
    seeds_dir = tmp_path / "seeds"
    check_run_record(seeds_dir, run_identity(RECIPE, ["--max_eval_samples", "6"], evaluate_only=True))
    assert (seeds_dir / RUN_RECORD).is_file()
    check_run_record(seeds_dir, run_identity(RECIPE, ["--max_eval_samples", "6", "--seed", "9"], True))  # same run
    with pytest.raises(RecipeError, match=r"another run \(max_eval_samples: 6 then, 8 now;"):
        run_seeds(RECIPE, [42], ["--max_eval_samples", "8"], seeds_dir, evaluate_only=True)
    with pytest.raises(RecipeError, match="evaluate_only: True then, False now"):
        run_seeds(RECIPE, [42], ["--max_eval_samples", "6"], seeds_dir, evaluate_only=False)
    assert sorted(path.name for path in seeds_dir.iterdir()) == [RUN_RECORD]  # nothing ran

    unrecorded = tmp_path / "unrecorded"
    (unrecorded / "seed-42" / "eval").mkdir(parents=True)
    (unrecorded / "seed-42" / "eval" / "metrics.json").write_text('{"accuracy": 1.0}')
    with pytest.raises(RecipeError, match=f"holds seed-42 but no {RUN_RECORD}"):
        run_seeds(RECIPE, [42], [], unrecorded, evaluate_only=True)
    assert not (unrecorded / RUN_RECORD).exists() and not (unrecorded / "seeds_summary.json").exists()
