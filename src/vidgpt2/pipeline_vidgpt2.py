"""`pipeline("video-captioning")`: videos in, `[{"generated_text": ...}]` out.

Imports only transformers, torch and same-folder modules, so it travels with a pushed model as remote code:
`pipeline("video-captioning", model=repo, trust_remote_code=True)` works where vidgpt2 is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Sized
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .clip_loader import ClipDataset, clip_loader, decode_clip, fetch_video, iterate_batches
from .clip_loader import is_url as _is_url
from .video_io import declared_duration, segment_windows

logger = logging.get_logger(__name__)

TASK = "video-captioning"


def _is_frame(item: Any) -> bool:
    """One frame: a PIL image or a 2-D / 3-D array (H, W[, C])."""
    if hasattr(item, "convert") and hasattr(item, "size"):
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


class VideoCaptioningPipeline(Pipeline):
    """Caption videos with a VidGPT2 model.

    Inputs: a path, a URL, a numpy array / torch tensor (T, H, W, C), a list of frames (one video), a dict
    `{"video": path, "start": s, "end": e}`, a list of any of these (a batch), or a `datasets.Dataset` with a
    `video` column (and optional `start`/`end` columns), or a torch dataset of such inputs (e.g. transformers'
    `KeyDataset(dataset, "video")`). Lists and datasets are decoded and batched by the same code as
    `vidgpt2.caption_videos` (`clip_loader`: worker processes at the lowest CPU priority, started by a fork server)
    and return a list; a generator is streamed by transformers' own iterator (one video per `preprocess`).

    Parameters: `num_frames`, `start`/`end` (seconds), `segment_seconds`/`stride` (caption consecutive windows of a long video file), `generate_kwargs` (`num_beams`,
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
        elif isinstance(inputs, torch.utils.data.Dataset) and isinstance(inputs, Sized):  # e.g. KeyDataset(ds, "video")
            inputs = [inputs[i] for i in range(len(inputs))]
        if segment_seconds is not None:
            return self._caption_windows(inputs, segment_seconds, stride, **kwargs)
        if stride is not None:
            raise ValueError("stride needs segment_seconds (the window length).")
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_frame(f) for f in inputs):
            return self._caption_list([list(inputs)], **kwargs)[0]  # a list of frames is ONE video
        if isinstance(inputs, (list, tuple)):
            return self._caption_list(list(inputs), **kwargs)
        return super().__call__(inputs, **kwargs)  # one video (or a generator, streamed by transformers)

    def _caption_list(
        self, videos: list[Any], num_workers: int | None = None, batch_size: int | None = None, **kwargs: Any
    ) -> list[list[dict[str, Any]]]:
        """Caption a list of videos with the engine's decoding core (`clip_loader`, as `vidgpt2.caption_videos`):
        `num_workers` worker processes (lowest CPU priority, forkserver) decode while the model generates on
        batches of `batch_size`. Returns one `[{"generated_text": ...}]` per video, in input order.

        Raises:
            ValueError, FileNotFoundError, VideoDecodeError: the first video that cannot be decoded (from a worker,
                with its traceback) or a malformed input.
        """
        num_workers = (self._num_workers or 0) if num_workers is None else num_workers
        batch_size = (self._batch_size or 1) if batch_size is None else batch_size
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        # fuse the parameters given to pipeline(...) with this call's, as Pipeline.__call__ does
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        clips = [_video_start_end(video, preprocess.get("start"), preprocess.get("end")) for video in videos]
        dataset = ClipDataset(
            clips, self.processor.video_processor, num_frames=preprocess.get("num_frames"), timeout=preprocess.get("timeout")
        )
        results: list[Any] = [None] * len(clips)
        for batch in iterate_batches(clip_loader(dataset, batch_size, num_workers)):
            pixel_values = batch["inputs"]["pixel_values_videos"]  # (B, T, 3, H, W)
            if self.dtype is not None:
                pixel_values = pixel_values.to(self.dtype)
            outputs = self.forward({"pixel_values_videos": pixel_values}, **forward)
            for index, result in zip(batch["indices"], self.postprocess(outputs, **postprocess), strict=True):
                results[index] = [result]
        return results

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
        results = self._caption_list(items, **kwargs)  # one [{"generated_text": ...}] per window, batched
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
        video, start, end = _video_start_end(video, start, end)
        pixel_values = decode_clip(self.processor.video_processor, video, start, end, num_frames, timeout)[None]
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        return {"pixel_values_videos": pixel_values}  # (1, T, 3, H, W)

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



def _video_start_end(video: Any, start: float | None, end: float | None) -> tuple[Any, float | None, float | None]:
    """`(video, start, end)` of one input: a dict `{"video", "start", "end"}` overrides the call's `start`/`end`.

    Raises:
        ValueError: a dict without a `video` key.
    """
    if isinstance(video, dict):  # {"video": path, "start": s, "end": e}: a segment of a file
        if "video" not in video:
            raise ValueError(f"A dict input needs a 'video' key (and optional 'start'/'end'); got {sorted(video)}.")
        start = video["start"] if video.get("start") is not None else start
        end = video["end"] if video.get("end") is not None else end
        video = video["video"]
    return video, start, end

PIPELINE_REGISTRY.register_pipeline(
    TASK,
    pipeline_class=VideoCaptioningPipeline,
    pt_model=AutoModelForSeq2SeqLM,
    type="multimodal",
)

__all__ = ["TASK", "VideoCaptioningPipeline", "fetch_video"]
