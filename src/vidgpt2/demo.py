"""The README's main job: synthesise clips, train a small captioner from scratch on CPU, compare it with a
text-only baseline trained the same way on blank frames, and caption held-out clips.

Everything goes through the same code as `vidgpt2 train` / `vidgpt2 evaluate` (Seq2SeqTrainer, COCO metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_CONFIG: dict[str, Any] = {
    # a small ResNet (basic blocks) trained together with the decoder on the 64x64 synthetic clips at full size: at
    # 32x32 colours, sizes and order survived but shapes (circle, square, triangle) were mostly missed, and at 64x64
    # with one pooled token per frame they still were (exact match 0.375 after 20 epochs); the 2x2 grid of spatial
    # tokens per frame gives 0.567 at the same cost. Each clip is decoded once into a frame cache, so the larger
    # frames cost model compute only (BENCHMARKS.md, "pixel path").
    # It starts from random weights, so `run_training` trains it (freeze_vision defaults to off for --config).
    "vision_config": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "image_size": 64,
    "visual_tokens": "spatial",
    "num_visual_layers": 1,
    "visual_dropout": 0.1,
}
# 20 epochs (1000 steps of 16 clips) left the model underfitting (it missed training clips, mostly their shapes):
# exact match 0.567 (colour change 0.533, size change 0.800, appearance order 0.400) with 383 s of CPU time for the
# whole demo. 50 epochs (final training loss 0.003) give 0.975 (0.967 / 0.933 / 1.000, motion direction 1.000) with
# 885 s of CPU time for the whole demo (baseline at 10 epochs), 8 min 17 s on an idle 2-core machine (README,
# 2026-11-30).
DEMO_EPOCHS = 50
# The text-only baseline sees the same blank frames for every clip, so it learns one caption for all of them (the
# likeliest under the training captions). It has learnt it by 10 epochs: trained 10 or 50 epochs it gives identical
# test scores (exact match 0.017, BLEU-4 0.064, METEOR 0.113, ROUGE-L 0.316, CIDEr 0.819; 2026-11-30), so the demo
# spends its time on the video model.
DEMO_BASELINE_EPOCHS = 10


def demo_training_arguments(
    output_dir: str | Path, *, epochs: float = DEMO_EPOCHS, learning_rate: float = 2e-3, seed: int = 0, **overrides: Any
) -> Any:
    """The demo's training recipe as `Seq2SeqTrainingArguments`: batch 16, AdamW with 20 warm-up steps then cosine
    decay, weight decay 0.01, no evaluation or checkpoints during training, CPU. The benchmarks that train small
    models "like the demo" build their arguments here too; `overrides` are any other `Seq2SeqTrainingArguments`."""
    from transformers import Seq2SeqTrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=learning_rate,
        warmup_steps=20,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=True,
    )
    kwargs.update(overrides)
    return Seq2SeqTrainingArguments(**kwargs)


def _positive_epochs(text: str) -> float:
    """argparse type of `--epochs`/`--baseline-epochs`: a number of epochs above 0 (fractions as the Trainer takes
    them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of epochs") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} epochs would train nothing: give a number above 0")
    return value


def _train(
    output_dir: Path, data_dir: Path, args: argparse.Namespace, blank_video: bool, epochs: float | None = None
) -> dict[str, Any]:
    """Train the demo model (`blank_video`: the text-only baseline) for `epochs` (default `args.epochs`)."""
    from .training import DataArguments, LoraArguments, ModelArguments, run_training

    config_path = output_dir.parent / "demo_config.json"
    config = {**DEMO_CONFIG, "num_frames": args.num_frames, "image_size": args.image_size}
    config_path.write_text(json.dumps(config, indent=2))
    model_args = ModelArguments(config=str(config_path), build_tokenizer=True)
    data_args = DataArguments(
        train_file=str(data_dir / "train.jsonl"),
        validation_file=str(data_dir / "validation.jsonl"),
        test_file=str(data_dir / "test.jsonl"),
        max_caption_length=24,
        blank_video=blank_video,
        # decode every clip once (uint8 frames at the model's size); the blank-frame baseline reads no video
        frame_cache=None if blank_video else str(output_dir.parent / f"frames_{args.image_size}px"),
    )
    training_args = demo_training_arguments(
        output_dir, epochs=args.epochs if epochs is None else epochs, learning_rate=args.learning_rate, seed=args.seed
    )
    return run_training(model_args, data_args, LoraArguments(), training_args)


def cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 demo", description="Synthesise, train, evaluate, caption (CPU).")
    parser.add_argument("--output-dir", default="outputs/demo", help="Where data, models and results go.")
    parser.add_argument("--num-train", type=int, default=800, help="Synthetic training clips.")
    parser.add_argument("--num-test", type=int, default=120, help="Synthetic test clips.")
    parser.add_argument("--num-frames", type=int, default=8, help="Frames per clip.")
    parser.add_argument("--image-size", type=int, default=DEMO_CONFIG["image_size"], help="Frame side the model sees.")
    parser.add_argument("--epochs", type=_positive_epochs, default=DEMO_EPOCHS, help="Training epochs of the video model.")
    parser.add_argument(
        "--baseline-epochs", type=_positive_epochs, default=None,
        help=f"Training epochs of the text-only baseline (default: {DEMO_BASELINE_EPOCHS}, or --epochs if fewer; it "
        "learns one caption for every clip and has learnt it by then).",
    )
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Peak learning rate.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)
    if args.baseline_epochs is None:
        args.baseline_epochs = min(args.epochs, DEMO_BASELINE_EPOCHS)

    from .data import CAPTION_FAMILIES, caption_family, load_captions_files, write_synthetic_dataset
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .training import generate_captions

    out = Path(args.output_dir)
    data_dir = out / "data"
    print(f"[1/4] Synthesising {args.num_train} training and {args.num_test} test clips in {data_dir}")
    write_synthetic_dataset(
        data_dir, num_train=args.num_train, num_validation=max(16, args.num_test // 4), num_test=args.num_test,
        num_frames=args.num_frames, size=64, seed=args.seed, overwrite=True,  # the demo's own folder: rerunnable
    )
    print("[2/4] Training vidgpt2 from scratch (ResNet + GPT-2, small) on CPU")
    video_metrics = _train(out / "vidgpt2", data_dir, args, blank_video=False)
    print(f"[3/4] Training the text-only baseline (same model, blank frames, {args.baseline_epochs:g} epochs)")
    text_metrics = _train(out / "text_only", data_dir, args, blank_video=True, epochs=args.baseline_epochs)

    test = load_captions_files(test_file=str(data_dir / "test.jsonl"))["test"]
    scores = {
        "vidgpt2": _score_captions(out / "vidgpt2", test, blank_video=False),
        "text_only": _score_captions(out / "text_only", test, blank_video=True),
    }
    exact = {name: score["exact_match"] for name, score in scores.items()}
    order = {name: score["order_accuracy"] for name, score in scores.items()}
    print(f"\nTest set: {len(test)} held-out clips (BLEU/METEOR/ROUGE-L/CIDEr on pycocoevalcap's scale, CIDEr unscaled)")
    print(f"  {'metric':<34} {'vidgpt2':>9} {'text-only':>9}")
    for family in ["all", *CAPTION_FAMILIES]:
        label = "exact match" if family == "all" else f"  exact match: {family}"
        print(f"  {label:<34} {_fmt(exact['vidgpt2'][family]):>9} {_fmt(exact['text_only'][family]):>9}")
    print(f"  {'order-word accuracy (blind: 0.5)':<34} {_fmt(order['vidgpt2']):>9} {_fmt(order['text_only']):>9}")
    for key in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider"):
        a, b = video_metrics.get(f"test_{key}"), text_metrics.get(f"test_{key}")
        print(f"  {key:<34} {_fmt(a):>9} {_fmt(b):>9}")

    print("\n[4/4] Captions of held-out clips")
    model = VidGPT2ForConditionalGeneration.from_pretrained(out / "vidgpt2")
    processor = VidGPT2Processor.from_pretrained(out / "vidgpt2")
    sample = test.select(range(min(8, len(test))))
    for row, prediction in zip(sample, generate_captions(model, processor, sample, show_progress=False)):
        mark = "ok " if prediction == row["references"][0] else "   "
        print(f"  {mark}{Path(row['video']).name:<10} [{caption_family(row['references'][0]) or '?'}]")
        print(f"      predicted: {prediction}")
        print(f"      reference: {row['references'][0]}")
    summary = {"vidgpt2": {**video_metrics, **scores["vidgpt2"]}, "text_only": {**text_metrics, **scores["text_only"]}}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nResults: {out / 'demo_results.json'}; models: {out / 'vidgpt2'}, {out / 'text_only'}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _score_captions(model_dir: Path, test: Any, blank_video: bool) -> dict[str, Any]:
    """Greedy captions of the test clips, scored by exact match (overall and per caption family) and by order-word
    accuracy: among captions that state the order-dependent part either way (`order_outcome`), the share that state
    it the right way round. A model that ignores frame order scores about 0.5; None when no caption states it."""
    from .data import CAPTION_FAMILIES, caption_family, order_outcome
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .training import generate_captions

    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    processor = VidGPT2Processor.from_pretrained(model_dir)
    predictions = generate_captions(model, processor, test, batch_size=32, show_progress=False, blank_video=blank_video)
    hits: dict[str, list[bool]] = {"all": [], **{family: [] for family in CAPTION_FAMILIES}}
    outcomes = []
    for prediction, references in zip(predictions, test["references"]):
        hit = prediction == references[0]
        hits["all"].append(hit)
        hits.setdefault(caption_family(references[0]) or "other", []).append(hit)
        outcomes.append(order_outcome(prediction, references[0]))
    decided = outcomes.count("correct") + outcomes.count("reversed")
    return {
        # None for a family with no clip in the test set (a small --num-test)
        "exact_match": {family: sum(v) / len(v) if v else None for family, v in hits.items()},
        "order_accuracy": outcomes.count("correct") / decided if decided else None,
        "order_decided": decided,
    }


__all__ = ["cmd_demo", "demo_training_arguments"]
