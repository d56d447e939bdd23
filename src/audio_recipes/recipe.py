"""Recipe files and the parser for `script.py RECIPE.yaml [--key value ...]`: every value checked before any
model loads, against the registries (tasks, rewards, presets, ...) that this module reads and that never import it."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from audio_recipes.audio import ON_TOO_LONG_CHOICES
from audio_recipes.config import COLLATOR_TASK_OPTIONS, TaskArguments, evaluation_argument_types
from audio_recipes.decoding import DECODING_MODES
from audio_recipes.errors import RecipeError
from audio_recipes.hub import keep_token_out_of_files
from audio_recipes.models.adapters import LORA_TARGET_PRESETS
from audio_recipes.models.speech_vocabulary import SPEECH_EMBEDDING_INITS
from audio_recipes.rewards import REWARDS
from audio_recipes.tasks import TASKS
from audio_recipes.tasks.base import SPEECH_FRACTION_RESTS, SPLITS


class _DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (PyYAML keeps the later value, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden, as YAML means
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(f"key {key!r} is set twice, on lines {seen[key]} and {line}: keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str, error: type[RecipeError] = RecipeError) -> Any:
    """A recipe-like YAML file (`what`: "recipe", "grid"): a missing file, bad YAML or a key set twice is `error`,
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as problem:
        raise error(f"{what} {path}: {problem}") from None
    except yaml.YAMLError as problem:
        raise error(f"{what} {path} is not valid YAML: {' '.join(str(problem).split())}") from problem


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into a flat dict of options."""
    recipe = read_yaml(path, "recipe")
    if recipe is None or recipe == {}:
        raise RecipeError(f"recipe {path} is empty: write its options as `key: value` lines")
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of option: value, got {type(recipe).__name__}")
    return recipe


USAGE = "%(prog)s RECIPE.yaml [--key value ...]\n       %(prog)s --config RECIPE.yaml [--key value ...]"
HELP_FLAGS = ("-h", "--help")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written; each option with its default (the recipe's value when one is given)."""


class RecipeParser(HfArgumentParser):
    """HfArgumentParser over a script's dataclasses, taking the recipe as RECIPE or as TRL's `--config RECIPE`.

    Where argparse would print its usage and exit, it raises RecipeError (the scripts print one line).
    Abbreviated options are refused: `--input_mod` is a typo, not `--input_mode`.
    """

    def __init__(self, dataclass_types: tuple[type, ...], description: str | None = None):
        super().__init__(dataclass_types, usage=USAGE, description=description, formatter_class=_HelpFormatter,
                         allow_abbrev=False)
        self.add_argument("recipe", nargs="?", metavar="RECIPE",
                          help="Recipe YAML. Its values are the defaults of the options below; options given on the "
                          "command line override them.")
        self.add_argument("--config", metavar="RECIPE", help="The recipe, as TRL's scripts take it (instead of RECIPE).")

    def error(self, message: str):
        raise RecipeError(message)

    def option_action(self, name: str) -> argparse.Action | None:
        """The action of `--name` (or `--no_name`, `--name-with-hyphens`); None for an option it does not know."""
        return self._option_string_actions.get(f"--{name}")


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.7)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown option {key!r} {where}{hint}"


def _command_line_options(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]


def _show(value: Any) -> str:
    """A value as the recipe writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


class _Mismatch(Exception):
    """A value that does not have a field's type."""


def _describe(hint: Any) -> str:
    """A field's type in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in args))
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(_show(arg) for arg in args)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(member.value) for member in hint)
    if origin in (list, tuple) or hint in (list, tuple):
        return f"a list ({_describe(args[0])} each)" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _conform(value: Any, hint: Any) -> Any:
    """`value` checked against a field's type hint; a string is converted as the command line converts it
    (`1e-5` for a float, `yes` for a bool). Raises _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        if isinstance(value, str) and str in args:
            return value
        for member in args:
            try:
                return _conform(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if value is None or hint is type(None):
        if value is None and hint is type(None):
            return None
        raise _Mismatch
    if origin is typing.Literal:
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, Enum):
        if isinstance(value, hint) or value in [member.value for member in hint]:
            return value
        raise _Mismatch
    if origin in (list, tuple) or hint in (list, tuple):
        items = value if isinstance(value, list | tuple) else [value]  # one value, as `--key value` gives it
        if isinstance(value, dict):
            raise _Mismatch
        return [_conform(item, args[0]) for item in items] if args else list(items)
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return string_to_bool(value)
            except argparse.ArgumentTypeError:
                raise _Mismatch from None
        raise _Mismatch
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Mismatch
        if hint is int and isinstance(value, float):
            raise _Mismatch
        try:
            return hint(value)
        except ValueError:
            raise _Mismatch from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    if isinstance(hint, type) and hint.__module__ != "builtins":
        return value  # a library's own class (accelerate's ParallelismConfig): its dataclass checks it
    raise _Mismatch


def _conform_recipe(recipe: dict[str, Any], parser: RecipeParser, hints: dict[str, Any], where: str) -> dict:
    """The recipe's values through the checks the command line's go through: the field's type, and the choices
    argparse enforces (Literal and Enum fields). argparse checks neither on a default, which a recipe value is."""
    conformed = {}
    for key, value in recipe.items():
        field_hint = hints[key]
        action = parser.option_action(key)
        try:
            conformed[key] = _conform(value, field_hint)
        except _Mismatch:
            choices = getattr(action, "choices", None)
            expected = "one of " + ", ".join(map(repr, choices)) if choices else _describe(field_hint)
            yaml_hint = " (YAML reads yes/no/on/off unquoted as true/false: quote it)" if isinstance(value, bool) else ""
            raise RecipeError(f"invalid value for {key} {where}: expected {expected}, got {_show(value)}{yaml_hint}"
                              ) from None
        choices = getattr(action, "choices", None)
        values = conformed[key] if isinstance(conformed[key], list) else [conformed[key]]
        for item in values:
            if choices and item is not None and item not in choices and str(item) not in choices:
                _refuse_choice(key, item, list(choices), where)
    return conformed


def _refuse_choice(key: str, value: Any, allowed: list, where: str, whose: str = "") -> None:
    if not allowed:
        raise RecipeError(f"invalid value for {key} {where}: none is allowed{whose}, got {_show(value)}")
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"invalid value for {key} {where}: expected one of {', '.join(repr(a) for a in allowed)}"
                      f"{whose}, got {_show(value)}{hint}")


@dataclass(frozen=True)
class Bound:
    """A numeric option's range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE, NON_NEGATIVE, AT_LEAST_ONE = Bound(0, low_open=True), Bound(0), Bound(1)
FRACTION, NUCLEUS = Bound(0, 1), Bound(0, 1, low_open=True)

# Ranges by option name, whichever dataclass holds it (TRL's and transformers' fields among them); None, where a
# field allows it, means unset and is not checked
BOUNDS: dict[str, Bound] = {
    # TaskArguments, ModelArguments, EvalArguments
    "max_audio_seconds": POSITIVE, "text_only_fraction": FRACTION, "speech_fraction": FRACTION, "max_train_samples": AT_LEAST_ONE,
    "max_eval_samples": AT_LEAST_ONE, "num_speech_tokens": NON_NEGATIVE, "speech_embedding_noise": NON_NEGATIVE,
    "max_new_tokens": AT_LEAST_ONE, "num_beams": AT_LEAST_ONE, "temperature": POSITIVE, "top_p": NUCLEUS,
    "generation_log_steps": NON_NEGATIVE, "generation_log_samples": AT_LEAST_ONE,
    # RestArguments (trainers/rest.py), InspectArguments (scripts/inspect_data.py)
    "rest_iterations": AT_LEAST_ONE, "samples_per_question": AT_LEAST_ONE, "iteration_learning_rates": NON_NEGATIVE,
    "keep_top_k": AT_LEAST_ONE, "sample_temperature": POSITIVE, "sample_top_p": NUCLEUS, "num_samples": AT_LEAST_ONE,
    # TRL's ModelConfig, SFTConfig, GRPOConfig and transformers' TrainingArguments
    "learning_rate": NON_NEGATIVE, "num_train_epochs": POSITIVE, "per_device_train_batch_size": AT_LEAST_ONE,
    "per_device_eval_batch_size": AT_LEAST_ONE, "gradient_accumulation_steps": AT_LEAST_ONE,
    "warmup_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "max_grad_norm": NON_NEGATIVE,
    "logging_steps": POSITIVE, "save_steps": POSITIVE, "eval_steps": POSITIVE, "dataloader_num_workers": NON_NEGATIVE,
    "seed": NON_NEGATIVE, "lora_r": AT_LEAST_ONE, "lora_alpha": POSITIVE, "lora_dropout": Bound(0, 1, high_open=True),
    "max_length": AT_LEAST_ONE, "max_completion_length": AT_LEAST_ONE, "beta": NON_NEGATIVE,
}


def _allowed_values(values: dict[str, Any]) -> dict[str, tuple[list, str]]:
    """Enumerated options -> (allowed values, whose), read from where each is defined."""
    allowed = {
        "task": (TASKS.names(), " (the registered tasks)"),
        "on_too_long": (list(ON_TOO_LONG_CHOICES), ""),
        "decoding": (list(DECODING_MODES), ""),
        "lora_target_preset": (list(LORA_TARGET_PRESETS), ""),
        "speech_embedding_init": (list(SPEECH_EMBEDDING_INITS), ""),
        "reward_funcs": (REWARDS.names(), " (the registered reward functions)"),
        "speech_fraction_rest": (list(SPEECH_FRACTION_RESTS), ""),
        "split": (list(SPLITS), ""), "heldout_split": (list(SPLITS), ""), "inspect_split": (list(SPLITS), ""),
    }
    task = TASKS.get(values["task"]) if values.get("task") in TASKS else None
    if task is not None:
        allowed["input_mode"] = (list(task.input_modes), f" (the input modes of task {task.name})")
        allowed["baseline"] = (sorted(task.baselines), f" (the baselines of task {task.name})" if task.baselines
                               else f" (task {task.name} has no baselines)")
    return allowed


# Options whose unset value (None, or an empty string on the command line) means "none"
_UNSET_MEANS_NONE = ("lora_target_preset", "baseline")


def _check_values(values: dict[str, Any], where_of) -> None:
    """Allowed values and ranges of the merged options (recipe and command line), before any dataclass is built."""
    if values.get("input_mode", "") is None and values.get("task") in TASKS:
        values["input_mode"] = TASKS.get(values["task"]).input_modes[0]  # unset: the task's first input mode
    for key, (allowed, whose) in _allowed_values(values).items():
        if key not in values or (key in _UNSET_MEANS_NONE and not values[key]):
            continue
        for item in values[key] if isinstance(values[key], list) else [values[key]]:
            if item not in allowed:
                _refuse_choice(key, item, allowed, where_of(key), whose)
    for key, bound in BOUNDS.items():
        value = values.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int | float) and not isinstance(item, bool) and not bound.admits(item):
                kind = "an integer" if isinstance(item, int) else "a number"
                raise RecipeError(f"invalid value for {key} {where_of(key)}: expected {kind} {bound}, got "
                                  f"{_show(item)}")
    evaluation_recipe = values.get("evaluation_recipe")
    if evaluation_recipe:
        lacking = options_evaluate_lacks(evaluation_recipe)  # a missing file is a RecipeError naming it
        if lacking:
            raise RecipeError(f"evaluation_recipe {evaluation_recipe} {where_of('evaluation_recipe')} has options "
                              f"scripts/evaluate.py does not take ({', '.join(lacking)}): name an evaluation recipe")
    fraction, speech = values.get("text_only_fraction"), values.get("speech_fraction")
    if fraction:
        _check_text_and_audio_modes(values, "text_only_fraction", where_of, "adds text-only rows to audio ones")
    if speech is not None:
        _check_text_and_audio_modes(values, "speech_fraction", where_of,
                                    "keeps the audio of some sentences and gives the others as text")
        if fraction:
            raise RecipeError(f"speech_fraction and text_only_fraction {where_of('speech_fraction')}: both decide "
                              "which rows are text; set one")


def _check_text_and_audio_modes(values: dict[str, Any], key: str, where_of, what: str) -> None:
    """`key` mixes text rows with audio ones: its task needs a 'text' input mode and the recipe an audio one."""
    if values.get("task") not in TASKS or "input_mode" not in values:
        return
    modes = TASKS.get(values["task"]).input_modes
    if "text" not in modes or values["input_mode"] == "text":
        raise RecipeError(f"{key} {values[key]} {where_of(key)} {what}: it needs a task with a 'text' input mode "
                          f"(task {values['task']} has {', '.join(modes)}) and an audio input_mode (input_mode is "
                          f"{values['input_mode']!r})")


# transformers 5 renamed these; TRL's configs still give the old names a default (gradient_checkpointing: true), which
# transformers warns about unless the new name is set. A user who writes an old name still gets the warning.
DEPRECATED_ALIASES = (("gradient_checkpointing", "activation_checkpointing"),
                      ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))


def parse_recipe(dataclass_types: tuple[type, ...], argv: list[str] | None = None, *,
                 description: str | None = None, return_recipe_path: bool = False,
                 overrides: dict[str, Any] | None = None, overrides_name: str = "overrides") -> tuple:
    """Parse `RECIPE.yaml [--key value ...]` (or TRL's `--config RECIPE.yaml ...`) into instances of
    `dataclass_types`; with `return_recipe_path`, the recipe's path follows them.

    Everything a recipe can get wrong fails here, before any model loads, with a RecipeError naming the option:
    unknown keys, values of the wrong type (a recipe's values go through the command line's checks), values out
    of range or not among the allowed ones (the registered tasks, the task's input modes, ...), in the recipe, in
    each of its `sources` and in each stage of its `curriculum`. `--help` prints the options, with the recipe's
    values as their defaults when a recipe is given, and exits.

    `overrides` (recipe options, `overrides_name` in messages) go over the recipe's values, the command line over
    both: a curriculum stage is parsed so.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = RecipeParser(dataclass_types, description)
    fields = {f.name: f for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}
    hints = {name: hint for cls in dataclass_types for name, hint in typing.get_type_hints(cls).items()}
    wants_help = any(arg in HELP_FLAGS for arg in argv)

    if not wants_help:
        for option in _command_line_options(argv):
            if not parser.option_action(option[2:]):
                raise RecipeError(unknown_key_message(option[2:], sorted(fields), "on the command line"))
    try:  # where the recipe is: a first parse, with the dataclasses' defaults
        located = parser.parse_known_args([arg for arg in argv if arg not in HELP_FLAGS])[0]
    except RecipeError:
        if not wants_help:
            raise
        located = argparse.Namespace(recipe=None, config=None)
    if located.recipe and located.config:
        raise RecipeError(f"two recipes, {located.recipe} and --config {located.config}: give one")
    recipe_path = located.recipe or located.config

    if wants_help:
        try:
            if recipe_path:
                recipe = load_recipe(recipe_path)
                parser.set_defaults(**_conform_recipe({k: v for k, v in recipe.items() if k in fields}, parser, hints,
                                                      f"in recipe {recipe_path}"))
        except RecipeError:
            pass  # the help shows the dataclasses' defaults then
        parser.print_help()
        raise SystemExit(0)
    if not recipe_path:
        raise RecipeError("no recipe: give it first (SCRIPT RECIPE.yaml [--key value ...]) or as --config RECIPE.yaml")

    recipe = load_recipe(recipe_path)
    in_recipe = f"in recipe {recipe_path}"
    for key in recipe:
        if key not in fields:
            raise RecipeError(unknown_key_message(key, sorted(fields), in_recipe))
    if overrides is not None:
        in_recipe = f"in {overrides_name} of recipe {recipe_path}"
        recipe = {**apply_overrides(recipe, overrides, fields, in_recipe), "curriculum": None}
    parser.set_defaults(**_conform_recipe(recipe, parser, hints, in_recipe))
    namespace = parser.parse_args(argv)
    values = {name: getattr(namespace, name) for name in fields}
    given = {parser.option_action(option[2:]).dest for option in _command_line_options(argv)}

    def where_of(key: str) -> str:
        return "on the command line" if key in given else in_recipe

    _check_values(values, where_of)
    _check_sources(values, where_of("sources"))
    if values.get("curriculum") == []:
        raise RecipeError(f"curriculum {where_of('curriculum')} is empty: name at least one stage, or leave it unset")
    for old, new in DEPRECATED_ALIASES:
        if old in values and new in values and values[new] is None and old not in given and old not in recipe:
            values[new] = values[old]  # the default of TRL's old name, under the new one: the same, without a warning

    instances = []
    for cls in dataclass_types:
        kwargs = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.init}
        try:
            instances.append(cls(**kwargs))
        except (ValueError, TypeError) as error:  # the dataclass's own checks (TrainingArguments: bf16 without GPU)
            raise RecipeError(f"{' '.join(str(error).split())} (recipe {recipe_path})") from error
    keep_token_out_of_files(*instances)
    for index, stage in enumerate(values.get("curriculum") or [], start=1):  # every stage checked before any trains
        _check_stage(stage, index, values, recipe_path)
        parse_recipe(dataclass_types, argv, overrides=stage, overrides_name=f"curriculum stage {index}")
    # Set where no training data it applies to has a speech_fraction: the recipe (every curriculum stage, checked
    # here) or a stage that sets it itself (checked when the stage is parsed)
    rest_set_here = overrides if overrides is not None else {**recipe, **dict.fromkeys(given)}
    runs = [{**values, **stage} for stage in values.get("curriculum") or []] or [values]
    if "speech_fraction_rest" in rest_set_here and not any(_gives_speech_fraction(run) for run in runs):
        _refuse_rest_without_speech_fraction(values["speech_fraction_rest"], where_of("speech_fraction_rest"))
    return (*instances, recipe_path) if return_recipe_path else tuple(instances)


def apply_overrides(recipe: dict[str, Any], overrides: dict[str, Any], known: typing.Iterable[str],
                    where: str = "in the overrides") -> dict[str, Any]:
    """A new recipe dict: `overrides`' values over `recipe`'s. Every key of `overrides` must be among `known` (the
    option names of the script's dataclasses); the values are checked when the result is parsed."""
    if not isinstance(overrides, dict):
        raise RecipeError(f"overrides {where} must be a mapping of option: value, got {_show(overrides)}")
    known = sorted(known)
    for key in overrides:
        if key not in known:
            raise RecipeError(unknown_key_message(key, known, where))
    return {**recipe, **overrides}


# A curriculum sets these itself for each stage (its folder, the previous stage's weights)
STAGE_SET_KEYS = ("curriculum", "output_dir", "model_name_or_path", "resume_from_checkpoint")


def _check_stage(stage: Any, index: int, values: dict[str, Any], recipe_path: str) -> None:
    where = f"in curriculum stage {index} of recipe {recipe_path}"
    if not isinstance(stage, dict):
        raise RecipeError(f"{where}: expected a mapping of recipe options over the recipe's, got {_show(stage)}")
    for key in STAGE_SET_KEYS:
        if key in stage:
            raise RecipeError(f"{key} {where}: a curriculum sets it for each stage (stage k trains in "
                              "output_dir/stage_k from stage k-1's weights); set it on the recipe instead")
    resume = values.get("resume_from_checkpoint")
    if resume is not None and str(resume).lower() not in ("true", "false", ""):
        raise RecipeError(f"resume_from_checkpoint {resume!r} with a curriculum: give true (each stage resumes "
                          "from the newest checkpoint in its own folder) or false")


# A source's keys besides the task options: how many of its examples are kept
SOURCE_COUNT_KEYS = ("num_examples", "fraction")
# The recipe's own: evaluation reads the recipe's data, and a source is no mixture or curriculum
RECIPE_ONLY_TASK_KEYS = ("eval_file", "test_file", "eval_split", "test_split", "max_eval_samples",
                         "test_dataset_name", "sources", "curriculum")


def source_task_options(recipe_task: str | None, source: dict[str, Any]) -> dict[str, Any]:
    """A source's task options, to go over the recipe's: its count keys left out; a source of another task takes
    that task's default input mode unless it names one."""
    options = {key: value for key, value in source.items() if key not in SOURCE_COUNT_KEYS}
    if options.get("task", recipe_task) != recipe_task and "input_mode" not in options:
        options["input_mode"] = None
    return options


def _check_sources(values: dict[str, Any], where: str) -> None:
    """Each training source: a mapping of task options (over the recipe's) that parse as the recipe's do, and at
    most one of num_examples / fraction. Errors name the source's index and key."""
    sources = values.get("sources")
    if sources is None:
        return
    if not sources:
        raise RecipeError(f"sources {where} is empty: name at least one source, or leave it unset")
    hints = typing.get_type_hints(TaskArguments)
    allowed = sorted([key for key in hints if key not in RECIPE_ONLY_TASK_KEYS + COLLATOR_TASK_OPTIONS]
                     + list(SOURCE_COUNT_KEYS))
    for index, source in enumerate(sources):
        at = f"{where}, sources[{index}]"
        if not isinstance(source, dict):
            raise RecipeError(f"{at}: expected a mapping of task options (task, train_file, input_mode, ...), got "
                              f"{_show(source)}")
        options = {}
        for key, value in source.items():
            if key in RECIPE_ONLY_TASK_KEYS:
                raise RecipeError(f"{key} {at}: it is the recipe's own (evaluation reads the recipe's data), not a "
                                  "source's")
            if key in COLLATOR_TASK_OPTIONS:
                raise RecipeError(f"{key} {at}: one collator batches every source, so it reads the recipe's "
                                  f"{key}, not a source's; set it at the recipe level")
            if key not in allowed:
                raise RecipeError(unknown_key_message(key, allowed, at))
            if key in SOURCE_COUNT_KEYS:
                continue
            try:
                options[key] = _conform(value, hints[key])
            except _Mismatch:
                raise RecipeError(f"invalid value for {key} {at}: expected {_describe(hints[key])}, got "
                                  f"{_show(value)}") from None
        merged = {**values, "sources": None, **source_task_options(values.get("task"), options)}
        _check_values(merged, lambda key, at=at: at)
        if "speech_fraction_rest" in source and merged.get("speech_fraction") is None:
            _refuse_rest_without_speech_fraction(source["speech_fraction_rest"], at)
        counts = [key for key in SOURCE_COUNT_KEYS if source.get(key) is not None]
        if len(counts) > 1:
            raise RecipeError(f"{at}: num_examples and fraction both set: give one")
        number, fraction = source.get("num_examples"), source.get("fraction")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 1):
            raise RecipeError(f"invalid value for num_examples {at}: expected an integer >= 1, got {_show(number)}")
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                                     or not 0 < fraction <= 1):
            raise RecipeError(f"invalid value for fraction {at}: expected a number in (0, 1], got {_show(fraction)}")
        if counts and merged.get("speech_fraction") is not None:
            raise RecipeError(f"{at}: {counts[0]} with speech_fraction: a source either keeps some of its examples or "
                              "chooses which sentences keep their audio; give the subset as its own source")


def _gives_speech_fraction(values: dict[str, Any]) -> bool:
    """Whether the training data these options describe has a speech_fraction: the recipe's, or a source's."""
    if values.get("sources"):
        return any(source.get("speech_fraction", values.get("speech_fraction")) is not None
                   for source in values["sources"])
    return values.get("speech_fraction") is not None


def _refuse_rest_without_speech_fraction(rest: Any, where: str) -> None:
    raise RecipeError(f"speech_fraction_rest {_show(rest)} {where}: it says what becomes of the sentences "
                      "speech_fraction keeps no audio of, and no speech_fraction is set there (nor in a source or "
                      "curriculum stage it applies to): set speech_fraction, or remove speech_fraction_rest")


def recipe_dict(*instances) -> dict[str, Any]:
    """Every option of the parsed dataclasses, for logging and model cards."""
    merged: dict[str, Any] = {}
    for instance in instances:
        for f in dataclasses.fields(instance):
            merged[f.name] = getattr(instance, f.name)
    return merged



def options_evaluate_lacks(recipe_path: str | Path) -> list[str]:
    """The options of a recipe that scripts/evaluate.py does not take (a GRPO recipe's reward_funcs, ...)."""
    known = {f.name for cls in evaluation_argument_types() for f in dataclasses.fields(cls) if f.init}
    return sorted(set(load_recipe(recipe_path)) - known)
