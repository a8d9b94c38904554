"""Faster CPU inference in PyTorch: bf16 autocast and dynamic int8 quantisation of the decoder.

    model = quantize_dynamic_int8(model)          # a copy: GPT-2's Linear/Conv1D weights as int8
    with inference_precision("bfloat16"):         # torch.autocast on the model's device
        ids = model.generate(pixel_values_videos=pixels)

Latency and caption agreement with fp32 for each choice (and for onnxruntime): BENCHMARKS.md, section
"Faster CPU inference" (`benchmarks/bench_inference.py`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

Precision = Literal["float32", "bfloat16", "int8"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")


def conv1d_to_linear(module: nn.Module) -> int:
    """Replace every transformers `Conv1D` (GPT-2's projections; weight (in, out), y = x W + b) inside `module` by the
    equivalent `nn.Linear` (weight (out, in)), in place, so that `torch.ao` dynamic quantisation, which only knows
    `nn.Linear`, reaches them. Returns how many were replaced."""
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            in_features, out_features = child.weight.shape
            linear = nn.Linear(in_features, out_features, device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(child.weight.t())  # (in, out) -> (out, in)
                linear.bias.copy_(child.bias)
            setattr(module, name, linear)
            replaced += 1
        else:
            replaced += conv1d_to_linear(child)
    return replaced


def quantize_dynamic_int8(model: Any, include_encoder: bool = False) -> Any:
    """A copy of `model` whose decoder Linear layers (GPT-2's attention, cross-attention, MLP and LM head) hold int8
    weights, with activations quantised per call (`torch.ao.quantization.quantize_dynamic`, CPU only).

    The ResNet stays fp32 (dynamic quantisation covers Linear layers, not convolutions); with `include_encoder` the
    encoder's projection and visual layers are quantised too. The copy is for inference: it cannot be trained or
    saved with `save_pretrained`.

    Raises:
        ValueError: the model is not on the CPU (the quantised kernels are CPU kernels).
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"Dynamic int8 quantisation runs on the CPU; the model is on {device}. Call model.cpu() first.")
    from torch.ao.quantization import quantize_dynamic

    quantised = copy.deepcopy(model).eval()
    targets = [quantised.get_decoder()]
    if include_encoder:
        encoder = quantised.get_encoder()
        targets += [encoder.projection, encoder.layers]
    for target in targets:
        converted = conv1d_to_linear(target)
        logger.debug("Converted %d Conv1D layers to Linear for quantisation", converted)
        # quantize_dynamic swaps child modules: quantise each target's children in place
        quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return quantised


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """`torch.autocast(device, dtype=torch.bfloat16)` for "bfloat16"; nothing for "float32" and "int8" (int8 is a
    property of the model: see `quantize_dynamic_int8`).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision != "bfloat16":
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=torch.bfloat16):
        yield


def prepare_for_inference(model: Any, precision: str) -> Any:
    """The model to run at `precision`: `model` itself (float32, bfloat16 under `inference_precision`) or its int8
    copy."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    return quantize_dynamic_int8(model) if precision == "int8" else model


__all__ = ["PRECISIONS", "conv1d_to_linear", "inference_precision", "prepare_for_inference", "quantize_dynamic_int8"]
