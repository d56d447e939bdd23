#!/usr/bin/env python3
"""Answer a question in text, then speech: `scripts/generate_speech.py --model M --question "..." [--output F.json]`.

M is a model trained with a speech_tokens recipe (local folder or Hub id). Writes (and prints)
{"text": ..., "speech_tokens": [...], "valid": ...}: the text answer and the speech token ids relative to the
speech offset (CosyVoice v1's own ids, 0..4095), the input a CosyVoice token-to-waveform step takes.
"valid" is false, with an "error", when the output is not text, start marker, speech tokens, end marker.
"""

import argparse
import json
from pathlib import Path

from audio_recipes.cli import ArgumentParser, run
from audio_recipes.config import EvalArguments, ModelArguments, TaskArguments
from audio_recipes.io import write_json_atomic
from audio_recipes.pipelines.evaluate import answer_prompts


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained model folder or Hub id")
    parser.add_argument("--question", required=True, nargs="+", help="one or more questions")
    parser.add_argument("--output", type=Path, help="write the answer here (a list with several questions)")
    parser.add_argument("--system_prompt", help="system turn, if the model was trained with one")
    parser.add_argument("--max_new_tokens", type=int, default=2048, help="text plus speech tokens")
    parser.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--enable_thinking", action="store_true",
                        help="leave out Qwen3's empty think block (the speech_tokens recipes train without it)")
    args = parser.parse_args()

    task_args = TaskArguments(task="speech_tokens", system_prompt=args.system_prompt,
                              enable_thinking=args.enable_thinking)
    eval_args = EvalArguments(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                              temperature=args.temperature, top_p=args.top_p)
    rows = answer_prompts(ModelArguments(model_name_or_path=args.model), task_args, eval_args, args.question)
    answers = [{key: row["prediction"][key] for key in ("text", "speech_tokens", "valid", "error")
                if key in row["prediction"]} for row in rows]
    result = answers[0] if len(answers) == 1 else answers
    if args.output:
        write_json_atomic(args.output, result)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    run(main)
