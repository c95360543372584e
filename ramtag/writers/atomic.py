"""Atomic file replacement for the writers; the implementation is :mod:`ramtag.fsutil` (shared with the
weights, training checkpoints and downloads)."""

from __future__ import annotations

from ramtag.fsutil import (
    TMP_SUFFIX,
    AtomicBatch,
    AtomicFile,
    PendingCommit,
    atomic_path,
    atomic_write_bytes,
    durable_replace,
    fsync_dir,
)

__all__ = [
    "TMP_SUFFIX",
    "AtomicBatch",
    "AtomicFile",
    "PendingCommit",
    "atomic_path",
    "atomic_write_bytes",
    "durable_replace",
    "fsync_dir",
]
