"""`vidgpt2` command line: thin wrappers over the library.

    vidgpt2 synth OUT_DIR                  procedural clips + captions files
    vidgpt2 check-data ...                 open every video and segment of a dataset, list the bad rows
    vidgpt2 extract-features ...           run the frozen vision tower once into a feature cache
    vidgpt2 extract-frames ...             decode every clip once into a frame cache (for a tower that trains)
    vidgpt2 train ...                      Seq2SeqTrainer; every Seq2SeqTrainingArguments flag passes through
    vidgpt2 evaluate --model M --test-file F
    vidgpt2 caption VIDEO|FOLDER|GLOB|MANIFEST... --model M [--output out.jsonl] [--segment-seconds S]
    vidgpt2 push --model DIR --repo-id ID [--space USER/SPACE]
    vidgpt2 export onnx --model M --output DIR   ONNX graphs + onnxruntime captioner
    vidgpt2 app --model M                  Gradio page: caption + word-by-word explanation (extra `app`)
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


def _model_command_parser(command: str, description: str, model_help: str) -> argparse.ArgumentParser:
    """The parser of `vidgpt2 <command>`, starting with its required `--model` (the commands that load a checkpoint)."""
    parser = argparse.ArgumentParser(prog=f"vidgpt2 {command}", description=description)
    parser.add_argument("--model", required=True, help=model_help)
    return parser


# --- synth ------------------------------------------------------------------------------------------------------------
def cmd_synth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vidgpt2 synth",
        description="Write procedural clips: shapes whose captions depend on frame order (--kind order), or dashcam "
        "clips with BDD-X captions and known causes (--kind driving).",
    )
    parser.add_argument(
        "output_dir",
        help="Folder for the clips: train/validation/test.jsonl (order), or a BDD-X folder with ground_truth.jsonl "
        "(driving). Must hold no files, unless --overwrite.",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Write into a folder that already holds files: the files synth writes are replaced, clips and "
        "captions files of an earlier synth run that this one does not write are deleted, other files stay.",
    )
    parser.add_argument(
        "--kind", choices=["order", "driving"], default="order",
        help="order: shapes whose captions depend on frame order (default). driving: dashcam clips with BDD-X "
        "captions (action because cause), written as a BDD-X folder with ground_truth.jsonl (cause frames, boxes).",
    )
    defaults = _synth_defaults()
    for flag, help_text in (("num_train", "Training clips"), ("num_validation", "Validation clips"),
                            ("num_test", "Test clips"), ("num_frames", "Frames per clip"),
                            ("size", "Frame side in pixels"), ("seed", "Random seed")):
        kinds = ", ".join(f"{kind} {values[flag]}" for kind, values in defaults.items())
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, default=None,
                            help=f"{help_text} (default: the writer's, {kinds}).")
    args = parser.parse_args(argv)
    try:
        return _synth(args)
    except FileExistsError as error:
        if error.errno is not None:  # the operating system's, not the writers' refusal
            raise
        hint = " On the command line: --overwrite." if "overwrite=True" in str(error) else ""
        raise SystemExit(f"vidgpt2 synth: {error}{hint}") from None


SYNTH_COUNTS = ("num_train", "num_validation", "num_test", "num_frames", "size", "seed")


def _synth_defaults() -> dict[str, dict[str, Any]]:
    """{kind: {argument: default}} of the two writers, read from their signatures (so the CLI cannot drift)."""
    import inspect

    from .data import write_synthetic_dataset
    from .data.synthetic_driving import write_driving_dataset

    writers = {"order": write_synthetic_dataset, "driving": write_driving_dataset}
    return {kind: {name: inspect.signature(writer).parameters[name].default for name in SYNTH_COUNTS}
            for kind, writer in writers.items()}


def _synth(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name in SYNTH_COUNTS if getattr(args, name) is not None}
    if args.kind == "driving":
        from .data.synthetic_driving import write_driving_dataset

        folder = write_driving_dataset(args.output_dir, overwrite=args.overwrite, **given)
        print(f"BDD-X folder: {folder} (train with --dataset bddx --data-dir {folder})")
        return 0
    from .data import write_synthetic_dataset

    files = write_synthetic_dataset(args.output_dir, overwrite=args.overwrite, **given)
    for split, path in files.items():
        print(f"{split}: {path}")
    return 0


# --- data check (check-data; also at the start of extract-features, train, evaluate) ----------------------------------
def _dataset_names() -> tuple[str, ...]:
    from .data import DATASET_NAMES

    return DATASET_NAMES


def _add_dataset_choice_arguments(parser: argparse.ArgumentParser) -> None:
    """`train`'s choices within a named dataset (`DataArguments.bddx_target`, `.msrvtt_split`), for the commands
    that read the same data: check-data, extract-features, extract-frames."""
    parser.add_argument(
        "--bddx-target", choices=["action_justification", "action", "justification"], default=None,
        help="BDD-X target, with --dataset bddx only: action | justification | action_justification (the two joined; "
        "default).",
    )
    parser.add_argument(
        "--msrvtt-split", choices=["official", "9k"], default=None,
        help="MSR-VTT split, with --dataset msrvtt only: official (6,513/497/2,990) | 9k (9k train / 1k-A test); "
        "default: by files.",
    )


def _add_data_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-video", choices=["error", "skip"], default="error",
        help="What the data check at the start does with unreadable videos or segments: error (stop, listing every "
        "bad row; default) or skip (drop those rows with a counted warning). evaluate: also what a clip that fails "
        "to decode later does (error: no metrics; skip: score the others).",
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
    _add_dataset_choice_arguments(parser)
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
    from .training import DataArguments, check_dataset_choices, load_data

    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")
    try:
        check_dataset_choices(args.dataset, args.bddx_target, args.msrvtt_split)
    except ValueError as error:
        parser.error(str(error))
    if args.write_clean:  # DIR/<split>.jsonl must not replace a captions file being checked (its bad rows would be lost)
        inputs = {Path(f).resolve() for f in (args.train_file, args.validation_file, args.test_file) if f}
        clobbered = sorted(
            str(path) for split in ("train", "validation", "test")
            if (path := Path(args.write_clean) / f"{split}.jsonl").resolve() in inputs
        )
        if clobbered:
            parser.error(f"--write-clean {args.write_clean} would overwrite the captions file being checked "
                         f"({', '.join(clobbered)}); write the clean rows to another folder")
    data = load_data(
        DataArguments(
            train_file=args.train_file, validation_file=args.validation_file, test_file=args.test_file,
            dataset=args.dataset, data_dir=args.data_dir, bddx_target=args.bddx_target,
            msrvtt_split=args.msrvtt_split,
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


# --- extract-features / extract-frames: the clips to extract ----------------------------------------------------------
def _add_extraction_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-file", action="append", default=[], help="Captions file(s) (JSONL/CSV); repeatable.")
    parser.add_argument("--dataset", choices=_dataset_names(), help="A named dataset in --data-dir.")
    parser.add_argument("--data-dir", help="Folder of the named dataset.")
    _add_dataset_choice_arguments(parser)


def _extraction_splits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """`{name: Dataset}` from `--data-file` (one or more) or `--dataset` + `--data-dir` (read as `train` reads it, with
    `--bddx-target` and `--msrvtt-split`, so the cache holds the clips train asks for); a usage error otherwise."""
    from .data import load_captions_files
    from .training import DataArguments, check_dataset_choices, load_data

    if bool(args.data_file) == bool(args.dataset):
        parser.error("pass --data-file (one or more) or --dataset with --data-dir")
    try:
        check_dataset_choices(args.dataset, args.bddx_target, args.msrvtt_split)
    except ValueError as error:
        parser.error(str(error))
    if args.dataset:
        if not args.data_dir:
            parser.error("--dataset needs --data-dir")
        return dict(
            load_data(
                DataArguments(
                    dataset=args.dataset, data_dir=args.data_dir, bddx_target=args.bddx_target,
                    msrvtt_split=args.msrvtt_split,
                )
            )
        )
    return {f: load_captions_files(train_file=f)["train"] for f in args.data_file}


# --- extract-features -----------------------------------------------------------------------------------------------
def cmd_extract_features(argv: list[str]) -> int:
    parser = _model_command_parser(
        "extract-features", "Cache vision-tower features.", "vidgpt2 checkpoint (id or folder) whose vision tower to run."
    )
    _add_extraction_data_arguments(parser)
    parser.add_argument("--output", required=True, help="Feature-cache folder (created; resumable).")
    parser.add_argument("--batch-size", type=int, default=8, help="Clips per vision-tower batch.")
    parser.add_argument(
        "--bf16", action="store_true",
        help="Run the vision tower under bfloat16 autocast (faster on CPUs with bf16 instructions; the cache records it).",
    )
    _add_data_check_arguments(parser)
    args = parser.parse_args(argv)
    from accelerate import Accelerator

    from .data.feature_cache import extract_features, iter_samples
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .sources import check_checkpoint_source

    check_checkpoint_source(args.model, "model")
    splits = _extraction_splits(parser, args)
    accelerator = Accelerator()
    splits = list(_checked(splits, args, show_progress=accelerator.is_local_main_process).values())
    samples = [s for split in splits for s in iter_samples(split)]
    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model).to(accelerator.device)
    processor = VidGPT2Processor.from_pretrained(args.model)
    cache = extract_features(
        model, processor, samples, args.output, batch_size=args.batch_size, accelerator=accelerator,
        show_progress=accelerator.is_local_main_process, dtype="bfloat16" if args.bf16 else "float32",
    )
    if accelerator.is_main_process:
        print(f"features of {len(samples)} samples in {cache.root}")
    return 0


# --- extract-frames -------------------------------------------------------------------------------------------------
def cmd_extract_frames(argv: list[str]) -> int:
    parser = _model_command_parser(
        "extract-frames",
        "Decode every clip once into a frame cache (uint8 frames at the processor's size) that "
        "`vidgpt2 train --frame-cache DIR` reads; resumable.",
        "vidgpt2 checkpoint (id or folder) whose processor to use.",
    )
    _add_extraction_data_arguments(parser)
    parser.add_argument("--output", required=True, help="Frame-cache folder (created; resumable).")
    parser.add_argument("--num-workers", type=int, default=None, help="Decoding threads (default: CPU count, at most 8).")
    _add_data_check_arguments(parser)
    args = parser.parse_args(argv)
    from .data.feature_cache import iter_samples
    from .data.frame_cache import extract_frames
    from .processing_vidgpt2 import VidGPT2Processor
    from .sources import check_checkpoint_source

    check_checkpoint_source(args.model, "model")
    splits = _extraction_splits(parser, args)
    samples = [s for split in _checked(splits, args).values() for s in iter_samples(split)]
    processor = VidGPT2Processor.from_pretrained(args.model)
    cache = extract_frames(
        processor.video_processor, samples, args.output, num_workers=args.num_workers, on_bad_video=args.on_bad_video
    )
    missing = cache.missing(samples)
    failed = f"; {len(missing)} clips failed to decode and are not cached" if missing else ""
    print(f"frames of {len(samples)} samples in {cache.root}{failed}")
    return 0


# --- train ------------------------------------------------------------------------------------------------------------
def cmd_train(argv: list[str]) -> int:
    from .training import parse_train_arguments, run_training

    model_args, data_args, lora_args, training_args = parse_train_arguments(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        given = set(json.loads(Path(argv[0]).read_text()))
    else:
        given = {arg.split("=", 1)[0].lstrip("-").replace("-", "_") for arg in argv if arg.startswith("--")}
    _default_dataloader_workers(training_args, data_args, given)
    metrics = run_training(model_args, data_args, lora_args, training_args)
    if training_args.process_index == 0:
        print_metrics_table(metrics)
    return 0


def _default_dataloader_workers(training_args: Any, data_args: Any, given: set[str]) -> None:
    """Decode videos in DataLoader workers unless the user chose `--dataloader_num_workers` (see
    `training.default_dataloader_num_workers`). Workers are not made persistent: a persistent iterator draws its
    worker seed from the global RNG once per run instead of once per epoch, so a run resumed from a checkpoint would
    no longer end with the weights of an uninterrupted one (tests/test_resume.py caught this)."""
    from .training import default_dataloader_num_workers

    if "dataloader_num_workers" in given:
        return
    training_args.dataloader_num_workers = default_dataloader_num_workers(data_args)
    logger.info(
        "dataloader_num_workers=%d (vidgpt2's default for this input; pass --dataloader_num_workers to choose)",
        training_args.dataloader_num_workers,
    )


# --- evaluate ---------------------------------------------------------------------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    parser = _model_command_parser(
        "evaluate", "Caption a test set and score it (COCO metrics).", "vidgpt2 checkpoint (id or folder)."
    )
    parser.add_argument("--test-file", required=True, help="Captions file (JSONL/CSV) with references.")
    parser.add_argument("--num-beams", type=int, default=1, help="Beam width.")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Caption length limit.")
    _add_engine_arguments(parser)
    parser.add_argument("--feature-cache", help="Read features from this cache instead of decoding videos.")
    parser.add_argument("--output", help="Write metrics JSON here.")
    parser.add_argument("--predictions", help="Write predictions JSONL (video, prediction, references) here.")
    _add_data_check_arguments(parser)
    parser.add_argument(
        "--no-java", action="store_true",
        help="Skip Java: Python PTB-equivalent tokenisation, METEOR not reported (faster; default uses Java if installed).",
    )
    args = parser.parse_args(argv)
    from .captioning import Clip, caption_videos, process_state
    from .data import load_captions_files
    from .data.feature_cache import FeatureCache
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .sources import check_checkpoint_source
    from .training import score_split

    check_checkpoint_source(args.model, "model")
    test = load_captions_files(test_file=args.test_file)["test"]
    cache = FeatureCache(Path(args.feature_cache)) if args.feature_cache else None
    test = _checked({"test": test}, args, feature_cache=cache)["test"]
    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model)
    processor = VidGPT2Processor.from_pretrained(args.model)
    if cache is not None:
        cache.check_compatible(model)
    clips = [Clip(v, s, e) for v, s, e in zip(test["video"], test["start"], test["end"], strict=True)]
    rows = caption_videos(
        clips, model, processor, feature_cache=cache, **_engine_kwargs(args), **_generate_kwargs(args),
    )
    is_main = process_state(args.device).is_main_process
    captions = {(r["video"], r["start"], r["end"]): r["caption"] for r in rows if "caption" in r}
    good = [i for i, clip in enumerate(clips) if clip.key in captions]  # clips captioned, in test-file order
    predictions = [captions[clips[i].key] for i in good]
    if is_main and args.predictions:
        references = test["references"]
        _write_jsonl(
            Path(args.predictions),
            [
                {"video": clips[i].video, "start": clips[i].start, "end": clips[i].end, "prediction": p,
                 "references": list(references[i])}
                for i, p in zip(good, predictions, strict=True)
            ],
        )
    failed = [r for r in rows if "error" in r]
    if failed and is_main:
        for row in failed:
            print(f"FAILED {_clip_name(row)}: {row['error']}", file=sys.stderr)
    if failed and (args.on_bad_video == "error" or not good):
        if is_main:
            print(
                f"{len(failed)} of {len(rows)} test clips could not be captioned: no metrics"
                + (f" (predictions of the other {len(good)} in {args.predictions})" if args.predictions and good else "")
                + ("; pass --on-bad-video skip to score the others." if good and args.on_bad_video == "error" else "."),
                file=sys.stderr,
            )
        return 1
    if failed and is_main:
        print(
            f"warning: {len(failed)} of {len(rows)} test clips could not be captioned (--on-bad-video skip): "
            f"metrics over the other {len(good)}.",
            file=sys.stderr,
        )
    metrics = score_split(predictions, test.select(good) if failed else test, False if args.no_java else None)
    if not is_main:
        return 0
    if args.output:
        _write_json(Path(args.output), metrics)
    print_metrics_table(metrics)
    return 0


# --- caption ----------------------------------------------------------------------------------------------------------
def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Batching, decoding workers, device and precision: shared by `caption` and `evaluate`."""
    parser.add_argument("--batch-size", type=int, default=8, help="Clips per generate call.")
    parser.add_argument(
        "--num-workers", type=int, default=None,
        help="Processes decoding videos beside the model (default: the CPU cores of this process, minus one, at most 8; 0 = decode in the main process).",
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: this process's GPU if any, else cpu).")
    parser.add_argument(
        "--dtype", "--precision", dest="dtype", type=_dtype_name, choices=["auto", "fp32", "bf16", "fp16", "int8"],
        default="auto",
        help="Precision (float32/bfloat16/float16 are accepted too). auto = bf16 (else fp16) autocast on GPUs, fp32 "
        "(exact) on CPU. On CPU (BENCHMARKS.md): int8 (decoder dynamically quantised) for single videos and small "
        "batches, 1.4x at batch 1 with ~2%% of captions changed; bf16 only for large batches on CPUs with bf16 "
        "instructions (1.3x at batch 16, 0.5x at batch 1); for exact and faster batches use `vidgpt2 export onnx`.",
    )


def _dtype_name(value: str) -> str:
    """`--dtype` value, with the long names `vidgpt2 app --precision` uses mapped to the short ones."""
    from .captioning import DTYPE_ALIASES

    return DTYPE_ALIASES.get(value, value)


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"batch_size": args.batch_size, "num_workers": args.num_workers, "device": args.device, "dtype": args.dtype}


def _generate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    generate_kwargs: dict[str, Any] = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        generate_kwargs["max_new_tokens"] = args.max_new_tokens
    return generate_kwargs


def _clip_name(row: dict[str, Any]) -> str:
    if row.get("start") is None and row.get("end") is None:
        return row["video"]
    end = "" if row.get("end") is None else f"{row['end']:.3f}"
    return f"{row['video']} [{row.get('start') or 0:.3f}-{end}]"


def cmd_caption(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vidgpt2 caption",
        description="Caption videos: files, folders, glob patterns, manifests or URLs; whole or in windows.",
    )
    parser.add_argument(
        "videos", nargs="+",
        help="Video files, folders (searched recursively for video files), glob patterns (quoted, ** recurses), "
        "captions/manifest files (.jsonl/.json/.csv with a video column, as train reads) or http(s) URLs.",
    )
    parser.add_argument("--model", required=True, help="vidgpt2 checkpoint (Hub id or folder).")
    parser.add_argument("--num-beams", type=int, default=1, help="Beam width (1 = greedy).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Caption length limit in tokens.")
    parser.add_argument(
        "--output", metavar="FILE.jsonl",
        help="Write one JSON row per clip here as it goes; rerun with the same file to skip what is done.",
    )
    parser.add_argument(
        "--format", action="append", choices=["jsonl", "csv", "srt", "vtt"], dest="formats",
        help="Also write CSV (next to --output) or SRT/WebVTT subtitles (one per video, beside it; a URL's beside --output); "
        "an existing subtitle file that no run into this --output wrote is refused; repeatable.",
    )
    parser.add_argument("--subtitle-dir", help="Write the subtitle files here instead of beside the videos.")
    parser.add_argument("--segment-seconds", type=float, help="Caption consecutive windows of this many seconds.")
    parser.add_argument("--stride", type=float, help="Seconds between window starts (default: --segment-seconds).")
    _add_engine_arguments(parser)
    parser.add_argument("--explain", metavar="DIR", help="Also write an explanation figure (PNG, HTML, JSON) per clip here.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object per clip instead of text.")
    args = parser.parse_args(argv)
    if args.stride is not None and args.segment_seconds is None:
        parser.error("--stride needs --segment-seconds")
    if args.formats and "csv" in args.formats and not args.output:
        parser.error("--format csv needs --output FILE.jsonl (the CSV is written next to it)")
    from .captioning import caption_videos, process_state
    from .sources import check_checkpoint_source

    check_checkpoint_source(args.model, "model")
    state = process_state(args.device)
    single = state.num_processes == 1

    def show(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if args.json:
                print(json.dumps(row, ensure_ascii=False), flush=True)
            elif "error" in row:
                print(f"FAILED {_clip_name(row)}: {row['error']}", file=sys.stderr, flush=True)
            else:
                print(f"{_clip_name(row)}: {row['caption']}", flush=True)

    # bad inputs or settings (a pattern matching nothing, a refused resume, a subtitle file in the way) raise before
    # anything is captioned: `run_command` prints "vidgpt2 caption: error: ..." and exits 1, as for any mistake
    rows = caption_videos(
        args.videos, args.model, output=args.output, formats=args.formats or ["jsonl"],
        subtitle_dir=args.subtitle_dir, segment_seconds=args.segment_seconds, stride=args.stride,
        explain_dir=args.explain, on_rows=show if single and not args.output else None,
        **_engine_kwargs(args), **_generate_kwargs(args),
    )
    failures = sum("error" in row for row in rows)
    if state.is_main_process:
        if not single and not args.output:
            show(rows)
        if args.output:
            print(f"{len(rows) - failures} clips captioned, {failures} failed: {args.output}", file=sys.stderr)
        if args.explain and failures < len(rows):
            print(f"explanations written to {args.explain}", file=sys.stderr)
    return 1 if failures else 0


# --- push -------------------------------------------------------------------------------------------------------------
class SpaceUploadError(RuntimeError):
    """The model was pushed, the Space upload after it failed; the message says how to retry the Space alone."""


def cmd_push(argv: list[str]) -> int:
    parser = _model_command_parser(
        "push", "Publish a model folder to the Hugging Face Hub.", "Folder from save_pretrained or `vidgpt2 train`."
    )
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/vidgpt2-msvd.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--overwrite-model-card", action="store_true", help="Replace an existing README.md.")
    parser.add_argument("--commit-message", default=None, help="Commit message.")
    parser.add_argument(
        "--dry-run", nargs="?", const="", metavar="DIR",
        help="Upload nothing: write the exact folder that would be uploaded (weights, processor, code, model card) "
        "to DIR (new or empty), or to a new temporary folder whose path is printed.",
    )
    parser.add_argument(
        "--space", metavar="USER/SPACE",
        help="After the model, publish the `vidgpt2 app` page for it as a Gradio Space (created if missing): app.py, "
        "README.md, requirements.txt and a copy of the vidgpt2 package (not on PyPI). Needs --repo-id as USER/NAME "
        "and Gradio installed. With --dry-run the Space folder is written to a temporary folder instead.",
    )
    args = parser.parse_args(argv)
    from .hub import push_to_hub

    space_dir = _prepare_space(args) if args.space else None
    if args.dry_run is not None:
        import tempfile

        folder = args.dry_run or tempfile.mkdtemp(prefix="vidgpt2-push-dry-run-")
        push_to_hub(args.model, args.repo_id, dry_run=folder)
        print(f"dry run, nothing uploaded: the folder for {args.repo_id} is {folder}")
        if space_dir is not None:
            print(f"dry run, nothing uploaded: the Space folder for {args.space} is {space_dir}")
        return 0
    try:
        url = push_to_hub(
            args.model,
            args.repo_id,
            private=args.private,
            overwrite_model_card=args.overwrite_model_card,
            commit_message=args.commit_message,
        )
        print(url)
        if space_dir is not None:
            print(_upload_space(space_dir, args, url))
    finally:
        if space_dir is not None:
            import shutil

            shutil.rmtree(space_dir, ignore_errors=True)
    return 0


def _prepare_space(args: argparse.Namespace) -> Path:
    """Check the ids and write the Space folder before the model is pushed, so that a bad `--space` (or no Gradio)
    stops the command before anything is uploaded."""
    import tempfile

    try:
        from .app import check_space_ids, write_space
    except ImportError as error:
        raise RuntimeError(f"vidgpt2 push --space needs Gradio: pip install 'vidgpt2[app]' ({error})") from error
    check_space_ids(args.repo_id, args.space)
    folder = Path(tempfile.mkdtemp(prefix="vidgpt2-space-"))
    try:
        write_space(args.repo_id, folder)
    except ImportError as error:  # gradio, whose version goes into the Space's sdk_version
        raise RuntimeError(f"vidgpt2 push --space needs Gradio: pip install 'vidgpt2[app]' ({error})") from error
    if args.private:
        logger.warning(
            "%s is private: the Space %s can load it only with an HF_TOKEN secret that can read it (Space settings, "
            "Variables and secrets); the Space is created private too.", args.repo_id, args.space,
        )
    return folder


def _upload_space(folder: Path, args: argparse.Namespace, model_url: str) -> str:
    from .app import upload_space

    try:
        return upload_space(folder, args.space, private=args.private)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpaceUploadError(
            f"the model is pushed ({model_url}), but uploading the Space {args.space} failed: {reason}. Retry the "
            f"Space alone (the model is not uploaded again): vidgpt2 app --model {args.repo_id} --push-space {args.space}"
        ) from error


# --- export -----------------------------------------------------------------------------------------------------------
def cmd_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vidgpt2 export",
        description="Export a model for another runtime. `onnx`: the video encoder, the decoder and the decoder with "
        "past key values (optimum's split and names), checked against PyTorch, plus the processor; caption with "
        "vidgpt2.onnx.OnnxVidGPT2Captioner.",
    )
    parser.add_argument("format", choices=["onnx"], help="Export format.")
    parser.add_argument("--model", required=True, help="vidgpt2 checkpoint (Hub id or folder).")
    parser.add_argument("--output", required=True, help="Folder for the .onnx files, config and processor.")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18).")
    parser.add_argument(
        "--atol", type=float, default=None,
        help="Largest allowed |PyTorch - onnxruntime| on visual tokens and logits (default 1e-4).",
    )
    parser.add_argument("--no-validate", action="store_true", help="Skip the comparison with PyTorch.")
    parser.add_argument(
        "--int8", metavar="DIR",
        help="Also write a copy whose decoders are dynamically quantised to int8 (onnxruntime) to DIR.",
    )
    args = parser.parse_args(argv)
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .onnx import DEFAULT_ATOL, DEFAULT_OPSET, export_onnx, quantize_onnx
    from .processing_vidgpt2 import VidGPT2Processor

    model = VidGPT2ForConditionalGeneration.from_pretrained(args.model).eval()
    processor = VidGPT2Processor.from_pretrained(args.model)
    report = export_onnx(
        model, args.output, processor, opset=args.opset or DEFAULT_OPSET, atol=args.atol or DEFAULT_ATOL,
        validate=not args.no_validate,
    )
    print(f"ONNX graphs in {report.output_dir}: {', '.join(report.files)}")
    if report.max_abs_diff:
        print(f"max |PyTorch - onnxruntime|: {report.max_abs_diff} (atol {report.atol}); greedy tokens identical")
    if args.int8:
        print(f"int8 decoders in {quantize_onnx(args.output, args.int8)}")
    return 0


# --- app ----------------------------------------------------------------------------------------------------------------
def cmd_app(argv: list[str]) -> int:
    parser = _model_command_parser(
        "app",
        "Serve a Gradio page that captions an uploaded video and explains the caption word by word "
        "(needs the `app` extra: pip install 'vidgpt2[app]').",
        "vidgpt2 checkpoint (Hub id or folder).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: Gradio's, 7860 or the next free one).")
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link.")
    parser.add_argument(
        "--precision", "--dtype", dest="precision", type=_precision_name, choices=["float32", "bfloat16", "int8"],
        default=None,
        help="Precision of the caption step on CPU (default float32; fp32/bf16 are accepted too; see BENCHMARKS.md). "
        "Explanations run in fp32. With --write-space/--push-space it is written into the Space's app.py.",
    )
    parser.add_argument(
        "--write-space", metavar="DIR",
        help="Do not serve: write a Hugging Face Space (app.py, requirements.txt, README.md and a copy of the vidgpt2 "
        "package) for --model (a Hub id) to DIR; upload it with `hf upload --repo-type space USER/SPACE DIR`.",
    )
    parser.add_argument(
        "--push-space", metavar="USER/SPACE",
        help="Do not serve: write that Space for --model (a pushed Hub model, USER/NAME) and upload it to USER/SPACE "
        "(a Gradio Space, created if missing).",
    )
    args = parser.parse_args(argv)
    try:
        from . import app
    except ImportError as error:  # gradio missing
        raise RuntimeError(f"vidgpt2 app needs Gradio: pip install 'vidgpt2[app]' ({error})") from error
    precision = args.precision or app.DEFAULT_PRECISION
    if args.write_space:
        for path in app.write_space(args.model, args.write_space, precision=precision):
            print(path)
        return 0
    if args.push_space:
        print(app.push_space(args.model, args.push_space, precision=precision))
        return 0
    app.launch(args.model, host=args.host, port=args.port, share=args.share, precision=args.precision or app.DEFAULT_PRECISION)
    return 0


def _precision_name(value: str) -> str:
    """`app --precision` value, with the short names `caption --dtype` uses mapped to the long ones."""
    return {"fp32": "float32", "bf16": "bfloat16"}.get(value, value)


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
    "extract-frames": cmd_extract_frames,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "caption": cmd_caption,
    "push": cmd_push,
    "export": cmd_export,
    "app": cmd_app,
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
_PLAIN_ERRORS = {
    "ValueError", "FileNotFoundError", "DataCheckError", "PushToHubError", "RuntimeError", "SpaceUploadError"
}


if __name__ == "__main__":
    sys.exit(main())
