"""Recipe dataclasses on top of TRL's, and the parser for `script.py RECIPE.yaml [--key value ...]`."""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from trl import ModelConfig

from audio_recipes.hub import keep_token_out_of_files


class RecipeError(ValueError):
    """A recipe or command line that cannot be run; raised before any model loads."""


@dataclass
class ModelArguments(ModelConfig):
    """TRL's model options, plus what audio models need."""

    processor_name_or_path: str | None = field(
        default=None, metadata={"help": "Processor to load; defaults to the model (or the adapter's base model)."}
    )
    freeze_audio_encoder: bool = field(
        default=True, metadata={"help": "Keep the audio encoder's weights fixed during training."}
    )
    freeze_projector: bool = field(
        default=True, metadata={"help": "Keep the audio-to-text projector's weights fixed during training."}
    )
    lora_target_preset: str | None = field(
        default=None,
        metadata={
            "help": "LoRA targets on the language model only: 'attention' (q/k/v/o), 'attention_mlp' "
            "(adds gate/up/down). Overrides lora_target_modules."
        },
    )
    num_speech_tokens: int = field(
        default=0,
        metadata={
            "help": "Extend the vocabulary with speech tokens <|s_0|>..<|s_N-1|> and the <|speech_start|> / "
            "<|speech_end|> markers, after the text vocabulary (CosyVoice v1: 4096). 0 adds none; a model "
            "that already has them keeps its own."
        },
    )
    speech_embedding_init: str = field(
        default="mean",
        metadata={
            "help": "Initial rows of the added tokens (input embedding and output head): 'mean' (mean of the "
            "text rows plus small noise), 'normal' (N(0, initializer_range)) or 'copy' (from "
            "speech_embedding_source, a model that has the same tokens: warm start)."
        },
    )
    speech_embedding_noise: float = field(
        default=0.01,
        metadata={"help": "With 'mean': noise standard deviation, as a fraction of the text rows' own."},
    )
    speech_embedding_source: str | None = field(
        default=None, metadata={"help": "With 'copy': the model (local path or Hub id) whose rows to copy."}
    )
    freeze_text_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Train only the added rows of the input embedding and output head; the text rows stay "
            "bit-identical (a gradient mask, and the rows restored after each optimiser step, since weight "
            "decay and momentum would move them)."
        },
    )


@dataclass
class TaskArguments:
    """Which task, which data, and how its inputs are built."""

    task: str = field(default="slurp", metadata={"help": "Registered task name (see audio_recipes.tasks)."})
    train_file: str | None = field(default=None, metadata={"help": "Training data file (task format)."})
    eval_file: str | None = field(default=None, metadata={"help": "Validation data file, evaluated during training."})
    test_file: str | None = field(default=None, metadata={"help": "Test data file, read by evaluate.py."})
    audio_dir: str | None = field(default=None, metadata={"help": "Folder holding the audio files the data names."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, read when no local file is given (needs the Hub)."}
    )
    locale: str | None = field(default=None, metadata={"help": "Locale for multilingual data (e.g. fr-FR)."})
    train_split: str = field(default="train", metadata={"help": "Split name of the training data."})
    eval_split: str = field(default="validation", metadata={"help": "Split name of the validation data."})
    test_split: str = field(default="test", metadata={"help": "Split name of the test data."})
    input_mode: str = field(
        default="audio",
        metadata={"help": "'audio', 'audio_transcript' (audio plus transcript in the prompt) or 'text' (no audio)."},
    )
    use_all_recordings: bool = field(
        default=False, metadata={"help": "SLURP: one example per recording, not just the lowest-WER one."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message; the task's default when unset."}
    )
    max_audio_seconds: float = field(
        default=30.0, metadata={"help": "Longest clip kept; the encoder window of Whisper-style encoders is 30 s."}
    )
    on_too_long: str = field(
        default="crop", metadata={"help": "A clip over max_audio_seconds: 'crop' (with a warning) or 'reject'."}
    )
    peak_normalize: bool = field(default=False, metadata={"help": "Scale each clip to a peak of 1.0."})
    allow_audio_outside_audio_dir: bool = field(
        default=False,
        metadata={"help": "Accept data rows whose audio path leaves audio_dir (`../`, absolute paths); refused by "
                  "default, since a data set comes from elsewhere."},
    )
    enable_thinking: bool | None = field(
        default=None,
        metadata={
            "help": "Chat templates with a thinking switch (Qwen3): false puts the empty <think></think> block "
            "of non-thinking answers in the prompt. Unset: the template's default."
        },
    )
    text_only_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Training only: add this fraction of the training rows again as text-only examples (the "
            "task's 'text' input mode: transcript, no audio), mixed with the audio rows."
        },
    )
    silent_clip_for_text_batches: bool | None = field(
        default=None,
        metadata={
            "help": "Give a batch without audio a masked 1 s silent clip so that the audio encoder runs on every "
            "rank in every step (ZeRO-3 and FSDP hang otherwise). Unset: on exactly when parameters are sharded."
        },
    )
    build_data_if_missing: bool = field(
        default=False,
        metadata={"help": "Build the task's small local data set when the data files are absent (tiny recipes)."},
    )


@dataclass
class EvalArguments:
    """Options read by evaluate.py."""

    split: str = field(default="test", metadata={"help": "Which data to evaluate: 'test' or 'eval'."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated answer."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width; 1 is greedy."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy / beam search."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (with do_sample)."})
    resume: bool | None = field(
        default=None,
        metadata={"help": "Unset: continue an interrupted evaluation of the same run (model, data, decoding) in the "
                  "output folder, else start; true: the same, saying so; false: start over, discarding its rows."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace the outputs of another run (another model or decoding) in --output_dir; without "
                  "it, that is an error."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N items."})
    decoding: str = field(
        default="generate",
        metadata={"help": "'generate' (free decoding, answer parsed), 'scoring' (one forward pass, softmax over the "
                  "labels' first tokens: label and confidence) or 'constrained' (decoding restricted to the labels)."},
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "A classic system run on the same items and reported beside the model ('silero_vad')."},
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Fold a LoRA adapter into the base weights before generating (merge_and_unload): faster "
                  "inference, same outputs; lossy on a 4-bit base. No effect on a model without an adapter."},
    )


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into a flat dict of options."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from error
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of option: value, got {type(recipe).__name__}")
    return recipe


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown option {key!r} in {where}{hint}"


def _command_line_keys(args: list[str]) -> list[str]:
    return [arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--")]


def parse_recipe(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse `RECIPE.yaml [--key value ...]` into instances of `dataclass_types`.

    Unknown keys, in the YAML or on the command line, fail here, before any model loads.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        raise RecipeError("usage: SCRIPT RECIPE.yaml [--key value ...]: the recipe file comes first")
    recipe_path, overrides = argv[0], argv[1:]
    recipe = load_recipe(recipe_path)

    parser = HfArgumentParser(dataclass_types)
    valid = sorted({f.name for cls in dataclass_types for f in dataclasses.fields(cls)})
    for key in recipe:
        if key not in valid:
            raise RecipeError(_unknown_key_message(key, valid, f"recipe {recipe_path}"))
    for key in _command_line_keys(overrides):
        if key.replace("-", "_") not in valid and key not in ("help",):
            raise RecipeError(_unknown_key_message(key, valid, "the command line"))

    # YAML values become parser defaults so that the command line overrides them with the same type checks
    parser.set_defaults(**recipe)
    parsed = parser.parse_args_into_dataclasses(args=overrides, return_remaining_strings=True)
    *instances, remaining = parsed
    if remaining:
        raise RecipeError(f"could not parse {remaining!r} on the command line")
    keep_token_out_of_files(*instances)
    return tuple(instances)


def recipe_dict(*instances) -> dict[str, Any]:
    """Every option of the parsed dataclasses, for logging and model cards."""
    merged: dict[str, Any] = {}
    for instance in instances:
        for f in dataclasses.fields(instance):
            merged[f.name] = getattr(instance, f.name)
    return merged


@dataclass
class RewardArguments:
    """Options of the reinforcement recipes (grpo.py, rest.py)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["choice_accuracy", "answer_format"],
        metadata={"help": "Reward functions by name (audio_recipes.rewards.REWARD_FUNCS_REGISTRY)."},
    )
