"""Explainable driving on synthetic dashcam clips (issue 12): action / justification quality per visual-token option
at an equal CPU training budget, the text-only baseline, and whether the explanations point at the placed cause.

Data: `vidgpt2 synth --kind driving` (`vidgpt2.data.synthetic_driving`), written as a BDD-X folder and read by the
real `bddx` loader (target "action_justification"). Training: `vidgpt2.training.run_training` with the demo's
recipe (`demo_training_arguments`), the same steps for every variant. Scores: action and justification exact match
and BLEU-4 / METEOR / CIDEr scored separately (`score_split`, as ADAPT reports BDD-X), the joined caption, and the
grounding table (`vidgpt2.grounding`: temporal and spatial pointing games with 95% Wilson intervals against chance,
attention, Grad-CAM and (temporal only) per-frame occlusion and exact Shapley values of the frames, and the deletion
test on cause frames vs other frames) for the reference captions.

    python benchmarks/bench_driving.py            # full: 5 variants x 3 seeds, ~75-85 min on 2 busy cores
                                                  # (the Shapley values: 6-10 min per grounded model)
    python benchmarks/bench_driving.py --quick    # smoke run, ~3 min
    python benchmarks/bench_driving.py --variants pooled motion --seeds 0 --no-grounding   # a quick comparison
    python benchmarks/bench_driving.py --seeds 0 --save-models models/   # keep the trained models ...
    python benchmarks/bench_driving.py --seeds 0 --load-models models/   # ... and score them again, no training

Every variant is trained once per training seed (`--seeds`; the data set is the same, written with `--seed`);
grounding comes from the first seed's model only (`--grounding-seeds` for more), figures always from the first
seed's (in `results/<results name>_figures/`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _common import (  # noqa: I001  (benchmarks/ is on sys.path when run as a script)
    CACHE_DIR,
    RESULTS_DIR,
    load_average,
    machine_info,
    markdown_table,
    parse_args,
    print_machine,
    setup_torch,
    write_results,
)

# the demo's small from-scratch model (basic-block ResNet, 2-layer 128-d GPT-2, vision tower trained), on 96x96
# frames: the last feature map is 3x3, so "spatial" gives 9 tokens per frame and "grid" 2x2 = 4
BENCH_CONFIG: dict[str, Any] = {
    "vision_config": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "image_size": 96,
    "num_frames": 8,
    "num_visual_layers": 1,
    "freeze_vision": False,
    "visual_dropout": 0.1,
}
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    # name: (config overrides, blank_video)
    "pooled (1 token/frame)": ({"visual_tokens": "pooled"}, False),
    "grid 2x2 (4 tokens/frame)": ({"visual_tokens": "grid", "grid_size": 2}, False),
    "motion 2x2 (1 token/frame)": ({"visual_tokens": "motion", "grid_size": 2}, False),
    "spatial 3x3 (9 tokens/frame)": ({"visual_tokens": "spatial"}, False),
    "text-only (blank frames)": ({"visual_tokens": "pooled"}, True),
}
# --variants picks them by the first word of the name (text-only: "text")
VARIANT_KEYS = {name.split()[0].split("-")[0]: name for name in VARIANTS}
# the actions whose direction only the motion (and the lane the ego drives in) shows
DIRECTION_WORDS = ("left", "right")
# --holdout-test clips come from data seed --seed + this: a stream no training, validation or test split of seeds
# below it draws from
HOLDOUT_SEED_OFFSET = 1000
# the generator's data version (cache folder): v2 turned the ego 0.15 rad per frame (v1: 0.07); v3 spreads the cause
# onsets over the clip and lets every cause but the bend leave the view (v2 kept each in view from frames 4-6 on); v4
# put a red light, a pedestrian and a braking car in one scene with one action; v5 gives every cause such a scene
DATA_VERSION = "driving_96_v5"


def add_arguments(parser) -> None:
    parser.add_argument("--num-train", type=int, default=None, help="Training clips (default 480; quick 32).")
    parser.add_argument("--num-test", type=int, default=None, help="Test clips (default 96; quick 12).")
    parser.add_argument("--epochs", type=float, default=None, help="Epochs (default 8; quick 1).")
    parser.add_argument("--meteor", action=argparse.BooleanOptionalAction, default=None,
                        help="Java for METEOR and PTB tokens (default: on; off with --quick).")
    parser.add_argument("--figures", type=int, default=None, help="Explanation figures per variant (default 3; quick 1).")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANT_KEYS), default=None,
                        help=f"Variants to train (default all: {' '.join(VARIANT_KEYS)}).")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="Training seeds, each variant trained once per seed (default 0 1 2; quick: 0).")
    parser.add_argument("--text-only-seeds", type=int, default=1,
                        help="How many of --seeds the text-only baseline runs (default 1: it is far below).")
    parser.add_argument("--grounding-seeds", type=int, default=1,
                        help="How many of --seeds get the grounding table (default 1; figures: the first seed's).")
    parser.add_argument("--no-grounding", action="store_true", help="Skip grounding and figures (action scores only).")
    parser.add_argument("--results-name", default=None,
                        help="Name of the results file and run folders (default bench_driving[_quick]).")
    parser.add_argument("--save-models", type=Path, default=None, metavar="DIR",
                        help="Keep every trained model (and its training metrics) in DIR/<variant>_seed<seed>.")
    parser.add_argument("--holdout-test", type=int, default=0, metavar="N",
                        help="Also caption and ground N held-out test clips drawn with seed --seed + "
                             f"{HOLDOUT_SEED_OFFSET} (written once, never used to choose a method or setting): the "
                             "confirmation set. Default 0: none.")
    parser.add_argument("--resummarize", type=Path, default=None, metavar="RESULTS_JSON",
                        help="Train and score nothing: recompute the grounding summaries of an earlier run's results "
                             "file from its per-clip records with the current `summarize_grounding`, write them back "
                             "and print the report.")
    parser.add_argument("--load-models", type=Path, default=None, metavar="DIR",
                        help="Skip training: load the models a --save-models run kept in DIR (same --seed data and sizes), "
                             "caption and ground again; training metrics come from the saved run.")


def train_variant(
    name: str, overrides: dict, blank: bool, data_dir: Path, run_dir: Path, sizes: dict, args, seed: int, ground: bool,
    holdout_dir: Path | None = None, figures_dir: Path | None = None,
) -> dict:
    """Train with `run_training` (which scores the test split: joined, action_*, justification_*) with training seed
    `seed`, then caption the test split again for exact match and, when `ground`, ground the reference captions;
    the same for the held-out clips in `holdout_dir` (under "holdout"); explanation figures into `figures_dir`
    when given (and `ground`)."""
    from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor
    from vidgpt2.data import load_bddx
    from vidgpt2.data.synthetic_driving import read_ground_truth
    from vidgpt2.demo import demo_training_arguments
    from vidgpt2.grounding import evaluate_grounding
    from vidgpt2.training import DataArguments, LoraArguments, ModelArguments, run_training

    saved = None if args.load_models is None else args.load_models / run_dir.name
    if saved is not None:  # --load-models: the model and training metrics of an earlier --save-models run
        model_dir, trained = saved / "model", _load_training(saved, overrides, seed, sizes, args.seed)
        train_s, metrics = trained["train_and_eval_s"], trained["metrics"]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        config_path = run_dir / "config.json"
        config_path.write_text(json.dumps({**BENCH_CONFIG, **overrides}, indent=2))
        training_args = demo_training_arguments(
            run_dir / "model", epochs=sizes["epochs"], seed=seed, data_seed=seed, logging_steps=25,
            disable_tqdm=True,
        )
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is the report
            metrics = run_training(
                ModelArguments(config=str(config_path), build_tokenizer=True),
                DataArguments(dataset="bddx", data_dir=str(data_dir), max_caption_length=24, blank_video=blank,
                              use_java=args.meteor, check_data=False),
                LoraArguments(),
                training_args,
            )
        train_s = time.perf_counter() - start
        model_dir = run_dir / "model"
        if args.save_models is not None:
            _save_training(args.save_models / run_dir.name, model_dir, overrides, seed, sizes, args.seed, train_s, metrics)

    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = VidGPT2Processor.from_pretrained(model_dir)
    test = load_bddx(data_dir)["test"]
    truth = read_ground_truth(data_dir)
    rows = caption_rows(model, processor, test, truth, blank)
    result: dict[str, Any] = {
        "seed": seed,
        "config_overrides": overrides,
        "blank_video": blank,
        "train_and_eval_s": train_s,
        "train_runtime_s": metrics.get("train_runtime"),
        "train_loss": metrics.get("train_loss"),
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith("test_")},
        "exact_match": exact_match(rows),
        "direction": direction_scores(rows),
        "action_by_kind": {},
        "predictions": rows,
    }
    if saved is not None:
        result["loaded_from"] = str(saved)
    for kind in sorted({r["kind"] for r in rows}):
        subset = [r for r in rows if r["kind"] == kind]
        result["action_by_kind"][kind] = sum(r["action_ok"] for r in subset) / len(subset)
    if ground and not blank:
        start = time.perf_counter()
        records, summary = evaluate_grounding(model, processor, test, truth)
        result["grounding"] = summary
        result["grounding_records"] = records
        result["grounding_s"] = time.perf_counter() - start
        if figures_dir is not None:
            result["figures"] = save_figures(name, model, processor, test, truth, args.figures, figures_dir)
    if holdout_dir is not None:
        result["holdout"] = score_holdout(model, processor, holdout_dir, blank, ground)
    return result


def caption_rows(model, processor, dataset, truth: dict, blank: bool) -> list[dict]:
    """Caption every clip of a `load_bddx` split; one row per clip with its prediction and what it got right."""
    from vidgpt2.data.bddx import split_action_justification
    from vidgpt2.training import generate_captions

    predictions = generate_captions(model, processor, dataset, batch_size=32, show_progress=False, blank_video=blank)
    rows = []
    for row, prediction in zip(dataset, predictions, strict=True):
        action, justification = split_action_justification(prediction)
        record = truth[row["video_id"]]
        rows.append({
            "video_id": row["video_id"], "kind": record["kind"], "with_cause": record["with_cause"],
            "prediction": prediction, "reference": row["caption"],
            "action_ok": action == row["action"], "justification_ok": justification == row["justification"],
            "caption_ok": prediction == row["caption"],
        })
    return rows


def cause_timing(data_dir: Path) -> dict[str, Any]:
    """Where the causes of a folder's test clips are visible: for each frame index the share of clips with a cause
    whose frame shows it (the hit rate of an explanation that always names that frame), and the mean share of cause
    frames per clip (the temporal pointing game's chance rate)."""
    from vidgpt2.data.synthetic_driving import read_ground_truth

    records = [r for r in read_ground_truth(data_dir).values() if r["split"] == "test" and r["cause_frames"]]
    num_frames = records[0]["num_frames"]
    return {
        "num_clips": len(records),
        "frame_share": [sum(t in r["cause_frames"] for r in records) / len(records) for t in range(num_frames)],
        "chance": sum(len(r["cause_frames"]) / r["num_frames"] for r in records) / len(records),
    }


def exact_match(rows: list[dict]) -> dict[str, float]:
    """Share of `caption_rows` whose predicted action, justification and whole caption equal the reference's."""
    return {key: sum(r[f"{key}_ok"] for r in rows) / len(rows) for key in ("action", "justification", "caption")}


def score_holdout(model, processor, holdout_dir: Path, blank: bool, ground: bool) -> dict[str, Any]:
    """--holdout-test: exact match and (when `ground`) the grounding table on the held-out clips."""
    from vidgpt2.data import load_bddx
    from vidgpt2.data.synthetic_driving import read_ground_truth
    from vidgpt2.grounding import evaluate_grounding

    test, truth = load_bddx(holdout_dir)["test"], read_ground_truth(holdout_dir)
    rows = caption_rows(model, processor, test, truth, blank)
    result: dict[str, Any] = {
        "num_clips": len(rows),
        "exact_match": exact_match(rows),
        "direction": direction_scores(rows),
        "predictions": rows,
    }
    if ground and not blank:
        start = time.perf_counter()
        result["grounding_records"], result["grounding"] = evaluate_grounding(model, processor, test, truth)
        result["grounding_s"] = time.perf_counter() - start
    return result


TRAINING_FILE = "training.json"  # next to a saved model: how it was trained and its training metrics


def _save_training(
    folder: Path, model_dir: Path, overrides: dict, seed: int, sizes: dict, data_seed: int, train_s: float, metrics: dict
) -> None:
    """--save-models: copy the trained model (weights, config, processor) to `folder/model` and write what
    `--load-models` needs to report the run without training it again."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model_dir, folder / "model")
    record = {"config_overrides": overrides, "seed": seed, "sizes": sizes, "data_seed": data_seed,
              "train_and_eval_s": train_s, "metrics": metrics}
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def _load_training(folder: Path, overrides: dict, seed: int, sizes: dict, data_seed: int) -> dict:
    """--load-models: the `_save_training` record of `folder`, checked against this run's variant, training seed,
    sizes and data set (`--seed`): a model trained on other data or with another recipe would be reported under the
    wrong name."""
    path = folder / TRAINING_FILE
    if not path.exists() or not (folder / "model").is_dir():
        raise SystemExit(f"--load-models: {folder} holds no saved model ({path.name} and model/); save it first "
                         "with --save-models, with the same --variants, --seeds and sizes.")
    record = json.loads(path.read_text())
    for key, wanted in (("config_overrides", overrides), ("seed", seed), ("sizes", sizes), ("data_seed", data_seed)):
        if record.get(key) != wanted:
            raise SystemExit(f"--load-models: {path} was saved with {key}={record[key]}, this run needs {wanted}.")
    return record


def direction_scores(rows: list[dict]) -> dict[str, Any]:
    """The test clips whose reference action has a direction (turns / changes lanes to the left or right): action
    exact match on them, and how often the predicted action names the same direction word."""
    def word(text: str) -> str | None:
        found = [w for w in DIRECTION_WORDS if w in text.split(" because ")[0].split()]
        return found[0] if len(found) == 1 else None

    subset = [r for r in rows if word(r["reference"]) is not None]
    if not subset:
        return {"n": 0, "action_em": None, "same_direction": None}
    return {
        "n": len(subset),
        "action_em": sum(r["action_ok"] for r in subset) / len(subset),
        "same_direction": sum(word(r["prediction"]) == word(r["reference"]) for r in subset) / len(subset),
    }


def save_figures(name: str, model, processor, test, truth: dict, count: int, folder: Path) -> list[str]:
    """Explanation figures of the first `count` test clips with a cause, one per cause kind where possible, in
    `folder` (`results/<results name>_figures/`)."""
    from vidgpt2.data.collator import VideoCaptionCollator
    from vidgpt2.explanations import _mean_std, denormalize_frames
    from vidgpt2.grounding import cause_token_positions, plot_grounding, token_maps

    folder.mkdir(parents=True, exist_ok=True)
    collator = VideoCaptionCollator(processor, caption_column="__none__")
    slug = "".join(c if c.isalnum() else "_" for c in name.split(" (")[0])
    paths, kinds = [], set()
    for row in test:
        record = truth[row["video_id"]]
        if not record["cause_frames"] or record["kind"] in kinds or len(paths) >= count:
            continue
        kinds.add(record["kind"])
        pixels = collator([row])["pixel_values_videos"]
        ids = [i for i in processor.tokenize_captions(row["caption"])[0] if i != -100]
        positions = cause_token_positions(processor.tokenizer.convert_ids_to_tokens(ids), record["cause_words"])
        maps = token_maps(model, pixels, ids, positions)
        path = folder / f"{slug}_{record['kind']}.png"
        title = f"{name}: '{row['caption']}' (cause words: {', '.join(record['cause_words'])}; green: true box)"
        plot_grounding(denormalize_frames(pixels[0], *_mean_std(processor)), maps, record, str(path), title=title)
        paths.append(str(path.relative_to(RESULTS_DIR.parent)))
    return paths


def rate_cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    low, high = entry["ci95"]
    cell = f"{entry['hit_rate']:.2f} ({low:.2f}-{high:.2f}) vs {entry['chance']:.2f}"
    if "position_chance" in entry:
        cell += f"; pos. {entry['position_chance']:.2f}"
    if "position_p" in entry:
        cell += f", p {entry['position_p']:.3f}"
    if "kind_position_chance" in entry:
        cell += f"; kind pos. {entry['kind_position_chance']:.2f}, p {entry['kind_position_p']:.3f}"
    return cell


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean_and_seeds(values: list[float], digits: int = 3) -> str:
    """"0.865 (0.854, 0.875, 0.865)": the mean and, for more than one seed, each seed's value."""
    mean = f"{_mean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def report(results: dict[str, Any]) -> str:
    """Markdown tables: scores per variant (mean over training seeds, each seed in brackets), action exact match
    per scenario kind, and the grounding of the first grounded seed."""
    variants = {name: v for name, v in results["variants"].items() if v["runs"]}
    headers = ["variant", "seeds", "action EM", "direction subset: action EM", "direction subset: same left/right",
               "justification EM", "caption EM", "action B4 / METEOR / CIDEr", "train s"]
    rows = []
    for name, v in variants.items():
        runs = list(v["runs"].values())

        def triple(prefix: str, runs=runs) -> str:
            values = [[r["test_metrics"].get(f"test_{prefix}{k}") for r in runs] for k in ("bleu_4", "meteor", "cider")]
            return " / ".join("n/a" if None in vs else f"{_mean(vs):.3f}" for vs in values)

        direction = [r["direction"] for r in runs if r["direction"]["n"]]
        rows.append([
            name, " ".join(str(r["seed"]) for r in runs),
            _mean_and_seeds([r["exact_match"]["action"] for r in runs]),
            _mean_and_seeds([d["action_em"] for d in direction]) if direction else "-",
            _mean_and_seeds([d["same_direction"] for d in direction]) if direction else "-",
            _mean_and_seeds([r["exact_match"]["justification"] for r in runs]),
            _mean_and_seeds([r["exact_match"]["caption"] for r in runs]),
            triple("action_"),
            f"{_mean([r['train_runtime_s'] for r in runs]):.0f}",
        ])
    text = markdown_table(headers, rows)
    first = next(iter(variants.values()))["runs"]
    n_direction = next(iter(first.values()))["direction"]["n"]
    text += (f"\n\nMean over the training seeds, each seed's value in brackets. Direction subset: the {n_direction} "
             "test clips whose action has a direction (turns, lane changes); 'same left/right': the predicted action "
             "names the reference's direction.\n")
    kinds = sorted(next(iter(first.values()))["action_by_kind"])
    text += "\nAction exact match by scenario kind (with and without the cause together; mean over seeds):\n\n"
    text += markdown_table(
        ["variant"] + kinds,
        [[n] + [f"{_mean([r['action_by_kind'][k] for r in v['runs'].values()]):.2f}" for k in kinds]
         for n, v in variants.items()],
    )
    grounded = {n: r for n, v in variants.items() for r in v["runs"].values() if r.get("grounding")}
    if grounded:
        text += (
            "\n\nGrounding of the reference captions' cause words (test clips with a cause; first seed's model): hit "
            "rate (95% Wilson CI) vs chance. Temporal: top frame shows the cause (chance: share of cause frames); "
            "relevancy: gradient-weighted attention propagated through the visual and decoder self-attention "
            "(Chefer et al. 2021); 'pos.': the position-matched chance, the method's rankings paired with other "
            "clips' causes (what its habits of position alone score), p: one-sided permutation p-value of the hit "
            "rate against rankings handed to clips at random; 'kind pos.' and its p: the same with rankings paired "
            "only among clips of the same cause kind (what position chosen from the caption's cause scores); fixed "
            "frame: the best explanation that names the same frame in every clip, 'by kind': the best frame per "
            "cause kind; occlusion ranks frames by the cause words' log-prob drop when the frame is "
            "replaced by a flat one; Shapley by the frame's exact Shapley value for their log-prob (all 2^T subsets "
            "of frames kept, the others flat); 'Shapley, clip mean' the same with the clip's mean frame for the "
            "frames left out. "
            "Spatial: heatmap maximum on the top-ranked cause frame inside the true box (chance: box area / frame "
            "area). Deletion: mean drop of log p(caption) masking the cause frames vs as many other frames; share of "
            "clips where the cause hurts more.\n\n"
        )
        text += grounding_table(variants, lambda run: run.get("grounding"))
    holdout = [r["holdout"] for v in variants.values() for r in v["runs"].values() if r.get("holdout")]
    if holdout:
        text += (f"\n\nHeld-out confirmation set ({holdout[0]['num_clips']} clips drawn with another data seed, "
                 "scored once; nothing was chosen on them): action exact match per variant, then the same grounding "
                 "table.\n\n")
        text += markdown_table(
            ["variant", "seed", "action EM", "justification EM", "caption EM"],
            [[n, r["seed"], *(f"{r['holdout']['exact_match'][k]:.3f}" for k in ("action", "justification", "caption"))]
             for n, v in variants.items() for r in v["runs"].values() if r.get("holdout")],
        )
        if any(h.get("grounding") for h in holdout):
            text += "\n\n" + grounding_table(variants, lambda run: (run.get("holdout") or {}).get("grounding"))
    by_kind = kind_table(variants, lambda run: (run.get("holdout") or {}).get("grounding"))
    part = "held-out"
    if by_kind is None:
        by_kind, part = kind_table(variants, lambda run: run.get("grounding")), "test"
    if by_kind is not None:
        text += (f"\n\nTemporal pointing game by cause kind ({part} clips, first grounded seed): hit rate per method; "
                 "each kind's chance in its header. Then per variant: the share of clips where masking the cause "
                 "frames lowers log p(caption) more than masking as many other frames, and how many nats the video "
                 "adds to the cause words' log-prob over flat frames (the sum of their Shapley values; near 0: the "
                 "model names the cause from the caption's action words without looking).\n\n" + by_kind)
        pick = ((lambda run: (run.get("holdout") or {}).get("grounding")) if part == "held-out"
                else (lambda run: run.get("grounding")))
        dependent = video_dependent_table(variants, pick)
        if dependent is not None:
            from vidgpt2.grounding import VIDEO_DEPENDENCE_NATS
            text += (f"\n\nThe same game on the {part} clips whose cause words need the video (at least "
                     f"{VIDEO_DEPENDENCE_NATS:g} nat from it): where an explanation has something to find.\n\n" + dependent)

    timing = results.get("cause_timing")
    if timing:
        num_frames = len(next(iter(timing.values()))["frame_share"])
        text += ("\n\nWhere the causes are (clips with a cause): share of clips whose frame t shows the cause, and the "
                 "mean share of cause frames (chance).\n\n")
        text += markdown_table(
            ["clips", "n", *(f"frame {t}" for t in range(num_frames)), "chance"],
            [[part, t["num_clips"], *(f"{v:.2f}" for v in t["frame_share"]), f"{t['chance']:.2f}"]
             for part, t in timing.items()],
        )
    sizes = results["sizes"]
    figures = [f for v in variants.values() for r in v["runs"].values() for f in r.get("figures", [])]
    text += (
        f"\n\nData: {sizes['num_train']} training / {sizes['num_test']} test clips (the (kind, with or "
        f"without the cause) pairs in turn, so their counts differ by at most one), 8 frames of 96x96. Training: {sizes['num_train']} clips x "
        f"{sizes['epochs']} epochs = {sizes['steps']} steps of batch 16 for every variant and seed (demo recipe: lr "
        "2e-3 cosine, warm-up 20). Figures: " + (", ".join(figures) or "none")
    )
    return text


TEMPORAL_METHODS = ("attention", "relevancy", "grad-cam", "occlusion", "shapley", "shapley-clip-mean")


def grounding_table(variants: dict[str, dict], pick) -> str:
    """Markdown grounding table: one row per variant run whose `pick(run)` is a `summarize_grounding` result."""
    headers = ["variant", "seed", "n", "attention: temporal", "relevancy: temporal", "Grad-CAM: temporal",
               "occlusion: temporal", "Shapley: temporal", "Shapley, clip mean: temporal", "fixed frame: temporal", "attention: spatial",
               "relevancy: spatial", "Grad-CAM: spatial", "deletion: cause / other (cause > other)"]
    rows = []
    for name, v in variants.items():
        for r in v["runs"].values():
            g = pick(r)
            if g is None:
                continue
            d = g.get("deletion")
            deletion = "-" if d is None else f"{d['drop_cause']:.2f} / {d['drop_other']:.2f} ({d['cause_beats_other']:.2f})"
            cells = [rate_cell(g.get(f"{m}_temporal")) for m in TEMPORAL_METHODS]
            fixed = g.get("fixed_frame")
            cells.append("-" if fixed is None else f"{fixed['hit_rate']:.2f} (frame {fixed['frame']})")
            if g.get("fixed_frame_by_kind"):
                cells[-1] += f"; by kind {g['fixed_frame_by_kind']['hit_rate']:.2f}"
            cells += [rate_cell(g.get(f"{m}_spatial")) for m in ("attention", "relevancy", "grad-cam")]
            rows.append([name, r["seed"], g["num_clips"], *cells, deletion])
    return markdown_table(headers, rows)


def kind_table(variants: dict[str, dict], pick) -> str | None:
    """Markdown table of each temporal method's hit rate per cause kind, one block of rows per variant (its first
    run whose `pick(run)` is a `summarize_grounding` result with ``by_kind``), and the deletion test per kind.
    None when no run has a per-kind breakdown."""
    firsts = {}
    for name, v in variants.items():
        summary = next((g for g in map(pick, v["runs"].values()) if g), None)
        if summary and any("by_kind" in summary.get(f"{m}_temporal", {}) for m in TEMPORAL_METHODS):
            firsts[name] = summary
    if not firsts:
        return None
    chances: dict[str, float] = {}
    for summary in firsts.values():
        for m in TEMPORAL_METHODS:
            for kind, entry in summary.get(f"{m}_temporal", {}).get("by_kind", {}).items():
                chances.setdefault(kind, entry["chance"])
    kinds = sorted(chances)
    rows = []
    for name, summary in firsts.items():
        for m in TEMPORAL_METHODS:
            per_kind = summary.get(f"{m}_temporal", {}).get("by_kind")
            if per_kind:
                rows.append([name, m, *(f"{per_kind[k]['hit_rate']:.2f}" if k in per_kind else "-" for k in kinds)])
        deletion = (summary.get("deletion") or {}).get("cause_beats_other_by_kind")
        if deletion:
            rows.append([name, "deletion: cause > other", *(f"{deletion[k]:.2f}" if k in deletion else "-" for k in kinds)])
        nats = (summary.get("video_dependence") or {}).get("nats_by_kind")
        if nats:
            rows.append([name, "cause words: nats from the video", *(f"{nats[k]:.2f}" if k in nats else "-" for k in kinds)])
    return markdown_table(["variant", "method", *(f"{k} (chance {chances[k]:.2f})" for k in kinds)], rows)


def video_dependent_table(variants: dict[str, dict], pick) -> str | None:
    """Markdown table of the temporal pointing game restricted to the clips whose cause words need the video
    (`grounding.video_dependence` >= `VIDEO_DEPENDENCE_NATS`: the summary's ``video_dependent`` part, position
    controls and fixed frames recomputed on those clips), one row per variant (first run whose `pick(run)` has it).
    None when no run has one."""
    rows = []
    for name, v in variants.items():
        summary = next((g for g in map(pick, v["runs"].values()) if g and g.get("video_dependent")), None)
        if summary is None:
            continue
        dependence, subset = summary["video_dependence"], summary["video_dependent"]
        cells = [rate_cell(subset.get(f"{m}_temporal")) for m in TEMPORAL_METHODS]
        fixed, by_kind = subset.get("fixed_frame"), subset.get("fixed_frame_by_kind")
        fixed_cell = "-" if fixed is None else f"{fixed['hit_rate']:.2f} (frame {fixed['frame']})"
        if by_kind:
            fixed_cell += f"; by kind {by_kind['hit_rate']:.2f}"
        rows.append([name, f"{subset['num_clips']} / {dependence['n']}", f"{dependence['nats']:.2f}", *cells, fixed_cell])
    if not rows:
        return None
    return markdown_table(["variant", "clips needing the video", "mean nats from the video",
                           *(f"{m}: temporal" for m in TEMPORAL_METHODS), "fixed frame"], rows)


def save_grounding_chart(
    results: dict[str, Any], path: Path, holdout: bool = False, subset: str | None = None
) -> Path | None:
    """Figure of the temporal pointing game, one panel per variant (first grounded seed): each method's hit rate with
    its 95% Wilson interval, the plain chance rate (dashed), the method's position-matched chance (diamond), the same
    within a cause kind (triangle) and the best fixed-frame explanation (dotted), on the test split's or
    (`holdout`) the held-out clips; with a `subset` (``"video_dependent"``: a key of the grounding summary), only
    on those clips. Returns the path, or None when nothing was grounded."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def grounding(run: dict) -> dict | None:  # the test split's summary, or the held-out clips'
        summary = ((run.get("holdout") or {}) if holdout else run).get("grounding")
        if summary is not None and subset is not None:
            summary = summary.get(subset) or None
        return summary

    panels = []
    for name, variant in results["variants"].items():
        summary = next((g for g in map(grounding, variant["runs"].values()) if g), None)
        if summary is not None:
            panels.append((name, summary))
    if not panels:
        return None
    # at least 7 in wide: the legend (3 columns) is cut off on a one-variant figure
    figure, axes = plt.subplots(1, len(panels), figsize=(max(3.2 * len(panels), 7.0), 3.6), sharey=True, squeeze=False)
    for ax, (name, summary) in zip(axes[0], panels, strict=True):
        entries = [(m, summary.get(f"{m}_temporal")) for m in TEMPORAL_METHODS]
        entries = [(m, e) for m, e in entries if e is not None]
        x = range(len(entries))
        rates = [e["hit_rate"] for _, e in entries]
        errors = [[e["hit_rate"] - e["ci95"][0] for _, e in entries], [e["ci95"][1] - e["hit_rate"] for _, e in entries]]
        ax.bar(x, rates, yerr=errors, color="tab:blue", alpha=0.6, capsize=3, ecolor="dimgray", label="hit rate (95% CI)")
        ax.scatter([i for i, (_, e) in enumerate(entries) if "position_chance" in e],
                   [e["position_chance"] for _, e in entries if "position_chance" in e],
                   marker="D", s=30, color="tab:orange", edgecolor="black", zorder=3, label="position-matched chance")
        ax.scatter([i for i, (_, e) in enumerate(entries) if "kind_position_chance" in e],
                   [e["kind_position_chance"] for _, e in entries if "kind_position_chance" in e],
                   marker="v", s=30, color="tab:green", edgecolor="black", zorder=3, label="same, within cause kind")
        ax.axhline(entries[0][1]["chance"], color="gray", linestyle="--", label="chance (share of cause frames)")
        if "fixed_frame" in summary:
            ax.axhline(summary["fixed_frame"]["hit_rate"], color="tab:red", linestyle=":",
                       label=f"same frame in every clip (frame {summary['fixed_frame']['frame']})")
        ax.set_xticks(list(x), [m for m, _ in entries], rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{name}\nn = {entries[0][1]['n']}", fontsize=8)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("top frame shows the cause")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, frameon=False)
    clips = ("held-out clips" if holdout else "test split") + (
        {None: "", "video_dependent": ", clips whose cause words need the video"}[subset])
    figure.suptitle(f"Temporal pointing game, {clips}", fontsize=9)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def save_grounding_charts(results: dict[str, Any], folder: Path, stem: str) -> list[str]:
    """`save_grounding_chart` for the test split and, when there is one, the held-out set (all its clips, those
    whose cause words need the video): folder/<stem>_*.png."""
    paths = [save_grounding_chart(results, folder / f"{stem}_pointing_test.png"),
             save_grounding_chart(results, folder / f"{stem}_pointing_holdout.png", holdout=True),
             *(save_grounding_chart(results, folder / f"{stem}_pointing_holdout_{subset}.png", holdout=True, subset=subset)
               for subset in ("video_dependent",))]
    return [str(p) for p in paths if p is not None]


def resummarize(path: Path) -> int:
    """--resummarize: recompute every grounding summary of the results file at `path` from its per-clip records."""
    from vidgpt2.grounding import summarize_grounding

    results = json.loads(path.read_text())
    for variant in results["variants"].values():
        for run in variant["runs"].values():
            for part in (run, run.get("holdout") or {}):
                if part.get("grounding_records"):
                    part["grounding"] = summarize_grounding(part["grounding_records"])
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"# bench_driving: summaries of {path} recomputed from its per-clip records\n")
    print(report(results))
    charts = save_grounding_charts(results, path.parent, path.stem)
    print("\nFigures: " + (", ".join(charts) or "none (nothing grounded)"))
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Refuse a command line that cannot run, before any data is written or global state (threads, logging) set."""
    if args.save_models is not None and args.load_models is not None:
        raise SystemExit("--save-models and --load-models exclude each other: --load-models trains nothing to save.")
    if args.holdout_test < 0:
        raise SystemExit(f"--holdout-test must be a number of clips >= 0 (0: no held-out set), got {args.holdout_test}.")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    if args.resummarize is not None:
        return resummarize(args.resummarize)
    _check_args(args)  # before anything is set up or written: a refused command line leaves no trace
    setup_torch(args.threads, args.seed)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("vidgpt2.metrics.coco").setLevel(logging.ERROR)
    from vidgpt2.data.synthetic_driving import write_driving_dataset

    info = machine_info(args.threads)
    mode = "quick" if args.quick else "full"
    print(f"# bench_driving ({mode} mode)\n")
    if args.quick:
        print("Quick mode is a smoke run of the whole pipeline (a few training steps): its scores mean nothing.\n")
    print_machine(info)
    sizes = {
        "num_train": args.num_train or (32 if args.quick else 480),
        "num_test": args.num_test or (12 if args.quick else 96),
        "epochs": args.epochs or (1 if args.quick else 8),
    }
    if args.meteor is None:
        args.meteor = not args.quick
    if args.figures is None:
        args.figures = 1 if args.quick else 3
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = [VARIANT_KEYS[key] for key in args.variants] if args.variants else list(VARIANTS)
    sizes["steps"] = math.ceil(math.ceil(sizes["num_train"] / 16) * sizes["epochs"])
    data_dir = CACHE_DIR / DATA_VERSION / f"train{sizes['num_train']}_test{sizes['num_test']}_seed{args.seed}"
    if not (data_dir / "ground_truth.jsonl").exists():
        write_driving_dataset(data_dir, num_train=sizes["num_train"], num_validation=4 if args.quick else 12, num_test=sizes["num_test"],
                              size=96, seed=args.seed, progress=False, overwrite=True)  # a cache: an unfinished copy is replaced
    holdout_dir = None
    if args.holdout_test:
        holdout_seed = args.seed + HOLDOUT_SEED_OFFSET
        holdout_dir = CACHE_DIR / DATA_VERSION / f"holdout_test{args.holdout_test}_seed{holdout_seed}"
        if not (holdout_dir / "ground_truth.jsonl").exists():
            write_driving_dataset(holdout_dir, num_train=0, num_validation=0, num_test=args.holdout_test, size=96,
                                  seed=holdout_seed, progress=False, overwrite=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": info, "sizes": sizes, "config": BENCH_CONFIG, "data_seed": args.seed,
                               "data_version": DATA_VERSION, "seeds": seeds, "holdout_test": args.holdout_test,
                               "variants": {name: {"runs": {}} for name in names}}
    results["cause_timing"] = {"test": cause_timing(data_dir)}
    if holdout_dir is not None:
        results["cause_timing"]["holdout"] = cause_timing(holdout_dir)
    out_name = args.results_name or ("bench_driving_quick" if args.quick else "bench_driving")
    # seeds outside, variants inside: a run cut short still has every variant for the seeds it finished
    for index, seed in enumerate(seeds):
        for name in names:
            overrides, blank = VARIANTS[name]
            if blank and index >= args.text_only_seeds:
                continue
            print(f"  training: {name}, seed {seed} ...", file=sys.stderr, flush=True)
            slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
            run_dir = CACHE_DIR / "runs_driving" / out_name / f"{slug}_seed{seed}"
            ground = not args.no_grounding and index < args.grounding_seeds
            run = train_variant(name, overrides, blank, data_dir, run_dir, sizes, args, seed, ground,
                                holdout_dir if index < args.grounding_seeds else None,
                                RESULTS_DIR / f"{out_name}_figures" if index == 0 else None)  # first seed's only
            results["variants"][name]["runs"][str(seed)] = run
            write_results(out_name, results)  # after every run
            print(f"  ... {run['train_and_eval_s']:.0f} s, action EM {run['exact_match']['action']:.3f}, direction "
                  f"{run['direction']}, load {load_average()}", file=sys.stderr, flush=True)
    results["runtime_s"] = time.perf_counter() - started
    results["load_average_at_end"] = load_average()
    print("\n## Explainable driving (synthetic BDD-X)\n")
    print(report(results))
    charts = save_grounding_charts(results, RESULTS_DIR, out_name)
    print("\nGrounding figures: " + (", ".join(charts) or "none (nothing grounded)"))
    path = write_results(out_name, results)
    print(f"\nRuntime {results['runtime_s']:.0f} s; load average at end {results['load_average_at_end']}; "
          f"raw results: {path}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
