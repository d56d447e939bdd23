"""SLURP spoken language understanding (SLU) metrics.

A clean re-implementation of the official SLURP evaluation (github.com/pswietojanski/slurp,
``scripts/evaluation``: ``evaluate.py``, ``util.py``, ``metrics/metrics.py``, ``metrics/distance.py``),
micro-averaged as the script does by default:

* scenario / action / intent accuracy. The original scores them with a micro-averaged F1, where every
  wrong label is one FP and one FN, so precision = recall = F1 = accuracy. The intent is
  ``"{scenario}_{action}"``, formatted from both fields, not read from the gold ``intent`` field.
* entity span F1: a predicted ``(type, filler)`` is a TP when an equal gold entity is still unmatched
  (each gold entity matches once), otherwise an FP; the gold entities left over are FNs.
* word-F1 / char-F1 (SLURP's "span distance F1"): a predicted entity whose type is among the still
  unmatched gold entities is matched to the one of that type at the smallest distance (first one on
  ties), which is then removed; the match adds 1 TP and the distance to both FP and FN. A predicted
  type not among them adds 1 FP; every gold entity left over adds 1 FN. The word distance is the WER
  of the predicted filler against the gold one (not capped at 1), the char distance is Levenshtein
  over characters divided by the longer string's length.
* SLU-F1: F1 of the summed word-level and char-level TP/FP/FN counts.

Gold fillers are the entity span's token surfaces, lowercased and joined by spaces; predicted fillers
are compared as given (case-sensitive, like the original).

Where this differs from the original script, deliberately:

* A gold item with no prediction counts as wrong (scenario, action, intent wrong; all its entities
  FNs) unless ``skip_missing=True``, which reproduces the script (it only scores predicted items).
* Malformed predictions never raise: an ``entities`` value that is not a list counts as no entities,
  and an entity that is not a dict with string ``type`` and ``filler`` is dropped (the script skips
  such entities for the distance F1 but crashes on them in the span F1); both are counted in
  ``num_malformed_predictions``. A missing ``scenario``/``action`` never equals the gold one.
* ``slurp_id`` is compared as a string (the script needs the prediction's to be one already).
* The word distance to an empty gold filler is 0 for an empty prediction and 1 otherwise (the
  ``jiwer`` the script uses raises there); words are split on any whitespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Entity = tuple[str, str]  # (type, filler)

METRIC_KEYS = (
    "scenario_accuracy",
    "action_accuracy",
    "intent_accuracy",
    "entity_span_f1",
    "word_f1",
    "char_f1",
    "slu_f1",
)


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


def word_distance(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (as jiwer's ``wer``; may exceed 1)."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        # jiwer raises on an empty reference; an empty gold filler never occurs in SLURP.
        return 0.0 if not hyp_words else 1.0
    return levenshtein(ref_words, hyp_words) / len(ref_words)


def char_distance(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over characters divided by the longer length, in [0, 1].

    Same as ``textdistance.levenshtein.normalized_distance`` used by SLURP (0 for two empty strings).
    """
    longest = max(len(reference), len(hypothesis))
    if longest == 0:
        return 0.0
    return levenshtein(reference, hypothesis) / longest


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


def span_f1_counts(gold: Sequence[Entity], predicted: Iterable[Entity]) -> F1Counter:
    """Exact (type, filler) matching; each gold entity can match one prediction (multiset semantics)."""
    remaining = list(gold)
    counts = F1Counter()
    for entity in predicted:
        if entity in remaining:
            counts.tp += 1
            remaining.remove(entity)
        else:
            counts.fp += 1
    counts.fn += len(remaining)
    return counts


def distance_f1_counts(
    gold: Sequence[Entity], predicted: Iterable[Entity], distance: Callable[[str, str], float]
) -> F1Counter:
    """SLURP's span-distance F1 counts for one item (see the module docstring)."""
    remaining = list(gold)
    counts = F1Counter()
    for pred_type, pred_filler in predicted:
        best_index, best_distance = -1, float("inf")
        for i, (gold_type, gold_filler) in enumerate(remaining):
            if gold_type == pred_type:
                d = distance(gold_filler, pred_filler)
                if d < best_distance:  # strict: the first gold entity wins ties
                    best_index, best_distance = i, d
        if best_index < 0:
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


def _normalise_id(value: Any) -> str:
    """Prediction/gold ids compare as strings; an integral float id (9054.0) reads as the int."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _parse_entities(raw: Any) -> tuple[list[Entity], bool]:
    """Predicted entities as (type, filler) tuples, and whether anything malformed was dropped."""
    if not isinstance(raw, list):
        return [], raw is not None
    entities, malformed = [], False
    for entity in raw:
        if (
            isinstance(entity, dict)
            and isinstance(entity.get("type"), str)
            and isinstance(entity.get("filler"), str)
        ):
            entities.append((entity["type"], entity["filler"]))
        else:
            malformed = True
    return entities, malformed


@dataclass
class _Item:
    scenario: Any
    action: Any
    entities: list[Entity]

    @property
    def intent(self) -> str:
        return f"{self.scenario}_{self.action}"


def _gold_items(gold_rows: Iterable[dict], by_file: bool) -> dict[str, _Item]:
    """One gold item per recording file (by_file) or per sentence; a later duplicate id wins."""
    items: dict[str, _Item] = {}
    for row in gold_rows:
        entities = [(e["type"], e["filler"]) for e in slurp_gold_entities(row)]
        item = _Item(row["scenario"], row["action"], entities)
        if by_file:
            for recording in row.get("recordings") or []:
                items[recording["file"]] = item
        else:
            items[_normalise_id(row["slurp_id"])] = item
    return items


# ---------------------------------------------------------------- scoring


def score_slurp(gold_rows: list[dict], predictions: list[dict], skip_missing: bool = False) -> dict:
    """SLURP metrics of `predictions` against the SLURP-format `gold_rows`.

    Predictions are keyed by recording ``file`` if any prediction row has a ``file`` key (then there is
    one gold item per recording), else by ``slurp_id`` (one gold item per sentence); with no
    predictions at all, by file. Duplicate prediction keys: the last row wins, and the rows repeating an
    earlier row's key are counted in ``num_duplicates``. Predictions for ids not in the gold set are
    ignored and counted in ``num_unmatched_predictions``.

    Returns the metrics of ``METRIC_KEYS`` as floats in [0, 1], plus ``num_gold`` (gold items),
    ``num_predicted`` (gold items with a prediction), ``num_missing`` (gold items without one; scored as
    wrong unless `skip_missing`, when they are left out as the original script does),
    ``num_unmatched_predictions`` and ``num_malformed_predictions`` (predictions scored with a
    malformed ``entities`` value or entity dropped).
    """
    by_file = not predictions or any(isinstance(p, dict) and "file" in p for p in predictions)
    key = "file" if by_file else "slurp_id"
    gold = _gold_items(gold_rows, by_file)

    predicted: dict[str, dict] = {}
    unmatched: set[str] = set()
    seen: set[str] = set()
    no_key = num_duplicates = 0
    for row in predictions:
        if not isinstance(row, dict) or row.get(key) is None:
            no_key += 1
            continue
        item_id = _normalise_id(row[key])
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
    return _Item(value["scenario"], value["action"], [(e["type"], e["filler"]) for e in value["entities"]])


def score_slu(gold: dict[str, _Item | dict], predicted: dict[str, dict], skip_missing: bool = False) -> dict:
    """SLU metrics of prediction rows keyed by item id against gold items keyed the same way.

    Gold items are `{"scenario", "action", "entities": [{"type", "filler"}]}`; predictions for ids not
    in `gold` are ignored and counted in ``num_unmatched_predictions``.
    """
    gold = {item_id: _as_item(item) for item_id, item in gold.items()}
    unmatched = sum(item_id not in gold for item_id in predicted)
    predicted = {item_id: row for item_id, row in predicted.items() if item_id in gold}
    correct = {"scenario": 0, "action": 0, "intent": 0}
    span, word, char = F1Counter(), F1Counter(), F1Counter()
    num_scored = num_malformed = 0
    for item_id, gold_item in gold.items():
        row = predicted.get(item_id)
        if row is None and skip_missing:
            continue
        num_scored += 1
        if row is None:
            # Missing prediction: labels are wrong and every gold entity is a false negative.
            pred_item = _Item(None, None, [])
        else:
            entities, malformed = _parse_entities(row.get("entities"))
            num_malformed += malformed
            pred_item = _Item(row.get("scenario"), row.get("action"), entities)
            correct["scenario"] += pred_item.scenario == gold_item.scenario
            correct["action"] += pred_item.action == gold_item.action
            correct["intent"] += pred_item.intent == gold_item.intent
        span += span_f1_counts(gold_item.entities, pred_item.entities)
        word += distance_f1_counts(gold_item.entities, pred_item.entities, word_distance)
        char += distance_f1_counts(gold_item.entities, pred_item.entities, char_distance)

    def accuracy(name: str) -> float:
        return correct[name] / num_scored if num_scored else 0.0

    return {
        "scenario_accuracy": accuracy("scenario"),
        "action_accuracy": accuracy("action"),
        "intent_accuracy": accuracy("intent"),
        "entity_span_f1": span.f1,
        "word_f1": word.f1,
        "char_f1": char.f1,
        "slu_f1": (word + char).f1,
        "num_gold": len(gold),
        "num_predicted": len(predicted),
        "num_missing": len(gold) - len(predicted),
        "num_unmatched_predictions": unmatched,
        "num_malformed_predictions": num_malformed,
    }
