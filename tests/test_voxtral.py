"""Voxtral (Mistral): the tiny checkpoint and its tekken tokenizer, prompts through mistral_common as the processor
encodes them, loss masks token by token, LoRA on the language model only, SFT, evaluation through
scripts/evaluate.py (the released architecture on the meta device: tests/test_real_shapes.py).

Loss masks on the other families' layouts, batched generation, 4-bit loading and GRPO run Voxtral too, in
tests/test_collators.py, test_evaluation.py, test_training.py and test_grpo.py."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from peft import get_peft_model

from audio_recipes.collators import IGNORE_INDEX, AudioChatCollator, AudioOptions
from audio_recipes.config import ModelArguments
from audio_recipes.models import family_for_model_type, load_processor, lora_config, model_class_for
from audio_recipes.models.voxtral import (
    system_into_user_turn,
)
from audio_recipes.testing import tiny_voxtral
from audio_recipes.testing.tiny_models import TINY_MODEL_BUILDERS, ensure_tiny_model, smoke_check

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
BOS, EOS, INST, END_INST, PAD, SYSTEM_START, SYSTEM_END, AUDIO, BEGIN_AUDIO = 1, 2, 3, 4, 11, 17, 18, 24, 25
SYSTEM = "You are a spoken language understanding system."
COMPLETION = '{"scenario": "alarm", "action": "set", "entities": [{"time": "eight am"}]}'


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return ensure_tiny_model("voxtral")


@pytest.fixture(scope="module")
def processor(model_dir):
    return load_processor(str(model_dir), model_type="voxtral")


def sine(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def text_ids(processor, text: str) -> list[int]:
    return processor.tokenizer.encode(text, add_special_tokens=False)


def example(id_, audio, prompt, completion=COMPLETION):
    return {"id": id_, "audio": audio, "system": SYSTEM, "prompt": prompt, "completion": completion}


# ---------------------------------------------------------------- 1. the tiny checkpoint


def test_builder_is_registered_and_builds_are_bit_identical(model_dir, tmp_path):
    assert TINY_MODEL_BUILDERS.get("voxtral") is tiny_voxtral.build_tiny_voxtral
    assert family_for_model_type("voxtral").tiny_model == "voxtral"
    again = tiny_voxtral.build_tiny_voxtral(tmp_path / "voxtral")
    built = sorted(p.name for p in model_dir.iterdir() if p.name != "tiny_model_build.json")
    assert built == sorted(p.name for p in again.iterdir())
    for file in built:
        assert (model_dir / file).read_bytes() == (again / file).read_bytes(), f"{file} differs between builds"


def test_checkpoint_is_laid_out_as_the_hubs(model_dir):
    assert sorted(p.name for p in model_dir.iterdir() if p.name != "tiny_model_build.json") == [
        "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json", "tekken.json"]
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["audio_token_id"]) == (
        "voxtral", ["VoxtralForConditionalGeneration"], AUDIO)
    text, audio = config["text_config"], config["audio_config"]
    assert (text["model_type"], text["tie_word_embeddings"], text["rope_parameters"]["rope_theta"]) == ("llama", False, 1e8)
    assert audio["intermediate_size"] == 4 * audio["hidden_size"]  # 4 frames per audio token, as 5120 = 4 x 1280
    assert audio["max_source_positions"] == 1500 and audio["num_mel_bins"] == 128
    preprocessor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert preprocessor["processor_class"] == "VoxtralProcessor"
    assert (preprocessor["feature_extractor_type"], preprocessor["feature_size"], preprocessor["nb_max_frames"]) == (
        "WhisperFeatureExtractor", 128, 3000)
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (BOS, EOS, PAD)


def test_tekken_has_voxtrals_control_tokens_at_their_ids_and_text_after_them(model_dir, processor):
    tekken = json.loads((model_dir / "tekken.json").read_text())
    assert tekken["config"]["version"] == "v7" and tekken["config"]["default_num_special_tokens"] == 1000
    assert tekken["audio"]["frame_rate"] == 12.5 and tekken["audio"]["chunk_length_s"] == 30.0
    # Tekken's own split pattern, as mistral_common ships it with its tokenizers
    import mistral_common

    shipped = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    assert tekken["config"]["pattern"] == json.loads(shipped.read_text())["config"]["pattern"]
    tokenizer = processor.tokenizer
    named = {"<unk>": 0, "<s>": BOS, "</s>": EOS, "[INST]": INST, "[/INST]": END_INST, "<pad>": PAD,
             "[SYSTEM_PROMPT]": SYSTEM_START, "[/SYSTEM_PROMPT]": SYSTEM_END, "[AUDIO]": AUDIO,
             "[BEGIN_AUDIO]": BEGIN_AUDIO, "[TRANSCRIBE]": 34}
    assert tokenizer.convert_tokens_to_ids(list(named)) == list(named.values())
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, PAD)
    assert processor.audio_token_id == AUDIO
    ids = text_ids(processor, "set an alarm for eight am")
    assert min(ids) >= 1000 and tokenizer.decode(ids) == "set an alarm for eight am"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == len(tokenizer) == 1000 + tiny_voxtral.BPE_RANKS


def test_smoke_check_loads_processes_forwards_and_generates(model_dir):
    figures = smoke_check(model_dir)
    assert figures["audio_token_id"] == AUDIO and figures["num_audio_tokens"] == 375
    assert np.isfinite(figures["loss"]) and len(figures["new_tokens"]) == 5


# ---------------------------------------------------------------- 2. prompts as the processor encodes them


@pytest.mark.parametrize("seconds", [1.0, 31.0])
def test_collated_prompt_is_the_processors_own_encoding(processor, tmp_path, seconds):
    """The collator (clips read once by the project, then mistral_common) gives the ids and features that
    VoxtralProcessor.apply_chat_template gives from the file: 375 [AUDIO] per started 30 s, one feature row each."""
    path = tmp_path / "clip.wav"
    sf.write(path, sine(seconds), SR, subtype="PCM_16")
    own = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "audio", "path": str(path)}, {"type": "text", "text": "What is this?"}]}])
    collator = AudioChatCollator(processor, with_completion=False, padding_side="left",
                                 audio_options=AudioOptions(max_seconds=60.0))
    batch = collator([{"id": "a", "audio": str(path), "system": "", "prompt": "What is this?", "completion": ""}])
    assert batch["input_ids"].tolist() == own["input_ids"].tolist()
    assert torch.equal(batch["input_features"], own["input_features"])
    chunks = int(np.ceil(seconds / 30))
    assert batch["input_features"].shape == (chunks, 128, 3000)
    assert batch["input_ids"][0].tolist().count(AUDIO) == 375 * chunks == collator.audio_token_count(int(seconds * SR))


@pytest.mark.parametrize("seconds, tokens", [(0.5, 375), (29.99, 375), (30.0, 375), (30.01, 750), (61.0, 1125)])
def test_placeholder_rule_is_375_per_started_30_seconds(processor, seconds, tokens):
    samples = int(round(seconds * SR))
    assert family_for_model_type("voxtral").placeholder_count(processor, samples) == tokens
    ids, features = family_for_model_type("voxtral").chat_encoder.encode_prompts(
        processor, [[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "x"}]}]],
        [np.zeros(samples, dtype=np.float32)])
    assert ids[0].count(AUDIO) == tokens and features["input_features"].shape[0] == tokens // 375


def test_system_text_leads_the_user_text_beside_audio_and_keeps_its_turn_without(processor):
    """mistral_common refuses a system prompt beside audio before tokenizer v13 (Voxtral's is v7)."""
    audio_chat = [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": "Q?"}]}]
    assert system_into_user_turn(audio_chat) == [
        {"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": "Be brief.\n\nQ?"}]}]
    text_chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    assert system_into_user_turn(text_chat) == text_chat
    encoder = family_for_model_type("voxtral").chat_encoder
    ids, _ = encoder.encode_prompts(processor, [audio_chat, text_chat], [sine(1.0), None], features=False)
    assert ids[0] == [BOS, INST, BEGIN_AUDIO, *[AUDIO] * 375, *text_ids(processor, "Be brief.\n\nQ?"), END_INST]
    assert ids[1] == [BOS, SYSTEM_START, *text_ids(processor, "Be brief."), SYSTEM_END, INST,
                      *text_ids(processor, "Q?"), END_INST]


def test_answer_ids_are_mistral_commons_assistant_turn(processor, model_dir):
    """Prompt + answer as the collator joins them = mistral_common's own encoding of the whole conversation."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    finetuning = MistralTokenizer.from_file(str(model_dir / "tekken.json"), mode=ValidationMode.finetuning)
    for answer in (COMPLETION, "B  ", "déjà vu\n"):
        whole = finetuning.encode_chat_completion(ChatCompletionRequest(messages=[
            SystemMessage(content=SYSTEM), UserMessage(content="Command: hi"), AssistantMessage(content=answer)]))
        collator = AudioChatCollator(processor)
        batch = collator([{"id": "t", "audio": None, "system": SYSTEM, "prompt": "Command: hi", "completion": answer}])
        assert batch["input_ids"][0].tolist() == whole.tokens


# ---------------------------------------------------------------- 3. loss masks, token by token


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    sf.write(folder / "two_seconds.flac", 0.1 * rng.standard_normal((88200, 2)), 44100)
    sf.write(folder / "one_second.wav", 0.1 * rng.standard_normal(16000), 16000)
    return {"long": str(folder / "two_seconds.flac"), "short": str(folder / "one_second.wav")}


def expected_prompt(processor, prompt: str, with_audio: bool) -> list[int]:
    if with_audio:  # the system text leads the user's text
        return [BOS, INST, BEGIN_AUDIO, *[AUDIO] * 375, *text_ids(processor, f"{SYSTEM}\n\n{prompt}"), END_INST]
    return [BOS, SYSTEM_START, *text_ids(processor, SYSTEM), SYSTEM_END, INST, *text_ids(processor, prompt), END_INST]


def check_row(processor, batch, row, prompt_ids, completion, padding_side):
    ids, attention, labels = (batch[key][row].tolist() for key in ("input_ids", "attention_mask", "labels"))
    answer = text_ids(processor, completion) + [EOS]
    real, pad = prompt_ids + answer, len(ids) - len(prompt_ids) - len(answer)
    loss = [IGNORE_INDEX] * len(prompt_ids) + answer
    if padding_side == "right":
        assert ids == real + [PAD] * pad and labels == loss + [IGNORE_INDEX] * pad
        assert attention == [1] * len(real) + [0] * pad
    else:
        assert ids == [PAD] * pad + real and labels == [IGNORE_INDEX] * pad + loss
        assert attention == [0] * pad + [1] * len(real)
    kept = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(kept, skip_special_tokens=False) == completion + "</s>"
    assert not {AUDIO, BEGIN_AUDIO} & set(kept)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_audio_text_and_mixed_batches_mask_all_but_the_answer_and_its_eos(processor, clips, padding_side):
    collator = AudioChatCollator(processor, padding_side=padding_side)
    rows = [example("a", clips["long"], "What is said?"), example("t", None, "Command: stop", '{"a": "b"}'),
            example("b", clips["short"], "And here?", "B")]
    batch = collator(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "input_features"}
    for index, row in enumerate(rows):
        check_row(processor, batch, index, expected_prompt(processor, row["prompt"], bool(row["audio"])),
                  row["completion"], padding_side)
    assert batch["input_features"].shape == (2, 128, 3000)  # one 30 s chunk for each clip, none for the text row
    assert collator.stats.loaded == 2


def test_example_length_matches_the_collated_length_without_decoding(processor, clips, monkeypatch):
    from audio_recipes.audio import loading as audio_loading

    collator = AudioChatCollator(processor)
    rows = [example("a", clips["long"], "What is said?"), example("t", None, "Command: play some jazz")]
    expected = [collator([row])["input_ids"].shape[1] for row in rows]
    monkeypatch.setattr(audio_loading.sf, "read", lambda *a, **k: pytest.fail("length estimation decoded a clip"))
    assert [collator.example_length(row) for row in rows] == expected


def test_text_only_batch_gets_a_masked_silent_clip_when_asked(processor):
    rows = [example("t1", None, "Command: wake me at eight"), example("t2", None, "Command: hi", '{"a": "b"}')]
    collator = AudioChatCollator(processor, silent_clip_for_text_batches=True)
    batch = collator(rows)
    clip = [BOS, INST, BEGIN_AUDIO, *[AUDIO] * 375, END_INST]
    ids, attention, labels = (batch[key][0].tolist() for key in ("input_ids", "attention_mask", "labels"))
    assert ids[-len(clip):] == clip and attention[-len(clip):] == [0] * len(clip)
    assert labels[-len(clip):] == [IGNORE_INDEX] * len(clip)
    assert batch["input_features"].shape == (1, 128, 3000) and collator.silent_clip_batches == 1
    model = model_class_for("voxtral").from_pretrained(ensure_tiny_model("voxtral")).eval()
    with torch.no_grad():  # the clip runs through the encoder and changes no loss
        plain = AudioChatCollator(processor)(rows)
        assert torch.allclose(model(**batch).loss, model(**plain).loss, atol=1e-5)


# ---------------------------------------------------------------- 4. LoRA on the language model only


@pytest.mark.parametrize("preset", ["attention", "attention_mlp"])
def test_lora_presets_reach_the_language_model_only(model_dir, preset):
    model = model_class_for("voxtral").from_pretrained(model_dir)
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset=preset, lora_dropout=0.0), model)
    wrapped = get_peft_model(model, config)
    modules = {n.split(".lora_")[0] for n, _ in wrapped.named_parameters() if ".lora_" in n}
    attention, mlp = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
    projections = attention + (mlp if preset == "attention_mlp" else ())
    prefix = "base_model.model.model.language_model.layers"
    assert modules == {f"{prefix}.{layer}.{'self_attn' if p in attention else 'mlp'}.{p}"
                       for layer in range(2) for p in projections}
    # the encoder's own q/k/v projections and the projector stay as they were
    assert not [n for n, _ in wrapped.named_parameters() if ".lora_" in n and ("audio_tower" in n or "projector" in n)]
    with pytest.raises(ValueError, match="no MoE"):
        lora_config(ModelArguments(use_peft=True, lora_target_preset="attention_experts", lora_dropout=0.0), model)


# ---------------------------------------------------------------- 5. SFT and evaluation


# SFT (the loss sees the audio and falls, frozen parts stay): tests/test_family_sft.py


def run_evaluate(args: list[str], monkeypatch, capsys) -> dict:
    """scripts/evaluate.py as a user runs it (in this process); its metrics line."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args])
    runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_tiny_recipe_evaluates_an_adapter_merged_or_not_with_the_same_answers(model_dir, tmp_path, monkeypatch,
                                                                             capsys):
    base = model_class_for("voxtral").from_pretrained(model_dir)
    config = lora_config(ModelArguments(use_peft=True, lora_target_preset="attention_mlp", lora_dropout=0.0,
                                        lora_r=4), base)
    config.init_lora_weights = False  # random A and B, so that the adapter changes the outputs
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    outputs = {}
    for merge in ("false", "true"):
        metrics = run_evaluate([str(ROOT / "recipes" / "tiny" / "mmar_voxtral.yaml"), "--model_name_or_path",
                                str(tmp_path / "adapter"), "--output_dir", str(tmp_path / f"merge-{merge}"),
                                "--max_eval_samples", "3", "--max_new_tokens", "8", "--merge_adapter", merge],
                               monkeypatch, capsys)
        assert metrics["num_gold"] == 3 and metrics["num_missing"] == 0
        rows = [json.loads(line) for line in (tmp_path / f"merge-{merge}" / "raw_outputs.jsonl").open()]
        outputs[merge] = [row["raw_output"] for row in rows]
    assert len(outputs["true"]) == 3 and outputs["true"] == outputs["false"]
