"""MSR-VTT on tiny made-up files in the two real layouts: the official videodatainfo files (and MSRVTT_data.json)
and the 9k / 1k-A lists of the Hub copy."""

import json
import logging
from pathlib import Path

import pytest

from vidgpt2.data import FEATURES, load_video_caption_dataset

SENTENCES = {
    "video0": ["a man is driving a car", "a car drives down a road"],
    "video1": ["a cartoon character is dancing", "na"],  # "na" is junk
    "video2": ["a woman is cooking", "someone cooks food", "a woman makes a dish"],
    "video7010": ["a band plays music", "people perform on a stage"],
    "video7011": ["a dog runs in a park", "a puppy plays outside"],
}
OFFICIAL_SPLITS = {"video0": "train", "video1": "train", "video2": "validate", "video7010": "test", "video7011": "test"}


def videodatainfo(video_ids):
    """An official annotation object: videos with their split and times, sentences in (video, sen_id) order."""
    videos = [
        {
            "category": 9,
            "url": "https://www.youtube.com/watch?v=x",
            "video_id": v,
            "start time": 137.72,
            "end time": 149.44,
            "split": OFFICIAL_SPLITS[v],
            "id": int(v[5:]),
        }  # fmt: skip
        for v in video_ids
    ]
    sentences = [{"caption": c, "video_id": v, "sen_id": i} for i, (v, c) in enumerate(
        (v, c) for v in video_ids for c in SENTENCES[v])]  # fmt: skip
    return {"info": {"year": "2016", "version": "1.0"}, "videos": videos, "sentences": sentences}


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def official_dir(root):
    write_json(root / "train_val_videodatainfo.json", videodatainfo(["video0", "video1", "video2"]))
    write_json(root / "test_videodatainfo.json", videodatainfo(["video7010", "video7011"]))
    return root


def split_9k_dir(root, with_all_data):
    hub_item = {"source": "MSR-VTT", "category": 9, "url": "https://x", "start time": 1.0, "end time": 2.0}
    train = [
        {"video_id": "video0", "video": "video0.mp4", "caption": SENTENCES["video0"], **hub_item},
        {"video_id": "video2", "video": "video2.mp4", "caption": SENTENCES["video2"][:2], **hub_item},
        {"video_id": "video2", "video": "video2.mp4", "caption": SENTENCES["video2"][2], **hub_item},  # merged
    ]
    test = [{"video_id": "video7011", "video": "video7011.mp4", "caption": "a dog runs in a park", **hub_item}]
    write_json(root / "msrvtt_train_9k.json", train)
    write_json(root / "msrvtt_test_1k.json", test)
    if with_all_data:
        write_json(root / "MSRVTT_data.json", videodatainfo(list(SENTENCES)))
    return root


def clip_ids(ds):
    return list(dict.fromkeys(ds["video_id"]))


def test_official_split_references_and_paths(tmp_path, caplog):
    folder = official_dir(tmp_path / "msrvtt")
    with caplog.at_level(logging.INFO):
        dsd = load_video_caption_dataset("msrvtt", folder)
    assert list(dsd) == ["train", "validation", "test"]
    for split in dsd.values():
        assert all(split.features[name] == feature for name, feature in FEATURES.items())
    assert {s: clip_ids(dsd[s]) for s in dsd} == {
        "train": ["video0", "video1"],
        "validation": ["video2"],  # "validate" in the file
        "test": ["video7010", "video7011"],
    }
    train = dsd["train"]
    assert train["caption"] == SENTENCES["video0"] + ["a cartoon character is dancing"]  # one row per reference
    assert train[0]["video"] == str((folder / "videos" / "video0.mp4").absolute())
    # the mp4 files are already cut: "start time" / "end time" (times in the YouTube source) are not used
    assert train[0]["start"] is None and train[0]["end"] is None
    video2 = dsd["validation"][0]
    assert video2["references"] == SENTENCES["video2"] and video2["caption"] == SENTENCES["video2"][0]
    assert [len(r) for r in dsd["test"]["references"]] == [2, 2]
    assert "video paths (under" in caplog.text and "are not checked" in caplog.text


def test_all_data_json_alone_gives_the_official_split(tmp_path):
    folder = tmp_path / "msrvtt"
    write_json(folder / "MSRVTT_data.json", videodatainfo(list(SENTENCES)))
    dsd = load_video_caption_dataset("MSR-VTT", folder)
    assert {s: clip_ids(dsd[s]) for s in dsd} == {
        "train": ["video0", "video1"],
        "validation": ["video2"],
        "test": ["video7010", "video7011"],
    }


def test_official_videos_folders_skip_missing_clips_with_count(tmp_path, caplog):
    folder = official_dir(tmp_path / "msrvtt")
    for name in ("TrainValVideo/video0.mp4", "TrainValVideo/video2.mp4", "TestVideo/video7011.mp4"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).touch()
    with caplog.at_level(logging.WARNING):
        dsd = load_video_caption_dataset("msrvtt", folder)
    assert {s: clip_ids(dsd[s]) for s in dsd} == {"train": ["video0"], "validation": ["video2"], "test": ["video7011"]}
    assert dsd["test"][0]["video"] == str((folder / "TestVideo" / "video7011.mp4").absolute())
    assert "skipped 2 clips whose video is not in" in caplog.text
    assert len(load_video_caption_dataset("msrvtt", folder, check_videos=False)["train"]) == 3


def test_9k_1k_a_lists_without_all_data_warn_about_one_reference(tmp_path, caplog):
    folder = split_9k_dir(tmp_path / "msrvtt", with_all_data=False)
    with caplog.at_level(logging.WARNING):
        dsd = load_video_caption_dataset("msrvtt", folder)
    assert list(dsd) == ["train", "test"]  # no validation split in the 9k / 1k-A protocol
    assert clip_ids(dsd["train"]) == ["video0", "video2"]
    assert dsd["train"].filter(lambda r: r["video_id"] == "video2")["caption"] == SENTENCES["video2"]  # merged items
    assert dsd["test"]["references"] == [["a dog runs in a park"]]
    assert "one caption per test clip" in caplog.text and "MSRVTT_data.json" in caplog.text


def test_9k_1k_a_test_references_come_from_all_data(tmp_path, caplog):
    folder = split_9k_dir(tmp_path / "msrvtt", with_all_data=True)
    with caplog.at_level(logging.WARNING):
        dsd = load_video_caption_dataset("msrvtt", folder)
    assert list(dsd) == ["train", "test"]  # the 9k lists win over MSRVTT_data.json's official split
    assert dsd["test"]["references"] == [SENTENCES["video7011"]]
    assert "one caption per test clip" not in caplog.text
    # the official split from the same folder, on request
    official = load_video_caption_dataset("msrvtt", folder, split_scheme="official")
    assert clip_ids(official["validation"]) == ["video2"]


def test_both_layouts_default_to_official(tmp_path):
    folder = split_9k_dir(official_dir(tmp_path / "msrvtt"), with_all_data=False)
    assert list(load_video_caption_dataset("msrvtt", folder)) == ["train", "validation", "test"]
    assert list(load_video_caption_dataset("msrvtt", folder, split_scheme="9k")) == ["train", "test"]


def test_missing_files_list_what_is_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as excinfo:
        load_video_caption_dataset("msrvtt", tmp_path / "empty")
    for name in ("train_val_videodatainfo.json", "test_videodatainfo.json", "MSRVTT_data.json", "msrvtt_train_9k.json",
                 "msrvtt_test_1k.json"):  # fmt: skip
        assert name in str(excinfo.value)
    folder = official_dir(tmp_path / "half")
    (folder / "test_videodatainfo.json").unlink()
    with pytest.raises(FileNotFoundError, match="test_videodatainfo.json is missing"):
        load_video_caption_dataset("msrvtt", folder)
    folder = split_9k_dir(tmp_path / "half9k", with_all_data=False)
    (folder / "msrvtt_test_1k.json").unlink()
    with pytest.raises(FileNotFoundError, match="msrvtt_test_1k.json"):
        load_video_caption_dataset("msrvtt", folder)
    with pytest.raises(FileNotFoundError, match="no MSR-VTT videos folder"):
        load_video_caption_dataset("msrvtt", official_dir(tmp_path / "novideos"), check_videos=True)
    with pytest.raises(ValueError, match="split_scheme must be"):
        load_video_caption_dataset("msrvtt", folder, split_scheme="7k")


def corrupt(data, where, **fields):
    data = json.loads(json.dumps(data))
    data[where[0]][where[1]].update(fields)
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        ({"videos": []}, 'expected a "sentences" list'),
        ([{"video_id": "video0"}], 'expected a JSON object with a "videos" list'),
        (corrupt(videodatainfo(["video0"]), ("videos", 0), split="val"), r'videos\[0\]: "split" must be one of'),
        (corrupt(videodatainfo(["video0"]), ("sentences", 1), caption=None), r'sentences\[1\]: "caption" must be'),
    ],
    ids=["no-sentences", "list", "bad-split", "no-caption"],
)
def test_official_file_errors_name_file_and_item(tmp_path, data, message):
    folder = official_dir(tmp_path / "msrvtt")
    write_json(folder / "train_val_videodatainfo.json", data)
    with pytest.raises(ValueError, match=rf"train_val_videodatainfo.json:? ?{message}"):
        load_video_caption_dataset("msrvtt", folder)


def test_9k_list_errors_name_file_and_item(tmp_path):
    folder = split_9k_dir(tmp_path / "msrvtt", with_all_data=False)
    write_json(
        folder / "msrvtt_train_9k.json", [{"video_id": "video0", "caption": ["x"]}, {"video_id": "v", "caption": 3}]
    )
    with pytest.raises(ValueError, match=r'msrvtt_train_9k.json item 1: "caption" must be a string or a list'):
        load_video_caption_dataset("msrvtt", folder)
    write_json(folder / "msrvtt_train_9k.json", [{"caption": "x"}])
    with pytest.raises(ValueError, match=r'msrvtt_train_9k.json item 0: missing "video_id"'):
        load_video_caption_dataset("msrvtt", folder)
    folder = split_9k_dir(tmp_path / "mismatch", with_all_data=True)
    write_json(folder / "msrvtt_test_1k.json", [{"video_id": "video9999", "caption": "x"}])
    with pytest.raises(ValueError, match="1 test videos are not in .*MSRVTT_data.json"):
        load_video_caption_dataset("msrvtt", folder)


def test_training_data_arguments_and_cli_accept_msrvtt(tmp_path, monkeypatch):
    from vidgpt2 import cli
    from vidgpt2.data import feature_cache
    from vidgpt2.training import DataArguments, load_data

    folder = official_dir(tmp_path / "msrvtt")
    data = load_data(DataArguments(dataset="msrvtt", data_dir=str(folder), max_eval_samples=1))
    assert clip_ids(data["train"]) == ["video0", "video1"] and len(data["test"]) == 1
    split_9k_dir(folder, with_all_data=False)
    assert list(load_data(DataArguments(dataset="msrvtt", data_dir=str(folder), msrvtt_split="9k"))) == [
        "train",
        "test",
    ]

    class Loaded(Exception):
        pass

    def stop(split):  # the CLI has read the dataset: stop before any model is loaded
        raise Loaded(split["video_id"])

    monkeypatch.setattr(feature_cache, "iter_samples", stop)
    argv = ["--model", "unused", "--dataset", "msrvtt", "--data-dir", str(folder), "--output", str(tmp_path / "c")]
    argv.append("--no-check-data")  # the fixture has no video files
    with pytest.raises(Loaded, match="video0"):
        cli.cmd_extract_features(argv)


def test_utf8_bom_annotation_file_reads(tmp_path):
    folder = tmp_path / "msrvtt"
    folder.mkdir()
    (folder / "MSRVTT_data.json").write_bytes(json.dumps(videodatainfo(list(SENTENCES))).encode("utf-8-sig"))
    assert len(load_video_caption_dataset("msrvtt", Path(folder))["test"]) == 2


def test_check_data_cli_has_the_msrvtt_split_and_bddx_target_flags_of_train(tmp_path, monkeypatch, capsys):
    """Review finding: check-data lacked --msrvtt-split, and its help offered a `--bddx-target both` it rejected."""
    from vidgpt2 import cli
    from vidgpt2.data import bddx, check

    folder = split_9k_dir(official_dir(tmp_path / "msrvtt"), with_all_data=False)  # both layouts: official by default
    seen = []

    class Checked(Exception):
        pass

    def stop(data, **kwargs):  # the CLI has read the dataset: record its splits instead of opening videos
        seen.append(list(data))
        raise Checked

    monkeypatch.setattr(check, "check_dataset", stop)
    for extra in ([], ["--msrvtt-split", "9k"]):
        with pytest.raises(Checked):
            cli.cmd_check_data(["--dataset", "msrvtt", "--data-dir", str(folder), *extra])
    assert seen == [["train", "validation", "test"], ["train", "test"]]
    with pytest.raises(SystemExit) as exit_info:
        cli.cmd_check_data(["--help"])
    assert exit_info.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "--msrvtt-split {official,9k}" in usage and "both" not in usage
    assert f"--bddx-target {{{','.join(bddx.TARGETS)}}}" in usage
    with pytest.raises(SystemExit) as exit_info:
        cli.cmd_check_data(["--dataset", "bddx", "--data-dir", str(folder), "--bddx-target", "both"])
    assert exit_info.value.code == 2 and "invalid choice: 'both'" in capsys.readouterr().err
