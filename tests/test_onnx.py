"""`vidgpt2 export onnx` and the onnxruntime captioner (`vidgpt2.onnx`).

One tiny model is exported once per module (tracing three graphs takes ~10 s on an idle 2-core CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed: pip install 'vidgpt2[onnx]'")
pytest.importorskip("onnxscript", reason="the `onnx` extra is not installed: pip install 'vidgpt2[onnx]'")

from tests.tiny import tiny_model, tiny_pixels, tiny_tokenizer  # noqa: E402
from tests.video_fixtures import write_test_clip  # noqa: E402
from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor, VidGPT2VideoProcessor  # noqa: E402
from vidgpt2.cli import main as cli_main  # noqa: E402
from vidgpt2.onnx import (  # noqa: E402
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    DEFAULT_ATOL,
    ENCODER_FILE,
    OnnxExportError,
    OnnxVidGPT2Captioner,
    _validate,
    check_exportable,
    export_onnx,
)


def _long_caption_model() -> VidGPT2ForConditionalGeneration:
    # eos (id 0) gets zero weight so greedy captions run several steps: the decoder-with-past graph is exercised
    model = tiny_model()
    with torch.no_grad():
        model.decoder.lm_head.weight[0].fill_(0.0)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    _long_caption_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("onnx")
    int8 = tmp_path_factory.mktemp("onnx-int8")
    assert cli_main(["export", "onnx", "--model", str(model_dir), "--output", str(out), "--int8", str(int8)]) == 0
    return out, int8


@pytest.fixture(scope="module")
def model(model_dir) -> VidGPT2ForConditionalGeneration:
    return VidGPT2ForConditionalGeneration.from_pretrained(model_dir).eval()


def test_export_writes_optimum_split_with_past_key_values(exported):
    import onnxruntime as ort

    out, _ = exported
    for name in (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE, "config.json", "processor_config.json"):
        assert (out / name).exists(), name
    decoder = ort.InferenceSession(str(out / DECODER_FILE))
    with_past = ort.InferenceSession(str(out / DECODER_WITH_PAST_FILE))
    assert [i.name for i in decoder.get_inputs()] == ["input_ids", "encoder_hidden_states"]
    assert [o.name for o in decoder.get_outputs()][:5] == [
        "logits", "present.0.decoder.key", "present.0.decoder.value", "present.0.encoder.key", "present.0.encoder.value",
    ]
    names = {i.name for i in with_past.get_inputs()}
    assert {"input_ids", "past_key_values.1.decoder.key", "past_key_values.1.encoder.value"} <= names
    assert [o.name for o in with_past.get_outputs()] == [
        "logits", "present.0.decoder.key", "present.0.decoder.value", "present.1.decoder.key", "present.1.decoder.value",
    ]


# batch 1 and one frame (size-1 dims that torch.export can specialise), past lengths 1..11 (traced with 2)
@pytest.mark.parametrize("batch, frames", [(1, 4), (3, 2), (2, 1)])
def test_greedy_tokens_identical_and_logits_within_tolerance(exported, model, batch, frames):
    captioner = OnnxVidGPT2Captioner(exported[0])
    pixels = tiny_pixels(model.config, batch=batch, seed=7)[:, :frames]
    with torch.no_grad():
        reference = model.generate(
            pixel_values_videos=pixels, max_new_tokens=12, output_scores=True, return_dict_in_generate=True
        )
    result = captioner.generate_ids(pixels.numpy(), max_new_tokens=12, return_logits=True)
    assert result.sequences.shape[1] > 4, "too short to exercise the decoder with past"
    np.testing.assert_array_equal(result.sequences, reference.sequences.numpy())
    scores = torch.stack(list(reference.scores), dim=1).numpy()  # (B, steps, V)
    assert np.abs(scores - result.logits).max() < DEFAULT_ATOL


def test_runtime_captions_a_video_file_like_pytorch(exported, model_dir, model, tmp_path):
    clip = write_test_clip(tmp_path / "clip.mp4", num_frames=16)
    captioner = OnnxVidGPT2Captioner.from_pretrained(exported[0])
    processor = VidGPT2Processor.from_pretrained(model_dir)
    pixels = processor(videos=[str(clip)])["pixel_values_videos"]
    with torch.no_grad():
        expected = processor.batch_decode(model.generate(pixel_values_videos=pixels, max_new_tokens=8))
    assert captioner.caption([str(clip)], max_new_tokens=8) == expected
    assert expected[0].strip()


def test_int8_copy_quantises_the_decoders_and_still_captions(exported):
    import onnx

    out, int8 = exported
    ops = {node.op_type for node in onnx.load(str(int8 / DECODER_WITH_PAST_FILE)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    fp32_ops = {node.op_type for node in onnx.load(str(out / DECODER_WITH_PAST_FILE)).graph.node}
    assert "MatMulInteger" not in fp32_ops
    pixels = tiny_pixels(VidGPT2ForConditionalGeneration.config_class.from_pretrained(out), batch=2).numpy()
    result = OnnxVidGPT2Captioner(int8).generate_ids(pixels, max_new_tokens=5)
    assert result.sequences.shape == (2, 6)


def test_runtime_refuses_what_it_does_not_implement(exported):
    captioner = OnnxVidGPT2Captioner(exported[0])
    pixels = np.zeros((1, 4, 3, 32, 32), np.float32)
    with pytest.raises(NotImplementedError, match="greedily.*num_beams=3"):
        captioner.generate_ids(pixels, num_beams=3)
    with pytest.raises(NotImplementedError, match="do_sample=True"):
        captioner.generate_ids(pixels, do_sample=True)
    captioner.generation_config.repetition_penalty = 1.3
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        captioner.generate_ids(pixels)
    captioner.generation_config.repetition_penalty = 1.0
    with pytest.raises(ValueError, match="at most num_frames=4"):
        captioner.generate_ids(np.zeros((1, 6, 3, 32, 32), np.float32))
    with pytest.raises(FileNotFoundError, match="vidgpt2 export onnx"):
        OnnxVidGPT2Captioner(exported[0].parent)


def test_export_refuses_unmerged_lora_and_flash_attention():
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_model(), LoraConfig(target_modules=["c_attn"], fan_in_fan_out=True))
    with pytest.raises(OnnxExportError, match="merge_and_unload"):
        check_exportable(lora)
    model = tiny_model()
    model.config.text_config._attn_implementation = "flash_attention_2"
    with pytest.raises(OnnxExportError, match="attn_implementation='sdpa'"):
        check_exportable(model)


def test_validation_fails_when_the_graphs_disagree_with_pytorch(exported, model_dir):
    # the same architecture with other weights: the exported graphs no longer match it
    other = VidGPT2ForConditionalGeneration.from_pretrained(model_dir).eval()
    with torch.no_grad():
        other.decoder.lm_head.weight.mul_(1.01)
    from vidgpt2.onnx import OnnxExportReport

    report = OnnxExportReport(output_dir=str(exported[0]), files=[], opset=18, atol=DEFAULT_ATOL)
    with pytest.raises(OnnxExportError, match="disagree with PyTorch"):
        _validate(other, exported[0], report)


def test_export_cli_error_is_one_line(tmp_path, capsys):
    assert cli_main(["export", "onnx", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidgpt2 export: error:")


@pytest.mark.slow
def test_spatial_tokens_export_matches_pytorch(tmp_path):
    model = tiny_model(visual_tokens="spatial")
    with torch.no_grad():
        model.decoder.lm_head.weight[0].fill_(0.0)
    report = export_onnx(model, tmp_path)
    assert report.greedy_tokens_match and max(report.max_abs_diff.values()) < DEFAULT_ATOL
