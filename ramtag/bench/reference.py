"""The official-style reference loop the benchmark compares against.

One image per step, fp32, decode + transform in the main process, a per-image Python loop that
mixes the 51 description embeddings in 512-d, ``wordvec_proj`` applied after the mix (per image), and
an explicit-softmax decoder. It is written from the parity README's description.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor


def reference_logits(model: Any, image: Tensor) -> Tensor:
    """One image the way the official inference code computes it: (1, 3, S, S) -> (1, T) logits, fp32.

    Mixes the D description embeddings of every tag in E space with a per-image Python loop,
    then applies ``wordvec_proj`` (+ ReLU) to the mixed (1, T, E) queries, then runs the decoder with
    explicit softmax attention. Uses the model's parameters, none of ramtag's fast paths.
    """
    cfg = model.config
    T, D, E = cfg.num_tags, cfg.descriptions_per_tag, cfg.embed_dim
    image_embeds = model.image_proj(model.visual_encoder(image))  # (1, 1+N, E)
    image_cls = F.normalize(image_embeds[:, 0, :], dim=-1)  # (1, E)
    label_embed = model.label_embed  # (T * D, E)
    sims = (image_cls @ label_embed.t()).view(-1, T, D)  # (1, T, D)
    weights = torch.softmax(model.reweight_scale.exp() * sims, dim=-1)  # (1, T, D)
    mixed = torch.empty(image.shape[0], T, E, device=image.device)
    for i in range(image.shape[0]):  # the official per-image loop over the batch
        mixed[i] = (weights[i].unsqueeze(-1) * label_embed.view(T, D, E)).sum(dim=1)  # (T, E)
    h = F.relu(model.wordvec_proj(mixed))  # (1, T, H): projected after mixing
    for layer in model.tagging_head.layers:
        att = layer.cross_attn
        B, Tq, H = h.shape
        nh = att.num_heads
        hd = H // nh
        q = att.query(h).view(B, Tq, nh, hd).transpose(1, 2)  # (1, nh, T, hd)
        k = att.key(image_embeds).view(B, -1, nh, hd).transpose(1, 2)  # (1, nh, L, hd)
        v = att.value(image_embeds).view(B, -1, nh, hd).transpose(1, 2)  # (1, nh, L, hd)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)  # (1, nh, T, L)
        ctx = (probs @ v).transpose(1, 2).reshape(B, Tq, H)  # (1, T, H)
        h = layer.norm1(att.out(ctx) + h)
        h = layer.norm2(layer.ffn.fc2(F.gelu(layer.ffn.fc1(h))) + h)
    return model.fc(h).squeeze(-1)  # (1, T)


def reference_loop(
    model: Any, paths: Sequence[Path], transform: Callable[[Image.Image], Tensor], device: torch.device
) -> tuple[Tensor, float]:
    """Official-style loop over ``paths`` (model already on ``device``): ((n, T) CPU scores, seconds)."""
    model.set_fused_attention(False)  # explicit softmax(q k^T + bias) window attention
    scores = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            with Image.open(p) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
            x = transform(rgb).unsqueeze(0).to(device)  # (1, 3, S, S)
            scores.append(torch.sigmoid(reference_logits(model, x))[0].cpu())
    return torch.stack(scores), time.perf_counter() - t0
