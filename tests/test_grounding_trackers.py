"""Grounding metrics against failures reported in other projects' issue trackers (issue 12): each test names the
behaviour and cites the report it is built from."""

import numpy as np
import pytest
import torch

import vidgpt2.grounding as grounding
from tests.tiny import tiny_model, tiny_pixels, tiny_tokenizer
from vidgpt2.grounding import (
    box_fraction,
    cause_token_positions,
    clip_grounding,
    spatial_hit,
    temporal_hit,
    token_maps,
    wilson_interval,
)

# "the light turns red" etc. as GPT-2's byte-level BPE writes it ("Ġ": a space before the token)
BPE_CAPTION = ["The", "Ġcar", "Ġstops", "Ġbecause", "Ġthe", "Ġped", "estrian", "Ġis", "Ġcrossing", ".", "<|endoftext|>"]


def test_cause_word_split_into_several_bpe_tokens_gives_every_token_of_it():
    # huggingface/transformers#21364, #12665: GPT-2 splits words it has no token for ("irving" -> "ir", "ving")
    assert cause_token_positions(BPE_CAPTION, ["pedestrian", "crossing"]) == [5, 6, 8]
    assert cause_token_positions(BPE_CAPTION, ["pedestrian"]) == [5, 6]
    assert cause_token_positions(BPE_CAPTION, ["ped"]) == []  # a piece of a word is not the word


def test_cause_words_match_across_case_punctuation_repeats_and_the_eos_token():
    # huggingface/transformers#12665: byte-level pre-tokenization splits punctuation and digits off a word
    tokens = ["ĠBecause", "Ġthe", "ĠLight", "Ġturns", "Ġred", ",", "Ġthe", "Ġlight", "!", "<|endoftext|>"]
    assert cause_token_positions(tokens, ["light", "red"]) == [2, 4, 7]  # both "light"s, "red" before the comma
    assert cause_token_positions(["because", "Ġthe", "Ġcar", "'s", "Ġlights"], ["car"]) == [2]  # "'s" stands alone
    glued = ["Ġbecause", "Ġthe", "Ġlight", "Ġturns", "Ġred", "<|endoftext|>"]  # the eos token follows "red" directly
    assert cause_token_positions(glued, ["red"]) == [4]
    # a cause word before "because" (the action's "car") is not the cause; word-level tokens are one word each
    assert cause_token_positions(["the", "car", "stops", "because", "the", "car", "ahead"], ["car"]) == [5]


def test_pointing_games_refuse_a_nan_map_instead_of_scoring_it_nan():
    # jacobgil/pytorch-grad-cam#214, frgfm/torch-cam#186 (max - min = 0 normalisation), pytorch/pytorch#41508
    # (fully masked attention rows): NaN maps; a NaN hit used to come back with only a numpy RuntimeWarning
    with pytest.raises(ValueError, match="frame_scores holds 1 NaN of 4"):
        temporal_hit([0.1, float("nan"), 0.3, 0.2], [2])
    heatmap = np.zeros((8, 8))
    heatmap[3, 3] = np.nan
    with pytest.raises(ValueError, match="heatmap holds 1 NaN of 64"):
        spatial_hit(heatmap, [0, 0, 4, 4])
    assert temporal_hit([0.1, float("inf"), 0.3, 0.2], [1]) == 1.0  # an infinite score still has a maximum


def test_all_zero_gradcam_scores_the_chance_rate_and_no_nan(monkeypatch):
    # jacobgil/pytorch-grad-cam#107, raghakot/keras-vis#35: relu leaves an all-zero cam, then cam / cam.max() is NaN
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    real = grounding._vision_feature_map
    monkeypatch.setattr(grounding, "_vision_feature_map", lambda m, p: torch.zeros_like(real(m, p)))
    maps = token_maps(model, pixels, [5, 6, 7, 1], [1, 2])
    assert np.all(maps.gradcam_frames == 0) and np.all(maps.gradcam_heatmaps == 0)
    assert temporal_hit(maps.gradcam_frames, [1, 2]) == 0.5  # ties share credit: 2 cause frames of 4
    assert spatial_hit(maps.gradcam_heatmaps[1], [0, 0, 16, 32]) == box_fraction([0, 0, 16, 32], 64, 64)


def test_spatial_ties_share_credit_on_a_plateau_across_the_box_edge_of_a_wide_heatmap():
    # understandable-machine-intelligence-lab/Quantus#43: several maximal points took the first one; masks were
    # assumed square
    heatmap = np.zeros((4, 8))  # (H, W): wide, so x and y cannot be swapped unnoticed
    heatmap[1, 2:6] = 1.0  # a plateau of 4 pixels at y = 1, x = 2..5
    assert spatial_hit(heatmap, [4, 0, 8, 4]) == 0.5  # x 4..7 holds 2 of the 4
    assert spatial_hit(heatmap, [0, 1, 8, 2]) == 1.0  # the row y = 1
    assert spatial_hit(heatmap, [0, 2, 8, 4]) == 0.0
    with pytest.raises(ValueError, match="outside the 8x4 heatmap"):
        spatial_hit(heatmap, [0, 0, 4, 8])  # a box for the transposed (8, 4) map
    assert spatial_hit(heatmap, [6, 0, 8, 4]) == 0.0 and spatial_hit(np.ones((4, 8)), [6, 2, 8, 4]) == 4 / 32


def test_box_at_the_frame_border_stays_inside_after_rescaling():
    # albumentations-team/albumentations#459, bit-bots/imagetagger#105: a box ending at the image border ends past
    # it after rescaling in floats; 50 * (56 / 50) = 56.00000000000001, ceiling 57 > 56
    from vidgpt2.grounding import scale_box

    assert scale_box([25, 30, 50, 50], [50, 50], [56, 56]) == [28, 33, 56, 56]
    assert scale_box([0, 0, 1, 1], [50, 50], [56, 56]) == [0, 0, 2, 2]  # ends round up: the box keeps its pixel
    assert scale_box([10, 0, 20, 8], [8, 40], [16, 80]) == [20, 0, 40, 16]  # (H, W) = (8, 40): x by W, y by H
    with pytest.raises(ValueError, match="outside the 50x50 frame"):
        scale_box([25, 30, 51, 50], [50, 50], [56, 56])


def test_clip_grounding_scores_a_cause_box_at_the_border_of_a_frame_drawn_at_another_size():
    # albumentations-team/albumentations#459: the rescaled box [28, 28, 57, 57] was refused by spatial_hit
    tokenizer = tiny_tokenizer()
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=56)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 56, 56), the ground truth drawn at 50 x 50
    tokens = ["a", "red", "square", "because", "green", "circle"]
    ids = tokenizer.convert_tokens_to_ids(tokens) + [tokenizer.eos_token_id]
    truth = {"cause_words": ["circle"], "cause_frames": [2, 3], "boxes": {2: [25, 25, 50, 50], 3: [25, 25, 50, 50]},
             "frame_size": [50, 50]}
    record = clip_grounding(model, pixels, ids, tokens + ["<eos>"], truth, deletion=False)
    assert record["grad-cam_spatial_chance"] == box_fraction([28, 28, 56, 56], 56, 56) == 0.25


def test_token_maps_return_attention_from_an_sdpa_model_and_leave_it_sdpa():
    # huggingface/transformers#31990, PR #33660: SDPA returns no attention weights; transformers 5 needs eager
    model = tiny_model(visual_tokens="grid", grid_size=2, image_size=64)
    assert model.config.text_config._attn_implementation == "sdpa"
    pixels = tiny_pixels(model.config, batch=1)
    sdpa = token_maps(model, pixels, [5, 6, 7, 1], [1, 2])
    assert model.config.text_config._attn_implementation == "sdpa"
    assert sdpa.attention_frames.sum() == pytest.approx(1.0, abs=1e-5)  # a mean of softmax rows over frames
    model.set_attn_implementation("eager")
    assert model.config.text_config._attn_implementation == "eager"
    eager = token_maps(model, pixels, [5, 6, 7, 1], [1, 2])
    for method in ("attention", "relevancy", "grad-cam"):
        np.testing.assert_allclose(sdpa.frames(method), eager.frames(method), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(sdpa.heatmaps(method), eager.heatmaps(method), atol=1e-5)


def test_wilson_interval_stays_in_unit_range_at_the_reported_edge_counts():
    # statsmodels/statsmodels#10010 (38 of 38 gave 1.0000000000000002, 0 of 77 gave -3.5e-18);
    # instacart/wilson_score#3 (0 of 0 gave an obscure error)
    assert wilson_interval(38, 38)[1] == 1.0 and wilson_interval(0, 77)[0] == 0.0
    assert 0.0 < wilson_interval(38, 38)[0] < 1.0 and 0.0 < wilson_interval(0, 77)[1] < 0.05
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(float("nan"), 5)
