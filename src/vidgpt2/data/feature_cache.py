"""A folder of precomputed vision-tower features, keyed by video and segment.

The frozen ResNet dominates training cost; running it once per clip and reading its output afterwards makes each
epoch a pass over the (small) decoder only. Layout of a cache folder:

    metadata.json           what produced the features (vision-tower fingerprint, frames, token mode, image size)
    features/<key>.safetensors   one file per (video, start, end): {"video_features": (T, C) or (T, h*w, C)}

Each file is written to a temporary name and renamed, so an interrupted extraction leaves no half-written entry and
a rerun resumes where it stopped. Several processes (accelerate / torchrun) each take a disjoint share of the clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"


def segment_key(video: str, start: float | None = None, end: float | None = None) -> str:
    """Stable file key for a clip segment: a hash of the absolute path and the segment bounds."""
    text = f"{os.path.abspath(video)}|{'' if start is None else float(start)}|{'' if end is None else float(end)}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def vision_fingerprint(model: Any, dtype: str = "float32") -> str:
    """A hash of the vision tower's weights, the token settings and the compute dtype ("float32", or "bfloat16" for
    features extracted under bf16 autocast): features are only valid for the same tower, and a cache holds one dtype.
    float32 adds nothing to the hash, so caches written before the dtype was recorded keep their fingerprint."""
    digest = hashlib.sha1()
    config = model.config
    digest.update(f"{config.visual_tokens}|{config.image_size}".encode())
    if dtype != "float32":
        digest.update(f"|dtype={dtype}".encode())
    for name, tensor in sorted(model.encoder.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class FeatureCache:
    """Read and write access to a feature-cache folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def path_for(self, video: str, start: float | None = None, end: float | None = None) -> Path:
        return self.features_dir / f"{segment_key(video, start, end)}.safetensors"

    def has(self, video: str, start: float | None = None, end: float | None = None) -> bool:
        return self.path_for(video, start, end).exists()

    def missing(self, samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The samples (dicts with `video`, optional `start`/`end`) that have no features here, each clip once, in
        order: what `extract-features` still has to cover before training can read this cache."""
        seen: set[str] = set()
        missing = []
        for sample in samples:
            key = segment_key(sample["video"], sample.get("start"), sample.get("end"))
            if key not in seen:
                seen.add(key)
                if not (self.features_dir / f"{key}.safetensors").exists():
                    missing.append(sample)
        return missing

    def write(self, video: str, start: float | None, end: float | None, features: torch.Tensor) -> None:
        path = self.path_for(video, start, end)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"video_features": features.detach().float().cpu().contiguous()}, str(tmp))
        os.replace(tmp, path)

    def read(self, video: str, start: float | None = None, end: float | None = None) -> torch.Tensor:
        path = self.path_for(video, start, end)
        if not path.exists():
            raise FileNotFoundError(
                f"No cached features for {video!r} (start={start}, end={end}) in {self.root}. "
                "Run `vidgpt2 extract-features` over this dataset first."
            )
        return load_file(str(path))["video_features"]

    # --- metadata ---------------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        path = self.root / METADATA_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: {self.root} is not a vidgpt2 feature cache.")
        return json.loads(path.read_text())

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
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
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(metadata, indent=2))
        os.replace(tmp, path)

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
            features = model.get_video_features(inputs["pixel_values_videos"].to(device))
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


__all__ = ["FeatureCache", "extract_features", "iter_samples", "segment_key", "vision_fingerprint"]
