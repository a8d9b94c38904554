"""Configuration for VidGPT2: a ResNet vision tower, a small visual-token encoder and a GPT-2 decoder.

This module imports only transformers so it can be pushed to the Hub as remote code.
"""

from __future__ import annotations

from typing import Literal

from transformers import GPT2Config, PreTrainedConfig, ResNetConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

VISUAL_TOKEN_MODES = ("pooled", "spatial", "grid", "motion")


class VidGPT2Config(PreTrainedConfig):
    r"""Configuration of [`VidGPT2ForConditionalGeneration`].

    Frames sampled from a video go through a ResNet (``vision_config``) as one ``(B*T)`` batch. Each frame gives
    either one pooled 2048-d feature (``visual_tokens="pooled"``, the paper) or every cell of the last feature map
    (``visual_tokens="spatial"``). A linear projection with a LayerNorm plus temporal (and spatial) position
    embeddings of the same scale turn them into visual tokens, ``num_visual_layers`` self-attention layers let the tokens see each other, and a GPT-2
    decoder (``text_config``) cross-attends to them.

    Args:
        vision_config (`dict` or `ResNetConfig`, *optional*):
            The vision tower. Defaults to the ResNet-50 shape (``microsoft/resnet-50``).
        text_config (`dict` or `GPT2Config`, *optional*):
            The decoder. Defaults to GPT-2 small. ``add_cross_attention`` and ``is_decoder`` are always switched on.
        num_frames (`int`, defaults to 8):
            Frames sampled per video; the size of the temporal position embedding.
        image_size (`int`, defaults to 224):
            Side of the square frames the vision tower sees; fixes the spatial grid in ``"spatial"`` mode.
        visual_tokens (`str`, defaults to ``"pooled"``):
            ``"pooled"``: one token per frame. ``"spatial"``: one token per cell of the last feature map per frame.
            ``"grid"``: the last feature map average-pooled to ``grid_size x grid_size`` cells per frame
            (adaptive average pooling), a few tokens that keep where things are at any ``image_size``.
            ``"motion"``: one token per frame, like ``"pooled"``, plus a projection of how the ``grid_size x
            grid_size`` grid of the frame's features changed since the previous frame (the first frame's change is
            zero): reads which way the scene moves (ego-motion: turns, lane changes) at the cost of one linear layer,
            with no second backbone pass and no extra tokens.
        grid_size (`int`, defaults to 2):
            Side of the per-frame grid for ``visual_tokens="grid"`` (tokens) and ``"motion"`` (the grid whose
            change makes the motion part); ignored otherwise.
        temporal_embeddings (`bool`, defaults to `True`):
            Add a learned embedding per frame index. ``False`` is the order-blind ablation.
        num_visual_layers (`int`, defaults to 1):
            Transformer encoder layers over the visual tokens before the decoder. One layer (default) is cheap
            (8 tokens in pooled mode) and lets every frame token be read in the context of the others, which the
            paper's plain projection cannot do; GPT-2 cross-attention alone only mixes frames linearly per query.
            ``0`` is the paper's design (plus the LayerNorm on the projection, without which trained models
            ignore frame order; see `modeling_vidgpt2.POSITION_EMBEDDING_STD`).
        num_visual_heads (`int`, *optional*):
            Heads of the visual layers; defaults to the decoder's head count.
        freeze_vision (`bool`, defaults to `True`):
            Keep the vision tower frozen: no gradients and batch-norm statistics fixed in training.
        visual_dropout (`float`, defaults to 0.1):
            Dropout on the visual tokens and inside the visual layers.
    """

    model_type = "vidgpt2"
    sub_configs_defaults = {"vision_config": ResNetConfig, "text_config": GPT2Config}

    vision_config: dict | ResNetConfig | None = None
    text_config: dict | GPT2Config | None = None
    num_frames: int = 8
    image_size: int = 224
    visual_tokens: Literal["pooled", "spatial", "grid", "motion"] = "pooled"
    grid_size: int = 2
    temporal_embeddings: bool = True
    num_visual_layers: int = 1
    num_visual_heads: int | None = None
    freeze_vision: bool = True
    visual_dropout: float = 0.1
    initializer_range: float = 0.02
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The decoder must cross-attend to the visual tokens; a saved or user-given config cannot turn that off.
        self.text_config.add_cross_attention = True
        self.text_config.is_decoder = True
        # Special ids default to the decoder's (GPT-2: <|endoftext|> = 50256 for bos, eos and pad).
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(self.text_config, name, None))
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.bos_token_id
        self.text_config.pad_token_id = self.pad_token_id
        self._drop_classification_labels()
        self._check_values()

    def _drop_classification_labels(self) -> None:
        """Forget the sub-models' classification labels: a captioner never uses them.

        A ResNet built from ``microsoft/resnet-50`` carries the 1,000 ImageNet names (about 50 KB in every saved
        ``config.json``). Resetting to the 2 default labels leaves them out of the saved diff; configs saved with
        them still load (the labels are dropped then).
        """
        for sub_config in (self.vision_config, self.text_config):
            if sub_config.id2label is not None and len(sub_config.id2label) != 2:
                sub_config.id2label = None
                sub_config.num_labels = 2  # the default `{0: "LABEL_0", 1: "LABEL_1"}`, which is never saved

    def _check_values(self) -> None:
        def bad(field: str, value: object, expected: str) -> ValueError:
            return ValueError(f"VidGPT2Config.{field}={value!r} is invalid: expected {expected}.")

        if self.visual_tokens not in VISUAL_TOKEN_MODES:
            raise bad("visual_tokens", self.visual_tokens, f"one of {VISUAL_TOKEN_MODES}")
        if not isinstance(self.grid_size, int) or isinstance(self.grid_size, bool) or self.grid_size < 1:
            raise bad("grid_size", self.grid_size, "a positive integer")
        if self.visual_tokens in ("grid", "motion") and self.grid_size > self.spatial_grid:
            raise bad(
                "grid_size",
                self.grid_size,
                f"at most the feature-map side {self.spatial_grid} for image_size={self.image_size} (a finer grid "
                "would repeat cells); raise image_size or use visual_tokens='spatial'",
            )
        if not isinstance(self.num_frames, int) or isinstance(self.num_frames, bool) or self.num_frames < 1:
            raise bad("num_frames", self.num_frames, "a positive integer")
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise bad("image_size", self.image_size, "an integer >= 32 (the ResNet downsamples by 32)")
        if not isinstance(self.num_visual_layers, int) or self.num_visual_layers < 0:
            raise bad("num_visual_layers", self.num_visual_layers, "an integer >= 0")
        if not 0.0 <= float(self.visual_dropout) < 1.0:
            raise bad("visual_dropout", self.visual_dropout, "a float in [0, 1)")
        heads = self.visual_heads
        if self.num_visual_layers > 0 and (heads < 1 or self.text_config.n_embd % heads != 0):
            raise bad("num_visual_heads", self.num_visual_heads, f"a divisor of the decoder width {self.text_config.n_embd}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.text_config.vocab_size:
                raise bad(name, value, f"a token id in [0, {self.text_config.vocab_size})")
        if self.visual_tokens == "spatial" and self.spatial_grid == 1:
            logger.warning(
                "VidGPT2Config: visual_tokens='spatial' with image_size=%d leaves a 1x1 feature map per frame, so it "
                "is the same as 'pooled'. Use image_size >= 64 for a spatial grid, or visual_tokens='pooled'.",
                self.image_size,
            )

    @property
    def visual_heads(self) -> int:
        """Number of attention heads in the visual layers."""
        return self.num_visual_heads if self.num_visual_heads is not None else self.text_config.n_head

    @property
    def vision_feature_dim(self) -> int:
        """Channels of the vision tower's last feature map (2048 for ResNet-50)."""
        return self.vision_config.hidden_sizes[-1]

    @property
    def spatial_grid(self) -> int:
        """Side of the last ResNet feature map for ``image_size`` frames (7 for 224)."""
        return -(-self.image_size // 32)

    @property
    def token_grid(self) -> int:
        """Side of each frame's token grid: 1 pooled and motion, `spatial_grid` spatial, `grid_size` grid."""
        return {"pooled": 1, "spatial": self.spatial_grid, "grid": self.grid_size, "motion": 1}[self.visual_tokens]

    @property
    def feature_grid(self) -> int:
        """Side of each frame's feature grid in `get_video_features(...).pooler_output` (what `forward` takes as
        `video_features` and the feature cache stores): 1 pooled, `spatial_grid` spatial, `grid_size` grid and
        motion (whose one token per frame is made from that grid)."""
        return self.grid_size if self.visual_tokens == "motion" else self.token_grid

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens each frame contributes."""
        return self.token_grid**2


__all__ = ["VidGPT2Config"]
