"""Run a RAM++ model fast on one device: the prepared vocabulary and the forward pass.

``Runner`` owns the model on its device in eval mode and the PREPARED vocabulary: the description
embeddings ``label_embed`` (T, D, E) and their projection through ``wordvec_proj`` (T, D, H), both
computed once per run (not per batch) and stored in the compute dtype, so a batch costs only
backbone + re-weighting + decoder. What the precision means (dtype, the low-precision copy of the
model, bf16-checked's fp32 re-check) is its :class:`~ramtag.precision.PrecisionPolicy`; device choice
and batch sizing are :mod:`ramtag.device`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .device import select_device, suggest_batch_size
from .errors import UsageError
from .model.ram_plus import RamPlus
from .precision import RECHECK_MARGIN, PrecisionPolicy, RecheckStats, cpu_has_fast_bf16

log = logging.getLogger(__name__)

__all__ = ["Runner"]


class Runner:
    """A :class:`RamPlus` on its device with a prepared vocabulary; ``scores(images)`` per batch.

    Args:
        model: the network in float32 (moved to ``device`` and put in eval mode here; low precisions
            run a cast copy of it, the float32 model stays for fp32 and for re-checks).
        label_embed: (T, D, E) float description embeddings of the vocabulary to score, in output
            order (built-in ``model.builtin_label_embed()``, open-set ones, or both concatenated).
        device: "auto" | "cpu" | "cuda[:N]" | "mps" | a torch.device.
        precision: "auto" | "fp32" (exact) | "bf16" | "bf16-checked" | "fp16" (see ramtag.precision).
        channels_last: NHWC input layout for the patch-embedding conv; None = on for CUDA.
        compile: wrap the forward pass in ``torch.compile`` (static shapes: the last, smaller batch is
            padded to the first batch's size so it does not recompile). First batches are slow.
        margin: bf16-checked's band half-width around each threshold, in logits.
    """

    def __init__(
        self,
        model: RamPlus,
        label_embed: Tensor,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        margin: float = RECHECK_MARGIN,
    ) -> None:
        if label_embed.ndim != 3 or label_embed.shape[-1] != model.config.embed_dim:
            raise UsageError(
                f"label_embed has shape {tuple(label_embed.shape)}; expected (tags, descriptions, "
                f"{model.config.embed_dim})"
            )
        self.device = select_device(device)
        self.policy = PrecisionPolicy(precision, self.device, margin=margin)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.compiled = compile
        self.num_tags = int(label_embed.shape[0])
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv once

        self.model = model.to(self.device).eval()  # float32: the fp32 path and the re-checks
        # Fused window attention (SDPA) in Swin too, on every device: it agrees with the explicit path
        # to float rounding (~1e-6 in fp32) and is faster even on CPUs.
        self.model.set_fused_attention(True)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._fast = self.policy.fast_model(self.model)  # the network the fast pass runs

        # The prepared vocabulary: moved, projected once, stored in the compute dtype (casting it
        # per batch under autocast would cost more than the re-weighting itself).
        with torch.inference_mode():
            embed = label_embed.detach().to(self.device, torch.float32)  # (T, D, E)
            projected = self.model.project_labels(embed)  # (T, D, H), fp32 arithmetic
            self.label_embed = embed.to(self.dtype).contiguous()  # (T, D, E)
            self.projected = projected.to(self.dtype).contiguous()  # (T, D, H)
            # bf16-checked re-decides borderline tags from the float32 embeddings (mixed, then projected).
            self.policy.bind(self.model, embed.contiguous())

        forward: Callable[[Tensor], Tensor] = self._forward
        if compile:
            forward = torch.compile(self._forward, dynamic=False)
        self._compiled_forward = forward
        self._static_batch: int | None = None
        log.info("runner: %s", self.describe())

    # -- properties -----------------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """The concrete precision: "fp32" | "bf16" | "bf16-checked" | "fp16"."""
        return self.policy.name

    @property
    def dtype(self) -> torch.dtype:
        return self.policy.dtype

    @property
    def checked(self) -> bool:
        """True under bf16-checked."""
        return self.policy.checked

    @property
    def autocast(self) -> bool:
        return self.policy.autocast

    @property
    def recheck_stats(self) -> RecheckStats:
        """What bf16-checked re-decided in fp32 so far."""
        return self.policy.stats

    @property
    def margin(self) -> float:
        """bf16-checked's current band half-width around each threshold, in logits."""
        return self.policy.margin

    @property
    def pin_memory(self) -> bool:
        """Whether batch loaders should pin host memory (only useful for CUDA's async copies)."""
        return self.device.type == "cuda"

    def describe(self) -> str:
        """One line, e.g. ``cuda:0 (NVIDIA H200), bf16 autocast, channels_last``."""
        if self.device.type == "cuda":
            where = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            fast = ", AMX/AVX512-BF16" if cpu_has_fast_bf16() else ""
            where = f"cpu ({torch.get_num_threads()} threads{fast})"
        else:
            where = str(self.device)
        parts = [where, self.policy.describe()]
        if self.channels_last:
            parts.append("channels_last")
        if self.compiled:
            parts.append("torch.compile")
        return ", ".join(parts)

    def suggest_batch_size(self) -> int:
        """:func:`ramtag.device.suggest_batch_size` for this runner's device, precision and vocabulary."""
        config = self.model.config
        return suggest_batch_size(self.device, config, num_tags=self.num_tags, precision=self.precision)

    # -- compute --------------------------------------------------------------------------------

    def autocast_context(self) -> Any:
        """The autocast context of this runner's precision (a no-op context for fp32)."""
        return self.policy.autocast_context()

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA); for timing."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _input(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float32 images anywhere -> on the device, float32 (async from pinned memory)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise UsageError(f"images must be (B, 3, H, W); got {tuple(images.shape)}")
        return images.to(self.device, dtype=torch.float32, non_blocking=True)

    def encode(self, images: Tensor) -> Tensor:
        """The fast pass's first half, the backbone: (B, 3, S, S) -> (B, 1+N, E) image embeddings on the
        device, in the compute dtype. With :meth:`decode` it is the forward pass of :meth:`logits`,
        split so each half can be timed (no torch.compile, no re-check)."""
        x = self._input(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast_context():
            return self._fast.encode_image(x)

    def decode(self, image_embeds: Tensor) -> Tensor:
        """The fast pass's second half, re-weighting + tagging decoder over the prepared vocabulary:
        (B, 1+N, E) from :meth:`encode` -> (B, T) logits on the device."""
        with torch.inference_mode(), self.autocast_context():
            return self._fast.tag_logits(image_embeds, self.label_embed, projected=self.projected)

    def _forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) on device -> (B, T) logits, in the autocast dtype (fp32 without autocast)."""
        image_embeds = self._fast.encode_image(x)  # (B, 1+N, E)
        return self._fast.tag_logits(image_embeds, self.label_embed, projected=self.projected)  # (B, T)

    def logits(self, images: Tensor, thresholds: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) float32 normalised images (CPU, pinned or not, or already on the device)
        -> (B, T) float32 logits on the CPU.

        ``thresholds`` (T,) in [0, 1], the score thresholds the caller decides with: bf16-checked
        re-computes in fp32 every (image, tag) whose logit is near its threshold. Ignored otherwise.
        """
        x = self._input(images)
        B = images.shape[0]
        check = self.checked and thresholds is not None
        self.recheck_stats.images += B
        if check and self.policy.prefer_fp32():
            return self.policy.exact_logits(x).cpu()
        xin = self._pad_to_static(x) if self.compiled else x
        if self.channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast_context():
            out = self._compiled_forward(xin)  # (B', T)
        logits = out[:B].float()
        if check:
            assert thresholds is not None
            logits = self.policy.recheck(x, logits, thresholds)
        return logits.cpu()

    def scores(self, images: Tensor, thresholds: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) float32 normalised images -> (B, T) float32 sigmoid scores in [0, 1] on the CPU.

        Pass the (T,) ``thresholds`` you will decide with, so bf16-checked can re-decide borderline tags.
        """
        return torch.sigmoid(self.logits(images, thresholds))

    def _pad_to_static(self, x: Tensor) -> Tensor:
        """Pad a smaller batch with zeros to the first batch's size (avoids a recompile)."""
        if self._static_batch is None:
            self._static_batch = x.shape[0]
        missing = self._static_batch - x.shape[0]
        if missing > 0:
            x = torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
        return x
