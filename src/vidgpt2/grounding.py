"""Grounding of explanations, measured on clips whose causes we placed (issue 12; `vidgpt2 synth --kind driving`).

For a clip with a known cause (frames where it is visible, its box in each) and a caption whose justification names
it ("the car slows down because the light turns red"):

- the cause-word tokens: the tokens after "because" that spell one of the clip's ``cause_words``;
- **temporal pointing game**: is the frame the explanation ranks highest for those tokens one where the cause is
  visible? Chance: the share of frames showing the cause.
- **spatial pointing game**: on the cause frame the explanation ranks highest, does the heatmap's maximum (at frame
  resolution, the bilinear upsampling `explain` shows) fall inside the cause's box? Chance: box area / frame area.
- **deletion by cause**: the drop of the caption's log-probability when the cause frames are replaced by a flat
  frame, against replacing as many other frames (the mean over random subsets of them).

Pointing games after Zhang et al. 2018 ("Top-down neural attention by excitation backprop", IJCV): a hit when the
map's maximum falls on the object. Ties are scored by their expected value under a random tie-break (a flat map on T
frames with c cause frames scores c / T, the chance rate), so flat or all-zero maps cannot look grounded.

Explanation methods, computed for the cause-word tokens only (the caption teacher forced, one pass per clip):

- ``"attention"``: the decoder's cross-attention (head mean, layer mean) of the queries that predict the cause
  words; per frame the sum over its tokens; per cell the tokens' own weights (grid/spatial tokens only, pooled models
  have no spatial attention).
- ``"relevancy"``: gradient-weighted attention relevancy (Chefer, Gur & Wolf 2021;
  `explanations.attention_relevancy`) for the cause words' summed log-probability: the head-averaged positive part
  of gradient x attention, propagated through the visual self-attention layer(s), where raw attention to token t
  already reads other frames, and through the decoder's self-attention; per frame and per cell as attention.
- ``"grad-cam"``: Grad-CAM (Selvaraju et al. 2017) of the cause words' summed log-probability on the vision tower's
  last feature map: per cell relu(sum_c w_c A_c), w_c the spatial mean of the gradient; per frame the sum of its
  cells; its heatmap is scaled by the clip's maximum before upsampling (upsampling clamps to [0, 1]).
- ``"occlusion"``: per-frame occlusion sensitivity (Zeiler & Fergus 2014, whole frames occluded;
  `explanations.occlusion_frame_scores`): the drop of the cause words' summed log-probability when the frame is
  replaced by the deletion test's flat frame. Temporal only (it has no heatmap). Motion tokens: occluding frame t
  also changes token t + 1 (the change from t to t + 1).
- ``"shapley"``: exact Shapley values of the frames (Shapley 1953; Lundberg & Lee 2017;
  `explanations.shapley_frame_scores`) for the cause words' summed log-probability, a missing frame replaced by the
  same flat frame: all 2^T subsets of frames scored. Where occlusion removes one frame and misses a cause that other
  frames still show, Shapley values share the effect of removing them together among them. Temporal only.
- ``"shapley-clip-mean"``: the same Shapley values with another stand-in for a missing frame, the clip's mean frame
  (`shapley_frame_scores(..., baseline="clip_mean")`). A flat frame is a frame no video has: with most frames flat
  the model reads a scene that never occurs, and that effect, shared by every frame, can outweigh the cause's. The
  mean frame keeps what stays put (the road, the sky) and fades what comes and goes, the cause among it. Which
  stand-in to use is a known open choice (Sundararajan & Najmi 2020; Sturmfels, Lundberg & Lee 2020,
  "Visualizing the impact of feature attribution baselines", Distill), so both are measured. Temporal only.

Wilson score intervals (Wilson 1927; the formula as in Agresti & Coull 1998, eq. 2) are computed here: the fractional
hits of ties rule out integer-only implementations such as scipy's ``binomtest(...).proportion_ci``, which the tests
use as a reference on integer counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .explanations import (
    _combine_cross_attention,
    _preserve_state,
    _scale_to_unit,
    _token_logprobs,
    _upsample,
    _vision_feature_map,
    attention_relevancy,
    caption_logprobs,
    occlusion_frame_scores,
    shapley_frame_scores,
)

logger = logging.getLogger(__name__)

METHODS = ("attention", "relevancy", "grad-cam", "occlusion", "shapley", "shapley-clip-mean")
CONNECTIVE = "because"
# a clip's cause words "need the video" when the video makes them at least e times more likely than flat frames do
VIDEO_DEPENDENCE_NATS = 1.0
POSITION_PERMUTATIONS = 10_000  # random reassignments behind `position_permutation_p` (p resolution 1e-4)


# --- statistics ------------------------------------------------------------------------------------------------------
def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: ``successes`` of ``n`` (may be fractional, see module doc).

    Returns (low, high) in [0, 1]; z = 1.96 gives 95%.

    Raises:
        ValueError: for n < 1 or successes outside [0, n].
    """
    if n < 1:
        raise ValueError(f"wilson_interval: n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, {n}], got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # the interval always holds p (it ends at exactly 1 for n of n); rounding can leave it a hair short of that
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def temporal_hit(frame_scores: Sequence[float] | np.ndarray, cause_frames: Sequence[int]) -> float:
    """1.0 when the top-scoring frame shows the cause, 0.0 when not; ties: the share of tied top frames that do.

    Args:
        frame_scores: (T,) one score per frame (higher = more important).
        cause_frames: indices of the frames where the cause is visible.

    Raises:
        ValueError: for empty scores, NaN scores, no cause frames, or a cause frame outside [0, T).
    """
    scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0 or not len(cause_frames):
        raise ValueError("temporal_hit needs frame scores and at least one cause frame")
    _refuse_nan("temporal_hit", "frame_scores", scores)
    if min(cause_frames) < 0 or max(cause_frames) >= scores.size:
        raise ValueError(f"temporal_hit: cause frames {list(cause_frames)} outside [0, {scores.size})")
    top = np.flatnonzero(scores >= scores.max())
    return float(np.isin(top, list(cause_frames)).mean())


def spatial_hit(heatmap: np.ndarray, box: Sequence[int]) -> float:
    """1.0 when the heatmap's maximum lies in ``box`` = [x0, y0, x1, y1) (pixels, exclusive ends); ties: the share of
    maximal pixels inside it.

    Args:
        heatmap: (H, W) at frame resolution.

    Raises:
        ValueError: for a box outside the heatmap, an empty box, or a heatmap holding NaN.
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    _refuse_nan("spatial_hit", "heatmap", heatmap)
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = heatmap.shape
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"spatial_hit: box {list(box)} is empty or outside the {width}x{height} heatmap")
    peak = heatmap >= heatmap.max()
    return float(peak[y0:y1, x0:x1].sum() / peak.sum())


def scale_box(box: Sequence[int], from_size: Sequence[int], to_size: Sequence[int]) -> list[int]:
    """Rescale a pixel box [x0, y0, x1, y1) (exclusive ends) from a frame of ``from_size`` (H, W) to one of
    ``to_size``: starts rounded down, ends up (at least one pixel wide), in integer arithmetic, so a box that ends
    at the frame's border ends at the new border (in floats 50 * (224 / 50) rounds up to 225, outside a 224 px
    frame; the failure at the border of albumentations-team/albumentations#459, bit-bots/imagetagger#105).

    Raises:
        ValueError: for a box that is empty or outside the ``from_size`` frame.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    (from_h, from_w), (to_h, to_w) = (int(v) for v in from_size), (int(v) for v in to_size)
    if not (0 <= x0 < x1 <= from_w and 0 <= y0 < y1 <= from_h):
        raise ValueError(f"scale_box: box {list(box)} is empty or outside the {from_w}x{from_h} frame it refers to "
                         "(frame_size [H, W]); boxes are [x0, y0, x1, y1) in that frame's pixels.")
    new_x0, new_y0 = x0 * to_w // from_w, y0 * to_h // from_h  # floor
    new_x1, new_y1 = -(-x1 * to_w // from_w), -(-y1 * to_h // from_h)  # ceiling
    return [new_x0, new_y0, max(new_x0 + 1, new_x1), max(new_y0 + 1, new_y1)]


def _refuse_nan(caller: str, name: str, values: np.ndarray) -> None:
    """Raise a ValueError when ``values`` hold a NaN: its maximum is NaN, no entry reaches it, and the hit would
    come out NaN (0 / 0) and drop out of the mean unnoticed. CAM normalisations that divide by max - min = 0
    (jacobgil/pytorch-grad-cam#214, frgfm/torch-cam#186) and fully masked attention rows (pytorch/pytorch#41508)
    produce such maps."""
    if np.isnan(values).any():
        raise ValueError(
            f"{caller}: {name} holds {int(np.isnan(values).sum())} NaN of {values.size} values, so it has no "
            "maximum to point with: the explanation failed (a 0 / 0 normalisation or a fully masked attention row); "
            "fix the map or leave the clip out."
        )


def box_fraction(box: Sequence[int], height: int, width: int) -> float:
    """Area of ``box`` [x0, y0, x1, y1) over the frame's: the spatial pointing game's chance rate."""
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) / (height * width)


def cause_token_positions(tokens: Sequence[str], cause_words: Sequence[str]) -> list[int]:
    """Positions of the tokens after the first "because" that spell a cause word (case ignored), every token of it:
    GPT-2's byte-level BPE splits words it has no single token for ("Ġped", "estrian"; huggingface/transformers#21364,
    #12665), and each part is part of the word.

    Args:
        tokens: (L,) the caption's token strings (``convert_ids_to_tokens``): byte-level BPE ones, where "Ġ" marks a
            token that starts a word after a space, or word-level ones (one word per token, no "Ġ" anywhere).
        cause_words: the words that name the cause (single words).

    Returns [] when the caption has no "because" or no cause word after it.
    """
    words = _token_words(tokens)  # (L,) index of the word each token belongs to
    texts: dict[int, str] = {}
    for token, word in zip(tokens, words, strict=True):
        texts[word] = texts.get(word, "") + token.replace("Ġ", "").strip().lower()
    connective = [w for w in sorted(texts) if texts[w] == CONNECTIVE]
    if not connective:
        return []
    wanted = {w.lower() for w in cause_words}
    return [i for i, word in enumerate(words) if word > connective[0] and texts[word] in wanted]


def _token_words(tokens: Sequence[str]) -> list[int]:
    """(L,) the word index of each token. Byte-level BPE (some token starts with "Ġ"): a token continues the word
    before it when it has no "Ġ" and both it and the token before are letters or digits at the joint (punctuation,
    "'s" and special tokens such as "<|endoftext|>" stand alone); otherwise every token is a word."""
    byte_level = any(t.startswith("Ġ") for t in tokens)
    words, index = [], -1
    for position, token in enumerate(tokens):
        previous = tokens[position - 1].replace("Ġ", "") if position else ""  # a lone "Ġ" (two spaces) ends a word
        joined = (byte_level and not token.startswith("Ġ") and token[:1].isalnum() and previous[-1:].isalnum())
        index += 0 if joined else 1
        words.append(index)
    return words


# --- explanation maps for chosen tokens ------------------------------------------------------------------------------
@dataclass
class TokenMaps:
    """Maps for the chosen tokens of one teacher-forced caption (T frames, frame size H x W).

    Attributes:
        attention_frames: (T,) cross-attention over frames, summed over each frame's tokens, mean over the tokens.
        attention_heatmaps: (T, H, W) the cross-attention over each frame's cells upsampled, or None for pooled models.
        gradcam_frames: (T,) Grad-CAM mass per frame (sum over its cells).
        gradcam_heatmaps: (T, H, W) Grad-CAM scaled by its clip maximum and upsampled to the frame.
        occlusion_frames: (T,) drop of the tokens' summed log-probability (nats) when frame t is occluded; None
            when not computed.
        shapley_frames: (T,) Shapley value (nats) of frame t for the tokens' summed log-probability, a missing frame
            replaced by a flat frame of the dataset's mean colour; None when not computed.
        shapley_clip_mean_frames: (T,) the same with the clip's mean frame for a missing frame; None when not
            computed.
        relevancy_frames: (T,) gradient-weighted attention relevancy (`explanations.attention_relevancy`) summed
            over each frame's tokens, mean over the tokens; None when not computed.
        relevancy_heatmaps: (T, H, W) the relevancy over each frame's cells, scaled by its clip maximum and
            upsampled; None for pooled models or when not computed.
    """

    attention_frames: np.ndarray
    attention_heatmaps: np.ndarray | None
    gradcam_frames: np.ndarray
    gradcam_heatmaps: np.ndarray
    occlusion_frames: np.ndarray | None = None
    shapley_frames: np.ndarray | None = None
    shapley_clip_mean_frames: np.ndarray | None = None
    relevancy_frames: np.ndarray | None = None
    relevancy_heatmaps: np.ndarray | None = None

    def frames(self, method: str) -> np.ndarray | None:
        """(T,) per-frame scores of ``method`` (one of `METHODS`)."""
        return {"attention": self.attention_frames, "relevancy": self.relevancy_frames,
                "grad-cam": self.gradcam_frames, "occlusion": self.occlusion_frames,
                "shapley": self.shapley_frames, "shapley-clip-mean": self.shapley_clip_mean_frames}[method]

    def heatmaps(self, method: str) -> np.ndarray | None:
        """(T, H, W) heatmaps of ``method``; None for pooled attention and relevancy, occlusion and both Shapley
        methods (temporal only)."""
        return {"attention": self.attention_heatmaps, "relevancy": self.relevancy_heatmaps,
                "grad-cam": self.gradcam_heatmaps, "occlusion": None, "shapley": None, "shapley-clip-mean": None}[method]


def token_maps(
    model: Any, pixel_values_videos: torch.Tensor, caption_ids: Sequence[int], positions: Sequence[int]
) -> TokenMaps:
    """Attention, Grad-CAM, occlusion and Shapley maps for the tokens at ``positions`` of the teacher-forced
    ``caption_ids`` (Shapley values: 2^T more forward passes per baseline, 2 x 256 for 8 frames).

    Args:
        model: a `VidGPT2ForConditionalGeneration` (modes, flags and grads are restored afterwards).
        pixel_values_videos: (1, T, 3, H, W).
        caption_ids: the caption's token ids, eos included.
        positions: indices into ``caption_ids`` of the tokens to explain.

    Raises:
        ValueError: for no positions or a position outside the caption.
    """
    if not len(positions) or min(positions) < 0 or max(positions) >= len(caption_ids):
        raise ValueError(f"token_maps: positions {list(positions)} must be non-empty and inside the caption")
    pixels = pixel_values_videos.to(model.device)
    batch, frames = pixels.shape[:2]
    size = tuple(pixels.shape[-2:])
    labels = torch.as_tensor(list(caption_ids), dtype=torch.long, device=pixels.device)[None]  # (1, L)
    index = torch.as_tensor(list(positions))
    with _preserve_state(model), torch.enable_grad():
        model.eval()
        for parameter in model.parameters():  # so the first decoder layer's self-attention is in the graph too
            if parameter.is_floating_point():  # integer (quantized) weights cannot require grad
                parameter.requires_grad_(True)
        feature_map = _vision_feature_map(model, pixels).detach().requires_grad_(True)  # (T, C, h, w)
        out = model(video_features=model.encoder.pool_feature_map(feature_map, batch, frames), labels=labels,
                    output_attentions=True)
        chosen = _token_logprobs(out.logits, labels)[0, index].sum()
        attentions = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
        grads, *attention_grads = torch.autograd.grad(
            chosen, [feature_map, *attentions], allow_unused=True, materialize_grads=True
        )  # (T, C, h, w), then one (1, heads, Q, K) per attention map
    pairs = [(a.detach()[0].float().cpu(), g[0].float().cpu()) for a, g in zip(attentions, attention_grads, strict=True)]
    visual_layers, decoder_layers = len(out.encoder_attentions), len(out.decoder_attentions)
    relevancy = attention_relevancy(
        pairs[visual_layers + decoder_layers:], pairs[visual_layers:visual_layers + decoder_layers], pairs[:visual_layers]
    )  # (L, N)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * feature_map.detach()).sum(1)).float().cpu()  # (T, h, w)
    maps = _combine_cross_attention([a.detach().float().cpu() for a in out.cross_attentions], "mean")  # (L, N)
    cells = maps[index].mean(0).reshape(frames, -1)  # (T, tokens_per_frame)
    relevancy_cells = relevancy[index].mean(0).reshape(frames, -1)  # (T, tokens_per_frame)
    side = model.config.token_grid
    occlusion = occlusion_frame_scores(model, pixels, list(caption_ids))[index].sum(0)  # (T,)
    shapley = shapley_frame_scores(model, pixels, list(caption_ids))[index].sum(0)  # (T,): linear in the value
    shapley_clip_mean = shapley_frame_scores(model, pixels, list(caption_ids), baseline="clip_mean")[index].sum(0)
    attention_heatmaps = relevancy_heatmaps = None
    if side > 1:
        attention_heatmaps = _upsample(cells.reshape(frames, side, side), size).numpy()  # weights <= 1
        relevancy_heatmaps = _upsample(_scale_to_unit(relevancy_cells.reshape(frames, side, side)), size).numpy()
    return TokenMaps(
        attention_frames=cells.sum(-1).numpy(),
        attention_heatmaps=attention_heatmaps,
        gradcam_frames=cam.sum(dim=(1, 2)).numpy(),
        gradcam_heatmaps=_upsample(_scale_to_unit(cam), size).numpy(),
        occlusion_frames=occlusion.numpy(),
        shapley_frames=shapley.numpy(),
        shapley_clip_mean_frames=shapley_clip_mean.numpy(),
        relevancy_frames=relevancy_cells.sum(-1).numpy(),
        relevancy_heatmaps=relevancy_heatmaps,
    )


def cause_deletion(
    model: Any,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int],
    cause_frames: Sequence[int],
    *,
    num_random: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Deletion test restricted to the cause: log p(caption) drop when the cause frames are replaced by a flat frame
    of the dataset's mean colour (zeros in normalised space, as `explanations.faithfulness`) vs the mean drop when as
    many other frames (random subsets; all of them when there are fewer) are replaced.

    Returns {"drop_cause", "drop_other", "k"} (positive = the caption got less likely).
    """
    pixels = pixel_values_videos.to(model.device)  # (1, T, 3, H, W)
    frames = pixels.shape[1]
    cause = sorted(set(int(t) for t in cause_frames))
    other = [t for t in range(frames) if t not in cause]
    if not cause or not other:
        raise ValueError(f"cause_deletion needs cause and non-cause frames; cause frames {cause} of {frames}")
    k = min(len(cause), len(other))
    rng = np.random.default_rng(seed)
    subsets = [cause] + [sorted(rng.choice(other, size=k, replace=False).tolist()) for _ in range(num_random)]
    variants = pixels.repeat(1 + len(subsets), 1, 1, 1, 1)  # (1 + S, T, 3, H, W)
    for row, subset in enumerate(subsets, start=1):
        variants[row, subset] = 0.0
    labels = torch.as_tensor(list(caption_ids), dtype=torch.long, device=pixels.device)[None]
    with _preserve_state(model), torch.no_grad():
        model.eval()
        logp = caption_logprobs(model, labels.expand(len(variants), -1), pixel_values_videos=variants).sum(-1)
    drops = (logp[0] - logp[1:]).cpu().numpy()
    return {"drop_cause": float(drops[0]), "drop_other": float(drops[1:].mean()), "k": k}


# --- a whole test split ------------------------------------------------------------------------------------------------
def clip_grounding(
    model: Any,
    pixel_values_videos: torch.Tensor,
    caption_ids: Sequence[int],
    tokens: Sequence[str],
    truth: dict[str, Any],
    *,
    deletion: bool = True,
) -> dict[str, Any] | None:
    """Pointing games (both methods) and the cause deletion test for one clip; None when the caption names no cause
    word of ``truth`` (a ``read_ground_truth`` record: ``cause_words``, ``cause_frames``, ``boxes``)."""
    positions = cause_token_positions(tokens, truth["cause_words"])
    if not positions or not truth["cause_frames"]:
        return None
    frames = pixel_values_videos.shape[1]
    _check_frame_count(truth, frames)
    maps = token_maps(model, pixel_values_videos, caption_ids, positions)
    height, width = pixel_values_videos.shape[-2:]
    boxes = {int(t): box for t, box in truth["boxes"].items()}
    cause_frames = list(truth["cause_frames"])
    result: dict[str, Any] = {
        "positions": positions,
        "cause_frames": cause_frames,
        "temporal_chance": len(cause_frames) / frames,
    }
    for method in METHODS:
        scores = maps.frames(method)
        if scores is None:
            continue
        result[f"{method}_temporal"] = temporal_hit(scores, cause_frames)
        result[f"{method}_frame_scores"] = [float(v) for v in scores]  # for `position_matched_chance`
        heatmaps = maps.heatmaps(method)
        if heatmaps is None:
            continue
        best = max(cause_frames, key=lambda t: scores[t])  # the cause frame this method ranks highest
        box = scale_box(boxes[best], truth["frame_size"], (height, width))
        result[f"{method}_spatial"] = spatial_hit(heatmaps[best], box)
        result[f"{method}_spatial_chance"] = box_fraction(box, height, width)
    if deletion and len(cause_frames) < frames:
        result.update(cause_deletion(model, pixel_values_videos, caption_ids, cause_frames))
    return result


def position_matched_chance(
    frame_scores: Sequence[Sequence[float]],
    cause_frames: Sequence[Sequence[int]],
    *,
    groups: Sequence[Any] | None = None,
) -> float:
    """Temporal hit rate of a method's frame rankings paired with the *other* clips' causes: clip i's cause frames
    scored against the ranking the method gave every clip j != i, averaged. It keeps where the method tends to point
    (late frames, say) and breaks the link to what the clip shows, so a hit rate above it is grounding in the clip's
    content, not in position. A control of the permutation-test kind; the plain chance rate (share of cause frames)
    assumes the top frame is uniform over positions, which a method with a position habit is not.

    Args:
        frame_scores: per clip, (T,) the method's scores (the same T for every clip).
        cause_frames: per clip, the frames that show its cause.
        groups: per clip, a label (the cause kind, say); rankings are then paired only within a group. This keeps
            position habits that depend on the label, for example on what the caption says ("bends": late frames,
            where bends are in view): a method that reads the caption and points where that kind of cause tends to
            be scores this control, not more. Groups of one clip are left out.

    Raises:
        ValueError: for fewer than 2 clips (in groups of 2 or more), lists of different lengths, rankings of
            different lengths T, or a clip without cause frames or with one outside [0, T).
    """
    hits = _swapped_hits("position_matched_chance", frame_scores, cause_frames)
    return _off_diagonal_mean(hits, _same_group("position_matched_chance", groups, len(hits)))


def _swapped_hits(
    caller: str, frame_scores: Sequence[Sequence[float]], cause_frames: Sequence[Sequence[int]]
) -> np.ndarray:
    """(n, n): entry [i, j] = temporal hit of clip j's ranking on clip i's cause frames, after checking the inputs
    (the errors of `position_matched_chance`, naming `caller`)."""
    if len(frame_scores) != len(cause_frames) or len(frame_scores) < 2:
        raise ValueError(f"{caller} needs >= 2 clips with scores and cause frames, got "
                         f"{len(frame_scores)} and {len(cause_frames)}")
    lengths = [len(scores) for scores in frame_scores]
    for index, length in enumerate(lengths):
        if length != lengths[0]:
            raise ValueError(f"{caller}: frame_scores[{index}] has {length} frames, frame_scores[0] "
                             f"{lengths[0]}; rankings of clips with different frame counts cannot be swapped.")
    _check_cause_frames(caller, cause_frames, lengths[0])
    return np.array([[temporal_hit(scores, cause) for scores in frame_scores] for cause in cause_frames])


def _same_group(caller: str, groups: Sequence[Any] | None, count: int) -> np.ndarray:
    """(n, n) bool: the pairings of different clips a control may use (all, or those within one group)."""
    if groups is None:
        allowed = np.ones((count, count), dtype=bool)
    else:
        if len(groups) != count:
            raise ValueError(f"{caller}: groups has {len(groups)} labels for {count} clips; give one per clip.")
        labels = np.array([str(g) for g in groups])
        allowed = labels[:, None] == labels[None, :]
    np.fill_diagonal(allowed, False)
    if not allowed.any():
        raise ValueError(f"{caller}: no group holds 2 or more clips, so no ranking can be paired with another clip.")
    return allowed


def _off_diagonal_mean(hits: np.ndarray, allowed: np.ndarray | None = None) -> float:
    """`position_matched_chance` from the (n, n) swapped hits: the mean over pairings of different clips (of the
    same group where `allowed` says so)."""
    allowed = ~np.eye(len(hits), dtype=bool) if allowed is None else allowed
    return float(hits[allowed].mean())


def position_permutation_p(
    frame_scores: Sequence[Sequence[float]],
    cause_frames: Sequence[Sequence[int]],
    *,
    groups: Sequence[Any] | None = None,
    num_permutations: int = POSITION_PERMUTATIONS,
    seed: int = 0,
) -> float:
    """One-sided permutation p-value for "the method's rankings hit their own clips' causes more often than
    rankings handed to clips at random": the share of random reassignments of the rankings to the clips that score
    a hit rate at least the observed one, (1 + count) / (1 + num_permutations) (Phipson & Smyth 2010, so never 0).
    Under the null the rankings carry position habits only, nothing of the clip they came from; a small p means the
    method follows what each clip shows beyond where it tends to point (`position_matched_chance` is the null's
    mean, up to the identity pairings). With ``groups`` the rankings are reassigned only within each group (a
    stratified permutation test), the null of `position_matched_chance(..., groups=...)`.

    Raises:
        ValueError: as `position_matched_chance`, or for num_permutations < 1.
    """
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int) or num_permutations < 1:
        raise ValueError(f"position_permutation_p: num_permutations={num_permutations!r} must be a positive integer.")
    hits = _swapped_hits("position_permutation_p", frame_scores, cause_frames)  # (n, n)
    _same_group("position_permutation_p", groups, len(hits))
    return _permutation_p(hits, num_permutations, seed, groups)


def _permutation_p(hits: np.ndarray, num_permutations: int, seed: int, groups: Sequence[Any] | None = None) -> float:
    """`position_permutation_p` from the (n, n) swapped hits; with `groups`, each permutation only shuffles clips
    within a group."""
    count = len(hits)
    observed = float(np.trace(hits)) / count
    rng = np.random.default_rng(seed)
    if groups is None:
        permutations = np.argsort(rng.random((num_permutations, count)), axis=1)  # (P, n) uniform random permutations
    else:
        labels = np.array([str(g) for g in groups])
        permutations = np.tile(np.arange(count), (num_permutations, 1))  # (P, n)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            shuffled = np.argsort(rng.random((num_permutations, len(members))), axis=1)  # (P, m)
            permutations[:, members] = members[shuffled]
    null = hits[np.arange(count)[None], permutations].mean(axis=1)  # (P,) hit rate of each reassignment
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + num_permutations))


def best_fixed_frame(cause_frames: Sequence[Sequence[int]], num_frames: int) -> tuple[int, float]:
    """The position-only explanation that names the same frame in every clip, at its best: (frame, hit rate).
    Where the causes stay in view until the end, frame T - 1 hits every clip. Ties: the earliest of the best frames.

    Raises:
        ValueError: for no clips, num_frames < 1, or a clip without cause frames or with one outside [0, T).
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"best_fixed_frame: num_frames={num_frames!r} is invalid: expected the clips' frame count.")
    if not len(cause_frames):
        raise ValueError("best_fixed_frame needs the cause frames of at least one clip.")
    _check_cause_frames("best_fixed_frame", cause_frames, num_frames)
    rates = [float(np.mean([t in set(cause) for cause in cause_frames])) for t in range(num_frames)]
    best = int(np.argmax(rates))
    return best, rates[best]


def best_fixed_frame_by_group(
    cause_frames: Sequence[Sequence[int]], num_frames: int, groups: Sequence[Any]
) -> tuple[dict[str, int], float]:
    """The position-only explanation that reads the clip's label (its cause kind, so what the caption says) and
    names the best frame for that label: ({label: frame}, hit rate over all clips). For instance "the last frame if
    the caption says the road bends, else frame 4". An upper bound for rules that use the caption and position and
    nothing the clip shows.

    Raises:
        ValueError: as `best_fixed_frame`, or when groups has not one label per clip.
    """
    if len(groups) != len(cause_frames):
        raise ValueError(f"best_fixed_frame_by_group: groups has {len(groups)} labels for {len(cause_frames)} clips.")
    labels = [str(g) for g in groups]
    frames, hits = {}, 0.0
    for label in sorted(set(labels)):
        members = [cause for cause, other in zip(cause_frames, labels, strict=True) if other == label]
        frames[label], rate = best_fixed_frame(members, num_frames)
        hits += rate * len(members)
    return frames, hits / len(cause_frames)


def _check_cause_frames(caller: str, cause_frames: Sequence[Sequence[int]], num_frames: int) -> None:
    """Raise a ValueError naming ``cause_frames[i]`` when a clip has no cause frame or one outside [0, T)."""
    for index, cause in enumerate(cause_frames):
        if not len(cause):
            raise ValueError(f"{caller}: cause_frames[{index}] has no cause frame; leave clips without a cause out.")
        if min(cause) < 0 or max(cause) >= num_frames:
            raise ValueError(f"{caller}: cause_frames[{index}] = {list(cause)} has frames outside [0, {num_frames}) "
                             f"(the clips' frame count).")


def _check_frame_count(truth: dict[str, Any], frames: int) -> None:
    """Raise a ValueError when the ground truth's frame indices cannot refer to the T = `frames` frames the model
    sees: the clip has another frame count (``num_frames``, written since the field exists) or a cause frame >= T."""
    clip_frames = truth.get("num_frames")
    last_cause = max(truth["cause_frames"])
    if (clip_frames is not None and clip_frames != frames) or last_cause >= frames:
        held = (f"{clip_frames} frames" if clip_frames is not None and clip_frames != frames
                else f"a cause in frame {last_cause}")
        raise ValueError(
            f"clip_grounding: the clip's ground truth has {held} but pixel_values_videos has {frames} frames: sample "
            "every frame of the clip (the video processor's num_frames equal to the clip's frame count), so that the "
            "cause frames and boxes refer to the frames the model sees."
        )


def _has_pairs(labels: Sequence[Any]) -> bool:
    """Whether some label is shared by 2 or more clips."""
    return len(set(map(str, labels))) < len(labels)


def summarize_grounding(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Hit rates with 95% Wilson intervals and chance rates per method, and the mean deletion drops, over clips.

    Temporal entries also carry ``position_chance`` (`position_matched_chance`) and ``position_p``
    (`position_permutation_p`) when the records hold frame scores, and, when they hold the cause ``kind``,
    ``kind_position_chance`` / ``kind_position_p`` (the same with rankings paired only within a kind); the summary
    ``fixed_frame`` (`best_fixed_frame`) and ``fixed_frame_by_kind`` (`best_fixed_frame_by_group`): what position
    alone, and position chosen from the caption, score on these clips. With a ``kind`` in every record, temporal
    entries carry ``by_kind`` ({kind: {hit_rate, chance, n}}) and the deletion entry ``cause_beats_other_by_kind``:
    a method that works for some causes and fails for others shows it there, not in the mean. With Shapley frame
    scores in every record: ``video_dependence`` (mean nats of `video_dependence`, the share of clips at or above
    ``VIDEO_DEPENDENCE_NATS``, per kind) and ``video_dependent``, this whole summary (controls included) over the
    clips whose cause words need the video: where an explanation of those words has something to find."""
    return _summarize(records, with_subset=True)


def _summarize(records: Sequence[dict[str, Any]], with_subset: bool) -> dict[str, Any]:
    """`summarize_grounding`; ``with_subset``: add ``video_dependence`` and the ``video_dependent`` summary."""
    records = [r for r in records if r is not None]
    summary: dict[str, Any] = {"num_clips": len(records)}
    if not records:
        return summary
    for method in METHODS:
        for game in ("temporal", "spatial"):
            hits = [r[f"{method}_{game}"] for r in records if f"{method}_{game}" in r]
            if not hits:
                continue
            chance_key = "temporal_chance" if game == "temporal" else f"{method}_spatial_chance"
            chance = float(np.mean([r[chance_key] for r in records if f"{method}_{game}" in r]))
            total = float(np.sum(hits))
            summary[f"{method}_{game}"] = {
                "hit_rate": total / len(hits),
                "ci95": wilson_interval(total, len(hits)),
                "chance": chance,
                "n": len(hits),
            }
            scored = [r for r in records if f"{method}_frame_scores" in r]
            if game == "temporal" and len(scored) >= 2 and len(scored) == len(hits):
                rankings, causes = [r[f"{method}_frame_scores"] for r in scored], [r["cause_frames"] for r in scored]
                hits = _swapped_hits("summarize_grounding", rankings, causes)  # (n, n), shared by the controls
                entry = summary[f"{method}_{game}"]
                entry["position_chance"] = _off_diagonal_mean(hits)
                entry["position_p"] = _permutation_p(hits, POSITION_PERMUTATIONS, seed=0)
                kinds = [r.get("kind") for r in scored]
                if None not in kinds and _has_pairs(kinds):  # the same, paired only within a cause kind
                    entry["kind_position_chance"] = _off_diagonal_mean(hits, _same_group("summarize_grounding", kinds, len(kinds)))
                    entry["kind_position_p"] = _permutation_p(hits, POSITION_PERMUTATIONS, seed=0, groups=kinds)
            if game == "temporal" and all("kind" in r for r in records):
                summary[f"{method}_{game}"]["by_kind"] = _rates_by_kind(
                    [r for r in records if f"{method}_{game}" in r], f"{method}_{game}", chance_key)
    dependence = [video_dependence(r) for r in records]
    if with_subset and None not in dependence:
        summary["video_dependence"] = {
            "nats": float(np.mean(dependence)),
            "share_needing_video": float(np.mean([d >= VIDEO_DEPENDENCE_NATS for d in dependence])),
            "n": len(records),
        }
        if all("kind" in r for r in records):
            summary["video_dependence"]["nats_by_kind"] = _mean_by_kind(records, dependence)
        needing = [r for r, d in zip(records, dependence, strict=True) if d >= VIDEO_DEPENDENCE_NATS]
        summary["video_dependent"] = _summarize(needing, with_subset=False)
    with_frames = [r for r in records if "cause_frames" in r and "attention_frame_scores" in r]
    if with_frames:
        frame, rate = best_fixed_frame([r["cause_frames"] for r in with_frames],
                                       len(with_frames[0]["attention_frame_scores"]))
        summary["fixed_frame"] = {"frame": frame, "hit_rate": rate, "n": len(with_frames)}
        kinds = [r.get("kind") for r in with_frames]
        if None not in kinds:
            frames, rate = best_fixed_frame_by_group([r["cause_frames"] for r in with_frames],
                                                     len(with_frames[0]["attention_frame_scores"]), kinds)
            summary["fixed_frame_by_kind"] = {"frames": frames, "hit_rate": rate, "n": len(with_frames)}
    deletions = [r for r in records if "drop_cause" in r]
    if deletions:
        summary["deletion"] = {
            "drop_cause": float(np.mean([r["drop_cause"] for r in deletions])),
            "drop_other": float(np.mean([r["drop_other"] for r in deletions])),
            "cause_beats_other": float(np.mean([r["drop_cause"] > r["drop_other"] for r in deletions])),
            "n": len(deletions),
        }
        if all("kind" in r for r in deletions):
            summary["deletion"]["cause_beats_other_by_kind"] = _mean_by_kind(
                deletions, [r["drop_cause"] > r["drop_other"] for r in deletions])
    return summary


def video_dependence(record: dict[str, Any]) -> float | None:
    """How much the video makes the clip's cause words more likely (nats): log p(cause words | video) minus
    log p(cause words | every frame flat), teacher forced with the reference's earlier words. It is the sum of the
    record's exact Shapley values (their efficiency property, Shapley 1953: the values add up to v(all) - v(none));
    None when the record has none.

    Near 0 means the model names the cause without looking (the caption's action words already tell it which cause
    it is): no explanation of those words can point at the cause then, however faithful. The flat frames are unlike
    any training clip, so a large value says the model needs *some* video, not that it needs the cause frames.

    Raises:
        ValueError: when the scores are not one value per frame (1-D) or not all finite.
    """
    scores = record.get("shapley_frame_scores")
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not scores.size or not np.isfinite(scores).all():
        raise ValueError(f"video_dependence: shapley_frame_scores must be one finite value per frame, got {scores.tolist()}")
    return float(scores.sum())


def _mean_by_kind(records: Sequence[dict[str, Any]], values: Sequence[float]) -> dict[str, float]:
    """{cause kind: mean of ``values`` (one per record) over the records of that kind}."""
    kinds = [r["kind"] for r in records]
    return {kind: float(np.mean([v for v, k in zip(values, kinds, strict=True) if k == kind])) for kind in sorted(set(kinds))}


def _rates_by_kind(records: Sequence[dict[str, Any]], hit_key: str, chance_key: str) -> dict[str, dict[str, float]]:
    """Per cause kind: the mean of ``record[hit_key]`` (hit rate), of ``record[chance_key]`` (chance) and the count."""
    hits = _mean_by_kind(records, [r[hit_key] for r in records])
    chances = _mean_by_kind(records, [r[chance_key] for r in records])
    counts = {kind: sum(r["kind"] == kind for r in records) for kind in hits}
    return {kind: {"hit_rate": hits[kind], "chance": chances[kind], "n": counts[kind]} for kind in hits}


def evaluate_grounding(
    model: Any, processor: Any, dataset: Any, ground_truth: dict[str, dict], *, deletion: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Grounding of the reference captions (teacher forced) of every clip of ``dataset`` (a ``load_bddx`` split
    with ``target="action_justification"``) that has a cause in ``ground_truth`` (``read_ground_truth``).

    Explaining the reference rather than the generated caption measures where the model looks when it says the true
    cause, on every clip; a generated caption may name another cause or none.

    Returns (per-clip records, :func:`summarize_grounding` of them).

    Raises:
        ValueError: when ``dataset`` is empty, no clip of it is in ``ground_truth``, or a clip's caption is not its
            ground truth's action and justification (ground truth read from another folder or seed, or another
            ``target``): the clips would be scored against another clip's cause frames.
        TypeError: when ``ground_truth`` is not the ``{video_id: record}`` dict of ``read_ground_truth`` (a folder
            path, a list of records).
    """
    from .data.collator import VideoCaptionCollator

    if not isinstance(ground_truth, dict):
        raise TypeError(f"evaluate_grounding: ground_truth must be the {{video_id: record}} dict that "
                        f"read_ground_truth(folder) returns, got {type(ground_truth).__name__}; pass "
                        "read_ground_truth(folder), not the folder or a list of records.")
    if not len(dataset):
        raise ValueError("evaluate_grounding: the dataset holds no clips; pass a split of load_bddx(folder) with clips.")

    collator = VideoCaptionCollator(processor, caption_column="__none__")
    tokenizer = processor.tokenizer
    records, matched = [], 0
    for row in dataset:
        truth = ground_truth.get(row["video_id"])
        if truth is None:
            continue
        matched += 1
        _check_caption(row, truth)
        if not truth["cause_frames"]:
            continue
        pixels = collator([row])["pixel_values_videos"]  # (1, T, 3, H, W)
        ids = [i for i in processor.tokenize_captions(row["caption"])[0] if i != -100]
        tokens = tokenizer.convert_ids_to_tokens(ids)
        record = clip_grounding(model, pixels, ids, tokens, truth, deletion=deletion)
        if record is None:
            logger.warning("grounding: %s names no cause word of %s", row["caption"], truth["cause_words"])
            continue
        records.append({"video_id": row["video_id"], "kind": truth["kind"], **record})
    if not matched:
        raise ValueError("evaluate_grounding: no clip of the dataset is in ground_truth; read both from the same "
                         "folder (load_bddx(folder) and read_ground_truth(folder)).")
    return records, summarize_grounding(records)


def _normalized(caption: str) -> str:
    return " ".join(caption.lower().replace(".", " ").replace(",", " ").split())


def _check_caption(row: dict[str, Any], truth: dict[str, Any]) -> None:
    """The dataset's caption must be the ground truth's "<action> <justification>" (case and punctuation aside)."""
    expected = f"{truth['action']} {truth['justification']}"
    if _normalized(row["caption"]) != _normalized(expected):
        raise ValueError(
            f"evaluate_grounding: clip {row['video_id']!r} has the caption {row['caption']!r} but its ground truth says "
            f"{expected!r}: read the ground truth from the dataset's own folder (read_ground_truth(folder)) and load the "
            "split with target='action_justification'."
        )


def plot_grounding(
    frames: np.ndarray, maps: TokenMaps, truth: dict[str, Any], path: str | None = None, *, title: str = ""
) -> Any:
    """Figure: the frames, each method's heatmap over them (one row per method that has one), the true cause box
    (green) on every cause frame, and each method's per-frame score above its row (a star on its top frame); below,
    the temporal-only methods (occlusion, both Shapley values; attention and relevancy too for a pooled model) as
    bars per frame, each scaled by its largest magnitude, the cause frames shaded green and a star on each method's
    top frame.

    Args:
        frames: (T, H, W, 3) uint8, as the model saw them (`explanations.denormalize_frames`).
        maps: `token_maps` of the cause words.
        truth: the clip's ``read_ground_truth`` record (boxes in the generated frame's pixels, rescaled here).
        path: where to save a PNG; the figure is returned either way.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    methods = [m for m in METHODS if maps.heatmaps(m) is not None]
    temporal = [m for m in METHODS if maps.heatmaps(m) is None and maps.frames(m) is not None]
    count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    scale_y, scale_x = height / truth["frame_size"][0], width / truth["frame_size"][1]
    boxes = {int(t): box for t, box in truth["boxes"].items()}
    rows = len(methods) + bool(temporal)
    # at least 3.2 in wide: the temporal panel's legend title must fit a clip of one or two frames
    figure, axes = plt.subplots(rows, count, figsize=(max(1.4 * count, 3.2), 1.6 * rows + 0.4), squeeze=False)
    for row, method in enumerate(methods):
        heatmaps, scores = maps.heatmaps(method), maps.frames(method)
        top = int(np.argmax(scores))
        for t in range(count):
            ax = axes[row, t]
            ax.imshow(frames[t])
            ax.imshow(heatmaps[t] / max(float(heatmaps.max()), 1e-12), cmap="jet", alpha=0.4, vmin=0, vmax=1)
            if t in boxes:
                x0, y0, x1, y1 = boxes[t]
                ax.add_patch(Rectangle((x0 * scale_x - 0.5, y0 * scale_y - 0.5), (x1 - x0) * scale_x,
                                       (y1 - y0) * scale_y, fill=False, edgecolor="lime", linewidth=1.2))
            ax.set_title(f"{'*' if t == top else ''}{scores[t] / max(float(scores.sum()), 1e-12):.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(method, fontsize=8)
    if temporal:
        for ax in axes[-1]:
            ax.remove()
        _plot_temporal_scores(figure.add_subplot(rows, 1, rows), maps, temporal, truth["cause_frames"], count)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
        plt.close(figure)
    return figure


def _plot_temporal_scores(ax: Any, maps: TokenMaps, methods: Sequence[str], cause_frames: Sequence[int],
                          count: int) -> None:
    """Grouped bars of the temporal-only methods' per-frame scores (each / its largest magnitude) on one axis."""
    width = 0.8 / len(methods)
    for t in cause_frames:
        ax.axvspan(t - 0.45, t + 0.45, color="lime", alpha=0.15, linewidth=0)
    for i, method in enumerate(methods):
        scores = np.asarray(maps.frames(method), dtype=np.float64)
        scaled = scores / max(float(np.abs(scores).max()), 1e-12)
        x = np.arange(count) - 0.4 + width * (i + 0.5)
        bars = ax.bar(x, scaled, width=width, label=method)
        top = int(np.argmax(scores))
        ax.text(x[top], scaled[top], "*", ha="center", va="bottom", fontsize=9, color=bars.patches[0].get_facecolor())
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(count), [f"frame {t}" for t in range(count)], fontsize=7)
    ax.set_xlim(-0.5, count - 0.5)
    ax.set_ylim(-1.1, 1.25)
    ax.set_ylabel("score / max", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    # above the bars, outside the axes: inside it hid the bars of the first frames (a negative score reaches -1)
    ax.legend(fontsize=6, ncol=min(len(methods), count), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False, title="temporal only (green: cause frames)", title_fontsize=7)


__all__ = [
    "METHODS",
    "plot_grounding",
    "position_matched_chance",
    "position_permutation_p",
    "TokenMaps",
    "best_fixed_frame",
    "best_fixed_frame_by_group",
    "box_fraction",
    "scale_box",
    "cause_deletion",
    "cause_token_positions",
    "clip_grounding",
    "evaluate_grounding",
    "spatial_hit",
    "summarize_grounding",
    "temporal_hit",
    "token_maps",
    "video_dependence",
    "wilson_interval",
    "VIDEO_DEPENDENCE_NATS",
]
