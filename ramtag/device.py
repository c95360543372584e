"""Where the model runs: device choice, batch size for that device, and the CPU allocator tuning.

:func:`tune_cpu_allocator` changes the whole process, so nothing here calls it on its own: the CLI's
``tag`` command and the benchmark call it, library users may (``ramtag.tune_cpu_allocator()``).
Importing this module does not import torch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import torch

    from .model.config import RamPlusConfig

log = logging.getLogger(__name__)

__all__ = ["select_device", "suggest_batch_size", "tune_cpu_allocator"]


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` -> a torch.device.

    Raises :class:`UsageError` naming the fix when the asked device is not available.
    """
    import torch

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
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# ----------------------------------------------------------------------------------- batch sizes


def suggest_batch_size(
    device: torch.device | str, config: RamPlusConfig, *, num_tags: int | None = None, precision: str = "auto"
) -> int:
    """A batch size that fits ``device``'s free memory with room to spare (a power of two).

    Per image, inference holds roughly the Swin stage-1 MLP activations (tokens x 4C) and the
    decoder's feed-forward activations (T x intermediate); we budget 3x their sum in the compute
    dtype and use at most 60 % of the free memory. On CPUs larger batches only thrash the caches
    (benchmarks/README.md), so they are capped at 4; GPUs at 512.
    """
    import torch

    from .precision import resolve_precision

    device = torch.device(device) if isinstance(device, str) else device
    nbytes = 2 if resolve_precision(precision, device) in ("bf16", "fp16") else 4
    tags = num_tags if num_tags is not None else config.num_tags
    tokens0 = (config.swin.img_size // config.swin.patch_size) ** 2
    per_image = (
        3
        * nbytes
        * (
            tokens0 * config.swin.embed_dim * int(4 * config.swin.mlp_ratio)
            + tags * (config.decoder.intermediate_size + 4 * config.decoder.hidden_size)
        )
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


# ------------------------------------------------------------------------------------- allocator

_ALLOCATOR_TUNED: bool | None = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameter numbers (malloc.h)


def tune_cpu_allocator(device: torch.device | str | None = None) -> bool:
    """Let glibc reuse freed large blocks instead of unmapping them; True when applied (once per process).

    ``device``: the device the model runs on; anything but a CPU leaves the allocator alone (False).

    PyTorch's CPU tensors come from ``malloc``; glibc serves blocks over its mmap threshold (128 KiB,
    growing to at most 32 MiB) with fresh ``mmap`` pages and returns them to the OS on free, so each
    100+ MB temporary of a Swin-L batch is page-faulted in again, batch after batch. Raising the mmap
    threshold to 1 GiB and the trim threshold to 4 GiB keeps those pages in the heap (what
    jemalloc/tcmalloc give through LD_PRELOAD; the gain is in benchmarks/README.md). The cost: the
    process keeps its peak heap instead of shrinking after it, which is why only the CLI and the
    benchmark call this. Linux/glibc only; ``RAMTAG_NO_MALLOC_TUNING=1`` turns it off.
    """
    global _ALLOCATOR_TUNED
    if device is not None and str(device).split(":")[0] != "cpu":
        return False
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
