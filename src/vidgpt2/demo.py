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
    # a small ResNet (basic blocks) trained together with the decoder: frames are 64x64 synthetic shapes
    "vision_config": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "image_size": 64,
    "visual_tokens": "pooled",
    "num_visual_layers": 1,
    "freeze_vision": False,
    "visual_dropout": 0.1,
}


def _train(output_dir: Path, data_dir: Path, args: argparse.Namespace, blank_video: bool) -> dict[str, Any]:
    from transformers import Seq2SeqTrainingArguments

    from .training import DataArguments, LoraArguments, ModelArguments, run_training

    config_path = output_dir.parent / "demo_config.json"
    config_path.write_text(json.dumps({**DEMO_CONFIG, "num_frames": args.num_frames}, indent=2))
    model_args = ModelArguments(config=str(config_path), build_tokenizer=True)
    data_args = DataArguments(
        train_file=str(data_dir / "train.jsonl"),
        validation_file=str(data_dir / "validation.jsonl"),
        test_file=str(data_dir / "test.jsonl"),
        max_caption_length=24,
        blank_video=blank_video,
    )
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=args.learning_rate,
        warmup_steps=20,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=True,
    )
    return run_training(model_args, data_args, LoraArguments(), training_args)


def cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidgpt2 demo", description="Synthesise, train, evaluate, caption (CPU).")
    parser.add_argument("--output-dir", default="outputs/demo", help="Where data, models and results go.")
    parser.add_argument("--num-train", type=int, default=800, help="Synthetic training clips.")
    parser.add_argument("--num-test", type=int, default=120, help="Synthetic test clips.")
    parser.add_argument("--num-frames", type=int, default=8, help="Frames per clip.")
    parser.add_argument("--epochs", type=float, default=8, help="Training epochs for each model.")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Peak learning rate.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)

    from .cli import print_metrics_table
    from .data import caption_family, load_captions_files, write_synthetic_dataset
    from .modeling_vidgpt2 import VidGPT2ForConditionalGeneration
    from .processing_vidgpt2 import VidGPT2Processor
    from .training import generate_captions

    out = Path(args.output_dir)
    data_dir = out / "data"
    print(f"[1/4] Synthesising {args.num_train} training and {args.num_test} test clips in {data_dir}")
    write_synthetic_dataset(
        data_dir, num_train=args.num_train, num_validation=max(16, args.num_test // 4), num_test=args.num_test,
        num_frames=args.num_frames, size=64, seed=args.seed,
    )
    print("[2/4] Training vidgpt2 from scratch (ResNet + GPT-2, small) on CPU")
    video_metrics = _train(out / "vidgpt2", data_dir, args, blank_video=False)
    print("[3/4] Training the text-only baseline (same model, blank frames)")
    text_metrics = _train(out / "text_only", data_dir, args, blank_video=True)

    keys = ["bleu_1", "bleu_4", "meteor", "rouge_l", "cider"]
    print("\nTest set (pycocoevalcap scale, 0-1; CIDEr unscaled):")
    print(f"  {'metric':<10} {'vidgpt2':>10} {'text-only':>10}")
    for key in keys:
        a, b = video_metrics.get(f"test_{key}"), text_metrics.get(f"test_{key}")
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"  {key:<10} {fmt(a):>10} {fmt(b):>10}")

    print("\n[4/4] Captions of held-out clips")
    model = VidGPT2ForConditionalGeneration.from_pretrained(out / "vidgpt2")
    processor = VidGPT2Processor.from_pretrained(out / "vidgpt2")
    test = load_captions_files(test_file=str(data_dir / "test.jsonl"))["test"]
    sample = test.select(range(min(8, len(test))))
    predictions = generate_captions(model, processor, sample, show_progress=False)
    exact = 0
    for row, prediction in zip(sample, predictions):
        exact += prediction == row["references"][0]
        print(f"  {Path(row['video']).name:<22} [{caption_family(row['references'][0]) or '?':<10}]")
        print(f"      predicted: {prediction}")
        print(f"      reference: {row['references'][0]}")
    summary = {"vidgpt2": video_metrics, "text_only": text_metrics}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{exact}/{len(sample)} shown captions exactly right. Results: {out / 'demo_results.json'}")
    print_metrics_table({k: video_metrics.get(f"test_{k}") for k in keys}, title="vidgpt2 test metrics:")
    return 0


__all__ = ["cmd_demo"]
