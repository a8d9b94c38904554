"""`vidgpt2 extract-features` / `extract-frames` read a named dataset as `train` does: with `--msrvtt-split` and
`--bddx-target`, so the cache they build holds exactly the clips that `train --feature-cache/--frame-cache` asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_msrvtt import SENTENCES, official_dir, split_9k_dir
from tests.tiny import tiny_model, tiny_tokenizer
from tests.video_fixtures import write_test_clip
from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.cli import main as cli_main
from vidgpt2.data.feature_cache import FeatureCache, iter_samples
from vidgpt2.data.frame_cache import FrameCache
from vidgpt2.data.synthetic_driving import write_driving_dataset
from vidgpt2.training import DataArguments, load_data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    video = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    tiny_model().save_pretrained(folder)
    return folder


def train_samples(**data_args) -> list[dict]:
    """The clips `vidgpt2 train` reads with these data arguments (every split)."""
    return [s for split in load_data(DataArguments(**data_args)).values() for s in iter_samples(split)]


@pytest.fixture(scope="module")
def msrvtt_dir(tmp_path_factory) -> Path:
    """Both MSR-VTT layouts (official: 5 clips by default; 9k / 1k-A: video0, video2 and video7011) with videos."""
    folder = split_9k_dir(official_dir(tmp_path_factory.mktemp("msrvtt")), with_all_data=False)
    (folder / "videos" / "all").mkdir(parents=True)
    for video_id in SENTENCES:
        write_test_clip(folder / "videos" / "all" / f"{video_id}.mp4", num_frames=8)
    return folder


@pytest.mark.parametrize(("split", "expected"), [(None, 5), ("9k", 3), ("official", 5)])
def test_extract_frames_reads_the_msrvtt_split_train_reads(msrvtt_dir, model_dir, tmp_path, split, expected):
    output = tmp_path / "frames"
    argv = ["extract-frames", "--model", str(model_dir), "--dataset", "msrvtt", "--data-dir", str(msrvtt_dir),
            "--output", str(output), "--num-workers", "0"]
    assert cli_main(argv + (["--msrvtt-split", split] if split else [])) == 0
    wanted = train_samples(dataset="msrvtt", data_dir=str(msrvtt_dir), msrvtt_split=split)
    cache = FrameCache(output)
    assert cache.missing(wanted) == []
    assert len(list(cache.frames_dir.glob("*.npy"))) == len({s["video"] for s in wanted}) == expected


def test_extraction_commands_refuse_an_unknown_split_or_target(msrvtt_dir, model_dir, tmp_path, capsys):
    for command in ("extract-frames", "extract-features"):
        base = [command, "--model", str(model_dir), "--dataset", "msrvtt", "--data-dir", str(msrvtt_dir),
                "--output", str(tmp_path / command)]
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*base, "--msrvtt-split", "7k"])
        assert exit_info.value.code == 2 and "invalid choice: '7k'" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*base, "--bddx-target", "both"])
        assert exit_info.value.code == 2 and "invalid choice: 'both'" in capsys.readouterr().err


def test_extract_features_for_a_bddx_justification_run(model_dir, tmp_path):
    """A cache for `train --dataset bddx --bddx-target justification --feature-cache DIR`: the target is a property of
    the captions, not of the clips (every target keeps the same segments), and cache entries are keyed by clip, so
    the cache covers that run, which checks it at the start."""
    folder = write_driving_dataset(tmp_path / "bddx", num_train=3, num_validation=0, num_test=2, num_frames=6, size=32,
                                   progress=False)
    output = tmp_path / "features"
    argv = ["extract-features", "--model", str(model_dir), "--dataset", "bddx", "--data-dir", str(folder),
            "--output", str(output), "--bddx-target", "justification"]
    assert cli_main(argv) == 0
    wanted = train_samples(dataset="bddx", data_dir=str(folder), bddx_target="justification")
    assert len(wanted) == 5 and FeatureCache(output).missing(wanted) == []
