"""`vidgpt2 app`: a Gradio page that captions a video and explains the caption word by word.

    vidgpt2 app --model ID_OR_DIR [--port 7860]          needs the `app` extra: pip install 'vidgpt2[app]'
    vidgpt2 app --model ID --write-space DIR              a HF Space: app.py, requirements.txt, README.md, vidgpt2/
    vidgpt2 app --model ID --push-space USER/SPACE        ... written and uploaded (also: vidgpt2 push --space)

Upload a video (or pick a synthetic example), set the generation options, and get: the caption; per stage, the time
it took; then the explanation (`vidgpt2.explanations.explain`): choose a word of the caption to see its attention over
the frames and the frames ranked by that attention with their heatmaps. A file that cannot be read as a video shows
a readable error in the page (`gr.Error`).

Everything except `build_app` works without Gradio (`CaptionEngine`, the figure helpers), so it is tested directly;
tests/test_app.py also drives the page in headless Chromium.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from packaging.requirements import Requirement
from packaging.version import Version

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv", ".gif")
# PyTorch precision of the caption step. int8 (decoder) was 1.4x faster at batch 1 on the benchmark CPU and kept 98%
# of a trained model's captions (BENCHMARKS.md, "Faster CPU inference"), but the explanation must run in fp32 and
# re-generates the caption: fp32 keeps the shown and the explained caption the same. `--precision int8` trades that.
DEFAULT_PRECISION = "float32"
MEAN_LABEL = "(all words: mean)"


class AppInputError(ValueError):
    """The uploaded file cannot be captioned; the message is shown in the page."""


@dataclass
class CaptionResult:
    """One captioned and explained video: the caption, the explanation and the seconds each stage took."""

    caption: str
    explanation: Any
    timings: dict[str, float] = field(default_factory=dict)


class CaptionEngine:
    """Loads a checkpoint once; captions and explains one video file per call."""

    def __init__(self, model_id: str, precision: str = DEFAULT_PRECISION, device: str | None = None):
        from .inference import prepare_for_inference
        from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
        from .processing_vidgpt2 import VidGPT2Processor

        self.model_id = model_id
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = VidGPT2ForConditionalGeneration.from_pretrained(model_id).to(self.device).eval()
        self.processor = VidGPT2Processor.from_pretrained(model_id)
        self.precision = precision
        self.caption_model = prepare_for_inference(self.model, precision) if self.device.type == "cpu" else self.model

    @property
    def num_frames(self) -> int:
        return int(self.model.config.num_frames)

    def read(self, path: str | Path | None) -> torch.Tensor:
        """Video file -> pixel_values_videos (1, T, 3, H, W). Raises `AppInputError` with a readable message."""
        if path is None or str(path) == "":
            raise AppInputError("No video: upload a video file or pick an example.")
        path = Path(path)
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise AppInputError(
                f"{path.name} is not a supported video file ({path.suffix or 'no extension'}). "
                f"Upload one of: {', '.join(VIDEO_EXTENSIONS)}."
            )
        try:
            return self.processor(videos=[str(path)], return_tensors="pt")["pixel_values_videos"]
        except (OSError, ValueError, RuntimeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            # the upload's temporary path means nothing to the user: name the file only
            reason = reason.replace(f"'{path}'", path.name).replace(str(path), path.name)
            raise AppInputError(f"Could not read {path.name} as a video: {reason}") from error

    def run(self, path: str | Path | None, num_beams: int = 1, max_new_tokens: int = 24) -> CaptionResult:
        """Read, caption (at `precision`), explain (fp32); returns the result with per-stage seconds."""
        from .explanations import explain
        from .inference import inference_precision

        timings: dict[str, float] = {}
        start = time.perf_counter()
        pixels = self.read(path).to(self.device)
        timings["read + preprocess video"] = time.perf_counter() - start
        generate_kwargs = {"num_beams": int(num_beams), "max_new_tokens": int(max_new_tokens)}
        start = time.perf_counter()
        with torch.inference_mode(), inference_precision(self.precision, self.device):
            ids = self.caption_model.generate(pixel_values_videos=pixels, **generate_kwargs)
        caption = self.processor.batch_decode(ids)[0]
        timings[f"caption ({self.precision})"] = time.perf_counter() - start
        start = time.perf_counter()
        explanation = explain(self.model, self.processor, pixel_values_videos=pixels, **generate_kwargs)
        timings["explain (attention + heatmaps)"] = time.perf_counter() - start
        return CaptionResult(caption=caption, explanation=explanation, timings=timings)


# --- views of an explanation (no Gradio needed) -----------------------------------------------------------------------
def word_choices(explanation: Any) -> list[str]:
    """Labels for the word selector: the mean over the caption, then "i: word" per caption token."""
    return [MEAN_LABEL] + [f"{i}: {token.strip() or repr(token)}" for i, token in enumerate(explanation.tokens)]


def word_index(label: str | None) -> int | None:
    """The token index a `word_choices` label stands for; None for the mean."""
    if not label or label == MEAN_LABEL:
        return None
    return int(label.split(":", 1)[0])


def frame_weights(explanation: Any, index: int | None) -> np.ndarray:
    """(T,) attention over frames of token `index` (rows of `token_frame_attention`), or the caption mean."""
    if index is None:
        return np.asarray(explanation.frame_attention)
    if not 0 <= index < len(explanation.tokens):
        raise IndexError(f"word index {index} is outside the caption's {len(explanation.tokens)} words")
    return np.asarray(explanation.token_frame_attention[index])


def attention_figure(explanation: Any, index: int | None) -> Any:
    """Bar chart of the chosen word's attention per frame, with the caption mean as a line (matplotlib Figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = frame_weights(explanation, index)
    figure = Figure(figsize=(7, 2.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    frames = np.arange(len(weights))
    label = "mean over the caption" if index is None else f"“{explanation.tokens[index].strip()}”"
    ax.bar(frames, weights, color="tab:orange" if index is not None else "tab:blue", label=label)
    if index is not None:
        ax.plot(frames, explanation.frame_attention, "k--", marker="o", label="mean over the caption")
    ax.set_xticks(frames)
    ax.set_xlabel("frame")
    ax.set_ylabel("cross-attention")
    ax.set_ylim(0, max(float(np.max(weights)), float(np.max(explanation.frame_attention))) * 1.15 + 1e-6)
    ax.set_title(f"attention over frames: {label}")
    ax.legend(loc="upper right", fontsize=8)
    return figure


def heatmap_overlays(explanation: Any, index: int | None) -> list[tuple[np.ndarray, str]]:
    """Frames with their heatmap blended in (uint8 RGB), ranked by the chosen word's attention, with captions.

    Spatial-token models have a heatmap per word (`token_heatmaps`); pooled ones have one Grad-CAM map per frame
    for the whole caption, so only the ranking and the weights change with the word."""
    from matplotlib import colormaps

    weights = frame_weights(explanation, index)
    if index is not None and explanation.token_heatmaps is not None:
        grid = explanation.token_heatmaps[index]  # (T, h, w)
        maps = torch.nn.functional.interpolate(
            torch.as_tensor(grid, dtype=torch.float32)[:, None], size=explanation.heatmaps.shape[1:], mode="bilinear"
        )[:, 0].numpy()
        maps = maps / max(float(maps.max()), 1e-12)
    else:
        maps = np.asarray(explanation.heatmaps)
    colour = colormaps["jet"](maps)[..., :3]  # (T, H, W, 3) in [0, 1]
    frames = np.asarray(explanation.frames, dtype=np.float32) / 255.0
    blended = (0.55 * frames + 0.45 * colour) * 255.0
    order = np.argsort(-weights, kind="stable")
    return [(blended[t].clip(0, 255).astype(np.uint8), f"frame {t} · attention {weights[t]:.2f}") for t in order]


def timings_markdown(timings: dict[str, float]) -> str:
    rows = "\n".join(f"| {stage} | {seconds * 1000:.0f} ms |" for stage, seconds in timings.items())
    return f"| stage | time |\n|---|---|\n{rows}\n| **total** | **{sum(timings.values()) * 1000:.0f} ms** |"


def write_examples(folder: str | Path, count: int = 3, num_frames: int = 8, seed: int = 0) -> list[Path]:
    """Synthetic example clips (one per caption family) for the page's examples."""
    from .data.synthetic import CAPTION_FAMILIES, generate_clip, write_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for family in CAPTION_FAMILIES[:count]:
        frames, _ = generate_clip(family, rng, num_frames, 64)
        path = folder / f"example_{family}.mp4"
        write_clip(path, frames)
        paths.append(path)
    return paths


# --- the page ----------------------------------------------------------------------------------------------------------
def build_app(engine: CaptionEngine, examples: list[Path] | None = None) -> Any:
    """The Gradio Blocks page around `engine`."""
    import gradio as gr

    def caption(video: str | None, num_beams: float, max_new_tokens: float):
        try:
            result = engine.run(video, num_beams=int(num_beams), max_new_tokens=int(max_new_tokens))
        except AppInputError as error:
            raise gr.Error(str(error), title="Cannot caption this file") from error
        explanation = result.explanation
        note = ""
        if explanation.caption != result.caption:
            note = f"\n\n(The explanation is of the fp32 caption: “{explanation.caption}”.)"
        choices = word_choices(explanation)
        return (
            result.caption,
            timings_markdown(result.timings) + note,
            explanation,
            gr.update(choices=choices, value=choices[min(1, len(choices) - 1)], interactive=True),
            attention_figure(explanation, word_index(choices[min(1, len(choices) - 1)])),
            heatmap_overlays(explanation, word_index(choices[min(1, len(choices) - 1)])),
        )

    def show_word(label: str | None, explanation: Any):
        if explanation is None:
            return None, []
        index = word_index(label)
        return attention_figure(explanation, index), heatmap_overlays(explanation, index)

    with gr.Blocks(title="vidgpt2: video captioning with explanations") as page:
        gr.Markdown(
            f"# vidgpt2 video captioning\nModel: `{engine.model_id}` ({engine.num_frames} frames per video, "
            f"caption precision {engine.precision}). Upload a video or pick an example, then choose a word of the "
            "caption to see which frames it attended to."
        )
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                with gr.Accordion("Generation options", open=True):
                    num_beams = gr.Slider(1, 8, value=1, step=1, label="num_beams (1 = greedy)", elem_id="num-beams")
                    max_new_tokens = gr.Slider(1, 64, value=24, step=1, label="max_new_tokens", elem_id="max-new-tokens")
                run = gr.Button("Caption", variant="primary", elem_id="caption-button")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[video], label="Synthetic examples")
            with gr.Column(scale=2):
                caption_box = gr.Textbox(label="Caption", interactive=False, elem_id="caption-output")
                timing_box = gr.Markdown(elem_id="timings")
                word = gr.Dropdown(choices=[], label="Word", interactive=True, elem_id="word-choice")
                plot = gr.Plot(label="Attention over frames", elem_id="attention-plot")
                gallery = gr.Gallery(label="Frames ranked by attention, with heatmaps", columns=4, elem_id="heatmaps")
        state = gr.State(None)
        run.click(
            caption, inputs=[video, num_beams, max_new_tokens],
            outputs=[caption_box, timing_box, state, word, plot, gallery],
        )
        word.change(show_word, inputs=[word, state], outputs=[plot, gallery])
    return page


# --- Hugging Face Space --------------------------------------------------------------------------------------------------
SPACE_APP = '''"""Hugging Face Space for {model_id}, written by vidgpt2 (`vidgpt2 push --space` / `vidgpt2 app --write-space`).

vidgpt2 is not on PyPI: its source is vendored in ./vidgpt2 (importable because this folder is the working
directory); requirements.txt lists its dependencies, and the Space installs Gradio from `sdk_version` in README.md."""
import tempfile

from vidgpt2.app import CaptionEngine, build_app, write_examples

engine = CaptionEngine({model_literal}{precision_argument})
demo = build_app(engine, write_examples(tempfile.mkdtemp(prefix="vidgpt2-examples-")))

if __name__ == "__main__":
    demo.launch()
'''

SPACE_README = """---
{front_matter}
---

# {title}

Captions a video with [{model_id}](https://huggingface.co/{model_id}) (vidgpt2: ResNet frames -> GPT-2 with
cross-attention) and explains the caption word by word: attention over frames and heatmaps per frame.

The `vidgpt2/` folder is a copy of the vidgpt2 package (version {version}) that wrote this Space: vidgpt2 is installed
from its source, not from PyPI. Rewrite the Space with a newer vidgpt2 by running `vidgpt2 push --space` again, or
`vidgpt2 app --model {model_id} --push-space <this space>`.
"""
VENDORED_PACKAGE = "vidgpt2"
SPACE_SDK = "gradio"


def check_space_model(model_id: str) -> None:
    """The model a Space loads: a Hub model id `namespace/name` (the Space's app.py loads it by its full id), or an
    existing local model folder (a folder with `config.json`: only a Space run from this machine finds it, as the
    offline test of a written Space does).

    Raises:
        ValueError: neither, naming the id and the expected form.
    """
    folder = Path(model_id) if model_id else None
    if folder is not None and folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"{model_id!r} is a folder without config.json, not a saved model: pass the model's Hub id "
                "(you/vidgpt2-msvd, after `vidgpt2 push`)."
            )
        return
    check_space_ids(model_id, "you/vidgpt2-demo")


def write_space(
    model_id: str, folder: str | Path, vidgpt2_requirement: str | None = None, precision: str = DEFAULT_PRECISION
) -> list[Path]:
    """Write a Gradio Space for a pushed model: app.py, requirements.txt, README.md with the Space front matter
    (https://huggingface.co/docs/hub/spaces-config-reference) and, by default, a copy of the vidgpt2 package.

    vidgpt2 is not on PyPI, so a requirements.txt naming `vidgpt2[app]` cannot build. The Space is therefore made
    self-contained: the installed package's source (every file of it, package data included) is copied to
    `DIR/vidgpt2/`, which `import vidgpt2` finds because a Space runs app.py from its folder, and requirements.txt
    lists the package's own dependencies with the version floors of its pyproject.toml (`space_requirements`). Gradio
    is left out of requirements.txt: a Space installs the Gradio of `sdk_version` (here the version this machine
    runs, the one the page was tested with), and a second Gradio requirement can conflict with it. `python_version`
    is this interpreter's (quoted: YAML reads an unquoted 3.10 as 3.1). With `vidgpt2_requirement` (e.g.
    `"vidgpt2[app] @ git+https://github.com/<you>/vidgpt2"`) nothing is copied and requirements.txt holds that line.

    Upload the folder with `upload_space`, or `hf upload --repo-type space USER/SPACE DIR`.

    Returns:
        The files written at the top level (app.py, requirements.txt, README.md, and the vidgpt2 folder).

    `precision` (`"float32"`, `"bfloat16"`, `"int8"`) is the caption step's precision in the Space's app.py, as
    `vidgpt2 app --precision` serves it.

    Raises:
        FileExistsError: the folder already has one of these files.
        ValueError: `model_id` is neither a Hub model id nor a local model folder (`check_space_model`), or an
            unknown `precision`.
        RuntimeError: the package's dependencies cannot be found (see `space_requirements`).
    """
    import gradio

    from . import __version__
    from .inference import PRECISIONS

    check_space_model(model_id)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    folder = Path(folder)
    title = f"vidgpt2: {model_id.rstrip('/').split('/')[-1]}"
    if Path(model_id).exists():
        logger.warning(
            "%s is a local folder: the Space will look for it inside the Space; pass the model's Hub id instead.",
            model_id,
        )
    requirements = [vidgpt2_requirement] if vidgpt2_requirement else space_requirements()
    files = {
        "app.py": SPACE_APP.format(
            model_id=model_id,
            model_literal=json.dumps(model_id),
            precision_argument="" if precision == DEFAULT_PRECISION else f", precision={json.dumps(precision)}",
        ),
        "requirements.txt": "".join(f"{line}\n" for line in requirements),
        "README.md": SPACE_README.format(
            front_matter=space_front_matter(model_id, title, _semver(gradio.__version__)),
            model_id=model_id,
            title=title,
            version=__version__,
        ),
    }
    names = [*files, *([] if vidgpt2_requirement else [VENDORED_PACKAGE])]
    existing = [name for name in names if (folder / name).exists()]
    if existing:
        raise FileExistsError(f"{folder} already has {', '.join(existing)}; choose an empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    if not vidgpt2_requirement:
        shutil.copytree(PACKAGE_DIR, folder / VENDORED_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return [folder / name for name in names]


def space_front_matter(model_id: str, title: str, gradio_version: str) -> str:
    """The Space's README front matter (YAML, without the `---` lines), written by huggingface_hub's `SpaceCardData`
    so that values YAML would misread are quoted ("vidgpt2: x" as a title, "3.10" as `python_version`)."""
    import sys

    from huggingface_hub import SpaceCardData

    return SpaceCardData(
        title=title,
        emoji="🎬",
        colorFrom="blue",
        colorTo="indigo",
        sdk=SPACE_SDK,
        sdk_version=gradio_version,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        pinned=False,
        models=[model_id],
    ).to_yaml()


def space_requirements() -> list[str]:
    """The Space's requirements.txt lines: vidgpt2's dependencies plus its `app` extra, without Gradio (installed
    from the README's `sdk_version`).

    Read from the pyproject.toml beside the package source when vidgpt2 runs from a checkout (an editable install's
    metadata is as old as the install), else from the installed distribution's metadata.

    Raises:
        RuntimeError: neither is found (vidgpt2 imported from a bare copy of its source, e.g. inside a Space).
    """
    declared = _pyproject_requirements()
    if declared is None:
        declared = _metadata_requirements()
    return [line for line in declared if Requirement(line).name.lower() != "gradio"]


def _pyproject_requirements() -> list[str] | None:
    pyproject = PACKAGE_DIR.parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata serves
        return None
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if project.get("name") != "vidgpt2":
        return None
    return [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("app", [])]


def _metadata_requirements() -> list[str]:
    from importlib import metadata

    try:
        lines = metadata.requires("vidgpt2") or []
    except metadata.PackageNotFoundError as error:
        raise RuntimeError(
            "Cannot tell vidgpt2's dependencies for the Space's requirements.txt: vidgpt2 is neither installed "
            "(pip install -e .) nor run from its source checkout with pyproject.toml."
        ) from error
    kept = []
    for line in lines:
        requirement = Requirement(line)
        marker = str(requirement.marker) if requirement.marker else ""
        if "extra" not in marker:
            kept.append(line)
        elif requirement.marker.evaluate({"extra": "app"}):
            requirement.marker = None
            kept.append(str(requirement))
    return kept


def _semver(version: str) -> str:
    """`major.minor.patch` of a version: a Space's `sdk_version` must have all three ("3.27" is refused)."""
    release = list(Version(version).release[:3])
    return ".".join(str(part) for part in release + [0] * (3 - len(release)))


def check_space_ids(model_id: str, space_id: str) -> None:
    """Both must be Hub ids of the form `namespace/name`: the Space's app.py loads the model by its full id.

    Raises:
        ValueError: naming the bad id and the expected form.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    for what, repo_id, example in (("Space", space_id, "you/vidgpt2-demo"), ("model", model_id, "you/vidgpt2-msvd")):
        reason = "" if repo_id.count("/") == 1 else "it needs a namespace: USER/NAME"
        if not reason:
            try:
                validate_repo_id(repo_id)
            except HFValidationError as error:
                reason = str(error).split(":")[0]
        if reason:
            raise ValueError(f"{repo_id!r} is not a Hub {what} id ({reason}); write it as e.g. {example}.")


def upload_space(folder: str | Path, space_id: str, *, api: Any = None, token: str | None = None,
                 private: bool = False, commit_message: str = "Upload vidgpt2 Space") -> str:
    """Create the Space (Gradio SDK) if missing and upload `folder` in one commit; files under `vidgpt2/` that the
    new copy no longer has are deleted. Returns the Space's URL (https://huggingface.co/spaces/USER/SPACE).

    `HfApi.create_repo(repo_type="space")` needs `space_sdk` (huggingface_hub raises without it, even for a Space
    that exists; huggingface_hub#1669)."""
    from .hub import _default_api

    api = api if api is not None else _default_api(token)
    url = api.create_repo(space_id, repo_type="space", space_sdk=SPACE_SDK, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=space_id,
        folder_path=str(folder),
        repo_type="space",
        commit_message=commit_message,
        delete_patterns=[f"{VENDORED_PACKAGE}/**"],
    )
    logger.info("Space uploaded: %s", url)
    return str(url)


def push_space(model_id: str, space_id: str, *, api: Any = None, token: str | None = None,
               private: bool = False, precision: str = DEFAULT_PRECISION) -> str:
    """Write the Space for the Hub model `model_id` (`write_space`) and upload it to `space_id` (`upload_space`).

    Raises:
        ValueError: an id not of the form `namespace/name`, or no `config.json` in the model repository (push the
            model first); nothing is uploaded then.
    """
    from .hub import _default_api

    check_space_ids(model_id, space_id)
    api = api if api is not None else _default_api(token)
    if not api.file_exists(model_id, "config.json", repo_type="model"):
        raise ValueError(
            f"The Hub model {model_id} has no config.json (missing, private without a token, or a typo): push it "
            "first with `vidgpt2 push`, or check the id."
        )
    with tempfile.TemporaryDirectory(prefix="vidgpt2-space-") as tmp:
        write_space(model_id, tmp, precision=precision)
        return upload_space(tmp, space_id, api=api, private=private)


def launch(model_id: str, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           precision: str = DEFAULT_PRECISION) -> None:
    """Load the model, write the examples and serve the page until interrupted."""
    engine = CaptionEngine(model_id, precision=precision)
    examples = write_examples(tempfile.mkdtemp(prefix="vidgpt2-examples-"))
    build_app(engine, examples).launch(server_name=host, server_port=port, share=share)


__all__ = [
    "AppInputError",
    "CaptionEngine",
    "CaptionResult",
    "attention_figure",
    "build_app",
    "check_space_ids",
    "heatmap_overlays",
    "launch",
    "push_space",
    "space_requirements",
    "upload_space",
    "word_choices",
    "write_examples",
    "write_space",
]
