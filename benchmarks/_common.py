"""Helpers shared by the benchmark scripts: arguments, machine info, timing, markdown tables, JSON results.

Not a benchmark itself (`run_all.py` only runs `bench_*.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
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
