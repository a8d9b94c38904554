"""visual_tokens="motion" (issue 12 item 2): one token per frame from its mean feature plus the change of its
g x g feature grid since the previous frame, so which way the scene moves is readable at pooled cost."""

import pytest
import torch
from torch.nn import functional as F

from tests.tiny import tiny_config, tiny_model, tiny_pixels
from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration
from vidgpt2.data.feature_cache import vision_fingerprint
from vidgpt2.explanations import explain
from vidgpt2.grounding import token_maps

LABELS = torch.tensor([[5, 6, 7, 1], [6, 7, 8, 1]])


def motion_model(grid_size=2, image_size=96, **overrides):
    return tiny_model(visual_tokens="motion", grid_size=grid_size, image_size=image_size, **overrides)


def test_motion_features_shapes_and_one_token_per_frame():
    model = motion_model()
    config = model.config
    assert config.tokens_per_frame == 1 and config.token_grid == 1 and config.feature_grid == 2
    assert model.encoder.spatial_embedding is None
    assert model.encoder.motion_projection.in_features == 2 * 2 * 32  # g*g*C
    pixels = tiny_pixels(config)  # (2, 4, 3, 96, 96)
    features = model.get_video_features(pixels).pooler_output
    assert features.shape == (2, 4, 4, 32)  # (B, T, g*g, C): the grid features, as for visual_tokens="grid"
    fmap = model.encoder.vision_tower(pixels.flatten(0, 1)).last_hidden_state  # (8, 32, 3, 3)
    torch.testing.assert_close(features, F.adaptive_avg_pool2d(fmap, 2).flatten(2).transpose(1, 2).reshape(2, 4, 4, 32))
    with torch.no_grad():
        tokens = model.encoder(pixel_values_videos=pixels).last_hidden_state
        assert tokens.shape == (2, 4, 32)  # (B, T, d)
        torch.testing.assert_close(tokens, model.encoder(video_features=features).last_hidden_state)
        assert model(pixel_values_videos=pixels, labels=LABELS).logits.shape == (2, 4, config.text_config.vocab_size)
    assert model.generate(pixel_values_videos=pixels, max_new_tokens=3).shape[0] == 2


def test_motion_token_is_appearance_plus_projected_grid_change():
    model = motion_model()
    features = torch.randn(1, 4, 4, 32)
    encoder = model.encoder
    with torch.no_grad():
        raw = encoder.motion_tokens(features)  # (1, 4, d) before the LayerNorm
        change = features[:, 2] - features[:, 1]  # (1, 4, 32)
        expected = encoder.projection(features[:, 2].mean(1)) + encoder.motion_projection(change.flatten(1))
        torch.testing.assert_close(raw[:, 2], expected)
        # the first frame has no previous one: only its appearance (the motion projection's bias)
        first = encoder.projection(features[:, 0].mean(1)) + encoder.motion_projection.bias
        torch.testing.assert_close(raw[:, 0], first)


def test_motion_tokens_see_which_way_the_content_moves_pooled_tokens_do_not():
    """Two clips whose frames hold the same content, left and right halves swapped in the opposite order: every
    frame's mean feature is the same in both, so pooled tokens are identical; the direction is only in the change."""
    cells = torch.randn(1, 1, 4, 32)  # (1, 1, g*g, C): cells top-left, top-right, bottom-left, bottom-right
    swapped = cells[:, :, [1, 0, 3, 2]]  # the left and right halves exchanged
    slides_one_way = torch.cat([cells, swapped, cells, swapped], dim=1)  # (1, T=4, 4, C)
    slides_other_way = torch.cat([swapped, cells, swapped, cells], dim=1)
    pooled = tiny_model(image_size=96)
    motion = motion_model()
    with torch.no_grad():
        a = pooled.encoder(video_features=slides_one_way.mean(2)).last_hidden_state
        b = pooled.encoder(video_features=slides_other_way.mean(2)).last_hidden_state
        torch.testing.assert_close(a, b)
        a = motion.encoder(video_features=slides_one_way).last_hidden_state  # (1, 4, d)
        b = motion.encoder(video_features=slides_other_way).last_hidden_state
    assert (a - b).abs().amax(-1).min() > 1e-3, "every frame's token must differ (the visual layer mixes frames)"
    encoder = motion.encoder
    with torch.no_grad():
        raw_a, raw_b = encoder.motion_tokens(slides_one_way), encoder.motion_tokens(slides_other_way)
    torch.testing.assert_close(raw_a[:, 0], raw_b[:, 0])  # frame 0: no change yet, same appearance
    assert (raw_a[:, 1:] - raw_b[:, 1:]).abs().amax() > 1e-3


def test_motion_save_load_round_trip_gives_identical_logits(tmp_path):
    model = motion_model(grid_size=3)
    model.save_pretrained(tmp_path)
    again = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.visual_tokens == "motion" and again.config.grid_size == 3
    pixels = tiny_pixels(model.config)
    with torch.no_grad():
        torch.testing.assert_close(
            model(pixel_values_videos=pixels, labels=LABELS).logits,
            again(pixel_values_videos=pixels, labels=LABELS).logits,
            rtol=0,
            atol=0,
        )


def test_motion_gradients_reach_the_motion_projection_and_the_tower():
    model = motion_model(freeze_vision=False).train()
    model(pixel_values_videos=tiny_pixels(model.config), labels=LABELS).loss.backward()
    assert model.encoder.motion_projection.weight.grad.abs().sum() > 0
    assert model.encoder.projection.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.vision_tower.parameters())


def test_motion_features_and_config_are_checked():
    model = motion_model()
    with pytest.raises(ValueError, match=r"\(batch, frames, 4, 32\)"):
        model(video_features=torch.zeros(1, 4, 32), labels=torch.tensor([[5, 1]]))  # pooled features
    with pytest.raises(ValueError, match=r"\(batch, frames, 4, 32\)"):
        model(video_features=torch.zeros(1, 4, 9, 32), labels=torch.tensor([[5, 1]]))  # spatial 3x3 features
    with pytest.raises(ValueError, match="feature-map side 1"):
        tiny_config(visual_tokens="motion", grid_size=2, image_size=32)
    with pytest.raises(ValueError, match="visual_tokens"):
        tiny_config(visual_tokens="flow")
    config = VidGPT2Config.from_dict(tiny_config(visual_tokens="motion", grid_size=2, image_size=96).to_dict())
    assert config.visual_tokens == "motion" and config.tokens_per_frame == 1 and config.feature_grid == 2


def test_feature_cache_fingerprint_tells_motion_from_grid():
    grid = tiny_model(visual_tokens="grid", grid_size=2, image_size=96)
    motion = motion_model()
    motion.encoder.vision_tower.load_state_dict(grid.encoder.vision_tower.state_dict())
    assert vision_fingerprint(grid) != vision_fingerprint(motion)


def test_motion_explanations_map_tokens_back_to_frames():
    model = motion_model()
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 96, 96)
    explanation = explain(model, pixel_values_videos=pixels, max_new_tokens=3)
    assert explanation.method == "grad-cam"  # one token per frame: where in the frame comes from Grad-CAM
    assert explanation.heatmap_grid.shape == (4, 3, 3) and explanation.heatmaps.shape == (4, 96, 96)
    assert explanation.frame_attention.shape == (4,)
    assert explanation.frame_attention.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="method='cross-attention' needs"):
        explain(model, pixel_values_videos=pixels, max_new_tokens=3, method="cross-attention")
    maps = token_maps(model, pixels, [5, 6, 7, 1], [1, 2])
    assert maps.attention_frames.shape == (4,) and maps.attention_heatmaps is None
    assert maps.gradcam_frames.shape == (4,) and maps.gradcam_heatmaps.shape == (4, 96, 96)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_motion_tokens_export_to_onnx_and_match_pytorch(tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed: pip install 'vidgpt2[onnx]'")
    pytest.importorskip("onnxscript", reason="the `onnx` extra is not installed: pip install 'vidgpt2[onnx]'")
    from vidgpt2.onnx import DEFAULT_ATOL, export_onnx

    # 96 px: a 3x3 feature map pooled to 2x2, an output size that does not divide the input, which the TorchScript
    # exporter refused for adaptive_avg_pool2d (pytorch/pytorch#42653, #64806); the dynamo exporter handles it
    model = motion_model(image_size=96)
    with torch.no_grad():
        model.decoder.lm_head.weight[0].fill_(0.0)  # eos never wins: several greedy steps run
    report = export_onnx(model, tmp_path)
    assert report.greedy_tokens_match and max(report.max_abs_diff.values()) < DEFAULT_ATOL


def test_occluding_a_frame_changes_its_motion_token_and_the_next_one_only():
    """What `occlusion_frame_scores` documents for motion tokens: frame t reaches tokens t and t + 1."""
    from vidgpt2.explanations import occlusion_frame_scores

    model = motion_model(num_visual_layers=0)  # no visual self-attention: token t sees frames t - 1 and t only
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 96, 96)
    occluded = pixels.clone()
    occluded[0, 1] = 0.0
    with torch.no_grad():
        before = model.encoder(pixel_values_videos=pixels).last_hidden_state[0]  # (T, d)
        after = model.encoder(pixel_values_videos=occluded).last_hidden_state[0]
    changed = (before - after).abs().amax(-1) > 1e-6  # (T,)
    assert changed.tolist() == [False, True, True, False]
    scores = occlusion_frame_scores(model, pixels, LABELS[0])
    assert scores.shape == (4, 4) and scores.abs().sum() > 0
