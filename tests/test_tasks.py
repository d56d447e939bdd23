"""Tasks read their data as published, build prompts and targets, and score official prediction files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_short_wav

from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.tasks import get_task
from audio_recipes.tasks.slu_format import parse_slu_output
from audio_recipes.testing.speech_synthesis import espeak_available

ROOT = Path(__file__).resolve().parents[1]


def slurp_args(data_dir, **kwargs):
    return TaskArguments(task="slurp", test_file=str(data_dir / "test.jsonl"), **kwargs)


def test_slurp_reads_published_rows_with_lowest_wer_recording(shared_data, tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    rows = [json.loads(line) for line in (shared_data / "slurp" / "test.jsonl").open()][:20]
    for row in rows:
        for recording in row["recordings"]:
            write_short_wav(audio_dir / recording["file"])  # each file's header is checked at load
    subset = tmp_path / "test.jsonl"
    subset.write_text("".join(json.dumps(row) + "\n" for row in rows))

    task = get_task("slurp", TaskArguments(task="slurp", test_file=str(subset), audio_dir=str(audio_dir)))
    examples = task.examples("test")
    assert len(examples) == 20
    first = rows[0]
    best = min(first["recordings"], key=lambda r: r["wer"])
    assert examples[0].id == best["file"] and examples[0].audio == str(audio_dir / best["file"])
    target = json.loads(examples[0].completion)
    assert target["scenario"] == first["scenario"] and target["action"] == first["action"]
    assert [list(e.values())[0] for e in target["entities"]] == [
        " ".join(first["tokens"][i]["surface"] for i in e["span"]).lower() for e in first["entities"]]
    assert first["sentence"] not in examples[0].prompt  # audio mode: no transcript in the prompt

    everything = get_task("slurp", TaskArguments(task="slurp", test_file=str(subset), audio_dir=str(audio_dir),
                                                 use_all_recordings=True)).examples("test")
    assert len(everything) == sum(len(row["recordings"]) for row in rows)

    text = get_task("slurp", TaskArguments(task="slurp", test_file=str(subset), input_mode="text")).examples("test")
    assert text[0].id == str(first["slurp_id"]) and text[0].audio is None and first["sentence"] in text[0].prompt


def test_slurp_missing_audio_fails_before_training(shared_data, tmp_path):
    subset = tmp_path / "test.jsonl"
    subset.write_text((shared_data / "slurp" / "test.jsonl").open().readline())
    task = get_task("slurp", TaskArguments(task="slurp", test_file=str(subset), audio_dir=str(tmp_path)))
    with pytest.raises(DataError, match=r"1 of 1 audio files cannot be used: .*audio-.*\.flac: not found"):
        task.examples("test")


def test_slurp_malformed_rows_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"slurp_id": 1, "sentence": "hi"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 1 .*lacks scenario, action, tokens"):
        get_task("slurp", TaskArguments(task="slurp", test_file=str(bad), input_mode="text")).examples("test")
    bad.write_text('{"slurp_id": 1,\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 1: not valid JSON"):
        get_task("slurp", TaskArguments(task="slurp", test_file=str(bad), input_mode="text")).examples("test")


def test_slurp_rows_with_malformed_recordings_or_entities_name_file_line_and_key(tmp_path):
    """A blank line comes first, so a row's position (1) differs from its line (2): the error names the line."""
    good = {"slurp_id": 7, "sentence": "wake me up", "scenario": "alarm", "action": "set",
            "tokens": [{"surface": "wake"}, {"surface": "me"}, {"surface": "up"}],
            "entities": [{"type": "time", "span": [0]}], "recordings": [{"file": "a.flac", "wer": 0.0}]}
    bad = tmp_path / "bad.jsonl"
    cases = [({"recordings": ["a.flac"]}, r"recordings\[0\] is str; expected an object with file"),
             ({"recordings": [{"wer": 0.1}]}, r"recordings\[0\] is an object without it .*expected an object with file"),
             ({"recordings": "a.flac"}, "recordings is a str, expected a list"),
             ({"entities": ["time"]}, r"entities\[0\] is a str, expected an object with type and span")]
    for change, message in cases:
        bad.write_text("\n" + json.dumps({**good, **change}) + "\n")
        for mode, split in (("audio", "test"), ("text", "test")):
            task = get_task("slurp", TaskArguments(task="slurp", test_file=str(bad), input_mode=mode,
                                                   audio_dir=str(tmp_path)))
            with pytest.raises(DataError, match=r"bad\.jsonl, line 2 \(slurp_id 7\): " + message):
                task.examples(split)
        with pytest.raises(DataError, match=r"bad\.jsonl, line 2 \(slurp_id 7\): " + message):
            task.score_files(bad, bad)


def test_unknown_task_suggests_close_name():
    with pytest.raises(ValueError, match="unknown task 'slrup' .*did you mean 'slurp'"):
        get_task("slrup")


def test_slurp_score_counts_bad_outputs_as_wrong(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "slurp" / "test.jsonl").open()][:4]
    subset = tmp_path / "test.jsonl"
    subset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = get_task("slurp", TaskArguments(task="slurp", test_file=str(subset), input_mode="text"))
    examples = task.examples("test")
    outputs = [examples[0].completion, examples[1].completion, "not json at all", ""]
    predictions = {e.id: task.official_prediction(e, parse_slu_output(o)) for e, o in zip(examples, outputs,
                                                                                          strict=True)}
    metrics = task.score(examples, predictions)
    assert metrics["scenario_accuracy"] == 0.5 and metrics["num_predicted"] == 4 and metrics["num_missing"] == 0


def massive_fixture(folder: Path) -> Path:
    rows = [
        {"id": "1", "locale": "fr-FR", "utt": "réveille-moi à sept heures",
         "annot_utt": "réveille-moi à [time : sept heures]", "intent_str": "alarm_set", "path": "a.wav"},
        {"id": "2", "locale": "fr-FR", "utt": "éteins la lumière de la cuisine",
         "annot_utt": "éteins la lumière de la [house_place : cuisine]", "intent_str": "iot_hue_lightoff",
         "path": "sub/b.wav"},
        {"id": "3", "locale": "de-DE", "utt": "weck mich", "annot_utt": "weck mich", "intent_str": "alarm_set",
         "path": "c.wav"},
    ]
    (folder / "audio").mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        write_short_wav(folder / "audio" / name)
    path = folder / "train_115.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_speech_massive_reads_its_schema(tmp_path):
    path = massive_fixture(tmp_path)
    task = get_task("speech_massive", TaskArguments(task="speech_massive", train_file=str(path), locale="fr-FR"))
    examples = task.examples("train")
    assert [e.id for e in examples] == ["1", "2"]  # the de-DE row is another locale
    assert examples[1].audio == str(tmp_path / "audio" / "b.wav")
    assert json.loads(examples[1].completion) == {"scenario": "iot", "action": "hue_lightoff",
                                                  "entities": [{"house_place": "cuisine"}]}
    predictions = {"1": {"id": "1", "scenario": "alarm", "action": "set",
                         "entities": [{"type": "time", "filler": "sept heures"}]}}
    metrics = task.score(examples, predictions)
    # tp 1, fn 1 (the missing item's entity): F1 = 2/3
    assert metrics["intent_accuracy"] == 0.5 and metrics["num_missing"] == 1
    assert metrics["entity_span_f1"] == pytest.approx(2 / 3)


def test_speech_massive_parquet_and_hub_errors(tmp_path):
    import pandas as pd

    path = massive_fixture(tmp_path)
    parquet = tmp_path / "train_115.parquet"
    pd.read_json(path, lines=True, dtype=False).to_parquet(parquet)
    args = TaskArguments(task="speech_massive", train_file=str(parquet), locale="fr-FR", input_mode="text")
    assert len(get_task("speech_massive", args).examples("train")) == 2
    with pytest.raises(DataError, match="lacks intent_str"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": "1", "locale": "fr-FR", "utt": "x", "annot_utt": "x"}\n')
        get_task("speech_massive", TaskArguments(task="speech_massive", train_file=str(bad))).examples("train")


def test_speech_massive_errors_name_the_line_or_row_counted_from_one(tmp_path):
    import pandas as pd

    path = massive_fixture(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["intent_str"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")  # the bad row on line 3
    task = get_task("speech_massive", TaskArguments(task="speech_massive", train_file=str(bad), input_mode="text"))
    with pytest.raises(DataError, match=r"bad.jsonl, line 3 \(id 2\): Speech-MASSIVE row lacks intent_str"):
        task.examples("train")
    with pytest.raises(DataError, match=r"bad.jsonl, line 3 \(id 2\)"):
        task.score_files(bad, bad)
    rows[1]["intent_str"], rows[1]["annot_utt"] = "iot_hue_lightoff", "éteins [house_place : cuisine]"
    table = tmp_path / "bad.parquet"
    pd.DataFrame(rows).to_parquet(table)
    task = get_task("speech_massive", TaskArguments(task="speech_massive", train_file=str(table), input_mode="text"))
    with pytest.raises(DataError, match=r"bad.parquet, row 2 \(id 2\): annot_utt gives 2 tagged words, utt has 6"):
        task.examples("train")


def test_speech_massive_without_hub_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    args = TaskArguments(task="speech_massive", dataset_name="FBK-MT/Speech-MASSIVE", locale="fr-FR",
                         train_split="train_115", audio_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="could not read FBK-MT/Speech-MASSIVE .*export the split to a local file"):
        get_task("speech_massive", args).examples("train")


def test_score_script_on_published_predictions(shared_data):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "score.py"), "slurp", "--gold", str(shared_data / "slurp/test.jsonl"),
         "--predictions", str(shared_data / "slurp/predictions/google_hermit_predictions.jsonl")],
        capture_output=True, text=True, check=True, timeout=300)
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["num_missing"] == 685 and metrics["num_gold"] == 13078
    skipped = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "score.py"), "slurp", "--gold", str(shared_data / "slurp/test.jsonl"),
         "--predictions", str(shared_data / "slurp/predictions/google_hermit_predictions.jsonl"), "--skip_missing"],
        capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(skipped.stdout.strip().splitlines()[-1])["scenario_accuracy"] > metrics["scenario_accuracy"]


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng to synthesise the fixture's speech")
def test_tiny_speech_massive_data_is_built_on_first_use(tmp_path):
    folder = tmp_path / "speech_massive"
    args = TaskArguments(task="speech_massive", locale="fr-FR", train_file=str(folder / "train_115.jsonl"),
                         eval_file=str(folder / "validation.jsonl"), test_file=str(folder / "test.jsonl"),
                         audio_dir=str(folder / "audio"), build_data_if_missing=True)
    task = recipe_task(args)
    train, test = task.examples("train"), task.examples("test")
    assert len(train) == 16 and len(test) == 4
    assert all(Path(e.audio).stat().st_size > 1000 for e in train + test)
    assert not {e.id for e in train} & {e.id for e in test}


def test_speech_massive_by_dataset_id_writes_audio_once(tmp_path):
    """The Hub code path (`load_dataset(id, locale, split=...)`) on a local repository laid out like the Hub's."""
    import io

    import numpy as np
    import pandas as pd
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    repo = tmp_path / "Speech-MASSIVE"
    (repo / "fr-FR").mkdir(parents=True)
    rows = [{"id": "7", "locale": "fr-FR", "utt": "coupe le son", "annot_utt": "coupe le [device_type : son]",
             "intent_str": "audio_volume_mute", "path": "fr-FR/7.wav",
             "audio": {"bytes": buffer.getvalue(), "path": "7.wav"}}]
    pd.DataFrame(rows).to_parquet(repo / "fr-FR" / "train_115-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: fr-FR\n  data_files:\n  - split: train_115\n"
                                    "    path: fr-FR/train_115-*.parquet\n---\n")
    args = TaskArguments(task="speech_massive", dataset_name=str(repo), locale="fr-FR", train_split="train_115",
                         audio_dir=str(tmp_path / "audio"))
    examples = get_task("speech_massive", args).examples("train")
    assert [e.id for e in examples] == ["7"]
    assert sf.read(examples[0].audio)[0].shape == (8000,)
    assert json.loads(examples[0].completion)["entities"] == [{"device_type": "son"}]


def test_text_only_fraction_adds_the_first_rows_again_without_audio():
    from helpers import recipe_args

    args = recipe_args(TaskArguments, "recipes/tiny/slurp.yaml", max_train_samples=4, text_only_fraction=0.5)
    task = recipe_task(args)
    examples = task.examples("train")
    audio, text = examples[:4], examples[4:]
    assert all(e.audio for e in audio) and len(text) == 2 and not any(e.audio for e in text)
    # The same sentences, in the 'text' input mode: the transcript in the prompt, the same target
    plain_text = recipe_task(recipe_args(TaskArguments, "recipes/tiny/slurp_text.yaml")).examples("train")[:2]
    assert [(e.prompt, e.completion) for e in text] == [(e.prompt, e.completion) for e in plain_text]
    assert [e.completion for e in text] == [e.completion for e in audio[:2]]
    assert task.examples("test") == recipe_task(recipe_args(TaskArguments, "recipes/tiny/slurp.yaml")).examples("test")


def test_text_only_fraction_needs_an_audio_input_mode():
    from helpers import recipe_args

    task = recipe_task(recipe_args(TaskArguments, "recipes/tiny/slurp_text.yaml", text_only_fraction=0.5))
    with pytest.raises(ValueError, match="text_only_fraction 0.5 needs an audio input_mode"):
        task.examples("train")


# ---------------------------------------------------------------- the data check before any model loads


def tiny_slurp_copy(tmp_path: Path, count: int = 6) -> tuple[Path, Path]:
    """The first `count` tiny SLURP test rows and their audio, copied into a folder of the test's."""
    import shutil

    from helpers import examples_of

    task, examples = examples_of("recipes/tiny/slurp.yaml", count)
    source = Path(task.args.test_file)
    folder, audio = tmp_path / "slurp", tmp_path / "slurp" / "audio"
    audio.mkdir(parents=True)
    ids = {example.id for example in examples}
    rows = [row for row in map(json.loads, source.read_text().splitlines()) if row["recordings"][0]["file"] in ids]
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for example in examples:
        shutil.copy(example.audio, audio / example.id)
    return folder / "test.jsonl", audio


def test_unusable_audio_files_are_listed_in_one_error_before_any_model_loads(tmp_path):
    test_file, audio = tiny_slurp_copy(tmp_path)
    names = sorted(path.name for path in audio.iterdir())
    (audio / names[0]).write_bytes(b"")
    (audio / names[1]).write_bytes(b"RIFF not really a wave file")
    (audio / names[2]).unlink()
    args = TaskArguments(task="slurp", test_file=str(test_file), audio_dir=str(audio))
    with pytest.raises(DataError) as error:
        get_task("slurp", args).examples("test")
    message = str(error.value)
    assert "3 of 6 audio files cannot be used" in message
    assert f"{names[0]}: empty file (0 bytes)" in message and f"{names[1]}: not readable as audio" in message
    assert f"{names[2]}: not found" in message
    # Through the script: one message, exit status not 0, and no model was loaded
    result = subprocess.run([sys.executable, "scripts/evaluate.py", "recipes/tiny/slurp.yaml", "--model_name_or_path",
                             "tiny-models/qwen2-audio", "--test_file", str(test_file), "--audio_dir", str(audio),
                             "--output_dir", str(tmp_path / "eval")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "3 of 6 audio files cannot be used" in result.stderr
    assert "Loading weights" not in result.stderr


def test_audio_paths_leaving_audio_dir_are_refused_unless_allowed(tmp_path):
    test_file, audio = tiny_slurp_copy(tmp_path, count=2)
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    elsewhere = tmp_path / "elsewhere.wav"
    (audio / rows[0]["recordings"][0]["file"]).rename(elsewhere)
    rows[0]["recordings"][0]["file"] = "../../elsewhere.wav"
    test_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = TaskArguments(task="slurp", test_file=str(test_file), audio_dir=str(audio))
    with pytest.raises(DataError, match=r"1 audio path\(s\) leave audio_dir .*\.\./\.\./elsewhere\.wav.*"
                                        "allow_audio_outside_audio_dir"):
        get_task("slurp", args).examples("test")
    args.allow_audio_outside_audio_dir = True
    assert len(get_task("slurp", args).examples("test")) == 2


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("recipe", ["recipes/tiny/mmar.yaml", "recipes/tiny/slurp.yaml"])
def test_a_tiny_recipe_pointed_at_a_users_folder_never_writes_or_deletes_in_it(recipe, tmp_path):
    """A missing data file in a folder the project did not build is an error naming it: the folder is left as it was
    (the tiny data used to be built into it after deleting it)."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "train.jsonl").write_text('{"my": "data"}\n')
    (user / "notes.txt").write_text("my notes")
    write_short_wav(user / "clip.wav")
    before = folder_bytes(user)
    result = subprocess.run([sys.executable, "scripts/sft.py", recipe, "--train_file", str(user / "train.jsonl"),
                             "--eval_file", str(user / "train.jsonl"), "--test_file", str(user / "test.jsonl"),
                             "--audio_dir", str(user)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"not found: test_file {user / 'test.jsonl'}" in result.stderr
    assert f"{user} was not built by audio-recipes: nothing was written there" in result.stderr
    assert folder_bytes(user) == before


def test_a_mistyped_audio_dir_beside_the_tiny_data_is_an_error_not_a_rebuild(tmp_path):
    from helpers import examples_of

    task, _ = examples_of("recipes/tiny/slurp.yaml", 1)
    folder = Path(task.args.test_file).parent
    before = sorted(path.name for path in folder.iterdir())
    args = TaskArguments(task="slurp", train_file=str(folder / "train.jsonl"), test_file=str(folder / "test.jsonl"),
                         audio_dir=str(folder / "audoi"), build_data_if_missing=True)
    with pytest.raises(DataError, match=r"not found: audio_dir .*audoi; the tiny slurp data in .* holds audio, "):
        recipe_task(args).examples("test")
    assert sorted(path.name for path in folder.iterdir()) == before


def test_an_empty_data_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "train.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=rf"task slurp: the train data \({empty}\) holds no items"):
        get_task("slurp", TaskArguments(task="slurp", train_file=str(empty), input_mode="text")).examples("train")


def test_tiny_data_built_under_the_earlier_marker_is_still_the_projects(tmp_path):
    """A folder built before the tiny data moved to audio_recipes.testing carries the old marker: it is rebuilt, not
    refused as a user's folder; a folder with a marker of any other text stays the user's."""
    from audio_recipes.testing.tiny_data import COMPLETE_MARKER, MARKER_TEXT, build_once

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / COMPLETE_MARKER).write_text("built by audio_recipes.tiny_data\nversion 2\n")
    build_once(earlier, lambda staging: (staging / "rows.jsonl").write_text("{}\n"), version=3)
    assert (earlier / COMPLETE_MARKER).read_text() == MARKER_TEXT + "version 3\n"
    assert (earlier / "rows.jsonl").is_file()

    other = tmp_path / "other"
    other.mkdir()
    (other / COMPLETE_MARKER).write_text("my own marker\n")
    with pytest.raises(DataError, match="was not built by audio-recipes"):
        build_once(other, lambda staging: None)
    assert [path.name for path in other.iterdir()] == [COMPLETE_MARKER]
