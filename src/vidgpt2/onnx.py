"""ONNX export of VidGPT2 and a small onnxruntime captioner.

The export follows the split that optimum uses for encoder-decoder models (``optimum.exporters.onnx``, task
``image-to-text-with-past``), with optimum's file and tensor names:

    encoder_model.onnx            pixel_values_videos (B, T, 3, H, W)            -> last_hidden_state (B, N, d)
    decoder_model.onnx            input_ids (B, L), encoder_hidden_states (B, N, d)
                                                                               -> logits (B, L, V),
                                                                                  present.{i}.decoder.key/value (B, h, L, d/h),
                                                                                  present.{i}.encoder.key/value (B, h, N, d/h)
    decoder_with_past_model.onnx  input_ids (B, 1), encoder_hidden_states,
                                  past_key_values.{i}.decoder.key/value (B, h, P, d/h),
                                  past_key_values.{i}.encoder.key/value (B, h, N, d/h)
                                                                               -> logits (B, 1, V),
                                                                                  present.{i}.decoder.key/value (B, h, P+1, d/h)

The cross-attention keys/values are computed once by ``decoder_model.onnx`` and fed back unchanged, as
transformers' ``EncoderDecoderCache`` does.

Why not optimum itself: ``optimum-onnx`` (0.1.0, the package that now holds ``optimum.exporters.onnx``) requires
``transformers<4.58`` and VidGPT2 needs transformers 5.x, so the graphs are traced here with ``torch.onnx.export``
(the dynamo exporter, ``onnxscript``) around export-only wrapper modules; the model's own code is not changed.

What is not exported (the export or the runtime refuses with a message): a PEFT model with unmerged adapters (merge
them first), sampling and beam search in the runtime (greedy only), generation options the runtime does not
implement (repetition penalty, n-gram blocking, ...), and attention-weight outputs (explanations need PyTorch).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
EXPORT_INFO_FILE = "onnx_export.json"
DEFAULT_OPSET = 18
# Largest |PyTorch - onnxruntime| allowed on the logits and visual tokens (fp32 on CPU). Measured: 1e-6 (tokens) and
# 6e-8 (logits) on the tiny test model, 1e-6 and 4e-6 on the trained demo-size model; the full-size model
# (ResNet-50 + GPT-2 small) passes it (BENCHMARKS.md). The margin covers other CPUs' kernels.
DEFAULT_ATOL = 1e-4

# Generation options that change greedy decoding and that `OnnxVidGPT2Captioner` does not implement: a model whose
# generation config sets one of them to a non-default value is refused (its captions would differ from PyTorch's).
UNSUPPORTED_GENERATION_OPTIONS: dict[str, Any] = {
    "do_sample": False,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_length": 0,
    "min_new_tokens": None,
    "length_penalty": 1.0,
    "diversity_penalty": 0.0,
}


class OnnxExportError(ValueError):
    """The model (or a requested option) cannot be exported, or the exported graphs disagree with PyTorch."""


# --- export-only wrappers ---------------------------------------------------------------------------------------------
class _EncoderForExport(nn.Module):
    """pixel_values_videos (B, T, 3, H, W) -> visual tokens (B, N, d), through the encoder's public forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values_videos=pixel_values_videos).last_hidden_state


class _DecoderForExport(nn.Module):
    """GPT-2 with cross-attention on flat key/value tensors instead of an `EncoderDecoderCache`.

    Without past: (input_ids, encoder_hidden_states) -> (logits, self k/v and cross k/v per layer).
    With past: (input_ids, encoder_hidden_states, past self k/v and cross k/v per layer) -> (logits, self k/v per
    layer); the cross k/v do not change after the first step, so they are not returned again.
    """

    def __init__(self, model: nn.Module, with_past: bool):
        super().__init__()
        self.decoder = model.get_decoder()
        self.num_layers = model.config.text_config.n_layer
        self.with_past = with_past

    def forward(
        self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, past: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        if self.with_past:
            # past: per layer (self key, self value, cross key, cross value)
            self_kv = [(past[4 * i], past[4 * i + 1]) for i in range(self.num_layers)]
            cross_kv = [(past[4 * i + 2], past[4 * i + 3]) for i in range(self.num_layers)]
            cache = EncoderDecoderCache(DynamicCache(self_kv), DynamicCache(cross_kv))
        else:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        outputs = self.decoder(
            input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, cache=cache, use_cache=True,
            return_dict=True,
        )
        present: list[torch.Tensor] = []
        for i in range(self.num_layers):
            present += [outputs.cache.self_attention_cache.layers[i].keys, outputs.cache.self_attention_cache.layers[i].values]
            if not self.with_past:
                present += [
                    outputs.cache.cross_attention_cache.layers[i].keys,
                    outputs.cache.cross_attention_cache.layers[i].values,
                ]
        return (outputs.logits, *present)


def past_names(num_layers: int, prefix: str = "past_key_values", cross: bool = True) -> list[str]:
    """optimum's flat cache names: `{prefix}.{layer}.decoder.key`, `.decoder.value`, `.encoder.key`, `.encoder.value`."""
    names = []
    for i in range(num_layers):
        names += [f"{prefix}.{i}.decoder.key", f"{prefix}.{i}.decoder.value"]
        if cross:
            names += [f"{prefix}.{i}.encoder.key", f"{prefix}.{i}.encoder.value"]
    return names


# --- export -------------------------------------------------------------------------------------------------------------
@dataclass
class OnnxExportReport:
    """What `export_onnx` wrote and how closely the graphs match PyTorch (max abs differences, fp32)."""

    output_dir: str
    files: list[str]
    opset: int
    atol: float
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    greedy_tokens_match: bool | None = None
    seconds: float = 0.0


def check_exportable(model: Any) -> None:
    """Raise `OnnxExportError` naming what stops `model` from being exported."""
    if hasattr(model, "peft_config") or type(model).__name__.startswith("Peft"):
        raise OnnxExportError(
            "This model has unmerged PEFT (LoRA) adapters; ONNX export needs plain weights. Merge them first: "
            "`model = model.merge_and_unload()` and save, then export that folder."
        )
    for name in ("get_encoder", "get_decoder"):
        if not hasattr(model, name):
            raise OnnxExportError(f"{type(model).__name__} has no `{name}()`: only VidGPT2ForConditionalGeneration exports.")
    text_config = model.config.text_config
    if not getattr(text_config, "add_cross_attention", False):
        raise OnnxExportError("The decoder has no cross-attention (text_config.add_cross_attention=False).")
    implementation = text_config._attn_implementation
    if implementation not in (None, "eager", "sdpa"):
        raise OnnxExportError(
            f"Attention implementation {implementation!r} cannot be exported; load the model with "
            "attn_implementation='sdpa' or 'eager'."
        )


def export_onnx(
    model: Any,
    output_dir: str | Path,
    processor: Any = None,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    validate: bool = True,
) -> OnnxExportReport:
    """Export `model` (a `VidGPT2ForConditionalGeneration`) as three ONNX graphs (see the module docstring) into
    `output_dir`, with its config, generation config and `processor` (when given) so that
    `OnnxVidGPT2Captioner.from_pretrained(output_dir)` captions video files.

    With `validate`, runs PyTorch and onnxruntime on the same random frames: raises `OnnxExportError` when the
    visual tokens or logits differ by more than `atol`, or the greedy tokens differ.

    Raises:
        OnnxExportError: what cannot be exported (see `check_exportable`), or a failed validation.
    """
    check_exportable(model)
    start = time.perf_counter()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    config = model.config
    pixels = _example_pixels(config, batch=2)
    files = [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]
    with torch.no_grad():
        _export_encoder(model, pixels, output / ENCODER_FILE, opset)
        visual_tokens = model.get_encoder()(pixel_values_videos=pixels).last_hidden_state  # (B, N, d)
        _export_decoder(model, visual_tokens, output / DECODER_FILE, opset, with_past=False)
        _export_decoder(model, visual_tokens, output / DECODER_WITH_PAST_FILE, opset, with_past=True)
    config.save_pretrained(output)
    model.generation_config.save_pretrained(output)
    if processor is not None:
        processor.save_pretrained(output)
    report = OnnxExportReport(output_dir=str(output), files=files, opset=opset, atol=atol)
    if validate:
        _validate(model, output, report)
    report.seconds = round(time.perf_counter() - start, 2)
    (output / EXPORT_INFO_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    logger.info("Exported ONNX graphs to %s in %.1f s", output, report.seconds)
    return report


def _example_pixels(config: Any, batch: int) -> torch.Tensor:
    size = config.image_size
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, config.num_frames, config.vision_config.num_channels, size, size, generator=generator)


def _run_exporter(module: nn.Module, args: tuple, path: Path, opset: int, **kwargs: Any) -> None:
    """torch.onnx.export (dynamo) with the weights inside the file, and one clear error when tracing fails."""
    # onnx_ir logs every deduplicated initializer at INFO: keep the exporter's own chatter at WARNING
    for name in ("onnx_ir", "onnxscript"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    module = module.eval()
    try:
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False, **kwargs)
    except Exception as error:  # the exporter raises many types; name the graph and keep the cause
        raise OnnxExportError(f"torch.onnx.export failed for {path.name}: {_exporter_reason(error)}") from error
    program.save(str(path), external_data=_needs_external_data(module))


def _exporter_reason(error: Exception) -> str:
    """The informative line of a torch.onnx exporter error (its first line is a generic banner)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("## Exception summary") and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(error).__name__


def _needs_external_data(module: nn.Module) -> bool:
    # protobuf files cannot exceed 2 GiB: keep large weights in a side file (`<name>.onnx.data`)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    return size > 1.5 * 2**30


def _export_encoder(model: Any, pixels: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=model.config.num_frames)
    shapes: dict[int, Any] = {0: batch, 1: frames}
    if model.config.visual_tokens == "pooled":  # spatial tokens need the configured frame size
        shapes.update({3: torch.export.Dim("height", min=32, max=4096), 4: torch.export.Dim("width", min=32, max=4096)})
    _run_exporter(
        _EncoderForExport(model), (pixels,), path, opset,
        input_names=["pixel_values_videos"], output_names=["last_hidden_state"],
        dynamic_shapes={"pixel_values_videos": shapes},
    )


def _export_decoder(model: Any, visual_tokens: torch.Tensor, path: Path, opset: int, with_past: bool) -> None:
    config = model.config
    layers = config.text_config.n_layer
    batch = visual_tokens.shape[0]
    start = torch.full((batch, 1), config.decoder_start_token_id, dtype=torch.long)
    dim_batch = torch.export.Dim("batch", min=1, max=4096)
    dim_visual = torch.export.Dim("visual_tokens", min=1, max=65536)
    wrapper = _DecoderForExport(model, with_past)
    if not with_past:
        ids = torch.cat([start, start], dim=1)  # (B, 2): a length that is not 1, so that it stays symbolic
        dim_len = torch.export.Dim("decoder_sequence_length", min=1, max=config.text_config.n_positions)
        _run_exporter(
            wrapper, (ids, visual_tokens), path, opset,
            input_names=["input_ids", "encoder_hidden_states"],
            output_names=["logits", *past_names(layers, "present")],
            dynamic_shapes={
                "input_ids": {0: dim_batch, 1: dim_len},
                "encoder_hidden_states": {0: dim_batch, 1: dim_visual},
            },
        )
        return
    first = _DecoderForExport(model, with_past=False)(torch.cat([start, start], dim=1), visual_tokens)
    past = tuple(first[1:])  # per layer: self k, self v (B, h, 2, d/h), cross k, cross v (B, h, N, d/h)
    dim_past = torch.export.Dim("past_sequence_length", min=1, max=config.text_config.n_positions)
    past_shapes = []
    for _ in range(layers):
        past_shapes += [{0: dim_batch, 2: dim_past}] * 2 + [{0: dim_batch, 2: dim_visual}] * 2
    _run_exporter(
        wrapper, (start, visual_tokens, past), path, opset,
        input_names=["input_ids", "encoder_hidden_states", *past_names(layers)],
        output_names=["logits", *past_names(layers, "present", cross=False)],
        dynamic_shapes={
            "input_ids": {0: dim_batch},
            "encoder_hidden_states": {0: dim_batch, 1: dim_visual},
            "past": tuple(past_shapes),
        },
    )


def _validate(model: Any, output: Path, report: OnnxExportReport) -> None:
    """PyTorch vs onnxruntime on 2 clips of 3 frames (a frame count other than the traced one)."""
    captioner = OnnxVidGPT2Captioner(output, processor=None, config=model.config, generation_config=model.generation_config)
    pixels = _example_pixels(model.config, batch=2)[:, : max(1, model.config.num_frames - 1)]
    max_new_tokens = 8
    with torch.no_grad():
        reference = model.generate(
            pixel_values_videos=pixels, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
            output_scores=True, return_dict_in_generate=True,
        )
        tokens_pt = model.get_encoder()(pixel_values_videos=pixels).last_hidden_state.numpy()
    result = captioner.generate_ids(pixels.numpy(), max_new_tokens=max_new_tokens, return_logits=True)
    tokens_ort = captioner.encode(pixels.numpy())
    steps = min(len(reference.scores), result.logits.shape[1])
    scores_pt = torch.stack(list(reference.scores[:steps]), dim=1).numpy()  # (B, steps, V)
    report.max_abs_diff = {
        "last_hidden_state": float(np.abs(tokens_pt - tokens_ort).max()),
        "logits": float(np.abs(scores_pt - result.logits[:, :steps]).max()),
    }
    sequences_pt = reference.sequences.numpy()
    report.greedy_tokens_match = sequences_pt.shape == result.sequences.shape and bool(
        (sequences_pt == result.sequences).all()
    )
    worst = max(report.max_abs_diff.values())
    if worst > report.atol or not report.greedy_tokens_match:
        raise OnnxExportError(
            f"The ONNX graphs in {output} disagree with PyTorch: max abs differences {report.max_abs_diff} "
            f"(tolerance {report.atol}), greedy tokens identical: {report.greedy_tokens_match}. Try another --opset."
        )
    logger.info("ONNX validation: max abs differences %s (atol %g), greedy tokens identical", report.max_abs_diff, report.atol)


# --- int8 ---------------------------------------------------------------------------------------------------------------
def quantize_onnx(input_dir: str | Path, output_dir: str | Path, encoder: bool = False) -> Path:
    """Copy an exported folder and quantise the decoders' MatMul/Gemm weights to int8 with onnxruntime's dynamic
    quantisation (`onnxruntime.quantization.quantize_dynamic`, activations quantised per call). The encoder stays
    fp32 unless `encoder` (its convolutions are not dynamically quantised by onnxruntime; only its projection and
    visual layers would be)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(input_dir), Path(output_dir)
    if source.resolve() == target.resolve():
        raise ValueError(f"quantize_onnx writes a new folder; got the same folder twice: {source}")
    target.mkdir(parents=True, exist_ok=True)
    quantised = [DECODER_FILE, DECODER_WITH_PAST_FILE] + ([ENCODER_FILE] if encoder else [])
    for item in source.iterdir():
        if item.name in quantised or item.name.endswith(".onnx.data"):
            continue
        shutil.copy2(item, target / item.name)
    for name in [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]:
        if name in quantised:
            quantize_dynamic(str(source / name), str(target / name), weight_type=QuantType.QInt8)
        else:
            _copy_onnx(source / name, target / name)
    return target


def _copy_onnx(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    data = source.with_name(source.name + ".data")
    if data.exists():
        shutil.copy2(data, target.with_name(data.name))


# --- runtime ------------------------------------------------------------------------------------------------------------
@dataclass
class GreedyOutput:
    """Token ids (B, 1 + generated), starting with the decoder start token as `generate` returns them; `logits`
    (B, steps, V) float32 when asked for."""

    sequences: np.ndarray
    logits: np.ndarray | None = None


class OnnxVidGPT2Captioner:
    """Captions videos with onnxruntime from a folder written by `export_onnx` (greedy decoding).

    Example:
        captioner = OnnxVidGPT2Captioner.from_pretrained("model-onnx")
        captioner.caption(["clip.mp4"])  # -> ["a red square turns blue"]
    """

    def __init__(
        self,
        model_dir: str | Path,
        processor: Any = None,
        config: Any = None,
        generation_config: Any = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        num_threads: int | None = None,
    ):
        import onnxruntime as ort
        from transformers import GenerationConfig

        from .configuration_vidgpt2 import VidGPT2Config

        self.model_dir = Path(model_dir)
        missing = [n for n in (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE) if not (self.model_dir / n).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.model_dir} lacks {', '.join(missing)}: export it with `vidgpt2 export onnx --model ... "
                f"--output {self.model_dir}`."
            )
        self.config = config if config is not None else VidGPT2Config.from_pretrained(self.model_dir)
        self.generation_config = (
            generation_config if generation_config is not None else GenerationConfig.from_pretrained(self.model_dir)
        )
        self.processor = processor
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1

        def session(name: str) -> Any:
            return ort.InferenceSession(str(self.model_dir / name), sess_options=options, providers=list(providers))

        self.encoder = session(ENCODER_FILE)
        self.decoder = session(DECODER_FILE)
        self.decoder_with_past = session(DECODER_WITH_PAST_FILE)
        self.num_layers = self.config.text_config.n_layer

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **kwargs: Any) -> OnnxVidGPT2Captioner:
        """Load the graphs, config, generation config and processor saved by `export_onnx`."""
        from .processing_vidgpt2 import VidGPT2Processor

        return cls(model_dir, processor=VidGPT2Processor.from_pretrained(str(model_dir)), **kwargs)

    def encode(self, pixel_values_videos: np.ndarray) -> np.ndarray:
        """(B, T, 3, H, W) float32 -> visual tokens (B, N, d)."""
        pixels = np.ascontiguousarray(pixel_values_videos, dtype=np.float32)
        if pixels.ndim != 5:
            raise ValueError(f"`pixel_values_videos` must have shape (batch, frames, 3, height, width); got {pixels.shape}.")
        if pixels.shape[1] > self.config.num_frames:
            raise ValueError(
                f"Got {pixels.shape[1]} frames but the model takes at most num_frames={self.config.num_frames}."
            )
        return self.encoder.run(None, {"pixel_values_videos": pixels})[0]

    def generate_ids(
        self,
        pixel_values_videos: np.ndarray,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
        return_logits: bool = False,
    ) -> GreedyOutput:
        """Greedy decoding, token for token what `model.generate(num_beams=1, do_sample=False)` returns.

        Raises:
            NotImplementedError: beam search, sampling, or a generation config option the runtime lacks.
        """
        self._check_generation(num_beams, do_sample)
        limit = self._max_new_tokens(max_new_tokens)
        eos = self._eos_ids()
        pad = self.generation_config.pad_token_id if self.generation_config.pad_token_id is not None else self.config.pad_token_id
        visual_tokens = self.encode(pixel_values_videos)  # (B, N, d)
        batch = visual_tokens.shape[0]
        sequences = np.full((batch, 1), self.config.decoder_start_token_id, dtype=np.int64)
        outputs = self.decoder.run(None, {"input_ids": sequences, "encoder_hidden_states": visual_tokens})
        logits_out: list[np.ndarray] = []
        cross = [outputs[1 + 4 * i + k] for i in range(self.num_layers) for k in (2, 3)]  # constant after step 1
        self_kv = [outputs[1 + 4 * i + k] for i in range(self.num_layers) for k in (0, 1)]
        finished = np.zeros(batch, dtype=bool)
        for step in range(limit):
            step_logits = outputs[0][:, -1, :]  # (B, V)
            if return_logits:
                logits_out.append(step_logits.astype(np.float32))
            next_ids = step_logits.argmax(axis=-1)
            if pad is not None:
                next_ids = np.where(finished, pad, next_ids)
            sequences = np.concatenate([sequences, next_ids[:, None].astype(np.int64)], axis=1)
            finished |= np.isin(next_ids, eos)
            if finished.all() or step == limit - 1:
                break
            feeds: dict[str, np.ndarray] = {"input_ids": sequences[:, -1:], "encoder_hidden_states": visual_tokens}
            for i in range(self.num_layers):
                feeds[f"past_key_values.{i}.decoder.key"] = self_kv[2 * i]
                feeds[f"past_key_values.{i}.decoder.value"] = self_kv[2 * i + 1]
                feeds[f"past_key_values.{i}.encoder.key"] = cross[2 * i]
                feeds[f"past_key_values.{i}.encoder.value"] = cross[2 * i + 1]
            wanted = {i.name for i in self.decoder_with_past.get_inputs()}
            outputs = self.decoder_with_past.run(None, {k: v for k, v in feeds.items() if k in wanted})
            self_kv = list(outputs[1:])
        return GreedyOutput(sequences=sequences, logits=np.stack(logits_out, axis=1) if return_logits else None)

    def caption(self, videos: Sequence[Any], max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
        """Caption video files (paths) with the saved processor; one string per video."""
        if self.processor is None:
            raise ValueError("No processor: load with OnnxVidGPT2Captioner.from_pretrained(folder written by export).")
        pixels = self.processor(videos=list(videos), return_tensors="pt")["pixel_values_videos"].numpy()
        output = self.generate_ids(pixels, max_new_tokens=max_new_tokens, **kwargs)
        return self.processor.batch_decode(torch.from_numpy(output.sequences))

    def _check_generation(self, num_beams: int, do_sample: bool) -> None:
        if num_beams != 1 or do_sample:
            raise NotImplementedError(
                f"The ONNX runtime captioner decodes greedily; got num_beams={num_beams}, do_sample={do_sample}. "
                "Use PyTorch (`vidgpt2 caption`) for beam search or sampling."
            )
        config = self.generation_config
        changed = {
            name: getattr(config, name, default)
            for name, default in UNSUPPORTED_GENERATION_OPTIONS.items()
            if getattr(config, name, default) not in (default, None) and not (name == "min_length" and getattr(config, name) == 0)
        }
        if config.num_beams not in (None, 1):
            changed["num_beams"] = config.num_beams
        if changed:
            raise NotImplementedError(
                f"The model's generation config sets {changed}, which the ONNX greedy captioner does not implement; "
                "reset them in generation_config.json or caption with PyTorch."
            )

    def _max_new_tokens(self, max_new_tokens: int | None) -> int:
        if max_new_tokens is not None:
            return max_new_tokens
        if self.generation_config.max_new_tokens is not None:
            return self.generation_config.max_new_tokens
        return max(1, (self.generation_config.max_length or 20) - 1)

    def _eos_ids(self) -> list[int]:
        eos = self.generation_config.eos_token_id
        if eos is None:
            eos = self.config.text_config.eos_token_id
        if eos is None:
            return []
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]


__all__ = [
    "DEFAULT_ATOL",
    "OnnxExportError",
    "OnnxExportReport",
    "OnnxVidGPT2Captioner",
    "check_exportable",
    "export_onnx",
    "quantize_onnx",
]
