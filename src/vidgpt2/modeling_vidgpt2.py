"""VidGPT2: frames -> ResNet -> visual tokens -> GPT-2 with cross-attention -> caption.

Data flow (shapes for the default config: B videos, T=8 frames, 224x224, ResNet-50, GPT-2 small):

    pixel_values_videos (B, T, 3, 224, 224)
      -> vision tower on (B*T, 3, 224, 224)             [ResNet; frozen by default]
      -> video features (B, T, 2048) pooled | (B, T, 49, 2048) spatial   <- `get_video_features(...).pooler_output`
         | (B, T, g*g, 2048) grid and motion
      -> linear projection + LayerNorm, + temporal (+ spatial) position embeddings
         (motion: projection of the frame's mean feature + projection of its grid's change since frame t-1)
      -> `num_visual_layers` self-attention layers   -> visual tokens (B, N, 768), N = T or T*49
      -> GPT-2 decoder cross-attending to the visual tokens -> logits (B, L, vocab)

This module imports only torch, transformers and `.configuration_vidgpt2` so it can be pushed as Hub remote code.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, GPT2LMHeadModel, PreTrainedModel, ResNetModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, Seq2SeqLMOutput
from transformers.utils import TransformersKwargs, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_vidgpt2 import VidGPT2Config

logger = logging.get_logger(__name__)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing inputs from labels: prepend the start token, drop the last label, -100 -> pad."""
    # (B, L) -> (B, L)
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class VidGPT2PreTrainedModel(PreTrainedModel):
    config: VidGPT2Config
    config_class = VidGPT2Config
    base_model_prefix = "vidgpt2"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT2Block", "ResNetStage", "VidGPT2VisualLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # `forward` takes `num_items_in_batch` (the Trainer then leaves the loss unscaled by gradient accumulation)
    accepts_loss_kwargs = True

    def _init_weights(self, module: nn.Module) -> None:
        # `initialize_weights` visits every module, children first. Linear, LayerNorm and plain Embedding layers get
        # the default (normal with `initializer_range`, LayerNorm ones/zeros); GPT-2 and the ResNet are sub-models
        # with their own `_init_weights` (GPT-2 rescales `c_proj` in `GPT2Attention`/`GPT2MLP`, parents of Conv1D).
        if isinstance(module, VidGPT2PositionEmbedding):
            init.normal_(module.weight, std=POSITION_EMBEDDING_STD)
        elif isinstance(module, VidGPT2VisualAttention):  # out_proj is a Linear
            init.normal_(module.in_proj_weight, std=self.config.initializer_range)
            init.zeros_(module.in_proj_bias)
        else:
            super()._init_weights(module)

    @torch.no_grad()
    @init.guard_torch_init_functions()
    def initialize_weights(self) -> None:
        """Initialise every weight not loaded from a checkpoint exactly as `__init__` does.

        `PreTrainedModel.initialize_weights` treats any class outside the `transformers` package as "custom code"
        and then skips every module that owns no parameter directly, assuming its `_init_weights` might overwrite
        loaded weights. That skips GPT-2's `GPT2Attention`/`GPT2MLP`, whose `_init_weights` gives `c_proj` the
        scaled std 0.02/sqrt(2 * n_layer): weights missing from a checkpoint (a new cross-attention) came back 2x
        (2 layers) to 5x (12 layers) too large. Every `_init_weights` here (ours, GPT-2's, the ResNet's) writes through
        `transformers.initialization`, which leaves loaded (`_is_hf_initialized`) tensors alone, so the walk below
        visits all modules, dispatching to each sub-model's own `_initialize_weights` as transformers does.
        """

        def visit(module: nn.Module, initialize: Any) -> None:
            for child in module.children():
                visit(child, child._initialize_weights if isinstance(child, PreTrainedModel) else initialize)
            initialize(module, is_custom_code=False)

        visit(self, self._initialize_weights)


class VidGPT2VisualAttention(nn.Module):
    """Multi-head self-attention over the visual tokens.

    The parameters carry the names of `nn.MultiheadAttention` (`in_proj_weight` (3d, d), `in_proj_bias` (3d,),
    `out_proj`) so checkpoints saved when the visual layers were `nn.TransformerEncoderLayer` load unchanged. Unlike
    it, this returns per-head attention weights: eager attention when they are asked for, SDPA otherwise.
    """

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        # torch's own init of `nn.MultiheadAttention` (`_reset_parameters`), in its order: the model's `_init_weights`
        # redraws these, and drawing the same random numbers as before keeps a seeded model (the demo's) unchanged
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, d) -> (B, N, d), and the weights (B, heads, N, N) when `output_attentions`."""
        batch, tokens, width = hidden_states.shape
        qkv = F.linear(hidden_states, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3d)
        # (B, N, 3d) -> (B, N, 3, heads, d/heads) -> 3 x (B, heads, N, d/heads)
        query, key, value = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (query @ key.transpose(-2, -1)) * self.head_dim**-0.5  # (B, heads, N, N)
            weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
            context = F.dropout(weights, p=dropout, training=self.training) @ value  # (B, heads, N, d/heads)
        else:
            weights = None
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        # (B, heads, N, d/h) -> (N, B, heads, d/h) -> (N*B, d) -> (N, B, d) -> a (B, N, d) view: torch's MHA layout.
        # The values do not depend on it, but the dropout masks drawn on the result do; keeping it makes training
        # with a given seed draw the same masks as the `nn.TransformerEncoderLayer` these layers replace.
        context = context.permute(2, 0, 1, 3).reshape(tokens * batch, width)
        return self.out_proj(context).view(tokens, batch, width).transpose(0, 1), weights


class VidGPT2VisualLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer over the visual tokens: x + attn(norm1(x)), then x + mlp(norm2(x)).

    The same computation and state-dict keys as ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu",
    batch_first=True)`` (``self_attn.*``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), which this replaces
    because it cannot return attention weights. The LayerNorm eps stays that layer's default, 1e-5.
    """

    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.self_attn = VidGPT2VisualAttention(width, num_heads, dropout)
        self.linear1 = nn.Linear(width, 4 * width)
        self.linear2 = nn.Linear(4 * width, width)
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.dropout = nn.Dropout(dropout)  # inside the MLP
        self.dropout1 = nn.Dropout(dropout)  # on the attention branch
        self.dropout2 = nn.Dropout(dropout)  # on the MLP branch

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, d) -> (B, N, d), and the attention weights (B, heads, N, N) when `output_attentions`."""
        attended, weights = self.self_attn(self.norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + self.dropout1(attended)
        mlp = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(hidden_states)))))
        return hidden_states + self.dropout2(mlp), weights


# Position embeddings start at the scale of the features they are added to: the projection is layer-normalised, so
# each feature is about unit size. At the usual 0.02 they are 50x smaller, and training never grows them enough to
# matter: a model trained that way captions a clip and its time-reversed copy the same way (BENCHMARKS.md, section 2).
POSITION_EMBEDDING_STD = 1.0


class VidGPT2PositionEmbedding(nn.Embedding):
    """A learnt position embedding (frame index or feature-map cell), initialised with std `POSITION_EMBEDDING_STD`."""


class VidGPT2VideoEncoder(nn.Module):
    """Turns frames (or cached backbone features) into visual tokens for the decoder's cross-attention."""

    main_input_name = "pixel_values_videos"

    def __init__(self, config: VidGPT2Config):
        super().__init__()
        self.config = config
        width = config.text_config.n_embd
        self.vision_tower = ResNetModel(config.vision_config)
        self.projection = nn.Linear(config.vision_feature_dim, width)
        # normalised before the position embeddings are added, so that their scale does not depend on the backbone
        self.projection_norm = nn.LayerNorm(width, eps=config.text_config.layer_norm_epsilon)
        self.temporal_embedding = (
            VidGPT2PositionEmbedding(config.num_frames, width) if config.temporal_embeddings else None
        )
        self.spatial_embedding = (
            VidGPT2PositionEmbedding(config.tokens_per_frame, width)
            if config.visual_tokens in ("spatial", "grid")
            else None
        )
        # motion tokens: the change of each frame's g x g feature grid since the previous frame, all cells at once
        # (g*g*C -> d), so that where the change happened (left or right of the frame) stays readable
        self.motion_projection = (
            nn.Linear(config.feature_grid**2 * config.vision_feature_dim, width)
            if config.visual_tokens == "motion"
            else None
        )
        self.dropout = nn.Dropout(config.visual_dropout)
        self.layers = nn.ModuleList(
            VidGPT2VisualLayer(width, config.visual_heads, config.visual_dropout)
            for _ in range(config.num_visual_layers)
        )
        self.layer_norm = nn.LayerNorm(width, eps=config.text_config.layer_norm_epsilon)
        if config.freeze_vision:
            self.vision_tower.requires_grad_(False)

    @property
    def vision_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.vision_tower.parameters())

    def train(self, mode: bool = True) -> VidGPT2VideoEncoder:
        super().train(mode)
        if self.vision_frozen:
            # A frozen tower keeps its batch-norm running statistics: it always runs in eval mode.
            self.vision_tower.eval()
        return self

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, output_hidden_states: bool | None = None
    ) -> BaseModelOutputWithPooling:
        """Run the vision tower on every frame.

        Returns a `BaseModelOutputWithPooling` (the transformers 5.x `get_*_features` contract):
            pooler_output: the backbone features exactly as `forward(video_features=...)` takes them (and the feature
                cache stores them): (B, T, C) for ``visual_tokens="pooled"``, (B, T, h*w, C) for ``"spatial"``,
                (B, T, g*g, C) for ``"grid"`` and ``"motion"`` (g = ``grid_size``).
            last_hidden_state: the tower's last feature map, (B*T, C, h, w).
            hidden_states: the tower's stage outputs when `output_hidden_states` (default: the config's flag).
            attentions: always `None`; a ResNet has no attention.

        Raises:
            ValueError: `pixel_values_videos` is not (B, T, 3, H, W), or not `image_size` square in spatial mode.
        """
        self._check_pixels(pixel_values_videos)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        batch, frames = pixel_values_videos.shape[:2]
        # (B, T, 3, H, W) -> (B*T, 3, H, W): every frame of every video in one backbone batch
        flat = pixel_values_videos.flatten(0, 1)
        flat = flat.to(self.vision_tower.dtype).contiguous(memory_format=torch.channels_last)
        grad = torch.is_grad_enabled() and not self.vision_frozen
        with torch.set_grad_enabled(grad):
            tower = self.vision_tower(flat, output_hidden_states=bool(output_hidden_states), return_dict=True)
        return BaseModelOutputWithPooling(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=self.pool_feature_map(tower.last_hidden_state, batch, frames),
            hidden_states=tower.hidden_states,
        )

    def pool_feature_map(self, feature_map: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Lay the tower's last feature map out as the visual tokens use it.

        (B*T, C, h, w) -> (B, T, C) mean over cells for ``visual_tokens="pooled"``, (B, T, h*w, C) for ``"spatial"``,
        (B, T, g*g, C) adaptive-pooled blocks for ``"grid"`` and ``"motion"``.
        """
        if self.config.visual_tokens == "pooled":
            # (B*T, C, h, w) -> (B*T, C) -> (B, T, C)
            return feature_map.mean(dim=(2, 3)).view(batch, frames, -1)
        if self.config.visual_tokens in ("grid", "motion"):
            # (B*T, C, h, w) -> (B*T, C, g, g): mean over each of g x g near-equal blocks of cells
            feature_map = F.adaptive_avg_pool2d(feature_map, self.config.grid_size)
        # (B*T, C, h, w) -> (B*T, h*w, C) -> (B, T, h*w, C)
        cells = feature_map.flatten(2).transpose(1, 2)
        return cells.reshape(batch, frames, cells.shape[1], cells.shape[2])

    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """Frames (B, T, 3, H, W) or cached features (`get_video_features(...).pooler_output`) -> visual tokens.

        Returns `BaseModelOutput` (a tuple of its non-None fields when `return_dict=False`):
            last_hidden_state: (B, N, d) visual tokens after the final LayerNorm, N = T (pooled, motion), T*h*w
                (spatial) or T*g*g (grid).
            hidden_states: when `output_hidden_states`, `num_visual_layers + 1` tensors (B, N, d): the tokens before
                the first visual layer and after each one (the last one before the final LayerNorm).
            attentions: when `output_attentions`, one (B, heads, N, N) tensor per visual layer.
        Flags left `None` take the config's values.
        """
        if (pixel_values_videos is None) == (video_features is None):
            raise ValueError(
                "VidGPT2 needs exactly one of `pixel_values_videos` (B, T, 3, H, W) or `video_features` "
                "(from `get_video_features(...).pooler_output`)."
            )
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if video_features is None:
            video_features = self.get_video_features(pixel_values_videos, output_hidden_states=False).pooler_output
        self._check_features(video_features)
        video_features = video_features.to(self.projection.weight.dtype)
        if self.motion_projection is not None:
            tokens = self.projection_norm(self.motion_tokens(video_features))  # (B, T, d)
        else:
            tokens = self.projection_norm(self.projection(video_features))  # (B, T, [h*w,] C) -> (..., d)
        frames = tokens.shape[1]
        if self.temporal_embedding is not None:
            time = self.temporal_embedding(torch.arange(frames, device=tokens.device))  # (T, d)
            tokens = tokens + (time[None] if tokens.dim() == 3 else time[None, :, None])
        if self.spatial_embedding is not None:
            cells = torch.arange(self.config.tokens_per_frame, device=tokens.device)
            tokens = tokens + self.spatial_embedding(cells)[None, None]  # (1, 1, h*w, d)
        # (B, T, h*w, d) -> (B, T*h*w, d); pooled tokens already are (B, T, d)
        tokens = self.dropout(tokens.flatten(1, -2))
        hidden_states = [tokens] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            tokens, weights = layer(tokens, bool(output_attentions))
            if hidden_states is not None:
                hidden_states.append(tokens)
            if attentions is not None:
                attentions.append(weights)
        tokens = self.layer_norm(tokens)
        output = BaseModelOutput(
            last_hidden_state=tokens,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def motion_tokens(self, grid_features: torch.Tensor) -> torch.Tensor:
        """``visual_tokens="motion"``: (B, T, g*g, C) grid features -> (B, T, d) one token per frame, before the
        LayerNorm: ``projection(mean of the frame's cells) + motion_projection(cells(t) - cells(t-1))``.

        The first frame has no previous one: its change is zero (its token is then the pooled one). The change keeps
        the g x g layout, so a scene sliding left and one sliding right give different tokens even when every
        frame's mean feature is the same; pooled tokens cannot tell them apart.
        """
        appearance = self.projection(grid_features.mean(dim=2))  # (B, T, C) -> (B, T, d)
        previous = torch.cat([grid_features[:, :1], grid_features[:, :-1]], dim=1)  # frame t-1; frame 0 for itself
        change = (grid_features - previous).flatten(2)  # (B, T, g*g*C), zero at t = 0
        return appearance + self.motion_projection(change)

    def _check_pixels(self, pixel_values_videos: torch.Tensor) -> None:
        if pixel_values_videos.dim() != 5 or pixel_values_videos.shape[2] != self.config.vision_config.num_channels:
            raise ValueError(
                f"`pixel_values_videos` must have shape (batch, frames, {self.config.vision_config.num_channels}, "
                f"height, width); got {tuple(pixel_values_videos.shape)}. Use VidGPT2VideoProcessor to prepare videos."
            )
        if self.config.visual_tokens == "spatial" and tuple(pixel_values_videos.shape[-2:]) != (
            self.config.image_size,
            self.config.image_size,
        ):
            raise ValueError(
                f"This model uses spatial tokens for {self.config.image_size}x{self.config.image_size} frames; got "
                f"{tuple(pixel_values_videos.shape[-2:])}. Resize the frames or set `image_size` in the config."
            )

    def _check_features(self, video_features: torch.Tensor) -> None:
        channels = self.config.vision_feature_dim
        if self.config.visual_tokens == "pooled":
            expected, ok = f"(batch, frames, {channels})", video_features.dim() == 3
        else:
            cells = self.config.feature_grid**2
            expected = f"(batch, frames, {cells}, {channels})"
            ok = video_features.dim() == 4 and video_features.shape[2] == cells
        if not ok or video_features.shape[-1] != channels:
            raise ValueError(
                f"`video_features` must have shape {expected} for visual_tokens={self.config.visual_tokens!r}; "
                f"got {tuple(video_features.shape)}. Compute them with "
                "`model.get_video_features(pixel_values_videos).pooler_output`."
            )
        if video_features.shape[1] > self.config.num_frames:
            raise ValueError(
                f"Got {video_features.shape[1]} frames but the model has temporal embeddings for "
                f"num_frames={self.config.num_frames}. Sample at most {self.config.num_frames} frames per video."
            )


class VidGPT2ForConditionalGeneration(VidGPT2PreTrainedModel, GenerationMixin):
    """Video captioner: `VidGPT2VideoEncoder` + `GPT2LMHeadModel` with cross-attention."""

    def __init__(self, config: VidGPT2Config):
        super().__init__(config)
        self.encoder = VidGPT2VideoEncoder(config)
        self.decoder = GPT2LMHeadModel(config.text_config)
        self.post_init()

    # --- Hugging Face plumbing -------------------------------------------------------------------------------------
    def get_encoder(self, modality: str | None = None) -> VidGPT2VideoEncoder:
        return self.encoder

    def get_decoder(self) -> GPT2LMHeadModel:
        return self.decoder

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.decoder.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.decoder.set_output_embeddings(new_embeddings)

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, output_hidden_states: bool | None = None
    ) -> BaseModelOutputWithPooling:
        """Vision-tower outputs; `.pooler_output` is what `forward(video_features=...)` takes and the feature cache
        stores: (B, T, C) pooled or (B, T, h*w, C) spatial. See `VidGPT2VideoEncoder.get_video_features`."""
        return self.encoder.get_video_features(pixel_values_videos, output_hidden_states=output_hidden_states)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @contextlib.contextmanager
    def eager_attention(self, needed: bool = True) -> Iterator[None]:
        """Run the decoder with eager attention inside the block (SDPA/flash return no attention weights)."""
        current = self.config.text_config._attn_implementation
        if not needed or current in (None, "eager"):
            yield
            return
        logger.info_once(f"Switching decoder attention from {current!r} to 'eager' to return attention weights.")
        self.decoder.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.decoder.set_attn_implementation(current)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # loading replaces parameters, which resets `requires_grad`: re-apply the config's freezing
        model.encoder.vision_tower.requires_grad_(not model.config.freeze_vision)
        return loaded

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        if self._auto_class is not None:
            # remote code: one class serves AutoModel and AutoModelForSeq2SeqLM
            target = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update({"AutoModel": target, "AutoModelForSeq2SeqLM": target})
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    # --- forward ---------------------------------------------------------------------------------------------------
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # as GPT2LMHeadModel.forward: same name, warning
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        labels: torch.LongTensor | None = None,
        cache: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput | tuple:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(B, T, 3, H, W)`): frames from `VidGPT2VideoProcessor`.
        video_features (`torch.FloatTensor`): cached `get_video_features(...).pooler_output`, instead of pixels.
        attention_mask (`torch.Tensor` of shape `(B, N)`, *optional*): mask over the N visual tokens (all ones
            unless videos were padded).
        encoder_outputs: visual tokens from `self.encoder`, instead of pixels or features.
        labels (`torch.LongTensor` of shape `(B, L)`): target token ids, -100 where ignored. Teacher-forcing
            inputs are derived from them (start token prepended) when `decoder_input_ids` is not given.
        cache: the decoder's key/value cache (`past_key_values=` still works, with a deprecation warning).
        num_items_in_batch: number of target tokens across gradient-accumulation steps (passed by the Trainer);
            the loss is then the token sum divided by it.
        output_attentions / output_hidden_states / return_dict: `None` takes the config's value. With
            `return_dict=False` the result is the tuple of the non-None `Seq2SeqLMOutput` fields, in field order.

        Raises:
            TypeError: an argument no part of the model takes (a typo such as `input_ids=`).
            ValueError: no or two visual inputs, or neither `labels` nor `decoder_input_ids`.
        """
        self._check_unused_kwargs(kwargs)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                pixel_values_videos=pixel_values_videos,
                video_features=video_features,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        elif pixel_values_videos is not None or video_features is not None:
            raise ValueError(
                "Pass `encoder_outputs` or `pixel_values_videos` / `video_features`, not both: one would be ignored."
            )
        elif isinstance(encoder_outputs, tuple):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        visual_tokens = encoder_outputs.last_hidden_state  # (B, N, d)

        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass `labels` (training) or `decoder_input_ids` (scoring / generation).")
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            if decoder_attention_mask is None:
                # position i sees the start token and labels[:i]; padding after the caption is masked out
                decoder_attention_mask = torch.ones_like(labels)
                decoder_attention_mask[:, 1:] = (labels[:, :-1] != -100).long()
        if visual_tokens.shape[0] != decoder_input_ids.shape[0]:
            # (generate expands the visual tokens for beams itself; a mismatch here is a caller's error)
            raise ValueError(
                f"Batch mismatch: {visual_tokens.shape[0]} videos but {decoder_input_ids.shape[0]} token sequences."
            )

        with self.eager_attention(bool(output_attentions)):
            decoder_outputs = self.decoder(
                input_ids=decoder_input_ids,
                attention_mask=decoder_attention_mask,
                encoder_hidden_states=visual_tokens,
                encoder_attention_mask=attention_mask,
                cache=cache,
                use_cache=use_cache,
                # explicit booleans: GPT-2 reads a `None` flag as "off", not as its config's value
                output_attentions=bool(output_attentions),
                output_hidden_states=bool(output_hidden_states),
                return_dict=True,
            )
        logits = decoder_outputs.logits  # (B, L, vocab)

        loss = None
        if labels is not None:
            loss = self.caption_loss(logits, labels, num_items_in_batch)

        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=visual_tokens,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _check_unused_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Refuse or report keyword arguments that no part of the model uses, instead of dropping them silently.

        The model-agnostic arguments transformers callers may pass to any model (`TransformersKwargs`: packed-sequence
        lengths, `position_ids`, `is_causal`, ...) mean nothing to this captioner: each is named in a warning once.
        Anything else is a caller's mistake (e.g. `input_ids=` for `decoder_input_ids=`): `TypeError`.
        """
        for name in kwargs:
            if name in TransformersKwargs.__optional_keys__:
                logger.warning_once(
                    f"{type(self).__name__}.forward ignores `{name}`: VidGPT2 has no use for it (the decoder makes its "
                    "own positions and causal mask)."
                )
                continue
            known = [p for p in inspect_parameters(self.forward) if p != "kwargs"]
            close = difflib.get_close_matches(name, known + ["past_key_values"], n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise TypeError(
                f"{type(self).__name__}.forward() got an unexpected keyword argument `{name}`.{hint} "
                f"It takes: {', '.join(known)}."
            )

    @staticmethod
    def caption_loss(
        logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Token cross-entropy; labels are aligned with logits (no shift: inputs were shifted instead)."""
        # (B, L, V) -> (B*L, V); float32 for a stable softmax under bf16 autocast
        flat_logits = logits.float().reshape(-1, logits.shape[-1])
        flat_labels = labels.to(logits.device).reshape(-1)
        if num_items_in_batch is None:
            return F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
        total = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    # --- generation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Caption videos from pixels or cached features. The vision tower runs once per call.

        All `GenerationMixin.generate` arguments apply (`num_beams`, `do_sample`, `max_new_tokens`,
        `assistant_model`, `prompt_lookup_num_tokens`, ...). With `return_dict_in_generate=True` and
        `output_attentions=True` the result holds `cross_attentions` (per generated step, per decoder layer,
        (B*beams, heads, step_len, N visual tokens)) and `encoder_attentions` (per visual layer, (B*beams, heads, N,
        N)); with `output_hidden_states=True`, `encoder_hidden_states` and `decoder_hidden_states`.
        """
        if kwargs.get("encoder_outputs") is None and (pixel_values_videos is None) == (video_features is None):
            raise ValueError("generate() needs exactly one of `pixel_values_videos` or `video_features`.")
        if video_features is not None:
            # kept in the generation kwargs (not encoded here) so that an assistant model can encode them too
            kwargs["video_features"] = video_features
        if kwargs.get("decoder_attention_mask") is None:
            # the start token doubles as pad/eos for GPT-2: say explicitly that the prompt is not padding
            prompt = kwargs.get("decoder_input_ids")
            encoded = getattr(kwargs.get("encoder_outputs"), "last_hidden_state", None)
            source = next(t for t in (pixel_values_videos, video_features, encoded, prompt) if t is not None)
            length = 1 if prompt is None else prompt.shape[1]
            kwargs["decoder_attention_mask"] = torch.ones(
                source.shape[0], length, dtype=torch.long, device=source.device
            )
        if kwargs.get("attention_mask") is None:
            # every visual token is real; saying so keeps generate from warning that a batch has no mask
            kwargs["attention_mask"] = self._all_visual_tokens_mask(
                pixel_values_videos, video_features, kwargs.get("encoder_outputs")
            )
        kwargs.pop("labels", None)  # Seq2SeqTrainer passes them along; generation does not use them
        generation_config = kwargs.get("generation_config")
        wants_attentions = bool(
            kwargs.get("output_attentions") or getattr(generation_config, "output_attentions", False)
        )
        with self.eager_attention(wants_attentions):
            return super().generate(pixel_values_videos, **kwargs)

    def _maybe_prepare_encoder_kwargs_for_generation(
        self,
        inputs_tensor: torch.Tensor,
        model_kwargs: dict[str, Any],
        model_input_name: str | None,
        generation_config: Any,
    ) -> dict[str, Any]:
        """Run the video encoder once, before decoding, into `model_kwargs["encoder_outputs"]`.

        `generate` calls this for this model, and assisted decoding calls it for an encoder-decoder assistant with the
        main model's inputs: `inputs_tensor` is then the pixels (B, T, 3, H, W), or a placeholder of token ids when
        the videos came as `video_features` (kept in `model_kwargs` for that reason). transformers' default would
        feed the placeholder to the encoder as pixels. Encoder attentions and hidden states follow the generation
        config, so `return_dict_in_generate=True` outputs carry them.
        """
        if model_kwargs.get("encoder_outputs") is not None:
            return model_kwargs
        video_features = model_kwargs.get("video_features")
        model_kwargs["encoder_outputs"] = self.encoder(
            pixel_values_videos=inputs_tensor if video_features is None else None,
            video_features=video_features,
            output_attentions=bool(generation_config.output_attentions),
            output_hidden_states=bool(generation_config.output_hidden_states),
            return_dict=True,
        )
        mask = model_kwargs.get("attention_mask")
        tokens = model_kwargs["encoder_outputs"].last_hidden_state.shape[:2]  # (B, N)
        if mask is not None and tuple(mask.shape) != tuple(tokens):
            # an assistant model with another visual-token layout gets the main model's mask
            if not bool(mask.all()):
                raise ValueError(
                    f"`attention_mask` has shape {tuple(mask.shape)} but this model makes {tuple(tokens)} visual "
                    "tokens; a mask that hides tokens only fits a model with the same visual-token layout."
                )
            model_kwargs["attention_mask"] = mask.new_ones(tokens)
        return model_kwargs

    def _all_visual_tokens_mask(
        self,
        pixel_values_videos: torch.Tensor | None,
        video_features: torch.Tensor | None,
        encoder_outputs: BaseModelOutput | None,
    ) -> torch.Tensor:
        """An all-ones (B, N) mask over the visual tokens the inputs make, N = frames * `tokens_per_frame`."""
        if encoder_outputs is not None:
            source, shape = encoder_outputs.last_hidden_state, encoder_outputs.last_hidden_state.shape[:2]
        else:
            source = pixel_values_videos if pixel_values_videos is not None else video_features
            shape = (source.shape[0], source.shape[1] * self.config.tokens_per_frame)
        return torch.ones(shape, dtype=torch.long, device=source.device)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """GenerationMixin's step inputs, without the visual inputs once `encoder_outputs` hold them."""
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        if model_inputs.get("encoder_outputs") is not None:
            model_inputs.pop("video_features", None)
            model_inputs.pop("pixel_values_videos", None)
        return model_inputs

    # --- building from pretrained parts ----------------------------------------------------------------------------
    @classmethod
    def from_backbones(
        cls,
        vision: str = "microsoft/resnet-50",
        text: str = "gpt2",
        num_frames: int = 8,
        **config_kwargs: Any,
    ) -> VidGPT2ForConditionalGeneration:
        """Build a captioner from a pretrained ResNet and GPT-2 (Hub ids or local folders).

        The projection, position embeddings, visual layers and the decoder's cross-attention start fresh; the
        function logs exactly which weights those are.
        """
        vision_tower = ResNetModel.from_pretrained(vision)
        decoder, info = GPT2LMHeadModel.from_pretrained(text, add_cross_attention=True, output_loading_info=True)
        config = VidGPT2Config(
            vision_config=vision_tower.config.to_dict(),
            text_config=decoder.config.to_dict(),
            num_frames=num_frames,
            **config_kwargs,
        )
        model = cls(config)
        model.encoder.vision_tower.load_state_dict(vision_tower.state_dict())
        model.decoder.load_state_dict(decoder.state_dict())
        model.encoder.vision_tower.requires_grad_(not config.freeze_vision)
        fresh = sorted(f"decoder.{k}" for k in info.get("missing_keys", []))
        fresh += [f"encoder.{name}" for name, _ in model.encoder.named_parameters() if not name.startswith("vision_tower.")]
        logger.warning(
            "Built VidGPT2 from %s + %s. %d tensors start from random initialisation and need training: %s",
            vision,
            text,
            len(fresh),
            ", ".join(fresh),
        )
        model.fresh_parameter_names = fresh
        return model


def inspect_parameters(function: Any) -> list[str]:
    """Parameter names of `function` (through decorators that keep `__wrapped__`)."""
    return list(inspect.signature(function).parameters)


__all__ = [
    "VidGPT2ForConditionalGeneration",
    "VidGPT2PreTrainedModel",
    "VidGPT2VideoEncoder",
    "VidGPT2VisualAttention",
    "VidGPT2VisualLayer",
]
