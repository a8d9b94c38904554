"""Synthetic driving clips (issue 12): determinism, boxes on the cause's pixels, counterfactual scenes, BDD-X files."""

import hashlib
import json
from itertools import combinations

import numpy as np
import pytest

from vidgpt2.data import load_bddx
from vidgpt2.data.bddx import split_action_justification
from vidgpt2.data.synthetic_driving import (
    BEND_VISIBLE_SHARE,
    CAUSE_WORDS,
    DRIVING_KINDS,
    PERSISTENT_KINDS,
    SCENE_OF,
    SCENES,
    VISIBLE_PIXELS,
    generate_driving_clip,
    read_ground_truth,
    write_driving_dataset,
)
from vidgpt2.video_io import read_video


def clip(kind, seed=0, with_cause=True, **kwargs):
    return generate_driving_clip(kind, np.random.default_rng(seed), with_cause, **kwargs)


def test_same_seed_same_clip_and_other_seed_other_clip():
    for kind in DRIVING_KINDS:
        a, b, c = clip(kind, 1), clip(kind, 1), clip(kind, 2)
        assert np.array_equal(a.frames, b.frames) and a.boxes == b.boxes and a.caption == b.caption
        assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("kind", DRIVING_KINDS)
def test_without_the_cause_the_same_scene_leads_to_another_action(kind):
    for seed in range(4):
        with_cause, without = clip(kind, seed, True), clip(kind, seed, False)
        assert with_cause.action != without.action
        assert with_cause.justification != without.justification
        assert without.cause_frames == [] and without.boxes == {} and without.cause_words == ()
        # the same scene: identical until the cause starts (the light shows its colour before switching); the bend
        # lies in the road from the start, so far off it may change a few pixels in the haze, fewer than count as
        # visible (BEND_VISIBLE_SHARE of the frame)
        start = min(with_cause.cause_onset, with_cause.cause_frames[0])
        if kind == "road_bend":
            changed = np.abs(with_cause.frames[:start].astype(int) - without.frames[:start]).max(-1) > 12
            assert (changed.sum((1, 2)) < BEND_VISIBLE_SHARE * 64 * 64).all()
        else:
            assert np.array_equal(with_cause.frames[:start], without.frames[:start])
        assert not np.array_equal(with_cause.frames, without.frames)


@pytest.mark.parametrize("kind", DRIVING_KINDS)
def test_cause_boxes_are_where_the_cause_pixels_are(kind):
    """Inside the box the clip with the cause differs from the clip without it (the green light's and the speed
    sign's, which come with the same post, from each other's); the cause frames start no earlier than the onset,
    and outside cause frames there is no box."""
    partner = {"green_light": "speed_sign", "speed_sign": "green_light"}
    for seed in range(6):
        with_cause = clip(kind, seed, True)
        without = clip(partner[kind], seed) if kind in partner else clip(kind, seed, False)
        assert with_cause.cause_frames, f"{kind} seed {seed}: cause never visible"
        assert min(with_cause.cause_frames) >= with_cause.cause_onset
        assert sorted(with_cause.boxes) == with_cause.cause_frames
        for t in with_cause.cause_frames:
            x0, y0, x1, y1 = with_cause.boxes[t]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            if kind in ("red_light", "green_light", "speed_sign", "pedestrian", "obstacle", "parked_car", "road_closed"):
                # the same camera pose on both versions up to the onset and the object is drawn only with the cause
                # (the light changes colour): the box holds the pixels that differ, on the first cause frame
                assert with_cause.cause_frames[0] == with_cause.cause_onset
                if t != with_cause.cause_onset:
                    continue
                diff = np.abs(with_cause.frames[t].astype(int) - without.frames[t].astype(int)).sum(-1) > 60
                assert diff.any()
                inside = diff[y0:y1, x0:x1].sum()
                assert inside / diff.sum() > 0.9, f"{kind} seed {seed} frame {t}: only {inside}/{diff.sum()} in box"
                assert inside / ((x1 - x0) * (y1 - y0)) > 0.5


def test_cause_timing_does_not_give_the_cause_away():
    """Version 2 of the generator started every cause in frames 4-6 and kept it in view to the end, so "always the
    last frame" hit every clip of the temporal pointing game (3x the chance rate). Now no frame shows the cause in
    more than about 3 in 4 clips, the chance rate (share of cause frames) stays below a half, and every cause but
    the bend leaves the view again before the end in most clips (a red light in about half: when the ego stops for
    it)."""
    per_frame, shares, ends_in_view = np.zeros(8), [], {kind: 0 for kind in DRIVING_KINDS}
    n = 30
    for kind in DRIVING_KINDS:
        for seed in range(n):
            c = clip(kind, 100 + seed)
            per_frame[c.cause_frames] += 1
            shares.append(len(c.cause_frames) / 8)
            ends_in_view[kind] += c.cause_frames[-1] == 7
            assert c.cause_frames == list(range(c.cause_frames[0], c.cause_frames[-1] + 1))  # one visible stretch
    per_frame /= n * len(DRIVING_KINDS)
    assert per_frame.max() <= 0.8, per_frame  # version 2: 1.00 at frame 7 (version 4: 0.75 at frame 4; a stopped
    # ego keeps the red light in view to the end)
    assert 0.25 < np.mean(shares) < 0.45, np.mean(shares)  # 2x chance stays reachable (version 5: 0.41)
    for kind in DRIVING_KINDS:
        if kind in PERSISTENT_KINDS:
            assert ends_in_view[kind] == n
        elif kind == "red_light":  # an ego that stops for it keeps its lower part in view: the clips where it stops
            stopped = sum(clip(kind, 100 + seed).action == "the car stops" for seed in range(n))
            assert ends_in_view[kind] <= stopped < n, (ends_in_view[kind], stopped)
        else:
            assert ends_in_view[kind] < n / 2, (kind, ends_in_view[kind])


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_the_causes_of_a_scene_differ_only_on_their_cause_frames(scene):
    """Version 3 gave each cause its own action and scene (a pedestrian meant "stops", a car ahead was in view from
    the first frame), and the trained models named the cause from the caption's action words: under 0.2 nats of
    its log-prob came from the video, so no explanation of those words could point at the cause. Version 4 shared
    one scene for a red light, a pedestrian and a braking car only; the other causes still had their own action, and
    explanations pointed at them no better than a fixed frame (1.55x chance against 2.3x in the shared scene). Now
    every cause shares its scene and action with another: outside their cause frames the clips are the same, up to
    fewer than VISIBLE_PIXELS pixels of a light leaving the view (a bend far off in the haze: fewer than
    BEND_VISIBLE_SHARE of the frame, as against the straight road). Each is also compared with its clip without the
    cause up to the onset (the braking car's onset frame is never a cause frame, so no pair covers it)."""
    kinds = SCENES[scene]
    assert len(kinds) >= 2 and all(SCENE_OF[kind] == scene for kind in kinds)
    actions = set()
    for seed in range(12):
        with_cause = [clip(kind, seed) for kind in kinds]
        without = [clip(kind, seed, with_cause=False) for kind in kinds]
        assert len({c.action for c in with_cause}) == 1 and len({c.cause_onset for c in with_cause}) == 1
        assert len({c.justification for c in with_cause}) == len(kinds)
        actions.add(with_cause[0].action)
        for other in without[1:]:
            assert np.array_equal(other.frames, without[0].frames) and other.caption == without[0].caption
        for t in range(8):
            for a, b in combinations([c for c in with_cause if t not in c.cause_frames], 2):
                differ = np.abs(a.frames[t].astype(int) - b.frames[t]).max(-1) > 25  # (64, 64)
                allowed = BEND_VISIBLE_SHARE * 64 * 64 if "road_bend" in (a.kind, b.kind) else VISIBLE_PIXELS
                assert differ.sum() < allowed, (seed, t, a.kind, b.kind, int(differ.sum()))
        for c, plain in zip(with_cause, without, strict=True):  # the ego reacts from the frame after the onset
            for t in range(c.cause_onset + 1):
                if t not in c.cause_frames and c.kind != "road_bend":
                    assert np.array_equal(c.frames[t], plain.frames[t]), (seed, t, c.kind)
    # the action is the scene's, drawn for the scene (stop or slow down; the direction), whichever cause it has
    expected = {
        "stop": {"the car stops", "the car slows down"},
        "accelerate": {"the car accelerates"},
        "change_lanes": {"the car changes lanes to the left", "the car changes lanes to the right"},
        "turn": {"the car turns left", "the car turns right"},
    }[scene]
    assert actions == expected
    # the justifications part at a word that names the cause: the grounding explains those words, so the token
    # that needs the video must be one of them ("because a pedestrian" parted at "a": the cause words then carried
    # 0.9 nats from the video, against 3-9 for the light's and the car's)
    words = [clip(kind, 0).justification.split() for kind in kinds]
    first = next(i for i, column in enumerate(zip(*words, strict=False)) if len(set(column)) > 1)
    assert all(w[first] in CAUSE_WORDS[kind] for w, kind in zip(words, kinds, strict=True)), words


# the flat colour each cause is drawn in, and the frames its colour must stay out of (nothing else has it)
_CAUSE_COLOURS = {
    "red_light": (240, 30, 30),
    "green_light": (40, 230, 80),
    "speed_sign": (30, 80, 230),
    "pedestrian": (200, 60, 160),
    "obstacle": (240, 130, 20),
    "parked_car": (40, 60, 150),
    "road_closed": (255, 235, 0),
}


@pytest.mark.parametrize("kind", sorted(_CAUSE_COLOURS))
def test_the_cause_colour_shows_on_the_cause_frames_inside_the_box_and_nowhere_else(kind):
    """Before the onset the cause's colour is nowhere (a red light's clip shows green before); on every cause frame
    all of it is inside the box; after the last cause frame (the light gone above the top edge, the pedestrian off
    the side, the obstacle passed) fewer than VISIBLE_PIXELS pixels of it are left. A one-row strip of the light at
    the top edge used to stay unlabelled (a rule that asked for 2 x 2 pixels), a cue outside the cause frames."""
    colour = np.array(_CAUSE_COLOURS[kind])
    left_view = 0
    for size in (64, 96):
        for seed in range(12):
            c = clip(kind, seed, size=size)
            for t in range(8):
                pixels = np.abs(c.frames[t].astype(int) - colour).max(-1) < 25  # (S, S)
                if t < c.cause_onset:
                    assert not pixels.any(), (size, seed, t)
                elif t in c.boxes:
                    x0, y0, x1, y1 = c.boxes[t]
                    assert pixels[y0:y1, x0:x1].sum() == pixels.sum() > 0, (size, seed, t)
                else:
                    assert t > c.cause_frames[-1], (size, seed, t, c.cause_frames)
                    assert pixels.sum() < VISIBLE_PIXELS, (size, seed, t, int(pixels.sum()))
            left_view += c.cause_frames[-1] < 7
    assert left_view > 0 or kind in PERSISTENT_KINDS  # how often: test_cause_timing_does_not_give_the_cause_away


def test_the_car_ahead_grows_while_it_brakes_then_pulls_away_to_its_old_distance():
    """The braking shows as growth (no brake lights), and only while it lasts: the car ahead then pulls away to the
    distance it kept before, so the frames after the cause show nothing a frame before the onset did not."""
    def extent(c, t):  # (rows, columns) of the lead car's blue pixels
        blue = np.abs(c.frames[t].astype(int) - np.array([40, 60, 150])).max(-1) < 25
        rows, cols = np.nonzero(blue.any(1))[0], np.nonzero(blue.any(0))[0]
        return int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1

    def height(c, t):
        return extent(c, t)[0]

    ended = 0
    for seed in range(16):
        c = clip("lead_brakes", seed, size=96)
        assert c.cause_frames[0] > c.cause_onset  # growth shows only after the braking started
        before = height(c, c.cause_onset)
        assert max(height(c, t) for t in c.cause_frames) >= before + 2, seed  # it came visibly closer
        grew = [extent(c, t)[0] > before or extent(c, t)[1] > extent(c, c.cause_onset)[1] for t in c.cause_frames]
        assert all(grew), seed
        after = range(c.cause_frames[-1] + 1, 8)
        assert all(abs(height(c, t) - before) <= 1 for t in after), seed  # back at its old distance
        ended += len(after) > 0
    assert ended >= 4, ended


def test_light_box_holds_the_light_colour():
    c = clip("red_light", 3)
    for t in c.cause_frames:
        x0, y0, x1, y1 = c.boxes[t]
        patch = c.frames[t, y0:y1, x0:x1].astype(int)
        red = (patch[..., 0] > 180) & (patch[..., 1] < 90) & (patch[..., 2] < 90)
        assert red.mean() > 0.5
        outside = c.frames[t].astype(int)
        red_everywhere = (outside[..., 0] > 180) & (outside[..., 1] < 90) & (outside[..., 2] < 90)
        assert red_everywhere.sum() == red.sum()  # no red pixel of the light lies outside its box


def _road_column(frame: np.ndarray) -> float:
    """Mean column of the grey road pixels in the lower half of a (S, S, 3) frame."""
    f = frame.astype(int)
    grey = (np.abs(f[..., 0] - f[..., 2]) < 12) & (f[..., 0] > 70) & (f[..., 0] < 110)
    grey[: frame.shape[0] // 2] = False
    return float(np.nonzero(grey)[1].mean())


@pytest.mark.parametrize("kind", ["road_bend", "road_closed", "obstacle", "parked_car"])
def test_turns_and_lane_changes_move_the_scene_visibly_the_right_way(kind):
    """The direction of a turn or lane change shows as motion: between the onset and the last frame the road slides
    against the direction (a right turn moves the scene left) by at least 5 px at 96 px. At the old turn rate
    (0.07 rad per frame) a turn that starts one frame before the end moved the road only about 3 px."""
    seen = set()
    for seed in range(10):
        c = clip(kind, seed, size=96)
        direction = c.action.split()[-1]
        seen.add(direction)
        shift = _road_column(c.frames[-1]) - _road_column(c.frames[c.cause_onset])  # > 0: the road moved right
        assert (shift < -5 if direction == "right" else shift > 5), (seed, direction, c.cause_onset, shift)
    assert seen == {"left", "right"}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        clip("rain")
    with pytest.raises(ValueError, match="num_frames"):
        clip("obstacle", num_frames=4)
    with pytest.raises(ValueError, match="size"):
        clip("obstacle", size=63)
    with pytest.raises(TypeError, match="num_frames must be an int"):
        clip("obstacle", num_frames=8.0)
    with pytest.raises(TypeError, match="with_cause must be True or False"):
        clip("obstacle", with_cause="no")
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        generate_driving_clip("obstacle", 0)


def test_the_ego_stays_in_its_lane_through_the_bend(monkeypatch):
    """It steers into the bend as the bend comes into view and keeps to its lane; it used to drift sideways off the
    straight road before the bend started and ended up to 4.06 m from the centre line (the road's edge is at 3.5 m)
    in about one clip in seven."""
    from vidgpt2.data import synthetic_driving

    render, offsets = synthetic_driving._render_ground, []

    def recording(pose, size, bend_start, bend, salt):  # the camera pose of every frame rendered
        if bend_start < 1e8:  # the view with the bend, not the straight comparison view
            offsets.append(abs(pose.x - float(synthetic_driving._road_centre(pose.z, bend_start, bend))))
        return render(pose, size, bend_start, bend, salt)

    monkeypatch.setattr(synthetic_driving, "_render_ground", recording)
    for seed in range(30):
        clip("road_bend", seed)
    assert len(offsets) == 30 * 8
    poses = []
    monkeypatch.setattr(synthetic_driving, "_render_ground", lambda pose, *args: (poses.append(pose), render(pose, *args))[1])
    for seed in range(5):  # the barrier's clip drives as the bend's (the same poses: only the view differs)
        poses.clear()
        clip("road_closed", seed)
        closed = list(poses)
        poses.clear()
        clip("road_bend", seed)
        assert closed == poses[::2], seed  # the bend's clip renders each pose twice (with the straight road)
    assert max(offsets) <= synthetic_driving.LANE_WIDTH / 2 + 1e-6  # the centre of its lane


def test_written_folder_is_read_by_the_bddx_loader_end_to_end(tmp_path):
    folder = write_driving_dataset(tmp_path / "drive", num_train=18, num_validation=2, num_test=6, progress=False)
    again = write_driving_dataset(tmp_path / "again", num_train=18, num_validation=2, num_test=6, progress=False)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for name in ("BDD-X-Annotations_v1.csv", "train.txt", "test.txt", "ground_truth.jsonl", "videos/drive-test-00003.mov"):
        assert digest(folder / name) == digest(tmp_path / "again" / name), name
    assert again.is_dir()

    data = load_bddx(folder, check_videos=True)
    truth = read_ground_truth(folder)
    assert {s: len(data[s]) for s in data} == {"train": 18, "validation": 2, "test": 6}
    kinds = [truth[v]["kind"] for v in data["train"]["video_id"]]
    assert sorted(set(kinds)) == sorted(DRIVING_KINDS)  # 18 = every (kind, with/without) pair once
    for row in data["test"]:
        record = truth[row["video_id"]]
        assert row["caption"] == f"{record['action']} {record['justification']}"
        assert split_action_justification(row["caption"]) == (record["action"], record["justification"])
        assert (row["start"], row["end"]) == (0.0, 1.0)
        for word in record["cause_words"]:
            assert word in record["justification"].split()
        if record["with_cause"]:
            assert set(record["cause_words"]) == set(CAUSE_WORDS[record["kind"]])
    # the frames the loader's segment gives are the generated frames, in order (up to the H.264 round trip)
    row = data["test"][0]
    record = truth[row["video_id"]]
    frames = read_video(row["video"], num_frames=8, start=row["start"], end=row["end"])
    rng = np.random.default_rng([0, 12, 2])
    rng.permutation(6)
    first = generate_driving_clip(record["kind"], rng, record["with_cause"])
    assert first.caption == row["caption"]
    assert np.abs(frames.astype(int) - first.frames.astype(int)).mean() < 6


def test_cli_synth_kind_driving_writes_a_bddx_folder_and_order_stays_the_default(tmp_path, capsys):
    from vidgpt2.cli import main

    assert main(["synth", str(tmp_path / "drive"), "--kind", "driving", "--num-train", "2", "--num-validation", "0",
                 "--num-test", "1", "--size", "48"]) == 0
    assert "--dataset bddx" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "drive" / "videos").iterdir()) == [
        "drive-test-00000.mov", "drive-train-00000.mov", "drive-train-00001.mov"]
    assert len(load_bddx(tmp_path / "drive")["train"]) == 2
    assert main(["synth", str(tmp_path / "order"), "--num-train", "1", "--num-validation", "0", "--num-test", "0",
                 "--size", "32"]) == 0
    assert (tmp_path / "order" / "train.jsonl").is_file()


@pytest.mark.parametrize("kind", ["driving", "order"])
def test_cli_synth_counts_left_out_are_the_writers_defaults(tmp_path, kind, monkeypatch, capsys):
    """The command line had its own defaults (200 / 40 / 40 clips), neither writer's (240 / 24 / 48 for driving,
    256 / 32 / 32 for order): the same call gave other data from Python and from the shell."""
    import functools
    import inspect

    from vidgpt2 import data
    from vidgpt2.cli import main
    from vidgpt2.data import synthetic_driving

    module, name = (synthetic_driving, "write_driving_dataset") if kind == "driving" else (data, "write_synthetic_dataset")
    writer, calls = getattr(module, name), []

    @functools.wraps(writer)  # the help text reads the writer's signature through __wrapped__
    def record(out_dir, **kwargs):
        calls.append(kwargs)
        return out_dir if kind == "driving" else {}

    monkeypatch.setattr(module, name, record)
    assert main(["synth", str(tmp_path), "--kind", kind, "--num-test", "3"]) == 0
    assert calls == [{"overwrite": False, "num_test": 3}]
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    default = inspect.signature(writer).parameters["num_train"].default
    assert f"{kind} {default}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("kind", ["driving", "order"])
def test_cli_synth_refuses_a_folder_with_files_and_leaves_them_untouched(tmp_path, kind, capsys):
    """`synth` writes BDD-X annotation files and videos (or train.jsonl ...) under fixed names: pointed at a real BDD-X
    folder it used to replace its annotations without a word. Empty subfolders (an earlier refused run) are fine."""
    from vidgpt2.cli import main

    folder = tmp_path / "mine"
    (folder / "videos").mkdir(parents=True)
    precious = {"BDD-X-Annotations_v1.csv": "my annotations", "train.txt": "my split", "train.jsonl": "my captions",
                "videos/drive-train-00000.mov": "my video"}
    for name, text in precious.items():
        (folder / name).write_text(text)
    args = ["synth", str(folder), "--kind", kind, "--num-train", "1", "--num-validation", "0", "--num-test", "0",
            "--size", "32", "--num-frames", "6"]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert "already holds files" in str(refused.value) and "--overwrite" in str(refused.value)
    assert {name: (folder / name).read_text() for name in precious} == precious
    (tmp_path / "empty_dirs_only" / "videos").mkdir(parents=True)
    assert main(["synth", str(tmp_path / "empty_dirs_only"), "--kind", kind, "--num-train", "1", "--num-validation",
                 "0", "--num-test", "0", "--size", "32", "--num-frames", "6"]) == 0
    assert main([*args, "--overwrite"]) == 0
    written = "train.txt" if kind == "driving" else "train.jsonl"
    assert (folder / written).read_text() != precious[written]


@pytest.mark.parametrize("writer", ["driving", "order"])
def test_writers_refuse_a_folder_with_files_unless_overwrite(tmp_path, writer):
    from vidgpt2.data import write_synthetic_dataset

    def write(folder, **kwargs):
        if writer == "driving":
            return write_driving_dataset(folder, num_train=1, num_validation=0, num_test=0, num_frames=6, size=32,
                                         progress=False, **kwargs)
        return write_synthetic_dataset(folder, 1, 0, 0, num_frames=4, size=32, progress=False, **kwargs)

    folder = tmp_path / "bddx"
    folder.mkdir()
    (folder / "BDD-X-Annotations_v1.csv").write_text("my annotations")
    with pytest.raises(FileExistsError, match="already holds files .*BDD-X-Annotations_v1.csv.* overwrite=True"):
        write(folder)
    assert (folder / "BDD-X-Annotations_v1.csv").read_text() == "my annotations"
    write(folder, overwrite=True)  # replaced on request
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        write(tmp_path / "a_file", overwrite=True)
    write(tmp_path / "new")
    write(tmp_path / "new", overwrite=True)  # the same folder again, as a notebook run twice


@pytest.mark.parametrize("writer", ["driving", "order"])
def test_overwrite_leaves_no_clip_or_split_of_an_earlier_larger_run(tmp_path, writer):
    """A smaller run over a larger one with overwrite=True used to leave the earlier clips (and, for a split written
    empty, its captions file) in place: a folder of mixed runs that the loaders or a glob over the videos would read
    as one. Now only the new run's clips and captions stay, and files with other names are kept."""
    from vidgpt2.data import load_bddx, write_synthetic_dataset

    folder = tmp_path / writer
    if writer == "driving":
        write_driving_dataset(folder, num_train=4, num_validation=1, num_test=2, num_frames=6, size=32, progress=False)
        (folder / "notes.txt").write_text("mine")
        write_driving_dataset(folder, num_train=2, num_validation=0, num_test=1, num_frames=6, size=32,
                              progress=False, overwrite=True)
        videos = sorted(p.name for p in (folder / "videos").iterdir())
        assert videos == ["drive-test-00000.mov", "drive-train-00000.mov", "drive-train-00001.mov"]
        data = load_bddx(folder, check_videos=True)
        assert {s: len(data[s]) for s in data} == {"train": 2, "validation": 0, "test": 1}
    else:
        write_synthetic_dataset(folder, 4, 1, 2, num_frames=4, size=32, progress=False)
        (folder / "notes.txt").write_text("mine")
        write_synthetic_dataset(folder, 2, 0, 1, num_frames=4, size=32, progress=False, overwrite=True)
        clips = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.mp4"))
        assert clips == ["test/00000.mp4", "train/00000.mp4", "train/00001.mp4"]
        assert not (folder / "validation.jsonl").exists()  # the empty split's old captions file is gone
        assert len((folder / "train.jsonl").read_text().splitlines()) == 2
    assert (folder / "notes.txt").read_text() == "mine"


def test_writer_checks_its_arguments_before_it_writes_anything(tmp_path):
    """A bad frame size or count used to be found by the first clip, after the folder (and videos/) existed; asking
    for no clip at all wrote an empty data set without a word. Found by a new user's try-out."""
    for kwargs, message in (({"size": 63}, "size must be even"), ({"num_frames": 5}, "num_frames must be >= 6"),
                            ({"num_train": 0, "num_validation": 0, "num_test": 0}, "all 0")):
        folder = tmp_path / message.split()[0]
        with pytest.raises(ValueError, match=message):
            write_driving_dataset(folder, **{"num_train": 2, "num_validation": 0, "num_test": 0, **kwargs}, progress=False)
        assert not folder.exists()


def test_read_ground_truth_names_the_file_and_line_it_cannot_read(tmp_path):
    folder = write_driving_dataset(tmp_path / "d", num_train=2, num_validation=0, num_test=0, num_frames=6, size=32,
                                   progress=False)
    with pytest.raises(FileNotFoundError, match="is a file; pass the folder"):
        read_ground_truth(folder / "ground_truth.jsonl")
    with open(folder / "ground_truth.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"line 3 of .*ground_truth.jsonl is not a JSON record"):
        read_ground_truth(folder)


def test_read_ground_truth_refuses_hand_edited_records_before_grounding_reads_them(tmp_path):
    """A record without a key, or a cause frame without its box, used to pass and end the grounding in a bare
    KeyError ('boxes', or a frame index) far from the file."""
    folder = write_driving_dataset(tmp_path / "d", num_train=4, num_validation=0, num_test=0, num_frames=6, size=32,
                                   seed=1, progress=False)
    lines = (folder / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()
    number, record = next((i, json.loads(line)) for i, line in enumerate(lines, start=1) if json.loads(line)["boxes"])
    edits = {
        "has no boxes": {k: v for k, v in record.items() if k != "boxes"},
        r"cause frames \[\d+\] have no box": {**record, "boxes": dict(list(record["boxes"].items())[1:])},
        r"not \[x0, y0, x1, y1\]": {**record, "boxes": {t: [0, 0] for t in record["boxes"]}},
        "not a record": [record],
    }
    for message, edited in edits.items():
        changed = lines.copy()
        changed[number - 1] = json.dumps(edited)
        (folder / "ground_truth.jsonl").write_text("\n".join(changed) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=rf"line {number} of .*ground_truth.jsonl.*{message}.*--overwrite"):
            read_ground_truth(folder)


def _ground_truth_folder(tmp_path):
    """A 4-clip driving folder, its ground-truth lines and the first record with boxes (its 1-based line)."""
    folder = write_driving_dataset(tmp_path / "d", num_train=4, num_validation=0, num_test=0, num_frames=6, size=32,
                                   seed=1, progress=False)
    lines = (folder / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()
    number, record = next((i, json.loads(line)) for i, line in enumerate(lines, start=1) if json.loads(line)["boxes"])
    return folder, lines, number, record


def test_read_ground_truth_skips_blank_lines_of_a_hand_edited_file(tmp_path):
    """A file saved from an editor with a trailing blank line (or one between records) was refused as "line 5 is not
    a JSON record", and its fix, writing the folder again, threw the edit away. JSONL readers skip such lines
    (microsoft/graphrag#2424, run-llama/llama_index#23097, microsoft/PyRIT#1479)."""
    folder, lines, _, _ = _ground_truth_folder(tmp_path)
    expected = read_ground_truth(folder)
    for text in ("\n".join(lines) + "\n\n", "\n".join(lines) + "\n  \t\n", "\n".join([lines[0], "", *lines[1:]])):
        (folder / "ground_truth.jsonl").write_text(text, encoding="utf-8")
        assert read_ground_truth(folder) == expected


def test_read_ground_truth_reads_folders_written_before_num_frames_existed(tmp_path):
    """Ground truth of data version 2 has no num_frames (`clip_grounding` checks the frame count only where it is
    given); the record check made it a required key and refused those folders."""
    folder, lines, number, _ = _ground_truth_folder(tmp_path)
    expected = read_ground_truth(folder)
    old = [json.dumps({k: v for k, v in json.loads(line).items() if k != "num_frames"}) for line in lines]
    (folder / "ground_truth.jsonl").write_text("\n".join(old) + "\n", encoding="utf-8")
    records = read_ground_truth(folder)
    assert records == {key: {k: v for k, v in record.items() if k != "num_frames"} for key, record in expected.items()}
    record = json.loads(old[number - 1])
    old[number - 1] = json.dumps({**record, "cause_frames": [-1]})  # what can be checked without it still is
    (folder / "ground_truth.jsonl").write_text("\n".join(old) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"line {number} of .*cause_frames must be a list of frame indices"):
        read_ground_truth(folder)


def test_read_ground_truth_refuses_wrong_types_naming_the_line_not_a_bare_error(tmp_path):
    """Hand edits that passed the record check or broke it: `cause_frames: null` ended in a bare TypeError inside
    the check; a box keyed "first" in a bare int() ValueError; cause frames as strings, outside the clip, a box of
    strings, cause words as one string or no frame_size passed and failed (or, for the words, silently matched
    nothing) in the grounding, far from the file; a repeated video_id silently replaced the first record."""
    folder, lines, number, record = _ground_truth_folder(tmp_path)
    first = str(record["cause_frames"][0])
    edits = {
        "cause_frames must be a list": [{**record, "cause_frames": None}, {**record, "cause_frames": 2},
                                        {**record, "cause_frames": [str(t) for t in record["cause_frames"]]},
                                        {**record, "cause_frames": [*record["cause_frames"], 6],
                                         "boxes": {**record["boxes"], "6": [0, 0, 1, 1]}}],
        "boxes must map a frame index": [{**record, "boxes": {**record["boxes"], "first": [0, 0, 1, 1]}}],
        r"not \[x0, y0, x1, y1\]": [{**record, "boxes": {**record["boxes"], first: ["0", "0", "8", "8"]}}],
        "cause_words must be a list of words": [{**record, "cause_words": "car"}],
        "frame_size": [{**record, "frame_size": None}, {**record, "num_frames": 0}],
        "video_id": [{**record, "video_id": ["x"]}],
    }
    for message, records in edits.items():
        for edited in records:
            changed = lines.copy()
            changed[number - 1] = json.dumps(edited)
            (folder / "ground_truth.jsonl").write_text("\n".join(changed) + "\n", encoding="utf-8")
            with pytest.raises(ValueError, match=rf"line {number} of .*ground_truth.jsonl.*{message}.*--overwrite"):
                read_ground_truth(folder)
    (folder / "ground_truth.jsonl").write_text("\n".join([*lines, lines[number - 1]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"lines {number} and {len(lines) + 1} of .*both"):
        read_ground_truth(folder)


def test_synth_command_line_errors_name_the_argument_and_a_fix_that_works(tmp_path, capsys):
    """From a new user's try-out: --seed -1 failed with numpy's "expected non-negative integer", and a file as the
    output folder was answered with "... On the command line: --overwrite", which fails the same way."""
    from vidgpt2.cli import main

    args = ["synth", "--kind", "driving", "--num-train", "2", "--num-validation", "0", "--num-test", "0",
            "--num-frames", "6", "--size", "32"]
    assert main([*args, str(tmp_path / "a"), "--seed", "-1"]) == 1
    assert "seed must be an int >= 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as refused:
        main([*args, str(tmp_path / "a_file"), "--overwrite"])
    assert "is a file, not a folder" in str(refused.value) and "--overwrite" not in str(refused.value)
