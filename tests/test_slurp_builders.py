"""prepare_data.py slurp_nbest (a tiny real-architecture Whisper's beam search) and slurp_rationale (the tiny Qwen3 as
the teacher, through the project's generation code), on SLURP's real annotations with espeak-ng speech: their rows,
their resumption after an interruption, and the slurp_rationale task reading what they write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import examples_of

from audio_recipes import decoding
from audio_recipes.config import TaskArguments
from audio_recipes.errors import DataError
from audio_recipes.io import OutputFileError, file_record_path, read_jsonl, write_jsonl_atomic
from audio_recipes.metrics.slu import slurp_gold_entities
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.prepare import run_builder, slurp_nbest
from audio_recipes.prepare.resumable import PartialRunError
from audio_recipes.prepare.slurp_rationale import RationaleTemplateError, recipe_template, teacher_prompt
from audio_recipes.tasks import get_task
from audio_recipes.tasks.slurp import best_recording
from audio_recipes.testing.tiny_asr_models import ensure_tiny_whisper
from audio_recipes.testing.tiny_data import build_tiny_slurp
from audio_recipes.testing.tiny_models import ensure_tiny_model

SLURP = PROJECT_ROOT / "data" / "tiny" / "slurp"
RECIPE = PROJECT_ROOT / "recipes" / "tiny" / "slurp_rationale.yaml"
class Interrupted(Exception):
    """A run stopped part way (as by Ctrl-C or a lost machine)."""


NBEST = ["--num_candidates", "3", "--num_beams", "4", "--batch_size", "2", "--max_new_tokens", "6", "--limit", "5"]


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> str:
    examples_of("recipes/tiny/slurp.yaml", 1)  # the tiny SLURP data: real annotations, espeak-ng speech
    return str(ensure_tiny_whisper(tmp_path_factory.mktemp("asr")))


def nbest_args(whisper: str, output: Path, *extra: str) -> list[str]:
    return ["--input", str(SLURP / "devel.jsonl"), "--audio_dir", str(SLURP / "audio"), "--model", whisper,
            "--output_file", str(output), *NBEST, *extra]


@pytest.fixture(scope="module")
def nbest_file(whisper, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("nbest") / "devel.nbest.jsonl"
    run_builder("slurp_nbest", nbest_args(whisper, output))
    return output


def test_nbest_rows_hold_distinct_beams_and_the_gold_label(whisper, nbest_file):
    rows = read_jsonl(nbest_file)
    sources = read_jsonl(SLURP / "devel.jsonl")[:5]
    assert [row["filename"] for row in rows] == [best_recording(source["recordings"])["file"] for source in sources]
    for row, source in zip(rows, sources, strict=True):
        assert row["final"] == {"scenario": source["scenario"], "action": source["action"],
                                "entities": slurp_gold_entities(source)}
        assert row["sentence"] == source["sentence"] and row["slurp_id"] == source["slurp_id"]
        assert 1 <= len(row["candidates"]) <= 3 and len(set(row["candidates"])) == len(row["candidates"])
        assert row["candidate_scores"] == sorted(row["candidate_scores"], reverse=True)
    assert any(len(row["candidates"]) > 1 for row in rows)


def test_whispers_own_generate_returns_n_copies_of_the_best_beam(whisper):
    """Why the builder calls GenerationMixin.generate (huggingface/transformers#33445): if this fails, transformers
    changed, and Whisper's own generate may serve."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    from audio_recipes.audio import load_audio

    model, processor = AutoModelForSpeechSeq2Seq.from_pretrained(whisper).eval(), AutoProcessor.from_pretrained(whisper)
    audio = load_audio(SLURP / "audio" / best_recording(read_jsonl(SLURP / "devel.jsonl")[0]["recordings"])["file"],
                       16000)
    inputs = processor([audio], sampling_rate=16000, return_tensors="pt")
    own = model.generate(**inputs, num_beams=4, num_return_sequences=3, max_new_tokens=6)
    assert len({tuple(sequence.tolist()) for sequence in own}) == 1
    ours = slurp_nbest.nbest_batch(model, processor, [audio], 4, 3, 6, slurp_nbest.decoder_prefix(processor, "en"))
    assert len(ours[0][0]) > 1


def test_an_interrupted_nbest_run_resumes_and_writes_what_a_whole_run_writes(whisper, nbest_file, tmp_path,
                                                                              monkeypatch, capsys):
    output = tmp_path / "devel.nbest.jsonl"
    real, calls, fail = slurp_nbest.nbest_batch, [], [True]

    def failing_after_one_batch(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2 and fail[0]:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(slurp_nbest, "nbest_batch", failing_after_one_batch)
    with pytest.raises(Interrupted):
        run_builder("slurp_nbest", nbest_args(whisper, output))
    assert not output.exists() and len(read_jsonl(tmp_path / "devel.nbest.jsonl.partial.jsonl")) == 2
    with pytest.raises(PartialRunError, match="other num_candidates"):
        run_builder("slurp_nbest", nbest_args(whisper, output, "--num_candidates", "2"))
    calls.clear()
    fail[0] = False
    capsys.readouterr()
    run_builder("slurp_nbest", nbest_args(whisper, output))
    assert calls == [2, 1]  # the three recordings left, in batches of two
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["resumed"] == 2
    assert read_jsonl(output) == read_jsonl(nbest_file)
    assert not (tmp_path / "devel.nbest.jsonl.partial.jsonl").exists()


def test_rationales_from_a_chat_model_make_training_rows_of_the_task(nbest_file, tmp_path, monkeypatch, capsys):
    teacher = str(ensure_tiny_model("qwen3"))
    output = tmp_path / "train.jsonl"
    args = ["--input", str(nbest_file), "--recipe", str(RECIPE), "--model", teacher, "--output_file", str(output),
            "--batch_size", "2", "--max_new_tokens", "12", "--limit", "4",
            "--temperature", "1.0"]  # the random-weight teacher's greedy answers are blank lines (left out: below)
    real, prompts = decoding.generate_batch, []

    def recording(model, collator, examples, **kwargs):
        prompts.extend(example.prompt for example in examples)
        if len(prompts) == 4:  # stopped in the second batch, once: the first one is kept
            raise Interrupted
        return real(model, collator, examples, **kwargs)

    monkeypatch.setattr(decoding, "generate_batch", recording)
    with pytest.raises(Interrupted):
        run_builder("slurp_rationale", args)
    capsys.readouterr()
    run_builder("slurp_rationale", args)
    stats = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(prompts) == 6 and stats["resumed"] == 2  # the second batch generated again, the first not

    template = recipe_template(RECIPE)
    sources = read_jsonl(nbest_file)[:4]
    assert prompts[:2] == [teacher_prompt(template, row, row["final"]) for row in sources[:2]]
    assert "Hypotheses: 1. " in prompts[0] and '"scenario": "' in prompts[0]
    rows = read_jsonl(output)
    rejected = tmp_path / "train.rejected.jsonl"
    assert len(rows) + (len(read_jsonl(rejected)) if rejected.exists() else 0) == 4 == stats["rows"] + stats[
        "rows_rejected"]
    for row in rows:
        source = next(source for source in sources if source["filename"] == row["filename"])
        assert row["rationale_text"].strip() and "Final answer" not in row["rationale_text"]
        assert {key: value for key, value in row.items() if key != "rationale_text"} == source

    task = get_task("slurp_rationale", TaskArguments(task="slurp_rationale", train_file=str(output),
                                                     audio_dir=str(SLURP / "audio")))
    examples = task.examples("train")
    assert [example.completion.split("\nFinal answer: ")[0] for example in examples] == [
        row["rationale_text"] for row in rows]

    greedy = [arg for arg in args if arg not in ("--temperature", "1.0")]
    greedy[greedy.index("--output_file") + 1] = str(tmp_path / "greedy.jsonl")
    with pytest.raises(DataError, match="wrote no usable rationale"):
        run_builder("slurp_rationale", greedy)
    assert [row["reason"] for row in read_jsonl(tmp_path / "greedy.rejected.jsonl")] == ["empty rationale"] * 4


def test_the_template_must_name_known_fields(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: slurp_rationale\nrationale_prompt_template: 'Heard {candidates}; say {why}'\n")
    with pytest.raises(RationaleTemplateError, match=r"names 'why'; its fields are candidates, label"):
        recipe_template(recipe)
    recipe.write_text("task: slurp_rationale\n")
    with pytest.raises(RationaleTemplateError, match="has no rationale_prompt_template"):
        recipe_template(recipe)
    row = {"candidates": ["wake me at eight", "make me at eight"], "sentence": "wake me at eight"}
    label = {"scenario": "alarm", "action": "set", "entities": [{"type": "time", "filler": "eight"}]}
    template = "{candidates}|{label}|{scenario}|{action}|{entities}|{sentence}|{{literal}}"
    assert teacher_prompt(template, row, label) == (
        '1. wake me at eight\n2. make me at eight|{"scenario": "alarm", "action": "set", "entities": [{"time": '
        '"eight"}]}|alarm|set|time: eight|wake me at eight|{literal}')


def test_nbest_input_with_missing_audio_is_refused_before_any_model_loads(tmp_path):
    row = read_jsonl(build_tiny_slurp(SLURP) / "devel.jsonl")[0]  # built from the repository's assets if absent
    write_jsonl_atomic(tmp_path / "in.jsonl", [row])
    with pytest.raises(Exception, match="audio files cannot be used"):
        run_builder("slurp_nbest", ["--input", str(tmp_path / "in.jsonl"), "--audio_dir", str(tmp_path),
                                    "--model", "not/loaded", "--output_file", str(tmp_path / "out.jsonl")])


def test_a_finished_nbest_output_is_not_generated_again_nor_replaced_by_other_settings(whisper, nbest_file, tmp_path,
                                                                                       monkeypatch, capsys):
    output = tmp_path / "devel.nbest.jsonl"
    shutil.copy(nbest_file, output)
    shutil.copy(file_record_path(nbest_file), file_record_path(output))
    before = output.read_bytes()

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(slurp_nbest, "nbest_batch", no_generation)
    capsys.readouterr()
    run_builder("slurp_nbest", nbest_args(whisper, output))
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1])["already_built"] is True and "already built" in err
    with pytest.raises(OutputFileError, match=r"other num_beams, num_candidates\).*--overwrite"):
        run_builder("slurp_nbest", nbest_args(whisper, output, "--num_candidates", "2", "--num_beams", "2"))
    assert output.read_bytes() == before and not (tmp_path / "devel.nbest.jsonl.partial.jsonl").exists()


def test_the_nbest_and_rationale_builders_never_write_over_an_input_or_a_users_file(whisper, tmp_path):
    source = tmp_path / "devel.jsonl"
    shutil.copy(SLURP / "devel.jsonl", source)
    before = source.read_bytes()
    with pytest.raises(OutputFileError, match="is also an input"):
        run_builder("slurp_nbest", ["--input", str(source), "--audio_dir", str(SLURP / "audio"), "--model", "not/loaded",
                                    "--output_file", str(tmp_path / "." / "devel.jsonl"), "--overwrite"])
    assert source.read_bytes() == before
    notes = tmp_path / "notes.jsonl"
    notes.write_text("mine\n")
    with pytest.raises(OutputFileError, match=r"notes\.jsonl exists and was not made by the project"):
        run_builder("slurp_nbest", ["--input", str(source), "--audio_dir", str(SLURP / "audio"), "--model", "not/loaded",
                                    "--output_file", str(notes)])
    theirs = tmp_path / "train.rejected.jsonl"
    theirs.write_text("theirs\n")
    rationale = ["--input", str(source), "--recipe", str(RECIPE), "--model", "not/loaded"]
    with pytest.raises(OutputFileError, match=r"train\.rejected\.jsonl exists and was not made by the project"):
        run_builder("slurp_rationale", [*rationale, "--output_file", str(tmp_path / "train.jsonl")])
    with pytest.raises(OutputFileError, match="is also an input"):
        run_builder("slurp_rationale", [*rationale, "--output_file", str(RECIPE)])
    assert notes.read_text() == "mine\n" and theirs.read_text() == "theirs\n" and source.read_bytes() == before


def test_a_malformed_nbest_input_row_is_named_by_its_line_and_key(tmp_path):
    row = {"slurp_id": 3, "sentence": "hi", "scenario": "general", "action": "greet", "tokens": [{"surface": "hi"}],
           "entities": [], "recordings": [{"file": "a.flac"}, "b.flac"]}
    source = tmp_path / "in.jsonl"
    source.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"in\.jsonl, line 2 \(slurp_id 3\): recordings\[1\] is str; expected an "
                                        "object with file"):
        run_builder("slurp_nbest", ["--input", str(source), "--audio_dir", str(tmp_path), "--model", "not/loaded",
                                    "--output_file", str(tmp_path / "out.jsonl"), "--recordings", "all"])


def test_a_bad_nbest_row_after_a_blank_line_is_named_by_its_line(tmp_path):
    source = tmp_path / "nbest.jsonl"
    row = {"filename": "a.flac", "candidates": ["hi"], "final": {"scenario": "general", "action": "greet",
                                                                  "entities": []}}
    source.write_text(json.dumps(row) + "\n\n" + json.dumps({"filename": "b.flac"}) + "\n")
    with pytest.raises(DataError, match=r"nbest\.jsonl, line 3: an n-best row needs filename and candidates"):
        run_builder("slurp_rationale", ["--input", str(source), "--recipe", str(RECIPE), "--model", "not/loaded",
                                        "--output_file", str(tmp_path / "train.jsonl")])


def test_an_asr_model_with_pickled_weights_only_is_not_loaded(whisper, tmp_path):
    # safetensors only: a pytorch_model.bin is unpickled on load, which can run code
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-whisper"
    shutil.copytree(whisper, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(load_file(Path(whisper) / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        slurp_nbest.load_asr_model(str(pickled), "cpu", "float32")
