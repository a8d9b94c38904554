"""Tiny VidGPT2 building blocks for tests, notebooks and benchmarks of the test-suite kind."""

from __future__ import annotations

from typing import Any

import torch

from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration
from vidgpt2.tokenization import build_word_level_tokenizer

TINY_CAPTIONS = [
    "a red square turns blue",
    "a green circle grows",
    "a blue circle shrinks",
    "a yellow square moves left",
    "a red circle appears then a green square appears",
]

TINY_VISION = dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")


def tiny_tokenizer():
    return build_word_level_tokenizer(TINY_CAPTIONS)


def tiny_config(**overrides: Any) -> VidGPT2Config:
    tokenizer = tiny_tokenizer()
    text = dict(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    text.update(overrides.pop("text_config", {}))
    kwargs: dict[str, Any] = dict(vision_config=dict(TINY_VISION), text_config=text, num_frames=4, image_size=32)
    kwargs.update(overrides)
    return VidGPT2Config(**kwargs)


def tiny_model(seed: int = 0, **overrides: Any) -> VidGPT2ForConditionalGeneration:
    torch.manual_seed(seed)
    return VidGPT2ForConditionalGeneration(tiny_config(**overrides)).eval()


def tiny_pixels(config: VidGPT2Config, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    return torch.randn(batch, config.num_frames, 3, size, size, generator=generator)


def save_tiny_captioner(folder: Any) -> Any:
    """Save a tiny model + processor (4 frames of 32x32) that captions several words (eos logit row zeroed) to `folder`."""
    from vidgpt2 import VidGPT2Processor, VidGPT2VideoProcessor

    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    model = tiny_model()
    with torch.no_grad():  # no eos: captions of several words
        model.decoder.lm_head.weight[0].fill_(0.0)
    model.save_pretrained(folder)
    return folder
