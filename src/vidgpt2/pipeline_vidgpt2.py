"""`pipeline("video-captioning")`: videos in, `[{"generated_text": ...}]` out.

Imports only transformers, torch and same-folder modules, so it travels with a pushed model as remote code:
`pipeline("video-captioning", model=repo, trust_remote_code=True)` works where vidgpt2 is not installed.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
import urllib.request
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .video_io import declared_duration, segment_windows

logger = logging.get_logger(__name__)

TASK = "video-captioning"


def _is_url(video: Any) -> bool:
    return isinstance(video, str) and urllib.parse.urlparse(video).scheme in ("http", "https")


def fetch_video(url: str, timeout: float | None = 60.0) -> str:
    """Download a video URL to a temporary file (kept until the process ends) and return its path."""
    suffix = os.path.splitext(urllib.parse.urlparse(url).path)[1] or ".mp4"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            data = response.read()
    except OSError as error:
        raise ValueError(f"Could not download the video {url}: {error}") from error
    handle, path = tempfile.mkstemp(prefix="vidgpt2-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return path


def _is_frame(item: Any) -> bool:
    """One frame: a PIL image or a 2-D / 3-D array (H, W[, C])."""
    if hasattr(item, "convert") and hasattr(item, "size"):
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


class VideoCaptioningPipeline(Pipeline):
    """Caption videos with a VidGPT2 model.

    Inputs: a path, a URL, a numpy array / torch tensor (T, H, W, C), a list of frames (one video), a dict
    `{"video": path, "start": s, "end": e}`, a list of any of these (a batch), or a `datasets.Dataset` with a
    `video` column (and optional `start`/`end` columns). Parameters: `num_frames`, `start`/`end` (seconds),
    `segment_seconds`/`stride` (caption consecutive windows of a long video file), `generate_kwargs` (`num_beams`,
    `max_new_tokens`, ...) or the same generation parameters given directly, `return_explanation`, plus
    `batch_size`, `num_workers` (DataLoader processes decoding beside the model), `device` and `dtype` as in any
    pipeline.

    Output: `[{"generated_text": str}]` per video (a list of those for a list of inputs); with
    `return_explanation=True` each dict also holds `"explanation"` (see `vidgpt2.explanations.explain`). With
    `segment_seconds`, the list per video has one `{"start", "end", "generated_text"}` per window (seconds; the
    windows of `video_io.segment_windows`, the same as `vidgpt2 caption --segment-seconds`).
    """

    _pipeline_calls_generate = True
    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        if inputs is None:
            inputs = kwargs.pop("videos", None)
        if inputs is None:
            raise ValueError("Pass a video (path, URL, array, tensor, list of frames) or a list of videos.")
        segment_seconds, stride = kwargs.pop("segment_seconds", None), kwargs.pop("stride", None)
        if hasattr(inputs, "column_names") and hasattr(inputs, "__getitem__"):  # a datasets.Dataset
            if "video" not in inputs.column_names:
                raise ValueError(f"A dataset to caption needs a 'video' column; it has {inputs.column_names}.")
            inputs = [{"video": r["video"], "start": r.get("start"), "end": r.get("end")} for r in inputs]
        if segment_seconds is not None:
            return self._caption_windows(inputs, segment_seconds, stride, **kwargs)
        if stride is not None:
            raise ValueError("stride needs segment_seconds (the window length).")
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_frame(f) for f in inputs):
            # a list of frames is ONE video
            return super().__call__([list(inputs)], **kwargs)[0]
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        return super().__call__(inputs, **kwargs)

    def _caption_windows(self, inputs: Any, segment_seconds: float, stride: float | None, **kwargs: Any) -> Any:
        """Cut each video file into windows, caption them all as one batched list, and regroup per video."""
        single = not isinstance(inputs, (list, tuple))
        items, owners = [], []
        for n, video in enumerate([inputs] if single else inputs):
            path, start, end = (video.get("video"), video.get("start"), video.get("end")) if isinstance(video, dict) else (video, None, None)
            if not isinstance(path, (str, os.PathLike)):
                raise ValueError(f"segment_seconds needs video files or URLs; got {type(path).__name__} for input {n}.")
            if _is_url(path):
                path = fetch_video(path, timeout=kwargs.get("timeout"))
            offset = float(start or 0.0)
            duration = declared_duration(path)  # a file cut short: its windows past the cut raise read_video's reason
            length = (min(end, duration) if end is not None else duration) - offset
            if length <= 0:
                raise ValueError(f"start={offset} is beyond the end of '{path}' ({duration:.3f} s).")
            for window_start, window_end in segment_windows(length, segment_seconds, stride):
                items.append({"video": path, "start": round(offset + window_start, 3), "end": round(offset + window_end, 3)})
                owners.append(n)
        results = super().__call__(items, **kwargs)  # one [{"generated_text": ...}] per window, batched
        per_video: list[list[dict[str, Any]]] = [[] for _ in range(1 if single else len(inputs))]
        for owner, item, result in zip(owners, items, results, strict=True):
            per_video[owner].append({"start": item["start"], "end": item["end"], **result[0]})
        return per_video[0] if single else per_video

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Model, processor and this pipeline's code: `pipeline(model=folder, trust_remote_code=True)` loads it."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)

    def _sanitize_parameters(
        self,
        num_frames: int | None = None,
        start: float | None = None,
        end: float | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int | None = None,
        return_explanation: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess = {"num_frames": num_frames, "start": start, "end": end, "timeout": timeout}
        forward: dict[str, Any] = {"return_explanation": return_explanation}
        generate = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in generate:
                raise ValueError("max_new_tokens given twice: as an argument and in generate_kwargs.")
            generate["max_new_tokens"] = max_new_tokens
        generation_keys = {key for key in vars(GenerationConfig()) if not key.startswith("_")}
        for key in [k for k in kwargs if k in generation_keys]:
            generate[key] = kwargs.pop(key)  # e.g. num_beams=3 directly, as in a generate() call
        if kwargs:
            raise TypeError(f"Unknown arguments for the video-captioning pipeline: {sorted(kwargs)}")
        forward["generate_kwargs"] = generate
        return {k: v for k, v in preprocess.items() if v is not None}, forward, {}

    def preprocess(
        self,
        video: Any,
        num_frames: int | None = None,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, torch.Tensor]:
        if isinstance(video, dict):  # {"video": path, "start": s, "end": e}: a segment of a file
            if "video" not in video:
                raise ValueError(f"A dict input needs a 'video' key (and optional 'start'/'end'); got {sorted(video)}.")
            start = video["start"] if video.get("start") is not None else start
            end = video["end"] if video.get("end") is not None else end
            video = video["video"]
        if _is_url(video):
            video = fetch_video(video, timeout=timeout)
        kwargs = {k: v for k, v in (("num_frames", num_frames), ("start", start), ("end", end)) if v is not None}
        inputs = self.processor.video_processor([video], return_tensors="pt", **kwargs)
        pixel_values = inputs["pixel_values_videos"]  # (1, T, 3, H, W)
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        return {"pixel_values_videos": pixel_values}

    def _forward(
        self, model_inputs: dict[str, torch.Tensor], generate_kwargs: dict[str, Any], return_explanation: bool = False
    ) -> dict[str, Any]:
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs))
        sequences = self.model.generate(**model_inputs, **generate_kwargs)
        outputs: dict[str, Any] = {"sequences": sequences}
        if return_explanation:
            from .explanations import explain

            pixels = model_inputs["pixel_values_videos"]  # (B, T, 3, H, W)
            outputs["explanations"] = [
                explain(self.model, self.processor, pixel_values_videos=pixels[i : i + 1], **generate_kwargs)
                for i in range(pixels.shape[0])
            ]
        return outputs

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        texts = self.processor.batch_decode(model_outputs["sequences"])
        results: list[dict[str, Any]] = [{"generated_text": text} for text in texts]
        for result, explanation in zip(results, model_outputs.get("explanations", [])):
            result["explanation"] = explanation
        return results


PIPELINE_REGISTRY.register_pipeline(
    TASK,
    pipeline_class=VideoCaptioningPipeline,
    pt_model=AutoModelForSeq2SeqLM,
    type="multimodal",
)

__all__ = ["TASK", "VideoCaptioningPipeline", "fetch_video"]
