"""Per-rank catalog parts for torchrun: no two processes on two machines ever write one SQLite file.

SQLite's WAL and locking do not hold on network filesystems, so under torchrun each rank records
into its own part (an ordinary catalog file) on local storage, ``part_path(catalog, rank)``; at the
end rank 0 merges the parts into the catalog (:func:`merge_part`) and deletes them. Merging is
idempotent: an image or output already in the catalog with a newer time is kept, so merging the
same part twice (a run killed after the merge but before the delete) changes nothing, and a killed
run's parts, still on disk, are merged by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np

from ..paths import ramtag_home
from ..tags.vocab import Vocabulary
from .identity import Identity
from .store import Catalog

log = logging.getLogger(__name__)


def part_path(catalog: str | Path, rank: int, root: str | Path | None = None) -> Path:
    """Where rank ``rank`` records: ``<root or ramtag_home()>/catalog-parts/<hash>.rank<R>.sqlite``.

    The name depends only on the catalog and the rank, so a re-run after a kill finds its part.
    """
    key = hashlib.sha256(os.fsencode(os.path.abspath(catalog))).hexdigest()[:16]
    base = Path(root) if root is not None else ramtag_home()
    return base / "catalog-parts" / f"{key}.rank{rank}.sqlite"


def snapshot_part(part: str | Path) -> bytes:
    """The part as one self-contained SQLite file's bytes (WAL folded in), b"" when there is none.

    What a rank sends to rank 0 (its local storage is not rank 0's).
    """
    part = Path(part)
    if not part.exists():
        return b""
    tmp = part.with_name(f".{part.name}.snapshot")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(part)
    try:
        conn.execute("VACUUM INTO ?", (str(tmp),))
    finally:
        conn.close()
    try:
        return tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)


def merge_snapshots(catalog: str | Path, snapshots: list[bytes], scratch: str | Path) -> int:
    """Rank 0: merge the parts' bytes (one per rank, b"" for none) into ``catalog``; returns images merged."""
    merged = 0
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    with Catalog(catalog) as cat:
        for r, data in enumerate(snapshots):
            if not data:
                continue
            tmp = scratch / f".incoming.rank{r}.sqlite"
            remove_part(tmp)
            tmp.write_bytes(data)
            merged += merge_part(cat, tmp)  # deletes tmp
    return merged


def remove_part(part: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{part}{suffix}")


def merge_part(cat: Catalog, part: Path, *, remove: bool = True) -> int:
    """Merge one part file into ``cat`` (one transaction); returns the images taken from it."""
    if not part.exists():
        return 0
    src = Catalog(part)
    try:
        vocabs = {vid: src.vocabulary(vid) for vid in src.vocabulary_ids()}
        runs = src.execute("SELECT * FROM runs")
        images = src.execute(
            "SELECT i.id, i.path, i.size, i.mtime_ns, i.inode, i.device, i.digest, i.scorer, i.vocab, i.run,"
            " i.tagged_at, s.data FROM images i JOIN scores s ON s.image = i.id"
        )
        outputs = src.execute(
            "SELECT i.path, o.kind, o.target, o.tags, o.fingerprint, o.settings, o.run, o.written_at,"
            " o.size, o.mtime_ns FROM outputs o JOIN images i ON i.id = o.image"
        )
    finally:
        src.close()
    merged = _merge(cat, vocabs, runs, images, outputs, part.stem)
    if remove:
        remove_part(part)
    log.info("merged %d images from %s into %s", merged, part, cat.path)
    return merged


def _merge(
    cat: Catalog,
    vocabs: dict[str, Vocabulary],
    runs: list[tuple],
    images: list[tuple],
    outputs: list[tuple],
    label: str,
) -> int:
    for vocab in vocabs.values():
        cat.add_vocabulary(vocab)
    merged = 0
    conn = cat._conn
    with cat._lock, cat._tx():
        for r in runs:
            row = conn.execute("SELECT counts FROM runs WHERE id = ?", (r[0],)).fetchone()
            if row is None:
                conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", r)
            else:  # the same run on several ranks: each part's counts under "ranks" (idempotent)
                counts = json.loads(row[0])
                counts.setdefault("ranks", {})[label] = json.loads(r[6])
                conn.execute(
                    "UPDATE runs SET counts = ? WHERE id = ?", (json.dumps(counts, sort_keys=True), r[0])
                )
        for _id, key, size, mtime_ns, inode, device, digest, scorer, vid, run, when, data in images:
            have = conn.execute("SELECT tagged_at FROM images WHERE path = ?", (key,)).fetchone()
            if have is not None and have[0] >= when:
                continue  # the catalog's record is as new or newer (merged before, or re-tagged since)
            scores16 = np.frombuffer(data, dtype="<f2")
            cat._put_image(
                key, Identity(size, mtime_ns, inode, device, digest), scorer, vid, scores16, run, when
            )
            merged += 1
        for key, kind, target, tags, fp, settings, run, when, size, mtime_ns in outputs:
            row = conn.execute(
                "SELECT o.written_at FROM outputs o JOIN images i ON i.id = o.image"
                " WHERE i.path = ? AND o.kind = ? AND o.target = ?",
                (key, kind, target),
            ).fetchone()
            if row is not None and row[0] >= when:
                continue
            conn.execute(
                "INSERT OR REPLACE INTO outputs SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " FROM images WHERE path = ?",
                (kind, target, tags, fp, settings, run, when, size, mtime_ns, key),
            )
    return merged
