"""Check a video-caption dataset before a long run: every referenced video opens and decodes, every segment fits.

One corrupt or missing file among thousands would otherwise stop `vidgpt2 train` at the first batch that holds it,
possibly hours in. :func:`check_dataset` opens each distinct video once with PyAV, through the same
:mod:`vidgpt2.video_io` functions that decoding uses (so a file passes here when it opens there), on a thread pool
(PyAV releases the GIL while it demuxes and decodes; its forwarding of FFmpeg logs to Python, which contends between
threads (PyAV issue #2276), is off unless enabled with `av.logging.set_level`) with a progress bar:

- the file exists and is a file;
- the container opens and holds a video stream;
- its first frame decodes (and converts to RGB, as training does);
- its duration (frame count / fps, as :func:`vidgpt2.video_io.read_video` computes it; measured by decoding when
  the header does not say and a segment needs it);
- the file is whole (:func:`vidgpt2.video_io.file_truncation`: its container structure declares no more bytes than it
  has); for a file cut short, e.g. a partial download of a "faststart" MP4 whose index (and so first frame) survived,
  where its video ends, from the index without decoding (every segment reaching past it is bad, as ``read_video``
  refuses it);

then checks each segment ``[start, end)`` against that duration: non-empty (``end > start``) and starting inside the
video (an ``end`` past the video's end is clamped by ``read_video``, not an error). With ``num_frames`` each segment
is also decoded exactly as training samples it (slower; finds damage past the first frame).

Every bad clip is reported with the file and line of its annotation (the dataset's ``origin`` column, see
:mod:`vidgpt2.data.captions`) and a reason. :func:`drop_bad_rows` removes them, :func:`write_clean_captions` writes
the clean splits as captions JSONL files that ``vidgpt2 train --train-file`` reads, and :func:`enforce_data_check`
is what ``train``, ``evaluate`` and ``extract-features`` run at the start: fail with the full list (default) or drop
the bad rows with a counted warning. With a feature cache the videos are not read at all; there the check is that
every clip has cached features (:func:`check_feature_cache`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
from datasets import Dataset, DatasetDict

from ..video_io import (
    VideoDecodeError,
    _decode_frames,
    _open,
    _SeekFailed,
    _stream_timing,
    _Timing,
    _video_stream,
    file_truncation,
    read_video,
)
from .captions import FEATURES, unique_videos
from .feature_cache import FeatureCache

logger = logging.getLogger(__name__)

OnBadVideo = Literal["error", "skip"]
ON_BAD_VIDEO_CHOICES = ("error", "skip")
# what decoding a bad file raises in vidgpt2.video_io (FileNotFoundError is an OSError, VideoDecodeError a ValueError)
VIDEO_ERRORS = (OSError, ValueError, av.FFmpegError)
# bad clips shown in an exception message; the full list is logged
MAX_LISTED = 20
# what to do about a file cut short
_FIX = "download or copy it again"


def default_num_workers() -> int:
    """Threads for probing: the CPU count, at most 16 (probing is I/O and demuxing, a few frames per file)."""
    return max(1, min(16, os.cpu_count() or 1))


@dataclass(frozen=True)
class VideoProbe:
    """What opening one video file found.

    Attributes:
        path: the file.
        duration: seconds (frame count / fps, as ``read_video`` computes it); None when the file does not say and
            no segment needed it measured.
        error: why the file cannot be used, or None when it is fine.
        truncated: for a file cut short (`vidgpt2.video_io.file_truncation`) whose video stream lost frames, why a
            segment reaching past `duration` (the video left) cannot be read: see :meth:`segment_problem`.
        readable_until: with `truncated`: the latest segment end that can be read (seconds).
    """

    path: str
    duration: float | None = None
    error: str | None = None
    truncated: str | None = None
    readable_until: float | None = None

    def segment_problem(self, start: float | None, end: float | None) -> str | None:
        """Why the segment ``[start, end)`` of this file cannot be read (as `read_video` would refuse it), or None."""
        return self.error or segment_problem(start, end, self.duration) or self._truncation_problem(start, end)

    def _truncation_problem(self, start: float | None, end: float | None) -> str | None:
        if self.truncated is None or (end is not None and end <= self.readable_until):
            return None
        return self.truncated


@dataclass(frozen=True)
class BadClip:
    """One clip (a ``(video, start, end)`` of one split) that cannot be used, with every row that holds it.

    Attributes:
        split: the split's name.
        video: the video file.
        start, end: the segment in seconds (None: from the start / to the end).
        origin: the annotation's file and line(s), e.g. ``"data/train.jsonl line 7"``; None when the loader
            records none (then :meth:`where` names the split and row).
        reason: what is wrong, e.g. ``"file not found"``.
        rows: indices of the split's rows for this clip (one per reference caption in ``train``).
    """

    split: str
    video: str
    start: float | None
    end: float | None
    origin: str | None
    reason: str
    rows: tuple[int, ...]

    def where(self) -> str:
        return self.origin or f"{self.split} row {self.rows[0]}"

    def describe(self) -> str:
        """One line: ``"<file> line <n>: <video> [start-end s]: <reason>"``."""
        segment = ""
        if self.start is not None or self.end is not None:
            segment = f" [{_seconds(self.start, '0')}-{_seconds(self.end, 'end')} s]"
        return f"{self.where()}: {self.video}{segment}: {self.reason}"


@dataclass
class DataCheckReport:
    """The outcome of a data check.

    Attributes:
        bad: the bad clips, in split and row order.
        num_rows: rows per split that were checked.
        num_clips: distinct ``(split, video, start, end)`` clips checked.
        num_videos: distinct video files opened (0 for a feature-cache check).
    """

    bad: list[BadClip] = field(default_factory=list)
    num_rows: dict[str, int] = field(default_factory=dict)
    num_clips: int = 0
    num_videos: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad

    def bad_rows(self, split: str) -> set[int]:
        """Indices of the rows of `split` that belong to a bad clip."""
        return {row for clip in self.bad if clip.split == split for row in clip.rows}

    def summary(self) -> str:
        rows = sum(len(clip.rows) for clip in self.bad)
        total_rows = sum(self.num_rows.values())
        if self.ok:
            files = f" ({self.num_videos} video files checked)" if self.num_videos else ""
            return f"data check: all {self.num_clips} clips ({total_rows} rows) are usable{files}"
        bad_files = len({clip.video for clip in self.bad})
        files = f", in {bad_files} of the {self.num_videos} video files checked" if self.num_videos else ""
        return f"data check: {len(self.bad)} of {self.num_clips} clips ({rows} of {total_rows} rows) are bad{files}"

    def lines(self, limit: int | None = None) -> list[str]:
        """One line per bad clip (the first `limit`, and a line saying how many more)."""
        shown = self.bad if limit is None else self.bad[:limit]
        lines = [clip.describe() for clip in shown]
        if len(shown) < len(self.bad):
            lines.append(f"... and {len(self.bad) - len(shown)} more")
        return lines


class DataCheckError(ValueError):
    """The data check found bad clips and the caller asked to fail (``on_bad_video="error"``)."""

    def __init__(self, report: DataCheckReport, hint: str = ""):
        self.report = report
        listing = "\n".join(f"  {line}" for line in report.lines(MAX_LISTED))
        super().__init__(f"{report.summary()}{hint}\n{listing}")


# --- probing ----------------------------------------------------------------------------------------------------------
def probe_video(path: str | os.PathLike, *, measure_duration: bool = False) -> VideoProbe:
    """Open `path` once: a video stream, a decodable first frame, the duration.

    Args:
        path: the video file.
        measure_duration: when the header gives no duration, decode every frame to measure it (needed only to check
            a segment's start).

    Returns:
        A :class:`VideoProbe`; problems with the file are reported in ``error``, never raised.
    """
    file = Path(path)
    name = str(path)
    if not file.is_file():
        return VideoProbe(name, error="is a directory, not a video file" if file.is_dir() else "file not found")
    truncation = file_truncation(file)  # a few bytes read: was the file cut short (a partial download)?
    try:
        timing = None
        if truncation is not None:
            # measured before decoding anything: a file cut inside its first frame can crash the decoder (PyAV #2344)
            with _open(file) as container:
                timing = _timing_or_none(container, _video_stream(container, file), file, truncation)
            if timing.cut_at is not None and timing.cut_at < 1 / timing.fps:
                return VideoProbe(name, error=f"truncated file: {truncation.describe()}; no frame is whole. Fix: {_FIX}")
        with _open(file) as container:
            stream = _video_stream(container, file)
            first = next(_decode_frames(container, stream), None)
            if first is None:
                return VideoProbe(name, error="no decodable frames")
            first.to_ndarray(format="rgb24")  # the conversion every sampled frame goes through
            if timing is None:  # what the video stream presents, as read_video samples it (this seeks to the end)
                timing = _timing_or_none(container, stream, file, None)
        duration = timing.duration
        if duration is None and measure_duration:
            with _open(file) as container:
                frames = _decode_frames(container, _video_stream(container, file))
                duration = _measured_duration(next(frames), frames, timing.fps)
    except (VideoDecodeError, av.FFmpegError, OSError) as error:
        reason = _one_line(error)
        if truncation is not None and "truncated" not in reason:
            reason += f" (truncated file: {truncation.describe()}. Fix: {_FIX})"
        return VideoProbe(name, error=reason)
    if timing.cut_at is None:
        return VideoProbe(name, duration=duration)
    return VideoProbe(
        name,
        duration=duration,
        truncated=f"truncated file: {truncation.describe()}; only its first {timing.cut_at:.3f} s of video can be "
        f"decoded. Fix: {_FIX}",
        readable_until=timing.cut_at + 1.5 / timing.fps,  # as read_video accepts (video_io._truncation_problem)
    )


def _timing_or_none(container, stream, file: Path, truncation) -> _Timing:
    """`_stream_timing`, or no timing where seeking fails (`read_video` then decodes every frame)."""
    try:
        return _stream_timing(container, stream, file, truncation)
    except _SeekFailed:
        return _Timing(None, None)


def _measured_duration(first: av.VideoFrame, rest, fps: float | None) -> float | None:
    """Duration of a stream whose header has none, from its decoded frames: as `read_video`'s sequential decode
    computes it, the last frame's timestamp plus one mean frame interval (or frame count / fps)."""
    count, last = 1, first
    for frame in rest:
        count, last = count + 1, frame
    if first.time is not None and last.time is not None and count > 1:
        span = last.time - first.time
        return span + span / (count - 1)
    return count / fps if fps else None


def segment_problem(start: float | None, end: float | None, duration: float | None) -> str | None:
    """Why the segment ``[start, end)`` cannot be sampled from a video lasting `duration` seconds, or None.

    The rules are those of `read_video`: the segment must be non-empty and start before the video ends; an end past
    the video's end is clamped there.
    """
    if start is not None and end is not None and end <= start:
        return f"empty segment: end ({end:g} s) is not after start ({start:g} s)"
    if duration is not None and start is not None and start >= duration:
        return f"segment starts at {start:g} s, after the video ends ({duration:.3f} s)"
    return None


# --- the check --------------------------------------------------------------------------------------------------------
@dataclass
class _Clip:
    split: str
    video: str
    start: float | None
    end: float | None
    origin: str | None
    rows: list[int]


def _clips(data: Mapping[str, Dataset]) -> list[_Clip]:
    """Distinct ``(video, start, end)`` of each split with their rows, in row order."""
    clips: list[_Clip] = []
    for split, ds in data.items():
        origins = ds["origin"] if "origin" in ds.column_names else [None] * len(ds)
        by_key: dict[tuple, _Clip] = {}
        for index, (video, start, end, origin) in enumerate(zip(ds["video"], ds["start"], ds["end"], origins)):
            clip = by_key.get((video, start, end))
            if clip is None:
                clip = by_key[(video, start, end)] = _Clip(split, video, start, end, origin, [])
                clips.append(clip)
            clip.rows.append(index)
    return clips


def _as_splits(data: Dataset | Mapping[str, Dataset]) -> dict[str, Dataset]:
    if isinstance(data, Dataset):
        return {str(data.split) if data.split is not None else "data": data}
    return dict(data)


def _run(tasks: dict, function, num_workers: int, desc: str, unit: str, show_progress: bool) -> dict:
    """`{key: function(*args)}` for `tasks = {key: args}`, on `num_workers` threads (0: in this thread)."""
    from tqdm.auto import tqdm

    results = {}
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not show_progress) as progress:
        if num_workers == 0:
            for key, args in tasks.items():
                results[key] = function(*args)
                progress.update()
            return results
        with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="vidgpt2-check") as pool:
            futures = {pool.submit(function, *args): key for key, args in tasks.items()}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress.update()
    return results


def _decode_problem(video: str, num_frames: int, start: float | None, end: float | None) -> str | None:
    try:
        read_video(video, num_frames, start, end)
    except VIDEO_ERRORS as error:
        return _one_line(error)
    return None


def check_dataset(
    data: Dataset | Mapping[str, Dataset],
    *,
    num_workers: int | None = None,
    num_frames: int | None = None,
    show_progress: bool = True,
) -> DataCheckReport:
    """Open every video the dataset references and check every segment (see the module docstring).

    Args:
        data: a split or a `DatasetDict` with the loaders' columns (``video``, ``start``, ``end``; ``origin``
            names the annotation line when present).
        num_workers: threads probing files at once (default :func:`default_num_workers`; 0 probes in this thread).
        num_frames: also decode `num_frames` sampled frames of every segment, as training does (slower).
        show_progress: show a tqdm progress bar.

    Returns:
        A :class:`DataCheckReport`; nothing is raised for bad files.
    """
    splits = _as_splits(data)
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {workers}")
    clips = _clips(splits)
    needs_duration: dict[str, bool] = {}
    for clip in clips:
        needs_duration[clip.video] = needs_duration.get(clip.video, False) or bool(clip.start)
    probes = _run(
        {video: (video,) for video in needs_duration},
        lambda video: probe_video(video, measure_duration=needs_duration[video]),
        workers, "checking videos", "video", show_progress,
    )
    reasons: dict[int, str] = {}
    for i, clip in enumerate(clips):
        reason = probes[clip.video].segment_problem(clip.start, clip.end)
        if reason:
            reasons[i] = reason
    if num_frames is not None:
        segments = {
            (c.video, c.start, c.end): (c.video, num_frames, c.start, c.end)
            for i, c in enumerate(clips) if i not in reasons
        }
        decoded = _run(segments, _decode_problem, workers, "decoding segments", "clip", show_progress)
        for i, clip in enumerate(clips):
            problem = decoded.get((clip.video, clip.start, clip.end))
            if i not in reasons and problem:
                reasons[i] = problem
    bad = [
        BadClip(c.split, c.video, c.start, c.end, c.origin, reasons[i], tuple(c.rows))
        for i, c in enumerate(clips) if i in reasons
    ]
    report = DataCheckReport(bad, {s: len(ds) for s, ds in splits.items()}, len(clips), len(probes))
    logger.info(report.summary())
    return report


def check_feature_cache(data: Dataset | Mapping[str, Dataset], cache: FeatureCache) -> DataCheckReport:
    """Check that every clip of `data` has features in `cache` (videos are not opened: training reads the cache).

    Returns:
        A :class:`DataCheckReport` whose bad clips are those missing from the cache.

    Raises:
        FileNotFoundError, ValueError: `cache` is no feature cache (missing folder, a frame cache;
            `FeatureCache.check_folder`).
    """
    cache.check_folder()
    splits = _as_splits(data)
    clips = _clips(splits)
    missing = {
        (s["video"], s["start"], s["end"])
        for s in cache.missing({"video": c.video, "start": c.start, "end": c.end} for c in clips)
    }
    reason = f"no cached features in {cache.root} (run `vidgpt2 extract-features` over this data)"
    bad = [
        BadClip(c.split, c.video, c.start, c.end, c.origin, reason, tuple(c.rows))
        for c in clips if (c.video, c.start, c.end) in missing
    ]
    report = DataCheckReport(bad, {s: len(ds) for s, ds in splits.items()}, len(clips), 0)
    logger.info(report.summary().replace("usable", "in the feature cache"))
    return report


# --- acting on a report -------------------------------------------------------------------------------------------------
def drop_bad_rows(data: Dataset | Mapping[str, Dataset], report: DataCheckReport) -> DatasetDict:
    """`data` without the rows of the report's bad clips (splits keep their names and row order)."""
    result = {}
    for split, ds in _as_splits(data).items():
        bad = report.bad_rows(split)
        result[split] = ds.select([i for i in range(len(ds)) if i not in bad]) if bad else ds
    return DatasetDict(result)


def write_clean_captions(
    data: Dataset | Mapping[str, Dataset], report: DataCheckReport, output_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write the usable clips of each split to ``output_dir/<split>.jsonl``, one line per clip.

    Lines hold ``video`` (absolute path), ``captions`` (every reference), ``start`` / ``end`` when set,
    ``video_id`` and the split's extra scalar columns (e.g. BDD-X ``action``), so
    ``load_captions_files(train_file=.../train.jsonl)`` (``vidgpt2 train --train-file``) reads the same clips back.

    Returns:
        ``{split: path}`` of the files written.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, ds in drop_bad_rows(data, report).items():
        extras = [name for name in ds.column_names if name not in FEATURES]
        lines = []
        for row in unique_videos(ds):
            record = {"video": row["video"], "captions": list(row["references"])}
            record.update({k: row[k] for k in ("start", "end") if row[k] is not None})
            record["video_id"] = row["video_id"]
            record.update({k: row[k] for k in extras if row[k] is not None})
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        path = folder / f"{split}.jsonl"
        tmp = path.with_suffix(f".jsonl.tmp{os.getpid()}")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(path)
        written[split] = path
        logger.info("%s: wrote %d clean clips to %s", split, len(lines), path)
    return written


def enforce_data_check(
    data: DatasetDict,
    *,
    on_bad_video: OnBadVideo = "error",
    feature_cache: FeatureCache | None = None,
    num_workers: int | None = None,
    show_progress: bool = True,
) -> DatasetDict:
    """The check ``train``, ``evaluate`` and ``extract-features`` run before any work: videos (or, with a feature
    cache, cache coverage), then fail or drop.

    Args:
        data: the splits about to be used.
        on_bad_video: ``"error"``: log every bad clip and raise; ``"skip"``: log them, drop their rows and go on.
        feature_cache: check that every clip is in this cache instead of opening the videos.
        num_workers, show_progress: as for :func:`check_dataset`.

    Returns:
        `data` (``"error"``, or nothing bad) or `data` without the bad rows (``"skip"``).

    Raises:
        DataCheckError: bad clips were found and `on_bad_video` is ``"error"``.
        ValueError: `on_bad_video` is not ``"error"`` or ``"skip"``, or ``"skip"`` dropped every row of a split.
    """
    if on_bad_video not in ON_BAD_VIDEO_CHOICES:
        raise ValueError(f"on_bad_video must be one of {ON_BAD_VIDEO_CHOICES}, got {on_bad_video!r}")
    if feature_cache is not None:
        report = check_feature_cache(data, feature_cache)
    else:
        report = check_dataset(data, num_workers=num_workers, show_progress=show_progress)
    if report.ok:
        return data
    level = logging.ERROR if on_bad_video == "error" else logging.WARNING
    for line in report.lines():
        logger.log(level, "bad clip: %s", line)
    if on_bad_video == "error":
        raise DataCheckError(
            report,
            "; fix or remove them (`vidgpt2 check-data ... --write-clean DIR` writes the usable rows), "
            "or pass --on-bad-video skip to go on without them",
        )
    logger.warning(
        "%s: skipping them (--on-bad-video skip): %s",
        report.summary(),
        ", ".join(f"{split} {len(report.bad_rows(split))} rows" for split in report.num_rows if report.bad_rows(split)),
    )
    kept = drop_bad_rows(data, report)
    emptied = [f"{split} ({report.num_rows[split]} rows)" for split in kept if len(kept[split]) == 0]
    if emptied:
        raise ValueError(
            f"--on-bad-video skip left no usable rows in {', '.join(emptied)}: every row's video is bad; fix the "
            "videos or the captions file (`vidgpt2 check-data` lists every bad row)"
        )
    return kept


def _seconds(value: float | None, default: str) -> str:
    return default if value is None else f"{value:g}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


__all__ = [
    "BadClip",
    "DataCheckError",
    "DataCheckReport",
    "ON_BAD_VIDEO_CHOICES",
    "VideoProbe",
    "check_dataset",
    "check_feature_cache",
    "drop_bad_rows",
    "enforce_data_check",
    "probe_video",
    "segment_problem",
    "write_clean_captions",
]
