"""visual_tokens="grid" (issue 12 item 2): a g x g adaptive-pooled grid of tokens per frame."""

import pytest
import torch
from torch.nn import functional as F

from tests.tiny import tiny_config, tiny_model, tiny_pixels
from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration
from vidgpt2.data.feature_cache import vision_fingerprint
from vidgpt2.explanations import explain


def grid_model(grid_size=2, image_size=96, **overrides):
    return tiny_model(visual_tokens="grid", grid_size=grid_size, image_size=image_size, **overrides)


def test_grid_features_are_block_means_of_the_feature_map():
    model = grid_model(grid_size=2, image_size=96)  # 3x3 feature map -> 2x2 grid of overlapping blocks
    pixels = tiny_pixels(model.config, batch=2)  # (2, 4, 3, 96, 96)
    features = model.get_video_features(pixels).pooler_output
    assert features.shape == (2, 4, 4, 32)  # (B, T, g*g, C)
    fmap = model.encoder.vision_tower(pixels.flatten(0, 1)).last_hidden_state  # (8, 32, 3, 3)
    assert fmap.shape[-2:] == (3, 3)
    # adaptive pooling of 3 cells into 2: blocks [0, 2) and [1, 3)
    top_left = fmap[:, :, 0:2, 0:2].mean((2, 3)).view(2, 4, 32)
    bottom_right = fmap[:, :, 1:3, 1:3].mean((2, 3)).view(2, 4, 32)
    torch.testing.assert_close(features[:, :, 0], top_left)
    torch.testing.assert_close(features[:, :, 3], bottom_right)
    torch.testing.assert_close(features, F.adaptive_avg_pool2d(fmap, 2).flatten(2).transpose(1, 2).reshape(2, 4, 4, 32))


def test_grid_tokens_shapes_and_token_count():
    model = grid_model(grid_size=2, image_size=96)
    assert model.config.tokens_per_frame == 4 and model.config.token_grid == 2
    spatial = tiny_model(visual_tokens="spatial", image_size=96)
    assert spatial.config.tokens_per_frame == 9
    pixels = tiny_pixels(model.config)
    out = model.encoder(pixel_values_videos=pixels)
    assert out.last_hidden_state.shape == (2, 4 * 4, 32)  # (B, T * g*g, d)
    labels = torch.tensor([[5, 6, 7, 1], [6, 7, 8, 1]])
    assert model(pixel_values_videos=pixels, labels=labels).logits.shape == (2, 4, model.config.text_config.vocab_size)
    ids = model.generate(pixel_values_videos=pixels, max_new_tokens=3)
    assert ids.shape[0] == 2


def test_grid_size_one_is_pooled_plus_one_embedding():
    model = grid_model(grid_size=1, image_size=96)
    pixels = tiny_pixels(model.config)
    pooled = model.get_video_features(pixels).pooler_output[:, :, 0]
    fmap = model.encoder.vision_tower(pixels.flatten(0, 1)).last_hidden_state
    torch.testing.assert_close(pooled, fmap.mean((2, 3)).view(2, 4, -1))


def test_grid_save_load_round_trip(tmp_path):
    model = grid_model(grid_size=2, image_size=96)
    model.save_pretrained(tmp_path)
    again = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.visual_tokens == "grid" and again.config.grid_size == 2
    pixels = tiny_pixels(model.config)
    labels = torch.tensor([[5, 6, 1], [6, 7, 1]])
    with torch.no_grad():
        torch.testing.assert_close(
            model(pixel_values_videos=pixels, labels=labels).logits,
            again(pixel_values_videos=pixels, labels=labels).logits,
        )


def test_grid_gradients_reach_the_spatial_embedding_and_the_tower():
    model = grid_model(grid_size=2, image_size=96, freeze_vision=False).train()
    labels = torch.tensor([[5, 6, 1], [6, 7, 1]])
    model(pixel_values_videos=tiny_pixels(model.config), labels=labels).loss.backward()
    assert model.encoder.spatial_embedding.weight.grad.abs().sum() > 0
    assert model.encoder.projection.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.vision_tower.parameters())


def test_grid_features_are_checked():
    model = grid_model(grid_size=2, image_size=96)
    with pytest.raises(ValueError, match=r"\(batch, frames, 4, 32\)"):
        model(video_features=torch.zeros(1, 4, 9, 32), labels=torch.tensor([[5, 1]]))


def test_grid_config_is_validated():
    with pytest.raises(ValueError, match="grid_size"):
        tiny_config(visual_tokens="grid", grid_size=0)
    with pytest.raises(ValueError, match="feature-map side 1"):
        tiny_config(visual_tokens="grid", grid_size=2, image_size=32)
    # grid_size is ignored (not checked against the feature map) for the other modes
    assert tiny_config(visual_tokens="pooled", grid_size=4).tokens_per_frame == 1
    config = VidGPT2Config.from_dict(tiny_config(visual_tokens="grid", grid_size=2, image_size=96).to_dict())
    assert config.tokens_per_frame == 4


def test_feature_cache_fingerprint_depends_on_grid_size():
    a, b = grid_model(grid_size=2, image_size=128), grid_model(grid_size=3, image_size=128)
    b.encoder.vision_tower.load_state_dict(a.encoder.vision_tower.state_dict())
    assert vision_fingerprint(a) != vision_fingerprint(b)


def test_cross_attention_explanation_on_grid_cells():
    model = grid_model(grid_size=2, image_size=96)
    explanation = explain(model, pixel_values_videos=tiny_pixels(model.config, batch=1), max_new_tokens=3)
    assert explanation.method == "cross-attention"
    assert explanation.heatmap_grid.shape == (4, 2, 2)
    assert explanation.heatmaps.shape == (4, 96, 96)
    grad_cam = explain(model, pixel_values_videos=tiny_pixels(model.config, batch=1), max_new_tokens=3, method="grad-cam")
    assert grad_cam.heatmap_grid.shape == (4, 3, 3)  # Grad-CAM stays at the tower's resolution


def test_grid_pooling_of_a_channels_last_map_matches_contiguous_forward_and_backward():
    """The tower runs channels_last (get_video_features); adaptive pooling backward on channels_last inputs has been
    wrong on some backends (pytorch/pytorch#189233, MPS): the grid's gradients must match the contiguous ones."""
    x = torch.randn(3, 8, 3, 3)
    a = x.clone().requires_grad_(True)
    b = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    grad_out = torch.randn(3, 8, 2, 2)
    out_a, out_b = F.adaptive_avg_pool2d(a, 2), F.adaptive_avg_pool2d(b, 2)
    torch.testing.assert_close(out_a, out_b)
    (out_a * grad_out).sum().backward()
    (out_b * grad_out).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
