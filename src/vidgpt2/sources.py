"""Checks of where a model, backbone or config comes from, made before any data work: a local path that does not
exist is reported as a missing folder (or file), not as transformers' "Repo id must use alphanumeric chars" error
that a Hub lookup of the path gives (huggingface_hub's `validate_repo_id`)."""

from __future__ import annotations

import os
from pathlib import Path

# what a local path starts with; a Hub id ("name" or "namespace/name") never does
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def looks_like_path(value: str) -> bool:
    """True when `value` can only be a local path: it starts with `/`, `./`, `../` or `~`, contains the platform's
    separator where that is not `/` (Windows), or is not a valid Hub repo id (e.g. more than one `/`).

    Hub ids follow `huggingface_hub.utils.validate_repo_id` (at most one `/`, alphanumerics, `-`, `_`, `.`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if value.startswith(_PATH_PREFIXES) or (os.sep != "/" and os.sep in value):
        return True
    try:
        validate_repo_id(value)
    except HFValidationError:
        return True
    return False


def check_checkpoint_source(value: str | os.PathLike | None, what: str = "model") -> None:
    """Refuse a checkpoint name that is a local path but not an existing folder.

    Args:
        value: a Hub id or a local folder (None or a non-string object: nothing to check).
        what: the name used in the message (`"model"`, `"vision model"`, ...).

    Raises:
        FileNotFoundError: "<what> folder not found: <value>" (or "... is a file, not a folder").
    """
    if value is None or not isinstance(value, (str, os.PathLike)):
        return
    name = os.fspath(value)
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise FileNotFoundError(f"{what} folder expected, but {name} is a file: pass the folder that holds config.json.")
    if isinstance(value, os.PathLike) or looks_like_path(name):
        raise FileNotFoundError(f"{what} folder not found: {name}")


def check_config_file(value: object) -> None:
    """Refuse a `--config` path that is not an existing file (dicts and config objects are not checked).

    Raises:
        FileNotFoundError: "config file not found: <value>".
    """
    if isinstance(value, (str, os.PathLike)) and not Path(value).expanduser().is_file():
        raise FileNotFoundError(f"config file not found: {os.fspath(value)}")
