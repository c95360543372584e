"""Architecture configs for RAM++ (open_clip style: a dataclass, a comment per field, named sizes).

Only architecture lives here. Preprocessing and the tag vocabulary travel with the weights
(see ``ramtag.registry`` and ``ramtag.weights_format``), not with the architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer v1 image encoder (Microsoft layout, built with timm)."""

    img_size: int = 384  # input side in pixels; inputs are square (B, 3, img_size, img_size)
    patch_size: int = 4  # patch embedding stride: tokens are img_size / patch_size per side
    embed_dim: int = 192  # channels of stage 1; stage i has embed_dim * 2**i channels
    depths: tuple[int, ...] = (2, 2, 18, 2)  # Swin blocks per stage
    num_heads: tuple[int, ...] = (6, 12, 24, 48)  # attention heads per stage
    window_size: int = 12  # attention window side (tokens); shift = window_size // 2
    mlp_ratio: float = 4.0  # hidden width of each block's MLP relative to its channels

    @property
    def num_features(self) -> int:
        """Channels of the last stage (the official ``vision_width``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def num_tokens(self) -> int:
        """Spatial tokens after the last stage (144 for 384 px / patch 4 / 3 merges)."""
        side = self.img_size // self.patch_size // 2 ** (len(self.depths) - 1)
        return side * side


@dataclass(frozen=True)
class DecoderConfig:
    """Tagging head: cross-attention + FFN layers, no self-attention (BERT layout, Query2Label style)."""

    hidden_size: int = 768  # width of the tag queries inside the decoder
    num_layers: int = 2  # decoder layers, each = cross-attention + feed-forward
    num_heads: int = 4  # cross-attention heads (head dim = hidden_size / num_heads)
    intermediate_size: int = 3072  # feed-forward hidden width
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon (the official value)


@dataclass(frozen=True)
class RamPlusConfig:
    """Everything needed to build a :class:`ramtag.model.RamPlus` with random weights."""

    name: str  # the config's registry name, e.g. "swin_l_384"
    swin: SwinConfig = field(default_factory=SwinConfig)  # image encoder
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # tagging head
    embed_dim: int = 512  # CLIP text-embedding width of label_embed and image_proj's output
    descriptions_per_tag: int = 51  # label_embed rows per tag: "a photo of a {tag}." + 50 LLM descriptions
    num_tags: int = 4585  # tags of the built-in vocabulary (rows of label_embed / descriptions_per_tag)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RamPlusConfig:
        swin = dict(data.get("swin", {}))
        for key in ("depths", "num_heads"):
            if key in swin:
                swin[key] = tuple(swin[key])
        rest = {k: v for k, v in data.items() if k not in ("swin", "decoder")}
        return cls(swin=SwinConfig(**swin), decoder=DecoderConfig(**data.get("decoder", {})), **rest)

    def with_num_tags(self, num_tags: int) -> RamPlusConfig:
        """The same architecture with another built-in vocabulary size."""
        return RamPlusConfig.from_dict({**self.to_dict(), "num_tags": num_tags})


CONFIGS: dict[str, RamPlusConfig] = {
    # The published RAM++: Swin-L 384 px, window 12 (ram_plus_swin_large_14m.pth).
    "swin_l_384": RamPlusConfig(
        name="swin_l_384",
        swin=SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    ),
    # Swin-B 384 px, window 12: the official code's smaller backbone option.
    "swin_b_384": RamPlusConfig(
        name="swin_b_384",
        swin=SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    ),
    # Tiny, for tests: the same shapes as ../shared/parity/ram_plus_tiny_official.pth (40 tags).
    "tiny": RamPlusConfig(
        name="tiny",
        swin=SwinConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        decoder=DecoderConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
        num_tags=40,
    ),
}


def get_config(name: str) -> RamPlusConfig:
    """Look up a named architecture; raises :class:`UsageError` naming the valid names."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}; choose one of: {', '.join(CONFIGS)}") from None
