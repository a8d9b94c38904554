"""`vidgpt2 train` and `vidgpt2 evaluate`: argument dataclasses and a linear parse -> model -> data -> train -> save.

Every `Seq2SeqTrainingArguments` flag passes through (`--learning_rate`, `--bf16`, `--gradient_accumulation_steps`,
`--gradient_checkpointing`, `--push_to_hub`, ...). Works the same under `accelerate launch` and `torchrun`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    SchedulerType,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)

from .configuration_vidgpt2 import VidGPT2Config
from .data import load_captions_files, load_video_caption_dataset
from .data.bddx import split_action_justification
from .data.collator import SKIPPED_SAMPLES_KEY, VideoCaptionCollator, worker_start_method
from .data.feature_cache import FeatureCache, iter_samples
from .data.frame_cache import FrameCache, extract_frames
from .hub import TRAINING_ARGS_FILE
from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
from .processing_vidgpt2 import VidGPT2Processor
from .tokenization import build_word_level_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_LORA_TARGETS = r".*decoder\.transformer\.h\.\d+\.(attn|crossattention)\.(c_attn|q_attn)$"
VISUAL_MODULES = [
    "encoder.projection",
    "encoder.projection_norm",
    "encoder.temporal_embedding",
    "encoder.spatial_embedding",
    "encoder.layers",
    "encoder.layer_norm",
]


@dataclass
class ModelArguments:
    model: str | None = field(default=None, metadata={"help": "A vidgpt2 checkpoint to fine-tune (Hub id or folder)."})
    vision_model: str | None = field(
        default=None, metadata={"help": "Pretrained ResNet for the vision tower, e.g. microsoft/resnet-50."}
    )
    text_model: str | None = field(default=None, metadata={"help": "Pretrained GPT-2 for the decoder, e.g. gpt2."})
    config: str | None = field(
        default=None,
        metadata={"help": "A VidGPT2Config JSON file (in Python also a dict or config): train it from scratch."},
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (id or folder) for --config."})
    build_tokenizer: bool = field(
        default=False,
        metadata={"help": "With --config: build a word-level tokenizer from the training captions and save it."},
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames sampled per video (default: model's)."})
    image_size: int | None = field(default=None, metadata={"help": "Frame side in pixels (default: model's)."})
    visual_tokens: str | None = field(default=None, metadata={"help": "'pooled', 'spatial', 'grid' or 'motion' (new models only)."})
    freeze_vision: bool | None = field(
        default=None,
        metadata={
            "help": "Freeze the vision tower. Default: frozen for pretrained weights (--vision-model), trained for "
            "random ones (--config, unless its JSON sets freeze_vision), as saved for --model; frozen under --lora."
        },
    )


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "Captions file (JSONL/CSV) for training."})
    validation_file: str | None = field(default=None, metadata={"help": "Captions file for evaluation in training."})
    test_file: str | None = field(default=None, metadata={"help": "Captions file for the final test evaluation."})
    dataset: str | None = field(
        default=None, metadata={"help": "A named dataset read from --data-dir: msvd | msrvtt | bddx | videofolder."}
    )
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the named dataset's files."})
    bddx_target: str | None = field(
        default=None,
        metadata={"help": "BDD-X target (with --dataset bddx only): action | justification | action_justification "
                  "(the default)."},
    )
    msrvtt_split: str | None = field(
        default=None,
        metadata={"help": "MSR-VTT split (with --dataset msrvtt only): official (6,513/497/2,990) | 9k (9k train / 1k-A "
                  "test); default: by files."},
    )
    feature_cache: str | None = field(
        default=None, metadata={"help": "Read video features from this `vidgpt2 extract-features` folder."}
    )
    frame_cache: str | None = field(
        default=None,
        metadata={
            "help": "Decode every clip once into this folder (uint8 frames at the processor's size, memory-mapped; "
            "built or completed on first use, like `vidgpt2 extract-frames`) and train from it: for a vision tower "
            "that trains, where --feature-cache cannot help. A processor with other settings refuses the folder."
        },
    )
    blank_video: bool = field(
        default=False,
        metadata={"help": "Replace every video by blank frames: the text-only baseline (ablation)."},
    )
    max_caption_length: int | None = field(
        default=None, metadata={"help": "Caption tokens kept, eos included (default: the processor's, 64)."}
    )
    use_java: bool | None = field(
        default=None,
        metadata={"help": "Java for PTB tokenisation and METEOR in evaluation (default: when `java` is installed)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation sets."})
    check_data: bool = field(
        default=True,
        metadata={
            "help": "Before any step, open every video and check every segment (with --feature-cache: check that "
            "every clip is cached) and act on bad rows per --on-bad-video. --no-check-data skips it (faster start)."
        },
    )
    on_bad_video: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "error: stop before training, listing every bad row (file, line, reason). skip: drop the bad "
            "rows with a counted warning, and skip a sample that fails to load later (zero frames, no loss)."
        },
    )
    check_data_workers: int | None = field(
        default=None, metadata={"help": "Threads opening videos in the data check (default: CPU count, at most 16)."}
    )


@dataclass
class LoraArguments:
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of the full decoder."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default=DEFAULT_LORA_TARGETS,
        metadata={"help": "Regex of modules that get adapters (default: GPT-2 self- and cross-attention)."},
    )
    merge_lora: bool = field(default=False, metadata={"help": "Also save the merged model in OUTPUT_DIR/merged."})


# --- data ------------------------------------------------------------------------------------------------------------
DEFAULT_BDDX_TARGET = "action_justification"


def _dataset_key(dataset: str | None) -> str | None:
    return dataset.lower().replace("-", "").replace("_", "") if dataset is not None else None


def check_dataset_choices(dataset: str | None, bddx_target: str | None, msrvtt_split: str | None) -> None:
    """`--bddx-target` chooses within BDD-X and `--msrvtt-split` within MSR-VTT: given with other data they would be
    silently ignored, so they are refused.

    Raises:
        ValueError: naming the flag, when it applies, and what was given instead.
    """
    given = f"--dataset {dataset}" if dataset is not None else "captions files (--train-file/--data-file)"
    for flag, value, applies in (("--bddx-target", bddx_target, "bddx"), ("--msrvtt-split", msrvtt_split, "msrvtt")):
        if value is not None and _dataset_key(dataset) != applies:
            raise ValueError(
                f"{flag} {value} applies only with --dataset {applies}, but the data is {given}: drop {flag}."
            )


def load_data(args: DataArguments) -> DatasetDict:
    """The splits `args` name: a named dataset (`--dataset`, `--data-dir`, with `--bddx-target`/`--msrvtt-split`)
    or captions files; truncated per `max_train_samples`/`max_eval_samples`.

    Raises:
        ValueError: no data, `--dataset` without `--data-dir`, or a dataset choice flag given with other data
            (`check_dataset_choices`); the loaders' errors (a file with no usable rows, ...).
    """
    check_dataset_choices(args.dataset, args.bddx_target, args.msrvtt_split)
    if args.dataset is not None:
        if args.data_dir is None:
            raise ValueError("--dataset needs --data-dir (the folder holding the dataset's files).")
        key = _dataset_key(args.dataset)
        kwargs: dict[str, Any] = {"target": args.bddx_target or DEFAULT_BDDX_TARGET} if key == "bddx" else {}
        if key == "msrvtt":
            kwargs["split_scheme"] = args.msrvtt_split
        data = load_video_caption_dataset(args.dataset, args.data_dir, **kwargs)
    elif args.train_file or args.validation_file or args.test_file:
        data = load_captions_files(
            train_file=args.train_file, validation_file=args.validation_file, test_file=args.test_file
        )
    else:
        raise ValueError("No data: pass --train-file/--validation-file/--test-file or --dataset with --data-dir.")
    if args.max_train_samples is not None and "train" in data:
        data["train"] = data["train"].select(range(min(args.max_train_samples, len(data["train"]))))
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in data:
                data[split] = data[split].select(range(min(args.max_eval_samples, len(data[split]))))
    return data


def check_data(
    data: DatasetDict, args: DataArguments, feature_cache: FeatureCache | None = None, show_progress: bool = True
) -> DatasetDict:
    """The data check before a run (`vidgpt2.data.check.enforce_data_check`): every video opens and every segment
    fits, or with a feature cache every clip is cached; bad rows fail the run or are dropped per `on_bad_video`.
    Skipped with `check_data=False` or `blank_video` (no video is read)."""
    from .data.check import enforce_data_check

    if not args.check_data or args.blank_video:
        return data
    return enforce_data_check(
        data,
        on_bad_video=args.on_bad_video,
        feature_cache=feature_cache,
        num_workers=args.check_data_workers,
        show_progress=show_progress,
    )


def check_frame_cache_options(args: DataArguments) -> None:
    """Raise ValueError for options that cannot go with --frame-cache (before any data is read)."""
    if args.frame_cache is None:
        return
    if args.feature_cache is not None:
        raise ValueError("--frame-cache (decoded frames, tower trains) and --feature-cache (tower frozen) exclude each other.")
    if args.blank_video:
        raise ValueError("--frame-cache with --blank-video: blank frames read no video; drop --frame-cache.")


def prepare_frame_cache(
    data: DatasetDict, args: DataArguments, processor: VidGPT2Processor, show_progress: bool = True
) -> FrameCache | None:
    """With `args.frame_cache`: decode the clips of every split that are not cached yet (resumable) and return the
    cache; None without it. Run it under `training_args.main_process_first()` when several processes train.

    Raises:
        ValueError: combined with `feature_cache` or `blank_video`, or the folder holds frames of other settings.
    """
    if args.frame_cache is None:
        return None
    check_frame_cache_options(args)
    samples = [sample for split in data.values() for sample in iter_samples(split)]
    return extract_frames(
        processor.video_processor, samples, args.frame_cache, on_bad_video=args.on_bad_video, show_progress=show_progress
    )


# DataLoader worker processes for decoding video files in `vidgpt2 train` when --dataloader_num_workers is not given,
# measured with benchmarks/bench_pixel_path.py (BENCHMARKS.md, "pixel path"); caches and blank frames need none.
def default_dataloader_num_workers(args: DataArguments, cpu_count: int | None = None) -> int:
    """`dataloader_num_workers` for `vidgpt2 train` when the user passes none: 0 when no video is decoded per step
    (--feature-cache, --frame-cache, --blank-video: reading is cheaper than handing batches between processes),
    else one worker per CPU, at least 1 and at most 4 (decoding overlaps the training step). Measured on 2 CPUs with
    the tiny 12-frame 64x64 model at batch 32 (`benchmarks/bench_pixel_path.py`, quiet machine): 0 / 1 / 2 workers
    run at 0.47x / 0.59x / 0.83x the steps/s of pre-decoded tensors, so 2 workers on 2 CPUs."""
    if args.feature_cache or args.frame_cache or args.blank_video:
        return 0
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, min(4, cpus))


# --- model -----------------------------------------------------------------------------------------------------------
def build_model_and_processor(
    args: ModelArguments, train_captions: list[str] | None = None, max_caption_length: int | None = None
) -> tuple[VidGPT2ForConditionalGeneration, VidGPT2Processor]:
    """One of: a vidgpt2 checkpoint; pretrained backbones; a config trained from scratch.

    Whether the vision tower trains follows where its weights came from (`args.freeze_vision` overrides): a
    pretrained ResNet (`--vision-model`) is frozen, a randomly initialised one (`--config`) trains unless the config
    file sets `freeze_vision` itself, a checkpoint (`--model`) keeps its saved `freeze_vision`. The choice is logged.
    """
    sources = [args.model is not None, args.vision_model is not None or args.text_model is not None, args.config is not None]
    if sum(sources) != 1:
        raise ValueError("Choose exactly one model source: --model, --vision-model + --text-model, or --config.")
    overrides = {k: v for k, v in (("visual_tokens", args.visual_tokens), ("image_size", args.image_size)) if v is not None}
    if args.model is not None:
        model = VidGPT2ForConditionalGeneration.from_pretrained(args.model)
        processor = VidGPT2Processor.from_pretrained(args.model)
        if overrides:
            raise ValueError(f"{sorted(overrides)} cannot change for an existing checkpoint ({args.model}).")
        freeze, origin = model.config.freeze_vision, f"weights and freeze_vision from the checkpoint {args.model}"
    elif args.config is None:
        if args.vision_model is None or args.text_model is None:
            raise ValueError("--vision-model and --text-model go together.")
        frames = args.num_frames or 8
        model = VidGPT2ForConditionalGeneration.from_backbones(args.vision_model, args.text_model, frames, **overrides)
        processor = VidGPT2Processor.from_backbones(args.vision_model, args.text_model, frames)
        freeze, origin = True, f"pretrained weights from {args.vision_model}"
    else:
        model, processor = _from_config(args, overrides, train_captions)
        freeze, origin = model.config.freeze_vision, "random initialisation (--config)"
    if args.num_frames is not None and args.num_frames != model.config.num_frames:
        raise ValueError(
            f"--num-frames {args.num_frames} differs from the model's num_frames={model.config.num_frames}."
        )
    if args.freeze_vision is not None:
        freeze, origin = args.freeze_vision, f"--freeze-vision {str(args.freeze_vision).lower()}; {origin}"
    set_vision_frozen(model, freeze)
    if freeze and args.config is not None:
        logger.warning(
            "vision tower: frozen (%s): the model learns from fixed random features. "
            "Drop freeze_vision from the config or pass --freeze-vision false to train it.",
            origin,
        )
    else:
        logger.info("vision tower: %s (%s)", "frozen" if freeze else "trains", origin)
    if max_caption_length is not None:
        processor.max_caption_length = max_caption_length
    if args.model is None or max_caption_length is not None:
        model.generation_config.max_new_tokens = processor.max_caption_length
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, name, getattr(model.config, name))
    return model, processor


def set_vision_frozen(model: VidGPT2ForConditionalGeneration, frozen: bool) -> None:
    """Freeze (or unfreeze) the vision tower and record it in `config.freeze_vision`, which travels with the
    checkpoint and which the model card reports."""
    model.config.freeze_vision = frozen
    model.encoder.vision_tower.requires_grad_(not frozen)


def _from_config(
    args: ModelArguments, overrides: dict[str, Any], train_captions: list[str] | None
) -> tuple[VidGPT2ForConditionalGeneration, VidGPT2Processor]:
    if isinstance(args.config, VidGPT2Config):
        config_dict = args.config.to_dict()
        # a config object always has freeze_vision; only a value other than the class default counts as a choice
        if config_dict.get("freeze_vision") == VidGPT2Config.freeze_vision:
            config_dict.pop("freeze_vision")
    elif isinstance(args.config, dict):
        config_dict = dict(args.config)
    else:
        config_dict = json.loads(Path(args.config).read_text())
    config_dict.pop("model_type", None)
    # the tower starts from random weights: it trains unless the config says otherwise
    config_dict.setdefault("freeze_vision", False)
    if args.build_tokenizer == (args.tokenizer is not None):
        raise ValueError("With --config, pass exactly one of --tokenizer ID_OR_DIR or --build-tokenizer.")
    if args.build_tokenizer:
        if not train_captions:
            raise ValueError("--build-tokenizer needs training captions (--train-file or --dataset).")
        tokenizer = build_word_level_tokenizer(train_captions)
    else:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    # the decoder's vocabulary and special ids follow the tokenizer
    text = dict(config_dict.pop("text_config", {}) or {})
    text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        config_dict.pop(name, None)
    if args.num_frames is not None:
        config_dict["num_frames"] = args.num_frames
    config_dict.update(overrides)
    config = VidGPT2Config(
        text_config=text, pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.bos_token_id, **config_dict
    )
    return VidGPT2ForConditionalGeneration(config), VidGPT2Processor.from_config(config, tokenizer)


def apply_lora(
    model: VidGPT2ForConditionalGeneration, args: LoraArguments, fresh_parameter_names: Iterable[str] | None = None
) -> Any:
    """Wrap the model with LoRA adapters on pretrained GPT-2 attention; everything new trains fully beside them.

    Trained fully (PEFT `modules_to_save`, stored with the adapter and kept by `merge_and_unload`): the visual-token
    layers, every module whose weights start from random initialisation (`fresh_parameter_names`, by default the
    `model.fresh_parameter_names` that `from_backbones` records: the cross-attention `c_attn`, `q_attn`, `c_proj`
    and `ln_cross_attn` of every block), and the vision tower when it is trainable in `model`. Modules trained
    fully get no adapter, whatever `args.lora_target_modules` matches.

    Raises:
        ValueError: `args.lora_target_modules` matches no module, or only modules that train fully anyway.
    """
    from peft import LoraConfig, get_peft_model

    if fresh_parameter_names is None:
        fresh_parameter_names = getattr(model, "fresh_parameter_names", ())
    present = {name for name, _ in model.named_modules()}
    # the visual-token layers are new (not pretrained): they train fully, beside the adapters
    visual = [f"encoder.layers.{i}" for i in range(len(model.encoder.layers))] + VISUAL_MODULES
    full = {m for m in visual if m in present and m != "encoder.layers"}
    full |= set(fresh_modules(model, fresh_parameter_names))
    if not model.encoder.vision_frozen:
        full.add("encoder.vision_tower")
    _check_lora_targets(model, args.lora_target_modules, full)
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights transposed
        # PEFT never puts an adapter on a module it saves whole (peft.tuners.tuners_utils.check_target_module_exists)
        modules_to_save=sorted(full),
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA: %d of %d parameters train (%.2f%%)", trainable, total, 100 * trainable / total)
    logger.info("LoRA: trained fully beside the adapters: %s", ", ".join(sorted(full)))
    return peft_model


def fresh_modules(model: nn.Module, fresh_parameter_names: Iterable[str]) -> list[str]:
    """The fewest modules that hold exactly the given (randomly initialised) parameters: a module is taken whole when
    all its parameters are fresh, climbing up to the largest such ancestor that is not a ModuleList/ModuleDict
    (PEFT wraps modules that are called, and a container is not).

    Raises:
        ValueError: a fresh parameter shares its module with pretrained parameters (it could not be trained fully
            without training those too), or names no parameter of `model`.
    """
    fresh = set(fresh_parameter_names)
    modules = dict(model.named_modules())
    parameters = {name for name, _ in model.named_parameters()}

    def all_fresh(module_name: str) -> bool:
        return all(f"{module_name}.{name}" in fresh for name, _ in modules[module_name].named_parameters())

    chosen = set()
    for parameter in sorted(fresh):
        owner = parameter.rpartition(".")[0]
        if parameter not in parameters or owner not in modules:
            raise ValueError(f"fresh parameter {parameter!r} is not a parameter of the model.")
        if not all_fresh(owner):
            raise ValueError(
                f"fresh parameter {parameter!r} shares module {owner!r} with pretrained parameters; LoRA can only "
                "train whole modules fully."
            )
        while "." in owner:
            parent = owner.rpartition(".")[0]
            if isinstance(modules[parent], (nn.ModuleList, nn.ModuleDict)) or not all_fresh(parent):
                break
            owner = parent
        chosen.add(owner)
    return sorted(chosen)


def _check_lora_targets(model: nn.Module, pattern: str, trained_fully: set[str]) -> None:
    """PEFT matches a string `target_modules` with `re.fullmatch` on module names."""
    matched = [name for name, _ in model.named_modules() if re.fullmatch(pattern, name)]
    adapted = [n for n in matched if not any(n == m or n.startswith(f"{m}.") for m in trained_fully)]
    if not matched:
        raise ValueError(f"--lora-target-modules {pattern!r} matches no module of the model.")
    if not adapted:
        raise ValueError(
            f"--lora-target-modules {pattern!r} matches only modules that start from random weights and train fully "
            f"({', '.join(matched)}): target pretrained modules, e.g. the default {DEFAULT_LORA_TARGETS!r}, or train "
            "without --lora."
        )


# --- metrics ---------------------------------------------------------------------------------------------------------
def score_split(predictions: list[str], dataset: Dataset, use_java: bool | None = None) -> dict[str, float | None]:
    """COCO metrics against every reference of each clip; for BDD-X trained on the joined "<action> <justification>",
    also the action and the justification scored separately (`action_*`, `justification_*`), as ADAPT reports."""
    from .metrics import compute_caption_metrics

    references = [list(r) for r in dataset["references"]]
    metrics: dict[str, float | None] = dict(compute_caption_metrics(predictions, references, use_java=use_java))
    columns = set(dataset.column_names)
    if {"action", "justification"} <= columns and len(dataset):
        # the joined BDD-X target: every reference caption splits back into exactly its action and justification
        joined = all(
            split_action_justification(c) == (a, j)
            for c, a, j in zip(dataset["caption"], dataset["action"], dataset["justification"])
        )
        if joined:
            parts = [split_action_justification(p) for p in predictions]
            for index, name in enumerate(("action", "justification")):
                hypotheses = [p[index] or "<empty>" for p in parts]
                scores = compute_caption_metrics(hypotheses, [[r] for r in dataset[name]], use_java=use_java)
                metrics.update({f"{name}_{k}": v for k, v in scores.items()})
    return metrics


class CaptionMetricsFn:
    """`compute_metrics` for Seq2SeqTrainer: decode generated ids, score against every reference of each clip."""

    def __init__(self, processor: VidGPT2Processor, dataset: Dataset, use_java: bool | None = None):
        self.processor = processor
        self.dataset = dataset
        self.use_java = use_java
        self.references = dataset["references"]

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        predictions = self.processor.batch_decode(eval_prediction.predictions)
        if len(predictions) > len(self.references):
            # Several processes: the last batch is evened out by repeating the first clips, and Seq2SeqTrainer
            # gathers predictions without dropping those repeats; they come last, in dataset order.
            predictions = predictions[: len(self.references)]
        if len(predictions) != len(self.references):
            raise RuntimeError(f"{len(predictions)} predictions for {len(self.references)} evaluation clips.")
        metrics = score_split(predictions, self.dataset, self.use_java)
        return {k: v for k, v in metrics.items() if v is not None}


def generate_captions(
    model: Any,
    processor: VidGPT2Processor,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    feature_cache: FeatureCache | None = None,
    show_progress: bool = True,
    blank_video: bool = False,
    **generate_kwargs: Any,
) -> list[str]:
    """Caption every row of `dataset` (columns `video`, optional `start`/`end`) with a progress bar."""
    from tqdm.auto import tqdm

    collator = VideoCaptionCollator(processor, feature_cache, caption_column="__none__", blank_video=blank_video)
    device = next(model.parameters()).device
    model.eval()
    predictions: list[str] = []
    for begin in tqdm(range(0, len(dataset), batch_size), desc="captioning", unit="batch", disable=not show_progress):
        rows = [dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))]
        inputs = {k: v.to(device) for k, v in collator(rows).items()}
        with torch.no_grad():
            ids = model.generate(**inputs, **generate_kwargs)
        predictions.extend(processor.batch_decode(ids))
    return predictions


def evaluate_dataset(
    model: Any,
    processor: VidGPT2Processor,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    feature_cache: FeatureCache | None = None,
    use_java: bool | None = None,
    **generate_kwargs: Any,
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Predictions (video, prediction, references) and COCO metrics for one evaluation split."""
    predictions = generate_captions(
        model, processor, dataset, batch_size=batch_size, feature_cache=feature_cache, **generate_kwargs
    )
    references = [list(r) for r in dataset["references"]]
    metrics = score_split(predictions, dataset, use_java)
    rows = [
        {"video": v, "start": s, "end": e, "prediction": p, "references": r}
        for v, s, e, p, r in zip(dataset["video"], dataset["start"], dataset["end"], predictions, references)
    ]
    return rows, metrics


# --- the training run --------------------------------------------------------------------------------------------------
class KeepMaxNewTokens(TrainerCallback):
    """Undo the `max_length=20` that `Seq2SeqTrainer.prediction_step` writes into `model.generation_config` (it fills
    in generation defaults after each generate call). Our generation config caps captions with `max_new_tokens`, and
    with both set every later `generate` logs "Both `max_new_tokens` and `max_length` seem to have been set"."""

    def on_prediction_step(self, args, state, control, model=None, **kwargs):
        config = getattr(model, "generation_config", None)
        if config is not None and config.max_new_tokens is not None:
            config.max_length = None


# --- resuming ----------------------------------------------------------------------------------------------------------
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"


def _checkpoint_step(folder: Path) -> int | None:
    """The N of a `checkpoint-N` folder, else None."""
    suffix = folder.name[len(CHECKPOINT_PREFIX) :] if folder.name.startswith(CHECKPOINT_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` is not a finished Trainer checkpoint, or None when it is one.

    `Trainer._save_checkpoint` writes the weights, optimizer, scheduler and RNG states first and `trainer_state.json`
    last, each straight to its final name; a run killed while saving (kill -9, preemption, a full disk) leaves a
    `checkpoint-N` folder without a readable `trainer_state.json`. transformers' `get_last_checkpoint` picks such a
    folder all the same and the resume then fails (huggingface/transformers#35782, #35525).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    state_file = folder / TRAINER_STATE_NAME
    if not state_file.is_file():
        return f"{folder} has no {TRAINER_STATE_NAME} (the run was stopped while writing this checkpoint)"
    try:
        json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"{state_file} is not readable JSON ({error}): the run was stopped while writing it"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N that is finished; incomplete ones are logged."""
    folders = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if _checkpoint_step(p) is not None]
    for folder in sorted(folders, key=_checkpoint_step, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Not resuming from %s: %s.", folder.name, problem)
    return None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str | Path) -> str | None:
    """`--resume-from-checkpoint` -> the checkpoint folder `Trainer.train` should load, or None.

    `Seq2SeqTrainingArguments.resume_from_checkpoint` is a string, so on the command line `True` arrives as "True",
    which `Trainer.train` would take for a folder name. "True" (any case) means the newest finished `checkpoint-N`
    in `output_dir`; "False" means no resume; anything else is a checkpoint folder, which must be finished.

    Raises:
        ValueError: "True" with no finished checkpoint in `output_dir`, or a folder that is missing or unfinished.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        folder = last_complete_checkpoint(output_dir)
        if folder is None:
            raise ValueError(
                f"--resume-from-checkpoint True: no finished checkpoint-N folder in {output_dir}. "
                "Train with --save-strategy steps (or epoch) first, or drop --resume-from-checkpoint."
            )
        logger.info("Resuming from the last finished checkpoint, %s", folder)
        return str(folder)
    problem = checkpoint_problem(value)
    if problem is not None:
        earlier = last_complete_checkpoint(Path(value).parent)
        hint = f" The newest finished one there is {earlier}." if earlier is not None else ""
        raise ValueError(f"--resume-from-checkpoint {value}: {problem}.{hint}")
    return str(value)


class LogLossAtCheckpoints(TrainerCallback):
    """Log the training loss at every checkpoint, so that the losses before a checkpoint are all in its
    `trainer_state.json` and a resumed run can report `train_loss` over the whole run (`whole_run_train_loss`)."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True


def whole_run_train_loss(
    log_history: list[dict[str, Any]], resumed_at: int, global_step: int, train_loss: float
) -> float | None:
    """Mean training loss over steps 1..`global_step` of a run resumed at step `resumed_at`.

    `Trainer.train` reports `train_loss` over the steps of its own call only (`resumed_at`+1..`global_step`). The
    steps before come from the logged losses: each `loss` entry of `log_history` is the mean over the steps since
    the previous entry. Returns None when the log does not reach exactly `resumed_at` (a checkpoint saved between
    two logging steps by a trainer without `LogLossAtCheckpoints`).
    """
    total, previous = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= resumed_at:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    if previous != resumed_at or global_step <= 0:
        return None
    return (total + train_loss * (global_step - resumed_at)) / global_step


def _report_whole_run_loss(trainer: Seq2SeqTrainer, resumed_from: str, metrics: dict[str, Any]) -> None:
    """After a resumed `train()`: make `metrics["train_loss"]` and the log's summary cover the whole run."""
    resumed_at = int(json.loads((Path(resumed_from) / TRAINER_STATE_NAME).read_text())["global_step"])
    state = trainer.state
    loss = whole_run_train_loss(state.log_history, resumed_at, state.global_step, metrics["train_loss"])
    if loss is None:
        logger.warning(
            "train_loss covers steps %d-%d only: %s logs no loss at its last step, so the earlier steps' mean is unknown.",
            resumed_at + 1, state.global_step, resumed_from,
        )
        return
    metrics["train_loss"] = loss
    for entry in reversed(state.log_history):
        if "train_loss" in entry:
            entry["train_loss"] = loss
            break


def _start_workers_safely(loader: Any) -> Any:
    """Start the loader's worker processes from a fork server, not by forking the trainer (see
    `vidgpt2.data.collator.worker_start_method`); a loader without workers, or already iterated, is left as it is."""
    method = worker_start_method(getattr(loader, "num_workers", 0))
    if method is not None and getattr(loader, "multiprocessing_context", None) is None:
        loader.multiprocessing_context = method
    return loader


class CaptionTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose generation flags take effect on a model that caps captions with `max_new_tokens`.

    `Seq2SeqTrainer.evaluate` turns `--generation-max-length` into `generate(max_length=...)`; our generation config
    sets `max_new_tokens` (the caption limit), which `generate` lets win over `max_length` with the warning "Both
    `max_new_tokens` and `max_length` seem to have been set". Here the length becomes `max_new_tokens` instead:
    `max_length` counts the decoder start token, so `max_new_tokens = max_length - 1`. `--generation-num-beams`
    passes through as is; `--generation-config` replaces the model's generation config (transformers), and the
    special token ids it leaves unset are filled in from the model's config.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_skipped_samples = 0  # samples of the batches this process received that failed to load
        if self.args.generation_config is not None:
            config = self.model.generation_config
            for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
                if getattr(config, name, None) is None:
                    setattr(config, name, getattr(self.model.config, name, None))

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Count and remove the collator's skip marker (`VideoCaptionCollator(report_skipped=True)`) before the
        model sees the batch: batches come from DataLoader workers, whose own skip counts never reach this process."""
        skipped = inputs.pop(SKIPPED_SAMPLES_KEY, None)
        if skipped is not None:
            self.num_skipped_samples += int(skipped)
        return super()._prepare_inputs(inputs)

    def get_train_dataloader(self) -> Any:
        return _start_workers_safely(super().get_train_dataloader())

    def get_eval_dataloader(self, eval_dataset=None) -> Any:
        return _start_workers_safely(super().get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset) -> Any:
        return _start_workers_safely(super().get_test_dataloader(test_dataset))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        gen_kwargs = self._caption_length_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test", **gen_kwargs):
        gen_kwargs = self._caption_length_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs)

    def _caption_length_kwargs(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        gen_kwargs = dict(gen_kwargs)
        max_length = gen_kwargs.pop("max_length", None)
        if max_length is not None and gen_kwargs.get("max_new_tokens") is not None:
            raise ValueError("Pass max_length or max_new_tokens to evaluate/predict, not both.")
        if max_length is None and gen_kwargs.get("max_new_tokens") is None:
            max_length = self.args.generation_max_length
        if max_length is not None:
            if max_length < 2:
                raise ValueError(
                    f"--generation-max-length {max_length} leaves no room for a caption: it counts the decoder start "
                    "token, so use 2 or more."
                )
            gen_kwargs["max_new_tokens"] = max_length - 1
        return gen_kwargs


def _total_skipped(trainer: CaptionTrainer) -> int:
    """Samples skipped by `--on-bad-video skip` over the run (training and evaluation), summed over processes (every
    process calls this: it is a collective operation when there are several)."""
    count = torch.tensor(trainer.num_skipped_samples, device=trainer.accelerator.device)
    if trainer.accelerator.num_processes > 1:
        count = trainer.accelerator.reduce(count, reduction="sum")
    return int(count)


def check_model_sources(model_args: ModelArguments) -> None:
    """Before the data check (which opens every video): local paths given for the model, backbones, tokenizer or config must exist.

    Raises:
        FileNotFoundError: "model folder not found: PATH", "config file not found: PATH", ...
    """
    from .sources import check_checkpoint_source, check_config_file

    check_checkpoint_source(model_args.model, "model")
    check_checkpoint_source(model_args.vision_model, "vision model")
    check_checkpoint_source(model_args.text_model, "text model")
    check_checkpoint_source(model_args.tokenizer, "tokenizer")
    check_config_file(model_args.config)


def check_lora_options(lora_args: LoraArguments) -> None:
    """Refuse `--merge-lora` without `--lora` (it would silently run a full fine-tune with nothing to merge).

    Raises:
        ValueError: naming both flags and the fix.
    """
    if lora_args.merge_lora and not lora_args.lora:
        raise ValueError(
            "--merge-lora merges LoRA adapters, but --lora is not set, so this would be a full fine-tune with no "
            "adapters to merge: add --lora (train adapters, then merge them), or drop --merge-lora (full fine-tune)."
        )


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    lora_args: LoraArguments,
    training_args: Seq2SeqTrainingArguments,
) -> dict[str, Any]:
    """parse -> model -> data -> train -> save; returns the final metrics."""
    set_seed(training_args.seed)
    check_lora_options(lora_args)
    check_frame_cache_options(data_args)
    data = load_data(data_args)
    if "train" not in data:
        raise ValueError("Training needs a train split (--train-file or --dataset).")
    if lora_args.lora and model_args.config is not None:
        raise ValueError(
            "--lora adapts pretrained weights, but with --config every weight starts random and must train fully: "
            "drop --lora, or start from pretrained weights (--model, or --vision-model with --text-model)."
        )
    check_model_sources(model_args)  # before the data check opens every video
    feature_cache = FeatureCache(Path(data_args.feature_cache)) if data_args.feature_cache else None
    show_progress = training_args.local_process_index == 0 and not training_args.disable_tqdm
    data = check_data(data, data_args, feature_cache, show_progress=show_progress)
    model, processor = build_model_and_processor(model_args, list(data["train"]["caption"]), data_args.max_caption_length)
    if feature_cache is not None:
        feature_cache.check_compatible(model)
        for split, rows in data.items():
            feature_cache.check_covers(iter_samples(rows), split)
    with training_args.main_process_first(desc="frame cache"):
        frame_cache = prepare_frame_cache(data, data_args, processor, show_progress=show_progress)
    if lora_args.lora:
        if not model.encoder.vision_frozen and model_args.freeze_vision is None:
            set_vision_frozen(model, True)
            logger.info("vision tower: frozen under --lora (pass --freeze-vision false to train it beside the adapters)")
        model = apply_lora(model, lora_args)

    eval_split = data.get("validation")
    push = training_args.push_to_hub
    if push and lora_args.lora and not lora_args.merge_lora:
        raise ValueError("--push-to-hub with --lora needs --merge-lora: the Hub repository holds the merged model.")
    _configure_args(training_args, has_eval=eval_split is not None)
    collator = VideoCaptionCollator(
        processor,
        feature_cache,
        frame_cache=frame_cache,
        blank_video=data_args.blank_video,
        on_bad_video=data_args.on_bad_video,
        report_skipped=data_args.on_bad_video == "skip",  # counted by the trainer, workers' skips included
    )
    trainer = CaptionTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=eval_split,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=CaptionMetricsFn(processor, eval_split, data_args.use_java) if eval_split else None,
        callbacks=[KeepMaxNewTokens(), LogLossAtCheckpoints()],
    )
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, Any] = {f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()}
    if resume is not None:
        _report_whole_run_loss(trainer, resume, metrics)

    output_dir = Path(training_args.output_dir)
    trainer.save_model()
    trainer.save_state()
    hyperparameters = training_hyperparameters(training_args, lora_args)
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        # the Trainer's training_args.bin is a pickle; vidgpt2.hub reads this JSON for the model card
        (output_dir / TRAINING_ARGS_FILE).write_text(json.dumps(hyperparameters, indent=2, sort_keys=True))
        if lora_args.lora and lora_args.merge_lora:
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(output_dir / "merged")
            processor.save_pretrained(output_dir / "merged")
            (output_dir / "merged" / TRAINING_ARGS_FILE).write_text(json.dumps(hyperparameters, indent=2, sort_keys=True))
    if eval_split is not None:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if "test" in data:
        trainer.compute_metrics = CaptionMetricsFn(processor, data["test"], data_args.use_java)
        metrics.update(trainer.evaluate(data["test"], metric_key_prefix="test"))
    skipped = _total_skipped(trainer)
    if skipped:
        logger.warning("%d samples failed to load and were skipped (--on-bad-video skip)", skipped)
    # every process computed the metrics from the same gathered predictions: log them to make that checkable
    logger.info("final metrics (process %d): %s", training_args.process_index, json.dumps(metrics, sort_keys=True))
    if trainer.is_world_process_zero():
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        logger.info("Saved model, processor, metrics.json and loss_curve.png to %s", output_dir)
    if push and trainer.is_world_process_zero():
        from .hub import push_to_hub

        push_to_hub(
            str(output_dir / "merged") if lora_args.lora and lora_args.merge_lora else str(output_dir),
            training_args.hub_model_id or output_dir.name,
            private=bool(training_args.hub_private_repo),
            metrics=metrics,
            training_args=hyperparameters,
            token=training_args.hub_token,
        )
    return metrics


def _configure_args(args: Seq2SeqTrainingArguments, has_eval: bool) -> None:
    """Settings a video captioner needs whatever the user passed."""
    # the collator needs `video`, `caption`, `start`, `end`: the Trainer must not drop them
    args.remove_unused_columns = False
    # generation-based evaluation: BLEU/METEOR/ROUGE-L/CIDEr instead of teacher-forced loss only
    args.predict_with_generate = True
    # vidgpt2.hub pushes the complete set (weights, processor, code, model card) once training ends
    args.push_to_hub = False
    if has_eval:
        _default_best_metric(args)


# schedulers that step on `metric_for_best_model` in "min" mode (transformers.Trainer._evaluate)
_METRIC_SCHEDULERS = (SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY)


def _default_best_metric(args: Seq2SeqTrainingArguments) -> None:
    """The checkpoint is chosen by CIDEr unless the user chose a metric.

    `TrainingArguments.__post_init__` fills in `metric_for_best_model="loss"` for `load_best_model_at_end`, so a
    plain "loss" here counts as not chosen (to choose by loss, pass `eval_loss`, which the Trainer reads the same
    way; `vidgpt2 train --metric-for-best-model loss` does that for you). A plateau scheduler keeps "loss": it steps
    on that metric in "min" mode.
    """
    metric = args.metric_for_best_model
    if metric == "loss" and args.lr_scheduler_type in _METRIC_SCHEDULERS:
        logger.info("metric_for_best_model: eval_loss (the %s scheduler steps on it)", args.lr_scheduler_type.value)
        return
    if metric is None or metric == "loss":
        args.metric_for_best_model = "cider"
        args.greater_is_better = True
        if args.load_best_model_at_end or args.save_strategy == "best":
            logger.info("metric_for_best_model: eval_cider, greater is better (pass eval_loss to choose by loss)")


def parse_train_arguments(
    argv: list[str],
) -> tuple[ModelArguments, DataArguments, LoraArguments, Seq2SeqTrainingArguments]:
    """`vidgpt2 train` arguments from the command line, or from one JSON file (`vidgpt2 train args.json`).

    An explicit `--metric-for-best-model loss` (or `"metric_for_best_model": "loss"` in the JSON file) becomes
    `eval_loss`, so that it is not mistaken for the default transformers fills in (see `_default_best_metric`).
    """
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, LoraArguments, Seq2SeqTrainingArguments), prog="vidgpt2 train"
    )
    if len(argv) == 1 and argv[0].endswith(".json"):
        explicit = "metric_for_best_model" in json.loads(Path(argv[0]).read_text())
        model_args, data_args, lora_args, training_args = parser.parse_json_file(argv[0])
    else:
        flags = {arg.split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
        explicit = "__metric_for_best_model" in flags
        model_args, data_args, lora_args, training_args = parser.parse_args_into_dataclasses(argv)
    if explicit and training_args.metric_for_best_model == "loss":
        training_args.metric_for_best_model = "eval_loss"
    try:  # a usage error (status 2), as for the other flags
        check_dataset_choices(data_args.dataset, data_args.bddx_target, data_args.msrvtt_split)
    except ValueError as error:
        parser.error(str(error))
    return model_args, data_args, lora_args, training_args


def training_hyperparameters(training_args: Seq2SeqTrainingArguments, lora_args: LoraArguments) -> dict[str, Any]:
    """What `run_training` writes to `training_args.json`: every `Seq2SeqTrainingArguments` field (tokens hidden by
    `to_dict`), plus the LoRA settings when LoRA was used."""
    values = json.loads(training_args.to_json_string())
    if lora_args.lora:
        values.update(asdict(lora_args))
    return values


def plot_loss_curve(log_history: list[dict[str, Any]], path: str | Path | None = None) -> Any:
    """Training (and evaluation) loss per step as a matplotlib Figure; saved as PNG when `path` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("vidgpt2 training")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


__all__ = [
    "CaptionTrainer",
    "DataArguments",
    "LoraArguments",
    "ModelArguments",
    "apply_lora",
    "build_model_and_processor",
    "check_data",
    "default_dataloader_num_workers",
    "evaluate_dataset",
    "fresh_modules",
    "generate_captions",
    "load_data",
    "parse_train_arguments",
    "plot_loss_curve",
    "prepare_frame_cache",
    "run_training",
    "set_vision_frozen",
    "training_hyperparameters",
]
