"""What the frame cache (`frame_cache.py`) and the feature cache (`feature_cache.py`) share.

Both are a folder with a `metadata.json` (what made the entries, with its fingerprint) and a sub-folder of one file
per clip segment, named by `segment_key`:

    metadata.json
    <entries>/<key><suffix>     frames/<key>.npy or features/<key>.safetensors

`SegmentCache` holds the folder logic both use (entry paths, which samples are still missing, reading and atomically
writing `metadata.json`); each cache adds its entry format, its fingerprint and its own checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

METADATA_FILE = "metadata.json"


def segment_key(video: str, start: float | None = None, end: float | None = None) -> str:
    """Stable file key for a clip segment: a hash of the absolute path and the segment bounds."""
    text = f"{os.path.abspath(video)}|{'' if start is None else float(start)}|{'' if end is None else float(end)}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class SegmentCache:
    """A cache folder of one entry file per clip segment (`<root>/<entries_dir_name>/<segment_key><entry_suffix>`)."""

    root: Path

    entries_dir_name: ClassVar[str]  # "frames" or "features"
    entry_suffix: ClassVar[str]  # ".npy" or ".safetensors"
    kind: ClassVar[str]  # "frame cache" or "feature cache", for error messages
    fill_hint: ClassVar[str]  # the command that fills the cache, for the error of a clip not cached

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def entries_dir(self) -> Path:
        return self.root / self.entries_dir_name

    def path_for(self, video: str, start: float | None = None, end: float | None = None) -> Path:
        return self.entries_dir / f"{segment_key(video, start, end)}{self.entry_suffix}"

    def existing_path(self, video: str, start: float | None = None, end: float | None = None) -> Path:
        """The clip's entry file.

        Raises:
            FileNotFoundError: the clip is not cached (the message names the command that fills the cache).
        """
        path = self.path_for(video, start, end)
        if not path.exists():
            raise FileNotFoundError(
                f"No cached {self.entries_dir_name} for {video!r} (start={start}, end={end}) in {self.root}. "
                f"{self.fill_hint}"
            )
        return path

    def has(self, video: str, start: float | None = None, end: float | None = None) -> bool:
        """True when the clip's entry file exists (a subclass may also check that it is readable)."""
        return self.path_for(video, start, end).exists()

    def missing(self, samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The samples (dicts with `video`, optional `start`/`end`) for which `has` is false, each clip once, in
        order: what an extraction still has to cover."""
        seen: set[str] = set()
        missing = []
        for sample in samples:
            video, start, end = sample["video"], sample.get("start"), sample.get("end")
            key = segment_key(video, start, end)
            if key not in seen:
                seen.add(key)
                if not self.has(video, start, end):
                    missing.append(sample)
        return missing

    # --- metadata ---------------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The folder's `metadata.json`.

        Raises:
            FileNotFoundError: there is none (the folder is not a cache of this kind, or was never written).
        """
        path = self.root / METADATA_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: {self.root} is not a vidgpt2 {self.kind}.")
        return json.loads(path.read_text())

    def _store_metadata(self, metadata: dict[str, Any]) -> None:
        """Write `metadata.json` atomically (temporary file, then rename), creating the folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / METADATA_FILE
        tmp = path.with_name(f"{METADATA_FILE}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(metadata, indent=2))
        os.replace(tmp, path)


__all__ = ["METADATA_FILE", "SegmentCache", "segment_key"]
