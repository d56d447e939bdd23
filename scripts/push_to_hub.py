#!/usr/bin/env python3
"""Push a trained adapter or model folder with its model card: `scripts/push_to_hub.py DIR --hub_model_id ID`.

Run it after `scripts/evaluate.py` to publish the evaluation metrics in the card too. The token is read
from the environment (HF_TOKEN or `hf auth login`) and never printed.
"""

import argparse
from pathlib import Path

from audio_recipes.cli import ArgumentParser, fail, run
from audio_recipes.hub import check_push_access, push_folder


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="output_dir of scripts/sft.py")
    parser.add_argument("--hub_model_id", required=True, help="repository to push to, e.g. user/qwen2-audio-slurp")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args()
    if not (args.model_dir / "README.md").is_file():
        fail(f"{args.model_dir} has no model card: is it the output_dir of scripts/sft.py?")
    repo = check_push_access(args.hub_model_id)
    print(push_folder(args.model_dir, repo, private=args.private))


if __name__ == "__main__":
    run(main)
