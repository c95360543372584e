"""Run a RAM++ model fast on one device: device choice, precision, prepared vocabulary, batching.

``Runner`` owns the model on its device in eval mode and the PREPARED vocabulary: the description
embeddings ``label_embed`` (T, D, E) and their projection through ``wordvec_proj`` (T, D, H), both
computed once per run (not per batch) and stored in the compute dtype, so a batch costs only
backbone + re-weighting + decoder.

Precisions (``--precision``):

- ``fp32``: exact; the same arithmetic as ``RamPlus.forward`` (parity with the official code).
- ``bf16`` / ``fp16``: autocast with the Linear/Conv weights cast ONCE (a low-precision copy of the
  model), so batches do not re-cast 300 M weights. Fast, but a decision can flip where a score lies
  within the rounding error of its threshold (random Swin-L, 23 shared photos, official thresholds:
  78 of 105,455 decisions; bf16 logits differ from fp32 by up to ~0.016).
- ``bf16-checked``: bf16 for every (image, tag), then every pair whose bf16 logit lies within
  ``margin`` (default :data:`RECHECK_MARGIN` logits, ~3x the largest bf16 error we measured) of its
  threshold is recomputed in fp32 (fp32 backbone for those images, fp32 decoder for those tags only;
  the decoder has no self-attention, so tags are independent). Decisions are the fp32 decisions as
  long as no bf16 error exceeds the margin: one image of the run's first batch (a borderline one if
  there is one) is computed wholly in fp32 to calibrate it (margin >= 3x that image's largest
  error), and it widens itself whenever a re-check sees a larger one. Scores far from every
  threshold keep their bf16 value (~3 significant digits). Needs the thresholds: :meth:`Runner.scores`
  takes them. When nearly every image has a borderline tag, batches go straight to fp32
  (:class:`_CostModel`).
- ``auto``: CUDA -> bf16 (fp16 without bf16), the standard for tensor cores; CPUs with AMX or
  AVX512-BF16 -> bf16-checked (about 2x fp32's speed there, the same tags: benchmarks/README.md);
  other CPUs and MPS -> fp32.

On CPUs the runner also tunes glibc's allocator once (:func:`tune_cpu_allocator`): the model's
large temporaries (100+ MB) would otherwise be fresh ``mmap`` pages, page-faulted in on every batch.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .errors import UsageError
from .model.config import RamPlusConfig
from .model.ram_plus import RamPlus

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "bf16-checked", "fp16")
_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bf16-checked": torch.bfloat16,
    "fp16": torch.float16,
}

# Half-width, in logits, of the band around each threshold where bf16-checked re-decides in fp32.
# Measured bf16 - fp32 logit differences (random Swin-L, shared photos): max 0.016, mean 0.002.
RECHECK_MARGIN = 0.05


# ---------------------------------------------------------------------------------------- devices


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` -> a torch.device.

    Raises :class:`UsageError` naming the fix when the asked device is not available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not _mps_available():
            raise UsageError("--device mps: Apple's Metal (MPS) backend is not available; use --device cpu")
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {name}: no CUDA GPU is visible to torch {torch.__version__}; "
                "install a CUDA build of torch or use --device cpu"
            )
        try:
            device = torch.device(key)
        except RuntimeError:
            raise UsageError(f"--device {name}: not a device name; use cuda or cuda:N") from None
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0")
        return torch.device("cuda", index)
    raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision ("fp32" / "bf16" / "fp16") that ``precision`` means on ``device``."""
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


# ------------------------------------------------------------------------------------- allocator

_ALLOCATOR_TUNED: bool | None = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameter numbers (malloc.h)


def tune_cpu_allocator() -> bool:
    """Let glibc reuse freed large blocks instead of unmapping them; True when applied (once per process).

    PyTorch's CPU tensors come from ``malloc``; glibc serves blocks over its mmap threshold (128 KiB,
    growing to at most 32 MiB) with fresh ``mmap`` pages and returns them to the OS on free, so each
    100+ MB temporary of a Swin-L batch is page-faulted in again, batch after batch. Raising the mmap
    threshold to 1 GiB and the trim threshold to 4 GiB keeps those pages in the heap: an elementwise
    bf16 op on the decoder's (B*T, 3072) activations drops from 50 to 16 ms, a Swin-L batch from 0.54
    to 0.45 s/img (the effect jemalloc/tcmalloc give through LD_PRELOAD). The cost: the process keeps
    its peak heap instead of shrinking after it. Linux/glibc only; ``RAMTAG_NO_MALLOC_TUNING=1`` turns it off.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if os.environ.get("RAMTAG_NO_MALLOC_TUNING", "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (AttributeError: not glibc, e.g. musl)
    except (OSError, AttributeError):
        return False
    # glibc < 2.35 refuses mmap thresholds over 32 MiB: fall back to that.
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    ok = mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, 4 << 30) == 1
    _ALLOCATOR_TUNED = ok
    log.debug("glibc allocator tuning %s", "applied" if ok else "refused")
    return ok


# ------------------------------------------------------------------------------------- low precision


_M = TypeVar("_M", bound=nn.Module)


def low_precision_copy(model: _M, dtype: torch.dtype) -> _M:
    """A copy of ``model`` whose Linear and Conv2d weights and biases are already ``dtype``.

    Run it under ``torch.autocast(dtype)``: autocast would round exactly these parameters to ``dtype``
    (round-to-nearest) in every forward pass; casting them once gives the same numbers without the
    per-batch cast (for Swin-L 300 M weights, ~0.05 s/img on a CPU). Norms and the other parameters
    stay float32, as autocast keeps them.
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
    direct_images: int = 0  # images run straight in fp32 (most images were borderline; see _CostModel)
    seconds: float = 0.0  # wall time spent in fp32 (re-checks and direct images)
    max_error: float = 0.0  # largest |bf16 - fp32| logit difference seen (calibration and re-checks)
    calibration_error: float | None = None  # max |bf16 - fp32| logit over all tags of the calibration image
    margin: float = RECHECK_MARGIN  # the band half-width in logits in use now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CostModel:
    """When to skip bf16 and run a batch straight in fp32 (bf16-checked only).

    bf16 + re-check costs ``bf16 pass + r * (fp32 backbone + a few tags)`` per image, where r is the
    share of images with a borderline tag; straight fp32 costs ``fp32 backbone + all tags``. On this
    project's CPU (Swin-L: bf16 pass 0.43 s, fp32 backbone 0.85 s, fp32 decoder 0.41 s per image) the
    re-check wins up to r ~ 0.9, so batches go straight to fp32 only when the moving average of r is
    at least ``switch``; every ``probe``-th batch still takes the bf16 path to keep measuring r.
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


# ----------------------------------------------------------------------------------- batch sizes


def suggest_batch_size(
    device: torch.device | str, config: RamPlusConfig, *, num_tags: int | None = None, precision: str = "auto"
) -> int:
    """A batch size that fits ``device``'s free memory with room to spare (a power of two).

    Per image, inference holds roughly the Swin stage-1 MLP activations (tokens x 4C) and the
    decoder's feed-forward activations (T x intermediate); we budget 3x their sum in the compute
    dtype and use at most 60 % of the free memory. On CPUs larger batches only thrash the caches
    (Swin-L fp32, 2 cores: 0.86 s/img at batch 4, 1.06 s/img at batch 8), so they are capped at 4;
    GPUs at 512.
    """
    device = torch.device(device) if isinstance(device, str) else device
    nbytes = 2 if resolve_precision(precision, device) in ("bf16", "fp16") else 4
    tags = num_tags if num_tags is not None else config.num_tags
    tokens0 = (config.swin.img_size // config.swin.patch_size) ** 2
    per_image = 3 * nbytes * (
        tokens0 * config.swin.embed_dim * int(4 * config.swin.mlp_ratio)
        + tags * (config.decoder.intermediate_size + 4 * config.decoder.hidden_size)
    )
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cap = 512
    else:
        free = _available_ram()
        cap = 4 if device.type == "cpu" else 64
    fit = max(1, int(0.6 * free) // max(per_image, 1))
    size = 1
    while size * 2 <= min(fit, cap):
        size *= 2
    return size


def _available_ram() -> int:
    """Available system memory in bytes (Linux /proc/meminfo; else physical memory; else 4 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 4 << 30


# ----------------------------------------------------------------------------------------- runner


class Runner:
    """A :class:`RamPlus` on its device with a prepared vocabulary; ``scores(images)`` per batch.

    Args:
        model: the network in float32 (moved to ``device`` and put in eval mode here; low precisions
            run a cast copy of it, the float32 model stays for fp32 and for re-checks).
        label_embed: (T, D, E) float description embeddings of the vocabulary to score, in output
            order (built-in ``model.builtin_label_embed()``, open-set ones, or both concatenated).
        device: "auto" | "cpu" | "cuda[:N]" | "mps" | a torch.device.
        precision: "auto" | "fp32" (exact) | "bf16" | "bf16-checked" | "fp16" (see the module doc).
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
        if not margin >= 0:
            raise UsageError(f"re-check margin must be >= 0 logits; got {margin}")
        self.device = select_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = _DTYPES[self.precision]
        self.checked = self.precision == "bf16-checked"
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.compiled = compile
        self.num_tags = int(label_embed.shape[0])
        self.recheck_stats = RecheckStats(margin=float(margin))
        self._cost = _CostModel()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv once
        if self.device.type == "cpu":
            tune_cpu_allocator()

        self.model = model.to(self.device).eval()  # float32: the fp32 path and the re-checks
        # Fused window attention (SDPA) in Swin too, on every device: it agrees with the explicit path to
        # float rounding (~1e-6 in fp32) and is faster even on CPUs (Swin-L, 2 cores: 0.86 vs 1.31 s/img).
        self.model.set_fused_attention(True)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The network the fast pass runs: the float32 model itself, or a copy with weights cast once.
        self.fast_model = low_precision_copy(self.model, self.dtype) if self.autocast else self.model

        # The prepared vocabulary: moved, projected once, stored in the compute dtype (casting 10^8
        # elements per batch under autocast would cost more than the re-weighting itself).
        with torch.inference_mode():
            embed = label_embed.detach().to(self.device, torch.float32)  # (T, D, E)
            projected = self.model.project_labels(embed)  # (T, D, H), fp32 arithmetic
            self.label_embed = embed.to(self.dtype).contiguous()  # (T, D, E)
            self.projected = projected.to(self.dtype).contiguous()  # (T, D, H)
            # bf16-checked re-decides borderline tags from the float32 embeddings (mixed, then projected).
            self.label_embed_fp32: Tensor | None = embed.contiguous() if self.checked else None

        forward: Callable[[Tensor], Tensor] = self._forward
        if compile:
            forward = torch.compile(self._forward, dynamic=False)
        self._compiled_forward = forward
        self._static_batch: int | None = None
        log.info("runner: %s", self.describe())

    # -- properties -----------------------------------------------------------------------------

    @property
    def pin_memory(self) -> bool:
        """Whether batch loaders should pin host memory (only useful for CUDA's async copies)."""
        return self.device.type == "cuda"

    @property
    def autocast(self) -> bool:
        return self.precision != "fp32"

    @property
    def margin(self) -> float:
        """bf16-checked's current band half-width around each threshold, in logits."""
        return self.recheck_stats.margin

    def describe(self) -> str:
        """One line, e.g. ``cuda:0 (NVIDIA H200), bf16 autocast, channels_last``."""
        if self.device.type == "cuda":
            where = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            fast = ", AMX/AVX512-BF16" if cpu_has_fast_bf16() else ""
            where = f"cpu ({torch.get_num_threads()} threads{fast})"
        else:
            where = str(self.device)
        if not self.autocast:
            mode = "fp32"
        elif self.checked:
            mode = f"bf16 autocast + fp32 re-check within {self.margin:g} logit of a threshold"
        else:
            mode = f"{self.precision} autocast"
        parts = [where, mode]
        if self.channels_last:
            parts.append("channels_last")
        if self.compiled:
            parts.append("torch.compile")
        return ", ".join(parts)

    def suggest_batch_size(self) -> int:
        """:func:`suggest_batch_size` for this runner's device, precision and vocabulary size."""
        config = self.model.config
        return suggest_batch_size(self.device, config, num_tags=self.num_tags, precision=self.precision)

    # -- compute --------------------------------------------------------------------------------

    def autocast_context(self) -> Any:
        """The autocast context of this runner's precision (a no-op context for fp32)."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) on device -> (B, T) logits, in the autocast dtype (fp32 without autocast)."""
        image_embeds = self.fast_model.encode_image(x)  # (B, 1+N, E)
        return self.fast_model.tag_logits(image_embeds, self.label_embed, projected=self.projected)  # (B, T)

    def logits(self, images: Tensor, thresholds: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) float32 normalised images (CPU, pinned or not, or already on the device)
        -> (B, T) float32 logits on the CPU.

        ``thresholds`` (T,) in [0, 1], the score thresholds the caller decides with: bf16-checked
        re-computes in fp32 every (image, tag) whose logit is near its threshold. Ignored otherwise.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise UsageError(f"images must be (B, 3, H, W); got {tuple(images.shape)}")
        B = images.shape[0]
        x = images.to(self.device, dtype=torch.float32, non_blocking=True)  # async from pinned memory
        check = self.checked and thresholds is not None
        self.recheck_stats.images += B
        if check and self._cost.prefer_fp32():
            return self._exact_logits(x).cpu()
        xin = self._pad_to_static(x) if self.compiled else x
        if self.channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast_context():
            out = self._compiled_forward(xin)  # (B', T)
        logits = out[:B].float()
        if check:
            assert thresholds is not None
            logits = self._recheck(x, logits, thresholds)
        return logits.cpu()

    @torch.inference_mode()
    def _exact_logits(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) float32 -> (B, T) fp32 logits, the whole batch straight in fp32 (bf16-checked's
        fallback when nearly every image needs a re-check anyway)."""
        t0 = time.perf_counter()
        logits = self._fp32_logits(x)  # (B, T)
        self.recheck_stats.direct_images += x.shape[0]
        self.recheck_stats.seconds += time.perf_counter() - t0
        return logits

    def _fp32_logits(self, x: Tensor) -> Tensor:
        """(b, 3, S, S) -> (b, T) logits of every tag, wholly in fp32 (bf16-checked's exact path)."""
        assert self.label_embed_fp32 is not None
        # projected=None: mix the descriptions in E space, then project (b*T rows instead of T*D).
        return self.model.tag_logits(self.model.encode_image(x), self.label_embed_fp32)

    def scores(self, images: Tensor, thresholds: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) float32 normalised images -> (B, T) float32 sigmoid scores in [0, 1] on the CPU.

        Pass the (T,) ``thresholds`` you will decide with, so bf16-checked can re-decide borderline tags.
        """
        return torch.sigmoid(self.logits(images, thresholds))

    @torch.inference_mode()
    def _recheck(self, x: Tensor, logits: Tensor, thresholds: Tensor) -> Tensor:
        """Replace the fast logits of borderline (image, tag) pairs by fp32 ones.

        x (B, 3, S, S) float32 on the device; logits (B, T) float32 from the fast pass; thresholds (T,).
        """
        if thresholds.shape != (logits.shape[1],):
            raise UsageError(
                f"thresholds must have shape ({logits.shape[1]},); got {tuple(thresholds.shape)}"
            )
        assert self.label_embed_fp32 is not None
        t0 = time.perf_counter()
        st = self.recheck_stats
        # The decision is sigmoid(logit) > threshold, i.e. logit > logit(threshold): compare in logits.
        cut = torch.logit(thresholds.to(self.device, torch.float64).clamp(1e-12, 1 - 1e-12)).float()  # (T,)
        near = (logits - cut).abs() <= self.margin  # (B, T)
        calibrated: int | None = None
        extra_images = extra_pairs = 0  # the calibration image, when it was a borderline one
        if st.calibration_error is None:
            # Calibrate on the run's first batch: ALL tags of one image in fp32 (one that needs a re-check
            # anyway if there is one) give this model's bf16 error, and the band becomes >= 3x that
            # before anything is decided (trained weights may round differently from random ones).
            borderline = near.any(dim=1).nonzero().flatten()
            calibrated = int(borderline[0]) if borderline.numel() else 0
            extra_images, extra_pairs = int(borderline.numel() > 0), int(near[calibrated].sum())
            exact = self._fp32_logits(x[calibrated : calibrated + 1])  # (1, T)
            st.calibration_error = float((exact[0] - logits[calibrated]).abs().max())
            self._widen(st.calibration_error)
            logits[calibrated] = exact[0]
            near = (logits - cut).abs() <= self.margin  # with the calibrated band
            near[calibrated] = False  # exact already
        rows = near.any(dim=1).nonzero().flatten()  # (b,) images with a borderline pair
        if rows.numel():
            embeds = self.model.encode_image(x[rows])  # (b, 1+N, E), float32
            error = 0.0
            for i, row in enumerate(rows.tolist()):  # each image decodes only its own borderline tags
                cols = near[row].nonzero().flatten()  # (t,)
                # projected=None: mix in E space, then project the t queries (t rows, not t*D)
                exact = self.model.tag_logits(embeds[i : i + 1], self.label_embed_fp32[cols])  # (1, t)
                error = max(error, float((exact[0] - logits[row, cols]).abs().max()))
                logits[row, cols] = exact[0]
            self._widen(error)
        st.rechecked_images += int(rows.numel()) + extra_images
        st.rechecked_pairs += int(near.sum()) + extra_pairs
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        st.seconds += time.perf_counter() - t0
        # the borderline rate, not counting a calibration image that was not borderline
        counted = x.shape[0] - int(calibrated is not None and not extra_images)
        self._cost.checked(counted, int(rows.numel()) + extra_images)
        return logits

    def _widen(self, error: float) -> None:
        """Keep the re-check band at >= 3x the largest bf16 - fp32 logit difference seen."""
        st = self.recheck_stats
        st.max_error = max(st.max_error, error)
        if 3 * error > st.margin:
            log.info("bf16 and fp32 logits differed by %.3f: re-check margin %.3f -> %.3f logit",
                     error, st.margin, 3 * error)
            st.margin = 3 * error

    def _pad_to_static(self, x: Tensor) -> Tensor:
        """Pad a smaller batch with zeros to the first batch's size (avoids a recompile)."""
        if self._static_batch is None:
            self._static_batch = x.shape[0]
        missing = self._static_batch - x.shape[0]
        if missing > 0:
            x = torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
        return x
