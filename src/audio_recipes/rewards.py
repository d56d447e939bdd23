"""Reward functions by name, shared by GRPO and ReST filtering: `REWARDS.get("choice_accuracy")`.

Each takes the sampled `completions` (strings, or TRL's conversational lists of messages) and the
dataset's columns as keyword lists (`reference` holds each item's scorer fields as JSON), and returns one
float per completion. A malformed completion gets the lowest reward, never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from audio_recipes.errors import RecipeError
from audio_recipes.metrics.choice import extract_choice, string_match, strip_thinking
from audio_recipes.metrics.slu import score_slu, slurp_gold_entities
from audio_recipes.registry import Registry
from audio_recipes.tasks.slu_format import parse_slu_output

RewardFunc = Callable[..., list[float]]
REWARDS: Registry[RewardFunc] = Registry("reward function")

# Optional reasoning, then one answer tag, and nothing after it
_ANSWER_FORMAT = re.compile(r"^\s*(?:<think>.*?</think>\s*)?(?:[^<]*?)<answer>\s*\S.*?</answer>\s*$", re.DOTALL)


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    def register(func: RewardFunc) -> RewardFunc:
        func.__name__ = name  # TRL logs each reward under its function's name
        return REWARDS.add(name, func)

    return register


def get_reward_funcs(names: list[str]) -> list[RewardFunc]:
    return [REWARDS.get(name) for name in names]


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or a list of messages for conversational prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def _references(reference: list[str]) -> list[dict[str, Any]]:
    return [json.loads(ref) if isinstance(ref, str) else ref for ref in reference]


def check_rewards_fit_the_task(reward_names: list[str], example, task_name: str) -> None:
    """Each reward scores one of the task's own answers before anything loads: a reward made for another task fails
    now (ReST would reach it only after its whole generation phase)."""
    for name, func in zip(reward_names, get_reward_funcs(reward_names), strict=True):
        try:
            func([example.completion], reference=[example.reference])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RecipeError(f"reward {name} cannot score task {task_name}'s items ({type(error).__name__}: "
                              f"{error}): name rewards made for this task in reward_funcs") from None


@register_reward("choice_accuracy")
def choice_accuracy(completions: list[Any], reference: list[str], **kwargs) -> list[float]:
    """1.0 when the answer names the right choice (letter or text), else 0.0."""
    rewards = []
    for completion, item in zip(completions, _references(reference), strict=True):
        index = extract_choice(completion_text(completion), item["choices"])
        rewards.append(float(index is not None and item["choices"][index] == item["answer"]))
    return rewards


@register_reward("choice_string_match")
def choice_string_match(completions: list[Any], reference: list[str], **kwargs) -> list[float]:
    """1.0 when the whole output passes the benchmarks' string match (what `accuracy` scores), else 0.0: a letter
    alone, or reasoning that names another choice, earns nothing, where choice_accuracy reads the answer given."""
    return [float(string_match(item["answer"], completion_text(completion), item["choices"]))
            for completion, item in zip(completions, _references(reference), strict=True)]


@register_reward("answer_format")
def answer_format(completions: list[Any], **kwargs) -> list[float]:
    """1.0 for optional `<think>...</think>` reasoning then exactly one non-empty `<answer>...</answer>` at the end."""
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        one_answer = text.count("<answer>") == 1 and text.count("</answer>") == 1
        rewards.append(float(one_answer and _ANSWER_FORMAT.match(text) is not None))
    return rewards


def _gold_slu(item: dict[str, Any]) -> dict[str, Any]:
    if "tokens" in item:  # a SLURP row
        return {"scenario": item["scenario"], "action": item["action"], "entities": slurp_gold_entities(item)}
    return item


@register_reward("slu_f1")
def slu_f1(completions: list[Any], reference: list[str], **kwargs) -> list[float]:
    """The item's SLU-F1 (word and char level entity matching, as SLURP scores it); 1.0 when the gold and
    the answer both have no entities and the answer is valid JSON; 0.0 for an output that is not."""
    rewards = []
    for completion, item in zip(completions, _references(reference), strict=True):
        prediction = parse_slu_output(strip_thinking(completion_text(completion)))
        gold = _gold_slu(item)
        if not prediction["valid"]:
            rewards.append(0.0)
        elif not gold["entities"] and not prediction["entities"]:
            rewards.append(1.0)
        else:
            rewards.append(score_slu({"item": gold}, {"item": prediction})["slu_f1"])
    return rewards


@register_reward("slu_intent")
def slu_intent(completions: list[Any], reference: list[str], **kwargs) -> list[float]:
    """1.0 when both scenario and action are right."""
    rewards = []
    for completion, item in zip(completions, _references(reference), strict=True):
        prediction = parse_slu_output(strip_thinking(completion_text(completion)))
        gold = _gold_slu(item)
        rewards.append(float(prediction["scenario"] == gold["scenario"] and prediction["action"] == gold["action"]))
    return rewards
