"""Decoding clips in DataLoader worker processes and stacking them into batches for `generate`: the core that
`vidgpt2.caption_videos` (`vidgpt2 caption`, `vidgpt2 evaluate`) and `pipeline("video-captioning")` on a list or a
dataset share.

    clips (video, start, end) -> ClipDataset (worker processes: fetch URL, decode, resize/crop/normalise)
    -> collate_clips -> {"indices", "failed", "inputs": {"pixel_values_videos": (B, T, 3, H, W)}}

Imports only the standard library, torch and the same-folder `video_io`, so it travels with a pushed model as remote
code next to `pipeline_vidgpt2.py` (`vidgpt2.hub` copies a module and its same-folder imports).

Sharing the CPU between decoding workers and the model (measured on this project's 2-core machine; the setting of
`benchmarks/bench_corpus.py`: 10 s 640x360 H.264 clips, ResNet-50 + GPT-2 small, batch 8, 20 tokens, 1 worker):
- Decoding + preprocessing one clip in a worker costs ~0.105 s wall, 0.125 s CPU (idle machine): ~0.065 s decoding
  the 300 frames up to the last sampled one (one keyframe interval of P-frames: none can be skipped), ~0.012 s
  resize/crop/normalise, the rest opening, seeking and RGB conversion. Against ~0.83 s of model time per clip, a
  serial decode-then-model loop would reach ~0.89x the model alone; overlapping must do better than that.
- Worker start-up was the larger loss: every DataLoader's worker imported torch, transformers and the video
  processor before its first clip (6.2-7.6 s at load 4), with the model idle waiting for its first batch, once per
  `caption_videos` call. The fork server now imports them once (`preload_in_fork_server`): 0.36-0.74 s.
- On few cores the model already keeps every core busy (torch's intra-op threads), and a worker at the model's
  priority preempts one of those threads in the middle of a parallel region, which then waits for it. Workers run at
  the lowest CPU priority there is (`decoding_worker_init`, `lower_cpu_priority`): Linux's SCHED_IDLE policy where it
  can be set, else nice 19. They decode in the time the model leaves idle (between ops, in the short per-token steps
  of `generate`); when the model waits for a batch it sleeps, so the worker still gets the CPU. SCHED_IDLE rather than
  nice 19 alone: a nice-19 process gets a weighted share of a busy core (weight 15 vs 1024 for a nice-0 thread;
  SCHED_IDLE: 3), and a torch thread that wakes may wait for the rest of its time slice; a SCHED_IDLE process is
  preempted by any waking normal process at once (Linux `check_preempt_wakeup_fair`: "Idle tasks are by definition
  preempted by non-idle tasks"), and a core running only SCHED_IDLE work counts as idle when the kernel places a
  waking thread. Interleaved per-batch timings under other people's load could not separate the priorities: the model
  beside a decoding process vs alone was 0.99x at default priority and 0.97x at nice 19 (load 5, medians of 8
  batches), 0.97x at nice 19 and 0.96x under SCHED_IDLE (load 7, medians of 3 interleaved batches, spreads of +-5%);
  decode-then-model in one process was 0.83x. The cost of this choice: on a machine whose cores other people's
  processes keep busy, a worker at the lowest priority gets little CPU (SCHED_IDLE even less than nice 19), so
  decoding slows there (8 clips took 27-31 s at SCHED_IDLE vs 22-27 s at nice 19 at load 7, still within one 28 s
  batch of the model; the first batch of a call, decoded with the model idle, came after 1.41 s under SCHED_IDLE vs
  1.23 s at nice 19 at load 3.5, medians of 4). `WORKER_NICENESS` is the niceness; `lower_cpu_priority` the policy.
- Batches travel as float32 `(B, T, 3, 224, 224)` through shared memory (38.5 MB at batch 8). `collate_clips`
  stacks a worker's batch straight into shared memory (torch's `default_collate`): collating + pickling cost 4.1 ms
  of the worker's CPU per clip instead of 6.2-9.4 ms (stacking into private memory that pickling copied again).
  uint8 frames would be 4x smaller but move the normalisation (2-3 ms per clip) to the model's process, on the
  model's critical path, to save the worker a few ms it spends in time the model leaves idle: not done.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

logger = logging.getLogger(__name__)

# `os.nice` increment of decoding workers: 19 is the lowest niceness there is (nice values go from -20 to 19). Where
# Linux's SCHED_IDLE policy can be set, it is set as well and is what decides (`lower_cpu_priority`).
WORKER_NICENESS = 19


def is_url(video: Any) -> bool:
    """Whether `video` is an http(s) URL (a string)."""
    return isinstance(video, str) and urllib.parse.urlparse(video).scheme in ("http", "https")


def fetch_video(url: str, timeout: float | None = 60.0) -> str:
    """Download a video URL to a temporary file and return its path (the caller removes it).

    Raises:
        ValueError: the download failed (naming the URL and the reason).
    """
    suffix = os.path.splitext(urllib.parse.urlparse(url).path)[1] or ".mp4"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only (is_url)
            data = response.read()
    except OSError as error:
        raise ValueError(f"Could not download the video {url}: {error}") from error
    handle, path = tempfile.mkstemp(prefix="vidgpt2-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return path


def decode_clip(
    video_processor: Any,
    video: Any,
    start: float | None = None,
    end: float | None = None,
    num_frames: int | None = None,
    timeout: float | None = None,
) -> torch.Tensor:
    """One video (file, URL, or in-memory frames the video processor accepts), or its segment `[start, end)` in
    seconds, as `pixel_values_videos` of shape `(T, 3, H, W)` from `video_processor` (sampling, resize, crop and
    normalisation as the processor documents). A URL is downloaded to a temporary file, removed once decoded.

    Raises:
        ValueError, FileNotFoundError, video_io.VideoDecodeError: from the download or the video processor.
    """
    downloaded = None
    try:
        if is_url(video):
            video = downloaded = fetch_video(video, timeout=timeout if timeout is not None else 60.0)
        kwargs = {k: v for k, v in (("num_frames", num_frames), ("start", start), ("end", end)) if v is not None}
        return video_processor([video], return_tensors="pt", **kwargs)["pixel_values_videos"][0]  # (T, 3, H, W)
    finally:
        if downloaded is not None:
            os.remove(downloaded)


class ClipDataset(Dataset):
    """Clip `i` -> `{"index": i, "pixel_values_videos": (T, 3, H, W)}`, decoded by `decode_clip`; runs in DataLoader
    worker processes.

    Args:
        clips: objects with `video`, `start` and `end` attributes (e.g. `vidgpt2.captioning.Clip`) or
            `(video, start, end)` tuples; `video` is a path, URL or in-memory video; `start`/`end` seconds or None.
        video_processor: a `VidGPT2VideoProcessor` (pickled to the workers).
        num_frames, timeout: passed to `decode_clip` for every clip (None: the processor's default / 60 s).
        errors: exception types that make one clip fail without stopping the run: such a clip becomes
            `{"index": i, "error": "<Type>: <first line of the message>"}`. Anything else is raised (from a worker,
            DataLoader re-raises it in the main process with the worker's traceback).
    """

    def __init__(
        self,
        clips: Sequence[Any],
        video_processor: Any,
        *,
        num_frames: int | None = None,
        timeout: float | None = None,
        errors: tuple[type[BaseException], ...] = (),
    ):
        self.clips = list(clips)
        self.video_processor = video_processor
        self.num_frames, self.timeout, self.errors = num_frames, timeout, errors

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, start, end = _video_start_end(self.clips[index])
        try:
            return {"index": index, **self.load(video, start, end)}
        except self.errors as error:
            return {"index": index, "error": describe_error(error)}

    def load(self, video: Any, start: float | None, end: float | None) -> dict[str, torch.Tensor]:
        """The model inputs of one clip: `{"pixel_values_videos": (T, 3, H, W)}` (subclasses may read others)."""
        pixels = decode_clip(self.video_processor, video, start, end, self.num_frames, self.timeout)
        return {"pixel_values_videos": pixels}


def _video_start_end(clip: Any) -> tuple[Any, float | None, float | None]:
    if isinstance(clip, tuple):
        return clip
    return clip.video, clip.start, clip.end


def describe_error(error: BaseException) -> str:
    """`"<Type>: <first line of the message>"` (or just the type), as failed rows show it."""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decoded clips of a batch, with torch's `default_collate`: in a DataLoader worker it stacks straight
    into shared memory, which is how the batch reaches the main process, instead of stacking into private memory
    that pickling then copies to shared memory (38.5 MB at batch 8: 3.7 ms of the worker's CPU per clip).

    Returns:
        `{"indices": [i, ...], "failed": [(i, reason), ...], "inputs": {name: (B, ...)}}`; `inputs` is absent when
        every clip of the batch failed. `name` is `pixel_values_videos` `(B, T, 3, H, W)` or whatever `load` gave.
    """
    decoded = [item for item in items if "error" not in item]
    batch: dict[str, Any] = {
        "indices": [item["index"] for item in decoded],
        "failed": [(item["index"], item["error"]) for item in items if "error" in item],
    }
    if decoded:
        names = [name for name in decoded[0] if name != "index"]
        batch["inputs"] = {name: default_collate([item[name] for item in decoded]) for name in names}  # (B, ...)
    return batch


def worker_start_method(num_workers: int) -> str | None:
    """How DataLoader workers are started: ``"forkserver"`` where the platform has it and ``num_workers > 0``.

    PyTorch's default on Linux forks the current process, threads and held locks included. A worker forked while
    another thread (tqdm's monitor, a queue feeder, a thread pool) holds a lock can wait forever on it; we hit this
    with torch 2.14, whose worker start-up formats a stack trace (``torch.xpu`` lazy seeding). A fork server starts
    workers from a clean single-threaded process instead (Python 3.14's default on Linux); the dataset and collator
    are pickled to them. Returns None (PyTorch's default) for ``num_workers == 0`` or where forkserver is missing.
    """
    import multiprocessing

    if num_workers <= 0 or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    return "forkserver"


def lower_cpu_priority() -> str:
    """Put the calling process at the lowest CPU priority this platform lets it take, and say which it got:

    - ``"SCHED_IDLE"`` (Linux, `os.sched_setscheduler`, see sched(7)): "lower even than a +19 nice value"; the
      process runs on a core that would otherwise idle, beside busy ones it gets a load weight of 3 (a nice-0 process:
      1024), and a waking process of any normal priority preempts it at once. Its niceness is set to
      `WORKER_NICENESS` as well (ignored by the kernel under SCHED_IDLE; it is what `ps`/`top` show, and what is
      left if the policy is later reset).
    - ``"nice"``: where SCHED_IDLE is missing or refused (macOS, some sandboxes), `os.nice(WORKER_NICENESS)` alone: the
      lowest priority of the normal policy, which still gets a small share of a busy core (weight 15, 1.4% beside one
      nice-0 process), and a waking process may wait for the end of its time slice.
    - ``"unchanged"``: neither could be set (Windows has no `os.nice`; a sandbox may refuse both).

    Raises nothing: a refused change leaves the priority as it was.
    """
    policy = "unchanged"
    if hasattr(os, "nice"):
        try:
            os.nice(WORKER_NICENESS)
            policy = "nice"
        except OSError as error:
            logger.debug("os.nice(%d) failed: %s", WORKER_NICENESS, error)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            policy = "SCHED_IDLE"
        except OSError as error:
            logger.debug("os.sched_setscheduler(SCHED_IDLE) failed: %s", error)
    return policy


def decoding_worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn` of decoding workers: the lowest CPU priority there is (`lower_cpu_priority`:
    SCHED_IDLE on Linux, else `os.nice(WORKER_NICENESS)`), so that decoding takes the CPU time the model leaves idle
    instead of preempting torch's threads (see the module docstring). Logs a warning (once, from each worker) when
    neither could be set: decoding then competes with the model at its priority."""
    if lower_cpu_priority() == "unchanged":
        logger.warning(
            "Decoding worker %d keeps its CPU priority (neither SCHED_IDLE nor os.nice(%d) could be set): it competes "
            "with the model for the CPU.",
            worker_id,
            WORKER_NICENESS,
        )


def clip_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """A DataLoader over `dataset` (a `ClipDataset`) in batches of `batch_size` clips, in order, decoded by
    `num_workers` worker processes (0: in this process) started by `worker_start_method` from a fork server that has
    the decoding modules imported (`preload_in_fork_server`), at the lowest CPU priority (`decoding_worker_init`);
    batches are `collate_clips` dicts.

    Raises:
        ValueError: `batch_size < 1` or `num_workers < 0`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0 (0 decodes in this process), got {num_workers!r}.")
    start_method = worker_start_method(num_workers)
    if start_method == "forkserver":
        preload_in_fork_server(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_clips,
        multiprocessing_context=start_method,
        worker_init_fn=decoding_worker_init if num_workers > 0 else None,
    )


# what a script that starts decoding workers at import time needs: the fork server runs the main module again
WORKER_START_HINT = (
    "Decoding workers are processes started from a fork server, which imports the main script again: a script must "
    "call caption_videos or the pipeline under `if __name__ == \"__main__\":` (as for any torch DataLoader with "
    "workers), or pass num_workers=0 to decode in this process."
)


def iterate_batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """The batches of a `clip_loader`; a worker that died says what to check.

    Raises:
        RuntimeError: PyTorch's "DataLoader worker ... exited unexpectedly", with `WORKER_START_HINT` added (the
            usual cause in a script: no ``if __name__ == "__main__":`` guard).
    """
    try:
        yield from loader
    except RuntimeError as error:
        if "exited unexpectedly" not in str(error):
            raise
        raise RuntimeError(f"{error}. {WORKER_START_HINT}") from error


def preload_in_fork_server(dataset: Dataset) -> list[str]:
    """Have the fork server import, once, the modules every decoding worker needs to unpickle `dataset` (its class,
    its video processor's class, this module: torch, transformers, PyAV), so that each DataLoader's workers start in
    well under a second instead of importing them again.

    Measured on 2 busy cores (load average 4): a worker's first clip arrived 6.2-7.6 s after the DataLoader started
    without this, 0.36-0.74 s with it (after the fork server's own one-off start). Without it `caption_videos` paid
    that start-up once per call, with the model idle waiting for its first batch.

    Has an effect only before this process's fork server starts (the first DataLoader with forkserver workers);
    keeps the modules already listed (Python's default is `["__main__"]`). Returns the preload list.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the process-wide server; `set_forkserver_preload` replaces its list
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    video_processor = getattr(dataset, "video_processor", None)
    for obj in (dataset, video_processor):
        module = type(obj).__module__ if obj is not None else None
        if module and module not in modules and module != "builtins":
            modules.append(module)
    if __name__ not in modules:
        modules.append(__name__)
    server.set_forkserver_preload(modules)
    return modules


__all__ = [
    "ClipDataset",
    "clip_loader",
    "collate_clips",
    "decode_clip",
    "decoding_worker_init",
    "preload_in_fork_server",
    "describe_error",
    "fetch_video",
    "is_url",
    "iterate_batches",
    "lower_cpu_priority",
    "worker_start_method",
]
