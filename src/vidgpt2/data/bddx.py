"""BDD-X (Kim et al. 2018): one sample per annotated segment of ``BDD-X-Annotations_v1.csv``.

The CSV has 61 columns: ``Input.Video`` (an S3 URL whose basename ``<id>.mov`` is the local file name), then
``Answer.{n}start``, ``Answer.{n}end``, ``Answer.{n}action``, ``Answer.{n}justification`` for n = 1..15. Rows with an
empty ``Input.Video`` are separators. The split files ``train.txt`` / ``val.txt`` / ``test.txt`` list ``<k>_<id>``,
where k is the 1-based rank of the row among *annotated* rows: those with a video, ``Answer.1start`` and
``Answer.1justification`` (the rule of the authors' preprocessing, which produced the split files).

Segments with a non-numeric time (e.g. ``X``), an end before the start, an empty action or an empty justification are
skipped (the last as in the authors' preprocessing, so every ``target`` sees the same segments); one warning per load
gives the counts and an example line for each reason.

Text: whitespace is collapsed and trailing periods dropped. A leading connective (``because``, ``as``, ``since``,
``to``; whole word only) is stripped from the justification, which is stored without it; the joined target is
``f"{action} because {justification}"``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Literal

from datasets import DatasetDict, Value

from .captions import SPLITS, Clip, clean_caption, clips_to_dataset

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "BDD-X-Annotations_v1.csv"
SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
NUM_SEGMENTS = 15
TARGETS = ("action_justification", "action", "justification")
Target = Literal["action_justification", "action", "justification"]
CONNECTIVES = ("because", "as", "since", "to")
EXTRA_FEATURES = {"action": Value("string"), "justification": Value("string")}

# A connective followed by a space, a comma or nothing: "to-do" and "towards" keep their "to".
_CONNECTIVE = re.compile(r"^(?:" + "|".join(CONNECTIVES) + r")(?:[\s,]+|$)", re.IGNORECASE)
_SPLIT_LINE = re.compile(r"^(\d+)_(\S+)$")


def strip_connective(justification: str) -> str:
    """Drop one leading "because" / "as" / "since" / "to" (as a whole word): "to avoid it" -> "avoid it"."""
    return _CONNECTIVE.sub("", justification.strip(), count=1).strip()


def _clean(text: str | None) -> str:
    return clean_caption(text or "").rstrip(". ").strip()


def make_target(action: str, justification: str, target: Target) -> str:
    """The caption for ``target`` from a cleaned action and a justification without its connective."""
    if target == "action":
        return action
    if target == "justification":
        return justification
    return f"{action} because {justification}"


def video_name(url: str) -> str:
    """``https://.../samples-1k/06d501fd-a9ffc960.mov`` -> ``06d501fd-a9ffc960``."""
    return os.path.splitext(url.strip().rstrip("/").rsplit("/", 1)[-1])[0]


def read_annotations(path: str | os.PathLike) -> tuple[dict[tuple[int, str], list[dict]], Counter, dict[str, str]]:
    """Parse the annotations CSV.

    Returns ``{(k, video name): [segment, ...]}`` for the annotated rows (segments are dicts with ``segment``,
    ``start``, ``end``, ``action``, ``justification`` and ``where``: file, line and segment), the counts of skipped
    segments by reason, and one example location per reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BDD-X annotations not found: {path}")
    rows: dict[tuple[int, str], list[dict]] = {}
    skipped: Counter[str] = Counter()
    examples: dict[str, str] = {}
    unannotated = 0

    def skip(reason: str, where: str) -> None:
        skipped[reason] += 1
        examples.setdefault(reason, where)

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        for column in ("Input.Video", "Answer.1start", "Answer.1end", "Answer.1action", "Answer.1justification"):
            if column not in fields:
                raise ValueError(f"{path} line 1: missing column {column!r}; is this BDD-X-Annotations_v1.csv?")
        rank = 0
        for row in reader:
            name = video_name(row.get("Input.Video") or "")
            if not name:
                continue  # all-comma separator row
            if not (row.get("Answer.1start") or "").strip() or not (row.get("Answer.1justification") or "").strip():
                unannotated += 1
                continue
            rank += 1
            line = reader.line_num
            segments = []
            for n in range(1, NUM_SEGMENTS + 1):
                raw = [
                    (row.get(f"Answer.{n}{part}") or "").strip() for part in ("start", "end", "action", "justification")
                ]
                if not any(raw):
                    continue
                where = f"{path} line {line} segment {n}"
                try:
                    start, end = float(raw[0]), float(raw[1])
                except ValueError:
                    skip("start/end not a number (e.g. 'X')", where)
                    continue
                if not (start >= 0 and end >= 0):  # also rejects nan
                    skip("start/end not a number (e.g. 'X')", where)
                    continue
                if end < start:
                    skip("end before start", where)
                    continue
                action = _clean(raw[2])
                justification = _clean(strip_connective(raw[3]))
                if not action:
                    skip("empty action", where)
                    continue
                if not justification:
                    skip("empty justification", where)
                    continue
                segments.append(
                    {"segment": n, "start": start, "end": end, "action": action, "justification": justification,
                     "where": where}
                )
            rows[(rank, name)] = segments
    if unannotated:
        logger.info("%s: %d rows have a video but no annotations; skipped", path, unannotated)
    return rows, skipped, examples


def read_split_file(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``train.txt`` -> ``[(k, video name), ...]`` from lines ``<k>_<video name>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BDD-X split file not found: {path}")
    entries = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            match = _SPLIT_LINE.match(line)
            if match is None:
                raise ValueError(f"{path} line {lineno}: expected '<k>_<video id>', got {line!r}")
            entries.append((int(match.group(1)), video_name(match.group(2))))
    return entries


def load_bddx(
    data_dir: str | os.PathLike,
    target: Target = "action_justification",
    *,
    annotations_file: str | os.PathLike | None = None,
    splits_dir: str | os.PathLike | None = None,
    videos_dir: str | os.PathLike | None = None,
    check_videos: bool | None = None,
    video_extension: str = ".mov",
) -> DatasetDict:
    """Load BDD-X as train / validation / test with one row per segment.

    Args:
        data_dir: folder with ``BDD-X-Annotations_v1.csv`` and ``train.txt`` / ``val.txt`` / ``test.txt``.
        target: the ``caption`` column: ``"action"``, ``"justification"`` or ``"action_justification"``
            (``"<action> because <justification>"``). ``action`` and ``justification`` are always kept as columns.
        annotations_file: the annotations CSV, instead of ``data_dir/BDD-X-Annotations_v1.csv``.
        splits_dir: folder with the split files, instead of ``data_dir``.
        videos_dir: folder with ``<id>.mov``; default ``data_dir/videos``.
        check_videos: None checks that videos exist only when the videos folder exists; True requires it; False
            never checks. Segments of missing videos are skipped with one counted warning.
        video_extension: the video files' extension.

    ``start`` / ``end`` are the segment's seconds within the video; ``references`` is ``[caption]``;
    ``video_id`` is ``"<k>_<id>_seg<n>"``.
    """
    if target not in TARGETS:
        raise ValueError(f"load_bddx: target must be one of {TARGETS}, got {target!r}")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"BDD-X folder not found: {data_dir}")
    annotations = Path(annotations_file).expanduser() if annotations_file else data_dir / ANNOTATIONS_FILE
    splits_root = Path(splits_dir).expanduser() if splits_dir else data_dir
    split_entries = {split: read_split_file(splits_root / name) for split, name in SPLIT_FILES.items()}
    rows, skipped, examples = read_annotations(annotations)

    if check_videos is False:
        folder = None
    else:
        folder = Path(videos_dir).expanduser() if videos_dir else data_dir / "videos"
        if not folder.is_dir():
            if check_videos or videos_dir is not None:
                raise FileNotFoundError(f"BDD-X videos folder not found: {folder}")
            folder = None
    videos_root = folder if folder is not None else data_dir / "videos"
    present = set(os.listdir(folder)) if folder is not None else None

    by_name: dict[str, list[tuple[int, str]]] = {}
    for key in rows:
        by_name.setdefault(key[1], []).append(key)
    not_found: list[str] = []
    missing_videos: set[str] = set()
    clips_by_split: dict[str, list[Clip]] = {}
    for split in SPLITS:
        clips = []
        for k, name in split_entries[split]:
            key = (k, name)
            if key not in rows:
                candidates = by_name.get(name, [])
                if len(candidates) != 1:
                    not_found.append(f"{k}_{name}")
                    continue
                key = candidates[0]
            filename = f"{name}{video_extension}"
            if present is not None and filename not in present:
                missing_videos.add(name)
                continue
            video = os.path.abspath(videos_root / filename)
            for seg in rows[key]:
                caption = make_target(seg["action"], seg["justification"], target)
                extra = {"action": seg["action"], "justification": seg["justification"]}
                video_id = f"{key[0]}_{name}_seg{seg['segment']}"
                clips.append(Clip(video, [caption], seg["start"], seg["end"], video_id, extra, [seg["where"]]))
        clips_by_split[split] = clips

    if skipped:
        logger.warning(
            "%s: skipped %d malformed segments: %s",
            annotations,
            sum(skipped.values()),
            "; ".join(f"{n} {reason} (e.g. {examples[reason]})" for reason, n in skipped.items()),
        )
    if not_found:
        logger.warning(
            "BDD-X: %d split entries match no annotated row of %s; skipped (e.g. %s)",
            len(not_found),
            annotations,
            ", ".join(not_found[:3]),
        )
    if missing_videos:
        logger.warning(
            "BDD-X: skipped the segments of %d videos missing from %s (e.g. %s)",
            len(missing_videos),
            folder,
            ", ".join(sorted(missing_videos)[:3]),
        )
    if folder is None and check_videos is not False:
        logger.info("BDD-X: no videos folder at %s; video paths are not checked", videos_root)

    result = DatasetDict({split: clips_to_dataset(clips_by_split[split], split, EXTRA_FEATURES) for split in SPLITS})
    logger.info("BDD-X (%s): %s", target, ", ".join(f"{s}: {len(result[s])} segments" for s in SPLITS))
    return result
