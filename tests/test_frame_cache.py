"""The decoded-frame cache (`vidgpt2 extract-frames`, `train --frame-cache`) and DataLoader workers for decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.tiny import TINY_VISION
from vidgpt2 import VidGPT2VideoProcessor
from vidgpt2.cli import _default_dataloader_workers
from vidgpt2.cli import main as cli_main
from vidgpt2.data import load_captions_files, write_synthetic_dataset
from vidgpt2.data.collator import VideoCaptionCollator, worker_start_method
from vidgpt2.data.feature_cache import iter_samples
from vidgpt2.data.frame_cache import FrameCache, decode_clip, extract_frames
from vidgpt2.processing_vidgpt2 import video_processor_settings
from vidgpt2.training import (
    DataArguments,
    LoraArguments,
    ModelArguments,
    build_model_and_processor,
    default_dataloader_num_workers,
    run_training,
)

CONFIG = {
    "vision_config": TINY_VISION,
    "text_config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64},
    "num_frames": 4,
    "image_size": 32,  # the 48 px clips are resized: the cache stores the processor's output size
    "freeze_vision": False,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=12, num_validation=0, num_test=4, num_frames=4, size=48, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def train(synth):
    return load_captions_files(train_file=str(synth / "train.jsonl"))["train"]


@pytest.fixture(scope="module")
def processor(train):
    captions = list(train["caption"])
    return build_model_and_processor(ModelArguments(config=dict(CONFIG), build_tokenizer=True), captions, 16)[1]


def _processor(**overrides) -> VidGPT2VideoProcessor:
    return VidGPT2VideoProcessor(num_frames=4, **{**video_processor_settings(32), **overrides})


def test_frames_from_the_cache_give_exactly_the_decoded_batch(processor, train, tmp_path):
    cache = extract_frames(processor.video_processor, iter_samples(train), tmp_path / "frames", show_progress=False)
    stored = cache.read(train[0]["video"])
    assert isinstance(stored, np.memmap) and not stored.flags.writeable  # memory-mapped, read-only
    assert stored.dtype == np.uint8 and stored.shape == (4, 32, 32, 3)  # (T, H, W, 3) at the processor's size

    rows = list(train.select(range(5)))
    decoded = VideoCaptionCollator(processor)(rows)
    cached = VideoCaptionCollator(processor, frame_cache=cache)(rows)
    assert cached["pixel_values_videos"].dtype == torch.float32
    assert torch.equal(cached["pixel_values_videos"], decoded["pixel_values_videos"])
    assert torch.equal(cached["labels"], decoded["labels"])


def test_extraction_resumes_and_skips_cached_clips(processor, train, tmp_path):
    samples = iter_samples(train)
    root = tmp_path / "frames"
    # an interrupted run: a few clips stored, plus the temporary file of a write that never finished
    extract_frames(processor.video_processor, samples[:4], root, show_progress=False)
    (root / "frames" / "deadbeef.tmp123.456").write_bytes(b"half")
    cache = FrameCache(root)
    mtimes = {p: p.stat().st_mtime_ns for p in cache.frames_dir.glob("*.npy")}
    assert len(mtimes) == 4 and len(cache.missing(samples)) == len(set(train["video"])) - 4

    extract_frames(processor.video_processor, samples, root, num_workers=2, show_progress=False)
    assert cache.missing(samples) == []
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes, "a rerun must not decode cached clips again"
    assert len(list(cache.frames_dir.glob("*.npy"))) == len(set(train["video"]))


def test_a_failing_clip_stops_extraction_but_keeps_what_was_decoded(processor, train, tmp_path):
    samples = iter_samples(train)[:3] + [{"video": str(tmp_path / "missing.mp4"), "start": None, "end": None}]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        extract_frames(processor.video_processor, samples, tmp_path / "frames", num_workers=1, show_progress=False)
    assert len(list((tmp_path / "frames" / "frames").glob("*.npy"))) == 3
    cache = extract_frames(
        processor.video_processor, samples, tmp_path / "frames", on_bad_video="skip", show_progress=False
    )
    assert [s["video"] for s in cache.missing(samples)] == [str(tmp_path / "missing.mp4")]


def test_other_processing_settings_refuse_the_cache_but_normalisation_does_not(processor, train, tmp_path):
    root = tmp_path / "frames"
    extract_frames(_processor(), iter_samples(train)[:2], root, show_progress=False)
    FrameCache(root).check_compatible(_processor(image_mean=[0.5, 0.5, 0.5], image_std=[0.2, 0.2, 0.2]))
    for changed, name in [
        (_processor(crop_size={"height": 28, "width": 28}), "crop_size"),
        (VidGPT2VideoProcessor(num_frames=6, **video_processor_settings(32)), "num_frames"),
        (_processor(size={"shortest_edge": 40}), "size"),
        (_processor(keyframe_tolerance=0.0), "keyframe_tolerance"),
    ]:
        with pytest.raises(ValueError, match=name):
            FrameCache(root).check_compatible(changed)
        with pytest.raises(ValueError, match="other processing settings"):
            extract_frames(changed, iter_samples(train)[:2], root, show_progress=False)


def test_changed_mean_and_std_apply_at_batch_time(train, tmp_path):
    vp = _processor(image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1])
    cache = extract_frames(vp, iter_samples(train)[:2], tmp_path / "frames", show_progress=False)
    # a stand-in processor: only `video_processor` and `tokenize_captions` are used, labels are off ("__none__")
    proc = type("P", (), {"video_processor": vp})()
    rows = list(train.select(range(2)))
    cached = VideoCaptionCollator(proc, frame_cache=cache, caption_column="__none__")(rows)
    assert torch.equal(cached["pixel_values_videos"], vp([r["video"] for r in rows], return_tensors="pt")["pixel_values_videos"])


def test_missing_and_damaged_entries(processor, train, tmp_path):
    cache = extract_frames(processor.video_processor, iter_samples(train)[:3], tmp_path / "frames", show_progress=False)
    with pytest.raises(FileNotFoundError, match="extract-frames"):
        cache.read(train[5]["video"])
    cache.path_for(train[1]["video"]).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="Damaged frame-cache file"):
        cache.read(train[1]["video"])
    np.save(cache.path_for(train[2]["video"]), np.zeros((4, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="not uint8"):
        cache.read(train[2]["video"])
    with pytest.raises(ValueError, match="uint8"):
        cache.write("x.mp4", None, None, np.zeros((4, 32, 32), dtype=np.uint8))

    truncated = cache.path_for(train[0]["video"]).read_bytes()[:200]  # a header and part of the data
    cache.path_for(train[3]["video"]).write_bytes(truncated)
    with pytest.raises(ValueError, match="Damaged frame-cache file"):
        cache.read(train[3]["video"])

    rows = list(train.select(range(6)))
    with pytest.raises(ValueError, match="Damaged"):
        VideoCaptionCollator(processor, frame_cache=cache)(rows)
    collator = VideoCaptionCollator(processor, frame_cache=cache, on_bad_video="skip")
    batch = collator(rows)
    assert collator.num_skipped == 5  # rows 1, 2, 3 damaged; 4, 5 not cached
    assert torch.count_nonzero(batch["pixel_values_videos"][1:]) == 0
    assert torch.all(batch["labels"][1:] == -100) and torch.any(batch["labels"][0] != -100)
    with pytest.raises(ValueError, match="not both"):
        VideoCaptionCollator(processor, feature_cache=object(), frame_cache=cache)


def test_decode_clip_is_the_processor_output_before_normalisation(train):
    vp = _processor()
    frames = decode_clip(vp, train[0]["video"])
    assert frames.dtype == np.uint8 and frames.shape == (4, 32, 32, 3)
    pixels = vp(train[0]["video"], return_tensors="pt")["pixel_values_videos"][0]  # (T, 3, H, W)
    mean = torch.tensor(vp.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(vp.image_std).view(1, 3, 1, 1)
    expected = (pixels * std + mean) * 255
    assert torch.allclose(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), expected, atol=1e-3)


def test_dataloader_workers_decode_in_parallel_with_both_collators(processor, train, tmp_path):
    cache = extract_frames(processor.video_processor, iter_samples(train), tmp_path / "frames", show_progress=False)
    rows = list(train)
    for collator in (VideoCaptionCollator(processor), VideoCaptionCollator(processor, frame_cache=cache)):
        serial = [b["pixel_values_videos"] for b in DataLoader(rows, batch_size=4, collate_fn=collator)]
        loader = DataLoader(
            rows, batch_size=4, collate_fn=collator, num_workers=2, multiprocessing_context=worker_start_method(2)
        )
        parallel = [b["pixel_values_videos"] for b in loader]
        assert len(parallel) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel))


def test_train_with_frame_cache_builds_it_and_learns(synth, tmp_path):
    from transformers import Seq2SeqTrainingArguments

    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    data_args = DataArguments(
        train_file=str(synth / "train.jsonl"), test_file=str(synth / "test.jsonl"), max_caption_length=16,
        frame_cache=str(tmp_path / "frames"), use_java=False,
    )
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=3e-3, max_steps=4,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    metrics = run_training(ModelArguments(config=str(config), build_tokenizer=True), data_args, LoraArguments(), args)
    assert "test_cider" in metrics
    cache = FrameCache(tmp_path / "frames")
    test = load_captions_files(test_file=str(synth / "test.jsonl"))["test"]
    assert cache.missing(iter_samples(train := load_captions_files(train_file=str(synth / "train.jsonl"))["train"])) == []
    assert cache.missing(iter_samples(test)) == [] and len(train) > 0  # every split is cached, the test split too
    losses = [h["loss"] for h in json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]

    for conflict in ({"feature_cache": str(tmp_path / "features")}, {"blank_video": True}):
        bad = DataArguments(**{**data_args.__dict__, **conflict})
        with pytest.raises(ValueError, match="frame-cache"):
            run_training(ModelArguments(config=str(config), build_tokenizer=True), bad, LoraArguments(), args)


def test_extract_frames_cli_is_resumable(synth, tmp_path, processor, capsys):
    model_dir = tmp_path / "model"
    processor.save_pretrained(model_dir)
    argv = ["extract-frames", "--model", str(model_dir), "--data-file", str(synth / "train.jsonl"),
            "--output", str(tmp_path / "frames"), "--no-check-data"]
    assert cli_main(argv) == 0
    cache = FrameCache(tmp_path / "frames")
    assert cache.metadata()["settings"]["crop_size"] == {"height": 32, "width": 32}
    files = {p: p.stat().st_mtime_ns for p in cache.frames_dir.glob("*.npy")}
    assert len(files) == 12
    assert cli_main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert "frames of 12 samples" in capsys.readouterr().out


def test_dataloader_workers_default_only_when_not_given(synth):
    from transformers import Seq2SeqTrainingArguments

    files = DataArguments(train_file=str(synth / "train.jsonl"))
    assert default_dataloader_num_workers(files, cpu_count=2) == 2
    assert default_dataloader_num_workers(files, cpu_count=1) == 1
    assert default_dataloader_num_workers(files, cpu_count=64) == 4
    for cached in ({"frame_cache": "f"}, {"feature_cache": "f"}, {"blank_video": True}):
        assert default_dataloader_num_workers(DataArguments(train_file="t", **cached), cpu_count=16) == 0

    args = Seq2SeqTrainingArguments(output_dir="x", report_to=[])
    _default_dataloader_workers(args, files, given=set())
    assert args.dataloader_num_workers >= 1 and not args.dataloader_persistent_workers  # not persistent: exact resume
    args = Seq2SeqTrainingArguments(output_dir="x", report_to=[], dataloader_num_workers=0)
    _default_dataloader_workers(args, files, given={"dataloader_num_workers"})
    assert args.dataloader_num_workers == 0 and not args.dataloader_persistent_workers
