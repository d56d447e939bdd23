"""Padding in training batches: the fraction of padded text positions with random batching and with
length-grouped batching (transformers' LengthGroupedSampler over the collator's exact example lengths),
and the audio frames padded in the first batch (to its longest clip; 0.90 with Qwen2-Audio's fixed 30 s window).

    python benchmarks/padding.py [--batch_size 8] [--runs 5]
"""

import argparse

import harness
import torch
from transformers import AutoProcessor
from transformers.trainer_pt_utils import LengthGroupedSampler

from audio_recipes.collators import AudioChatCollator
from audio_recipes.testing.tiny_models import ensure_tiny_model


def padded_fraction(order, batch_size, lengths):
    """Padded text positions over all positions, batching `rows` in `order`."""
    padded = total = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        padded += max(batch) * len(batch) - sum(batch)
        total += max(batch) * len(batch)
    return padded / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    processor = AutoProcessor.from_pretrained(ensure_tiny_model())
    rows = [example.to_row() for example in harness.tiny_slurp_examples("train")]
    collator = AudioChatCollator(processor)
    lengths = [collator.example_length(row) for row in rows]
    # The estimate is exact: check it on the first batch through the real collator
    first = collator(rows[: args.batch_size])
    assert first["attention_mask"].sum(dim=1).tolist() == lengths[: args.batch_size]

    random_waste, grouped_waste = [], []
    for seed in range(args.runs):
        generator = torch.Generator().manual_seed(seed)
        random_waste.append(padded_fraction(torch.randperm(len(rows), generator=generator).tolist(),
                                            args.batch_size, lengths))
        sampler = LengthGroupedSampler(args.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed))
        grouped_waste.append(padded_fraction(list(sampler), args.batch_size, lengths))
    frames = first["feature_attention_mask"]
    audio_padding = 1 - frames.sum().item() / frames.numel()

    section = harness.Section("padding", "Padding in training batches",
                              f"python benchmarks/padding.py --batch_size {args.batch_size} --runs {args.runs}")
    section.add("padding_waste_random", random_waste, "fraction", f"{len(rows)} tiny SLURP audio examples, 5 seeds")
    section.add("padding_waste_grouped", grouped_waste, "fraction", "train_sampling_strategy: group_by_length")
    section.add("audio_frames_padded", audio_padding, "fraction", "first batch, clips padded to its longest clip")
    section.notes.append("Goal: grouped at most 0.10. Recipes switch it on with `train_sampling_strategy: "
                         "group_by_length`; lengths come from the text and the audio file headers, no decoding.")
    harness.publish(section)


if __name__ == "__main__":
    main()
