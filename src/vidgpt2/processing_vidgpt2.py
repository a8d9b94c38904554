"""VidGPT2Processor: the video processor and the GPT-2 tokenizer behind one call.

Imports only transformers and torch so it can be pushed to the Hub as remote code.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.utils import logging

logger = logging.get_logger(__name__)


class VidGPT2Processor(ProcessorMixin):
    r"""Prepares videos and captions for [`VidGPT2ForConditionalGeneration`].

    `processor(videos=..., text=..., return_tensors="pt")` returns `pixel_values_videos` (B, T, 3, H, W) and, when
    captions are given, `labels` (B, L): caption tokens + eos, padded with -100, ready for training.

    Args:
        video_processor ([`VidGPT2VideoProcessor`]): frames in, `pixel_values_videos` out.
        tokenizer ([`PreTrainedTokenizerBase`]): the decoder's tokenizer (GPT-2's by default); needs an eos token.
        max_caption_length (`int`, defaults to 64): captions are cut to this many tokens (eos included).
    """

    def __init__(self, video_processor=None, tokenizer=None, max_caption_length: int = 64, **kwargs):
        if tokenizer is not None and tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer has no eos token; VidGPT2 needs one to end captions.")
        if tokenizer is not None and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.max_caption_length = max_caption_length
        super().__init__(video_processor, tokenizer, **kwargs)

    def __call__(
        self,
        videos: Any = None,
        text: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        num_frames: int | None = None,
        start: float | list[float | None] | None = None,
        end: float | list[float | None] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Videos (paths, arrays, tensors, frame lists, or batches of them) and/or captions -> model inputs."""
        if videos is None and text is None:
            raise ValueError("VidGPT2Processor needs `videos`, `text`, or both.")
        data: dict[str, Any] = {}
        if videos is not None:
            video_kwargs = {k: v for k, v in (("num_frames", num_frames), ("start", start), ("end", end)) if v is not None}
            data.update(self.video_processor(videos, return_tensors=return_tensors, **video_kwargs, **kwargs))
        if text is not None:
            labels = self.tokenize_captions(text)
            data["labels"] = torch.tensor(labels) if return_tensors == "pt" else labels
            if videos is not None and len(data["labels"]) != len(data["pixel_values_videos"]):
                raise ValueError(
                    f"Got {len(data['pixel_values_videos'])} videos but {len(data['labels'])} captions; "
                    "pass one caption per video."
                )
        return BatchFeature(data)

    def tokenize_captions(self, text: str | list[str]) -> list[list[int]]:
        """Caption(s) -> token ids + eos, cut to `max_caption_length`, right-padded with -100."""
        captions = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(c, str) for c in captions):
            raise TypeError(f"`text` must be a string or a list of strings; got {[type(c).__name__ for c in captions]}")
        eos = self.tokenizer.eos_token_id
        ids = [
            self.tokenizer(c.strip(), add_special_tokens=False)["input_ids"][: self.max_caption_length - 1] + [eos]
            for c in captions
        ]
        width = max(len(x) for x in ids)
        return [x + [-100] * (width - len(x)) for x in ids]

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        """Token ids (generated, or labels with -100) -> captions."""
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        pad = self.tokenizer.pad_token_id
        cleaned = [[pad if t == -100 else t for t in seq] for seq in sequences]
        texts = self.tokenizer.batch_decode(cleaned, skip_special_tokens=skip_special_tokens, **kwargs)
        return [t.strip() for t in texts]

    def decode(self, sequence: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        if isinstance(sequence, torch.Tensor):
            sequence = sequence.tolist()
        return self.batch_decode([sequence], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values_videos", "labels"]

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, **kwargs: Any) -> VidGPT2Processor:
        """The processor for a model built from `config` (trained from scratch): `config.num_frames` frames,
        shortest edge resized to `config.image_size` and centre-cropped square, ImageNet normalisation."""
        from .video_processing_vidgpt2 import VidGPT2VideoProcessor

        video_processor = VidGPT2VideoProcessor(num_frames=config.num_frames, **video_processor_settings(config.image_size))
        return cls(video_processor=video_processor, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_backbones(
        cls, vision: str = "microsoft/resnet-50", text: str = "gpt2", num_frames: int = 8, **kwargs: Any
    ) -> VidGPT2Processor:
        """The processor matching `VidGPT2ForConditionalGeneration.from_backbones`: the backbone's preprocessing
        (size, crop, mean, std) and the decoder's tokenizer with a pad token."""
        from .video_processing_vidgpt2 import VidGPT2VideoProcessor

        image_processor = AutoImageProcessor.from_pretrained(vision)
        video_processor = VidGPT2VideoProcessor(num_frames=num_frames, **backbone_preprocessing(image_processor))
        tokenizer = AutoTokenizer.from_pretrained(text)
        return cls(video_processor=video_processor, tokenizer=tokenizer, **kwargs)


def backbone_preprocessing(image_processor: Any) -> dict[str, Any]:
    """The resize/crop/normalisation of a backbone's image processor, as video-processor settings.

    ResNet checkpoints such as microsoft/resnet-50 ship a ConvNeXT-style processor: `size={"shortest_edge": 224}`
    with `crop_pct=0.875`, meaning resize the shortest edge to 224 / 0.875 = 256, then centre-crop 224.
    """
    size = dict(getattr(image_processor, "size", None) or {"shortest_edge": 224})
    if "shortest_edge" in size:
        crop = int(size["shortest_edge"])
        crop_pct = getattr(image_processor, "crop_pct", None) or 1.0
        resize = {"shortest_edge": int(round(crop / crop_pct))}
    else:
        crop = int(min(size.get("height", 224), size.get("width", 224)))
        resize = {"shortest_edge": crop}
    settings: dict[str, Any] = {"size": resize, "crop_size": {"height": crop, "width": crop}}
    for name in ("image_mean", "image_std", "resample"):
        value = getattr(image_processor, name, None)
        if value is not None:
            settings[name] = value
    return settings


def video_processor_settings(image_size: int) -> dict[str, Any]:
    """Resize the shortest edge to `image_size` and centre-crop a square: for models trained from scratch."""
    return {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size}}


__all__ = ["VidGPT2Processor", "backbone_preprocessing", "video_processor_settings"]
