"""hub.py: resolving local folders and Hub ids, failing early on push, model cards, and save/load round trips.

The machine has no network: Hub access is made to fail fast (offline mode, or a closed local port), never to hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.hub import HubError, check_push_access, resolve_model, write_model_card
from audio_recipes.models import load_model_and_processor
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines import sft
from audio_recipes.recipe import parse_recipe
from audio_recipes.tasks import get_task
from audio_recipes.testing.tiny_models import ensure_tiny_model

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    return ensure_tiny_model()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Hub, and an empty Hub cache: huggingface_hub reads both at import, so the module values are patched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, not in HF_HOME."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home


def cache_repo(cache: Path, repo_id: str, files: dict[str, str]) -> None:
    """A Hub repository as huggingface_hub leaves it in its cache after a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)


# ---------------------------------------------------------------- resolve_model


def test_resolve_a_local_full_model_folder(tiny_model):
    resolved = resolve_model(str(tiny_model))
    assert (resolved.base_model, resolved.adapter) == (str(tiny_model), None)
    assert resolved.processor_source == str(tiny_model)


def test_resolve_a_local_adapter_folder_reads_its_base_model(tiny_model, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    resolved = resolve_model(str(adapter))
    assert (resolved.name_or_path, resolved.base_model, resolved.adapter) == (str(adapter), str(tiny_model), str(adapter))
    assert resolved.processor_source == str(tiny_model)  # no processor saved beside it: the base model's
    (adapter / "tokenizer_config.json").write_text("{}")
    assert resolve_model(str(adapter)).processor_source == str(adapter)

    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(HubError, match="base_model_name_or_path"):
        resolve_model(str(adapter))

    # A base model that was moved or deleted: named as such, not looked up as a Hub repository
    moved = tmp_path / "models" / "qwen2-audio-base"
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(moved)}))
    with pytest.raises(HubError, match=f"trained on the base model {moved}, which is not here"):
        resolve_model(str(adapter))


def test_a_folder_without_model_or_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(HubError, match="neither a model"):
        resolve_model(str(tmp_path))


def test_a_missing_tiny_model_path_says_how_to_build_it(tiny_model, monkeypatch, tmp_path, offline):
    # Its parent folder exists: a local path
    monkeypatch.chdir(PROJECT_ROOT)
    with pytest.raises(HubError, match="make tiny-models") as error:
        resolve_model("tiny-models/no-such-model")
    assert "tiny-models/no-such-model" in str(error.value)
    # A fresh clone, where tiny-models/ itself is missing: the path reads like a Hub id, the hint is still given
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(HubError, match="make tiny-models"):
        resolve_model("tiny-models/qwen2-audio")
    assert time.monotonic() - started < 10


def test_a_missing_warm_start_says_which_recipe_trains_it(monkeypatch, tmp_path, offline):
    # The tiny GRPO and ReST recipes start from the tiny SFT recipe's output_dir; here it has not been trained yet
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubError) as error:
        resolve_model("outputs/tiny/mmar_sft")
    assert "run `python scripts/sft.py recipes/tiny/mmar_sft.yaml` first" in str(error.value)
    with pytest.raises(HubError, match="not a folder holding a model or an adapter$"):
        resolve_model("outputs/tiny/no_recipe_writes_this")


def test_a_hub_id_without_network_is_a_clear_error_not_a_full_model(offline):
    started = time.monotonic()
    with pytest.raises(HubError, match="cannot reach the Hugging Face Hub") as error:
        resolve_model("audio-recipes-tests/no-such-adapter")
    assert "audio-recipes-tests/no-such-adapter" in str(error.value)
    assert time.monotonic() - started < 10


def test_a_revision_the_hub_repository_lacks_is_named_not_reported_as_no_network(monkeypatch):
    import httpx2  # huggingface_hub's HTTP client: its errors carry one of its responses
    import huggingface_hub
    from huggingface_hub.errors import RevisionNotFoundError

    def no_such_revision(repo_id, filename, revision=None, **kwargs):
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/{repo_id}"))
        raise RevisionNotFoundError(f"404: revision {revision} not found", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_such_revision)
    with pytest.raises(HubError) as error:
        resolve_model("user/adapter", revision="v9")
    assert "'user/adapter' has no revision 'v9'" in str(error.value) and "reach" not in str(error.value)


def test_a_hub_id_already_in_the_cache_resolves_offline(offline, tiny_model):
    cache_repo(offline, "audio-recipes-tests/cached-model", {"config.json": "{}"})
    resolved = resolve_model("audio-recipes-tests/cached-model")
    assert (resolved.base_model, resolved.adapter) == ("audio-recipes-tests/cached-model", None)

    base = json.dumps({"base_model_name_or_path": str(tiny_model)})
    cache_repo(offline, "audio-recipes-tests/cached-adapter", {"adapter_config.json": base})
    resolved = resolve_model("audio-recipes-tests/cached-adapter")
    assert (resolved.base_model, resolved.adapter) == (str(tiny_model), "audio-recipes-tests/cached-adapter")


# ---------------------------------------------------------------- check_push_access


def test_push_without_a_token_fails_at_once_naming_hf_token(no_token):
    started = time.monotonic()
    with pytest.raises(HubError, match="HF_TOKEN"):
        check_push_access("user/x")
    assert time.monotonic() - started < 2
    with pytest.raises(HubError, match="hub_model_id"):
        check_push_access(None)


def closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


@pytest.mark.parametrize("no_network", ["offline_mode", "connection_refused"])
def test_push_with_a_token_but_no_hub_fails_without_showing_the_token(no_token, monkeypatch, no_network, tmp_path):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    if no_network == "offline_mode":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", closed_port_endpoint())
    started = time.monotonic()
    with pytest.raises(HubError, match="cannot be reached or the token was refused") as error:
        check_push_access("user/x")
    assert time.monotonic() - started < 30
    shown = "".join(traceback.format_exception(error.value))
    assert FAKE_TOKEN not in shown and FAKE_TOKEN[3:15] not in shown


@pytest.mark.parametrize("token", [None, FAKE_TOKEN])
def test_sft_with_push_to_hub_fails_at_start_up_before_training(tmp_path, token):
    output_dir = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if token:
        env["HF_TOKEN"] = token
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "scripts/sft.py", "recipes/tiny/slurp.yaml", "--push_to_hub", "true",
         "--hub_model_id", "user/x", "--output_dir", str(output_dir)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and result.stderr.count("\n") == 1  # one line, no traceback, nothing else
    assert ("HF_TOKEN" if token is None else "cannot be reached or the token was refused") in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert "Loading weights" not in result.stderr  # no model loaded, let alone trained
    assert not (output_dir / "trainer_state.json").exists() and not list(tmp_path.rglob("checkpoint-*"))
    assert not (output_dir / "adapter_config.json").exists() and not (output_dir / "model.safetensors").exists()
    assert elapsed < 120


def test_a_curriculum_push_uploads_the_final_model_not_its_stages_checkpoints_or_markers(tmp_path):
    from audio_recipes.hub import files_to_push

    final = ["README.md", "card_fields.json", "config.json", "curriculum.json", "model.safetensors",
             "train_metrics.json", "trainer_state.json"]
    left_out = ["training_args.bin", "checkpoint-3/optimizer.pt", "stage_1/model.safetensors",
                "stage_1/stage_done.json", "stage_1/README.md", "stage_1/checkpoint-2/optimizer.pt",
                "stage_2/adapter_model.safetensors", "stage_2/checkpoint-4/global_step4/optim_states.pt",
                "stage_2/eval/metrics.json", "stage_done.json", "runs/x/events.out", "nested/checkpoint-1/optimizer.pt"]
    for name in final + left_out:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert files_to_push(tmp_path) == sorted(final)


class FakeHubApi:
    """The HfApi calls push_folder makes, on an in-memory repository: {path: bytes}, recording each call."""

    def __init__(self, tmp_path: Path, files: dict[str, bytes]):
        self.files, self.calls, self.downloads = dict(files), [], tmp_path / "downloads"

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", repo_id))
        return sorted(self.files)

    def hf_hub_download(self, repo_id, filename, **kwargs):
        from huggingface_hub.errors import EntryNotFoundError

        self.calls.append(("hf_hub_download", filename))
        if filename not in self.files:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        path = self.downloads / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.files[filename])
        return str(path)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns, delete_patterns, **kwargs):
        """As huggingface_hub does it: delete the repository files matching delete_patterns (never .gitattributes),
        then add the folder's files that ignore_patterns leave."""
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

        self.calls.append(("upload_folder", delete_patterns))
        for name in filter_repo_objects(list(self.files), allow_patterns=delete_patterns or []):
            if name != ".gitattributes":
                del self.files[name]
        folder = Path(folder_path)
        local = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
        for name in filter_repo_objects(local, ignore_patterns=ignore_patterns + DEFAULT_IGNORE_PATTERNS):
            self.files[name] = (folder / name).read_bytes()
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_a_push_removes_the_files_its_previous_push_uploaded_and_no_others(tmp_path):
    from audio_recipes.hub import push_folder

    model = tmp_path / "model"
    model.mkdir()
    write_model_card(model, **card_fields())
    for name in ("adapter_model-00001-of-00002.safetensors", "adapter_model-00002-of-00002.safetensors",
                 "adapter_config.json", "checkpoint-2/optimizer.pt"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text("first")
    # Someone else's files already in the repository: the first push has no record of them
    api = FakeHubApi(tmp_path, {".gitattributes": b"*.safetensors lfs", "notes.md": b"by hand", "old.bin": b"x"})
    push_folder(model, "user/qwen2-audio-slurp", api=api)
    assert {"adapter_model-00002-of-00002.safetensors", "README.md", "notes.md", "old.bin"} <= set(api.files)
    assert "checkpoint-2/optimizer.pt" not in api.files and api.calls[-1] == ("upload_folder", None)

    # Retrained into one shard: the second shard of the first push is stale, the others' files stay
    for name in ("adapter_model-00001-of-00002.safetensors", "adapter_model-00002-of-00002.safetensors"):
        (model / name).unlink()
    (model / "adapter_model.safetensors").write_text("second")
    api.files["user_file.txt"] = b"added on the Hub"
    push_folder(model, "user/qwen2-audio-slurp", api=api)
    assert not any(name.startswith("adapter_model-") for name in api.files)
    assert api.files["adapter_model.safetensors"] == b"second"
    assert {".gitattributes", "notes.md", "old.bin", "user_file.txt", "README.md", "adapter_config.json"} <= set(
        api.files)
    record = json.loads(api.files["audio_recipes_push.json"])
    assert "adapter_model.safetensors" in record["files"] and "user_file.txt" not in record["files"]


# ---------------------------------------------------------------- model card


def card_fields(**overrides) -> dict:
    fields = dict(
        repo_id="user/qwen2-audio-slurp", base_model="Qwen/Qwen2-Audio-7B-Instruct", recipe_path="recipes/slurp.yaml",
        task="slurp", data_files={"train": "data/slurp/train.jsonl", "eval": "data/slurp/devel.jsonl", "test": None},
        metrics={"train_loss": 1.23456789, "slu_f1": 0.5, "num_gold": 10}, is_adapter=True,
        evaluation_recipe="recipes/slurp.yaml",
        recipe={"model_name_or_path": "Qwen/Qwen2-Audio-7B-Instruct", "lora_r": 16, "hub_token": "hf_SECRET_A",
                "token": "hf_SECRET_B", "push_to_hub_token": "hf_SECRET_C", "hub_model_id": "user/x"},
    )
    return {**fields, **overrides}


def test_model_card_names_base_model_recipe_data_and_metrics_and_no_token(tmp_path):
    card = write_model_card(tmp_path, **card_fields()).read_text()
    front_matter = card.split("---")[1]
    assert "base_model: Qwen/Qwen2-Audio-7B-Instruct" in front_matter
    assert "library_name: peft" in front_matter and "- slurp" in front_matter
    assert "`recipes/slurp.yaml`" in card
    assert "data/slurp/train.jsonl" in card and "data/slurp/devel.jsonl" in card
    assert "| slu_f1 | 0.5000 |" in card and "| train_loss | 1.2346 |" in card and "| num_gold | 10 |" in card
    assert "lora_r: 16" in card
    assert "SECRET" not in card and "hub_token" not in card
    assert "--model_name_or_path user/qwen2-audio-slurp" in card
    assert not list(tmp_path.glob("*.tmp"))

    full = write_model_card(tmp_path, **card_fields(is_adapter=False, metrics={})).read_text()
    assert "library_name: transformers" in full and "Not evaluated yet" in full


def test_card_base_model_is_a_hub_id_or_left_out_never_a_local_path(tmp_path, tiny_model, monkeypatch):
    from audio_recipes.hub import base_model_hub_id

    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2-Audio-7B-Instruct" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    trained = tmp_path / "stage_1"  # a model this project trained from that snapshot: its card fields say so
    trained.mkdir()
    (tmp_path / "card").mkdir()
    write_model_card(trained, **card_fields(base_model=str(snapshot)))
    monkeypatch.chdir(tmp_path)
    for given, hub_id in [("Qwen/Qwen2-Audio-7B-Instruct", "Qwen/Qwen2-Audio-7B-Instruct"),
                          (str(snapshot), "Qwen/Qwen2-Audio-7B-Instruct"), (str(trained), "Qwen/Qwen2-Audio-7B-Instruct"),
                          ("stage_1", "Qwen/Qwen2-Audio-7B-Instruct"), (str(tiny_model), None),
                          ("/models/gone/qwen2-audio", None), ("~/models/qwen2-audio", None)]:
        assert base_model_hub_id(given) == hub_id, given
        card = write_model_card(tmp_path / "card", **card_fields(base_model=given)).read_text()
        front_matter = card.split("---")[1]
        if hub_id:
            assert f"base_model: {hub_id}\n" in front_matter and f"A LoRA adapter for `{hub_id}`" in card
        else:
            assert "base_model" not in front_matter and given not in card
            assert "A LoRA adapter for a base model loaded from a local folder" in card


def test_card_use_command_names_the_hub_id_once_pushed_and_an_evaluation_recipe(tmp_path):
    from audio_recipes.hub import point_card_at_hub

    fields = card_fields(repo_id="slurp", use_model="outputs/slurp")
    card = write_model_card(tmp_path, **fields).read_text()
    assert "python scripts/evaluate.py recipes/slurp.yaml --model_name_or_path outputs/slurp" in card
    point_card_at_hub(tmp_path, "user/qwen2-audio-slurp")
    card = (tmp_path / "README.md").read_text()
    assert "# user/qwen2-audio-slurp" in card
    assert "python scripts/evaluate.py recipes/slurp.yaml --model_name_or_path user/qwen2-audio-slurp" in card
    fields_file = tmp_path / "card_fields.json"  # a card written before evaluation_recipe was a field: an SFT one
    fields_file.write_text(json.dumps({k: v for k, v in json.loads(fields_file.read_text()).items()
                                       if k not in ("evaluation_recipe", "use_model")}))
    point_card_at_hub(tmp_path, "user/other")
    assert "evaluate.py recipes/slurp.yaml --model_name_or_path user/other" in (tmp_path / "README.md").read_text()
    # A training recipe evaluate.py does not take, and no evaluation recipe named: the card says so
    fields = card_fields(recipe_path="recipes/mmar_grpo.yaml", task="mmar", evaluation_recipe=None)
    card = write_model_card(tmp_path, **fields).read_text()
    assert "has training options that `scripts/evaluate.py` does not take" in card
    assert "python scripts/evaluate.py RECIPE.yaml --model_name_or_path user/qwen2-audio-slurp" in card


def use_command(model_dir: Path) -> list[str]:
    """The command of the model card's Use section, with `python` as this interpreter."""
    import shlex

    card = (model_dir / "README.md").read_text()
    block = card.split("## Use", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    (command,) = block.strip().splitlines()
    words = shlex.split(command)
    assert words[0] == "python"
    return [sys.executable, *words[1:]]


@pytest.mark.parametrize("script, recipe", [("sft.py", "recipes/tiny/mmar.yaml"),
                                            ("grpo.py", "recipes/tiny/mmar_grpo.yaml")])
def test_the_model_card_use_command_runs_as_written(script, recipe, tmp_path):
    """Trained for a step by the tiny recipe, the output's card names the model by its full path and a recipe that
    evaluate.py takes (the GRPO recipe's own options are not evaluate.py's); run from the repository root, as the
    card's `python scripts/...` is, the command evaluates the model."""
    import shutil

    from audio_recipes.pipelines.evaluate import default_evaluation_dir

    ensure_tiny_model("qwen2-audio")
    output = tmp_path / "trained"
    subprocess.run([sys.executable, f"scripts/{script}", recipe, "--max_steps", "1", "--output_dir", str(output),
                    "--model_name_or_path", "tiny-models/qwen2-audio"], cwd=PROJECT_ROOT, check=True,
                   capture_output=True, text=True, timeout=600)
    command = use_command(output)
    assert str(output) in command and "recipes/tiny/mmar.yaml" in command
    evaluation_root = PROJECT_ROOT / "outputs" / "tiny" / "mmar"
    existed = evaluation_root.exists()
    evaluation_dir = default_evaluation_dir(evaluation_root, str(output), "test")
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads(result.stdout.strip().splitlines()[-1])
        assert metrics["num_scored"] == metrics["num_gold"] > 0 and metrics["model"] == str(output)
        assert "test split" in (output / "README.md").read_text()  # the evaluation went into the card
    finally:  # the command wrote under the recipe's output_dir: leave the repository as it was
        shutil.rmtree(evaluation_dir.parent, ignore_errors=True)
        if not existed:
            shutil.rmtree(evaluation_root, ignore_errors=True)
        elif evaluation_dir.parent.parent.is_dir() and not any(evaluation_dir.parent.parent.iterdir()):
            evaluation_dir.parent.parent.rmdir()


# ---------------------------------------------------------------- save and load back by path


def train_in_process(recipe: str, output_dir: Path, tiny_model: Path, monkeypatch, *extra: str):
    """run_sft as sft.py calls it, for 2 steps; returns the trainer, whose model is the one in memory."""
    trainers = []

    class RecordingTrainer(sft.AudioSFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(sft, "AudioSFTTrainer", RecordingTrainer)
    argv = [recipe, "--output_dir", str(output_dir), "--model_name_or_path", str(tiny_model), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--max_train_samples", "8", "--logging_steps", "1", *extra]
    model_args, task_args, training_args, _ = parse_recipe((ModelArguments, TaskArguments, sft.SFTConfig,
                                                            EvalArguments), argv)
    sft.run_sft(model_args, task_args, training_args, recipe_path=recipe)
    return trainers[-1], task_args


def logits_on_a_real_batch(model, processor, task_args) -> tuple[torch.Tensor, torch.Tensor]:
    examples = get_task(task_args.task, task_args).examples("test")[:3]
    batch = AudioChatCollator(processor)([example.to_row() for example in examples])
    model.eval()
    with torch.no_grad():
        return batch["input_ids"], model(**batch).logits


@pytest.mark.parametrize("kind", ["lora_adapter", "full_model"])
def test_a_saved_model_loads_back_by_path_with_identical_logits(kind, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    output_dir = tmp_path / kind
    if kind == "lora_adapter":
        trainer, task_args = train_in_process("recipes/tiny/slurp_qlora.yaml", output_dir, tiny_model, monkeypatch,
                                              "--load_in_4bit", "false")
    else:
        trainer, task_args = train_in_process("recipes/tiny/slurp.yaml", output_dir, tiny_model, monkeypatch)
    ids, in_memory = logits_on_a_real_batch(trainer.model, trainer.processing_class, task_args)

    loaded, processor, resolved = load_model_and_processor(ModelArguments(model_name_or_path=str(output_dir)),
                                                           for_training=False)
    if kind == "lora_adapter":
        assert (output_dir / "adapter_config.json").is_file() and not (output_dir / "model.safetensors").exists()
        assert (resolved.adapter, resolved.base_model) == (str(output_dir), str(tiny_model))
    else:
        assert resolved.adapter is None and (output_dir / "model.safetensors").is_file()
    assert resolved.processor_source == str(output_dir)  # the processor was saved beside the weights
    loaded_ids, reloaded = logits_on_a_real_batch(loaded, processor, task_args)
    assert torch.equal(loaded_ids, ids)
    torch.testing.assert_close(reloaded, in_memory, atol=1e-6, rtol=0)

    # Training changed the model, so equal logits mean the trained weights were loaded, not the base ones
    base, base_processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=str(tiny_model)),
                                                       for_training=False)
    _, base_logits = logits_on_a_real_batch(base, base_processor, task_args)
    assert (base_logits - in_memory).abs().max() > 1e-4

    card = (output_dir / "README.md").read_text()
    assert "base_model" not in card.split("---")[1]  # a local folder: no Hub id to name
    assert "A LoRA adapter for a base model loaded from a local folder" in card or kind == "full_model"
    assert ("library_name: peft" if kind == "lora_adapter" else "library_name: transformers") in card
    assert "data/tiny/slurp/train.jsonl" in card and "train_loss" in card


def test_evaluation_metrics_are_added_to_the_card(tmp_path):
    from audio_recipes.hub import add_evaluation_to_card, write_model_card

    write_model_card(tmp_path, repo_id="user/x", base_model="Qwen/Qwen2-Audio-7B-Instruct",
                     recipe_path="recipes/slurp.yaml", task="slurp", data_files={"train": "data/slurp/train.jsonl"},
                     metrics={"train_loss": 0.5}, is_adapter=True, recipe={"learning_rate": 1e-5},
                     evaluation_recipe="recipes/slurp.yaml")
    assert "Not evaluated yet" in (tmp_path / "README.md").read_text()
    add_evaluation_to_card(tmp_path, "test", {"slu_f1": 0.8125, "num_gold": 10, "model": "ignored text"})
    card = (tmp_path / "README.md").read_text()
    assert "test split" in card and "| slu_f1 | 0.8125 |" in card and "| num_gold | 10 |" in card
    assert "| train_loss | 0.5000 |" in card and "Not evaluated yet" not in card
    assert add_evaluation_to_card(tmp_path / "elsewhere", "test", {}) is None


def test_relative_tiny_base_of_an_adapter_resolves_from_any_folder(tmp_path, monkeypatch):
    from audio_recipes.hub import resolve_model
    from audio_recipes.paths import PROJECT_ROOT
    from audio_recipes.testing.tiny_models import ensure_tiny_model

    ensure_tiny_model("qwen2-audio")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-models/qwen2-audio"}))
    monkeypatch.chdir(tmp_path)
    assert resolve_model(str(adapter)).base_model == str(PROJECT_ROOT / "tiny-models" / "qwen2-audio")
