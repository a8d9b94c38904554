"""Faster CPU inference (`vidgpt2.inference`) and bf16 feature extraction (`extract_features(dtype="bfloat16")`)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from tests.tiny import tiny_model, tiny_pixels, tiny_tokenizer
from tests.video_fixtures import write_test_clip
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.data.feature_cache import FeatureCache, extract_features, vision_fingerprint
from vidgpt2.inference import conv1d_to_linear, inference_precision, prepare_for_inference, quantize_dynamic_int8


def _model():
    model = tiny_model()
    with torch.no_grad():
        model.decoder.lm_head.weight[0].fill_(0.0)  # no eos: several steps
    return model


def test_conv1d_to_linear_is_exact():
    model = _model()
    pixels = tiny_pixels(model.config)
    ids = torch.tensor([[0, 3, 5, 7]] * 2)
    with torch.no_grad():
        before = model(pixel_values_videos=pixels, decoder_input_ids=ids).logits
        replaced = conv1d_to_linear(model.decoder)
        after = model(pixel_values_videos=pixels, decoder_input_ids=ids).logits
    # per GPT-2 block: c_attn, c_proj, crossattention q_attn/c_attn/c_proj, mlp c_fc/c_proj
    assert replaced == 7 * model.config.text_config.n_layer
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_int8_quantises_every_decoder_linear_and_leaves_the_original():
    model = _model()
    quantised = quantize_dynamic_int8(model)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    modules = list(quantised.decoder.modules())
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in modules) == 7 * model.config.text_config.n_layer + 1
    assert not any(type(m) in (torch.nn.Linear, Conv1D) for m in modules)
    assert isinstance(model.decoder.transformer.h[0].attn.c_attn, Conv1D), "the original model must stay fp32"
    pixels = tiny_pixels(model.config, batch=3)
    with torch.no_grad():
        reference = model.generate(pixel_values_videos=pixels, max_new_tokens=6)
        fast = quantised.generate(pixel_values_videos=pixels, max_new_tokens=6)
        ids = reference
        logits = model(pixel_values_videos=pixels, decoder_input_ids=ids).logits
        logits_int8 = quantised(pixel_values_videos=pixels, decoder_input_ids=ids).logits
    assert fast.shape == reference.shape
    # int8 weights: close, not equal (bound measured ~0.01 on this model; logits are ~0.5 in size)
    difference = (logits - logits_int8).abs().max().item()
    assert 0 < difference < 0.05


def test_bf16_autocast_runs_in_bf16_and_restores_fp32():
    model = _model()
    pixels = tiny_pixels(model.config)
    ids = torch.tensor([[0, 3]] * 2)
    with torch.no_grad(), inference_precision("bfloat16"):
        logits = model(pixel_values_videos=pixels, decoder_input_ids=ids).logits
    assert logits.dtype == torch.bfloat16
    with torch.no_grad(), inference_precision("float32"):
        assert model(pixel_values_videos=pixels, decoder_input_ids=ids).logits.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        with inference_precision("fp8"):
            pass
    assert prepare_for_inference(model, "bfloat16") is model
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(model, "int4")


def test_bf16_feature_cache_records_the_dtype_and_refuses_to_mix(tmp_path):
    model = tiny_model()
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer())
    clip = write_test_clip(tmp_path / "clip.mp4", num_frames=8)
    samples = [{"video": str(clip)}]
    cache = extract_features(model, processor, samples, tmp_path / "bf16", dtype="bfloat16", show_progress=False)
    metadata = json.loads((tmp_path / "bf16" / "metadata.json").read_text())
    assert metadata["dtype"] == "bfloat16"
    assert metadata["fingerprint"] == vision_fingerprint(model, "bfloat16") != vision_fingerprint(model)
    cache.check_compatible(model)  # a bf16 cache is valid for the model that produced it
    fp32 = extract_features(model, processor, samples, tmp_path / "fp32", show_progress=False)
    bf16_features, fp32_features = cache.read(str(clip)), FeatureCache(fp32.root).read(str(clip))
    assert bf16_features.dtype == torch.float32
    assert not torch.equal(bf16_features, fp32_features)
    torch.testing.assert_close(bf16_features, fp32_features, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="bfloat16 vs float32"):
        extract_features(model, processor, samples, tmp_path / "bf16", show_progress=False)
    with pytest.raises(ValueError, match="dtype must be"):
        extract_features(model, processor, samples, tmp_path / "x", dtype="float16", show_progress=False)
