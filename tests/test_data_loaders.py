"""Loaders for captions files, videofolder, MSVD and BDD-X, on tiny made-up files in the real formats."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from vidgpt2.data import (
    FEATURES,
    expand_references,
    load_bddx,
    load_captions_files,
    load_msvd,
    load_video_caption_dataset,
    load_videofolder,
    strip_connective,
    unique_videos,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def by_id(ds):
    return {row["video_id"]: row for row in ds}


def assert_schema(dsd):
    for split, ds in dsd.items():
        for name, feature in FEATURES.items():
            assert ds.features[name] == feature, (split, name)


def copy_fixture(name, tmp_path):
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


# --------------------------------------------------------------------------------------------------------------------
# Captions files
# --------------------------------------------------------------------------------------------------------------------


def test_captions_files_layout_and_relative_paths():
    folder = FIXTURES / "captions"
    dsd = load_captions_files(folder / "train.jsonl", folder / "validation.csv", folder / "test.csv")
    assert set(dsd) == {"train", "validation", "test"}
    assert_schema(dsd)

    train = dsd["train"]
    # Train: one row per reference; rows naming the same clip share its references; "na" is dropped.
    a_rows = [row for row in train if row["video_id"] == "clips/a"]
    assert [row["caption"] for row in a_rows] == ["a man is playing a guitar", "someone plays guitar"]
    assert all(row["references"] == ["a man is playing a guitar", "someone plays guitar"] for row in a_rows)
    assert all(row["video"] == str((folder / "clips" / "a.mp4").absolute()) for row in a_rows)
    b_rows = [row for row in train if row["video_id"] == "clips/b"]
    assert [row["caption"] for row in b_rows] == ["a dog runs", "a puppy is running"]
    assert len(train) == 2 + 2 + 1 + 1 + 1

    # Segments of one long video are separate clips, with start/end.
    segments = sorted((row["start"], row["end"], row["caption"]) for row in train if "long" in row["video"])
    assert segments == [(2.5, 6.0, "a car turns left"), (6.0, 9.0, "a car stops")]
    assert {row["video_id"] for row in train if "long" in row["video"]} == {"clips/long_2.5_6", "clips/long_6_9"}

    rows = by_id(train)
    assert rows["onion-01"]["caption"] == "a woman slices an onion"  # whitespace collapsed, explicit video_id kept
    assert rows["onion-01"]["start"] is None and rows["onion-01"]["end"] is None
    assert rows["clips/a"]["family"] == "music" and rows["onion-01"]["family"] is None  # extra field kept

    # Evaluation splits: one row per clip, caption = first reference, all references kept.
    validation = by_id(dsd["validation"])
    assert set(validation) == {"clips/a", "clips/long_2.5_6"}
    assert validation["clips/a"]["caption"] == "a man plays a guitar, loudly"
    assert validation["clips/a"]["references"] == ["a man plays a guitar, loudly", "a person plays an instrument"]
    test = dsd["test"]
    assert len(test) == 1 and test[0]["references"] == ["a dog runs", "a dog is running"]


def test_captions_file_absolute_paths_and_single_split(tmp_path):
    video = tmp_path / "elsewhere" / "clip.mp4"
    captions = tmp_path / "captions" / "val.jsonl"
    captions.parent.mkdir()
    captions.write_text(json.dumps({"video": str(video), "caption": "a clip"}) + "\n")
    dsd = load_captions_files(validation_file=captions)
    assert list(dsd) == ["validation"]
    assert dsd["validation"][0]["video"] == str(video)
    assert dsd["validation"][0]["video_id"] == "clip"


def test_captions_file_check_videos_skips_missing(tmp_path, caplog):
    touch(tmp_path / "clips", "present.mp4")
    captions = tmp_path / "train.jsonl"
    rows = [{"video": "clips/present.mp4", "caption": "here"}, {"video": "clips/gone.mp4", "caption": "gone"}]
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_captions_files(captions)["train"]) == 2  # not checked by default
    with caplog.at_level(logging.WARNING):
        train = load_captions_files(captions, check_videos=True)["train"]
    assert train["caption"] == ["here"]
    assert "skipped 1 clips whose video file is missing" in caplog.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x"}\n\n{"caption": "y"}\n', 'line 3: missing "video" field'),
        ("captions.jsonl", '{"video": "a.mp4"}\n', 'line 1: missing "caption" or "captions" field'),
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4",\n', "line 2: invalid JSON"),
        ("captions.jsonl", '{"video": "a.mp4", "caption": 3}\n', 'line 1: "caption" must be a string'),
        ("captions.jsonl", '{"video": "a.mp4", "captions": "x"}\n', 'line 1: "captions" must be a list of strings'),
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x", "start": "soon"}\n', 'line 1: "start" must be a number'),
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x", "start": 5, "end": 2}\n', 'line 1: "end" (2) is before'),
        ("captions.jsonl", '["a.mp4", "x"]\n', "line 1: expected a JSON object"),
        ("captions.csv", "video,caption\na.mp4,x\n,y\n", 'line 3: missing "video" field'),
        ("captions.csv", "clip,caption\na.mp4,x\n", 'line 2: missing "video" field'),
        ("captions.csv", 'video,captions\na.mp4,"a, b"\n', 'line 2: "captions" in a CSV must be a JSON list'),
        ("captions.txt", "a.mp4 x\n", "unsupported captions file type '.txt'"),
    ],
)
def test_captions_file_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as excinfo:
        load_captions_files(train_file=path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_captions_file_missing_file_and_no_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_captions_files(train_file=tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="at least one"):
        load_captions_files()


def test_unique_videos_and_expand_references_round_trip():
    folder = FIXTURES / "captions"
    dsd = load_captions_files(folder / "train.jsonl", folder / "validation.csv")
    train, validation = dsd["train"], dsd["validation"]

    clips = unique_videos(train)
    assert len(clips) == 5  # a, b, two segments of long, c
    assert len({(row["video"], row["start"], row["end"]) for row in clips}) == 5
    assert all(row["caption"] == row["references"][0] for row in clips)
    assert unique_videos(validation) is validation  # evaluation splits already have one row per clip

    expanded = expand_references(validation)
    assert len(expanded) == 3
    assert expanded.features == validation.features
    assert expand_references(train).to_list() == train.to_list()  # idempotent on the train layout
    assert list(unique_videos(dsd)) == ["train", "validation"]


# --------------------------------------------------------------------------------------------------------------------
# videofolder
# --------------------------------------------------------------------------------------------------------------------


def test_videofolder_split_subfolders():
    root = FIXTURES / "videofolder"
    dsd = load_videofolder(root)
    assert list(dsd) == ["train", "validation", "test"]  # val/ is the validation split
    assert_schema(dsd)
    assert dsd["train"]["caption"] == ["a cat sleeps", "a bird sings", "a bird chirps"]
    assert dsd["train"][0]["video"] == str((root / "train" / "0001.mp4").absolute())
    assert dsd["validation"]["caption"] == ["a horse runs"]  # "text" column
    assert dsd["test"]["video_id"] == ["0004", "0005"]  # metadata.csv


def test_videofolder_single_folder_and_top_level_metadata(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "metadata.jsonl").write_text('{"file_name": "x.mp4", "caption": "a flat clip"}\n')
    assert list(load_videofolder(tmp_path / "flat")) == ["train"]

    (tmp_path / "top").mkdir()
    rows = [{"file_name": "train/a.mp4", "caption": "one"}, {"file_name": "test/b.mp4", "caption": "two"}]
    (tmp_path / "top" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dsd = load_videofolder(tmp_path / "top")
    assert dsd["train"]["caption"] == ["one"] and dsd["test"]["caption"] == ["two"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        load_videofolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_videofolder(tmp_path / "missing")


def test_videofolder_error_names_metadata_line(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metadata.jsonl").write_text('{"file_name": "a.mp4", "caption": "x"}\n{"caption": "y"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl line 2: missing \"file_name\" field"):
        load_videofolder(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# MSVD
# --------------------------------------------------------------------------------------------------------------------

MSVD_SPLITS = {
    "train": ["-4wsuPCjDBc_5_15", "kWLNZzuo3do_38_45"],  # vid1, vid1200
    "validation": ["-_hbPLsZvvo_18_25", "zv2RIbUsnSw_335_341"],  # vid1201, vid1300
    "test": ["UgUFP5baQ9Y_0_7", "ZbtpcGi2DWY_161_170"],  # vid1301, vid1970
}


def msvd_dir(tmp_path, captions):
    """An MSVD folder with the mapping and one of the captions files."""
    folder = tmp_path / "msvd"
    folder.mkdir()
    shutil.copy(FIXTURES / "msvd" / "youtube_mapping.txt", folder)
    shutil.copy(FIXTURES / "msvd" / captions, folder)
    return folder


def test_msvd_descriptions_txt_split_boundaries_and_references(tmp_path, caplog):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    with caplog.at_level(logging.INFO):
        dsd = load_msvd(folder)
    assert_schema(dsd)
    for split, ids in MSVD_SPLITS.items():
        assert list(dict.fromkeys(dsd[split]["video_id"])) == ids, split

    train = dsd["train"]
    squirrel = [row for row in train if row["video_id"] == "-4wsuPCjDBc_5_15"]
    # Header lines skipped, "na" and empty captions dropped, one training row per remaining reference.
    assert [row["caption"] for row in squirrel] == [
        "a squirrel is eating a peanut in it's shell.",
        "A chipmunk is eating.",
        "a squirrel eats",
    ]
    assert squirrel[0]["references"] == [row["caption"] for row in squirrel]
    assert squirrel[0]["video"] == str((folder / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi").absolute())
    assert squirrel[0]["start"] is None and squirrel[0]["end"] is None
    assert [row["caption"] for row in train if row["video_id"] == "kWLNZzuo3do_38_45"] == ["a man plays a guitar"]

    # Evaluation splits: one row per clip with every reference.
    dog = by_id(dsd["validation"])["-_hbPLsZvvo_18_25"]
    assert dog["caption"] == "a dog is playing with a ball"
    assert dog["references"] == ["a dog is playing with a ball", "a puppy plays"]
    assert len(dsd["test"]) == 2

    assert "not in the split mapping" in caplog.text and "oRVmbLJmwEE_1_4" in caplog.text
    assert "video paths are not checked" in caplog.text


def test_msvd_corpus_csv_keeps_english_non_empty(tmp_path):
    dsd = load_msvd(msvd_dir(tmp_path, "video_corpus.csv"))
    train = dsd["train"]
    squirrel = [row["caption"] for row in train if row["video_id"] == "-4wsuPCjDBc_5_15"]
    assert squirrel == ["A squirrel is eating a peanut in it's shell.", "A chipmunk, eating."]
    assert [row["caption"] for row in train if row["video_id"] == "kWLNZzuo3do_38_45"] == ["a man plays a guitar"]
    assert by_id(dsd["validation"])["zv2RIbUsnSw_335_341"]["references"] == ["a woman slices a tomato"]
    assert "oRVmbLJmwEE_1_4" not in train["video_id"]  # in the CSV, not in the split mapping
    # vid1201 has one English caption; vid1300 too; the test split has both clips.
    assert [len(dsd[s]) for s in ("validation", "test")] == [2, 2]


def test_msvd_videos_folder_skips_missing_clips_with_count(tmp_path, caplog):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    touch(folder / "YouTubeClips", "-4wsuPCjDBc_5_15.avi", "-_hbPLsZvvo_18_25.avi", "UgUFP5baQ9Y_0_7.avi")
    with caplog.at_level(logging.WARNING):
        dsd = load_msvd(folder)
    assert {s: list(dict.fromkeys(dsd[s]["video_id"])) for s in dsd} == {
        "train": ["-4wsuPCjDBc_5_15"],
        "validation": ["-_hbPLsZvvo_18_25"],
        "test": ["UgUFP5baQ9Y_0_7"],
    }
    assert "skipped 3 clips that have captions but no video" in caplog.text

    assert len(load_msvd(folder, check_videos=False)["train"].unique("video_id")) == 2
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_msvd(folder, videos_dir=tmp_path / "elsewhere")
    shutil.rmtree(folder / "YouTubeClips")
    with pytest.raises(FileNotFoundError, match="no MSVD videos folder"):
        load_msvd(folder, check_videos=True)


def test_msvd_hub_json_layout(tmp_path):
    folder = copy_fixture("msvd_hub", tmp_path)
    dsd = load_msvd(folder)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [3, 1, 1]  # "na" dropped
    row = dsd["validation"][0]
    assert row["video_id"] == "-_hbPLsZvvo_18_25"
    assert row["references"] == ["a dog is playing", "a puppy plays"]
    assert row["video"] == str((folder / "raw_videos" / "-_hbPLsZvvo_18_25.avi").absolute())

    touch(folder / "raw_videos", "-4wsuPCjDBc_5_15.avi")  # now the folder exists: existence is checked
    dsd = load_msvd(folder)
    assert dsd["train"].unique("video_id") == ["-4wsuPCjDBc_5_15"] and len(dsd["test"]) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"video_id": "a"}', r"msvd_val.json: expected a JSON list of objects \(one per clip\)"),
        ('[{"video_id": "a", "caption": ["x"]}, "b"]', "msvd_val.json item 1: expected a JSON object, got str"),
        ('[{"video_id": "a",\n "caption": }]', "msvd_val.json line 2: invalid JSON"),
    ],
)
def test_msvd_hub_json_errors_name_file_and_item(tmp_path, content, message):
    folder = copy_fixture("msvd_hub", tmp_path)
    (folder / "msvd_val.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_msvd(folder)


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("a_1_2 vid1\nb_1_2 video2\n", "line 2: expected '<clip_id> vid<N>'"),
        ("a_1_2 vid1\n\nb_1_2 vid1971\n", "line 3: vid1971 is outside"),
        ("a_1_2 vid1\na_1_2 vid2\n", "line 2: clip a_1_2 is mapped twice"),
    ],
)
def test_msvd_mapping_errors_name_file_and_line(tmp_path, mapping, message):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    (folder / "youtube_mapping.txt").write_text(mapping)
    with pytest.raises(ValueError, match="youtube_mapping.txt") as excinfo:
        load_msvd(folder)
    assert message in str(excinfo.value)


def test_msvd_missing_files(tmp_path):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    (folder / "youtube_mapping.txt").unlink()
    with pytest.raises(FileNotFoundError, match="youtube_mapping.txt"):
        load_msvd(folder)
    with pytest.raises(FileNotFoundError, match="AllVideoDescriptions.txt"):
        load_msvd(tmp_path)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_msvd(tmp_path / "does-not-exist")


def test_msvd_csv_missing_column_names_line_1(tmp_path):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    (folder / "video_corpus.csv").write_text("VideoID,Start,End,Description\na,1,2,x\n")
    with pytest.raises(ValueError, match=r"video_corpus.csv line 1: missing column\(s\) Language"):
        load_msvd(folder, captions_file=folder / "video_corpus.csv")


# --------------------------------------------------------------------------------------------------------------------
# BDD-X
# --------------------------------------------------------------------------------------------------------------------


def test_bddx_fixture_is_in_the_real_shape():
    raw = (FIXTURES / "bddx" / "BDD-X-Annotations_v1.csv").read_bytes()
    lines = raw.split(b"\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n")  # CRLF line endings throughout
    assert lines[0].count(b",") == 60  # 61 columns
    assert b"," * 60 in lines  # all-comma separator rows


def test_bddx_segments_targets_and_splits(caplog):
    with caplog.at_level(logging.WARNING):
        dsd = load_bddx(FIXTURES / "bddx")
    assert set(dsd) == {"train", "validation", "test"}
    assert_schema(dsd)
    assert dsd["train"].features["action"].dtype == "string"

    train = by_id(dsd["train"])
    assert list(train) == [
        "1_06d501fd-a9ffc960_seg1",
        "1_06d501fd-a9ffc960_seg2",
        "1_06d501fd-a9ffc960_seg3",
        "2_0a3c1c7f-2bd1d1e7_seg1",
        "2_0a3c1c7f-2bd1d1e7_seg6",
        "2_0a3c1c7f-2bd1d1e7_seg7",
    ]
    slow = train["1_06d501fd-a9ffc960_seg2"]
    assert (slow["start"], slow["end"]) == (5.0, 9.0)
    assert slow["action"] == "The car slows down"  # trailing period dropped
    assert slow["justification"] == "as the light ahead turns red"  # the annotator's connective is kept
    assert slow["caption"] == "The car slows down as the light ahead turns red"
    assert slow["references"] == [slow["caption"]]
    assert slow["video"].endswith("/videos/06d501fd-a9ffc960.mov")

    assert train["1_06d501fd-a9ffc960_seg1"]["justification"] == "because the road is clear"
    assert train["1_06d501fd-a9ffc960_seg3"]["justification"] == "since the light is red"  # "Since" lower-cased
    assert train["2_0a3c1c7f-2bd1d1e7_seg1"]["caption"] == "The car accelerates to merge into traffic"
    # "towards" is not the connective "to": the full sentence gets "because".
    assert train["2_0a3c1c7f-2bd1d1e7_seg6"]["justification"] == "because towards the green light the road is clear"
    assert train["2_0a3c1c7f-2bd1d1e7_seg7"]["caption"] == (
        "The car drives on because traffic is moving and it has to keep up"
    )

    validation = by_id(dsd["validation"])
    assert list(validation) == ["3_1b9a4e25-5c3f7d0b_seg1", "3_1b9a4e25-5c3f7d0b_seg15"]  # slot 15 is read
    assert validation["3_1b9a4e25-5c3f7d0b_seg15"]["start"] == 30.0
    # test.txt says 9_<id> but that row is 4th among annotated rows: matched by its unique video id.
    assert dsd["test"]["video_id"] == ["4_2c4f8d11-07ab9e3c_seg1"]  # seg2 is zero-length (4 to 4): skipped
    assert (dsd["test"][0]["start"], dsd["test"][0]["end"]) == (2.0, 4.0)

    # One warning summarising the malformed segments, with counts and a line for each reason.
    summaries = [r.getMessage() for r in caplog.records if "malformed segments" in r.getMessage()]
    assert len(summaries) == 1
    summary = summaries[0]
    assert "skipped 6 malformed segments" in summary
    assert "2 start/end not a number" in summary
    assert "1 end before start" in summary and "1 empty justification" in summary and "1 empty action" in summary
    assert "1 zero-length (end equals start) (e.g. " in summary and "line 9 segment 2)" in summary
    assert "line 4 segment 2" in summary  # the 'X' segment of the second annotated row
    assert "7_ffffffff-00000000" in caplog.text  # split entry with no row


def test_bddx_target_choices():
    action = load_bddx(FIXTURES / "bddx", target="action")["train"]
    justification = load_bddx(FIXTURES / "bddx", target="justification")["train"]
    assert action[1]["caption"] == "The car slows down"
    assert justification[1]["caption"] == "as the light ahead turns red"
    assert action["video_id"] == justification["video_id"]  # same segments whatever the target
    assert action["justification"] == justification["caption"]
    with pytest.raises(ValueError, match="target must be one of"):
        load_bddx(FIXTURES / "bddx", target="reason")


def test_bddx_videos_folder_check(tmp_path, caplog):
    folder = copy_fixture("bddx", tmp_path)
    touch(folder / "videos", "06d501fd-a9ffc960.mov", "1b9a4e25-5c3f7d0b.mov")
    with caplog.at_level(logging.WARNING):
        dsd = load_bddx(folder)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [3, 2, 0]
    assert "skipped the segments of 2 videos missing" in caplog.text
    assert len(load_bddx(folder, check_videos=False)["train"]) == 6
    shutil.rmtree(folder / "videos")
    with pytest.raises(FileNotFoundError, match="videos"):
        load_bddx(folder, check_videos=True)


def test_bddx_file_errors(tmp_path):
    folder = copy_fixture("bddx", tmp_path)
    (folder / "val.txt").write_text("3_1b9a4e25-5c3f7d0b\n1b9a4e25-5c3f7d0b\n")
    with pytest.raises(ValueError, match=r"val.txt line 2: expected '<k>_<video id>'"):
        load_bddx(folder)
    (folder / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        load_bddx(folder)
    shutil.copy(FIXTURES / "bddx" / "val.txt", folder)
    (folder / "BDD-X-Annotations_v1.csv").write_text("video,start\r\nx,1\r\n")
    with pytest.raises(ValueError, match=r"BDD-X-Annotations_v1.csv line 1: missing column 'Input.Video'"):
        load_bddx(folder)
    (folder / "BDD-X-Annotations_v1.csv").unlink()
    with pytest.raises(FileNotFoundError, match="BDD-X-Annotations_v1.csv"):
        load_bddx(folder)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("because the light is red", "the light is red"),
        ("Because of the traffic", "of the traffic"),
        ("as the road is clear", "the road is clear"),
        ("since, the lane ends", "the lane ends"),
        ("to avoid the parked car", "avoid the parked car"),
        ("towards the exit", "towards the exit"),
        ("tomorrow is sunday", "tomorrow is sunday"),
        ("assuming it is clear", "assuming it is clear"),
        ("the car needs to turn", "the car needs to turn"),
        ("because", ""),
    ],
)
def test_strip_connective(raw, expected):
    assert strip_connective(raw) == expected


# --------------------------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------------------------


def test_dispatcher(tmp_path):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    assert load_video_caption_dataset("msvd", folder)["train"].to_list() == load_msvd(folder)["train"].to_list()
    bddx = load_video_caption_dataset("bddx", FIXTURES / "bddx", target="action")
    assert bddx["train"][0]["caption"] == "The car is driving forward"
    with pytest.raises(ValueError, match="unknown dataset 'vatex'"):
        load_video_caption_dataset("vatex", folder)
