"""The pixel path: training steps/s from video files, from the frame cache and from pre-decoded tensors.

A small from-scratch model whose vision tower trains (`MODEL_CONFIG`: the demo-size ResNet + GPT-2 on 12 frames of
64x64) under the same `Seq2SeqTrainer` + `VideoCaptionCollator` as `vidgpt2 train`, batch 32, in these variants:

- files, `dataloader_num_workers` = 0, 1, 2: every step decodes its 32 clips (PyAV + resize + crop + normalise);
- frame cache (`vidgpt2 extract-frames`): every step reads 32 memory-mapped uint8 clips and normalises them;
- pre-decoded tensors in memory: the normalised `pixel_values_videos` of every clip, indexed by the collator
  (the upper bound: no decoding, no reading).

Variants take turns, round by round, so that load changes hit all of them. Per variant and round: `warmup` untimed
steps, then `steps` timed steps (wall clock between the Trainer's `on_step_end` callbacks, so data loading counts),
and the CPU seconds of the process and its DataLoader workers over the same steps.

    python benchmarks/bench_pixel_path.py [--quick]

Prints a markdown table; writes benchmarks/results/bench_pixel_path.json (bench_pixel_path_quick.json with --quick).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CACHE_DIR,
    begin_run,
    load_average,
    markdown_table,
    parse_args,
    setup_torch,
    small_model_config,
    synthetic_dataset,
    write_results,
)

# demo-size model (small_model_config) at the 12 frames of 64x64; the tower trains
MODEL_CONFIG: dict[str, Any] = small_model_config(12, visual_tokens="pooled")
BATCH = 32


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant and round (default 8).")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds over the variants (default 3).")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=None,
        help="dataloader_num_workers of the from-files variants (default 0 1 2; none: caches only)."
    )


class StepTimer:
    """Trainer callback: wall time and CPU time (this process + its DataLoader workers) at each step end."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.marks: list[tuple[float, float]] = []

    def cpu_seconds(self) -> float:
        total = sum(self.process.cpu_times()[:2])
        for child in self.process.children(recursive=True):
            with contextlib.suppress(Exception):  # a worker may exit between listing and reading
                total += sum(child.cpu_times()[:2])
        return total

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                timer.marks.append((time.perf_counter(), timer.cpu_seconds()))

            def on_step_end(self, args, state, control, **kwargs):
                timer.marks.append((time.perf_counter(), timer.cpu_seconds()))

        return _Callback()


def make_data(num_clips: int, seed: int) -> Path:
    data_dir = synthetic_dataset(
        CACHE_DIR / "synthetic_64_f12" / f"n{num_clips}_seed{seed}", "train.jsonl",
        num_train=num_clips, num_validation=0, num_test=0, num_frames=12, size=64, seed=seed,
    )
    return data_dir / "train.jsonl"


def run_variant(model_state, build, train, collator, workers: int, steps: int, warmup: int, out: Path) -> dict:
    """One Trainer run of `warmup + steps` steps from the same initial weights; steps/s and CPU s/step."""
    from transformers import Seq2SeqTrainer

    from vidgpt2.demo import demo_training_arguments
    from vidgpt2.training import _configure_args

    model = build()
    model.load_state_dict(model_state)
    args = demo_training_arguments(
        out, per_device_train_batch_size=BATCH, max_steps=warmup + steps, warmup_steps=0, logging_steps=10_000,
        disable_tqdm=True, dataloader_num_workers=workers, dataloader_persistent_workers=workers > 0,
    )
    _configure_args(args, has_eval=False)
    timer = StepTimer()
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                             callbacks=[timer.callback()])
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    (t0, c0), (t1, c1) = timer.marks[warmup], timer.marks[warmup + steps]
    return {"steps_per_s": steps / (t1 - t0), "cpu_s_per_step": (c1 - c0) / steps, "wall_s": t1 - t0}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    setup_torch(args.threads, args.seed)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from vidgpt2.data import load_captions_files
    from vidgpt2.data.collator import VideoCaptionCollator
    from vidgpt2.data.feature_cache import iter_samples
    from vidgpt2.data.frame_cache import extract_frames
    from vidgpt2.training import ModelArguments, build_model_and_processor

    steps = args.steps or (3 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 2
    workers_list = args.workers if args.workers is not None else ([0, 1] if args.quick else [0, 1, 2])
    run_info, _ = begin_run("bench_pixel_path", args)

    train_file = make_data(BATCH * (warmup + steps), args.seed)
    train = load_captions_files(train_file=train_file)["train"]
    captions = list(train["caption"])

    def build():
        torch.manual_seed(args.seed)
        return build_model_and_processor(
            ModelArguments(config=dict(MODEL_CONFIG), build_tokenizer=True), captions, 24
        )[0]

    model, processor = build_model_and_processor(
        ModelArguments(config=dict(MODEL_CONFIG), build_tokenizer=True), captions, 24
    )
    state = {k: v.clone() for k, v in build().state_dict().items()}
    trainable_tower = any(p.requires_grad for p in model.encoder.vision_tower.parameters())
    if not trainable_tower:
        raise RuntimeError("the benchmark needs a vision tower that trains")
    work = CACHE_DIR / "pixel_path"
    shutil.rmtree(work, ignore_errors=True)

    start = time.perf_counter()
    cache = extract_frames(processor.video_processor, iter_samples(train), work / "frames", show_progress=False)
    extract_s = time.perf_counter() - start

    class PreDecodedCollator(VideoCaptionCollator):
        """Rows -> the same batch as VideoCaptionCollator, with `pixel_values_videos` taken from memory."""

        pixels: dict[str, torch.Tensor] = {}

        def _decode(self, rows):
            return torch.stack([self.pixels[r["video"]] for r in rows])  # (B, T, 3, H, W)

    decoded = VideoCaptionCollator(processor)._decode(list(train))  # (N, T, 3, H, W)
    PreDecodedCollator.pixels = dict(zip(train["video"], decoded))
    variants: dict[str, tuple[Any, int]] = {f"files, {w} workers": (VideoCaptionCollator(processor), w) for w in workers_list}
    variants["frame cache, 0 workers"] = (VideoCaptionCollator(processor, frame_cache=cache), 0)
    variants["pre-decoded tensors in memory"] = (PreDecodedCollator(processor), 0)

    load_before = load_average()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, (collator, workers) in variants.items():
            print(f"  round {round_index + 1}/{rounds}: {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_variant(state, build, train, collator, workers, steps, warmup, work / "run"))
    load_after = load_average()

    reference = "pre-decoded tensors in memory"
    rows, results = [], {}
    for name, measured in runs.items():
        ratios = [m["steps_per_s"] / r["steps_per_s"] for m, r in zip(measured, runs[reference])]
        results[name] = {
            "runs": measured,
            "steps_per_s_median": statistics.median(m["steps_per_s"] for m in measured),
            "cpu_s_per_step_median": statistics.median(m["cpu_s_per_step"] for m in measured),
            "vs_pre_decoded_median": statistics.median(ratios),
            "vs_pre_decoded_range": [min(ratios), max(ratios)],
        }
        r = results[name]
        rows.append([
            name, f"{r['steps_per_s_median']:.2f}", f"{r['cpu_s_per_step_median']:.2f}",
            f"**{r['vs_pre_decoded_median']:.2f}x**" if name != reference else "1.00x",
            f"{r['vs_pre_decoded_range'][0]:.2f}-{r['vs_pre_decoded_range'][1]:.2f}",
        ])
    print(
        f"\n## Training from files vs frame cache vs pre-decoded tensors\n\nModel: {json.dumps(MODEL_CONFIG)}; "
        f"batch {BATCH}, {steps} timed steps after {warmup} warm-up steps, {rounds} rounds; "
        f"load average before {load_before}, after {load_after}.\n"
    )
    print(markdown_table(
        ["training input", "steps/s", "CPU s/step (process + workers)", "vs pre-decoded (median)", "per-round range"],
        rows,
    ))
    print(f"\nFrame-cache extraction: {len(train)} clips in {extract_s:.1f} s ({len(train) / extract_s:.1f} clips/s).")
    out = {
        **run_info, "model_config": MODEL_CONFIG, "batch": BATCH,
        "steps": steps, "warmup": warmup, "rounds": rounds, "variants": results,
        "extraction": {"clips": len(train), "seconds": extract_s},
        "load_average_before_after": [load_before, load_after], "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = write_results("bench_pixel_path_quick" if args.quick else "bench_pixel_path", out)
    print(f"\nResults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
