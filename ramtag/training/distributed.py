"""DistributedDataParallel plumbing for training under ``torchrun``.

    torchrun --nproc-per-node 8 -m ramtag train --data coco.json --init ram-plus-swin-l-14m --out ft/

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR / MASTER_PORT); :func:`setup` joins
the process group (nccl on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK``. Without those variables
everything here is a single-process no-op. Only rank 0 writes files (checkpoints, logs, the result).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..distributed import dist_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int  # global rank, 0..world_size-1
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (selects the GPU)
    device: torch.device  # this process's device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda:LOCAL_RANK, else mps, else cpu; "cuda" -> cuda:LOCAL_RANK; anything else as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one (idempotent) and return this process's context."""
    rank, world, local = dist_info()
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (%s, %s)", rank, world, backend, dev)
    return DistContext(rank, world, local, dev)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_tensor(ctx: DistContext, tensor: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """Rank 0's ``tensor`` (float32, ``shape``) on every rank."""
    if not ctx.distributed:
        assert tensor is not None
        return tensor
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    buf = (
        tensor.float().to(comm_device)
        if ctx.is_main and tensor is not None
        else torch.empty(shape, dtype=torch.float32, device=comm_device)
    )
    dist.broadcast(buf, src=0)
    return buf.cpu()


def all_reduce_mean(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over all ranks (same keys on every rank)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=comm_device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def all_reduce_sum_int(ctx: DistContext, value: int) -> int:
    if not ctx.distributed:
        return value
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.int64, device=comm_device)
    dist.all_reduce(t)
    return int(t.item())
