"""`make bench`: every benchmark, each writing its figures to benchmarks/results.json and its table to
docs/benchmarks.md."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = ["padding.py", "collator_speed.py", "eval_speed.py", "sft_speed.py", "speech_detection_decoding_speed.py",
         "real_width.py"]


def main() -> None:
    for script in SUITE + [name for name in sys.argv[1:] if name not in SUITE]:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], cwd=HERE.parent, check=True)


if __name__ == "__main__":
    main()
