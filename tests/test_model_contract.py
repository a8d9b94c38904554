"""The standard transformers model contract, checked on VidGPT2 in the style of transformers' common model tests.

transformers ships `ModelTesterMixin` (tests/test_modeling_common.py) and `GenerationTesterMixin`
(tests/generation/test_utils.py) only in its source tree. This file checks what those mixins check and what callers
rely on, on tiny pooled, spatial and motion configs (`VidGPT2ModelTester`):

- output flags from the config, from `from_pretrained` kwargs and from arguments; tuples with `return_dict=False`;
- the legacy cache name `past_key_values=`; unknown arguments never dropped in silence;
- `generate(return_dict_in_generate=True)` outputs on the encoder and the decoder side;
- assisted (speculative) and prompt-lookup decoding equal greedy search;
- weights missing from a checkpoint (or resized) are initialised exactly as `__init__` does;
- batching equivalence, save/load round trip, the `get_video_features` output, a small `config.json`.

Common checks that cannot apply to a video captioner, and why:
- unconditional generation (`generate()` with no input): a caption needs a video; `generate()` raises instead
  (`test_generate_without_a_video_raises`);
- a separate base model (`model.base_model`, `AutoModel` giving a headless model): VidGPT2 is one class, the
  encoder (`VidGPT2VideoEncoder`) and `GPT2LMHeadModel` decoder are its parts; `AutoModel` maps to the captioner;
- `inputs_embeds` / `decoder_inputs_embeds`: the encoder input is video, and the decoder embeds its own ids;
- resizing the backbone's input embeddings: a ResNet has none (the decoder's token embeddings are GPT-2's).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import transformers.initialization as hf_init
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ResNetConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging as hf_logging

from tests.tiny import TINY_VISION, tiny_config, tiny_pixels
from vidgpt2 import VidGPT2Config, VidGPT2ForConditionalGeneration, modeling_vidgpt2

VISUAL_TOKENS = ["pooled", "spatial", "motion"]


class VidGPT2ModelTester:
    """Tiny configs and inputs, as transformers' `<Model>ModelTester` classes build them."""

    batch_size = 2
    seq_length = 5
    num_visual_layers = 2

    def __init__(self, visual_tokens: str, **overrides: Any):
        self.visual_tokens = visual_tokens
        self.overrides = overrides

    def get_config(self, **overrides: Any) -> VidGPT2Config:
        # spatial: a 2x2 grid of tokens per frame; motion: one token per frame made from the change of a 2x2 grid
        image_size = 64 if self.visual_tokens in ("spatial", "motion") else 32
        kwargs = dict(
            visual_tokens=self.visual_tokens,
            image_size=image_size,
            num_visual_layers=self.num_visual_layers,
            visual_dropout=0.0,
        )
        return tiny_config(**{**kwargs, **self.overrides, **overrides})

    def model(self, seed: int = 0, **overrides: Any) -> VidGPT2ForConditionalGeneration:
        torch.manual_seed(seed)
        return VidGPT2ForConditionalGeneration(self.get_config(**overrides)).eval()

    def inputs(self, config: VidGPT2Config, batch: int | None = None) -> dict[str, torch.Tensor]:
        batch = batch or self.batch_size
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(3, config.text_config.vocab_size, (batch, self.seq_length), generator=generator)
        ids[:, 0] = config.decoder_start_token_id
        return {"pixel_values_videos": tiny_pixels(config, batch=batch), "decoder_input_ids": ids}

    @staticmethod
    def num_visual_tokens(config: VidGPT2Config) -> int:
        return config.num_frames * config.tokens_per_frame


@pytest.fixture(params=VISUAL_TOKENS)
def tester(request: pytest.FixtureRequest) -> VidGPT2ModelTester:
    return VidGPT2ModelTester(request.param)


def check_attention_and_hidden_outputs(out: Any, config: VidGPT2Config, batch: int, length: int) -> None:
    """Counts and shapes of every attention / hidden-state output of a forward pass (Seq2SeqLMOutput)."""
    tokens = VidGPT2ModelTester.num_visual_tokens(config)
    width, heads, layers = config.text_config.n_embd, config.text_config.n_head, config.text_config.n_layer
    assert len(out.encoder_hidden_states) == config.num_visual_layers + 1
    assert all(h.shape == (batch, tokens, width) for h in out.encoder_hidden_states)
    assert len(out.encoder_attentions) == config.num_visual_layers
    assert all(a.shape == (batch, config.visual_heads, tokens, tokens) for a in out.encoder_attentions)
    assert len(out.decoder_hidden_states) == layers + 1
    assert all(h.shape == (batch, length, width) for h in out.decoder_hidden_states)
    assert len(out.decoder_attentions) == layers
    assert all(a.shape == (batch, heads, length, length) for a in out.decoder_attentions)
    assert len(out.cross_attentions) == layers
    assert all(a.shape == (batch, heads, length, tokens) for a in out.cross_attentions)


def check_no_attention_or_hidden_outputs(out: Any) -> None:
    for name in ("encoder_hidden_states", "encoder_attentions", "decoder_hidden_states", "decoder_attentions"):
        assert getattr(out, name) is None, name
    assert out.cross_attentions is None


# --- output flags and return types (ModelTesterMixin: test_attention_outputs, test_hidden_states_output) ---------
def test_output_flags_from_arguments(tester):
    model = tester.model()
    inputs = tester.inputs(model.config)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    check_attention_and_hidden_outputs(out, model.config, tester.batch_size, tester.seq_length)
    check_no_attention_or_hidden_outputs(model(**inputs))


def test_output_flags_from_the_config(tester):
    model = tester.model(output_attentions=True, output_hidden_states=True)
    inputs = tester.inputs(model.config)
    check_attention_and_hidden_outputs(model(**inputs), model.config, tester.batch_size, tester.seq_length)
    # an explicit argument wins over the config
    check_no_attention_or_hidden_outputs(model(**inputs, output_attentions=False, output_hidden_states=False))


def test_output_flags_as_from_pretrained_kwargs(tester, tmp_path):
    tester.model().save_pretrained(tmp_path)
    loaded = VidGPT2ForConditionalGeneration.from_pretrained(
        tmp_path, output_attentions=True, output_hidden_states=True
    ).eval()
    out = loaded(**tester.inputs(loaded.config))
    check_attention_and_hidden_outputs(out, loaded.config, tester.batch_size, tester.seq_length)


def test_encoder_attentions_are_softmax_weights_and_eager_equals_sdpa(tester):
    model = tester.model()
    inputs = tester.inputs(model.config)
    plain = model(**inputs)
    out = model(**inputs, output_attentions=True)
    for weights in out.encoder_attentions:  # (B, heads, N, N), rows are distributions over the visual tokens
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)
    # eager attention (weights asked for) and SDPA compute the same visual tokens and logits
    assert torch.allclose(plain.encoder_last_hidden_state, out.encoder_last_hidden_state, atol=1e-5)
    assert torch.allclose(plain.logits, out.logits, atol=1e-5)


@pytest.mark.parametrize("from_config", [False, True])
def test_return_dict_false_gives_the_tuple_of_non_none_outputs(tester, from_config):
    model = tester.model(return_dict=not from_config)
    inputs = tester.inputs(model.config)
    labels = inputs["decoder_input_ids"]  # (the loss only needs a target of the same length)
    as_dict = model(**inputs, labels=labels, output_hidden_states=True, return_dict=True)
    as_tuple = model(
        **inputs, labels=labels, output_hidden_states=True, **({} if from_config else {"return_dict": False})
    )
    assert type(as_tuple) is tuple
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected)
    loss, logits = as_tuple[:2]  # ModelOutput field order: loss, logits, cache, decoder_hidden_states, ...
    assert torch.equal(loss, as_dict.loss) and torch.equal(logits, as_dict.logits)
    encoder_tuple = model.encoder(pixel_values_videos=inputs["pixel_values_videos"], return_dict=False)
    assert type(encoder_tuple) is tuple and torch.equal(encoder_tuple[0], as_dict.encoder_last_hidden_state)
    # generate still gets dicts from the model it calls (transformers#39120: inner calls must not turn into tuples)
    generated = model.generate(pixel_values_videos=inputs["pixel_values_videos"], max_new_tokens=2, min_new_tokens=2)
    assert generated.shape == (tester.batch_size, 3)


# --- arguments: legacy cache name and unknown names ---------------------------------------------------------------
def test_past_key_values_is_the_cache_with_gpt2s_deprecation_warning(tester):
    model = tester.model()
    inputs = tester.inputs(model.config)
    ids = inputs.pop("decoder_input_ids")
    full = model(**inputs, decoder_input_ids=ids).logits  # (B, L, V)
    prefix = model(**inputs, decoder_input_ids=ids[:, :-1], use_cache=True)
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated.*Use `cache` instead"):
        step = model(**inputs, decoder_input_ids=ids[:, -1:], past_key_values=prefix.cache)
    assert step.logits.shape[1] == 1
    assert torch.allclose(step.logits[:, -1], full[:, -1], atol=1e-5)
    # the same step through the new name, and through GPT-2 itself, agree
    again = model(**inputs, decoder_input_ids=ids[:, :-1], use_cache=True)
    new_name = model(**inputs, decoder_input_ids=ids[:, -1:], cache=again.cache)
    assert torch.allclose(new_name.logits, step.logits, atol=1e-6)


def test_an_unknown_argument_is_a_type_error_naming_it(tester):
    model = tester.model()
    inputs = tester.inputs(model.config)
    ids = inputs.pop("decoder_input_ids")
    with pytest.raises(TypeError, match="`input_ids`. Did you mean `decoder_input_ids`"):
        model(**inputs, input_ids=ids)
    with pytest.raises(TypeError, match="`pixel_values`. Did you mean `pixel_values_videos`"):
        model(pixel_values=inputs["pixel_values_videos"], decoder_input_ids=ids)


def test_a_model_agnostic_argument_it_cannot_use_is_named_in_one_warning(tester, caplog):
    # `TransformersKwargs` (position_ids, is_causal, packed-sequence lengths) may come from any transformers caller
    model = tester.model()
    inputs = tester.inputs(model.config)
    expected = model(**inputs).logits
    positions = torch.arange(tester.seq_length)[None]
    hf_logging.warning_once.cache_clear()  # the once-per-process memory, so each parametrisation sees its warning
    with caplog.at_level(logging.WARNING):
        first = model(**inputs, position_ids=positions).logits
        model(**inputs, position_ids=positions)
    messages = [r.getMessage() for r in caplog.records if "ignores `position_ids`" in r.getMessage()]
    assert len(messages) == 1
    assert torch.equal(first, expected)


def test_encoder_outputs_and_pixels_together_are_refused(tester):
    model = tester.model()
    inputs = tester.inputs(model.config)
    encoded = model.encoder(pixel_values_videos=inputs["pixel_values_videos"])
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, encoder_outputs=encoded)
    reused = model(decoder_input_ids=inputs["decoder_input_ids"], encoder_outputs=encoded)
    assert torch.allclose(reused.logits, model(**inputs).logits, atol=1e-6)


# --- generate (GenerationTesterMixin) -----------------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_dict_outputs_on_both_sides(tester, num_beams):
    model = tester.model()
    config = model.config
    pixels = tiny_pixels(config, batch=tester.batch_size)
    new_tokens = 3
    out = model.generate(
        pixel_values_videos=pixels,
        num_beams=num_beams,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        return_dict_in_generate=True,
        output_attentions=True,
        output_hidden_states=True,
        output_scores=True,
    )
    rows, tokens = tester.batch_size * num_beams, tester.num_visual_tokens(config)
    # the encoder runs once per video, before beams are expanded
    videos = tester.batch_size
    assert len(out.encoder_attentions) == config.num_visual_layers
    assert all(a.shape == (videos, config.visual_heads, tokens, tokens) for a in out.encoder_attentions)
    assert len(out.encoder_hidden_states) == config.num_visual_layers + 1
    assert all(h.shape == (videos, tokens, config.text_config.n_embd) for h in out.encoder_hidden_states)
    for name in ("decoder_attentions", "cross_attentions", "decoder_hidden_states", "scores"):
        assert len(getattr(out, name)) == new_tokens, name
    assert out.cross_attentions[-1][0].shape == (rows, config.text_config.n_head, 1, tokens)
    assert len(out.decoder_hidden_states[0]) == config.text_config.n_layer + 1
    # nothing asked, nothing returned
    quiet = model.generate(pixel_values_videos=pixels, max_new_tokens=2, return_dict_in_generate=True)
    assert quiet.encoder_attentions is None and quiet.encoder_hidden_states is None and quiet.cross_attentions is None


def test_generate_without_a_video_raises(tester):
    # GenerationTesterMixin's unconditional generation does not apply: a caption needs a video
    with pytest.raises(ValueError, match="exactly one of `pixel_values_videos` or `video_features`"):
        tester.model().generate(max_new_tokens=2)


def lively(model: VidGPT2ForConditionalGeneration, seed: int) -> VidGPT2ForConditionalGeneration:
    """Redraw the decoder's matrices at std 0.3 so that greedy search makes varied tokens (a fresh tiny model
    repeats one token), which gives an assistant something to get wrong."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            if parameter.dim() == 2:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


UNTIED = dict(tie_word_embeddings=False, text_config=dict(tie_word_embeddings=False))


@pytest.mark.parametrize(
    ("assistant", "from_features"),
    [("itself", False), ("another tiny model", False), ("prompt lookup", False), ("another tiny model", True)],
)
def test_assisted_decoding_returns_what_greedy_search_returns(tester, assistant, from_features):
    # seeds whose greedy captions vary in both modes (the motion model repeats one token with pooled's seeds)
    model_seed, decoder_seed = (1, 1) if tester.visual_tokens == "motion" else (2, 1)
    model = lively(tester.model(seed=model_seed, **UNTIED), seed=decoder_seed)
    pixels = tiny_pixels(model.config, batch=1)  # assisted decoding takes one video at a time
    video = (
        {"video_features": model.get_video_features(pixels).pooler_output}
        if from_features
        else {"pixel_values_videos": pixels}
    )
    steps = dict(max_new_tokens=10, min_new_tokens=10)
    greedy = model.generate(**video, **steps)
    assert len(set(greedy[0, 1:].tolist())) > 2, "the check needs a varied caption"
    if assistant == "prompt lookup":
        extra: dict[str, Any] = {"prompt_lookup_num_tokens": 2}
    elif assistant == "itself":
        extra = {"assistant_model": model}
    else:
        # same tokenizer, other weights and one visual layer; from pixels a pooled assistant (any frame size), which
        # for a spatial model is another visual-token layout: the assistant encodes the pixels itself
        layout = tester.visual_tokens if from_features else "pooled"
        other = lively(VidGPT2ModelTester(layout).model(seed=7, num_visual_layers=1, **UNTIED), seed=7)
        assert not torch.equal(other.generate(**video, **steps), greedy)  # its drafts get rejected
        extra = {"assistant_model": other}
    assert torch.equal(model.generate(**video, **steps, **extra), greedy)


# --- weights --------------------------------------------------------------------------------------------------------
RANDOM_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def seeded_weight_init() -> Iterator[None]:
    """Make every random init function draw from a generator seeded afresh at each call, so a tensor's initial
    values depend only on its shape and the init arguments (std, mode, ...): a model built by `__init__` and one
    whose weights `from_pretrained` initialises then match exactly when, and only when, both use the same init.
    Patches `torch.nn.init` (module constructors) and `transformers.initialization` (`_init_weights`)."""

    def seeded(function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if tensor.device.type == "meta":  # from_pretrained builds on the meta device first
                return tensor
            kwargs["generator"] = torch.Generator(device=tensor.device).manual_seed(0)
            return function(tensor, *args, **kwargs)

        return wrapper

    saved_hf = {name: hf_init.TORCH_INIT_FUNCTIONS[name] for name in RANDOM_INITS}
    saved_torch = {name: getattr(nn.init, name) for name in RANDOM_INITS}
    try:
        for name in RANDOM_INITS:
            hf_init.TORCH_INIT_FUNCTIONS[name] = seeded(saved_hf[name])
            setattr(nn.init, name, seeded(saved_torch[name]))
        yield
    finally:
        for name in RANDOM_INITS:
            hf_init.TORCH_INIT_FUNCTIONS[name] = saved_hf[name]
            setattr(nn.init, name, saved_torch[name])


def different_tensors(first: nn.Module, second: nn.Module) -> list[str]:
    a, b = first.state_dict(), second.state_dict()
    assert sorted(a) == sorted(b)
    return [name for name in a if not torch.equal(a[name], b[name])]


def test_all_missing_weights_are_initialised_as_in_init(tester):
    # ModelTesterMixin.test_can_init_all_missing_weights
    config = tester.get_config()
    with seeded_weight_init():
        from_init = VidGPT2ForConditionalGeneration(config)
        from_nothing = VidGPT2ForConditionalGeneration.from_pretrained(None, config=config, state_dict={})
    assert different_tensors(from_init, from_nothing) == []


def test_weights_missing_from_a_checkpoint_are_initialised_as_in_init(tester, tmp_path):
    # the case users hit: a checkpoint without the decoder's cross-attention (GPT-2's scaled c_proj init)
    config = tester.get_config()
    tester.model(seed=3).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {name: t for name, t in weights.items() if ".crossattention." not in name}
    assert len(kept) < len(weights)
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with seeded_weight_init():
        from_init = VidGPT2ForConditionalGeneration(config)
        loaded = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path)
    fresh_names = {n for n in weights if n not in kept}
    differing = set(different_tensors(from_init, loaded))
    assert fresh_names.isdisjoint(differing), sorted(fresh_names & differing)
    # and the weights the checkpoint has are loaded, never re-initialised (transformers#46620)
    state = loaded.state_dict()
    assert [name for name, tensor in kept.items() if not torch.equal(state[name], tensor)] == []
    std = config.text_config.initializer_range / (2 * config.text_config.n_layer) ** 0.5
    c_proj = loaded.decoder.transformer.h[0].crossattention.c_proj.weight
    assert torch.equal(c_proj, from_init.decoder.transformer.h[0].crossattention.c_proj.weight)
    assert c_proj.std().item() == pytest.approx(std, rel=0.35)  # a 32x32 sample of N(0, std)


def test_resized_weights_are_initialised_as_in_init(tester, tmp_path):
    tester.model().save_pretrained(tmp_path)
    config = tester.get_config(num_frames=6)  # the temporal embedding grows from 4 to 6 frames
    with seeded_weight_init():
        from_init = VidGPT2ForConditionalGeneration(config)
        loaded = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path, config=config, ignore_mismatched_sizes=True)
    assert torch.equal(loaded.encoder.temporal_embedding.weight, from_init.encoder.temporal_embedding.weight)


class OldVisualLayer(nn.Module):
    """`nn.TransformerEncoderLayer` as the visual layers were built before, called the way the encoder calls them."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=4 * width,
            dropout=0.1,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, tokens: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, None]:
        return self.layer(tokens), None


def test_visual_layer_is_a_drop_in_for_nn_transformer_encoder_layer():
    # Checkpoints saved while the visual layers were nn.TransformerEncoderLayer must load with the same outputs.
    torch.manual_seed(0)
    old = OldVisualLayer(32, 2).layer.eval()
    new = modeling_vidgpt2.VidGPT2VisualLayer(32, 2, dropout=0.1).eval()
    assert sorted(new.state_dict()) == sorted(old.state_dict())
    new.load_state_dict(old.state_dict(), strict=True)
    tokens = torch.randn(3, 16, 32)
    expected = old(tokens)
    for output_attentions in (False, True):  # SDPA and eager
        got, weights = new(tokens, output_attentions)
        assert torch.allclose(got, expected, atol=1e-5)
        assert (weights is not None) == output_attentions
    with torch.no_grad():  # torch's fused inference path for the old layer
        assert torch.allclose(new(tokens)[0], old(tokens), atol=1e-5)
    # training with a seed draws the same dropout masks (the demo's numbers stay the same)
    old.train(), new.train()
    torch.manual_seed(5)
    expected = old(tokens)
    torch.manual_seed(5)
    assert torch.allclose(new(tokens)[0], expected, atol=1e-6)


def test_a_seeded_model_starts_from_the_same_weights_as_before():
    # the visual attention draws torch's MultiheadAttention init in its order, so the random stream is unchanged
    torch.manual_seed(0)
    old = OldVisualLayer(32, 2).layer
    torch.manual_seed(0)
    new = modeling_vidgpt2.VidGPT2VisualLayer(32, 2, dropout=0.1)
    assert different_tensors(old, new) == []


def test_a_checkpoint_with_nn_transformer_encoder_layers_gives_the_same_logits(tester, tmp_path):
    model = tester.model()
    inputs = tester.inputs(model.config)
    # the same weights run through the old layers: swap them in
    old_model = tester.model()
    old_model.encoder.layers = nn.ModuleList(
        OldVisualLayer(32, model.config.visual_heads) for _ in model.encoder.layers
    )
    for old, new in zip(old_model.encoder.layers, model.encoder.layers, strict=True):
        old.layer.load_state_dict(new.state_dict(), strict=True)
    old_model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, old_model(**inputs).logits, atol=1e-5)
    # a checkpoint written with the old layer's key names loads into the new layers
    model.save_pretrained(tmp_path)
    keys = {k for k in load_file(tmp_path / "model.safetensors") if k.startswith("encoder.layers.0.")}
    old_keys = {f"encoder.layers.0.{k}" for k in old_model.encoder.layers[0].layer.state_dict()}
    assert keys == old_keys
    loaded = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


# --- batching, save/load, features, config size -------------------------------------------------------------------
def test_batching_equivalence(tester):
    model = tester.model()
    inputs = tester.inputs(model.config, batch=3)
    batched = model(**inputs, output_hidden_states=True)
    for row in range(3):
        single = model(**{k: v[row : row + 1] for k, v in inputs.items()}, output_hidden_states=True)
        assert torch.allclose(batched.logits[row], single.logits[0], atol=1e-5, rtol=1e-5)
        for b, s in zip(batched.encoder_hidden_states, single.encoder_hidden_states, strict=True):
            assert torch.allclose(b[row], s[0], atol=1e-5, rtol=1e-5)
    generated = model.generate(pixel_values_videos=inputs["pixel_values_videos"], max_new_tokens=4, min_new_tokens=4)
    for row in range(3):
        alone = model.generate(
            pixel_values_videos=inputs["pixel_values_videos"][row : row + 1], max_new_tokens=4, min_new_tokens=4
        )
        assert torch.equal(generated[row], alone[0])


def test_save_load_round_trip_keeps_outputs_and_flags(tester, tmp_path):
    model = tester.model(output_hidden_states=True)
    inputs = tester.inputs(model.config)
    expected = model(**inputs)
    model.save_pretrained(tmp_path)
    loaded = VidGPT2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    again = loaded(**inputs)
    assert loaded.config.output_hidden_states is True
    assert torch.equal(again.logits, expected.logits)
    for a, b in zip(again.encoder_hidden_states, expected.encoder_hidden_states, strict=True):
        assert torch.equal(a, b)


def test_get_video_features_returns_a_model_output(tester):
    model = tester.model()
    config = model.config
    pixels = tiny_pixels(config, batch=2)
    out = model.get_video_features(pixels)
    assert isinstance(out, BaseModelOutputWithPooling)
    grid = 1 if config.visual_tokens == "pooled" else config.spatial_grid
    channels = config.vision_feature_dim
    assert out.last_hidden_state.shape == (2 * config.num_frames, channels, grid, grid)
    expected = (
        (2, config.num_frames, channels)
        if tester.visual_tokens == "pooled"
        else (2, config.num_frames, grid * grid, channels)
    )
    assert out.pooler_output.shape == expected
    assert out.hidden_states is None and out.attentions is None
    # pooler_output is what forward(video_features=...) takes
    ids = tester.inputs(config)["decoder_input_ids"]
    from_pixels = model(pixel_values_videos=pixels, decoder_input_ids=ids).logits
    from_features = model(video_features=out.pooler_output, decoder_input_ids=ids).logits
    assert torch.allclose(from_pixels, from_features, atol=1e-6)
    # hidden states on request (argument or config): the ResNet's embedding output and one per stage
    stages = len(config.vision_config.depths)
    assert len(model.get_video_features(pixels, output_hidden_states=True).hidden_states) == stages + 1
    model.config.output_hidden_states = True
    assert len(model.get_video_features(pixels).hidden_states) == stages + 1


def test_saved_config_carries_no_backbone_classification_labels(tmp_path):
    imagenet = {i: f"class {i} " + "x" * 40 for i in range(1000)}  # like microsoft/resnet-50's 1,000 labels
    vision = ResNetConfig(**TINY_VISION, id2label=imagenet).to_dict()
    config = tiny_config(vision_config=vision)
    assert config.vision_config.num_labels == 2
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert "id2label" not in json.loads(text)["vision_config"] and len(text) < 10_000
    # a config.json saved with the labels still loads (they are dropped)
    saved = json.loads(text)
    saved["vision_config"]["id2label"] = {str(k): v for k, v in imagenet.items()}
    saved["vision_config"]["label2id"] = {v: k for k, v in imagenet.items()}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = VidGPT2Config.from_pretrained(tmp_path)
    assert reloaded.vision_config.num_labels == 2
    assert list(reloaded.vision_config.hidden_sizes) == TINY_VISION["hidden_sizes"]
