"""RAM++'s tagging head: tag queries cross-attend to the image tokens (Query2Label style).

The official head is a BERT encoder with its embeddings and every self-attention layer deleted, so a
layer is only cross-attention + feed-forward, each followed by residual + LayerNorm (post-norm, eps
1e-12). Without self-attention the tag queries never see each other: the logit of a tag depends only on
its own query and the image, which is why vocabularies can be split or concatenated exactly.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import DecoderConfig


class CrossAttention(nn.Module):
    """Multi-head attention from tag queries (B, T, H) to image tokens (B, L, E)."""

    def __init__(self, hidden_size: int, num_heads: int, encoder_width: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(encoder_width, hidden_size)
        self.value = nn.Linear(encoder_width, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        """(B, T, H) queries, (B, L, E) image tokens -> (B, T, H), before the residual."""
        B, T, H = queries.shape
        L = tokens.shape[1]
        nh, hd = self.num_heads, H // self.num_heads
        q = self.query(queries).view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.key(tokens).view(B, L, nh, hd).transpose(1, 2)  # (B, nh, L, hd)
        v = self.value(tokens).view(B, L, nh, hd).transpose(1, 2)  # (B, nh, L, hd)
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(hd)) v over all L tokens
        a = a.transpose(1, 2).reshape(B, T, H)  # heads concatenated
        return self.out(a)


class FeedForward(nn.Module):
    """Linear(H, I) -> exact GELU -> Linear(I, H)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DecoderLayer(nn.Module):
    """Cross-attention + feed-forward, each with residual and post-LayerNorm; no self-attention."""

    def __init__(self, config: DecoderConfig, encoder_width: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(config.hidden_size, config.num_heads, encoder_width)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.hidden_size, config.intermediate_size)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: Tensor, tokens: Tensor) -> Tensor:
        """(B, T, H) queries, (B, L, E) image tokens -> (B, T, H)."""
        h = self.norm1(self.cross_attn(h, tokens) + h)
        return self.norm2(self.ffn(h) + h)


class TagDecoder(nn.Module):
    """``num_layers`` decoder layers: (B, T, H) tag queries + (B, 1+N, E) image tokens -> (B, T, H)."""

    def __init__(self, config: DecoderConfig, encoder_width: int = 512) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(config, encoder_width) for _ in range(config.num_layers)])

    def forward(self, queries: Tensor, image_tokens: Tensor) -> Tensor:
        h = queries  # (B, T, H)
        for layer in self.layers:
            h = layer(h, image_tokens)
        return h  # (B, T, H)
