"""SQLite record of which files were tagged with which settings (incremental runs and resume).

One database for every library (``ramtag_home()/state.sqlite``), one row per (file, settings key):

- a file is *unchanged* when its size and ``st_mtime_ns`` equal the recorded ones;
- when only the mtime moved (``touch``, a copy that kept the bytes, a sync tool), a content digest
  (sha256 of the size + the first and last MiB) decides; a match refreshes the recorded mtime so the
  next run is back on the fast path;
- a different size, or a different digest, means the file is redone;
- the settings key (:func:`settings_key`) hashes everything that changes the output (weights,
  vocabulary, thresholds, top-k, language, write mode, preprocessing): new settings redo everything.

Resume semantics: the pipeline calls :meth:`StateDB.mark_done` only AFTER the sidecar / JSON record
was written. A run killed between tagging and writing therefore redoes those files next time (never
loses them); a file written twice is harmless because the writers merge idempotently.

The database uses WAL journaling, so several processes (e.g. torchrun ranks) can share it; a
:class:`StateDB` object is safe to use from several threads (one connection behind a lock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .paths import ramtag_home

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS done (
    path      TEXT    NOT NULL,  -- absolute, resolved file path
    settings  TEXT    NOT NULL,  -- settings_key(...) of the run that tagged it
    size      INTEGER NOT NULL,  -- st_size when it was tagged (bytes)
    mtime_ns  INTEGER NOT NULL,  -- st_mtime_ns when it was tagged
    digest    TEXT    NOT NULL,  -- content_digest(path) when it was tagged
    tagged_at REAL    NOT NULL,  -- unix time of mark_done
    PRIMARY KEY (path, settings)
) WITHOUT ROWID;
"""
_REFRESH = "UPDATE done SET mtime_ns = ? WHERE path = ? AND settings = ?"
_CHUNK = 500  # rows per "IN (...)" query; well under SQLite's host-parameter limit
_EDGE = 1 << 20  # bytes hashed at each end of a file by content_digest


def default_state_path() -> Path:
    """The shared state database: ``ramtag_home()/state.sqlite``."""
    return ramtag_home() / "state.sqlite"


def settings_key(**settings: Any) -> str:
    """A stable 32-hex-digit key of everything that changes a file's output.

    Values may be JSON types, tuples, paths, sets or dataclasses (e.g. ``Preprocessing``); key order
    does not matter. Example: ``settings_key(weights_sha=..., tags=vocab.names, thresholds=...,
    threshold=None, top_k=None, lang="en", write="xmp", preprocessing=pre)``.
    """

    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, (set, frozenset)):
            return sorted(value, key=repr)
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(f"settings_key cannot hash a {type(value).__name__}")

    text = json.dumps(settings, sort_keys=True, default=encode, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def content_digest(path: str | Path, size: int | None = None) -> str:
    """sha256 of (size, first MiB, last MiB) of a file: cheap, and catches any real photo edit.

    Small files (<= 2 MiB) are hashed whole. Used only to tell a ``touch`` from an edit when the
    size is unchanged but the mtime moved.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= 2 * _EDGE:
            h.update(f.read())
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()


def _key_path(path: str | Path) -> str:
    """The database spelling of a path: absolute and resolved (symlinks followed)."""
    return str(Path(path).expanduser().resolve())


class StateDB:
    """The record of tagged files. ``StateDB()`` opens (creates) the default database.

    >>> db = StateDB(); key = settings_key(weights="ram_plus_swin_l", lang="en")
    >>> todo, skipped = db.filter(paths, key)
    >>> ...tag and write each file in todo, then: db.mark_done(path, stat, key)
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_state_path()
        self._lock = threading.Lock()
        deadline = time.monotonic() + 60
        while True:
            try:
                self._conn = self._open()
                return
            except sqlite3.OperationalError as e:
                # Several processes (torchrun ranks) opening a new database at once: switching it to WAL
                # takes an exclusive lock that SQLite's busy timeout does not wait for, so retry here.
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise self._error(e) from None
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as e:
                raise self._error(e) from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False: the
        # lock below serialises threads (writer thread + main thread).
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _error(self, e: BaseException) -> InputError:
        return InputError(
            f"{self.path}: cannot open the state database ({e}); delete it or pass another --state-db"
        )

    # ---- queries -------------------------------------------------------------------------------

    def _rows(self, paths: Sequence[str], key: str) -> dict[str, tuple[int, int, str]]:
        """Recorded (size, mtime_ns, digest) for each of ``paths`` that has a row under ``key``."""
        out: dict[str, tuple[int, int, str]] = {}
        for i in range(0, len(paths), _CHUNK):
            chunk = paths[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT path, size, mtime_ns, digest FROM done WHERE settings = ? AND path IN ({marks})"
            for path, size, mtime_ns, digest in self._conn.execute(sql, (key, *chunk)):
                out[path] = (size, mtime_ns, digest)
        return out

    def _unchanged(self, kpath: str, st: os.stat_result, row: tuple[int, int, str] | None) -> bool | None:
        """True: skip; False: redo; None: same content but a new mtime (caller refreshes the row)."""
        if row is None:
            return False
        size, mtime_ns, digest = row
        if st.st_size != size:
            return False
        if st.st_mtime_ns == mtime_ns:
            return True
        try:
            same = content_digest(kpath, st.st_size) == digest
        except OSError:
            return False
        return None if same else False

    def needs_work(self, path: str | Path, stat: os.stat_result | None, key: str) -> bool:
        """True when ``path`` was never tagged under ``key`` or changed since (see module doc).

        ``stat``: ``os.stat(path)`` if the caller has it, else None (stat'ed here).
        """
        kpath = _key_path(path)
        try:
            st = stat if stat is not None else os.stat(kpath)
        except OSError:
            return True  # let the pipeline report the unreadable file
        with self._lock:
            row = self._rows([kpath], key).get(kpath)
            verdict = self._unchanged(kpath, st, row)
            if verdict is None:
                self._conn.execute(_REFRESH, (st.st_mtime_ns, kpath, key))
        return verdict is False

    def filter(self, paths: Iterable[str | Path], key: str, force: bool = False) -> tuple[list[Any], int]:
        """Split ``paths`` into (files to tag, number skipped as already done), keeping input order.

        Batched: one ``stat`` per file, one SELECT per 500 paths, one transaction. With ``force``
        every file is returned (and the records are overwritten as files are marked done again).
        Files that cannot be stat'ed stay in the work list so the pipeline reports them.
        """
        items = list(paths)
        if force:
            return items, 0
        kpaths = [_key_path(p) for p in items]
        todo: list[Any] = []
        refresh: list[tuple[int, str, str]] = []  # (mtime_ns, path, key) of touched-only files
        with self._lock:
            rows = self._rows(kpaths, key)
            for item, kpath in zip(items, kpaths, strict=True):
                row = rows.get(kpath)
                if row is None:
                    todo.append(item)
                    continue
                try:
                    st = os.stat(kpath)
                except OSError:
                    todo.append(item)
                    continue
                verdict = self._unchanged(kpath, st, row)
                if verdict is None:
                    refresh.append((st.st_mtime_ns, kpath, key))
                elif verdict is False:
                    todo.append(item)
            if refresh:
                self._conn.execute("BEGIN")
                self._conn.executemany(_REFRESH, refresh)
                self._conn.execute("COMMIT")
        skipped = len(items) - len(todo)
        if skipped:
            log.info("state: %d of %d files already tagged with these settings", skipped, len(items))
        return todo, skipped

    # ---- updates -------------------------------------------------------------------------------

    def mark_done(self, path: str | Path, stat: os.stat_result | None, key: str) -> None:
        """Record ``path`` as tagged under ``key``. Call only after its output was written.

        ``stat``: the file's stat as it was tagged; None stats it now (right for ``--write embed``,
        which changes the image file itself: record the post-write state).
        """
        kpath = _key_path(path)
        st = stat if stat is not None else os.stat(kpath)
        digest = content_digest(kpath, st.st_size)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO done (path, settings, size, mtime_ns, digest, tagged_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (kpath, key, st.st_size, st.st_mtime_ns, digest, time.time()),
            )

    def forget(self, paths: Iterable[str | Path], key: str | None = None) -> int:
        """Drop the records of ``paths`` (under ``key``, or under every key); returns rows removed."""
        kpaths = [_key_path(p) for p in paths]
        removed = 0
        with self._lock:
            self._conn.execute("BEGIN")
            for i in range(0, len(kpaths), _CHUNK):
                chunk = kpaths[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                if key is None:
                    cur = self._conn.execute(f"DELETE FROM done WHERE path IN ({marks})", chunk)
                else:
                    cur = self._conn.execute(
                        f"DELETE FROM done WHERE settings = ? AND path IN ({marks})", (key, *chunk)
                    )
                removed += cur.rowcount
            self._conn.execute("COMMIT")
        return removed

    def count(self, key: str | None = None) -> int:
        """Rows recorded (under ``key``, or in total)."""
        with self._lock:
            if key is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM done").fetchone()[0])
            row = self._conn.execute("SELECT COUNT(*) FROM done WHERE settings = ?", (key,)).fetchone()
            return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
