"""Ratios at a 7B model's width: packed against padded training, label scoring against generation, batched against
one-by-one evaluation, on a slice of Qwen2-Audio-7B (its real widths, --layers layers of the language model and of
the audio encoder, random weights) and, in the same process, on the tiny Qwen2-Audio.

    python benchmarks/real_width.py [--layers 1] [--runs 5] [--train_batches 2] [--batch_size 8] [--eval_clips 8]

The tiny model's 64-wide language model makes a decoding step and a padded token almost free, so that its ratios
say little about a 7B model. The slice keeps the 7B's matrices (4096 x 11008 MLP, 32 heads of 128; Whisper-large's
1280-wide encoder), so that a token, a padded position and a decoding step cost what one layer of the 7B costs; the
vocabulary stays the tiny tokenizer's (its ids are the processor's), and bf16 (as GPU recipes train) runs on CPUs
with AVX-512 BF16 at several times float32's speed. Every variant runs the project's own code: the collator (clips
read, features, placeholders), the model's forward (and backward), `generate_batch` and `decode_batch`.

The length mix: clips of log-normal duration (median 4 s, sigma 0.7, within 0.5-30 s: short commands to
half-minute utterances, as in SLURP, Speech-MASSIVE and speech detection data) under the tiny SLURP data's real
prompts and JSON answers, batched in random order (the recipes' default sampler). Ratios are medians of variants
timed in turns (harness.interleaved).
"""

import argparse
import tempfile
from pathlib import Path

import harness
import numpy as np
import soundfile
import torch
from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

from audio_recipes.collators import AudioChatCollator
from audio_recipes.config import TaskArguments
from audio_recipes.decoding import decode_batch, generate_batch
from audio_recipes.packing import register_packed_sdpa
from audio_recipes.pipelines.data import recipe_task
from audio_recipes.tasks import Example
from audio_recipes.tasks.speech_detection.task import PROMPT as DETECTION_PROMPT
from audio_recipes.tasks.speech_detection.task import SYSTEM_PROMPT as DETECTION_SYSTEM
from audio_recipes.testing.tiny_models import ensure_tiny_model

# Qwen/Qwen2-Audio-7B(-Instruct) config.json: text_config (Qwen-7B) and audio_config (Whisper-large-v3's encoder)
REAL_TEXT = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32}
REAL_AUDIO = {"d_model": 1280, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120}
SAMPLE_RATE = 16000


def clip_durations(count: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(4.0), 0.7, count), 0.5, 30.0).round(2).tolist()


def write_clips(folder: Path, durations: list[float], seed: int) -> list[str]:
    """Noise clips of the given durations (their content does not matter to the timings)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index, seconds in enumerate(durations):
        path = folder / f"clip{index:03d}.wav"
        soundfile.write(path, (0.05 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE)
        paths.append(str(path))
    return paths


def slice_model(tiny_dir: Path, layers: int, dtype: torch.dtype) -> Qwen2AudioForConditionalGeneration:
    """Qwen2-Audio-7B's widths with `layers` layers each, random weights; the tiny model's token ids."""
    config = AutoConfig.from_pretrained(tiny_dir)
    for key, value in {**REAL_TEXT, "num_hidden_layers": layers}.items():
        setattr(config.text_config, key, value)
    for key, value in {**REAL_AUDIO, "encoder_layers": layers}.items():
        setattr(config.audio_config, key, value)
    torch.manual_seed(0)
    return Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)


def tiny_model(tiny_dir: Path, dtype: torch.dtype) -> Qwen2AudioForConditionalGeneration:
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir, dtype=dtype)


def comparisons(model, processor, train_rows, eval_examples, choice_examples, args) -> dict:
    """The variants of every comparison on one model, as functions; the tokens each training pass trains on."""
    model.requires_grad_(True)
    model.model.audio_tower.requires_grad_(False)  # the recipes' default: encoder and projector frozen
    model.model.multi_modal_projector.requires_grad_(False)
    dtype = model.dtype
    padded = AudioChatCollator(processor)
    packed = AudioChatCollator(processor, packing=True)
    generation = AudioChatCollator(processor, with_completion=False, padding_side="left")
    batches = [train_rows[start:start + args.batch_size] for start in range(0, len(train_rows), args.batch_size)]

    def train(collator, attention="sdpa"):
        model.set_attn_implementation(attention)  # packed: sdpa on each example, as the SFT pipeline trains
        model.train()
        for rows in batches:
            batch = {key: value.to(dtype) if value.is_floating_point() else value
                     for key, value in collator(rows).items()}
            model(**batch, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

    def settings(tokens):
        return {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False, "num_beams": 1,
                "pad_token_id": generation.tokenizer.pad_token_id, "temperature": None, "top_p": None, "top_k": None}

    def evaluate(batch_size):
        model.set_attn_implementation("sdpa")
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(eval_examples), batch_size):
                generate_batch(model, generation, eval_examples[start:start + batch_size],
                               **settings(args.eval_new_tokens))

    task = recipe_task(TaskArguments(task="speech_detection"))

    def choose(mode, batch_size):
        model.set_attn_implementation("sdpa")
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(choice_examples), batch_size):
                decode_batch(model, generation, task, choice_examples[start:start + batch_size], mode,
                             settings(args.choice_new_tokens))

    variants = {
        "train_padded": lambda: train(padded), "train_packed": lambda: train(packed, register_packed_sdpa()),
        "eval_single": lambda: evaluate(1), "eval_batched": lambda: evaluate(args.batch_size),
        "generate_batched": lambda: choose("generate", args.batch_size),
        "scoring_batched": lambda: choose("scoring", args.batch_size),
        "generate_single": lambda: choose("generate", 1), "scoring_single": lambda: choose("scoring", 1),
    }
    lengths = [len(ids) for ids in (packed(rows)["input_ids"][0] for rows in batches)]
    padded_positions = [padded(rows)["input_ids"].numel() for rows in batches]
    return {"variants": variants, "tokens": sum(lengths), "padded_positions": sum(padded_positions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train_batches", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--eval_clips", type=int, default=8)
    parser.add_argument("--eval_new_tokens", type=int, default=32)
    parser.add_argument("--choice_new_tokens", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--models", nargs="+", default=["real_width", "tiny"], choices=["real_width", "tiny"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_publish", action="store_true", help="Print the table; leave the report alone.")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    tiny_dir = ensure_tiny_model()
    processor = AutoProcessor.from_pretrained(tiny_dir)
    slurp = harness.tiny_slurp_examples("train")
    train_count = args.train_batches * args.batch_size
    durations = clip_durations(train_count + args.eval_clips, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        clips = write_clips(Path(folder), durations, args.seed)
        order = np.random.default_rng(args.seed).permutation(len(slurp))
        train_rows = [{**slurp[i].to_row(), "audio": clip} for i, clip in zip(order, clips[:train_count],
                                                                                strict=False)]
        eval_examples = [Example(f"e{i}", clip, slurp[order[train_count + i]].system,
                                 slurp[order[train_count + i]].prompt, "", "{}")
                         for i, clip in enumerate(clips[train_count:])]
        choice_examples = [Example(f"c{i}", clip, DETECTION_SYSTEM, DETECTION_PROMPT, "A", "{}")
                           for i, clip in enumerate(clips[train_count:])]
        results = {}
        for name in args.models:
            model = slice_model(tiny_dir, args.layers, dtype) if name == "real_width" else tiny_model(tiny_dir, dtype)
            compared = comparisons(model, processor, train_rows, eval_examples, choice_examples, args)
            print(f"{name}: timing {len(compared['variants'])} variants in turns, {args.runs} rounds", flush=True)
            results[name] = {**compared, "times": harness.interleaved(compared["variants"], runs=args.runs)}
            del model

    width = f"real width ({args.layers} layer{'s' if args.layers > 1 else ''}, {args.dtype})"
    section = harness.Section(
        "real_width", "Ratios at a 7B model's width, beside the tiny model's",
        f"python benchmarks/real_width.py --layers {args.layers} --runs {args.runs} --train_batches "
        f"{args.train_batches} --batch_size {args.batch_size} --eval_clips {args.eval_clips}")
    for name, result in results.items():
        label = width if name == "real_width" else f"tiny ({args.dtype})"
        times = result["times"]
        section.add(f"{name}_train_tokens_per_s_padded", [result["tokens"] / t for t in times["train_padded"]],
                    "tokens/s", f"{label}; forward + backward, real tokens only")
        section.add(f"{name}_train_tokens_per_s_packed", [result["tokens"] / t for t in times["train_packed"]],
                    "tokens/s", label)
        section.add_ratio(f"{name}_packed_speedup", times["train_padded"], times["train_packed"],
                          f"{label}; goal >= 1.3 at real width")
        section.add_ratio(f"{name}_eval_batched_speedup", times["eval_single"], times["eval_batched"],
                          f"{label}; batch {args.batch_size} vs one by one, {args.eval_new_tokens} new tokens")
        section.add_ratio(f"{name}_choice_scoring_speedup", times["generate_batched"], times["scoring_batched"],
                          f"{label}; scoring vs generating {args.choice_new_tokens} tokens, batch {args.batch_size}")
        section.add_ratio(f"{name}_choice_scoring_speedup_batch1", times["generate_single"], times["scoring_single"],
                          f"{label}; the same, one clip at a time")
    tokens, positions = results[args.models[0]]["tokens"], results[args.models[0]]["padded_positions"]
    section.notes.append(
        f"{train_count} training rows in {args.train_batches} random batches of {args.batch_size}: {tokens} tokens, "
        f"{positions} positions when padded (padding {1 - tokens / positions:.0%}); clips "
        f"{min(durations):.1f}-{max(durations):.1f} s (median {np.median(durations):.1f} s). Evaluation and "
        f"label scoring on {args.eval_clips} of the clips. Each model's variants were timed in turns, "
        f"{args.runs} rounds; a ratio is the ratio of the two medians, its spread that of the rounds.")
    if args.no_publish:
        print(harness.section_markdown(section))
    else:
        harness.publish(section)


if __name__ == "__main__":
    main()
