"""Explanations: cross-attention over frames, Grad-CAM heatmaps, faithfulness, figures."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vidgpt2.explanations
from tests.tiny import tiny_model, tiny_pixels, tiny_tokenizer
from vidgpt2.explanations import (
    SHAPLEY_EXACT_MAX_FRAMES,
    Explanation,
    caption_logprobs,
    denormalize_frames,
    explain,
    faithfulness,
    mean_faithfulness,
    occlusion_frame_scores,
    plot_explanation,
    save_explanation,
    shapley_frame_scores,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GENERATE = dict(min_new_tokens=3, max_new_tokens=5)  # untrained tiny models would otherwise stop at once


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny ops gain nothing from threads, and on a busy 2-core machine a second thread only spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _explain(model, pixels, **kwargs) -> Explanation:
    return explain(model, None, pixel_values_videos=pixels, tokenizer=tiny_tokenizer(), **GENERATE, **kwargs)


@pytest.fixture(scope="module")
def pooled():
    model = tiny_model(image_size=64)  # 64 px -> 2x2 feature map: Grad-CAM has cells to tell apart
    pixels = tiny_pixels(model.config, batch=1)
    return model, pixels, _explain(model, pixels)


@pytest.fixture(scope="module")
def spatial():
    model = tiny_model(visual_tokens="spatial", image_size=64)
    pixels = tiny_pixels(model.config, batch=1)
    return model, pixels, _explain(model, pixels)


# --- what explain returns ------------------------------------------------------------------------------------------
def test_pooled_model_gets_grad_cam_with_the_documented_shapes(pooled):
    model, pixels, expl = pooled
    n = len(expl.tokens)
    assert expl.method == "grad-cam" and expl.token_heatmaps is None
    assert 3 <= n <= 5 and len(expl.token_ids) == n
    assert expl.token_frame_attention.shape == (n, 4) and expl.frame_attention.shape == (4,)
    assert expl.heatmaps.shape == (4, 64, 64) and expl.heatmap_grid.shape == (4, 2, 2)
    assert expl.frames.shape == (4, 64, 64, 3) and expl.frames.dtype == np.uint8
    np.testing.assert_allclose(expl.token_frame_attention.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(expl.frame_attention.sum(), 1.0, atol=1e-5)
    tokenizer = tiny_tokenizer()
    assert expl.caption == tokenizer.decode(expl.caption_ids, skip_special_tokens=True)
    assert expl.tokens == [tokenizer.convert_ids_to_tokens(i) for i in expl.token_ids]
    assert expl.caption_ids[: len(expl.token_ids)] == expl.token_ids
    # Grad-CAM: in [0, 1], scaled by its maximum over the video, and not flat
    assert expl.heatmaps.min() >= 0.0 and expl.heatmaps.max() <= 1.0
    assert expl.heatmap_grid.max() == pytest.approx(1.0) and expl.heatmaps.std() > 0.05


def test_spatial_model_gets_cross_attention_heatmaps(spatial):
    _, _, expl = spatial
    n = len(expl.tokens)
    assert expl.method == "cross-attention"
    assert expl.token_heatmaps.shape == (n, 4, 2, 2)
    # per token the cells of all frames hold the whole distribution; summing a frame's cells gives its row entry
    np.testing.assert_allclose(expl.token_heatmaps.sum((1, 2, 3)), 1.0, atol=1e-5)
    np.testing.assert_allclose(expl.token_heatmaps.sum((2, 3)), expl.token_frame_attention, atol=1e-6)
    mean_map = expl.token_heatmaps.mean(0)
    np.testing.assert_allclose(expl.heatmap_grid, mean_map / mean_map.max(), atol=1e-5)
    assert expl.heatmaps.shape == (4, 64, 64) and 0.0 <= expl.heatmaps.min() and expl.heatmaps.max() <= 1.0


@pytest.mark.parametrize("fixture", ["pooled", "spatial"])
@pytest.mark.parametrize("layers", ["mean", "last", 0])
def test_attention_matches_a_manual_computation(fixture, layers, request):
    model, pixels, expl = request.getfixturevalue(fixture)
    if layers != "mean":
        expl = _explain(model, pixels, layers=layers)
    labels = torch.tensor([expl.caption_ids])
    with torch.no_grad():
        out = model(pixel_values_videos=pixels, labels=labels, output_attentions=True)
    maps = torch.stack(out.cross_attentions)[:, 0]  # (layers, heads, L, N)
    maps = maps.mean(1)  # heads
    maps = maps.mean(0) if layers == "mean" else maps[-1] if layers == "last" else maps[layers]  # (L, N)
    n = len(expl.tokens)
    per_frame = maps[:n].reshape(n, 4, model.config.tokens_per_frame).sum(-1)  # (n, T)
    np.testing.assert_allclose(expl.token_frame_attention, per_frame.numpy(), atol=1e-5)
    logp = torch.log_softmax(out.logits[0], -1).gather(-1, labels[0, :, None])[:, 0]
    np.testing.assert_allclose(expl.token_logprobs, logp.numpy(), atol=1e-4)


def test_grad_cam_matches_a_hook_on_a_trainable_vision_tower():
    model = tiny_model(image_size=64, freeze_vision=False)
    pixels = tiny_pixels(model.config, batch=1)
    expl = _explain(model, pixels)
    captured = {}

    def keep_feature_map(module, args, output):
        output.last_hidden_state.retain_grad()
        captured["map"] = output.last_hidden_state

    handle = model.encoder.vision_tower.register_forward_hook(keep_feature_map)
    out = model(pixel_values_videos=pixels, labels=torch.tensor([expl.caption_ids]))
    handle.remove()
    logp = torch.log_softmax(out.logits[0], -1).gather(-1, torch.tensor(expl.caption_ids)[:, None]).sum()
    logp.backward()
    feature_map, grads = captured["map"].detach(), captured["map"].grad  # (T, C, h, w)
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * feature_map).sum(1))  # (T, h, w)
    np.testing.assert_allclose(expl.heatmap_grid, (cam / cam.max()).numpy(), atol=1e-4)


def test_explain_leaves_modes_gradients_and_flags_as_they_were():
    model = tiny_model(image_size=64, num_visual_layers=1)
    model.train()  # the frozen vision tower stays in eval mode; dropout elsewhere is on
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert not model.encoder.vision_tower.training and model.decoder.training
    pixels = tiny_pixels(model.config, batch=1)
    first = _explain(model, pixels)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    # the explanation ran in eval mode: dropout does not make two explanations differ
    np.testing.assert_array_equal(first.token_frame_attention, _explain(model, pixels).token_frame_attention)


# --- inputs --------------------------------------------------------------------------------------------------------
class StubProcessor:
    """The processor interface explain() relies on: videos -> pixel_values_videos, a tokenizer, mean/std."""

    def __init__(self):
        self.tokenizer = tiny_tokenizer()
        self.video_processor = self
        self.image_mean, self.image_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        self.calls = []

    def __call__(self, videos=None, return_tensors=None, num_frames=None, **kwargs):
        self.calls.append(dict(num_frames=num_frames, **kwargs))
        frames = torch.as_tensor(videos, dtype=torch.float32)[: num_frames or 4] / 255  # (T, H, W, 3)
        pixels = (frames.permute(0, 3, 1, 2) - 0.5) / 0.25  # (T, 3, H, W)
        return {"pixel_values_videos": pixels[None]}


def test_explain_takes_a_video_through_the_processor_and_shows_its_frames():
    model = tiny_model()
    processor = StubProcessor()
    video = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    expl = explain(model, processor, video, num_frames=3, **GENERATE)
    assert processor.calls == [{"num_frames": 3}]
    assert expl.frame_attention.shape == (3,) and all(isinstance(t, str) for t in expl.tokens)
    np.testing.assert_array_equal(expl.frames, video[:3])  # denormalised with the processor's mean/std


def test_without_a_tokenizer_tokens_are_ids(pooled):
    model, pixels, _ = pooled
    expl = explain(model, None, pixel_values_videos=pixels[0], **GENERATE)  # (T, 3, H, W) is fine too
    assert expl.tokens == [str(i) for i in expl.token_ids]
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    normalised = torch.as_tensor(frames).permute(0, 3, 1, 2) / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]
    normalised = normalised / torch.tensor(IMAGENET_STD)[:, None, None]
    np.testing.assert_array_equal(denormalize_frames(normalised), frames)  # ImageNet by default


def test_bad_inputs_raise_clear_errors(pooled):
    model, pixels, expl = pooled
    with pytest.raises(ValueError, match="exactly one of"):
        explain(model, None)
    with pytest.raises(ValueError, match="one video"):
        explain(model, None, pixel_values_videos=pixels.repeat(2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="visual_tokens='spatial'"):
        explain(model, None, pixel_values_videos=pixels, method="cross-attention")
    with pytest.raises(ValueError, match="k=9"):
        faithfulness(model, expl, pixels, k=9)
    with pytest.raises(ValueError, match="caption_ids"):
        faithfulness(model, [0.1, 0.2, 0.3, 0.4], pixels)


# --- an explanation that is verifiably right -----------------------------------------------------------------------
KEY_FRAME = 2
TOY_CAPTIONS = ["a red square turns blue", "a green circle grows", "a blue circle shrinks"]
TOY_COLOURS = torch.tensor([[2.0, -1.5, -1.5], [-1.5, 2.0, -1.5], [-1.5, -1.5, 2.0]])  # normalised RGB


def _toy_clips(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame is a flat colour from the palette plus noise; only frame KEY_FRAME's colour decides the caption."""
    classes = torch.randint(0, 3, (n,), generator=generator)
    distractors = torch.randint(0, 3, (n, 4), generator=generator)
    colours = TOY_COLOURS[distractors]  # (n, T, 3)
    colours[:, KEY_FRAME] = TOY_COLOURS[classes]
    pixels = colours[..., None, None] + 0.3 * torch.randn(n, 4, 3, 32, 32, generator=generator)  # (n, T, 3, 32, 32)
    return pixels, classes


@pytest.fixture(scope="module")
def toy():
    """A tiny pooled captioner trained (~1.5 s) to name the colour of frame 2, ignoring the other frames."""
    tokenizer = tiny_tokenizer()
    ids = [tokenizer(c)["input_ids"] + [tokenizer.eos_token_id] for c in TOY_CAPTIONS]
    width = max(map(len, ids))
    caption_labels = torch.tensor([x + [-100] * (width - len(x)) for x in ids])  # (3, L)
    # no visual self-attention layer: visual token t is frame t alone, so attention to token t is attention to frame t
    model = tiny_model(num_visual_layers=0, visual_dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    pixels, classes = _toy_clips(256, generator)
    with torch.no_grad():
        features = model.get_video_features(pixels).pooler_output  # frozen tower: cache once
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(120):
        batch = torch.randint(0, len(pixels), (32,), generator=generator)
        loss = model(video_features=features[batch], labels=caption_labels[classes[batch]]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().zero_grad(set_to_none=True)
    test_pixels, test_classes = _toy_clips(12, torch.Generator().manual_seed(1))
    explanations = [
        explain(model, None, pixel_values_videos=p, tokenizer=tokenizer, max_new_tokens=8) for p in test_pixels
    ]
    return model, list(test_pixels), test_classes, explanations


def test_trained_toy_attention_points_at_the_frame_that_decides_the_caption(toy):
    _, _, classes, explanations = toy
    correct = [e.caption == TOY_CAPTIONS[c] for e, c in zip(explanations, classes.tolist(), strict=True)]
    assert np.mean(correct) >= 0.75, "the toy model did not learn its task; the test below would mean nothing"
    mean_attention = np.mean([e.frame_attention for e in explanations], axis=0)  # (T,)
    assert mean_attention.argmax() == KEY_FRAME
    assert np.mean([e.frame_attention.argmax() == KEY_FRAME for e in explanations]) >= 0.5


def test_trained_toy_masking_the_top_ranked_frame_hurts_most(toy):
    model, pixels, _, explanations = toy
    result = mean_faithfulness(model, explanations, pixels, k=1)
    assert result["num_clips"] == 12 and result["k"] == 1
    assert result["drop_top"] > 1.0  # nats: the caption becomes far less likely without frame 2
    assert result["drop_top"] > result["drop_random"] > result["drop_bottom"]
    assert abs(result["drop_bottom"]) < 0.1 * result["drop_top"]
    single = faithfulness(model, explanations[0], pixels[0], k=1, baseline="clip_mean")
    assert set(single) == {"drop_top", "drop_bottom", "drop_random", "k", "logp"}
    assert all(p.grad is None for p in model.parameters())


# --- figures and files ---------------------------------------------------------------------------------------------
def test_plot_and_save_write_png_json_and_html(spatial, tmp_path):
    _, _, expl = spatial
    figure = plot_explanation(expl, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 4 + 2  # frames, token matrix, colorbar
    assert expl.caption in figure._suptitle.get_text()
    paths = save_explanation(expl, tmp_path / "out", "clip")
    assert {p.name for p in paths.values()} == {"clip.png", "clip.json", "clip.html"}
    assert paths["png"].stat().st_size > 1000
    saved = json.loads(paths["json"].read_text())
    assert saved == json.loads(json.dumps(expl.to_dict()))
    assert saved["tokens"] == expl.tokens and np.allclose(saved["token_frame_attention"], expl.token_frame_attention)
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and page.count("<tr>") >= len(expl.tokens) + 1


def test_matplotlib_is_imported_only_inside_the_plotting_functions():
    tree = ast.parse(Path(vidgpt2.explanations.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    ]
    assert names and not any("matplotlib" in (name or "") for name in names)


# --- occlusion -----------------------------------------------------------------------------------------------------
def _occlusion_model(visual_tokens: str):
    extra = {"grid_size": 2} if visual_tokens in ("grid", "motion") else {}
    return tiny_model(visual_tokens=visual_tokens, image_size=64, **extra)


@pytest.mark.parametrize("visual_tokens", ["pooled", "grid", "motion", "spatial"])
def test_occlusion_scores_shapes_match_one_at_a_time_scoring_and_need_no_gradients(visual_tokens):
    model = _occlusion_model(visual_tokens)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    ids = [5, 6, 7, 1]
    with torch.inference_mode():
        scores = occlusion_frame_scores(model, pixels, ids)  # one batch of T + 1 videos
    assert scores.shape == (4, 4) and scores.dtype == torch.float32
    assert scores.abs().max() > 0  # an untrained model still reads its frames
    labels = torch.tensor([ids])
    with torch.no_grad():  # the definition, one video at a time
        reference = caption_logprobs(model, labels, pixel_values_videos=pixels)[0]  # (L,)
        for t in range(4):
            occluded = pixels.clone()
            occluded[0, t] = 0.0  # the dataset-mean flat frame in normalised space
            drop = reference - caption_logprobs(model, labels, pixel_values_videos=occluded)[0]
            np.testing.assert_allclose(scores[:, t].numpy(), drop.numpy(), atol=1e-4)
    np.testing.assert_allclose(occlusion_frame_scores(model, pixels[0], ids, batch_size=2).numpy(), scores.numpy(),
                               atol=1e-4)  # (T, 3, H, W) input, several passes: the same
    assert all(p.grad is None for p in model.parameters())


def test_occlusion_ranks_first_the_only_frame_the_score_depends_on(monkeypatch):
    """A scorer whose log-probs depend on frame 1 only: occluding it is the only drop, per word."""
    weights = torch.tensor([0.5, 2.0, 1.0])  # per word

    def frame_one_scorer(model, labels, pixel_values_videos):
        evidence = pixel_values_videos[:, 1].abs().mean(dim=(1, 2, 3))  # (B,)
        return evidence[:, None] * weights[None, : labels.shape[1]]  # (B, L)

    monkeypatch.setattr(vidgpt2.explanations, "caption_logprobs", frame_one_scorer)
    model = tiny_model()
    pixels = torch.ones(1, 4, 3, 8, 8)
    scores = occlusion_frame_scores(model, pixels, [5, 6, 1])  # (3, 4)
    expected = torch.zeros(3, 4)
    expected[:, 1] = weights  # evidence 1 -> 0 when frame 1 is flat
    torch.testing.assert_close(scores, expected)
    assert scores.sum(0).argmax() == 1
    clip_mean = occlusion_frame_scores(model, pixels, [5, 6, 1], baseline="clip_mean")  # the mean of ones is one
    torch.testing.assert_close(clip_mean, torch.zeros(3, 4))


def test_occlusion_leaves_train_and_eval_modes_as_they_were_and_refuses_bad_inputs():
    model = tiny_model(image_size=64, visual_dropout=0.5)
    model.train()
    modes = {name: m.training for name, m in model.named_modules()}
    pixels = tiny_pixels(model.config, batch=1)
    first = occlusion_frame_scores(model, pixels, [5, 6, 1])
    assert {name: m.training for name, m in model.named_modules()} == modes
    torch.testing.assert_close(first, occlusion_frame_scores(model, pixels, [5, 6, 1]))  # eval inside: no dropout
    model.eval()
    occlusion_frame_scores(model, pixels, [5, 6, 1])
    assert not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match="frame_scores="):
        _explain(model, pixels, frame_scores="gradients")


def test_explain_with_occlusion_frame_scores_ranks_and_plots_by_them(spatial, tmp_path):
    model, pixels, attention_only = spatial
    expl = _explain(model, pixels, frame_scores="occlusion")
    n = len(expl.tokens)
    assert attention_only.frame_occlusion is None and attention_only.frame_weights is attention_only.frame_attention
    assert expl.frame_scores == "occlusion" and expl.token_frame_occlusion.shape == (n, 4)
    full = occlusion_frame_scores(model, pixels, expl.caption_ids).numpy()  # (L, T), eos row included
    np.testing.assert_allclose(expl.token_frame_occlusion, full[:n], atol=1e-5)
    np.testing.assert_allclose(expl.frame_weights, full[:n].mean(0), atol=1e-5)
    np.testing.assert_allclose(expl.token_frame_attention, attention_only.token_frame_attention, atol=1e-6)
    assert expl.method == "cross-attention"  # heatmaps still from the heatmap method
    # faithfulness ranks frames by the chosen scores
    by_scores = faithfulness(model, expl, pixels, k=1, num_random=0)
    by_weights = faithfulness(model, expl.frame_weights, pixels, expl.caption_ids, k=1, num_random=0)
    assert (by_scores["drop_top"], by_scores["drop_bottom"]) == (by_weights["drop_top"], by_weights["drop_bottom"])
    paths = save_explanation(expl, tmp_path, "occl")
    saved = json.loads(paths["json"].read_text())
    assert saved["frame_scores"] == "occlusion" and np.allclose(saved["frame_occlusion"], expl.frame_occlusion, atol=1e-6)
    assert "occluded" in paths["html"].read_text()


@pytest.mark.parametrize("frame_scores", ["occlusion", "shapley"])
def test_trained_toy_perturbation_scores_point_at_the_frame_that_decides_the_caption(toy, frame_scores):
    model, pixels, _, _ = toy
    tokenizer = tiny_tokenizer()
    explanations = [
        explain(model, None, pixel_values_videos=p, tokenizer=tokenizer, max_new_tokens=8, frame_scores=frame_scores)
        for p in pixels
    ]
    assert np.mean([getattr(e, f"frame_{frame_scores}").argmax() == KEY_FRAME for e in explanations]) >= 0.9
    result = mean_faithfulness(model, explanations, pixels, k=1)
    assert result["top_beats_bottom"] >= 0.9 and result["drop_top"] > 1.0


# --- Shapley values of frames --------------------------------------------------------------------------------------
def _kept(pixels: torch.Tensor, coalition: frozenset) -> torch.Tensor:
    """The video with only the frames in `coalition` kept, the others the dataset-mean flat frame (zeros)."""
    video = torch.zeros_like(pixels)
    for t in coalition:
        video[:, t] = pixels[:, t]
    return video


@pytest.mark.parametrize("visual_tokens", ["pooled", "motion"])
def test_shapley_values_follow_the_definition_are_efficient_and_need_no_gradients(visual_tokens):
    model = _occlusion_model(visual_tokens)
    pixels = tiny_pixels(model.config, batch=1)  # (1, 4, 3, 64, 64)
    ids = [5, 6, 7, 1]
    with torch.inference_mode():
        phi = shapley_frame_scores(model, pixels, ids)  # 2^4 = 16 coalitions, one batch
    assert phi.shape == (4, 4) and phi.dtype == torch.float32 and phi.abs().max() > 0
    labels = torch.tensor([ids])
    cache = {}

    def value(coalition: frozenset) -> torch.Tensor:  # (L,) log-probs with only `coalition` kept
        if coalition not in cache:
            with torch.no_grad():
                cache[coalition] = caption_logprobs(model, labels, pixel_values_videos=_kept(pixels, coalition))[0]
        return cache[coalition]

    # the definition by orders: a frame's marginal contribution where it joins, averaged over all 4! orders
    reference = torch.zeros(4, 4)  # (T, L)
    orders = list(itertools.permutations(range(4)))
    for order in orders:
        for k, t in enumerate(order):
            reference[t] += value(frozenset(order[: k + 1])) - value(frozenset(order[:k]))
    np.testing.assert_allclose(phi.numpy(), (reference / len(orders)).T.numpy(), atol=1e-4)
    # efficiency: the frames' values add up to log p(all frames) - log p(no frames), per token
    np.testing.assert_allclose(phi.sum(1).numpy(), (value(frozenset(range(4))) - value(frozenset())).numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(shapley_frame_scores(model, pixels[0], ids, batch_size=3).numpy(), phi.numpy(),
                               atol=1e-4)  # (T, 3, H, W) input, several passes: the same
    sampled = shapley_frame_scores(model, pixels, ids, num_samples=5, seed=1)  # permutation sampling
    np.testing.assert_allclose(sampled.sum(1).numpy(), phi.sum(1).numpy(), atol=1e-4)  # efficient per order too
    assert all(p.grad is None for p in model.parameters())


def _redundant_scorer(weights: torch.Tensor, frames=(1, 2)):
    """A stand-in for `caption_logprobs`: each word's log-prob is its weight times 1 when frame 1 OR frame 2 still
    shows something (all-ones frames), 0 when both are flat: the cause seen in two frames."""

    def scorer(model, labels, pixel_values_videos):
        seen = torch.stack([pixel_values_videos[:, t].abs().amax(dim=(1, 2, 3)) for t in frames]).amax(0)  # (B,)
        return seen[:, None] * weights[None, : labels.shape[1]]  # (B, L)

    return scorer


def test_shapley_splits_a_cause_seen_in_two_frames_where_one_frame_occlusion_sees_nothing(monkeypatch):
    weights = torch.tensor([0.5, 2.0, 1.0])
    monkeypatch.setattr(vidgpt2.explanations, "caption_logprobs", _redundant_scorer(weights))
    model, pixels, ids = tiny_model(), torch.ones(1, 4, 3, 8, 8), [5, 6, 1]
    # removing frame 1 leaves frame 2 (and the other way round): occlusion gives every frame 0
    torch.testing.assert_close(occlusion_frame_scores(model, pixels, ids), torch.zeros(3, 4))
    expected = torch.zeros(3, 4)
    expected[:, 1] = expected[:, 2] = weights / 2  # the joint effect shared by the two redundant frames
    torch.testing.assert_close(shapley_frame_scores(model, pixels, ids), expected)
    # a 2-frame occluder removes both in one of the two windows covering frame 1 (and frame 2): mean half the drop
    torch.testing.assert_close(occlusion_frame_scores(model, pixels, ids, window=2), expected)
    torch.testing.assert_close(occlusion_frame_scores(model, pixels, ids, window=1),
                               occlusion_frame_scores(model, pixels, ids))
    # permutation sampling: frame 1 gets everything in the orders where it comes before frame 2
    sampled = shapley_frame_scores(model, pixels, ids, num_samples=40, seed=0)
    torch.testing.assert_close(sampled.sum(1), weights)
    share = float(sampled[1, 1] / weights[1])
    assert 0.25 <= share <= 0.75 and torch.allclose(sampled[:, [0, 3]], torch.zeros(3, 2))
    torch.testing.assert_close(sampled, shapley_frame_scores(model, pixels, ids, num_samples=40, seed=0))  # seeded


def test_shapley_and_occlusion_agree_on_an_additive_score_and_long_videos_need_sampling(monkeypatch):
    """Log-prob = sum over frames of c_t * (frame t shown): no interactions, so each frame's Shapley value is c_t,
    exactly, for the exact computation and for every sampled order; occlusion gives c_t too."""
    frames = SHAPLEY_EXACT_MAX_FRAMES + 1
    c = torch.linspace(-1.0, 2.0, frames)

    def additive(model, labels, pixel_values_videos):
        shown = pixel_values_videos.abs().amax(dim=(2, 3, 4))  # (B, T): 1 shown, 0 flat
        return (shown @ c[: shown.shape[1]])[:, None].expand(-1, labels.shape[1])  # (B, L)

    monkeypatch.setattr(vidgpt2.explanations, "caption_logprobs", additive)
    model = tiny_model()
    short = torch.ones(1, 6, 3, 4, 4)
    torch.testing.assert_close(shapley_frame_scores(model, short, [5, 1]), c[None, :6].expand(2, -1))
    torch.testing.assert_close(occlusion_frame_scores(model, short, [5, 1]), c[None, :6].expand(2, -1))
    long = torch.ones(1, frames, 3, 4, 4)
    with pytest.raises(ValueError, match=f"SHAPLEY_EXACT_MAX_FRAMES={SHAPLEY_EXACT_MAX_FRAMES}.*num_samples="):
        shapley_frame_scores(model, long, [5, 1])
    torch.testing.assert_close(shapley_frame_scores(model, long, [5, 1], num_samples=3), c[None].expand(2, -1))


@pytest.mark.parametrize("frame_scores", [occlusion_frame_scores, shapley_frame_scores], ids=["occlusion", "shapley"])
def test_frame_score_functions_refuse_bad_inputs(frame_scores):
    """The checks occlusion and Shapley scores share (`_one_video_and_caption`, the batched coalition scorer)."""
    model = tiny_model(image_size=64)
    pixels = tiny_pixels(model.config, batch=1)
    with pytest.raises(ValueError, match="one video"):
        frame_scores(model, pixels.repeat(2, 1, 1, 1, 1), [5, 1])
    with pytest.raises(ValueError, match="empty caption"):
        frame_scores(model, pixels, [])
    with pytest.raises(ValueError, match="baseline="):
        frame_scores(model, pixels, [5, 1], baseline="black")
    with pytest.raises(ValueError, match="batch_size=0"):
        frame_scores(model, pixels, [5, 1], batch_size=0)


def test_shapley_and_windowed_occlusion_refuse_bad_inputs():
    model = tiny_model(image_size=64)
    pixels = tiny_pixels(model.config, batch=1)
    with pytest.raises(ValueError, match="num_samples=0"):
        shapley_frame_scores(model, pixels, [5, 1], num_samples=0)
    for window in (0, 5):
        with pytest.raises(ValueError, match=f"window={window}"):
            occlusion_frame_scores(model, pixels, [5, 1], window=window)
    # non-integers get the same named error, not a TypeError from deep inside torch (new-user review)
    with pytest.raises(ValueError, match="window=2.5"):
        occlusion_frame_scores(model, pixels, [5, 1], window=2.5)
    with pytest.raises(ValueError, match="num_samples=2.5"):
        shapley_frame_scores(model, pixels, [5, 1], num_samples=2.5)
    with pytest.raises(ValueError, match="batch_size=True"):
        occlusion_frame_scores(model, pixels, [5, 1], batch_size=True)
    dropout = tiny_model(image_size=64, visual_dropout=0.5).train()
    modes = {name: m.training for name, m in dropout.named_modules()}
    first = shapley_frame_scores(dropout, pixels, [5, 6, 1])
    assert {name: m.training for name, m in dropout.named_modules()} == modes  # modes restored
    torch.testing.assert_close(first, shapley_frame_scores(dropout, pixels, [5, 6, 1]))  # eval inside: no dropout


def test_explain_with_shapley_frame_scores_ranks_and_plots_by_them(spatial, tmp_path):
    model, pixels, attention_only = spatial
    expl = _explain(model, pixels, frame_scores="shapley")
    n = len(expl.tokens)
    assert attention_only.frame_shapley is None and expl.frame_occlusion is None
    assert expl.frame_scores == "shapley" and expl.token_frame_shapley.shape == (n, 4)
    full = shapley_frame_scores(model, pixels, expl.caption_ids).numpy()  # (L, T), eos row included
    np.testing.assert_allclose(expl.token_frame_shapley, full[:n], atol=1e-5)
    np.testing.assert_allclose(expl.frame_weights, full[:n].mean(0), atol=1e-5)
    np.testing.assert_allclose(expl.token_frame_weights, full[:n], atol=1e-5)
    by_scores = faithfulness(model, expl, pixels, k=1, num_random=0)
    by_weights = faithfulness(model, expl.frame_weights, pixels, expl.caption_ids, k=1, num_random=0)
    assert (by_scores["drop_top"], by_scores["drop_bottom"]) == (by_weights["drop_top"], by_weights["drop_bottom"])
    paths = save_explanation(expl, tmp_path, "shap")
    saved = json.loads(paths["json"].read_text())
    assert saved["frame_scores"] == "shapley" and np.allclose(saved["frame_shapley"], expl.frame_shapley, atol=1e-6)
    assert "Shapley value" in paths["html"].read_text()


def test_explain_passes_frame_score_kwargs_to_the_chosen_scores(spatial):
    """`explain` forwards `frame_score_kwargs` (e.g. Shapley's num_samples, needed above 12 frames; occlusion's
    window) to the frame-score function instead of to `generate`."""
    model, pixels, _ = spatial
    sampled = _explain(model, pixels, frame_scores="shapley", frame_score_kwargs={"num_samples": 3, "seed": 1})
    full = shapley_frame_scores(model, pixels, sampled.caption_ids, num_samples=3, seed=1).numpy()
    np.testing.assert_allclose(sampled.token_frame_shapley, full[: len(sampled.tokens)], atol=1e-5)
    windowed = _explain(model, pixels, frame_scores="occlusion", frame_score_kwargs={"window": 2})
    full = occlusion_frame_scores(model, pixels, windowed.caption_ids, window=2).numpy()
    np.testing.assert_allclose(windowed.token_frame_occlusion, full[: len(windowed.tokens)], atol=1e-5)
    with pytest.raises(ValueError, match="frame_score_kwargs"):
        _explain(model, pixels, frame_scores="attention", frame_score_kwargs={"window": 2})


# --- gradient-weighted attention relevancy (Chefer et al. 2021) ------------------------------------------------------
def _pair(attention: list, grad: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention, gradient) with one head: (1, Q, K) each; the gradient defaults to ones (plain attention)."""
    a = torch.tensor(attention, dtype=torch.float32)[None]
    return a, torch.ones_like(a) if grad is None else torch.tensor(grad, dtype=torch.float32)[None]


def test_relevancy_of_one_cross_attention_layer_is_the_head_mean_of_positive_gradient_times_attention():
    attention = torch.tensor([[[0.7, 0.3], [0.2, 0.8]], [[0.5, 0.5], [0.9, 0.1]]])  # (2 heads, L=2, N=2)
    grad = torch.tensor([[[1.0, -2.0], [0.5, 0.5]], [[-1.0, 3.0], [2.0, 0.0]]])
    # grad * attention: head 1 [[0.7, -0.6], [0.1, 0.4]], head 2 [[-0.5, 1.5], [1.8, 0]]; negatives -> 0; mean
    expected = torch.tensor([[0.35, 0.75], [0.95, 0.2]])
    torch.testing.assert_close(vidgpt2.explanations.attention_relevancy([(attention, grad)]), expected)


def test_relevancy_follows_the_visual_self_attention_to_the_frame_a_token_read():
    """Caption token 0 attends only to visual token 0, which read everything from token 1 in the visual layer:
    relevancy credits token 1 as well (raw cross-attention would credit token 0 alone)."""
    cross = _pair([[1.0, 0.0, 0.0]])  # (1, L=1, N=3)
    visual = _pair([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    relevancy = vidgpt2.explanations.attention_relevancy([cross], encoder_attentions=[visual])
    # R_ii = I + A = [[1, 1, 0], [0, 2, 0], [0, 0, 2]]; R-bar = (R_ii - I) row-normalised + I (the same here)
    torch.testing.assert_close(relevancy, torch.tensor([[1.0, 1.0, 0.0]]))


def test_relevancy_of_a_caption_token_never_comes_from_later_tokens():
    """Causal decoder: token 1 reads token 0 through self-attention and so gets token 0's visual relevancy; token 0
    gets nothing from token 1's cross-attention (the paper's transposed rule would give it)."""
    cross = _pair([[1.0, 0.0], [0.0, 1.0]])  # token 0 -> visual 0, token 1 -> visual 1
    self_attention = _pair([[1.0, 0.0], [0.5, 0.5]])  # causal
    relevancy = vidgpt2.explanations.attention_relevancy([cross], decoder_attentions=[self_attention])
    # R_tt = I + A = [[2, 0], [.5, 1.5]] = R-bar (rows of R_tt - I already sum to 1); R_ti = R-bar @ A_ti;
    # the paper's (R-bar)^T would give token 0 the row [2, .5]: relevancy from token 1's cross-attention
    torch.testing.assert_close(relevancy, torch.tensor([[2.0, 0.0], [0.5, 1.5]]))


def test_relevancy_with_zero_gradients_is_zero_and_bad_layer_lists_raise():
    attention = torch.rand(2, 3, 4)
    assert vidgpt2.explanations.attention_relevancy([(attention, torch.zeros_like(attention))]).abs().max() == 0
    with pytest.raises(ValueError, match="at least one layer"):
        vidgpt2.explanations.attention_relevancy([])
    with pytest.raises(ValueError, match="one of each per layer"):
        vidgpt2.explanations.attention_relevancy([(attention, attention)], decoder_attentions=[_pair([[1.0]])] * 2)


def _reference_relevancy(cross: list, decoder: list, visual: list) -> torch.Tensor:
    """Chefer et al.'s rules 5-10 re-typed from their DETR code (Transformer-MM-Explainability,
    DETR/modules/ExplanationGenerator.py: avg_heads, apply_self_attention_rules, handle_residual,
    apply_mm_attention_rules), with the one documented change: R-bar of the caption tokens not transposed."""

    def heads(attention, grad):
        return (grad * attention).clamp(min=0).mean(0)

    def residual(r):
        mixed = r - torch.eye(len(r))
        return mixed / mixed.sum(-1, keepdim=True) + torch.eye(len(r))

    queries, keys = cross[0][0].shape[-2:]
    r_ii, r_qq, r_qi = torch.eye(keys), torch.eye(queries), torch.zeros(queries, keys)
    for attention, grad in visual:
        r_ii = r_ii + heads(attention, grad) @ r_ii
    for (attention, grad), self_pair in zip(cross, decoder, strict=True):
        cam = heads(*self_pair)
        r_qq, r_qi = r_qq + cam @ r_qq, r_qi + cam @ r_qi
        r_qi = r_qi + residual(r_qq) @ heads(attention, grad) @ residual(r_ii)
    return r_qi


def test_relevancy_matches_the_reference_rules_on_random_layers():
    """Random causal self-attention, cross-attention and visual self-attention (3 layers, 3 heads) against the
    reference rules; head 0's gradients are positive so that no row of R - I is zero (the reference divides by its
    row sums unguarded and turns the NaN into zeros, `_normalize_residual` keeps such a row the identity's)."""
    generator = torch.Generator().manual_seed(0)

    def pair(queries: int, keys: int, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.randn(3, queries, keys, generator=generator)
        if causal:
            scores = scores.masked_fill(torch.ones(queries, keys, dtype=torch.bool).triu(1), float("-inf"))
        grad = torch.randn(3, queries, keys, generator=generator)
        grad[0] = grad[0].abs()
        return scores.softmax(-1), grad

    cross = [pair(5, 7) for _ in range(3)]
    decoder = [pair(5, 5, causal=True) for _ in range(3)]
    visual = [pair(7, 7) for _ in range(2)]
    relevancy = vidgpt2.explanations.attention_relevancy(cross, decoder, visual)
    torch.testing.assert_close(relevancy, _reference_relevancy(cross, decoder, visual))


@pytest.mark.parametrize(
    "args, match",
    [
        (([(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4))],), r"cross_attentions\[0\].*\(heads, L, N\)"),  # HF's (1, ...)
        (([(torch.rand(3, 4), torch.rand(3, 4))],), r"cross_attentions\[0\].*\(heads, L, N\)"),
        (([(torch.rand(2, 3, 4), torch.rand(2, 1, 4))],), r"cross_attentions\[0\].*gradient"),
        (([(torch.rand(2, 3, 4), torch.rand(2, 3, 4))] * 2 + [(torch.rand(2, 3, 5), torch.rand(2, 3, 5))],),
         r"cross_attentions\[2\]"),
        (([torch.rand(2, 3, 4)],), r"cross_attentions\[0\].*pair"),
        (([(torch.rand(2, 3, 4), torch.rand(2, 3, 4))], [(torch.rand(2, 4, 4), torch.rand(2, 4, 4))]),
         r"decoder_attentions\[0\]"),
        (([(torch.rand(2, 3, 4), torch.rand(2, 3, 4))], (), [(torch.rand(2, 5, 5), torch.rand(2, 5, 5))]),
         r"encoder_attentions\[0\]"),
        (([(torch.full((2, 3, 4), float("nan")), torch.rand(2, 3, 4))],), r"cross_attentions\[0\].*finite"),
    ],
)
def test_relevancy_refuses_attention_of_the_wrong_shape_naming_the_input(args, match):
    """HF returns (1, heads, Q, K) per layer: passed as is, the head mean used to average the batch dimension and the
    result came back (heads, L, N) without an error; other mismatches failed deep in torch or broadcast silently."""
    with pytest.raises(ValueError, match=match):
        vidgpt2.explanations.attention_relevancy(*args)
