"""Is left vs right visible in the synthetic driving clips, and do trained models' visual tokens carry it? (issue 12)

Linear probes (logistic regression, L2 1e-2, standardised inputs, 5-fold cross-validation) for the direction of the
with-cause ``obstacle`` (lane change) and ``road_bend`` (turn) clips:

- ``pixels``: on freshly generated 96 px clips, from each frame's mean grey level (what a pooled token can keep),
  each frame's g x g grid of grey means, and the differences of consecutive frames' grids.
- ``models``: on the clips of a `bench_driving.py` data folder (train + validation + test), from a trained model's
  video features (`get_video_features(...).pooler_output`) and its visual tokens (the encoder's output).

    python benchmarks/probe_driving_direction.py pixels --clips 120 --grid 2 3
    python benchmarks/probe_driving_direction.py models benchmarks/.cache/runs_driving/bench_driving/*_seed0/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from bench_driving import DATA_VERSION  # benchmarks/ is on sys.path when run as a script
from torch.nn import functional as F

DATA_DIR = Path(__file__).parent / ".cache" / DATA_VERSION / "train480_test96_seed0"  # bench_driving's full-size data


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5) -> float:
    """Mean held-out accuracy of an L2-regularised logistic regression (LBFGS) over `folds` interleaved folds.

    features: (n, k); labels: (n,) bool.
    """
    x = torch.tensor(features, dtype=torch.float32).flatten(1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(labels, dtype=torch.float32)
    index, accuracies = torch.arange(len(y)), []
    for fold in range(folds):
        test = index % folds == fold
        weight = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

        def closure(test=test, weight=weight, bias=bias, optimizer=optimizer) -> torch.Tensor:
            optimizer.zero_grad()
            logits = x[~test] @ weight + bias
            loss = F.binary_cross_entropy_with_logits(logits, y[~test]) + 1e-2 * (weight**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            accuracies.append((((x[test] @ weight + bias) > 0).float() == y[test]).float().mean().item())
    return float(np.mean(accuracies))


def probe_pixels(clips: int, grids: list[int]) -> None:
    from vidgpt2.data.synthetic_driving import generate_driving_clip

    for kind in ("obstacle", "road_bend"):
        videos, labels = [], []
        for seed in range(clips):
            clip = generate_driving_clip(kind, np.random.default_rng(seed), True, 8, 96)
            grey = torch.tensor(clip.frames, dtype=torch.float32).permute(0, 3, 1, 2).mean(1, keepdim=True) / 255
            videos.append(grey)  # (T, 1, 96, 96)
            labels.append(clip.action.split()[-1] == "right")
        y = np.array(labels)
        mean = np.stack([v.mean((1, 2, 3)).numpy() for v in videos])  # (n, T)
        print(f"{kind}: {clips} clips, right {y.mean():.2f}; per-frame mean grey: {cross_validated_accuracy(mean, y):.2f}")
        for g in grids:
            cells = [F.adaptive_avg_pool2d(v, g) for v in videos]  # (T, 1, g, g)
            per_frame = np.stack([c.flatten().numpy() for c in cells])
            changes = np.stack([(c[1:] - c[:-1]).flatten().numpy() for c in cells])
            print(f"  {g}x{g} grid per frame: {cross_validated_accuracy(per_frame, y):.2f}; "
                  f"changes between frames: {cross_validated_accuracy(changes, y):.2f}")


def probe_models(models: list[str], data_dir: Path) -> None:
    from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor
    from vidgpt2.data import load_bddx
    from vidgpt2.data.collator import VideoCaptionCollator
    from vidgpt2.data.synthetic_driving import read_ground_truth

    truth = read_ground_truth(data_dir)
    dataset = load_bddx(data_dir)
    rows = [row for split in ("train", "validation", "test") for row in dataset[split]
            if truth[row["video_id"]]["with_cause"] and truth[row["video_id"]]["kind"] in ("obstacle", "road_bend")]
    labels = np.array([row["action"].split()[-1] == "right" for row in rows])
    kinds = np.array([truth[row["video_id"]]["kind"] for row in rows])
    for path in models:
        model = VidGPT2ForConditionalGeneration.from_pretrained(path).eval()
        collator = VideoCaptionCollator(VidGPT2Processor.from_pretrained(path), caption_column="__none__")
        features, tokens = [], []
        with torch.no_grad():
            for start in range(0, len(rows), 16):
                pixels = collator(rows[start : start + 16])["pixel_values_videos"]
                video_features = model.get_video_features(pixels).pooler_output
                features.append(video_features.flatten(1).numpy())
                tokens.append(model.encoder(video_features=video_features).last_hidden_state.flatten(1).numpy())
        features, tokens = np.concatenate(features), np.concatenate(tokens)
        for kind in ("obstacle", "road_bend"):
            m = kinds == kind
            print(f"{path} {kind} (n={m.sum()}): video features {cross_validated_accuracy(features[m], labels[m]):.2f}; "
                  f"visual tokens {cross_validated_accuracy(tokens[m], labels[m]):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pixels = sub.add_parser("pixels", help="Probe generated clips' pixels.")
    pixels.add_argument("--clips", type=int, default=120, help="Clips per kind (default 120).")
    pixels.add_argument("--grid", type=int, nargs="+", default=[2, 3], help="Grid sides (default 2 3).")
    models = sub.add_parser("models", help="Probe trained models' features and visual tokens.")
    models.add_argument("paths", nargs="+", help="Saved model folders.")
    models.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"bench_driving data folder (default {DATA_DIR}).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "pixels":
        probe_pixels(args.clips, args.grid)
    else:
        probe_models(args.paths, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
