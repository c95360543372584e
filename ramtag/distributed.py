"""Multi-process tagging with ``torchrun``: one process per GPU, each tags its own shard of the files.

    torchrun --nproc-per-node 8 -m ramtag tag /photos --write json --json tags.jsonl

Every rank discovers the same file list, keeps ``shard(files, rank, world)``, and writes its own
outputs: sidecars go straight to their images (no coordination needed); JSON Lines go to
``<out>.rank<R>`` and :func:`gather_jsonl` merges them into ``<out>`` on rank 0 after a barrier.
With ``WORLD_SIZE`` unset or 1 everything here is a no-op, so single-process runs need nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

import torch

from .errors import UsageError
from .fsutil import AtomicFile

log = logging.getLogger(__name__)
P = TypeVar("P")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"environment variable {name}={raw!r} is not an integer; unset it or let torchrun set it"
        raise UsageError(msg) from None


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) without it."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        msg = f"RANK={rank} / WORLD_SIZE={world} / LOCAL_RANK={local} are inconsistent; launch with torchrun"
        raise UsageError(msg)
    return rank, world, local


def _order_key(path: Any) -> tuple[str, ...]:
    """Sort key that reproduces ramtag.discover's order: depth-first, entries sorted by name."""
    return PurePath(str(path)).parts


def shard(paths: Sequence[P], rank: int, world: int) -> list[P]:
    """The files rank ``rank`` of ``world`` tags: round-robin over the paths in sorted order.

    Deterministic (every rank computes the same split from the same list, whatever order it was
    given in), disjoint, complete, and balanced to within one file.
    """
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"rank {rank} is outside 0..{world - 1}")
    ordered = sorted(paths, key=_order_key)
    return ordered[rank::world]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_if_needed(device: torch.device) -> torch.device:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; returns the device this rank uses.

    CUDA: backend nccl, device ``cuda:LOCAL_RANK`` (set as the current device). Otherwise gloo on
    ``device`` unchanged. Single process: returns ``device`` and initialises nothing.
    """
    rank, world, local = dist_info()
    if world == 1:
        return device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise UsageError(f"LOCAL_RANK={local} but only {n} GPUs are visible; use --nproc-per-node <= {n}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("rank %d/%d joined the process group (%s, %s)", rank, world, backend, device)
    return device


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        torch.distributed.barrier()


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank_path(out: str | Path, rank: int) -> Path:
    """Where rank ``rank`` writes its JSON Lines: ``<out>.rank<R>`` beside ``out``."""
    out = Path(out)
    return out.with_name(f"{out.name}.rank{rank}")


def merge_jsonl(
    parts: Sequence[str | Path], out: str | Path, *, append: bool = True, remove: bool = True
) -> int:
    """Merge JSON Lines files into ``out`` in input order (discover order of their ``"path"``).

    Records without a path keep their relative order after the others. ``append``: keep what ``out``
    already holds (earlier incremental runs) and add the merged records after it. The file is
    replaced atomically (temp file + ``os.replace``); ``remove`` deletes the parts afterwards.
    Returns the number of records merged.
    """
    out = Path(out)
    records: list[tuple[int, tuple[str, ...], int, str]] = []  # (has no path, order key, seq, line)
    for part in parts:
        p = Path(part)
        if not p.exists():
            continue  # a rank with nothing to write may never have created its part
        with open(p, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                path = json.loads(line).get("path")
                key = _order_key(path) if path is not None else ()
                records.append((path is None, key, len(records), line))
    records.sort()
    with AtomicFile(out) as f:
        if append and out.exists():
            existing = out.read_text(encoding="utf-8")
            f.write(
                (existing if not existing or existing.endswith("\n") else existing + "\n").encode("utf-8")
            )
        for *_, line in records:
            f.write((line + "\n").encode("utf-8"))
    if remove:
        for part in parts:
            Path(part).unlink(missing_ok=True)
    return len(records)


def gather_jsonl(out: str | Path, world: int | None = None, *, append: bool = True) -> int:
    """After every rank wrote ``rank_path(out, R)``: barrier, then rank 0 merges them into ``out``.

    Returns the number of records merged on rank 0 (0 on other ranks). A second barrier keeps the
    other ranks from exiting before the file is complete.
    """
    rank, env_world, _ = dist_info()
    world = env_world if world is None else world
    barrier()
    merged = 0
    if rank == 0:
        merged = merge_jsonl([rank_path(out, r) for r in range(world)], out, append=append)
        log.info("merged %d JSON Lines records from %d ranks into %s", merged, world, out)
    barrier()
    return merged
