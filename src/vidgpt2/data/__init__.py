"""Video-caption datasets as :class:`datasets.DatasetDict`: captions files, videofolder, MSVD, MSR-VTT, BDD-X,
synthetic clips.

Every loader returns the same columns (``video``, ``caption``, ``references``, ``start``, ``end``, ``video_id``) and
the same split layout: ``train`` has one row per reference caption, ``validation`` / ``test`` one row per clip with
``caption`` = the first reference. See :mod:`vidgpt2.data.captions` for details.
"""

from __future__ import annotations

import os
from typing import Literal

from datasets import DatasetDict

from .bddx import (
    join_action_justification,
    load_bddx,
    normalize_justification,
    split_action_justification,
    strip_connective,
)
from .captions import (
    FEATURES,
    SPLITS,
    expand_references,
    is_junk_caption,
    load_captions_files,
    load_videofolder,
    unique_videos,
)
from .msrvtt import load_msrvtt
from .msvd import load_msvd
from .synthetic import (
    CAPTION_FAMILIES,
    caption_family,
    order_outcome,
    parse_caption,
    time_reversed_caption,
    write_synthetic_dataset,
)

DATASET_NAMES = ("msvd", "msrvtt", "bddx", "videofolder")


def load_video_caption_dataset(
    name: Literal["msvd", "msrvtt", "bddx", "videofolder"], data_dir: str | os.PathLike, **kwargs
) -> DatasetDict:
    """Load a named dataset from its local files: ``"msvd"`` -> :func:`load_msvd`, ``"msrvtt"`` (or ``"msr-vtt"``)
    -> :func:`load_msrvtt`, ``"bddx"`` -> :func:`load_bddx`, ``"videofolder"`` -> :func:`load_videofolder` (the
    Hugging Face ``videofolder`` layout).

    ``kwargs`` go to that loader (e.g. ``target="action"`` for BDD-X, ``split_scheme="9k"`` for MSR-VTT).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key == "msvd":
        return load_msvd(data_dir, **kwargs)
    if key == "msrvtt":
        return load_msrvtt(data_dir, **kwargs)
    if key == "bddx":
        return load_bddx(data_dir, **kwargs)
    if key == "videofolder":
        return load_videofolder(data_dir, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES} (or use load_captions_files)")


__all__ = [
    "CAPTION_FAMILIES",
    "DATASET_NAMES",
    "FEATURES",
    "SPLITS",
    "caption_family",
    "expand_references",
    "is_junk_caption",
    "join_action_justification",
    "load_bddx",
    "load_captions_files",
    "load_msrvtt",
    "load_msvd",
    "load_video_caption_dataset",
    "order_outcome",
    "load_videofolder",
    "normalize_justification",
    "parse_caption",
    "split_action_justification",
    "strip_connective",
    "time_reversed_caption",
    "unique_videos",
    "write_synthetic_dataset",
]
