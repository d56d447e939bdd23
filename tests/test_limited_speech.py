"""SLU with limited speech: speech_fraction, mixtures of sources and curricula, on the tiny data and models."""

import dataclasses
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audio_recipes.config import EvalArguments, ModelArguments, SFTConfig, TaskArguments
from audio_recipes.errors import DataError, RecipeError
from audio_recipes.hub import files_to_push
from audio_recipes.pipelines import curriculum as curriculum_module
from audio_recipes.pipelines.curriculum import run_curriculum
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.pipelines.mixture import (
    count_of,
    refuse_sft_data_options,
    stratified_choice,
    training_data,
)
from audio_recipes.pipelines.sft import build_trainer, run_sft
from audio_recipes.recipe import apply_overrides, parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)
TINY = ROOT / "recipes" / "tiny"


def parsed(recipe: str | Path, *argv: str):
    return parse_recipe(TYPES, [str(recipe), *argv])


def task_args_of(recipe: str, **changes) -> TaskArguments:
    return dataclasses.replace(parsed(TINY / recipe)[1], **changes)


def write_recipe(tmp_path: Path, base: str, extra: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text((TINY / base).read_text() + "\n" + extra)
    return path


def test_stratified_choice_gives_each_class_its_largest_remainder_share():
    strata = {f"a{i}": "A" for i in range(6)} | {f"b{i}": "B" for i in range(3)} | {"c0": "C"}
    # 5 of 10: quotas A 3, B 1.5, C 0.5; B and C tie on the remainder, the larger class (B) takes the last one
    chosen = stratified_choice(strata, 5, seed=42)
    assert Counter(strata[key] for key in chosen) == {"A": 3, "B": 2}
    assert chosen == stratified_choice(dict(reversed(strata.items())), 5, seed=42)  # not the order given
    assert stratified_choice(strata, 0, seed=42) == set() and stratified_choice(strata, 10, seed=1) == set(strata)
    assert {frozenset(stratified_choice(strata, 5, seed)) for seed in range(5)} != {frozenset(chosen)}


def test_speech_fraction_keeps_the_audio_of_a_stratified_deterministic_five_percent():
    task = recipe_task(task_args_of("slurp_speech_fraction.yaml"))
    data = training_data(task, seed=42)
    # 200 sentences, 50 per scenario: 10 chosen, 2.5 per scenario; the ties go to the first names
    [record] = data.speech_ids
    assert record["speech_sentences_by_scenario"] == {"alarm": 3, "iot": 3, "play": 2, "weather": 2}
    speech = [example for example in data.examples if example.audio is not None]
    text = [example for example in data.examples if example.audio is None]
    assert len(speech) == 10 and len(text) == 190 and len(data.examples) == 200
    assert sorted(task.sentence_id(example) for example in speech) == record["speech_ids"]
    assert not {task.sentence_id(example) for example in text} & set(record["speech_ids"])
    assert Counter(task.stratum(example) for example in speech) == {"alarm": 3, "iot": 3, "play": 2, "weather": 2}
    assert data.summary["speech_examples"] == 10 and data.summary["text_examples"] == 190
    again = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml")), seed=42)
    assert again.speech_ids == data.speech_ids and [e.id for e in again.examples] == [e.id for e in data.examples]
    other = training_data(task, seed=7).speech_ids[0]
    assert other["speech_ids"] != record["speech_ids"]
    assert other["speech_sentences_by_scenario"] == record["speech_sentences_by_scenario"]
    only = training_data(recipe_task(task_args_of("slurp_speech_only.yaml")), seed=42)
    assert [example.id for example in only.examples] == [example.id for example in speech]  # the same 5 %


@pytest.mark.parametrize("recipe, extra", [("slurp_speech_fraction.yaml", {}),
                                           ("slurp.yaml", {"sources": [{"num_examples": 10}]})])
def test_only_the_audio_of_the_rows_kept_is_checked(tmp_path, recipe, extra):
    args = task_args_of(recipe, **extra)
    full = training_data(recipe_task(args), seed=42)
    used = sorted(Path(example.audio).name for example in full.examples if example.audio)
    assert len(used) == 10 and len(list(Path(args.audio_dir).iterdir())) > 100
    audio = tmp_path / "audio"  # only the kept rows' recordings
    audio.mkdir()
    for name in used:
        (audio / name).symlink_to(Path(args.audio_dir, name).resolve())
    only_used = dataclasses.replace(args, audio_dir=str(audio))
    data = training_data(recipe_task(only_used), seed=42)
    assert [(e.id, e.audio and Path(e.audio).name) for e in data.examples] == [
        (e.id, e.audio and Path(e.audio).name) for e in full.examples]
    assert data.speech_ids == full.speech_ids
    (audio / used[3]).unlink()
    with pytest.raises(DataError, match=rf"1 of 10 audio files cannot be used: row '{used[3]}': \S+: not found"):
        training_data(recipe_task(only_used), seed=42)


def test_speech_fraction_zero_is_text_only_and_one_is_all_audio():
    rows = lambda examples: [example.to_row() for example in examples]  # noqa: E731
    text = recipe_task(task_args_of("slurp_speech_fraction.yaml", input_mode="text", speech_fraction=None))
    audio = recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=None))
    zero = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=0.0)), seed=42)
    one = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=1.0)), seed=42)
    assert rows(zero.examples) == rows(text.examples("train"))
    assert rows(one.examples) == rows(audio.examples("train"))
    assert zero.speech_ids[0]["speech_ids"] == [] and len(one.speech_ids[0]["speech_ids"]) == 200


def test_speech_fraction_on_speech_massive_is_stratified_by_scenario():
    task = recipe_task(task_args_of("speech_massive.yaml", speech_fraction=0.25))
    data = training_data(task, seed=42)
    # 16 fr-FR rows: alarm 4, then audio, calendar, iot, play, weather 2 each, datetime and general 1; 4 chosen:
    # alarm its 1, the three other 0.5 remainders to the first names of equal size
    assert data.speech_ids[0]["speech_sentences_by_scenario"] == {"alarm": 1, "audio": 1, "calendar": 1, "iot": 1}
    assert data.summary["speech_examples"] == 4 and data.summary["text_examples"] == 12


def test_a_mixture_counts_each_source_and_the_sampler_interleaves_them(tmp_path):
    ensure_tiny_model("qwen2-audio")
    model_args, task_args, training_args, _ = parsed(TINY / "slurp_cross_lingual.yaml",
                                                      "--output_dir", str(tmp_path / "out"))
    run = build_trainer(model_args, task_args, training_args)
    counts = [(s["task"], s["input_mode"], s["examples"], s["speech_examples"]) for s in run.data.sources]
    assert counts == [("slurp", "audio", 200, 200), ("speech_massive", "text", 16, 0),
                      ("speech_massive", "audio", 4, 4)]
    # The 4 French clips: stratified over the 16 rows as in the speech_fraction test above
    french_clips = [row for row in run.trainer.train_dataset if row["audio"] and "speech_massive" in row["audio"]]
    assert Counter(json.loads(row["reference"])["scenario"] for row in french_clips) == {
        "alarm": 1, "audio": 1, "calendar": 1, "iot": 1}
    order = list(iter(run.trainer._get_train_sampler(run.trainer.train_dataset)))
    assert sorted(order) == list(range(220))
    french = [position for position, index in enumerate(order) if index >= 200]
    assert min(french) < 100 and max(french) > 120 and max(french) - min(french) > 2 * len(french)


@pytest.mark.parametrize("source, message", [
    ("  - trian_file: x.jsonl\n", r"unknown option 'trian_file' in recipe \S+, sources\[0\]; did you mean 'train_file'"),
    ("  - input_mode: video\n", r"invalid value for input_mode in recipe \S+, sources\[0\]: expected one of 'audio'"),
    ("  - num_examples: 3\n    fraction: 0.5\n", r"sources\[0\]: num_examples and fraction both set"),
    ("  - fraction: 1.5\n", r"invalid value for fraction in recipe \S+, sources\[0\]: expected a number in \(0, 1\]"),
    ("  - eval_file: x.jsonl\n", r"eval_file in recipe \S+, sources\[0\]: it is the recipe's own"),
    ("  - task: slurp\n    input_mode: text\n    speech_fraction: 0.1\n", r"speech_fraction 0.1 in recipe \S+, "
     r"sources\[0\] keeps the audio .*and an audio input_mode \(input_mode is 'text'\)"),
    ("  - 3\n", r"invalid value for sources in recipe \S+: expected a list \(a mapping each\) or null, got \[3\]"),
])
def test_bad_sources_fail_at_parse_time_naming_the_source_and_key(tmp_path, source, message):
    with pytest.raises(RecipeError, match=message):
        parsed(write_recipe(tmp_path, "slurp.yaml", "sources:\n" + source))


def test_a_source_asking_for_more_examples_than_it_has_names_its_index(tmp_path):
    recipe = write_recipe(tmp_path, "slurp.yaml", "sources:\n  - input_mode: text\n  - num_examples: 500\n")
    task_args = parsed(recipe)[1]
    with pytest.raises(DataError, match=r"sources\[1\] \(task slurp\): num_examples 500 of task slurp's 200 training"):
        training_data(recipe_task(task_args), seed=42)


@pytest.mark.parametrize("key, value", [("max_audio_seconds", "10"), ("on_too_long", "reject"),
                                        ("peak_normalize", "true"), ("enable_thinking", "false"),
                                        ("silent_clip_for_text_batches", "true")])
def test_a_source_setting_a_collator_option_is_refused_naming_it(tmp_path, key, value):
    recipe = write_recipe(tmp_path, "slurp.yaml", f"sources:\n  - input_mode: text\n  - {key}: {value}\n")
    with pytest.raises(RecipeError, match=rf"^{key} in recipe \S+, sources\[1\]: one collator batches every source, "
                       rf"so it reads the recipe's {key}, not a source's; set it at the recipe level"):
        parsed(recipe)
    parsed(write_recipe(tmp_path, "slurp.yaml", f"{key}: {value}\nsources:\n  - input_mode: text\n"))  # the recipe's


def test_fractions_round_half_up_exactly():
    # In floats these four are just below the half (0.145 x 100 = 14.499999999999998) and rounded down
    assert [count_of(f, 100) for f in (0.145, 0.285, 0.565, 0.575)] == [15, 29, 57, 58]
    for total in (100, 200, 1000, 11514):  # every k/1000 against integer arithmetic: floor(k x n / 1000 + 1/2)
        assert [count_of(k / 1000, total) for k in range(1001)] == [(2 * k * total + 1000) // 2000
                                                                    for k in range(1001)]
    data = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=0.145,
                                                  max_train_samples=100)), seed=42)
    assert data.speech_ids[0]["sentences"] == 100 and data.speech_ids[0]["speech_sentences"] == 15


def test_a_positive_fraction_that_gives_no_example_is_refused_with_the_smallest_that_gives_one(tmp_path):
    with pytest.raises(DataError, match=r"^speech_fraction 0.001 of the 200 training sentences of task slurp "
                       r"\(data/tiny/slurp/train.jsonl\) gives 0 sentences \(0.001 x 200 = 0.2, rounded half up\): "
                       r"the smallest speech_fraction that gives one is 0.0025$"):
        training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=0.001)), seed=42)
    smallest = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=0.0025)), seed=42)
    assert smallest.summary["speech_examples"] == 1
    zero = training_data(recipe_task(task_args_of("slurp_speech_fraction.yaml", speech_fraction=0.0)), seed=42)
    assert zero.summary["speech_examples"] == 0  # 0 stays text only
    sources = parsed(write_recipe(tmp_path, "slurp.yaml", "sources:\n  - fraction: 0.001\n"))[1]
    with pytest.raises(DataError, match=r"^sources\[0\] \(task slurp\): fraction 0.001 of the 200 training examples "
                       r"of task slurp .* gives 0 examples .*: the smallest fraction that gives one is 0.0025$"):
        training_data(recipe_task(sources), seed=42)


@pytest.mark.parametrize("extra, message", [
    ("speech_fraction_rest: drop\n", r"^speech_fraction_rest 'drop' in recipe \S+: it says what becomes"),
    ("speech_fraction_rest: text\n", r"^speech_fraction_rest 'text' in recipe \S+: it says what becomes"),
    ("sources:\n  - speech_fraction: 0.5\n  - speech_fraction_rest: drop\n",
     r"^speech_fraction_rest 'drop' in recipe \S+, sources\[1\]: it says what becomes"),
    ("curriculum:\n  - speech_fraction: 0\n  - speech_fraction_rest: drop\n",
     r"^speech_fraction_rest 'drop' in curriculum stage 2 of recipe \S+: it says what becomes"),
    ("speech_fraction_rest: drop\ncurriculum:\n  - num_train_epochs: 1\n",
     r"^speech_fraction_rest 'drop' in recipe \S+: it says what becomes"),
    ("curriculum: []\n", r"^curriculum in recipe \S+ is empty: name at least one stage, or leave it unset"),
])
def test_limited_speech_options_without_effect_are_refused(tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message):
        parsed(write_recipe(tmp_path, "slurp.yaml", extra))


def test_speech_fraction_rest_on_the_command_line_without_speech_fraction_is_refused():
    with pytest.raises(RecipeError, match=r"^speech_fraction_rest 'drop' on the command line: it says"):
        parsed(TINY / "slurp.yaml", "--speech_fraction_rest", "drop")
    assert parsed(TINY / "slurp_speech_fraction.yaml", "--speech_fraction_rest", "drop")[1].speech_fraction_rest == "drop"


@pytest.mark.parametrize("extra", [
    "speech_fraction_rest: drop\nsources:\n  - input_mode: text\n  - speech_fraction: 0.5\n",
    "speech_fraction_rest: drop\ncurriculum:\n  - speech_fraction: 0\n  - num_train_epochs: 1\n",
    "sources:\n  - speech_fraction: 0.5\n    speech_fraction_rest: drop\n",
])
def test_speech_fraction_rest_is_accepted_where_some_training_data_has_a_speech_fraction(tmp_path, extra):
    parsed(write_recipe(tmp_path, "slurp.yaml", extra))  # no error


def test_apply_overrides_refuses_unknown_keys():
    assert apply_overrides({"a": 1, "b": 2}, {"b": 3}, ["a", "b"]) == {"a": 1, "b": 3}
    with pytest.raises(RecipeError, match=r"unknown option 'lerning_rate' in stage 2; did you mean 'learning_rate'"):
        apply_overrides({}, {"lerning_rate": 1}, ["learning_rate"], "in stage 2")


@pytest.mark.parametrize("stages, message", [
    ("  - {}\n  - lerning_rate: 1.0\n", r"unknown option 'lerning_rate' in curriculum stage 2 of recipe"),
    ("  - output_dir: x\n", r"output_dir in curriculum stage 1 of recipe \S+: a curriculum sets it"),
    ("  - speech_fraction: 2\n", r"invalid value for speech_fraction in curriculum stage 1 of recipe \S+: expected a "
     r"number in \[0, 1\]"),
    ("  - sources:\n      - trian_file: x\n", r"unknown option 'trian_file' in curriculum stage 1 of recipe \S+, "
     r"sources\[0\]"),
])
def test_every_curriculum_stage_is_checked_before_training(tmp_path, stages, message):
    with pytest.raises(RecipeError, match=message):
        parsed(write_recipe(tmp_path, "slurp.yaml", "curriculum:\n" + stages))


def test_run_sft_writes_speech_ids_and_the_counts_in_trainer_state(tmp_path):
    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "run"
    args = parsed(TINY / "slurp_speech_fraction.yaml", "--output_dir", str(output), "--max_steps", "1")[:3]
    metrics = run_sft(*args, recipe_path=str(TINY / "slurp_speech_fraction.yaml"))
    assert metrics["train_speech_examples"] == 10 and metrics["train_text_examples"] == 190
    saved = json.loads((output / "train_metrics.json").read_text())
    assert saved["train_speech_examples"] == 10 and saved["train_examples"] == 200
    record = json.loads((output / "trainer_state.json").read_text())["stateful_callbacks"]["TrainingDataRecord"]
    summary = record["args"]["training_data"]
    assert (summary["examples"], summary["speech_examples"], summary["text_examples"]) == (200, 10, 190)
    assert summary["sources"][0]["data"] == "data/tiny/slurp/train.jsonl"
    ids = json.loads((output / "speech_ids.json").read_text())
    assert ids["seed"] == 42 and ids["sources"][0]["speech_sentences_by_scenario"]["alarm"] == 3
    assert len(ids["sources"][0]["speech_ids"]) == 10


def stage_argv(tmp_path: Path, recipe: Path) -> list[str]:
    return [str(recipe), "--output_dir", str(tmp_path / "out"), "--max_steps", "2"]


def run_stages(argv: list[str]):
    model_args, task_args, training_args, _, recipe_path = parse_recipe(TYPES, argv, return_recipe_path=True)
    return run_curriculum(TYPES, argv, task_args, training_args, recipe_path)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_curriculum_stage_two_starts_from_stage_one_and_the_last_is_in_output_dir(tmp_path, lora):
    ensure_tiny_model("qwen2-audio")
    recipe = tmp_path / "recipe.yaml"
    text = (TINY / "slurp_curriculum.yaml").read_text().replace(
        "    speech_fraction_rest: drop\n", "    speech_fraction_rest: drop\n    learning_rate: 0.0\n")
    if lora:
        text += "use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_target_preset: attention\n"
    recipe.write_text(text)
    result = run_stages(stage_argv(tmp_path, recipe))
    out = tmp_path / "out"
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    first, second = load_file(out / "stage_1" / weights), load_file(out / "stage_2" / weights)
    final = load_file(out / weights)
    assert first.keys() == second.keys() == final.keys()
    assert all(torch.equal(first[key], second[key]) and torch.equal(second[key], final[key]) for key in first)
    if lora:  # the adapter trained in stage 1 (LoRA's B starts at zero) and stage 2 continued it
        assert any("lora_B" in key and first[key].abs().sum() > 0 for key in first)
    else:  # stage 1 moved the tiny model's weights
        base = load_file(ROOT / "tiny-models" / "qwen2-audio" / "model.safetensors")
        shared = [key for key in first if key in base]
        assert len(shared) == len(first) and any(not torch.equal(first[key], base[key]) for key in shared)
    record = json.loads((out / "curriculum.json").read_text())
    assert [stage["output_dir"] for stage in record["stages"]] == ["stage_1", "stage_2"]
    assert str(tmp_path) not in (out / "curriculum.json").read_text()  # it is pushed: no path of this machine
    assert [stage["metrics"]["train_text_examples"] for stage in record["stages"]] == [200, 0]
    assert [stage["metrics"]["train_speech_examples"] for stage in record["stages"]] == [0, 10]
    assert result["curriculum_stages"] == 2 and result["train_speech_examples"] == 10
    # The published card describes the curriculum: its title, the base model, the recipe and each stage's options
    card = (out / "README.md").read_text()
    # The tiny base model is a local folder with no Hub id: the card names no base_model rather than a local path
    assert json.loads((out / "stage_1" / "card_fields.json").read_text())["base_model"] is None
    assert "base_model:" not in card.split("\n---\n")[0] and str(ROOT) not in card
    assert "\n# out\n" in card and "trained with audio-recipes in a curriculum of 2 stages." in card
    assert "1. `stage_1`, from the base model: speech_fraction: 0\n" in card
    assert ('2. `stage_2`, from stage 1: speech_fraction: 0.05, speech_fraction_rest: "drop", '
            'learning_rate: 0.0\n') in card
    assert 'model_name_or_path: "tiny-models/qwen2-audio"\n' in card and "curriculum: [{" in card
    assert f"--model_name_or_path {out}" in card
    assert [name for name in files_to_push(out) if "stage" in name] == []


def test_an_interrupted_curriculum_skips_its_finished_stage(tmp_path, monkeypatch):
    ensure_tiny_model("qwen2-audio")
    argv = stage_argv(tmp_path, TINY / "slurp_curriculum.yaml")
    trained = []
    real_run_sft = curriculum_module.run_sft

    def interrupted_in_stage_two(model_args, task_args, training_args, recipe_path, eval_args=None):
        trained.append(Path(training_args.output_dir).name)
        assert isinstance(eval_args, EvalArguments)  # each stage decodes its generation log as evaluate.py does
        if len(trained) == 2:
            raise KeyboardInterrupt  # killed during stage 2
        return real_run_sft(model_args, task_args, training_args, recipe_path, eval_args=eval_args)

    monkeypatch.setattr(curriculum_module, "run_sft", interrupted_in_stage_two)
    with pytest.raises(KeyboardInterrupt):
        run_stages(argv)
    stage_1 = tmp_path / "out" / "stage_1"
    assert (stage_1 / "stage_done.json").is_file() and not (tmp_path / "out" / "stage_2" / "stage_done.json").exists()
    written = {path: path.stat().st_mtime_ns for path in stage_1.iterdir()}
    trained_again = []

    def counted(model_args, task_args, training_args, recipe_path, eval_args=None):
        trained_again.append(Path(training_args.output_dir).name)
        return real_run_sft(model_args, task_args, training_args, recipe_path, eval_args=eval_args)

    monkeypatch.setattr(curriculum_module, "run_sft", counted)
    result = run_stages(argv)
    assert trained == ["stage_1", "stage_2"] and trained_again == ["stage_2"]
    assert {path: path.stat().st_mtime_ns for path in stage_1.iterdir()} == written
    assert result["curriculum_stages"] == 2 and (tmp_path / "out" / "model.safetensors").is_file()
    # Another first stage in the same folder is refused, not silently reused
    changed = tmp_path / "changed.yaml"
    changed.write_text((TINY / "slurp_curriculum.yaml").read_text().replace(
        "  - speech_fraction: 0\n", "  - speech_fraction: 0\n    learning_rate: 1.0e-3\n"))
    with pytest.raises(RecipeError, match="stage_1 holds a stage finished with other options"):
        run_stages([str(changed), *argv[1:]])


def fake_training(trained: list[str]):
    """run_sft without a model: the stage's folder with a file naming where it started, and a loss."""
    def run_sft(model_args, task_args, training_args, recipe_path, eval_args=None):
        folder = Path(training_args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_text(f"trained from {model_args.model_name_or_path}")
        trained.append(folder.name)
        return {"train_loss": 1.0, "learning_rate": training_args.learning_rate}
    return run_sft


# Stage 2 sets nothing: it takes the recipe's speech_fraction (as a grid's curriculum cell does)
INHERITING = (TINY / "slurp_curriculum.yaml").read_text().split("curriculum:")[0] + (
    "speech_fraction: 0.05\ncurriculum:\n  - speech_fraction: 0\n  - {}\n")


@pytest.mark.parametrize("recipe_change, options, folder, named", [
    (None, ["--learning_rate", "1.0e-4"], "stage_1", "learning_rate: 0.003 then, 0.0001 now"),
    (None, ["--seed", "1"], "stage_1", "seed: 42 then, 1 now"),
    (("speech_fraction: 0.05\n", "speech_fraction: 0.1\n"), [], "stage_2", "speech_fraction: 0.05 then, 0.1 now"),
    (("num_train_epochs: 15\n", "num_train_epochs: 3\n"), [], "stage_1", "num_train_epochs: 15.0 then, 3.0 now"),
], ids=["learning_rate", "seed", "recipe_speech_fraction_stage_2_inherits", "recipe_epochs"])
def test_a_finished_stage_whose_options_changed_is_an_error_naming_the_folder_and_option(
        tmp_path, monkeypatch, recipe_change, options, folder, named):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(INHERITING)
    trained = []
    monkeypatch.setattr(curriculum_module, "run_sft", fake_training(trained))
    run_stages(stage_argv(tmp_path, recipe))
    assert trained == ["stage_1", "stage_2"]
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")}
    if recipe_change:
        recipe.write_text(INHERITING.replace(*recipe_change))
    with pytest.raises(RecipeError, match=rf"out/{folder} holds a stage finished with other options \({named}\): "
                                          rf"give the curriculum another output_dir, or remove \S+/{folder} and"):
        run_stages([*stage_argv(tmp_path, recipe), *options])
    # Stage 1 unchanged where stage 2's options changed: skipped, nothing trained or rewritten
    assert trained == ["stage_1", "stage_2"]
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")} == written


def test_an_unchanged_curriculum_is_skipped_whether_output_dir_is_relative_or_absolute(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(curriculum_module, "run_sft", fake_training(trained))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(INHERITING)
    relative = os.path.relpath(tmp_path / "out", Path.cwd())
    first = run_stages([str(recipe), "--output_dir", relative, "--max_steps", "2"])
    again = run_stages(stage_argv(tmp_path, recipe))  # the same folder, named absolutely; and logging changed:
    logged = run_stages([*stage_argv(tmp_path, recipe), "--logging_steps", "1", "--report_to", "none"])
    assert trained == ["stage_1", "stage_2"] and first == again == logged
    assert (tmp_path / "out" / "model.safetensors").read_text() == f"trained from {Path(relative) / 'stage_1'}"


def test_a_stage_one_trained_again_makes_stage_two_an_error_not_a_reused_stage(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(curriculum_module, "run_sft", fake_training(trained))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(INHERITING)
    argv = stage_argv(tmp_path, recipe)
    run_stages(argv)
    out = tmp_path / "out"
    # Stage 1 trained again in its folder (its marker rewritten, as a new training writes it): stage 2 is stale
    marker = json.loads((out / "stage_1" / "stage_done.json").read_text())
    (out / "stage_1" / "stage_done.json").write_text(json.dumps({**marker, "finished_at": "later"}))
    with pytest.raises(RecipeError, match=r"out/stage_2 holds a stage finished with other options \(the previous "
                                          r"stage was trained again since\)"):
        run_stages(argv)
    # Stage 1 removed to be trained again: refused before it trains, stage 2 would not start from it
    shutil.rmtree(out / "stage_1")
    with pytest.raises(RecipeError, match=r"out/stage_2 holds a stage finished from another stage 1 than the one "
                                          r"about to train in \S+/out/stage_1: give the curriculum another output_dir"):
        run_stages(argv)
    assert trained == ["stage_1", "stage_2"] and not (out / "stage_1").exists()


def train_and_evaluate(scheme: str, output_dir: Path, seed: int) -> dict:
    """scripts/sft.py then scripts/evaluate.py on the held-out test clips, as docs/slu.md's commands run them."""
    import subprocess
    import sys

    recipe = str(TINY / f"slurp_{scheme}.yaml")
    for script, extra in (("sft.py", []), ("evaluate.py", ["--model_name_or_path", str(output_dir), "--output_dir",
                                                            str(output_dir / "eval_test"), "--split", "test"])):
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), recipe, "--seed", str(seed),
                        *(["--output_dir", str(output_dir)] if script == "sft.py" else extra)],
                       cwd=ROOT, check=True, capture_output=True, timeout=3600)
    return json.loads((output_dir / "eval_test" / "metrics.json").read_text())


@pytest.mark.slow
def test_text_then_speech_and_direct_mixing_beat_speech_only_on_the_same_five_percent(tmp_path):
    """The learning check of docs/slu.md (seed 42): trained on the same 10 spoken sentences, the schemes that also
    see the other 190 as text answer the held-out test clips better than speech-only training."""
    ensure_tiny_model("qwen2-audio")
    figures = {scheme: train_and_evaluate(scheme, tmp_path / scheme, seed=42)
               for scheme in ("speech_only", "speech_fraction", "curriculum")}
    speech_only = figures["speech_only"]["intent_accuracy"]
    assert figures["speech_fraction"]["intent_accuracy"] > speech_only, figures
    assert figures["curriculum"]["intent_accuracy"] > speech_only, figures


@pytest.mark.parametrize("script, recipe, options, named", [
    ("grpo.py", "mmar_grpo.yaml", ["--speech_fraction", "0.5"], "speech_fraction: only scripts/sft.py reads this; GRPO"),
    ("rest.py", "mmar_rest.yaml", ["--speech_fraction", "0"], "speech_fraction: only scripts/sft.py reads this; ReST"),
])
def test_grpo_and_rest_refuse_the_sft_data_options_before_loading_a_model(script, recipe, options, named):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), str(TINY / recipe), *options],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr and "Traceback" not in result.stderr


def test_the_refusal_names_every_sft_data_option_given():
    args = task_args_of("slurp.yaml", speech_fraction=0.1, curriculum=[{"speech_fraction": 0}])
    with pytest.raises(RecipeError, match=r"^speech_fraction, curriculum: only scripts/sft.py reads these; ReST"):
        refuse_sft_data_options(args, "ReST")
    args = task_args_of("slurp.yaml", speech_fraction=0.1, speech_fraction_rest="drop")
    with pytest.raises(RecipeError, match=r"^speech_fraction, speech_fraction_rest: only scripts/sft.py reads these"):
        refuse_sft_data_options(args, "GRPO")
    refuse_sft_data_options(task_args_of("slurp.yaml"), "GRPO")  # the defaults are no request


def test_one_run_of_a_recipe_with_a_curriculum_is_refused_before_a_model_loads(tmp_path):
    model_args, task_args, training_args, eval_args = parse_recipe(
        TYPES, [str(TINY / "slurp_curriculum.yaml"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(RecipeError, match="the recipe has a curriculum: its stages are trained by"):
        run_sft(model_args, task_args, training_args, recipe_path=str(TINY / "slurp_curriculum.yaml"))
    assert not (tmp_path / "out").exists()


def test_seeds_train_a_curriculum_recipe_stage_by_stage(tmp_path):
    """scripts/seeds.py trained a curriculum recipe as one plain run (its stages ignored)."""
    from audio_recipes.pipelines.seeds import run_seeds

    ensure_tiny_model("qwen2-audio")
    summary = run_seeds(str(TINY / "slurp_curriculum.yaml"), [7], ["--max_steps", "1", "--max_eval_samples", "2"],
                        tmp_path / "seeds")
    seed_dir = tmp_path / "seeds" / "seed-7"
    record = json.loads((seed_dir / "curriculum.json").read_text())
    assert [stage["metrics"]["train_speech_examples"] for stage in record["stages"]] == [0, 10]
    assert (seed_dir / "stage_2" / "model.safetensors").is_file() and (seed_dir / "model.safetensors").is_file()
    assert json.loads((seed_dir / "stage_1" / "stage_done.json").read_text())["identity"]["options"]["seed"] == 7
    assert summary["intent_accuracy"]["num_seeds"] == 1 and 0 <= summary["intent_accuracy"]["mean"] <= 1


def test_a_curriculum_killed_inside_stage_two_resumes_from_that_stages_checkpoint(tmp_path):
    """Stage 1 finished, stage 2 killed after its step-2 checkpoint: the rerun skips stage 1 and resumes stage 2 at
    step 2, reporting the uninterrupted stage's loss."""
    ensure_tiny_model("qwen2-audio")
    common = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--warmup_steps", "0",
              "--resume_from_checkpoint", "true"]
    recipe = str(TINY / "slurp_curriculum.yaml")
    whole = run_stages([recipe, "--output_dir", str(tmp_path / "whole"), *common])
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole" / "stage_1", killed / "stage_1")  # finished, with its marker
    shutil.copytree(tmp_path / "whole" / "stage_2" / "checkpoint-2", killed / "stage_2" / "checkpoint-2")
    resumed = run_stages([recipe, "--output_dir", str(killed), *common])
    record = json.loads((killed / "curriculum.json").read_text())
    assert [stage["metrics"].get("resumed_at_step") for stage in record["stages"]] == [0, 2]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    assert resumed["train_speech_examples"] == whole["train_speech_examples"] == 10
    assert (killed / "model.safetensors").is_file() and (killed / "stage_2" / "stage_done.json").is_file()


def test_text_only_fraction_rounds_half_up_and_a_fraction_giving_no_row_is_refused():
    task = recipe_task(task_args_of("slurp.yaml", text_only_fraction=0.5, max_train_samples=5))
    examples = task.examples("train")
    assert [example.audio is None for example in examples] == [False] * 5 + [True] * 3  # 2.5 rows: 3, not round()'s 2
    with pytest.raises(DataError, match=r"^text_only_fraction 0.05 of the 5 training rows of task slurp "
                       r"\(data/tiny/slurp/train.jsonl\) gives 0 rows .*: the smallest text_only_fraction that gives "
                       r"one is 0.1$"):
        recipe_task(task_args_of("slurp.yaml", text_only_fraction=0.05, max_train_samples=5)).examples("train")
