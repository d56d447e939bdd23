"""Every recipe option, as dataclasses on top of TRL's (each field with its help string); audio_recipes.recipe
parses a recipe into them."""

from __future__ import annotations

from dataclasses import dataclass, field

# Re-exported: the scripts import TRL's configs from here, so that audio_recipes (and its library_noise filters)
# is imported before TRL
from trl import GRPOConfig as GRPOConfig
from trl import ModelConfig
from trl import SFTConfig as SFTConfig


@dataclass
class ModelArguments(ModelConfig):
    """TRL's model options, plus what audio models need."""

    processor_name_or_path: str | None = field(
        default=None, metadata={"help": "Processor to load; defaults to the model (or the adapter's base model)."}
    )
    freeze_audio_encoder: bool = field(
        default=True, metadata={"help": "Keep the audio encoder's weights fixed during training."}
    )
    freeze_projector: bool = field(
        default=True, metadata={"help": "Keep the audio-to-text projector's weights fixed during training."}
    )
    lora_target_preset: str | None = field(
        default=None,
        metadata={
            "help": "LoRA targets on the language model only: 'attention' (q/k/v/o), 'attention_mlp' "
            "(adds gate/up/down). Overrides lora_target_modules."
        },
    )
    num_speech_tokens: int = field(
        default=0,
        metadata={
            "help": "Extend the vocabulary with speech tokens <|s_0|>..<|s_N-1|> and the <|speech_start|> / "
            "<|speech_end|> markers, after the text vocabulary (CosyVoice v1: 4096). 0 adds none; a model "
            "that already has them keeps its own."
        },
    )
    speech_embedding_init: str = field(
        default="mean",
        metadata={
            "help": "Initial rows of the added tokens (input embedding and output head): 'mean' (mean of the "
            "text rows plus small noise), 'normal' (N(0, initializer_range)) or 'copy' (from "
            "speech_embedding_source, a model that has the same tokens: warm start)."
        },
    )
    speech_embedding_noise: float = field(
        default=0.01,
        metadata={"help": "With 'mean': noise standard deviation, as a fraction of the text rows' own."},
    )
    speech_embedding_source: str | None = field(
        default=None, metadata={"help": "With 'copy': the model (local path or Hub id) whose rows to copy."}
    )
    freeze_text_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Train only the added rows of the input embedding and output head; the text rows stay "
            "bit-identical (a gradient mask, and the rows restored after each optimiser step, since weight "
            "decay and momentum would move them)."
        },
    )


@dataclass
class TaskArguments:
    """Which task, which data, and how its inputs are built."""

    task: str = field(default="slurp", metadata={"help": "Registered task name (see audio_recipes.tasks)."})
    train_file: str | None = field(default=None, metadata={"help": "Training data file (task format)."})
    eval_file: str | None = field(default=None, metadata={"help": "Validation data file, evaluated during training."})
    test_file: str | None = field(default=None, metadata={"help": "Test data file, read by evaluate.py."})
    audio_dir: str | None = field(default=None, metadata={"help": "Folder holding the audio files the data names."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, read when no local file is given (needs the Hub)."}
    )
    test_dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id of the test split where it is published apart (Speech-MASSIVE's: "
                                "FBK-MT/Speech-MASSIVE-test); unset: dataset_name."}
    )
    locale: str | None = field(default=None, metadata={"help": "Locale for multilingual data (e.g. fr-FR)."})
    train_split: str = field(default="train", metadata={"help": "Split name of the training data."})
    eval_split: str = field(default="validation", metadata={"help": "Split name of the validation data."})
    test_split: str = field(default="test", metadata={"help": "Split name of the test data."})
    input_mode: str | None = field(
        default=None,
        metadata={"help": "What the model is given, among the task's input modes: 'audio', 'audio_transcript' (audio "
                  "plus transcript in the prompt) or 'text' (no audio). Unset: the task's first mode (audio, or text "
                  "for speech_tokens)."},
    )
    use_all_recordings: bool = field(
        default=False, metadata={"help": "SLURP: one example per recording, not just the lowest-WER one."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N rows of the evaluation and test data (evaluate.py, "
                                "evaluation during training)."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message; the task's default when unset."}
    )
    max_audio_seconds: float = field(
        default=30.0, metadata={"help": "Longest clip kept; the encoder window of Whisper-style encoders is 30 s."}
    )
    on_too_long: str = field(
        default="crop", metadata={"help": "A clip over max_audio_seconds: 'crop' (with a warning) or 'reject'."}
    )
    peak_normalize: bool = field(default=False, metadata={"help": "Scale each clip to a peak of 1.0."})
    allow_audio_outside_audio_dir: bool = field(
        default=False,
        metadata={"help": "Accept data rows whose audio path leaves audio_dir (`../`, absolute paths); refused by "
                  "default, since a data set comes from elsewhere."},
    )
    enable_thinking: bool | None = field(
        default=None,
        metadata={
            "help": "Chat templates with a thinking switch (Qwen3): false puts the empty <think></think> block "
            "of non-thinking answers in the prompt. Unset: the template's default."
        },
    )
    text_only_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Training only: add this fraction of the training rows again as text-only examples (the "
            "task's 'text' input mode: transcript, no audio), mixed with the audio rows."
        },
    )
    speech_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Training only: keep the audio (input_mode) of this fraction of the training sentences, chosen "
            "by seed and stratified by scenario (their ids in output_dir/speech_ids.json); the others become their "
            "gold transcript (input_mode 'text'), or are left out (speech_fraction_rest). 0: text only; 1: all audio; "
            "unset: every row in input_mode."
        },
    )
    speech_fraction_rest: str = field(
        default="text",
        metadata={"help": "With speech_fraction: what the sentences without speech become: 'text' (their gold "
                  "transcript) or 'drop' (left out: speech-only training on the chosen sentences)."},
    )
    sources: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Training only: a mixture of training data, one mapping per source: task options over the "
            "recipe's (task, train_file, train_split, locale, input_mode, audio_dir, speech_fraction, ...) and at "
            "most one of num_examples (how many of its examples) or fraction (which share of them), chosen by seed "
            "and stratified by scenario. The sources are shuffled together by the trainer's sampler. Unset: the "
            "recipe's own training data."
        },
    )
    curriculum: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Training stages that scripts/sft.py runs in order, each a mapping of recipe options over the "
            "recipe's (sources, speech_fraction, num_train_epochs, learning_rate, ...). Stage k trains in "
            "output_dir/stage_k from stage k-1's weights (the same LoRA adapter, or the saved model) with a fresh "
            "optimiser and schedule; finished stages are skipped on a rerun; the last stage's model is copied to "
            "output_dir."
        },
    )
    silent_clip_for_text_batches: bool | None = field(
        default=None,
        metadata={
            "help": "Give a batch without audio a masked 1 s silent clip so that the audio encoder runs on every "
            "rank in every step (ZeRO-3 and FSDP hang otherwise). Unset: on exactly when parameters are sharded."
        },
    )
    build_data_if_missing: bool = field(
        default=False,
        metadata={"help": "Build the task's small local data set when the data files are absent (tiny recipes)."},
    )
    rationale_prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "slurp_rationale: the prompt `prepare_data.py slurp_rationale --recipe RECIPE` gives a chat model "
            "to write each training row's rationale; fields {candidates} (the n-best list, numbered), {label} (the "
            "gold JSON), {scenario}, {action}, {entities}, {sentence} (the gold transcript). Not read in training."
        },
    )


@dataclass
class EvalArguments:
    """Options read by evaluate.py, and by sft.py for the generations it logs during training."""

    split: str = field(default="test", metadata={"help": "Which data to evaluate: 'test' or 'eval'."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated answer."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width; 1 is greedy."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy / beam search."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (with do_sample)."})
    resume: bool | None = field(
        default=None,
        metadata={"help": "Unset: continue an interrupted evaluation of the same run (model, data, decoding) in the "
                  "output folder, else start; true: the same, saying so; false: start over, discarding its rows."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace the outputs of another run (another model or decoding) in --output_dir; without "
                  "it, that is an error."},
    )
    decoding: str = field(
        default="generate",
        metadata={"help": "'generate' (free decoding, answer parsed), 'scoring' (one forward pass, softmax over the "
                  "labels' first tokens: label and confidence) or 'constrained' (decoding restricted to the labels)."},
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "A classic system run on the same items and reported beside the model ('silero_vad')."},
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Fold a LoRA adapter into the base weights before generating (merge_and_unload): faster "
                  "inference, same outputs; lossy on a 4-bit base. No effect on a model without an adapter."},
    )
    generation_log_steps: int = field(
        default=0,
        metadata={"help": "sft.py: every N optimizer steps, generate (with this block's decoding options) on "
                  "generation_log_samples fixed examples and write prompt, target and output to the log and to "
                  "<output_dir>/generations.jsonl, to watch the answer format being learned. 0: off. The training "
                  "result is unchanged (eval mode, no gradients, random state restored)."},
    )
    generation_log_samples: int = field(
        default=4,
        metadata={"help": "With generation_log_steps: how many examples, the first of the eval data (eval_file or "
                  "dataset_name), or of the training rows when the recipe has none."},
    )


@dataclass
class RewardArguments:
    """Options of the reinforcement recipes (grpo.py, rest.py)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["choice_accuracy", "answer_format"],
        metadata={"help": "Reward functions by name (audio_recipes.rewards.REWARDS)."},
    )
    evaluation_recipe: str | None = field(
        default=None,
        metadata={"help": "The recipe scripts/evaluate.py evaluates the trained model with, named in its model card's "
                  "Use command (this recipe's training options are not evaluate.py's)."},
    )





@dataclass
class RestArguments:
    """Options of the ReST loop (rest.py)."""

    rest_iterations: int = field(default=3, metadata={"help": "Generate-filter-train rounds."})
    samples_per_question: int = field(default=4, metadata={"help": "K: sampled answers per training question."})
    iteration_learning_rates: list[float] = field(
        default_factory=lambda: [2e-5, 1e-5, 5e-6],
        metadata={"help": "Learning rate of each iteration's fine-tuning; the last repeats if there are more."},
    )
    min_reward: float | None = field(
        default=None, metadata={"help": "Keep samples whose summed reward reaches this; default: every reward at 1."}
    )
    keep_top_k: int | None = field(
        default=None, metadata={"help": "Keep at most the k best distinct kept answers per question (all if unset)."}
    )
    sample_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the generate phase."})
    sample_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the generate phase."})
    heldout_split: str = field(default="test", metadata={"help": "Split whose accuracy is reported: eval or test."})
    heldout_start: bool = field(
        default=True, metadata={"help": "Also score the starting model on the held-out split (the iterations' baseline)."}
    )



@dataclass
class InspectArguments:
    """Options of inspect_data.py."""

    num_samples: int = field(default=3, metadata={"help": "How many training examples to show."})
    save_path: str | None = field(default=None, metadata={"help": "Write the shown examples as JSON lines here."})
    inspect_split: str = field(default="train", metadata={"help": "Which split to show: train, eval or test."})
    curriculum_stage: int | None = field(default=None, metadata={
        "help": "For a recipe with a curriculum: show the training data of this stage (1 for the first); the "
                "training split of a curriculum needs it, each stage training on other rows."})


# The task options the collator reads: one collator serves the whole run, so they are the recipe's, not a source's
COLLATOR_TASK_OPTIONS = ("max_audio_seconds", "on_too_long", "peak_normalize", "enable_thinking",
                         "silent_clip_for_text_batches")

# The dataclasses scripts/sft.py and scripts/evaluate.py parse a recipe into (a grid checks its cells with them)
RECIPE_ARGUMENT_TYPES = (ModelArguments, TaskArguments, SFTConfig, EvalArguments)


def evaluation_argument_types() -> tuple[type, ...]:
    """The dataclasses scripts/evaluate.py parses a recipe into."""
    return RECIPE_ARGUMENT_TYPES
