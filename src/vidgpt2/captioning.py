"""Captioning at corpus scale: many videos, long videos, several processes; what `vidgpt2 caption`, `vidgpt2
evaluate` and `vidgpt2.caption_videos` run.

    inputs (files, folders, globs, manifests, URLs) -> clips (video, start, end) [-> windows of long videos]
    -> this process's share -> torch DataLoader (worker processes decode, `--num-workers`)
    -> `model.generate` on batches of `pixel_values_videos (B, T, 3, H, W)` (fp32; bf16/fp16 autocast or an int8
       decoder on request, `dtype`)
    -> one row per clip, appended to JSONL as it goes -> one merged output (+ CSV, SRT, WebVTT)

A row is `{"video", "start", "end", "caption"}`, or `{"video", "start", "end", "error"}` when the clip failed (the
run goes on). `start`/`end` are seconds inside the video (None: the whole video). A clip is identified by
`(video, start, end)`: rerunning with the same output skips the clips that already have a caption and retries the
failed ones. The settings that change captions (model weights and config, int8 quantisation, generation settings,
windows, processor; `run_settings`) are recorded in `<output>.settings.json`; rerunning into the same output with other settings is
refused (its rows would mix captions of two models or of windows and whole clips).

Several processes (`accelerate launch -m vidgpt2.cli caption ...` or `torchrun ... -m vidgpt2.cli caption ...`):
each process takes a contiguous, disjoint share of the clips still to do (accelerate's `split_between_processes`),
appends its rows to `<output>.part-<rank>-of-<world>`, and after a barrier the main process merges the output and
every part file into `<output>` (in input order) and removes the parts. The output folder must be shared by all
processes (one machine, or a shared file system across machines). Without an output the rows are gathered, so
every process returns all of them.

Precision (`dtype`), chosen from BENCHMARKS.md "Faster CPU inference" (ResNet-50 + GPT-2 on a 2-core CPU): the CPU
default is fp32, exact, so `evaluate` scores what `caption` writes. `"int8"` (the decoder's Linear layers dynamically
quantised, `vidgpt2.inference.quantize_dynamic_int8`, CPU only) suits single videos and small batches: 1.41x at batch
1, 0.98x at batch 16, 98.3% of a trained model's captions unchanged. `"bf16"` autocast pays only for large batches on
CPUs with bf16 instructions (1.29x at batch 16, 0.53x at batch 1; 95% unchanged). For exact and faster batches,
export to onnxruntime (`vidgpt2 export onnx`; fp32 1.41x at batch 16, identical captions).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import clip_loader
from .clip_loader import is_url as _is_url
from .video_io import declared_duration, segment_windows, video_duration

logger = logging.getLogger(__name__)

# Suffixes of the video files a folder or glob is searched for (lower case); anything FFmpeg reads can still be
# given by name.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")
# Captions/manifest files, the formats `vidgpt2 train` reads (`vidgpt2.data.captions`); captions are optional here.
MANIFEST_EXTENSIONS = (".jsonl", ".json", ".csv")
SUBTITLE_FORMATS = ("srt", "vtt")
OUTPUT_FORMATS = ("jsonl", "csv", *SUBTITLE_FORMATS)
DTYPES = ("auto", "fp32", "bf16", "fp16", "int8")
# the names `vidgpt2 app --precision` and `vidgpt2.inference` use, accepted for the same choices
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# Errors that make one clip fail (missing file, undecodable video, bad segment, failed download) without stopping
# the run; anything else (a bug, the model running out of memory) stops it.
CLIP_ERRORS = (OSError, ValueError, EOFError)


@dataclass(frozen=True)
class Clip:
    """One unit of work: a video (path or URL) and the segment `[start, end)` in seconds to caption (None: whole)."""

    video: str
    start: float | None = None
    end: float | None = None

    @property
    def key(self) -> tuple[str, float | None, float | None]:
        return (self.video, self.start, self.end)


# --- inputs -----------------------------------------------------------------------------------------------------------
def resolve_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike | Clip]) -> list[Clip]:
    """Turn what a user names into clips, in the order given, each clip once (a local file named by two paths, e.g.
    relative and absolute, counts once and keeps the path it was first named by).

    - a URL (http/https): one clip, downloaded when decoded;
    - a folder: every file below it (recursively) whose suffix is in `VIDEO_EXTENSIONS`, sorted;
    - a captions/manifest file (`.jsonl`, `.json`, `.csv`, the formats `vidgpt2 train` reads): one clip per distinct
      `(video, start, end)`; `video` (or `file_name`, as in a `videofolder` metadata file) is relative to the file's
      folder; captions may be absent;
    - a pattern with `*`, `?` or `[` that is not an existing file: the files it matches (`**` recurses), sorted;
    - anything else is a video file (a missing one becomes a failed row when it is decoded);
    - a `Clip` is kept as it is.

    Raises:
        ValueError: a folder with no video files, a pattern that matches nothing, a malformed manifest (the error
            names the file and line), or no inputs at all.
    """
    if isinstance(inputs, (str, os.PathLike, Clip)):
        inputs = [inputs]
    clips: dict[tuple, Clip] = {}
    for item in inputs:
        for clip in _resolve_one(item):
            clips.setdefault(_same_clip_key(clip), clip)
    if not clips:
        raise ValueError("No videos to caption: pass video files, folders, glob patterns, manifests or URLs.")
    return list(clips.values())


def _same_clip_key(clip: Clip) -> tuple[str, float | None, float | None]:
    """`clip.key` with a local file's path resolved (absolute, links followed), so one file named two ways (a
    manifest's absolute path, a relative file argument) is captioned once, as first named."""
    video = clip.video if _is_url(clip.video) else os.path.realpath(os.path.expanduser(clip.video))
    return (video, clip.start, clip.end)


def _resolve_one(item: str | os.PathLike | Clip) -> list[Clip]:
    if isinstance(item, Clip):
        return [item]
    if not isinstance(item, (str, os.PathLike)):
        raise ValueError(f"Expected a path, URL, folder, glob pattern or Clip, got {type(item).__name__}: {item!r:.80}")
    text = os.fspath(item)
    if _is_url(text):
        return [Clip(text)]
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not found:
            raise ValueError(f"The folder '{text}' holds no video files ({', '.join(VIDEO_EXTENSIONS)}).")
        return [Clip(str(p)) for p in found]
    if path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        return read_manifest(path)
    if not path.exists() and glob.has_magic(text):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        files = [m for m in matches if os.path.isfile(m) and Path(m).suffix.lower() not in MANIFEST_EXTENSIONS]
        if not files:
            raise ValueError(f"The pattern '{text}' matches no files (quote it so that the shell does not expand it).")
        return [Clip(m) for m in files]
    return [Clip(text)]


def read_manifest(path: str | os.PathLike) -> list[Clip]:
    """Clips listed in a captions/manifest file (`.jsonl`, `.json`, `.csv`), read by `vidgpt2.data.captions`.

    Each record needs `video` (or `file_name`); `start`/`end` (seconds) are optional; caption fields are ignored.

    Raises:
        ValueError: a record without a video, or a malformed `start`/`end` (naming file and line).
    """
    from .data.captions import _read_records, _seconds  # the train-file readers (need `datasets`)

    path = Path(path)
    base = path.parent.absolute()
    clips: dict[tuple, Clip] = {}
    for where, record in _read_records(path):
        video = record.get("video", record.get("file_name"))
        if not isinstance(video, str) or not video.strip():
            raise ValueError(f'{where}: needs a "video" (or "file_name") field naming the video file')
        video = video.strip()
        if not _is_url(video) and not Path(video).expanduser().is_absolute():
            video = os.path.abspath(base / video)
        start, end = _seconds(record.get("start"), "start", where), _seconds(record.get("end"), "end", where)
        if start is not None and end is not None and end <= start:
            raise ValueError(f'{where}: "end" ({end:g}) must be after "start" ({start:g})')
        clip = Clip(video, start, end)
        clips.setdefault(clip.key, clip)
    if not clips:
        raise ValueError(f"The manifest '{path}' lists no videos.")
    return list(clips.values())


def expand_segments(
    clips: Sequence[Clip], segment_seconds: float, stride: float | None = None, state: Any = None
) -> tuple[list[Clip], list[dict[str, Any]]]:
    """Cut each clip into windows of `segment_seconds` (one every `stride` s; see `video_io.segment_windows`).

    Durations come from the file headers (`video_io.declared_duration`: a file cut short still gets windows over
    the video it declares, and those past the cut become failed rows); with several processes each probes a share of
    the videos and the results are gathered, so every process ends with the same windows. A clip that already has
    `start`/`end` is cut inside that segment. URLs cannot be probed without downloading them and are not cut.

    Returns the windows and one failed row per video whose duration could not be read.
    """
    segment_windows(1.0, segment_seconds, stride)  # validate the settings before any work
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    mine = {i: _probe(clip) for i, clip in enumerate(clips) if i % world == rank}
    if world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([mine])
        mine = {i: result for part in gathered for i, result in part.items()}
    windows: list[Clip] = []
    failed: list[dict[str, Any]] = []
    for i, clip in enumerate(clips):
        duration = mine[i]
        if isinstance(duration, str):
            failed.append(_row(clip, error=duration))
            continue
        if duration is None:
            windows.append(clip)
            continue
        offset = clip.start or 0.0
        length = min(duration, clip.end) - offset if clip.end is not None else duration - offset
        if length <= 0:
            failed.append(_row(clip, error=f"start={offset} is beyond the end of the video ({duration:.3f} s)"))
            continue
        for start, end in segment_windows(length, segment_seconds, stride):
            windows.append(Clip(clip.video, round(offset + start, 3), round(offset + end, 3)))
    return windows, failed


def _probe(clip: Clip) -> float | str | None:
    """Duration in seconds, None for a URL, or the reason it could not be read."""
    if _is_url(clip.video):
        logger.warning("%s: a URL is captioned whole (its duration is not known before downloading it).", clip.video)
        return None
    try:
        # a file cut short (partial download) is windowed over the video its headers declare: windows past the cut
        # fail when decoded, with `read_video`'s truncation reason, instead of silently getting no row
        return declared_duration(clip.video)
    except CLIP_ERRORS as error:
        return _reason(error)


# --- decoding in worker processes -------------------------------------------------------------------------------------
class ClipDataset(clip_loader.ClipDataset):
    """Clip `i` -> `{"index": i, "pixel_values_videos": (T, 3, H, W)}` (or `"video_features"` from a feature cache),
    or `{"index": i, "error": reason}` when the clip cannot be decoded (`CLIP_ERRORS`). Runs in DataLoader worker
    processes; the decoding itself is `vidgpt2.clip_loader`'s, which the pipeline uses too."""

    def __init__(self, clips: Sequence[Clip], video_processor: Any, feature_cache: Any = None):
        super().__init__(clips, video_processor, errors=CLIP_ERRORS)
        self.feature_cache = feature_cache

    def load(self, video: str, start: float | None, end: float | None) -> dict[str, torch.Tensor]:
        if self.feature_cache is not None:
            return {"video_features": self.feature_cache.read(video, start, end)}  # (T, C) or (T, h*w, C)
        return super().load(video, start, end)


collate_clips = clip_loader.collate_clips


def default_num_workers(local_processes: int = 1) -> int:
    """Decoding workers per process: the CPU cores this process may use, shared among the processes on this machine,
    minus one for the process that runs the model; at least 1, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, local_processes) - 1))


def normalize_dtype(dtype: str) -> str:
    """`dtype` as one of `DTYPES` (`"float32"`, `"bfloat16"`, `"float16"` are accepted for fp32, bf16, fp16).

    Raises:
        ValueError: an unknown `dtype`.
    """
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or {', '.join(DTYPE_ALIASES)}), got {dtype!r}.")
    return dtype


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `dtype` on `device`: `"auto"` is bf16 on GPUs that support it, else fp16 on GPUs, and
    fp32 (None) elsewhere; `"fp32"` is None, and so is `"int8"` (a quantised decoder, not autocast; CPU only).

    Raises:
        ValueError: an unknown `dtype`, bf16/fp16 asked on a device that cannot run it, or int8 off the CPU.
    """
    dtype = normalize_dtype(dtype)
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError(
                f"--dtype int8 (dynamic int8 quantisation of the decoder) runs on the CPU only, not on {device}: "
                "use --dtype auto (bf16/fp16 autocast) there, or --device cpu."
            )
        return None
    if dtype == "fp32":
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if dtype == "bf16" and not bf16:
            raise ValueError(f"{device} does not support bf16; use --dtype fp16 or fp32.")
        return torch.float16 if dtype == "fp16" or (dtype == "auto" and not bf16) else torch.bfloat16
    if dtype == "auto":
        return None
    if device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"--dtype {dtype} is not supported on {device}; use fp32.")
    return torch.bfloat16 if dtype == "bf16" else torch.float16


# --- the engine -------------------------------------------------------------------------------------------------------
def caption_videos(
    inputs: str | os.PathLike | Iterable[str | os.PathLike | Clip],
    model: Any,
    processor: Any = None,
    *,
    output: str | os.PathLike | None = None,
    formats: Sequence[str] = ("jsonl",),
    subtitle_dir: str | os.PathLike | None = None,
    segment_seconds: float | None = None,
    stride: float | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    dtype: str = "auto",
    feature_cache: Any = None,
    explain_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    **generate_kwargs: Any,
) -> list[dict[str, Any]]:
    """Caption videos (and windows of long videos) in batches, decoding in worker processes beside the model.

    Args:
        inputs: video files, folders, glob patterns, captions/manifest files, URLs or `Clip`s (`resolve_inputs`).
        model: a `VidGPT2ForConditionalGeneration` or a checkpoint (Hub id or folder) to load.
        processor: a `VidGPT2Processor`; loaded from `model` when that is a checkpoint name.
        output: JSONL file of rows, appended as clips finish; rerunning with it skips the clips already captioned.
            None: nothing is written (except subtitles) and the rows are only returned.
        formats: any of `"jsonl"`, `"csv"` (`<output>.csv`), `"srt"`, `"vtt"` (one subtitle file per video, next
            to it or in `subtitle_dir`, named after it).
        segment_seconds, stride: caption consecutive windows of `segment_seconds` seconds, one every `stride`
            seconds (default: back to back); rows then carry each window's `start`/`end`.
        batch_size: clips per `generate` call.
        num_workers: decoding processes (`default_num_workers()` when None; 0 decodes in this process).
        device: torch device (default: this process's accelerator device, cuda if available, else cpu).
        dtype: `"auto"` (bf16/fp16 autocast on GPUs, fp32 on CPU), `"fp32"`, `"bf16"`, `"fp16"` or `"int8"` (CPU:
            a copy of `model` with its decoder dynamically quantised; `model` itself is not changed). Which to pick:
            the module docstring.
        feature_cache: a `vidgpt2.data.feature_cache.FeatureCache` to read `video_features` from instead of decoding.
        explain_dir: also write an explanation (PNG, HTML, JSON; `vidgpt2.explanations`) per clip here.
        show_progress: a progress bar (clips/s) on the main process of each machine.
        on_rows: called with each batch's new rows as they are produced (the CLI prints them).
        **generate_kwargs: passed to `model.generate` (`num_beams`, `max_new_tokens`, ...).

    Returns:
        The rows of every clip of this run in input order: earlier runs' rows for the clips they captioned, new rows
        for the rest. Failed clips have `"error"` instead of `"caption"`.

    Raises:
        ValueError: bad inputs (see `resolve_inputs`), formats, dtype (int8 off the CPU or with `explain_dir`),
            `batch_size`, a subtitle file that exists and was not written by a run into `output`
            (`claim_subtitle_paths`), or `csv` without an `output`; an `output`
            with rows written with other settings (`run_settings`) or without a settings record.
    """
    formats = _check_formats(formats, output, batch_size)
    dtype = normalize_dtype(dtype)
    if dtype == "int8" and explain_dir is not None:
        raise ValueError(
            "Explanations run in fp32 (Grad-CAM needs gradients, which int8 layers do not have): drop --dtype int8 "
            "or --explain."
        )
    model, processor = _load(model, processor)
    state = process_state(device)
    device = torch.device(device) if device is not None else _default_device(state)
    amp_dtype = autocast_dtype(device, dtype)
    model = model.to(device).eval()

    clips = resolve_inputs(inputs)
    failed_probes: list[dict[str, Any]] = []
    if segment_seconds is not None:
        clips, failed_probes = expand_segments(clips, segment_seconds, stride, state)
    elif stride is not None:
        raise ValueError("stride needs segment_seconds (the window length).")
    subtitles = {  # format -> video -> file; a file the user already had is refused before any captioning
        fmt: subtitle_paths((c.video for c in clips), fmt, subtitle_dir, output)
        for fmt in SUBTITLE_FORMATS if fmt in formats
    }
    if subtitles:
        claim_subtitle_paths([p for paths in subtitles.values() for p in paths.values()], output, state.is_main_process)
    order = {clip.key: i for i, clip in enumerate(clips)}
    for row in failed_probes:
        order.setdefault(_key(row), len(order))

    quantization = INT8_QUANTIZATION if dtype == "int8" else None
    settings = (
        run_settings(model, processor, segment_seconds, stride, generate_kwargs, quantization=quantization)
        if output is not None
        else {}
    )
    ledger = _Ledger(Path(output), state, settings) if output is not None else None
    done = ledger.read_done() if ledger is not None else {}
    todo = [clip for clip in clips if clip.key not in done]
    with state.split_between_processes(todo) as share:
        share = list(share)
    logger.info(
        "Captioning %d clips on process %d/%d (%d of %d already done)",
        len(share), state.process_index, state.num_processes, len(clips) - len(todo), len(clips),
    )
    caption_model = _quantized(model) if dtype == "int8" else model
    if num_workers is None:
        num_workers = default_num_workers(_local_processes(state))
    loader = clip_loader.clip_loader(ClipDataset(share, processor.video_processor, feature_cache), batch_size, num_workers)
    new_rows: list[dict[str, Any]] = [r for r in failed_probes if state.is_main_process]
    if ledger is not None:
        ledger.append(new_rows)
    if on_rows is not None and new_rows:
        on_rows(new_rows)

    from tqdm.auto import tqdm

    progress = tqdm(
        total=len(share), desc="captioning", unit="clip", disable=not (show_progress and state.is_local_main_process)
    )
    started, failures = time.perf_counter(), 0
    for batch in clip_loader.iterate_batches(loader):
        rows = [_row(share[i], error=reason) for i, reason in batch["failed"]]
        if batch["indices"]:
            captions = _generate(caption_model, processor, batch["inputs"], device, amp_dtype, generate_kwargs, explain_dir,
                                 [share[i] for i in batch["indices"]])
            rows += [_row(share[i], caption=c) for i, c in zip(batch["indices"], captions, strict=True)]
        failures += len(batch["failed"])
        for i, reason in batch["failed"]:
            logger.warning("Could not caption %s: %s", share[i].video if share[i].start is None else share[i], reason)
        if ledger is not None:
            ledger.append(rows)
        if on_rows is not None:
            on_rows(rows)
        new_rows += rows
        progress.update(len(rows))
        progress.set_postfix(failed=failures, refresh=False)
    progress.close()
    elapsed = time.perf_counter() - started
    logger.info(
        "Process %d: %d clips in %.1f s (%.2f clips/s), %d failed",
        state.process_index, len(share), elapsed, len(share) / elapsed if elapsed else 0.0, failures,
    )

    if ledger is not None:
        rows = ledger.merge(order)  # every process gets the merged rows
    else:
        rows = _gather(new_rows, state)
    rows = _sort_rows([r for r in rows if _key(r) in order], order)
    if state.is_main_process:
        for fmt, paths in subtitles.items():
            write_subtitles(rows, fmt, paths=paths)
    if "csv" in formats and state.is_main_process:
        write_csv(rows, Path(output).with_suffix(".csv"))
    return rows


def process_state(device: str | torch.device | None = None) -> Any:
    """accelerate's `PartialState` of this process (rank, world size, device), set up from what `accelerate launch`
    or `torchrun` put in the environment.

    Asks for CPU processes (gloo) when `device` is a CPU or the machine has no accelerator: accelerate otherwise
    leaves torchrun's processes unconnected on a machine without GPUs (each one thinks it is alone).
    """
    from accelerate import PartialState

    cpu = (device is not None and torch.device(device).type == "cpu") or not torch.accelerator.is_available()
    return PartialState(cpu=cpu)


def _check_formats(formats: Sequence[str], output: Any, batch_size: int) -> list[str]:
    formats = [formats] if isinstance(formats, str) else list(formats)
    unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
    if unknown:
        raise ValueError(f"Unknown output format(s) {unknown}; choose from {OUTPUT_FORMATS}.")
    if "csv" in formats and output is None:
        raise ValueError("The csv format is written next to the JSONL output: give an output (--output FILE.jsonl).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return formats


def _load(model: Any, processor: Any) -> tuple[Any, Any]:
    if isinstance(model, (str, os.PathLike)):
        from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
        from .processing_vidgpt2 import VidGPT2Processor
        from .sources import check_checkpoint_source

        check_checkpoint_source(model, "model")
        name = os.fspath(model)
        model = VidGPT2ForConditionalGeneration.from_pretrained(name)
        processor = processor or VidGPT2Processor.from_pretrained(name)
    if processor is None:
        raise ValueError("Pass the processor (VidGPT2Processor) with a model object, or a checkpoint name as model.")
    return model, processor


def _quantized(model: Any) -> Any:
    """An int8 copy of `model`'s decoder (`vidgpt2.inference.quantize_dynamic_int8`); `model` is left as it is."""
    from .inference import quantize_dynamic_int8

    logger.info("Captioning with the decoder dynamically quantised to int8 (a copy; the encoder stays fp32)")
    return quantize_dynamic_int8(model)


def _default_device(state: Any) -> torch.device:
    """accelerate's device for this process: `cuda:<local rank>` (or another accelerator) where there is one."""
    return torch.device(state.device)


def _local_processes(state: Any) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes if state.num_processes > 1 else 1))


def _generate(
    model: Any,
    processor: Any,
    inputs: dict[str, torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    generate_kwargs: dict[str, Any],
    explain_dir: str | os.PathLike | None,
    clips: list[Clip],
) -> list[str]:
    """Captions of one batch; `inputs` holds `pixel_values_videos (B, T, 3, H, W)` or `video_features`."""
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    if explain_dir is not None:
        from .explanations import explain, save_explanation

        captions = []
        pixels = inputs["pixel_values_videos"]  # (B, T, 3, H, W)
        for i, clip in enumerate(clips):
            explanation = explain(model, processor, pixel_values_videos=pixels[i : i + 1], **generate_kwargs)
            save_explanation(explanation, explain_dir, _explanation_stem(clip))
            captions.append(explanation.caption)
        return captions
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        sequences = model.generate(**inputs, **generate_kwargs)  # (B, L)
    return processor.batch_decode(sequences)


def _explanation_stem(clip: Clip) -> str:
    stem = Path(clip.video.split("?")[0]).stem or "video"
    if clip.start is not None or clip.end is not None:
        stem += f"_{clip.start or 0:g}-{'' if clip.end is None else f'{clip.end:g}'}s"
    return stem


def _row(clip: Clip, *, caption: str | None = None, error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"video": clip.video, "start": clip.start, "end": clip.end}
    if error is not None:
        row["error"] = error
    else:
        row["caption"] = caption
    return row


def _key(row: dict[str, Any]) -> tuple[str, float | None, float | None]:
    return (row["video"], row.get("start"), row.get("end"))


_reason = clip_loader.describe_error


def _sort_rows(rows: list[dict[str, Any]], order: dict[tuple, int]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: order.get(_key(row), len(order)))


def _gather(rows: list[dict[str, Any]], state: Any) -> list[dict[str, Any]]:
    if state.num_processes == 1:
        return rows
    from accelerate.utils import gather_object

    return [row for part in gather_object([rows]) for row in part]


# --- the settings a resumed output must share ---------------------------------------------------------------------
# compared on resume; "model" (the name or folder) is only shown, so a copied or moved checkpoint still resumes
SETTINGS_COMPARED = (
    "model_weights", "model_config", "quantization", "generation", "segment_seconds", "stride", "processor"
)
# what `run_settings` records for `dtype="int8"` (outputs written before it existed have no key: read as None, fp32)
INT8_QUANTIZATION = "int8-dynamic-decoder"


def _digest(value: Any) -> str:
    """First 16 hex digits of the SHA-256 of `value` as sorted JSON (objects not JSON-native as `str`)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _public(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the fields that name where or by which version it was saved (`_name_or_path`, ...)."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}


def weights_fingerprint(model: torch.nn.Module, samples: int = 64) -> str:
    """A digest of the model's weights: `samples` evenly spaced values of every parameter and buffer, as float32,
    with their names and shapes. Cheap (a few thousand values) and the same on any device; weights that differ
    anywhere but between the sampled values are not told apart (fine-tuning changes every value of a tensor)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(flat[::step][:samples].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_settings(
    model: Any,
    processor: Any,
    segment_seconds: float | None,
    stride: float | None,
    generate_kwargs: dict[str, Any],
    quantization: str | None = None,
) -> dict[str, Any]:
    """What decides a run's captions, as JSON-ready values: the model (name shown; weights and config digests
    compared), its `quantization` (None, or `INT8_QUANTIZATION` for `dtype="int8"`), `generate` kwargs with the
    model's generation config, the windows, and the processor's settings (video processor and tokenizer).

    int8 is recorded because it replaces the weights the decoder computes with (2% of a trained model's captions
    changed, BENCHMARKS.md), the same on any machine. Device and autocast precision (fp32, bf16, fp16) are left out:
    they round the same weights differently, `"auto"` means bf16 on a GPU and fp32 on a CPU, and a resume on other
    hardware is meant to work."""
    generation_config = getattr(model, "generation_config", None)
    tokenizer = getattr(processor, "tokenizer", None)
    settings = {
        "model": str(getattr(model, "name_or_path", "") or type(model).__name__),
        "model_weights": weights_fingerprint(model),
        "model_config": _digest(_public(model.config.to_dict())),
        "quantization": quantization,
        "generation": {
            "kwargs": generate_kwargs,
            "generation_config": _digest(_public(generation_config.to_dict())) if generation_config else None,
        },
        "segment_seconds": segment_seconds,
        "stride": stride,
        "processor": {
            "video_processor": _digest(_public(processor.video_processor.to_dict())),
            "tokenizer": _digest([type(tokenizer).__name__, tokenizer.get_vocab()]) if tokenizer is not None else None,
        },
    }
    return json.loads(json.dumps(settings, sort_keys=True, default=str))  # as read back from the file


class _Ledger:
    """The JSONL output and its per-process part files: what is done, appending rows, merging at the end; and the
    settings file beside it (`<output>.settings.json`) that a resumed run must match."""

    def __init__(self, path: Path, state: Any, settings: dict[str, Any] | None = None):
        if path.suffix.lower() != ".jsonl":
            raise ValueError(f"The output '{path}' must be a .jsonl file (CSV/SRT/VTT are written from it on request).")
        self.path, self.state, self.settings = path, state, settings or {}
        self.settings_path = path.with_name(path.name + ".settings.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one process appends to the output itself; several append to their own part files
        single = state.num_processes == 1
        self.mine = path if single else path.with_name(f"{path.name}.part-{state.process_index}-of-{state.num_processes}")

    def _files(self) -> list[Path]:
        parts = sorted(self.path.parent.glob(glob.escape(self.path.name) + ".part-*-of-*"))
        return ([self.path] if self.path.exists() else []) + parts

    def _read_all(self) -> dict[tuple, dict[str, Any]]:
        """Rows by clip key over the output and every part file; a caption beats an error, a later row an earlier."""
        rows: dict[tuple, dict[str, Any]] = {}
        for file in self._files():
            for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = _key(row)
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s line %d: not a caption row (interrupted write?): ignored.", file, lineno)
                    continue
                if "caption" in row or "caption" not in rows.get(key, {}):
                    rows[key] = row
        return rows

    def check_settings(self, rows: dict[tuple, dict[str, Any]]) -> None:
        """Refuse to add to rows written with other settings (or with none recorded).

        Raises:
            ValueError: naming the settings that differ and the fix (another output, or delete this one).
        """
        if not rows:
            return
        fix = f"write to another --output, or delete {self.path} (and {self.settings_path.name}) to start over"
        if not self.settings_path.exists():
            raise ValueError(
                f"{self.path} has {len(rows)} rows but no settings record ({self.settings_path.name}), so it cannot "
                f"be told whether they came from this model and these settings: {fix}."
            )
        try:
            old = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.settings_path} is not valid JSON ({error}): {fix}.") from error
        differ = [k for k in SETTINGS_COMPARED if old.get(k) != self.settings.get(k)]
        if differ:
            shown = "; ".join(f"{k}: {_short(old.get(k))} then, {_short(self.settings.get(k))} now" for k in differ)
            raise ValueError(
                f"{self.path} was written by another run (model {old.get('model')!r}) with other settings ({shown}); "
                f"resuming would mix their captions with this run's: {fix}."
            )

    def read_done(self) -> dict[tuple, dict[str, Any]]:
        """Clips with a caption from earlier runs. Every process reads before any writes (barrier), so all
        processes agree on what is left and split it the same way.

        Raises:
            ValueError: the output holds rows written with other settings (`check_settings`).
        """
        rows = self._read_all()
        self.check_settings(rows)
        done = {key: row for key, row in rows.items() if "caption" in row}
        self.state.wait_for_everyone()
        if self.state.is_main_process and self.settings:
            self.settings_path.write_text(json.dumps(self.settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if done and self.state.is_main_process:
            logger.info("%s: %d clips already captioned; skipping them.", self.path, len(done))
        return done

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with open(self.mine, "a", encoding="utf-8") as file:
            file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            file.flush()

    def merge(self, order: dict[tuple, int]) -> list[dict[str, Any]]:
        """After every process finished: the main process writes one output (this run's clips in input order, then
        rows of clips from earlier runs that this run did not name) and removes the part files."""
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            # errors of clips this run did not name are stale (errors are retried); captions are kept
            rows = [r for r in self._read_all().values() if "caption" in r or _key(r) in order]
            rows = _sort_rows(rows, order)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
            parts = [p for p in self._files() if p != self.path]
            os.replace(tmp, self.path)
            for part in parts:
                part.unlink()
        self.state.wait_for_everyone()
        return list(self._read_all().values())


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


# --- CSV and subtitles ------------------------------------------------------------------------------------------------
def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Rows as CSV with the columns `video, start, end, caption, error` (empty cells for None)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["video", "start", "end", "caption", "error"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})
    logger.info("Wrote %s", path)
    return path


def format_timestamp(seconds: float, fmt: str) -> str:
    """`HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT), rounded to the millisecond.

    SRT: the SubRip layout as players read it (comma before the milliseconds). WebVTT: W3C WebVTT, section 4.3
    "WebVTT timestamp" (hours optional but allowed with two or more digits; minutes and seconds two digits, a full
    stop, three digits of milliseconds).
    """
    if not seconds >= 0:
        raise ValueError(f"A subtitle timestamp must be >= 0 seconds, got {seconds!r}.")
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    separator = "," if fmt == "srt" else "."
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitle_text(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """One video's rows as an SRT or WebVTT document (cues in time order; failed rows left out).

    SRT: numbered cues `1`, `2`, ... each `index / start --> end / text / blank line`. WebVTT: the `WEBVTT` header,
    a blank line, then `start --> end / text / blank line` cues; cue text escapes `&`, `<` and `>` (W3C WebVTT,
    section 4.2.2: cue text may not contain `-->`, a bare `&` or `<`). Captions are one line (whitespace collapsed).

    Raises:
        ValueError: `fmt` not "srt" or "vtt", or a row without `start`/`end`.
    """
    if fmt not in SUBTITLE_FORMATS:
        raise ValueError(f"Unknown subtitle format {fmt!r}; choose from {SUBTITLE_FORMATS}.")
    cues = sorted((r for r in rows if "caption" in r), key=lambda r: (r["start"], r["end"]))
    blocks = [] if fmt == "srt" else ["WEBVTT\n"]
    for number, row in enumerate(cues, start=1):
        if row.get("start") is None or row.get("end") is None:
            raise ValueError(f"Subtitle rows need start and end seconds; got {row!r}.")
        text = " ".join(str(row["caption"]).split()) or "..."
        if fmt == "vtt":
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        timing = f"{format_timestamp(row['start'], fmt)} --> {format_timestamp(row['end'], fmt)}"
        blocks.append(f"{number}\n{timing}\n{text}\n" if fmt == "srt" else f"{timing}\n{text}\n")
    return "\n".join(blocks)


def subtitle_paths(
    videos: Iterable[str], fmt: str, subtitle_dir: str | os.PathLike | None = None, output: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Where each video's `.srt`/`.vtt` file goes: `<video stem>.<fmt>` beside a local video (where players look for
    it), or in `subtitle_dir`; a URL's beside `output` (the current folder without one), named from its host and path
    with characters other than letters, digits, `.`, `_` and `-` replaced by `_`. Two videos with one name in one
    folder get `<stem>-2.<fmt>`, ... in the order given."""
    paths: dict[str, Path] = {}
    used: set[Path] = set()
    for video in videos:
        if video in paths:
            continue
        if _is_url(video):
            parsed = urllib.parse.urlsplit(video)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parsed.netloc}{Path(parsed.path).with_suffix('')}").strip("._")
            folder = Path(subtitle_dir) if subtitle_dir is not None else Path(output).absolute().parent if output else Path.cwd()
        else:
            stem = Path(video).stem
            folder = Path(subtitle_dir) if subtitle_dir is not None else Path(video).parent
        stem = stem or "video"
        path, n = folder / f"{stem}.{fmt}", 1
        while path in used:  # two videos with one name, written to one folder
            n += 1
            path = folder / f"{stem}-{n}.{fmt}"
        used.add(path)
        paths[video] = path
    return paths


def _subtitle_record(output: str | os.PathLike) -> Path:
    """`<output>.subtitles.json`: the subtitle files runs into `output` wrote (absolute paths), which a rerun may
    rewrite."""
    output = Path(output)
    return output.with_name(output.name + ".subtitles.json")


def claim_subtitle_paths(paths: Iterable[Path], output: str | os.PathLike | None, write_record: bool = True) -> None:
    """Refuse to overwrite subtitle files this output's runs did not write, then record `paths` as this output's
    (`write_record`: the main process only).

    Raises:
        ValueError: a target file exists and is not in `output`'s record (a file the user had), naming it and the
            fixes (`--subtitle-dir`, or move it away).
    """
    paths = [Path(p).absolute() for p in paths]
    record = _subtitle_record(output) if output is not None else None
    ours: set[str] = set()
    if record is not None and record.exists():
        ours = set(json.loads(record.read_text(encoding="utf-8")))
    existing = [p for p in paths if p.exists() and str(p) not in ours]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ValueError(
            f"The subtitle file '{existing[0]}'{more} already exists and was not written by "
            f"{'a run into ' + str(output) if output is not None else 'this run'}: it would be overwritten. "
            "Write the subtitles elsewhere (--subtitle-dir DIR), or move or delete the file first."
        )
    if record is not None and write_record:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(sorted(ours | {str(p) for p in paths}), indent=1) + "\n", encoding="utf-8")


def write_subtitles(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    subtitle_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    paths: dict[str, Path] | None = None,
) -> list[Path]:
    """One `.srt`/`.vtt` file per video, at `paths[video]` (default: `subtitle_paths`, beside the video, in
    `subtitle_dir`, or for a URL beside `output`). Whole-video rows (no `start`/`end`) become one cue over the video's
    duration. Files are overwritten: `caption_videos` checks first (`claim_subtitle_paths`)."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "caption" not in row:
            continue
        if row.get("start") is None or row.get("end") is None:  # a whole video: one cue over all of it
            if _is_url(row["video"]):
                logger.warning("%s: no subtitle cue for a whole URL video (its duration is unknown).", row["video"])
                continue
            row = {**row, "start": row.get("start") or 0.0}
            row["end"] = row.get("end") or video_duration(row["video"])
        by_video.setdefault(row["video"], []).append(row)
    if paths is None:
        paths = subtitle_paths(by_video, fmt, subtitle_dir, output)
    written = []
    for video, video_rows in by_video.items():
        path = paths[video]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(subtitle_text(video_rows, fmt), encoding="utf-8")
        written.append(path)
    logger.info("Wrote %d %s subtitle files", len(written), fmt)
    return written


__all__ = [
    "Clip",
    "ClipDataset",
    "autocast_dtype",
    "caption_videos",
    "normalize_dtype",
    "collate_clips",
    "process_state",
    "default_num_workers",
    "expand_segments",
    "format_timestamp",
    "read_manifest",
    "resolve_inputs",
    "claim_subtitle_paths",
    "subtitle_paths",
    "subtitle_text",
    "write_csv",
    "write_subtitles",
]
