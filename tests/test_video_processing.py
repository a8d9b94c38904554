"""VidGPT2VideoProcessor: inputs of every kind in, `pixel_values_videos` (B, T, 3, H, W) out."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.video_utils import VideoMetadata

from tests.video_fixtures import (
    ffmpeg_frames,
    frame_index,
    make_frames,
    with_display_matrix,
    write_frames,
    write_test_clip,
)
from vidgpt2.video_io import VideoDecodeError
from vidgpt2.video_processing_vidgpt2 import VidGPT2VideoProcessor

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def processor():
    return VidGPT2VideoProcessor()


@pytest.fixture(scope="module")
def raw_processor():
    """Keeps pixels as they are (no resize/crop/rescale/normalise), so tests can read which frames were sampled."""
    return VidGPT2VideoProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)


@pytest.fixture
def clip(tmp_path):
    return write_test_clip(tmp_path / "clip.mp4", num_frames=16, fps=8)


def sampled_indices(pixel_values_videos: torch.Tensor) -> list[list[int]]:
    """(B, T, 3, H, W) unnormalised pixels -> the index drawn into each frame."""
    frames = pixel_values_videos.permute(0, 1, 3, 4, 2).round().to(torch.uint8).numpy()  # (B, T, H, W, 3)
    return [[frame_index(frame) for frame in video] for video in frames]


def grey_video(value: int, num_frames: int = 5, height: int = 48, width: int = 64) -> np.ndarray:
    return np.full((num_frames, height, width, 3), value, dtype=np.uint8)


def test_defaults_follow_resnet_preprocessing(processor):
    assert processor.num_frames == 8 and processor.do_sample_frames
    assert processor.size.shortest_edge == 256
    assert (processor.crop_size.height, processor.crop_size.width) == (224, 224)
    assert tuple(processor.image_mean) == tuple(IMAGENET_DEFAULT_MEAN)
    assert tuple(processor.image_std) == tuple(IMAGENET_DEFAULT_STD)
    assert processor.model_input_names == ["pixel_values_videos"]


INPUT_KINDS = {
    "str path": lambda clip: str(clip),
    "Path": lambda clip: clip,
    "numpy THWC": lambda clip: make_frames(5),
    "numpy float": lambda clip: make_frames(5).astype(np.float32) / 255,
    "torch THWC": lambda clip: torch.from_numpy(make_frames(5)),
    "torch TCHW": lambda clip: torch.from_numpy(make_frames(5)).permute(0, 3, 1, 2),
    "PIL frames": lambda clip: [PIL.Image.fromarray(frame) for frame in make_frames(5)],
    "PIL grayscale frames": lambda clip: [PIL.Image.fromarray(frame).convert("L") for frame in make_frames(5)],
    "array frames": lambda clip: list(make_frames(5)),
}


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_each_input_kind_gives_one_video_of_num_frames(processor, clip, kind):
    out = processor(INPUT_KINDS[kind](clip), return_tensors="pt")
    pixels = out["pixel_values_videos"]
    assert pixels.shape == (1, 8, 3, 224, 224) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all()


@pytest.mark.parametrize("value", [0, 128, 255])
def test_pixels_are_rescaled_and_normalised_with_imagenet_statistics(processor, value):
    pixels = processor(grey_video(value), return_tensors="pt")["pixel_values_videos"][0]  # (T, 3, H, W)
    expected = ((value / 255 - MEAN) / STD).expand(3, 224, 224)
    torch.testing.assert_close(pixels, expected.expand_as(pixels), atol=1e-5, rtol=0)


def test_resize_shortest_edge_then_centre_crop(processor):
    frames = np.zeros((2, 100, 300, 3), dtype=np.uint8)
    frames[:, :, 100:200] = 255  # white middle third: after resizing to 256x768 and cropping 224, all white
    pixels = processor(frames, num_frames=2, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(pixels[0], ((1 - MEAN) / STD).expand_as(pixels[0]), atol=1e-5, rtol=0)


def test_portrait_phone_clip_is_cropped_upright(processor, tmp_path):
    """A phone clip stored landscape (96x48, right half white) with a 90 degree display rotation shows 48 wide by 96
    high with the top half white: resized to 256x512 and centre-cropped, the crop is white above and black below,
    exactly as the upright frames FFmpeg shows would give (the stored picture gave white right, black left)."""
    stored = np.zeros((8, 48, 96, 3), dtype=np.uint8)
    stored[:, :, 48:] = 255
    path = with_display_matrix(write_frames(tmp_path / "in.mp4", stored), tmp_path / "portrait.mp4", rotation=90)
    pixels = processor(path, num_frames=4, return_tensors="pt")["pixel_values_videos"][0]  # (T, 3, 224, 224)
    white, black = (1 - MEAN) / STD, (0 - MEAN) / STD  # (3, 1, 1) each
    assert ((pixels[:, :, :100] - white).abs() < 0.1).all()  # crop rows 0..111 come from the white top half
    assert ((pixels[:, :, 124:] - black).abs() < 0.1).all()
    upright = ffmpeg_frames(path)[[1, 3, 5, 7]]  # what a player shows, at the sampled frames
    torch.testing.assert_close(pixels, processor(upright, num_frames=4, return_tensors="pt")["pixel_values_videos"][0])


def test_mixed_batch_keeps_order(processor, clip):
    videos = [grey_video(0), str(clip), [PIL.Image.fromarray(f) for f in grey_video(255)], torch.zeros(3, 3, 40, 40)]
    pixels = processor(videos, return_tensors="pt")["pixel_values_videos"]
    assert pixels.shape == (4, 8, 3, 224, 224)
    black, white = ((0 - MEAN) / STD), ((1 - MEAN) / STD)
    torch.testing.assert_close(pixels[0], black.expand_as(pixels[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[2], white.expand_as(pixels[2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[3], black.expand_as(pixels[3]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("videos", "batch_size"),
    [
        ([PIL.Image.fromarray(frame) for frame in make_frames(3)], 1),  # a list of frames is ONE video
        (list(make_frames(3)), 1),
        ([[PIL.Image.fromarray(frame) for frame in make_frames(3)]] * 2, 2),  # a list of frame lists is a batch
        ([make_frames(3), make_frames(5)], 2),  # a list of (T, H, W, C) arrays is a batch
        (np.stack([make_frames(3)] * 3), 3),  # a 5-D array is a batch
        (torch.from_numpy(np.stack([make_frames(3)] * 3)), 3),
    ],
)
def test_one_video_as_frames_versus_a_batch(processor, videos, batch_size):
    pixels = processor(videos, num_frames=4, return_tensors="pt")["pixel_values_videos"]
    assert pixels.shape == (batch_size, 4, 3, 224, 224)


def test_samples_uniform_frames_from_files_and_arrays(raw_processor, clip):
    out = raw_processor([clip, make_frames(16)], return_tensors="pt")
    assert sampled_indices(out["pixel_values_videos"]) == [[1, 3, 5, 7, 9, 11, 13, 15]] * 2


def test_short_videos_are_padded_by_repeating_frames(raw_processor, tmp_path):
    short_clip = write_test_clip(tmp_path / "short.avi", num_frames=3)
    out = raw_processor([short_clip, make_frames(3)], return_tensors="pt")
    assert out["pixel_values_videos"].shape[:2] == (2, 8)
    assert sampled_indices(out["pixel_values_videos"]) == [[0, 0, 0, 1, 1, 2, 2, 2]] * 2


def test_num_frames_override(raw_processor, clip):
    out = raw_processor(clip, num_frames=4, return_tensors="pt")
    assert sampled_indices(out["pixel_values_videos"]) == [[2, 6, 10, 14]]


def test_start_end_per_video_or_broadcast(raw_processor, clip):
    out = raw_processor([clip, clip], num_frames=4, start=[0.5, None], end=[1.5, 1.0], return_tensors="pt")
    assert sampled_indices(out["pixel_values_videos"]) == [[5, 7, 9, 11], [1, 3, 5, 7]]
    out = raw_processor([clip, clip], num_frames=4, start=1, return_tensors="pt")
    assert sampled_indices(out["pixel_values_videos"]) == [[9, 11, 13, 15]] * 2


def test_keyframe_tolerance_is_a_setting_and_a_call_argument(tmp_path):
    # 80 s, keyframes every 4 s: 4 sampled frames lie 2 s after a keyframe, within a quarter of their 20 s interval
    sparse = write_frames(tmp_path / "sparse.mp4", make_frames(2000, 32, 32), fps=25, gop_size=100)
    raw = {"do_resize": False, "do_center_crop": False, "do_rescale": False, "do_normalize": False}
    default = VidGPT2VideoProcessor(num_frames=4, **raw)
    assert default.keyframe_tolerance == 0.25
    assert sampled_indices(default(sparse, return_tensors="pt")["pixel_values_videos"]) == [[200, 700, 1200, 1700]]
    exact = [[250, 750, 1250, 1750]]
    assert sampled_indices(default(sparse, keyframe_tolerance=0, return_tensors="pt")["pixel_values_videos"]) == exact
    accurate = VidGPT2VideoProcessor(num_frames=4, keyframe_tolerance=0.0, **raw)
    accurate.save_pretrained(tmp_path / "saved")
    loaded = VidGPT2VideoProcessor.from_pretrained(tmp_path / "saved")
    assert loaded.keyframe_tolerance == 0.0
    assert sampled_indices(loaded(sparse, return_tensors="pt")["pixel_values_videos"]) == exact


def test_bad_keyframe_tolerance_fails_when_built():
    with pytest.raises(ValueError, match="keyframe_tolerance=-1 must be in"):
        VidGPT2VideoProcessor(keyframe_tolerance=-1)


def test_do_sample_frames_false_keeps_in_memory_frames(raw_processor):
    out = raw_processor(make_frames(5), do_sample_frames=False, return_tensors="pt")
    assert sampled_indices(out["pixel_values_videos"]) == [[0, 1, 2, 3, 4]]


def test_return_tensors(processor):
    video = grey_video(10, num_frames=2)
    assert isinstance(processor(video, return_tensors="np")["pixel_values_videos"], np.ndarray)
    unbatched = processor(video)["pixel_values_videos"]  # no return_tensors: one (T, 3, H, W) tensor per video
    assert isinstance(unbatched, list) and unbatched[0].shape == (8, 3, 224, 224)


def test_call_kwargs_override_sizes(processor):
    pixels = processor(
        grey_video(10), size={"shortest_edge": 64}, crop_size={"height": 32, "width": 48}, return_tensors="pt"
    )["pixel_values_videos"]
    assert pixels.shape == (1, 8, 3, 32, 48)


def test_sample_frames_pads_instead_of_raising(processor):
    assert processor.sample_frames(VideoMetadata(total_num_frames=3), num_frames=6).tolist() == [0, 0, 1, 1, 2, 2]
    assert processor.sample_frames(VideoMetadata(total_num_frames=16)).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.mark.parametrize(
    ("videos", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "non-empty list"),
        (None, {}, ValueError, "NoneType"),
        (PIL.Image.new("RGB", (8, 8)), {}, ValueError, "single PIL image"),
        ([PIL.Image.new("RGB", (8, 8)), make_frames(2)], {}, ValueError, "mixing frames"),
        (make_frames(2)[0], {}, ValueError, r"got shape \(48, 64, 3\)"),
        (np.zeros((2, 8, 8, 2), np.uint8), {}, ValueError, r"got shape \(2, 8, 8, 2\)"),
        (make_frames(2), {"start": 1.0}, ValueError, "only apply to video files"),
        ([make_frames(2)] * 2, {"start": [None]}, ValueError, "1 values for start but 2 videos"),
        (make_frames(2), {"fps": 2}, ValueError, "pass num_frames, not fps"),
        (make_frames(2), {"num_frames": 0}, ValueError, "num_frames must be a positive integer"),
        (make_frames(2), {"keyframe_tolerance": 1.5}, ValueError, r"keyframe_tolerance=1.5 must be in \[0, 1\)"),
        (make_frames(2), {"nun_frames": 4}, TypeError, r"unexpected keyword arguments \['nun_frames'\]"),
    ],
)
def test_bad_inputs_raise_documented_errors(processor, videos, kwargs, error, match):
    with pytest.raises(error, match=match):
        processor(videos, return_tensors="pt", **kwargs)


def test_file_errors_propagate(processor, tmp_path, clip):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        processor(tmp_path / "missing.mp4")
    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_text("hello")
    with pytest.raises(VideoDecodeError, match="notes.avi"):
        processor([clip, not_a_video])
    with pytest.raises(ValueError, match="start=5.0 is beyond the end"):
        processor(clip, start=5.0)
    with pytest.raises(ValueError, match="in-memory frames"):
        processor(clip, do_sample_frames=False)


def test_save_and_load_round_trip(tmp_path):
    processor = VidGPT2VideoProcessor(
        num_frames=4,
        size={"shortest_edge": 72},
        crop_size={"height": 64, "width": 48},
        image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
    )
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "video_preprocessor_config.json").is_file()
    loaded = VidGPT2VideoProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.num_frames == 4 and loaded.size.shortest_edge == 72
    assert (loaded.crop_size.height, loaded.crop_size.width) == (64, 48)
    assert tuple(loaded.image_mean) == (0.5, 0.4, 0.3) and tuple(loaded.image_std) == (0.2, 0.25, 0.3)
    video = make_frames(6)
    expected = processor(video, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(loaded(video, return_tensors="pt")["pixel_values_videos"], expected)
    assert expected.shape == (1, 4, 3, 64, 48)


def test_saved_remote_code_ships_video_io(tmp_path):
    VidGPT2VideoProcessor.register_for_auto_class("AutoVideoProcessor")  # what `import vidgpt2` does
    VidGPT2VideoProcessor().save_pretrained(tmp_path)
    assert (tmp_path / "video_processing_vidgpt2.py").is_file()
    assert (tmp_path / "video_io.py").is_file()  # the relative import travels with it
