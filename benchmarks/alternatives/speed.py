"""Speed and memory: one worker process per model, driven in round-robin so that every model sees the same machine
load; ratios are taken between calls that ran seconds apart.

Memory is the peak resident set size (RSS) of the worker during one call minus its RSS just before the call:
`gc.collect()` and glibc `malloc_trim(0)` first hand freed memory back to the OS, then `/proc/self/clear_refs` resets
the kernel's high-water mark (VmHWM) and VmHWM is read after the call. It counts everything the call allocates
(activations, caches, optimizer state on the first training step), not the weights already loaded. On CUDA the
peak of `torch.cuda.max_memory_allocated` minus the allocation before the call is reported instead.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import multiprocessing as mp
import os
import time
import traceback
from typing import Any

import torch

from .models import Special, build, caption_loss, full_size_special, generate, parameter_counts

_MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Context manager: `.delta_mb` = peak memory during the block minus memory before it (RSS or CUDA)."""

    def __init__(self, device: str):
        self.device = device
        self.delta_mb: float | None = None
        self.method = "cuda max_memory_allocated" if device.startswith("cuda") else "RSS high-water mark (VmHWM)"

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self._base = _proc_status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self._resettable = True
        except OSError:
            self._resettable = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.delta_mb = (torch.cuda.max_memory_allocated() - self._base) / _MB
        elif self._resettable and self._base is not None:
            self.delta_mb = (_proc_status_kb("VmHWM") - self._base) / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------------------
# the worker: one model, commands in, measurements out
# ---------------------------------------------------------------------------------------------------------------------
class _Runner:
    def __init__(self, name: str, size: str, frames: int, image_size: int, special: Special | None, device: str):
        self.name, self.size, self.frames, self.image_size, self.device = name, size, frames, image_size, device
        self.special = special if special is not None else full_size_special(name)
        torch.manual_seed(0)
        self.model = build(name, size, self.special, frames, image_size).to(device)
        self.optimizers: dict[bool, torch.optim.Optimizer] = {}

    def pixels(self, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        generator = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, self.frames, 3, self.image_size, self.image_size, generator=generator)
        return x.to(self.device, dtype)  # (B, T, 3, H, W)

    def info(self) -> dict[str, Any]:
        return {"parameters": parameter_counts(self.name, self.model)}

    def train_step(self, batch: int, caption_tokens: int, train_vision: bool | None = None) -> dict[str, Any]:
        """One AdamW step on `batch` clips with `caption_tokens`-long captions."""
        if self.name.startswith("vidgpt2") and train_vision is not None:
            self.model.encoder.vision_tower.requires_grad_(train_vision)
        key = bool(train_vision)
        model = self.model.train()
        if key not in self.optimizers:
            self.optimizers[key] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        optimizer = self.optimizers[key]
        generator = torch.Generator().manual_seed(1)
        labels = torch.randint(2, min(self.special.vocab_size, 1000), (batch, caption_tokens), generator=generator)
        labels[:, -1] = self.special.eos
        pixels, labels = self.pixels(batch), labels.to(self.device)
        with PeakMemory(self.device) as memory:
            _sync(self.device)
            start = time.perf_counter()
            loss = caption_loss(self.name, model, pixels, labels, self.special)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(self.device)
            seconds = time.perf_counter() - start
        if self.name.startswith("vidgpt2"):  # back to the config's setting
            self.model.encoder.vision_tower.requires_grad_(not self.model.config.freeze_vision)
        return {"seconds": seconds, "samples_per_s": batch / seconds, "peak_mb": memory.delta_mb}

    def caption(self, batch: int, num_beams: int, new_tokens: int) -> dict[str, Any]:
        """Caption `batch` clips with exactly `new_tokens` tokens (min_new_tokens = max_new_tokens)."""
        model = self.model.eval()
        pixels = self.pixels(batch)
        with PeakMemory(self.device) as memory:
            _sync(self.device)
            start = time.perf_counter()
            ids = generate(
                self.name, model, pixels, self.special, num_beams=num_beams,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            )
            _sync(self.device)
            seconds = time.perf_counter() - start
        assert ids.shape[1] == new_tokens + 1, f"{self.name} generated {ids.shape[1] - 1} tokens, not {new_tokens}"
        return {"seconds": seconds, "peak_mb": memory.delta_mb}

    # --- the compute bound (vidgpt2 only) -----------------------------------------------------------------------------
    def flops_per_frame(self) -> dict[str, float]:
        """FLOPs of one frame through the vision tower (FlopCounterMode: 2 x multiply-accumulates of convs/matmuls)."""
        from torch.utils.flop_counter import FlopCounterMode

        tower = self.model.encoder.vision_tower.eval()
        frame = torch.randn(1, 3, self.image_size, self.image_size, device=self.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            tower(frame)
        return {"gflops_per_frame": counter.get_total_flops() / 1e9}

    def matmul(self, dtype: str, n: int, repeats: int = 3) -> dict[str, Any]:
        """GFLOP/s of an (n x n) @ (n x n) torch.matmul: the fastest of `repeats` after a warm-up one."""
        torch_dtype = getattr(torch, dtype)
        a = torch.randn(n, n, device=self.device).to(torch_dtype)
        b = torch.randn(n, n, device=self.device).to(torch_dtype)
        torch.matmul(a, b)
        times, cpu_times = [], []
        for _ in range(repeats):
            _sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            torch.matmul(a, b)
            _sync(self.device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        flops = 2 * n**3
        return {"seconds": min(times), "gflops_per_s": flops / min(times) / 1e9,
                "gflops_per_cpu_s": flops / min(cpu_times) / 1e9}

    def extract(self, dtype: str, batch_frames: int, repeats: int = 2) -> dict[str, Any]:
        """`get_video_features` on `batch_frames` frames (batch_frames / T videos of T frames): the fastest of
        `repeats` after a warm-up call."""
        if dtype == "float32":
            encoder = self.model.encoder
        else:
            if not hasattr(self, "_encoder_" + dtype):
                setattr(self, "_encoder_" + dtype, copy.deepcopy(self.model.encoder).to(getattr(torch, dtype)))
            encoder = getattr(self, "_encoder_" + dtype)
        encoder.eval()
        pixels = self.pixels(batch_frames // self.frames, getattr(torch, dtype))
        times, cpu_times = [], []
        with torch.no_grad():
            encoder.get_video_features(pixels)  # warm-up (oneDNN picks kernels)
            for _ in range(repeats):
                _sync(self.device)
                start, cpu_start = time.perf_counter(), time.process_time()
                features = encoder.get_video_features(pixels).pooler_output
                _sync(self.device)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        assert features.shape[:2] == pixels.shape[:2]
        return {"seconds": min(times), "frames_per_s": batch_frames / min(times),
                "frames_per_cpu_s": batch_frames / min(cpu_times)}


def _worker_main(conn: Any, spec: dict[str, Any], threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        start = time.perf_counter()
        runner = _Runner(**spec)
        conn.send({"ok": True, "build_seconds": time.perf_counter() - start, **runner.info()})
    except Exception:  # noqa: BLE001 - reported to the parent
        conn.send({"ok": False, "error": traceback.format_exc()})
        return
    while True:
        command, kwargs = conn.recv()
        if command == "stop":
            return
        try:
            conn.send({"ok": True, **getattr(runner, command)(**kwargs)})
        except Exception:  # noqa: BLE001
            conn.send({"ok": False, "error": traceback.format_exc()})


class Worker:
    """A model living in its own process (same thread count as every other worker)."""

    def __init__(self, name: str, size: str, frames: int, image_size: int, threads: int,
                 special: Special | None = None, device: str = "cpu"):
        self.name = name
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        spec = dict(name=name, size=size, frames=frames, image_size=image_size, special=special, device=device)
        self._process = context.Process(target=_worker_main, args=(child, spec, threads), daemon=True)
        self._process.start()
        self.ready = self._conn.recv()
        if not self.ready["ok"]:
            self.close()
            raise RuntimeError(f"building {name} ({size}) failed:\n{self.ready['error']}")

    def call(self, command: str, **kwargs: Any) -> dict[str, Any]:
        self._conn.send((command, kwargs))
        result = self._conn.recv()
        if not result["ok"]:
            raise RuntimeError(f"{self.name}.{command}({kwargs}) failed:\n{result['error']}")
        return result

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop", {}))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
