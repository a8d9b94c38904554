"""Publish a VidGPT2 captioner to the Hugging Face Hub: save to a temp dir, render the card, upload one commit.

    from vidgpt2.hub import push_to_hub
    url = push_to_hub(model, "user/vidgpt2-msvd", processor=processor, metrics=test_metrics, datasets=["msvd"])
    url = push_to_hub("outputs/run1", "user/vidgpt2-msvd")   # a save_pretrained / training output folder

The repository gets safetensors weights, `config.json` with `auto_map`, `generation_config.json`, the processor
files and the remote-code modules (`configuration_`, `modeling_`, `processing_`, `video_processing_vidgpt2.py`,
`video_io.py`, and `pipeline_vidgpt2.py` with its same-folder imports such as `clip_loader.py` when the package has it), so `trust_remote_code=True` loads the model
where vidgpt2 is not installed. An existing README.md on the Hub is kept unless `overwrite_model_card=True`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jinja2
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.dynamic_module_utils import get_relative_import_files

from .configuration_vidgpt2 import VidGPT2Config
from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
from .processing_vidgpt2 import VidGPT2Processor

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
TEMPLATE_PATH = PACKAGE_DIR / "templates" / "model_card.md"
PIPELINE_MODULE = "pipeline_vidgpt2"
PIPELINE_TAG = "video-text-to-text"
PAPER_URL = "https://arxiv.org/abs/2504.16788"
TAGS = ["vidgpt2", "video-captioning", "gpt2", "resnet", "custom_code"]

# metric key (as vidgpt2.metrics returns it) -> display name; values are pycocoevalcap's 0-1 scale (CIDEr ~0-10)
METRIC_NAMES = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
}
# "<split>_<subset>_<metric>": eval_bleu_4, test_cider, eval_action_meteor (BDD-X action / justification scores)
_METRIC_KEY = re.compile(
    r"^(?:(?P<split>eval|validation|val|test|predict)_)?(?:(?P<subset>[a-z0-9_]+?)_)?(?P<metric>"
    + "|".join(METRIC_NAMES)
    + r")$"
)
_SPLITS = {"eval": "validation", "validation": "validation", "val": "validation", "test": "test", "predict": "test"}
# Trainer output files that hold final metrics (merged in this order) and the training arguments as JSON
RESULT_FILES = ("all_results.json", "eval_results.json", "test_results.json", "metrics.json")
TRAINING_ARGS_FILE = "training_args.json"
HYPERPARAMETERS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "optim",
    "seed",
    "bf16",
    "fp16",
    "generation_num_beams",
    "generation_max_length",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class PushToHubError(RuntimeError):
    """A local step of `push_to_hub` failed (nothing was uploaded); the message names the step."""


@contextmanager
def _step(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        raise PushToHubError(f"push_to_hub: {name} failed, nothing was uploaded: {error}") from error


def check_repo_id(repo_id: str) -> None:
    """`repo_id` must be a Hub repository id, `namespace/name` or a bare `name` (the token owner's namespace), as
    `huggingface_hub.utils.validate_repo_id` (what `HfApi.create_repo` checks) accepts.

    Raises:
        ValueError: naming the bad id, why, and the expected form.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1:
            raise HFValidationError("it must be NAME or NAMESPACE/NAME")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = str(error).split(":")[0].strip().rstrip(".")
        raise ValueError(
            f"{repo_id!r} is not a Hub repository id ({reason}); write it as e.g. you/vidgpt2-msvd (letters, digits, "
            "'-', '_', '.')."
        ) from error


def push_to_hub(
    model_or_dir: VidGPT2ForConditionalGeneration | str | Path,
    repo_id: str,
    *,
    processor: VidGPT2Processor | None = None,
    api: Any = None,
    metrics: Mapping[str, float] | None = None,
    private: bool = False,
    commit_message: str | None = None,
    overwrite_model_card: bool = False,
    training_args: Any = None,
    datasets: str | list[str] | None = None,
    base_model: str | list[str] | None = None,
    license: str = "apache-2.0",
    token: str | None = None,
    extra_files: list[str | Path] | Mapping[str, str | Path] | None = None,
    dry_run: str | Path | None = None,
) -> str:
    """Save a VidGPT2 model and processor with their remote code, write a model card and upload them in one commit.

    Args:
        model_or_dir: a `VidGPT2ForConditionalGeneration`, or a folder written by `save_pretrained` / training that
            holds the model and processor files (plus, optionally, `all_results.json` / `eval_results.json` /
            `test_results.json` / `metrics.json`, `trainer_state.json` and the `training_args.json` that
            `vidgpt2 train` writes; the Trainer's pickled `training_args.bin` is not read).
        repo_id: `"namespace/name"` of the model repository, created if missing (a bare name goes to the token
            owner's namespace, as with `HfApi.create_repo`).
        processor: the `VidGPT2Processor`; required with a model object, optional (overrides) with a folder.
        api: an `HfApi`-compatible object; defaults to `huggingface_hub.HfApi(token=token)`.
        metrics: caption metrics (`bleu_1`..`bleu_4`, `meteor`, `rouge_l`, `cider`, optionally prefixed `eval_` /
            `test_`), pycocoevalcap scale. With a folder they default to the folder's result files.
        private: create the repository private.
        commit_message: defaults to "Upload VidGPT2 model".
        overwrite_model_card: replace a README.md that already exists on the Hub.
        training_args: `TrainingArguments`, a dataclass or a dict; shown as hyperparameters in the card.
        datasets: Hub dataset ids (or names) the model was trained / evaluated on; the first one names the
            evaluation dataset in `model-index`.
        base_model: Hub ids of the pretrained parts; defaults to the backbones recorded in the config.
        license: SPDX-style license id for the card metadata.
        token: Hub token for the default `HfApi`.
        extra_files: more files to upload: a list of paths (kept under their names) or `{path_in_repo: path}`.
        dry_run: upload nothing and contact no server: write the exact folder that would be uploaded (weights,
            processor, code, model card for `repo_id`) to this folder, which must be new or empty. The Hub is not
            asked whether the repository already has a README.md (a real push keeps it unless
            `overwrite_model_card`), nor which namespace a bare `repo_id` belongs to.

    Returns:
        The commit URL (or the repository URL when the API returns no commit information); with `dry_run`, the
        folder written.

    Raises:
        ValueError: `repo_id` is not a Hub repository id (`check_repo_id`), also with `dry_run`.
        PushToHubError: saving, copying or rendering failed; nothing was uploaded.
        FileExistsError: `dry_run` names a file or a folder that is not empty.
    """
    check_repo_id(repo_id)  # before any work, with or without dry_run: a dry run fails where the push would
    if isinstance(model_or_dir, (str, Path)):
        folder = Path(model_or_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"push_to_hub: {folder} is not a folder; pass a saved model folder or a model.")
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            raise ValueError(
                f"{folder} holds a LoRA adapter, not a full model: push the merged model (training with "
                "merge_lora, or `model.merge_and_unload().save_pretrained(...)`) instead."
            )
        with _step(f"loading the model from {folder}"):
            model = VidGPT2ForConditionalGeneration.from_pretrained(folder)
        if processor is None:
            with _step(f"loading the processor from {folder} (pass `processor=` if the folder has none)"):
                processor = VidGPT2Processor.from_pretrained(folder)
        if metrics is None:
            metrics = read_metrics(folder)
        if training_args is None:
            training_args = read_training_args(folder)
        result_files = [folder / name for name in RESULT_FILES if (folder / name).is_file()]
    else:
        model, result_files = model_or_dir, []
    _check_model(model)
    if processor is None:
        raise ValueError(
            "push_to_hub needs the processor that goes with the model: pass `processor=VidGPT2Processor(...)`, so "
            "that AutoProcessor and the pipeline work from the repository."
        )

    with _output_folder(dry_run) as out:
        with _step("saving the model"):
            model.save_pretrained(out)
        with _step("saving the processor"):
            processor.save_pretrained(out)
        with _step("copying the pipeline code"):
            _copy_pipeline_code(out)
        with _step("copying extra files"):
            for source in result_files:
                shutil.copyfile(source, out / source.name)
            _copy_extra_files(out, extra_files)
        with _step("checking the saved folder"):
            code_files = _check_saved_folder(out)
        card_kwargs = dict(
            metrics=metrics,
            training_args=training_args,
            datasets=datasets,
            base_model=base_model,
            license=license,
            num_parameters=model.num_parameters(),
            vision_parameters=sum(p.numel() for p in model.encoder.vision_tower.parameters()),
            code_files=code_files,
        )
        with _step("rendering the model card"):
            _write_card(out, model.config, repo_id, card_kwargs)
        if dry_run is not None:
            logger.info("Dry run for %s: wrote %s (remote code %s); nothing uploaded", repo_id, out, ", ".join(code_files))
            return str(out)
        logger.info("Pushing %s with remote code %s", repo_id, ", ".join(code_files))

        api = api if api is not None else _default_api(token)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if getattr(repo_url, "repo_id", repo_id) not in (None, repo_id):
            repo_id = repo_url.repo_id  # "name" -> "user/name": the card's snippets need the full id
            _write_card(out, model.config, repo_id, card_kwargs)
        if not overwrite_model_card and api.file_exists(repo_id, "README.md", repo_type="model"):
            logger.info(
                "%s already has a README.md: keeping it (pass overwrite_model_card=True to replace it)", repo_id
            )
            (out / "README.md").unlink()
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=out,
            repo_type="model",
            commit_message=commit_message or "Upload VidGPT2 model",
        )
    return str(getattr(commit, "commit_url", None) or repo_url)


@contextmanager
def _output_folder(dry_run: str | Path | None) -> Iterator[Path]:
    """The folder `push_to_hub` assembles the upload in: a temporary one, or for a dry run the caller's (kept)."""
    if dry_run is None:
        with tempfile.TemporaryDirectory(prefix="vidgpt2-push-") as tmp:
            yield Path(tmp)
        return
    folder = Path(dry_run)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"push_to_hub dry run: {folder} exists and is not an empty folder; name a new one.")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder


def render_model_card(
    config: VidGPT2Config,
    *,
    metrics: Mapping[str, float] | None = None,
    training_args: Any = None,
    datasets: str | list[str] | None = None,
    base_model: str | list[str] | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    num_parameters: int | None = None,
    vision_parameters: int | None = None,
    code_files: list[str] | None = None,
) -> str:
    """The README.md for a VidGPT2 checkpoint: YAML metadata (with `model-index` when metrics are given) + body.

    Parameter counts default to those of a model built from `config` on the meta device (no memory used).
    """
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    if base_model is None:
        base_model = _backbone_ids(config)
    base_model = [base_model] if isinstance(base_model, str) else list(base_model or [])
    if num_parameters is None or vision_parameters is None:
        with torch.device("meta"):
            meta_model = VidGPT2ForConditionalGeneration(config)
        num_parameters = meta_model.num_parameters()
        vision_parameters = sum(p.numel() for p in meta_model.encoder.vision_tower.parameters())
    model_name = repo_id.split("/")[-1] if repo_id else "vidgpt2"
    results = metric_rows(metrics or {})
    eval_dataset = datasets[0] if datasets else "custom"

    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=list(TAGS),
        license=license,
        base_model=base_model or None,
        datasets=datasets or None,
        eval_results=[
            EvalResult(
                task_type=PIPELINE_TAG,
                task_name="Video captioning",
                dataset_type=eval_dataset,
                dataset_name=eval_dataset,
                dataset_split=row["split"],
                metric_type=row["metric"],
                metric_name=row["name"],
                metric_config=row["subset"],
                metric_value=row["value"],
            )
            for row in results
        ]
        or None,
    )
    vision, text = config.vision_config, config.text_config
    # ModelCardData writes the YAML; jinja2 (a torch dependency) renders the body with block-tag whitespace trimmed
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return environment.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id or "<namespace>/<model-name>",
        config=config,
        vision=vision,
        text=text,
        num_visual_tokens=config.num_frames * config.tokens_per_frame,
        num_parameters=_human(num_parameters),
        vision_parameters=_human(vision_parameters),
        base_model=base_model,
        datasets=datasets,
        eval_dataset=eval_dataset,
        results=results,
        hyperparameters=_hyperparameters(training_args),
        code_files=code_files or [],
        paper_url=PAPER_URL,
    )


def read_metrics(folder: str | Path) -> dict[str, float]:
    """Caption metrics from a training output folder: the result JSON files, else the best (or last) evaluation
    logged in `trainer_state.json`. Returns only the caption-metric keys (possibly prefixed `eval_` / `test_`)."""
    folder = Path(folder)
    found: dict[str, Any] = {}
    for name in RESULT_FILES:
        if (folder / name).is_file():
            found.update(json.loads((folder / name).read_text()))
    metrics = {k: v for k, v in found.items() if _METRIC_KEY.match(k) and isinstance(v, (int, float))}
    state_file = folder / "trainer_state.json"
    if not metrics and state_file.is_file():
        state = json.loads(state_file.read_text())
        evals = [e for e in state.get("log_history", []) if any(_METRIC_KEY.match(k) for k in e)]
        best = re.search(r"checkpoint-(\d+)$", state.get("best_model_checkpoint") or "")
        chosen = [e for e in evals if best and e.get("step") == int(best.group(1))] or evals[-1:]
        if chosen:
            logger.info("Metrics for the card come from trainer_state.json, step %s", chosen[0].get("step"))
            metrics = {k: v for k, v in chosen[0].items() if _METRIC_KEY.match(k) and isinstance(v, (int, float))}
    return metrics


def read_training_args(folder: str | Path) -> dict[str, Any] | None:
    """The training arguments `vidgpt2 train` writes as `training_args.json` (every `Seq2SeqTrainingArguments`
    field, plus the LoRA settings), or None. The Trainer's own `training_args.bin` is a pickle, which can run code
    when loaded, so it is never read: a folder that has only that gets a card without hyperparameters (logged)."""
    folder = Path(folder)
    if (folder / TRAINING_ARGS_FILE).is_file():
        return json.loads((folder / TRAINING_ARGS_FILE).read_text())
    if (folder / "training_args.bin").is_file():
        logger.info(
            "%s has training_args.bin but no %s: the pickle is not loaded (unsafe), so the model card lists no "
            "hyperparameters; pass `training_args=` to show them.",
            folder,
            TRAINING_ARGS_FILE,
        )
    return None


def metric_rows(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Caption metrics -> rows `{split, subset, metric, name, value}` in a fixed order; other keys are ignored."""
    rows = []
    for key, value in metrics.items():
        match = _METRIC_KEY.match(key)
        if match is None or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, subset = match["metric"], match["subset"]
        if metric != "cider" and value > 1.0:
            logger.warning("Metric %s=%s is above 1: the card states the 0-1 (pycocoevalcap) scale", key, value)
        rows.append(
            {
                "split": _SPLITS.get(match["split"]) if match["split"] else None,
                "subset": subset,
                "metric": metric,
                "name": METRIC_NAMES[metric] + (f" ({subset})" if subset else ""),
                "value": round(float(value), 4),
            }
        )
    order = list(METRIC_NAMES)
    return sorted(rows, key=lambda r: (r["split"] or "", r["subset"] or "", order.index(r["metric"])))


# --- helpers ---------------------------------------------------------------------------------------------------------
def _default_api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _write_card(folder: Path, config: VidGPT2Config, repo_id: str, card_kwargs: dict[str, Any]) -> None:
    card = render_model_card(config, repo_id=repo_id, **card_kwargs)
    ModelCard(card)  # the YAML metadata must parse before anything goes out
    (folder / "README.md").write_text(card, encoding="utf-8")


def _check_model(model: Any) -> None:
    if hasattr(model, "peft_config"):
        raise TypeError(
            "push_to_hub got a PEFT-wrapped model; call `model = model.merge_and_unload()` first so the repository "
            "holds plain VidGPT2 weights that load without peft."
        )
    if getattr(getattr(model, "config", None), "model_type", None) != VidGPT2Config.model_type:
        raise TypeError(
            f"push_to_hub expects a VidGPT2ForConditionalGeneration or a folder saved from one; got {type(model).__name__}."
        )


def _copy_pipeline_code(folder: Path) -> list[str]:
    """Copy `pipeline_vidgpt2.py` (and its same-folder imports) when the package has it, and record the pipeline
    task in config.json (`custom_pipelines`) so `pipeline(model=repo, trust_remote_code=True)` finds it."""
    source = PACKAGE_DIR / f"{PIPELINE_MODULE}.py"
    if not source.is_file():
        return []
    copied = []
    for path in [source, *get_relative_import_files(source)]:
        shutil.copyfile(path, folder / Path(path).name)
        copied.append(Path(path).name)

    from transformers.pipelines import PIPELINE_REGISTRY

    module = importlib.import_module(f"{__package__}.{PIPELINE_MODULE}")  # importing it registers the task
    tasks = {
        task: {
            "impl": f"{PIPELINE_MODULE}.{info['impl'].__name__}",
            # `pt` names are looked up on `transformers`; the Auto class resolves the remote model through auto_map
            "pt": ["AutoModelForSeq2SeqLM"],
            **({"type": info["type"]} if "type" in info else {}),
        }
        for task, info in PIPELINE_REGISTRY.supported_tasks.items()
        if getattr(info["impl"], "__module__", None) == module.__name__
    }
    if tasks:
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config["custom_pipelines"] = tasks
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return copied


def _copy_extra_files(folder: Path, extra_files: list[str | Path] | Mapping[str, str | Path] | None) -> None:
    if not extra_files:
        return
    pairs = extra_files.items() if isinstance(extra_files, Mapping) else ((Path(p).name, p) for p in extra_files)
    for path_in_repo, source in pairs:
        target = folder / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _check_saved_folder(folder: Path) -> list[str]:
    """Check the pieces remote-code loading needs; return the .py files that travel."""
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map") or {}
    if "AutoModel" not in auto_map or "AutoConfig" not in auto_map:
        raise ValueError(f"config.json has no auto_map for AutoConfig/AutoModel (got {auto_map}); import vidgpt2 first")
    processor_map = json.loads((folder / "processor_config.json").read_text()).get("auto_map") or {}
    if "AutoProcessor" not in processor_map:
        raise ValueError("processor_config.json has no auto_map for AutoProcessor")
    code_files = sorted(p.name for p in folder.glob("*.py"))
    referenced = {f"{ref.split('.')[0]}.py" for ref in [*auto_map.values(), *processor_map.values()]}
    missing = sorted(referenced - set(code_files))
    if missing:
        raise FileNotFoundError(f"remote-code modules named in auto_map were not written: {missing}")
    return code_files


def _backbone_ids(config: VidGPT2Config) -> list[str]:
    """Hub ids the vision tower and decoder were loaded from (`from_backbones` records them in the sub-configs)."""
    ids = []
    for sub in (config.vision_config, config.text_config):
        name = str(getattr(sub, "_name_or_path", "") or "")
        if name and _HUB_ID.match(name) and not Path(name).exists():
            ids.append(name)
    return ids


def _hyperparameters(training_args: Any) -> dict[str, Any]:
    """The training settings worth showing (known keys plus anything about LoRA or freezing)."""
    if training_args is None:
        return {}
    if hasattr(training_args, "to_dict"):
        args = training_args.to_dict()
    elif dataclasses.is_dataclass(training_args):
        args = dataclasses.asdict(training_args)
    else:
        args = dict(training_args)
    keys = [k for k in HYPERPARAMETERS if k in args]
    keys += sorted(k for k in args if ("lora" in k or "freeze" in k) and k not in keys)
    shown = {}
    for key in keys:
        value = args[key]
        if value is None or value in ("", [], {}) or (key == "max_steps" and isinstance(value, int) and value <= 0):
            continue
        shown[key] = value
    return shown


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit} ({count:,})"
    return f"{count:,}"


__all__ = ["PushToHubError", "check_repo_id", "metric_rows", "push_to_hub", "read_metrics", "read_training_args", "render_model_card"]
