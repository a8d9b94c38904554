"""Synthetic clips: files, determinism, and captions whose meaning is in the frame order (checked on decoded pixels)."""

import hashlib
import json
from collections import Counter

import av
import numpy as np
import pytest

from vidgpt2.data import load_captions_files
from vidgpt2.data.synthetic import (
    CAPTION_FAMILIES,
    COLORS,
    caption_family,
    generate_clip,
    parse_caption,
    time_reversed_caption,
    write_synthetic_dataset,
)

PALETTE = np.array(list(COLORS.values()), dtype=np.float32)
NAMES = list(COLORS)


def decode(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def color_masks(frame, min_pixels=6):
    """{colour name: mask} for palette colours covering at least min_pixels pixels (nearest colour within 45)."""
    distances = np.linalg.norm(frame[..., None, :].astype(np.float32) - PALETTE, axis=-1)  # (H, W, K)
    nearest, close = distances.argmin(-1), distances.min(-1) < 45
    masks = {NAMES[k]: close & (nearest == k) for k in range(len(NAMES))}
    return {name: mask for name, mask in masks.items() if mask.sum() >= min_pixels}


def shape_of(mask):
    """Triangle if it is much narrower at 30% than at 70% of its height, else square if its corners are filled."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    height, width = crop.shape
    widths = crop.sum(1)
    upper = widths[int(0.2 * height) : max(int(0.4 * height), int(0.2 * height) + 1)].mean()
    lower = widths[int(0.6 * height) : max(int(0.8 * height), int(0.6 * height) + 1)].mean()
    if upper < 0.7 * lower:
        return "triangle"
    k = max(1, round(0.15 * min(height, width)))
    corners = np.concatenate([c.ravel() for c in (crop[:k, :k], crop[:k, -k:], crop[-k:, :k], crop[-k:, -k:])])
    return "square" if corners.mean() > 0.5 else "circle"


def describe(frames, family):
    """What a careful observer would say about decoded frames, in the words of ``family``."""
    per_frame = [color_masks(frame) for frame in frames]

    def shape(color):  # majority over the frames showing that colour
        return Counter(shape_of(masks[color]) for masks in per_frame if color in masks).most_common(1)[0][0]

    if family == "color_change":
        (first,), (last,) = per_frame[0], per_frame[-1]
        shapes = Counter(shape_of(mask) for masks in per_frame for mask in masks.values())
        return f"the {shapes.most_common(1)[0][0]} turns from {first} to {last}"
    if family == "size_change":
        (color,) = per_frame[0]
        areas = [masks[color].sum() for masks in per_frame]
        return f"a {color} {shape(color)} {'grows' if areas[-1] > areas[0] else 'shrinks'}"
    if family == "appearance_order":
        first_seen = {}
        for t, masks in enumerate(per_frame):
            for color in masks:
                first_seen.setdefault(color, t)
        (c1, t1), (c2, t2) = sorted(first_seen.items(), key=lambda item: item[1])
        assert t1 < t2
        return f"a {c1} {shape(c1)} appears then a {c2} {shape(c2)} appears"
    if family == "motion_direction":
        (color,) = per_frame[0]
        (y0, x0), (y1, x1) = (np.argwhere(m[color]).mean(0) for m in (per_frame[0], per_frame[-1]))
        dx, dy = x1 - x0, y1 - y0
        direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        return f"a {color} {shape(color)} moves {direction}"
    raise AssertionError(family)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    paths = write_synthetic_dataset(out, num_train=24, num_validation=8, num_test=8, seed=0, progress=False)
    return out, paths


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_captions_and_decoded_frames(dataset):
    out, paths = dataset
    assert paths == {split: out / f"{split}.jsonl" for split in ("train", "validation", "test")}
    for split, count in (("train", 24), ("validation", 8), ("test", 8)):
        rows = read_rows(paths[split])
        assert len(rows) == count
        for row in rows:
            assert set(row) == {"video", "caption", "family"}
            assert row["video"].startswith(f"{split}/") and row["video"].endswith(".mp4")
            assert caption_family(row["caption"]) == row["family"]
        with av.open(str(out / rows[0]["video"])) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert stream.average_rate == 8
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert len(frames) == 8 and frames[0].shape == (64, 64, 3)


def test_families_are_balanced(dataset):
    _, paths = dataset
    assert Counter(row["family"] for row in read_rows(paths["train"])) == {f: 6 for f in CAPTION_FAMILIES}
    assert Counter(row["family"] for row in read_rows(paths["test"])) == {f: 2 for f in CAPTION_FAMILIES}


def test_splits_hold_different_clips(dataset):
    out, paths = dataset
    digests = [
        hashlib.sha256((out / row["video"]).read_bytes()).hexdigest()
        for split in paths
        for row in read_rows(paths[split])
    ]
    assert len(set(digests)) == len(digests)


def test_captions_describe_the_pixels_and_reverse_with_time(dataset):
    """The caption is what the decoded frames show; played backwards they show the time-reversed caption."""
    out, paths = dataset
    for split in paths:
        for row in read_rows(paths[split]):
            frames = decode(out / row["video"])
            caption, family = row["caption"], row["family"]
            assert describe(frames, family) == caption, row
            reversed_caption = time_reversed_caption(caption)
            assert reversed_caption != caption and caption_family(reversed_caption) == family
            assert describe(frames[::-1], family) == reversed_caption, row


def test_grows_means_the_area_increases_and_first_colour_comes_first():
    rng = np.random.default_rng(1)
    for _ in range(5):
        frames, caption = generate_clip("size_change", rng)
        parsed = parse_caption(caption)
        areas = [color_masks(frame)[parsed["color"]].sum() for frame in frames]
        increasing = all(b > a for a, b in zip(areas, areas[1:]))
        assert increasing == (parsed["change"] == "grows"), (caption, areas)
        frames, caption = generate_clip("color_change", rng)
        c1, c2 = parse_caption(caption)["colors"]
        assert list(color_masks(frames[0])) == [c1] and list(color_masks(frames[-1])) == [c2]


def test_deterministic_for_a_seed(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", 4, 2, 0, num_frames=16, size=32, seed=7, progress=False)
    b = write_synthetic_dataset(tmp_path / "b", 4, 2, 0, num_frames=16, size=32, seed=7, progress=False)
    write_synthetic_dataset(tmp_path / "c", 4, 2, 0, num_frames=16, size=32, seed=8, progress=False)
    assert set(a) == {"train", "validation"}  # no clips, no file
    assert not (tmp_path / "a" / "test.jsonl").exists()
    for split in a:
        assert a[split].read_text() == b[split].read_text()
        for row in read_rows(a[split]):
            frames = decode(tmp_path / "a" / row["video"])
            assert frames.shape == (16, 32, 32, 3)
            np.testing.assert_array_equal(frames, decode(tmp_path / "b" / row["video"]))
            assert not np.array_equal(frames, decode(tmp_path / "c" / row["video"]))


def test_loads_with_captions_loader(dataset):
    out, paths = dataset
    dsd = load_captions_files(paths["train"], paths["validation"], paths["test"], check_videos=True)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [24, 8, 8]
    row = dsd["train"][0]
    assert row["video"] == str(out / "train" / "00000.mp4")
    assert row["family"] == caption_family(row["caption"])


@pytest.mark.parametrize(
    "caption, family",
    [
        ("the square turns from red to blue", "color_change"),
        ("a green circle grows", "size_change"),
        ("A green circle shrinks.", "size_change"),
        ("a red square appears then a blue circle appears", "appearance_order"),
        ("a yellow triangle moves up", "motion_direction"),
        ("the square turns from red to red", None),
        ("a pink circle grows", None),
        ("a man is playing a guitar", None),
    ],
)
def test_caption_family(caption, family):
    assert caption_family(caption) == family


def test_time_reversed_caption():
    assert time_reversed_caption("a green circle grows") == "a green circle shrinks"
    assert time_reversed_caption("the square turns from red to blue") == "the square turns from blue to red"
    assert time_reversed_caption("a yellow square moves left") == "a yellow square moves right"
    assert (
        time_reversed_caption("a red square appears then a blue circle appears")
        == "a blue circle appears then a red square appears"
    )
    with pytest.raises(ValueError, match="not a synthetic caption"):
        time_reversed_caption("a man is playing a guitar")


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be even"):
        write_synthetic_dataset(tmp_path, 1, 0, 0, size=63, progress=False)
    with pytest.raises(ValueError, match="num_frames must be >= 4"):
        write_synthetic_dataset(tmp_path, 1, 0, 0, num_frames=2, progress=False)
    with pytest.raises(ValueError, match="family must be one of"):
        generate_clip("rotation", np.random.default_rng(0))


def test_order_outcome_separates_order_from_content():
    from vidgpt2.data import order_outcome

    assert order_outcome("a red circle grows", "a red circle grows") == "correct"
    assert order_outcome("a red circle shrinks", "a red circle grows") == "reversed"
    assert order_outcome("the square turns from blue to red", "the square turns from red to blue") == "reversed"
    assert order_outcome("a red circle grows", "the square turns from red to blue") is None  # other family
    assert order_outcome("not a synthetic caption", "a red circle grows") is None
