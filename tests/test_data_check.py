"""The data check (`vidgpt2 check-data`, and at the start of train / evaluate / extract-features), skipping bad samples
in the collator, and `--dataset videofolder` on the command line."""

from __future__ import annotations

import json
import logging
import wave
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_VISION, tiny_model, tiny_tokenizer
from tests.video_fixtures import ffmpeg, write_test_clip
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.cli import main as cli_main
from vidgpt2.data import check, load_captions_files, load_video_caption_dataset
from vidgpt2.data.collator import VideoCaptionCollator
from vidgpt2.data.feature_cache import FeatureCache
from vidgpt2.video_io import _Timing

CAPTION = "a red square turns blue"

# (record, reason substring or None for a good clip); line i + 1 of train.jsonl. The bad kinds are the failures
# reported against PyAV / video loaders: interrupted download ("moov atom not found"), empty file, audio-only file,
# missing file, a folder where a file should be, segments outside the video.
ROWS = [
    ({"video": "good.mp4", "caption": CAPTION}, None),
    ({"video": "truncated.mp4", "caption": CAPTION}, "Invalid data"),
    ({"video": "empty.mp4", "caption": CAPTION}, "empty file (0 bytes"),
    ({"video": "audio.wav", "caption": CAPTION}, "no video stream"),
    ({"video": "missing.mp4", "caption": CAPTION}, "file not found"),
    ({"video": "folder.mp4", "caption": CAPTION}, "is a directory"),
    ({"video": "good.mp4", "start": 5, "end": 6, "caption": CAPTION}, "after the video ends (2.000 s)"),
    # (an empty segment, end == start, is refused by the loader itself with file and line: test_annotation_files)
    ({"video": "good.mp4", "start": 2.5, "end": 4, "caption": CAPTION}, "after the video ends (2.000 s)"),
    ({"video": "good.mp4", "start": 0.5, "end": 9, "captions": ["a green circle grows", "a blue circle shrinks"]}, None),
    ({"video": "other.mp4", "caption": "a yellow square moves left", "family": "motion"}, None),
]
BAD_LINES = {i + 1: reason for i, (_, reason) in enumerate(ROWS) if reason}


def write_bad_dataset(root: Path) -> Path:
    """Videos good and bad, and `train.jsonl` referencing them (ROWS); returns the captions file."""
    root.mkdir(parents=True, exist_ok=True)
    write_test_clip(root / "good.mp4", num_frames=16, fps=8)  # 2 s
    write_test_clip(root / "other.mp4", num_frames=12, fps=8)
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: cut off
    (root / "empty.mp4").write_bytes(b"")
    with wave.open(str(root / "audio.wav"), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 800)
    (root / "folder.mp4").mkdir()
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record, _ in ROWS))
    return path


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory) -> Path:
    return write_bad_dataset(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def processor() -> VidGPT2Processor:
    video = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return VidGPT2Processor(video_processor=video, tokenizer=tiny_tokenizer())


# --- check_dataset --------------------------------------------------------------------------------------------------------
def test_check_lists_every_bad_row_with_file_line_and_reason(bad_file):
    data = load_captions_files(train_file=bad_file)
    report = check.check_dataset(data, num_workers=3, show_progress=False)
    found = {int(clip.origin.rsplit(" line ", 1)[1]): clip for clip in report.bad}
    assert set(found) == set(BAD_LINES)
    for line, reason in BAD_LINES.items():
        clip = found[line]
        assert reason in clip.reason, (line, clip.reason)
        assert clip.describe().startswith(f"{bad_file} line {line}: ")
    assert report.num_clips == len(ROWS) and report.num_videos == 7  # each file opened once
    assert not report.ok and "7 of 10 clips" in report.summary()
    # the good rows are exactly the rows not reported
    assert len(check.drop_bad_rows(data, report)["train"]) == 1 + 2 + 1


def test_check_opens_each_video_once_in_parallel(bad_file, monkeypatch):
    calls = []
    probe = check.probe_video
    monkeypatch.setattr(check, "probe_video", lambda path, **kw: calls.append(path) or probe(path, **kw))
    check.check_dataset(load_captions_files(train_file=bad_file), num_workers=4, show_progress=False)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 7


def test_probe_measures_the_duration_when_the_header_has_none(bad_file, monkeypatch):
    good = bad_file.parent / "good.mp4"
    assert check.probe_video(good).duration == pytest.approx(2.0)
    monkeypatch.setattr(check, "_stream_timing", lambda *args: _Timing(None, None))
    assert check.probe_video(good).duration is None
    assert check.probe_video(good, measure_duration=True).duration == pytest.approx(2.0, abs=0.01)
    # a segment start needs the duration: it is measured, and a start past the end is still caught
    report = check.check_dataset(load_captions_files(train_file=bad_file), num_workers=0, show_progress=False)
    assert any("after the video ends" in clip.reason for clip in report.bad)


def test_decode_frames_finds_segments_that_fail_to_decode(bad_file, monkeypatch):
    data = load_captions_files(train_file=bad_file)
    assert len(check.check_dataset(data, num_frames=4, num_workers=2, show_progress=False).bad) == len(BAD_LINES)

    def read_video(path, num_frames, start=None, end=None):
        if start == 0.5:
            raise check.VideoDecodeError(f"Could not decode video '{path}': broken packet")
        return None

    monkeypatch.setattr(check, "read_video", read_video)
    report = check.check_dataset(data, num_frames=4, num_workers=2, show_progress=False)
    assert len(report.bad) == len(BAD_LINES) + 1
    (decoded,) = [clip for clip in report.bad if clip.start == 0.5]
    assert decoded.origin == f"{bad_file} line 9" and decoded.reason.endswith("broken packet")


def test_write_clean_captions_round_trips_through_the_loader(bad_file, tmp_path):
    data = load_captions_files(train_file=bad_file)
    report = check.check_dataset(data, show_progress=False)
    written = check.write_clean_captions(data, report, tmp_path / "clean")
    clean = load_captions_files(train_file=written["train"])["train"]
    kept = check.drop_bad_rows(data, report)["train"]
    columns = ["video", "caption", "references", "start", "end", "video_id", "family"]
    assert clean.select_columns(columns).to_list() == kept.select_columns(columns).to_list()
    assert check.check_dataset(clean, show_progress=False).ok


def test_check_reads_the_origin_of_named_datasets(tmp_path):
    # BDD-X rows carry file, line and segment: a missing video is reported there
    fixture = Path(__file__).parent / "fixtures" / "data" / "bddx"
    data = load_video_caption_dataset("bddx", fixture)
    report = check.check_dataset(data, show_progress=False)
    assert report.bad and all(" line " in clip.origin and "segment" in clip.origin for clip in report.bad)
    assert {clip.reason for clip in report.bad} == {"file not found"}


# --- acting on the check ---------------------------------------------------------------------------------------------------
def test_enforce_data_check_fails_with_the_list_or_drops_with_a_count(bad_file, caplog):
    data = load_captions_files(train_file=bad_file)
    with caplog.at_level(logging.ERROR, logger="vidgpt2.data.check"):
        with pytest.raises(check.DataCheckError, match=r"7 of 10 clips .* --on-bad-video skip") as error:
            check.enforce_data_check(data, show_progress=False)
    assert len(error.value.report.bad) == 7
    assert sum("bad clip:" in r.message for r in caplog.records) == 7  # the full list is logged
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vidgpt2.data.check"):
        kept = check.enforce_data_check(data, on_bad_video="skip", show_progress=False)
    assert len(kept["train"]) == 4
    assert any("skipping them" in r.message and "train 7 rows" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="on_bad_video"):
        check.enforce_data_check(data, on_bad_video="ignore")


def test_check_data_catches_a_faststart_mp4_cut_short_without_decoding_frames(tmp_path, capsys):
    """A partial download of a "faststart" MP4 (index first) kept a whole index, so its first frame decoded and the
    default check passed it; training then sampled the part that is left. Now the clips that reach past the cut are
    listed (without --decode-frames), and a segment within the part that is left stays usable."""
    source = write_test_clip(tmp_path / "source.mp4", num_frames=64)  # 8 s at 8 fps
    partial = tmp_path / "partial.mp4"
    ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", partial)
    data = partial.read_bytes()
    partial.write_bytes(data[: len(data) * 4 // 5])  # about 4 of the 8 s left
    rows = [
        {"video": str(partial), "caption": CAPTION},
        {"video": str(partial), "start": 0.5, "end": 2, "caption": CAPTION},
        {"video": str(partial), "start": 1, "end": 7.9, "caption": CAPTION},
        {"video": str(source), "caption": CAPTION},
    ]
    captions = tmp_path / "train.jsonl"
    captions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert cli_main(["check-data", "--train-file", str(captions), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    listed = [line for line in out if line.startswith(f"{captions} line ")]
    assert [line.split(":")[0] for line in listed] == [f"{captions} line 1", f"{captions} line 3"]
    assert all("truncated file" in line and "download or copy it again" in line for line in listed)
    assert "2 of 4 clips" in out[-1]


def test_feature_cache_without_some_clips_is_reported_at_the_start(bad_file, tmp_path):
    data = load_captions_files(train_file=bad_file)
    cache = FeatureCache(tmp_path / "cache")
    train = data["train"]
    for row in train.select(range(3)):
        cache.write(row["video"], row["start"], row["end"], torch.zeros(4, 8))
    report = check.check_feature_cache(data, cache)
    assert len(report.bad) == len(ROWS) - 3 and report.num_videos == 0
    assert all("vidgpt2 extract-features" in clip.reason for clip in report.bad)
    assert {clip.origin for clip in report.bad} == {f"{bad_file} line {i}" for i in range(4, len(ROWS) + 1)}


# --- collator: skip a sample that fails at run time -----------------------------------------------------------------------
def _rows(bad_file: Path, lines: list[int]) -> list[dict]:
    train = load_captions_files(train_file=bad_file)["train"]
    by_line = {int(origin.rsplit(" line ", 1)[1]): i for i, origin in enumerate(train["origin"])}
    return [train[by_line[line]] for line in lines]


def test_collator_skips_a_failing_sample_with_a_counted_warning(bad_file, processor, caplog):
    rows = _rows(bad_file, [1, 5, 10, 2])  # good, missing, good, truncated
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoCaptionCollator(processor)(rows)
    collator = VideoCaptionCollator(processor, on_bad_video="skip")
    with caplog.at_level(logging.WARNING, logger="vidgpt2.data.collator"):
        batch = collator(rows)
    assert batch["pixel_values_videos"].shape == (4, 4, 3, 32, 32)
    assert batch["labels"].shape[0] == 4
    assert torch.all(batch["labels"][[1, 3]] == -100) and torch.all(batch["pixel_values_videos"][[1, 3]] == 0)
    assert (batch["labels"][[0, 2]] != -100).any(dim=1).all()
    good = VideoCaptionCollator(processor)([rows[0], rows[2]])
    assert torch.equal(batch["pixel_values_videos"][[0, 2]], good["pixel_values_videos"])
    assert collator.num_skipped == 2 and "skipped_samples" not in batch  # the model takes no such input
    warnings = [r.message for r in caplog.records if "skipped sample" in r.message]
    assert len(warnings) == 2 and "2 skipped so far" in warnings[-1]
    reported = VideoCaptionCollator(processor, on_bad_video="skip", report_skipped=True)(rows)["skipped_samples"]
    assert reported.dtype == torch.long and reported.item() == 2  # counted where the batch arrives (training.py)
    with pytest.raises(RuntimeError, match="every sample of a batch failed"):
        collator(_rows(bad_file, [3, 4]))


def test_collator_skips_clips_missing_from_the_feature_cache(bad_file, processor, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    rows = _rows(bad_file, [1, 10])
    cache.write(rows[0]["video"], rows[0]["start"], rows[0]["end"], torch.ones(4, 8))
    with pytest.raises(FileNotFoundError, match="other.mp4"):
        VideoCaptionCollator(processor, cache)(rows)
    batch = VideoCaptionCollator(processor, cache, on_bad_video="skip")(rows)
    assert batch["video_features"].shape == (2, 4, 8) and torch.all(batch["video_features"][1] == 0)
    assert torch.all(batch["labels"][1] == -100)


# --- command line ---------------------------------------------------------------------------------------------------------
def test_check_data_cli_lists_bad_rows_and_writes_the_clean_file(bad_file, tmp_path, capsys):
    assert cli_main(["check-data", "--train-file", str(bad_file), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    listed = [line for line in out if line.startswith(f"{bad_file} line ")]
    assert sorted(int(line.split(" line ")[1].split(":")[0]) for line in listed) == sorted(BAD_LINES)
    assert "7 of 10 clips" in out[-1]

    clean = tmp_path / "clean"
    assert cli_main(["check-data", "--train-file", str(bad_file), "--write-clean", str(clean), "--no-progress"]) == 0
    assert len((clean / "train.jsonl").read_text().splitlines()) == 3  # clips: good, good 0.5-9 s, other
    capsys.readouterr()
    assert cli_main(["check-data", "--train-file", str(clean / "train.jsonl"), "--no-progress"]) == 0
    assert "all 3 clips" in capsys.readouterr().out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, processor) -> Path:
    folder = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_evaluate_checks_the_test_file_before_loading_the_model(bad_file, tmp_path, capsys):
    # a Hub id never fetched: the data check must fail first, naming the bad rows (a missing local folder is
    # named even before it: tests/test_pipeline_cli.py)
    code = cli_main(["evaluate", "--model", "no-such-user/never-downloaded", "--test-file", str(bad_file)])
    err = capsys.readouterr().err
    assert code == 1 and "vidgpt2 evaluate: error: data check: 7 of 10 clips" in err and "Traceback" not in err


def test_extract_features_checks_first_and_skips_bad_videos(bad_file, model_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["extract-features", "--model", str(model_dir), "--data-file", str(bad_file), "--output", str(out)]
    assert cli_main(args) == 1
    assert "data check: 7 of 10 clips" in capsys.readouterr().err and not out.exists()
    assert cli_main([*args, "--on-bad-video", "skip"]) == 0
    assert len(list((out / "features").glob("*.safetensors"))) == 3  # the usable clips


def test_extract_features_and_check_data_accept_videofolder(bad_file, model_dir, tmp_path, capsys):
    root = tmp_path / "vf"
    (root / "train").mkdir(parents=True)
    write_test_clip(root / "train" / "a.mp4", num_frames=8, fps=8)
    write_test_clip(root / "train" / "b.mp4", num_frames=8, fps=8)
    metadata = [{"file_name": "a.mp4", "caption": CAPTION}, {"file_name": "b.mp4", "caption": "a green circle grows"}]
    (root / "train" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    assert len(load_video_caption_dataset("videofolder", root)["train"]) == 2
    code = cli_main(
        ["extract-features", "--model", str(model_dir), "--dataset", "videofolder", "--data-dir", str(root),
         "--output", str(tmp_path / "cache")]
    )
    assert code == 0 and len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2
    assert cli_main(["check-data", "--dataset", "videofolder", "--data-dir", str(root), "--no-progress"]) == 0


# --- training -------------------------------------------------------------------------------------------------------------
TINY_CONFIG = {
    "vision_config": TINY_VISION,
    "text_config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64},
    "num_frames": 4,
    "image_size": 32,
}


def _train(bad_file: Path, out: Path, *extra: str) -> int:
    config = out.parent / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return cli_main(
        ["train", "--config", str(config), "--build-tokenizer", "--train-file", str(bad_file),
         "--output-dir", str(out), "--max-steps", "2", "--per-device-train-batch-size", "4", "--report-to", "none",
         "--save-strategy", "no", "--use-cpu", "--disable-tqdm", "true", "--max-caption-length", "12", *extra]
    )


def test_train_stops_before_any_step_with_the_bad_rows(bad_file, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="vidgpt2.data.check"):
        assert _train(bad_file, out) == 1
    err = capsys.readouterr().err
    assert "vidgpt2 train: error: data check: 7 of 10 clips" in err and "Traceback" not in err
    assert not (out / "trainer_state.json").exists() and not (out / "model.safetensors").exists()
    logged = " ".join(r.message for r in caplog.records)
    assert all(f"{bad_file} line {line}:" in logged for line in BAD_LINES)


def test_train_skip_drops_bad_rows_and_skips_runtime_failures(bad_file, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert _train(bad_file, tmp_path / "skip", "--on-bad-video", "skip") == 0
    assert any("skipping them" in r.message for r in caplog.records)
    assert json.loads((tmp_path / "skip" / "trainer_state.json").read_text())["global_step"] == 2
    caplog.clear()
    # without the check, the bad samples reach the collator: skipped there, counted, and training still finishes
    # (one batch holds all 11 rows, 4 of them good: a batch with no good sample raises, as there is nothing to learn)
    with caplog.at_level(logging.WARNING):
        code = _train(
            bad_file, tmp_path / "late", "--on-bad-video", "skip", "--no-check-data",
            "--per-device-train-batch-size", "16", "--dataloader_num_workers", "0",
        )
    assert code == 0
    assert any("skipped sample" in r.message for r in caplog.records)
    assert any("failed to load and were skipped" in r.message for r in caplog.records)
    assert not any("skipping them" in r.message for r in caplog.records)


@pytest.mark.parametrize("workers", [0, 1])
def test_train_skip_total_counts_the_samples_skipped_in_dataloader_workers(bad_file, tmp_path, caplog, workers):
    """With DataLoader workers the collator runs in the workers, so the total at the end counted only the main
    process's skips (0 here with a worker). Each batch now carries its count: 2 steps, each one batch of all 11 rows
    (7 of them bad: lines 2-8 of the captions file)."""
    with caplog.at_level(logging.WARNING):
        code = _train(
            bad_file, tmp_path / "late", "--on-bad-video", "skip", "--no-check-data",
            "--per-device-train-batch-size", "16", "--dataloader_num_workers", str(workers),
        )
    assert code == 0
    totals = [r.getMessage() for r in caplog.records if "failed to load and were skipped" in r.getMessage()]
    assert totals == ["14 samples failed to load and were skipped (--on-bad-video skip)"]


def test_train_reports_clips_missing_from_the_feature_cache_at_the_start(bad_file, tmp_path, capsys):
    cache = FeatureCache(tmp_path / "cache")
    cache.write_metadata({"fingerprint": "x"})
    assert _train(bad_file, tmp_path / "run", "--feature-cache", str(cache.root)) == 1
    assert "data check: 10 of 10 clips" in capsys.readouterr().err


def test_write_clean_refuses_to_overwrite_the_checked_captions_file(bad_file, tmp_path, capsys):
    """`check-data --train-file data/train.jsonl --write-clean data/` used to replace the user's file with the clean
    subset, losing the bad rows (and the file's original layout) without a word."""
    data = tmp_path / "data"
    data.mkdir()
    train = data / "train.jsonl"
    train.write_text(bad_file.read_text().replace('"video": "', f'"video": "{bad_file.parent}/'))
    before = train.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["check-data", "--train-file", str(train), "--write-clean", str(data), "--no-progress"])
    assert exit_info.value.code == 2
    assert "would overwrite the captions file being checked" in capsys.readouterr().err
    assert train.read_bytes() == before
