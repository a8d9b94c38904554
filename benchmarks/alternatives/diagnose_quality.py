"""Why does a model win or lose the equal-budget quality comparison? Variants of the tiny models, same shared loop.

    python benchmarks/alternatives/diagnose_quality.py [--steps 250] [--seed 0] [--variants a,b,...]

Each variant changes one thing against `bench_alternatives.py`'s tiny setting (same data, tokenizer, schedule):
token granularity (TimeSformer patch 32 = a 2x2 grid per frame, like vidgpt2's spatial tokens at 64x64), depth of
vidgpt2's visual layers, and a longer budget. Prints a markdown table; writes
benchmarks/results/alternatives_diagnostics.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import CACHE_DIR, load_average, markdown_table, setup_torch, write_results  # noqa: E402

VARIANTS = {
    # name: (model, config overrides, steps multiplier)
    "vidgpt2-pooled": ("vidgpt2", {}, 1),
    "vidgpt2-spatial": ("vidgpt2-spatial", {}, 1),
    "spacetimegpt": ("spacetimegpt", {}, 1),
    "spacetimegpt-patch32": ("spacetimegpt", {"patch_size": 32}, 1),
    "vidgpt2-pooled-2-visual-layers": ("vidgpt2", {"num_visual_layers": 2}, 1),
    "vidgpt2-spatial-2-visual-layers": ("vidgpt2-spatial", {"num_visual_layers": 2}, 1),
    "vidgpt2-pooled-3x-steps": ("vidgpt2", {}, 3),
    "vidgpt2-spatial-3x-steps": ("vidgpt2-spatial", {}, 3),
    "spacetimegpt-3x-steps": ("spacetimegpt", {}, 3),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="Base number of training steps (as the benchmark).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of initialisation and batch order.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated subset of {list(VARIANTS)}.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    args = parser.parse_args()
    setup_torch(args.threads, args.seed)
    import logging

    logging.getLogger("vidgpt2").setLevel(logging.ERROR)
    from alternatives.quality import prepare_data, run_one

    data = prepare_data(CACHE_DIR / "alternatives", 800, 120, 8, 64)
    rows, runs = [], []
    for variant in args.variants.split(","):
        name, overrides, multiplier = VARIANTS[variant]
        steps = args.steps * multiplier
        run = run_one(name, data, args.seed, 8, 64, overrides, steps=steps, batch_size=16, learning_rate=2e-3,
                      warmup_steps=20, weight_decay=0.01)
        run["variant"] = variant
        runs.append(run)
        s = run["scores"]["all"]
        rows.append([variant, steps, f"{run['parameters']['video_encoder'] / 1e6:.2f} M", f"{run['final_loss']:.3f}",
                     f"{s['exact_match']:.3f}", f"{s['bleu_4']:.3f}", f"{s['cider']:.2f}", f"{run['train_seconds']:.0f}"])
        print(f"[load {load_average()[0]:.1f}] {rows[-1]}", file=sys.stderr, flush=True)
    print(markdown_table(["variant", "steps", "video encoder", "final loss", "exact", "BLEU-4", "CIDEr-D", "train s"], rows))
    write_results("alternatives_diagnostics", {"seed": args.seed, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
