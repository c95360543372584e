"""Swin Transformer v1 image encoder, built with timm, returning RAM++'s token layout.

RAM++ uses Microsoft's Swin v1 unchanged except for its output: after the final LayerNorm it
prepends the mean of all spatial tokens to the tokens themselves, giving ``(B, 1 + N, C)``.

timm's ``SwinTransformer`` is numerically the same network as the official one:

- patch merging concatenates ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``
  (timm: ``reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5)``, the same order), then
  LayerNorm(4C) and Linear(4C, 2C, no bias);
- a stage whose resolution is not larger than the window uses one window of that size and no shift
  (stage 4 at 384 px: 12x12 tokens = one window, never shifted), as in the official code;
- shifted windows mask other regions with -100, blocks are pre-norm, GELU is exact (erf).

The only layout difference is where patch merging lives: the official checkpoint stores it at the END
of stage ``i`` (``layers.i.downsample``) while timm runs it at the START of stage ``i + 1``
(``layers.{i+1}.downsample``); :mod:`ramtag.model.convert` renames the keys.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformer, WindowAttention
from torch import Tensor, nn

from .config import SwinConfig


class SwinBackbone(SwinTransformer):
    """timm's Swin v1 without a classifier head; ``forward`` returns ``[mean token, tokens]``.

    Parameter names are timm's (``patch_embed.*``, ``layers.{i}.blocks.{j}.*``,
    ``layers.{i}.downsample.*`` for i >= 1, ``norm.*``).
    """

    def __init__(self, config: SwinConfig, *, drop_path_rate: float = 0.0) -> None:
        # timm's blocks use nn.GELU() (exact erf) and Mlp(fc1, fc2), like the official Swin.
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=3,
            num_classes=0,  # no head: RAM++ projects the tokens itself
            embed_dim=config.embed_dim,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            drop_rate=0.0,
            proj_drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=drop_path_rate,  # stochastic depth (training only; inactive in eval)
            norm_layer=nn.LayerNorm,  # eps 1e-5, as in the official Swin
        )
        self.config = config

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> (B, 1 + N, C) tokens: [mean of the N tokens, the N tokens].

        N = (S / patch / 2**(stages-1))**2 (144 at 384 px), C = ``config.num_features``.
        """
        x = self.forward_features(images)  # (B, h, w, C), NHWC after the final LayerNorm
        x = x.flatten(1, 2)  # (B, N, C), row-major over (h, w) like the official tokens
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1 + N, C)

    def set_fused_attention(self, enabled: bool) -> None:
        """Use ``F.scaled_dot_product_attention`` in the window attention (faster on GPUs).

        Off by default: the explicit ``softmax(q k^T * scale + bias)`` path is the official arithmetic;
        the fused path agrees to float rounding (about 1e-6 in fp32).
        """
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.fused_attn = enabled  # type: ignore[misc]  # timm marks it jit-Final
