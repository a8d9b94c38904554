"""Helpers shared by the benchmark scripts: arguments, machine info, the start and end of a run, timing, markdown
tables, JSON results, and the models and clips several scripts build.

Not a benchmark itself (`run_all.py` only runs `bench_*.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

# The machine is shared (tests, other jobs): with the default (spinning) OpenMP wait policy, 2 torch threads on 2
# oversubscribed cores slow down 5-20x and timings become noise. Passive waiting keeps them usable. It must be set
# before torch is imported; export OMP_WAIT_POLICY=ACTIVE to measure the default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"  # generated videos and datasets; not committed
NUM_THREADS = 2


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and few repeats: a smoke run in 1-2 minutes.")
    parser.add_argument("--threads", type=int, default=NUM_THREADS, help="torch.set_num_threads (default 2).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed for inputs and models.")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def setup_torch(threads: int, seed: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hf_logging.set_verbosity_error()


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    import av
    import numpy
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("unknown", "x86_64", ""):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gb = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1) if memory_gb else None,
        "cpu_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "torch_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
        "numpy": numpy.__version__,
        "load_average_at_start": load_average(),
    }


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['memory_gb']} GB RAM, "
        f"bf16 instructions: {'yes' if info['cpu_bf16'] else 'no'}; torch.set_num_threads({info['torch_threads']}), "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}"
    )
    print(
        f"Versions: python {info['python']}, torch {info['torch']}, transformers {info['transformers']}, "
        f"av {info['av']}, numpy {info['numpy']}"
    )
    print(f"Load average (1/5/15 min) at start: {info['load_average_at_start']}")


def begin_run(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Print the report's heading (`# <name> (quick|full mode)`) and the machine; return the results dict to fill,
    `{"mode", "machine"}`, and the `time.perf_counter()` start of the run."""
    info = machine_info(args.threads)
    mode = "quick" if args.quick else "full"
    print(f"# {name} ({mode} mode)\n")
    print_machine(info)
    return {"mode": mode, "machine": info}, time.perf_counter()


def finish_run(name: str, quick: bool, results: dict[str, Any], started: float) -> Path:
    """Add `runtime_s` and `load_average_at_end` to `results`, write results/<name>[_quick].json, print a last line
    with both and the path; return the path."""
    results["runtime_s"] = time.perf_counter() - started
    results["load_average_at_end"] = load_average()
    path = write_results(f"{name}_quick" if quick else name, results)
    print(
        f"\nLoad average at end: {results['load_average_at_end']}. Runtime {results['runtime_s']:.0f} s. Results: {path}"
    )
    return path


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (s) of each callable, run in rounds (A, B, C, A, B, C, ...) so that machine load drifts hit
    every variant alike. `warmup` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn)[0])
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }


def per_round_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Ratio within each round: robust to load changes between rounds."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


# --- models and clips several benchmarks use ---------------------------------------------------------------------------
def small_model_config(num_frames: int, **extra: Any) -> dict[str, Any]:
    """A fresh dict: the small from-scratch model of the training-side benchmarks on 64x64 frames, pinned here so that
    their results stay comparable when the demo changes: `vidgpt2.demo.DEMO_CONFIG` as of 2026-11-27 13:00
    (basic-block ResNet, 2-layer 128-d GPT-2, vision tower trained). 64 px gives a 2x2 feature map, i.e. 4 spatial
    tokens per frame. `extra` adds or overrides config fields (after the others)."""
    return {
        "vision_config": {
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
        },
        "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
        "image_size": 64,
        "num_frames": num_frames,
        "num_visual_layers": 1,
        "freeze_vision": False,
        **extra,
    }


def full_size_model_and_processor(captions: Sequence[str]) -> tuple[Any, Any]:
    """ResNet-50 + GPT-2 small (the default VidGPT2Config, 50,257-token vocabulary kept), random init (seed torch
    first), in training mode; with a word-level tokenizer built from `captions` (no GPT-2 tokenizer download) whose
    eos is also bos, pad and decoder start: its ids (< 50,257) are valid for the full vocabulary."""
    from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration, VidGPT2Processor, VidGPT2VideoProcessor
    from vidgpt2.tokenization import build_word_level_tokenizer

    tokenizer = build_word_level_tokenizer(list(captions))
    eos = tokenizer.eos_token_id
    config = VidGPT2Config(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, decoder_start_token_id=eos)
    model = VidGPT2ForConditionalGeneration(config)
    processor = VidGPT2Processor(video_processor=VidGPT2VideoProcessor(num_frames=config.num_frames), tokenizer=tokenizer)
    return model, processor


def synthetic_dataset(data_dir: Path, done_file: str, **kwargs: Any) -> Path:
    """`vidgpt2.data.write_synthetic_dataset(data_dir, **kwargs, progress=False)` unless `data_dir/done_file` (the
    last split file it writes) exists already: synthetic clips are made once and kept under CACHE_DIR. Returns
    `data_dir`."""
    from vidgpt2.data import write_synthetic_dataset

    if not (data_dir / done_file).exists():
        write_synthetic_dataset(data_dir, **kwargs, progress=False, overwrite=True)  # an unfinished copy is replaced
    return data_dir


def cached_test_clip(seconds: int, width: int, height: int) -> Path:
    """A `write_test_clip` clip (30 fps, keyframe every 250 frames) of that length and size, encoded once into
    CACHE_DIR/videos/clip_<seconds>s_<height>p_30fps_gop250.mp4 and reused (encoding time goes to stderr)."""
    path = CACHE_DIR / "videos" / f"clip_{seconds}s_{height}p_30fps_gop250.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"  encoding {path.name} (once; cached) ...", file=sys.stderr, flush=True)
        elapsed, _ = timed(lambda: write_test_clip(path, seconds, width, height))
        print(f"  ... {elapsed:.0f} s", file=sys.stderr, flush=True)
    return path


def write_test_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30, gop: int = 250) -> None:
    """A clip with a textured, translating picture (H.264 ultrafast, crf 23, one keyframe every `gop` frames)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : 2 * height, 0 : 2 * width].astype(np.float32)
    texture = 128 + 50 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + 30 * np.sin((xx + yy) / 91.0)
    luma = np.clip(texture + rng.normal(0, 6, size=texture.shape), 16, 235).astype(np.uint8)
    chroma_u = np.clip(128 + 40 * np.sin(xx[::2, ::2] / 53.0), 16, 240).astype(np.uint8)
    chroma_v = np.clip(128 + 40 * np.cos(yy[::2, ::2] / 41.0), 16, 240).astype(np.uint8)
    tmp = path.with_suffix(".tmp.mp4")
    plane = np.empty((height * 3 // 2, width), np.uint8)  # yuv420p: Y rows, then U and V quarter planes
    u_view = plane[height : height + height // 4].reshape(height // 2, width // 2)
    v_view = plane[height + height // 4 :].reshape(height // 2, width // 2)
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        for t in range(int(seconds * fps)):
            ox, oy = (3 * t) % width, (2 * t) % height
            plane[:height] = luma[oy : oy + height, ox : ox + width]
            u_view[:] = chroma_u[oy // 2 : oy // 2 + height // 2, ox // 2 : ox // 2 + width // 2]
            v_view[:] = chroma_v[oy // 2 : oy // 2 + height // 2, ox // 2 : ox // 2 + width // 2]
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.rename(path)
