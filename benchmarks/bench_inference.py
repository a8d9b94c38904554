"""Faster CPU inference: latency per caption and caption agreement with fp32, PyTorch vs onnxruntime.

Variants: PyTorch fp32, PyTorch bf16 (`torch.autocast`), PyTorch int8 (`vidgpt2.inference.quantize_dynamic_int8`: the
decoder's Linear/Conv1D layers), onnxruntime fp32 (`vidgpt2.onnx.export_onnx`) and onnxruntime int8 (decoders
through `onnxruntime.quantization.quantize_dynamic`).

1. Latency: the full-size model (ResNet-50 + GPT-2 small, random weights from the default config; the EOS logit is
   zeroed so that every caption runs exactly `--new-tokens` steps), held-out synthetic clips at 224x224, 8 frames,
   batch 1 and 16: wall time per call, encoder + greedy decoding. Also the agreement of these random-weight
   captions with fp32 (a harsh test: random logits have small margins).
2. Agreement: a small model like the demo's, briefly trained on synthetic clips, captions held-out synthetic clips
   with each variant: share of captions identical to fp32, and exact match with the reference.

`--quick` uses the tiny demo-size model for section 1 and fewer clips and epochs: a smoke run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CACHE_DIR,
    begin_run,
    interleaved_times,
    load_average,
    markdown_table,
    parse_args,
    per_round_ratios,
    setup_torch,
    summary,
    write_results,
)

VARIANTS = ("pt_fp32", "pt_bf16", "pt_int8", "ort_fp32", "ort_int8")
LABELS = {
    "pt_fp32": ("PyTorch", "fp32"),
    "pt_bf16": ("PyTorch", "bf16 autocast"),
    "pt_int8": ("PyTorch", "int8 dynamic (decoder)"),
    "ort_fp32": ("onnxruntime", "fp32"),
    "ort_int8": ("onnxruntime", "int8 dynamic (decoder)"),
}


def extra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sections", nargs="+", choices=["latency", "agreement"], default=["latency", "agreement"])
    parser.add_argument("--repeats", type=int, default=None, help="Timed rounds per batch size (default 3, quick 2).")
    parser.add_argument("--new-tokens", type=int, default=None, help="Generated tokens per caption (default 20).")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- variants ----------------------------------------------------------------------------------------------------------
def build_variants(model: Any, onnx_dir: Path, threads: int) -> dict[str, Any]:
    """name -> callable(pixels (B, T, 3, H, W) float32 tensor, max_new_tokens) -> token ids (B, 1 + new) ndarray."""
    import torch

    from vidgpt2.inference import inference_precision, quantize_dynamic_int8
    from vidgpt2.onnx import OnnxVidGPT2Captioner, export_onnx, quantize_onnx

    int8_model = quantize_dynamic_int8(model)
    started = time.perf_counter()
    report = export_onnx(model, onnx_dir / "fp32", validate=True)
    export_seconds = time.perf_counter() - started
    quantize_onnx(onnx_dir / "fp32", onnx_dir / "int8")
    ort_fp32 = OnnxVidGPT2Captioner(onnx_dir / "fp32", num_threads=threads)
    ort_int8 = OnnxVidGPT2Captioner(onnx_dir / "int8", num_threads=threads)

    def torch_variant(m: Any, precision: str):
        def run(pixels: torch.Tensor, new_tokens: int):
            with torch.inference_mode(), inference_precision(precision):
                return m.generate(pixel_values_videos=pixels, max_new_tokens=new_tokens, num_beams=1).numpy()

        return run

    def ort_variant(captioner: Any):
        return lambda pixels, new_tokens: captioner.generate_ids(pixels.numpy(), max_new_tokens=new_tokens).sequences

    variants = {
        "pt_fp32": torch_variant(model, "float32"),
        "pt_bf16": torch_variant(model, "bfloat16"),
        "pt_int8": torch_variant(int8_model, "float32"),
        "ort_fp32": ort_variant(ort_fp32),
        "ort_int8": ort_variant(ort_int8),
    }
    return {"variants": variants, "onnx_export_s": export_seconds, "onnx_max_abs_diff": report.max_abs_diff}


def agreement(outputs: dict[str, Any]) -> dict[str, float]:
    """Share of captions (token sequences) identical to pt_fp32's."""
    reference = outputs["pt_fp32"]
    result = {}
    for name, ids in outputs.items():
        same = [a.shape == b.shape and bool((a == b).all()) for a, b in zip(_rows(ids), _rows(reference))]
        result[name] = sum(same) / len(same)
    return result


def _rows(ids: Any) -> list[Any]:
    import numpy as np

    rows = []
    for row in np.asarray(ids):
        rows.append(row)
    return rows


# --- data ----------------------------------------------------------------------------------------------------------------
def synthetic_clips(folder: Path, num_train: int, num_test: int, seed: int) -> Path:
    from vidgpt2.data import write_synthetic_dataset

    marker = folder / f"done_{num_train}_{num_test}_{seed}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_synthetic_dataset(folder, num_train=num_train, num_validation=16, num_test=num_test, num_frames=8, size=64, seed=seed,
                                overwrite=True)
        marker.touch()
    return folder


def test_pixels(data_dir: Path, image_size: int, count: int) -> Any:
    from vidgpt2 import VidGPT2VideoProcessor
    from vidgpt2.data import load_captions_files
    from vidgpt2.processing_vidgpt2 import video_processor_settings

    test = load_captions_files(test_file=str(data_dir / "test.jsonl"))["test"]
    processor = VidGPT2VideoProcessor(num_frames=8, **video_processor_settings(image_size))
    videos = list(test["video"])[:count]
    return processor(videos, return_tensors="pt")["pixel_values_videos"], test.select(range(len(videos)))


# --- section 1 -----------------------------------------------------------------------------------------------------------
def bench_latency(args: argparse.Namespace, work: Path, data_dir: Path) -> tuple[str, dict[str, Any]]:
    import torch

    from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration
    from vidgpt2.demo import DEMO_CONFIG

    torch.manual_seed(args.seed)
    config = VidGPT2Config(**DEMO_CONFIG, num_frames=8) if args.quick else VidGPT2Config()
    model = VidGPT2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # no EOS: every caption has exactly `new_tokens` tokens
        model.get_output_embeddings().weight[config.text_config.eos_token_id].zero_()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    log(f"latency: {params:.0f} M parameters; exporting ONNX ...")
    built = build_variants(model, work / "onnx_latency", args.threads)
    variants = built["variants"]
    pixels_all, _ = test_pixels(data_dir, config.image_size, 16)
    new_tokens = args.new_tokens or (8 if args.quick else 20)
    repeats = args.repeats or (2 if args.quick else 3)
    results: dict[str, Any] = {
        "params_m": params, "new_tokens": new_tokens, "onnx_export_s": built["onnx_export_s"],
        "onnx_max_abs_diff": built["onnx_max_abs_diff"],
    }
    rows = []
    for batch in (1, 16):
        pixels = pixels_all[:batch]
        log(f"latency: batch {batch}, {repeats} rounds, load {load_average()}")
        outputs = {name: fn(pixels, new_tokens) for name, fn in variants.items()}  # warm-up, kept for agreement
        times = interleaved_times(
            {name: (lambda fn=fn, px=pixels: fn(px, new_tokens)) for name, fn in variants.items()}, repeats, warmup=0
        )
        agree = agreement(outputs)
        results[f"batch_{batch}"] = {"times": times, "agreement": agree, "load_average_end": load_average()}
        for name in VARIANTS:
            median = summary(times[name])["median_s"]
            ratios = per_round_ratios(times["pt_fp32"], times[name])  # speed-up within each round
            rows.append(
                [
                    *LABELS[name], batch, median * 1000 / batch, median, statistics.median(ratios),
                    f"{min(ratios):.2f}-{max(ratios):.2f}", f"{agree[name]:.0%} of {batch}",
                ]
            )
    table = markdown_table(
        [
            "runtime", "precision", "batch", "ms / caption", "s / call", "speed-up vs PyTorch fp32 (median per round)",
            "per-round range", "captions = fp32",
        ],
        rows,
    )
    size = "tiny demo-size model (--quick)" if args.quick else "full size: ResNet-50 + GPT-2 small, random weights"
    header = (
        f"### Latency, {size}, {params:.0f} M parameters; 8 frames of {config.image_size}x{config.image_size}, "
        f"{new_tokens} new tokens per caption (greedy), median of {repeats} rounds\n\n"
        f"ONNX export + validation of this model took {built['onnx_export_s']:.0f} s; max |PyTorch - onnxruntime|: "
        f"{built['onnx_max_abs_diff']}.\n\n"
    )
    return header + table, results


# --- section 2 -----------------------------------------------------------------------------------------------------------
def bench_agreement(args: argparse.Namespace, work: Path, data_dir: Path) -> tuple[str, dict[str, Any]]:
    import torch

    from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor
    from vidgpt2.demo import DEMO_CONFIG, _train

    epochs = 2 if args.quick else 8
    model_dir = work / "trained" / "vidgpt2"
    if not (model_dir / "config.json").exists():
        log(f"agreement: training a demo-size model for {epochs} epochs ...")
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        train_args = argparse.Namespace(
            epochs=epochs, learning_rate=2e-3, seed=args.seed, num_frames=8, image_size=DEMO_CONFIG["image_size"]
        )  # demo._train reads image_size since the demo moved to 64 px frames (026340a)
        _train(model_dir, data_dir, train_args, blank_video=False)
    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = VidGPT2Processor.from_pretrained(model_dir)
    variants = build_variants(model, work / "onnx_trained", args.threads)["variants"]
    count = 24 if args.quick else 120
    pixels, test = test_pixels(data_dir, model.config.image_size, count)
    outputs: dict[str, Any] = {}
    for name, fn in variants.items():
        chunks = [fn(pixels[i : i + 32], 24) for i in range(0, len(pixels), 32)]
        outputs[name] = [row for chunk in chunks for row in _rows(chunk)]
    agree = agreement(outputs)
    references = [r[0] for r in test["references"]]
    rows = []
    results: dict[str, Any] = {"clips": len(references), "epochs": epochs, "variants": {}}
    for name in VARIANTS:
        captions = processor.batch_decode(torch.tensor(_pad(outputs[name])))
        exact = sum(c == r for c, r in zip(captions, references)) / len(references)
        results["variants"][name] = {"agreement_with_fp32": agree[name], "exact_match": exact}
        rows.append([*LABELS[name], f"{agree[name]:.1%}", f"{exact:.1%}"])
    table = markdown_table(["runtime", "precision", "captions identical to PyTorch fp32", "exact match (reference)"], rows)
    header = (
        f"### Caption agreement, demo-size model trained {epochs} epochs on {args.num_train} synthetic clips; "
        f"{len(references)} held-out synthetic clips, greedy\n\n"
    )
    return header + table, results


def _pad(rows: list[Any]) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [list(r) + [0] * (width - len(r)) for r in rows]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra_arguments)
    setup_torch(args.threads, args.seed)
    args.num_train = 96 if args.quick else 400
    results, started = begin_run("bench_inference", args)
    data_dir = synthetic_clips(CACHE_DIR / "inference_clips", args.num_train, 120, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_inference_", dir=CACHE_DIR) as tmp:
        work = Path(tmp)
        if "agreement" in args.sections:
            work_trained = CACHE_DIR / f"inference_{results['mode']}"
            text, results["agreement"] = bench_agreement(args, work_trained, data_dir)
            print("\n" + text)
        if "latency" in args.sections:
            text, results["latency"] = bench_latency(args, work, data_dir)
            print("\n" + text)
    results["runtime_s"] = time.perf_counter() - started
    results["load_average_at_end"] = load_average()
    print(f"\nRuntime {results['runtime_s']:.0f} s; load average at end {results['load_average_at_end']}")
    path = write_results("bench_inference_quick" if args.quick else "bench_inference", results)
    print(f"Raw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
