"""Video decoding with PyAV: uniform frame sampling, segment cutting and keyframe seeking.

Everything returns frames as uint8 RGB arrays of shape (T, H, W, 3). Frames decoded from files come upright, as
players show them (a phone's display rotation is applied), and are sampled over the video stream's own duration.

    sample_frame_indices(num_available, num_frames)  which frames to keep (uniform, short clips padded)
    read_video(path, num_frames, start, end)          decode only the sampled frames of a file
    to_frames_array(video)                            normalise an in-memory video (array, tensor, PIL frames)

This module imports only the standard library, numpy, PIL and av, so it can be shipped to the Hub as remote code
next to `video_processing_vidgpt2.py` (which imports it as `from .video_io import ...`).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import PIL.Image
from av.sidedata.sidedata import Type as SideDataType

logger = logging.getLogger(__name__)

# Between two sampled frames we keep decoding forward instead of seeking when the next frame is at most this many
# seconds ahead (or closer than what the last seek cost): short gaps are cheaper to decode than to seek over, since a
# seek lands on the previous keyframe and has to decode forward from there anyway. Decoding this much video to reach
# an exact frame is also always accepted (`keyframe_tolerance` only applies beyond it).
_MAX_FORWARD_DECODE_S = 1.0

# Default for `read_video(keyframe_tolerance=...)`: a sampled frame may move back to the keyframe a seek lands on by up
# to this fraction of the interval between two sampled frames (see `read_video`).
DEFAULT_KEYFRAME_TOLERANCE = 0.25

# A display matrix is applied when it turns the picture by a multiple of 90 degrees give or take 1 degree (as the
# tangent of the angle), the tolerance of the ffmpeg command line's autorotation (fftools/ffmpeg_filter.c).
_RIGHT_ANGLE_TOLERANCE = math.tan(math.radians(1.0))


class VideoDecodeError(ValueError):
    """A file exists but cannot be decoded as a video: not a video, corrupt, no video stream or no decodable frames."""


def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Pick `num_frames` indices spread uniformly over `num_available` frames.

    Index `k` is the centre of the k-th of `num_frames` equal segments of `[0, num_available)`. When the clip is
    shorter than `num_frames`, indices repeat (the clip is padded by repeating frames); they are always
    non-decreasing and within `[0, num_available - 1]`.

    Example: `sample_frame_indices(16, 4) -> [2, 6, 10, 14]`, `sample_frame_indices(3, 6) -> [0, 0, 1, 1, 2, 2]`.

    Raises:
        ValueError: if `num_available` or `num_frames` is smaller than 1.
    """
    if num_available < 1:
        raise ValueError(f"Cannot sample frames from a clip with num_available={num_available} frames.")
    _check_num_frames(num_frames)
    k = np.arange(num_frames, dtype=np.int64)
    # centre of segment k = (k + 1/2) * num_available / num_frames, in exact integer arithmetic
    return (2 * k + 1) * num_available // (2 * num_frames)


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    keyframe_tolerance: float = DEFAULT_KEYFRAME_TOLERANCE,
) -> np.ndarray:
    """Decode `num_frames` uniformly sampled frames of a video file as RGB.

    Works for any container/codec FFmpeg (bundled in the PyAV wheel) can read: mp4, avi, mov, webm, mkv, ...
    Frames are chosen with `sample_frame_indices` over the frames of the clip (or of `[start, end)`), so a clip
    shorter than `num_frames` is padded by repeating frames. Only the sampled frames are decoded: for each one we
    seek to the keyframe before it and decode forward. Files without a usable duration, frame rate or seeking are
    decoded sequentially.

    Long clips: decoding forward from a keyframe costs up to a whole keyframe interval (often 2-10 s of video) per
    sampled frame. When reaching the exact frame would mean decoding more than 1 s of video past the keyframe a seek
    lands on, and that keyframe lies at most `keyframe_tolerance` sampling intervals before the target (the interval
    is the segment length divided by `num_frames`), the keyframe is returned instead. So frames are exact wherever
    exactness is cheap: always for clips up to `4 * num_frames` seconds with the default 0.25 (a 10 s clip at 8
    frames has a 1.25 s interval), while 8 frames of a 10 min clip (75 s interval) cost about one keyframe decode each
    instead of half a keyframe interval: a frame inside the same quarter of its sampling segment is as representative
    as the exact centre. Frames stay distinct and in order, because the tolerance is below one interval. Use
    `keyframe_tolerance=0` for frame-accurate sampling at any length.

    Args:
        path: the video file.
        num_frames: how many frames to return.
        start: optional start of the segment to sample from, in seconds from the start of the clip.
        end: optional end of the segment (exclusive), in seconds; clamped to the clip's duration.
        keyframe_tolerance: how far, as a fraction of the sampling interval in `[0, 1)`, a sampled frame may move
            back to a keyframe to save decoding (see above); 0 for frame-accurate sampling.

    Frames come upright, as players show them: phones and dashcams store a landscape picture plus a display matrix
    (rotation by a multiple of 90 degrees, possibly mirrored) which is applied, as FFmpeg's autorotation does, so a
    portrait clip gives frames taller than wide. Timing comes from the video stream itself: when header figures
    (frame count, durations) disagree with where the video stream ends (audio outlasting the video, an edit list,
    a wrong frame count), frames are sampled over the video that is there and `start`/`end` are checked against it.

    Returns:
        `np.ndarray` of shape `(num_frames, H, W, 3)`, dtype uint8, RGB (grayscale and RGBA are converted); H and
        W are the displayed height and width (stored ones swapped by a 90 or 270 degree display rotation).

    Raises:
        FileNotFoundError: `path` does not exist.
        VideoDecodeError: the file is not a video, is corrupt, has no video stream or no decodable frames, or it
            was cut short (an interrupted download or copy: its container structure declares more bytes than it has,
            see `file_truncation`) and the segment (the whole video when `end` is None) reaches past the video left
            in it. A segment within that video is read, with a warning.
        ValueError: `num_frames < 1`, `start`/`end` negative, `start >= end`, `start` beyond the end of the video, or
            `keyframe_tolerance` outside `[0, 1)`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file not found: '{path}'" + (" (it is a directory)" if path.is_dir() else ""))
    _check_num_frames(num_frames)
    for name, value in (("start", start), ("end", end)):
        if value is not None and value < 0:
            raise ValueError(f"{name}={value} must be >= 0 seconds (video '{path}').")
    check_keyframe_tolerance(keyframe_tolerance)

    truncation = file_truncation(path)
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            try:
                fps, duration, cut_at = _stream_timing(container, stream, path, truncation)
                if cut_at is not None:
                    _check_truncated_segment(path, truncation, cut_at, start, end, fps)
                if fps is None or duration is None:
                    logger.debug("'%s' has no usable frame rate/duration: decoding every frame.", path)
                else:
                    first, last = _segment_to_frames(start, end, fps, duration, path)
                    indices = first + sample_frame_indices(last - first + 1, num_frames)
                    snap_s = keyframe_tolerance * (last - first + 1) / fps / num_frames  # fraction of the interval
                    return _decode_by_seeking(container, stream, indices / fps, fps, path, snap_s)
            except _SeekFailed as e:
                logger.debug("Seeking failed in '%s' (%s): decoding every frame.", path, e)
        if truncation is not None:
            logger.warning(
                "'%s' is truncated (%s) and cannot be sought: frames are sampled from the video it has.",
                path, truncation.describe(),
            )
        return _decode_sequentially(path, num_frames, start, end)
    except av.FFmpegError as e:
        cut = f" It is truncated: {truncation.describe()}. Fix: {_FIX}." if truncation is not None else ""
        raise VideoDecodeError(f"Could not decode video '{path}': {e}.{cut}") from e


def _check_truncated_segment(
    path: Path, truncation: Truncation, cut_at: float, start: float | None, end: float | None, fps: float
) -> None:
    """Raise `VideoDecodeError` when `[start, end)` of a file cut short reaches past the `cut_at` seconds of video it
    has (the whole video, with `end=None`); otherwise warn that the file is truncated and read the segment."""
    problem = _truncation_problem(path, truncation, cut_at, start, end, fps)
    if problem is not None:
        raise VideoDecodeError(problem)
    if str(path) in _WARNED_TRUNCATED:  # once per file and process: a long video is read window by window
        return
    if len(_WARNED_TRUNCATED) < 10_000:
        _WARNED_TRUNCATED.add(str(path))
    logger.warning(
        "'%s' is truncated (%s); segments within the %.3f s of video it has are read (here %s-%s s), others refused.",
        path, truncation.describe(), cut_at, f"{start or 0:g}", f"{end:g}",
    )


_WARNED_TRUNCATED: set[str] = set()  # files cut short that `_check_truncated_segment` warned about


def to_frames_array(video) -> np.ndarray:
    """Normalise an in-memory video to a uint8 RGB array of shape `(T, H, W, 3)`.

    Accepted inputs:
        - a numpy array or torch tensor `(T, H, W, C)` or `(T, C, H, W)` with C in {1, 3, 4}
          (channels-last is assumed when both readings are possible);
        - a list/tuple of frames: PIL images (any mode: L, RGBA, P, ... are converted to RGB),
          or `(H, W, C)` / `(C, H, W)` numpy arrays or torch tensors.
    uint8 (or other integer types with values in [0, 255]) are kept; floats must be in [0, 1] and are scaled by 255.
    One channel is repeated to RGB; a fourth (alpha) channel is dropped, as PIL's `convert("RGB")` does.

    Raises:
        ValueError: empty video, wrong rank, unsupported channel count, frames of different sizes, or
            values out of range. The message gives the shape received and the layout expected.
    """
    if isinstance(video, (list, tuple)):
        if len(video) == 0:
            raise ValueError("Received an empty list of frames; a video needs at least one frame.")
        frames = [_frame_to_array(frame, i) for i, frame in enumerate(video)]
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"All frames of a video must have the same (H, W, C) shape, got {sorted(shapes)}.")
        array = np.stack(frames)  # (T, H, W, C)
    else:
        array = _as_numpy(video)
        if array.ndim != 4:
            raise ValueError(
                f"Expected a video of shape (T, H, W, C) or (T, C, H, W) with C in {{1, 3, 4}}, got shape "
                f"{tuple(array.shape)}. For a single frame use video[None]; for a batch pass a list of videos."
            )
        if array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3, 4):
            array = array.transpose(0, 2, 3, 1)  # (T, C, H, W) -> (T, H, W, C)
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"Expected a video of shape (T, H, W, C) or (T, C, H, W) with C in {{1, 3, 4}} channels, got shape "
                f"{tuple(array.shape)}."
            )
    if array.shape[0] == 0:
        raise ValueError(f"Received a video with no frames (shape {tuple(array.shape)}).")

    array = _to_uint8(array)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)  # grayscale -> RGB
    elif array.shape[-1] == 4:
        array = array[..., :3]  # RGBA -> RGB (alpha dropped)
    return np.ascontiguousarray(array)


def video_duration(path: str | os.PathLike) -> float:
    """Duration of a video file's video stream in seconds, read from its headers without decoding any frame.

    The duration is what `read_video` samples from: where the video stream's last presented frame ends (found by
    seeking near the end the headers give, see `_stream_timing`). Files whose headers give no duration (some WebM/MKV
    written live) are demuxed, not decoded: the end of the last packet is the duration.

    Raises:
        FileNotFoundError: `path` does not exist.
        VideoDecodeError: not a video, no video stream, or no timing information at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file not found: '{path}'" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        with _open(path) as container:
            stream = _video_stream(container, path)
            try:
                duration = _stream_timing(container, stream, path, file_truncation(path)).duration
            except _SeekFailed:
                duration = None
            if duration is not None:
                return duration
            container.seek(0)  # back from the end that `_stream_timing` read
            start = stream.start_time or 0
            ends = [
                packet.pts + (packet.duration or 0)
                for packet in container.demux(stream)
                if packet.pts is not None and packet.size
            ]
            if not ends or stream.time_base is None:
                raise VideoDecodeError(f"'{path}' gives no duration and its packets carry no timestamps.")
            return float((max(ends) - start) * stream.time_base)
    except av.FFmpegError as e:
        raise VideoDecodeError(f"Could not read the duration of '{path}': {e}") from e


def declared_duration(path: str | os.PathLike) -> float:
    """Seconds of video the file's headers declare: `video_duration` for a whole file; for a file cut short
    (`file_truncation`: an interrupted download or copy) the video stream's own header duration (frame count, track
    duration, DURATION tag; the longest stream's only when it is the sole stream), i.e. the video it was meant to
    hold. Windows of a long video are laid over this span (`segment_windows`), so the part lost to the cut is not
    silently left out: its windows fail in `read_video` with the truncation reason.

    Raises:
        FileNotFoundError, VideoDecodeError: as `video_duration`.
    """
    duration = video_duration(path)
    if file_truncation(path) is None:
        return duration
    try:
        with _open(Path(path)) as container:
            stream = _video_stream(container, Path(path))
            rate = stream.average_rate or stream.guessed_rate
            if not rate or float(rate) <= 0:
                return duration
            own = _own_durations(_header_durations(container, stream, float(rate)), len(container.streams) == 1)
    except av.FFmpegError as e:
        raise VideoDecodeError(f"Could not read the duration of '{path}': {e}") from e
    return max(duration, min(own)) if own else duration


def segment_windows(duration: float, segment_seconds: float, stride: float | None = None) -> list[tuple[float, float]]:
    """Consecutive windows `[start, end)` in seconds covering `[0, duration)`: `segment_seconds` long, one every
    `stride` seconds (default `segment_seconds`: back to back; smaller overlaps, larger leaves gaps).

    The last window is cut at `duration` (a partial window), and no window starts once one has reached the end.
    Times are rounded to milliseconds (the precision of SRT/WebVTT timestamps).

    Example: `segment_windows(25, 10) -> [(0, 10), (10, 20), (20, 25)]`, `segment_windows(25, 10, 5)` ->
    `[(0, 10), (5, 15), (10, 20), (15, 25)]`.

    Raises:
        ValueError: `segment_seconds` or `stride` not a positive number, or `duration` not positive.
    """
    for name, value in (("segment_seconds", segment_seconds), ("stride", stride)):
        if value is None and name == "stride":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    if not duration > 0:
        raise ValueError(f"Cannot cut a video of duration {duration!r} s into windows.")
    stride = segment_seconds if stride is None else stride
    windows = []
    for k in range(math.ceil(duration / stride) + 1):
        start = float(round(k * stride, 3))
        if start >= duration:
            break
        end = float(round(min(k * stride + segment_seconds, duration), 3))
        windows.append((start, end))
        if end >= duration:
            break
    return windows


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def check_keyframe_tolerance(keyframe_tolerance) -> None:
    """Raise `ValueError` unless `keyframe_tolerance` is a number in `[0, 1)`."""
    if isinstance(keyframe_tolerance, bool) or not isinstance(keyframe_tolerance, (int, float)):
        raise ValueError(f"keyframe_tolerance must be a number in [0, 1), got {keyframe_tolerance!r}.")
    if not 0 <= keyframe_tolerance < 1:
        raise ValueError(
            f"keyframe_tolerance={keyframe_tolerance} must be in [0, 1): it is a fraction of the interval between two "
            "sampled frames (0 = frame-accurate, 1 or more could return the same frame twice)."
        )


def _check_num_frames(num_frames) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")


# --- files cut short (an interrupted download or copy) ----------------------------------------------------------------
# Muxers write the size of every top-level element, so a file whose elements add up to more bytes than it holds was cut
# short. The walks read only element headers (a few bytes per element: ftyp + moov + mdat for most MP4s).
_MAX_TOP_LEVEL_ELEMENTS = 1_000_000  # a fragmented MP4 has two per fragment; stop walking pathological files there
_MP4_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"moof", b"sidx", b"uuid"}
_FIX = (
    "download or copy it again, or leave it out (`vidgpt2 check-data ... --write-clean DIR` writes the usable rows; "
    "--on-bad-video skip drops them)"
)


class Truncation(NamedTuple):
    """A video file shorter than its own container structure says: the end of the file is missing.

    Attributes:
        container: the container family whose sizes were read: "MP4/MOV", "Matroska/WebM" or "AVI".
        file_size: bytes in the file.
        declared_size: bytes its top-level elements declare (MP4/MOV boxes, the Matroska Segment, AVI RIFF chunks).
        has_index: False for an MP4/MOV file without its index (no complete `moov` box; FFmpeg: "moov atom not
            found"), which cannot be opened at all; True otherwise.
    """

    container: str
    file_size: int
    declared_size: int
    has_index: bool = True

    def describe(self) -> str:
        """E.g. "it has 3,154 of the 3,943 bytes its MP4/MOV structure declares (an interrupted download or copy?)"."""
        index = "" if self.has_index else 'no complete index (moov box; FFmpeg: "moov atom not found")'
        if self.declared_size <= self.file_size:
            return f"it has {index} (an interrupted download, copy or recording?)"
        return (
            f"it has {self.file_size:,} of the {self.declared_size:,} bytes its {self.container} structure declares"
            f"{' and ' + index if index else ''} (an interrupted download or copy?)"
        )


def file_truncation(path: str | os.PathLike) -> Truncation | None:
    """How a video file was cut short, from its container structure, or None when it is whole or not MP4/MOV,
    Matroska/WebM or AVI (those are told apart by their first bytes, not the suffix).

    MP4/MOV (ISO/IEC 14496-12 section 4.2): top-level boxes are `size (u32 BE) type (4 bytes)`, `size == 1` followed
    by a u64 size, `size == 0` reaching to the end of the file. Matroska (RFC 9559): an EBML header element then the
    Segment (ID 0x18538067) with a variable-size integer size (all ones: unknown, e.g. written live). AVI (RIFF):
    chunks `id (4 bytes) size (u32 LE)` padded to even sizes, `RIFF ... AVI ` then `RIFF ... AVIX` for OpenDML files.
    Reads a few bytes per top-level element; raises nothing for malformed structures (they give None).
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(12)
            if head[4:8] in _MP4_BOX_TYPES:
                return _mp4_truncation(file, size)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _matroska_truncation(file, size)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _riff_truncation(file, size)
    except OSError as e:
        logger.debug("Cannot read the structure of '%s': %s", path, e)
    return None


def _mp4_truncation(file, size: int) -> Truncation | None:
    offset, has_moov = 0, False
    for _ in range(_MAX_TOP_LEVEL_ELEMENTS):
        if offset >= size:
            break
        file.seek(offset)
        header = file.read(16)
        if len(header) < 8:
            return Truncation("MP4/MOV", size, offset + 8, has_moov)
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if box_size == 1:
            if len(header) < 16:
                return Truncation("MP4/MOV", size, offset + 16, has_moov)
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:  # reaches to the end of the file
            box_size = size - offset
        if box_size < 8:
            return None  # not a box structure we can follow
        has_moov = has_moov or (box_type == b"moov" and offset + box_size <= size)
        offset += box_size
    else:
        return None
    if offset > size or not has_moov:
        return Truncation("MP4/MOV", size, max(offset, size), has_moov)
    return None


def _ebml_number(file, size_field: bool) -> tuple[int, int] | None:
    """(value, bytes) of an EBML variable-size integer; a size keeps no marker bit and all ones is -1 (unknown)."""
    first = file.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = file.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = int.from_bytes(first + rest, "big")
    if size_field:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            value = -1
    return value, length


def _matroska_truncation(file, size: int) -> Truncation | None:
    file.seek(0)
    header_id, header_size = _ebml_number(file, False), _ebml_number(file, True)
    if header_id is None or header_size is None or header_size[0] < 0:
        return None
    file.seek(file.tell() + header_size[0])
    segment_id, segment_size = _ebml_number(file, False), _ebml_number(file, True)
    if segment_id is None or segment_id[0] != 0x18538067:
        return None
    if segment_size is None:  # the file ends inside the Segment header
        return Truncation("Matroska/WebM", size, size + 1)
    if segment_size[0] < 0:  # unknown size (written live): nothing to compare
        return None
    declared = file.tell() + segment_size[0]
    return Truncation("Matroska/WebM", size, declared) if declared > size else None


def _riff_truncation(file, size: int) -> Truncation | None:
    offset = 0
    for _ in range(_MAX_TOP_LEVEL_ELEMENTS):
        if offset >= size:
            break
        file.seek(offset)
        header = file.read(8)
        if len(header) < 8:
            return Truncation("AVI", size, offset + 8)
        chunk_size = struct.unpack("<I", header[4:8])[0]
        if chunk_size == 0 and header[:4] == b"RIFF":
            return None  # a writer that never filled the size in
        offset += 8 + chunk_size + (chunk_size & 1)
    else:
        return None
    return Truncation("AVI", size, offset) if offset > size else None


def _index_end(stream, file_size: int) -> float | None:
    """Seconds (on the clock of `frame.time`) before which every frame of `stream` is whole in a file of `file_size`
    bytes, or None when the stream's index (MP4/MOV sample tables, AVI `idx1`: entries with a position and a size)
    is empty or points at no data past the end of the file.

    A frame shown before the decode timestamp of the first sample that is not wholly in the file was decoded before
    that sample (presentation never precedes decoding), so it and every frame it references are in the file.
    """
    entries = stream.index_entries
    count = len(entries)

    def cut(entry) -> bool:  # a sample not wholly in the file (entries without a size, e.g. Matroska cues, say nothing)
        return entry.size > 0 and entry.pos >= 0 and entry.pos + entry.size > file_size

    if count == 0 or not any(cut(e) for e in entries[max(0, count - 16) :]):
        return None
    # a file cut short: find the first sample past the cut (paid for only by such files)
    return float(min(e.timestamp for e in entries if cut(e)) * stream.time_base)


class _Timing(NamedTuple):
    """What `_stream_timing` found: frames per second and duration in seconds of what the video stream presents
    (None where it cannot be told), and `cut_at`: for a file cut short (`file_truncation`) whose video stream lost
    frames, the seconds of video left (`duration`); None otherwise."""

    fps: float | None
    duration: float | None
    cut_at: float | None = None


def _truncation_problem(
    path: str | os.PathLike, truncation: Truncation, cut_at: float, start: float | None, end: float | None, fps: float
) -> str | None:
    """Why `[start, end)` of a file cut short cannot be read, or None when it lies within the `cut_at` seconds of
    video that are left (at most a frame and a half past, which `read_video` clamps as for whole files)."""
    if cut_at >= 1 / fps and end is not None and end <= cut_at + 1.5 / fps:
        return None
    if cut_at < 1 / fps:
        left = "no frame of its video is whole"
    else:
        asked = "the whole video was asked for" if end is None else f"frames up to {end:g} s were asked for"
        left = f"only its first {cut_at:.3f} s of video can be decoded and {asked}"
    return f"'{path}' is truncated: {truncation.describe()}; {left}. Fix: {_FIX}."


class _SeekFailed(Exception):
    """Seeking is not usable in this file; the caller falls back to a sequential decode."""


def _open(path: Path):
    """`av.open`; a file that does not open raises `VideoDecodeError`, which says so when it was cut short, empty or
    no video container. An empty file is refused before FFmpeg sees it: some FFmpeg builds open it without an error
    and no format (pupil-labs/pupil#2083)."""
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(f"Could not open '{path}' as a video: {_unopenable(path)}".rstrip())
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        truncation = file_truncation(path)
        if truncation is not None:
            raise VideoDecodeError(
                f"Could not open '{path}' as a video: it is truncated: {truncation.describe()}. Fix: {_FIX}. "
                f"(FFmpeg: {e})"
            ) from e
        raise VideoDecodeError(f"Could not open '{path}' as a video: {_unopenable(path)}(FFmpeg: {e})") from e


def _unopenable(path: Path) -> str:
    """Why a file FFmpeg cannot open is no video, in words, with the fix; "" when nothing more can be told."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        return ""
    if size == 0:
        return f"it is an empty file (0 bytes; an interrupted download or copy?). Fix: {_FIX}. "
    if not _looks_like_video(head):
        return (
            f"it is not a video container FFmpeg recognises (it starts with {head!r}: a web page, text or another "
            f"file saved under a video name?). Fix: {_FIX}. "
        )
    return ""


# First bytes of the containers FFmpeg is asked to read most (ISO/IEC 14496-12 box types at offset 4; EBML; RIFF;
# MPEG-PS/TS; FLV; ASF; Ogg); a file starting otherwise that FFmpeg cannot open is called "not a video container".
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"RIFF", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV", b"OggS",
                b"\x30\x26\xb2\x75", b"GIF8")
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof")


def _looks_like_video(head: bytes) -> bool:
    return head[4:8] in _MP4_BOXES or head.startswith(_VIDEO_MAGIC) or head[:1] == b"\x47"  # 0x47: MPEG-TS sync byte


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoDecodeError(f"'{path}' has no video stream.")
    return container.streams.video[0]


def _decode_frames(container, stream) -> Iterator[av.VideoFrame]:
    """All decoding goes through here (tests count the frames it yields)."""
    yield from container.decode(stream)


def _stream_timing(container, stream, path: Path, truncation: Truncation | None = None) -> _Timing:
    """Frames per second and duration in seconds of what the video stream presents (None where it cannot be told),
    and for a file cut short (`truncation`, from `file_truncation`) where its video ends (`_Timing.cut_at`).

    Header figures (`_header_durations`) can disagree with the video stream itself: a WebM/MKV container lasts as long
    as its longest stream, so audio that outlasts the video makes it look longer; an MP4 cut with an edit list
    counts samples it does not show; an AVI frame count can simply be wrong. They are only used to find the end of the
    video stream (`_presented_end`: one seek and reading, not decoding, the packets of the last keyframe interval);
    the duration is where its last frame ends, rounded to whole frames. A disagreement is logged; as a warning
    (truncated file?) when every figure the video stream gives about itself says it lasts longer.

    A file cut short: when the stream's index points past the end of the file (MP4/MOV), the video ends before the
    first sample that is not whole (`_index_end`, no reading at all); otherwise (Matroska, AVI: their indexes are
    written at the end, so they are gone) where its packets end, read from the start when seeking past the cut finds
    none. `cut_at` is set when a file cut short presents less video than its own headers say.

    Raises:
        _SeekFailed: the end of the video stream cannot be found by seeking (the caller decodes every frame).
    """
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    if not fps or fps <= 0:
        return _Timing(None, None)
    claims = _header_durations(container, stream, fps)
    if not claims:
        return _Timing(fps, None)
    whole_until = _index_end(stream, truncation.file_size) if truncation is not None else None
    if whole_until is not None:
        presented = whole_until
    else:
        try:
            presented = _presented_end(container, stream, max(claims.values()), fps)
        except _SeekFailed as e:
            # nothing where the headers say the video ends: a file cut short (an interrupted download or copy). Its
            # packets are read from the start instead, still without decoding, so a segment inside what is left
            # stays readable; the disagreement is then reported as a truncated file.
            logger.debug("'%s': %s; reading its packets from the start", path, e)
            presented = _presented_end(container, stream, 0.0, fps)
    presented -= _stream_start(stream)
    num_available = max(round(presented * fps), 0)
    single_stream = len(container.streams) == 1
    if truncation is not None:
        own = _own_durations(claims, single_stream)
        if whole_until is not None or (own and num_available / fps < min(own) - 1.5 / fps):
            return _Timing(fps, num_available / fps if num_available else None, num_available / fps)
        logger.debug("'%s' is truncated (%s), but its video stream is whole.", path, truncation.describe())
    if num_available < 1:
        return _Timing(fps, None)
    _log_header_disagreement(path, claims, num_available / fps, fps, single_stream)
    return _Timing(fps, num_available / fps)


def _own_durations(claims: dict[str, float], single_stream: bool) -> list[float]:
    """The header durations that are the video stream's own: all but the container's, which is the video's own only
    when the file has no other stream."""
    return [seconds for source, seconds in claims.items() if source != "container duration" or single_stream]


def _header_durations(container, stream, fps: float) -> dict[str, float]:
    """What the file's headers say the video lasts, in seconds, by source (sources the file lacks are left out).

    "frame count": the stream's frame count / fps (MP4 sample count, AVI `dwLength`); "stream duration": the
    stream's own duration (MP4 track duration); "DURATION tag": the per-track tag Matroska/WebM muxers write
    (FFmpeg's matroskaenc, mkvmerge; "HH:MM:SS.nnnnnnnnn"); "container duration": the whole file, i.e. its longest
    stream, audio included.
    """
    claims = {}
    if stream.frames and stream.frames > 0:
        claims["frame count"] = stream.frames / fps
    if stream.duration and stream.time_base:
        claims["stream duration"] = float(stream.duration * stream.time_base)
    tag = _parse_duration_tag(stream.metadata.get("DURATION"))
    if tag is not None:
        claims["DURATION tag"] = tag
    if container.duration:
        claims["container duration"] = container.duration / av.time_base
    return {source: seconds for source, seconds in claims.items() if seconds > 0}


def _parse_duration_tag(tag: str | None) -> float | None:
    """Seconds in a Matroska "DURATION" tag such as "00:00:04.000000000", or None when absent or malformed."""
    parts = (tag or "").split(":")
    try:
        hours, minutes, seconds = (float(part) for part in parts)
    except ValueError:  # absent, or not three numbers
        if tag:
            logger.debug("Ignoring an unreadable DURATION tag %r.", tag)
        return None
    return hours * 3600 + minutes * 60 + seconds


def _stream_start(stream) -> float:
    """Time of the stream's first frame, in seconds on the clock of `frame.time` (0 when the file does not say)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _presented_end(container, stream, seek_to: float, fps: float) -> float:
    """Where the last frame of the video stream ends, in seconds on the clock of `frame.time`.

    Seeks to the keyframe at or before `seek_to` seconds from the stream start (the longest header duration, so at
    or after the real end whether the headers over- or understate it) and reads the video packets from there to the
    end of the file, without decoding: a frame ends at its packet's pts + duration (one frame at `fps` when the
    packet has no duration); packets the demuxer marks as discarded (cut by an MP4 edit list) are not shown.

    Raises:
        _SeekFailed: seeking or reading fails, or no video packet with a timestamp follows the seek.
    """
    time_base = stream.time_base
    end = None
    try:
        container.seek(round((_stream_start(stream) + seek_to) / time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None or packet.is_discard:  # the flush packet at the end of the file, or not shown
                continue
            packet_end = (
                float((pts + packet.duration) * time_base) if packet.duration else float(pts * time_base) + 1 / fps
            )
            end = packet_end if end is None else max(end, packet_end)
    except av.FFmpegError as e:
        if end is None:
            raise _SeekFailed(f"cannot read the end of the video stream: {e}") from e
        # reading stopped at damaged data (a truncated file): the packets before it are what the stream presents
    if end is None:
        raise _SeekFailed(f"no video packet with a timestamp after seeking to {seek_to:.3f} s")
    return end


def _log_header_disagreement(
    path: Path, claims: dict[str, float], duration: float, fps: float, single_stream: bool
) -> None:
    """Log header figures that disagree by more than a frame and a half with the `duration` the video presents."""
    tolerance = 1.5 / fps
    if all(abs(seconds - duration) <= tolerance for seconds in claims.values()):
        return
    said = ", ".join(f"{source} {seconds:.3f} s" for source, seconds in claims.items())
    own = _own_durations(claims, single_stream)
    if own and duration < min(own) - tolerance:
        logger.warning(
            "The video stream of '%s' ends at %.3f s although its header says it lasts longer (%s; truncated file?): "
            "frames are sampled from the %.3f s it has.",
            path,
            duration,
            said,
            duration,
        )
    else:
        logger.debug(
            "'%s': the video stream lasts %.3f s (header: %s); sampling over %.3f s.", path, duration, said, duration
        )


def _check_segment(start: float | None, end: float | None, duration: float, path: Path) -> tuple[float, float]:
    """Validate `[start, end)` against the clip's duration; returns it with defaults filled and `end` clamped."""
    if start is not None and end is not None and start >= end:
        raise ValueError(f"start={start} must be smaller than end={end} (video '{path}' lasts {duration:.3f} s).")
    start = 0.0 if start is None else float(start)
    if start >= duration:
        raise ValueError(f"start={start} is beyond the end of video '{path}', which lasts {duration:.3f} s.")
    if end is None or end > duration:
        if end is not None:
            logger.debug("end=%s is past the end of '%s' (%.3f s): clamped.", end, path, duration)
        end = duration
    return start, float(end)


def _segment_to_frames(start, end, fps: float, duration: float, path: Path) -> tuple[int, int]:
    """First and last index of the frames whose display interval `[i / fps, (i + 1) / fps)` overlaps `[start, end)`."""
    start, end = _check_segment(start, end, duration, path)
    num_available = round(duration * fps)
    first = min(math.floor(start * fps + 1e-6), num_available - 1)
    last = min(math.ceil(end * fps - 1e-6) - 1, num_available - 1)
    return first, max(first, last)


class _UprightRGB:
    """Converts decoded frames to `(H, W, 3)` uint8 RGB arrays as players show them: with the frame's display matrix
    applied (`_display_transform`). Warns once per file about a matrix that is not a multiple of 90 degrees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warned = False

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) as stored
        side_data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
        if side_data is None:
            return rgb
        matrix = np.frombuffer(bytes(side_data), dtype=np.int32)  # 3x3 row-major, 16.16 fixed point (native order)
        transform = _display_transform(matrix)
        if transform is None:
            if not self.warned:
                logger.warning(
                    "'%s' has a display matrix %s that is not a rotation by a multiple of 90 degrees: frames are "
                    "returned as stored.",
                    self.path,
                    matrix.tolist(),
                )
                self.warned = True
            return rgb
        transpose, flip_rows, flip_columns = transform
        if transpose:
            rgb = rgb.transpose(1, 0, 2)  # (H, W, 3) -> (W, H, 3)
        if flip_rows:
            rgb = rgb[::-1]
        if flip_columns:
            rgb = rgb[:, ::-1]
        return np.ascontiguousarray(rgb)


def _display_transform(matrix: np.ndarray) -> tuple[bool, bool, bool] | None:
    """(transpose, flip rows, flip columns) that shows a stored picture as its display matrix says, or None when the
    matrix turns it by an angle that is not a multiple of 90 degrees.

    FFmpeg's display matrix (libavutil/display.h) maps a stored pixel `(x, y)` (y pointing down) to
    `(a*x + c*y + tx, b*x + d*y + ty)` with `a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]`; only the
    signs and which of the pairs `(a, d)` / `(b, c)` is zero matter (scale and translation do not change what is
    shown where). So `b = c = 0` keeps the axes (mirrored where `a` or `d` is negative), and `a = d = 0` swaps them
    (transpose), then mirrors where `b` or `c` is negative. E.g. `ffmpeg -display_rotation 90` (counter-clockwise)
    stores `a = d = 0, b = -1, c = 1`: transpose then flip rows, which is `np.rot90(picture, 1)`.
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    if abs(b) <= _RIGHT_ANGLE_TOLERANCE * abs(a) and abs(c) <= _RIGHT_ANGLE_TOLERANCE * abs(d) and a and d:
        return False, d < 0, a < 0
    if abs(a) <= _RIGHT_ANGLE_TOLERANCE * abs(b) and abs(d) <= _RIGHT_ANGLE_TOLERANCE * abs(c) and b and c:
        return True, b < 0, c < 0
    return None


def _decode_by_seeking(container, stream, times: np.ndarray, fps: float, path: Path, snap_s: float = 0.0) -> np.ndarray:
    """Decode the frames shown at `times` (seconds from the start of the stream, non-decreasing).

    For each target: seek to the keyframe before it (unless it is just ahead of the current position), then decode
    forward to the first frame that starts less than half a frame before the target; or stop at the keyframe the
    seek landed on when it starts more than `_MAX_FORWARD_DECODE_S` but at most `snap_s` seconds before the target.
    A target past the last decodable frame gets that frame: silently when it is off by one frame, with a warning
    (corrupt or truncated file?) otherwise. Frames are returned upright (`_UprightRGB`).
    """
    stream_start = _stream_start(stream)
    tolerance = 0.5 / fps
    decoded, current, seek_cost, stream_ended = iter(()), None, 0.0, False
    upright = _UprightRGB(path)
    rgb = {}  # target time -> (H, W, 3) uint8
    for target in sorted(set(times.tolist())):
        position = None if current is None else current.time - stream_start
        if position is None or not 0 <= target - position <= max(_MAX_FORWARD_DECODE_S, seek_cost):
            try:
                container.seek(round((stream_start + target) / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError as e:
                raise _SeekFailed(str(e)) from e
            decoded, current = _decode_frames(container, stream), None
        while current is None or current.time - stream_start < target - tolerance:
            frame = next(decoded, None)
            if frame is None:  # end of the stream
                stream_ended = True
                break
            if frame.time is None:
                raise _SeekFailed("frames without timestamps")
            if current is None:  # first frame after a seek: the keyframe we landed on
                landed = frame.time - stream_start
                if landed > target + tolerance and target > tolerance:
                    raise _SeekFailed(f"seeking to {target:.3f} s landed after it, at {landed:.3f} s")
                seek_cost = target - landed
                if _MAX_FORWARD_DECODE_S < seek_cost <= snap_s:  # exact is costly, keyframe close enough: keep it
                    current = frame
                    break
            current = frame
        if current is None:
            raise _SeekFailed(f"no frame decoded after seeking to {target:.3f} s")
        rgb[target] = upright(current)
    last_time = current.time - stream_start
    if stream_ended and times[-1] - last_time > 1.5 / fps:
        logger.warning(
            "'%s' has no decodable frames after %.3f s although its video stream seemed to go on (corrupt or "
            "truncated file?): frames sampled past that point repeat its last frame.",
            path,
            last_time,
        )
    return np.stack([rgb[t] for t in times.tolist()])


def _decode_sequentially(path: Path, num_frames: int, start, end) -> np.ndarray:
    """For files without a usable duration or seeking: decode every frame, in two passes so that memory holds one
    frame at a time (the first pass lists the frames' timestamps, the second converts the sampled frames)."""
    with _open(path) as container:
        times = [frame.time for frame in _decode_frames(container, _video_stream(container, path))]
    if not times:
        raise VideoDecodeError(f"'{path}' has no decodable frames.")
    candidates = list(range(len(times)))
    if start is not None or end is not None:
        if None in times:
            raise VideoDecodeError(f"'{path}' has frames without timestamps: cannot cut start={start}, end={end}.")
        times = [t - times[0] for t in times]
        frame_duration = times[-1] / (len(times) - 1) if len(times) > 1 else math.inf
        ends = [*times[1:], times[-1] + frame_duration]  # frame i is shown during [times[i], ends[i])
        start, end = _check_segment(start, end, ends[-1], path)
        candidates = [i for i in candidates if ends[i] > start + 1e-6 and times[i] < end - 1e-6]
    chosen = [candidates[i] for i in sample_frame_indices(len(candidates), num_frames)]

    rgb, upright = {}, _UprightRGB(path)
    with _open(path) as container:
        for i, frame in enumerate(_decode_frames(container, _video_stream(container, path))):
            if i in chosen:
                rgb[i] = upright(frame)
            if i == chosen[-1]:
                break
    return np.stack([rgb[i] for i in chosen])


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _frame_to_array(frame, index: int) -> np.ndarray:
    if isinstance(frame, PIL.Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = _as_numpy(frame)
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Frame {index} has shape {tuple(array.shape)}; expected a PIL image or an (H, W, C) or (C, H, W) "
            "array with C in {1, 3, 4}."
        )
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    low, high = array.min(), array.max()
    if np.issubdtype(array.dtype, np.floating):
        if low < 0 or high > 1:
            raise ValueError(
                f"Float frames must be in [0, 1], got values in [{low}, {high}]. Pass uint8 frames in [0, 255] "
                "or divide by 255."
            )
        return np.round(array * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if low < 0 or high > 255:
            raise ValueError(f"Integer frames must be in [0, 255], got values in [{low}, {high}].")
        return array.astype(np.uint8)
    raise ValueError(f"Unsupported frame dtype {array.dtype}; use uint8 in [0, 255] or float in [0, 1].")


__all__ = [
    "Truncation",
    "VideoDecodeError",
    "declared_duration",
    "file_truncation",
    "read_video",
    "sample_frame_indices",
    "segment_windows",
    "to_frames_array",
    "video_duration",
]
