"""Run a RAM++ model fast on one device: device choice, precision, prepared vocabulary, batching.

``Runner`` owns the model on its device in eval mode and the PREPARED vocabulary: the description
embeddings ``label_embed`` (T, D, E) and their projection through ``wordvec_proj`` (T, D, H), both
computed once per run (not per batch) and stored in the compute dtype, so a batch costs only
backbone + re-weighting + decoder.

Precision policy (``precision="auto"``), chosen by measurement (numbers in benchmarks/README.md):

- CUDA: bf16 autocast (fp16 on GPUs without bf16), the standard for inference on tensor cores;
- CPU: fp32. bf16 autocast is about 1.5-3x faster on CPUs with AMX / AVX512-BF16, but with a random
  full Swin-L on the 23 shared photos it changed 67 of 105,455 tag decisions at the official
  thresholds (max |score difference| 2.5e-3), so it is opt-in: ``--precision bf16``;
- MPS: fp32 (not measured here; ask for ``fp16`` explicitly to try it).

``precision="fp32"`` is exact: the same arithmetic as ``RamPlus.forward`` (parity with the official code).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import UsageError
from .model.config import RamPlusConfig
from .model.ram_plus import RamPlus

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        if key == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            gpu = torch.cuda.get_device_name(device)
            raise UsageError(f"--precision bf16: {gpu} has no bf16; use --precision fp16 or fp32")
        return key
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # CPU and MPS: exact decisions (see the module doc)


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
        model: the network (moved to ``device`` and put in eval mode here).
        label_embed: (T, D, E) float description embeddings of the vocabulary to score, in output
            order (built-in ``model.builtin_label_embed()``, open-set ones, or both concatenated).
        device: "auto" | "cpu" | "cuda[:N]" | "mps" | a torch.device.
        precision: "auto" (see the module doc) | "fp32" (exact) | "bf16" | "fp16" (autocast).
        channels_last: NHWC input layout for the patch-embedding conv; None = on for CUDA.
        compile: wrap the forward pass in ``torch.compile`` (static shapes: the last, smaller batch is
            padded to the first batch's size so it does not recompile). First batches are slow.
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
    ) -> None:
        if label_embed.ndim != 3 or label_embed.shape[-1] != model.config.embed_dim:
            raise UsageError(
                f"label_embed has shape {tuple(label_embed.shape)}; expected (tags, descriptions, "
                f"{model.config.embed_dim})"
            )
        self.device = select_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = _DTYPES[self.precision]
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.compiled = compile
        self.num_tags = int(label_embed.shape[0])
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv once

        self.model = model.to(self.device).eval()
        # Fused window attention (SDPA) in Swin too, on every device: it agrees with the explicit path to
        # float rounding (~1e-6 in fp32) and is faster even on CPUs (Swin-L, 2 cores: 0.86 vs 1.31 s/img).
        self.model.set_fused_attention(True)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

        # The prepared vocabulary: moved, projected once, stored in the compute dtype (casting 10^8
        # elements per batch under autocast would cost more than the re-weighting itself).
        with torch.inference_mode():
            embed = label_embed.detach().to(self.device, torch.float32)  # (T, D, E)
            projected = self.model.project_labels(embed)  # (T, D, H), fp32 arithmetic
            self.label_embed = embed.to(self.dtype).contiguous()  # (T, D, E)
            self.projected = projected.to(self.dtype).contiguous()  # (T, D, H)

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

    def describe(self) -> str:
        """One line, e.g. ``cuda:0 (NVIDIA H200), bf16 autocast, channels_last``."""
        if self.device.type == "cuda":
            where = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            fast = ", AMX/AVX512-BF16" if cpu_has_fast_bf16() else ""
            where = f"cpu ({torch.get_num_threads()} threads{fast})"
        else:
            where = str(self.device)
        parts = [where, "fp32" if not self.autocast else f"{self.precision} autocast"]
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
        image_embeds = self.model.encode_image(x)  # (B, 1+N, E)
        return self.model.tag_logits(image_embeds, self.label_embed, projected=self.projected)  # (B, T)

    def logits(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float32 normalised images (CPU, pinned or not, or already on the device)
        -> (B, T) float32 logits on the CPU."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise UsageError(f"images must be (B, 3, H, W); got {tuple(images.shape)}")
        B = images.shape[0]
        x = images.to(self.device, dtype=torch.float32, non_blocking=True)  # async from pinned memory
        if self.compiled:
            x = self._pad_to_static(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast_context():
            out = self._compiled_forward(x)  # (B', T)
        return out[:B].float().cpu()

    def scores(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float32 normalised images -> (B, T) float32 sigmoid scores in [0, 1] on the CPU."""
        return torch.sigmoid(self.logits(images))

    def _pad_to_static(self, x: Tensor) -> Tensor:
        """Pad a smaller batch with zeros to the first batch's size (avoids a recompile)."""
        if self._static_batch is None:
            self._static_batch = x.shape[0]
        missing = self._static_batch - x.shape[0]
        if missing > 0:
            x = torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
        return x
