"""`vidgpt2` command line: thin wrappers over the library.

    vidgpt2 synth OUT_DIR                  procedural clips + captions files
    vidgpt2 check-data ...                 open every video and segment of a dataset, list the bad rows
    vidgpt2 extract-features ...           run the frozen vision tower once into a feature cache
    vidgpt2 train ...                      Seq2SeqTrainer; every Seq2SeqTrainingArguments flag passes through
    vidgpt2 evaluate --model M --test-file F
    vidgpt2 caption VIDEO... --model M
    vidgpt2 push --model DIR --repo-id ID
    vidgpt2 demo                           the README's main job

A mistake (a missing file, an unknown dataset, no network) prints one line "vidgpt2 <command>: error: ..." and exits
with status 1; add --debug anywhere for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("vidgpt2")


def _setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)


# --- synth ------------------------------------------------------------------------------------------------------------
def cmd_synth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 synth", description="Write procedural clips whose captions depend on frame order.")
    parser.add_argument("output_dir", help="Folder for the clips and train/validation/test.jsonl.")
    parser.add_argument(
        "--kind", choices=["order", "driving"], default="order",
        help="order: shapes whose captions depend on frame order (default). driving: dashcam clips with BDD-X "
        "captions (action because cause), written as a BDD-X folder with ground_truth.jsonl (cause frames, boxes).",
    )
    parser.add_argument("--num-train", type=int, default=200, help="Training clips.")
    parser.add_argument("--num-validation", type=int, default=40, help="Validation clips.")
    parser.add_argument("--num-test", type=int, default=40, help="Test clips.")
    parser.add_argument("--num-frames", type=int, default=8, help="Frames per clip.")
    parser.add_argument("--size", type=int, default=64, help="Frame side in pixels.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)
    if args.kind == "driving":
        from .data.synthetic_driving import write_driving_dataset

        folder = write_driving_dataset(
            args.output_dir, num_train=args.num_train, num_validation=args.num_validation, num_test=args.num_test,
            num_frames=args.num_frames, size=args.size, seed=args.seed,
        )
        print(f"BDD-X folder: {folder} (train with --dataset bddx --data-dir {folder})")
        return 0
    from .data import write_synthetic_dataset

    files = write_synthetic_dataset(
        args.output_dir,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        num_frames=args.num_frames,
        size=args.size,
        seed=args.seed,
    )
    for split, path in files.items():
        print(f"{split}: {path}")
    return 0


# --- data check (check-data; also at the start of extract-features, train, evaluate) ----------------------------------
def _dataset_names() -> tuple[str, ...]:
    from .data import DATASET_NAMES

    return DATASET_NAMES


def _add_data_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-video", choices=["error", "skip"], default="error",
        help="What the data check at the start does with unreadable videos or segments: error (stop, listing every "
        "bad row; default) or skip (drop those rows with a counted warning).",
    )
    parser.add_argument("--no-check-data", action="store_true", help="Skip the data check (faster start).")
    parser.add_argument(
        "--check-data-workers", type=int, default=None, help="Threads opening videos (default: CPU count, at most 16)."
    )


def _checked(data: dict, args: argparse.Namespace, show_progress: bool = True, feature_cache: Any = None) -> Any:
    """Run the data check on `data` ({name: Dataset}) per the parsed `_add_data_check_arguments` flags."""
    from datasets import DatasetDict

    from .data.check import enforce_data_check

    data = DatasetDict({str(name): split for name, split in data.items()})
    if args.no_check_data:
        return data
    return enforce_data_check(
        data, on_bad_video=args.on_bad_video, feature_cache=feature_cache, num_workers=args.check_data_workers,
        show_progress=show_progress,
    )


def cmd_check_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vidgpt2 check-data",
        description="Open every video a dataset references and check every segment; list each bad row with its file, "
        "line and reason. Exit status 1 when bad rows are found, unless --write-clean wrote the usable rows.",
    )
    parser.add_argument("--train-file", help="Captions file (JSONL/JSON/CSV) of the training split.")
    parser.add_argument("--validation-file", help="Captions file of the validation split.")
    parser.add_argument("--test-file", help="Captions file of the test split.")
    parser.add_argument("--dataset", choices=_dataset_names(), help="A named dataset read from --data-dir.")
    parser.add_argument("--data-dir", help="Folder of the named dataset.")
    parser.add_argument(
        "--bddx-target", default="action_justification", help="BDD-X target: action | justification | both."
    )
    parser.add_argument(
        "--feature-cache", help="Check that every clip is in this feature cache instead of opening the videos."
    )
    parser.add_argument(
        "--decode-frames", type=int, metavar="N",
        help="Also decode N sampled frames of every segment, as training does (slower; finds damage past frame 1).",
    )
    parser.add_argument("--num-workers", type=int, default=None, help="Threads (default: CPU count, at most 16).")
    parser.add_argument(
        "--write-clean", metavar="DIR",
        help="Write the usable rows of each split to DIR/<split>.jsonl (captions JSONL that `train` reads).",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    args = parser.parse_args(argv)
    from .data.check import check_dataset, check_feature_cache, write_clean_captions
    from .data.feature_cache import FeatureCache
    from .training import DataArguments, load_data

    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")
    data = load_data(
        DataArguments(
            train_file=args.train_file, validation_file=args.validation_file, test_file=args.test_file,
            dataset=args.dataset, data_dir=args.data_dir, bddx_target=args.bddx_target,
        )
    )
    if args.feature_cache:
        report = check_feature_cache(data, FeatureCache(Path(args.feature_cache)))
    else:
        report = check_dataset(
            data, num_workers=args.num_workers, num_frames=args.decode_frames, show_progress=not args.no_progress
        )
    for line in report.lines():
        print(line)
    print(report.summary())
    if args.write_clean:
        for split, path in write_clean_captions(data, report, args.write_clean).items():
            print(f"{split}: {path}")
        return 0
    return 0 if report.ok else 1


# --- extract-features -----------------------------------------------------------------------------------------------
def cmd_extract_features(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 extract-features", description="Cache vision-tower features.")
    parser.add_argument("--model", required=True, help="vidgpt2 checkpoint (id or folder) whose vision tower to run.")
    parser.add_argument("--data-file", action="append", default=[], help="Captions file(s) (JSONL/CSV); repeatable.")
    parser.add_argument("--dataset", choices=_dataset_names(), help="A named dataset in --data-dir.")
    parser.add_argument("--data-dir", help="Folder of the named dataset.")
    parser.add_argument("--output", required=True, help="Feature-cache folder (created; resumable).")
    parser.add_argument("--batch-size", type=int, default=8, help="Clips per vision-tower batch.")
    _add_data_check_arguments(parser)
    args = parser.parse_args(argv)
    from accelerate import Accelerator

    from .data import load_captions_files, load_video_caption_dataset
    from .data.feature_cache import extract_features, iter_samples
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor

    if bool(args.data_file) == bool(args.dataset):
        parser.error("pass --data-file (one or more) or --dataset with --data-dir")
    if args.dataset:
        if not args.data_dir:
            parser.error("--dataset needs --data-dir")
        splits = dict(load_video_caption_dataset(args.dataset, args.data_dir))
    else:
        splits = {f: load_captions_files(train_file=f)["train"] for f in args.data_file}
    accelerator = Accelerator()
    splits = list(_checked(splits, args, show_progress=accelerator.is_local_main_process).values())
    samples = [s for split in splits for s in iter_samples(split)]
    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model).to(accelerator.device)
    processor = VidGPT2Processor.from_pretrained(args.model)
    cache = extract_features(
        model, processor, samples, args.output, batch_size=args.batch_size, accelerator=accelerator,
        show_progress=accelerator.is_local_main_process,
    )
    if accelerator.is_main_process:
        print(f"features of {len(samples)} samples in {cache.root}")
    return 0


# --- train ------------------------------------------------------------------------------------------------------------
def cmd_train(argv: list[str]) -> int:
    from transformers import HfArgumentParser, Seq2SeqTrainingArguments

    from .training import DataArguments, LoraArguments, ModelArguments, run_training

    parser = HfArgumentParser(
        (ModelArguments, DataArguments, LoraArguments, Seq2SeqTrainingArguments), prog="vidgpt2 train"
    )
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, lora_args, training_args = parser.parse_json_file(argv[0])
    else:
        model_args, data_args, lora_args, training_args = parser.parse_args_into_dataclasses(argv)
    metrics = run_training(model_args, data_args, lora_args, training_args)
    if training_args.process_index == 0:
        print_metrics_table(metrics)
    return 0


# --- evaluate ---------------------------------------------------------------------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 evaluate", description="Caption a test set and score it (COCO metrics).")
    parser.add_argument("--model", required=True, help="vidgpt2 checkpoint (id or folder).")
    parser.add_argument("--test-file", required=True, help="Captions file (JSONL/CSV) with references.")
    parser.add_argument("--num-beams", type=int, default=1, help="Beam width.")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Caption length limit.")
    parser.add_argument("--batch-size", type=int, default=8, help="Videos per batch.")
    parser.add_argument("--feature-cache", help="Read features from this cache instead of decoding videos.")
    parser.add_argument("--output", help="Write metrics JSON here.")
    parser.add_argument("--predictions", help="Write predictions JSONL (video, prediction, references) here.")
    _add_data_check_arguments(parser)
    parser.add_argument(
        "--no-java", action="store_true",
        help="Skip Java: Python PTB-equivalent tokenisation, METEOR not reported (faster; default uses Java if installed).",
    )
    args = parser.parse_args(argv)
    from .data import load_captions_files
    from .data.feature_cache import FeatureCache
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .training import evaluate_dataset

    test = load_captions_files(test_file=args.test_file)["test"]
    cache = FeatureCache(Path(args.feature_cache)) if args.feature_cache else None
    test = _checked({"test": test}, args, feature_cache=cache)["test"]
    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model)
    processor = VidGPT2Processor.from_pretrained(args.model)
    generate_kwargs: dict[str, Any] = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        generate_kwargs["max_new_tokens"] = args.max_new_tokens
    if cache is not None:
        cache.check_compatible(model)
    rows, metrics = evaluate_dataset(
        model, processor, test, batch_size=args.batch_size, feature_cache=cache,
        use_java=False if args.no_java else None, **generate_kwargs,
    )
    if args.predictions:
        _write_jsonl(Path(args.predictions), rows)
    if args.output:
        _write_json(Path(args.output), metrics)
    print_metrics_table(metrics)
    return 0


# --- caption ----------------------------------------------------------------------------------------------------------
def cmd_caption(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 caption", description="Caption video files.")
    parser.add_argument("videos", nargs="+", help="Video files (mp4, avi, mov, webm, mkv) or http(s) URLs.")
    parser.add_argument("--model", required=True, help="vidgpt2 checkpoint (Hub id or folder).")
    parser.add_argument("--num-beams", type=int, default=1, help="Beam width (1 = greedy).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Caption length limit in tokens.")
    parser.add_argument("--explain", metavar="DIR", help="Also write an explanation figure (PNG, HTML, JSON) per video here.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object per video instead of text.")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cuda if available, else cpu).")
    args = parser.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    from .explanations import explain, save_explanation
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .pipeline_vidgpt2 import _is_url, fetch_video
    from .processing_vidgpt2 import VidGPT2Processor

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model).to(device).eval()
    processor = VidGPT2Processor.from_pretrained(args.model)
    generate_kwargs: dict[str, Any] = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        generate_kwargs["max_new_tokens"] = args.max_new_tokens

    failures = 0
    for index, video in enumerate(tqdm(args.videos, desc="captioning", unit="video", disable=len(args.videos) < 3)):
        try:
            path = fetch_video(video) if _is_url(video) else video
            pixels = processor(videos=[path])["pixel_values_videos"].to(device)
            if args.explain:
                explanation = explain(model, processor, pixel_values_videos=pixels, **generate_kwargs)
                caption = explanation.caption
                stem = f"{index:03d}_{Path(video).stem}"
                save_explanation(explanation, args.explain, stem)
            else:
                caption = processor.batch_decode(model.generate(pixel_values_videos=pixels, **generate_kwargs))[0]
        except (OSError, ValueError, RuntimeError) as error:
            failures += 1
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            if args.json:
                print(json.dumps({"video": video, "error": message}))
            else:
                print(f"FAILED {video}: {message}", file=sys.stderr)
            continue
        print(json.dumps({"video": video, "caption": caption}) if args.json else f"{video}: {caption}")
    if args.explain and failures < len(args.videos):
        print(f"explanations written to {args.explain}", file=sys.stderr)
    return 1 if failures else 0


# --- push -------------------------------------------------------------------------------------------------------------
def cmd_push(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 push", description="Publish a model folder to the Hugging Face Hub.")
    parser.add_argument("--model", required=True, help="Folder from save_pretrained or `vidgpt2 train`.")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/vidgpt2-msvd.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--overwrite-model-card", action="store_true", help="Replace an existing README.md.")
    parser.add_argument("--commit-message", default=None, help="Commit message.")
    parser.add_argument(
        "--dry-run", nargs="?", const="", metavar="DIR",
        help="Upload nothing: write the exact folder that would be uploaded (weights, processor, code, model card) "
        "to DIR (new or empty), or to a new temporary folder whose path is printed.",
    )
    args = parser.parse_args(argv)
    from .hub import push_to_hub

    if args.dry_run is not None:
        import tempfile

        folder = args.dry_run or tempfile.mkdtemp(prefix="vidgpt2-push-dry-run-")
        push_to_hub(args.model, args.repo_id, dry_run=folder)
        print(f"dry run, nothing uploaded: the folder for {args.repo_id} is {folder}")
        return 0
    url = push_to_hub(
        args.model,
        args.repo_id,
        private=args.private,
        overwrite_model_card=args.overwrite_model_card,
        commit_message=args.commit_message,
    )
    print(url)
    return 0


# --- shared output helpers --------------------------------------------------------------------------------------------
def print_metrics_table(metrics: dict[str, Any], title: str | None = None) -> None:
    if title:
        print(title)
    width = max((len(k) for k in metrics), default=10)
    for key, value in metrics.items():
        shown = "unavailable" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"  {key:<{width}}  {shown}")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


COMMANDS = {
    "synth": cmd_synth,
    "check-data": cmd_check_data,
    "extract-features": cmd_extract_features,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "caption": cmd_caption,
    "push": cmd_push,
}


def main(argv: list[str] | None = None) -> int:
    from .demo import cmd_demo

    argv = list(sys.argv[1:] if argv is None else argv)
    argv, debug = _pop_debug_flag(argv)
    commands = {**COMMANDS, "demo": cmd_demo}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("commands:", ", ".join(commands))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"vidgpt2: unknown command {name!r}; choose one of {', '.join(commands)}", file=sys.stderr)
        return 2
    _setup_logging()
    return run_command(name, commands[name], rest, debug=debug)


def _pop_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """Remove our `--debug` (anywhere in the command line). After `train`, `--debug VALUE` is the Trainer's own
    flag (`--debug underflow_overflow`) and is left alone."""
    command = next((i for i, arg in enumerate(argv) if arg != "--debug"), len(argv))
    train = command < len(argv) and argv[command] == "train"
    kept, debug = [], False
    for i, arg in enumerate(argv):
        trainer_flag = train and i > command and i + 1 < len(argv) and not argv[i + 1].startswith("-")
        if arg == "--debug" and not trainer_flag:
            debug = True
        else:
            kept.append(arg)
    return kept, debug


def run_command(name: str, command: Any, argv: list[str], debug: bool = False) -> int:
    """Run one subcommand. An exception becomes one line on stderr, "vidgpt2 <name>: error: <first line of the
    message>", and exit status 1 (130 for Ctrl-C); with `debug` it propagates with its traceback. argparse's usage
    errors keep their own message and status 2."""
    try:
        return int(command(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"vidgpt2 {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = lines[0] if lines else ""
        kind = type(error).__name__
        if not message or kind not in _PLAIN_ERRORS:
            message = f"{kind}: {message}" if message else kind
        print(f"vidgpt2 {name}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1


# errors whose message reads on its own; others are prefixed with their type (e.g. "ConnectionError: ...")
_PLAIN_ERRORS = {"ValueError", "FileNotFoundError", "DataCheckError", "PushToHubError", "RuntimeError"}


if __name__ == "__main__":
    sys.exit(main())
