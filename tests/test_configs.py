import subprocess
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig, SFTConfig

from audio_recipes.config import EvalArguments, ModelArguments, RestArguments, RewardArguments, TaskArguments
from audio_recipes.errors import RecipeError
from audio_recipes.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TYPES = (ModelArguments, TaskArguments, SFTConfig)


def write_recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_recipe_values_and_overrides(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: m\nlearning_rate: 1.0e-5\ninput_mode: audio\n"
                                    "lora_target_modules: [q_proj, v_proj]\nbf16: false\nuse_cpu: true\n"
                                    f"output_dir: {tmp_path}/out\n")
    model_args, task_args, training_args = parse_recipe(TYPES, [recipe, "--learning_rate", "3e-4",
                                                                "--input_mode", "text"])
    assert model_args.model_name_or_path == "m"
    assert model_args.lora_target_modules == ["q_proj", "v_proj"]
    assert training_args.learning_rate == pytest.approx(3e-4)
    assert task_args.input_mode == "text"
    assert training_args.bf16 is False


def test_unknown_recipe_key_names_key_and_closest(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: m\nlearnig_rate: 1.0e-5\n")
    with pytest.raises(RecipeError, match=r"unknown option 'learnig_rate' in recipe .*did you mean 'learning_rate'"):
        parse_recipe(TYPES, [recipe])


def test_unknown_command_line_key(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: m\n")
    with pytest.raises(RecipeError, match=r"unknown option 'input_mod' on the command line.*'input_mode'"):
        parse_recipe(TYPES, [recipe, "--input_mod", "text"])
    with pytest.raises(RecipeError, match="unknown option 'max_new_token'"):
        parse_recipe(TYPES + (EvalArguments,), [recipe, "--max_new_token=3"])


def test_a_key_set_twice_in_a_recipe_is_refused_naming_key_and_lines(tmp_path):
    # PyYAML keeps the later value: the run would train at 1e-3 with nothing said
    recipe = write_recipe(tmp_path, "model_name_or_path: m\nlearning_rate: 1.0e-5\nlora_r: 8\nlearning_rate: 1.0e-3\n")
    with pytest.raises(RecipeError, match=r"recipe .*recipe\.yaml: key 'learning_rate' is set twice, on lines 2 and 4"):
        parse_recipe(TYPES, [recipe])
    # Inside a nested mapping (a source) too; a YAML merge key overridden on purpose is not a duplicate
    nested = write_recipe(tmp_path, "model_name_or_path: m\nsources:\n  - {task: slurp, task: mmar}\n")
    with pytest.raises(RecipeError, match=r"key 'task' is set twice, on lines 3 and 3"):
        parse_recipe(TYPES, [nested])
    from audio_recipes.recipe import load_recipe

    merged = write_recipe(tmp_path, "base: &base {lora_r: 8, lora_alpha: 16}\nother:\n  <<: *base\n  lora_r: 4\n")
    assert load_recipe(merged)["other"] == {"lora_r": 4, "lora_alpha": 16}


def test_recipe_must_come_first_and_exist(tmp_path):
    with pytest.raises(RecipeError, match="no recipe: give it first"):
        parse_recipe(TYPES, ["--learning_rate", "1"])
    with pytest.raises(RecipeError, match="recipe file not found"):
        parse_recipe(TYPES, [str(tmp_path / "nope.yaml")])


def test_every_shipped_recipe_parses():
    recipes = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert len(recipes) >= 10
    for recipe in recipes:
        if recipe.parent.name == "grids":  # grid files, run by scripts/grid.py: tests/test_grid.py checks them
            continue
        # Each recipe parses with the dataclasses of the script that runs it
        if "grpo" in recipe.stem:
            types = (ModelArguments, TaskArguments, RewardArguments, GRPOConfig)
        elif "rest" in recipe.stem:
            types = TYPES + (EvalArguments, RewardArguments, RestArguments)
        else:
            types = TYPES + (EvalArguments,)
        # GPU recipes ask for bf16, which TrainingArguments refuses on a machine without a GPU
        parse_recipe(types, [str(recipe), "--bf16", "false"])


def test_sft_script_fails_on_unknown_key_before_loading_a_model(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: Qwen/does-not-exist\nlerning_rate: 1\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "sft.py"), recipe],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown option 'lerning_rate'" in result.stderr
    assert "did you mean 'learning_rate'" in result.stderr


def test_every_accelerate_config_loads_and_names_an_existing_deepspeed_config():
    import json

    from accelerate.commands.config.config_args import load_config_from_file

    configs = {path.name: path for path in (ROOT / "accelerate_configs").glob("*.yaml")}
    assert {"single_gpu.yaml", "ddp.yaml", "zero2.yaml", "zero3.yaml", "zero3_multinode.yaml",
            "cpu_ddp.yaml"} <= set(configs)
    for name, path in configs.items():
        config = load_config_from_file(str(path))  # accelerate's own reader: unknown keys fail
        assert config.mixed_precision in (None, "no"), f"{name}: precision comes from the recipe"
        deepspeed_file = config.deepspeed_config.get("deepspeed_config_file")
        if name.startswith("zero"):
            deepspeed = json.loads((ROOT / deepspeed_file).read_text())
            assert deepspeed["zero_optimization"]["stage"] == int(name[4])
            assert deepspeed["bf16"]["enabled"] == "auto"
    zero3 = load_config_from_file(str(configs["zero3.yaml"]))
    assert zero3.deepspeed_config["zero3_init_flag"] is True
    settings = json.loads((ROOT / zero3.deepspeed_config["deepspeed_config_file"]).read_text())["zero_optimization"]
    assert settings["stage3_gather_16bit_weights_on_model_save"] is True
    multinode = load_config_from_file(str(configs["zero3_multinode.yaml"]))
    assert multinode.num_machines > 1 and multinode.deepspeed_config == zero3.deepspeed_config


# ---------------------------------------------------------------- values checked when the recipe is parsed

EVAL_TYPES = TYPES + (EvalArguments,)
CPU = "model_name_or_path: m\nbf16: false\nuse_cpu: true\n"


@pytest.mark.parametrize("line, message", [
    # Types: whatever YAML reads, as strictly as the command line's own checks
    ("num_train_epochs: [1, 2]", r"num_train_epochs in recipe .*: expected a number, got \[1, 2\]"),
    ("per_device_train_batch_size: 8.5", r"per_device_train_batch_size .*: expected an integer, got 8\.5"),
    ("max_new_tokens: {a: 1}", r"max_new_tokens .*: expected an integer, got \{'a': 1\}"),
    ("task: null", r"task .*: expected a string, got null"),
    ("num_train_epochs: true", r"num_train_epochs .*: expected a number, got true"),
    ("save_strategy: no", r"save_strategy .*: expected one of 'no', .*got false \(YAML reads yes/no"),
    ("lr_scheduler_type: cosine_decay", r"lr_scheduler_type .*: expected one of 'linear', .*got 'cosine_decay'"),
    ("lora_target_modules: {q: 1}", r"lora_target_modules .*: expected .*a list .*got \{'q': 1\}"),
    # Ranges
    ("learning_rate: -1.0", r"learning_rate .*: expected a number >= 0, got -1\.0"),
    ("per_device_train_batch_size: -2", r"per_device_train_batch_size .*: expected an integer >= 1, got -2"),
    ("per_device_eval_batch_size: 0", r"per_device_eval_batch_size .*: expected an integer >= 1, got 0"),
    ("num_train_epochs: -1", r"num_train_epochs .*: expected a number > 0, got -1"),
    ("max_audio_seconds: 0", r"max_audio_seconds .*: expected a number > 0, got 0"),
    ("max_audio_seconds: -3", r"max_audio_seconds .*: expected a number > 0, got -3"),
    ("text_only_fraction: 1.5", r"text_only_fraction .*: expected a number in \[0, 1\], got 1\.5"),
    ("text_only_fraction: -0.1", r"text_only_fraction .*: expected a number in \[0, 1\], got -0\.1"),
    ("lora_dropout: 1.0", r"lora_dropout .*: expected a number in \[0, 1\), got 1\.0"),
    ("top_p: 0", r"top_p .*: expected a number in \(0, 1\], got 0"),
    ("max_new_tokens: 0", r"max_new_tokens .*: expected an integer >= 1, got 0"),
    # Allowed values, from where each is defined
    ("task: slrup", r"task .*: expected one of .*'slurp'.* \(the registered tasks\), got 'slrup'; did you mean 'slurp'"),
    ("on_too_long: cut", r"on_too_long .*: expected one of 'crop', 'reject', got 'cut'"),
    ("decoding: greedy", r"decoding .*: expected one of 'generate', 'scoring', 'constrained', got 'greedy'"),
    ("lora_target_preset: attn", r"lora_target_preset .*: expected one of 'attention', .*got 'attn'"),
    ("speech_embedding_init: zeros", r"speech_embedding_init .*: expected one of 'mean', 'normal', 'copy', got 'zeros'"),
    ("split: dev", r"split .*: expected one of 'train', 'eval', 'test', got 'dev'"),
    ("task: speech_detection\nbaseline: silero", r"baseline .*: expected one of 'silero_vad' \(the baselines of task "
                                                 r"speech_detection\), got 'silero'; did you mean 'silero_vad'"),
    ("baseline: silero_vad", r"baseline .*: none is allowed \(task slurp has no baselines\), got 'silero_vad'"),
    # The task decides its input modes
    ("task: mmar\ninput_mode: txt", r"input_mode .*: expected one of 'audio', 'text' \(the input modes of task "
                                    r"mmar\), got 'txt'; did you mean 'text'"),
    ("task: mmau\ninput_mode: audio_transcript", r"input_mode .*\(the input modes of task mmau\), got 'audio_transcript'"),
    ("task: speech_detection\ninput_mode: text", r"input_mode .*: expected one of 'audio' \(the input modes of task "
                                                 r"speech_detection\), got 'text'"),
    ("task: slurp\ninput_mode: txt", r"input_mode .*'audio', 'audio_transcript', 'text'.*got 'txt'"),
    ("task: speech_detection\ntext_only_fraction: 0.5", r"text_only_fraction 0\.5 .* needs a task with a 'text' input"),
    ("task: slurp\ninput_mode: text\ntext_only_fraction: 0.5", r"text_only_fraction 0\.5 .*input_mode is 'text'"),
])
def test_a_bad_recipe_value_fails_at_parse_time_naming_key_and_value(tmp_path, line, message):
    recipe = write_recipe(tmp_path, CPU + line + "\n")
    with pytest.raises(RecipeError, match=message):
        parse_recipe(EVAL_TYPES, [recipe])


@pytest.mark.parametrize("args, message", [
    (["--max_audio_seconds", "0"], r"max_audio_seconds on the command line: expected a number > 0, got 0"),
    (["--learning_rate", "-1"], r"learning_rate on the command line: expected a number >= 0, got -1"),
    (["--per_device_train_batch_size", "8.5"], r"per_device_train_batch_size.*invalid int value: '8\.5'"),
    (["--num_train_epochs", "[1,2]"], r"num_train_epochs.*invalid float value"),
    (["--task", "mmar", "--input_mode", "txt"], r"input_mode on the command line: .*task mmar.*got 'txt'"),
    (["--input_mode", "txt"], r"input_mode on the command line: .*got 'txt'"),  # slurp, from the recipe
    (["--decoding", "beam"], r"decoding on the command line: expected one of 'generate'"),
    (["--on_too_long", "cut"], r"on_too_long on the command line: expected one of 'crop', 'reject'"),
    (["--task", "nope"], r"task on the command line: expected one of .*got 'nope'"),
    (["surplus"], r"unrecognized arguments: surplus"),
])
def test_a_bad_command_line_value_fails_at_parse_time_naming_key_and_value(tmp_path, args, message):
    recipe = write_recipe(tmp_path, CPU + "task: slurp\n")
    with pytest.raises(RecipeError, match=message):
        parse_recipe(EVAL_TYPES, [recipe, *args])


def test_reinforcement_options_are_checked_too(tmp_path):
    recipe = write_recipe(tmp_path, CPU + "task: mmar\nreward_funcs: [choice_accuracy, answer_fromat]\n")
    with pytest.raises(RecipeError, match=r"reward_funcs .*registered reward functions\), got 'answer_fromat'; did you"):
        parse_recipe(TYPES + (RewardArguments,), [recipe])
    recipe = write_recipe(tmp_path, CPU + "task: mmar\n")
    types = TYPES + (EvalArguments, RewardArguments, RestArguments)
    for args, message in ((["--heldout_split", "validation"], "heldout_split on the command line: expected one of"),
                          (["--samples_per_question", "0"], "samples_per_question .*>= 1, got 0"),
                          (["--iteration_learning_rates", "1e-5", "-0.5"], "iteration_learning_rates .*>= 0")):
        with pytest.raises(RecipeError, match=message):
            parse_recipe(types, [recipe, *args])


def test_an_empty_recipe_is_an_error_naming_it(tmp_path):
    for text in ("", "# only a comment\n", "{}\n"):
        recipe = write_recipe(tmp_path, text)
        with pytest.raises(RecipeError, match=r"recipe .*recipe\.yaml is empty"):
            parse_recipe(EVAL_TYPES, [recipe])


def test_recipe_strings_are_converted_as_the_command_line_converts_them(tmp_path):
    # PyYAML reads 1e-5 (no dot) as a string; the command line's float() reads it as a number
    recipe = write_recipe(tmp_path, CPU + "learning_rate: 1e-5\nmax_audio_seconds: '12'\npeak_normalize: 'yes'\n"
                                          "reward_funcs: choice_accuracy\n")
    _, task_args, training_args, reward_args = parse_recipe(TYPES + (RewardArguments,), [recipe])
    assert training_args.learning_rate == pytest.approx(1e-5)
    assert task_args.max_audio_seconds == 12.0 and task_args.peak_normalize is True
    assert reward_args.reward_funcs == ["choice_accuracy"]  # one name: a list of one, as --reward_funcs gives


def test_unset_input_mode_is_the_tasks_first(tmp_path):
    for task, mode in (("slurp", "audio"), ("mmar", "audio"), ("speech_tokens", "text")):
        _, task_args, _ = parse_recipe(TYPES, [write_recipe(tmp_path, CPU + f"task: {task}\n")])
        assert task_args.input_mode == mode
    from audio_recipes.tasks import get_task

    assert get_task("speech_tokens").args.input_mode == "text"
    with pytest.raises(ValueError, match="task speech_detection has no input_mode 'text'"):
        get_task("speech_detection", TaskArguments(task="speech_detection", input_mode="text"))


def test_config_flag_reads_the_recipe_as_trl_does(tmp_path):
    recipe = write_recipe(tmp_path, CPU + "learning_rate: 0.5\ninput_mode: text\n")
    positional = parse_recipe(TYPES, [recipe, "--seed", "3"], return_recipe_path=True)
    flagged = parse_recipe(TYPES, ["--config", recipe, "--seed", "3"], return_recipe_path=True)
    assert positional[2].learning_rate == flagged[2].learning_rate == 0.5
    assert positional[1].input_mode == flagged[1].input_mode == "text"
    assert positional[2].seed == flagged[2].seed == 3
    assert positional[-1] == flagged[-1] == recipe
    with pytest.raises(RecipeError, match="two recipes"):
        parse_recipe(TYPES, [recipe, "--config", recipe])
    # --config's recipe is checked like the positional one
    bad = write_recipe(tmp_path, CPU + "max_audio_seconds: 0\n")
    with pytest.raises(RecipeError, match="max_audio_seconds in recipe"):
        parse_recipe(EVAL_TYPES, ["--config", bad])


def test_help_shows_recipe_usage_with_or_without_a_recipe(tmp_path, capsys):
    recipe = write_recipe(tmp_path, CPU + "learning_rate: 0.123\n")
    for argv in (["--help"], ["-h"], [recipe, "--help"], [str(tmp_path / "absent.yaml"), "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_recipe(EVAL_TYPES, argv, description="The script's own words.")
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: ") and "RECIPE.yaml [--key value ...]" in out.splitlines()[0]
        assert "--config RECIPE" in out and "The script's own words." in out and "--max_audio_seconds" in out
        # With a recipe, its values are the defaults shown
        assert ("(default: 0.123)" in out) == (argv[0] == recipe)
