"""A folder of precomputed vision-tower features, keyed by video and segment.

The frozen ResNet dominates training cost; running it once per clip and reading its output afterwards makes each
epoch a pass over the (small) decoder only. Layout of a cache folder:

    metadata.json           what produced the features (vision-tower fingerprint, frames, token mode, image size)
    features/<key>.safetensors   one file per (video, start, end): {"video_features": (T, C) or (T, h*w, C)}

Each file is written to a temporary name, flushed to disk and renamed, so an interrupted extraction (kill -9,
preemption) leaves no half-written entry under a final name, and a rerun resumes where it stopped: it skips every
readable entry, redoes entries that are truncated or unreadable (copied or synced half-way, a crash of the machine),
and deletes the temporary files of the interrupted run. Several processes (accelerate / torchrun) each take a
disjoint share of the clips; run one extraction per cache folder at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._cache import METADATA_FILE, SegmentCache, segment_key

logger = logging.getLogger(__name__)

FEATURES_KEY = "video_features"
TMP_MARKER = ".tmp"  # `<key>.tmp<pid>`: a feature file being written


def vision_fingerprint(model: Any, dtype: str = "float32") -> str:
    """A hash of the vision tower's weights, the token settings and the compute dtype ("float32", or "bfloat16" for
    features extracted under bf16 autocast): features are only valid for the same tower, and a cache holds one dtype.
    float32 adds nothing to the hash, so caches written before the dtype was recorded keep their fingerprint."""
    digest = hashlib.sha1()
    config = model.config
    tokens = f"{config.visual_tokens}{config.grid_size}" if config.visual_tokens in ("grid", "motion") else config.visual_tokens
    digest.update(f"{tokens}|{config.image_size}".encode())
    if dtype != "float32":
        digest.update(f"|dtype={dtype}".encode())
    for name, tensor in sorted(model.encoder.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def entry_problem(path: Path) -> str | None:
    """Why the feature file `path` cannot be used, or None when its header is whole and holds `video_features`.

    Reads the safetensors header only; safetensors checks that the header's offsets cover the file exactly, which
    catches truncation. A file damaged at the right length is only caught when read (`FeatureCache.read`).
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            if FEATURES_KEY not in handle.keys():
                return f"no {FEATURES_KEY!r} tensor"
            rank = len(handle.get_slice(FEATURES_KEY).get_shape())
    except (SafetensorError, OSError) as error:
        return str(error)
    if rank not in (2, 3):
        return f"{FEATURES_KEY!r} has rank {rank}, expected (T, C) or (T, h*w, C)"
    return None


class FeatureCache(SegmentCache):
    """Read and write access to a feature-cache folder (a dataclass with one field, `root`)."""

    entries_dir_name = "features"
    entry_suffix = ".safetensors"
    kind = "feature cache"
    fill_hint = "Run `vidgpt2 extract-features` over this dataset first."

    features_dir = SegmentCache.entries_dir  # the same property under this cache's own name

    def has(self, video: str, start: float | None = None, end: float | None = None) -> bool:
        """True when the clip's entry exists and is readable; a damaged entry is logged and counts as missing."""
        path = self.path_for(video, start, end)
        if not path.exists():
            return False
        problem = entry_problem(path)
        if problem is not None:
            logger.warning("Feature cache entry %s for %r is damaged (%s); it will be extracted again.", path, video, problem)
        return problem is None

    def write(self, video: str, start: float | None, end: float | None, features: torch.Tensor) -> None:
        """Store `features` (T, C) or (T, h*w, C) atomically: temporary file, fsync, rename."""
        path = self.path_for(video, start, end)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f"{TMP_MARKER}{os.getpid()}")
        save_file({FEATURES_KEY: features.detach().float().cpu().contiguous()}, str(tmp))
        with open(tmp, "rb") as handle:  # the data reaches the disk before the name does
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def read(self, video: str, start: float | None = None, end: float | None = None) -> torch.Tensor:
        """The clip's features, (T, C) or (T, h*w, C).

        Raises:
            FileNotFoundError: the clip was never extracted into this cache.
            ValueError: its entry is truncated or unreadable.
        """
        path = self.existing_path(video, start, end)
        try:
            return load_file(str(path))[FEATURES_KEY]
        except (SafetensorError, KeyError) as error:
            raise ValueError(
                f"The cached features of {video!r} (start={start}, end={end}), {path}, are damaged ({error}). "
                "Run `vidgpt2 extract-features` again over this dataset: it redoes damaged entries."
            ) from error

    def check_folder(self) -> None:
        """Raise when `root` cannot be a feature cache at all, so one line says so instead of every clip "missing".

        Raises:
            FileNotFoundError: `root` does not exist.
            ValueError: `root` is not a folder, or is a frame cache (`vidgpt2 extract-frames`: `frames/`, no
                `features/`).
        """
        fix = f"run `vidgpt2 extract-features --output {self.root}` over this data, or give the folder it wrote"
        if not self.root.exists():
            raise FileNotFoundError(f"The feature cache {self.root} does not exist: {fix}.")
        if not self.root.is_dir():
            raise ValueError(f"The feature cache {self.root} is not a folder: {fix}.")
        if (self.root / "frames").is_dir() and not self.features_dir.is_dir():
            raise ValueError(
                f"{self.root} is a frame cache (vidgpt2 extract-frames), not a feature cache: pass it to "
                f"`vidgpt2 train --frame-cache`, or {fix}."
            )

    def check_covers(self, samples: Sequence[dict[str, Any]], split: str = "dataset") -> None:
        """Raise before training starts, rather than at the first missing clip mid-epoch, if clips of `split` lack a
        readable entry (an extraction that was interrupted, or run over other files), or the folder is no feature
        cache (`check_folder`)."""
        self.check_folder()
        missing = self.missing(samples)
        if missing:
            shown = ", ".join(repr(s["video"]) for s in missing[:3])
            raise ValueError(
                f"The feature cache {self.root} lacks {len(missing)} of the {len(samples)} {split} clips ({shown}"
                f"{', ...' if len(missing) > 3 else ''}). Run `vidgpt2 extract-features --output {self.root}` over "
                "this dataset again: it extracts only what is missing."
            )

    def remove_partial_files(self) -> int:
        """Delete the temporary files an interrupted extraction left behind; returns how many there were."""
        partial = list(self.features_dir.glob(f"*{TMP_MARKER}*")) if self.features_dir.is_dir() else []
        for path in partial:
            path.unlink(missing_ok=True)
        if partial:
            logger.info("Removed %d partial feature files left by an interrupted extraction in %s", len(partial), self.root)
        return len(partial)

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Record what made the features; raise if the folder holds features with another fingerprint."""
        path = self.root / METADATA_FILE
        if path.exists():
            existing = json.loads(path.read_text())
            if existing.get("fingerprint") != metadata.get("fingerprint"):
                raise ValueError(
                    f"{self.root} holds features of another vision tower, token setting or dtype "
                    f"({existing.get('dtype', 'float32')} vs {metadata.get('dtype', 'float32')}) "
                    f"(fingerprint {existing.get('fingerprint', '?')[:12]} != {metadata['fingerprint'][:12]}). "
                    "Use a new --output folder or delete the old cache."
                )
            return
        self._store_metadata(metadata)

    def check_compatible(self, model: Any) -> None:
        """Raise if this cache was not produced by `model`'s vision tower and token settings."""
        metadata = self.metadata()
        expected = vision_fingerprint(model, metadata.get("dtype", "float32"))
        found = metadata.get("fingerprint")
        if found != expected:
            raise ValueError(
                f"The feature cache {self.root} was extracted with a different vision tower or token setting "
                "than the model being trained. Re-extract with `vidgpt2 extract-features --model <this model>`."
            )


def extract_features(
    model: Any,
    processor: Any,
    samples: Sequence[dict[str, Any]],
    output_dir: str | Path,
    *,
    batch_size: int = 8,
    accelerator: Any = None,
    show_progress: bool = True,
    dtype: str = "float32",
) -> FeatureCache:
    """Run the vision tower once over `samples` (dicts with `video`, optional `start`/`end`) into a cache folder.

    Resumable (existing entries are skipped) and distributable: with an `accelerate.Accelerator`, each process takes
    every n-th clip. `dtype="bfloat16"` runs the vision tower under `torch.autocast(bfloat16)` (features are stored
    as float32 either way); the dtype is recorded in the metadata and the fingerprint, so an fp32 cache is never
    resumed in bf16 or the other way round. Returns the cache.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"extract_features: dtype must be 'float32' or 'bfloat16'; got {dtype!r}.")
    from tqdm.auto import tqdm

    cache = FeatureCache(Path(output_dir))
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        # before the barrier: no process writes yet, so every temporary file is a leftover of an interrupted run
        cache.remove_partial_files()
        cache.write_metadata(
            {
                "fingerprint": vision_fingerprint(model, dtype),
                "dtype": dtype,
                "num_frames": model.config.num_frames,
                "visual_tokens": model.config.visual_tokens,
                "image_size": model.config.image_size,
                "source": str(getattr(model.config, "_name_or_path", "")),
            }
        )
    if accelerator is not None:
        accelerator.wait_for_everyone()

    unique = list({segment_key(s["video"], s.get("start"), s.get("end")): s for s in samples}.values())
    mine = unique[rank::world]
    todo = [s for s in mine if not cache.has(s["video"], s.get("start"), s.get("end"))]
    logger.info("Extracting features for %d clips (%d already cached) on process %d/%d", len(todo), len(mine) - len(todo), rank, world)
    device = next(model.parameters()).device
    model.eval()
    progress = tqdm(total=len(todo), desc=f"extract features [{rank}]", unit="clip", disable=not show_progress)
    for begin in range(0, len(todo), batch_size):
        batch = todo[begin : begin + batch_size]
        inputs = processor.video_processor(
            [s["video"] for s in batch],
            start=[s.get("start") for s in batch],
            end=[s.get("end") for s in batch],
            return_tensors="pt",
        )
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            features = model.get_video_features(inputs["pixel_values_videos"].to(device)).pooler_output
        for sample, feature in zip(batch, features):
            cache.write(sample["video"], sample.get("start"), sample.get("end"), feature)
        progress.update(len(batch))
    progress.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return cache


def iter_samples(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dataset rows -> the `video`/`start`/`end` dicts extraction needs."""
    return [{"video": r["video"], "start": r.get("start"), "end": r.get("end")} for r in rows]


__all__ = ["FeatureCache", "entry_problem", "extract_features", "iter_samples", "segment_key", "vision_fingerprint"]
