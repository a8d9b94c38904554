"""Training cost and learning quality of vidgpt2 on this machine (CPU).

1. Throughput: training samples/s of the full-size model (ResNet-50 frozen + GPT-2 small, random init) from pixels
   vs from the feature cache, with a manual loop (collator -> forward -> backward -> AdamW step), and the frames/s
   of `extract_features` that fills the cache.
2. Learning quality on synthetic clips: a small from-scratch model (`BENCH_CONFIG`, 64x64 frames) trained with
   `vidgpt2.training.run_training` in five variants (pooled/spatial tokens x temporal embeddings on/off, and the
   text-only baseline on blank frames) on the same data, steps, batch, schedule and seed; exact match, BLEU-4 and
   CIDEr per caption family on the held-out test split (from `evaluate_dataset` predictions).

    python benchmarks/bench_training.py [--quick]

Prints markdown tables; writes benchmarks/results/bench_training.json (bench_training_quick.json with --quick).
Synthetic clips and training runs are kept in benchmarks/.cache/.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    begin_run,
    finish_run,
    full_size_model_and_processor,
    load_average,
    markdown_table,
    parse_args,
    setup_torch,
    small_model_config,
    summary,
    synthetic_dataset,
)

# The small from-scratch model of the quality runs (see small_model_config): at 64 px "spatial" is 4 tokens per
# frame; at the demo's current 32 px the grid would be 1x1 and "spatial" would be "pooled" plus one embedding.
BENCH_CONFIG: dict[str, Any] = small_model_config(8, visual_dropout=0.1)
QUALITY_VARIANTS = {
    # name: (config overrides, blank_video)
    "pooled + temporal": ({"visual_tokens": "pooled", "temporal_embeddings": True}, False),
    "pooled, no temporal": ({"visual_tokens": "pooled", "temporal_embeddings": False}, False),
    "spatial + temporal": ({"visual_tokens": "spatial", "temporal_embeddings": True}, False),
    "spatial, no temporal": ({"visual_tokens": "spatial", "temporal_embeddings": False}, False),
    "text-only (blank frames)": ({"visual_tokens": "pooled", "temporal_embeddings": True}, True),
}


def add_arguments(parser) -> None:
    parser.add_argument(
        "--num-train", type=int, default=None, help="Quality runs: training clips (default 800; quick 64)."
    )
    parser.add_argument("--num-test", type=int, default=None, help="Quality runs: test clips (default 160; quick 32).")
    parser.add_argument("--epochs", type=float, default=None, help="Quality runs: epochs (default 8; quick 2).")
    parser.add_argument(
        "--noise-seeds",
        type=int,
        default=None,
        help="Quality runs: retrain the first variant with this many more training seeds (default 2; quick 0).",
    )
    parser.add_argument(
        "--meteor",
        action="store_true",
        help="Let run_training/evaluate_dataset score with Java (PTB tokenizer + METEOR, 10-15 s per call, 2 calls "
        "per variant). Default: use_java=False, vidgpt2's Python tokenisation and no METEOR (BLEU/CIDEr unchanged "
        "on ordinary captions).",
    )
    parser.add_argument(
        "--only", choices=["throughput", "quality"], default=None, help="Run one part only (default: both)."
    )


# --- 1. throughput -----------------------------------------------------------------------------------------------------
def bench_throughput(quick: bool, seed: int) -> tuple[str, dict[str, Any]]:
    import torch

    from vidgpt2.data import load_captions_files
    from vidgpt2.data.collator import VideoCaptionCollator
    from vidgpt2.data.feature_cache import extract_features, iter_samples

    batch = 2 if quick else 4
    steps = 2 if quick else 5  # timed steps per source, after one warm-up step each
    num_clips = batch * (steps + 1)
    data_dir = synthetic_dataset(
        CACHE_DIR / "synthetic_224" / f"n{num_clips}_seed{seed}", "train.jsonl",
        num_train=num_clips, num_validation=0, num_test=0, size=224, seed=seed,
    )
    train = load_captions_files(train_file=data_dir / "train.jsonl")["train"]
    rows = [train[i] for i in range(len(train))]

    torch.manual_seed(seed)
    model, processor = full_size_model_and_processor([r["caption"] for r in rows])
    processor.max_caption_length = 24
    frames_per_clip = model.config.num_frames

    # extraction: the vision tower once per clip into a fresh cache folder
    cache_dir = CACHE_DIR / "feature_cache" / f"n{num_clips}_seed{seed}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    cache = extract_features(model, processor, iter_samples(rows), cache_dir, batch_size=8, show_progress=False)
    extract_s = time.perf_counter() - start
    extract_fps = len(rows) * frames_per_clip / extract_s

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)  # what the Trainer uses (adamw_torch_fused)
    collators = {
        "pixels": VideoCaptionCollator(processor),
        "feature cache": VideoCaptionCollator(processor, feature_cache=cache),
    }
    model.train()
    times: dict[str, dict[str, list[float]]] = {k: {"data": [], "compute": []} for k in collators}
    for step in range(steps + 1):  # step 0 warms up; sources alternate so load drift hits both
        chunk = rows[step * batch : (step + 1) * batch]
        for name, collator in collators.items():
            t0 = time.perf_counter()
            inputs = collator(chunk)
            t1 = time.perf_counter()
            loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"non-finite loss {loss.item()} training from {name}")
            if step > 0:
                times[name]["data"].append(t1 - t0)
                times[name]["compute"].append(t2 - t1)

    results: dict[str, Any] = {
        "model": "default VidGPT2Config (ResNet-50 frozen + GPT-2 small, vocab 50257), random init",
        "trainable_parameters": sum(p.numel() for p in trainable),
        "batch": batch,
        "num_frames": frames_per_clip,
        "image_size": 224,
        "timed_steps": steps,
        "loop": "manual: collator(rows) -> model(**batch).loss.backward() -> AdamW(fused).step() -> zero_grad",
        "extraction": {"clips": len(rows), "seconds": extract_s, "frames_per_s": extract_fps, "batch_size": 8},
    }
    rows_out = []
    for name, t in times.items():
        step_times = [a + b for a, b in zip(t["data"], t["compute"])]
        median = statistics.median(step_times)
        results[name] = {
            "step": summary(step_times),
            "data": summary(t["data"]),
            "compute": summary(t["compute"]),
            "samples_per_s": batch / median,
        }
        rows_out.append(
            [
                name,
                f"{statistics.median(t['data']) * 1000:.0f}",
                f"{statistics.median(t['compute']) * 1000:.0f}",
                f"{median * 1000:.0f}",
                f"{batch / median:.2f}",
            ]
        )
    speedup = results["feature cache"]["samples_per_s"] / results["pixels"]["samples_per_s"]
    results["speedup_cache_vs_pixels"] = speedup
    table = markdown_table(
        ["training input", "data ms/step", "compute ms/step", "total ms/step", "samples/s"], rows_out
    )
    table += (
        f"\n\nFeature cache speedup: {speedup:.1f}x. Extraction (`extract_features`, batch 8): {len(rows)} clips x "
        f"{frames_per_clip} frames in {extract_s:.1f} s = {extract_fps:.1f} frames/s "
        "(decode + preprocess + ResNet-50 + write)."
    )
    return table, results


# --- 2. learning quality -----------------------------------------------------------------------------------------------
def exact_match(prediction: str, reference: str) -> bool:
    return prediction.strip().lower() == reference.strip().lower()


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


from vidgpt2.data import order_outcome  # noqa: E402  (shared definition)


def scores(predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    from vidgpt2.metrics import compute_caption_metrics

    # python tokenisation and no METEOR: one Java start per family and variant would cost ~10 s each
    metrics = compute_caption_metrics(predictions, references, use_java=False)
    hits = sum(exact_match(p, r[0]) for p, r in zip(predictions, references))
    outcomes = [order_outcome(p, r[0]) for p, r in zip(predictions, references)]
    correct, reversed_ = outcomes.count("correct"), outcomes.count("reversed")
    decided = correct + reversed_
    return {
        "n": len(predictions),
        "exact_match": hits / len(predictions),
        "exact_match_95ci": wilson_interval(hits, len(predictions)),
        "bleu_4": metrics["bleu_4"],
        "cider": metrics["cider"],
        "order_decided": decided,
        "order_accuracy": correct / decided if decided else None,
        "order_accuracy_95ci": wilson_interval(correct, decided) if decided else None,
    }


def reversal_test(model, processor, dataset, predictions: list[str], batch_size: int = 32) -> list[dict[str, bool]]:
    """Caption every clip again with its frames in reverse order (greedy, same settings as `predictions`).

    An order-aware captioner changes its caption, ideally into the time-reversed one ("grows" -> "shrinks"); an
    order-blind one says the same thing. Per clip: {"unchanged": ..., "became_reversed": ...}.
    """
    import torch

    from vidgpt2.data import time_reversed_caption
    from vidgpt2.data.collator import VideoCaptionCollator

    collator = VideoCaptionCollator(processor, caption_column="__none__")
    model.eval()
    flipped: list[str] = []
    for begin in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))]
        pixels = collator(rows)["pixel_values_videos"].flip(1)  # (B, T, 3, H, W), frames in reverse order
        with torch.inference_mode():
            flipped.extend(processor.batch_decode(model.generate(pixel_values_videos=pixels)))
    outcome = []
    for original, reverse in zip(predictions, flipped, strict=True):
        try:
            expected = time_reversed_caption(original)
        except ValueError:  # not a well-formed synthetic caption
            expected = None
        outcome.append({"unchanged": reverse == original, "became_reversed": reverse == expected})
    return outcome


def train_variant(
    overrides: dict[str, Any],
    blank_video: bool,
    data: dict[str, Path],
    run_dir: Path,
    sizes: dict,
    seed: int,
    meteor: bool,
) -> dict[str, Any]:
    """Train one variant with `run_training` (test split evaluated there), then score `evaluate_dataset`'s
    predictions on the test split overall and per caption family."""
    from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor
    from vidgpt2.data import caption_family, load_captions_files
    from vidgpt2.demo import demo_training_arguments
    from vidgpt2.training import DataArguments, LoraArguments, ModelArguments, evaluate_dataset, run_training

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps({**BENCH_CONFIG, **overrides}, indent=2))
    training_args = demo_training_arguments(
        run_dir / "model", epochs=sizes["epochs"], seed=seed, data_seed=seed, logging_steps=25, disable_tqdm=True
    )
    start = time.perf_counter()
    # the Trainer prints its logs to stdout (PrinterCallback); stdout is this script's report
    with contextlib.redirect_stdout(sys.stderr):
        metrics = run_training(
            ModelArguments(config=str(config_path), build_tokenizer=True),
            DataArguments(
                train_file=str(data["train"]),
                test_file=str(data["test"]),
                max_caption_length=24,
                blank_video=blank_video,
                use_java=meteor,
            ),
            LoraArguments(),
            training_args,
        )
    train_s = time.perf_counter() - start

    model = VidGPT2ForConditionalGeneration.from_pretrained(run_dir / "model")
    processor = VidGPT2Processor.from_pretrained(run_dir / "model")
    test = load_captions_files(test_file=data["test"])["test"]
    with contextlib.redirect_stdout(sys.stderr):
        rows, overall = evaluate_dataset(
            model, processor, test, batch_size=32, use_java=meteor, show_progress=False, blank_video=blank_video
        )
    if not blank_video:  # blank frames reversed are the same blank frames
        with contextlib.redirect_stdout(sys.stderr):
            for row, outcome in zip(rows, reversal_test(model, processor, test, [r["prediction"] for r in rows])):
                row.update(outcome)
    with open(run_dir / "predictions.jsonl", "w") as f:
        f.writelines(json.dumps({k: v for k, v in r.items() if k not in ("start", "end")}) + "\n" for r in rows)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_family.setdefault(caption_family(row["references"][0]) or "other", []).append(row)

    def reversal(subset: list[dict[str, Any]]) -> dict[str, float] | None:
        if blank_video:
            return None
        return {
            "unchanged": sum(r["unchanged"] for r in subset) / len(subset),
            "became_reversed": sum(r["became_reversed"] for r in subset) / len(subset),
        }

    result = {
        "config_overrides": overrides,
        "seed": seed,
        "blank_video": blank_video,
        "train_and_test_eval_s": train_s,
        "train_runtime_s": metrics.get("train_runtime"),
        "train_samples_per_s": metrics.get("train_samples_per_second"),
        "train_loss": metrics.get("train_loss"),
        "run_training_test_metrics": {k: v for k, v in metrics.items() if k.startswith("test_")},
        "evaluate_dataset_metrics": overall,
        "all": {
            **scores([r["prediction"] for r in rows], [r["references"] for r in rows]),
            "frames_reversed": reversal(rows),
        },
        "families": {
            family: {
                **scores([r["prediction"] for r in fam_rows], [r["references"] for r in fam_rows]),
                "frames_reversed": reversal(fam_rows),
            }
            for family, fam_rows in sorted(by_family.items())
        },
        "examples": [{"prediction": r["prediction"], "reference": r["references"][0]} for r in rows[:6]],
    }
    return result


def bench_quality(args) -> tuple[str, dict[str, Any]]:
    from vidgpt2.data import CAPTION_FAMILIES

    # full mode = the `vidgpt2 demo` recipe: 800 clips x 8 epochs = 400 steps of batch 16
    sizes = {
        "num_train": args.num_train or (64 if args.quick else 800),
        "num_test": args.num_test or (32 if args.quick else 160),
        "epochs": args.epochs or (2 if args.quick else 8),
    }
    sizes["steps"] = math.ceil(math.ceil(sizes["num_train"] / 16) * sizes["epochs"])
    noise_seeds = args.noise_seeds if args.noise_seeds is not None else (0 if args.quick else 2)
    data_dir = synthetic_dataset(
        CACHE_DIR / "synthetic_64" / f"train{sizes['num_train']}_test{sizes['num_test']}_seed{args.seed}", "test.jsonl",
        num_train=sizes["num_train"], num_validation=0, num_test=sizes["num_test"], size=64, seed=args.seed,
    )
    data = {"train": data_dir / "train.jsonl", "test": data_dir / "test.jsonl"}
    runs = [(name, overrides, blank, args.seed) for name, (overrides, blank) in QUALITY_VARIANTS.items()]
    # the first variant again with other training seeds (same data): how much of a difference is seed noise
    base_name, (base_overrides, base_blank) = next(iter(QUALITY_VARIANTS.items()))
    runs += [
        (f"{base_name}, seed {args.seed + i}", base_overrides, base_blank, args.seed + i)
        for i in range(1, noise_seeds + 1)
    ]

    results: dict[str, Any] = {"sizes": sizes, "variants": {}}
    for name, overrides, blank_video, seed in runs:
        print(f"  training: {name} ...", file=sys.stderr, flush=True)
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        run_dir = CACHE_DIR / "runs" / ("quick" if args.quick else "full") / slug
        results["variants"][name] = train_variant(overrides, blank_video, data, run_dir, sizes, seed, args.meteor)
        print(f"  ... {results['variants'][name]['train_and_test_eval_s']:.0f} s", file=sys.stderr, flush=True)

    headers = ["variant", "seed", "all: EM", "EM 95% CI", "all: BLEU-4", "all: CIDEr"]
    headers += [f"{f}: EM / B4 / CIDEr" for f in CAPTION_FAMILIES]
    rows = []
    for name, r in results["variants"].items():
        a = r["all"]
        row = [name.split(", seed")[0], r["seed"], f"{a['exact_match']:.3f}"]
        row += [
            f"{a['exact_match_95ci'][0]:.2f}-{a['exact_match_95ci'][1]:.2f}",
            f"{a['bleu_4']:.3f}",
            f"{a['cider']:.2f}",
        ]
        for family in CAPTION_FAMILIES:
            f = r["families"].get(family)
            row.append("-" if f is None else f"{f['exact_match']:.2f} / {f['bleu_4']:.2f} / {f['cider']:.2f}")
        rows.append(row)
    table = markdown_table(headers, rows)

    def order_cell(score: dict[str, Any] | None) -> str:
        if score is None or score["order_accuracy"] is None:
            return "-"
        low, high = score["order_accuracy_95ci"]
        return f"{score['order_accuracy']:.2f} ({low:.2f}-{high:.2f}, n={score['order_decided']})"

    def reversal_cell(score: dict[str, Any]) -> str:
        flip = score.get("frames_reversed")
        return "-" if flip is None else f"{flip['unchanged']:.2f} / {flip['became_reversed']:.2f}"

    order_rows = [
        [name.split(", seed")[0], r["seed"], reversal_cell(r["all"]), order_cell(r["all"])]
        + [order_cell(r["families"].get(family)) for family in CAPTION_FAMILIES]
        for name, r in results["variants"].items()
    ]
    table += (
        "\n\nOrder. 'frames reversed': share of test clips whose caption stays the same / becomes the time-reversed "
        "caption when the frames are fed in reverse order (order-blind: 1.00 / 0.00). Order-word accuracy: correct / "
        "(correct + time-reversed), 95% CI, n = predictions that say either (order-blind: 0.5; see `order_outcome`):"
        "\n\n"
    )
    headers = ["variant", "seed", "frames reversed: unchanged / reversed", "order acc: all"] + list(CAPTION_FAMILIES)
    table += markdown_table(headers, order_rows)
    seeds_runs = [r for n, r in results["variants"].items() if n == base_name or n.startswith(f"{base_name}, seed")]
    if len(seeds_runs) > 1:
        spread = {}
        for key in ("exact_match", "bleu_4", "cider", "order_accuracy"):
            values = [r["all"][key] or 0.0 for r in seeds_runs]
            spread[key] = {"mean": statistics.mean(values), "sd": statistics.stdev(values), "values": values}
        results["seed_spread"] = {"variant": base_name, **spread}
        table += (
            f"\n\nSeed spread of '{base_name}' over {len(seeds_runs)} training seeds (same data): "
            + ", ".join(f"{k} {v['mean']:.3f} +- {v['sd']:.3f} (sd)" for k, v in spread.items())
            + "."
        )
    throughputs = [r["train_samples_per_s"] for r in results["variants"].values() if r["train_samples_per_s"]]
    table += (
        f"\n\nTest clips per family: {sizes['num_test'] // len(CAPTION_FAMILIES)} (n={sizes['num_test']} in all). "
        f"Training: {sizes['num_train']} clips x {sizes['epochs']} epochs = {sizes['steps']} steps of batch 16, "
        f"lr 2e-3 cosine, warm-up 20, weight decay 0.01; "
        f"Trainer throughput {min(throughputs):.1f}-{max(throughputs):.1f} samples/s."
    )
    return table, results


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    setup_torch(args.threads, args.seed)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("vidgpt2.metrics.coco").setLevel(logging.ERROR)  # "METEOR not computed" per family: expected

    results, started = begin_run("bench_training", args)

    if args.only in (None, "throughput"):
        print("\n## Training throughput, full-size model (ResNet-50 frozen + GPT-2 small), 8 frames of 224x224\n")
        load_before = load_average()
        table, results["throughput"] = bench_throughput(args.quick, args.seed)
        r = results["throughput"]
        r["load_average_before_after"] = [load_before, load_average()]
        r["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"Batch {r['batch']}, {r['timed_steps']} timed steps per source after 1 warm-up, AdamW over "
            f"{r['trainable_parameters'] / 1e6:.1f} M trainable parameters; {r['loop']}.\n"
        )
        print(table)
        results["throughput_s"] = time.perf_counter() - started

    if args.only in (None, "quality"):
        print("\n## Learning quality on synthetic clips (held-out test split)\n")
        part = time.perf_counter()
        load_before = load_average()
        table, results["quality"] = bench_quality(args)
        results["quality"]["load_average_before_after"] = [load_before, load_average()]
        results["quality"]["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        results["quality"]["config"] = BENCH_CONFIG
        print(table)
        results["quality_s"] = time.perf_counter() - part

    previous = RESULTS_DIR / f"bench_training{'_quick' if args.quick else ''}.json"
    if args.only is not None and previous.exists():
        # one part rerun: keep the other part's results from the last run (each part records its own machine load)
        kept = json.loads(previous.read_text())
        for key in ("throughput", "throughput_s", "quality", "quality_s"):
            if key in kept and key not in results:
                results[key] = kept[key]
        results["parts_from_previous_run"] = [k for k in ("throughput", "quality") if k in kept and k != args.only]
    finish_run("bench_training", args.quick, results, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
