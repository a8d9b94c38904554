"""Captioning at corpus scale (`vidgpt2.captioning`, `vidgpt2 caption`): inputs, resume, failures, workers, windows of
long videos, subtitles, the pipeline's `segment_seconds`, and two processes merging one output."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

import vidgpt2
from tests.tiny import tiny_model, tiny_tokenizer
from tests.video_fixtures import frame_index, write_test_clip
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.captioning import (
    Clip,
    ClipDataset,
    autocast_dtype,
    caption_videos,
    format_timestamp,
    resolve_inputs,
    subtitle_text,
)
from vidgpt2.cli import main as cli_main
from vidgpt2.video_io import segment_windows, video_duration

FPS = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    model = tiny_model()
    with torch.no_grad():  # eos gets a strong negative bias so captions are long enough to differ
        model.decoder.lm_head.weight[0].fill_(0.0)
        model.decoder.transformer.wte.weight[0].fill_(0.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """clips/a.mp4 (3 s), clips/sub/b.avi (2 s), clips/sub/deeper/c.mkv (1 s), clips/notes.txt; long.mp4 (2.5 s)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "clips" / "sub" / "deeper").mkdir(parents=True)
    write_test_clip(root / "clips" / "a.mp4", num_frames=3 * FPS, fps=FPS)
    write_test_clip(root / "clips" / "sub" / "b.avi", num_frames=2 * FPS, fps=FPS)
    write_test_clip(root / "clips" / "sub" / "deeper" / "c.mkv", num_frames=FPS, fps=FPS)
    (root / "clips" / "notes.txt").write_text("not a video")
    write_test_clip(root / "long.mp4", num_frames=20, fps=FPS)  # 2.5 s: windows of 1 s end with a half window
    return root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- inputs -----------------------------------------------------------------------------------------------------------
def test_inputs_folders_globs_and_manifests(corpus, tmp_path):
    clips = corpus / "clips"
    from_folder = [c.video for c in resolve_inputs([clips])]
    assert from_folder == sorted(str(p) for p in (clips / "a.mp4", clips / "sub" / "b.avi", clips / "sub" / "deeper" / "c.mkv"))
    assert [c.video for c in resolve_inputs(str(clips / "**" / "*.avi"))] == [str(clips / "sub" / "b.avi")]
    # a train-format captions file: one row per reference, relative paths, segments, other fields ignored
    manifest = clips / "list.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"video": "a.mp4", "caption": "one"},
                {"video": "a.mp4", "caption": "two"},  # same clip, second reference
                {"video": "sub/b.avi", "start": 0.5, "end": 1.5},
                {"file_name": "sub/deeper/c.mkv", "family": "x"},
            ]
        )
    )
    listed = resolve_inputs([manifest, clips / "a.mp4"])  # the explicit file repeats a manifest clip: kept once
    assert [c.key for c in listed] == [
        (str(clips / "a.mp4"), None, None),
        (str(clips / "sub" / "b.avi"), 0.5, 1.5),
        (str(clips / "sub" / "deeper" / "c.mkv"), None, None),
    ]
    table = tmp_path / "list.csv"
    table.write_text(f"video,start,end\n{clips / 'a.mp4'},1,2\n")
    assert [c.key for c in resolve_inputs(table)] == [(str(clips / "a.mp4"), 1.0, 2.0)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no video files"):
        resolve_inputs(tmp_path / "empty")
    with pytest.raises(ValueError, match="matches no files"):
        resolve_inputs(str(tmp_path / "*.mp4"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4"}\n{"caption": "no video"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2.*video"):
        resolve_inputs(bad)


# --- the engine -------------------------------------------------------------------------------------------------------
def test_batched_with_workers_equals_one_by_one(model_dir, corpus):
    model = vidgpt2.VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    processor = VidGPT2Processor.from_pretrained(model_dir)
    rows = caption_videos(corpus / "clips", model, processor, batch_size=2, num_workers=2, max_new_tokens=6, show_progress=False)
    assert [r["video"] for r in rows] == [c.video for c in resolve_inputs(corpus / "clips")]
    for row in rows:  # decoding in worker processes and batching change nothing
        pixels = processor(videos=[row["video"]])["pixel_values_videos"]
        alone = processor.batch_decode(model.generate(pixel_values_videos=pixels, max_new_tokens=6))[0]
        assert row == {"video": row["video"], "start": None, "end": None, "caption": alone}
    # each row gets its own clip's caption: a generate that names the clip it was given (by its pixels)
    videos = [r["video"] for r in rows]
    expected = [processor(videos=[v])["pixel_values_videos"][0] for v in videos]  # (T, 3, H, W) each
    words = ["red", "green", "blue"]
    word_ids = processor.tokenizer.convert_tokens_to_ids(words)

    def naming_generate(pixel_values_videos, **kwargs):
        found = [next(k for k, e in enumerate(expected) if torch.equal(px, e)) for px in pixel_values_videos]
        return torch.tensor([[word_ids[k]] for k in found])

    model.generate = naming_generate
    named = caption_videos(corpus / "clips", model, processor, batch_size=2, num_workers=2, show_progress=False)
    assert [r["caption"] for r in named] == words
    # a checkpoint name loads model and processor; bf16 autocast runs on CPU
    again = caption_videos(corpus / "clips", str(model_dir), num_workers=0, dtype="bf16", max_new_tokens=6, show_progress=False)
    assert [r["video"] for r in again] == [r["video"] for r in rows] and all(isinstance(r["caption"], str) for r in again)


def test_autocast_dtype_choices():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        autocast_dtype(cpu, "float8")


def test_resume_skips_done_clips_and_retries_failures(model_dir, corpus, tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "sub/b.avi"):
        (videos / Path(name).name).write_bytes((corpus / "clips" / name).read_bytes())
    broken = videos / "broken.mp4"
    broken.write_text("not a video")
    out = tmp_path / "out" / "captions.jsonl"
    decoded: list[str] = []
    original = ClipDataset.__getitem__

    def counting(self, index):
        decoded.append(Path(self.clips[index].video).name)
        return original(self, index)

    monkeypatch.setattr(ClipDataset, "__getitem__", counting)
    kwargs = dict(output=out, num_workers=0, batch_size=2, max_new_tokens=5, show_progress=False)
    first = caption_videos(videos, str(model_dir), **kwargs)
    assert sorted(decoded) == ["a.mp4", "b.avi", "broken.mp4"]
    assert [("error" in r) for r in first] == [False, False, True]  # a.mp4, b.avi, broken.mp4 in input order
    assert "VideoDecodeError" in first[2]["error"]
    assert _rows(out) == first
    # an interrupted write leaves half a line; the rerun ignores it, skips the captioned clips and retries the failure
    with open(out, "a") as file:
        file.write('{"video": "x", "cap')
    decoded.clear()
    second = caption_videos(videos, str(model_dir), **kwargs)
    assert decoded == ["broken.mp4"]
    assert second == first and _rows(out) == first
    # fixed in the meantime: now it is captioned, and the stale error row is gone
    broken.write_bytes((corpus / "clips" / "a.mp4").read_bytes())
    decoded.clear()
    third = caption_videos(videos, str(model_dir), **kwargs)
    assert decoded == ["broken.mp4"] and all("caption" in r for r in third) and _rows(out) == third


def test_resume_refuses_other_model_or_windows_and_names_the_difference(model_dir, corpus, tmp_path, capsys):
    """Review finding: a rerun into the same output with another model skipped every clip and kept the first model's
    captions; with --segment-seconds it appended window rows beside whole-clip rows."""
    other = tmp_path / "other_model"
    shutil.copytree(model_dir, other)
    model = vidgpt2.VidGPT2ForConditionalGeneration.from_pretrained(other)
    with torch.no_grad():
        model.decoder.lm_head.weight.mul_(-1.0)  # same config, other weights
    model.save_pretrained(other)
    video = tmp_path / "a.mp4"
    video.write_bytes((corpus / "clips" / "a.mp4").read_bytes())
    out = tmp_path / "caps.jsonl"
    common = [str(video), "--output", str(out), "--max-new-tokens", "4", "--num-workers", "0"]
    assert cli_main(["caption", *common, "--model", str(model_dir)]) == 0
    first = _rows(out)
    settings = json.loads((tmp_path / "caps.jsonl.settings.json").read_text())
    assert settings["model"] == str(model_dir) and settings["segment_seconds"] is None
    capsys.readouterr()
    # another model: refused before anything is captioned, the output untouched
    assert cli_main(["caption", *common, "--model", str(other)]) == 1
    err = capsys.readouterr().err
    assert "model_weights" in err and "model_config" not in err and "another --output" in err and str(out) in err
    assert _rows(out) == first
    # windows into a whole-clip output: refused, naming segment_seconds
    assert cli_main(["caption", *common, "--model", str(model_dir), "--segment-seconds", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "segment_seconds: null then, 0.5 now" in err and "model_weights" not in err
    # other generation settings too
    with pytest.raises(ValueError, match=r"generation.*num_beams"):
        caption_videos(video, str(model_dir), output=out, num_workers=0, max_new_tokens=4, num_beams=2, show_progress=False)
    # the same settings (the model copied elsewhere) resume; an output without a settings record is refused
    copy = tmp_path / "copy_of_model"
    shutil.copytree(model_dir, copy)
    assert cli_main(["caption", *common, "--model", str(copy)]) == 0 and _rows(out) == first
    (tmp_path / "caps.jsonl.settings.json").unlink()
    with pytest.raises(ValueError, match="no settings record"):
        caption_videos(video, str(model_dir), output=out, num_workers=0, max_new_tokens=4, show_progress=False)


def test_caption_cli_output_failures_csv_and_exit_status(model_dir, corpus, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "run.jsonl"
    code = cli_main(
        ["caption", str(corpus / "clips" / "a.mp4"), str(missing), "--model", str(model_dir), "--output", str(out),
         "--format", "csv", "--max-new-tokens", "4", "--num-workers", "1"]
    )
    assert code == 1  # something failed; the rest was captioned
    rows = _rows(out)
    assert [r["video"] for r in rows] == [str(corpus / "clips" / "a.mp4"), str(missing)]
    assert isinstance(rows[0]["caption"], str) and rows[1]["error"].startswith("FileNotFoundError")
    with open(tmp_path / "run.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [(t["video"], t["caption"], t["error"]) for t in table] == [
        (rows[0]["video"], rows[0]["caption"], ""), (str(missing), "", rows[1]["error"])
    ]
    assert "1 clips captioned, 1 failed" in capsys.readouterr().err
    # bad input is refused up front, as any mistake: "vidgpt2 caption: error: ...", exit status 1
    assert cli_main(["caption", str(tmp_path / "*.webm"), "--model", str(model_dir)]) == 1
    assert "vidgpt2 caption: error: The pattern" in capsys.readouterr().err


# --- long videos ------------------------------------------------------------------------------------------------------
def test_segment_windows_cover_the_video():
    assert segment_windows(25, 10) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert segment_windows(20, 10) == [(0.0, 10.0), (10.0, 20.0)]  # no empty window at the end
    assert segment_windows(25, 10, stride=5) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]
    assert segment_windows(3, 10) == [(0.0, 3.0)]
    assert segment_windows(1.0, 0.3)[-1] == (0.9, 1.0)  # float steps rounded to milliseconds
    with pytest.raises(ValueError, match="segment_seconds must be a positive"):
        segment_windows(10, 0)


def test_windows_sample_frames_inside_each_window(corpus):
    # a processor that only converts, so the frames' drawn indices can be read back
    raw = VidGPT2VideoProcessor(num_frames=4, do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)
    assert video_duration(corpus / "long.mp4") == pytest.approx(2.5)
    windows = [Clip(str(corpus / "long.mp4"), s, e) for s, e in segment_windows(2.5, 1.0)]
    dataset = ClipDataset(windows, raw)
    for i, clip in enumerate(windows):
        frames = dataset[i]["pixel_values_videos"].permute(0, 2, 3, 1).numpy().astype(np.uint8)  # (T, H, W, 3)
        indices = [frame_index(f) for f in frames]
        assert all(clip.start * FPS <= k < clip.end * FPS for k in indices), (clip, indices)
    assert [w.end for w in windows] == [1.0, 2.0, 2.5]


def test_segments_rows_and_subtitles(model_dir, corpus, tmp_path):
    import srt
    import webvtt

    video = tmp_path / "long.mp4"
    video.write_bytes((corpus / "long.mp4").read_bytes())
    out = tmp_path / "segments.jsonl"
    code = cli_main(
        ["caption", str(video), "--model", str(model_dir), "--segment-seconds", "1", "--output", str(out),
         "--format", "srt", "--format", "vtt", "--max-new-tokens", "5", "--num-workers", "0"]
    )
    assert code == 0
    rows = _rows(out)
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]  # the last one partial
    # subtitle files beside the video, readable by independent parsers, cues = rows
    cues = list(srt.parse((tmp_path / "long.srt").read_text()))
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == [
        (r["start"], r["end"], r["caption"]) for r in rows
    ]
    vtt_text = (tmp_path / "long.vtt").read_text()
    assert vtt_text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
    vtt = webvtt.from_string(vtt_text, strict=True)
    assert [(c.start_in_seconds, c.end, c.text) for c in vtt] == [
        (int(r["start"]), format_timestamp(r["end"], "vtt"), r["caption"]) for r in rows
    ]
    # stride: overlapping windows
    overlapping = caption_videos(video, str(model_dir), segment_seconds=1.0, stride=0.5, num_workers=0, max_new_tokens=3, show_progress=False)
    assert [(r["start"], r["end"]) for r in overlapping] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]


def test_subtitle_text_escapes_and_hours():
    assert format_timestamp(3725.5, "srt") == "01:02:05,500" and format_timestamp(36000.0004, "vtt") == "10:00:00.000"
    rows = [
        {"video": "v.mp4", "start": 3600.0, "end": 3610.0, "caption": "a <b> & c --> d\n\nnext"},
        {"video": "v.mp4", "start": 0.0, "end": 10.0, "caption": "first"},
        {"video": "v.mp4", "start": 10.0, "end": 20.0, "error": "ValueError: x"},
    ]
    vtt = subtitle_text(rows, "vtt")
    assert vtt.split("\n\n")[2] == "01:00:00.000 --> 01:00:10.000\na &lt;b&gt; &amp; c --&gt; d next\n"
    import webvtt

    assert len(webvtt.from_string(vtt, strict=True)) == 2  # the failed row is not a cue
    assert subtitle_text(rows, "srt").startswith("1\n00:00:00,000 --> 00:00:10,000\nfirst\n\n2\n01:00:00,000")


# --- pipeline and Python API ------------------------------------------------------------------------------------------
def test_pipeline_segment_seconds_matches_the_engine(model_dir, corpus):
    captioner = pipeline("video-captioning", model=str(model_dir))
    video = str(corpus / "long.mp4")
    windows = captioner(video, segment_seconds=1.0, max_new_tokens=5, batch_size=2)
    engine = caption_videos(video, str(model_dir), segment_seconds=1.0, num_workers=0, max_new_tokens=5, show_progress=False)
    assert windows == [{"start": r["start"], "end": r["end"], "generated_text": r["caption"]} for r in engine]
    # a list of videos: one list of windows each; a window equals the same segment asked for directly
    both = captioner([video, {"video": video, "start": 1.0, "end": 2.5}], segment_seconds=1.0, max_new_tokens=5)
    assert both[0] == windows and [(w["start"], w["end"]) for w in both[1]] == [(1.0, 2.0), (2.0, 2.5)]
    assert both[1][0]["generated_text"] == captioner(video, start=1.0, end=2.0, max_new_tokens=5)[0]["generated_text"]
    with pytest.raises(ValueError, match="segment_seconds needs video files"):
        captioner(np.zeros((4, 32, 32, 3), np.uint8), segment_seconds=1.0)


def test_pipeline_accepts_a_dataset(model_dir, corpus):
    from datasets import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    captioner = pipeline("video-captioning", model=str(model_dir))
    video = str(corpus / "clips" / "a.mp4")
    dataset = Dataset.from_list([{"video": video, "start": None, "end": None}, {"video": video, "start": 1.0, "end": 2.0}])
    results = captioner(dataset, max_new_tokens=5, batch_size=2, num_workers=1)
    assert results == [captioner(video, max_new_tokens=5), captioner(video, start=1.0, end=2.0, max_new_tokens=5)]
    # transformers' documented idiom for a column of a dataset: a torch Dataset of inputs
    assert captioner(KeyDataset(dataset, "video"), max_new_tokens=5, batch_size=2) == [results[0], results[0]]


class RecordingVideoProcessor(VidGPT2VideoProcessor):
    """Writes where it ran (pid, parent pid, niceness) to `record_dir`, then preprocesses as usual. Defined at module
    level so that forkserver workers can unpickle it."""

    record_dir: str = ""

    def preprocess(self, videos, **kwargs):
        where = {"pid": os.getpid(), "ppid": os.getppid(), "nice": os.getpriority(os.PRIO_PROCESS, 0)}
        (Path(self.record_dir) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(where))
        return super().preprocess(videos, **kwargs)


def _recording(video_processor, folder: Path) -> RecordingVideoProcessor:
    folder.mkdir()
    recording = RecordingVideoProcessor(**video_processor.to_dict())
    recording.record_dir = str(folder)
    return recording


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


def test_pipeline_on_a_list_is_the_engine(model_dir, corpus, tmp_path):
    """A list goes through the engine's decoding core: the same captions as `caption_videos`, decoded in worker
    processes started by the fork server (their parent is not this process) at the lowest CPU priority."""
    videos = [str(corpus / "clips" / "a.mp4"), str(corpus / "clips" / "sub" / "b.avi"), str(corpus / "long.mp4")]
    engine = caption_videos(videos, str(model_dir), batch_size=2, num_workers=1, max_new_tokens=5, show_progress=False)
    captioner = pipeline("video-captioning", model=str(model_dir))
    captioner.processor.video_processor = _recording(captioner.processor.video_processor, tmp_path / "workers")
    results = captioner(videos, batch_size=2, num_workers=1, max_new_tokens=5)
    assert [r[0]["generated_text"] for r in results] == [row["caption"] for row in engine]
    records = _records(tmp_path / "workers")
    assert len(records) == 3 and all(r["pid"] != os.getpid() and r["ppid"] != os.getpid() for r in records)
    assert {r["nice"] for r in records} == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + 19)}
    # num_workers=0 decodes here; batch_size is the pipeline's own (given to pipeline(...)) unless the call sets one
    captioner.processor.video_processor = _recording(captioner.processor.video_processor, tmp_path / "here")
    assert captioner(videos, num_workers=0, max_new_tokens=5) == results
    assert {r["pid"] for r in _records(tmp_path / "here")} == {os.getpid()}


def test_pipeline_list_names_the_video_that_fails(model_dir, corpus, tmp_path):
    captioner = pipeline("video-captioning", model=str(model_dir))
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        captioner([str(corpus / "clips" / "a.mp4"), str(missing)], batch_size=2, num_workers=1, max_new_tokens=3)
    with pytest.raises(ValueError, match="needs a 'video' key"):
        captioner([{"path": str(missing)}], max_new_tokens=3)


PIPELINE_WITHOUT_VIDGPT2 = textwrap.dedent(
    """
    import json, sys
    sys.modules["vidgpt2"] = None  # any `import vidgpt2` now fails: only the repository's code can be used
    from transformers import pipeline

    repo, videos, expected = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    captioner = pipeline("video-captioning", model=repo, trust_remote_code=True)
    assert type(captioner).__module__.startswith("transformers_modules."), type(captioner).__module__
    results = captioner(videos, batch_size=2, num_workers=1, max_new_tokens=5)
    assert [r[0]["generated_text"] for r in results] == expected, (results, expected)
    print("OK")
    """
)


def test_pushed_pipeline_captions_a_list_with_workers_without_vidgpt2(model_dir, corpus, tmp_path):
    """The remote-code copy (pipeline + clip_loader + video_io ...) decodes a list in a worker process where vidgpt2
    cannot be imported: the worker unpickles the dataset and video processor from `transformers_modules`."""
    from tests.fake_hub import FakeHfApi
    from vidgpt2 import VidGPT2ForConditionalGeneration
    from vidgpt2.hub import push_to_hub

    api = FakeHfApi(tmp_path / "hub")
    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    push_to_hub(model, "user/tiny", processor=VidGPT2Processor.from_pretrained(model_dir), api=api)
    repo = api.repo_path("user/tiny")
    assert (repo / "clip_loader.py").is_file()
    videos = [str(corpus / "clips" / "a.mp4"), str(corpus / "long.mp4"), str(corpus / "clips" / "sub" / "b.avi")]
    expected = [row["caption"] for row in caption_videos(videos, str(model_dir), num_workers=0, max_new_tokens=5, show_progress=False)]
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_WITHOUT_VIDGPT2, str(repo), json.dumps(videos), json.dumps(expected)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-4000:]


# --- several processes ------------------------------------------------------------------------------------------------
def test_two_processes_share_the_clips_and_merge_one_output(model_dir, corpus, tmp_path):
    clips = corpus / "clips"
    videos = [str(clips / "a.mp4"), str(clips / "sub" / "b.avi"), str(clips / "sub" / "deeper" / "c.mkv"), str(corpus / "long.mp4")]
    missing = str(tmp_path / "missing.mp4")
    out = tmp_path / "ddp.jsonl"
    common = ["--model", str(model_dir), "--output", str(out), "--segment-seconds", "1", "--max-new-tokens", "4", "--num-workers", "0"]
    # an earlier run captioned the 3 windows of a.mp4; the two processes share the other 6 windows (3 s + 2 + 1 + 2.5)
    assert cli_main(["caption", videos[0], *common]) == 0
    first = _rows(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
        "-m", "vidgpt2.cli", "caption", *videos, missing, *common, "--device", "cpu",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "the missing video must make the run fail"
    assert "]: Traceback" not in result.stderr, result.stderr[-3000:]  # no process crashed: torchrun only reports exit 1
    shares = sorted(line.split("Captioning ")[1] for line in result.stderr.splitlines() if "Captioning " in line)
    assert shares == [f"3 clips on process {rank}/2 (3 of 9 already done)" for rank in (0, 1)], result.stderr[-3000:]
    rows = _rows(out)
    assert rows[:3] == first  # kept, not redone
    assert [(Path(r["video"]).name, r["start"], r["end"]) for r in rows] == [
        ("a.mp4", 0.0, 1.0), ("a.mp4", 1.0, 2.0), ("a.mp4", 2.0, 3.0), ("b.avi", 0.0, 1.0), ("b.avi", 1.0, 2.0),
        ("c.mkv", 0.0, 1.0), ("long.mp4", 0.0, 1.0), ("long.mp4", 1.0, 2.0), ("long.mp4", 2.0, 2.5),
        ("missing.mp4", None, None),
    ]  # each clip once, in input order, from both shares
    assert rows[-1]["error"].startswith("FileNotFoundError") and all("caption" in r for r in rows[:-1])
    assert not list(tmp_path.glob("ddp.jsonl.part-*")), "part files are merged and removed"


# --- int8 (CPU) -------------------------------------------------------------------------------------------------------
def test_int8_captions_with_a_quantised_copy_and_leaves_the_model(model_dir, corpus, monkeypatch):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from transformers.pytorch_utils import Conv1D

    import vidgpt2.captioning as captioning
    from vidgpt2.inference import quantize_dynamic_int8

    model = vidgpt2.VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    processor = VidGPT2Processor.from_pretrained(model_dir)
    used = []
    original = captioning._generate

    def spy(caption_model, *args, **kwargs):
        used.append(caption_model)
        return original(caption_model, *args, **kwargs)

    monkeypatch.setattr(captioning, "_generate", spy)
    videos = [corpus / "clips" / "a.mp4", corpus / "clips" / "sub" / "b.avi"]
    rows = caption_videos(videos, model, processor, dtype="int8", num_workers=0, max_new_tokens=6, show_progress=False)
    assert len(used) == 1 and used[0] is not model
    decoder = list(used[0].decoder.modules())
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in decoder) == 7 * model.config.text_config.n_layer + 1
    assert not any(type(m) in (torch.nn.Linear, Conv1D) for m in decoder)
    # the caller's model is not modified: still GPT-2's fp32 Conv1D layers
    assert isinstance(model.decoder.transformer.h[0].attn.c_attn, Conv1D)
    assert not any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
    # the rows are the int8 model's captions
    pixels = processor(videos=[str(v) for v in videos])["pixel_values_videos"]
    with torch.no_grad():
        expected = processor.batch_decode(quantize_dynamic_int8(model).generate(pixel_values_videos=pixels, max_new_tokens=6))
    assert [r["caption"] for r in rows] == expected and all(expected)


def test_int8_is_cpu_only_and_not_for_explanations(model_dir, corpus, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="int8.*CPU only, not on cuda:0.*--device cpu"):
        autocast_dtype(torch.device("cuda:0"), "int8")
    assert autocast_dtype(torch.device("cpu"), "int8") is None
    import vidgpt2.captioning as captioning

    # the engine refuses before moving the model (no GPU needed: the device check is on the device's type)
    monkeypatch.setattr(captioning, "_default_device", lambda state: torch.device("cuda:0"))
    with pytest.raises(ValueError, match="CPU only"):
        caption_videos(corpus / "clips" / "a.mp4", str(model_dir), dtype="int8", num_workers=0, show_progress=False)
    with pytest.raises(ValueError, match="drop --dtype int8 or --explain"):
        caption_videos(corpus / "clips" / "a.mp4", str(model_dir), dtype="int8", explain_dir=tmp_path, show_progress=False)


def test_caption_cli_int8_is_recorded_and_resume_across_precisions_is_refused(model_dir, corpus, tmp_path, capsys):
    video = tmp_path / "a.mp4"
    video.write_bytes((corpus / "clips" / "a.mp4").read_bytes())
    out = tmp_path / "caps.jsonl"
    settings_file = tmp_path / "caps.jsonl.settings.json"
    common = [str(video), "--model", str(model_dir), "--output", str(out), "--max-new-tokens", "4", "--num-workers", "0"]
    assert cli_main(["caption", *common]) == 0
    fp32_rows = _rows(out)
    assert json.loads(settings_file.read_text())["quantization"] is None
    capsys.readouterr()
    # an fp32 output resumed in int8: refused, naming the setting, the output untouched
    assert cli_main(["caption", *common, "--dtype", "int8"]) == 1
    err = capsys.readouterr().err
    assert 'quantization: null then, "int8-dynamic-decoder" now' in err and "another --output" in err
    assert _rows(out) == fp32_rows
    # the app's names are accepted as aliases; float32 resumes the fp32 output
    assert cli_main(["caption", *common, "--precision", "float32"]) == 0 and _rows(out) == fp32_rows
    # an output written before the setting existed (no key) is an fp32 one: fp32 resumes, int8 is refused
    settings = json.loads(settings_file.read_text())
    del settings["quantization"]
    settings_file.write_text(json.dumps(settings))
    assert cli_main(["caption", *common]) == 0
    assert cli_main(["caption", *common, "--dtype", "int8"]) == 1
    # a fresh int8 output records int8, and an fp32 rerun into it is refused
    int8_out = tmp_path / "int8.jsonl"
    int8 = [str(video), "--model", str(model_dir), "--output", str(int8_out), "--max-new-tokens", "4", "--num-workers", "0"]
    assert cli_main(["caption", *int8, "--dtype", "int8"]) == 0
    assert isinstance(_rows(int8_out)[0]["caption"], str)
    assert json.loads((tmp_path / "int8.jsonl.settings.json").read_text())["quantization"] == "int8-dynamic-decoder"
    capsys.readouterr()
    assert cli_main(["caption", *int8, "--dtype", "fp32"]) == 1
    assert '"int8-dynamic-decoder" then, null now' in capsys.readouterr().err


def test_fork_server_preloads_what_decoding_workers_unpickle(model_dir):
    """Workers fork from a server that already imported the dataset's and video processor's modules (each DataLoader
    would otherwise import torch/transformers again before its first clip); earlier preload entries are kept."""
    from vidgpt2.clip_loader import preload_in_fork_server

    processor = VidGPT2Processor.from_pretrained(model_dir)
    modules = preload_in_fork_server(ClipDataset([Clip("a.mp4")], processor.video_processor))
    assert modules[0] == "__main__"
    assert {"vidgpt2.captioning", "vidgpt2.video_processing_vidgpt2", "vidgpt2.clip_loader"} <= set(modules)
    assert preload_in_fork_server(ClipDataset([Clip("b.mp4")], processor.video_processor)) == modules  # no repeats
