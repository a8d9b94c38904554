"""BDD-X (Kim et al. 2018): one sample per annotated segment of ``BDD-X-Annotations_v1.csv``.

The CSV has 61 columns: ``Input.Video`` (an S3 URL whose basename ``<id>.mov`` is the local file name), then
``Answer.{n}start``, ``Answer.{n}end``, ``Answer.{n}action``, ``Answer.{n}justification`` for n = 1..15. Rows with an
empty ``Input.Video`` are separators. The split files ``train.txt`` / ``val.txt`` / ``test.txt`` list ``<k>_<id>``,
where k is the 1-based rank of the row among *annotated* rows: those with a video, ``Answer.1start`` and
``Answer.1justification`` (the rule of the authors' preprocessing, which produced the split files).

Segments with a non-numeric time (e.g. ``X``), an end before the start, a zero-length segment (end equal to start:
it has no frames), an empty action or an empty justification are skipped (the last as in the authors'
preprocessing, so every ``target`` sees the same segments); one warning per load gives the counts and an example line
for each reason.

Text: whitespace is collapsed and trailing periods and commas dropped. The justification keeps the annotator's
leading connective, lower-cased (``"to merge into traffic"``, ``"because of the traffic ahead"``), as ADAPT
(Jin et al. 2023, ``prepro/tsv_preproc_BDDX.py``) keeps it in its justification references; a justification written
as a full sentence gets ``"because"`` (``"the light is red"`` -> ``"because the light is red"``). The joined target
is then ``f"{action} {justification}"`` ("the car accelerates to merge into traffic", "the car stops because the
light is red"), a sentence that :func:`split_action_justification` splits back into exactly the ``action`` and
``justification`` columns. Where an action itself holds a connective word ("the car veers to the left") and the split
would cut there, the join puts a comma before the justification ("the car veers to the left, as the lane ends"); a
segment that still cannot be split back exactly is skipped with the others.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from datasets import DatasetDict, Value

from .captions import SPLITS, Clip, clean_caption, clips_to_dataset, read_csv_rows, read_text_lines

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "BDD-X-Annotations_v1.csv"
SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
NUM_SEGMENTS = 15
TARGETS = ("action_justification", "action", "justification")
Target = Literal["action_justification", "action", "justification"]
# Words that start a BDD-X justification ("because the light is red", "to merge into traffic", "as traffic moves").
# Multi-word ones come first so that "due to" is one connective, not "due" + "to".
CONNECTIVES = (
    "in order to",
    "so that",
    "due to",
    "now that",
    "given that",
    "because",
    "since",
    "as",
    "so",
    "to",
    "for",
    "while",
    "when",
    "until",
)
EXTRA_FEATURES = {"action": Value("string"), "justification": Value("string")}

_WORDS = "|".join(c.replace(" ", r"\s+") for c in CONNECTIVES)
# A connective as whole words, followed by a space, a comma or the end: "to-do" and "towards" keep their "to".
_CONNECTIVE = re.compile(rf"^(?:{_WORDS})(?=[\s,]|$)", re.IGNORECASE)
_TRAILING_CONNECTIVE = re.compile(rf"[\s,]+(?:{_WORDS})$", re.IGNORECASE)
# Where a joined caption is split, by priority: a comma before a connective, then " because ", then any connective.
_SPLIT_COMMA = re.compile(rf",\s*(?=(?:{_WORDS})(?:[\s,]|$))", re.IGNORECASE)
_SPLIT_BECAUSE = re.compile(r"\s+(?=because(?:[\s,]|$))", re.IGNORECASE)
_SPLIT_ANY = re.compile(rf"\s+(?=(?:{_WORDS})(?:[\s,]|$))", re.IGNORECASE)
_SPLIT_LINE = re.compile(r"^(\d+)_(\S+)$")


def strip_connective(justification: str) -> str:
    """Drop one leading connective (see ``CONNECTIVES``, whole words only): "to avoid it" -> "avoid it"."""
    return _CONNECTIVE.sub("", justification.strip(), count=1).strip(" ,")


def _clean(text: str | None) -> str:
    """Collapse whitespace and drop trailing periods, commas and the like: "The car slows down ," -> "The car slows
    down"."""
    return clean_caption(text or "").rstrip(" .,;:")


def _lower_first_word(text: str) -> str:
    """ "The light is red" -> "the light is red"; "I", acronyms ("BMW") and mixed case ("McDonald") are kept."""
    word = text.split(" ", 1)[0]
    if word[:1].isupper() and word[1:].islower() and word[1:].isalpha():
        return text[:1].lower() + text[1:]
    return text


def normalize_justification(justification: str) -> str:
    """A cleaned justification that starts with a lower-case connective, or "" when nothing is left.

    "Since the light is red." -> "since the light is red"; "to merge into traffic" stays; "because, the lane ends"
    -> "because the lane ends"; a full sentence gets "because": "The light is red" -> "because the light is red".
    """
    text = _clean(justification)
    match = _CONNECTIVE.match(text)
    if match is None:
        return f"because {_lower_first_word(text)}" if text else ""
    rest = text[match.end() :].lstrip(" ,")
    return f"{' '.join(match.group(0).lower().split())} {rest}" if rest else ""


def split_action_justification(caption: str) -> tuple[str, str]:
    """A joined BDD-X caption -> ``(action, justification)``; the justification keeps its connective.

    The cut is made, by priority, at the first comma before a connective ("the car veers to the left, as the lane
    ends"), else before the first "because", else before the first connective of ``CONNECTIVES`` after the first
    word. No connective: ``(caption, "")``. For the captions :func:`join_action_justification` makes, this is exact;
    for a generated caption it is the best guess the same rule gives.
    """
    caption = caption.strip()
    for pattern in (_SPLIT_COMMA, _SPLIT_BECAUSE, _SPLIT_ANY):
        match = pattern.search(caption)
        if match is not None and match.start() > 0:
            return caption[: match.start()].strip(" ,"), caption[match.end() :].strip()
    return caption, ""


def join_action_justification(action: str, justification: str) -> str:
    """``"<action> <justification>"`` (``justification`` from :func:`normalize_justification`), with a comma before
    the justification where the action's own words would make :func:`split_action_justification` cut too early.

    Raises:
        ValueError: when neither form splits back into exactly ``(action, justification)``.
    """
    for separator in (" ", ", "):
        joined = f"{action}{separator}{justification}"
        if split_action_justification(joined) == (action, justification):
            return joined
    raise ValueError(f"BDD-X: {action!r} and {justification!r} cannot be joined so that they split back exactly")


def make_target(action: str, justification: str, target: Target) -> str:
    """The caption for ``target`` from a cleaned action and a normalised justification (with its connective)."""
    if target == "action":
        return action
    if target == "justification":
        return justification
    return join_action_justification(action, justification)


def video_name(url: str) -> str:
    """``https://.../samples-1k/06d501fd-a9ffc960.mov`` -> ``06d501fd-a9ffc960``."""
    return os.path.splitext(url.strip().rstrip("/").rsplit("/", 1)[-1])[0]


def _segment(raw: list[str], skip: Callable[[str], None]) -> dict | None:
    """One segment from its raw ``[start, end, action, justification]`` cells, or None (after ``skip(reason)``)."""
    try:
        start, end = float(raw[0]), float(raw[1])
    except ValueError:
        start = end = float("nan")
    if not (start >= 0 and end >= 0):  # also rejects nan
        return skip("start/end not a number (e.g. 'X')")
    if end < start:
        return skip("end before start")
    if end == start:
        return skip("zero-length (end equals start)")
    action, justification = _clean(raw[2]), raw[3]
    trailing = _TRAILING_CONNECTIVE.search(action)
    if trailing is not None and _CONNECTIVE.match(_clean(justification)) is None:
        # "the car slows down because" + "the light is red": the connective moves to the justification
        action, justification = action[: trailing.start()], f"{trailing.group(0).strip(' ,')} {justification}"
    justification = normalize_justification(justification)
    if not action:
        return skip("empty action")
    if not justification:
        return skip("empty justification")
    try:
        join_action_justification(action, justification)
    except ValueError:
        return skip("action and justification cannot be joined so that they split back")
    return {"start": start, "end": end, "action": action, "justification": justification}


def read_annotations(path: str | os.PathLike) -> tuple[dict[tuple[int, str], list[dict]], Counter, dict[str, str]]:
    """Parse the annotations CSV.

    Returns ``{(k, video name): [segment, ...]}`` for the annotated rows (segments are dicts with ``segment``,
    ``start``, ``end``, ``action``, ``justification`` and ``where``: file, line and segment), the counts of skipped
    segments by reason, and one example location per reason.

    Raises:
        ValueError: for a file that is not UTF-8 or lacks the BDD-X columns, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BDD-X annotations not found: {path}")
    rows: dict[tuple[int, str], list[dict]] = {}
    skipped: Counter[str] = Counter()
    examples: dict[str, str] = {}
    unannotated = 0

    fields, records = read_csv_rows(path)
    for column in ("Input.Video", "Answer.1start", "Answer.1end", "Answer.1action", "Answer.1justification"):
        if column not in fields:
            raise ValueError(f"{path} line 1: missing column {column!r}; is this BDD-X-Annotations_v1.csv?")
    rank = 0
    for line, row in records:
        name = video_name(row.get("Input.Video") or "")
        if not name:
            continue  # all-comma separator row
        if not (row.get("Answer.1start") or "").strip() or not (row.get("Answer.1justification") or "").strip():
            unannotated += 1
            continue
        rank += 1
        segments = []
        for n in range(1, NUM_SEGMENTS + 1):
            raw = [(row.get(f"Answer.{n}{part}") or "").strip() for part in ("start", "end", "action", "justification")]
            if not any(raw):
                continue
            where = f"{path} line {line} segment {n}"

            def skip(reason: str, where: str = where) -> None:
                skipped[reason] += 1
                examples.setdefault(reason, where)

            segment = _segment(raw, skip)
            if segment is not None:
                segments.append({"segment": n, **segment, "where": where})
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
    for lineno, line in read_text_lines(path):
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
            (``"<action> <justification>"``, e.g. "the car stops because the light is red"; see the module
            docstring). ``action`` and ``justification`` are always kept as columns, and
            :func:`split_action_justification` turns a joined caption back into them.
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
