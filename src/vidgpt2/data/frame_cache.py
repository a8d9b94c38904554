"""A folder of decoded frames, keyed by video and segment: decode each clip once when the vision tower trains.

The feature cache (`feature_cache.py`) only helps while the vision tower is frozen: its output changes as soon as the
tower trains. What stays fixed is everything *before* the tower: decoding, frame sampling, resizing and cropping.
For small frames that part costs more than the model (a from-scratch model on 12 frames of 64x64: about 14 ms of CPU
per clip to decode, against a few ms to train on it; BENCHMARKS.md, "pixel path"). This cache stores each clip once,
as the processor would give it just before rescaling and normalisation, and the collator does those two cheap steps
per batch. Layout of a cache folder:

    metadata.json          the processing settings the frames were made with, and their fingerprint
    frames/<key>.npy        one file per (video, start, end): uint8 RGB frames (T, H, W, 3) at the processor's
                            output size (after resize and centre crop), read memory-mapped

`.npy` is numpy's documented format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html); files
are loaded with `allow_pickle=False`, so a cache file can hold nothing but an array. Each file is written to a
temporary name and renamed, so an interrupted extraction leaves no half-written entry and a rerun resumes where it
stopped. Keys are `segment_key` (`_cache.py`: absolute path and segment bounds), as in the feature cache.

The fingerprint covers every setting that changes the stored pixels (frame count, resize, crop, resampling, keyframe
tolerance, RGB conversion); mean, std and rescale factor are applied at batch time and do not invalidate a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._cache import METADATA_FILE, SegmentCache, segment_key  # noqa: F401  (segment_key: importable from here, as before)

logger = logging.getLogger(__name__)

FORMAT = "vidgpt2-frame-cache/1"  # bump when the file layout changes


def frame_settings(video_processor: Any) -> dict[str, Any]:
    """The video-processor settings that decide the stored uint8 frames (not mean/std/rescale: batch time)."""
    return {
        "format": FORMAT,
        "num_frames": int(video_processor.num_frames),
        "do_resize": bool(video_processor.do_resize),
        "size": dict(video_processor.size) if video_processor.size is not None else None,
        "resample": int(video_processor.resample) if video_processor.resample is not None else None,
        "do_center_crop": bool(video_processor.do_center_crop),
        "crop_size": dict(video_processor.crop_size) if video_processor.crop_size is not None else None,
        "do_convert_rgb": bool(video_processor.do_convert_rgb),
        "keyframe_tolerance": float(video_processor.keyframe_tolerance),
    }


def frame_fingerprint(video_processor: Any) -> str:
    """sha1 of `frame_settings`: frames are valid only for a processor with the same settings."""
    return hashlib.sha1(json.dumps(frame_settings(video_processor), sort_keys=True).encode()).hexdigest()


def decode_clip(video_processor: Any, video: str, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Decode, sample, resize and crop one clip as `video_processor` does, stopping before rescale/normalise.

    Returns uint8 `(T, H, W, 3)`. Raises what the processor raises (FileNotFoundError, VideoDecodeError, ValueError).
    """
    out = video_processor(video, start=start, end=end, do_rescale=False, do_normalize=False, return_tensors="pt")
    frames = out["pixel_values_videos"][0]  # (T, 3, H, W) uint8
    if frames.dtype != torch.uint8:
        raise RuntimeError(f"{type(video_processor).__name__} returned {frames.dtype} frames before normalisation")
    return frames.permute(0, 2, 3, 1).contiguous().numpy()  # (T, 3, H, W) -> (T, H, W, 3)


class FrameCache(SegmentCache):
    """Read and write access to a frame-cache folder (a dataclass with one field, `root`)."""

    entries_dir_name = "frames"
    entry_suffix = ".npy"
    kind = "frame cache"
    fill_hint = "Run `vidgpt2 extract-frames` (or `vidgpt2 train --frame-cache`) over this dataset first."

    frames_dir = SegmentCache.entries_dir  # the same property under this cache's own name

    def write(self, video: str, start: float | None, end: float | None, frames: np.ndarray) -> None:
        """Store uint8 `(T, H, W, 3)` frames atomically (temporary file, then rename)."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"FrameCache.write takes uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
        path = self.path_for(video, start, end)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
            np.save(f, np.ascontiguousarray(frames), allow_pickle=False)
        os.replace(tmp, path)

    def read(self, video: str, start: float | None = None, end: float | None = None) -> np.ndarray:
        """The cached uint8 `(T, H, W, 3)` frames, memory-mapped (read-only).

        Raises:
            FileNotFoundError: the clip is not cached.
            ValueError: the file is not an uncompressed uint8 (T, H, W, 3) `.npy` array (damaged or foreign).
        """
        path = self.existing_path(video, start, end)
        try:
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise ValueError(f"Damaged frame-cache file {path} ({video!r}): {error}; delete it and re-extract.") from error
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"Frame-cache file {path} ({video!r}) holds {frames.dtype} {frames.shape}, not uint8 (T, H, W, 3); "
                "delete it and re-extract."
            )
        return frames

    def write_metadata(self, video_processor: Any) -> None:
        """Record the processing settings; raise if the folder holds frames made with other settings."""
        if (self.root / METADATA_FILE).exists():
            self.check_compatible(video_processor)
            return
        self._store_metadata({"fingerprint": frame_fingerprint(video_processor), "settings": frame_settings(video_processor)})

    def check_compatible(self, video_processor: Any) -> None:
        """Raise ValueError if this cache's frames were made with other processing settings than `video_processor`."""
        found = self.metadata()
        if found.get("fingerprint") != frame_fingerprint(video_processor):
            expected = frame_settings(video_processor)
            stored = found.get("settings", {})
            changed = sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))
            raise ValueError(
                f"The frame cache {self.root} was made with other processing settings than this model's processor "
                f"(differing: {', '.join(changed) or 'fingerprint'}). Use a new --frame-cache folder or delete the old one."
            )


def normalize_frames(frames: torch.Tensor, video_processor: Any) -> torch.Tensor:
    """uint8 `(B, T, H, W, 3)` -> float32 `(B, T, 3, H, W)`, rescaled and normalised exactly as `video_processor`
    does after its centre crop (with its own fused `rescale_and_normalize`)."""
    videos = frames.permute(0, 1, 4, 2, 3)  # (B, T, H, W, 3) -> (B, T, 3, H, W)
    vp = video_processor
    mean = tuple(vp.image_mean) if vp.image_mean is not None else None
    std = tuple(vp.image_std) if vp.image_std is not None else None
    out = vp.rescale_and_normalize(videos, vp.do_rescale, vp.rescale_factor, vp.do_normalize, mean, std)
    return out if out.dtype == torch.float32 else out.float()


def extract_frames(
    video_processor: Any,
    samples: Sequence[dict[str, Any]],
    output_dir: str | Path,
    *,
    num_workers: int | None = None,
    on_bad_video: str = "error",
    show_progress: bool = True,
) -> FrameCache:
    """Decode every clip of `samples` (dicts with `video`, optional `start`/`end`) once into a frame cache.

    Resumable: cached clips are skipped. `num_workers` threads decode in parallel (PyAV and torch release the GIL
    while decoding and resizing); default: CPU count, at most 8. With ``on_bad_video="skip"`` a clip that fails to
    decode is logged and left out (the collator then skips it per sample); with ``"error"`` the first failure raises
    after the clips already decoded are stored.

    Raises:
        ValueError: the folder holds frames made with other processing settings, or a bad `on_bad_video`.
        FileNotFoundError, VideoDecodeError: a clip failed to decode (``on_bad_video="error"``).
    """
    from tqdm.auto import tqdm

    if on_bad_video not in ("error", "skip"):
        raise ValueError(f"on_bad_video must be 'error' or 'skip', got {on_bad_video!r}")
    cache = FrameCache(Path(output_dir))
    cache.write_metadata(video_processor)
    todo = cache.missing(samples)
    num_workers = num_workers or min(8, os.cpu_count() or 1)
    logger.info("Decoding %d clips into the frame cache %s (%d threads)", len(todo), cache.root, num_workers)

    def work(sample: dict[str, Any]) -> str | None:
        video, start, end = sample["video"], sample.get("start"), sample.get("end")
        try:
            cache.write(video, start, end, decode_clip(video_processor, video, start, end))
        except (OSError, ValueError) as error:
            if on_bad_video == "error":
                raise
            return f"{video} (start={start}, end={end}): {' '.join(str(error).split())}"
        return None

    failures = []
    progress = tqdm(total=len(todo), desc="extract frames", unit="clip", disable=not show_progress or not todo)
    pool = ThreadPoolExecutor(max_workers=num_workers)
    try:
        for failure in pool.map(work, todo):
            if failure is not None:
                failures.append(failure)
                logger.warning("frame cache: skipped %s", failure)
            progress.update(1)
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure: finish the running clips, start no new ones
        progress.close()
    if failures:
        logger.warning("%d of %d clips failed to decode and are not cached (--on-bad-video skip)", len(failures), len(todo))
    return cache


__all__ = ["FrameCache", "decode_clip", "extract_frames", "frame_fingerprint", "frame_settings", "normalize_frames"]
