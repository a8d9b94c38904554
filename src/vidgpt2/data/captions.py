"""Captions files (JSONL / CSV), the Hugging Face ``videofolder`` layout, and the column schema every loader shares.

Every loader in :mod:`vidgpt2.data` returns a :class:`datasets.DatasetDict` with these columns:

=============  ==================  ==============================================================
column         type                meaning
=============  ==================  ==============================================================
``video``      ``str``             absolute path of the video file
``caption``    ``str``             the training target (also filled on evaluation splits)
``references`` ``list[str]``       every reference caption of the clip (multi-reference metrics)
``start``      ``float | None``    clip start in seconds inside ``video`` (None: from the start)
``end``        ``float | None``    clip end in seconds inside ``video`` (None: to the end)
``video_id``   ``str``             a readable id of the clip
``origin``     ``str | None``      where the clip was read: file and line(s) (None when unknown)
=============  ==================  ==============================================================

A *clip* is identified by ``(video, start, end)``. Split layout (the same for every loader):

- ``train``: one row per reference, ``caption`` is that reference (what a captioning model trains on);
- ``validation`` / ``test``: one row per clip, ``caption`` is the first reference, ``references`` holds all of them.

:func:`unique_videos` collapses a per-reference split to one row per clip and :func:`expand_references` does the
opposite, so either layout can be had from any split. Loaders may add columns (BDD-X adds ``action`` and
``justification``; captions files keep extra scalar fields such as ``family``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

FEATURES = Features(
    {
        "video": Value("string"),
        "caption": Value("string"),
        "references": List(Value("string")),
        "start": Value("float64"),
        "end": Value("float64"),
        "video_id": Value("string"),
        "origin": Value("string"),
    }
)

# Captions that carry no information ("na" is common in MSVD); compared after lower-casing and stripping punctuation.
JUNK_CAPTIONS = frozenset({"", "na", "n a", "n/a", "none", "null", "nan", "nil", "-", "?", "x"})


def clean_caption(text: str) -> str:
    """Collapse runs of whitespace and strip the ends; the words themselves are left alone."""
    return " ".join(text.split())


def is_junk_caption(text: str | None) -> bool:
    """True for empty or placeholder captions such as ``"na"``, ``"N/A"`` or ``"-"``."""
    if text is None:
        return True
    return clean_caption(text).lower().strip(" .!,;:") in JUNK_CAPTIONS


@dataclass
class Clip:
    """One clip and all its reference captions; loaders build these, :func:`clips_to_dataset` lays them out."""

    video: str
    references: list[str]
    start: float | None = None
    end: float | None = None
    video_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # where the clip's annotation was read ("train.jsonl line 7"), one entry per merged row; reported by the data
    # check (vidgpt2.data.check) so a bad clip can be found in its file
    origins: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, float | None, float | None]:
        return (self.video, self.start, self.end)


def clips_to_dataset(clips: Iterable[Clip], split: str, extra_features: dict[str, Value] | None = None) -> Dataset:
    """Lay ``clips`` out as a split: one row per reference for ``"train"``, one row per clip otherwise."""
    extra_features = dict(extra_features or {})
    features = Features({**FEATURES, **extra_features})
    columns: dict[str, list] = {name: [] for name in features}
    per_reference = split == "train"
    for clip in clips:
        if not clip.references:
            continue
        targets = clip.references if per_reference else clip.references[:1]
        for caption in targets:
            columns["video"].append(clip.video)
            columns["caption"].append(caption)
            columns["references"].append(list(clip.references))
            columns["start"].append(clip.start)
            columns["end"].append(clip.end)
            columns["video_id"].append(clip.video_id)
            columns["origin"].append("; ".join(clip.origins) or None)
            for name in extra_features:
                columns[name].append(clip.extra.get(name))
    return Dataset.from_dict(columns, features=features, split=split)


def _clip_keys(ds: Dataset) -> Iterator[tuple]:
    return zip(ds["video"], ds["start"], ds["end"])


def unique_videos(ds: Dataset | DatasetDict) -> Dataset | DatasetDict:
    """One row per clip (first row of each ``(video, start, end)``), keeping order; ``caption`` = first reference.

    Idempotent: evaluation splits from the loaders are already in this layout.
    """
    if isinstance(ds, DatasetDict):
        return DatasetDict({name: unique_videos(split) for name, split in ds.items()})
    seen: set[tuple] = set()
    keep = []
    for i, key in enumerate(_clip_keys(ds)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if len(keep) == len(ds):
        return ds
    return ds.select(keep)


def expand_references(ds: Dataset | DatasetDict) -> Dataset | DatasetDict:
    """One row per reference caption (the ``train`` layout), from either layout."""
    if isinstance(ds, DatasetDict):
        return DatasetDict({name: expand_references(split) for name, split in ds.items()})
    ds = unique_videos(ds)

    def explode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in batch}
        for i, refs in enumerate(batch["references"]):
            for ref in refs:
                for name in batch:
                    out[name].append(ref if name == "caption" else batch[name][i])
        return out

    return ds.map(explode, batched=True, features=ds.features, desc="one row per reference")


# --------------------------------------------------------------------------------------------------------------------
# Reading captions files
# --------------------------------------------------------------------------------------------------------------------


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_text(path: str | os.PathLike) -> str:
    """The text of an annotations file, decoded as UTF-8 (a leading byte-order mark is dropped).

    No other encoding is guessed: a file that is not UTF-8 (e.g. saved by Excel as Windows-1252) raises
    :class:`ValueError` naming the file, the line (counted from the byte offset of the first bad byte) and the fix;
    a UTF-16 byte-order mark or a gzip header, which say for certain what the file is, get their own message.
    Line endings are left as they are (``\r\n`` stays), so CSV readers see the file's own quoting.
    """
    data = Path(path).read_bytes()
    # Markers that say for certain what the file is: a gzip stream, or UTF-16 (Excel's "Unicode text") with its BOM.
    if data.startswith(b"\x1f\x8b"):
        raise ValueError(f"{path}: the file is gzip-compressed; decompress it first (`gunzip`)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(
            f"{path} line 1: the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-save it as UTF-8, "
            f"e.g. `iconv -f utf-16 -t utf-8 '{path}' > fixed.csv`"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(
            f"{path} line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); re-save the file as "
            f"UTF-8, e.g. `iconv -f cp1252 -t utf-8 '{path}' > fixed.csv` for a Windows-1252 (Excel) file"
        ) from None


def read_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each line of a UTF-8 text file (see :func:`read_text`), line endings stripped.

    Lines end at ``\n`` (``\r\n`` too) only: unlike ``str.splitlines``, a U+2028 or form feed inside a JSON string
    does not start a new line.
    """
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        yield lineno, line.removesuffix("\r")


def read_csv_rows(path: str | os.PathLike) -> tuple[list[str], Iterator[tuple[int, dict[str, str | None]]]]:
    """The header and an iterator of ``(line number, row)`` for a UTF-8 CSV file (see :func:`read_text`).

    The line number is that of the row's last physical line (``csv.DictReader.line_num``), so a quoted caption that
    spans lines is reported where it ends.
    """
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    fields = list(reader.fieldnames or [])

    def rows() -> Iterator[tuple[int, dict[str, str | None]]]:
        for row in reader:
            yield reader.line_num, row

    return fields, rows()


def read_json(path: str | os.PathLike) -> Any:
    """A UTF-8 JSON file's value (see :func:`read_text`); invalid JSON raises :class:`ValueError` with file and line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None


def read_json_objects(path: Path, hint: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, object)`` for each item of a JSON file holding a list of objects, ``where`` naming the file and
    item ("clips.json item 3"). Errors name the file and the line (bad JSON) or the item (not an object);
    ``hint`` is appended to the error for a file that is not a list."""
    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of objects{hint}")
    for i, item in enumerate(items):
        where = f"{path} item {i}"
        yield where, _json_object(item, where)


def _json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` pairs, ``where`` naming the file and line ("captions.jsonl line 7")."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for lineno, line in read_text_lines(path):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            yield where, _json_object(record, where)
    elif suffix == ".json":
        yield from read_json_objects(path, hint=" (or use JSON Lines, .jsonl)")
    elif suffix == ".csv":
        _, rows = read_csv_rows(path)
        for lineno, row in rows:
            where = f"{path} line {lineno}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header has columns")
            yield where, {k: (v if v != "" else None) for k, v in row.items() if k}
    else:
        raise ValueError(f"{path}: unsupported captions file type {suffix!r}; use .jsonl, .json or .csv")


def _seconds(value: Any, name: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f'{where}: "{name}" must be a number of seconds, got {value!r}')
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: "{name}" must be a number of seconds, got {value!r}') from None
    if seconds != seconds or seconds < 0:
        raise ValueError(f'{where}: "{name}" must be a non-negative number of seconds, got {value!r}')
    return seconds


def _references(record: dict[str, Any], where: str, caption_fields: tuple[str, ...], is_csv: bool) -> list[str]:
    single = [name for name in caption_fields if name != "captions" and record.get(name) is not None]
    many = record.get("captions")
    if many is None:
        many = record.get("references")
    if single and many is not None:
        raise ValueError(f'{where}: give either "{single[0]}" or "captions", not both')
    if single:
        value = record[single[0]]
        if not isinstance(value, str):
            raise ValueError(f'{where}: "{single[0]}" must be a string, got {type(value).__name__}')
        return [value]
    if many is None:
        names = " or ".join(f'"{name}"' for name in (*caption_fields, "captions"))
        raise ValueError(f"{where}: missing {names} field")
    if is_csv and isinstance(many, str):
        try:
            many = json.loads(many)
        except json.JSONDecodeError:
            raise ValueError(f'{where}: "captions" in a CSV must be a JSON list of strings, got {many!r}') from None
    if not isinstance(many, list) or not all(isinstance(c, str) for c in many):
        raise ValueError(f'{where}: "captions" must be a list of strings')
    return many


_SCALAR_TYPES = {str: "string", bool: "bool", int: "int64", float: "float64"}
# "origin" is reserved: the loaders fill it with the file and line each clip was read from
_KNOWN_FIELDS = {
    "video", "file_name", "caption", "captions", "references", "text", "start", "end", "video_id", "origin"
}


def _extra_features(clips: list[Clip], path: Path) -> dict[str, Value]:
    """Arrow types for the extra fields; fields that are not one scalar type (ignoring nulls) are dropped."""
    kinds: dict[str, set[str]] = {}
    for clip in clips:
        for name, value in clip.extra.items():
            kind = _SCALAR_TYPES.get(type(value), "other") if value is not None else None
            kinds.setdefault(name, set())
            if kind is not None:
                kinds[name].add(kind)
    features = {}
    for name, found in kinds.items():
        if found == {"int64", "float64"}:
            found = {"float64"}
        if len(found) == 1 and "other" not in found:
            features[name] = Value(found.pop())
        else:
            logger.warning("%s: dropping field %r (values are not all one scalar type: %s)", path, name, sorted(found))
    return features


def read_captions_file(
    path: str | os.PathLike,
    *,
    video_field: str = "video",
    caption_fields: tuple[str, ...] = ("caption",),
    check_videos: bool = False,
) -> tuple[list[Clip], dict[str, Value]]:
    """Parse one captions file into clips; rows naming the same ``(video, start, end)`` are merged into one clip.

    Relative video paths are relative to the captions file's folder. Junk captions (``"na"``, empty) are dropped
    with a counted warning. With ``check_videos=True`` clips whose video file is missing are skipped with a counted
    warning; by default paths are not checked here (decoding fails loudly later).

    Returns the clips and the Arrow types of the extra scalar fields that were kept.

    Raises:
        ValueError: naming the file and line, for a file that is not UTF-8, a missing or mistyped field, a negative
            time, or a segment whose ``end`` is not after its ``start`` (zero-length segments have no frames); naming
            the file, when no usable row is left (an empty file, every caption a placeholder, every video missing).
    """
    path = _require_file(path, "captions file")
    base_dir = path.parent.absolute()
    is_csv = path.suffix.lower() == ".csv"
    clips: dict[tuple, Clip] = {}
    junk = 0
    for where, record in _read_records(path):
        video = record.get(video_field)
        if video is None or (isinstance(video, str) and not video.strip()):
            raise ValueError(f'{where}: missing "{video_field}" field')
        if not isinstance(video, str):
            raise ValueError(f'{where}: "{video_field}" must be a path string, got {type(video).__name__}')
        video_path = Path(video.strip()).expanduser()
        if not video_path.is_absolute():
            video_path = base_dir / video_path
        start = _seconds(record.get("start"), "start", where)
        end = _seconds(record.get("end"), "end", where)
        if start is not None and end is not None and end < start:
            raise ValueError(f'{where}: "end" ({end:g}) is before "start" ({start:g})')
        if start is not None and end is not None and end == start:
            raise ValueError(
                f'{where}: "end" equals "start" ({start:g}), a zero-length segment with no frames; '
                "fix the times, or leave both empty for the whole video"
            )
        references = _references(record, where, caption_fields, is_csv)
        kept = [clean_caption(c) for c in references if not is_junk_caption(c)]
        junk += len(references) - len(kept)

        video_str = os.path.abspath(video_path)
        key = (video_str, start, end)
        clip = clips.get(key)
        if clip is None:
            video_id = record.get("video_id")
            if video_id is None:
                video_id = os.path.splitext(video.strip())[0] if not Path(video).is_absolute() else video_path.stem
                if start is not None or end is not None:
                    video_id += f"_{'' if start is None else f'{start:g}'}_{'' if end is None else f'{end:g}'}"
            extra = {k: v for k, v in record.items() if k not in _KNOWN_FIELDS and k != video_field}
            extra = {k: v for k, v in extra.items() if k not in caption_fields}
            clip = clips[key] = Clip(video_str, [], start, end, str(video_id), extra)
        clip.references.extend(kept)
        clip.origins.append(where)

    result = [clip for clip in clips.values() if clip.references]
    no_caption = len(clips) - len(result)
    if junk or no_caption:
        logger.warning(
            "%s: dropped %d empty or placeholder captions (e.g. 'na'); %d clips were left without captions and skipped",
            path,
            junk,
            no_caption,
        )
    if not result:
        found = f"{len(clips)} clips, all of whose captions were empty or placeholders (e.g. 'na')" if clips else "no rows"
        raise ValueError(
            f"{path}: no usable rows are left (the file has {found}); give a captions file with at least one row "
            "with a video and a real caption"
        )
    if check_videos:
        present = [clip for clip in result if os.path.isfile(clip.video)]
        missing = [clip.video for clip in result if not os.path.isfile(clip.video)]
        if missing:
            logger.warning(
                "%s: skipped %d clips whose video file is missing (e.g. %s)", path, len(missing), ", ".join(missing[:3])
            )
        if not present:
            raise ValueError(f"{path}: no usable rows are left: the video file of every clip is missing "
                             f"(e.g. {missing[0]}); fix the paths or the folder the videos are in")
        result = present
    return result, _extra_features(result, path)


def load_captions_files(
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    *,
    check_videos: bool = False,
) -> DatasetDict:
    """Load JSONL / CSV captions files into a :class:`~datasets.DatasetDict` with one split per file given.

    Each row needs ``video`` (a path relative to the captions file, or absolute) and either ``caption`` (a string)
    or ``captions`` (a list of references; in CSV, a JSON list); ``start`` / ``end`` (seconds) and ``video_id`` are
    optional, and other scalar fields (e.g. ``family``) are kept as extra columns. See the module docstring for the
    column schema and split layout.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    if all(f is None for f in files.values()):
        raise ValueError("load_captions_files: give at least one of train_file, validation_file, test_file")
    splits = {}
    for split, path in files.items():
        if path is None:
            continue
        clips, extra = read_captions_file(path, check_videos=check_videos)
        splits[split] = clips_to_dataset(clips, split, extra)
        logger.info("%s: %d clips, %d rows from %s", split, len(clips), len(splits[split]), path)
    return DatasetDict(splits)


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face videofolder layout
# --------------------------------------------------------------------------------------------------------------------

# Split folder names the Hugging Face folder builders recognise, mapped to our split names.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
}
_METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
_SPLIT_DIR = re.compile(r"^([^/\\]+)[/\\]")


def _metadata_file(folder: Path) -> Path | None:
    for name in _METADATA_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_videofolder(data_dir: str | os.PathLike, *, check_videos: bool = False) -> DatasetDict:
    """Load a Hugging Face ``videofolder`` layout: ``metadata.jsonl`` (or ``.csv``) whose ``file_name`` names the video.

    Either split subfolders (``train/``, ``validation/`` or ``val/``, ``test/``), each with its own metadata file, or
    a single metadata file at the top; there a ``file_name`` starting with a split folder (``train/0001.mp4``) goes to
    that split and everything else to ``train`` (as ``datasets`` does). The caption column may be ``caption``,
    ``text`` or ``captions`` (a list).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"videofolder not found: {root}")
    caption_fields = ("caption", "text")
    split_files: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        split = SPLIT_ALIASES.get(child.name.lower())
        if split is None or not child.is_dir():
            continue
        metadata = _metadata_file(child)
        if metadata is None:
            continue
        if split in split_files:
            raise ValueError(f"{root}: both {split_files[split].parent.name}/ and {child.name}/ hold the {split} split")
        split_files[split] = metadata

    top = _metadata_file(root)
    clips_by_split: dict[str, list[Clip]] = {}
    extras: dict[str, dict[str, Value]] = {}
    if split_files:
        if top is not None:
            logger.warning("%s: using the split folders' metadata; ignoring %s", root, top)
        for split, metadata in split_files.items():
            clips_by_split[split], extras[split] = read_captions_file(
                metadata, video_field="file_name", caption_fields=caption_fields, check_videos=check_videos
            )
    elif top is not None:
        clips, extra = read_captions_file(
            top, video_field="file_name", caption_fields=caption_fields, check_videos=check_videos
        )
        for clip in clips:
            relative = os.path.relpath(clip.video, root.absolute())
            match = _SPLIT_DIR.match(relative)
            split = SPLIT_ALIASES.get(match.group(1).lower(), "train") if match else "train"
            clips_by_split.setdefault(split, []).append(clip)
        extras = {split: extra for split in clips_by_split}
    else:
        names = " or ".join(_METADATA_NAMES)
        raise FileNotFoundError(f"no {names} in {root} or in its train/validation/test subfolders")
    return DatasetDict(
        {
            split: clips_to_dataset(clips_by_split[split], split, extras[split])
            for split in SPLITS
            if split in clips_by_split
        }
    )
