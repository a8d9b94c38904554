"""Explanations for VidGPT2 captions: which frames (and where in them) each word of a caption came from.

    explain(model, processor, video)            caption + per-word attention over frames + a heatmap on every frame
    plot_explanation(explanation, path)         frame strip with heatmaps over it, per-word attention over time
    save_explanation(explanation, dir, stem)    <stem>.png, <stem>.json and a self-contained <stem>.html
    faithfulness(model, explanation, pixels)    does masking the frames the explanation ranks highest hurt most?
    mean_faithfulness(model, [...], [...])      the same averaged over many clips, for a benchmark
    occlusion_frame_scores(model, pixels, ids)  per-word log-prob drop when each frame is occluded (words x T)

How the pieces are computed (B = 1 video, T frames, L caption tokens, N = T * tokens_per_frame visual tokens):

- The caption is generated (greedy unless `generate_kwargs` say otherwise) and then scored in ONE teacher-forced
  forward pass with `output_attentions=True`. The decoder's cross-attention, one (1, heads, L, N) map per layer,
  gives for the query that predicts token i a distribution over the N visual tokens.
- Heads and layers are combined by averaging: the head-mean of each layer, then the mean over layers
  (`layers="mean"`; `"last"` or an int picks a single layer). Every GPT-2 layer reads the visual tokens directly,
  so every layer's map is already a distribution over the same tokens and their mean is one too (no rollout).
- Visual tokens are frame-major, so summing the cells of each frame gives per-token attention over frames
  `token_frame_attention` (L, T), rows summing to 1; `frame_attention` (T,) is its mean over the caption.
- Heatmaps: spatial-token models (`visual_tokens="spatial"`, or `"grid"` with its g x g cells) use the same
  cross-attention over the h x w cells of every frame (method "cross-attention"). Pooled models have one token per frame, so the heatmap comes from
  Grad-CAM on the vision tower's last feature map A (B*T, C, h, w): the caption's log-probability (sum of its token
  log-probs, eos included, teacher forced) is differentiated with respect to A, channel weights are the spatially
  averaged gradients, cam = relu(sum_c w_c A_c) (method "grad-cam"). Both are scaled to [0, 1] by their maximum
  over the whole video, so frames stay comparable, and upsampled (bilinear) to the frame size.
- Motion tokens (`visual_tokens="motion"`) are one per frame, like pooled ones (Grad-CAM by default, temporal maps
  only from attention): token t holds frame t's features and their change since frame t-1, so attention to it is
  credited to frame t, the frame where the change shows (Grad-CAM follows the gradient into both frames).
- Occlusion (`frame_scores="occlusion"`, or `occlusion_frame_scores`): per-frame occlusion sensitivity (Zeiler &
  Fergus 2014): every frame in turn is replaced by a flat frame and each word's teacher-forced log-probability drop
  is its score for that frame. T extra forward passes (one batch), no gradients; a perturbation method, so it
  measures what the caption depends on rather than where the decoder attends.
- Caveat: with visual self-attention layers (`num_visual_layers > 0`; the default is 1) visual token t has already
  read the other frames, so attention to token t is attention to frame t's slot, which holds mostly but not only
  frame t. `faithfulness` measures how far a ranking of frames holds up when frames are actually removed.

Matplotlib is imported inside the plotting functions only: `import vidgpt2.explanations` stays light.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

logger = logging.getLogger(__name__)

Method = Literal["auto", "cross-attention", "grad-cam"]
FrameScores = Literal["attention", "occlusion"]
LayerChoice = Literal["mean", "last"] | int


# --- the result ----------------------------------------------------------------------------------------------------
@dataclass
class Explanation:
    """What `explain` found for one video.

    Attributes:
        caption: the generated text.
        tokens: the caption's tokens as strings, one per row of `token_frame_attention` (ids as strings when no
            tokenizer was available). The final eos is not shown unless the caption is empty.
        token_ids: ids of `tokens`.
        caption_ids: the scored caption, eos included: what `faithfulness` re-scores.
        token_frame_attention: (num_tokens, T) cross-attention over frames per token; rows sum to 1.
        frame_attention: (T,) mean of `token_frame_attention` over the tokens; sums to 1.
        heatmaps: (T, H, W) in [0, 1], at frame size.
        heatmap_grid: (T, h, w) the same maps at feature-map resolution (what the model actually resolves).
        frames: (T, H, W, 3) uint8, the frames the model saw (denormalised `pixel_values_videos`).
        method: "cross-attention" or "grad-cam" (how `heatmaps` were made).
        layers: which decoder layers were combined ("mean", "last" or an index).
        token_heatmaps: (num_tokens, T, h, w) per-token cross-attention over cells (sums to 1 per token), for
            spatial-token models; None for Grad-CAM.
        token_logprobs: (num_scored,) log-probability of each token of `caption_ids`, teacher forced.
        frame_scores: what ranks the frames (`frame_weights`, what `faithfulness` and the figure use): "attention"
            or "occlusion".
        token_frame_occlusion: (num_tokens, T) with `frame_scores="occlusion"`: each token's log-probability drop
            (nats) when frame t is replaced by a flat frame (`occlusion_frame_scores`); None otherwise.
        frame_occlusion: (T,) its mean over the tokens; None without occlusion.
    """

    caption: str
    tokens: list[str]
    token_ids: list[int]
    caption_ids: list[int]
    token_frame_attention: np.ndarray
    frame_attention: np.ndarray
    heatmaps: np.ndarray
    heatmap_grid: np.ndarray
    frames: np.ndarray
    method: str
    layers: str | int = "mean"
    token_heatmaps: np.ndarray | None = None
    token_logprobs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    frame_scores: str = "attention"
    token_frame_occlusion: np.ndarray | None = None
    frame_occlusion: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frame_attention.shape[0])

    @property
    def frame_weights(self) -> np.ndarray:
        """(T,) the frame ranking chosen by `frame_scores`: `frame_occlusion` or `frame_attention`."""
        return self.frame_occlusion if self.frame_scores == "occlusion" else self.frame_attention

    @property
    def token_frame_weights(self) -> np.ndarray:
        """(num_tokens, T) per-token frame scores chosen by `frame_scores`."""
        return self.token_frame_occlusion if self.frame_scores == "occlusion" else self.token_frame_attention

    def _repr_png_(self) -> bytes:
        """Notebooks show an explanation as its figure."""
        buffer = io.BytesIO()
        plot_explanation(self).savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary. Heatmaps are given at feature-map resolution (`heatmap_grid`); the frames and
        the upsampled heatmaps are left out (they are derived from the video and would dwarf everything else)."""

        def floats(array: np.ndarray | None) -> Any:
            return None if array is None else np.round(np.asarray(array, dtype=np.float64), 6).tolist()

        return {
            "caption": self.caption,
            "tokens": list(self.tokens),
            "token_ids": [int(i) for i in self.token_ids],
            "caption_ids": [int(i) for i in self.caption_ids],
            "method": self.method,
            "layers": self.layers,
            "num_frames": self.num_frames,
            "frame_size": [int(s) for s in self.heatmaps.shape[1:]],
            "frame_attention": floats(self.frame_attention),
            "token_frame_attention": floats(self.token_frame_attention),
            "heatmap_grid": floats(self.heatmap_grid),
            "token_heatmaps": floats(self.token_heatmaps),
            "token_logprobs": floats(self.token_logprobs),
            "caption_logprob": float(np.sum(self.token_logprobs)),
            "frame_scores": self.frame_scores,
            "frame_occlusion": floats(self.frame_occlusion),
            "token_frame_occlusion": floats(self.token_frame_occlusion),
        }


# --- explain -------------------------------------------------------------------------------------------------------
def explain(
    model: Any,
    processor: Any = None,
    video: Any = None,
    *,
    pixel_values_videos: torch.Tensor | None = None,
    tokenizer: Any = None,
    num_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    method: Method = "auto",
    layers: LayerChoice = "mean",
    frame_scores: FrameScores = "attention",
    **generate_kwargs: Any,
) -> Explanation:
    """Caption one video and explain the caption (see the module docstring for how).

    Args:
        model: a `VidGPT2ForConditionalGeneration`. Its train/eval modes, `requires_grad` flags and `.grad` are
            left as they were.
        processor: a `VidGPT2Processor` (or a bare video processor) turning `video` into `pixel_values_videos`;
            its tokenizer decodes the tokens and its `image_mean`/`image_std` denormalise the frames for display.
            May be None when `pixel_values_videos` is given.
        video: anything the processor accepts: a path, a (T, H, W, C) array or tensor, a list of frames.
        pixel_values_videos: (1, T, 3, H, W) or (T, 3, H, W) model inputs, instead of `video`.
        tokenizer: decodes token ids; defaults to `processor.tokenizer`. Without one, tokens are shown as ids.
        num_frames, start, end: passed to the processor (frames to sample, segment in seconds).
        method: heatmap method. "auto": cross-attention for spatial-token models, Grad-CAM for pooled ones.
            "grad-cam" works for both; "cross-attention" needs spatial tokens.
        layers: decoder layers whose cross-attention is averaged: "mean" (all), "last", or a layer index.
        frame_scores: what ranks the frames. "attention" (default): cross-attention over frames, free. "occlusion":
            per-frame occlusion sensitivity (`occlusion_frame_scores`: each word's log-prob drop when the frame is
            replaced by a flat one; T extra forward passes in one batch), which measures what the caption depends
            on. Heatmaps come from `method` either way; attention over frames is always returned too.
        **generate_kwargs: passed to `model.generate` (`max_new_tokens`, `num_beams`, ...). Greedy by default.

    Returns:
        An `Explanation`.
    """
    pixels = _model_inputs(processor, video, pixel_values_videos, num_frames, start, end)  # (1, T, 3, H, W)
    pixels = pixels.to(device=model.device, dtype=model.encoder.vision_tower.dtype)
    tokenizer = tokenizer if tokenizer is not None else _find_tokenizer(processor)
    method = _resolve_method(model, method)
    if frame_scores not in ("attention", "occlusion"):
        raise ValueError(f"frame_scores={frame_scores!r} is invalid: expected 'attention' or 'occlusion'.")
    frames_count, height, width = pixels.shape[1], pixels.shape[-2], pixels.shape[-1]

    with _preserve_state(model):
        model.eval()
        caption_ids = _generate_caption(model, pixels, generate_kwargs)  # (L,)
        scored = _score_with_attention(model, pixels, caption_ids, grad_cam=method == "grad-cam")

    token_maps = _combine_cross_attention(scored["cross_attentions"], layers)  # (L, N)
    shown = _shown_positions(caption_ids, model.config.eos_token_id)
    cells = token_maps[shown].reshape(len(shown), frames_count, -1)  # (n, T, tokens_per_frame)
    token_frame_attention = cells.sum(-1)  # (n, T)

    if method == "cross-attention":
        grid = model.config.token_grid
        token_heatmaps = cells.reshape(len(shown), frames_count, grid, grid)  # (n, T, h, w)
        heatmap_grid = _scale_to_unit(token_heatmaps.mean(0))  # (T, h, w)
    else:
        token_heatmaps = None
        heatmap_grid = _scale_to_unit(scored["grad_cam"])  # (T, h, w)

    token_occlusion = None
    if frame_scores == "occlusion":
        token_occlusion = occlusion_frame_scores(model, pixels, caption_ids)[shown].numpy()  # (n, T)
    token_ids = [int(caption_ids[i]) for i in shown]
    return Explanation(
        caption=_decode(tokenizer, caption_ids, token_ids),
        tokens=_token_strings(tokenizer, token_ids),
        token_ids=token_ids,
        caption_ids=[int(i) for i in caption_ids],
        token_frame_attention=token_frame_attention.numpy(),
        frame_attention=token_frame_attention.mean(0).numpy(),
        heatmaps=_upsample(heatmap_grid, (height, width)).numpy(),
        heatmap_grid=heatmap_grid.numpy(),
        frames=denormalize_frames(pixels[0], *_mean_std(processor)),
        method=method,
        layers=layers,
        token_heatmaps=None if token_heatmaps is None else token_heatmaps.numpy(),
        token_logprobs=scored["token_logprobs"].numpy(),
        frame_scores=frame_scores,
        token_frame_occlusion=token_occlusion,
        frame_occlusion=None if token_occlusion is None else token_occlusion.mean(0),
    )


def _model_inputs(
    processor: Any,
    video: Any,
    pixel_values_videos: torch.Tensor | None,
    num_frames: int | None,
    start: float | None,
    end: float | None,
) -> torch.Tensor:
    """`video` through the processor, or the given pixels; always (1, T, 3, H, W)."""
    if (video is None) == (pixel_values_videos is None):
        raise ValueError("explain() needs exactly one of `video` (with a processor) or `pixel_values_videos=`.")
    if pixel_values_videos is None:
        if processor is None:
            raise ValueError("explain() got a `video` but no processor; pass one, or pass `pixel_values_videos=`.")
        options = {k: v for k, v in (("num_frames", num_frames), ("start", start), ("end", end)) if v is not None}
        if hasattr(processor, "video_processor"):  # VidGPT2Processor
            batch = processor(videos=video, return_tensors="pt", **options)
        else:  # a bare video processor
            batch = processor(video, return_tensors="pt", **options)
        pixel_values_videos = batch["pixel_values_videos"]
    elif any(v is not None for v in (num_frames, start, end)):
        logger.warning("explain(): num_frames/start/end only apply to `video`; ignored for `pixel_values_videos`.")
    pixels = torch.as_tensor(pixel_values_videos)
    if pixels.dim() == 4:
        pixels = pixels[None]  # (T, 3, H, W) -> (1, T, 3, H, W)
    if pixels.dim() != 5 or pixels.shape[0] != 1:
        raise ValueError(
            f"explain() explains one video: expected pixel_values_videos of shape (1, T, 3, H, W) or (T, 3, H, W), "
            f"got {tuple(pixels.shape)}. Call it once per video."
        )
    return pixels


def _find_tokenizer(processor: Any) -> Any:
    if processor is None:
        return None
    if getattr(processor, "tokenizer", None) is not None:
        return processor.tokenizer
    return processor if hasattr(processor, "convert_ids_to_tokens") else None


def _resolve_method(model: Any, method: Method) -> str:
    spatial = model.config.visual_tokens in ("spatial", "grid")
    if method == "auto":
        return "cross-attention" if spatial else "grad-cam"
    if method == "cross-attention" and not spatial:
        raise ValueError(
            "method='cross-attention' needs a model with visual_tokens='spatial' or 'grid' (pooled models have one token per "
            "frame, so attention cannot say where in a frame); use method='grad-cam'."
        )
    if method not in ("cross-attention", "grad-cam"):
        raise ValueError(f"method={method!r} is invalid: expected 'auto', 'cross-attention' or 'grad-cam'.")
    return method


@contextmanager
def _preserve_state(model: torch.nn.Module):
    """Restore every module's train/eval flag and every parameter's `.grad` and `requires_grad` on exit."""
    modes = {module: module.training for module in model.modules()}
    params = list(model.parameters())
    grads = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode
        for p, grad, req in zip(params, grads, requires, strict=True):
            p.grad = grad
            p.requires_grad_(req)


def _generate_caption(model: Any, pixels: torch.Tensor, generate_kwargs: dict[str, Any]) -> torch.Tensor:
    """Generated token ids of the best sequence, start token dropped, cut after the first eos: (L,)."""
    generate_kwargs = dict(generate_kwargs)
    generate_kwargs.setdefault("do_sample", False)
    sequences = model.generate(pixel_values_videos=pixels, **generate_kwargs)  # (R, 1 + L)
    if not isinstance(sequences, torch.Tensor):  # return_dict_in_generate=True
        sequences = sequences.sequences
    ids = sequences[0, 1:].cpu()  # drop decoder_start_token_id
    eos = model.config.eos_token_id
    ends = (ids == eos).nonzero()
    if len(ends):
        ids = ids[: int(ends[0]) + 1]
    if len(ids) == 0:
        raise ValueError("The model generated no tokens; raise `max_new_tokens`.")
    return ids


def _shown_positions(caption_ids: torch.Tensor, eos_token_id: int | None) -> list[int]:
    """Positions of the tokens to show: all but a final eos (kept when it is the whole caption)."""
    positions = list(range(len(caption_ids)))
    if len(positions) > 1 and eos_token_id is not None and int(caption_ids[-1]) == eos_token_id:
        positions = positions[:-1]
    return positions


def _vision_feature_map(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The vision tower's last feature map, computed without gradients: (B, T, 3, H, W) -> (B*T, C, h, w)."""
    with torch.no_grad():
        return model.get_video_features(pixels, output_hidden_states=False).last_hidden_state


def caption_logprobs(model: Any, labels: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """Teacher-forced log-probability of each label token: (B, L) labels -> (B, L), 0 where labels are -100.

    `inputs` are `pixel_values_videos=` or `video_features=`; gradients follow the caller's grad mode.
    """
    logits = model(labels=labels, return_dict=True, **inputs).logits.float()  # (B, L, V)
    return _token_logprobs(logits, labels)


def _token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits, (B, L) labels -> (B, L) log-probs of the labels (0 where -100)."""
    keep = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return logp * keep


def _score_with_attention(
    model: Any, pixels: torch.Tensor, caption_ids: torch.Tensor, grad_cam: bool
) -> dict[str, Any]:
    """The one teacher-forced pass: cross-attentions, token log-probs and (optionally) the Grad-CAM maps.

    For Grad-CAM the vision tower runs without gradients (it may be frozen); its feature map A is then made a leaf
    that requires grad, pooled as the encoder pools it, and the caption log-prob is differentiated with respect to A
    only (`torch.autograd.grad`), so no parameter ever receives a `.grad`.
    """
    batch, frames = pixels.shape[:2]
    feature_map = _vision_feature_map(model, pixels).detach()  # (B*T, C, h, w)
    labels = caption_ids[None].to(pixels.device)  # (1, L)
    with torch.enable_grad() if grad_cam else torch.no_grad():
        feature_map.requires_grad_(grad_cam)
        features = model.encoder.pool_feature_map(feature_map, batch, frames)  # as get_video_features
        out = model(video_features=features, labels=labels, output_attentions=True, return_dict=True)
        token_logprobs = _token_logprobs(out.logits, labels)[0]  # (L,)
        result: dict[str, Any] = {
            "cross_attentions": [a.detach().float().cpu() for a in out.cross_attentions],
            "token_logprobs": token_logprobs.detach().cpu(),
        }
        if grad_cam:
            (grads,) = torch.autograd.grad(token_logprobs.sum(), feature_map)  # (B*T, C, h, w)
            weights = grads.mean(dim=(2, 3), keepdim=True)  # (B*T, C, 1, 1)
            cam = F.relu((weights * feature_map.detach()).sum(1))  # (B*T, h, w)
            result["grad_cam"] = cam.float().cpu()  # B = 1: (T, h, w)
    if not result["cross_attentions"]:
        raise RuntimeError("The decoder returned no cross-attention weights; it must run with eager attention.")
    return result


def _combine_cross_attention(cross_attentions: Sequence[torch.Tensor], layers: LayerChoice) -> torch.Tensor:
    """Per-layer (1, heads, L, N) maps -> (L, N): head mean per layer, then the mean over the chosen layers."""
    per_layer = torch.stack([a[0].mean(0) for a in cross_attentions])  # (layers, L, N)
    if layers == "mean":
        return per_layer.mean(0)
    if layers == "last":
        return per_layer[-1]
    if isinstance(layers, int) and not isinstance(layers, bool) and -len(per_layer) <= layers < len(per_layer):
        return per_layer[layers]
    raise ValueError(f"layers={layers!r} is invalid: expected 'mean', 'last' or an index below {len(per_layer)}.")


def _scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Divide non-negative maps by their maximum over the whole video -> [0, 1]."""
    peak = maps.max()
    if not peak > 0:
        logger.warning("The heatmaps are all zero (no evidence found by the explanation method).")
        return torch.zeros_like(maps)
    return (maps / peak).clamp(0, 1)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, h, w) -> (T, H, W), bilinear."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)


# --- tokens and frames ---------------------------------------------------------------------------------------------
def _token_strings(tokenizer: Any, token_ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in token_ids]
    strings = []
    for token_id in token_ids:
        text = tokenizer.decode([token_id], skip_special_tokens=False).strip()
        strings.append(text or str(tokenizer.convert_ids_to_tokens(token_id)))
    return strings


def _decode(tokenizer: Any, caption_ids: torch.Tensor, token_ids: list[int]) -> str:
    if tokenizer is None:
        return " ".join(str(i) for i in token_ids)
    return tokenizer.decode(caption_ids.tolist(), skip_special_tokens=True).strip()


def _mean_std(processor: Any) -> tuple[Sequence[float], Sequence[float]]:
    """The processor's normalisation (ImageNet's when there is no processor)."""
    source = getattr(processor, "video_processor", processor)
    if source is not None and getattr(source, "do_normalize", True) is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = getattr(source, "image_mean", None)
    std = getattr(source, "image_std", None)
    if mean is None or std is None:
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    return mean, std


def denormalize_frames(
    pixel_values: torch.Tensor,
    image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> np.ndarray:
    """Model inputs back to displayable frames: (T, 3, H, W) normalised -> (T, H, W, 3) uint8."""
    mean = torch.as_tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = pixel_values.detach().float().cpu() * std + mean  # (T, 3, H, W) in [0, 1]
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- faithfulness --------------------------------------------------------------------------------------------------
def faithfulness(
    model: Any,
    explanation_or_weights: Explanation | Sequence[float] | np.ndarray | torch.Tensor,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int] | torch.Tensor | None = None,
    *,
    k: int = 1,
    baseline: Literal["dataset_mean", "clip_mean"] = "dataset_mean",
    num_random: int = 8,
    seed: int = 0,
    batch_size: int = 4,
) -> dict[str, float]:
    """Deletion test: masking the frames an explanation ranks highest should hurt the caption most.

    Ranks the T frames by the explanation's `frame_weights` (attention or occlusion, as `explain` was asked; or by
    the given (T,) weights) and replaces k frames
    with a baseline: `"dataset_mean"` puts zeros in normalised space, i.e. a flat frame of the dataset's mean colour
    (the processor's `image_mean`); `"clip_mean"` puts the mean of the clip's own frames. The caption is re-scored
    teacher forced; a drop is `log p(caption | original) - log p(caption | masked)` (positive = masking hurt).

    Args:
        model: the captioner (its modes are restored afterwards; no gradients are computed).
        explanation_or_weights: an `Explanation` or per-frame weights (T,).
        pixel_values_videos: (1, T, 3, H, W) or (T, 3, H, W), the video the explanation is about.
        caption_ids: the caption to score, eos included; defaults to `explanation.caption_ids`.
        k: how many frames to mask.
        baseline: what a masked frame becomes (see above).
        num_random: random k-subsets averaged for `drop_random`.
        seed: for the random subsets.
        batch_size: masked copies of the video scored per forward pass.

    Returns:
        {"drop_top", "drop_bottom", "drop_random", "k", "logp"}: drops for masking the k highest-ranked, the k
        lowest-ranked and k random frames, and the caption's original log-probability.
    """
    weights, caption_ids = _weights_and_caption(explanation_or_weights, caption_ids)
    pixels = torch.as_tensor(pixel_values_videos)
    pixels = (pixels[None] if pixels.dim() == 4 else pixels).to(model.device)  # (1, T, 3, H, W)
    if pixels.dim() != 5 or pixels.shape[0] != 1 or len(weights) != pixels.shape[1]:
        raise ValueError(
            f"faithfulness() needs one video (1, T, 3, H, W) and T frame weights; got pixels {tuple(pixels.shape)} "
            f"and {len(weights)} weights."
        )
    frames = pixels.shape[1]
    if not 1 <= k <= frames:
        raise ValueError(f"k={k} is invalid: expected 1 <= k <= {frames} (the number of frames).")
    if baseline not in ("dataset_mean", "clip_mean"):
        raise ValueError(f"baseline={baseline!r} is invalid: expected 'dataset_mean' or 'clip_mean'.")

    order = np.argsort(-weights, kind="stable")  # highest first
    rng = np.random.default_rng(seed)
    subsets = [order[:k], order[::-1][:k]] + [rng.choice(frames, size=k, replace=False) for _ in range(num_random)]
    fill = torch.zeros_like(pixels[0, 0]) if baseline == "dataset_mean" else pixels[0].mean(0)  # (3, H, W)
    variants = pixels.repeat(1 + len(subsets), 1, 1, 1, 1)  # (1 + S, T, 3, H, W); row 0 is the original
    for row, subset in enumerate(subsets, start=1):
        variants[row, torch.as_tensor(np.array(subset))] = fill

    labels = torch.as_tensor(caption_ids, dtype=torch.long, device=pixels.device).view(1, -1)
    with _preserve_state(model), torch.no_grad():
        model.eval()
        logp = torch.cat(
            [
                caption_logprobs(model, labels.expand(len(chunk), -1), pixel_values_videos=chunk).sum(-1)
                for chunk in variants.split(batch_size)
            ]
        )  # (1 + S,)
    drops = (logp[0] - logp[1:]).cpu().numpy()  # (S,)
    return {
        "drop_top": float(drops[0]),
        "drop_bottom": float(drops[1]),
        "drop_random": float(drops[2:].mean()) if num_random else float("nan"),
        "k": k,
        "logp": float(logp[0]),
    }


def _weights_and_caption(
    explanation_or_weights: Any, caption_ids: Sequence[int] | torch.Tensor | None
) -> tuple[np.ndarray, Any]:
    if isinstance(explanation_or_weights, Explanation):
        weights = explanation_or_weights.frame_weights
        caption_ids = explanation_or_weights.caption_ids if caption_ids is None else caption_ids
    else:
        weights = explanation_or_weights
    if caption_ids is None:
        raise ValueError("faithfulness() needs `caption_ids` when given plain weights instead of an Explanation.")
    weights = np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=np.float64).reshape(-1)
    return weights, caption_ids


def mean_faithfulness(
    model: Any,
    explanations_or_weights: Sequence[Any],
    pixel_values_videos: Sequence[torch.Tensor],
    caption_ids: Sequence[Sequence[int] | torch.Tensor | None] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """`faithfulness` over many clips, averaged: for a benchmark.

    Returns the mean `drop_top`, `drop_bottom`, `drop_random`, plus `top_beats_bottom` (fraction of clips where
    masking the top-ranked frames hurt more than masking the bottom-ranked ones), `k` and `num_clips`.
    """
    if len(explanations_or_weights) != len(pixel_values_videos) or not pixel_values_videos:
        raise ValueError(
            f"mean_faithfulness() needs one explanation per video; got {len(explanations_or_weights)} explanations "
            f"and {len(pixel_values_videos)} videos."
        )
    captions = caption_ids if caption_ids is not None else [None] * len(pixel_values_videos)
    results = [
        faithfulness(model, expl, pixels, ids, **kwargs)
        for expl, pixels, ids in zip(explanations_or_weights, pixel_values_videos, captions, strict=True)
    ]
    summary = {key: float(np.mean([r[key] for r in results])) for key in ("drop_top", "drop_bottom", "drop_random")}
    summary["top_beats_bottom"] = float(np.mean([r["drop_top"] > r["drop_bottom"] for r in results]))
    summary["k"] = results[0]["k"]
    summary["num_clips"] = len(results)
    logger.info("Faithfulness over %d clips (k=%d): %s", len(results), summary["k"], summary)
    return summary


# --- occlusion -----------------------------------------------------------------------------------------------------
def occlusion_frame_scores(
    model: Any,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int] | torch.Tensor,
    *,
    baseline: Literal["dataset_mean", "clip_mean"] = "dataset_mean",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Per-frame occlusion sensitivity of every caption token: how much each word's log-probability drops when one
    frame is replaced by a flat frame.

    Occlusion sensitivity after Zeiler & Fergus 2014 ("Visualizing and understanding convolutional networks",
    ECCV, sec. 4.2), occluding whole frames instead of image patches: for each frame t, a copy of the video with
    frame t replaced by the baseline is scored teacher forced, and

        scores[i, t] = log p(token i | original video) - log p(token i | frame t occluded)

    (nats; positive = the frame supports the word, negative = the word is likelier without it). The baseline is
    the deletion test's (`faithfulness`, `grounding.cause_deletion`): `"dataset_mean"` puts zeros in normalised
    space, a flat frame of the dataset's mean colour; `"clip_mean"` the mean of the clip's frames.

    Unlike attention or Grad-CAM this measures what the model's output actually depends on, at the cost of T extra
    forward passes (run as one batch of T + 1 videos unless `batch_size` says otherwise); no gradients are needed,
    so it also runs under `torch.inference_mode()`. Caveats: with visual self-attention layers
    (`num_visual_layers > 0`) a frame also reaches the caption through the other frames' tokens, and that effect is
    counted (it is the frame's effect). With `visual_tokens="motion"` occluding frame t changes two tokens: token t
    (frame t's features and its change since t-1) and token t + 1 (the change from t to t + 1), so a frame is also
    credited for the change into the next frame; that is what removing it does to the model's input.

    Args:
        model: a `VidGPT2ForConditionalGeneration`; its train/eval modes are restored afterwards (it runs in eval
            mode: dropout off).
        pixel_values_videos: (1, T, 3, H, W) or (T, 3, H, W), one video.
        caption_ids: (L,) the caption's token ids as scored, eos included (e.g. `Explanation.caption_ids`).
        baseline: what an occluded frame becomes (see above).
        batch_size: videos per forward pass (default T + 1: one pass).

    Returns:
        (L, T) float32 tensor on the CPU: the log-probability drop of each caption token for each occluded frame.

    Raises:
        ValueError: for more than one video, an empty caption, a bad baseline or batch_size.
    """
    pixels = torch.as_tensor(pixel_values_videos)
    pixels = pixels[None] if pixels.dim() == 4 else pixels
    if pixels.dim() != 5 or pixels.shape[0] != 1:
        raise ValueError(
            f"occlusion_frame_scores() explains one video: expected pixel_values_videos of shape (1, T, 3, H, W) or "
            f"(T, 3, H, W), got {tuple(pixels.shape)}. Call it once per video."
        )
    labels = torch.as_tensor(caption_ids, dtype=torch.long).reshape(1, -1)  # (1, L)
    if labels.shape[1] == 0:
        raise ValueError("occlusion_frame_scores() got an empty caption; pass the caption's token ids, eos included.")
    if baseline not in ("dataset_mean", "clip_mean"):
        raise ValueError(f"baseline={baseline!r} is invalid: expected 'dataset_mean' or 'clip_mean'.")
    frames = pixels.shape[1]
    batch_size = frames + 1 if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: expected a positive number of videos per pass.")
    pixels = pixels.to(device=model.device, dtype=model.encoder.vision_tower.dtype)
    labels = labels.to(model.device)
    fill = torch.zeros_like(pixels[0, 0]) if baseline == "dataset_mean" else pixels[0].mean(0)  # (3, H, W)
    variants = pixels.repeat(1 + frames, 1, 1, 1, 1)  # (1 + T, T, 3, H, W); row 0 is the original
    for t in range(frames):
        variants[1 + t, t] = fill
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            logp = torch.cat(
                [caption_logprobs(model, labels.expand(len(chunk), -1), pixel_values_videos=chunk)
                 for chunk in variants.split(batch_size)]
            )  # (1 + T, L)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return (logp[:1] - logp[1:]).T.float().cpu()  # (L, T)


# --- figures -------------------------------------------------------------------------------------------------------
def plot_explanation(explanation: Explanation, path: str | Path | None = None, *, max_columns: int = 8) -> Any:
    """One figure: the frames with their heatmaps (top) and per-word attention over time (bottom).

    Each frame is titled with its index and its overall attention weight; the matrix has one row per caption token
    and one column per frame; the title is the caption. Saved as PNG when `path` is given. Uses matplotlib's
    object API with the Agg canvas (no pyplot, no display, nothing left open); returns the `Figure`.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames, rows = explanation.num_frames, len(explanation.tokens)
    columns = min(frames, max_columns)
    strip_rows = math.ceil(frames / columns)
    width = max(8.0, 1.9 * columns + 1.5)
    frame_height = (width - 1.5) / columns * _aspect(explanation.frames) + 0.45
    matrix_height = 0.32 * rows + 1.4
    figure = Figure(figsize=(width, frame_height * strip_rows + matrix_height + 0.9), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 1, height_ratios=[frame_height * strip_rows, matrix_height])
    figure.suptitle(_wrap(f"“{explanation.caption}”", width), fontsize=14, fontweight="bold")

    strip = grid[0].subgridspec(strip_rows, columns)
    overlay = colormaps["jet"]
    for t in range(frames):
        ax = figure.add_subplot(strip[t // columns, t % columns])
        ax.imshow(explanation.frames[t])
        ax.imshow(explanation.heatmaps[t], cmap=overlay, alpha=0.45, vmin=0.0, vmax=1.0)
        ax.set_title(f"frame {t}  ·  {explanation.frame_weights[t]:.2f}", fontsize=10)
        ax.set_axis_off()

    _plot_token_matrix(figure, figure.add_subplot(grid[1]), explanation)
    if path is not None:
        figure.savefig(path, format="png", dpi=110)
        logger.info("Wrote explanation figure %s", path)
    return figure


def _plot_token_matrix(figure: Any, ax: Any, explanation: Explanation) -> None:
    """Rows = caption tokens, columns = frames, colour = attention (or occlusion drop); values written in the cells
    when they fit."""
    matrix = explanation.token_frame_weights  # (n, T)
    occlusion = explanation.frame_scores == "occlusion"
    low = min(float(matrix.min()), 0.0) if occlusion else 0.0  # occlusion drops can be negative
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=low, vmax=max(float(matrix.max()), low + 1e-6))
    ax.set_xticks(range(matrix.shape[1]), [str(t) for t in range(matrix.shape[1])], fontsize=10)
    ax.set_yticks(range(matrix.shape[0]), explanation.tokens, fontsize=10)
    ax.set_xlabel("frame", fontsize=11)
    what = "log-prob drop when the frame is occluded" if occlusion else "attention over frames"
    ax.set_title(f"{what} per word ({explanation.method} heatmaps, layers: {explanation.layers})", fontsize=11)
    if matrix.size <= 400:
        threshold = low + 0.6 * (float(matrix.max()) - low)
        for (row, column), value in np.ndenumerate(matrix):
            color = "black" if value > threshold else "white"
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    colorbar.set_label("log-prob drop (nats)" if occlusion else "attention", fontsize=10)


def _aspect(frames: np.ndarray) -> float:
    return frames.shape[1] / frames.shape[2] if frames.ndim == 4 and frames.shape[2] else 1.0


def _wrap(text: str, width_inches: float) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width=max(30, int(width_inches * 9)))) or " "


def save_explanation(explanation: Explanation, out_dir: str | Path, stem: str = "explanation") -> dict[str, Path]:
    """Write `<stem>.png` (the figure), `<stem>.json` (`to_dict()`) and `<stem>.html` (self-contained page: the PNG
    embedded as base64 plus a table of per-word frame weights). Returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{stem}.{suffix}" for suffix in ("png", "json", "html")}
    plot_explanation(explanation, paths["png"])
    paths["json"].write_text(json.dumps(explanation.to_dict(), indent=1))
    png = base64.b64encode(paths["png"].read_bytes()).decode("ascii")
    paths["html"].write_text(_html_page(explanation, png), encoding="utf-8")
    logger.info("Wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _html_page(explanation: Explanation, png_base64: str) -> str:
    header = "".join(f"<th>frame {t}</th>" for t in range(explanation.num_frames))
    body = []
    matrix = explanation.token_frame_weights  # (n, T)
    occlusion = explanation.frame_scores == "occlusion"
    scale = max(float(np.max(matrix)), 1e-12) if occlusion else 1.0  # occlusion drops in nats -> shades in [0, 1]
    for token, weights in zip(explanation.tokens, matrix, strict=True):
        cells = "".join(_html_cell(w, scale) for w in weights)
        body.append(f"<tr><th>{html.escape(token)}</th>{cells}</tr>")
    mean_cells = "".join(_html_cell(w, scale) for w in explanation.frame_weights)
    what = "Log-prob drop (nats) when the frame is occluded" if occlusion else "Attention over frames"
    body.append(f"<tr class='mean'><th>all words</th>{mean_cells}</tr>")
    caption = html.escape(explanation.caption)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{caption}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 4px 10px; border: 1px solid #ccc; text-align: right; }}
tr.mean th, tr.mean td {{ border-top: 2px solid #333; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>&ldquo;{caption}&rdquo;</h1>
<p>Heatmaps: {html.escape(explanation.method)}; cross-attention layers combined: {html.escape(str(explanation.layers))}.</p>
<img alt="explanation figure" src="data:image/png;base64,{png_base64}">
<h2>{what} per word</h2>
<table><tr><th>word</th>{header}</tr>
{chr(10).join(body)}
</table>
</body></html>
"""


def _html_cell(weight: float, scale: float = 1.0) -> str:
    shade = int(round(255 * (1 - min(max(float(weight) / scale, 0.0), 1.0))))
    text = "#fff" if shade < 110 else "#000"
    return f"<td style='background: rgb({shade},{shade},255); color: {text}'>{float(weight):.3f}</td>"


__all__ = [
    "Explanation",
    "caption_logprobs",
    "denormalize_frames",
    "explain",
    "faithfulness",
    "mean_faithfulness",
    "occlusion_frame_scores",
    "plot_explanation",
    "save_explanation",
]
