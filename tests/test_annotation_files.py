"""Annotation files as users have them: text encodings (UTF-8 with or without BOM, Windows-1252) and zero-length
segments, for every loader that reads text (captions files, videofolder, MSVD, BDD-X)."""

import csv
import gzip
import json
import logging
import shutil
from pathlib import Path

import pytest

from vidgpt2.data import load_bddx, load_captions_files, load_msvd, load_videofolder

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def assert_names_file_line_and_fix(excinfo, path, line):
    message = str(excinfo.value)
    assert str(path) in message
    assert f"line {line}: not UTF-8" in message
    assert "re-save the file as UTF-8" in message and "iconv -f cp1252 -t utf-8" in message


# --------------------------------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, line",
    [
        ("captions.csv", "video,caption\r\na.mp4,a man walks\r\nb.mp4,a man sits in a café\r\n", 3),
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4", "caption": "un café"}\n', 2),
        ("captions.json", '[\n {"video": "a.mp4", "caption": "x"},\n {"video": "b.mp4", "caption": "café"}\n]\n', 3),
    ],
    ids=["csv", "jsonl", "json"],
)
def test_captions_file_in_windows_1252_names_file_line_and_fix(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(ValueError) as excinfo:
        load_captions_files(train_file=path)
    assert_names_file_line_and_fix(excinfo, path, line)
    assert "0xe9" in str(excinfo.value)  # the byte of "é" in Windows-1252


def test_utf16_and_gzip_files_are_named_as_such(tmp_path):
    # Excel's "Unicode text" is UTF-16 with a BOM; a .gz saved without its suffix starts with 1f 8b (datasets#6851)
    path = tmp_path / "captions.csv"
    path.write_bytes("video,caption\r\na.mp4,un café\r\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"captions.csv line 1: the file is UTF-16 .*iconv -f utf-16 -t utf-8"):
        load_captions_files(train_file=path)
    path = tmp_path / "captions.jsonl"
    path.write_bytes(gzip.compress(b'{"video": "a.mp4", "caption": "x"}\n'))
    with pytest.raises(ValueError, match=r"captions.jsonl: the file is gzip-compressed"):
        load_captions_files(train_file=path)


@pytest.mark.parametrize("name", ["captions.csv", "captions.jsonl"])
def test_captions_file_utf8_with_bom_reads(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        text = "video,caption,start,end\r\na.mp4,a man sits in a café,1,2\r\n"
    else:
        text = json.dumps({"video": "a.mp4", "caption": "a man sits in a café", "start": 1, "end": 2}) + "\n"
    path.write_bytes(text.encode("utf-8-sig"))
    row = load_captions_files(train_file=path)["train"][0]
    assert row["caption"] == "a man sits in a café"
    assert row["video"] == str(tmp_path / "a.mp4") and (row["start"], row["end"]) == (1.0, 2.0)


def test_jsonl_line_numbers_count_newlines_only(tmp_path):
    # U+2028 is valid inside a JSON string; it must neither split the record nor shift later line numbers.
    path = tmp_path / "captions.jsonl"
    path.write_text('{"video": "a.mp4", "caption": "one\u2028two"}\n{"caption": "no video"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r'captions.jsonl line 2: missing "video" field'):
        load_captions_files(train_file=path)


def test_videofolder_metadata_csv_in_windows_1252(tmp_path):
    (tmp_path / "test").mkdir()
    metadata = tmp_path / "test" / "metadata.csv"
    metadata.write_bytes("file_name,caption\n0001.mp4,a café\n".encode("cp1252"))
    with pytest.raises(ValueError) as excinfo:
        load_videofolder(tmp_path)
    assert_names_file_line_and_fix(excinfo, metadata, 2)


def msvd_dir(tmp_path, captions):
    folder = tmp_path / "msvd"
    folder.mkdir()
    shutil.copy(FIXTURES / "msvd" / "youtube_mapping.txt", folder)
    shutil.copy(FIXTURES / "msvd" / captions, folder)
    return folder


@pytest.mark.parametrize("captions", ["AllVideoDescriptions.txt", "video_corpus.csv"])
def test_msvd_captions_in_windows_1252_name_file_and_line(tmp_path, captions):
    folder = msvd_dir(tmp_path, captions)
    path = folder / captions
    text = path.read_text(encoding="utf-8").replace("a man plays a guitar", "a man plays a guitar in a café")
    assert "café" in text
    path.write_bytes(text.encode("cp1252", errors="replace"))  # the CSV's other scripts become "?"
    line = next(i for i, row in enumerate(text.split("\n"), start=1) if "café" in row)
    with pytest.raises(ValueError) as excinfo:
        load_msvd(folder)
    assert_names_file_line_and_fix(excinfo, path, line)


def test_msvd_mapping_with_bom_and_crlf_reads(tmp_path):
    folder = msvd_dir(tmp_path, "AllVideoDescriptions.txt")
    mapping = folder / "youtube_mapping.txt"
    mapping.write_bytes(mapping.read_text(encoding="utf-8").replace("\n", "\r\n").encode("utf-8-sig"))
    assert list(dict.fromkeys(load_msvd(folder)["train"]["video_id"])) == ["-4wsuPCjDBc_5_15", "kWLNZzuo3do_38_45"]


def test_bddx_annotations_in_windows_1252_name_file_and_line(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "bddx", tmp_path / "bddx"))
    path = folder / "BDD-X-Annotations_v1.csv"
    text = path.read_bytes().decode("utf-8").replace("because the road is clear", "because the café is closed")
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(ValueError) as excinfo:
        load_bddx(folder)
    assert_names_file_line_and_fix(excinfo, path, 2)


# --------------------------------------------------------------------------------------------------------------------
# Zero-length segments
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, line",
    [
        (
            "captions.jsonl",
            '{"video": "a.mp4", "caption": "x"}\n{"video": "a.mp4", "caption": "y", "start": 4, "end": 4}\n',
            2,
        ),
        ("captions.csv", "video,caption,start,end\r\na.mp4,x,1,3\r\na.mp4,y,2.5,2.5\r\n", 3),
    ],
    ids=["jsonl", "csv"],
)
def test_captions_file_zero_length_segment_names_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        load_captions_files(train_file=path)
    message = str(excinfo.value)
    assert f"{path} line {line}:" in message
    assert '"end" equals "start"' in message and "zero-length" in message


BDDX_HEADER = ["Input.Video"] + [
    f"Answer.{n}{part}" for n in range(1, 16) for part in ("start", "end", "action", "justification")
]


def write_bddx(folder, rows, splits):
    """A BDD-X folder: annotations CSV (61 columns, CRLF) from ``rows`` = [(video id, [(start, end, action,
    justification), ...])], and split files from ``splits`` = {file name: [line, ...]}."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [BDDX_HEADER]
    for video, segments in rows:
        cells = [f"https://s3-us-west-2.amazonaws.com/sq8geewpqu/samples-1k/{video}.mov"]
        for segment in segments:
            cells += [str(value) for value in segment]
        records += [cells + [""] * (len(BDDX_HEADER) - len(cells)), [""] * len(BDDX_HEADER)]
    with open(folder / "BDD-X-Annotations_v1.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(records)
    for name in ("train.txt", "val.txt", "test.txt"):
        (folder / name).write_text("".join(f"{line}\n" for line in splits.get(name, [])))
    return folder


def test_bddx_zero_length_segment_is_skipped_with_counted_warning(tmp_path, caplog):
    folder = write_bddx(
        tmp_path / "bddx",
        [
            (
                "aaaa-0001",
                [
                    (0, 4, "The car slows down", "because the light is red"),
                    (4, 4, "The car stops", "because the light is red"),
                ],
            ),
            (
                "aaaa-0002",
                [
                    (3, 3, "The car waits", "as a pedestrian crosses"),
                    (3, 9, "The car turns left", "to enter the parking lot"),
                ],
            ),
        ],
        {"train.txt": ["1_aaaa-0001"], "test.txt": ["2_aaaa-0002"]},
    )
    with caplog.at_level(logging.WARNING):
        dsd = load_bddx(folder)
    assert [(row["start"], row["end"]) for row in dsd["train"]] == [(0.0, 4.0)]
    assert [(row["start"], row["end"]) for row in dsd["test"]] == [(3.0, 9.0)]
    assert all(row["end"] > row["start"] for split in dsd.values() for row in split)
    summary = next(r.getMessage() for r in caplog.records if "malformed segments" in r.getMessage())
    assert "skipped 2 malformed segments" in summary
    assert "2 zero-length (end equals start)" in summary
    assert "BDD-X-Annotations_v1.csv line 2 segment 2" in summary  # the first one, by its line
