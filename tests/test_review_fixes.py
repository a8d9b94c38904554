"""Problems a new user's review found: partial downloads windowed over the video they declare, subtitles that must
not overwrite a user's files, empty or wholly dropped captions files, flags that would be ignored, and clear errors
for files that are not videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

from tests.tiny import tiny_model, tiny_tokenizer
from tests.video_fixtures import ffmpeg, write_test_clip
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor, video_io
from vidgpt2.cli import main as cli_main
from vidgpt2.video_io import VideoDecodeError, video_duration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    tiny_model().save_pretrained(folder)
    return folder


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 1. a partial download is windowed over the video it declares ---------------------------------------------------
@pytest.fixture(scope="module")
def cut_mp4(tmp_path_factory) -> Path:
    """A faststart MP4 (index first, as web video is served) of 10 s at 8 fps, cut to 4/5 of its bytes (about 5.4 s
    of video left), as an interrupted download leaves it."""
    root = tmp_path_factory.mktemp("cut")
    source = write_test_clip(root / "source.mp4", num_frames=80, fps=8)
    whole = root / "fs.mp4"
    ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", whole)
    data = whole.read_bytes()
    cut = root / "fs_cut.mp4"
    cut.write_bytes(data[: len(data) * 4 // 5])
    return cut


def test_caption_windows_of_a_cut_file_cover_its_declared_duration_and_fail_past_the_cut(model_dir, cut_mp4, tmp_path, capsys):
    assert video_io.file_truncation(cut_mp4) is not None
    assert 3 < video_duration(cut_mp4) < 6  # the video left; its headers declare 10 s
    out = tmp_path / "caps.jsonl"
    code = cli_main(["caption", str(cut_mp4), "--model", str(model_dir), "--segment-seconds", "3", "--output", str(out),
                     "--max-new-tokens", "3", "--num-workers", "0"])
    assert code == 1  # windows past the cut failed, as any failing video
    rows = _rows(out)
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)]
    assert "caption" in rows[0]  # within the part that is left
    assert all("is truncated" in r["error"] and "download or copy it again" in r["error"] for r in rows[1:])
    assert "failed" in capsys.readouterr().err
    assert video_io.declared_duration(cut_mp4) == pytest.approx(10.0)


def test_pipeline_segment_seconds_on_a_cut_file_raises_the_truncation_error(model_dir, cut_mp4):
    captioner = pipeline("video-captioning", model=str(model_dir))
    with pytest.raises(VideoDecodeError, match=r"fs_cut\.mp4' is truncated.*download or copy it again"):
        captioner(str(cut_mp4), segment_seconds=3.0, max_new_tokens=3)


# --- 2. subtitles never overwrite a file the user had ----------------------------------------------------------------
def test_caption_subtitles_refuse_a_users_file_but_rewrite_their_own(model_dir, tmp_path, capsys):
    folder = tmp_path / "long"
    folder.mkdir()
    video = write_test_clip(folder / "my bikes.mp4", num_frames=16, fps=8)
    mine = folder / "my bikes.srt"
    mine.write_text("1\n00:00:00,000 --> 00:00:01,000\nthe user's own subtitles\n")
    out = tmp_path / "caps.jsonl"
    common = [str(video), "--model", str(model_dir), "--format", "srt", "--segment-seconds", "1", "--max-new-tokens", "3",
              "--num-workers", "0"]
    assert cli_main(["caption", *common, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "vidgpt2 caption: error: The subtitle file" in err and "my bikes.srt' already exists" in err
    assert "--subtitle-dir" in err
    assert mine.read_text().endswith("the user's own subtitles\n") and not out.exists()  # refused before captioning
    mine.unlink()
    assert cli_main(["caption", *common, "--output", str(out)]) == 0 and "-->" in mine.read_text()
    # a rerun into the same output rewrites the file it wrote; a run into another output does not
    assert cli_main(["caption", *common, "--output", str(out)]) == 0
    assert cli_main(["caption", *common, "--output", str(tmp_path / "other.jsonl")]) == 1
    assert "my bikes.srt' already exists" in capsys.readouterr().err


def test_url_subtitles_go_beside_the_output_with_a_safe_name(tmp_path, monkeypatch):
    from vidgpt2.captioning import write_subtitles

    monkeypatch.chdir(tmp_path)
    rows = [{"video": "https://example.com/v/clip.mp4?x=1", "start": 0.0, "end": 1.0, "caption": "a cat"}]
    written = write_subtitles(rows, "srt", output=tmp_path / "run" / "caps.jsonl")
    assert written == [tmp_path / "run" / "example.com_v_clip.srt"] and "a cat" in written[0].read_text()
    assert not (tmp_path / "https:").exists()


# --- 3. a captions file with no usable row is an error, not a run over nothing -----------------------------------------
@pytest.fixture
def hollow_files(tmp_path) -> dict[str, Path]:
    clip = write_test_clip(tmp_path / "a.mp4", num_frames=8, fps=8)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    na = tmp_path / "na.jsonl"
    na.write_text(json.dumps({"video": clip.name, "caption": "na"}) + "\n" + json.dumps({"video": clip.name, "caption": "N/A"}) + "\n")
    return {"empty": empty, "na": na}


@pytest.mark.parametrize("kind", ["empty", "na"])
def test_check_data_and_extract_refuse_a_file_with_no_usable_rows(hollow_files, model_dir, tmp_path, capsys, kind):
    path = hollow_files[kind]
    assert cli_main(["check-data", "--train-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: no usable rows are left" in err
    assert cli_main(["extract-features", "--model", str(model_dir), "--data-file", str(path),
                     "--output", str(tmp_path / "cache")]) == 1
    assert "no usable rows are left" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_train_refuses_a_file_with_no_usable_rows(hollow_files, tmp_path, capsys):
    from tests.test_data_check import _train

    assert _train(hollow_files["na"], tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert f"{hollow_files['na']}: no usable rows are left" in err and "'na'" in err


def test_skipping_every_bad_row_is_an_error(tmp_path, model_dir, capsys):
    path = tmp_path / "gone.jsonl"
    path.write_text(json.dumps({"video": "missing.mp4", "caption": "a cat"}) + "\n")
    assert cli_main(["extract-frames", "--model", str(model_dir), "--data-file", str(path), "--on-bad-video", "skip",
                     "--output", str(tmp_path / "frames")]) == 1
    assert "--on-bad-video skip left no usable rows" in capsys.readouterr().err


# --- 4. a feature cache that is no feature cache: one line -----------------------------------------------------------
def test_check_data_feature_cache_missing_or_a_frame_cache_is_one_clear_line(model_dir, tmp_path, capsys):
    clip = write_test_clip(tmp_path / "a.mp4", num_frames=8, fps=8)
    write_test_clip(tmp_path / "b.mp4", num_frames=8, fps=8)
    captions = tmp_path / "train.jsonl"
    captions.write_text("".join(json.dumps({"video": v, "caption": "a cat"}) + "\n" for v in (clip.name, "b.mp4")))
    nothere = tmp_path / "nothere"
    assert cli_main(["check-data", "--train-file", str(captions), "--feature-cache", str(nothere)]) == 1
    out, err = capsys.readouterr()
    assert f"The feature cache {nothere} does not exist" in err and "no cached features" not in out + err
    frames = tmp_path / "frames"
    assert cli_main(["extract-frames", "--model", str(model_dir), "--data-file", str(captions), "--output", str(frames)]) == 0
    capsys.readouterr()
    assert cli_main(["check-data", "--train-file", str(captions), "--feature-cache", str(frames)]) == 1
    out, err = capsys.readouterr()
    assert "is a frame cache (vidgpt2 extract-frames), not a feature cache" in err and "no cached features" not in out


# --- 5. ids a dry run or a written Space cannot work with -----------------------------------------------------------
def test_push_dry_run_refuses_a_bad_repo_id(model_dir, tmp_path, capsys):
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "bad id", "--dry-run", str(tmp_path / "d")]) == 1
    assert "'bad id' is not a Hub repository id" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "me/ok-name", "--dry-run", str(tmp_path / "d")]) == 0


@pytest.mark.parametrize("model", ["me/m x", "", "me/", "a/b/c"])
def test_app_write_space_refuses_a_bad_model_id(tmp_path, capsys, model):
    pytest.importorskip("gradio")
    assert cli_main(["app", "--model", model, "--write-space", str(tmp_path / "s")]) == 1
    assert f"{model!r} is not a Hub model id" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_app_write_space_refuses_a_folder_that_is_not_a_model_and_keeps_the_precision(tmp_path, capsys):
    pytest.importorskip("gradio")
    (tmp_path / "notes").mkdir()
    assert cli_main(["app", "--model", str(tmp_path / "notes"), "--write-space", str(tmp_path / "s")]) == 1
    assert "a folder without config.json, not a saved model" in capsys.readouterr().err
    assert cli_main(["app", "--model", "me/vidgpt2-msvd", "--dtype", "int8", "--write-space", str(tmp_path / "s")]) == 0
    assert 'CaptionEngine("me/vidgpt2-msvd", precision="int8")' in (tmp_path / "s" / "app.py").read_text()


# --- 6. a dataset choice flag with data it does not apply to ---------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "data", "flag", "applies"),
    [
        ("check-data", ["--train-file", "x.jsonl"], ["--bddx-target", "action"], "--dataset bddx"),
        ("check-data", ["--dataset", "bddx", "--data-dir", "d"], ["--msrvtt-split", "9k"], "--dataset msrvtt"),
        ("extract-frames", ["--data-file", "x.jsonl"], ["--bddx-target", "justification"], "--dataset bddx"),
        ("extract-features", ["--dataset", "msvd", "--data-dir", "d"], ["--msrvtt-split", "official"], "--dataset msrvtt"),
        ("train", ["--train-file", "x.jsonl", "--output-dir", "o"], ["--bddx-target", "action"], "--dataset bddx"),
    ],
)
def test_dataset_choice_flags_that_would_be_ignored_are_refused(command, data, flag, applies, capsys):
    extra = ["--model", "m", "--output", "o"] if command.startswith("extract") else []
    with pytest.raises(SystemExit) as exit_:
        cli_main([command, *data, *flag, *extra])
    assert exit_.value.code == 2
    assert f"{flag[0]} {flag[1]} applies only with {applies}" in capsys.readouterr().err


# --- 7. files that are no video at all ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "said"),
    [(b"", "it is an empty file (0 bytes"), (b"<html><body>Not found</body></html>\n", "it is not a video container")],
)
def test_empty_or_non_video_file_says_what_it_is_and_the_fix(tmp_path, capsys, content, said):
    from vidgpt2.video_io import read_video

    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    for call in (lambda: read_video(path, num_frames=4), lambda: video_duration(path)):
        with pytest.raises(VideoDecodeError) as error:
            call()
        assert said in str(error.value) and "--write-clean" in str(error.value) and "download" in str(error.value)
    captions = tmp_path / "train.jsonl"
    captions.write_text(json.dumps({"video": "clip.mp4", "caption": "a cat"}) + "\n")
    assert cli_main(["check-data", "--train-file", str(captions)]) == 1
    assert said in capsys.readouterr().out


# --- 8. one clip named two ways is captioned once -------------------------------------------------------------------
def test_a_clip_in_a_manifest_and_as_a_relative_file_argument_is_captioned_once(tmp_path, monkeypatch):
    from vidgpt2.captioning import resolve_inputs

    (tmp_path / "videos").mkdir()
    clip = write_test_clip(tmp_path / "videos" / "a.mp4", num_frames=8, fps=8)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"video": str(clip)}) + "\n" + json.dumps({"video": str(clip), "start": 0, "end": 0.5}) + "\n")
    monkeypatch.chdir(tmp_path)
    clips = resolve_inputs([str(manifest), "videos/a.mp4", "./videos/../videos/a.mp4"])
    assert [(c.video, c.start, c.end) for c in clips] == [(str(clip), None, None), (str(clip), 0.0, 0.5)]
    # given first as a relative path, the row keeps that path
    assert [c.video for c in resolve_inputs(["videos/a.mp4", str(clip)])] == ["videos/a.mp4"]


# --- 9. the summary gives bad files and files checked apart -----------------------------------------------------------
def test_check_data_summary_counts_bad_files_apart_from_files_checked(tmp_path):
    from tests.test_data_check import write_bad_dataset
    from vidgpt2.data import load_captions_files
    from vidgpt2.data.check import check_dataset

    report = check_dataset(load_captions_files(train_file=write_bad_dataset(tmp_path)), num_workers=1, show_progress=False)
    # bad: truncated, empty, audio-only, missing, a folder, and segments past the end of good.mp4; other.mp4 is good
    assert report.summary() == (
        "data check: 7 of 10 clips (7 of 11 rows) are bad, in 6 of the 7 video files checked"
    )
