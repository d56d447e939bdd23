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


def normalise_choice_text(text: str) -> str:
    """A choice's text as compared for an exact naming: case-folded, spaces collapsed, a final full stop dropped."""
    return " ".join(str(text).casefold().split()).rstrip(" .")


def _one_choice(indices: list[int], choices: Sequence[str], preferred: int | None) -> int | None:
    """The choice `indices` name, where they all hold the same text (MMAU repeats a choice's text on some items):
    the preferred index if among them, else the first."""
    if not indices or len({choices[i] for i in indices}) > 1:
        return None
    return preferred if preferred in indices else indices[0]


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice a free-text answer names, or None. In order:

    1. text naming one choice exactly (after a letter, or the whole answer): "(A) From far to near" is From far to
       near, whatever choice A is;
    2. a letter alone, bracketed or not ("(C)", "C"): the letter, even where a choice's text is a single capital;
    3. text naming one choice by the benchmarks' word rule (`string_match`); a choice with no words (MMAR has `''`
       choices) is named only by its letter;
    4. a letter with text that names no choice: the letter (a bare capital before words is an article, "A dog");
    5. the whole answer naming one choice by the word rule.
    """
    answer = answer_text(text)
    if not answer:
        return None
    letter = _LETTER.match(answer)
    index = LETTERS.index(letter.group(1).upper()) if letter else None
    index = index if index is not None and index < len(choices) else None
    rest = answer[letter.end():].strip(" .") if letter else answer
    named = normalise_choice_text(rest)
    if named:
        exact = _one_choice([i for i, choice in enumerate(choices) if normalise_choice_text(choice) == named],
                            choices, index)
        if exact is not None:
            return exact
    if letter and not rest:
        return index
    worded = [i for i, choice in enumerate(choices) if word_tokens(choice)]
    by_text = _one_choice([i for i in worded if string_match(choices[i], rest, choices)], choices, index)
    if by_text is not None:
        return by_text
    if index is not None and len(letter.group(0).strip()) > 1:
        return index
    return _one_choice([i for i in worded if string_match(choices[i], answer, choices)], choices, index)


def group_values(value: Any) -> list[str]:
    """The groups an item's field puts it in: one per element where the field is a list (13 MMAU test-mini items
    have `category: ["Reasoning"]`), else one."""
    if isinstance(value, list | tuple):
        return [str(element) for element in value] or ["None"]
    return [str(value)]


def grouped_accuracy(
    correct: Sequence[bool], groups: Iterable[tuple[str, Sequence[Any]]], name: str = "accuracy"
) -> dict[str, float]:
    """`<name>[<field>=<value>]` for each field's values, e.g. accuracy[modality=speech]; an item whose field is a
    list counts in the group of each of its elements."""
    metrics: dict[str, float] = {}
    for field, values in groups:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for value, is_correct in zip(values, correct, strict=True):
            for group in dict.fromkeys(group_values(value)):
                totals[group][0] += bool(is_correct)
                totals[group][1] += 1
        for value, (right, total) in sorted(totals.items()):
            metrics[f"{name}[{field}={value}]"] = right / total
    return metrics


def is_empty(prediction: Any) -> bool:
    return isinstance(prediction, str) and not prediction.strip()


def score_choice_rows(
    items: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], *, prediction_key: str,
    group_fields: Sequence[str], official_group_fields: Sequence[str], fallback_keys: Sequence[str] = (),
    extraction_key: str | None = None, skip_missing: bool = False,
) -> dict[str, Any]:
    """MMAR / MMAU metrics of prediction rows (in file order, repeated ids kept) against the gold items.

    `accuracy` (strict, the figure we recommend): every gold item once, by `string_match` against the gold answer
    and choices; the last row of an id that holds `prediction_key` (else one of `fallback_keys`) is its prediction;
    an item without one (`num_missing`), an empty or whitespace-only one (`num_empty`) or one that is not a string
    (`num_not_text`) is wrong. `skip_missing` leaves the `num_missing` items out.

    `accuracy_official`: the official scripts' rule and denominator exactly. Every row holding `prediction_key`
    is scored, a repeated one each time (`num_duplicates`), rows without the key are skipped, and each row's own
    `answer` and `choices` are used where it has them (the official input is the benchmark file with the output
    added): a row built on another release of the metadata is scored against its own answers, and counted in
    `num_metadata_differs`. Rows of unknown ids without their own answer cannot be scored (the scripts stop on
    them): left out, counted in `num_unmatched_predictions`; a prediction that is not a string stops the scripts
    too: counted wrong in both figures.

    `accuracy_extracted`, where rows carry `extraction_key`: the choice our extraction read from the output is the
    answer (every gold item; none extracted is wrong).
    """
    gold = {str(item["id"]): item for item in items}
    latest: dict[str, Any] = {}
    extracted: dict[str, Any] = {}
    seen: set[str] = set()
    num_duplicates = 0
    for row in rows:
        item_id = str(row.get("id"))
        num_duplicates += item_id in seen
        seen.add(item_id)
        key = next((k for k in (prediction_key, *fallback_keys) if k in row), None)
        if key is not None:
            latest[item_id] = row[key]
            if extraction_key is not None:
                extracted[item_id] = row.get(extraction_key)

    scored, correct = [], []
    counts = {"num_missing": 0, "num_empty": 0, "num_not_text": 0}
    for item_id, item in gold.items():
        if item_id not in latest:
            counts["num_missing"] += 1
            if skip_missing:
                continue
        prediction = latest.get(item_id)
        counts["num_empty"] += is_empty(prediction)
        counts["num_not_text"] += item_id in latest and not isinstance(prediction, str)
        scored.append(item)
        correct.append(isinstance(prediction, str) and string_match(item["answer"], prediction, item["choices"]))

    official, official_rows, differs = [], [], 0
    for row in rows:
        if prediction_key not in row:
            continue
        item = gold.get(str(row.get("id")), {})
        merged = {**item, **row}
        if "answer" not in merged or "choices" not in merged:
            continue
        differs += bool(item) and any(field in row and row[field] != item.get(field) for field in ("answer", "choices"))
        prediction = row[prediction_key]
        official.append(isinstance(prediction, str) and string_match(merged["answer"], prediction, merged["choices"]))
        official_rows.append(merged)

    metrics: dict[str, Any] = {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "accuracy_official": sum(official) / len(official) if official else 0.0,
        "num_gold": len(items),
        "num_scored": len(scored),
        "num_scored_official": len(official),
        **counts,
        "num_duplicates": num_duplicates,
        "num_unmatched_predictions": len(seen - set(gold)),
        "num_metadata_differs": differs,
    }
    if extraction_key is not None and any(extraction_key in row for row in rows):
        right = [extracted.get(str(item["id"])) == item["answer"] for item in items]
        metrics["accuracy_extracted"] = sum(right) / len(right) if right else 0.0
    metrics.update(grouped_accuracy(correct, [(field, [item.get(field) for item in scored]) for field in group_fields]))
    metrics.update(grouped_accuracy(official, [(field, [row.get(field) for row in official_rows])
                                               for field in official_group_fields], name="accuracy_official"))
    return metrics
