"""Batch assembly for training and evaluation: decode videos (or read cached features) and tokenize captions.

`DataCollatorForSeq2Seq` cannot stack videos; this collator takes dataset rows (`video`, `caption`, optional
`start`/`end`) and returns exactly what `VidGPT2ForConditionalGeneration.forward` takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from .feature_cache import FeatureCache

logger = logging.getLogger(__name__)


@dataclass
class VideoCaptionCollator:
    """Rows -> `{"pixel_values_videos" | "video_features", "labels"}`.

    Args:
        processor: a `VidGPT2Processor` (video processor + tokenizer).
        feature_cache: read `video_features` from this cache instead of decoding videos.
        caption_column: the row field holding the training target.
        blank_video: give the model all-zero frames (in normalised space: the dataset mean) instead of the video;
            the text-only baseline. Videos are not decoded at all.
    """

    processor: Any
    feature_cache: FeatureCache | None = None
    caption_column: str = "caption"
    blank_video: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        if self.blank_video:
            vp = self.processor.video_processor
            crop = vp.crop_size
            batch["pixel_values_videos"] = torch.zeros(len(rows), vp.num_frames, 3, crop["height"], crop["width"])
        elif self.feature_cache is not None:
            # (B, T, C) or (B, T, h*w, C)
            batch["video_features"] = torch.stack(
                [self.feature_cache.read(r["video"], r.get("start"), r.get("end")) for r in rows]
            )
        else:
            videos = self.processor.video_processor(
                [r["video"] for r in rows],
                start=[r.get("start") for r in rows],
                end=[r.get("end") for r in rows],
                return_tensors="pt",
            )
            batch["pixel_values_videos"] = videos["pixel_values_videos"]  # (B, T, 3, H, W)
        if all(r.get(self.caption_column) is not None for r in rows):
            labels = self.processor.tokenize_captions([r[self.caption_column] for r in rows])
            batch["labels"] = torch.tensor(labels, dtype=torch.long)  # (B, L), -100 = padding
        return batch


__all__ = ["VideoCaptionCollator"]
