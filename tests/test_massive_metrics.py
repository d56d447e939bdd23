"""Speech-MASSIVE's own metrics (MASSIVE's eval_preds, s3prl's slot metrics) from JSON predictions: the gold tag
rule, the alignment rule, seqeval equality, hand-computed figures, and the published test split."""

import json
import random
from pathlib import Path

import pytest
from helpers import recipe_args

from audio_recipes.config import TaskArguments
from audio_recipes.metrics.massive import (
    OUTSIDE,
    align_entities,
    annotation_tags,
    bio_chunks,
    score_massive,
    seqeval_f1,
    to_bio,
)
from audio_recipes.tasks import get_task
from audio_recipes.tasks.slu_format import strip_annotation
from audio_recipes.testing.tiny_data import FIXTURE_MASSIVE_FR

ROOT = Path(__file__).resolve().parents[1]
X = OUTSIDE  # the tag of a word outside every slot


def gold(annotation: str, intent: str, item_id: str = "1") -> dict:
    tokens, tags = annotation_tags(strip_annotation(annotation), annotation)
    return {"id": item_id, "intent": intent, "tokens": tokens, "tags": tags}


def test_gold_tags_follow_massives_rule():
    tokens, tags = annotation_tags("joue la vie en rose de édith piaf",
                                   "joue [song_name : la vie en rose] de [artist_name : édith piaf]")
    assert tokens == ["joue", "la", "vie", "en", "rose", "de", "édith", "piaf"]
    assert tags == [X, "song_name", "song_name", "song_name", "song_name", X, "artist_name", "artist_name"]
    assert annotation_tags("monte le son", "monte le son")[1] == [X, X, X]
    # Two adjacent spans of one type read as one in BIO, as MASSIVE's convert_to_bio reads them
    assert to_bio(["date", "date", X, "time"]) == ["B-date", "I-date", "O", "B-time"]


def test_alignment_on_repeated_words():
    item = gold("envoie un courriel à [person : marie] et marie", "email_sendemail")
    assert item["tags"] == [X, X, X, X, "person", X, X]
    # One predicted person: the leftmost "marie"; two: both, in order
    assert align_entities(item["tokens"], [{"type": "person", "filler": "marie"}]) == ([X] * 4 + ["person", X, X], [])
    tags, unaligned = align_entities(item["tokens"], [{"type": "person", "filler": "Marie"}] * 2)
    assert tags == [X] * 4 + ["person", X, "person"] and unaligned == []
    # A later entity starts after the one before it; output out of order falls back to the leftmost free run
    tokens = "mets une alarme à midi et à midi".split()
    tags, _ = align_entities(tokens, [{"type": "time", "filler": "midi"}, {"type": "date", "filler": "à"}])
    assert tags == [X, X, X, X, "time", X, "date", X]
    tags, _ = align_entities(tokens, [{"type": "date", "filler": "et à midi"}, {"type": "time", "filler": "midi"}])
    assert tags == [X, X, X, X, "time", "date", "date", "date"]
    # A filler that is not in the utterance tags nothing and is counted
    tags, unaligned = align_entities(tokens, [{"type": "time", "filler": "minuit"}])
    assert tags == [X] * 8 and unaligned == [{"type": "time", "filler": "minuit"}]


@pytest.mark.filterwarnings("ignore:F-score is ill-defined")
def test_seqeval_f1_equals_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "O", "B-a", "I-a", "B-b", "I-b", "I-a"]
    for _ in range(300):
        lengths = [rng.randint(0, 6) for _ in range(rng.randint(1, 4))]
        true = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        pred = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        assert seqeval_f1(true, pred) == pytest.approx(seqeval.f1_score(true, pred)), (true, pred)
    assert bio_chunks([["B-a", "I-a", "O", "I-b"]]) == {("a", 0, 1), ("b", 3, 3)}


def test_massive_metrics_by_hand():
    items = [gold("réveille-moi à [time : sept heures]", "alarm_set", "1"),
             gold("envoie un courriel à [person : marie] et marie", "email_sendemail", "2"),
             gold("monte le son", "audio_volume_up", "3")]
    predictions = {
        "1": {"scenario": "alarm", "action": "set", "entities": [{"type": "time", "filler": "sept heures"}]},
        "2": {"scenario": "email", "action": "sendemail", "entities": [{"type": "person", "filler": "marie"},
                                                                      {"type": "person", "filler": "mari"}]},
        # "3" missing: intent wrong, no tags
    }
    metrics = score_massive(items, predictions)
    assert metrics["massive_intent_accuracy"] == pytest.approx(2 / 3)
    # Item 2's "mari" is unaligned (no tag): its tags are still the gold ones
    assert metrics["massive_exact_match_accuracy"] == pytest.approx(2 / 3)
    assert metrics["num_unaligned_fillers"] == 1
    assert metrics["massive_slot_micro_f1"] == 1.0  # both gold chunks found, nothing else tagged
    # s3prl slot-type F1 per utterance, "Other" a type there: each predicts the gold types (item 3: "Other" only)
    assert metrics["slot_type_f1"] == 1.0
    # s3prl value CER: item 2's hypothesis person values are "marie" and the appended "mari": "marie" matches
    assert metrics["slot_value_cer"] == 0.0
    skipped = score_massive(items, predictions, skip_missing=True)
    assert skipped["massive_intent_accuracy"] == 1.0


def write_massive(folder: Path, split: str) -> Path:
    rows = [{"id": str(number), "locale": "fr-FR", "partition": split, "intent_str": intent,
             "utt": strip_annotation(annotation), "annot_utt": annotation, "path": f"{number}.wav"}
            for number, (annotation, intent) in enumerate(FIXTURE_MASSIVE_FR)]
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_speech_massive_scores_report_slurp_and_massive_metrics(tmp_path):
    gold_path = write_massive(tmp_path, "test")
    task = get_task("speech_massive")
    rows = [json.loads(line) for line in gold_path.read_text().splitlines()]
    predictions = tmp_path / "predictions.jsonl"
    right = []
    for row in rows:
        scenario, _, action = row["intent_str"].partition("_")
        from audio_recipes.tasks.slu_format import entities_from_annotation

        right.append({"id": row["id"], "scenario": scenario, "action": action,
                      "entities": entities_from_annotation(row["annot_utt"])})
    predictions.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in right))
    metrics = task.score_files(gold_path, predictions)
    for key in ("massive_intent_accuracy", "massive_exact_match_accuracy", "massive_slot_micro_f1", "slot_type_f1",
                "intent_accuracy", "slu_f1", "slu_f1_official"):
        assert metrics[key] == 1.0, key
    assert metrics["slot_value_cer"] == 0.0 and metrics["num_unaligned_fillers"] == 0


def test_the_recipes_test_figures_are_on_the_published_test_split(monkeypatch, tmp_path):
    from audio_recipes.tasks import speech_massive

    args = recipe_args(TaskArguments, str(ROOT / "recipes/speech_massive.yaml"))
    assert (args.test_split, args.test_dataset_name) == ("test", "FBK-MT/Speech-MASSIVE-test")
    task = get_task("speech_massive", args)
    assert task.data_source("test") == "FBK-MT/Speech-MASSIVE-test[fr-FR/test]"
    assert task.data_source("eval") == "FBK-MT/Speech-MASSIVE[fr-FR/validation]"
    asked = []
    monkeypatch.setattr(speech_massive, "read_hub_split",
                        lambda name, locale, split, cache: asked.append((name, locale, split)) or [])
    with pytest.raises(Exception, match="no rows"):
        task.examples("test")
    assert asked == [("FBK-MT/Speech-MASSIVE-test", "fr-FR", "test")]
    # A local export of the test split is named by its file
    local = TaskArguments(task="speech_massive", test_file=str(write_massive(tmp_path, "test")), input_mode="text")
    assert get_task("speech_massive", local).data_source("test") == local.test_file


def test_official_figures_beside_ours_where_annot_utt_is_empty(tmp_path):
    # Gold rows and predictions scored by hand-run official scripts: Speech-MASSIVE massive_eval.py (hlt-mt/Speech-MASSIVE
    # 99eb08b, seqeval 1.2.2) with gold tags from alexa/massive create_hf_dataset.py (f966f21); s3prl_slot_eval.py same
    # commit, the unannotated row's gold slots read as one "Other" per word
    cases = [
        ("joue la vie en rose", "joue [song_name : la vie en rose]", "play_music",
         {"scenario": "play", "action": "music", "entities": [{"type": "song_name", "filler": "La Vie en rose"}]}),
        ("réveille moi à sept heures", "réveille moi à [time : sept heures]", "alarm_set", {}),
        ("monte le son", "monte le son", "audio_volume_up",
         {"scenario": "audio", "action": "volume_up", "entities": [{"type": "device", "filler": "télé"}]}),
        ("envoie à marie et marie", "envoie à [person : marie] et [person : marie]", "email_sendemail",
         {"scenario": "email", "action": "query", "entities": [{"type": "person", "filler": "marie"}] * 3}),
        ("paris demain", "[place_name : paris] [date : demain]", "weather_query",
         {"scenario": "weather", "action": "query",
          "entities": [{"type": "place_name", "filler": "paris"}, {"type": "date", "filler": "demain"}]}),
        ("quelle heure est il", "", "datetime_query",  # no annot_utt: MASSIVE gives it no tags
         {"scenario": "datetime", "action": "query", "entities": [{"type": "time", "filler": "heure"}]}),
        ("mardi mercredi", "[date : mardi] [date : mercredi]", "calendar_query",
         {"scenario": "calendar", "action": "query", "entities": [{"type": "date", "filler": "mardi mercredi"}]}),
    ]
    gold_path, predictions = tmp_path / "gold.jsonl", tmp_path / "predictions.jsonl"
    gold_path.write_text("".join(json.dumps({"id": str(n), "locale": "fr-FR", "utt": utt, "annot_utt": annotation,
                                             "intent_str": intent}, ensure_ascii=False) + "\n"
                                 for n, (utt, annotation, intent, _) in enumerate(cases)))
    predictions.write_text("".join(json.dumps({"id": str(n), **row}, ensure_ascii=False) + "\n"
                                   for n, (*_, row) in enumerate(cases) if row))
    metrics = get_task("speech_massive").score_files(gold_path, predictions)
    # massive_eval.py printed intent_acc 0.7142857142857143, slot_micro_f1 0.923076923076923, ex_match_acc
    # 0.7142857142857143; s3prl slot_type_f1 0.8571428571428571, slot_value_cer 0.1320754716981132
    assert metrics["massive_intent_accuracy"] == pytest.approx(5 / 7)
    assert metrics["massive_slot_micro_f1_official"] == pytest.approx(0.923076923076923)
    assert metrics["massive_exact_match_accuracy_official"] == pytest.approx(5 / 7)
    assert metrics["slot_type_f1"] == pytest.approx(0.8571428571428571)
    assert metrics["slot_value_cer"] == pytest.approx(0.1320754716981132)
    # Ours counts the time slot predicted on the unannotated row as wrong: 6 of 7 chunks right, 6 predicted + 7 gold
    assert metrics["massive_slot_micro_f1"] == pytest.approx(12 / 14)
    assert metrics["massive_exact_match_accuracy"] == pytest.approx(4 / 7)
