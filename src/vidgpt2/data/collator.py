"""Batch assembly for training and evaluation: decode videos (or read cached features) and tokenize captions.

`DataCollatorForSeq2Seq` cannot stack videos; this collator takes dataset rows (`video`, `caption`, optional
`start`/`end`) and returns exactly what `VidGPT2ForConditionalGeneration.forward` takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from ..clip_loader import worker_start_method  # noqa: F401 - re-exported: training uses it from here
from .feature_cache import FeatureCache
from .frame_cache import FrameCache, normalize_frames

logger = logging.getLogger(__name__)


# what loading one sample raises: FileNotFoundError (OSError), VideoDecodeError and bad segments (ValueError), a
# damaged cache file (SafetensorError)
SAMPLE_ERRORS = (OSError, ValueError, SafetensorError)
# the batch key that carries how many of its samples were skipped (`VideoCaptionCollator(report_skipped=True)`)
SKIPPED_SAMPLES_KEY = "skipped_samples"


@dataclass
class VideoCaptionCollator:
    """Rows -> `{"pixel_values_videos" | "video_features", "labels"}`.

    Args:
        processor: a `VidGPT2Processor` (video processor + tokenizer).
        feature_cache: read `video_features` from this cache instead of decoding videos.
        frame_cache: read decoded uint8 frames from this cache (`vidgpt2 extract-frames`) instead of decoding
            videos, and rescale/normalise them here: the same `pixel_values_videos` as decoding, for a tower that trains.
        caption_column: the row field holding the training target.
        blank_video: give the model all-zero frames (in normalised space: the dataset mean) instead of the video;
            the text-only baseline. Videos are not decoded at all.
        on_bad_video: what a sample whose video (or cached features) fails to load does: ``"error"`` raises (the
            default); ``"skip"`` logs a counted warning and skips the sample: the batch keeps its rows and shapes,
            the sample gets zero frames (or features) and labels all -100, so it adds nothing to the loss. In
            evaluation its caption is generated from those zero frames (the warning says so). A batch in which every
            sample fails raises. ``num_skipped`` counts the samples this collator object skipped: with DataLoader
            workers each worker holds its own copy, so a total needs `report_skipped`.
        report_skipped: also return ``batch["skipped_samples"]``, a 0-d int64 tensor: how many samples of the batch
            were skipped, to be counted wherever the batch arrives (the main process; `training.CaptionTrainer`
            removes it before the model sees the batch). Off by default: the model takes no such input.
    """

    processor: Any
    feature_cache: FeatureCache | None = None
    frame_cache: FrameCache | None = None
    caption_column: str = "caption"
    blank_video: bool = False
    on_bad_video: str = "error"
    report_skipped: bool = False
    num_skipped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.on_bad_video not in ("error", "skip"):
            raise ValueError(f"on_bad_video must be 'error' or 'skip', got {self.on_bad_video!r}")
        if self.feature_cache is not None and self.frame_cache is not None:
            raise ValueError("Pass feature_cache (frozen tower) or frame_cache (tower trains), not both.")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        failed: list[int] = []
        if self.blank_video:
            vp = self.processor.video_processor
            crop = vp.crop_size
            batch["pixel_values_videos"] = torch.zeros(len(rows), vp.num_frames, 3, crop["height"], crop["width"])
        elif self.feature_cache is not None:
            # (B, T, C) or (B, T, h*w, C)
            batch["video_features"] = self._per_row(rows, self._read_features, failed)
        elif self.frame_cache is not None:
            frames = self._per_row(rows, self._read_frames, failed)  # (B, T, H, W, 3) uint8
            pixels = normalize_frames(frames, self.processor.video_processor)  # (B, T, 3, H, W) float32
            pixels[failed] = 0.0  # skipped samples: zero frames, as when decoding
            batch["pixel_values_videos"] = pixels
        else:
            try:
                batch["pixel_values_videos"] = self._decode(rows)  # (B, T, 3, H, W)
            except SAMPLE_ERRORS:
                if self.on_bad_video == "error":
                    raise
                # find the failing samples one by one
                batch["pixel_values_videos"] = self._per_row(rows, lambda row: self._decode([row])[0], failed)
        if all(r.get(self.caption_column) is not None for r in rows):
            labels = self.processor.tokenize_captions([r[self.caption_column] for r in rows])
            batch["labels"] = torch.tensor(labels, dtype=torch.long)  # (B, L), -100 = padding
            batch["labels"][failed] = -100  # skipped samples add no loss
        if self.report_skipped:
            batch[SKIPPED_SAMPLES_KEY] = torch.tensor(len(failed), dtype=torch.long)
        return batch

    def _decode(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        videos = self.processor.video_processor(
            [r["video"] for r in rows],
            start=[r.get("start") for r in rows],
            end=[r.get("end") for r in rows],
            return_tensors="pt",
        )
        return videos["pixel_values_videos"]

    def _read_features(self, row: dict[str, Any]) -> torch.Tensor:
        return self.feature_cache.read(row["video"], row.get("start"), row.get("end"))

    def _read_frames(self, row: dict[str, Any]) -> torch.Tensor:
        # a copy: the memory-mapped file is read-only, and torch wants writable arrays
        return torch.from_numpy(np.array(self.frame_cache.read(row["video"], row.get("start"), row.get("end"))))

    def _per_row(self, rows: list[dict[str, Any]], load: Any, failed: list[int]) -> torch.Tensor:
        """Stack `load(row)` over the rows; with ``on_bad_video="skip"`` a failing row is recorded in `failed`,
        warned about and filled with zeros of the others' shape."""
        loaded: list[torch.Tensor | None] = []
        for index, row in enumerate(rows):
            try:
                loaded.append(load(row))
            except SAMPLE_ERRORS as error:
                if self.on_bad_video == "error":
                    raise
                failed.append(index)
                loaded.append(None)
                self.num_skipped += 1
                logger.warning(
                    "skipped sample %s (start=%s, end=%s): %s; it gets zero frames and no loss "
                    "(--on-bad-video skip; %d skipped so far in this process or DataLoader worker)",
                    row["video"], row.get("start"), row.get("end"), " ".join(str(error).split()), self.num_skipped,
                )
        good = [t for t in loaded if t is not None]
        if not good:
            videos = ", ".join(str(r["video"]) for r in rows)
            raise RuntimeError(
                f"every sample of a batch failed to load ({videos}), so it has nothing to learn from; run the data "
                "check (`vidgpt2 check-data`, or train without --no-check-data) to drop bad rows before training"
            )
        return torch.stack([t if t is not None else torch.zeros_like(good[0]) for t in loaded])


__all__ = ["SKIPPED_SAMPLES_KEY", "VideoCaptionCollator"]

