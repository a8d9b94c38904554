"""VidGPT2: frames -> ResNet -> visual tokens -> GPT-2 with cross-attention -> caption.

Data flow (shapes for the default config: B videos, T=8 frames, 224x224, ResNet-50, GPT-2 small):

    pixel_values_videos (B, T, 3, 224, 224)
      -> vision tower on (B*T, 3, 224, 224)             [ResNet; frozen by default]
      -> video features (B, T, 2048) pooled | (B, T, 49, 2048) spatial   <- what `get_video_features` returns
      -> linear projection + LayerNorm, + temporal (+ spatial) position embeddings
      -> `num_visual_layers` self-attention layers   -> visual tokens (B, N, 768), N = T or T*49
      -> GPT-2 decoder cross-attending to the visual tokens -> logits (B, L, vocab)

This module imports only torch, transformers and `.configuration_vidgpt2` so it can be pushed as Hub remote code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, GPT2LMHeadModel, PreTrainedModel, ResNetModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import logging

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
    _no_split_modules = ["GPT2Block", "ResNetStage"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # transformers initialises module by module, children first, and only modules that own parameters: so the
        # cases here are leaves. Linear, LayerNorm and plain Embedding layers get the default (normal with
        # `initializer_range`, LayerNorm ones/zeros); GPT-2 and the ResNet are sub-models with their own init.
        if isinstance(module, VidGPT2PositionEmbedding):
            init.normal_(module.weight, std=POSITION_EMBEDDING_STD)
        elif isinstance(module, nn.MultiheadAttention):  # inside the visual layers; out_proj is a Linear
            init.normal_(module.in_proj_weight, std=self.config.initializer_range)
            init.zeros_(module.in_proj_bias)
        else:
            super()._init_weights(module)


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
            VidGPT2PositionEmbedding(config.tokens_per_frame, width) if config.visual_tokens != "pooled" else None
        )
        self.dropout = nn.Dropout(config.visual_dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=width,
                nhead=config.visual_heads,
                dim_feedforward=4 * width,
                dropout=config.visual_dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
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

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Backbone features, exactly as `forward(video_features=...)` takes them.

        Returns (B, T, C) for ``visual_tokens="pooled"``, (B, T, h*w, C) for ``"spatial"`` and (B, T, g*g, C) for
        ``"grid"`` (g = ``grid_size``).
        """
        self._check_pixels(pixel_values_videos)
        batch, frames = pixel_values_videos.shape[:2]
        # (B, T, 3, H, W) -> (B*T, 3, H, W): every frame of every video in one backbone batch
        flat = pixel_values_videos.flatten(0, 1)
        flat = flat.to(self.vision_tower.dtype).contiguous(memory_format=torch.channels_last)
        grad = torch.is_grad_enabled() and not self.vision_frozen
        with torch.set_grad_enabled(grad):
            feature_map = self.vision_tower(flat, return_dict=True).last_hidden_state  # (B*T, C, h, w)
        if self.config.visual_tokens == "pooled":
            # (B*T, C, h, w) -> (B*T, C) -> (B, T, C)
            return feature_map.mean(dim=(2, 3)).view(batch, frames, -1)
        if self.config.visual_tokens == "grid":
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
        **kwargs: Any,
    ) -> BaseModelOutput:
        if (pixel_values_videos is None) == (video_features is None):
            raise ValueError(
                "VidGPT2 needs exactly one of `pixel_values_videos` (B, T, 3, H, W) or `video_features` "
                "(from `get_video_features`)."
            )
        if video_features is None:
            video_features = self.get_video_features(pixel_values_videos)
        self._check_features(video_features)
        tokens = self.projection(video_features.to(self.projection.weight.dtype))  # (B, T, [h*w,] C) -> (..., d)
        tokens = self.projection_norm(tokens)
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
        for layer in self.layers:
            tokens = layer(tokens)
            if hidden_states is not None:
                hidden_states.append(tokens)
        tokens = self.layer_norm(tokens)
        return BaseModelOutput(
            last_hidden_state=tokens, hidden_states=tuple(hidden_states) if hidden_states is not None else None
        )

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
            cells = self.config.tokens_per_frame
            expected = f"(batch, frames, {cells}, {channels})"
            ok = video_features.dim() == 4 and video_features.shape[2] == cells
        if not ok or video_features.shape[-1] != channels:
            raise ValueError(
                f"`video_features` must have shape {expected} for visual_tokens={self.config.visual_tokens!r}; "
                f"got {tuple(video_features.shape)}. Compute them with `model.get_video_features(pixel_values_videos)`."
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

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Vision-tower features for caching: (B, T, C) pooled or (B, T, h*w, C) spatial."""
        return self.encoder.get_video_features(pixel_values_videos)

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
    ) -> Seq2SeqLMOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(B, T, 3, H, W)`): frames from `VidGPT2VideoProcessor`.
        video_features (`torch.FloatTensor`): cached output of `get_video_features`, instead of pixels.
        attention_mask (`torch.Tensor` of shape `(B, N)`, *optional*): mask over the N visual tokens (all ones
            unless videos were padded); `generate` fills it in.
        labels (`torch.LongTensor` of shape `(B, L)`): target token ids, -100 where ignored. Teacher-forcing
            inputs are derived from them (start token prepended) when `decoder_input_ids` is not given.
        num_items_in_batch: number of target tokens across gradient-accumulation steps (passed by the Trainer);
            the loss is then the token sum divided by it.
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                pixel_values_videos=pixel_values_videos,
                video_features=video_features,
                output_hidden_states=output_hidden_states,
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
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        logits = decoder_outputs.logits  # (B, L, vocab)

        loss = None
        if labels is not None:
            loss = self.caption_loss(logits, labels, num_items_in_batch)

        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=visual_tokens,
            encoder_hidden_states=encoder_outputs.hidden_states,
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

        All `GenerationMixin.generate` arguments apply (`num_beams`, `do_sample`, `max_new_tokens`, ...). With
        `output_attentions=True, return_dict_in_generate=True` the result holds `cross_attentions`: per generated
        step, per decoder layer, (B*beams, heads, step_len, N visual tokens).
        """
        if kwargs.get("encoder_outputs") is None:
            if (pixel_values_videos is None) == (video_features is None):
                raise ValueError("generate() needs exactly one of `pixel_values_videos` or `video_features`.")
            kwargs["encoder_outputs"] = self.encoder(
                pixel_values_videos=pixel_values_videos, video_features=video_features
            )
        if kwargs.get("decoder_attention_mask") is None:
            # the start token doubles as pad/eos for GPT-2: say explicitly that the prompt is not padding
            prompt = kwargs.get("decoder_input_ids")
            batch = kwargs["encoder_outputs"].last_hidden_state.shape[0]
            length = 1 if prompt is None else prompt.shape[1]
            device = kwargs["encoder_outputs"].last_hidden_state.device
            kwargs["decoder_attention_mask"] = torch.ones(batch, length, dtype=torch.long, device=device)
        if kwargs.get("attention_mask") is None:
            # every visual token is real: an explicit mask keeps generate from guessing one from token ids
            visual_tokens = kwargs["encoder_outputs"].last_hidden_state  # (B, N, d)
            kwargs["attention_mask"] = torch.ones(visual_tokens.shape[:2], dtype=torch.long, device=visual_tokens.device)
        kwargs.pop("labels", None)  # Seq2SeqTrainer passes them along; generation does not use them
        generation_config = kwargs.get("generation_config")
        wants_attentions = bool(
            kwargs.get("output_attentions") or getattr(generation_config, "output_attentions", False)
        )
        with self.eager_attention(wants_attentions):
            return super().generate(**kwargs)

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


__all__ = ["VidGPT2ForConditionalGeneration", "VidGPT2PreTrainedModel", "VidGPT2VideoEncoder"]
