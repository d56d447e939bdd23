"""The demo's report: what it trained on, and the result against the majority-scenario baseline."""

import json

from audio_recipes.pipelines.demo import demo_report, majority_scenario


def slurp_row(slurp_id: int, scenario: str) -> dict:
    return {"slurp_id": slurp_id, "scenario": scenario}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_majority_scenario_is_the_training_datas_most_frequent_one_scored_on_test():
    train = [slurp_row(i, s) for i, s in enumerate(["alarm", "alarm", "weather"])]
    test = [slurp_row(10 + i, s) for i, s in enumerate(["weather", "alarm", "weather", "weather"])]
    assert majority_scenario(train, test) == ("alarm", 0.25)


def make_run(tmp_path, *, scenario_accuracy, invalid, test_ids=range(100, 104)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_rows(tmp_path / "train.jsonl", [slurp_row(i, s) for i, s in enumerate(["alarm", "alarm", "music"])])
    test = write_rows(tmp_path / "test.jsonl", [slurp_row(i, "alarm" if i % 4 == 0 else "music") for i in test_ids])
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(json.dumps({
        "num_gold": 4, "num_invalid_outputs": invalid, "num_missing": 0, "scenario_accuracy": scenario_accuracy,
        "intent_accuracy": 0.0, "slu_f1": 0.0}))
    return train, test, eval_dir


def test_demo_report_passes_only_above_the_baseline_with_valid_json(tmp_path):
    # Always 'alarm' (the training majority) is right on 1 of the 4 test rows: 0.25
    lines, ok = demo_report(*make_run(tmp_path / "good", scenario_accuracy=0.5, invalid=0))
    assert ok and lines[-1] == "demo: as expected"
    assert "valid JSON: 4/4" in lines[2] and "0.50 against 0.25 for always answering 'alarm'" in lines[3]

    assert not demo_report(*make_run(tmp_path / "at_baseline", scenario_accuracy=0.25, invalid=0))[1]
    lines, ok = demo_report(*make_run(tmp_path / "invalid", scenario_accuracy=0.5, invalid=1))  # 3/4 < 90 %
    assert not ok and "LOW" in lines[2]


def test_demo_report_fails_when_test_sentences_were_trained_on(tmp_path):
    lines, ok = demo_report(*make_run(tmp_path, scenario_accuracy=0.5, invalid=0, test_ids=range(0, 4)))
    assert not ok and "sentences in both: 3" in lines[1]
