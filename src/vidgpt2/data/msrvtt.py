"""MSR-VTT (Xu et al. 2016): 10,000 web clips ``video0.mp4`` ... ``video9999.mp4``, 20 captions each.

Recognised layouts under ``data_dir`` (the first that matches wins; ``split_scheme`` picks one when several do):

1. **official** (the captioning benchmark): ``train_val_videodatainfo.json`` and ``test_videodatainfo.json``, JSON
   objects with ``videos`` (``{"video_id": "video0", "split": "train" | "validate" | "test", "start time",
   "end time", ...}``) and ``sentences`` (``{"video_id", "caption", "sen_id"}``). Each video's ``split`` gives
   train / validation / test: 6,513 / 497 / 2,990 clips. ``MSRVTT_data.json`` (the same ``videos`` and
   ``sentences`` for all 10,000 clips in one file, as shipped with CLIP4Clip) is read the same way when the two
   official files are absent.
2. **9k / 1k-A** (the retrieval split of JSFusion, Yu et al. 2018, used by CLIP4Clip and most video-text models):
   ``msrvtt_train_9k.json`` and ``msrvtt_test_1k.json``, JSON lists of ``{"video_id", "video": "video0.mp4",
   "caption": str or [str, ...], ...}`` (the layout of the Hub copy ``friedrichor/MSR-VTT``; items naming the same
   video are merged). Train: 9,000 clips; test: 1,000 clips. There is no validation split: the 9k training clips
   already include the official validation clips, and the 1k-A clips are the test set, so none is left to select
   a model on (training then runs without evaluation, as in retrieval codebases).

References. Every split keeps all the captions of a clip as ``references``, as captioning papers score MSR-VTT
(multi-reference BLEU / METEOR / ROUGE-L / CIDEr against the 20 captions). The 1k-A list ``msrvtt_test_1k.json``
holds only one caption per clip (the retrieval query); when ``MSRVTT_data.json`` sits next to it, the test clips get
their 20 captions from it instead, and otherwise a warning says that the scores use one reference per clip and do
not compare with captioning papers.

Times. ``start time`` / ``end time`` place each clip in its source YouTube video; the distributed ``video<N>.mp4`` files
are already cut, so ``start`` / ``end`` are None (the whole file).

Videos are ``<video_id>.mp4`` (or the item's ``video``) in the videos folder: ``videos_dir``, or the first of
``videos/all/``, ``videos/``, ``video/``, ``MSRVTT_Videos/`` under ``data_dir``, or the official ``TrainValVideo/``
and ``TestVideo/`` together. Video files are checked as for MSVD: ``check_videos=None`` checks only when such a folder
exists (clips without a video are skipped with one counted warning), ``True`` requires one, ``False`` never looks.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from datasets import DatasetDict

from .captions import SPLITS, Clip, clean_caption, clips_to_dataset, is_junk_caption, read_json, read_json_objects

logger = logging.getLogger(__name__)

OFFICIAL_FILES = ("train_val_videodatainfo.json", "test_videodatainfo.json")
ALL_DATA_FILE = "MSRVTT_data.json"
SPLIT_9K_FILES = {"train": "msrvtt_train_9k.json", "test": "msrvtt_test_1k.json"}
# The official "split" values -> our split names.
OFFICIAL_SPLITS = {"train": "train", "validate": "validation", "test": "test"}
VIDEO_FOLDERS = ("videos/all", "videos", "video", "MSRVTT_Videos")
OFFICIAL_VIDEO_FOLDERS = ("TrainValVideo", "TestVideo")
SplitScheme = Literal["official", "9k"]


def read_videodatainfo(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, list[str]]]:
    """An official annotation file (or ``MSRVTT_data.json``) -> (``{video_id: split}``, ``{video_id: [captions]}``).

    Splits are our names (``"validate"`` -> ``"validation"``); captions keep the file's order, cleaned, with junk
    ("na", empty) dropped. Sentences of videos the file does not list are skipped with a counted warning.

    Raises:
        ValueError: naming the file (and the item) for invalid JSON, a missing ``videos`` / ``sentences`` list, or a
            video or sentence without its fields or with an unknown ``split``.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise ValueError(f'{path}: expected a JSON object with a "videos" list (an MSR-VTT videodatainfo file)')
    if not isinstance(data.get("sentences"), list):
        raise ValueError(f'{path}: expected a "sentences" list next to "videos" (an MSR-VTT videodatainfo file)')
    splits: dict[str, str] = {}
    for i, video in enumerate(data["videos"]):
        where = f"{path} videos[{i}]"
        video_id = _field(video, "video_id", where)
        split = OFFICIAL_SPLITS.get(_field(video, "split", where))
        if split is None:
            raise ValueError(f'{where}: "split" must be one of {sorted(OFFICIAL_SPLITS)}, got {video["split"]!r}')
        splits[video_id] = split
    captions: dict[str, list[str]] = {video_id: [] for video_id in splits}
    dropped: Counter[str] = Counter()
    for i, sentence in enumerate(data["sentences"]):
        where = f"{path} sentences[{i}]"
        video_id, caption = _field(sentence, "video_id", where), _field(sentence, "caption", where)
        if video_id not in captions:
            dropped["of videos the file does not list"] += 1
        elif is_junk_caption(caption):
            dropped["empty or placeholder"] += 1
        else:
            captions[video_id].append(clean_caption(caption))
    if dropped:
        logger.warning("%s: skipped %s sentences", path, ", ".join(f"{n} {why}" for why, n in dropped.items()))
    return splits, captions


def _field(item: Any, name: str, where: str) -> str:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{where}: "{name}" must be a non-empty string, got {value!r}')
    return value.strip()


def read_caption_list(path: str | os.PathLike) -> dict[str, tuple[str, list[str]]]:
    """A 9k / 1k-A list (``msrvtt_train_9k.json``) -> ``{video_id: (video file name, [captions])}`` in file order.

    ``caption`` may be a string or a list of strings; items naming the same video are merged. ``video_id`` defaults
    to the stem of ``video`` and ``video`` to ``f"{video_id}.mp4"``.

    Raises:
        ValueError: naming the file and item for invalid JSON, an item without ``video_id`` / ``video``, or a
            ``caption`` that is neither a string nor a list of strings.
    """
    path = Path(path)
    clips: dict[str, tuple[str, list[str]]] = {}
    for where, item in read_json_objects(path, hint=' of {"video_id", "caption"} (the 9k / 1k-A layout)'):
        video = item.get("video")
        video_id = item.get("video_id") or (Path(video).stem if isinstance(video, str) else None)
        if not isinstance(video_id, str) or not video_id.strip():
            raise ValueError(f'{where}: missing "video_id" (or "video") field')
        video_id = video_id.strip()
        captions = item.get("caption")
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f'{where}: "caption" must be a string or a list of strings, got {captions!r}')
        name = Path(video).name if isinstance(video, str) and video.strip() else f"{video_id}.mp4"
        entry = clips.setdefault(video_id, (name, []))
        entry[1].extend(clean_caption(c) for c in captions if not is_junk_caption(c))
    return clips


def _detect_scheme(data_dir: Path) -> SplitScheme:
    """The official files, else the 9k / 1k-A lists, else ``MSRVTT_data.json`` (official split)."""
    if any((data_dir / name).is_file() for name in OFFICIAL_FILES):
        return "official"
    if any((data_dir / name).is_file() for name in SPLIT_9K_FILES.values()):
        return "9k"
    if (data_dir / ALL_DATA_FILE).is_file():
        return "official"
    expected = (
        f"{' + '.join(OFFICIAL_FILES)} (official split); {ALL_DATA_FILE} (official split); "
        f"{' + '.join(SPLIT_9K_FILES.values())} (9k / 1k-A split, optionally with {ALL_DATA_FILE})"
    )
    raise FileNotFoundError(f"no MSR-VTT annotations in {data_dir}; expected one of: {expected}")


def _official_clips(data_dir: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """``{split: [(video_id, file name, captions), ...]}`` from the official files or ``MSRVTT_data.json``."""
    present = [data_dir / name for name in OFFICIAL_FILES if (data_dir / name).is_file()]
    if len(present) == 1:
        missing = next(name for name in OFFICIAL_FILES if not (data_dir / name).is_file())
        raise FileNotFoundError(f"MSR-VTT: {present[0]} is here but {data_dir / missing} is missing; both are needed")
    files = present or [data_dir / ALL_DATA_FILE]
    if not files[0].is_file():
        raise FileNotFoundError(f"MSR-VTT official annotations not found: {' or '.join(map(str, files))}")
    by_split: dict[str, list[tuple[str, str, list[str]]]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    for path in files:
        splits, captions = read_videodatainfo(path)
        for video_id, split in splits.items():
            if video_id in seen:
                raise ValueError(f"{path}: video {video_id} is also listed in {files[0]}")
            seen.add(video_id)
            by_split[split].append((video_id, f"{video_id}.mp4", captions[video_id]))
    return by_split


def _split_9k_clips(data_dir: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """``{"train": [...], "test": [...]}`` from the 9k / 1k-A lists; test references from ``MSRVTT_data.json``."""
    by_split: dict[str, list[tuple[str, str, list[str]]]] = {}
    for split, name in SPLIT_9K_FILES.items():
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"MSR-VTT 9k / 1k-A split file not found: {path} (both {name} files are needed)")
        by_split[split] = [(video_id, file, caps) for video_id, (file, caps) in read_caption_list(path).items()]

    all_data = data_dir / ALL_DATA_FILE
    if all_data.is_file():
        _, captions = read_videodatainfo(all_data)
        unknown = [video_id for video_id, _, _ in by_split["test"] if video_id not in captions]
        if unknown:
            raise ValueError(
                f"{data_dir / SPLIT_9K_FILES['test']}: {len(unknown)} test videos are not in {all_data} "
                f"(e.g. {', '.join(unknown[:3])}); are the two files from the same release?"
            )
        by_split["test"] = [(video_id, file, captions[video_id]) for video_id, file, _ in by_split["test"]]
        logger.info("MSR-VTT 1k-A: test references are the captions of %s (all of each clip's)", all_data)
    else:
        counts = Counter(len(caps) for _, _, caps in by_split["test"])
        if counts and max(counts) <= 1:
            logger.warning(
                "MSR-VTT 1k-A: %s has one caption per test clip, so metrics use 1 reference, not the 20 that "
                "captioning papers score against; put %s next to it to use all of them",
                data_dir / SPLIT_9K_FILES["test"],
                ALL_DATA_FILE,
            )
    return by_split


def _video_folders(data_dir: Path, videos_dir: str | os.PathLike | None, check_videos: bool | None) -> list[Path]:
    """The folders to look for videos in (empty: paths are not checked)."""
    if check_videos is False:
        return []
    if videos_dir is not None:
        folder = Path(videos_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"MSR-VTT videos folder not found: {folder}")
        return [folder]
    for name in VIDEO_FOLDERS:
        if (data_dir / name).is_dir():
            return [data_dir / name]
    official = [data_dir / name for name in OFFICIAL_VIDEO_FOLDERS if (data_dir / name).is_dir()]
    if official:
        return official
    if check_videos:
        looked = ", ".join((*VIDEO_FOLDERS, *OFFICIAL_VIDEO_FOLDERS))
        raise FileNotFoundError(f"no MSR-VTT videos folder under {data_dir} (looked for {looked}); pass videos_dir=")
    return []


def load_msrvtt(
    data_dir: str | os.PathLike,
    *,
    split_scheme: SplitScheme | None = None,
    videos_dir: str | os.PathLike | None = None,
    check_videos: bool | None = None,
) -> DatasetDict:
    """Load MSR-VTT: train / validation / test (official, 6,513 / 497 / 2,990 clips) or train / test (9k / 1k-A).

    Args:
        data_dir: folder with the annotation files (see the module docstring for the layouts).
        split_scheme: ``"official"`` or ``"9k"``; default: the official files if present, else the 9k / 1k-A
            lists, else ``MSRVTT_data.json`` with the official split.
        videos_dir: folder of ``video<N>.mp4``; default: a videos folder under ``data_dir`` (module docstring).
        check_videos: None checks that videos exist only when a videos folder is found; True requires one; False
            never checks. Clips whose video is missing are skipped with one counted warning.

    ``train`` has one row per reference caption, ``validation`` / ``test`` one row per clip with all references
    (see :mod:`vidgpt2.data.captions`); ``video_id`` is ``"video<N>"``; ``start`` / ``end`` are None.

    Raises:
        FileNotFoundError: no annotation layout is recognised (the message lists the expected file names), or a
            named folder or a layout's second file is missing.
        ValueError: an annotation file is malformed (the message names the file and item) or not UTF-8.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MSR-VTT folder not found: {data_dir}")
    if split_scheme not in (None, "official", "9k"):
        raise ValueError(f"load_msrvtt: split_scheme must be 'official', '9k' or None, got {split_scheme!r}")
    scheme = split_scheme or _detect_scheme(data_dir)
    if split_scheme is None and scheme == "official" and (data_dir / SPLIT_9K_FILES["train"]).is_file():
        logger.info("MSR-VTT: using the official split; split_scheme='9k' reads %s instead", SPLIT_9K_FILES["train"])
    by_split = _official_clips(data_dir) if scheme == "official" else _split_9k_clips(data_dir)

    folders = _video_folders(data_dir, videos_dir, check_videos)
    present = {name: folder for folder in reversed(folders) for name in os.listdir(folder)}
    default_folder = folders[0] if folders else data_dir / "videos"
    missing: list[str] = []
    uncaptioned: list[str] = []
    clips_by_split: dict[str, list[Clip]] = {}
    for split, entries in by_split.items():
        clips = []
        for video_id, file, captions in entries:
            if not captions:
                uncaptioned.append(video_id)
            elif folders and file not in present:
                missing.append(video_id)
            else:
                video = os.path.abspath(present.get(file, default_folder) / file)
                origin = f"{data_dir} ({scheme} split) {split} {video_id}"
                clips.append(Clip(video, list(captions), video_id=video_id, origins=[origin]))
        clips_by_split[split] = clips
    if uncaptioned:
        logger.warning("MSR-VTT: skipped %d clips without captions (e.g. %s)", len(uncaptioned), uncaptioned[0])
    if missing:
        where = ", ".join(map(str, folders))
        logger.warning(
            "MSR-VTT: skipped %d clips whose video is not in %s (e.g. %s)", len(missing), where, ", ".join(missing[:3])
        )
    if not folders:
        logger.info("MSR-VTT: no videos folder in use; video paths (under %s) are not checked", default_folder)

    result = DatasetDict({split: clips_to_dataset(clips, split) for split, clips in clips_by_split.items()})
    logger.info(
        "MSR-VTT (%s split): %s",
        scheme,
        ", ".join(f"{s}: {len(c)} clips, {len(result[s])} rows" for s, c in clips_by_split.items()),
    )
    return result
