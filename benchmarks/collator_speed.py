"""Examples per second through the training collator, decode and resample included, and where the time
goes: decoding (soundfile), resampling (soxr, 22.05 -> 16 kHz for espeak's clips), feature extraction
(Whisper log-mel over the window cut to the batch's longest clip, and over the full 30 s window for
comparison) and tokenisation of the prompts with their placeholders expanded.

    python benchmarks/collator_speed.py [--batch_size 8] [--batches 8] [--runs 5]
"""

import argparse

import harness
import soundfile
import soxr
from transformers import AutoProcessor

from audio_recipes.collators import AudioChatCollator
from audio_recipes.testing.tiny_models import ensure_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    processor = AutoProcessor.from_pretrained(ensure_tiny_model())
    rows = [example.to_row() for example in harness.tiny_slurp_examples("train")][: args.batch_size * args.batches]
    batches = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    collator = AudioChatCollator(processor)
    rate = processor.feature_extractor.sampling_rate
    decoded = [soundfile.read(row["audio"], dtype="float32") for row in rows]
    resampled = [soxr.resample(audio, source_rate, rate, quality="HQ") for audio, source_rate in decoded]
    texts = collator.prompt_texts(rows)

    def collate():
        for batch in batches:
            collator(batch)

    def decode():
        for row in rows:
            soundfile.read(row["audio"], dtype="float32")

    def resample():
        for audio, source_rate in decoded:
            soxr.resample(audio, source_rate, rate, quality="HQ")

    def features(full_window=False):
        for start in range(0, len(resampled), args.batch_size):
            audios = resampled[start:start + args.batch_size]
            window = {} if full_window else collator.window_kwargs(audios)["audio_kwargs"]
            processor.feature_extractor(audios, sampling_rate=rate, padding="max_length", return_attention_mask=True,
                                        **window)

    # The prompts as the processor expands them: one placeholder per 40 ms of audio
    ids = processor(text=texts, audio=resampled, sampling_rate=rate, padding=True, return_tensors="pt")["input_ids"]
    lengths = (ids == processor.audio_token_id).sum(dim=1).tolist()
    expanded = [text.replace(processor.audio_token, processor.audio_token * n) for text, n in zip(texts, lengths,
                                                                                                    strict=True)]

    def tokenise():
        for start in range(0, len(rows), args.batch_size):
            processor.tokenizer(expanded[start:start + args.batch_size], padding=True, return_tensors="pt")

    timings = {name: harness.repeat(func, runs=args.runs) for name, func in
               [("collate", collate), ("decode", decode), ("resample", resample), ("features", features),
                ("features_30s_window", lambda: features(full_window=True)), ("tokenise", tokenise)]}
    count = len(rows)
    section = harness.Section("collator", "Collator throughput and where the time goes",
                              f"python benchmarks/collator_speed.py --batch_size {args.batch_size} "
                              f"--batches {args.batches} --runs {args.runs}")
    section.add("collator_examples_per_s", [count / t for t in timings["collate"]], "examples/s",
                f"batch {args.batch_size}, tiny SLURP audio rows")
    for name in ("decode", "resample", "features", "features_30s_window", "tokenise"):
        section.add(f"collator_ms_per_example_{name}", [1000 * t / count for t in timings[name]], "ms")
    section.add("collator_ms_per_example_total", [1000 * t / count for t in timings["collate"]], "ms")
    harness.publish(section)


if __name__ == "__main__":
    main()
