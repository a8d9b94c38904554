"""Grounding metrics (issue 12 item 3): pointing games, Wilson intervals, cause tokens, maps, deletion."""

import warnings

import numpy as np
import pytest
import torch

from tests.tiny import tiny_model, tiny_pixels, tiny_tokenizer
from vidgpt2.explanations import caption_logprobs, occlusion_frame_scores, shapley_frame_scores
from vidgpt2.grounding import (
    METHODS,
    best_fixed_frame,
    best_fixed_frame_by_group,
    box_fraction,
    cause_deletion,
    cause_token_positions,
    clip_grounding,
    plot_grounding,
    position_matched_chance,
    position_permutation_p,
    spatial_hit,
    summarize_grounding,
    temporal_hit,
    token_maps,
    video_dependence,
    wilson_interval,
)


def test_wilson_interval_holds_the_rate_even_at_0_and_n_of_n():
    # 6 of 6 gave a high end of 0.9999999999999999 < 1.0, and a negative error bar in the pointing chart
    for n in range(1, 200):
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
        low, high = wilson_interval(n / 3, n)
        assert low <= n / 3 / n <= high


def test_wilson_matches_scipy_on_integer_counts_and_known_values():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 10), (3, 10), (10, 10), (37, 48), (1, 1)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose(wilson_interval(k, n), (ci.low, ci.high), atol=2e-4)  # scipy uses z = 1.95996
    # Agresti & Coull 1998 style hand value: 0 of 10 -> (0, 0.2775)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson_interval(2.5, 5)
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)


def test_wilson_refuses_bad_counts():
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)


def test_temporal_hit_hand_cases():
    assert temporal_hit([0.1, 0.5, 0.2, 0.2], [1]) == 1.0
    assert temporal_hit([0.1, 0.5, 0.2, 0.2], [2, 3]) == 0.0
    assert temporal_hit([0.3, 0.3, 0.1, 0.3], [0, 2]) == pytest.approx(1 / 3)  # tie among 0, 1, 3
    assert temporal_hit(np.zeros(8), [5, 6]) == pytest.approx(2 / 8)  # a flat map scores the chance rate
    with pytest.raises(ValueError, match="outside"):
        temporal_hit([1, 2], [2])
    with pytest.raises(ValueError, match="at least one cause frame"):
        temporal_hit([1, 2], [])


def test_spatial_hit_hand_cases():
    heatmap = np.zeros((8, 8))
    heatmap[2, 5] = 1.0
    assert spatial_hit(heatmap, [4, 1, 7, 4]) == 1.0  # x 4..6, y 1..3 holds (y=2, x=5)
    assert spatial_hit(heatmap, [0, 0, 5, 8]) == 0.0  # x1 = 5 is exclusive
    assert spatial_hit(np.ones((4, 4)), [0, 0, 2, 2]) == pytest.approx(box_fraction([0, 0, 2, 2], 4, 4)) == 0.25
    with pytest.raises(ValueError, match="outside"):
        spatial_hit(heatmap, [0, 0, 9, 2])


def test_cause_token_positions_only_after_because():
    tokens = ["the", "car", "slows", "down", "because", "the", "car", "ahead", "is", "braking", "<|endoftext|>"]
    assert cause_token_positions(tokens, ["car", "ahead", "braking"]) == [6, 7, 9]
    assert cause_token_positions(["Ġthe", "Ġlight", "Ġturns", "Ġred"], ["light"]) == []  # no "because"
    assert cause_token_positions(["a", "Ġbecause", "Ġthe", "ĠLight"], ["light"]) == [3]


def test_summary_rates_and_chance():
    records = [
        {"attention_temporal": 1.0, "grad-cam_temporal": 0.0, "occlusion_temporal": 1.0, "temporal_chance": 0.5,
         "shapley_temporal": 1.0,
         "grad-cam_spatial": 1.0, "grad-cam_spatial_chance": 0.1, "drop_cause": 2.0, "drop_other": 0.5},
        {"attention_temporal": 1.0, "grad-cam_temporal": 0.5, "occlusion_temporal": 0.0, "temporal_chance": 0.25,
         "shapley_temporal": 0.5,
         "grad-cam_spatial": 0.0, "grad-cam_spatial_chance": 0.3, "drop_cause": 0.0, "drop_other": 1.0},
    ]
    summary = summarize_grounding(records)
    assert summary["attention_temporal"]["hit_rate"] == 1.0
    assert summary["attention_temporal"]["chance"] == pytest.approx(0.375)
    assert summary["grad-cam_temporal"]["hit_rate"] == 0.25
    assert summary["grad-cam_spatial"]["chance"] == pytest.approx(0.2)
    assert "attention_spatial" not in summary  # pooled models: no spatial attention
    assert summary["occlusion_temporal"]["hit_rate"] == 0.5 and "occlusion_spatial" not in summary
    assert summary["shapley_temporal"]["hit_rate"] == 0.75 and "shapley_spatial" not in summary
    assert summary["shapley_temporal"]["ci95"] == pytest.approx(wilson_interval(1.5, 2))
    assert summary["deletion"]["cause_beats_other"] == 0.5
    assert summary["attention_temporal"]["ci95"] == pytest.approx(wilson_interval(2, 2))


LATE = [0, 0, 0, 0, 0, 0, 0, 1.0]  # (T=8,) scores of an explanation that always names the last frame


def test_position_matched_chance_sees_a_habit_of_position_that_plain_chance_misses():
    causes = [[7], [6, 7], [5]]
    # always the last frame: it hits clips 0 and 1 whatever clip its ranking came from; plain chance is ~0.17
    assert position_matched_chance([LATE] * 3, causes) == pytest.approx(2 / 3)
    # a ranking that follows each clip's content hits its own clip but not the others' causes
    own = [np.eye(8)[7], np.eye(8)[6], np.eye(8)[5]]
    assert [temporal_hit(s, c) for s, c in zip(own, causes, strict=True)] == [1.0, 1.0, 1.0]
    # paired with the other clips: clip 0 <- frames 6, 5: 0; clip 1 <- 7, 5: 1/2; clip 2 <- 7, 6: 0
    assert position_matched_chance(own, causes) == pytest.approx((0 + 0.5 + 0) / 3)
    with pytest.raises(ValueError, match=">= 2 clips"):
        position_matched_chance([LATE], [[7]])
    with pytest.raises(ValueError, match=">= 2 clips"):
        position_matched_chance([LATE, LATE], [[7]])


def test_position_permutation_p_tells_content_from_a_habit_of_position():
    causes = [[t % 8] for t in range(16)]  # every frame is some clip's only cause frame
    following = [np.eye(8)[t % 8] for t in range(16)]  # each ranking names its own clip's cause
    assert position_permutation_p(following, causes, num_permutations=2000) == pytest.approx(1 / 2001)
    late = [LATE] * 16  # the same ranking everywhere: every reassignment scores the same, nothing to tell
    assert position_permutation_p(late, causes, num_permutations=2000) == 1.0
    # seeded: the same p twice; the summary reports it next to the position-matched chance
    half = following[:8] + [LATE] * 8
    assert position_permutation_p(half, causes, seed=3) == position_permutation_p(half, causes, seed=3)
    with pytest.raises(ValueError, match="num_permutations"):
        position_permutation_p(following, causes, num_permutations=0)
    with pytest.raises(ValueError, match=">= 2 clips"):
        position_permutation_p([LATE], [[7]])


def test_best_fixed_frame_is_the_last_one_when_every_cause_stays_in_view():
    assert best_fixed_frame([[7], [6, 7], [4, 5, 6, 7]], 8) == (7, 1.0)
    assert best_fixed_frame([[1], [1, 2], [5]], 8) == (1, pytest.approx(2 / 3))


def test_position_controls_refuse_clips_they_cannot_compare_naming_the_clip():
    """Rankings of another length used to be paired silently when the causes fell inside both (or failed inside
    temporal_hit without naming the clip); best_fixed_frame returned (0, nan) for no clips and ignored cause frames
    outside the clip."""
    with pytest.raises(ValueError, match=r"frame_scores\[1\] has 4 frames.*8"):
        position_matched_chance([LATE, [0, 0, 0, 1.0]], [[7], [3]])
    with pytest.raises(ValueError, match=r"frame_scores\[1\] has 4 frames.*8"):
        position_matched_chance([LATE, [0, 0, 0, 1.0]], [[3], [2]])  # in range of both: used to give 0.0
    with pytest.raises(ValueError, match=r"cause_frames\[1\].*no cause frame"):
        position_matched_chance([LATE, LATE], [[7], []])
    with pytest.raises(ValueError, match=r"cause_frames\[0\].*\[9\].*\[0, 8\)"):
        position_matched_chance([LATE, LATE], [[9], [7]])
    with pytest.raises(ValueError, match="at least one clip"):
        best_fixed_frame([], 8)
    with pytest.raises(ValueError, match="num_frames"):
        best_fixed_frame([[1]], 0)
    with pytest.raises(ValueError, match=r"cause_frames\[1\].*\[9\].*\[0, 8\)"):
        best_fixed_frame([[7], [9]], 8)
    with pytest.raises(ValueError, match=r"cause_frames\[0\].*no cause frame"):
        best_fixed_frame([[]], 8)


def test_best_fixed_frame_breaks_ties_towards_the_earliest_frame():
    assert best_fixed_frame([[6, 7], [5, 6, 7]], 8) == (6, 1.0)


def test_summary_adds_the_position_controls_when_records_hold_frame_scores():
    records = [
        {"attention_temporal": temporal_hit(LATE, cause), "attention_frame_scores": LATE, "cause_frames": cause,
         "temporal_chance": len(cause) / 8}
        for cause in ([7], [6, 7], [5])
    ]
    summary = summarize_grounding(records)
    assert summary["attention_temporal"]["hit_rate"] == pytest.approx(2 / 3)
    assert summary["attention_temporal"]["position_chance"] == pytest.approx(2 / 3)  # nothing beyond position
    assert summary["attention_temporal"]["position_p"] == 1.0
    assert summary["fixed_frame"] == {"frame": 7, "hit_rate": pytest.approx(2 / 3), "n": 3}
    old_records = [{k: v for k, v in r.items() if k != "attention_frame_scores"} for r in records]
    assert "position_chance" not in summarize_grounding(old_records)["attention_temporal"]


def test_kind_matched_controls_see_a_position_habit_chosen_from_the_caption():
    """A rule that reads only the caption's cause kind and points where that kind tends to be (bends late, lights
    early) follows no clip's content, yet it beats the plain position-matched chance. Paired within a kind, the
    control scores it exactly and the stratified permutation p is 1; a ranking that follows each clip beats both."""
    kinds = ["bend"] * 4 + ["light"] * 4
    causes = [[6, 7], [7], [5, 6, 7], [7], [1, 2], [2], [1], [0, 1]]
    early = list(np.eye(8)[1])
    by_kind = [LATE] * 4 + [early] * 4  # "the last frame if the road bends, else frame 1"
    hit = np.mean([temporal_hit(s, c) for s, c in zip(by_kind, causes, strict=True)])
    assert hit == pytest.approx(7 / 8)
    assert position_matched_chance(by_kind, causes) < 0.5  # across kinds it looks like grounding ...
    assert position_permutation_p(by_kind, causes, num_permutations=2000) < 0.05
    assert position_matched_chance(by_kind, causes, groups=kinds) == pytest.approx(hit)  # ... within a kind, not
    assert position_permutation_p(by_kind, causes, groups=kinds, num_permutations=2000) == 1.0
    assert best_fixed_frame_by_group(causes, 8, kinds) == ({"bend": 7, "light": 1}, pytest.approx(7 / 8))
    following = [np.eye(8)[c[0]] for c in causes]  # each ranking names its own clip's first cause frame
    assert position_permutation_p(following, causes, groups=kinds, num_permutations=2000) < 0.05
    with pytest.raises(ValueError, match="groups has 3 labels for 8 clips"):
        position_matched_chance(by_kind, causes, groups=kinds[:3])
    with pytest.raises(ValueError, match="no group holds 2 or more clips"):
        position_matched_chance([LATE, LATE], [[7], [6]], groups=["a", "b"])
    with pytest.raises(ValueError, match="groups has 1 labels for 2 clips"):
        best_fixed_frame_by_group([[7], [6]], 8, ["a"])


def test_summary_adds_the_kind_matched_controls_when_records_hold_the_kind():
    records = [
        {"attention_temporal": temporal_hit(LATE, cause), "attention_frame_scores": LATE, "cause_frames": cause,
         "temporal_chance": len(cause) / 8, "kind": kind}
        for cause, kind in (([7], "a"), ([6, 7], "a"), ([5], "b"), ([5, 6], "b"))
    ]
    summary = summarize_grounding(records)
    entry = summary["attention_temporal"]
    assert entry["kind_position_chance"] == pytest.approx(0.5) and entry["kind_position_p"] == 1.0
    assert summary["fixed_frame_by_kind"] == {"frames": {"a": 7, "b": 5}, "hit_rate": 1.0, "n": 4}
    no_kind = [{k: v for k, v in r.items() if k != "kind"} for r in records]
    assert "kind_position_chance" not in summarize_grounding(no_kind)["attention_temporal"]
    assert "by_kind" not in summarize_grounding(no_kind)["attention_temporal"]


def test_summary_breaks_hit_rates_and_deletion_down_by_cause_kind():
    """A method that finds one kind's cause and never the other's: the mean (0.5) hides it, ``by_kind`` shows it."""
    records = [
        {"attention_temporal": temporal_hit(LATE, cause), "temporal_chance": len(cause) / 8, "kind": kind,
         "drop_cause": drop, "drop_other": 1.0}
        for cause, kind, drop in (([7], "a", 2.0), ([6, 7], "a", 2.0), ([1], "b", 0.5), ([1, 2], "b", 3.0))
    ]
    summary = summarize_grounding(records)
    assert summary["attention_temporal"]["hit_rate"] == 0.5
    assert summary["attention_temporal"]["by_kind"] == {
        "a": {"hit_rate": 1.0, "chance": pytest.approx(1.5 / 8), "n": 2},
        "b": {"hit_rate": 0.0, "chance": pytest.approx(1.5 / 8), "n": 2},
    }
    assert summary["deletion"]["cause_beats_other_by_kind"] == {"a": 1.0, "b": 0.5}


def test_token_maps_shapes_and_gradcam_follows_the_frames_that_matter():
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    ids = [5, 6, 7, 1]
    maps = token_maps(model, pixels, ids, [1, 2])
    assert maps.attention_frames.shape == (4,) and maps.attention_frames.sum() == pytest.approx(1.0, abs=1e-5)
    assert maps.attention_heatmaps.shape == (4, 64, 64) and maps.gradcam_heatmaps.shape == (4, 64, 64)
    assert all(p.grad is None for p in model.parameters())
    pooled = token_maps(tiny_model(), tiny_pixels(tiny_model().config, batch=1), ids, [2])
    assert pooled.attention_heatmaps is None and pooled.gradcam_frames.shape == (4,)
    # occlusion: the cause tokens' summed log-prob drop per occluded frame; temporal only
    np.testing.assert_allclose(maps.occlusion_frames, occlusion_frame_scores(model, pixels, ids)[[1, 2]].sum(0),
                               atol=1e-5)
    assert maps.frames("occlusion") is maps.occlusion_frames and maps.heatmaps("occlusion") is None
    # Shapley values of the frames for the cause tokens' summed log-prob: the sum of the tokens' (linearity)
    np.testing.assert_allclose(maps.shapley_frames, shapley_frame_scores(model, pixels, ids)[[1, 2]].sum(0),
                               atol=1e-5)
    assert maps.frames("shapley") is maps.shapley_frames and maps.heatmaps("shapley") is None
    # the same with the clip's mean frame standing in for a missing frame
    np.testing.assert_allclose(maps.shapley_clip_mean_frames,
                               shapley_frame_scores(model, pixels, ids, baseline="clip_mean")[[1, 2]].sum(0), atol=1e-5)
    assert maps.frames("shapley-clip-mean") is maps.shapley_clip_mean_frames
    assert maps.heatmaps("shapley-clip-mean") is None
    with pytest.raises(ValueError, match="positions"):
        token_maps(model, pixels, ids, [4])


def test_clip_grounding_and_deletion_on_a_tiny_model():
    tokenizer = tiny_tokenizer()
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)
    tokens = ["a", "red", "square", "because", "green", "circle"]
    ids = tokenizer.convert_tokens_to_ids(tokens) + [tokenizer.eos_token_id]
    truth = {"cause_words": ["circle"], "cause_frames": [2, 3], "boxes": {2: [0, 0, 32, 32], 3: [32, 32, 64, 64]},
             "frame_size": [64, 64]}
    record = clip_grounding(model, pixels, ids, tokens + ["<eos>"], truth)
    assert record["positions"] == [5] and record["temporal_chance"] == 0.5 and record["cause_frames"] == [2, 3]
    assert len(record["relevancy_frame_scores"]) == 4 and "relevancy_spatial" in record
    for key in ("attention_temporal", "grad-cam_temporal", "occlusion_temporal", "shapley_temporal",
                "attention_spatial", "grad-cam_spatial"):
        assert 0.0 <= record[key] <= 1.0
    assert "occlusion_spatial" not in record and "shapley_spatial" not in record
    assert record["attention_spatial_chance"] == 0.25
    assert record["k"] == 2
    assert clip_grounding(model, pixels, ids, ["a"] * 7, truth) is None  # no cause word named
    # the Shapley values add up to what the video adds to the cause word's log-prob over flat frames
    labels = torch.tensor(ids)[None].expand(2, -1)
    with torch.no_grad():
        logp = caption_logprobs(model, labels, pixel_values_videos=torch.cat([pixels, torch.zeros_like(pixels)]))
    assert video_dependence(record) == pytest.approx(float(logp[0, 5] - logp[1, 5]), abs=1e-4)
    assert video_dependence({"attention_temporal": 1.0}) is None
    for bad in ([0.5, float("nan")], [[0.5, 0.1], [0.2, 0.3]], []):  # a NaN would silently leave the clip out
        with pytest.raises(ValueError, match="one finite value per frame"):
            video_dependence({"shapley_frame_scores": bad})


def test_summary_scores_the_pointing_game_on_the_clips_whose_cause_words_need_the_video():
    """Two clips named their cause without the video (Shapley values summing to ~0 nats): the method's misses there
    say nothing about grounding; ``video_dependent`` scores the other two, ``video_dependence`` says how many."""
    def record(hit, shapley, kind):
        return {"attention_temporal": hit, "temporal_chance": 0.25, "kind": kind, "shapley_temporal": hit,
                "shapley_frame_scores": shapley, "attention_frame_scores": [1.0, 0.0, 0.0, 0.0],
                "cause_frames": [0] if hit else [3]}
    records = [record(1.0, [2.0, 0.5, 0.0, 0.0], "a"), record(1.0, [0.5, 0.5, 0.5, 0.0], "a"),
               record(0.0, [0.1, -0.1, 0.0, 0.05], "b"), record(0.0, [0.0, 0.0, 0.0, 0.0], "b")]
    summary = summarize_grounding(records)
    assert summary["attention_temporal"]["hit_rate"] == 0.5
    subset = summary["video_dependent"]  # the same summary over the two clips that needed the video
    assert subset["num_clips"] == 2 and "video_dependent" not in subset
    assert {k: subset["attention_temporal"][k] for k in ("hit_rate", "chance", "n")} == {"hit_rate": 1.0, "chance": 0.25, "n": 2}
    assert subset["attention_temporal"]["ci95"] == pytest.approx(wilson_interval(2, 2))
    assert subset["attention_temporal"]["position_chance"] == 1.0  # both point at frame 0, both causes are there
    dependence = summary["video_dependence"]
    assert dependence["share_needing_video"] == 0.5 and dependence["n"] == 4
    assert dependence["nats"] == pytest.approx((2.5 + 1.5 + 0.05 + 0.0) / 4)
    assert dependence["nats_by_kind"] == {"a": pytest.approx(2.0), "b": pytest.approx(0.025)}
    without = summarize_grounding([{k: v for k, v in r.items() if k != "shapley_frame_scores"} for r in records])
    assert "video_dependence" not in without and "video_dependent" not in without


def test_cause_deletion_sees_the_only_informative_frame():
    """A model that reads only frame 0 (others zeroed in its features): masking frame 0 changes log p, masking
    others does not."""
    model = tiny_model(temporal_embeddings=False, num_visual_layers=0)
    pixels = tiny_pixels(model.config, batch=1)
    ids = [5, 6, 1]
    drops = cause_deletion(model, pixels, ids, [0])
    assert drops["k"] == 1 and drops["drop_cause"] != 0.0
    same = pixels.clone()
    same[0, 1:] = 0.0  # frames 1..3 already flat: masking them changes nothing
    drops = cause_deletion(model, same, ids, [0])
    assert drops["drop_other"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="non-cause"):
        cause_deletion(model, pixels, ids, [0, 1, 2, 3])
    assert torch.is_grad_enabled()
    # occlusion ranks frame 0 first: occluding the already flat frames changes nothing
    maps = token_maps(model, same, ids, [0, 1])
    occlusion = maps.occlusion_frames
    assert occlusion[0] != 0.0 and np.abs(occlusion[1:]).max() < 1e-5
    # Shapley: the flat frames are the baseline already, so they add nothing to any coalition; frame 0 gets it all
    assert np.abs(maps.shapley_frames[1:]).max() < 1e-5
    assert maps.shapley_frames[0] == pytest.approx(occlusion[0], abs=1e-4)
    truth = {"cause_words": ["x"], "cause_frames": [0], "boxes": {0: [0, 0, 8, 8]}, "frame_size": [32, 32]}
    record = clip_grounding(model, same, ids, ["because", "x", "<eos>"], truth, deletion=False)
    assert record["occlusion_temporal"] == (1.0 if occlusion[0] > 0 else 0.0)
    assert record["shapley_temporal"] == (1.0 if maps.shapley_frames[0] > 0 else 0.0)


def test_clip_mean_shapley_gives_nothing_to_frames_of_a_still_video():
    """In a video whose frames are all the same, the clip's mean frame is that frame: leaving any frame out changes
    nothing, so every clip-mean Shapley value is 0, while the flat-frame baseline credits the frames."""
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)
    still = pixels[:, :1].expand_as(pixels).clone()  # (1, 4, 3, 64, 64): frame 0 four times
    maps = token_maps(model, still, [5, 6, 7, 1], [1, 2])
    assert np.abs(maps.shapley_clip_mean_frames).max() < 1e-5
    assert np.abs(maps.shapley_frames).max() > 1e-3
    truth = {"cause_words": ["x"], "cause_frames": [1], "boxes": {1: [0, 0, 8, 8]}, "frame_size": [64, 64]}
    record = clip_grounding(model, still, [5, 6, 1], ["because", "x", "<eos>"], truth, deletion=False)
    assert record["shapley-clip-mean_temporal"] == 0.25  # four tied frames, one of them the cause
    assert "shapley-clip-mean_spatial" not in record


@pytest.mark.parametrize("frames", [3, 6])
def test_clip_mean_shapley_of_a_still_video_is_exactly_zero_for_any_frame_count(frames):
    """The clip mean of T equal frames, summed in float32, is the frame only up to rounding for T = 3, 5, 6, 7 ...
    (4 and 2 happen to be exact): the coalitions differed by ~1e-7, the Shapley values were noise of that size, and
    the noise, not a tie, chose the top frame (a temporal hit of 0 or 1 instead of 1 / T)."""
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64, num_frames=frames)
    pixels = tiny_pixels(model.config, batch=1)
    still = pixels[:, :1].expand_as(pixels).clone()  # (1, T, 3, 64, 64): frame 0 T times
    maps = token_maps(model, still, [5, 6, 7, 1], [1, 2])
    assert np.all(maps.shapley_clip_mean_frames == 0)
    truth = {"cause_words": ["x"], "cause_frames": [0], "boxes": {0: [0, 0, 8, 8]}, "frame_size": [64, 64],
             "num_frames": frames}
    record = clip_grounding(model, still, [5, 6, 1], ["because", "x", "<eos>"], truth, deletion=False)
    assert record["shapley-clip-mean_temporal"] == pytest.approx(1 / frames)  # T tied frames, one of them the cause


def test_token_maps_relevancy_shapes_and_it_works_on_a_frozen_model():
    """Relevancy (gradient-weighted attention, `explanations.attention_relevancy`) for grid and pooled models;
    a fully frozen model (no parameter requires grad) still gets it, and its flags and grads stay as they were."""
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    ids = [5, 6, 7, 1]
    maps = token_maps(model, pixels, ids, [1, 2])
    assert maps.frames("relevancy").shape == (4,) and (maps.relevancy_frames >= 0).all()
    assert maps.relevancy_frames.sum() > 0
    assert maps.heatmaps("relevancy").shape == (4, 64, 64) and maps.relevancy_heatmaps.max() == pytest.approx(1.0)
    assert not any(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    pooled = tiny_model()
    pooled_maps = token_maps(pooled, tiny_pixels(pooled.config, batch=1), ids, [2])
    assert pooled_maps.relevancy_frames.shape == (4,) and pooled_maps.heatmaps("relevancy") is None


def test_gradcam_heatmap_peak_is_not_flattened_by_the_upsampling_clamp(monkeypatch):
    """Grad-CAM values above 1 (a score in large units, a confident trained model) used to be clamped to 1 before the
    pointing game, so every cell above 1 tied at the maximum; scaled by the clip maximum first, the peak stays
    within one cell."""
    import vidgpt2.grounding

    logprobs = vidgpt2.grounding._token_logprobs
    monkeypatch.setattr(vidgpt2.grounding, "_token_logprobs", lambda *args: 1e4 * logprobs(*args))
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    maps = token_maps(model, tiny_pixels(model.config, batch=1), [5, 6, 7, 1], [1, 2])
    heatmaps = maps.gradcam_heatmaps  # (4, 64, 64); feature map 2x2 -> 32x32 pixels per cell
    assert maps.gradcam_frames.max() > 4  # the raw Grad-CAM mass is far above 1
    assert heatmaps.max() == pytest.approx(1.0)
    assert (heatmaps >= heatmaps.max()).sum() <= 32 * 32


def test_clip_grounding_refuses_ground_truth_for_another_frame_count():
    """A model that samples 4 of a clip's 8 frames sees other frames than the ground truth indexes: refused (cause
    frames >= T used to be dropped silently and the rest scored against the wrong frames)."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    tokens = ["a", "red", "square", "because", "green", "circle"]
    ids = tokenizer.convert_tokens_to_ids(tokens) + [tokenizer.eos_token_id]
    truth = {"cause_words": ["circle"], "cause_frames": [2, 3], "boxes": {2: [0, 0, 32, 32], 3: [32, 32, 64, 64]},
             "frame_size": [64, 64]}
    with pytest.raises(ValueError, match="8 frames but pixel_values_videos has 4"):
        clip_grounding(model, pixels, ids, tokens + ["<eos>"], {**truth, "num_frames": 8})
    with pytest.raises(ValueError, match="a cause in frame 6"):  # older ground truth without num_frames
        late = {**truth, "cause_frames": [3, 6], "boxes": {3: [0, 0, 8, 8], 6: [0, 0, 8, 8]}}
        clip_grounding(model, pixels, ids, tokens + ["<eos>"], late)
    # truth of 4 frames with a cause in frame 5 said "has 4 frames but pixel_values_videos has 4 frames" (a new
    # user's try-out); it names the frame now
    with pytest.raises(ValueError, match="has a cause in frame 5 but pixel_values_videos has 4 frames"):
        late = {**truth, "cause_frames": [3, 5], "boxes": {3: [0, 0, 8, 8], 5: [0, 0, 8, 8]}, "num_frames": 4}
        clip_grounding(model, pixels, ids, tokens + ["<eos>"], late)
    assert clip_grounding(model, pixels, ids, tokens + ["<eos>"], {**truth, "num_frames": 4}) is not None


def test_token_maps_leave_integer_parameters_alone():
    """Quantized (integer) weights cannot require grad; token_maps must not try (it turns grads on for float ones)."""
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    model.register_parameter("int_weight", torch.nn.Parameter(torch.ones(3, dtype=torch.int8), requires_grad=False))
    maps = token_maps(model, tiny_pixels(model.config, batch=1), [5, 6, 7, 1], [1, 2])
    assert maps.relevancy_frames.shape == (4,) and not model.int_weight.requires_grad


def test_evaluate_grounding_refuses_ground_truth_that_is_not_the_datasets(tmp_path):
    """Ground truth read from another folder (same counts, so the same video ids) used to score clips against
    another clip's cause frames, with only per-clip warnings; no shared id returned an empty summary."""
    from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
    from vidgpt2.data import load_bddx
    from vidgpt2.data.synthetic_driving import read_ground_truth, write_driving_dataset
    from vidgpt2.grounding import evaluate_grounding

    folder = write_driving_dataset(tmp_path / "a", num_train=0, num_validation=0, num_test=2, num_frames=6, size=32,
                                   seed=0, progress=False)
    test = load_bddx(folder)["test"]
    video_processor = VidGPT2VideoProcessor(num_frames=6, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer())
    truth = read_ground_truth(folder)
    first = test[0]["video_id"]
    truth[first] = dict(truth[first], justification="because the road bends left")  # another clip's
    with pytest.raises(ValueError, match=f"clip '{first}' has the caption .* but its ground truth says"):
        evaluate_grounding(tiny_model(), processor, test, truth)
    with pytest.raises(ValueError, match="no clip of the dataset is in ground_truth"):
        evaluate_grounding(tiny_model(), processor, test, {"other-clip": truth[first]})
    # a new user's slips: the folder instead of its ground truth, and an empty split (it returned 0 clips silently)
    with pytest.raises(TypeError, match="pass read_ground_truth"):
        evaluate_grounding(tiny_model(), processor, test, str(folder))
    with pytest.raises(ValueError, match="the dataset holds no clips"):
        evaluate_grounding(tiny_model(), processor, test.select([]), truth)


def test_plot_grounding_draws_a_heatmap_row_per_method_and_the_temporal_only_scores(tmp_path):
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    maps = token_maps(model, pixels, [5, 6, 7, 1], [1, 2])
    truth = {"cause_frames": [1, 2], "boxes": {"1": [0, 0, 16, 16], "2": [8, 8, 24, 24]}, "frame_size": [32, 32]}
    frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    figure = plot_grounding(frames, maps, truth, str(tmp_path / "g.png"), title="clip")
    assert (tmp_path / "g.png").stat().st_size > 0
    heatmap_rows = [m for m in METHODS if maps.heatmaps(m) is not None]
    assert len(figure.axes) == 4 * len(heatmap_rows) + 1  # a frame per method row, then one temporal-only panel
    bars = figure.axes[-1]
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["occlusion", "shapley", "shapley-clip-mean"]
    assert len(bars.patches) == 3 * 4 + 2  # a bar per method and frame, a shaded span per cause frame
    # the box is drawn on the cause frames only, rescaled from the 32-px frame to the 64-px one
    boxes = [p for ax in figure.axes[:4] for p in ax.patches]
    assert [(p.get_width(), p.get_height()) for p in boxes] == [(32, 32), (32, 32)]


@pytest.mark.parametrize("frames", [1, 4, 8])
def test_plot_grounding_legend_of_the_temporal_panel_hides_no_bar(tmp_path, frames):
    """The legend sat in the panel's lower left, over the bars of frame 0: a negative Shapley value there (a frame
    that argues against the cause words, common in the clip-mean runs) was drawn under it. Pooled maps: attention and
    relevancy are temporal only too, five methods in the panel."""
    from matplotlib.transforms import Bbox

    from vidgpt2.grounding import TokenMaps

    rng = np.random.default_rng(0)
    scores = {name: rng.uniform(-1, 1, frames) for name in ("attention", "gradcam", "occlusion", "shapley", "clip")}
    for values in scores.values():
        values[0] = -1.0  # frame 0: the largest magnitude, negative, every method
    maps = TokenMaps(attention_frames=scores["attention"], attention_heatmaps=None, gradcam_frames=scores["gradcam"],
                     gradcam_heatmaps=np.zeros((frames, 16, 16)), occlusion_frames=scores["occlusion"],
                     shapley_frames=scores["shapley"], shapley_clip_mean_frames=scores["clip"],
                     relevancy_frames=scores["attention"])
    truth = {"cause_frames": [0], "boxes": {"0": [0, 0, 8, 8]}, "frame_size": [16, 16]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied": the 1-frame figure could not hold the legend
        figure = plot_grounding(np.zeros((frames, 16, 16, 3), dtype=np.uint8), maps, truth, str(tmp_path / "g.png"))
    panel = figure.axes[-1]
    figure.draw_without_rendering()  # the layout as saved
    legend = panel.get_legend().get_window_extent()
    bars = [p.get_window_extent() for container in panel.containers for p in container.patches]
    assert len(bars) == 5 * frames
    assert figure.bbox.contains(legend.x0, legend.y0) and figure.bbox.contains(legend.x1, legend.y1)  # not cut off
    assert not [b for b in bars if Bbox.intersection(b, legend) is not None and Bbox.intersection(b, legend).width > 0
                and Bbox.intersection(b, legend).height > 0]
