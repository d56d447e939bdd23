"""Speech-token LM on the tiny Qwen3: vocabulary extension, initialisation, frozen text rows through real
training, loss masks, the task's data, scores and generated output."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from audio_recipes.collators import IGNORE_INDEX, build_collator
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.errors import DataError, RecipeError
from audio_recipes.models import TextEmbeddingRowsFreezer, extend_speech_vocabulary
from audio_recipes.models.speech_vocabulary import SpeechVocabulary, speech_answer
from audio_recipes.pipelines.evaluate import answer_prompts
from audio_recipes.pipelines.sft import build_trainer, run_sft
from audio_recipes.recipe import parse_recipe
from audio_recipes.tasks import get_task
from audio_recipes.tasks.base import Example
from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)


@pytest.fixture(scope="module")
def tiny_qwen3():
    return ensure_tiny_model("qwen3")


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def recipe(name, tmp_path, *overrides):
    model_args, task_args, training_args, _ = parse_recipe(TYPES, [
        str(ROOT / "recipes" / "tiny" / f"{name}.yaml"), "--output_dir", str(tmp_path / name),
        "--train_file", str(tmp_path / "data" / "train.jsonl"), "--eval_file", str(tmp_path / "data" / "eval.jsonl"),
        "--test_file", str(tmp_path / "data" / "test.jsonl"), *overrides])
    return model_args, task_args, training_args


# ---------------------------------------------------------------------------------------------- extension


def test_speech_tokens_go_after_the_text_vocabulary(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    text_size, rows = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    before = model.get_input_embeddings().weight.detach().clone()
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096))
    assert vocabulary == SpeechVocabulary(offset=text_size, num_speech_tokens=4096)
    assert tokenizer.convert_tokens_to_ids(["<|s_0|>", "<|s_4095|>", "<|speech_start|>", "<|speech_end|>"]) == [
        text_size, text_size + 4095, text_size + 4096, text_size + 4097]
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == 6208 > rows and weight.shape[0] % 64 == 0 and model.config.vocab_size == 6208
    assert model.get_output_embeddings().weight is weight, "still tied after the resize"
    assert torch.equal(weight[:text_size], before[:text_size])
    # One token each, in the middle of text too
    ids = tokenizer("ok\n<|speech_start|><|s_7|><|s_4095|><|speech_end|>", add_special_tokens=False)["input_ids"]
    assert ids[-4:] == [vocabulary.start_id, text_size + 7, text_size + 4095, vocabulary.end_id]


def test_mean_and_normal_initialisation(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    text = model.get_input_embeddings().weight.detach()[: len(tokenizer)].clone()
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096,
                                                                          speech_embedding_noise=0.05))
    new = model.get_input_embeddings().weight.detach()[vocabulary.offset:vocabulary.end_id + 1]
    noise = new - text.mean(dim=0)
    assert noise.abs().mean(dim=0).max() < 0.1 * text.std(), "rows sit at the mean of the text rows"
    assert noise.std().item() == pytest.approx(0.05 * text.std().item(), rel=0.05)
    assert not torch.equal(new[0], new[1]), "noise tells the new rows apart"

    model, tokenizer = load(tiny_qwen3)
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096,
                                                                          speech_embedding_init="normal"))
    new = model.get_input_embeddings().weight.detach()[vocabulary.offset:vocabulary.end_id + 1]
    assert new.mean().abs() < 1e-3 and new.std().item() == pytest.approx(model.config.initializer_range, rel=0.05)


def test_copy_initialisation_warm_starts_from_another_model(tiny_qwen3, tmp_path):
    source, tokenizer = load(tiny_qwen3)
    extend_speech_vocabulary(source, tokenizer, ModelArguments(num_speech_tokens=4096), seed=7)
    source.save_pretrained(tmp_path / "source")
    tokenizer.save_pretrained(tmp_path / "source")
    model, tokenizer = load(tiny_qwen3)
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(
        num_speech_tokens=4096, speech_embedding_init="copy", speech_embedding_source=str(tmp_path / "source")))
    rows = slice(vocabulary.offset, vocabulary.end_id + 1)
    assert torch.equal(model.get_input_embeddings().weight[rows], source.get_input_embeddings().weight[rows])

    model, tokenizer = load(tiny_qwen3)
    with pytest.raises(ValueError, match="has 0 speech tokens; 4096 are needed"):
        extend_speech_vocabulary(model, tokenizer, ModelArguments(
            num_speech_tokens=4096, speech_embedding_init="copy", speech_embedding_source=str(tiny_qwen3)))


def test_an_extended_model_keeps_its_vocabulary(tiny_qwen3, tmp_path):
    model, tokenizer = load(tiny_qwen3)
    first = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load(tmp_path)
    weights = model.get_input_embeddings().weight.detach().clone()
    assert extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096)) == first
    assert len(tokenizer) == first.end_id + 1 and torch.equal(model.get_input_embeddings().weight, weights)
    assert extend_speech_vocabulary(model, tokenizer, ModelArguments()) == first  # found without asking
    with pytest.raises(ValueError, match="already has 4096 speech tokens; the recipe asks for 100"):
        extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=100))


def test_recipe_errors_before_training(tmp_path):
    model_args, task_args, training_args = recipe("speech_tokens_frozen_text", tmp_path, "--num_speech_tokens", "0")
    with pytest.raises(RecipeError, match="freeze_text_embeddings .* set num_speech_tokens"):
        build_trainer(model_args, task_args, training_args)
    model_args, task_args, training_args = recipe("speech_tokens", tmp_path, "--use_peft", "true")
    with pytest.raises(RecipeError, match="num_speech_tokens with LoRA"):
        build_trainer(model_args, task_args, training_args)


# ---------------------------------------------------------------------------------------------- frozen text rows


def train_and_compare(tmp_path, name, *overrides):
    model_args, task_args, training_args = recipe(
        name, tmp_path, "--max_steps", "4", "--learning_rate", "1e-2", "--weight_decay", "0.1",
        "--eval_strategy", "no", "--logging_steps", "1", *overrides)
    run = build_trainer(model_args, task_args, training_args)
    model = run.trainer.model
    offset = SpeechVocabulary.of(run.trainer.processing_class).offset
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run.trainer.train()
    after = dict(model.named_parameters())
    return run, offset, before, after


def test_frozen_text_rows_stay_bit_identical_through_training(tmp_path):
    run, offset, before, after = train_and_compare(tmp_path, "speech_tokens_frozen_text")
    embedding = "model.embed_tokens.weight"
    assert [name for name in after if "embed" in name or "lm_head" in name] == [embedding], "one tied tensor"
    optimizer_groups = run.trainer.optimizer.param_groups
    assert any(group["weight_decay"] == 0.1 and any(p is after[embedding] for p in group["params"])
               for group in optimizer_groups), "weight decay applies to the embedding"
    assert torch.equal(after[embedding][:offset], before[embedding][:offset])
    assert not torch.equal(after[embedding][offset:], before[embedding][offset:]), "speech rows train"
    assert not torch.equal(after["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])


def test_without_the_restore_weight_decay_moves_the_masked_rows(tmp_path, monkeypatch):
    """Why the freezer restores the rows: their gradient is zero, yet AdamW's weight decay moves them."""
    monkeypatch.setattr(TextEmbeddingRowsFreezer, "on_optimizer_step", lambda self, *args, **kwargs: None)
    _, offset, before, after = train_and_compare(tmp_path, "speech_tokens_frozen_text")
    embedding = "model.embed_tokens.weight"
    assert not torch.equal(after[embedding][:offset], before[embedding][:offset])


def test_unfrozen_recipe_trains_the_text_rows_too(tmp_path):
    _, offset, before, after = train_and_compare(tmp_path, "speech_tokens")
    assert not torch.equal(after["model.embed_tokens.weight"][:offset], before["model.embed_tokens.weight"][:offset])


def test_gradient_of_text_rows_is_masked(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=16))
    TextEmbeddingRowsFreezer(model, vocabulary.offset)
    ids = torch.tensor([tokenizer("hello <|s_3|><|speech_end|>", add_special_tokens=False)["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad[: vocabulary.offset].abs().sum() == 0
    assert grad[vocabulary.offset + 3].abs().sum() > 0 and grad[vocabulary.end_id].abs().sum() > 0


# ---------------------------------------------------------------------------------------------- data and loss


def test_loss_falls_on_the_assistant_turn_only(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096))
    collator = build_collator(tokenizer, TaskArguments(task="speech_tokens", enable_thinking=False),
                             with_completion=True)
    completion = speech_answer("Paris.", [5, 4095, 5])
    batch = collator([{"id": "a", "audio": None, "system": "", "prompt": "Capital of France?",
                       "completion": completion},
                      {"id": "b", "audio": None, "system": "", "prompt": "Hi?", "completion": speech_answer("Hi.", [1])}])
    prompt = tokenizer("<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
                       add_special_tokens=False)["input_ids"]
    answer = tokenizer("Paris.\n", add_special_tokens=False)["input_ids"] + [
        vocabulary.start_id, vocabulary.offset + 5, vocabulary.offset + 4095, vocabulary.offset + 5, vocabulary.end_id,
        tokenizer.convert_tokens_to_ids("<|im_end|>")]
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids[:len(prompt) + len(answer)] == prompt + answer
    assert labels[:len(prompt) + len(answer)] == [IGNORE_INDEX] * len(prompt) + answer
    assert set(labels[len(prompt) + len(answer):]) <= {IGNORE_INDEX}  # padding


def write_chat_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def chat(row_id, question, answer):
    return {"id": row_id, "messages": [{"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}]}


def test_task_reads_chat_rows_and_names_bad_ones(tmp_path):
    good = chat("q1", "Capital?", speech_answer("Paris.", [3, 4]))
    path = write_chat_rows(tmp_path / "ok.jsonl", [good, {**good, "id": "q0", "messages": [
        {"role": "system", "content": "Be brief."}, *good["messages"]]}])
    task = get_task("speech_tokens", TaskArguments(task="speech_tokens", test_file=path))
    first, second = task.examples("test")
    assert (first.prompt, first.completion, first.system) == ("Capital?", good["messages"][1]["content"], "")
    assert json.loads(first.reference) == {"text": "Paris.", "speech_tokens": [3, 4]}
    assert second.system == "Be brief."

    bad = write_chat_rows(tmp_path / "bad.jsonl", [good, chat("q2", "Capital?", "Paris. <|s_3|>")])
    task = get_task("speech_tokens", TaskArguments(task="speech_tokens", test_file=bad))
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2 \(id 'q2'\): .*no speech start marker"):
        task.examples("test")


def test_task_checks_the_model_can_write_its_tokens(tmp_path, tiny_qwen3):
    path = write_chat_rows(tmp_path / "t.jsonl", [chat("a", "Q?", speech_answer("A.", [1])),
                                                  chat("b", "Q?", speech_answer("B.", [20, 2]))])
    task = get_task("speech_tokens", TaskArguments(task="speech_tokens", test_file=path))
    task.examples("test")
    model, tokenizer = load(tiny_qwen3)
    with pytest.raises(DataError, match="no speech tokens; set num_speech_tokens"):
        task.check_tokenizer(tokenizer)
    extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=16))
    with pytest.raises(DataError, match=r"t\.jsonl, line 2 \(id 'b'\): speech token 20 is beyond the model's 16"):
        task.check_tokenizer(tokenizer)


def test_scores_count_missing_and_malformed_answers_as_wrong():
    task = get_task("speech_tokens")
    examples = [Example(key, None, "", "Q", "", json.dumps(ref)) for key, ref in [
        ("a", {"text": "Paris is big.", "speech_tokens": [1, 2, 3, 4]}),
        ("b", {"text": "Yes.", "speech_tokens": [5, 6]}),
        ("c", {"text": "No.", "speech_tokens": [7, 8]})]]
    predictions = {
        "a": task.official_prediction(examples[0], task.parse(speech_answer("Paris is small.", [1, 2, 4]))),
        "b": task.official_prediction(examples[1], task.parse("Yes.\n<|speech_start|><|s_5|><|s_6|>")),
    }
    metrics = task.score(examples, predictions)
    assert metrics["num_items"] == 3 and metrics["num_missing_predictions"] == 1
    assert metrics["well_formed_rate"] == pytest.approx(1 / 3)  # b has no end marker, c no output
    assert metrics["text_exact_match"] == pytest.approx(1 / 3)  # b's text is right
    assert metrics["text_wer"] == pytest.approx((1 + 0 + 1) / (3 + 1 + 1))  # one substitution, c deleted
    assert metrics["speech_token_error_rate"] == pytest.approx((1 + 0 + 2) / 8)  # a: one deletion
    assert metrics["speech_length_ratio"] == pytest.approx((3 + 2 + 0) / 8)
    skipped = task.score(examples, predictions, skip_missing=True)
    assert skipped["num_items"] == 2 and skipped["speech_token_error_rate"] == pytest.approx(1 / 6)


# ---------------------------------------------------------------------------------------------- end to end


def test_generated_ids_read_back_relative_to_the_offset(tiny_qwen3):
    """What generation decodes (special tokens skipped) parses to CosyVoice's own ids."""
    model, tokenizer = load(tiny_qwen3)
    vocabulary = extend_speech_vocabulary(model, tokenizer, ModelArguments(num_speech_tokens=4096))
    new_tokens = tokenizer("Paris.\n", add_special_tokens=False)["input_ids"] + [
        vocabulary.start_id, vocabulary.offset + 17, vocabulary.offset, vocabulary.offset + 4095, vocabulary.end_id,
        tokenizer.convert_tokens_to_ids("<|im_end|>")]
    text = tokenizer.batch_decode([new_tokens], skip_special_tokens=True)[0]
    assert get_task("speech_tokens").parse(text) == {"text": "Paris.", "speech_tokens": [17, 0, 4095],
                                                     "valid": True}


def test_sft_saves_an_extended_model_that_answers(tmp_path):
    model_args, task_args, training_args = recipe("speech_tokens", tmp_path, "--max_steps", "3",
                                                  "--eval_strategy", "no")
    metrics = run_sft(model_args, task_args, training_args, recipe_path="recipes/tiny/speech_tokens.yaml")
    assert metrics["train_loss"] > 0
    output = Path(training_args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output)
    vocabulary = SpeechVocabulary.of(tokenizer)
    assert vocabulary.num_speech_tokens == 4096 and json.loads((output / "config.json").read_text())["vocab_size"] == 6208
    rows = answer_prompts(ModelArguments(model_name_or_path=str(output)),
                          TaskArguments(task="speech_tokens", enable_thinking=False), EvalArguments(max_new_tokens=8),
                          ["What is two plus two?", "What day comes after monday?"])
    assert [row["id"] for row in rows] == ["0", "1"]
    for row in rows:
        assert set(row["prediction"]) >= {"text", "speech_tokens", "valid"}
        assert row["prediction"] == get_task("speech_tokens").parse(row["raw_output"])


def test_score_files_reads_gold_chat_rows_and_prediction_rows(tmp_path):
    gold = write_chat_rows(tmp_path / "gold.jsonl", [chat("a", "Q?", speech_answer("Yes.", [1, 2])),
                                                     chat("b", "Q?", speech_answer("No.", [3]))])
    predictions = write_chat_rows(tmp_path / "pred.jsonl", [
        {"id": "a", "text": "Yes.", "speech_tokens": [1, 2], "valid": True}])
    metrics = get_task("speech_tokens").score_files(Path(gold), Path(predictions))
    assert (metrics["num_items"], metrics["well_formed_rate"], metrics["speech_token_error_rate"]) == (2, 0.5, 1 / 3)
