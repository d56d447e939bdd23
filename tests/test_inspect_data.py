import json
import subprocess
import sys
from pathlib import Path

from audio_recipes.testing.tiny_models import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_inspect_data_shows_prompt_target_and_loss_tokens(tmp_path):
    ensure_tiny_model("qwen2-audio")
    save = tmp_path / "seen.jsonl"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "inspect_data.py"), str(ROOT / "recipes/tiny/slurp.yaml"),
         "--num_samples", "2", "--save_path", str(save)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    records = [json.loads(line) for line in save.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert set(record) == {"prompt", "target", "loss_text"}
        assert record["loss_text"] == record["target"] + "<|im_end|>"
        assert record["prompt"].endswith("<|im_start|>assistant\n") and "<|AUDIO|>" in record["prompt"]
        assert record["prompt"].count("<|AUDIO|>") > 10  # the placeholder is expanded per clip
        json.loads(record["target"])
    assert "tokens carrying loss" in result.stdout
