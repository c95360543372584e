"""What ``--precision`` means on a device, as one object the :class:`~ramtag.runner.Runner` holds.

- ``fp32``: exact; the same arithmetic as ``RamPlus.forward`` (parity with the official code).
- ``bf16`` / ``fp16``: autocast with the Linear/Conv weights cast ONCE (:func:`low_precision_copy`),
  so batches do not re-cast hundreds of millions of weights. Fast, but a decision can flip where a
  score lies within the rounding error of its threshold.
- ``bf16-checked``: bf16 for every (image, tag), then every pair whose bf16 logit lies within
  ``margin`` (default :data:`RECHECK_MARGIN` logits, a few times the bf16 error seen on random
  Swin-L) of its threshold is recomputed in fp32 (fp32 backbone for those images, fp32 decoder for
  those tags only; the decoder has no self-attention, so tags are independent). Decisions are the
  fp32 decisions as long as no bf16 error exceeds the margin: one image of the run's first batch (a
  borderline one if there is one) is computed wholly in fp32 to calibrate it (margin >= 3x that
  image's largest error), and it widens itself whenever a re-check sees a larger one. Scores far
  from every threshold keep their bf16 value (~3 significant digits). When nearly every image has a
  borderline tag, batches go straight to fp32 (:class:`CostModel`).
- ``auto``: CUDA -> bf16 (fp16 without bf16), the standard for tensor cores; CPUs with AMX or
  AVX512-BF16 -> bf16-checked (faster than fp32 there with the same tags: benchmarks/README.md);
  other CPUs and MPS -> fp32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from .errors import UsageError
from .options import PRECISIONS

log = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "PRECISIONS",
    "RECHECK_MARGIN",
    "CostModel",
    "PrecisionPolicy",
    "RecheckStats",
    "cpu_has_fast_bf16",
    "low_precision_copy",
    "resolve_precision",
]

DTYPES = {  # the compute dtype of each concrete precision
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bf16-checked": torch.bfloat16,
    "fp16": torch.float16,
}
assert set(DTYPES) == set(PRECISIONS) - {"auto"}

# Half-width, in logits, of the band around each threshold where bf16-checked re-decides in fp32:
# a few times the largest bf16 - fp32 logit difference seen on random Swin-L weights; calibration
# widens it for weights that round worse.
RECHECK_MARGIN = 0.05


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision (fp32, bf16, bf16-checked or fp16) ``precision`` means on ``device``."""
    key = precision.strip().lower()
    if key not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is unknown; use one of: {', '.join(PRECISIONS)}")
    if key != "auto":
        if key.startswith("bf16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            gpu = torch.cuda.get_device_name(device)
            raise UsageError(f"--precision {key}: {gpu} has no bf16; use --precision fp16 or fp32")
        return key
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16-checked"  # bf16 speed, fp32 decisions (see the module doc)
    return "fp32"  # other CPUs and MPS: exact decisions


_M = TypeVar("_M", bound=nn.Module)


def low_precision_copy(model: _M, dtype: torch.dtype) -> _M:
    """A copy of ``model`` whose Linear and Conv2d weights and biases are already ``dtype``.

    Run it under ``torch.autocast(dtype)``: autocast would round exactly these parameters to ``dtype``
    (round-to-nearest) in every forward pass; casting them once gives the same numbers without the
    per-batch cast. Norms and the other parameters stay float32, as autocast keeps them.
    """
    fast = copy.deepcopy(model)
    for module in fast.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.to(dtype)
    return fast


@dataclass
class RecheckStats:
    """What bf16-checked re-decided in fp32 so far (cumulative over a runner's life)."""

    images: int = 0  # images scored
    rechecked_images: int = 0  # images that had at least one borderline (image, tag) pair
    rechecked_pairs: int = 0  # borderline (image, tag) pairs re-decided in fp32
    direct_images: int = 0  # images run straight in fp32 (most images were borderline; see CostModel)
    seconds: float = 0.0  # wall time spent in fp32 (re-checks and direct images)
    max_error: float = 0.0  # largest |bf16 - fp32| logit difference seen (calibration and re-checks)
    calibration_error: float | None = None  # max |bf16 - fp32| logit over all tags of the calibration image
    margin: float = RECHECK_MARGIN  # the band half-width in logits in use now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CostModel:
    """When to skip bf16 and run a batch straight in fp32 (bf16-checked only).

    bf16 + re-check costs ``bf16 pass + r * (fp32 backbone + a few tags)`` per image, where r is the
    share of images with a borderline tag; straight fp32 costs ``fp32 backbone + all tags``. With a
    bf16 pass about half an fp32 one (AMX CPUs), the re-check wins up to r ~ 0.9, so batches go
    straight to fp32 only when the moving average of r is at least ``switch``; every ``probe``-th
    batch still takes the bf16 path to keep measuring r.
    """

    def __init__(self, switch: float = 0.9, probe: int = 8, decay: float = 0.7) -> None:
        self.switch, self.probe, self.decay = switch, probe, decay
        self.rate: float | None = None  # moving average of the share of images with a borderline tag
        self.batches = 0

    def checked(self, images: int, rechecked: int) -> None:
        if images <= 0:
            return
        r = rechecked / images
        self.rate = r if self.rate is None else self.decay * self.rate + (1 - self.decay) * r

    def prefer_fp32(self) -> bool:
        self.batches += 1
        if self.rate is None or self.batches % self.probe == 0:
            return False  # nothing measured yet, or a probe batch
        return self.rate >= self.switch


class ExactModel(Protocol):
    """The float32 network re-checks run (``RamPlus`` or anything with these two methods)."""

    def encode_image(self, images: Tensor) -> Tensor: ...  # (b, 3, S, S) -> (b, 1+N, E)
    def tag_logits(self, image_embeds: Tensor, label_embed: Tensor) -> Tensor: ...  # -> (b, T)


class PrecisionPolicy:
    """One ``--precision`` on one device: compute dtype, the low-precision copy, bf16-checked's re-check.

    Args:
        precision: a name of :data:`PRECISIONS` ("auto" resolves for ``device``).
        device: where the model runs.
        margin: bf16-checked's initial band half-width around each threshold, in logits.

    Under bf16-checked, :meth:`bind` gives it the float32 network and (T, D, E) float32 description
    embeddings; :meth:`recheck` then replaces fast logits near a threshold by fp32 ones, and
    :meth:`prefer_fp32` / :meth:`exact_logits` run whole batches in fp32 when that is cheaper.
    """

    def __init__(self, precision: str, device: torch.device, *, margin: float = RECHECK_MARGIN) -> None:
        if not margin >= 0:
            raise UsageError(f"re-check margin must be >= 0 logits; got {margin}")
        self.device = device
        self.name = resolve_precision(precision, device)
        self.dtype = DTYPES[self.name]
        self.checked = self.name == "bf16-checked"
        self.stats = RecheckStats(margin=float(margin))
        self._cost = CostModel()
        self._exact: ExactModel | None = None
        self._label_embed: Tensor | None = None  # (T, D, E) float32 on the device

    @property
    def autocast(self) -> bool:
        return self.name != "fp32"

    @property
    def margin(self) -> float:
        """bf16-checked's current band half-width around each threshold, in logits."""
        return self.stats.margin

    def describe(self) -> str:
        if not self.autocast:
            return "fp32"
        if self.checked:
            return f"bf16 autocast + fp32 re-check within {self.margin:g} logit of a threshold"
        return f"{self.name} autocast"

    def autocast_context(self) -> Any:
        """The autocast context of this precision (a no-op context for fp32)."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def fast_model(self, model: _M) -> _M:
        """The network the fast pass runs: ``model`` itself (fp32) or a copy with weights cast once."""
        return low_precision_copy(model, self.dtype) if self.autocast else model

    def bind(self, model: ExactModel, label_embed: Tensor) -> None:
        """The float32 ``model`` and (T, D, E) float32 ``label_embed`` (on the device) re-checks use."""
        if self.checked:
            self._exact, self._label_embed = model, label_embed

    # -- bf16-checked ---------------------------------------------------------------------------

    def prefer_fp32(self) -> bool:
        """Whether this batch should skip bf16 and run straight in fp32 (counts the batch)."""
        return self.checked and self._cost.prefer_fp32()

    def _fp32_logits(self, x: Tensor) -> Tensor:
        """(b, 3, S, S) -> (b, T) logits of every tag, wholly in fp32."""
        assert self._exact is not None and self._label_embed is not None, "bind() the fp32 model first"
        # No projected embeddings: mix the descriptions in E space, then project (b*T rows, not T*D).
        return self._exact.tag_logits(self._exact.encode_image(x), self._label_embed)

    @torch.inference_mode()
    def exact_logits(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) float32 -> (B, T) fp32 logits, the whole batch straight in fp32."""
        t0 = time.perf_counter()
        logits = self._fp32_logits(x)
        self.stats.direct_images += x.shape[0]
        self.stats.seconds += time.perf_counter() - t0
        return logits

    @torch.inference_mode()
    def recheck(self, x: Tensor, logits: Tensor, thresholds: Tensor) -> Tensor:
        """Replace the fast logits of borderline (image, tag) pairs by fp32 ones (in place; returned).

        x (B, 3, S, S) float32 on the device; logits (B, T) float32 from the fast pass; thresholds (T,)
        score thresholds in [0, 1].
        """
        if thresholds.shape != (logits.shape[1],):
            raise UsageError(
                f"thresholds must have shape ({logits.shape[1]},); got {tuple(thresholds.shape)}"
            )
        t0 = time.perf_counter()
        # The decision is sigmoid(logit) > threshold, i.e. logit > logit(threshold): compare in logits.
        cut = torch.logit(thresholds.to(logits.device, torch.float64).clamp(1e-12, 1 - 1e-12)).float()  # (T,)
        extra_images = extra_pairs = 0  # the calibration image, when it was a borderline one
        calibrated = self.stats.calibration_error is None
        if calibrated:
            near, extra_images, extra_pairs = self._calibrate(x, logits, cut)
        else:
            near = (logits - cut).abs() <= self.margin  # (B, T)
        rows = self._recheck_rows(x, logits, near)
        st = self.stats
        st.rechecked_images += int(rows.numel()) + extra_images
        st.rechecked_pairs += int(near.sum()) + extra_pairs
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        st.seconds += time.perf_counter() - t0
        # the borderline rate, not counting a calibration image that was not borderline
        counted = x.shape[0] - int(calibrated and not extra_images)
        self._cost.checked(counted, int(rows.numel()) + extra_images)
        return logits

    def _calibrate(self, x: Tensor, logits: Tensor, cut: Tensor) -> tuple[Tensor, int, int]:
        """The run's first batch: ALL tags of one image in fp32 (one that needs a re-check anyway if
        there is one) give this model's bf16 error, and the band becomes >= 3x that before anything is
        decided (trained weights may round differently from random ones).

        Returns the (B, T) borderline mask under the calibrated band (the calibration image excluded:
        it is exact already) and that image's (image, pair) counts when it was borderline.
        """
        near = (logits - cut).abs() <= self.margin  # (B, T)
        borderline = near.any(dim=1).nonzero().flatten()
        row = int(borderline[0]) if borderline.numel() else 0
        extra_images, extra_pairs = int(borderline.numel() > 0), int(near[row].sum())
        exact = self._fp32_logits(x[row : row + 1])  # (1, T)
        self.stats.calibration_error = float((exact[0] - logits[row]).abs().max())
        self._widen(self.stats.calibration_error)
        logits[row] = exact[0]
        near = (logits - cut).abs() <= self.margin  # with the calibrated band
        near[row] = False
        return near, extra_images, extra_pairs

    def _recheck_rows(self, x: Tensor, logits: Tensor, near: Tensor) -> Tensor:
        """fp32 logits for the ``near`` (B, T) pairs, written into ``logits``; returns the rows done."""
        rows = near.any(dim=1).nonzero().flatten()  # (b,) images with a borderline pair
        if not rows.numel():
            return rows
        assert self._exact is not None and self._label_embed is not None, "bind() the fp32 model first"
        embeds = self._exact.encode_image(x[rows])  # (b, 1+N, E), float32
        error = 0.0
        for i, row in enumerate(rows.tolist()):  # each image decodes only its own borderline tags
            cols = near[row].nonzero().flatten()  # (t,)
            # mix in E space, then project the t queries (t rows, not t*D)
            exact = self._exact.tag_logits(embeds[i : i + 1], self._label_embed[cols])  # (1, t)
            error = max(error, float((exact[0] - logits[row, cols]).abs().max()))
            logits[row, cols] = exact[0]
        self._widen(error)
        return rows

    def _widen(self, error: float) -> None:
        """Keep the re-check band at >= 3x the largest bf16 - fp32 logit difference seen."""
        st = self.stats
        st.max_error = max(st.max_error, error)
        if 3 * error > st.margin:
            log.info(
                "bf16 and fp32 logits differed by %.3f: re-check margin %.3f -> %.3f logit",
                error,
                st.margin,
                3 * error,
            )
            st.margin = 3 * error
