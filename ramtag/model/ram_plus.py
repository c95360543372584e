"""RAM++ (Huang et al. 2023, "Open-Set Image Tagging with Multi-Grained Text Supervision").

Data flow for a batch of B images and a vocabulary of T tags, each described by D = 51 CLIP text
embeddings of width E = 512 ("a photo of a {tag}." + 50 LLM descriptions):

    images (B, 3, S, S)
      -> visual_encoder (Swin)                 tokens (B, 1+N, C)      [mean token, N spatial tokens]
      -> image_proj Linear(C, E)               image_embeds (B, 1+N, E)
    c = normalize(image_embeds[:, 0])          (B, E)
    w = softmax_D(exp(reweight_scale) * c . label_embed)               (B, T, D)   description weights
    query = relu(wordvec_proj(sum_D w * label_embed))                  (B, T, H)
    tagging_head (cross-attention to image_embeds, no self-attention)  (B, T, H)
    fc Linear(H, 1)                            logits (B, T);  score = sigmoid(logit)

Because ``wordvec_proj`` is linear and the weights ``w`` sum to 1 over D,
``wordvec_proj(sum_D w_d e_d) = sum_D w_d (W e_d) + b``: the vocabulary can be projected once
(:meth:`RamPlus.project_labels`, (T, D, H)) and reused for every batch, which replaces a
(B, T, E) x (E, H) matmul per batch with a (B, T, D) x (T, D, H) contraction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import SwinBackbone
from .config import RamPlusConfig
from .decoder import TagDecoder


class RamPlus(nn.Module):
    """The RAM++ network: ``(B, 3, S, S)`` normalised float images -> ``(B, T)`` tag logits.

    Parameters (ramtag's own names, those of ``model.safetensors``):
    ``visual_encoder`` (timm Swin, :class:`SwinBackbone`), ``image_proj`` Linear(C, E),
    ``label_embed`` (num_tags * D, E) built-in description embeddings (row = tag * D + description),
    ``reweight_scale`` () log temperature, ``wordvec_proj`` Linear(E, H), ``tagging_head``
    (:class:`TagDecoder`), ``fc`` Linear(H, 1).
    """

    def __init__(self, config: RamPlusConfig, *, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.config = config
        E, D, H = config.embed_dim, config.descriptions_per_tag, config.decoder.hidden_size
        self.visual_encoder = SwinBackbone(config.swin, drop_path_rate=drop_path_rate)
        self.image_proj = nn.Linear(config.swin.num_features, E)
        # Random unit rows stand in for CLIP text embeddings until real weights are loaded.
        self.label_embed = nn.Parameter(F.normalize(torch.randn(config.num_tags * D, E), dim=-1))
        self.reweight_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        self.wordvec_proj = nn.Linear(E, H)
        self.tagging_head = TagDecoder(config.decoder, encoder_width=E)
        self.fc = nn.Linear(H, 1)
        for module in (self.image_proj, self.wordvec_proj, self.tagging_head, self.fc):
            module.apply(_init_bert_style)

    # -- image side ---------------------------------------------------------------------------------

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> image_embeds (B, 1+N, E); token 0 is the mean token."""
        return self.image_proj(self.visual_encoder(images))

    # -- vocabulary side ----------------------------------------------------------------------------

    def builtin_label_embed(self) -> Tensor:
        """The built-in vocabulary's description embeddings as a (num_tags, D, E) view of ``label_embed``."""
        c = self.config
        return self.label_embed.view(c.num_tags, c.descriptions_per_tag, c.embed_dim)

    def project_labels(self, label_embed: Tensor) -> Tensor:
        """(T, D, E) description embeddings -> (T, D, H) = ``wordvec_proj.weight @ e`` (no bias).

        Compute once per vocabulary and pass to :meth:`tag_logits` as ``projected``.
        """
        return label_embed @ self.wordvec_proj.weight.t()  # (T, D, E) @ (E, H) -> (T, D, H)

    # -- tagging ------------------------------------------------------------------------------------

    def tag_logits(
        self, image_embeds: Tensor, label_embed: Tensor, projected: Tensor | None = None
    ) -> Tensor:
        """Tag logits for every (image, tag) pair, all images at once.

        Args:
            image_embeds: (B, 1+N, E) from :meth:`encode_image`.
            label_embed: (T, D, E) description embeddings of the vocabulary (built-in, open-set or both).
            projected: optional (T, D, H) = :meth:`project_labels` (label_embed), precomputed per run.
                Without it the descriptions are mixed in E space and projected per batch (the official
                order of operations; less memory for huge vocabularies, more compute).

        Returns:
            (B, T) logits; ``sigmoid`` gives scores.
        """
        B = image_embeds.shape[0]
        T, D, E = label_embed.shape
        c = F.normalize(image_embeds[:, 0], dim=-1)  # (B, E) unit image embedding
        sim = (self.reweight_scale.exp() * c) @ label_embed.reshape(T * D, E).t()  # (B, T*D)
        w = sim.view(B, T, D).softmax(dim=-1)  # (B, T, D) weights of each tag's descriptions
        w_t = w.transpose(0, 1)  # (T, B, D): batched over tags
        if projected is None:
            mixed = torch.bmm(w_t, label_embed).transpose(0, 1)  # (T, B, D) @ (T, D, E) -> (B, T, E)
            queries = F.relu(self.wordvec_proj(mixed))  # (B, T, H)
        else:
            mixed = torch.bmm(w_t, projected).transpose(0, 1)  # (T, B, D) @ (T, D, H) -> (B, T, H)
            queries = F.relu(mixed + self.wordvec_proj.bias)  # (B, T, H)
        h = self.tagging_head(queries, image_embeds)  # (B, T, H)
        return self.fc(h).squeeze(-1)  # (B, T)

    def forward(self, images: Tensor, label_embed: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) images -> (B, T) logits over ``label_embed`` (T, D, E), default the built-in tags."""
        if label_embed is None:
            label_embed = self.builtin_label_embed()
        return self.tag_logits(self.encode_image(images), label_embed)

    def set_fused_attention(self, enabled: bool) -> None:
        """Use fused scaled-dot-product attention in the Swin windows too (faster on GPUs)."""
        self.visual_encoder.set_fused_attention(enabled)


def _init_bert_style(module: nn.Module) -> None:
    """BERT-style init for the tagging part (normal 0.02, zero bias, unit LayerNorm)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
