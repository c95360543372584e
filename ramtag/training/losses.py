"""The three RAM++ training objectives (paper Sec. 3; official ``RAM_plus.forward``).

- tagging: asymmetric loss (ASL, Ridnik et al. 2021) on the tag logits, gamma_neg 7, gamma_pos 0, clip 0.05
- image-text alignment: the batch's caption embeddings (frozen CLIP text encoder) are fed to the
  same tagging decoder as extra queries; logit (i, j) says "caption j describes image i"; ASL with
  gamma_neg 4 against the identity (each image's own caption is its only positive)
- distillation: L1 between the pooled image embedding ``image_embeds[:, 0]`` and the frozen CLIP
  image encoder's feature of the same (224 px) view

Like the official code (and the ASL paper), the ASL losses are summed over the batch and the tags,
not averaged; the L1 loss is a mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..model.ram_plus import RamPlus


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    """Asymmetric loss for multi-label classification, summed over all elements.

    logits: (B, T) raw scores, any float dtype (computed in float32). targets: (B, T) in {0, 1}.
    Negatives have their probability shifted down by ``clip`` (easy negatives contribute nothing)
    and are focused with ``(p)^gamma_neg``; positives with ``(1 - p)^gamma_pos``. The focusing
    weights carry no gradient (as in the reference implementation). Returns a scalar.
    """
    logits = logits.float()
    y = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    p_neg = 1.0 - p
    if clip > 0:
        p_neg = (p_neg + clip).clamp(max=1.0)
    loss = y * torch.log(p.clamp(min=eps)) + (1.0 - y) * torch.log(p_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = p * y + p_neg * (1.0 - y)  # probability of the correct answer
            weight = torch.pow(1.0 - pt, gamma_pos * y + gamma_neg * (1.0 - y))
        loss = loss * weight
    return -loss.sum()


class RamPlusLosses(nn.Module):
    """Computes the RAM++ losses for one batch; wrap THIS module in DistributedDataParallel.

    Holds the trainable :class:`ramtag.model.RamPlus` as ``self.model`` and the tag-description
    embeddings as a buffer, so one ``forward`` call covers every trainable parameter (DDP needs
    all gradients to come from its own forward). The frozen CLIP encoders are NOT part of it:
    their outputs come in as plain tensors computed under ``torch.no_grad``.
    """

    def __init__(
        self,
        model: RamPlus,
        *,
        tag_weight: float = 1.0,
        align_weight: float = 1.0,
        distill_weight: float = 1.0,
        tag_gamma_neg: float = 7.0,
        align_gamma_neg: float = 4.0,
        clip: float = 0.05,
    ):
        super().__init__()
        self.model = model
        self.tag_weight, self.align_weight, self.distill_weight = tag_weight, align_weight, distill_weight
        self.tag_gamma_neg, self.align_gamma_neg, self.clip = tag_gamma_neg, align_gamma_neg, clip

    def forward(
        self,
        images: Tensor,
        targets: Tensor,
        text_embeds: Tensor | None = None,
        clip_image_features: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One batch -> named losses (each a scalar float32 tensor; "loss" is the weighted total).

        images: (B, 3, S, S) normalised with the weights' preprocessing.
        targets: (B, T) float in {0, 1}, T = the model's vocabulary size.
        text_embeds: (B, 512) L2-normalised CLIP text embeddings of each image's caption, or None
            to skip the alignment loss.
        clip_image_features: (B, 512) CLIP image features (not normalised, as in the official
            code) of the same images, or None to skip the distillation loss.
        """
        model = self.model
        image_embeds = model.encode_image(images)  # (B, 1+N, 512)
        label_embed = model.builtin_label_embed()  # (T, D, 512)
        logits = model.tag_logits(image_embeds, label_embed)  # (B, T)
        losses: dict[str, Tensor] = {}
        total = torch.zeros((), device=images.device, dtype=torch.float32)

        tag = asymmetric_loss(logits, targets, gamma_neg=self.tag_gamma_neg, gamma_pos=0.0, clip=self.clip)
        losses["tag"] = tag
        total = total + self.tag_weight * tag

        if text_embeds is not None and self.align_weight > 0:
            # Each caption is one query with a single "description": (B_text, 1, 512).
            queries = text_embeds.to(label_embed.dtype)[:, None, :]
            align_logits = model.tag_logits(image_embeds, queries)  # (B, B_text)
            eye = torch.eye(align_logits.shape[0], align_logits.shape[1], device=images.device)
            align = asymmetric_loss(
                align_logits, eye, gamma_neg=self.align_gamma_neg, gamma_pos=0.0, clip=self.clip
            )
            losses["align"] = align
            total = total + self.align_weight * align

        if clip_image_features is not None and self.distill_weight > 0:
            pooled = image_embeds[:, 0].float()  # (B, 512)
            distill = F.l1_loss(pooled, clip_image_features.float())
            losses["distill"] = distill
            total = total + self.distill_weight * distill

        losses["loss"] = total
        return losses
