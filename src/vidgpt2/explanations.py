"""Explanations for VidGPT2 captions: which frames (and where in them) each word of a caption came from.

    explain(model, processor, video)            caption + per-word attention over frames + a heatmap on every frame
    plot_explanation(explanation, path)         frame strip with heatmaps over it, per-word attention over time
    save_explanation(explanation, dir, stem)    <stem>.png, <stem>.json and a self-contained <stem>.html
    faithfulness(model, explanation, pixels)    does masking the frames the explanation ranks highest hurt most?
    mean_faithfulness(model, [...], [...])      the same averaged over many clips, for a benchmark
    occlusion_frame_scores(model, pixels, ids)  per-word log-prob drop when each frame is occluded (words x T)
    shapley_frame_scores(model, pixels, ids)    per-word Shapley value of each frame (words x T; 2^T passes)
    attention_relevancy(cross, decoder, visual) gradient-weighted attention relevancy, Chefer et al. 2021 (L x N)

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
- Shapley values (`frame_scores="shapley"`, or `shapley_frame_scores`): frames as the players of a cooperative game
  (Shapley 1953; SHAP, Lundberg & Lee 2017) whose value is a word's teacher-forced log-probability with only the
  kept frames (the others flat). Exact over all 2^T subsets of frames (256 forward passes for 8 frames, batched),
  so a cause visible in several frames is credited to all of them, which single-frame occlusion misses (removing
  one of them leaves the others).
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
FrameScores = Literal["attention", "occlusion", "shapley"]
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
        frame_scores: what ranks the frames (`frame_weights`, what `faithfulness` and the figure use): "attention",
            "occlusion" or "shapley".
        token_frame_occlusion: (num_tokens, T) with `frame_scores="occlusion"`: each token's log-probability drop
            (nats) when frame t is replaced by a flat frame (`occlusion_frame_scores`); None otherwise.
        frame_occlusion: (T,) its mean over the tokens; None without occlusion.
        token_frame_shapley: (num_tokens, T) with `frame_scores="shapley"`: each token's Shapley value (nats) of
            frame t (`shapley_frame_scores`); None otherwise.
        frame_shapley: (T,) its mean over the tokens; None without Shapley values.
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
    token_frame_shapley: np.ndarray | None = None
    frame_shapley: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frame_attention.shape[0])

    @property
    def frame_weights(self) -> np.ndarray:
        """(T,) the frame ranking chosen by `frame_scores`: `frame_attention`, `frame_occlusion` or
        `frame_shapley`."""
        return {"occlusion": self.frame_occlusion, "shapley": self.frame_shapley}.get(
            self.frame_scores, self.frame_attention
        )

    @property
    def token_frame_weights(self) -> np.ndarray:
        """(num_tokens, T) per-token frame scores chosen by `frame_scores`."""
        return {"occlusion": self.token_frame_occlusion, "shapley": self.token_frame_shapley}.get(
            self.frame_scores, self.token_frame_attention
        )

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
            "frame_shapley": floats(self.frame_shapley),
            "token_frame_shapley": floats(self.token_frame_shapley),
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
    frame_score_kwargs: dict[str, Any] | None = None,
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
            on. "shapley": each word's exact Shapley value of every frame (`shapley_frame_scores`: 2^T forward
            passes, 256 for 8 frames, batched), which also credits a cause seen in several frames, where removing one
            of them alone changes little. Heatmaps come from `method` either way; attention over frames is always
            returned too.
        frame_score_kwargs: keyword arguments of the chosen frame-score function, e.g. ``{"window": 2}`` for
            occlusion, ``{"num_samples": 64}`` for Shapley values of more than `SHAPLEY_EXACT_MAX_FRAMES` frames,
            ``{"batch_size": 32}`` for either. Only with ``frame_scores="occlusion"`` or ``"shapley"``.
        **generate_kwargs: passed to `model.generate` (`max_new_tokens`, `num_beams`, ...). Greedy by default.

    Returns:
        An `Explanation`.
    """
    pixels = _model_inputs(processor, video, pixel_values_videos, num_frames, start, end)  # (1, T, 3, H, W)
    pixels = pixels.to(device=model.device, dtype=model.encoder.vision_tower.dtype)
    tokenizer = tokenizer if tokenizer is not None else _find_tokenizer(processor)
    method = _resolve_method(model, method)
    if frame_scores not in ("attention", "occlusion", "shapley"):
        raise ValueError(f"frame_scores={frame_scores!r} is invalid: expected 'attention', 'occlusion' or 'shapley'.")
    score_kwargs = dict(frame_score_kwargs or {})
    if score_kwargs and frame_scores == "attention":
        raise ValueError(
            f"frame_score_kwargs={score_kwargs} applies to frame_scores='occlusion' or 'shapley', not 'attention'."
        )
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
        token_occlusion = occlusion_frame_scores(model, pixels, caption_ids, **score_kwargs)[shown].numpy()  # (n, T)
    token_shapley = None
    if frame_scores == "shapley":
        token_shapley = shapley_frame_scores(model, pixels, caption_ids, **score_kwargs)[shown].numpy()  # (n, T)
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
        token_frame_shapley=token_shapley,
        frame_shapley=None if token_shapley is None else token_shapley.mean(0),
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

    Ranks the T frames by the explanation's `frame_weights` (attention, occlusion or Shapley values, as `explain`
    was asked; or by the given (T,) weights) and replaces k frames with a baseline: `"dataset_mean"` puts zeros in
    normalised space, i.e. a flat frame of the dataset's mean colour (the processor's `image_mean`); `"clip_mean"`
    puts the mean of the clip's own frames. The caption is re-scored teacher forced; a drop is
    `log p(caption | original) - log p(caption | masked)` (positive = masking hurt).

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
    fill = torch.zeros_like(pixels[0, 0]) if baseline == "dataset_mean" else _clip_mean_frame(pixels[0])  # (3, H, W)
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


# --- occlusion and Shapley values of frames -------------------------------------------------------------------------
# exact Shapley values score all 2^T coalitions of frames: 256 videos for 8 frames, 4096 for 12; above this, the
# caller must ask for permutation sampling (`num_samples=`)
SHAPLEY_EXACT_MAX_FRAMES = 12


# --- gradient-weighted attention relevancy (Chefer et al. 2021) ---------------------------------------------------
def _weighted_heads(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """(heads, Q, K) attention and its gradient -> (Q, K): E_h[(grad * attention)^+] (Chefer et al. 2021, eq. 5)."""
    return (grad * attention).clamp(min=0).mean(0)


def _normalize_residual(relevancy: torch.Tensor) -> torch.Tensor:
    """(n, n) self-relevancy R -> R-bar = (R - I) with rows scaled to sum to 1, + I (Chefer et al. 2021, eq. 8-9);
    a row with nothing besides its identity part stays the identity row."""
    eye = torch.eye(relevancy.shape[-1], dtype=relevancy.dtype, device=relevancy.device)
    mixed = relevancy - eye
    totals = mixed.sum(-1, keepdim=True)
    return torch.where(totals > 0, mixed / totals.clamp(min=1e-12), torch.zeros_like(mixed)) + eye


def attention_relevancy(
    cross_attentions: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decoder_attentions: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    encoder_attentions: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
) -> torch.Tensor:
    """Relevancy of every visual token for every caption token from gradient-weighted attention, propagated through
    the visual self-attention layers, the decoder's self-attention and its cross-attention ("Generic attention-model
    explainability for interpreting bi-modal and encoder-decoder transformers", Chefer, Gur & Wolf, ICCV 2021,
    rules 5-10; the attention-only variant, without LRP).

    Raw cross-attention to visual token t is attention to frame t's slot, which the visual self-attention layers
    have already mixed with the other frames, and it ignores what a caption token reads through earlier caption
    tokens. This propagates both: with Ā = E_h[(∇A ⊙ A)^+] per layer (∇ of the explained score),

        R_ii = I;  R_ii += Ā_ii R_ii  per visual layer                  (visual tokens' mixing)
        R_tt = I, R_ti = 0;  per decoder layer:
            R_tt += Ā_tt R_tt;  R_ti += Ā_tt R_ti                       (self-attention)
            R_ti += R̄_tt Ā_ti R̄_ii                                     (cross-attention)

    R̄ as in `_normalize_residual`. The paper writes the cross-attention rule with (R̄_tt)^T, for decoders whose
    queries attend to each other both ways; here row p of R_tt holds what caption token p depends on (causal
    self-attention), so R̄_tt multiplies without the transpose and token p never gets relevancy from later tokens.
    A second, smaller deviation: where a row of R - I is all zero (no visual layers, so R_ii = I; or only negative
    gradient x attention), the reference code's row normalisation divides by zero and the NaN it sets to zero wipes
    the whole cross-attention term of the layer; here such a row of R̄ is the identity's, so the term still counts.

    Args:
        cross_attentions: per decoder layer, (attention, gradient), each (heads, L, N).
        decoder_attentions: per decoder layer, (attention, gradient), each (heads, L, L); empty to skip the rule.
        encoder_attentions: per visual self-attention layer, (attention, gradient), each (heads, N, N).

    Returns:
        (L, N) non-negative: row p is the relevancy of the visual tokens for caption position p.

    Raises:
        ValueError: when no cross-attention is given, decoder_attentions has another number of layers, or an entry
            is not an (attention, gradient) pair of finite 3-D tensors of one shape with the L and N above (Hugging
            Face returns (1, heads, Q, K) per layer: pass ``attention[0]``).
    """
    if not cross_attentions:
        raise ValueError("attention_relevancy needs the cross-attention (and its gradient) of at least one layer.")
    if decoder_attentions and len(decoder_attentions) != len(cross_attentions):
        raise ValueError(f"attention_relevancy: {len(decoder_attentions)} decoder self-attention layers for "
                         f"{len(cross_attentions)} cross-attention layers; pass one of each per layer (or none).")
    _check_attention_pairs("cross_attentions", cross_attentions[:1], "(heads, L, N)", None)  # L, N come from it
    queries, keys = cross_attentions[0][0].shape[-2:]
    _check_attention_pairs("cross_attentions", cross_attentions, "(heads, L, N)", (queries, keys))
    _check_attention_pairs("decoder_attentions", decoder_attentions, "(heads, L, L)", (queries, queries))
    _check_attention_pairs("encoder_attentions", encoder_attentions, "(heads, N, N)", (keys, keys))
    dtype, device = torch.float32, cross_attentions[0][0].device
    visual = torch.eye(keys, dtype=dtype, device=device)  # R_ii (N, N)
    for attention, grad in encoder_attentions:
        visual = visual + _weighted_heads(attention.float(), grad.float()) @ visual
    visual_bar = _normalize_residual(visual)
    text = torch.eye(queries, dtype=dtype, device=device)  # R_tt (L, L)
    relevancy = torch.zeros(queries, keys, dtype=dtype, device=device)  # R_ti (L, N)
    for layer, (attention, grad) in enumerate(cross_attentions):
        if decoder_attentions:
            self_weights = _weighted_heads(*(t.float() for t in decoder_attentions[layer]))  # (L, L)
            text, relevancy = text + self_weights @ text, relevancy + self_weights @ relevancy
        relevancy = relevancy + _normalize_residual(text) @ _weighted_heads(attention.float(), grad.float()) @ visual_bar
    return relevancy


def _check_attention_pairs(
    name: str, pairs: Sequence[Any], shape: str, queries_keys: tuple[int, int] | None
) -> None:
    """Raise a ValueError naming ``name[i]`` unless every entry is an (attention, gradient) pair of finite tensors of
    one shape (heads, Q, K), with (Q, K) = `queries_keys` when given (`attention_relevancy`'s inputs)."""
    for index, pair in enumerate(pairs):
        where = f"attention_relevancy: {name}[{index}]"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(t, torch.Tensor) for t in pair):
            raise ValueError(f"{where} must be an (attention, gradient) pair of tensors, got {type(pair).__name__}.")
        attention, grad = pair
        if attention.dim() != 3:
            raise ValueError(f"{where}: attention of shape {tuple(attention.shape)}; expected {shape}, one layer of "
                             f"one video (Hugging Face's (1, heads, Q, K) maps: pass attention[0] and its gradient[0]).")
        if grad.shape != attention.shape:
            raise ValueError(f"{where}: gradient of shape {tuple(grad.shape)} for attention of shape "
                             f"{tuple(attention.shape)}; pass the gradient of that attention map.")
        if queries_keys is not None and tuple(attention.shape[-2:]) != tuple(queries_keys):
            raise ValueError(f"{where}: attention of shape {tuple(attention.shape)}; expected {shape} with "
                             f"(L, N) = {tuple(queries_keys)} from cross_attentions[0] (one caption, one video).")
        if not (torch.isfinite(attention).all() and torch.isfinite(grad).all()):
            raise ValueError(f"{where}: the attention or its gradient is not finite (NaN or inf; an overflow in "
                             f"half precision?); score the caption in float32.")


def _check_count(name: str, value: Any, what: str) -> None:
    """Raise a ValueError naming `name` unless `value` is a positive integer (bools and floats are refused: they
    would otherwise fail deep inside torch with an unrelated TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: expected a positive integer ({what}).")


def occlusion_frame_scores(
    model: Any,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int] | torch.Tensor,
    *,
    baseline: Literal["dataset_mean", "clip_mean"] = "dataset_mean",
    batch_size: int | None = None,
    window: int = 1,
) -> torch.Tensor:
    """Per-frame occlusion sensitivity of every caption token: how much each word's log-probability drops when one
    frame (or a window of consecutive frames) is replaced by a flat frame.

    Occlusion sensitivity after Zeiler & Fergus 2014 ("Visualizing and understanding convolutional networks",
    ECCV, sec. 4.2), occluding whole frames instead of image patches: for each frame t, a copy of the video with
    frame t replaced by the baseline is scored teacher forced, and

        scores[i, t] = log p(token i | original video) - log p(token i | frame t occluded)

    (nats; positive = the frame supports the word, negative = the word is likelier without it). The baseline is
    the deletion test's (`faithfulness`, `grounding.cause_deletion`): `"dataset_mean"` puts zeros in normalised
    space, a flat frame of the dataset's mean colour; `"clip_mean"` the mean of the clip's frames.

    `window` > 1 slides an occluder of `window` consecutive frames over the video with stride 1 (Zeiler & Fergus
    slid occluders larger than one unit too): T - window + 1 occluded copies, and a frame's score is the mean drop
    over the windows that cover it. A cause visible in several neighbouring frames is then removed together; a
    single-frame occluder leaves its other frames and can miss it (see `shapley_frame_scores` for the exact answer
    to that redundancy). `window=1` is the plain per-frame occlusion.

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
        batch_size: videos per forward pass (default: all T - window + 2 in one pass).
        window: consecutive frames occluded together, 1 <= window <= T.

    Returns:
        (L, T) float32 tensor on the CPU: the log-probability drop of each caption token for each occluded frame.

    Raises:
        ValueError: for more than one video, an empty caption, a bad baseline, batch_size or window.
    """
    pixels, labels = _one_video_and_caption("occlusion_frame_scores", pixel_values_videos, caption_ids, baseline)
    frames = pixels.shape[1]
    _check_count("window", window, "consecutive frames occluded together")
    if not 1 <= window <= frames:
        raise ValueError(f"window={window} is invalid: expected 1 <= window <= {frames} (the number of frames).")
    starts = frames - window + 1
    keep = torch.ones(1 + starts, frames, dtype=torch.bool)  # row 0 is the original video
    covers = torch.zeros(starts, frames)  # covers[s, t] = 1 when window s occludes frame t
    for start in range(starts):
        keep[1 + start, start : start + window] = False
        covers[start, start : start + window] = 1.0
    batch_size = 1 + starts if batch_size is None else batch_size
    logp = _coalition_logprobs(model, pixels, labels, keep, baseline, batch_size)  # (1 + S, L)
    drops = (logp[:1] - logp[1:]).float().cpu()  # (S, L)
    if window == 1:
        return drops.T.contiguous()  # (L, T): window t is frame t
    return (covers.T @ drops / covers.sum(0)[:, None]).T.contiguous()  # (T, S) @ (S, L) -> (T, L) -> (L, T)


def shapley_frame_scores(
    model: Any,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int] | torch.Tensor,
    *,
    baseline: Literal["dataset_mean", "clip_mean"] = "dataset_mean",
    batch_size: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Shapley value of every frame for every caption token's log-probability: the frames are the players.

    The Shapley value (Shapley 1953, "A value for n-person games"), as used to attribute a model's output to its
    input features by SHAP (Lundberg & Lee 2017, "A unified approach to interpreting model predictions", NeurIPS):
    with T frames and the value of a coalition S of frames

        v_i(S) = log p(token i | the frames in S kept, every other frame replaced by the flat baseline frame),

    frame t gets  phi[i, t] = sum over S not holding t of |S|! (T - |S| - 1)! / T! * (v_i(S + {t}) - v_i(S)),

    its marginal contribution averaged over every order in which the frames could be added. One fixed baseline
    frame stands for a missing frame, the same as `occlusion_frame_scores` and the deletion test use; that is
    "baseline Shapley" in the terms of Sundararajan & Najmi 2020 ("The many Shapley values for model explanation",
    ICML), what captum's `ShapleyValues` computes with a single `baselines` tensor (captum issue #1789), not SHAP's
    average over a background set.

    Why it differs from occlusion: occluding one frame measures v(all) - v(all but t) only. When a cause is visible
    in several frames, removing one of them leaves the others and costs nothing, so each gets ~0, although removing
    all of them costs a lot. Shapley values split that joint effect: two redundant frames get half of it each.
    They are also efficient: for every token, sum_t phi[i, t] = v_i(all frames) - v_i(no frames), exactly.

    Exact by default: all 2^T coalitions are scored teacher forced (256 videos for T = 8, in batches of
    `batch_size`), no gradients (it runs under `torch.inference_mode()` too). For T above
    `SHAPLEY_EXACT_MAX_FRAMES` (12) that would be more than 4096 forward passes, so a ValueError asks for
    `num_samples`: the permutation-sampling estimate of Castro, Gomez & Tejada 2009 ("Polynomial calculation of the
    Shapley value based on sampling", Computers & Operations Research 36(5)): `num_samples` random orders of the
    frames (`seed`), each frame credited its marginal contribution where it joins, averaged. Each order's
    contributions telescope to v(all) - v(none), so the efficiency property holds exactly for the estimate too.
    At most num_samples * (T - 1) + 2 distinct coalitions are scored (orders share the empty and full ones).
    captum's exact `ShapleyValues` enumerates all T! orders instead (T * T! passes; its docs advise fewer than 7
    features), and its `ShapleyValueSampling` is the same permutation sampling.

    The caveats of `occlusion_frame_scores` apply (visual self-attention layers mix frames; with motion tokens a
    frame also changes the next frame's token).

    Args:
        model: a `VidGPT2ForConditionalGeneration`; its train/eval modes are restored afterwards (it runs in eval
            mode: dropout off).
        pixel_values_videos: (1, T, 3, H, W) or (T, 3, H, W), one video.
        caption_ids: (L,) the caption's token ids as scored, eos included (e.g. `Explanation.caption_ids`).
        baseline: what a missing frame becomes: `"dataset_mean"` (zeros in normalised space) or `"clip_mean"`.
        batch_size: videos per forward pass (default 32).
        num_samples: None for the exact values; a number of random frame orders for permutation sampling.
        seed: the random orders' seed (permutation sampling only).

    Returns:
        (L, T) float32 tensor on the CPU: phi[i, t] in nats (positive = frame t supports token i).

    Raises:
        ValueError: for more than one video, an empty caption, a bad baseline, batch_size or num_samples, or
            T > SHAPLEY_EXACT_MAX_FRAMES without `num_samples`.
    """
    pixels, labels = _one_video_and_caption("shapley_frame_scores", pixel_values_videos, caption_ids, baseline)
    frames = pixels.shape[1]
    if num_samples is None and frames > SHAPLEY_EXACT_MAX_FRAMES:
        raise ValueError(
            f"shapley_frame_scores(): exact Shapley values score 2^T coalitions, and T={frames} frames is above the "
            f"limit SHAPLEY_EXACT_MAX_FRAMES={SHAPLEY_EXACT_MAX_FRAMES}; pass num_samples= (e.g. 64) for the "
            "permutation-sampling estimate, or fewer frames."
        )
    if num_samples is not None:
        _check_count("num_samples", num_samples, "frame orders to sample, or None for exact values")
    if num_samples is None:
        coalitions = list(range(2**frames))  # bit t of a coalition: frame t kept
    else:
        orders = _frame_orders(frames, num_samples, seed)
        coalitions = sorted({sum(1 << int(t) for t in order[:k]) for order in orders for k in range(frames + 1)})
    keep = torch.tensor([[(c >> t) & 1 for t in range(frames)] for c in coalitions], dtype=torch.bool)  # (M, T)
    batch_size = 32 if batch_size is None else batch_size
    values = _coalition_logprobs(model, pixels, labels, keep, baseline, batch_size).double().cpu()  # (M, L)
    row = {c: i for i, c in enumerate(coalitions)}
    phi = torch.zeros(frames, labels.shape[1], dtype=torch.float64)  # (T, L)
    if num_samples is None:
        weights = [math.factorial(s) * math.factorial(frames - s - 1) / math.factorial(frames) for s in range(frames)]
        for t in range(frames):
            without = [c for c in coalitions if not (c >> t) & 1]
            gains = values[[row[c | 1 << t] for c in without]] - values[[row[c] for c in without]]  # (2^(T-1), L)
            size_weights = torch.tensor([weights[c.bit_count()] for c in without], dtype=torch.float64)
            phi[t] = size_weights @ gains
    else:
        for order in orders:
            coalition = 0
            for t in order:
                joined = coalition | 1 << int(t)
                phi[int(t)] += values[row[joined]] - values[row[coalition]]
                coalition = joined
        phi /= len(orders)
    return phi.T.float().contiguous()  # (L, T)


def _frame_orders(frames: int, num_samples: int, seed: int) -> list[list[int]]:
    """`num_samples` random permutations of range(frames), reproducible from `seed` (torch's CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(frames, generator=generator).tolist() for _ in range(num_samples)]


def _one_video_and_caption(
    caller: str, pixel_values_videos: torch.Tensor, caption_ids: Sequence[int] | torch.Tensor, baseline: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the inputs of the frame-perturbation methods: -> pixels (1, T, 3, H, W), labels (1, L)."""
    pixels = torch.as_tensor(pixel_values_videos)
    pixels = pixels[None] if pixels.dim() == 4 else pixels
    if pixels.dim() != 5 or pixels.shape[0] != 1:
        raise ValueError(
            f"{caller}() explains one video: expected pixel_values_videos of shape (1, T, 3, H, W) or "
            f"(T, 3, H, W), got {tuple(pixels.shape)}. Call it once per video."
        )
    labels = torch.as_tensor(caption_ids, dtype=torch.long).reshape(1, -1)  # (1, L)
    if labels.shape[1] == 0:
        raise ValueError(f"{caller}() got an empty caption; pass the caption's token ids, eos included.")
    if baseline not in ("dataset_mean", "clip_mean"):
        raise ValueError(f"baseline={baseline!r} is invalid: expected 'dataset_mean' or 'clip_mean'.")
    return pixels, labels


def _clip_mean_frame(frames: torch.Tensor) -> torch.Tensor:
    """(3, H, W) mean of the (T, 3, H, W) frames, exact where a pixel is the same in every frame: a float32 mean of
    3, 5, 6 ... equal values rounds, so a still clip's coalitions differed by ~1e-7 and that noise, not a tie, chose
    its top frame. (A float64 mean would be exact too, but MPS has no float64.)"""
    still = (frames == frames[:1]).all(0)  # (3, H, W)
    return torch.where(still, frames[0], frames.mean(0))


def _coalition_logprobs(
    model: Any,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
    baseline: str,
    batch_size: int,
) -> torch.Tensor:
    """Teacher-forced token log-probs of copies of one video in which only some frames are kept.

    Args:
        pixels: (1, T, 3, H, W); labels: (1, L); keep: (M, T) bool, row m = the frames copy m keeps, every other
            frame replaced by the baseline (zeros in normalised space for "dataset_mean", the clip's mean frame for
            "clip_mean"). Copies are built `batch_size` at a time, so memory holds one batch of videos.

    Returns:
        (M, L) log-probs on the model's device. The model runs in eval mode without gradients; its modes are
        restored afterwards.
    """
    _check_count("batch_size", batch_size, "videos per forward pass")
    pixels = pixels.to(device=model.device, dtype=model.encoder.vision_tower.dtype)
    labels = labels.to(model.device)
    keep = keep.to(model.device)
    fill = torch.zeros_like(pixels[0, 0]) if baseline == "dataset_mean" else _clip_mean_frame(pixels[0])  # (3, H, W)
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            logp = [
                caption_logprobs(  # (m, T, 3, H, W): kept frames from the video, the others the baseline
                    model, labels.expand(len(rows), -1),
                    pixel_values_videos=torch.where(rows[:, :, None, None, None], pixels, fill),
                )
                for rows in keep.split(batch_size)
            ]
    finally:
        for module, mode in modes.items():
            module.training = mode
    return torch.cat(logp)  # (M, L)


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
    """Rows = caption tokens, columns = frames, colour = attention (or occlusion drop, or Shapley value); values
    written in the cells when they fit."""
    matrix = explanation.token_frame_weights  # (n, T)
    perturbation = explanation.frame_scores in ("occlusion", "shapley")
    low = min(float(matrix.min()), 0.0) if perturbation else 0.0  # drops and Shapley values can be negative
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=low, vmax=max(float(matrix.max()), low + 1e-6))
    ax.set_xticks(range(matrix.shape[1]), [str(t) for t in range(matrix.shape[1])], fontsize=10)
    ax.set_yticks(range(matrix.shape[0]), explanation.tokens, fontsize=10)
    ax.set_xlabel("frame", fontsize=11)
    what = _WHAT[explanation.frame_scores]
    ax.set_title(f"{what} per word ({explanation.method} heatmaps, layers: {explanation.layers})", fontsize=11)
    if matrix.size <= 400:
        threshold = low + 0.6 * (float(matrix.max()) - low)
        for (row, column), value in np.ndenumerate(matrix):
            color = "black" if value > threshold else "white"
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    colorbar.set_label(_UNIT[explanation.frame_scores], fontsize=10)


# what the per-word frame scores are, by `Explanation.frame_scores`: figure titles and colour-bar labels
_WHAT = {
    "attention": "attention over frames",
    "occlusion": "log-prob drop when the frame is occluded",
    "shapley": "Shapley value of the frame for the log-prob",
}
_UNIT = {"attention": "attention", "occlusion": "log-prob drop (nats)", "shapley": "Shapley value (nats)"}


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
    perturbation = explanation.frame_scores in ("occlusion", "shapley")
    scale = max(float(np.max(matrix)), 1e-12) if perturbation else 1.0  # nats -> shades in [0, 1]
    for token, weights in zip(explanation.tokens, matrix, strict=True):
        cells = "".join(_html_cell(w, scale) for w in weights)
        body.append(f"<tr><th>{html.escape(token)}</th>{cells}</tr>")
    mean_cells = "".join(_html_cell(w, scale) for w in explanation.frame_weights)
    what = {"attention": "Attention over frames", "occlusion": "Log-prob drop (nats) when the frame is occluded",
            "shapley": "Shapley value (nats) of the frame"}[explanation.frame_scores]
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
    "attention_relevancy",
    "caption_logprobs",
    "denormalize_frames",
    "explain",
    "faithfulness",
    "mean_faithfulness",
    "occlusion_frame_scores",
    "plot_explanation",
    "save_explanation",
    "shapley_frame_scores",
]
