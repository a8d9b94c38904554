"""Quality at an equal budget: the same clips (decoded once into memory), tokenizer, steps, batches in the same order,
AdamW + warmup + cosine schedule, gradient clipping and CPU threads for every model; greedy decoding; COCO metrics
per caption family."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup

from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.data import (
    CAPTION_FAMILIES,
    caption_family,
    load_captions_files,
    write_synthetic_dataset,
)
from vidgpt2.metrics import compute_caption_metrics
from vidgpt2.processing_vidgpt2 import video_processor_settings
from vidgpt2.tokenization import build_word_level_tokenizer

from .models import Special, build, caption_loss, generate, parameter_counts

logger = logging.getLogger(__name__)
MAX_CAPTION_TOKENS = 24


@dataclass
class ClipData:
    """Every clip decoded once: the models all read these tensors."""

    processor: VidGPT2Processor
    special: Special
    train_pixels: torch.Tensor  # (N, T, 3, H, W) float32, ImageNet-normalised
    train_labels: torch.Tensor  # (N, L) caption ids + eos, -100 padded
    test_pixels: torch.Tensor
    test_references: list[list[str]]
    decode_seconds: float


def prepare_data(data_dir: Path, num_train: int, num_test: int, frames: int, size: int, seed: int = 0) -> ClipData:
    """Write synthetic clips (once per setting), build the word-level tokenizer on the train captions, decode."""
    data_dir = Path(data_dir) / f"train{num_train}-test{num_test}-t{frames}-s{size}-seed{seed}"
    if not (data_dir / "test.jsonl").is_file():
        write_synthetic_dataset(data_dir, num_train, 0, num_test, num_frames=frames, size=size, seed=seed, progress=False,
                                overwrite=True)
    data = load_captions_files(train_file=data_dir / "train.jsonl", test_file=data_dir / "test.jsonl")
    tokenizer = build_word_level_tokenizer(data["train"]["caption"])
    video_processor = VidGPT2VideoProcessor(num_frames=frames, **video_processor_settings(size))
    processor = VidGPT2Processor(video_processor=video_processor, tokenizer=tokenizer, max_caption_length=MAX_CAPTION_TOKENS)
    special = Special(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)

    cache = data_dir / "decoded.pt"
    start = time.perf_counter()
    if cache.is_file():
        tensors = torch.load(cache)
    else:
        def decode(paths: list[str]) -> torch.Tensor:
            chunks = [video_processor(paths[i : i + 64], return_tensors="pt")["pixel_values_videos"] for i in range(0, len(paths), 64)]
            return torch.cat(chunks)

        tensors = {"train": decode(list(data["train"]["video"])), "test": decode(list(data["test"]["video"]))}
        torch.save(tensors, cache)
    labels = torch.tensor(processor.tokenize_captions(list(data["train"]["caption"])))
    return ClipData(
        processor=processor,
        special=special,
        train_pixels=tensors["train"],
        train_labels=labels,
        test_pixels=tensors["test"],
        test_references=[list(r) for r in data["test"]["references"]],
        decode_seconds=time.perf_counter() - start,
    )


def batch_order(num_samples: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """The sample indices of every step, (steps, batch_size): reshuffled each epoch, identical for every model."""
    generator = torch.Generator().manual_seed(seed)
    epochs = math.ceil(steps * batch_size / num_samples)
    order = torch.cat([torch.randperm(num_samples, generator=generator) for _ in range(epochs)])
    return order[: steps * batch_size].view(steps, batch_size)


def train(
    name: str,
    model: Any,
    data: ClipData,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    seed: int,
    max_grad_norm: float = 1.0,
) -> dict[str, Any]:
    """The one training loop every model goes through."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, warmup_steps, steps)
    order = batch_order(len(data.train_labels), steps, batch_size, seed)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        index = order[step]
        labels = data.train_labels[index]
        labels = labels[:, : int((labels != -100).sum(1).max())]  # (B, L_batch): no all-padding columns
        loss = caption_loss(name, model, data.train_pixels[index], labels, data.special)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    tail = losses[-max(1, steps // 10) :]
    return {"train_seconds": seconds, "final_loss": sum(tail) / len(tail), "first_loss": losses[0]}


from vidgpt2.data import order_outcome  # noqa: E402  (shared definition)


def score(predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    """Exact match, BLEU-4, CIDEr-D and order-word accuracy, overall and per caption family (of the first reference)."""
    def one(indices: list[int]) -> dict[str, Any]:
        preds = [predictions[i] for i in indices]
        refs = [references[i] for i in indices]
        exact = sum(" ".join(p.split()) == " ".join(r[0].split()) for p, r in zip(preds, refs)) / len(indices)
        coco = compute_caption_metrics(preds, refs, use_java=False)  # BLEU/CIDEr only: no Java process per call
        outcomes = [order_outcome(p, r[0]) for p, r in zip(preds, refs)]
        decided = sum(o is not None for o in outcomes)
        return {
            "n": len(indices), "exact_match": exact, "bleu_4": coco["bleu_4"], "cider": coco["cider"],
            "order_decided": decided,
            "order_accuracy": outcomes.count("correct") / decided if decided else None,
        }

    result = {"all": one(list(range(len(predictions))))}
    families = [caption_family(r[0]) for r in references]
    for family in CAPTION_FAMILIES:
        indices = [i for i, f in enumerate(families) if f == family]
        if indices:
            result[family] = one(indices)
    return result


def generate_all(name: str, model: Any, data: ClipData, pixels: torch.Tensor, batch_size: int = 64) -> list[str]:
    model.eval()
    predictions: list[str] = []
    for begin in range(0, len(pixels), batch_size):
        ids = generate(name, model, pixels[begin : begin + batch_size], data.special,
                       max_new_tokens=MAX_CAPTION_TOKENS, num_beams=1)
        predictions.extend(data.processor.batch_decode(ids))
    return predictions


def evaluate(name: str, model: Any, data: ClipData) -> tuple[list[str], dict[str, Any], float]:
    """Greedy captions of every test clip, their scores, and the seconds captioning took. Also captions the clips
    with their frames reversed: an order-blind model says the same thing again."""
    start = time.perf_counter()
    predictions = generate_all(name, model, data, data.test_pixels)
    seconds = time.perf_counter() - start
    scores = score(predictions, data.test_references)
    flipped = generate_all(name, model, data, data.test_pixels.flip(1))  # (N, T, ...) frames in reverse order
    scores["frames_reversed"] = {
        "unchanged": sum(a == b for a, b in zip(predictions, flipped)) / len(flipped),
        "says_reversed_caption": sum(
            order_outcome(f, r[0]) == "reversed" for f, r in zip(flipped, data.test_references)
        ) / len(flipped),
    }
    return predictions, scores, seconds


def run_one(
    name: str, data: ClipData, seed: int, frames: int, size: int, overrides: dict[str, Any] | None = None,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Build `name` from its tiny config with `seed`, train it with the shared loop, evaluate it."""
    torch.manual_seed(seed)  # same initialisation stream and dropout stream for every model
    model = build(name, "tiny", data.special, frames, size, **(overrides or {}))
    trained = train(name, model, data, seed=seed, **train_kwargs)
    predictions, scores, eval_seconds = evaluate(name, model, data)
    return {
        "model": name,
        "seed": seed,
        "overrides": overrides or {},
        "parameters": parameter_counts(name, model),
        **trained,
        "eval_seconds": eval_seconds,
        "scores": scores,
        "predictions": predictions,
    }
