"""Procedural clips whose captions can only be right if the model reads the frames *in order*.

Four caption families, balanced within each split (caption -> caption of the same clip played backwards):

- ``color_change``: "the square turns from red to blue" -> "the square turns from blue to red"
- ``size_change``: "a green circle grows" -> "a green circle shrinks"
- ``appearance_order``: "a red square appears then a blue circle appears" -> the two objects swapped
  (the first object leaves as the second stays, so the reversed clip also shows one appearing after the other)
- ``motion_direction``: "a yellow triangle moves left" -> "a yellow triangle moves right"

Vocabulary: colours red, green, blue, yellow, white, purple; shapes square, circle, triangle. The two colours of a
clip always differ.

Every clip and its time-reversed copy hold the same *set* of frames (colour switch times, sizes, positions and the
appearance windows are drawn symmetrically), so a model that pools frames without order, or ignores the video,
cannot beat chance on the order-dependent word. :func:`time_reversed_caption` gives the caption of the reversed clip.

:func:`write_synthetic_dataset` writes ``<split>/<index>.mp4`` (H.264, yuv420p, 8 fps) and ``<split>.jsonl`` captions
files (``video``, ``caption``, ``family``) that :func:`vidgpt2.data.load_captions_files` reads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CAPTION_FAMILIES = ("color_change", "size_change", "appearance_order", "motion_direction")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (165, 60, 205),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
SIZE_CHANGES = ("grows", "shrinks")
FPS = 8
# One thread and no macroblock tree: with mbtree, x264 gave different bytes for the same frames on tiny (32x32) clips.
X264_OPTIONS = {"crf": "12", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}

_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "grows": "shrinks", "shrinks": "grows"}
_W = r"([a-z]+)"
_PATTERNS = {
    "color_change": re.compile(rf"^the {_W} turns from {_W} to {_W}$"),
    "size_change": re.compile(rf"^an? {_W} {_W} (grows|shrinks)$"),
    "appearance_order": re.compile(rf"^an? {_W} {_W} appears then an? {_W} {_W} appears$"),
    "motion_direction": re.compile(rf"^an? {_W} {_W} moves (left|right|up|down)$"),
}


# --------------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------------


def parse_caption(caption: str) -> dict | None:
    """Parse a synthetic caption into its family and slots, or None if it is not one (wrong words count as not one).

    >>> parse_caption("a green circle grows")
    {'family': 'size_change', 'color': 'green', 'shape': 'circle', 'change': 'grows'}
    """
    text = " ".join(caption.lower().split()).rstrip(" .")
    for family, pattern in _PATTERNS.items():
        match = pattern.match(text)
        if match is None:
            continue
        g = match.groups()
        if family == "color_change":
            parsed = {"family": family, "shape": g[0], "colors": (g[1], g[2])}
            ok = g[0] in SHAPES and g[1] in COLORS and g[2] in COLORS and g[1] != g[2]
        elif family == "size_change":
            parsed = {"family": family, "color": g[0], "shape": g[1], "change": g[2]}
            ok = g[0] in COLORS and g[1] in SHAPES
        elif family == "appearance_order":
            parsed = {"family": family, "first": (g[0], g[1]), "second": (g[2], g[3])}
            ok = g[0] in COLORS and g[2] in COLORS and g[1] in SHAPES and g[3] in SHAPES and g[0] != g[2]
        else:
            parsed = {"family": family, "color": g[0], "shape": g[1], "direction": g[2]}
            ok = g[0] in COLORS and g[1] in SHAPES
        return parsed if ok else None
    return None


def caption_family(caption: str) -> str | None:
    """The family (one of :data:`CAPTION_FAMILIES`) a synthetic caption belongs to, or None."""
    parsed = parse_caption(caption)
    return parsed["family"] if parsed else None


def format_caption(parsed: dict) -> str:
    """Inverse of :func:`parse_caption`."""
    family = parsed["family"]
    if family == "color_change":
        return f"the {parsed['shape']} turns from {parsed['colors'][0]} to {parsed['colors'][1]}"
    if family == "size_change":
        return f"a {parsed['color']} {parsed['shape']} {parsed['change']}"
    if family == "appearance_order":
        (c1, s1), (c2, s2) = parsed["first"], parsed["second"]
        return f"a {c1} {s1} appears then a {c2} {s2} appears"
    if family == "motion_direction":
        return f"a {parsed['color']} {parsed['shape']} moves {parsed['direction']}"
    raise ValueError(f"format_caption: unknown family {family!r}; expected one of {CAPTION_FAMILIES}")


def time_reversed_caption(caption: str) -> str:
    """The caption of the same clip played backwards ("grows" <-> "shrinks", "left" <-> "right", ...)."""
    parsed = parse_caption(caption)
    if parsed is None:
        raise ValueError(f"time_reversed_caption: not a synthetic caption: {caption!r}")
    family = parsed["family"]
    if family == "color_change":
        parsed["colors"] = parsed["colors"][::-1]
    elif family == "size_change":
        parsed["change"] = _OPPOSITE[parsed["change"]]
    elif family == "appearance_order":
        parsed["first"], parsed["second"] = parsed["second"], parsed["first"]
    else:
        parsed["direction"] = _OPPOSITE[parsed["direction"]]
    return format_caption(parsed)


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------



def order_outcome(prediction: str, reference: str) -> str | None:
    """Does `prediction` get the order-dependent part of `reference` right ("correct"), say what the time-reversed
    clip shows ("reversed"), or neither (None: other family, unparsable, other colours/objects)?

    color_change: the two colours in order; size_change: grows/shrinks; appearance_order: which object first;
    motion_direction: the direction (the opposite one is "reversed", a perpendicular one is None).
    An order-blind model cannot do better than 50% correct among the decided cases.
    """
    pred, ref = parse_caption(prediction), parse_caption(reference)
    if pred is None or ref is None or pred["family"] != ref["family"]:
        return None
    reversed_ref = parse_caption(time_reversed_caption(reference))
    slot = {
        "color_change": lambda c: c["colors"],
        "size_change": lambda c: c["change"],
        "appearance_order": lambda c: (c["first"], c["second"]),
        "motion_direction": lambda c: c["direction"],
    }[ref["family"]]
    if slot(pred) == slot(ref):
        return "correct"
    if slot(pred) == slot(reversed_ref):
        return "reversed"
    return None

def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """(H, W) bool mask of a shape centred at (cx, cy) inside the square of half-side r."""
    ys, xs = np.ogrid[:size, :size]
    xs = xs + 0.5
    ys = ys + 0.5
    if shape == "square":
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "triangle":  # apex up, base 2r wide
        return (ys >= cy - r) & (ys <= cy + r) & (np.abs(xs - cx) <= (ys - cy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _background(rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
    """(T, H, W, 3) dark, slightly tinted, static noise: differs per clip, never close to an object colour."""
    base = rng.uniform(20, 60) + rng.uniform(-8, 8, size=3)
    noise = rng.normal(0, 5, size=(size, size, 3))
    frame = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.repeat(frame[None], num_frames, axis=0)


def _choice(rng: np.random.Generator, options, k: int = 1, replace: bool = False):
    picked = rng.choice(len(options), size=k, replace=replace)
    return [options[i] for i in picked]


def _centre(rng: np.random.Generator, r: float, size: int) -> float:
    return float(rng.uniform(r + 1, size - r - 1))


def generate_clip(family: str, rng: np.random.Generator, num_frames: int = 8, size: int = 64) -> tuple[np.ndarray, str]:
    """Render one clip of ``family``: frames ``(num_frames, size, size, 3)`` uint8 RGB and its caption."""
    if family not in CAPTION_FAMILIES:
        raise ValueError(f"generate_clip: family must be one of {CAPTION_FAMILIES}, got {family!r}")
    if num_frames < 4:
        raise ValueError(f"generate_clip: num_frames must be >= 4 to show an order, got {num_frames}")
    T, S = num_frames, size
    colors = list(COLORS)
    frames = _background(rng, T, S)

    if family == "color_change":
        (shape,) = _choice(rng, SHAPES)
        c1, c2 = _choice(rng, colors, k=2)
        r = rng.uniform(0.15, 0.25) * S
        mask = _shape_mask(shape, _centre(rng, r, S), _centre(rng, r, S), r, S)
        margin = math.ceil(T / 4)
        switch = int(rng.integers(margin, T - margin + 1))  # symmetric: T - switch has the same range
        for t in range(T):
            frames[t][mask] = COLORS[c1 if t < switch else c2]
        return frames, f"the {shape} turns from {c1} to {c2}"

    if family == "size_change":
        (shape,), (color,) = _choice(rng, SHAPES), _choice(rng, colors)
        small, big = rng.uniform(0.07, 0.12) * S, rng.uniform(0.25, 0.33) * S
        change = SIZE_CHANGES[int(rng.integers(2))]
        r0, r1 = (small, big) if change == "grows" else (big, small)
        cx, cy = _centre(rng, big, S), _centre(rng, big, S)
        for t in range(T):
            r = r0 + (r1 - r0) * t / (T - 1)
            frames[t][_shape_mask(shape, cx, cy, r, S)] = COLORS[color]
        return frames, f"a {color} {shape} {change}"

    if family == "appearance_order":
        s1, s2 = _choice(rng, SHAPES, k=2, replace=True)
        c1, c2 = _choice(rng, colors, k=2)
        r1, r2 = rng.uniform(0.12, 0.18, size=2) * S
        while True:  # two objects whose bounding squares do not touch
            x1, y1, x2, y2 = _centre(rng, r1, S), _centre(rng, r1, S), _centre(rng, r2, S), _centre(rng, r2, S)
            if max(abs(x1 - x2), abs(y1 - y2)) > r1 + r2 + 2:
                break
        mask1, mask2 = _shape_mask(s1, x1, y1, r1, S), _shape_mask(s2, x2, y2, r2, S)
        # Empty lead-in and lead-out of e frames; n frames with only the first, then both, then n with only the second.
        e = max(1, T // 8)
        inner = T - 2 * e
        n = int(rng.integers(1, inner // 2 + 1))
        for t in range(T):
            if e <= t < T - e - n:
                frames[t][mask1] = COLORS[c1]
            if e + n <= t < T - e:
                frames[t][mask2] = COLORS[c2]
        return frames, f"a {c1} {s1} appears then a {c2} {s2} appears"

    (shape,), (color,) = _choice(rng, SHAPES), _choice(rng, colors)
    direction = DIRECTIONS[int(rng.integers(4))]
    r = rng.uniform(0.10, 0.15) * S
    lo, hi = r + 1, S - r - 1
    while True:  # travel at least a third of the frame
        p, q = sorted(rng.uniform(lo, hi, size=2))
        if q - p >= S / 3:
            break
    a, b = (q, p) if direction in ("left", "up") else (p, q)
    other = _centre(rng, r, S)
    for t in range(T):
        pos = a + (b - a) * t / (T - 1)
        cx, cy = (pos, other) if direction in ("left", "right") else (other, pos)
        frames[t][_shape_mask(shape, cx, cy, r, S)] = COLORS[color]
    return frames, f"a {color} {shape} moves {direction}"


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 -> planar yuv420p ``(H * 3 // 2, W)`` (BT.601, limited range, 2x2 chroma means).

    Done here rather than by swscale so the encoder's input is exactly a function of the pixels.
    """
    height, width = frame.shape[:2]
    rgb = frame.astype(np.float64)
    y = 16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255
    cb = 128 + rgb @ np.array([-37.797, -74.203, 112.0]) / 255
    cr = 128 + rgb @ np.array([112.0, -93.786, -18.214]) / 255

    def half(plane: np.ndarray) -> np.ndarray:  # (H, W) -> (H/2, W/2)
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    planes = [y.ravel(), half(cb).ravel(), half(cr).ravel()]
    return np.clip(np.rint(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: int = FPS, container: str = "mp4") -> None:
    """Encode ``frames`` ``(T, H, W, 3)`` uint8 RGB as H.264 (yuv420p) with exactly T frames; deterministic.

    ``container`` is the muxer: "mp4" (default) or "mov" (QuickTime, as BDD-X's videos are)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_clip: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"write_clip: yuv420p needs even sizes, got {width}x{height}")
    if container not in ("mp4", "mov"):
        raise ValueError(f"write_clip: container must be 'mp4' or 'mov', got {container!r}")
    with av.open(str(path), mode="w", format=container) as output:
        stream = output.add_stream("libx264", rate=fps, options=X264_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for t, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")
            frame.pts = t
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))


def refuse_a_folder_with_files(caller: str, out_dir: Path, overwrite: bool) -> None:
    """The synthetic writers use fixed file names: into a folder that already holds files (a real data set, an
    earlier run) they would replace them without a word. Empty subfolders do not count.

    Raises:
        FileExistsError: when ``out_dir`` holds a file and ``overwrite`` is False.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{caller}: {out_dir} is a file, not a folder; choose a folder for the clips.")
    if overwrite:
        return
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    if files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise FileExistsError(
            f"{caller}: {out_dir} already holds files ({shown}). Choose an empty or new folder, or pass "
            "overwrite=True (it replaces the files this writer writes and deletes an earlier run's clips; other "
            "files stay)."
        )


def check_seed(caller: str, seed: int) -> None:
    """Raise a ValueError naming ``caller`` unless ``seed`` is an int >= 0 (what numpy's generators accept)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{caller}: seed must be an int >= 0 (numpy seeds), got {seed!r}")


def remove_stale_files(caller: str, out_dir: Path, written: set[Path], patterns: tuple[str, ...]) -> None:
    """After a run with ``overwrite=True``: delete the files named like this writer's (``patterns``, globs under
    ``out_dir``) that this run did not write, so that clips, captions files or splits of an earlier, larger run
    cannot be read as part of the new one. Files with other names stay."""
    written = {path.resolve() for path in written}
    stale = sorted({path for pattern in patterns for path in out_dir.glob(pattern)
                    if path.is_file() and path.resolve() not in written})
    for path in stale:
        path.unlink()
    if stale:
        logger.info("%s: removed %d files an earlier run left in %s (%s, ...)", caller, len(stale), out_dir,
                    stale[0].relative_to(out_dir))


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 256,
    num_validation: int = 32,
    num_test: int = 32,
    num_frames: int = 8,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<split>/<index>.mp4`` clips and ``<split>.jsonl`` captions files into ``out_dir``.

    Families are balanced within each split (counts differ by at most one) and shuffled. Everything is a function
    of ``seed``; each split draws from its own stream, so the splits hold different clips.

    Returns ``{split: captions file}`` for the splits with at least one clip, ready for
    ``load_captions_files(train_file=paths["train"], ...)``.

    Raises:
        ValueError: for negative counts, an odd or too small ``size``, or fewer than 4 frames.
        FileExistsError: when ``out_dir`` already holds files and ``overwrite`` is False. With ``overwrite=True``
            the files this function writes are replaced, and an earlier run's clips (``<split>/<5 digits>.mp4``)
            and captions files that this run does not write are deleted (a split written empty leaves no
            ``<split>.jsonl`` behind); other files stay.
    """
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"write_synthetic_dataset: num_{name} must be >= 0, got {value}")
    if size < 16 or size % 2:
        raise ValueError(f"write_synthetic_dataset: size must be even and >= 16 (yuv420p), got {size}")
    if num_frames < 4:
        raise ValueError(f"write_synthetic_dataset: num_frames must be >= 4 to show an order, got {num_frames}")
    check_seed("write_synthetic_dataset", seed)
    out_dir = Path(out_dir)
    refuse_a_folder_with_files("write_synthetic_dataset", out_dir, overwrite)
    paths: dict[str, Path] = {}
    written: set[Path] = set()
    with tqdm(total=sum(counts.values()), desc="synthetic clips", unit="clip", disable=not progress) as bar:
        for split_index, (split, count) in enumerate(counts.items()):
            if count == 0:
                continue
            rng = np.random.default_rng([seed, split_index])
            families = [CAPTION_FAMILIES[i % len(CAPTION_FAMILIES)] for i in range(count)]
            families = [families[i] for i in rng.permutation(count)]
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            rows = []
            for i, family in enumerate(families):
                frames, caption = generate_clip(family, rng, num_frames, size)
                relative = f"{split}/{i:05d}.mp4"
                write_clip(out_dir / relative, frames)
                written.add(out_dir / relative)
                rows.append({"video": relative, "caption": caption, "family": family})
                bar.update()
            paths[split] = out_dir / f"{split}.jsonl"
            with open(paths[split], "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            written.add(paths[split])
    if overwrite:  # an earlier run's clips and captions files (a split this run leaves empty) must not stay
        remove_stale_files("write_synthetic_dataset", out_dir, written,
                           tuple(f"{split}/[0-9][0-9][0-9][0-9][0-9].mp4" for split in counts)
                           + tuple(f"{split}.jsonl" for split in counts))
    logger.info("wrote %s synthetic clips to %s", {s: counts[s] for s in paths}, out_dir)
    return paths
