"""Scale-out with real processes on CPU: DDP over gloo, DeepSpeed ZeRO-3 on its CPU accelerator, text-only batches
beside audio ones under ZeRO-3, resume after SIGKILL, the SLURM launcher.

Every run is `scripts/sft.py` as a user starts it (`accelerate launch --config_file accelerate_configs/...`), on
the tiny Qwen2-Audio, which has no dropout: runs that see the same examples in each step log the same losses.
Accelerate shards a batch sampler of per-device size B so that rank r takes batches r, r + N, ...: N processes
at batch B and one process at batch N x B see the same examples in each step.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    accelerate_launch,
    examples_of,
    free_port,
    json_object_lines,
    kill_process_tree,
    run_command,
    run_script_in_process,
    subprocess_env,
)
from safetensors.torch import load_file
from transformers import Qwen2AudioForConditionalGeneration
from trl import SFTConfig

from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.distributed import last_complete_checkpoint, resume_checkpoint
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.sft import build_trainer
from audio_recipes.recipe import parse_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

RECIPE = "recipes/tiny/slurp.yaml"
SHORT = ["--max_steps", "4", "--logging_steps", "1", "--max_train_samples", "8"]
# Each row again as a text-only row: with one row per rank, some steps give one rank no audio at all
MIXED = [*SHORT, "--text_only_fraction", "1.0"]
ON_DEEPSPEED_CPU = subprocess_env(DS_ACCELERATOR="cpu")
# Generations at steps 2 and 4 on 2 eval items: launched runs log them, and still train as the one process that does not
GENERATION_LOG = ["--generation_log_steps", "2", "--generation_log_samples", "2", "--max_new_tokens", "4"]


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    model = ensure_tiny_model()
    examples_of(RECIPE, 1, split="train")  # builds the tiny SLURP data once, before any launched process needs it
    return model


def sft(output_dir: Path, *args: str) -> list[str]:
    return ["scripts/sft.py", RECIPE, "--output_dir", str(output_dir), *args]


def one_process(output_dir: Path, *args: str) -> None:
    """scripts/sft.py in this process: the reference run, without a second interpreter's start-up."""
    script, *script_args = sft(output_dir, *args)
    run_script_in_process(Path(script).name, script_args)


def logged_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def assert_generations_written_once(output_dir: Path) -> None:
    """Each logged step's rows once (the main process writes them), in order."""
    rows = [json.loads(line) for line in (output_dir / "generations.jsonl").read_text().splitlines()]
    first_eval = [example.id for example in examples_of(RECIPE, 2, split="eval")[1]]
    assert [(row["step"], row["id"]) for row in rows] == [(step, id_) for step in (2, 4) for id_ in first_eval]


def train_metrics(output_dir: Path) -> dict:
    return json.loads((output_dir / "train_metrics.json").read_text())


def assert_same_losses(losses: list[float], reference: list[float]) -> None:
    assert len(losses) == len(reference) == 4
    assert all(abs(a - b) / abs(b) < 1e-3 for a, b in zip(losses, reference, strict=True)), (losses, reference)


def assert_same_weights(output_dir: Path, reference_dir: Path, atol: float = 1e-5) -> None:
    weights, reference = load_file(output_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        assert torch.allclose(tensor, reference[name], atol=atol), name


# ---------------------------------------------------------------- DDP


def test_two_ddp_processes_log_the_losses_of_one_process_at_the_same_global_batch(tiny_model, tmp_path):
    one_process(tmp_path / "one", *SHORT, "--per_device_train_batch_size", "4")
    launched = run_command([*accelerate_launch("cpu_ddp.yaml"),
                            *sft(tmp_path / "ddp", *SHORT, *GENERATION_LOG, "--per_device_train_batch_size", "2")])
    # One result line, from the main process (each of the 2 printed it before)
    assert [line["num_processes"] for line in json_object_lines(launched.stdout)] == [2]

    assert train_metrics(tmp_path / "one")["num_processes"] == 1
    assert train_metrics(tmp_path / "ddp")["num_processes"] == 2
    assert_same_losses(logged_losses(tmp_path / "ddp"), logged_losses(tmp_path / "one"))
    assert_same_weights(tmp_path / "ddp", tmp_path / "one")
    assert_generations_written_once(tmp_path / "ddp")


# ---------------------------------------------------------------- DeepSpeed ZeRO-3


@pytest.fixture(scope="module")
def zero3(tiny_model, tmp_path_factory) -> dict:
    """The shipped zero3.yaml on 2 CPU processes, with the audio encoder trained and text-only rows mixed in,
    and one process at the same global batch. The single process puts the silent clip into its text-only
    batches too, so that the encoder gets a zero gradient there (not none) as on the ranks of the ZeRO-3 run:
    Adam's moments then move alike."""
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs DeepSpeed (requirements.txt): not installed here")
    folder = tmp_path_factory.mktemp("zero3")
    trained = [*MIXED, "--freeze_audio_encoder", "false"]
    one_process(folder / "one", *trained, "--silent_clip_for_text_batches", "true",
                "--per_device_train_batch_size", "2")
    launched = run_command([*accelerate_launch("zero3.yaml", "--num_processes", "2"),
                            *sft(folder / "zero3", *trained, *GENERATION_LOG, "--per_device_train_batch_size", "1")],
                           env=ON_DEEPSPEED_CPU, timeout=600)
    return {"one": folder / "one", "zero3": folder / "zero3", "log": launched.stderr}


@pytest.mark.slow
def test_zero3_partitions_every_large_parameter_across_the_ranks(zero3):
    # zero3.json's "auto" persistence threshold is 10 x hidden size: smaller tensors stay whole on every rank
    model = Qwen2AudioForConditionalGeneration.from_pretrained(ensure_tiny_model())
    threshold = 10 * model.config.text_config.hidden_size
    sizes = [parameter.numel() for parameter in model.parameters()]
    expected = {
        "partitioned_tensors": sum(size > threshold for size in sizes),
        "persistent_tensors": sum(size <= threshold for size in sizes),
        "local_elements": sum(size if size <= threshold else math.ceil(size / 2) for size in sizes),
        "total_elements": sum(sizes),
    }
    assert expected["partitioned_tensors"] > 20 and expected["local_elements"] < 0.55 * expected["total_elements"]

    logged = dict(re.findall(r"ZeRO-3 partition, rank (\d) of 2: (\{.*\})", zero3["log"]))
    assert sorted(logged) == ["0", "1"]
    assert all(json.loads(partition) == expected for partition in logged.values())
    metrics = train_metrics(zero3["zero3"])
    assert {key: metrics[f"zero3_{key}"] for key in expected} == expected
    assert metrics["num_processes"] == 2


@pytest.mark.slow
def test_zero3_saves_gathered_weights_that_load_into_a_plain_model(zero3):
    initial = Qwen2AudioForConditionalGeneration.from_pretrained(ensure_tiny_model()).state_dict()
    reloaded = Qwen2AudioForConditionalGeneration.from_pretrained(zero3["zero3"]).state_dict()
    assert reloaded.keys() == initial.keys()
    assert all(reloaded[name].shape == initial[name].shape for name in initial)
    # The trained weights, not the initial ones nor empty shards: those of the single process
    assert not torch.equal(reloaded["lm_head.weight"], initial["lm_head.weight"])
    assert not torch.equal(reloaded["model.audio_tower.layers.0.fc1.weight"],
                           initial["model.audio_tower.layers.0.fc1.weight"])
    assert_same_weights(zero3["zero3"], zero3["one"])


@pytest.mark.slow
def test_text_only_batches_under_zero3_run_the_encoder_on_a_silent_clip_and_change_no_loss(zero3):
    metrics = train_metrics(zero3["zero3"])
    assert metrics["silent_clip_batches"] > 0 and metrics["audio_clips_loaded"] > 0
    assert_same_losses(logged_losses(zero3["zero3"]), logged_losses(zero3["one"]))


@pytest.mark.slow
def test_every_zero3_rank_generates_the_logged_generations_and_the_main_one_writes_them(zero3):
    # Each rank holds a shard of the weights: generation runs on both in step, or the gathers would hang
    assert_generations_written_once(zero3["zero3"])


@pytest.mark.slow
def test_evaluate_py_under_the_zero3_config_writes_every_item_once(zero3, tmp_path):
    # Each process generates its shard with a whole model: ZeRO-3 init would leave it with empty shards
    output_dir = tmp_path / "eval"
    run_command([*accelerate_launch("zero3.yaml", "--num_processes", "2"), "scripts/evaluate.py", RECIPE,
                 "--model_name_or_path", str(zero3["zero3"]), "--output_dir", str(output_dir), "--max_eval_samples", "5",
                 "--per_device_eval_batch_size", "2", "--max_new_tokens", "8"], env=ON_DEEPSPEED_CPU)
    _, examples = examples_of(RECIPE, 5)
    merged = [json.loads(line)["id"] for line in (output_dir / "raw_outputs.jsonl").read_text().splitlines()]
    assert merged == [example.id for example in examples]
    assert sorted(path.name for path in output_dir.glob("raw_outputs.rank*")) == [
        "raw_outputs.rank0-of-2.jsonl", "raw_outputs.rank1-of-2.jsonl"]


@pytest.mark.slow
def test_without_the_silent_clip_zero3_ranks_fall_out_of_step(tiny_model, tmp_path):
    # The same run with the clip switched off: a rank without audio skips the encoder, whose weights the other
    # rank gathers. gloo aborts on the mismatched collective; NCCL would wait forever.
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs DeepSpeed (requirements.txt): not installed here")
    command = [*accelerate_launch("zero3.yaml", "--num_processes", "2"),
               *sft(tmp_path / "off", *MIXED, "--per_device_train_batch_size", "1",
                    "--silent_clip_for_text_batches", "false")]
    try:
        result = run_command(command, env=ON_DEEPSPEED_CPU, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return  # hung: the failure the clip prevents
    assert result.returncode != 0
    assert "collective mismatch" in result.stderr or "doesn't match" in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_a_curriculum_trains_both_stages_under_zero3(tiny_model, tmp_path):
    """Each rank trains both stages in one process: stage 1's ZeRO-3 init must leave the model classes whole for
    stage 2 (DeepSpeed used to drop kernels' wrapper of Qwen2Attention.__init__, and stage 2's forward crashed)."""
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs DeepSpeed (requirements.txt): not installed here")
    recipe = tmp_path / "curriculum.yaml"  # stage 2 at learning rate 0: its weights are those it loaded
    recipe.write_text((PROJECT_ROOT / "recipes" / "tiny" / "slurp_curriculum.yaml").read_text().replace(
        "    speech_fraction_rest: drop\n", "    speech_fraction_rest: drop\n    learning_rate: 0.0\n"))
    output_dir = tmp_path / "curriculum"
    run_command([*accelerate_launch("zero3.yaml", "--num_processes", "2"), "scripts/sft.py", str(recipe),
                 "--output_dir", str(output_dir), "--max_steps", "1", "--warmup_steps", "0",
                 "--per_device_train_batch_size", "1"], env=ON_DEEPSPEED_CPU, timeout=600)
    base = load_file(tiny_model / "model.safetensors")
    first, second = (load_file(output_dir / stage / "model.safetensors") for stage in ("stage_1", "stage_2"))
    assert first.keys() == second.keys() == base.keys()
    assert any(not torch.equal(first[name], base[name]) for name in base)  # stage 1 trained
    assert all(torch.equal(first[name], second[name]) for name in first)  # stage 2 started from stage 1's weights
    assert_same_weights(output_dir, output_dir / "stage_2", atol=0)


# ---------------------------------------------------------------- resume after a real kill


RESUMABLE = ["--max_steps", "10", "--logging_steps", "1", "--max_train_samples", "24",
             "--save_strategy", "steps", "--save_steps", "2"]


def kill_after_first_checkpoint(command: list[str], output_dir: Path, env: dict[str, str]) -> Path:
    """Start a training run and SIGKILL it, with every process it started, once its first checkpoint is whole."""
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while (checkpoint := last_complete_checkpoint(output_dir)) is None:
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 400 s"
        time.sleep(0.02)
    kill_process_tree(process.pid)
    assert process.wait() == -9
    assert not (output_dir / "model.safetensors").exists(), "the run finished before the kill"
    return checkpoint


def assert_resumed_like_uninterrupted(output_dir: Path, reference_dir: Path, checkpoint: Path, log: str) -> None:
    assert f"resuming from {checkpoint}" in log
    state = json.loads((output_dir / "trainer_state.json").read_text())
    reference = json.loads((reference_dir / "trainer_state.json").read_text())
    assert state["global_step"] == reference["global_step"] == 10
    assert logged_losses(output_dir) == pytest.approx(logged_losses(reference_dir), rel=1e-6)
    weights, expected = load_file(output_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert all(torch.equal(weights[name], expected[name]) for name in expected)  # bit for bit: CPU is deterministic


def write_checkpoint(folder: Path, state: str | None = "{}") -> None:
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)


def test_resume_picks_the_newest_whole_checkpoint_and_true_comes_from_the_command_line(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-2")
    write_checkpoint(tmp_path / "checkpoint-10")  # newer than checkpoint-2 by number, not by name
    write_checkpoint(tmp_path / "checkpoint-12", state='{"global_st')  # cut short by a kill while saving
    write_checkpoint(tmp_path / "checkpoint-14", state=None)  # killed before its trainer state
    write_checkpoint(tmp_path / "checkpoint-best")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"

    _, _, training_args, _ = parse_recipe((ModelArguments, TaskArguments, SFTConfig, EvalArguments), [
        RECIPE, "--output_dir", str(tmp_path), "--resume_from_checkpoint", "true"])
    assert resume_checkpoint(training_args.resume_from_checkpoint, tmp_path) == str(tmp_path / "checkpoint-10")
    assert resume_checkpoint(True, tmp_path) == str(tmp_path / "checkpoint-10")  # `true` in a YAML recipe
    assert resume_checkpoint("true", tmp_path / "fresh") is None  # a first run of a requeued job starts afresh
    assert resume_checkpoint(None, tmp_path) is None and resume_checkpoint("false", tmp_path) is None
    assert resume_checkpoint(str(tmp_path / "checkpoint-2"), tmp_path) == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="checkpoint-14.*no trainer_state.json"):
        resume_checkpoint(str(tmp_path / "checkpoint-14"), tmp_path)


def test_resuming_loads_the_checkpoint_weights(tiny_model, tmp_path):
    """transformers 5 alone would load no weight of a Qwen2-Audio checkpoint and train on from the initial ones."""
    types = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)
    args = [RECIPE, "--output_dir", str(tmp_path), "--max_steps", "1", "--max_train_samples", "4",
            "--learning_rate", "0.01", "--warmup_steps", "0", "--save_strategy", "steps", "--save_steps", "1"]
    model_args, task_args, training_args, _ = parse_recipe(types, args)
    build_trainer(model_args, task_args, training_args).trainer.train()
    saved = load_file(tmp_path / "checkpoint-1" / "model.safetensors")

    model_args, task_args, training_args, _ = parse_recipe(types, args)
    trainer = build_trainer(model_args, task_args, training_args).trainer
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    resumed = trainer.model.state_dict()
    # Saved in the checkpoint layout, whose keys are not the model's: `audio_tower.*` for `model.audio_tower.*`
    assert "model.audio_tower.conv1.weight" not in saved and "audio_tower.conv1.weight" in saved
    reloaded = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path / "checkpoint-1").state_dict()
    assert not torch.equal(resumed["lm_head.weight"], initial["lm_head.weight"])
    assert all(torch.equal(resumed[name], reloaded[name]) for name in reloaded)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_steps_and_weights(tiny_model, tmp_path):
    args = [*RESUMABLE, "--per_device_train_batch_size", "2"]
    one_process(tmp_path / "uninterrupted", *args)
    output_dir = tmp_path / "killed"
    checkpoint = kill_after_first_checkpoint([sys.executable, *sft(output_dir, *args)], output_dir, subprocess_env())
    resumed = run_command([sys.executable, *sft(output_dir, *args, "--resume_from_checkpoint", "true")])
    assert_resumed_like_uninterrupted(output_dir, tmp_path / "uninterrupted", checkpoint, resumed.stderr)


@pytest.mark.slow
def test_a_killed_zero3_run_resumes_to_the_same_steps_and_weights(tiny_model, tmp_path):
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs DeepSpeed (requirements.txt): not installed here")
    args = [*RESUMABLE, "--text_only_fraction", "0.5", "--per_device_train_batch_size", "1"]

    def launch(output_dir: Path, *extra: str) -> list[str]:
        return [*accelerate_launch("zero3.yaml", "--num_processes", "2"), *sft(output_dir, *args, *extra)]

    run_command(launch(tmp_path / "uninterrupted"), env=ON_DEEPSPEED_CPU, timeout=600)
    output_dir = tmp_path / "killed"
    checkpoint = kill_after_first_checkpoint(launch(output_dir), output_dir, ON_DEEPSPEED_CPU)
    resumed = run_command(launch(output_dir, "--resume_from_checkpoint", "true"), env=ON_DEEPSPEED_CPU, timeout=600)
    assert_resumed_like_uninterrupted(output_dir, tmp_path / "uninterrupted", checkpoint, resumed.stderr)


# ---------------------------------------------------------------- SLURM


SLURM_SCRIPT = PROJECT_ROOT / "scripts" / "slurm" / "sft_multinode.slurm"


def fake_cluster(folder: Path, hostnames: list[str]) -> dict[str, str]:
    """`scontrol` and `srun` as a SLURM job of len(hostnames) nodes sees them, all nodes on this machine:
    srun starts its command once per node, with that node's SLURM_PROCID / SLURM_NODEID."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {
        "scontrol": f"#!/bin/sh\nprintf '{chr(10).join(hostnames)}\\n'\n",
        "srun": "#!/bin/bash\nwhile [[ $1 == -* ]]; do shift; done\npids=()\n"
                'for ((node = 0; node < SLURM_NNODES; node++)); do\n'
                '  SLURM_PROCID=$node SLURM_NODEID=$node "$@" & pids+=($!)\ndone\n'
                'status=0; for pid in "${pids[@]}"; do wait "$pid" || status=$?; done; exit $status\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    # The job's environment has the project's Python (and its `accelerate`) on PATH
    path = os.pathsep.join([str(folder), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {"PATH": path, "SLURM_NNODES": str(len(hostnames)),
            "SLURM_JOB_NODELIST": "node-[1-2]"}


def test_slurm_script_gives_each_node_its_rank_and_the_first_node_as_main_address(tmp_path):
    # `accelerate` replaced by a recorder here only: the launch itself is the slow test below
    env = fake_cluster(tmp_path / "bin", ["node-1", "node-2"])
    (tmp_path / "bin" / "accelerate").write_text('#!/bin/sh\necho "accelerate $*" >> "$RECORD"\n')
    (tmp_path / "bin" / "accelerate").chmod(stat.S_IRWXU)
    record = tmp_path / "launches.txt"
    run_command(["bash", str(SLURM_SCRIPT), "recipes/slurp.yaml", "--learning_rate", "1e-5"],
                env=subprocess_env(**env, GPUS_PER_NODE="8", RECORD=str(record)))
    launches = sorted(record.read_text().splitlines())
    assert len(launches) == 2
    for machine_rank, launch in enumerate(launches):
        options = dict(re.findall(r"--(\w+) (\S+)", launch.split(" scripts/sft.py ")[0]))
        assert options == {"config_file": "accelerate_configs/zero3_multinode.yaml", "num_machines": "2",
                           "num_processes": "16", "machine_rank": str(machine_rank), "main_process_ip": "node-1",
                           "main_process_port": "29500"}
        assert launch.endswith(" scripts/sft.py recipes/slurp.yaml --learning_rate 1e-5")


@pytest.mark.slow
def test_slurm_script_trains_across_two_nodes_with_zero3(tiny_model, tmp_path):
    # Two "nodes" on this machine, one process each, joined by the real accelerate / torchrun / DeepSpeed
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs DeepSpeed (requirements.txt): not installed here")
    env = fake_cluster(tmp_path / "bin", ["127.0.0.1", "127.0.0.1"])
    output_dir = tmp_path / "multinode"
    run_command(["bash", str(SLURM_SCRIPT), RECIPE, "--output_dir", str(output_dir), *SHORT,
                 "--per_device_train_batch_size", "2"],
                env={**ON_DEEPSPEED_CPU, **env, "GPUS_PER_NODE": "1", "MAIN_PORT": str(free_port())},
                timeout=600)
    metrics = train_metrics(output_dir)
    assert metrics["num_processes"] == 2 and metrics["zero3_local_elements"] < metrics["zero3_total_elements"]
    assert len(logged_losses(output_dir)) == 4

