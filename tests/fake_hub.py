"""A fake `HfApi` that keeps repositories as folders, for testing code that pushes to the Hub offline.

`FakeHfApi(root)` implements the part of `huggingface_hub.HfApi` that publishing code uses: `create_repo`,
`create_commit`, `upload_folder`, `upload_file`, `file_exists` and `list_repo_files`. Every commit is applied to
`root/<repo_id>/` (datasets and spaces under `root/datasets/` and `root/spaces/`) and recorded in `commits`, so a
test can check both what a repository holds and how many commits (with which files) produced it.

    api = FakeHfApi(tmp_path / "hub")
    push_to_hub(model, "user/tiny", processor=processor, api=api)
    assert api.file_exists("user/tiny", "config.json") and len(api.commits) == 1
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, RepoUrl
from huggingface_hub.constants import SPACES_SDK_TYPES
from huggingface_hub.utils import filter_repo_objects

ENDPOINT = "https://huggingface.co"


class FakeHubError(RuntimeError):
    """What a real Hub answers with an HTTP error (missing repository, name conflict)."""


@dataclass
class FakeCommit:
    repo_id: str
    repo_type: str
    message: str
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    oid: str = ""


class FakeHfApi:
    """Stand-in for `huggingface_hub.HfApi` that writes repositories under `root`."""

    def __init__(self, root: str | Path, endpoint: str = ENDPOINT, namespace: str = "user"):
        self.root = Path(root)
        self.endpoint = endpoint
        self.namespace = namespace  # the token owner: `create_repo("name")` creates "<namespace>/name"
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}  # (repo_type, repo_id) -> {"private": ...}
        self.commits: list[FakeCommit] = []

    # --- repositories ----------------------------------------------------------------------------------------------
    def repo_path(self, repo_id: str, repo_type: str | None = None) -> Path:
        """The folder that holds the files of `repo_id`."""
        repo_type = repo_type or "model"
        return self.root / repo_id if repo_type == "model" else self.root / f"{repo_type}s" / repo_id

    def create_repo(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        repo_type: str | None = None,
        exist_ok: bool = False,
        **kwargs: Any,
    ) -> RepoUrl:
        space_sdk = kwargs.get("space_sdk")
        if repo_type == "space" and space_sdk not in SPACES_SDK_TYPES:  # as HfApi checks before any request
            raise ValueError(
                f"No space_sdk provided. `create_repo` expects space_sdk to be one of {SPACES_SDK_TYPES} when "
                "repo_type is 'space'`"
            )
        if "/" not in repo_id:
            repo_id = f"{self.namespace}/{repo_id}"
        key = (repo_type or "model", repo_id)
        if key in self.repos and not exist_ok:
            raise FakeHubError(f"409 Conflict: repository {repo_id!r} already exists")
        self.repos.setdefault(key, {"private": bool(private), **({"space_sdk": space_sdk} if space_sdk else {})})
        self.repo_path(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
        return RepoUrl(self._repo_url(repo_id, repo_type), endpoint=self.endpoint)

    def file_exists(
        self, repo_id: str, filename: str, *, repo_type: str | None = None, revision: str | None = None, **kwargs: Any
    ) -> bool:
        if (repo_type or "model", repo_id) not in self.repos:
            return False  # as HfApi: a missing repository has no files
        return (self.repo_path(repo_id, repo_type) / filename).is_file()

    def list_repo_files(
        self, repo_id: str, *, revision: str | None = None, repo_type: str | None = None, **kwargs: Any
    ) -> list[str]:
        self._require_repo(repo_id, repo_type)
        base = self.repo_path(repo_id, repo_type)
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    # --- commits ---------------------------------------------------------------------------------------------------
    def create_commit(
        self,
        repo_id: str,
        operations: Any,
        *,
        commit_message: str,
        repo_type: str | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> CommitInfo:
        self._require_repo(repo_id, repo_type)
        if not commit_message:
            raise FakeHubError("`commit_message` can't be empty")
        base = self.repo_path(repo_id, repo_type)
        commit = FakeCommit(repo_id, repo_type or "model", commit_message)
        for op in list(operations):
            target = base / op.path_in_repo
            if isinstance(op, CommitOperationAdd):
                target.parent.mkdir(parents=True, exist_ok=True)
                _write(op.path_or_fileobj, target)
                commit.added.append(op.path_in_repo)
            elif isinstance(op, CommitOperationDelete):
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                commit.deleted.append(op.path_in_repo)
            else:
                raise FakeHubError(f"FakeHfApi does not support {type(op).__name__}")
        commit.oid = hashlib.sha1(f"{repo_id}:{len(self.commits)}:{commit_message}".encode()).hexdigest()
        self.commits.append(commit)
        return CommitInfo(
            commit_url=f"{self._repo_url(repo_id, repo_type)}/commit/{commit.oid}",
            commit_message=commit_message,
            commit_description=kwargs.get("commit_description") or "",
            oid=commit.oid,
        )

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        path_in_repo: str | None = None,
        commit_message: str | None = None,
        repo_type: str | None = None,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        delete_patterns: list[str] | str | None = None,
        **kwargs: Any,
    ) -> CommitInfo:
        folder = Path(folder_path)
        if not folder.is_dir():
            raise ValueError(f"Provided path: '{folder}' is not a directory")
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        files = [f for f in files if not f.startswith(".git/") and not f.startswith(".cache/huggingface/")]
        files = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
        operations: list[Any] = []
        if delete_patterns is not None:
            existing = self.list_repo_files(repo_id, repo_type=repo_type)
            doomed = filter_repo_objects(existing, allow_patterns=delete_patterns)
            operations += [CommitOperationDelete(path) for path in doomed if path.removeprefix(prefix) not in files]
        operations += [CommitOperationAdd(f"{prefix}{f}", str(folder / f)) for f in files]
        return self.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or "Upload folder using huggingface_hub",
            repo_type=repo_type,
            **kwargs,
        )

    def upload_file(
        self,
        *,
        path_or_fileobj: Any,
        path_in_repo: str,
        repo_id: str,
        repo_type: str | None = None,
        commit_message: str | None = None,
        **kwargs: Any,
    ) -> CommitInfo:
        operation = CommitOperationAdd(path_in_repo, path_or_fileobj)
        return self.create_commit(
            repo_id,
            [operation],
            commit_message=commit_message or f"Upload {path_in_repo} with huggingface_hub",
            repo_type=repo_type,
            **kwargs,
        )

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _repo_url(self, repo_id: str, repo_type: str | None) -> str:
        prefix = "" if (repo_type or "model") == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def _require_repo(self, repo_id: str, repo_type: str | None) -> None:
        if (repo_type or "model", repo_id) not in self.repos:
            raise FakeHubError(f"404 Repository Not Found: {repo_id!r} (call create_repo first)")


def _write(source: Any, target: Path) -> None:
    """Write a `CommitOperationAdd.path_or_fileobj` (path, bytes or binary file object) to `target`."""
    if isinstance(source, (str, Path)):
        shutil.copyfile(source, target)
    elif isinstance(source, bytes):
        target.write_bytes(source)
    elif isinstance(source, io.IOBase) or hasattr(source, "read"):
        source.seek(0)
        target.write_bytes(source.read())
    else:
        raise FakeHubError(f"Unsupported path_or_fileobj of type {type(source).__name__}")


__all__ = ["FakeCommit", "FakeHfApi", "FakeHubError"]
