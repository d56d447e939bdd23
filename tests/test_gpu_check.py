"""The GPU check's logic on CPU (tiny widths of the real structures): its runs, skips, figures and report; the
real shapes' parameter counts; its synthetic batches (packed = padded, token by token). No timing is asserted."""

import json
import sys

import pytest
import torch

from audio_recipes.packing import IGNORE_INDEX
from audio_recipes.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
gpu_shapes = pytest.importorskip("gpu_shapes")
gpu_check = pytest.importorskip("gpu_check")


@pytest.mark.parametrize(("name", "language_model", "total"), [
    ("qwen2-audio-7b", None, 8_397_094_912),  # the released checkpoint's count
    ("qwen3-omni-30b-a3b", 30_532_122_624, None),  # its thinker's language model: 30.5 B, 3.3 B active
])
def test_real_shapes_have_the_released_parameter_counts(name, language_model, total):
    shape = gpu_shapes.REAL[name]
    with torch.device("meta"):
        model = gpu_shapes.build_model(shape, "meta", torch.bfloat16)
    counts = {"total": 0, "lm": 0}
    for parameter_name, parameter in model.named_parameters():
        counts["total"] += parameter.numel()
        if not any(part in gpu_shapes.NOT_LANGUAGE_MODEL for part in parameter_name.split(".")):
            counts["lm"] += parameter.numel()
    assert total is None or counts["total"] == total
    assert language_model is None or counts["lm"] == language_model
    if shape.experts:
        active = gpu_shapes.parameter_counts(model, shape).language_model_matmul
        assert 2.9e9 < active < 3.4e9


@pytest.mark.parametrize("name", list(gpu_shapes.REAL))
def test_synthetic_packed_batches_give_the_padded_per_token_losses(name):
    """The check's own batches: placeholders match the encoder's output, features one per clip, and the packed
    row (sdpa_packed) gives the padded batch's per-token losses."""
    shape = gpu_shapes.tiny(gpu_shapes.REAL[name])
    model = gpu_shapes.build_model(shape, "cpu", torch.float32).eval()
    examples = gpu_shapes.synthetic_examples(shape, model.config, 3, seed=1)
    padded = gpu_shapes.padded_batch(shape, examples, 151643, 0)
    packed = gpu_shapes.packed_batch(shape, examples, 0)
    assert packed["input_ids"].shape[1] == padded["attention_mask"].sum()
    with torch.no_grad():
        padded_logits = model(**{k: v for k, v in padded.items() if k != "labels"}).logits
        gpu_check.set_attention(model, "sdpa", "packed")
        packed_logits = model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits
    trained = padded["labels"] != IGNORE_INDEX
    assert trained.sum() > 10
    mask = padded["attention_mask"].bool()
    torch.testing.assert_close(packed_logits[0], padded_logits[mask], atol=1e-4, rtol=0)


def test_cpu_smoke_run_measures_skips_with_one_line_and_writes_the_report(tmp_path, capsys, monkeypatch):
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nkept\n")
    real_find_spec = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    summary = gpu_check.main(["--device", "cpu", "--models", "qwen2-audio-7b", "--methods", "lora", "qlora",
                              "--steps", "1", "--warmup", "0", "--batch_size", "2",
                              "--results", str(tmp_path / "gpu.json"), "--report", str(report)])
    runs = {(r["method"], r["attention"], r["batching"]) for r in summary["results"]}
    assert runs == {("lora", "sdpa", "padded"), ("lora", "sdpa", "packed")}
    assert summary["skipped"] == [
        "qwen2-audio-7b/lora/flash_attention_2/padded: flash attention needs CUDA",
        "qwen2-audio-7b/lora/flash_attention_2/packed: flash attention needs CUDA",
        "qwen2-audio-7b/qlora/sdpa/packed: bitsandbytes is not installed"]
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 3 and printed.count("done ") == 2
    result = summary["results"][0]
    assert result["tokens_per_s"] > 0 and result["planned_peak_gib"] > 0 and result["trainable"] < result["parameters"]
    assert list(summary["speedups"]) == ["qwen2-audio-7b/lora/sdpa: packed vs padded"]
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["results"] == summary["results"] and written["complete"] is True
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and text.count(gpu_check.BEGIN) == 1
    assert "| qwen2-audio-7b | lora | sdpa | packed |" in text


def test_qlora_quantises_the_language_model_only():
    pytest.importorskip("bitsandbytes")
    shape = gpu_shapes.tiny(gpu_shapes.REAL["qwen2-audio-7b"])
    model = gpu_shapes.build_model(shape, "cpu", torch.float32)
    assert gpu_check.quantize_language_model(model, "cpu") == 14  # 2 layers x q, k, v, o, gate, up, down
    layer = model.model.language_model.layers[0]
    assert layer.self_attn.q_proj.weight.dtype == torch.uint8 and layer.self_attn.q_proj.weight.quant_state is not None
    assert type(model.lm_head) is torch.nn.Linear
    assert type(model.model.audio_tower.layers[0].self_attn.q_proj) is torch.nn.Linear


def test_plan_and_peak_lookup():
    assert gpu_shapes.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_shapes.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_shapes.bf16_peak_tflops("NVIDIA H200") == 989.4
    assert gpu_shapes.bf16_peak_tflops("Some Future GPU") is None
    shape = gpu_shapes.REAL["qwen2-audio-7b"]
    config = gpu_shapes.build_config(shape)
    with torch.device("meta"):
        counts = gpu_shapes.parameter_counts(gpu_shapes.build_model(shape, "meta", torch.bfloat16), shape)
    plans = {method: gpu_shapes.plan_memory(counts, config, method, 2048, trainable)
             for method, trainable in (("full", counts.language_model_matmul), ("lora", 40_000_000),
                                       ("qlora", 40_000_000))}
    assert plans["qlora"] < plans["lora"] < plans["full"]
    assert 50 * 2**30 < plans["full"] < 90 * 2**30  # bf16 weights (8.4 B), gradients and AdamW states (7.1 B)


# ---------------------------------------------------------------- make gpu-wheels

def gpu_wheels():
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    import gpu_wheels as module

    return module


def test_wheel_list_is_pinned_to_the_tested_versions_and_marked_for_the_node_python():
    from importlib.metadata import version

    module = gpu_wheels()
    pins = module.pinned_requirements("3.12")
    names = [pin.split("==")[0] for pin in pins]
    assert "torch" not in names and len(names) == len(set(names))
    assert "tomli" not in names and "tomli" in [p.split("==")[0] for p in module.pinned_requirements("3.10")]
    for pin in pins:  # the versions the tests here ran on
        name, pinned = pin.split("==")
        assert version(name) == pinned, f"{name}: requirements-gpu-check.txt pins {pinned}, tested {version(name)}"
    command = module.download_command(PROJECT_ROOT / "w", "3.12", pins)
    assert {"--no-deps", "--only-binary=:all:"} <= set(command) and "transformers==5.25.0" in command
    assert command[command.index("--python-version") + 1] == "3.12"


# The binary wheels PyPI publishes for the pins (as `make gpu-wheels PYTHON_VERSION=3.12 WITH_BNB=1` saved them)
PUBLISHED_BINARY_WHEELS = [
    "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl",
    "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "hf_xet-1.8.0-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "kernels-0.19.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "numpy-2.3.5-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.manylinux_2_28_x86_64.whl",
    "soundfile-0.14.0-py2.py3-none-manylinux_2_28_x86_64.whl",
    "soxr-1.1.0-cp312-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "tokenizers-0.23.3-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
]


@pytest.mark.parametrize("wheel", PUBLISHED_BINARY_WHEELS)
def test_download_platforms_admit_each_published_binary_wheel(wheel):
    """pip download --platform matches tags exactly: a wheel published only under a tag not asked for is not found
    (bitsandbytes' manylinux_2_24 was missing: `make gpu-wheels WITH_BNB=1` failed)."""
    from packaging.utils import parse_wheel_filename

    tags = parse_wheel_filename(wheel)[3]
    assert {tag.platform for tag in tags} & set(gpu_wheels().PLATFORMS), wheel


def test_wheel_folder_check_refuses_two_versions_and_too_many_megabytes(tmp_path):
    module = gpu_wheels()
    (tmp_path / "peft-0.21.2-py3-none-any.whl").write_bytes(b"x" * 1_000_000)
    (tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl").write_bytes(b"x" * 3_000_000)
    assert module.check_folder(tmp_path, max_mb=2) == 1.0  # bitsandbytes is optional: not counted
    with pytest.raises(SystemExit, match="over 0 MB"):
        module.check_folder(tmp_path, max_mb=0.5)
    (tmp_path / "peft-0.21.1-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(SystemExit, match="several versions"):
        module.check_folder(tmp_path, max_mb=60)


def test_a_check_stopped_midway_keeps_the_models_it_measured(tmp_path, monkeypatch):
    real_run_model = gpu_check.run_model

    def stop_at_the_second(name, *args):
        if name == "qwen2.5-omni-7b":
            raise KeyboardInterrupt  # the node's time limit
        return real_run_model(name, *args)

    monkeypatch.setattr(gpu_check, "run_model", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--models", "qwen2-audio-7b", "qwen2.5-omni-7b", "--methods", "lora",
                        "--steps", "1", "--warmup", "0", "--batch_size", "2",
                        "--results", str(tmp_path / "gpu.json"), "--report", str(tmp_path / "benchmarks.md")])
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["complete"] is False and written["models_done"] == ["qwen2-audio-7b"]
    assert {r["model"] for r in written["results"]} == {"qwen2-audio-7b"} and len(written["results"]) == 2
    assert "Partial: stopped after qwen2-audio-7b." in (tmp_path / "benchmarks.md").read_text()
