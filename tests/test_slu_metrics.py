"""SLURP SLU metrics (audio_recipes.metrics.slu): hand-computed cases and the published SLURP predictions."""

import json

import pytest

from audio_recipes.errors import DataError
from audio_recipes.metrics.slu import (
    METRIC_KEYS,
    F1Counter,
    OfficialScriptStops,
    char_distance,
    distance_f1_counts,
    score_slurp,
    slurp_gold_entities,
    span_f1_counts,
    word_distance,
)

KEYS = {
    "scenario_accuracy",
    "action_accuracy",
    "intent_accuracy",
    "entity_span_f1",
    "word_f1",
    "char_f1",
    "slu_f1",
    "num_gold",
    "num_predicted",
    "num_missing",
    "num_unmatched_predictions",
    "num_malformed_predictions",
    "num_duplicates",
    *(f"{key}_official" for key in METRIC_KEYS),
}


def _row(slurp_id, words, scenario, action, entities, files):
    return {
        "slurp_id": slurp_id,
        "sentence": " ".join(words).lower(),
        "scenario": scenario,
        "action": action,
        "intent": f"{scenario}_{action}",
        "tokens": [{"surface": w, "id": i} for i, w in enumerate(words)],
        "entities": [{"span": span, "type": t} for t, span in entities],
        "recordings": [{"file": f, "wer": 0.0, "ent_wer": 0.0, "status": "correct"} for f in files],
    }


# Two sentences, three recordings. Token surfaces are mixed case: gold fillers are lowercased.
GOLD = [
    _row(
        1,
        ["play", "jazz", "by", "Miles", "Davis"],
        "play",
        "music",
        [("genre", [1]), ("artist_name", [3, 4])],
        ["a.flac", "b.flac"],
    ),
    _row(2, ["set", "alarm", "for", "seven", "am"], "alarm", "set", [("time", [3, 4])], ["c.flac"]),
]

PREDICTIONS = [
    # a: labels right; "miles" is a partial filler for "miles davis" (WER 1/2, char 6/11).
    {
        "file": "a.flac",
        "text": "play jazz by miles",
        "scenario": "play",
        "action": "music",
        "entities": [{"type": "genre", "filler": "jazz"}, {"type": "artist_name", "filler": "miles"}],
    },
    # b: wrong action (so wrong intent); "date" is a type absent from the gold.
    {
        "file": "b.flac",
        "scenario": "play",
        "action": "radio",
        "entities": [{"type": "genre", "filler": "jazz"}, {"type": "date", "filler": "today"}],
    },
    # c.flac has no prediction; zzz.flac is not in the gold set.
    {"file": "zzz.flac", "scenario": "play", "action": "music", "entities": []},
]


def test_gold_entities_lowercase_the_span_surfaces():
    assert slurp_gold_entities(GOLD[0]) == [
        {"type": "genre", "filler": "jazz"},
        {"type": "artist_name", "filler": "miles davis"},
    ]
    assert slurp_gold_entities(GOLD[1]) == [{"type": "time", "filler": "seven am"}]


def test_distances():
    assert word_distance("miles davis", "miles") == 0.5
    assert word_distance("bob", "ann lee") == 2.0  # WER is not capped at 1, as in the original
    assert word_distance("seven am", "seven am") == 0.0
    assert word_distance("seven am", "") == 1.0
    assert char_distance("miles davis", "miles") == pytest.approx(6 / 11)
    assert char_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert char_distance("abc", "") == 1.0
    # The official libraries' edge cases: textdistance gives 1 for two empty strings, jiwer stops on an empty truth
    assert char_distance("", "") == 1.0
    with pytest.raises(OfficialScriptStops):
        word_distance("", "")


def test_word_distance_splits_on_a_single_space_only_as_jiwer_2_does():
    # jiwer 2.0.0 (the version SLURP's scripts pin): runs of 2+ whitespace characters become a space, then split on " "
    assert word_distance("miles davis", "miles\tdavis") == 1.0  # one word "miles\tdavis": 1 substitution, 1 deletion
    assert word_distance("miles davis", "miles\u00a0davis") == 1.0  # a no-break space joins the words too
    assert word_distance("miles davis", "miles \u00a0davis") == 0.0  # a run of two whitespace characters splits
    assert word_distance("miles davis", " miles  davis\n") == 0.0
    assert word_distance("miles davis", ["miles", "davis"]) == 0.0  # jiwer reads a list as sentences
    for value in (None, 5, {"a": 1}, ["miles", 5]):
        with pytest.raises(OfficialScriptStops):
            word_distance("miles davis", value)


def test_word_distance_is_jiwer_wer():
    """The original computes the word distance with jiwer.wer (a dependency of this project)."""
    jiwer = pytest.importorskip("jiwer")
    pairs = [
        ("miles davis", "miles"),
        ("bob", "ann lee"),
        ("new york city", "york new city"),
        ("ten am", "ten a m"),
        ("tomorrow", "tomorrow 's"),
        ("a b c d", "x"),
    ]
    for ref, hyp in pairs:
        assert word_distance(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp)), (ref, hyp)


def test_char_distance_is_normalised_levenshtein():
    """The original uses textdistance's normalised Levenshtein: distance / longer length."""
    levenshtein = pytest.importorskip("rapidfuzz.distance.Levenshtein")
    pairs = [("miles davis", "miles"), ("bob", "ann lee"), ("seven am", "seventh am"), ("x", "")]
    for ref, hyp in pairs:
        assert char_distance(ref, hyp) == pytest.approx(levenshtein.normalized_distance(ref, hyp))


def test_f1_counter():
    assert F1Counter().f1 == 0.0
    counts = F1Counter(tp=3, fp=1.5, fn=2.5)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(6 / 11)
    assert counts.f1 == pytest.approx(0.6)
    assert (counts + F1Counter(1, 1, 1)) == F1Counter(4, 2.5, 3.5)


def entity(entity_type, filler, **more):
    return {"type": entity_type, "filler": filler, **more}


def test_span_f1_counts_each_gold_entity_once():
    gold = [entity("date", "today")]
    assert span_f1_counts(gold, [entity("date", "today"), entity("date", "today")]) == F1Counter(1, 1, 0)
    assert span_f1_counts(gold + gold, [entity("date", "today")]) == F1Counter(1, 0, 1)
    assert span_f1_counts(gold, [entity("time", "today")]) == F1Counter(0, 1, 1)
    # Whole dicts are compared: an entity with another key is not the gold one (the distance F1s still match it)
    assert span_f1_counts(gold, [entity("date", "today", span=[3])]) == F1Counter(0, 1, 1)
    assert distance_f1_counts(gold, [entity("date", "today", span=[3])], word_distance) == F1Counter(1, 0, 0)


def test_distance_f1_is_greedy_in_prediction_order():
    gold = [entity("person", "ann lee"), entity("person", "bob")]
    predicted = [entity("person", "ann"), entity("person", "ann lee")]
    # "ann" takes "ann lee" (WER 0.5, the closest); "ann lee" is then left with "bob" (WER 2).
    word = distance_f1_counts(gold, predicted, word_distance)
    assert word == F1Counter(2, 2.5, 2.5)
    assert word.f1 == pytest.approx(4 / 9)
    char = distance_f1_counts(gold, predicted, char_distance)
    assert (char.tp, char.fp, char.fn) == pytest.approx((2, 4 / 7 + 1, 4 / 7 + 1))
    assert char.f1 == pytest.approx(0.56)
    # A second prediction of a type whose gold entities are all matched is a false positive.
    assert distance_f1_counts(
        [entity("date", "today")], [entity("date", "today"), entity("date", "now")], word_distance
    ) == F1Counter(1, 1, 0)
    # Ties go to the first gold entity of the type: "yo" is 2/4 from both and takes "york", leaving
    # "yolk" to match exactly (taking "yolk" would leave "york" at 1/4 for the second prediction).
    tied = distance_f1_counts(
        [entity("place", "york"), entity("place", "yolk")], [entity("place", "yo"), entity("place", "yolk")],
        char_distance,
    )
    assert tied == F1Counter(2, 0.5, 0.5)


def test_missing_prediction_counts_as_wrong():
    result = score_slurp(GOLD, PREDICTIONS)
    assert set(result) == KEYS
    # 3 gold items (recordings): a right, b wrong action, c missing.
    assert result["scenario_accuracy"] == pytest.approx(2 / 3)
    assert result["action_accuracy"] == pytest.approx(1 / 3)
    assert result["intent_accuracy"] == pytest.approx(1 / 3)
    # span: TP jazz, jazz; FP miles, today; FN miles davis (a), miles davis (b), seven am (c).
    assert result["entity_span_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))
    # word: TP 3; FP 0.5 + 1 (date); FN 0.5 + 1 (b's miles davis) + 1 (c's seven am).
    assert result["word_f1"] == pytest.approx(0.6)
    # char: as word but the partial match costs 6/11.
    assert result["char_f1"] == pytest.approx(22 / 37)
    assert result["slu_f1"] == pytest.approx(132 / 221)
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (3, 2, 1)
    assert result["num_unmatched_predictions"] == 1
    assert result["num_malformed_predictions"] == 0
    # The official figures: the predicted items only, as skip_missing makes the strict ones
    skipped = score_slurp(GOLD, PREDICTIONS, skip_missing=True)
    for key in METRIC_KEYS:
        assert result[f"{key}_official"] == skipped[key] == skipped[f"{key}_official"], key


def test_skip_missing_scores_only_predicted_items():
    result = score_slurp(GOLD, PREDICTIONS, skip_missing=True)
    assert result["scenario_accuracy"] == 1.0
    assert result["action_accuracy"] == 0.5
    assert result["intent_accuracy"] == 0.5
    assert result["entity_span_f1"] == pytest.approx(0.5)
    assert result["word_f1"] == pytest.approx(2 / 3)
    assert result["char_f1"] == pytest.approx(0.66)
    assert result["slu_f1"] == pytest.approx(132 / 199)
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (3, 2, 1)


def test_predictions_keyed_by_slurp_id_score_sentences():
    predictions = [
        {"slurp_id": "1", "scenario": "play", "action": "music", "entities": []},  # replaced below
        {
            "slurp_id": "2",
            "scenario": "alarm",
            "action": "set",
            "entities": [{"type": "time", "filler": "seven am"}],
        },
        # A duplicate id: the last one wins.
        {
            "slurp_id": "1",
            "scenario": "play",
            "action": "music",
            "entities": [
                {"type": "genre", "filler": "jazz"},
                {"type": "artist_name", "filler": "miles davis"},
            ],
        },
    ]
    result = score_slurp(GOLD, predictions)
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (2, 2, 0)
    for key in sorted(k for k in KEYS if not k.startswith("num_")):
        assert result[key] == 1.0, key


def test_intent_is_scenario_underscore_action():
    # The original compares "{scenario}_{action}" strings, so this intent is right although both parts are wrong.
    gold = [_row(3, ["mute"], "audio", "volume_mute", [], ["d.flac"])]
    predictions = [{"slurp_id": "3", "scenario": "audio_volume", "action": "mute", "entities": []}]
    result = score_slurp(gold, predictions)
    assert (result["scenario_accuracy"], result["action_accuracy"], result["intent_accuracy"]) == (0, 0, 1)


def test_predictions_the_official_script_stops_on_are_wrong_and_counted():
    predictions = [
        {"file": "a.flac", "scenario": "play", "action": "music", "entities": "genre=jazz"},  # not a list
        # No scenario (the script: KeyError)
        {"file": "b.flac", "action": "music", "entities": [{"type": "genre", "filler": "jazz"}]},
        {"scenario": "play"},  # no key at all: matches no gold item
        None,
        # No entities key (the script: KeyError)
        {"file": "c.flac", "scenario": "alarm", "action": "set"},
    ]
    result = score_slurp(GOLD, predictions)
    assert result["num_malformed_predictions"] == 3
    assert result["num_unmatched_predictions"] == 2
    assert (result["num_predicted"], result["num_missing"]) == (3, 0)
    for key in METRIC_KEYS:
        assert result[key] == result[f"{key}_official"] == 0.0, key


@pytest.mark.parametrize(("entities", "stops"), [
    ([{"type": "genre", "filler": None}], True),  # a null filler where a distance is computed
    ([{"type": "genre", "filler": 5}], True),
    ([{"type": "genre"}], True),  # no filler
    (["jazz"], True),  # not a dict
    ([{"type": ["genre"], "filler": "jazz"}], True),  # an unhashable type
    ([{"type": "date", "filler": None}], False),  # a type no gold entity has: no distance, one FP
    ([{"type": "genre", "filler": ["jazz"]}], False),  # jiwer and textdistance take a list
    ("", False),  # the script iterates nothing
])
def test_an_item_is_wrong_exactly_where_the_official_script_stops(entities, stops):
    gold = [_row(1, ["play", "jazz"], "play", "music", [("genre", [1])], ["a.flac"])]
    result = score_slurp(gold, [{"file": "a.flac", "scenario": "play", "action": "music", "entities": entities}])
    assert result["num_malformed_predictions"] == int(stops)
    assert result["scenario_accuracy"] == result["scenario_accuracy_official"] == (0.0 if stops else 1.0)


def test_a_prediction_key_that_is_not_a_string_is_refused_naming_its_type():
    # The official --load-gold keys gold items by str(slurp_id): an int id matches nothing and the file scores 0
    predictions = [{"slurp_id": 1, "scenario": "play", "action": "music", "entities": []}]
    with pytest.raises(DataError, match=r"1 prediction row\(s\) have a 'slurp_id' that is not a string \(int; first: "
                                        r"1\): the official evaluate.py --load-gold matches them to no gold item"):
        score_slurp(GOLD, predictions)
    with pytest.raises(DataError, match=r"'file' that is not a string \(int"):
        score_slurp(GOLD, [{"file": 7, "scenario": "play", "action": "music", "entities": []}])


def test_no_predictions():
    result = score_slurp(GOLD, [])
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (3, 0, 3)
    assert all(result[k] == 0.0 for k in ("intent_accuracy", "entity_span_f1", "slu_f1"))
    skipped = score_slurp(GOLD, [], skip_missing=True)
    assert all(skipped[k] == 0.0 for k in ("intent_accuracy", "entity_span_f1", "slu_f1"))


# ---------------------------------------------------------------- the published SLURP predictions


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def slurp_test(shared_data):
    return _jsonl(shared_data / "slurp" / "test.jsonl")


@pytest.fixture(scope="module")
def published(shared_data):
    def load(name):
        return _jsonl(shared_data / "slurp" / "predictions" / f"{name}_predictions.jsonl")

    return load


def _percent(result):
    return {k: round(v * 100, 2) for k, v in result.items() if k in METRIC_KEYS}


def test_gold_hermit_matches_the_slurp_paper(slurp_test, published):
    """HerMiT NLU on gold transcripts, scored per sentence (predictions keyed by slurp_id).

    Published (SLURP paper, EMNLP 2020, as quoted in NVIDIA NeMo's examples/slu/speech_intent_slot/README.md,
    row "SLURP paper (NLU on gold text)"): intent accuracy 84.84, entity F1 78.19.
    """
    result = score_slurp(slurp_test, published("gold_hermit"))
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (2974, 2974, 0)
    percent = _percent(result)
    assert percent["intent_accuracy"] == 84.84
    assert percent["entity_span_f1"] == 78.19
    # Not found in a citable source: computed by this implementation (its word/char distances agree with
    # jiwer.wer and rapidfuzz's normalised Levenshtein on these files).
    assert percent["scenario_accuracy"] == 90.15
    assert percent["action_accuracy"] == 86.99
    assert percent["word_f1"] == 81.09
    assert percent["char_f1"] == 81.68
    assert percent["slu_f1"] == 81.38
    assert score_slurp(slurp_test, published("gold_hermit"), skip_missing=True) == result
    for key in METRIC_KEYS:  # nothing missing: the official figures are the strict ones
        assert result[f"{key}_official"] == result[key], key


def test_multi_slurp_hermit(slurp_test, published):
    """Multi-ASR (trained with SLURP) + HerMiT, per recording; 7 of the 13078 test recordings lack a prediction.

    Values computed by this implementation (no citable published source found for this file).
    """
    predictions = published("multi_slurp_hermit")
    result = score_slurp(slurp_test, predictions)
    assert (result["num_gold"], result["num_predicted"], result["num_missing"]) == (13078, 13071, 7)
    assert _percent(result) == {
        "scenario_accuracy": 85.64,
        "action_accuracy": 81.37,
        "intent_accuracy": 78.29,
        "entity_span_f1": 64.15,
        "word_f1": 69.34,
        "char_f1": 72.38,
        "slu_f1": 70.83,
    }
    # The official figures: evaluate.py on this file prints these (run by hand: scripts/evaluation/evaluate.py
    # -g test.jsonl -p multi_slurp_hermit_predictions.jsonl, jiwer 2.0.0, textdistance 4.1.5)
    official = {key.removesuffix("_official"): value for key, value in result.items() if key.endswith("_official")}
    assert _percent(official) == {
        "scenario_accuracy": 85.69,
        "action_accuracy": 81.42,
        "intent_accuracy": 78.33,
        "entity_span_f1": 64.16,
        "word_f1": 69.34,
        "char_f1": 72.39,
        "slu_f1": 70.83,
    }
    skipped = score_slurp(slurp_test, predictions, skip_missing=True)  # as the original script scores it
    assert _percent(skipped) == {
        "scenario_accuracy": 85.69,
        "action_accuracy": 81.42,
        "intent_accuracy": 78.33,
        "entity_span_f1": 64.16,
        "word_f1": 69.34,
        "char_f1": 72.39,
        "slu_f1": 70.83,
    }


def test_google_hermit_partial_coverage(slurp_test, published):
    """Google ASR + HerMiT covers 12393 of 13078 recordings: skip_missing changes the denominators.

    Values computed by this implementation (no citable published source found for this file).
    """
    predictions = published("google_hermit")
    result = score_slurp(slurp_test, predictions)
    skipped = score_slurp(slurp_test, predictions, skip_missing=True)
    for r in (result, skipped):
        assert (r["num_gold"], r["num_predicted"], r["num_missing"]) == (13078, 12393, 685)
    # Same number of correct labels, over all gold items vs over the predicted ones only.
    for key in ("scenario_accuracy", "action_accuracy", "intent_accuracy"):
        assert round(result[key] * 13078) == round(skipped[key] * 12393)
        assert skipped[key] > result[key]
    for key in ("entity_span_f1", "word_f1", "char_f1", "slu_f1"):
        assert skipped[key] > result[key]  # the missing items' gold entities are no longer false negatives
    assert _percent(result) == {
        "scenario_accuracy": 77.40,
        "action_accuracy": 72.57,
        "intent_accuracy": 69.57,
        "entity_span_f1": 56.67,
        "word_f1": 62.73,
        "char_f1": 66.66,
        "slu_f1": 64.64,
    }
    assert _percent(skipped) == {
        "scenario_accuracy": 81.68,
        "action_accuracy": 76.58,
        "intent_accuracy": 73.41,
        "entity_span_f1": 58.00,
        "word_f1": 64.01,
        "char_f1": 68.12,
        "slu_f1": 66.00,
    }


# ---------------------------------------------------------------- one rule for SLURP's gold entities


def test_slurp_token_ids_are_their_positions_in_the_data_the_project_carries():
    """SLURP's spans could be read by token id or by position; in the published rows they are the same, and the one
    rule (slurp_gold_entities, by position as SLURP's own scripts read them) serves targets, rewards and scoring."""
    from audio_recipes.io import read_jsonl
    from audio_recipes.paths import ASSETS_DIR

    rows = read_jsonl(ASSETS_DIR / "slurp" / "devel.jsonl") + read_jsonl(ASSETS_DIR / "slurp" / "test.jsonl")
    assert all(token["id"] == position for row in rows for position, token in enumerate(row["tokens"]))


def test_slurp_token_ids_are_their_positions_in_the_full_annotations(shared_data):
    from audio_recipes.io import read_jsonl

    for split in ("devel", "test"):
        rows = read_jsonl(shared_data / "slurp" / f"{split}.jsonl")
        assert all(token["id"] == position for row in rows for position, token in enumerate(row["tokens"])), split


def test_training_targets_and_the_slu_reward_read_gold_entities_by_the_scorers_rule(tmp_path):
    """A row whose token ids are not their positions (no published row is one) tells the two rules apart: the
    target, the reward and the score all take the span by position."""
    from audio_recipes.config import TaskArguments
    from audio_recipes.rewards import REWARDS
    from audio_recipes.tasks import get_task

    row = {"slurp_id": 1, "sentence": "wake me up at seven", "scenario": "alarm", "action": "set",
           "tokens": [{"id": 4 - position, "surface": word} for position, word in enumerate("wake me up at seven".split())],
           "entities": [{"type": "time", "span": [4]}], "recordings": []}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert slurp_gold_entities(row) == [{"type": "time", "filler": "seven"}]  # position 4; id 4 is "wake"
    task = get_task("slurp", TaskArguments(task="slurp", train_file=str(path), input_mode="text"))
    target = json.loads(task.examples("train")[0].completion)
    assert target["entities"] == [{"time": "seven"}]
    reward = REWARDS.get("slu_f1")([task.examples("train")[0].completion], reference=[json.dumps(row)])
    assert reward == [1.0]


# ---------------------------------------------------------------- the official script's rules on real rows


def test_tab_and_no_break_space_fillers_and_extra_entity_keys_score_as_the_official_script(slurp_test, tmp_path):
    """Real gold rows, predictions the test writes (keyed by slurp_id as `--load-gold` reads them): every label and
    entity right, except one multi-word filler joined by tabs, one by no-break spaces (one word each for jiwer 2.0.0),
    and one entity carrying a `span` key (no whole-dict match in the span F1)."""
    from audio_recipes.tasks import get_task

    rows = [row for row in slurp_test if any(len(entity["span"]) > 1 for entity in row["entities"])][:3]
    predictions = []
    for row in rows:
        entities = slurp_gold_entities(row)
        predictions.append({"slurp_id": str(row["slurp_id"]), "scenario": row["scenario"], "action": row["action"],
                            "entities": entities})
    joined = []
    for number, separator in enumerate(("\t", "\u00a0")):
        entity = next(e for e in predictions[number]["entities"] if " " in e["filler"])
        joined.append(entity["filler"])
        entity["filler"] = entity["filler"].replace(" ", separator)
    next(e for e in predictions[2]["entities"])["span"] = [0]
    gold, path = tmp_path / "gold.jsonl", tmp_path / "predictions.jsonl"
    gold.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path.write_text("".join(json.dumps(row) + "\n" for row in predictions))
    result = get_task("slurp").score_files(gold, path)

    total = sum(len(row["entities"]) for row in rows)
    assert result["intent_accuracy"] == result["intent_accuracy_official"] == 1.0
    # span: the three altered entities are each one FP and leave one FN
    assert result["entity_span_f1_official"] == pytest.approx(F1Counter(total - 3, 3, 3).f1)
    # word: a k-word filler read as one word is k edits away (WER 1.0); the `span` key does not matter here
    assert result["word_f1_official"] == pytest.approx(F1Counter(total, 2.0, 2.0).f1)
    # char: each separator is one substitution
    char = sum(filler.count(" ") / len(filler) for filler in joined)
    assert result["char_f1_official"] == pytest.approx(F1Counter(total, char, char).f1)
    assert result["num_malformed_predictions"] == 0


def test_a_text_only_file_keyed_by_integer_slurp_id_is_refused(shared_data, published, tmp_path):
    """The official `evaluate.py --load-gold` keys gold sentences by str(slurp_id): an integer id matches nothing and
    the file scores 0 there (1.0 here before); we refuse it, naming the key and its type."""
    from audio_recipes.tasks import get_task

    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({**row, "slurp_id": int(row["slurp_id"])}) + "\n"
                            for row in published("gold_hermit")))
    with pytest.raises(DataError, match=r"2974 prediction row\(s\) have a 'slurp_id' that is not a string \(int; "):
        get_task("slurp").score_files(shared_data / "slurp" / "test.jsonl", path)
