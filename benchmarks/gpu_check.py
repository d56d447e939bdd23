"""`make gpu-check`: a few training steps of real-shape models (random weights, nothing downloaded) on one CUDA GPU:
full fine-tuning, LoRA and QLoRA on the 7B shapes, LoRA on the 30B MoE thinker where it fits; sdpa against flash
attention, packed against padded batches. Writes benchmarks/gpu_results.json (tokens/s, model FLOPs utilisation
against the GPU's bf16 peak, peak memory beside the plan's prediction) and the table in docs/benchmarks.md.

    python benchmarks/gpu_check.py [--device cuda] [--steps 4] [--batch_size 8] [--models ...] [--peak_tflops X]
    python benchmarks/gpu_check.py --device cpu      # the same logic on tiny widths: tests/test_gpu_check.py

What is absent is skipped with one line: bitsandbytes (QLoRA), flash-attn (flash attention), memory (a run whose
predicted peak exceeds the GPU's free memory). Under 8 minutes on an H100 (--time_budget_s stops starting runs).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_shapes  # noqa: E402
import torch  # noqa: E402

from audio_recipes.io import write_text_atomic  # noqa: E402
from audio_recipes.packing import register_packed_sdpa  # noqa: E402

RESULTS = ROOT / "benchmarks" / "gpu_results.json"
REPORT = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:gpu_check -->", "<!-- /bench:gpu_check -->"


@dataclass
class Run:
    model: str
    method: str  # full, lora, qlora
    attention: str  # sdpa, flash_attention_2
    batching: str  # padded, packed

    @property
    def name(self) -> str:
        return f"{self.model}/{self.method}/{self.attention}/{self.batching}"


def planned_runs(models: list[str]) -> list[Run]:
    runs = []
    for model in models:
        if model == "qwen3-omni-30b-a3b":  # the MoE thinker: LoRA, where it fits
            runs += [Run(model, "lora", "sdpa", batching) for batching in ("padded", "packed")]
            continue
        runs += [Run(model, "lora", attention, batching) for attention in ("sdpa", "flash_attention_2")
                 for batching in ("padded", "packed")]
        runs += [Run(model, "full", "sdpa", "packed"), Run(model, "qlora", "sdpa", "packed")]
    return runs


def missing_requirement(run: Run, device: str) -> str | None:
    """Why a run cannot start here (one line), or None."""
    if run.attention == "flash_attention_2":
        if device != "cuda":
            return "flash attention needs CUDA"
        if importlib.util.find_spec("flash_attn") is None:
            return "flash-attn is not installed"
    if run.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


def quantize_language_model(model, device: str) -> int:
    """The language model's nn.Linear layers as bitsandbytes NF4 (the recipes' QLoRA: audio encoder, projector and
    output head unquantised); the count replaced."""
    import bitsandbytes as bnb

    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}".split(".")
            if not isinstance(child, torch.nn.Linear) or child_name == "lm_head" or any(
                    part in gpu_shapes.NOT_LANGUAGE_MODEL for part in path):
                continue
            quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=child.weight.dtype, quant_type="nf4", device="meta")
            quantized.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, quantized.to(device))  # quantises the weight
            replaced += 1
    model.is_loaded_in_4bit = True
    return replaced


def prepare(model, shape: gpu_shapes.Shape, method: str, device: str):
    """Frozen encoder and projector (the recipes' default); LoRA r 16 on the language model for lora / qlora."""
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    if method == "full":
        for name, parameter in model.named_parameters():
            if not any(part in gpu_shapes.NOT_LANGUAGE_MODEL for part in name.split(".")):
                parameter.requires_grad_(True)
        return model
    if method == "qlora":
        quantize_language_model(model, device)
    excluded = "|".join(gpu_shapes.NOT_LANGUAGE_MODEL)
    targets = rf"^(?!.*\b({excluded})\b).*\.({'|'.join(shape.lora_modules)})$"
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def set_attention(model, attention: str, batching: str) -> str:
    """The language model's attention; packed batches on sdpa go through sdpa_packed, as the SFT pipeline does."""
    name = register_packed_sdpa() if attention == "sdpa" and batching == "packed" else attention
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation({"text_config": name})
    return name


def to_device(batch: dict, device: str, dtype: torch.dtype) -> dict:
    return {key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
            for key, value in batch.items()}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(run: Run, model, shape, batches, args, device, dtype) -> dict:
    """Warm-up steps, then timed steps of forward, backward and AdamW: tokens/s over the real tokens."""
    set_attention(model, run.attention, run.batching)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5, foreach=device == "cuda")
    model.train()

    def step(batch):
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for batch in batches[: args.warmup]:
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    losses = [step(batch) for batch in batches[args.warmup:]]
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loss": float(losses[-1].detach().float().cpu()),
            "peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None}


def run_model(name: str, runs: list[Run], args, device: str, dtype: torch.dtype, report) -> list[dict]:
    """Every run of one model shape: a fresh model per method, its attention switched between runs."""
    shape = gpu_shapes.REAL[name] if device == "cuda" else gpu_shapes.tiny(gpu_shapes.REAL[name])
    config = gpu_shapes.build_config(shape)
    steps = args.warmup + args.steps
    examples = gpu_shapes.synthetic_examples(shape, config, steps * args.batch_size, args.seed)
    chunks = [examples[i * args.batch_size:(i + 1) * args.batch_size] for i in range(steps)]
    pad_id = 151643
    batches = {"padded": [gpu_shapes.padded_batch(shape, chunk, pad_id, i) for i, chunk in enumerate(chunks)],
               "packed": [gpu_shapes.packed_batch(shape, chunk, i) for i, chunk in enumerate(chunks)]}
    timed = chunks[args.warmup:]
    lengths = [len(example.ids) for chunk in timed for example in chunk]
    encoder_positions = sum(example.frames // 2 for chunk in timed for example in chunk if example.frames)
    positions = {"padded": max(sum(b["input_ids"].numel() for b in batches["padded"][args.warmup:]) // args.steps, 1),
                 "packed": sum(lengths) // args.steps}
    results = []
    for method in ("full", "lora", "qlora"):
        method_runs = [run for run in runs if run.method == method]
        if not method_runs:
            continue
        if time.perf_counter() - args.started > args.time_budget_s:
            for run in method_runs:
                report(run, skipped=f"time budget of {args.time_budget_s:.0f} s spent")
            continue
        model = None
        try:
            model = gpu_shapes.build_model(shape, device, dtype)
            counts = gpu_shapes.parameter_counts(model, shape)
            if args.gradient_checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model = prepare(model, shape, method, device)
            if method != "full":
                model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            for run in method_runs:
                predicted = gpu_shapes.plan_memory(counts, config, method, positions[run.batching], trainable)
                if device == "cuda":
                    free, _ = torch.cuda.mem_get_info()
                    if predicted > free + torch.cuda.memory_allocated():
                        report(run, skipped=f"plan predicts {gpu_shapes.round_gib(predicted)} GiB, the GPU has "
                                            f"{gpu_shapes.round_gib(free + torch.cuda.memory_allocated())} GiB")
                        continue
                device_batches = [to_device(batch, device, dtype) for batch in batches[run.batching]]
                try:
                    measured = measure(run, model, shape, device_batches, args, device, dtype)
                except torch.OutOfMemoryError as error:
                    report(run, skipped=f"out of memory ({str(error).splitlines()[0][:120]})")
                    continue
                finally:
                    del device_batches
                flops = gpu_shapes.training_flops(counts, config, method, lengths, encoder_positions)
                result = {
                    **asdict(run), "tokens_per_s": round(sum(lengths) / measured["seconds"], 1),
                    "step_s": round(measured["seconds"] / args.steps, 4),
                    "tflops_per_s": round(flops / measured["seconds"] / 1e12, 2),
                    "mfu": (round(flops / measured["seconds"] / 1e12 / args.peak_tflops, 4)
                            if args.peak_tflops else None),
                    "peak_gib": gpu_shapes.round_gib(measured["peak_bytes"]) if measured["peak_bytes"] else None,
                    "planned_peak_gib": gpu_shapes.round_gib(predicted),
                    "tokens_per_step": sum(lengths) // args.steps, "positions_per_step": positions[run.batching],
                    "parameters": counts.total, "trainable": trainable, "loss": round(measured["loss"], 4),
                }
                results.append(result)
                report(run, result=result)
        except torch.OutOfMemoryError as error:
            for run in method_runs:
                if not any(r["model"] == run.model and r["method"] == method and r["attention"] == run.attention
                           and r["batching"] == run.batching for r in results):
                    report(run, skipped=f"out of memory building the model ({str(error).splitlines()[0][:100]})")
        finally:
            del model
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    return results


def speedups(results: list[dict]) -> dict[str, float]:
    """Packed over padded and flash over sdpa, for the pairs measured."""
    by_key = {(r["model"], r["method"], r["attention"], r["batching"]): r["tokens_per_s"] for r in results}
    ratios = {}
    for (model, method, attention, batching), value in by_key.items():
        if batching == "packed" and (model, method, attention, "padded") in by_key:
            ratios[f"{model}/{method}/{attention}: packed vs padded"] = round(
                value / by_key[(model, method, attention, "padded")], 3)
        if attention == "flash_attention_2" and (model, method, "sdpa", batching) in by_key:
            ratios[f"{model}/{method}/{batching}: flash attention vs sdpa"] = round(
                value / by_key[(model, method, "sdpa", batching)], 3)
    return ratios


def markdown(summary: dict) -> str:
    lines = ["### GPU check: real shapes, random weights", "",
             f"Command: `{summary['command']}`  ", f"Machine: {summary['machine']}; {summary['date']}", "",
             "| model | method | attention | batches | tokens/s | MFU | peak GiB | planned GiB | tokens/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["results"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        lines.append(f"| {r['model']} | {r['method']} | {r['attention']} | {r['batching']} | {r['tokens_per_s']:.4g} "
                     f"| {mfu} | {r['peak_gib'] if r['peak_gib'] is not None else '-'} | {r['planned_peak_gib']} | "
                     f"{r['tokens_per_step']} |")
    if not summary.get("complete", True):
        lines += ["", f"Partial: stopped after {', '.join(summary['models_done']) or 'no model'}."]
    lines += ["", *[f"- {key}: {value}x" for key, value in summary["speedups"].items()]]
    lines += [f"- skipped {line}" for line in summary["skipped"]]
    return "\n".join(lines) + "\n"


def publish(summary: dict, results_path: Path, report_path: Path) -> None:
    """Both files rewritten atomically: after each model, so a check stopped midway keeps what it measured."""
    write_text_atomic(results_path, json.dumps(summary, indent=2) + "\n")
    block = f"{BEGIN}\n{markdown(summary)}{END}"
    report = report_path.read_text() if report_path.is_file() else "# Benchmarks\n"
    if BEGIN in report:
        report = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, report, flags=re.DOTALL)
    else:
        report = report.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(report_path, report)


def machine(device: str) -> str:
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), " \
               f"CUDA {torch.version.cuda}, {versions}"
    return f"CPU smoke path (tiny widths), {versions}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--models", nargs="+", default=list(gpu_shapes.REAL), choices=list(gpu_shapes.REAL))
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "qlora"], choices=["full", "lora", "qlora"])
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per run.")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient_checkpointing", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--peak_tflops", type=float, default=None, help="The GPU's dense bf16 peak; found by name.")
    parser.add_argument("--time_budget_s", type=float, default=420.0, help="No new model starts after this.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    args.started = time.perf_counter()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu for the smoke path")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.peak_tflops is None and device == "cuda":
        args.peak_tflops = gpu_shapes.bf16_peak_tflops(torch.cuda.get_device_name())

    skipped_lines: list[str] = []

    def report(run: Run, result: dict | None = None, skipped: str | None = None) -> None:
        """One line per run: its figures, or why it was skipped."""
        if skipped:
            skipped_lines.append(f"{run.name}: {skipped}")
            print(f"skip {run.name}: {skipped}", flush=True)
        else:
            print(f"done {run.name}: {result['tokens_per_s']} tokens/s, MFU {result['mfu']}, peak {result['peak_gib']}"
                  f" GiB (planned {result['planned_peak_gib']})", flush=True)

    runs = [run for run in planned_runs(args.models) if run.method in args.methods]
    ready = []
    for run in runs:
        reason = missing_requirement(run, device)
        if reason:
            report(run, skipped=reason)
        else:
            ready.append(run)
    results: list[dict] = []

    def summary_so_far(models_done: int) -> dict:
        return {
            "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(device), "date": time.strftime("%Y-%m-%d"), "device": device,
            "complete": models_done == len(args.models), "models_done": args.models[:models_done],
            "peak_bf16_tflops": args.peak_tflops, "seconds": round(time.perf_counter() - args.started, 1),
            "results": results, "speedups": speedups(results), "skipped": skipped_lines,
            "notes": "Random weights; model FLOPs (no recomputation) over the real tokens; padded runs also compute "
                     "their padding. Planned peak: benchmarks/gpu_shapes.plan_memory (rough).",
        }

    for done, name in enumerate(args.models, start=1):
        results += run_model(name, [run for run in ready if run.model == name], args, device, dtype, report)
        summary = summary_so_far(done)
        publish(summary, args.results, args.report)
    print(json.dumps({"results": len(results), "skipped": len(skipped_lines), "seconds": summary["seconds"]}))
    return summary


if __name__ == "__main__":
    main()
