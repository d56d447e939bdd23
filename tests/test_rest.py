"""ReST: sampling ids, keeping rules, a warm-started loop that keeps and trains, and resuming by phase."""

import json
import os
from pathlib import Path

import pytest
from trl import SFTConfig

from audio_recipes.config import EvalArguments, ModelArguments, RestArguments, RewardArguments, TaskArguments
from audio_recipes.pipelines.rest import RestLoop, keep_samples, sample_examples
from audio_recipes.pipelines.sft import run_sft
from audio_recipes.recipe import parse_recipe
from audio_recipes.tasks.base import Example
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, RewardArguments, SFTConfig, EvalArguments, RestArguments)


def test_sample_ids_and_keeping_rules():
    example = Example("q1", None, "s", "p", "c", "{}")
    assert [e.id for e in sample_examples([example], 3)] == ["q1#0", "q1#1", "q1#2"]
    samples = [
        {"id": "q1#0", "question_id": "q1", "raw_output": "<answer>A</answer>", "reward": 2.0},
        {"id": "q1#1", "question_id": "q1", "raw_output": "<answer>A</answer> ", "reward": 2.0},  # same answer
        {"id": "q1#2", "question_id": "q1", "raw_output": "A", "reward": 1.0},
        {"id": "q2#0", "question_id": "q2", "raw_output": "B", "reward": 0.0},
    ]
    assert [s["id"] for s in keep_samples(samples, 2.0, None)] == ["q1#0", "q1#1"]
    assert [s["id"] for s in keep_samples(samples, 1.0, 1)] == ["q1#1"]  # best distinct answer only
    assert keep_samples(samples, 3.0, None) == []


@pytest.fixture(scope="module")
def warm_model(tmp_path_factory):
    """The tiny Qwen2-Audio fine-tuned briefly on the tiny MMAR items, so that some samples are right."""
    ensure_tiny_model("qwen2-audio")
    output = tmp_path_factory.mktemp("warm") / "model"
    args = parse_recipe((ModelArguments, TaskArguments, SFTConfig, EvalArguments),
                        [str(ROOT / "recipes/tiny/mmar.yaml"), "--num_train_epochs", "6", "--output_dir", str(output)])
    run_sft(*args[:3], recipe_path="recipes/tiny/mmar.yaml")
    return output


def rest_loop(warm_model, output_dir, samples_per_question: int | None = 2):
    samples = ["--samples_per_question", str(samples_per_question)] if samples_per_question else []
    parsed = parse_recipe(TYPES, [str(ROOT / "recipes/tiny/mmar_rest.yaml"), "--model_name_or_path", str(warm_model),
                                  *samples, "--output_dir", str(output_dir)])
    return RestLoop(*parsed, recipe_path="recipes/tiny/mmar_rest.yaml")


def test_loop_keeps_correct_samples_trains_and_resumes_by_phase(warm_model, tmp_path):
    loop = rest_loop(warm_model, tmp_path)
    summary = loop.run()
    assert [entry["iteration"] for entry in summary] == [0, 1]
    assert [entry["learning_rate"] for entry in summary] == [5e-4, 2.5e-4]
    # The starting model's held-out answers are the baseline, written beside the iterations'
    written = json.loads((tmp_path / "rest_summary.json").read_text())
    assert written == {"start": loop.start, "iterations": summary}
    assert (tmp_path / "start" / "heldout" / "metrics.json").is_file()
    assert 0.0 <= loop.start["heldout_accuracy"] <= 1.0
    first = tmp_path / "iteration-0"
    filtered = json.loads((first / "filter.json").read_text())
    questions = len(loop.train_examples)
    assert filtered["samples"] == 2 * questions and 0 < filtered["kept"] < filtered["samples"]
    kept = [json.loads(line) for line in (first / "kept.jsonl").read_text().splitlines()]
    assert all(sample["rewards"] == {"choice_accuracy": 1.0, "answer_format": 1.0} for sample in kept)
    state = json.loads((first / "adapter" / "trainer_state.json").read_text())
    assert state["global_step"] > 0  # it fine-tuned on what it kept
    assert (tmp_path / "iteration-1" / "adapter" / "adapter_config.json").is_file()
    assert all(0.0 <= entry["heldout_accuracy"] <= 1.0 for entry in summary)

    # Interrupt iteration 1 inside its generate phase: half its samples and a torn line remain
    second = tmp_path / "iteration-1"
    finished = {path: path.stat().st_mtime_ns for path in first.rglob("*") if path.is_file()}
    lines = (second / "samples.jsonl").read_text().splitlines()
    (second / "samples.jsonl").write_text("\n".join(lines[: len(lines) // 2]) + '\n{"id": "torn')
    for name in ("samples.done", "filter.json", "adapter.done"):
        (second / name).unlink()
    os.remove(second / "heldout" / "metrics.json")
    resumed = rest_loop(warm_model, tmp_path).run()
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # iteration 0 was not redone
    ids = [json.loads(line)["id"] for line in (second / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 2 * questions  # no sample lost or repeated
    assert len(resumed) == 2 and (second / "adapter.done").exists()


class Interrupted(Exception):
    """Stands in for a kill in the middle of the generate phase."""


def sampled(folder: Path) -> dict[str, str]:
    return {row["id"]: row["raw_output"] for row in map(json.loads, (folder / "samples.jsonl").read_text().splitlines())}


def test_resumed_generate_phase_draws_the_samples_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """Each sample is drawn from its own seed (seed, iteration, sample id): a generate phase killed after two batches
    and rerun, in batches of another size, writes what an uninterrupted run wrote."""
    from audio_recipes import decoding

    model = ensure_tiny_model("qwen2-audio")

    def generate(output_dir: Path, batch_size: int) -> Path:
        parsed = parse_recipe(TYPES, [str(ROOT / "recipes/tiny/mmar_rest.yaml"), "--model_name_or_path", str(model),
                                      "--samples_per_question", "4", "--per_device_eval_batch_size", str(batch_size),
                                      "--output_dir", str(output_dir)])
        rest = RestLoop(*parsed, recipe_path="recipes/tiny/mmar_rest.yaml")
        rest.train_examples = rest.train_examples[:4]  # 16 samples
        folder = rest.iteration_dir(0)
        folder.mkdir(parents=True, exist_ok=True)
        rest.generate(0, folder)
        return folder

    expected = sampled(generate(tmp_path / "uninterrupted", 4))
    assert len(expected) == 16 and len(set(expected.values())) > 1  # sampled, not one greedy answer

    decode_batch, calls = decoding.decode_batch, []

    def killed_at_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return decode_batch(*args, **kwargs)

    monkeypatch.setattr(decoding, "decode_batch", killed_at_the_third_batch)
    with pytest.raises(Interrupted):
        generate(tmp_path / "resumed", 4)
    monkeypatch.setattr(decoding, "decode_batch", decode_batch)
    folder = tmp_path / "resumed" / "iteration-0"
    assert len(sampled(folder)) == 8 and not (folder / "samples.done").exists()
    generate(tmp_path / "resumed", 3)  # the rerun batches the 8 left 3 at a time
    assert sampled(folder) == expected


class Captured(Exception):
    """Stops a phase once what it would run with is seen."""


def test_rest_samples_and_trains_on_the_same_rendered_template(tmp_path, monkeypatch):
    """ReST once built its sampling collator without the recipe's chat template switches: with `enable_thinking:
    false` it sampled with the thinking prompt and fine-tuned without it. Both phases now render the same prompt."""
    from audio_recipes.pipelines import rest

    model = ensure_tiny_model("qwen3-omni-moe")  # a template with the thinking switch
    parsed = parse_recipe(TYPES, [str(ROOT / "recipes/tiny/mmar_rest.yaml"), "--model_name_or_path", str(model),
                                  "--enable_thinking", "false", "--lora_target_preset", "attention",
                                  "--output_dir", str(tmp_path)])
    loop = RestLoop(*parsed, recipe_path="recipes/tiny/mmar_rest.yaml")
    row = loop.train_examples[0].to_row()
    rendered = {}

    def sampling(model, collator, task, examples, output, **kwargs):
        rendered["sampled"] = collator.prompt_texts([row])[0]
        raise Captured

    monkeypatch.setattr(rest, "run_generation", sampling)
    with pytest.raises(Captured):
        loop.generate(0, tmp_path / "iteration-0")

    build_trainer = rest.build_trainer

    def training(*args, **kwargs):
        rendered["trained"] = build_trainer(*args, **kwargs).collator.prompt_texts([row])[0]
        raise Captured

    monkeypatch.setattr(rest, "build_trainer", training)
    folder = tmp_path / "iteration-0"
    folder.mkdir(exist_ok=True)
    kept = {"id": f"{row['id']}#0", "question_id": row["id"], "raw_output": row["completion"], "reward": 1.0}
    (folder / "kept.jsonl").write_text(json.dumps(kept) + "\n")
    with pytest.raises(Captured):
        loop.train(0, folder)

    assert rendered["sampled"] == rendered["trained"]
    assert rendered["sampled"].endswith("<think>\n\n</think>\n\n")  # the switch reached both: thinking off


@pytest.mark.slow
def test_rest_from_the_warm_start_keeps_samples_and_raises_heldout_accuracy(tmp_path):
    """The tiny recipes in order (about a minute): the short SFT warm start, then ReST; every iteration keeps samples
    and the final held-out accuracy is above the starting model's."""
    ensure_tiny_model("qwen2-audio")
    warm = tmp_path / "sft"
    args = parse_recipe((ModelArguments, TaskArguments, SFTConfig, EvalArguments),
                        [str(ROOT / "recipes/tiny/mmar_sft.yaml"), "--output_dir", str(warm)])
    run_sft(*args[:3], recipe_path="recipes/tiny/mmar_sft.yaml")
    loop = rest_loop(warm, tmp_path / "rest", samples_per_question=None)
    summary = loop.run()
    assert all(entry["kept_fraction"] > 0 for entry in summary), summary
    assert summary[-1]["heldout_accuracy"] > loop.start["heldout_accuracy"], (loop.start, summary)


def plain_loop(tmp_path, *options):
    parsed = parse_recipe(TYPES, [str(ROOT / "recipes/tiny/mmar_rest.yaml"), "--model_name_or_path",
                                  str(ensure_tiny_model("qwen2-audio")), "--output_dir", str(tmp_path), *options])
    return RestLoop(*parsed, recipe_path="recipes/tiny/mmar_rest.yaml")


def test_a_folder_of_another_rest_run_is_refused_not_resumed_into(tmp_path):
    """Old samples, kept rows and adapters were taken for this run's: a changed seed, model or K reused them."""
    from audio_recipes.errors import RecipeError

    plain_loop(tmp_path).check_run_record()
    plain_loop(tmp_path).check_run_record()  # the same run: resumed
    with pytest.raises(RecipeError, match=r"holds a ReST run made with other settings \(other samples_per_question, "
                                          r"seed; .*rest_run.json\)"):
        plain_loop(tmp_path, "--seed", "7", "--samples_per_question", "3").check_run_record()
    unrecorded = tmp_path / "unrecorded"
    (unrecorded / "iteration-0").mkdir(parents=True)
    with pytest.raises(RecipeError, match="holds ReST iterations but no rest_run.json"):
        plain_loop(unrecorded).check_run_record()


def test_the_filter_refuses_samples_this_run_did_not_draw(tmp_path):
    from audio_recipes.errors import DataError

    loop = plain_loop(tmp_path, "--samples_per_question", "2")
    folder = loop.iteration_dir(0)
    folder.mkdir(parents=True)
    rows = [{"id": sample.id, "raw_output": "x"} for sample in sample_examples(loop.train_examples, 2)]
    rows.append({"id": "gone-question#5", "raw_output": "x"})  # left by a run with other questions or K
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"samples.jsonl: .* expected \(1 of ids this run does not sample, e.g. "
                                        r"\['gone-question#5'\]\)"):
        loop.filter(folder)
    assert not (folder / "filter.json").exists()


def test_rewards_made_for_another_task_and_push_to_hub_are_refused_before_anything_loads(tmp_path):
    import dataclasses

    from audio_recipes.errors import RecipeError
    from audio_recipes.rewards import check_rewards_fit_the_task

    choice_item = plain_loop(tmp_path).train_examples[0]
    check_rewards_fit_the_task(["choice_accuracy", "answer_format"], choice_item, "mmau")
    slu_item = dataclasses.replace(choice_item, reference=json.dumps({"scenario": "alarm", "action": "set",
                                                                      "entities": []}))
    with pytest.raises(RecipeError, match="reward choice_accuracy cannot score task slurp's items"):
        check_rewards_fit_the_task(["choice_accuracy"], slu_item, "slurp")
    with pytest.raises(RecipeError, match="push_to_hub: ReST does not push"):
        plain_loop(tmp_path / "push", "--push_to_hub", "true", "--hub_model_id", "user/x")
