"""ASR n-best lists of SLURP recordings by beam search, with a transformers speech-to-text model (encoder-decoder:
Whisper, Speech2Text, ...): the rows the slurp_rationale task reads (its devel and test data as they are, its training
data once `prepare_data.py slurp_rationale` has added rationales).

    scripts/prepare_data.py slurp_nbest --input data/slurp/train.jsonl --audio_dir data/slurp/audio \\
        --model openai/whisper-large-v3 --output_file data/slurp_rationale/train.nbest.jsonl \\
        [--num_candidates 5] [--num_beams 5] [--recordings best|all] [--batch_size 16] [--max_new_tokens 64] \\
        [--language en] [--limit N] [--device cuda] [--dtype bfloat16] [--overwrite]

Each row: slurp_id, filename (the recording), sentence (the gold transcript), candidates (the distinct texts of the
returned beams, best first), candidate_scores (their beam scores), final (the gold label: scenario, action, entities
as [{type, filler}], by SLURP's rule). Rows are appended to OUTPUT.partial.jsonl as they come: a run interrupted
resumes with the same settings; OUTPUT is written whole, in the input's order, at the end, then OUTPUT.build.json (its
settings): the same command again says "already built" and generates nothing; other settings are refused unless
--overwrite. An output that is the input, or an existing file the project did not write (no OUTPUT.build.json), is
refused unless --overwrite (never the input). Prints statistics as one JSON object (last line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audio_recipes.config import TaskArguments
from audio_recipes.decoding import append_in_batches, read_finished
from audio_recipes.errors import DataError, InputError
from audio_recipes.io import check_output_files, finished_output, read_jsonl_lines, write_recorded_jsonl
from audio_recipes.metrics.slu import slurp_gold_entities
from audio_recipes.prepare.resumable import may_resume, partial_paths, remove_partial
from audio_recipes.tasks.base import Example, check_audio_files
from audio_recipes.tasks.slurp import best_recording, validate_row


def recording_rows(path: Path, audio_dir: Path, recordings: str, limit: int | None) -> list[dict[str, Any]]:
    """One row per recording to transcribe (the lowest-WER one of each sentence, or all), with its gold label."""
    rows = []
    for line_number, row in read_jsonl_lines(path):
        validate_row(row, f"{path}, line {line_number} (slurp_id {row.get('slurp_id')})")
        label = {"scenario": row["scenario"], "action": row["action"], "entities": slurp_gold_entities(row)}
        chosen = row["recordings"] if recordings == "all" else [best_recording(row["recordings"])] if row["recordings"] else []
        rows += [{"slurp_id": row["slurp_id"], "filename": recording["file"], "sentence": row["sentence"],
                  "final": label} for recording in chosen]
    rows = rows[:limit] if limit is not None else rows
    if not rows:
        raise DataError(f"{path}: no recordings to transcribe")
    examples = [Example(row["filename"], str(audio_dir / row["filename"]), "", "", "", "") for row in rows]
    check_audio_files(examples, path, TaskArguments(audio_dir=str(audio_dir)))
    return rows


def decoder_prefix(processor, language: str | None) -> list[int] | None:
    """Whisper's forced start (start of transcript, language, transcribe, no timestamps); None for models that start
    from their decoder_start_token_id alone."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if not hasattr(tokenizer, "set_prefix_tokens"):
        return None
    tokenizer.set_prefix_tokens(language=language, task="transcribe" if language else None, predict_timestamps=False)
    return list(tokenizer.prefix_tokens)


def distinct_candidates(texts: list[str], scores: list[float]) -> tuple[list[str], list[float]]:
    """The beams' texts, stripped, each once (two token sequences can spell the same text), best first; an empty text
    only where there is no other."""
    kept: dict[str, float] = {}
    for text, score in zip(texts, scores, strict=True):
        text = " ".join(text.split())
        if text not in kept:
            kept[text] = score
    if len(kept) > 1:
        kept.pop("", None)
    return list(kept), [round(score, 6) for score in kept.values()]


def nbest_batch(model, processor, audios: list, num_beams: int, num_candidates: int, max_new_tokens: int,
                prefix: list[int] | None) -> list[tuple[list[str], list[float]]]:
    """(candidates, scores) of each clip, by beam search.

    Through GenerationMixin.generate, not the model's own: Whisper's generate turns num_return_sequences into that many
    copies of each input, each decoded to its best beam alone, so its "n-best" is n times the 1-best
    (huggingface/transformers#33445).
    """
    import torch
    from transformers import GenerationMixin

    sampling_rate = processor.feature_extractor.sampling_rate
    inputs = processor(audios, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {key: value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
              for key, value in inputs.items()}
    kwargs: dict[str, Any] = {"num_beams": num_beams, "num_return_sequences": num_candidates, "do_sample": False,
                              "max_new_tokens": max_new_tokens, "return_dict_in_generate": True, "output_scores": True,
                              "temperature": None, "top_p": None, "top_k": None}
    if prefix is not None:
        kwargs["decoder_input_ids"] = torch.tensor([prefix] * len(audios), device=device)
    with torch.no_grad():
        output = GenerationMixin.generate(model, **inputs, **kwargs)
    texts = processor.batch_decode(output.sequences, skip_special_tokens=True)
    scores = output.sequences_scores.tolist()
    return [distinct_candidates(texts[i:i + num_candidates], scores[i:i + num_candidates])
            for i in range(0, len(texts), num_candidates)]


def load_asr_model(name: str, device: str | None, dtype: str):
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(name, dtype=getattr(torch, dtype), use_safetensors=True)
        model = model.to(device).eval()
    except ValueError as error:  # transformers' "Unrecognized configuration class" for CTC and other models
        raise InputError(f"{name} is not an encoder-decoder speech-to-text model (Whisper, Speech2Text, ...), which a "
                         f"beam-search n-best list needs: {str(error).splitlines()[0][:200]}") from error
    return model, AutoProcessor.from_pretrained(name)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare_data.py slurp_nbest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, type=Path, help="SLURP rows as published (train.jsonl, ...)")
    parser.add_argument("--audio_dir", required=True, type=Path, help="the SLURP recordings (prepare_data.py slurp)")
    parser.add_argument("--model", required=True, help="speech-to-text model: local path or Hub id")
    parser.add_argument("--output_file", required=True, type=Path, help="n-best rows (JSON lines)")
    parser.add_argument("--num_candidates", type=int, default=5, help="hypotheses kept per recording (before dedup)")
    parser.add_argument("--num_beams", type=int, help="beam width (default: num_candidates)")
    parser.add_argument("--recordings", choices=("best", "all"), default="best",
                        help="each sentence's lowest-WER recording (as the slurp task trains on), or all")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--language", default="en", help="Whisper's language token (ignored by other models)")
    parser.add_argument("--limit", type=int, help="only the first N recordings")
    parser.add_argument("--device", help="default: cuda where available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output (or partial rows) of other settings, or a file the project did not write")
    args = parser.parse_args(argv)
    args.num_beams = args.num_beams or args.num_candidates
    if not 1 <= args.num_candidates <= args.num_beams:
        parser.error("--num_candidates must be between 1 and --num_beams")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    settings = {"input": str(args.input.resolve()), "model": args.model, "num_candidates": args.num_candidates,
                "num_beams": args.num_beams, "recordings": args.recordings, "max_new_tokens": args.max_new_tokens,
                "language": args.language, "limit": args.limit, "dtype": args.dtype}
    check_output_files("slurp_nbest", [args.output_file], [args.input], args.overwrite)
    if finished_output(args.output_file, "slurp_nbest", settings, args.overwrite):
        print(f"already built: {args.output_file} (the same settings); nothing to do", file=sys.stderr)
        print(json.dumps({"output_file": str(args.output_file), "already_built": True}))
        return
    rows = recording_rows(args.input, args.audio_dir, args.recordings, args.limit)
    partial, _ = partial_paths(args.output_file)
    resume = may_resume(args.output_file, settings, args.overwrite)
    done_before = read_finished(partial) if resume else {}
    resumed = sum(row["filename"] in done_before for row in rows)
    model = processor = prefix = None
    if resumed < len(rows):
        model, processor = load_asr_model(args.model, args.device, args.dtype)
        prefix = decoder_prefix(processor, args.language)

    def transcribe(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from audio_recipes.audio import load_audio

        sampling_rate = processor.feature_extractor.sampling_rate
        audios = [load_audio(args.audio_dir / row["filename"], sampling_rate) for row in batch]
        outputs = nbest_batch(model, processor, audios, args.num_beams, args.num_candidates, args.max_new_tokens,
                              prefix)
        return [{**row, "candidates": candidates, "candidate_scores": scores}
                for row, (candidates, scores) in zip(batch, outputs, strict=True)]

    finished = append_in_batches(partial, rows, item_id=lambda row: row["filename"], resume=resume,
                                 batch_size=args.batch_size, process=transcribe, log_every=1,
                                 what="recordings transcribed")
    output = [{key: value for key, value in finished[row["filename"]].items() if key != "id"} for row in rows]
    write_recorded_jsonl(args.output_file, output, "slurp_nbest", settings)
    remove_partial(args.output_file)
    sizes = [len(row["candidates"]) for row in output]
    exact = sum(row["candidates"][0] == row["sentence"] for row in output)
    print(json.dumps({"output_file": str(args.output_file), "rows": len(output), "resumed": resumed,
                      "mean_candidates": round(sum(sizes) / len(sizes), 2), "top_candidate_exact": exact}))
