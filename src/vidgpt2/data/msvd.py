"""MSVD (Chen & Dolan 2011) from the files users download.

Recognised layouts under ``data_dir`` (the first that matches wins):

1. the Hub copy (e.g. ``friedrichor/MSVD``): ``msvd_train.json``, ``msvd_val.json``, ``msvd_test.json``, each a list of
   ``{"video_id", "video", "caption": [...], ...}``;
2. ``AllVideoDescriptions.txt`` (``#`` header lines, then ``<clip_id> <caption>``) with ``youtube_mapping.txt``;
3. the original CSV (``video_corpus.csv`` or ``MSR Video Description Corpus.csv``; English rows only) with
   ``youtube_mapping.txt``.

``youtube_mapping.txt`` gives the standard split: ``vid1``-``vid1200`` train, ``vid1201``-``vid1300`` validation,
``vid1301``-``vid1970`` test. Videos are ``<clip_id>.avi`` in the videos folder (``YouTubeClips/`` from the tarball).

Video files are checked only when a videos folder is in use: ``videos_dir`` given, or one of ``YouTubeClips/``,
``videos/``, ``raw_videos/`` exists under ``data_dir``. Then clips with captions but no video (the CSV lists more clips
than the tarball has) are skipped with one counted warning. ``check_videos=True`` requires such a folder,
``check_videos=False`` never looks.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

from datasets import DatasetDict

from .captions import (
    SPLITS,
    Clip,
    clean_caption,
    clips_to_dataset,
    is_junk_caption,
    read_csv_rows,
    read_json_objects,
    read_text_lines,
)

logger = logging.getLogger(__name__)

HUB_FILES = {"train": "msvd_train.json", "validation": "msvd_val.json", "test": "msvd_test.json"}
DESCRIPTIONS_TXT = "AllVideoDescriptions.txt"
CORPUS_CSVS = ("video_corpus.csv", "MSR Video Description Corpus.csv")
MAPPING_FILE = "youtube_mapping.txt"
VIDEO_FOLDERS = ("YouTubeClips", "videos", "raw_videos")
CSV_COLUMNS = ("VideoID", "Start", "End", "Language", "Description")
# Standard split by the number N in "vid<N>": (first, last, split).
SPLIT_RANGES = ((1, 1200, "train"), (1201, 1300, "validation"), (1301, 1970, "test"))

_MAPPING_LINE = re.compile(r"^(\S+)\s+vid(\d+)$")


def split_of_vid(number: int) -> str | None:
    """The standard split of ``vid<number>``, or None outside 1-1970."""
    for first, last, split in SPLIT_RANGES:
        if first <= number <= last:
            return split
    return None


def read_youtube_mapping(path: str | os.PathLike) -> dict[str, tuple[int, str]]:
    """``youtube_mapping.txt`` -> ``{clip_id: (vid_number, split)}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MSVD split mapping not found: {path}")
    mapping: dict[str, tuple[int, str]] = {}
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _MAPPING_LINE.match(line)
        if match is None:
            raise ValueError(f"{path} line {lineno}: expected '<clip_id> vid<N>', got {line!r}")
        clip_id, number = match.group(1), int(match.group(2))
        split = split_of_vid(number)
        if split is None:
            raise ValueError(f"{path} line {lineno}: vid{number} is outside the standard vid1-vid1970")
        if clip_id in mapping:
            raise ValueError(f"{path} line {lineno}: clip {clip_id} is mapped twice")
        mapping[clip_id] = (number, split)
    return mapping


def read_descriptions_txt(path: str | os.PathLike) -> tuple[dict[str, list[str]], int]:
    """``AllVideoDescriptions.txt`` -> (``{clip_id: [captions]}`` in file order, number of junk captions dropped)."""
    captions: dict[str, list[str]] = {}
    junk = 0
    for _, line in read_text_lines(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        clip_id, caption = parts[0], (parts[1] if len(parts) > 1 else "")
        if is_junk_caption(caption):
            junk += 1
            continue
        captions.setdefault(clip_id, []).append(clean_caption(caption))
    return captions, junk


def read_corpus_csv(path: str | os.PathLike) -> tuple[dict[str, list[str]], int]:
    """The original ``video_corpus.csv``: English, non-empty descriptions keyed ``f"{VideoID}_{Start}_{End}"``."""
    path = Path(path)
    captions: dict[str, list[str]] = {}
    dropped: Counter[str] = Counter()
    examples: dict[str, str] = {}
    fieldnames, rows = read_csv_rows(path)
    missing = [c for c in CSV_COLUMNS if c not in fieldnames]
    if missing:
        raise ValueError(f"{path} line 1: missing column(s) {', '.join(missing)} (found {fieldnames})")
    for lineno, row in rows:
        if (row["Language"] or "").strip() != "English":
            dropped["non-English"] += 1
            continue
        description = row["Description"]
        if is_junk_caption(description):
            dropped["empty or placeholder"] += 1
            continue
        try:
            start, end = int(float(row["Start"])), int(float(row["End"]))
        except (TypeError, ValueError):
            dropped["bad Start/End"] += 1
            examples.setdefault("bad Start/End", f"line {lineno}")
            continue
        video_id = (row["VideoID"] or "").strip()
        if not video_id:
            dropped["no VideoID"] += 1
            examples.setdefault("no VideoID", f"line {lineno}")
            continue
        captions.setdefault(f"{video_id}_{start}_{end}", []).append(clean_caption(description))
    if dropped["bad Start/End"] or dropped["no VideoID"]:
        logger.warning(
            "%s: skipped malformed rows: %s",
            path,
            ", ".join(f"{n} {why} (e.g. {examples[why]})" for why, n in dropped.items() if why in examples),
        )
    logger.info("%s: dropped %d non-English rows", path, dropped["non-English"])
    return captions, dropped["empty or placeholder"]


def _videos_folder(data_dir: Path, videos_dir: str | os.PathLike | None, check_videos: bool | None) -> Path | None:
    """The videos folder to check against, or None when paths are not checked."""
    if check_videos is False:
        return None
    if videos_dir is not None:
        folder = Path(videos_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"MSVD videos folder not found: {folder}")
        return folder
    for name in VIDEO_FOLDERS:
        if (data_dir / name).is_dir():
            return data_dir / name
    if check_videos:
        raise FileNotFoundError(
            f"no MSVD videos folder under {data_dir} (looked for {', '.join(VIDEO_FOLDERS)}); pass videos_dir="
        )
    return None


def _find(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def load_msvd(
    data_dir: str | os.PathLike,
    *,
    videos_dir: str | os.PathLike | None = None,
    check_videos: bool | None = None,
    captions_file: str | os.PathLike | None = None,
    mapping_file: str | os.PathLike | None = None,
) -> DatasetDict:
    """Load MSVD as train / validation / test (1,200 / 100 / 670 clips when complete).

    Args:
        data_dir: folder with the captions (see the module docstring for the layouts recognised).
        videos_dir: folder of ``<clip_id>.avi`` files; default ``data_dir/YouTubeClips`` (or ``videos``, ``raw_videos``).
        check_videos: None checks that each clip's video exists only when a videos folder exists; True requires the
            folder; False never checks. Clips without a video are skipped with one counted warning.
        captions_file: ``AllVideoDescriptions.txt`` or the corpus CSV, instead of looking in ``data_dir``.
        mapping_file: ``youtube_mapping.txt``, instead of ``data_dir/youtube_mapping.txt``.

    ``train`` has one row per reference caption, ``validation`` / ``test`` one row per clip with all references
    (see :mod:`vidgpt2.data.captions`). Junk captions ("na", empty) are dropped.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MSVD folder not found: {data_dir}")
    folder = _videos_folder(data_dir, videos_dir, check_videos)

    hub_train = data_dir / HUB_FILES["train"]
    if captions_file is None and hub_train.is_file():
        clips_by_split = _read_hub_layout(data_dir, folder)
    else:
        clips_by_split = _read_original_layout(data_dir, folder, captions_file, mapping_file)

    if folder is not None:
        present = set(os.listdir(folder))
        missing: list[str] = []
        for split, clips in clips_by_split.items():
            kept = [clip for clip in clips if os.path.basename(clip.video) in present]
            missing += [clip.video_id for clip in clips if os.path.basename(clip.video) not in present]
            clips_by_split[split] = kept
        if missing:
            logger.warning(
                "MSVD: skipped %d clips that have captions but no video in %s (e.g. %s)",
                len(missing),
                folder,
                ", ".join(missing[:3]),
            )
    else:
        logger.info("MSVD: no videos folder in use; video paths are not checked")

    result = DatasetDict({split: clips_to_dataset(clips_by_split[split], split) for split in SPLITS})
    logger.info("MSVD: %s", ", ".join(f"{s}: {len(clips_by_split[s])} clips, {len(result[s])} rows" for s in SPLITS))
    return result


def _read_original_layout(
    data_dir: Path,
    folder: Path | None,
    captions_file: str | os.PathLike | None,
    mapping_file: str | os.PathLike | None,
) -> dict[str, list[Clip]]:
    if captions_file is not None:
        captions_path = Path(captions_file).expanduser()
        if not captions_path.is_file():
            raise FileNotFoundError(f"MSVD captions file not found: {captions_path}")
    else:
        captions_path = _find(data_dir, (DESCRIPTIONS_TXT, *CORPUS_CSVS))
        if captions_path is None:
            expected = ", ".join(str(data_dir / name) for name in (DESCRIPTIONS_TXT, *CORPUS_CSVS, HUB_FILES["train"]))
            raise FileNotFoundError(f"no MSVD captions found; expected one of: {expected}")
    mapping = read_youtube_mapping(Path(mapping_file).expanduser() if mapping_file else data_dir / MAPPING_FILE)

    if captions_path.suffix.lower() == ".csv":
        captions, junk = read_corpus_csv(captions_path)
    else:
        captions, junk = read_descriptions_txt(captions_path)
    if junk:
        logger.info("%s: dropped %d empty or placeholder captions (e.g. 'na')", captions_path, junk)

    unmapped = [clip_id for clip_id in captions if clip_id not in mapping]
    uncaptioned = [clip_id for clip_id in mapping if clip_id not in captions]
    for skipped, why in (
        (unmapped, "with captions are not in the split mapping"),
        (uncaptioned, "in the split mapping have no captions"),
    ):
        if skipped:
            logger.warning(
                "%s: %d clips %s; skipped (e.g. %s)", captions_path, len(skipped), why, ", ".join(skipped[:3])
            )

    videos_root = folder if folder is not None else data_dir / VIDEO_FOLDERS[0]
    clips_by_split: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    for clip_id, (_, split) in sorted(mapping.items(), key=lambda item: item[1][0]):
        if clip_id in captions:
            video = os.path.abspath(videos_root / f"{clip_id}.avi")
            clips_by_split[split].append(Clip(video, captions[clip_id], video_id=clip_id))
    return clips_by_split


def _read_hub_layout(data_dir: Path, folder: Path | None) -> dict[str, list[Clip]]:
    clips_by_split: dict[str, list[Clip]] = {}
    junk = 0
    for split, name in HUB_FILES.items():
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"MSVD split file not found: {path}")
        clips = []
        for where, item in read_json_objects(path, hint=" (one per clip)"):
            video_id = item.get("video_id")
            video = item.get("video") or (f"{video_id}.avi" if video_id else None)
            if not video:
                raise ValueError(f'{where}: missing "video" and "video_id" fields')
            references = item.get("caption", item.get("captions"))
            if isinstance(references, str):
                references = [references]
            if not isinstance(references, list) or not all(isinstance(c, str) for c in references):
                raise ValueError(f'{where}: "caption" must be a list of strings')
            kept = [clean_caption(c) for c in references if not is_junk_caption(c)]
            junk += len(references) - len(kept)
            video_path = Path(video).expanduser()
            if folder is not None:
                video_path = folder / video_path.name
            elif not video_path.is_absolute():
                video_path = data_dir / video_path
            if video_id is None:
                video_id = video_path.stem
            clips.append(Clip(os.path.abspath(video_path), kept, video_id=str(video_id), origins=[where]))
        clips_by_split[split] = [clip for clip in clips if clip.references]
    if junk:
        logger.info("MSVD: dropped %d empty or placeholder captions (e.g. 'na')", junk)
    return clips_by_split
