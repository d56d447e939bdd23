"""SLURP spoken language understanding (SLU) metrics, equal to the official SLURP evaluation.

The official scorer is github.com/pswietojanski/slurp ``scripts/evaluation/evaluate.py`` (with ``util.py``,
``metrics/metrics.py``, ``metrics/distance.py``, and the jiwer 2.0.0 and textdistance 4.1.5 its requirements pin),
micro-averaged as it is by default. Its rules, reproduced here on every input it accepts:

* scenario / action / intent accuracy. The script scores them with a micro-averaged F1 where every wrong label is
  one FP and one FN, so precision = recall = F1 = accuracy. The intent is ``"{scenario}_{action}"``, formatted from
  both fields, not read from the gold ``intent`` field.
* entity span F1: a predicted entity is a TP when it equals, as a whole dict, a gold entity still unmatched (each
  gold entity matches once), else an FP; gold entities left over are FNs. Gold entities are ``{type, filler}``, so a
  predicted entity with another key (``span``, ``text``) never matches.
* word-F1 / char-F1 (SLURP's "span distance F1"): a predicted entity whose type is among the still unmatched gold
  entities is matched to the one of that type at the smallest distance (first one on ties), which is then removed;
  the match adds 1 TP and the distance to both FP and FN. A predicted type not among them adds 1 FP; every gold
  entity left over adds 1 FN. The word distance is jiwer 2.0.0's WER (not capped at 1): runs of two or more
  whitespace characters become one space, the ends are stripped, and words are split on a single space, so a
  filler holding a tab or a no-break space between two words is one word. The char distance is textdistance's
  normalised Levenshtein: the distance over the longer length, 1 for two empty strings.
* SLU-F1: F1 of the summed word-level and char-level TP/FP/FN counts.
* gold fillers are the entity span's token surfaces, lowercased and joined by spaces; predicted fillers are compared
  as given (case-sensitive). Predictions are keyed by recording ``file`` (one gold item per recording) or, as the
  script's ``--load-gold`` reads them, by ``slurp_id`` (one per sentence), which must be a string as the gold's
  ``str(slurp_id)`` is. A repeated key: the last row counts.

What we add, and how it is reported:

* Two figures of each metric: ``<metric>`` (strict, the one we recommend: every gold item, a gold item without a
  prediction wrong, its entities FNs) and ``<metric>_official`` (the script's denominator: the predicted items
  only). ``skip_missing=True`` makes the strict figures the official ones.
* Where the script stops with an error (a prediction without ``scenario``, ``action`` or ``entities``; an entity
  that is not a dict with ``type`` and ``filler``; a filler that is null or a number where a distance is computed;
  an unhashable label), it has no figure: we score that item as wrong in both figures (labels wrong, its gold
  entities FNs) and count it in ``num_malformed_predictions``.
* A key that is not a string (an integer ``slurp_id``) matches no gold item in the script, which then scores the
  whole file 0: we refuse such a file with an error naming the key and its type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from audio_recipes.errors import DataError

Entity = dict[str, Any]  # {"type": ..., "filler": ...}, compared as a whole dict

METRIC_KEYS = (
    "scenario_accuracy",
    "action_accuracy",
    "intent_accuracy",
    "entity_span_f1",
    "word_f1",
    "char_f1",
    "slu_f1",
)


class OfficialScriptStops(Exception):
    """The official script raises on this prediction: it gives no figure for the file."""


# ---------------------------------------------------------------- distances


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Edit distance (unit-cost insertions, deletions, substitutions) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


_WHITESPACE_RUN = re.compile(r"\s\s+")


def jiwer_words(text: Any) -> list[str]:
    """The words jiwer 2.0.0's default transform makes of a sentence (or a list of them): runs of two or more
    whitespace characters -> one space, strip, split on " ", drop blank words."""
    if isinstance(text, str):
        sentences = [text]
    elif isinstance(text, list) and all(isinstance(sentence, str) for sentence in text):
        sentences = text
    else:
        raise OfficialScriptStops(f"jiwer takes a string or a list of strings, not {type(text).__name__}")
    words = []
    for sentence in sentences:
        words += [word for word in _WHITESPACE_RUN.sub(" ", sentence).strip().split(" ") if word.strip()]
    return words


def word_distance(reference: Any, hypothesis: Any) -> float:
    """jiwer 2.0.0's ``wer(truth=reference, hypothesis=hypothesis)``: may exceed 1; an empty reference stops it."""
    reference_words, hypothesis_words = jiwer_words(reference), jiwer_words(hypothesis)
    if not reference_words:
        raise OfficialScriptStops("jiwer: the ground truth cannot be empty")
    return levenshtein(reference_words, hypothesis_words) / len(reference_words)


def char_distance(reference: Any, hypothesis: Any) -> float:
    """textdistance 4.1.5's ``levenshtein.normalized_distance``: the distance over the longer length; 1 where both
    are empty (its rule: no length to normalise by)."""
    if not all(isinstance(value, str | list) for value in (reference, hypothesis)):
        raise OfficialScriptStops(f"textdistance compares sequences, not {type(hypothesis).__name__}")
    longest = max(len(reference), len(hypothesis))
    return 1.0 if longest == 0 else levenshtein(reference, hypothesis) / longest


# ---------------------------------------------------------------- counts


@dataclass
class F1Counter:
    """Accumulated true positives, false positives and false negatives (floats: distances add in)."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0

    def __add__(self, other: F1Counter) -> F1Counter:
        return F1Counter(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def __iadd__(self, other: F1Counter) -> F1Counter:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _label(value: Any) -> Any:
    """A label the script keys its counts by: it must hash."""
    try:
        hash(value)
    except TypeError as error:
        raise OfficialScriptStops(f"an unhashable label {value!r}") from error
    return value


def _field(entity: Any, key: str) -> Any:
    """`entity[key]` as the script reads it, or the reason it stops there."""
    if not isinstance(entity, dict):
        raise OfficialScriptStops(f"an entity that is not a dict: {entity!r:.60}")
    if key not in entity:
        raise OfficialScriptStops(f"an entity without {key!r}: {entity!r:.60}")
    return entity[key]


def span_f1_counts(gold: Sequence[Entity], predicted: Iterable[Any]) -> F1Counter:
    """Whole-dict matching; each gold entity matches one prediction (multiset semantics)."""
    remaining = list(gold)
    counts = F1Counter()
    for entity in predicted:
        if entity in remaining:
            counts.tp += 1
            remaining.remove(entity)
        else:
            _label(_field(entity, "type"))
            counts.fp += 1
    counts.fn += len(remaining)
    return counts


def distance_f1_counts(
    gold: Sequence[Entity], predicted: Iterable[Any], distance: Callable[[Any, Any], float]
) -> F1Counter:
    """SLURP's span-distance F1 counts for one item (see the module docstring)."""
    predicted = [(_field(entity, "type"), _field(entity, "filler")) for entity in predicted]
    remaining = [(entity["type"], entity["filler"]) for entity in gold]
    counts = F1Counter()
    for pred_type, pred_filler in predicted:
        best_index, best_distance = -1, float("inf")
        for i, (gold_type, gold_filler) in enumerate(remaining):
            if gold_type == pred_type:
                d = distance(gold_filler, pred_filler)
                if d < best_distance:  # strict: the first gold entity wins ties
                    best_index, best_distance = i, d
        if best_index < 0:
            _label(pred_type)
            counts.fp += 1
            continue
        counts.tp += 1
        counts.fp += best_distance
        counts.fn += best_distance
        remaining.pop(best_index)  # a gold entity is matched at most once
    counts.fn += len(remaining)
    return counts


# ---------------------------------------------------------------- data


def slurp_gold_entities(row: dict) -> list[dict]:
    """The gold entities of a SLURP jsonl row as ``[{"type", "filler"}]``: the one rule, for training targets,
    the slu_f1 reward and scoring.

    The filler is the span's token surfaces, lowercased, joined by spaces; span entries index the
    ``tokens`` list by position, as SLURP's ``util.release2prediction`` does (in the published data every token's
    ``id`` equals its position: tests/test_slu_metrics.py checks it on all of devel and test).
    """
    tokens = row.get("tokens") or []
    entities = []
    for entity in row.get("entities") or []:
        words = [tokens[i]["surface"].lower() for i in entity.get("span") or [] if 0 <= i < len(tokens)]
        entities.append({"type": entity["type"], "filler": " ".join(words)})
    return entities


def entity_list(raw: Any) -> list[Any]:
    """The entities the script iterates: a list's elements; an empty string or dict holds none; anything else stops
    it (a non-empty string or dict yields strings it then indexes by "type")."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, str | dict) and not raw:
        return []
    raise OfficialScriptStops(f"entities that are not a list: {raw!r:.60}")


@dataclass
class _Item:
    scenario: Any
    action: Any
    entities: list[Any]

    @property
    def intent(self) -> str:
        return f"{self.scenario}_{self.action}"  # as the script formats it ("{}_{}"), whatever the types


def _gold_items(gold_rows: Iterable[dict], by_file: bool) -> dict[str, _Item]:
    """One gold item per recording file (by_file) or per sentence (``str(slurp_id)``); a later duplicate id wins."""
    items: dict[str, _Item] = {}
    for row in gold_rows:
        item = _Item(row["scenario"], row["action"], slurp_gold_entities(row))
        if by_file:
            for recording in row.get("recordings") or []:
                items[recording["file"]] = item
        else:
            items[str(row["slurp_id"])] = item
    return items


# ---------------------------------------------------------------- scoring


def score_slurp(gold_rows: list[dict], predictions: list[dict], skip_missing: bool = False) -> dict:
    """SLURP metrics of `predictions` against the SLURP-format `gold_rows`.

    Predictions are keyed by recording ``file`` if any prediction row has a ``file`` key (then there is
    one gold item per recording), else by ``slurp_id`` (one gold item per sentence); with no
    predictions at all, by file. A key that is not a string is refused (DataError). Duplicate prediction keys: the
    last row wins, and the rows repeating an earlier row's key are counted in ``num_duplicates``. Predictions for ids
    not in the gold set are ignored and counted in ``num_unmatched_predictions``.

    Returns the metrics of ``METRIC_KEYS`` as floats in [0, 1] and their ``_official`` twins (see the module
    docstring), plus ``num_gold`` (gold items), ``num_predicted`` (gold items with a prediction), ``num_missing``
    (gold items without one; wrong in the strict figures unless `skip_missing`), ``num_unmatched_predictions`` and
    ``num_malformed_predictions`` (predictions the official script stops on, scored as wrong).
    """
    by_file = not predictions or any(isinstance(p, dict) and "file" in p for p in predictions)
    key = "file" if by_file else "slurp_id"
    gold = _gold_items(gold_rows, by_file)
    not_strings = [row[key] for row in predictions
                   if isinstance(row, dict) and row.get(key) is not None and not isinstance(row[key], str)]
    if not_strings:
        kinds = ", ".join(sorted({type(value).__name__ for value in not_strings}))
        load_gold = " --load-gold" if key == "slurp_id" else ""
        raise DataError(
            f"{len(not_strings)} prediction row(s) have a {key!r} that is not a string ({kinds}; first: "
            f"{not_strings[0]!r}): the official evaluate.py{load_gold} matches them to no gold item and scores the "
            f"file 0 (its gold keys are strings). Write every {key} as a string")

    predicted: dict[str, dict] = {}
    unmatched: set[str] = set()
    seen: set[str] = set()
    no_key = num_duplicates = 0
    for row in predictions:
        if not isinstance(row, dict) or row.get(key) is None:
            no_key += 1
            continue
        item_id = row[key]
        num_duplicates += item_id in seen
        seen.add(item_id)
        if item_id in gold:
            predicted[item_id] = row
        else:
            unmatched.add(item_id)

    scores = score_slu(gold, predicted, skip_missing=skip_missing)
    scores["num_unmatched_predictions"] = len(unmatched) + no_key
    scores["num_duplicates"] = num_duplicates
    return scores


def _as_item(value: _Item | dict) -> _Item:
    if isinstance(value, _Item):
        return value
    return _Item(value["scenario"], value["action"],
                 [{"type": e["type"], "filler": e["filler"]} for e in value["entities"]])


@dataclass
class _Counts:
    """What the script accumulates: right labels and the entity counts."""

    scenario: int = 0
    action: int = 0
    intent: int = 0
    span: F1Counter | None = None
    word: F1Counter | None = None
    char: F1Counter | None = None

    def __post_init__(self):
        self.span, self.word, self.char = F1Counter(), F1Counter(), F1Counter()

    def add(self, other: _Counts) -> None:
        self.scenario += other.scenario
        self.action += other.action
        self.intent += other.intent
        self.span += other.span
        self.word += other.word
        self.char += other.char


def item_counts(gold: _Item, row: dict | None) -> _Counts:
    """One item's counts as the script adds them; raises OfficialScriptStops where it would stop. No row: wrong."""
    counts = _Counts()
    if row is None:
        prediction = _Item(None, None, [])
        correct = (False, False, False)
    else:
        for field in ("scenario", "action", "entities"):
            if field not in row:
                raise OfficialScriptStops(f"a prediction without {field!r}")
        prediction = _Item(_label(row["scenario"]), _label(row["action"]), entity_list(row["entities"]))
        correct = (prediction.scenario == gold.scenario, prediction.action == gold.action,
                   prediction.intent == gold.intent)
    counts.scenario, counts.action, counts.intent = map(int, correct)
    counts.span = span_f1_counts(gold.entities, prediction.entities)
    counts.word = distance_f1_counts(gold.entities, prediction.entities, word_distance)
    counts.char = distance_f1_counts(gold.entities, prediction.entities, char_distance)
    return counts


def _metrics(counts: _Counts, num_scored: int, suffix: str = "") -> dict[str, float]:
    def accuracy(right: int) -> float:
        return right / num_scored if num_scored else 0.0

    return {
        f"scenario_accuracy{suffix}": accuracy(counts.scenario),
        f"action_accuracy{suffix}": accuracy(counts.action),
        f"intent_accuracy{suffix}": accuracy(counts.intent),
        f"entity_span_f1{suffix}": counts.span.f1,
        f"word_f1{suffix}": counts.word.f1,
        f"char_f1{suffix}": counts.char.f1,
        f"slu_f1{suffix}": (counts.word + counts.char).f1,
    }


def score_slu(gold: dict[str, _Item | dict], predicted: dict[str, dict], skip_missing: bool = False) -> dict:
    """SLU metrics of prediction rows keyed by item id against gold items keyed the same way: the strict figures
    (every gold item; `skip_missing` leaves out those without a prediction) and the official ones (predicted items).

    Gold items are `{"scenario", "action", "entities": [{"type", "filler"}]}`; predictions for ids not
    in `gold` are ignored and counted in ``num_unmatched_predictions``.
    """
    gold = {item_id: _as_item(item) for item_id, item in gold.items()}
    unmatched = sum(item_id not in gold for item_id in predicted)
    predicted = {item_id: row for item_id, row in predicted.items() if item_id in gold}
    strict, official = _Counts(), _Counts()
    num_scored = num_malformed = 0
    for item_id, gold_item in gold.items():
        row = predicted.get(item_id)
        if row is None and skip_missing:
            continue
        try:
            counts = item_counts(gold_item, row)
        except OfficialScriptStops:  # the script has no figure here: the item is wrong, and counted
            num_malformed += 1
            counts = item_counts(gold_item, None)
        num_scored += 1
        strict.add(counts)
        if row is not None:
            official.add(counts)
    return {
        **_metrics(strict, num_scored),
        **_metrics(official, len(predicted), "_official"),
        "num_gold": len(gold),
        "num_predicted": len(predicted),
        "num_missing": len(gold) - len(predicted),
        "num_unmatched_predictions": unmatched,
        "num_malformed_predictions": num_malformed,
    }
