"""Procedural dashcam clips with BDD-X captions whose justification names a cause we placed (issue 12).

A road in perspective (two lanes, dashed centre line, solid edge lines, grass with world-fixed patches, trees on
both sides, sky, distance haze) seen from an ego car. The ego's action shows only in how the scene moves between
frames (the flow of dashes and trees, the vanishing point sliding as the car yaws, the lane lines shifting as it
changes lanes); the cause is an object or state that appears at a known frame and place.

Scenario kinds (``DRIVING_KINDS``) and their captions, grouped by scene (``SCENES``). Every scene has two or three
causes of one action; without a cause (the same scene, same random draws, the cause left out) the ego does something
else, so the caption cannot be guessed without seeing the cause:

================  =================================  ======================================  ==========================
scene             action (the same for its causes)   kind: justification                     without a cause
================  =================================  ======================================  ==========================
``stop``          the car stops | slows down         ``red_light``: because the light turns  the car drives forward
                  (drawn for the scene)              red; ``pedestrian``: because the        because the light is green
                                                     pedestrian is crossing;
                                                     ``lead_brakes``: because the car ahead
                                                     is braking
``accelerate``    the car accelerates (from a slow   ``green_light``: because the light is   the car drives forward
                  drive)                             green; ``speed_sign``: because the      because the road is clear
                                                     speed limit rises                       (slowly)
``change_lanes``  the car changes lanes to the       ``obstacle``: because the obstacle is   the car drives forward
                  left | right                       in the lane; ``parked_car``: because    because the road is clear
                                                     the parked car is in the lane
``turn``          the car turns left | right         ``road_bend``: because the road bends   the car drives forward
                                                     left|right; ``road_closed``: because    because the road is
                                                     the barrier blocks the road             straight
================  =================================  ======================================  ==========================

The stop scene: a light over the ego's lane (green), the car ahead (which slows down with the ego unless it is the
cause), a crossing just beyond the light; exactly one of them acts (the light turns red, a pedestrian crosses, the
car ahead brakes) or none does. The accelerate scene: a post by the road comes into view with a green light or a
blue speed sign on it (the same shape: only the colour tells). The lane change: an orange obstacle or a parked car
comes into view in the ego's lane. The turn: the road bends, or a yellow barrier closes it where the bend would
start (the ego's motion is the same). So within a scene the action words say nothing about which cause it was,
and outside the cause frames the clips are the same: only the frames where the cause shows tell them apart, which
is what the temporal pointing game needs. The justifications part at a word that names the cause. History: in
version 3 each cause had its own action, and trained models named the cause from the caption's action words
without looking at the video (under 0.2 nats from it); version 4 shared the stop scene only, and explanations found
its causes (2.3x chance) but not the others' (1.55x over all six kinds). The green light now comes into view
green: one that showed red before it switched was in view before its cause frames.

Ground truth per clip (:class:`DrivingClip`): action, justification, cause kind, the words of the justification
that name the cause, the frames where the cause is visible and its box ``[x0, y0, x1, y1)`` (pixels, exclusive
ends) in each. Cause frames: the red light's new colour (from the switch until the light leaves the top of the
view), the pedestrian while on screen, the car ahead while it is closer than when it started braking (it has no
brake lights; it brakes for 3 frames, then pulls away to its old distance), the green light's or sign's head, the
obstacle or parked car, and the barrier while in view, the bend while it changes the view visibly
(``BEND_VISIBLE_SHARE`` of the frame, compared with the same view of a straight road). An object counts as visible
when ``VISIBLE_PIXELS`` or more of its pixels are on screen, whatever their shape: a strip of the light at the
frame's edge shows its colour, so it counts; outside the cause frames no more than 3 pixels of the cause's colour
are left. The box holds the cause itself (the light, not its pole).

Cause timing (data version 5; ``benchmarks/.cache/driving_96_v5``): the onsets are spread over the clip and every
cause but the turn scene's leaves the view again unless the ego stops in front of it, so the cause is visible in
2-7 of 8 frames (mostly 2-4), no frame shows it in more than about 2 in 3 clips and the chance rate (the mean
share of cause frames) is about 0.41. Version 2 started every cause in frames 4-6 and kept it in view to the last
frame, so "always the last frame" was a perfect explanation and the temporal pointing game could not tell
grounding from position.

:func:`write_driving_dataset` writes a BDD-X folder (``BDD-X-Annotations_v1.csv``, ``train.txt`` / ``val.txt`` /
``test.txt``, ``videos/<id>.mov``, see :mod:`vidgpt2.data.bddx`) that :func:`vidgpt2.data.load_bddx` reads, plus
``ground_truth.jsonl`` (one :meth:`DrivingClip.to_dict` per clip, keyed by the loader's ``video_id``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .synthetic import FPS, check_seed, refuse_a_folder_with_files, remove_stale_files, write_clip

logger = logging.getLogger(__name__)

DRIVING_KINDS = (
    "red_light", "green_light", "pedestrian", "lead_brakes", "obstacle", "road_bend",
    "speed_sign", "parked_car", "road_closed",
)
# Every cause shares its scene and its action with one or two others (data version 5): the same random draws, the
# same ego motion, so the action words say nothing about which cause it was and only the frames where the cause
# shows tell them apart. In version 3 each cause had its own action and the trained models named the cause from
# the caption's action words without looking (under 0.2 nats from the video); version 4 shared a scene for the
# stop scene's three causes only, and explanations found the cause there (2.3x chance) but not elsewhere (1.55x).
SCENES = {
    "stop": ("red_light", "pedestrian", "lead_brakes"),  # the ego stops or slows down (drawn for the scene)
    "accelerate": ("green_light", "speed_sign"),  # from a slow drive, a light or a sign comes into view
    "change_lanes": ("obstacle", "parked_car"),  # something comes into view in the ego's lane
    "turn": ("road_bend", "road_closed"),  # the road bends, or a barrier closes it
}
SCENE_OF = {kind: scene for scene, kinds in SCENES.items() for kind in kinds}
# The justification per kind; within a scene they part at a word that names the cause ("because the light|
# pedestrian|car ..."): the grounding explains the cause words, so the token where the model must look has to be one
# of them (with "because a pedestrian", the article parted them and carried the video's information instead)
JUSTIFICATIONS = {
    "red_light": "because the light turns red",
    "pedestrian": "because the pedestrian is crossing",
    "lead_brakes": "because the car ahead is braking",
    "green_light": "because the light is green",
    "speed_sign": "because the speed limit rises",
    "obstacle": "because the obstacle is in the lane",
    "parked_car": "because the parked car is in the lane",
    "road_bend": "because the road bends {direction}",
    "road_closed": "because the barrier blocks the road",
}
# The justification words that name the cause, per kind (the grounding metrics look up these tokens).
CAUSE_WORDS = {
    "red_light": ("light", "red"),
    "green_light": ("light", "green"),
    "pedestrian": ("pedestrian", "crossing"),
    "lead_brakes": ("car", "ahead", "braking"),
    "speed_sign": ("speed", "limit"),
    "obstacle": ("obstacle",),
    "parked_car": ("parked", "car"),
    "road_bend": ("road", "bends"),
    "road_closed": ("barrier",),
}
# What the ego does without the cause (the scene's counterfactual), per scene
NO_CAUSE_CAPTIONS = {
    "stop": ("the car drives forward", "because the light is green"),
    "accelerate": ("the car drives forward", "because the road is clear"),
    "change_lanes": ("the car drives forward", "because the road is clear"),
    "turn": ("the car drives forward", "because the road is straight"),
}
ACTIONS = (
    "the car drives forward",
    "the car accelerates",
    "the car slows down",
    "the car stops",
    "the car turns left",
    "the car turns right",
    "the car changes lanes to the left",
    "the car changes lanes to the right",
)

# World (metres) and camera. Source: a pinhole camera looking along +Z at height CAMERA_HEIGHT over flat ground.
CAMERA_HEIGHT = 2.4
LANE_WIDTH = 3.5
HAZE_DISTANCE = 16.0  # beyond this nothing is drawn: objects appear when they come this close
CRUISE_SPEED = 1.6  # metres per frame (12.8 m/s at 8 fps)
HORIZON = 0.38  # horizon row as a fraction of the frame height
FOCAL = 0.7  # focal length as a fraction of the frame width
DASH_PERIOD, DASH_LENGTH = 5.0, 2.5
TURN_RATE = 0.15  # heading change per frame (rad) once the ego turns into a bend (at 8 frames)
LIGHT_LIFT = 4.0  # the traffic light's bottom edge above the road (m): out of view once the ego is ~3 m from it
PEDESTRIAN_STEP = 3.2  # metres the pedestrian runs per frame (at 8 frames): across the road in about 3 frames
BEND_AHEAD = 10.0  # the bend's start ahead of the ego at the onset (m): where the haze starts to thin it out
BEND_CURVATURE = 0.1  # the road centre's lateral offset (m) is BEND_CURVATURE * (metres into the bend) ** 2
# a cause counts as visible in a frame when at least this many of its pixels are on screen (not cut off by the
# frame's edge or hidden behind a tree), whatever their shape: a one-row strip of a red light at the top edge shows
# its colour, so it is a cause frame (a rule that asked for 2 x 2 pixels or a quarter of the light left such strips
# unlabelled); the bend when at least this share of the frame differs visibly (> VISIBLE_CHANGE grey levels) from
# the same view of a straight road
VISIBLE_PIXELS = 4
BEND_VISIBLE_SHARE = 0.0025
VISIBLE_CHANGE = 12
# the causes that stay in view once they appear (the ego turns into the bend, or away from the barrier, which stays
# in a corner of the view); the others leave the view again (a red light stays in view when the ego stops for it)
PERSISTENT_KINDS = SCENES["turn"]
SLOW_SPEED = 0.25  # the ego's speed after slowing down, as a share of the cruise speed
BRAKING_SPEED = 0.0  # the braking car stops for a moment (at 0.1 of the cruise speed its growth was too small to see at 32 px)

_SKY, _HAZE = np.array([150, 185, 225.0]), np.array([185, 195, 205.0])
_GRASS, _ROAD = np.array([70, 125, 55.0]), np.array([88, 88, 92.0])
_WHITE, _YELLOW = np.array([235, 235, 235.0]), np.array([230, 200, 60.0])
_LIGHT_COLORS = {"red": (240, 30, 30), "green": (40, 230, 80)}
_LEAD_COLOR = (40, 60, 150)
_PEDESTRIAN_COLOR = (200, 60, 160)
_OBSTACLE_COLOR = (240, 130, 20)
_SIGN_COLOR = (30, 80, 230)
_BARRIER_COLOR = (255, 235, 0)
_POLE_COLOR = (60, 60, 60)


@dataclass
class DrivingClip:
    """One generated clip and its ground truth.

    Attributes:
        frames: (T, S, S, 3) uint8 RGB.
        kind: one of ``DRIVING_KINDS``.
        with_cause: whether the cause is in the clip (False: the counterfactual scene).
        action, justification: the BDD-X columns; the justification starts with "because".
        cause_words: the justification's words that name the cause (empty without the cause).
        cause_frames: frame indices where the cause is visible (empty without the cause).
        boxes: ``{frame: [x0, y0, x1, y1]}`` the cause's box in pixels (x1, y1 exclusive), for each cause frame.
        cause_onset: the frame the cause starts at (the draw the scene was built around, also without the cause):
            the red light switches, the pedestrian steps out, the car ahead starts braking (it is closer from a
            later frame on), the green light or sign, the obstacle or parked car comes into view, the bend or the
            barrier is ``BEND_AHEAD`` m ahead (at some frame sizes the bend's first visible frame is one earlier or
            later). The ego reacts from the next frame.
    """

    frames: np.ndarray
    kind: str
    with_cause: bool
    action: str
    justification: str
    cause_words: tuple[str, ...] = ()
    cause_frames: list[int] = field(default_factory=list)
    boxes: dict[int, list[int]] = field(default_factory=dict)
    cause_onset: int = 0

    @property
    def caption(self) -> str:
        """The joined BDD-X caption: "<action> <justification>"."""
        return f"{self.action} {self.justification}"

    def to_dict(self) -> dict:
        """JSON-ready ground truth (no frames); box keys become strings; adds ``frame_size`` [H, W] and
        ``num_frames`` T, which the frame indices and boxes refer to."""
        data = asdict(self)
        data.pop("frames")
        data["cause_words"] = list(self.cause_words)
        data["boxes"] = {str(t): box for t, box in self.boxes.items()}
        data["frame_size"] = list(self.frames.shape[1:3])
        data["num_frames"] = int(self.frames.shape[0])
        return data


# --- camera and scene ------------------------------------------------------------------------------------------------
@dataclass
class _Pose:
    x: float  # lateral position (m)
    z: float  # distance along the road (m)
    yaw: float  # heading (rad), > 0 to the right


@dataclass
class _Billboard:
    """An upright rectangle standing on the ground at world (x, z), ``width`` x ``height`` metres."""

    x: float
    z: float
    width: float
    height: float
    color: tuple[int, int, int]
    lift: float = 0.0  # bottom edge above the ground (m)
    cause: bool = False
    visible_within: float = HAZE_DISTANCE  # drawn only this close (m); low objects vanish in the haze sooner


def _to_camera(pose: _Pose, x: np.ndarray | float, z: np.ndarray | float) -> tuple:
    """World ground point -> camera (x', z') (metres right of and ahead of the camera)."""
    dx, dz = x - pose.x, z - pose.z
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    return dx * c - dz * s, dx * s + dz * c


def _project_box(pose: _Pose, obj: _Billboard, size: int) -> tuple[float, float, float, float] | None:
    """Screen box (x0, y0, x1, y1) in float pixels, or None when behind the camera or beyond the haze."""
    xc, zc = _to_camera(pose, obj.x, obj.z)
    if zc < 0.8 or zc > min(HAZE_DISTANCE, obj.visible_within):
        return None
    f, horizon = FOCAL * size, HORIZON * size
    x0 = size / 2 + f * (xc - obj.width / 2) / zc
    x1 = size / 2 + f * (xc + obj.width / 2) / zc
    y1 = horizon + f * (CAMERA_HEIGHT - obj.lift) / zc
    y0 = horizon + f * (CAMERA_HEIGHT - obj.lift - obj.height) / zc
    return x0, y0, x1, y1


def _pixel_box(box: tuple[float, float, float, float], size: int) -> list[int] | None:
    """Float box -> the pixels it covers ``[x0, y0, x1, y1)`` clipped to the frame; None when nothing is left."""
    x0, y0 = max(0, int(math.floor(box[0] + 0.5))), max(0, int(math.floor(box[1] + 0.5)))
    x1, y1 = min(size, int(math.floor(box[2] + 0.5))), min(size, int(math.floor(box[3] + 0.5)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [x0, y0, x1, y1]


def _hash_noise(ix: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic value in [0, 1) per integer world cell (texture fixed to the ground, so it moves with it)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iz.astype(np.int64) * 19349663) ^ (salt * 83492791)
    return ((h * 2654435761) % 4096) / 4096.0


def _road_centre(z: np.ndarray | float, bend_start: float, bend: float) -> np.ndarray | float:
    """Lateral position of the road's centre line at distance z: straight, then a parabola from ``bend_start``."""
    return bend * np.maximum(np.asarray(z, dtype=np.float64) - bend_start, 0.0) ** 2


def _render_ground(pose: _Pose, size: int, bend_start: float, bend: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) float sky + ground with road and lane lines, and the (S, S) world distance z of each road pixel
    (nan off the road, above the horizon or beyond the haze)."""
    f, horizon = FOCAL * size, HORIZON * size
    v, u = np.mgrid[:size, :size] + 0.5
    below = v > horizon + 0.5
    zc = np.where(below, f * CAMERA_HEIGHT / np.maximum(v - horizon, 1e-3), np.inf)
    xc = (u - size / 2) * zc / f
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    with np.errstate(invalid="ignore"):
        wx = np.where(below, pose.x + xc * c + zc * s, 0.0)
        wz = np.where(below, pose.z - xc * s + zc * c, 0.0)
    offset = wx - _road_centre(wz, bend_start, bend)
    grass = _GRASS * (0.8 + 0.4 * _hash_noise(np.floor(wx / 1.5), np.floor(wz / 1.5), salt))[..., None]
    road = _ROAD * (0.93 + 0.14 * _hash_noise(np.floor(wx / 0.7), np.floor(wz / 0.7), salt + 1))[..., None]
    on_road = np.abs(offset) < LANE_WIDTH
    image = np.where(on_road[..., None], road, grass)
    edge = np.abs(np.abs(offset) - LANE_WIDTH + 0.1) < 0.12
    dash = (np.abs(offset) < 0.1) & (np.mod(wz, DASH_PERIOD) < DASH_LENGTH)
    image = np.where(edge[..., None], _WHITE, image)
    image = np.where(dash[..., None], _YELLOW, image)
    haze = np.clip((zc - 0.6 * HAZE_DISTANCE) / (0.4 * HAZE_DISTANCE), 0, 1)[..., None]
    image = image * (1 - haze) + _HAZE * haze
    sky = _SKY + (np.arange(size)[:, None, None] / size) * 30
    image = np.where(below[..., None], image, np.broadcast_to(sky, image.shape))
    depth = np.where(below & on_road & (zc <= HAZE_DISTANCE), wz, np.nan)
    return image, depth


# --- scenarios -------------------------------------------------------------------------------------------------------
def _speeds(num_frames: int, start: float, end: float, onset: int, ramp: int | None = None) -> np.ndarray:
    """(T,) metres travelled between frame t-1 and t: ``start`` until ``onset``, then linearly to ``end`` over
    ``ramp`` frames (default: until the last frame), then ``end``."""
    speed = np.full(num_frames, start, dtype=np.float64)
    ramp = max(num_frames - onset - 1 if ramp is None else ramp, 1)
    for t in range(onset + 1, num_frames):
        speed[t] = start + (end - start) * min(1.0, (t - onset) / ramp)
    return speed


def _poses(speed: np.ndarray, yaw: np.ndarray, lateral: np.ndarray, x0: float) -> list[_Pose]:
    """Integrate per-frame speed along the heading; ``lateral`` adds a sideways shift (lane changes)."""
    poses, x, z = [], x0, 0.0
    for t in range(len(speed)):
        if t > 0:
            x += speed[t] * math.sin(yaw[t]) + lateral[t]
            z += speed[t] * math.cos(yaw[t])
        poses.append(_Pose(x, z, float(yaw[t])))
    return poses


def _traffic_light(ego_lane: int, x_ego: float, z: float, color: str, cause: bool) -> list[_Billboard]:
    """A pole on the verge of the ego's side, its arm, and the light (``color``: "red" or "green") hanging over the
    ego's lane ``LIGHT_LIFT`` m up, at world depth ``z``; ``cause`` marks the light."""
    return [
        _Billboard(ego_lane * (LANE_WIDTH + 0.4), z, 0.3, LIGHT_LIFT + 1.6, _POLE_COLOR),  # pole
        _Billboard(ego_lane * 3.6, z, 0.7, 0.15, _POLE_COLOR, lift=LIGHT_LIFT + 1.2),  # arm
        _Billboard(x_ego + ego_lane * 1.0, z, 1.1, 1.6, _LIGHT_COLORS[color], lift=LIGHT_LIFT, cause=cause),
    ]


def _roadside_post(ego_lane: int, z: float, head: tuple[int, int, int], visible_within: float) -> list[_Billboard]:
    """A post on the verge of the ego's side at world depth ``z`` and its 0.9 x 0.9 m head (the cause) 2 m up: a
    green light or a speed sign, the same shape, so only the head's colour tells them apart. Both come into view
    ``visible_within`` m away and leave the side of the view about 6 m ahead."""
    x = ego_lane * (LANE_WIDTH + 0.9)
    return [
        _Billboard(x, z, 0.2, 2.0, _POLE_COLOR, visible_within=visible_within),
        _Billboard(x, z, 0.9, 0.9, head, lift=2.0, cause=True, visible_within=visible_within),
    ]


def _draw_onset(scene: str, rng: np.random.Generator, num_frames: int) -> int:
    """The frame the cause starts at (one draw per scene, whichever cause), spread so that no frame shows the cause
    in most clips: the turn scene's (the bend or barrier stays in view: the ego turns) in frames T//2 - 1 .. T-3;
    the stop scene's in 1 .. T-4 (the light shows its colour first, and the ego has reached its new speed by the
    last frame); the accelerate scene's in 0 .. T-4 (its new speed); the lane change's in 0 .. T-3 (the cause
    leaves the view again, see ``generate_driving_clip``). For other frame counts than 8 the reaction's room scales
    with T / 8."""
    if scene == "turn":  # at least two frames of turning, so that its direction shows
        return int(rng.integers(num_frames // 2, num_frames - 2))
    first = 1 if scene == "stop" else 0
    # room for the reaction: 2 frames at 8 frames per clip, 3 where the ego changes speed (its new speed)
    reaction = max(2, round((3 if scene in ("stop", "accelerate") else 2) * num_frames / 8))
    return int(rng.integers(first, num_frames - reaction))


def _check_frames_and_size(caller: str, num_frames: int, size: int) -> None:
    """Raise TypeError / ValueError for a frame count or frame size the clips cannot have."""
    for name, value in (("num_frames", num_frames), ("size", size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{caller}: {name} must be an int, got {value!r}")
    if num_frames < 6:
        raise ValueError(f"{caller}: num_frames must be >= 6 (cause, reaction, motion), got {num_frames}")
    if size < 32 or size % 2:
        raise ValueError(f"{caller}: size must be even and >= 32, got {size}")


def generate_driving_clip(
    kind: str, rng: np.random.Generator, with_cause: bool = True, num_frames: int = 8, size: int = 64
) -> DrivingClip:
    """Render one clip of scenario ``kind``; the random draws are the same with and without the cause.

    Timing: a clip covers the same distance (and the same actions) whatever its frame count; the quantities below
    are for 8 frames and scale with ``num_frames / 8``. The cause starts at ``cause_onset`` (the stop scene's in
    frames 1-4, the accelerate scene's 0-4, the lane change's 0-5, the turn's 4-5; one draw per scene) and the ego
    reacts from the next frame. Every cause but the turn scene's leaves the view again unless the ego stops in front
    of it, as on a real dashcam: the red light hangs over the road, so it leaves the top of the frame once the ego
    is 3-4 m from it (a stopped ego keeps its lower edge in view); the pedestrian runs across and off the side; the
    car ahead brakes for 3 frames and then pulls away to its old distance; the post by the road leaves the side of
    the view about 6 m ahead; the ego changes lanes around the obstacle or parked car and passes it. The frames are
    sparse samples of a drive, as 8 frames sampled from a BDD-X segment are: per frame, the ego covers 1.6 m at
    cruise speed (0.4 m slow) and the pedestrian 3.2 m.

    Raises:
        ValueError: for an unknown ``kind``, fewer than 6 frames, or an odd or too small ``size``.
        TypeError: when ``rng`` is not a ``np.random.Generator``, ``with_cause`` not a bool, or ``num_frames`` /
            ``size`` not an int.
    """
    if kind not in DRIVING_KINDS:
        raise ValueError(f"generate_driving_clip: kind must be one of {DRIVING_KINDS}, got {kind!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"generate_driving_clip: rng must be a numpy Generator (np.random.default_rng(seed)), got {rng!r}")
    if not isinstance(with_cause, (bool, np.bool_)):
        raise TypeError(f"generate_driving_clip: with_cause must be True or False, got {with_cause!r}")
    _check_frames_and_size("generate_driving_clip", num_frames, size)
    T = num_frames
    scene = SCENE_OF[kind]
    # every draw happens here, before `kind` (within its scene) or `with_cause` is looked at, so the causes of a
    # scene and the scene without its cause share the draws
    onset = _draw_onset(scene, rng, T)
    ego_lane = 1 if rng.random() < 0.5 else -1  # +1 right lane, -1 left lane
    side = 1 if rng.random() < 0.5 else -1  # turn direction
    salt = int(rng.integers(1 << 20))
    trees = [
        (float(sign * rng.uniform(5.5, 9.0)), float(z), float(rng.uniform(2.0, 3.5)))
        for sign in (-1, 1)
        for z in np.arange(rng.uniform(2, 7), 40.0, rng.uniform(6, 9))
    ]
    light_ahead = float(rng.uniform(5.5, 6.5))  # the light's distance at the onset
    lead_gap = float(rng.uniform(8.5, 10.5))  # beyond the light and the crossing
    pedestrian_ahead = float(rng.uniform(6.0, 7.0))  # where the pedestrian crosses, ahead of the ego at the onset
    stops = bool(rng.random() < 0.5)  # stop scene: the ego stops (else it slows down), whichever cause it is
    obstacle_ahead = float(rng.uniform(7.0, 8.5))  # the obstacle's or parked car's distance when it comes into view
    post_ahead = float(rng.uniform(6.0, 7.0))  # the green light's or sign's distance when it comes into view
    jitter = rng.normal(0, 3.0, size=(T, size, size, 3))

    scale = T / 8  # frames per frame of an 8-frame clip
    cruise = CRUISE_SPEED / scale  # a clip covers the same distance whatever its frame count
    frames_of = lambda n: max(1, round(n * scale))  # noqa: E731  (a duration of n frames at 8 frames per clip)
    zeros = np.zeros(T)
    speed, yaw, lateral = _speeds(T, cruise, cruise, onset), zeros.copy(), zeros.copy()
    bend_start, bend = 1e9, 0.0
    lead_z = np.zeros(T)  # (T,) world z of the car ahead (the stop scene)
    objects: list[list[_Billboard]] = [[] for _ in range(T)]
    words = CAUSE_WORDS[kind] if with_cause else ()
    x_ego = ego_lane * LANE_WIDTH / 2
    travelled = lambda t: float(np.sum(speed[1 : t + 1]))  # noqa: E731  (metres driven by frame t)
    direction = {"change_lanes": "left" if ego_lane > 0 else "right", "turn": "left" if side < 0 else "right"}.get(scene)
    if with_cause:
        action = {
            "stop": "the car stops" if stops else "the car slows down",
            "accelerate": "the car accelerates",
            "change_lanes": f"the car changes lanes to the {direction}",
            "turn": f"the car turns {direction}",
        }[scene]
        justification = JUSTIFICATIONS[kind].format(direction=direction)
    else:
        action, justification = NO_CAUSE_CAPTIONS[scene]

    if scene == "stop":
        # one scene for the three causes of slowing down or stopping: a light over the ego's lane (green), the car
        # ahead (keeping its distance), a crossing under the light; exactly one of them acts, or none. The draws, the
        # action and the ego's motion are the same for the three, so only the cause frames tell them apart
        final = 0.0 if stops else SLOW_SPEED * cruise
        if with_cause:
            speed = _speeds(T, cruise, final, onset, ramp=frames_of(3))
        # 1 m nearer than the green light's, so that an ego that only slows down passes under it within a few frames
        # (one that stops stands 3-4 m short of it and keeps its lower edge in view)
        light_z = travelled(onset) + light_ahead - 1.0
        turns_red = kind == "red_light" and with_cause
        lead_speed = speed.copy()  # the car ahead keeps its distance (it slows down with the ego) ...
        if kind == "lead_brakes" and with_cause:  # ... unless it brakes: 3 frames, then it pulls away to its old
            braking = list(range(onset + 1, min(onset + 1 + frames_of(3), T)))  # distance over 2 more
            lead_speed[braking] = np.minimum(BRAKING_SPEED * cruise, speed[braking])
            closed = float(np.sum(speed[braking] - lead_speed[braking]))  # metres the gap shrank
            recovery = list(range(braking[-1] + 1, min(braking[-1] + 1 + frames_of(2), T)))
            lead_speed[recovery] += closed / frames_of(2)
        lead_z = lead_gap + np.cumsum(np.where(np.arange(T) > 0, lead_speed, 0.0))  # (T,) world z of the lead car
        crossing_z = travelled(onset) + pedestrian_ahead
        for t in range(T):
            red = turns_red and t >= onset
            objects[t] += _traffic_light(ego_lane, x_ego, light_z, "red" if red else "green", cause=red)
            # the braking shows as the car coming closer: a cause frame while it is nearer than at the onset
            lead_cause = kind == "lead_brakes" and with_cause and t > onset
            objects[t].append(_Billboard(x_ego, float(lead_z[t]), 1.9, 1.5, _LEAD_COLOR, cause=lead_cause))
            if kind == "pedestrian" and with_cause and t >= onset:
                # from the verge on the ego's side across both lanes and off the far side of the view
                x = ego_lane * (LANE_WIDTH + 0.5 - PEDESTRIAN_STEP / scale * (t - onset))
                objects[t].append(_Billboard(x, crossing_z, 0.9, 1.8, _PEDESTRIAN_COLOR, cause=True))
    elif scene == "accelerate":
        # a slow drive (as the stop scene's after slowing down); a green light or a speed sign on a post by the road
        # comes into view, and the ego speeds up to the cruise speed. Without either it keeps its slow speed
        slow = SLOW_SPEED * cruise
        speed = _speeds(T, slow, cruise if with_cause else slow, onset, ramp=frames_of(3))
        if with_cause:
            head = _LIGHT_COLORS["green"] if kind == "green_light" else _SIGN_COLOR
            post_z = travelled(onset) + post_ahead
            for t in range(T):
                objects[t] += _roadside_post(ego_lane, post_z, head, visible_within=post_ahead + 0.01)
    elif scene == "change_lanes":
        if with_cause:
            change = range(onset + 1, min(onset + 1 + frames_of(2), T))
            for t in change:
                lateral[t] = -ego_lane * LANE_WIDTH / len(change)
                yaw[t] = -ego_lane * 0.06
            obstacle_z = travelled(onset) + obstacle_ahead
            # low debris, or a car, that the haze hides further out: it comes into view at the onset
            width, height, color = (1.6, 1.0, _OBSTACLE_COLOR) if kind == "obstacle" else (1.9, 1.5, _LEAD_COLOR)
            for t in range(T):
                objects[t].append(
                    _Billboard(x_ego, obstacle_z, width, height, color, cause=True, visible_within=obstacle_ahead + 0.01)
                )
    else:  # turn
        if with_cause:
            # the bend, or a barrier across the road where the bend would start: either comes into view at the onset
            bend_start = travelled(onset) + BEND_AHEAD
            if kind == "road_bend":
                bend = side * BEND_CURVATURE
            else:
                for t in range(T):
                    objects[t].append(
                        _Billboard(0.0, bend_start, 2 * LANE_WIDTH, 0.8, _BARRIER_COLOR, lift=0.2, cause=True,
                                   visible_within=BEND_AHEAD + 0.01)
                    )
            for t in range(onset + 1, T):
                # 0.15 rad (about 10 px of the vanishing point at 96 px) per frame at 8 frames: at 0.07 a 2x2 or
                # 3x3 grid of the frames told left from right in only 71-82% of clips (logistic probe)
                yaw[t] = side * TURN_RATE / scale * (t - onset)
    poses = _poses(speed, yaw, lateral, x_ego)
    if scene == "turn" and with_cause:
        # the ego steers into the bend (or off the closed road) as it comes into view and keeps to its lane. A
        # simplification: the clip is too short to show it reach the bend, so its heading turns while it is still
        # on the straight (it used to drift sideways with that heading and leave the road); the barrier's clip
        # keeps the same poses (the bend's centre line is straight up to the barrier)
        poses = [_Pose(x_ego + float(_road_centre(p.z, bend_start, side * BEND_CURVATURE)), p.z, p.yaw) for p in poses]

    frames = np.empty((T, size, size, 3), dtype=np.uint8)
    boxes: dict[int, list[int]] = {}
    for t, pose in enumerate(poses):
        image, _ = _render_ground(pose, size, bend_start, bend, salt)
        billboards = [_Billboard(x, z, 1.4, h, (35, 95, 40)) for x, z, h in trees] + objects[t]
        cause_pixels = np.zeros((size, size), dtype=bool)  # the cause's pixels left visible after occlusion
        covered = np.zeros((size, size), dtype=bool)  # pixels some object covers
        for obj in sorted(billboards, key=lambda o: -_to_camera(pose, o.x, o.z)[1]):  # far to near
            box = _project_box(pose, obj, size)
            pixels = None if box is None else _pixel_box(box, size)
            if pixels is None:
                continue
            x0, y0, x1, y1 = pixels
            image[y0:y1, x0:x1] = obj.color
            cause_pixels[y0:y1, x0:x1] = obj.cause
            covered[y0:y1, x0:x1] = True
        if kind == "road_bend" and with_cause:
            straight, _ = _render_ground(pose, size, 1e9, 0.0, salt)  # the same view of a straight road
            cause_pixels = (np.abs(image - straight).max(-1) > VISIBLE_CHANGE) & ~covered
            visible = cause_pixels.sum() >= max(4, BEND_VISIBLE_SHARE * size * size)
        else:
            visible = cause_pixels.sum() >= VISIBLE_PIXELS
        if kind == "lead_brakes" and visible:
            # braking shows only as the car coming closer (no brake lights): a cause frame while the gap is shorter
            # than at the onset (in metres, so a frame where it is closer by less than a pixel's height still counts)
            visible = lead_z[t] - pose.z < lead_z[onset] - poses[onset].z - 1e-6
        if visible:
            rows, cols = np.nonzero(cause_pixels)
            boxes[t] = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        frames[t] = np.clip(image + jitter[t], 0, 255).astype(np.uint8)
    cause_frames = sorted(boxes)
    if with_cause and not cause_frames:
        raise RuntimeError(f"generate_driving_clip: the {kind} cause never came into view (a generator bug)")
    return DrivingClip(
        frames=frames,
        kind=kind,
        with_cause=with_cause,
        action=action,
        justification=justification,
        cause_words=tuple(words),
        cause_frames=cause_frames,
        boxes=boxes,
        cause_onset=onset,
    )


# --- writing ---------------------------------------------------------------------------------------------------------
ANNOTATION_COLUMNS = ["Input.Video"] + [
    f"Answer.{n}{part}" for n in range(1, 16) for part in ("start", "end", "action", "justification")
]
GROUND_TRUTH_FILE = "ground_truth.jsonl"
_SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def write_driving_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 240,
    num_validation: int = 24,
    num_test: int = 48,
    num_frames: int = 8,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a BDD-X folder of driving clips into ``out_dir`` and return it (ready for ``load_bddx(out_dir)``).

    Each split holds every (kind, with/without cause) pair equally often (counts differ by at most one), shuffled;
    each clip is one video ``videos/drive-<split>-<index>.mov`` (H.264, 8 fps) with one annotated segment covering
    all its frames (0 to num_frames / 8 s). Everything is a function of ``seed``; each split draws from its own
    stream. ``ground_truth.jsonl`` holds :meth:`DrivingClip.to_dict` plus ``video_id`` (as ``load_bddx`` names
    the segment) and ``split``.

    Raises:
        ValueError: for negative counts, no clip at all, fewer than 6 frames, an odd or too small ``size``, or a
            negative ``seed``.
        TypeError: when ``num_frames`` or ``size`` is not an int.
        FileExistsError: when ``out_dir`` already holds files (a real BDD-X folder, an earlier run) and ``overwrite``
            is False. With ``overwrite=True`` the files this function writes are replaced and the videos of an
            earlier run named as it names them (``videos/drive-<split>-<index>.mov``) that this run does not write
            are deleted; other files stay.
    """
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"write_driving_dataset: num_{name} must be >= 0, got {value}")
    if not sum(counts.values()):
        raise ValueError("write_driving_dataset: num_train, num_validation and num_test are all 0; ask for at least "
                         "one clip.")
    _check_frames_and_size("write_driving_dataset", num_frames, size)  # before anything is written
    check_seed("write_driving_dataset", seed)
    out_dir = Path(out_dir)
    refuse_a_folder_with_files("write_driving_dataset", out_dir, overwrite)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    combos = [(kind, cause) for kind in DRIVING_KINDS for cause in (True, False)]
    rows: list[dict[str, str]] = []
    truth: list[dict] = []
    split_lines: dict[str, list[str]] = {split: [] for split in counts}
    written: set[Path] = set()
    with tqdm(total=sum(counts.values()), desc="driving clips", unit="clip", disable=not progress) as bar:
        for split_index, (split, count) in enumerate(counts.items()):
            rng = np.random.default_rng([seed, 12, split_index])
            order = [combos[i % len(combos)] for i in range(count)]
            order = [order[i] for i in rng.permutation(count)]
            for i, (kind, with_cause) in enumerate(order):
                clip = generate_driving_clip(kind, rng, with_cause, num_frames, size)
                name = f"drive-{split}-{i:05d}"
                write_clip(out_dir / "videos" / f"{name}.mov", clip.frames, container="mov")
                written.add(out_dir / "videos" / f"{name}.mov")
                rows.append(
                    {
                        "Input.Video": f"https://example.invalid/synthetic-driving/{name}.mov",
                        "Answer.1start": "0",
                        "Answer.1end": f"{num_frames / FPS:g}",
                        "Answer.1action": clip.action,
                        "Answer.1justification": clip.justification,
                    }
                )
                k = len(rows)  # rank among annotated rows, as the split files count
                split_lines[split].append(f"{k}_{name}")
                truth.append({"video_id": f"{k}_{name}_seg1", "split": split, **clip.to_dict()})
                bar.update()
    with open(out_dir / "BDD-X-Annotations_v1.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ANNOTATION_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    for split, name in _SPLIT_FILES.items():
        (out_dir / name).write_text("".join(line + "\n" for line in split_lines[split]), encoding="utf-8")
    with open(out_dir / GROUND_TRUTH_FILE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in truth)
    if overwrite:  # the videos of an earlier, larger run must not stay next to the new annotations
        remove_stale_files("write_driving_dataset", out_dir, written, ("videos/drive-*-[0-9][0-9][0-9][0-9][0-9].mov",))
    logger.info("wrote %s driving clips to %s", counts, out_dir)
    return out_dir


def read_ground_truth(data_dir: str | os.PathLike) -> dict[str, dict]:
    """``ground_truth.jsonl`` of a :func:`write_driving_dataset` folder as ``{video_id: record}``; boxes keyed by
    int frame index.

    Raises:
        FileNotFoundError: when the folder has no ground truth (not written by ``vidgpt2 synth --kind driving``), or
            ``data_dir`` is the ground truth file itself (pass its folder).
        ValueError: for a line of the file that is not a JSON record, lacks a key of ``GROUND_TRUTH_KEYS``, holds
            a value of the wrong type (cause frames outside [0, num_frames), boxes not [x0, y0, x1, y1] keyed by a
            frame index ...), has a cause frame without its box, or repeats a video_id (naming the file and the
            line). Blank lines are skipped.
    """
    if Path(data_dir).is_file():
        raise FileNotFoundError(f"read_ground_truth: {data_dir} is a file; pass the folder that holds "
                                f"{GROUND_TRUTH_FILE} (the folder `vidgpt2 synth --kind driving` wrote).")
    path = Path(data_dir) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; write the folder with `vidgpt2 synth --kind driving`.")
    records, lines = {}, {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():  # a blank line (a hand edit, a trailing newline too many) holds no record
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"read_ground_truth: line {number} of {path} is not a JSON record ({error.msg}); "
                                 "write the folder again with `vidgpt2 synth --kind driving --overwrite`.") from None
            _check_ground_truth_record(record, f"line {number} of {path}")
            if record["video_id"] in lines:
                raise ValueError(f"read_ground_truth: lines {lines[record['video_id']]} and {number} of {path} are "
                                 f"both {record['video_id']!r}; keep one record per clip.")
            lines[record["video_id"]] = number
            record["boxes"] = {int(t): box for t, box in record["boxes"].items()}
            records[record["video_id"]] = record
    return records


# what `evaluate_grounding` reads from a record (`DrivingClip.to_dict` writes them all); ``num_frames`` too where
# given: folders written before the field existed (data version 2) have none, and the grounding checks it only then
GROUND_TRUTH_KEYS = ("video_id", "kind", "action", "justification", "cause_words", "cause_frames", "boxes",
                     "frame_size")


def _check_ground_truth_record(record: Any, where: str) -> None:
    """Raise a ValueError naming ``where`` when a ground-truth record lacks a key, or a cause frame has no box
    ``[x0, y0, x1, y1]`` (a hand-edited file: the grounding would fail later on a bare KeyError)."""
    fix = "write the folder again with `vidgpt2 synth --kind driving --overwrite`, or restore the record"
    if not isinstance(record, dict):
        raise ValueError(f"read_ground_truth: {where} is a JSON {type(record).__name__}, not a record; {fix}.")
    missing = [key for key in GROUND_TRUTH_KEYS if key not in record]
    if missing:
        raise ValueError(f"read_ground_truth: {where} has no {', '.join(missing)} (a record needs "
                         f"{', '.join(GROUND_TRUTH_KEYS)}); {fix}.")
    if not isinstance(record["video_id"], str) or not record["video_id"]:
        raise ValueError(f"read_ground_truth: {where}: video_id must be the clip's name, got {record['video_id']!r}; "
                         f"{fix}.")
    clip = f"{where} ({record['video_id']})"
    num_frames, cause_frames, size = record.get("num_frames"), record["cause_frames"], record["frame_size"]
    if (num_frames is not None and not _is_count(num_frames)) or not (
            isinstance(size, list) and len(size) == 2 and all(map(_is_count, size))):
        raise ValueError(f"read_ground_truth: {clip}: num_frames must be an int >= 1 and frame_size [H, W] in "
                         f"pixels, got {num_frames!r} and {size!r}; {fix}.")
    last = math.inf if num_frames is None else num_frames
    if not (isinstance(cause_frames, list) and all(_is_index(t) and t < last for t in cause_frames)):
        raise ValueError(f"read_ground_truth: {clip}: cause_frames must be a list of frame indices in "
                         f"[0, num_frames={num_frames}), got {cause_frames!r}; {fix}.")
    words = record["cause_words"]
    if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        raise ValueError(f"read_ground_truth: {clip}: cause_words must be a list of words, got {words!r}; {fix}.")
    boxes = record["boxes"]
    if not isinstance(boxes, dict) or not all(t.isdecimal() for t in boxes):
        got = type(boxes).__name__ if not isinstance(boxes, dict) else f"keys {list(boxes)}"
        raise ValueError(f"read_ground_truth: {clip}: boxes must map a frame index to "
                         f"[x0, y0, x1, y1], got {got}; {fix}.")
    keys = {int(t) for t in boxes}
    unboxed = [t for t in cause_frames if t not in keys]
    bad = [t for t, box in boxes.items() if not (isinstance(box, list) and len(box) == 4
                                                   and all(_is_index(v) for v in box))]
    if unboxed or bad:
        problem = f"cause frames {unboxed} have no box" if unboxed else f"the boxes of frames {bad} are not [x0, y0, x1, y1]"
        raise ValueError(f"read_ground_truth: {clip}: {problem}; every cause frame needs its "
                         f"box [x0, y0, x1, y1] in pixels; {fix}.")


def _is_index(value: Any) -> bool:
    """Whether a JSON value is an int >= 0 (not a bool, not a float such as 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_count(value: Any) -> bool:
    """Whether a JSON value is an int >= 1."""
    return _is_index(value) and value >= 1


__all__ = [
    "ACTIONS",
    "CAUSE_WORDS",
    "DRIVING_KINDS",
    "JUSTIFICATIONS",
    "SCENES",
    "DrivingClip",
    "generate_driving_clip",
    "read_ground_truth",
    "write_driving_dataset",
]
