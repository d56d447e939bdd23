import json

import pytest

from audio_recipes.rewards import REWARDS, get_reward_funcs

ITEM = json.dumps({"id": "1", "question": "q", "choices": ["Dog", "Cat", "Bird"], "answer": "Cat"})


def test_registry_names_and_unknown_name():
    assert {"choice_accuracy", "answer_format", "slu_f1", "slu_intent"} <= set(REWARDS)
    assert get_reward_funcs(["choice_accuracy"])[0].__name__ == "choice_accuracy"
    with pytest.raises(ValueError, match="unknown reward function 'choice_acuracy' .*did you mean 'choice_accuracy'"):
        get_reward_funcs(["choice_acuracy"])


def test_choice_accuracy_on_strings_and_messages():
    completions = ["<think>hmm</think><answer>(B) Cat</answer>", "<answer>A</answer>", "cat", "",
                   [{"role": "assistant", "content": "<answer>B</answer>"}]]
    assert REWARDS.get("choice_accuracy")(completions, reference=[ITEM] * 5) == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_choice_string_match_scores_the_output_as_accuracy_does_and_choice_accuracy_the_answer_given():
    completions = ["<answer>(B) Cat</answer>", "<answer>B</answer>", "<think>not a dog</think><answer>Cat</answer>",
                   "<answer>Cat</answer> Dog", "cat", ""]
    references = [ITEM] * len(completions)
    assert REWARDS.get("choice_string_match")(completions, reference=references) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert REWARDS.get("choice_accuracy")(completions, reference=references)[:3] == [1.0, 1.0, 1.0]


def test_answer_format():
    completions = ["<think>a</think>\n<answer>B</answer>", "<answer>B</answer>", "The answer: <answer>B</answer>",
                   "<answer>B</answer> trailing", "<answer></answer>", "<answer>A</answer><answer>B</answer>",
                   "B"]
    assert REWARDS.get("answer_format")(completions) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_slu_rewards_on_a_slurp_row():
    row = {"slurp_id": 1, "scenario": "alarm", "action": "set",
           "tokens": [{"surface": "Eight", "id": 0}, {"surface": "am", "id": 1}],
           "entities": [{"span": [0, 1], "type": "time"}]}
    reference = [json.dumps(row)] * 4
    completions = [
        '{"scenario": "alarm", "action": "set", "entities": [{"time": "eight am"}]}',
        '{"scenario": "alarm", "action": "query", "entities": [{"time": "eight"}]}',
        '{"scenario": "alarm", "action": "set", "entities": []}',
        "not json",
    ]
    f1 = REWARDS.get("slu_f1")(completions, reference=reference)
    # Partial filler "eight" vs "eight am": word distance 0.5, char distance 3/8 -> tp 2, fp = fn = 0.875
    assert f1[0] == 1.0 and f1[1] == pytest.approx(2 / (2 + 0.875)) and f1[2] == 0.0 and f1[3] == 0.0
    assert REWARDS.get("slu_intent")(completions, reference=reference) == [1.0, 0.0, 1.0, 0.0]


def test_slu_f1_with_no_entities_on_either_side():
    reference = [json.dumps({"scenario": "audio", "action": "volume_mute", "entities": []})] * 2
    completions = ['{"scenario": "audio", "action": "volume_mute", "entities": []}', "{}"]
    assert REWARDS.get("slu_f1")(completions, reference=reference) == [1.0, 0.0]
