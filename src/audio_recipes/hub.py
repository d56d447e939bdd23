"""Resolve a model or adapter from a local path or Hub id; check Hub access early; model cards and pushes."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audio_recipes.errors import InputError
from audio_recipes.io import write_text_atomic
from audio_recipes.paths import PROJECT_ROOT

ADAPTER_CONFIG = "adapter_config.json"
# Never uploaded: checkpoints, partial files, logs, evaluations, the Trainer's pickled arguments, and a curriculum's
# stage folders and markers (its last stage's model is in output_dir itself)
PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "**/checkpoint-*/**", "*.tmp", "runs/**", "eval-*/**",
                        "eval/**", "training_args.bin", "**/training_args.bin", "stage_*/**", "stage_done.json",
                        "**/stage_done.json"]
logger = logging.getLogger(__name__)


class HubError(InputError, RuntimeError):
    """The Hub cannot be used for what the recipe asks; raised before training starts."""


@dataclass
class ResolvedModel:
    """What to load: the base model, and the adapter on top of it where there is one."""

    name_or_path: str
    base_model: str
    adapter: str | None = None

    @property
    def processor_source(self) -> str:
        # Adapters are saved with the processor beside them; fall back to the base model's
        saved = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
        if self.adapter is not None and any(Path(self.adapter, name).is_file() for name in saved):
            return self.adapter
        return self.base_model


def _base_of_adapter(adapter_config: dict[str, Any], where: str) -> str:
    base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise HubError(f"{where}: adapter_config.json names no base_model_name_or_path")
    return base


def resolve_model(name_or_path: str | None, revision: str = "main") -> ResolvedModel:
    """A local checkpoint or adapter folder, or a Hub id of either, through one code path."""
    if not name_or_path:
        raise HubError("no model given: set model_name_or_path in the recipe or on the command line")
    local = Path(name_or_path)
    if local.is_dir():
        adapter_file = local / ADAPTER_CONFIG
        if adapter_file.is_file():
            base = _base_of_adapter(json.loads(adapter_file.read_text()), str(local))
            # The tiny recipes record a base path relative to the repository: find it from anywhere
            if not Path(base).exists() and (PROJECT_ROOT / base).is_dir():
                base = str(PROJECT_ROOT / base)
            if not Path(base).exists() and _looks_like_a_path(base):
                raise HubError(f"adapter {local} was trained on the base model {base}, which is not here: put the "
                               "base model there, or set base_model_name_or_path in its adapter_config.json to "
                               "where it is (a folder or a Hub id)")
            return ResolvedModel(name_or_path, base, adapter=str(local))
        if (local / "config.json").is_file():
            return ResolvedModel(name_or_path, str(local))
        raise HubError(f"{local} holds neither a model (config.json) nor an adapter ({ADAPTER_CONFIG})")
    looks_local = name_or_path.startswith((".", "/")) or name_or_path.count("/") > 1 or local.parent.is_dir()
    # Without its parent folder, tiny-models/x reads like a Hub id: the hint goes on the Hub's error too
    hint = " (build the tiny models with `make tiny-models`)" if "tiny-models" in name_or_path else ""
    recipe = recipe_writing(name_or_path) if not hint else None
    if recipe is not None:
        hint = f" (it is what {recipe[0]} trains: run `python {recipe[1]} {recipe[0]}` first)"
    if local.exists() or (looks_local and str(local.parent) != "."):
        raise HubError(f"model path {name_or_path} is not a folder holding a model or an adapter{hint}")
    return _resolve_hub_id(name_or_path, revision, hint)


def recipe_writing(path: str) -> tuple[str, str] | None:
    """(recipe, script) of the project's recipe whose output_dir is `path`, e.g. a warm start that a GRPO or ReST
    recipe continues from and that has not been trained yet."""
    import yaml

    wanted = {Path(path).resolve(), (PROJECT_ROOT / path).resolve()}
    for recipe in sorted((PROJECT_ROOT / "recipes").rglob("*.yaml")):
        try:
            keys = yaml.safe_load(recipe.read_text())
        except (OSError, yaml.YAMLError):
            continue
        output_dir = keys.get("output_dir") if isinstance(keys, dict) else None
        if isinstance(output_dir, str) and (PROJECT_ROOT / output_dir).resolve() in wanted:
            script = "rest.py" if "rest_iterations" in keys else "grpo.py" if "reward_funcs" in keys else "sft.py"
            return str(recipe.relative_to(PROJECT_ROOT)), f"scripts/{script}"
    return None


def base_model_hub_id(name_or_path: str | None, depth: int = 0) -> str | None:
    """The Hub id of a base model for its model card: a Hub id as it is; a local folder by what it says of its origin
    (a Hub cache snapshot, `models--org--name/snapshots/<commit>`, or a model this project trained, whose card
    fields name its own base); None where the folder does not say (a local path means nothing on the Hub)."""
    if not name_or_path:
        return None
    local = Path(name_or_path).expanduser()
    if not local.exists():
        return None if _looks_like_a_path(name_or_path) else name_or_path
    resolved = local.resolve()
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
        return resolved.parent.parent.name.removeprefix("models--").replace("--", "/")
    fields = read_card_fields(resolved) if depth < 8 else None  # a chain of fine-tunes, each from the one before
    return base_model_hub_id(fields.get("base_model"), depth + 1) if fields else None


def _looks_like_a_path(name: str) -> bool:
    """A local path rather than a Hub id (`org/name`): absolute, relative with ./ or ../, or deeper than one slash."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _resolve_hub_id(repo_id: str, revision: str, hint: str = "") -> ResolvedModel:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    unreachable = (
        f"cannot reach the Hugging Face Hub to resolve {repo_id!r}{hint}. "
        "Use a local path, or check the network and HF_HUB_OFFLINE."
    )
    try:
        adapter_file = hf_hub_download(repo_id, ADAPTER_CONFIG, revision=revision)
    except LocalEntryNotFoundError as error:
        # Offline or no network (a subclass of EntryNotFoundError, so caught first): not "the repo has no
        # adapter". A full model already in the local cache still loads offline.
        if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
            return ResolvedModel(repo_id, repo_id)
        raise HubError(f"{unreachable} ({type(error).__name__})") from error
    except EntryNotFoundError:
        return ResolvedModel(repo_id, repo_id)
    except RevisionNotFoundError as error:
        raise HubError(f"{repo_id!r} has no revision {revision!r} (model_revision): name an existing branch, tag or "
                       "commit of it") from error
    except RepositoryNotFoundError as error:
        raise HubError(f"{repo_id!r} is neither a local folder nor a Hub repository you can read{hint}") from error
    except Exception as error:  # offline, proxy, DNS: all mean the same thing to the user
        raise HubError(f"{unreachable} ({type(error).__name__})") from error
    base = _base_of_adapter(json.loads(Path(adapter_file).read_text()), repo_id)
    return ResolvedModel(repo_id, base, adapter=repo_id)


def keep_token_out_of_files(*parsed_options: Any) -> None:
    """Move a `hub_token` given in a recipe or on the command line into this process's environment (HF_TOKEN).

    The Trainer pickles its arguments into `training_args.bin` in every checkpoint and output folder: a token left
    there would be written to disk, and pushed. The Hub client reads HF_TOKEN, so pushing still works.
    """
    for options in parsed_options:
        token = getattr(options, "hub_token", None)
        if token:
            os.environ["HF_TOKEN"] = token
            options.hub_token = None
            logger.warning("hub_token taken from the recipe or command line into this process's environment; it "
                           "is never written to disk. Prefer setting HF_TOKEN: a command line is visible to other "
                           "users of the machine")


def check_push_access(hub_model_id: str | None) -> str:
    """Fail at start-up, not after training, when the Hub cannot take the push. Returns the repo id."""
    from huggingface_hub import HfApi, get_token

    if not hub_model_id:
        raise HubError("push_to_hub is set but hub_model_id is not: name the repository, e.g. user/qwen2-audio-slurp")
    token = get_token()
    if token is None:
        raise HubError("push_to_hub is set but no Hub token was found: set HF_TOKEN or run `hf auth login`")
    try:
        HfApi(token=token).whoami()
    except Exception as error:
        # The message never includes the token itself
        raise HubError(
            f"push_to_hub is set but the Hub cannot be reached or the token was refused ({type(error).__name__})"
        ) from None
    return hub_model_id


CARD_FIELDS = "card_fields.json"


def _metric_table(metrics: dict[str, Any]) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    return rows + [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
                   for name, value in sorted(metrics.items())]


def path_from_project_root(path: str | Path) -> str:
    """A local path as a command run from the repository root names it: relative inside the repository, else
    absolute (the card's commands start with `python scripts/...`)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(resolved)


def model_card(
    *, repo_id: str, base_model: str | None, recipe_path: str, task: str, data_files: dict[str, str | None],
    metrics: dict[str, float], is_adapter: bool, recipe: dict[str, Any], evaluation_recipe: str | None,
    evaluation: dict[str, dict[str, Any]] | None = None, use_model: str | None = None,
    curriculum: list[dict[str, Any]] | None = None,
) -> str:
    """A model card naming the base model, the recipe, the data, the training and the evaluation metrics.

    Its Use command loads `use_model` (the Hub id once pushed, else the folder's path; `repo_id` in cards written
    before it existed) with `evaluation_recipe`, a recipe scripts/evaluate.py takes; None: there is none to name.
    `curriculum`: the stages it was trained in (each its `stage` number, `folder` and `overrides`), in order.
    """
    base_model = base_model_hub_id(base_model)  # a local path means nothing on the Hub, and may name the user
    metadata = ["---", *([f"base_model: {base_model}"] if base_model else []),
                "library_name: peft" if is_adapter else "library_name: transformers",
                "tags:", "- audio-recipes", f"- {task}", "- trl", "---", ""]
    base = f"`{base_model}`" if base_model else "a base model loaded from a local folder"
    lines = [
        f"# {repo_id}", "",
        f"{'A LoRA adapter for' if is_adapter else 'A fine-tune of'} {base} "
        f"on the `{task}` task, trained with audio-recipes"
        f"{f' in a curriculum of {len(curriculum)} stages' if curriculum else ''}.", "",
        *_curriculum_section(base_model, curriculum or []),
        "## Recipe", "", f"`{recipe_path}`", "", "```yaml",
        *(f"{key}: {json.dumps(value)}" for key, value in sorted(recipe.items()) if _is_card_safe(key)),
        "```", "", "## Data", "",
        *(f"- {split}: `{path}`" for split, path in data_files.items() if path), "",
        "## Training", "", *_metric_table(metrics), "", "## Evaluation", "",
    ]
    for split, split_metrics in sorted((evaluation or {}).items()):
        lines += [f"`{task}`, {split} split (`scripts/evaluate.py`):", "", *_metric_table(split_metrics), ""]
    if not evaluation:
        lines.append("Not evaluated yet: `make eval TASK=... MODEL=...` adds the task's metrics here.")
    lines += ["", "## Use", ""]
    if evaluation_recipe is None:
        lines += [f"`{recipe_path}` has training options that `scripts/evaluate.py` does not take: evaluate with a "
                  f"`{task}` evaluation recipe (or set `evaluation_recipe` in the training recipe):", ""]
    lines += ["```bash", f"python scripts/evaluate.py {evaluation_recipe or 'RECIPE.yaml'} "
              f"--model_name_or_path {use_model or repo_id}", "```", ""]
    return "\n".join(metadata + lines)


def _curriculum_section(base_model: str | None, stages: list[dict[str, Any]]) -> list[str]:
    if not stages:
        return []
    lines = ["## Curriculum", "", "Each stage a fresh fine-tuning run (its own optimiser and learning-rate schedule) "
             "from the previous stage's weights, with these options over the recipe's:", ""]
    for position, stage in enumerate(stages):
        start = (f"`{base_model}`" if base_model else "the base model") if position == 0 \
            else f"stage {stages[position - 1]['stage']}"
        overrides = ", ".join(f"{key}: {json.dumps(value)}" for key, value in stage["overrides"].items())
        lines.append(f"{stage['stage']}. `{stage['folder']}`, from {start}: {overrides or 'the recipe as it is'}")
    return [*lines, "", "The training metrics below are the last stage's; `curriculum.json` has each stage's.", ""]


def _is_card_safe(key: str) -> bool:
    return "token" not in key and not key.startswith("hub_")


def write_model_card(output_dir: str | Path, **card_fields: Any) -> Path:
    """README.md from the card fields, which are kept beside it so that evaluation can add its metrics."""
    output_dir = Path(output_dir)
    write_text_atomic(output_dir / CARD_FIELDS, json.dumps(card_fields, indent=2, default=str))
    path = output_dir / "README.md"
    write_text_atomic(path, model_card(**card_fields))
    return path


def add_evaluation_to_card(model_dir: str | Path, split: str, metrics: dict[str, Any]) -> Path | None:
    """Put an evaluation's metrics into a local model's card; no-op for models this project did not train."""
    fields = read_card_fields(model_dir)
    if fields is None:
        return None
    fields.setdefault("evaluation", {})[split] = {
        key: value for key, value in metrics.items() if isinstance(value, int | float)
    }
    return write_model_card(model_dir, **fields)


def point_card_at_hub(model_dir: str | Path, repo_id: str) -> Path | None:
    """Rewrite a local model's card for its Hub repository: its title and Use command name the Hub id."""
    fields = read_card_fields(model_dir)
    if fields is None:
        return None
    return write_model_card(model_dir, **{**fields, "repo_id": repo_id, "use_model": repo_id})


def read_card_fields(model_dir: str | Path) -> dict[str, Any] | None:
    fields_path = Path(model_dir) / CARD_FIELDS
    if not fields_path.is_file():
        return None
    fields = json.loads(fields_path.read_text())
    fields.setdefault("evaluation_recipe", fields["recipe_path"])  # cards written before it was a field: SFT ones
    return fields


PUSH_RECORD = "audio_recipes_push.json"


def files_to_push(output_dir: str | Path) -> list[str]:
    """The files of output_dir a push uploads (relative paths)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(output_dir)
    files = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
    return list(filter_repo_objects(files, ignore_patterns=PUSH_IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def files_pushed_before(api: Any, repo_id: str) -> list[str]:
    """The files the project's last push to `repo_id` uploaded, from the record it pushed with them; none when the
    repository has no record (a new repository, or files pushed by someone else)."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        record = Path(api.hf_hub_download(repo_id, PUSH_RECORD))
    except EntryNotFoundError:
        return []
    try:
        files = json.loads(record.read_text()).get("files")
    except (ValueError, AttributeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        logger.warning("%s in %s is not a push record of this project: no earlier file is removed", PUSH_RECORD,
                       repo_id)
        return []
    return files


def push_folder(output_dir: str | Path, repo_id: str, private: bool | None = None, api: Any = None) -> str:
    """Upload the adapter or model folder (checkpoints left out); returns the commit URL.

    Files that the project's previous push to the repository uploaded and this one does not (an old adapter shard)
    are removed in the same upload; files others put there are never touched. PUSH_RECORD, pushed along, lists
    what this push uploads."""
    import glob

    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    point_card_at_hub(output_dir, repo_id)
    uploading = sorted({*files_to_push(output_dir), PUSH_RECORD})
    write_text_atomic(Path(output_dir) / PUSH_RECORD, json.dumps({"repo_id": repo_id, "files": uploading}, indent=2))
    in_repo = set(api.list_repo_files(repo_id))
    stale = sorted((set(files_pushed_before(api, repo_id)) & in_repo) - set(uploading) - {".gitattributes"})
    if stale:
        logger.info("removing from %s the files of its previous push that this one lacks: %s", repo_id,
                    ", ".join(stale))
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(output_dir),
        ignore_patterns=PUSH_IGNORE_PATTERNS,
        delete_patterns=[glob.escape(name) for name in stale] or None,  # escaped: each pattern is one exact path
        commit_message="Upload from audio-recipes",
    )
    return str(commit)
