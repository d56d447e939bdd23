"""What several test files share: recipes read without a training config, and the project's scripts run as a
user runs them, in their own processes (launched through accelerate where a test needs several)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from audio_recipes.config import TaskArguments
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.recipe import load_recipe


def recipe_args(cls, recipe: str, **overrides):
    """One dataclass of a recipe (the others' keys left out), without building a training config."""
    names = {field.name for field in dataclasses.fields(cls)}
    values = {key: value for key, value in load_recipe(PROJECT_ROOT / recipe).items() if key in names}
    return cls(**{**values, **overrides})


def examples_of(recipe: str, count: int, split: str = "test"):
    """The recipe's task and the first `count` items of a split (builds a tiny recipe's data on first use)."""
    task_args = recipe_args(TaskArguments, recipe)
    task = recipe_task(task_args)
    return task, task.examples(split)[:count]


def run_script_in_process(script: str, args: list[str]) -> None:
    """Run scripts/<script> as __main__ in this process: the real script, without a new interpreter's start-up."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [script, *args])
        runpy.run_path(str(PROJECT_ROOT / "scripts" / script), run_name="__main__")


def json_object_lines(stdout: str) -> list[dict]:
    """The lines of a script's stdout that are JSON objects: its result line, printed once by the main process."""
    objects = []
    for line in stdout.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects


def warning_lines(stderr: str) -> list[str]:
    """The lines of a run's stderr (and DeepSpeed's stdout) that warn: what a user would read as a problem."""
    return [line for line in stderr.splitlines() if re.search(r"warn", line, flags=re.IGNORECASE)]


def subprocess_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_command() -> list[str]:
    executable = Path(sys.executable).with_name("accelerate")
    return [str(executable)] if executable.is_file() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def accelerate_launch(config: str, *launch_options: str) -> list[str]:
    """`accelerate launch --config_file accelerate_configs/CONFIG` on a free port; the script and its args follow."""
    return [*accelerate_command(), "launch", "--config_file", f"accelerate_configs/{config}",
            "--main_process_port", str(free_port()), *launch_options]


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as a crashed node would lose them: torchrun starts its workers
    in sessions of their own, so killing the launcher's process group would leave them running. The caller
    reaps the process it started; the descendants are waited for here."""
    try:
        root = psutil.Process(pid)
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in [root, *descendants]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=30)


def run_command(command: list[str], timeout: int = 400, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run a command from the project root; on timeout kill it with every process it started, then raise."""
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env or subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        kill_process_tree(process.pid)
        error.stdout, error.stderr = process.communicate()
        raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return result


def write_short_wav(path: Path, seconds: float = 0.1) -> Path:
    """A small valid audio file (silence at 16 kHz), for tests that need files the data check accepts."""
    import numpy as np
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
    return path


def call_with_timeout(function, *args, timeout: float = 10):
    """`function(*args)` in a forked process, its result returned; the test fails when the call is still running
    after `timeout` seconds (killed then), or raises. A thread could not stop a regex or JSON decoder running in C."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def call() -> None:
        try:
            sender.send(("result", function(*args)))
        except BaseException as error:  # reported to the test, which fails on it
            sender.send(("error", repr(error)))

    process = context.Process(target=call)
    process.start()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"{function.__name__} did not return within {timeout} s")
        kind, value = receiver.recv()
    finally:
        process.kill()
        process.join()
    assert kind == "result", f"{function.__name__} raised {value}"
    return value
