"""Speech-MASSIVE's own metrics, computed from our JSON predictions.

The data set's evaluation (Speech-MASSIVE's `massive_eval.py`, MASSIVE's `eval_preds` from alexa/massive
`src/massive/utils/training_utils.py`) scores per-token slot tags: intent accuracy, exact-match accuracy (intent and
every tag right) and slot micro-F1 with seqeval over BIO tags; its `s3prl_slot_eval.py` adds s3prl's slot-type F1
and slot-value CER. Gold tags come from `annot_utt` as MASSIVE's `create_hf_dataset.py` derives them (whitespace
locales, which are all of Speech-MASSIVE's): the utterance's whitespace tokens, "Other" outside a `[slot : words]`
span.

Our models answer with entities (`{type: filler}`), not tags, so the predicted tags are derived by one rule,
`align_entities`: in output order, each filler (lowercased, split on whitespace) tags the leftmost run of equal
utterance tokens (compared lowercased) that starts at or after the end of the previous placed entity and holds no
tag yet; failing that, the leftmost such run anywhere; failing that, the filler is unaligned (counted). So
`[person : marie] et marie` with one predicted `person: marie` tags the first "marie", and a second one the other.

The scripts also take a predicted transcript; ours predict none, so the predicted token sequence is the utterance
with the unaligned fillers appended (tagged with their type): MASSIVE's scorer cuts a prediction to the gold length
(they vanish there), s3prl's slot-value CER sees their words.

One stricter figure: a row with an empty annot_utt has no tags in MASSIVE's data (create_hf_dataset gives it none,
and eval_preds cuts the prediction to none), so a slot predicted there is not counted by the official script. Ours
tags such a row all "Other" and counts that slot as wrong (`massive_slot_micro_f1`, `massive_exact_match_accuracy`);
the official figures are printed beside them as `massive_slot_micro_f1_official` and
`massive_exact_match_accuracy_official` (equal wherever every row has an annot_utt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audio_recipes.errors import DataError
from audio_recipes.metrics.slu import levenshtein

OUTSIDE = "Other"
MASSIVE_METRIC_KEYS = ("massive_intent_accuracy", "massive_exact_match_accuracy", "massive_slot_micro_f1",
                       "massive_exact_match_accuracy_official", "massive_slot_micro_f1_official",
                       "slot_type_f1", "slot_value_cer")


def annotation_tags(utterance: str, annotation: str, where: str = "") -> tuple[list[str], list[str]]:
    """Gold tokens and tags, MASSIVE's rule: tokens = utt.split(); walking annot_utt.split(), "[slot" opens a span
    (its ":" skipped), a chunk ending in "]" closes it, every other chunk takes the current label."""
    tokens, tags, label = utterance.split(), [], OUTSIDE
    chunks = annotation.split()
    index = 0
    while index < len(chunks):
        if chunks[index].startswith("["):
            label = chunks[index].lstrip("[")
            index += 2
        elif chunks[index].endswith("]"):
            tags.append(label)
            label = OUTSIDE
            index += 1
        else:
            tags.append(label)
            index += 1
    if tags and len(tags) != len(tokens):
        raise DataError(f"{where}: annot_utt gives {len(tags)} tagged words, utt has {len(tokens)} "
                        f"({annotation!r} / {utterance!r})")
    return tokens, tags or [OUTSIDE] * len(tokens)


def _find_run(words: list[str], tokens: list[str], tags: list[str], start: int) -> int | None:
    for i in range(start, len(tokens) - len(words) + 1):
        if tokens[i:i + len(words)] == words and all(tag == OUTSIDE for tag in tags[i:i + len(words)]):
            return i
    return None


def align_entities(tokens: Sequence[str], entities: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict]]:
    """Per-token tags from predicted entities (the rule in the module docstring), and the unaligned entities."""
    lowered = [token.lower() for token in tokens]
    tags = [OUTSIDE] * len(tokens)
    unaligned, cursor = [], 0
    for entity in entities:
        words = str(entity.get("filler", "")).lower().split()
        start = None
        if words:
            start = _find_run(words, lowered, tags, cursor)
            start = _find_run(words, lowered, tags, 0) if start is None else start
        if start is None:
            unaligned.append(entity)
            continue
        tags[start:start + len(words)] = [str(entity.get("type"))] * len(words)
        cursor = start + len(words)
    return tags, unaligned


def to_bio(tags: Sequence[str]) -> list[str]:
    """MASSIVE's convert_to_bio (no merge labels): "Other" -> O; a tag unlike the previous opens B-, a repeat I-
    (so two adjacent spans of one type read as one)."""
    bio, previous = [], None
    for tag in map(str, tags):
        if tag == OUTSIDE:
            bio.append("O")
        elif tag != previous:
            bio.append("B-" + tag)
        else:
            bio.append("I-" + tag)
        previous = tag
    return bio


def bio_chunks(sequences: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
    """seqeval's chunks (default, lenient IOB2) over the sentences joined by an O, as (type, start, end)."""
    flat = [tag for sequence in sequences for tag in [*sequence, "O"]]
    chunks, start, kind = set(), None, None
    for position, tag in enumerate([*flat, "O"]):
        prefix, _, tag_type = tag.partition("-") if tag != "O" else ("O", "", "")
        ends = start is not None and (prefix in ("O", "B") or tag_type != kind)
        if ends:
            chunks.add((kind, start, position - 1))
            start = None
        if prefix in ("B", "I") and start is None:
            start, kind = position, tag_type
    return chunks


def seqeval_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """seqeval.metrics.f1_score (micro): 0 where there are no chunks at all."""
    true, pred = bio_chunks(gold), bio_chunks(predicted)
    return 2 * len(true & pred) / (len(true) + len(pred)) if true or pred else 0.0


def slot_dict(tags: Sequence[str], tokens: Sequence[str]) -> dict[str, list[str]]:
    """s3prl's get_slot_dict: slot -> its tokens, one entry per token ("Other" included)."""
    values: dict[str, list[str]] = {}
    for tag, token in zip(tags, tokens, strict=False):
        values.setdefault(tag, []).append(token)
    return values


def slot_type_f1(reference: dict[str, list[str]], hypothesis: dict[str, list[str]]) -> float:
    """s3prl's per-utterance slot-type F1 (averaged over utterances by the caller)."""
    if not reference and not hypothesis:
        return 1.0
    if not reference or not hypothesis:
        return 0.0
    recall = sum(slot in hypothesis for slot in reference) / len(reference)
    precision = sum(slot in reference for slot in hypothesis) / len(hypothesis)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def slot_value_pairs(reference: dict[str, list[str]], hypothesis: dict[str, list[str]]) -> list[tuple[str, str]]:
    """s3prl's slot_value_cer pairing: each reference value with the hypothesis value of its slot at the lowest CER
    (the first of equals), or "" where the slot was not predicted."""
    pairs = []
    for slot, values in reference.items():
        for value in values:
            best, lowest = "", 100.0
            for candidate in hypothesis.get(slot, []):
                rate = levenshtein(candidate, value) / len(value)
                if lowest > rate:
                    best, lowest = candidate, rate
            pairs.append((value, best))
    return pairs


def score_massive(items: Sequence[dict[str, Any]], predictions: dict[str, dict[str, Any]],
                  skip_missing: bool = False) -> dict[str, Any]:
    """MASSIVE's and s3prl's metrics of JSON predictions keyed by id against gold items
    `{id, intent, tokens, tags}` (and `annotated`: False where annot_utt is empty, which MASSIVE gives no tags).
    A missing or malformed prediction: intent "", no entities (wrong, unless
    `skip_missing` leaves the missing out)."""
    intents_right = exact = exact_official = 0
    gold_bio, pred_bio, type_f1s, value_pairs = [], [], [], []
    official_gold_bio, official_pred_bio = [], []
    num_scored = num_unaligned = 0
    for item in items:
        row = predictions.get(str(item["id"]))
        if row is None and skip_missing:
            continue
        num_scored += 1
        row = row or {}
        entities = [e for e in row.get("entities") or [] if isinstance(e, dict)]
        scenario, action = row.get("scenario"), row.get("action")
        intent = f"{scenario}_{action}" if isinstance(scenario, str) and isinstance(action, str) else ""
        tags, unaligned = align_entities(item["tokens"], entities)
        num_unaligned += len(unaligned)
        predicted_tokens = list(item["tokens"]) + [word for e in unaligned for word in str(e.get("filler", "")).split()]
        predicted_tags = tags + [str(e.get("type")) for e in unaligned for _ in str(e.get("filler", "")).split()]
        gold_sequence, pred_sequence = to_bio(item["tags"]), to_bio(predicted_tags[:len(item["tags"])])
        intents_right += intent == item["intent"]
        exact += intent == item["intent"] and gold_sequence == pred_sequence
        gold_bio.append(gold_sequence)
        pred_bio.append(pred_sequence)
        # MASSIVE's unannotated row has no tags, and its prediction is cut to none
        official_length = len(gold_sequence) if item.get("annotated", True) else 0
        official_gold_bio.append(gold_sequence[:official_length])
        official_pred_bio.append(pred_sequence[:official_length])
        exact_official += intent == item["intent"] and official_gold_bio[-1] == official_pred_bio[-1]
        reference, hypothesis = slot_dict(item["tags"], item["tokens"]), slot_dict(predicted_tags, predicted_tokens)
        type_f1s.append(slot_type_f1(reference, hypothesis))
        value_pairs += slot_value_pairs(reference, hypothesis)
    characters = sum(len(value) for value, _ in value_pairs)
    return {
        "massive_intent_accuracy": intents_right / num_scored if num_scored else 0.0,
        "massive_exact_match_accuracy": exact / num_scored if num_scored else 0.0,
        "massive_slot_micro_f1": seqeval_f1(gold_bio, pred_bio),
        "massive_exact_match_accuracy_official": exact_official / num_scored if num_scored else 0.0,
        "massive_slot_micro_f1_official": seqeval_f1(official_gold_bio, official_pred_bio),
        "slot_type_f1": sum(type_f1s) / len(type_f1s) if type_f1s else 0.0,
        "slot_value_cer": (sum(levenshtein(hyp, ref) for ref, hyp in value_pairs) / characters
                           if characters else 0.0),
        "num_unaligned_fillers": num_unaligned,
    }
