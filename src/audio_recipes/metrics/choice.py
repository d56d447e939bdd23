"""Multiple-choice answers: extract a choice from free text, and the MMAR / MMAU matching rule."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from audio_recipes.output_tags import after_last_closing_tag, last_tagged, remove_tagged

LETTERS = "ABCDEFGHIJ"
_WORD = re.compile(r"\b\w+\b")
# "(B)", "B.", "B)", "B:", "B" alone, optionally after "answer is" / "answer:" (one `\s*` after "is": two
# adjacent ones backtrack quadratically over a long run of spaces)
_LETTER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|choice|option)\s*(?:(?:is|:)\s*)?)?"
    r"\(?([A-J])\)?(?:[.:)]|\s|$)", flags=re.IGNORECASE,
)


def word_tokens(text: str) -> set[str]:
    """The benchmarks' tokens: `\\b\\w+\\b` on the lowercased text."""
    return set(_WORD.findall(str(text).lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """MMAR / MMAU rule: every token of the answer is in the prediction, and no token that belongs only
    to a wrong choice is."""
    predicted = word_tokens(prediction)
    if not predicted:
        return False
    expected = word_tokens(answer)
    wrong_only: set[str] = set()
    for choice in choices:
        tokens = word_tokens(choice)
        if tokens != expected:
            wrong_only |= tokens - expected
    return expected <= predicted and predicted.isdisjoint(wrong_only)


def strip_thinking(text: str) -> str:
    """Remove `<think>...</think>`, and anything before a dangling `</think>` (the opening tag in the prompt)."""
    text = remove_tagged(text or "", "think")
    after = after_last_closing_tag(text, "think")
    return (text if after is None else after).strip()


def answer_text(text: str) -> str:
    """The part of a model output that holds the answer: the last <answer> tag if any, thinking removed."""
    text = strip_thinking(text)
    tagged = last_tagged(text, "answer")
    return text if tagged is None else tagged.strip()


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice a free-text answer names, or None.

    The text of one choice wins over a letter that disagrees with it ("(B) Noise" is Noise, as the
    benchmarks' word matching reads it); a letter alone, or with text that names no choice, is the letter.
    """
    answer = answer_text(text)
    if not answer:
        return None
    letter = _LETTER.match(answer)
    rest = answer[letter.end():].strip(" .") if letter else answer
    by_text = [i for i, choice in enumerate(choices) if string_match(choice, rest or answer, choices)]
    if len(by_text) == 1:
        return by_text[0]
    if letter and LETTERS.index(letter.group(1).upper()) < len(choices):
        # A bare capital before words ("A dog barks") is an article, not the letter A
        if not rest or len(letter.group(0).strip()) > 1:
            return LETTERS.index(letter.group(1).upper())
    whole = [i for i, choice in enumerate(choices) if string_match(choice, answer, choices)]
    return whole[0] if len(whole) == 1 else None


def grouped_accuracy(
    correct: Sequence[bool], groups: Iterable[tuple[str, Sequence[str]]]
) -> dict[str, float]:
    """`accuracy[<field>=<value>]` for each field's values, e.g. accuracy[modality=speech]."""
    metrics: dict[str, float] = {}
    for field, values in groups:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for value, is_correct in zip(values, correct, strict=True):
            totals[value][0] += bool(is_correct)
            totals[value][1] += 1
        for value, (right, total) in sorted(totals.items()):
            metrics[f"accuracy[{field}={value}]"] = right / total
    return metrics


def score_choices(
    items: Sequence[dict[str, Any]], predictions: dict[str, str], *, group_fields: Sequence[str],
    skip_missing: bool = False,
) -> dict[str, Any]:
    """Accuracy of predicted answer texts (keyed by item id) under `string_match`.

    A missing or empty prediction is wrong and counted in `num_missing`; with `skip_missing` such items
    leave the totals, as the original MMAR script does. Predictions for ids not among the items are ignored and
    counted in `num_unmatched_predictions`.
    """
    scored, correct = [], []
    for item in items:
        prediction = predictions.get(str(item["id"]))
        missing = prediction is None or not str(prediction).strip()
        if missing and skip_missing:
            continue
        scored.append(item)
        correct.append(not missing and string_match(item["answer"], str(prediction), item["choices"]))
    metrics: dict[str, Any] = {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "num_gold": len(items),
        "num_scored": len(scored),
        "num_missing": sum(
            1 for item in items
            if predictions.get(str(item["id"])) is None or not str(predictions[str(item["id"])]).strip()
        ),
        "num_unmatched_predictions": len(set(predictions) - {str(item["id"]) for item in items}),
    }
    groups = [(field, [str(item.get(field)) for item in scored]) for field in group_fields]
    metrics.update(grouped_accuracy(correct, groups))
    return metrics
