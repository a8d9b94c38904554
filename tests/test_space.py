"""Publishing the app as a Hugging Face Space (`vidgpt2 push --space`, `vidgpt2 app --push-space / --write-space`):
the written folder is self-contained (vidgpt2 is vendored, not installed from PyPI) and runs from its own folder;
uploads go to a Gradio Space after the model, offline with FakeHfApi."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

gradio = pytest.importorskip("gradio", reason="the `app` extra is not installed: pip install 'vidgpt2[app]'")

import vidgpt2.hub  # noqa: E402
from tests.fake_hub import FakeHfApi, FakeHubError  # noqa: E402
from tests.tiny import save_tiny_captioner  # noqa: E402
from tests.video_fixtures import write_test_clip  # noqa: E402
from vidgpt2.app import space_requirements, write_space  # noqa: E402
from vidgpt2.cli import main as cli_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO, SPACE = "user/vidgpt2-tiny", "user/vidgpt2-demo"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("model"))


@pytest.fixture
def api(tmp_path, monkeypatch) -> FakeHfApi:
    fake = FakeHfApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token: fake)  # what push and the Space upload use
    return fake


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


# --- the folder ---------------------------------------------------------------------------------------------------------
def test_space_folder_front_matter_and_requirements(tmp_path):
    files = write_space(MODEL_REPO, tmp_path / "space")
    assert [f.name for f in files] == ["app.py", "requirements.txt", "README.md", "vidgpt2"]
    meta = _front_matter((tmp_path / "space" / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["models"] == [MODEL_REPO]
    assert meta["title"] == "vidgpt2: vidgpt2-tiny"  # the colon: unquoted, the whole front matter did not parse
    assert (tmp_path / "space" / meta["app_file"]).is_file()
    # "3.27" is refused by the Hub (MiniGPT-4#255): major.minor.patch, as a string; the Gradio this page ran with
    assert isinstance(meta["sdk_version"], str) and re.fullmatch(r"\d+\.\d+\.\d+", meta["sdk_version"])
    assert meta["sdk_version"] == ".".join(gradio.__version__.split(".")[:3])
    # unquoted, YAML reads 3.10 as the float 3.1
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"

    lines = (tmp_path / "space" / "requirements.txt").read_text().splitlines()
    names = {Requirement(line).name.lower(): str(Requirement(line).specifier) for line in lines}
    # not on PyPI: vidgpt2 itself must not be a requirement; Gradio comes from sdk_version (a second pin can conflict)
    assert "vidgpt2" not in names and "gradio" not in names
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in project["dependencies"]}
    assert names == expected  # the floors of pyproject.toml, every runtime dependency
    assert {"torch", "torchvision", "transformers", "av"} <= set(names)
    assert lines == space_requirements()

    vendored = tmp_path / "space" / "vidgpt2"
    source = ROOT / "src" / "vidgpt2"
    shipped = {p.relative_to(source) for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {p.relative_to(vendored) for p in vendored.rglob("*") if p.is_file()} == shipped
    app_py = (tmp_path / "space" / "app.py").read_text()
    assert f'CaptionEngine("{MODEL_REPO}")' in app_py
    with pytest.raises(FileExistsError, match="already has app.py, requirements.txt, README.md, vidgpt2"):
        write_space(MODEL_REPO, tmp_path / "space")


def test_space_with_a_requirement_line_vendors_nothing(tmp_path):
    line = "vidgpt2[app] @ git+https://github.com/you/vidgpt2"
    write_space(MODEL_REPO, tmp_path / "space", vidgpt2_requirement=line)
    assert (tmp_path / "space" / "requirements.txt").read_text() == line + "\n"
    assert not (tmp_path / "space" / "vidgpt2").exists()


RUN_SPACE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    space, clip = Path(sys.argv[1]).resolve(), sys.argv[2]
    # no other copy of vidgpt2 may be reachable (an editable install puts its src/ on sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() == space or not (Path(p or ".") / "vidgpt2").exists()]
    import gradio as gr

    import app  # the Space's app.py: loads the model and builds the page, as the Space does at start

    loaded = [m.__file__ for name, m in list(sys.modules.items()) if name.split(".")[0] == "vidgpt2" and getattr(m, "__file__", None)]
    assert loaded and all(Path(f).resolve().is_relative_to(space / "vidgpt2") for f in loaded), loaded
    assert isinstance(app.demo, gr.Blocks), type(app.demo)
    result = app.engine.run(clip, num_beams=1, max_new_tokens=4)
    assert result.caption and result.explanation.caption == result.caption
    print("CAPTION", result.caption, len(loaded))
    """
)


def test_written_space_runs_offline_from_its_own_folder(model_dir, tmp_path):
    """The vendored package is complete: with only the Space folder on PYTHONPATH, app.py imports, builds the Blocks,
    loads the model, captions and explains a clip."""
    space = tmp_path / "space"
    write_space(str(model_dir), space)
    clip = write_test_clip(tmp_path / "clip.mp4", num_frames=8)
    env = dict(os.environ, PYTHONPATH=str(space), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    result = subprocess.run(
        [sys.executable, "-c", RUN_SPACE, str(space), str(clip)],
        cwd=space, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "CAPTION " in result.stdout


# --- uploads --------------------------------------------------------------------------------------------------------------
def _space_files(api: FakeHfApi) -> set[str]:
    return set(api.list_repo_files(SPACE, repo_type="space"))


def test_push_with_space_uploads_the_model_then_a_gradio_space(api, model_dir, capsys):
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", MODEL_REPO, "--space", SPACE]) == 0
    assert [(c.repo_type, c.repo_id) for c in api.commits] == [("model", MODEL_REPO), ("space", SPACE)]
    assert api.repos[("space", SPACE)]["space_sdk"] == "gradio"
    assert {"config.json", "model.safetensors", "README.md"} <= set(api.list_repo_files(MODEL_REPO))
    files = _space_files(api)
    assert {"app.py", "README.md", "requirements.txt", "vidgpt2/__init__.py", "vidgpt2/app.py",
            "vidgpt2/modeling_vidgpt2.py", "vidgpt2/templates/model_card.md"} <= files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    space = api.repo_path(SPACE, "space")
    assert f'CaptionEngine("{MODEL_REPO}")' in (space / "app.py").read_text()
    assert _front_matter((space / "README.md").read_text())["models"] == [MODEL_REPO]
    assert f"https://huggingface.co/spaces/{SPACE}" in capsys.readouterr().out.splitlines()


def test_repush_of_the_space_removes_stale_vendored_files(api, model_dir):
    api.create_repo(SPACE, repo_type="space", space_sdk="gradio")
    api.upload_file(path_or_fileobj=b"old = 1\n", path_in_repo="vidgpt2/removed_module.py", repo_id=SPACE,
                    repo_type="space")
    api.upload_file(path_or_fileobj=b"# notes\n", path_in_repo="NOTES.md", repo_id=SPACE, repo_type="space")
    push_model = ["push", "--model", str(model_dir), "--repo-id", MODEL_REPO]
    assert cli_main(push_model) == 0
    assert cli_main(["app", "--model", MODEL_REPO, "--push-space", SPACE]) == 0
    files = _space_files(api)
    assert "vidgpt2/removed_module.py" not in files and "NOTES.md" in files and "vidgpt2/app.py" in files


@pytest.mark.parametrize(
    ("repo_id", "space", "named"),
    [
        (MODEL_REPO, "user/bad space", "'user/bad space' is not a Hub Space id"),
        (MODEL_REPO, "a/b/c", "'a/b/c' is not a Hub Space id (it needs a namespace"),
        (MODEL_REPO, "vidgpt2-demo", "'vidgpt2-demo' is not a Hub Space id"),
        ("vidgpt2-tiny", SPACE, "'vidgpt2-tiny' is not a Hub model id (it needs a namespace: USER/NAME)"),
    ],
)
def test_bad_space_or_model_id_uploads_nothing(api, model_dir, capsys, repo_id, space, named):
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", repo_id, "--space", space]) == 1
    err = capsys.readouterr().err
    assert named in err and "write it as e.g." in err
    assert api.commits == [] and api.repos == {}


class FailingSpaceApi(FakeHfApi):
    """The Hub accepts the model and fails on the Space upload (a 503, a quota, a network error)."""

    def upload_folder(self, *, repo_type=None, **kwargs):
        if repo_type == "space":
            raise FakeHubError("503 Service Unavailable")
        return super().upload_folder(repo_type=repo_type, **kwargs)


def test_failed_space_upload_keeps_the_model_and_says_how_to_retry(model_dir, tmp_path, monkeypatch, capsys):
    failing = FailingSpaceApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token: failing)
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", MODEL_REPO, "--space", SPACE]) == 1
    err = capsys.readouterr().err
    assert "the model is pushed (https://huggingface.co/user/vidgpt2-tiny/commit/" in err
    assert "uploading the Space user/vidgpt2-demo failed: 503 Service Unavailable" in err
    retry = f"vidgpt2 app --model {MODEL_REPO} --push-space {SPACE}"
    assert retry in err
    model_files = set(failing.list_repo_files(MODEL_REPO))
    assert {"config.json", "model.safetensors"} <= model_files and len(failing.commits) == 1
    # the retry the message names, once the Hub works again: the Space alone, the model untouched
    working = FakeHfApi(tmp_path / "hub")
    working.repos, working.commits = failing.repos, failing.commits
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token: working)
    assert cli_main(retry.split()[1:]) == 0
    assert [c.repo_type for c in working.commits] == ["model", "space"]
    assert set(working.list_repo_files(MODEL_REPO)) == model_files and "app.py" in _space_files(working)


def test_push_space_refuses_a_model_that_is_not_on_the_hub(api, capsys):
    assert cli_main(["app", "--model", "user/not-pushed", "--push-space", SPACE]) == 1
    assert "user/not-pushed has no config.json" in capsys.readouterr().err
    assert api.commits == [] and api.repos == {}


def test_app_precision_accepts_the_caption_names(monkeypatch):
    import vidgpt2.app

    seen = {}
    monkeypatch.setattr(vidgpt2.app, "launch", lambda model, **kwargs: seen.update(kwargs))
    assert cli_main(["app", "--model", "m", "--dtype", "bf16"]) == 0 and seen["precision"] == "bfloat16"
    assert cli_main(["app", "--model", "m", "--precision", "fp32"]) == 0 and seen["precision"] == "float32"


def test_dry_run_with_space_writes_both_folders_and_uploads_nothing(api, model_dir, tmp_path, capsys):
    out = tmp_path / "dry"
    assert cli_main(["push", "--model", str(model_dir), "--repo-id", MODEL_REPO, "--space", SPACE, "--dry-run", str(out)]) == 0
    assert api.commits == [] and api.repos == {}
    line = next(x for x in capsys.readouterr().out.splitlines() if "the Space folder for" in x)
    space = Path(line.rsplit(" is ", 1)[1])
    assert (out / "config.json").is_file() and (space / "vidgpt2" / "__init__.py").is_file()
    assert f'CaptionEngine("{MODEL_REPO}")' in (space / "app.py").read_text()
