"""The three captioners behind one small interface, at a tiny (trainable on CPU) and a full size.

- ``vidgpt2``:      ResNet per frame -> visual tokens + temporal embeddings -> GPT-2 with cross-attention.
- ``spacetimegpt``: SpaceTimeGPT's design, `VisionEncoderDecoderModel(TimesformerModel, GPT2LMHeadModel)`: every
                    space-time patch token of the TimeSformer is a cross-attention key for GPT-2.
- ``git``:          `GitForCausalLM` with `num_image_with_embedding = frames`: a CLIP-like ViT per frame, a learned
                    embedding per frame, and all patch tokens *prefixed* to the text in a BERT-like causal decoder.

Every captioner takes the same inputs: `pixels` (B, T, 3, H, W) from `VidGPT2VideoProcessor` and `labels` (B, L) =
caption ids + eos, padded with -100 (`VidGPT2Processor.tokenize_captions`). Special ids follow the word-level
tokenizer (bos = eos = pad = 0) at the tiny size, and each model's own vocabulary at the full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GitConfig,
    GitForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    TimesformerConfig,
    TimesformerModel,
    VisionEncoderDecoderModel,
)

from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration

MODEL_NAMES = ("vidgpt2", "vidgpt2-spatial", "spacetimegpt", "git")
LABELS = {
    "vidgpt2": "vidgpt2 (pooled)",
    "vidgpt2-spatial": "vidgpt2 (spatial)",
    "spacetimegpt": "SpaceTimeGPT design (TimeSformer + GPT-2)",
    "git": "GIT (video, per-frame embeddings)",
}

# --- tiny size: vidgpt2 is the demo's model (`vidgpt2.demo.DEMO_CONFIG` as of 2026-11-27, pinned here so that demo
# changes do not move this benchmark; run at 64x64). Its GPT-2 (width 128, 2 layers, 4 heads) is also SpaceTimeGPT's
# decoder; GIT's BERT-like decoder gets the same width/layers/heads/MLP. Encoders are sized to a similar parameter count.
DEMO_CONFIG = {
    "vision_config": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
    "text_config": {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "num_visual_layers": 1,
    "freeze_vision": False,
    "visual_dropout": 0.1,
}
TINY_TEXT = dict(DEMO_CONFIG["text_config"])
TINY_TIMESFORMER = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, patch_size=16)
TINY_GIT_VISION = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512, patch_size=16)


@dataclass
class Special:
    """Token ids and vocabulary size the models are built for."""

    vocab_size: int
    bos: int
    eos: int
    pad: int


# ---------------------------------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------------------------------
def build_vidgpt2(size: str, special: Special, frames: int, image_size: int, visual_tokens: str = "pooled", **overrides):
    if size == "tiny":
        text = dict(TINY_TEXT, vocab_size=special.vocab_size, bos_token_id=special.bos, eos_token_id=special.eos)
        fields = dict(
            vision_config=DEMO_CONFIG["vision_config"],
            text_config=text,
            num_frames=frames,
            image_size=image_size,
            visual_tokens=visual_tokens,
            num_visual_layers=DEMO_CONFIG["num_visual_layers"],
            freeze_vision=DEMO_CONFIG["freeze_vision"],
            visual_dropout=DEMO_CONFIG["visual_dropout"],
            pad_token_id=special.pad,
            decoder_start_token_id=special.bos,
        )
        config = VidGPT2Config(**{**fields, **overrides})
    else:  # ResNet-50 + GPT-2 small, the package defaults (vision tower frozen)
        config = VidGPT2Config(num_frames=frames, image_size=image_size, visual_tokens=visual_tokens, **overrides)
    return VidGPT2ForConditionalGeneration(config)


def build_spacetimegpt(size: str, special: Special, frames: int, image_size: int, **overrides):
    if size == "tiny":
        encoder = TimesformerConfig(image_size=image_size, num_frames=frames, **{**TINY_TIMESFORMER, **overrides})
        text = dict(TINY_TEXT, vocab_size=special.vocab_size, bos_token_id=special.bos, eos_token_id=special.eos)
    else:  # TimeSformer-base (8 x 224, patch 16, 768 wide, 12 layers) + GPT-2 small
        encoder = TimesformerConfig(image_size=image_size, num_frames=frames, **overrides)
        text = {}
    decoder = GPT2Config(**text, add_cross_attention=True, is_decoder=True)
    decoder.pad_token_id = special.pad
    model = VisionEncoderDecoderModel(encoder=TimesformerModel(encoder), decoder=GPT2LMHeadModel(decoder))
    model.config.decoder_start_token_id = special.bos
    model.config.pad_token_id = special.pad
    model.config.eos_token_id = special.eos
    return model


def build_git(size: str, special: Special, frames: int, image_size: int, **overrides):
    ids = dict(vocab_size=special.vocab_size, bos_token_id=special.bos, eos_token_id=special.eos, pad_token_id=special.pad)
    if size == "tiny":
        width, layers, heads = TINY_TEXT["n_embd"], TINY_TEXT["n_layer"], TINY_TEXT["n_head"]
        config = GitConfig(
            vision_config=dict(TINY_GIT_VISION, image_size=image_size),
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * width,  # as GPT-2's MLP
            max_position_embeddings=TINY_TEXT["n_positions"],
            num_image_with_embedding=frames,
            **ids,
            **overrides,
        )
    else:  # GIT-base: GitConfig defaults (ViT-B/16 at 224, 6-layer 768-wide decoder) with per-frame embeddings
        config = GitConfig(vision_config=dict(image_size=image_size), num_image_with_embedding=frames, **ids, **overrides)
    return GitForCausalLM(config)


def full_size_special(name: str) -> Special:
    """Each model's own vocabulary at the full size: GPT-2's 50257 (<|endoftext|> = 50256), GIT's BERT 30522."""
    if name == "git":
        return Special(vocab_size=30522, bos=101, eos=102, pad=0)
    return Special(vocab_size=50257, bos=50256, eos=50256, pad=50256)


def build(name: str, size: str, special: Special, frames: int, image_size: int, **overrides):
    """`overrides` change the config: VidGPT2Config fields, TimesformerConfig fields (SpaceTimeGPT's encoder) or
    GitConfig fields (diagnostics only; the benchmark uses none)."""
    if name == "vidgpt2":
        return build_vidgpt2(size, special, frames, image_size, "pooled", **overrides)
    if name == "vidgpt2-spatial":
        return build_vidgpt2(size, special, frames, image_size, "spatial", **overrides)
    if name == "spacetimegpt":
        return build_spacetimegpt(size, special, frames, image_size, **overrides)
    if name == "git":
        return build_git(size, special, frames, image_size, **overrides)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


# ---------------------------------------------------------------------------------------------------------------------
# one interface: loss and generate
# ---------------------------------------------------------------------------------------------------------------------
def decoder_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) mask of teacher-forcing inputs: the start token and every caption token (padding after eos masked),
    exactly what vidgpt2 builds from `labels`."""
    mask = torch.ones_like(labels)
    mask[:, 1:] = (labels[:, :-1] != -100).long()
    return mask


def caption_loss(name: str, model: Any, pixels: torch.Tensor, labels: torch.Tensor, special: Special) -> torch.Tensor:
    """Mean token cross-entropy of `labels` (B, L) given `pixels` (B, T, 3, H, W); the same targets for every model."""
    if name.startswith("vidgpt2"):
        return model(pixel_values_videos=pixels, labels=labels).loss
    if name == "spacetimegpt":
        # VisionEncoderDecoder shifts labels right itself (decoder_start_token_id first, -100 -> pad)
        return model(pixel_values=pixels, labels=labels, decoder_attention_mask=decoder_mask(labels)).loss
    if name == "git":
        # GIT is decoder-only: input = [bos] + caption + eos; it shifts internally and skips the image positions
        bos = labels.new_full((labels.shape[0], 1), special.bos)
        git_labels = torch.cat([bos, labels], dim=1)  # (B, 1 + L)
        input_ids = git_labels.clamp(min=0).masked_fill(git_labels == -100, special.pad)
        attention_mask = (git_labels != -100).long()
        return model(pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask, labels=git_labels).loss
    raise ValueError(f"unknown model {name!r}")


@torch.no_grad()
def generate(name: str, model: Any, pixels: torch.Tensor, special: Special, **kwargs: Any) -> torch.Tensor:
    """Token ids (B, 1 + new) starting with the start token, for `processor.batch_decode`."""
    batch = pixels.shape[0]
    start = torch.full((batch, 1), special.bos, dtype=torch.long, device=pixels.device)
    mask = torch.ones_like(start)
    ids = dict(bos_token_id=special.bos, eos_token_id=special.eos, pad_token_id=special.pad, do_sample=False)
    if name.startswith("vidgpt2"):
        return model.generate(pixel_values_videos=pixels, decoder_start_token_id=special.bos, **ids, **kwargs)
    if name == "spacetimegpt":
        return model.generate(
            pixel_values=pixels, decoder_input_ids=start, decoder_attention_mask=mask,
            decoder_start_token_id=special.bos, **ids, **kwargs,
        )
    if name == "git":
        return model.generate(pixel_values=pixels, input_ids=start, attention_mask=mask, **ids, **kwargs)
    raise ValueError(f"unknown model {name!r}")


def parameter_counts(name: str, model: Any) -> dict[str, int]:
    """Parameters of the whole model, of its video encoder (everything before text) and of its text decoder."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    total = count(model)
    if name.startswith("vidgpt2"):
        encoder = count(model.encoder)
        backbone = count(model.encoder.vision_tower)
    elif name == "spacetimegpt":
        encoder = count(model.encoder) + (count(model.enc_to_dec_proj) if hasattr(model, "enc_to_dec_proj") else 0)
        backbone = count(model.encoder)
    else:
        git = model.git
        backbone = count(git.image_encoder)
        encoder = backbone + count(git.visual_projection) + sum(p.numel() for p in git.img_temporal_embedding)
    return {"total": total, "video_encoder": encoder, "vision_backbone": backbone, "text_decoder": total - encoder}
