"""Video processor for VidGPT2: videos in, `pixel_values_videos` of shape (B, T, 3, H, W) out.

We decode and sample the frames ourselves (`video_io`: PyAV with keyframe seeking, short clips padded), then let
`BaseVideoProcessor` do what it is good at: resize the shortest edge to 256, centre-crop 224, rescale to [0, 1] and
normalise with the ImageNet mean/std, as for a torchvision ResNet-50.

Imports only numpy, PIL, transformers (and its huggingface_hub) and the same-folder `video_io`, so it can be pushed
to the Hub as remote code.
"""

import os

import numpy as np
import PIL.Image
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ChannelDimension, PILImageResampling
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .video_io import (
    DEFAULT_KEYFRAME_TOLERANCE,
    check_keyframe_tolerance,
    read_video,
    sample_frame_indices,
    to_frames_array,
)


class VidGPT2VideoProcessorKwargs(VideosKwargs, total=False):
    """`VideosKwargs` plus the segment to sample from, in seconds (one value for all videos or one per video), and
    how far a frame sampled from a long video file may move back to a keyframe (`video_io.read_video`).

    Declared here so that a `ProcessorMixin` routes these to the video processor.
    """

    start: float | int | list[float | int | None] | None
    end: float | int | list[float | int | None] | None
    keyframe_tolerance: float | int


class VidGPT2VideoProcessor(BaseVideoProcessor):
    r"""Turns videos into `pixel_values_videos` of shape `(B, num_frames, 3, 224, 224)` for VidGPT2.

    Accepted videos (one, or a list of them; a batch may mix kinds):
        - a path (`str` or `os.PathLike`) to a file PyAV can read (mp4, avi, mov, webm, mkv, ...);
        - a numpy array or torch tensor `(T, H, W, C)` or `(T, C, H, W)`, C in {1, 3, 4}, uint8 or float in [0, 1];
        - a list of frames: PIL images (any mode) or `(H, W, C)` arrays/tensors.
    A list whose elements are frames (PIL images, 3-D arrays) is ONE video; a list whose elements are videos
    (paths, 4-D arrays, lists of frames) is a batch. A 5-D array/tensor `(B, T, ...)` is a batch.

    Every video gets exactly `num_frames` frames, sampled uniformly (`video_io.sample_frame_indices`); clips with
    fewer frames are padded by repeating frames. Files are decoded with `video_io.read_video`, which decodes only
    the sampled frames; in long files a frame may move back to a nearby keyframe, by at most `keyframe_tolerance`
    (default 0.25, saved with the processor; 0 = frame-accurate) of the interval between sampled frames. Frames of
    files come upright (a phone clip's display rotation applied), so a portrait clip is cropped as it is shown.
    Frames are then resized (shortest edge 256, bilinear), centre-cropped to 224x224, rescaled to [0, 1] and
    normalised with the ImageNet mean/std.

    Example:
        >>> processor = VidGPT2VideoProcessor(num_frames=8)
        >>> batch = processor(["clip1.mp4", "clip2.avi"], start=[0.0, 2.5], end=[None, 7.0], return_tensors="pt")
        >>> batch["pixel_values_videos"].shape
        torch.Size([2, 8, 3, 224, 224])
    """

    valid_kwargs = VidGPT2VideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 8
    keyframe_tolerance = DEFAULT_KEYFRAME_TOLERANCE

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        check_keyframe_tolerance(self.keyframe_tolerance)  # fail when built, not at the first long video

    def preprocess(
        self,
        videos,
        num_frames: int | None = None,
        start: float | list[float | None] | None = None,
        end: float | list[float | None] | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """Decode, sample and normalise `videos` (see the class docstring for the accepted inputs).

        Args:
            videos: one video or a batch of videos.
            num_frames: frames per video; defaults to `self.num_frames`.
            start, end: segment of each video file to sample from, in seconds (`end` exclusive). A number applies
                to every video, a list gives one value (or None) per video. Only for video files.
            keyframe_tolerance: overrides `self.keyframe_tolerance` for this call (see `video_io.read_video`).
            return_tensors: `"pt"` for a `(B, T, 3, H, W)` tensor, `"np"` for an array, None for a list of tensors.
            **kwargs: any `VideosKwargs` (`size`, `crop_size`, `do_normalize`, ...) overriding the defaults for this
                call. `do_sample_frames=False` keeps all frames of in-memory videos as given. `input_data_format`
                is not needed: channels-first/last is detected per video.

        Returns:
            `BatchFeature` with `pixel_values_videos`.

        Raises:
            TypeError: an unknown keyword argument.
            huggingface_hub.errors.StrictDataclassFieldValidationError: a keyword argument of the wrong type.
            ValueError: empty input, a list mixing frames and videos, malformed frames (see `video_io.to_frames_array`),
                `keyframe_tolerance` outside [0, 1),
                `start`/`end` lists of the wrong length, `start`/`end` for an in-memory video, or `fps` sampling.
            FileNotFoundError, video_io.VideoDecodeError: from `video_io.read_video` for a missing or unreadable file.
        """
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}.")
        validate_typed_dict(self.valid_kwargs, kwargs)  # wrong types fail here, before any decoding
        num_frames = self.num_frames if num_frames is None else num_frames
        keyframe_tolerance = kwargs.pop("keyframe_tolerance", None)
        keyframe_tolerance = self.keyframe_tolerance if keyframe_tolerance is None else keyframe_tolerance
        check_keyframe_tolerance(keyframe_tolerance)
        do_sample_frames = kwargs.pop("do_sample_frames", None)
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        if kwargs.get("fps") is not None:
            raise ValueError(
                f"{type(self).__name__} samples a fixed number of frames per video; pass num_frames, not fps."
            )

        videos = _as_video_list(videos)
        starts = _one_per_video(start, len(videos), "start")
        ends = _one_per_video(end, len(videos), "end")
        frames = [
            self._load_frames(video, num_frames, do_sample_frames, video_start, video_end, keyframe_tolerance)
            for video, video_start, video_end in zip(videos, starts, ends, strict=True)
        ]  # B x (T, H, W, 3) uint8

        # resize / centre crop / rescale / normalise by BaseVideoProcessor; frames are already sampled
        kwargs.update(do_sample_frames=False, input_data_format=ChannelDimension.LAST)
        return super().preprocess(frames, return_tensors=return_tensors, **kwargs)

    def sample_frames(self, metadata: VideoMetadata, num_frames: int | None = None, **kwargs) -> np.ndarray:
        """Uniform sampling that pads short clips by repeating frames (the base class raises on them)."""
        return sample_frame_indices(metadata.total_num_frames, num_frames or self.num_frames)

    @staticmethod
    def _load_frames(video, num_frames: int, do_sample_frames: bool, start, end, keyframe_tolerance) -> np.ndarray:
        """One video -> `(num_frames, H, W, 3)` uint8 RGB frames."""
        if isinstance(video, (str, os.PathLike)):
            if not do_sample_frames:
                raise ValueError(f"do_sample_frames=False needs in-memory frames; got the video file '{video}'.")
            return read_video(video, num_frames, start=start, end=end, keyframe_tolerance=keyframe_tolerance)
        if start is not None or end is not None:
            raise ValueError(
                f"start={start}/end={end} only apply to video files; slice the frames of in-memory videos instead."
            )
        frames = to_frames_array(video)
        return frames[sample_frame_indices(len(frames), num_frames)] if do_sample_frames else frames


def _is_frame(item) -> bool:
    """A single frame: a PIL image, or an array/tensor with 2 or 3 dimensions."""
    return isinstance(item, PIL.Image.Image) or (hasattr(item, "ndim") and item.ndim in (2, 3))


def _as_video_list(videos) -> list:
    """Split the input into a list of videos (each a path, a 4-D array/tensor, or a list of frames)."""
    if isinstance(videos, (str, os.PathLike)):
        return [videos]
    if hasattr(videos, "ndim"):  # numpy array or torch tensor
        return list(videos) if videos.ndim == 5 else [videos]  # (B, T, ...) -> B x (T, ...)
    if isinstance(videos, PIL.Image.Image):
        raise ValueError("Got a single PIL image; pass a list of frames (e.g. [image]) for a one-frame video.")
    if not isinstance(videos, (list, tuple)) or len(videos) == 0:
        raise ValueError(f"Expected a video or a non-empty list of videos, got {type(videos).__name__}: {videos!r:.80}")
    is_frame = [_is_frame(item) for item in videos]
    if all(is_frame):
        return [videos]  # one video given as a list of frames
    if any(is_frame):
        raise ValueError(
            "Got a list mixing frames (PIL images or (H, W, C) arrays) and videos. Pass one video as a list of "
            "frames, or a batch as a list of videos (paths, (T, H, W, C) arrays, or lists of frames)."
        )
    return list(videos)


def _one_per_video(value, batch_size: int, name: str) -> list:
    """Broadcast a scalar `start`/`end` to the batch, or check that a list has one entry per video."""
    if isinstance(value, (list, tuple)):
        if len(value) != batch_size:
            raise ValueError(f"Got {len(value)} values for {name} but {batch_size} videos; pass one per video.")
        return list(value)
    return [value] * batch_size


__all__ = ["VidGPT2VideoProcessor", "VidGPT2VideoProcessorKwargs"]
