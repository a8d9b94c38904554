"""Faithfulness of vidgpt2's explanations on synthetic clips (deletion test).

Trains small captioners from scratch on `vidgpt2 synth` clips (pooled tokens explained by cross-attention over frames
and by Grad-CAM, spatial tokens by cross-attention), explains each held-out clip's generated caption, then masks the
k frames the explanation ranks highest / lowest / at random and measures how much the caption's log-likelihood drops
(`vidgpt2.explanations.mean_faithfulness`). A faithful explanation: drop_top > drop_random > drop_bottom.

    python benchmarks/bench_explain.py [--quick]

Prints a markdown table and writes benchmarks/results/explain.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

import vidgpt2
from vidgpt2.data import load_captions_files, write_synthetic_dataset
from vidgpt2.data.collator import VideoCaptionCollator
from vidgpt2.demo import demo_training_arguments
from vidgpt2.explanations import explain, mean_faithfulness
from vidgpt2.training import DataArguments, LoraArguments, ModelArguments, run_training

RESULTS = Path(__file__).parent / "results"

BASE_CONFIG = {
    "vision_config": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "image_size": 32,
    "freeze_vision": False,
}

VARIANTS = {
    # name: (config overrides, explanation method)
    "pooled, 1 visual layer, attention": ({"visual_tokens": "pooled", "num_visual_layers": 1}, "attention"),
    "pooled, 1 visual layer, Grad-CAM": ({"visual_tokens": "pooled", "num_visual_layers": 1}, "grad-cam"),
    "pooled, 0 visual layers, attention": ({"visual_tokens": "pooled", "num_visual_layers": 0}, "attention"),
    "spatial (64 px), 1 visual layer, attention": (
        {"visual_tokens": "spatial", "num_visual_layers": 1, "image_size": 64},
        "attention",
    ),
}


def train(work: Path, data: Path, overrides: dict, steps: int, frames: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.json"
    config.write_text(json.dumps({**BASE_CONFIG, **overrides, "num_frames": frames}))
    out = work / "model"
    run_training(
        ModelArguments(config=str(config), build_tokenizer=True),
        DataArguments(train_file=str(data / "train.jsonl"), max_caption_length=24),
        LoraArguments(),
        # the demo's recipe, for `steps` steps and without weight decay (as these results were measured)
        demo_training_arguments(out, max_steps=steps, weight_decay=0.0, logging_steps=50, disable_tqdm=True),
    )
    return out


def evaluate_variant(model_dir: Path, data: Path, method: str, num_clips: int, k: int) -> dict:
    model = vidgpt2.VidGPT2ForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = vidgpt2.VidGPT2Processor.from_pretrained(model_dir)
    test = load_captions_files(test_file=str(data / "test.jsonl"))["test"].select(range(num_clips))
    collator = VideoCaptionCollator(processor, caption_column="__none__")
    explanations, weights, pixels, correct = [], [], [], 0
    for row in test:
        video = collator([row])["pixel_values_videos"]
        # frame ranking: cross-attention over frames, or the mean Grad-CAM strength of each frame
        explanation = explain(model, processor, pixel_values_videos=video, method="grad-cam" if method == "grad-cam" else "auto")
        explanations.append(explanation)
        if method == "grad-cam":
            weights.append(explanation.heatmap_grid.reshape(len(explanation.frame_attention), -1).mean(1))
        else:
            weights.append(explanation.frame_attention)
        pixels.append(video)
        correct += explanation.caption == row["references"][0]
    summary = mean_faithfulness(model, weights, pixels, caption_ids=[e.caption_ids for e in explanations], k=k)
    summary["exact_match"] = correct / len(test)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small data and few steps (about 2 minutes).")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--skip-spatial", action="store_true", help="Leave out the (slower) spatial-token model.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, train_clips, clips, frames, k = (60, 96, 12, 8, 2) if args.quick else (800, 800, 60, 8, 2)
    variants = dict(VARIANTS)
    if args.skip_spatial:
        variants = {name: v for name, v in variants.items() if not name.startswith("spatial")}
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        write_synthetic_dataset(data, num_train=train_clips, num_validation=0, num_test=clips, num_frames=frames, size=64, seed=0, progress=False,
                                overwrite=True)
        trained: dict[str, Path] = {}
        for name, (overrides, method) in variants.items():
            key = json.dumps(overrides, sort_keys=True)
            if key not in trained:
                trained[key] = train(work / f"m{len(trained)}", data, overrides, steps, frames)
            results[name] = evaluate_variant(trained[key], data, method, clips, k)
            print(f"done: {name} {results[name]}", file=sys.stderr)

    print(f"\n### Faithfulness of explanations ({'quick' if args.quick else 'full'} mode)\n")
    print(f"{clips} held-out synthetic clips, {frames} frames, k={k} frames masked (dataset-mean fill); "
          f"models trained {steps} steps from scratch; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}.\n")
    print("| model / explanation | exact match | drop top-k | drop random-k | drop bottom-k | top > bottom |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['exact_match']:.2f} | {r['drop_top']:.3f} | {r['drop_random']:.3f} | "
              f"{r['drop_bottom']:.3f} | {r['top_beats_bottom']:.0%} |")
    print(f"\n(drop = log p(caption | video) - log p(caption | masked video), nats; runtime {time.perf_counter() - started:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps({"quick": args.quick, "steps": steps, "clips": clips, "k": k, "results": results}, indent=2))


if __name__ == "__main__":
    main()
