"""The catalog: what was tagged, with which scores, and what was written where (one SQLite file).

    cat = Catalog()                                    # ramtag_home()/catalog.sqlite
    run = cat.begin_run("tag", settings)               # settings: secrets are dropped
    vid = cat.add_vocabulary(vocab)
    cat.record_images([ImageScores(path, identity, scorer, vid, scores)], run)
    cat.record_output(path, "xmp", sidecar, [("dog", 0.93)], fingerprint, decide_key, run)
    cat.finish_run(run, {"tagged": 1})

Torch is never imported here: questions about the library and re-deciding from stored scores run
without it. One ``Catalog`` may be shared by threads (one connection behind a lock); several
processes may open one file (WAL), but never over a network filesystem (see ``ramtag.catalog.parts``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..paths import ramtag_home
from ..results import TagScore
from ..tags.vocab import Vocabulary
from .identity import Identity, PathLike, display, folder_prefix, key_path, path_key
from .schema import HIT_CAP, HIT_FLOOR, connect

log = logging.getLogger(__name__)

_CHUNK = 500  # host parameters per "IN (...)"; well under SQLite's limit
_SECRET = re.compile(r"api_?key|token|secret|passw|credential|authori[sz]ation|cookie", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


def default_catalog_path() -> Path:
    """The shared catalog: ``ramtag_home()/catalog.sqlite``."""
    return ramtag_home() / "catalog.sqlite"


def public_settings(value: Any) -> Any:
    """``value`` without secrets: keys that name a key/token/password dropped, URL credentials cut."""
    if isinstance(value, dict):
        return {str(k): public_settings(v) for k, v in value.items() if not _SECRET.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [public_settings(v) for v in value]
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1", value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    return repr(value)


def vocabulary_id(vocab: Vocabulary) -> str:
    """A stable 24-hex-digit id of a vocabulary's names, Chinese names, thresholds and open-set flags."""
    text = json.dumps(vocab.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def new_run_id() -> str:
    """A run id that sorts by time and is short to type: ``20261204-170000-3f2a``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class ImageScores:
    """One image's scores, ready to record."""

    path: PathLike  # the image (any spelling; recorded as path_key)
    identity: Identity  # taken when the file was decoded
    scorer: str  # what produced the scores (weights + sha, preprocessing, precision class)
    vocab: str  # vocabulary id (Catalog.add_vocabulary)
    scores: np.ndarray  # (T,) scores in [0, 1], columns in vocabulary order


@dataclass(frozen=True)
class ImageRow:
    """What the catalog knows about one image (scores not loaded)."""

    id: int
    key: bytes  # path_key
    identity: Identity
    scorer: str
    vocab: str
    run: str
    tagged_at: float

    @property
    def path(self) -> Path:
        return key_path(self.key)


@dataclass(frozen=True)
class OutputRow:
    """One output of one image: which file got which tags."""

    image: bytes  # path_key of the image
    kind: str  # xmp | embed | json
    target: bytes  # path_key of the file written
    tags: tuple[tuple[str, float], ...]  # (name as written, score), best first
    fingerprint: str
    settings: str  # deciding-settings hash
    run: str
    written_at: float
    size: int | None = None  # the target's st_size after writing
    mtime_ns: int | None = None  # the target's st_mtime_ns after writing

    @property
    def image_path(self) -> Path:
        return key_path(self.image)

    @property
    def target_path(self) -> Path:
        return key_path(self.target)


@dataclass(frozen=True)
class RunInfo:
    id: str
    started: float
    finished: float | None
    status: str  # running | finished | failed; "running" with an old start means killed
    command: str
    settings: dict[str, Any]
    counts: dict[str, Any]


@dataclass(frozen=True)
class CatalogRecord:
    """One image as a query answers it."""

    key: bytes  # the image's path as the OS spells it (path_key)
    tags: list[TagScore]  # above the tag's threshold, best first
    matched: dict[str, float] = field(default_factory=dict)  # scores of the query's tags (indexed ones)
    model: str = ""  # scorer
    run: str = ""  # the run that scored it

    @property
    def path(self) -> Path:
        """The image (made on demand: building a Path costs more than the rest of a record)."""
        return key_path(self.key)

    def tag_names(self, lang: str = "en") -> list[str]:
        return [t.display_name(lang) for t in self.tags]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": os.fsdecode(self.key),
            "tags": [t.to_dict() for t in self.tags],
            **({"matched": {k: round(v, 4) for k, v in self.matched.items()}} if self.matched else {}),
            "model": self.model,
            "run": self.run,
        }


def _prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) of every byte string starting with ``prefix`` (which ends with b'/')."""
    return prefix, prefix[:-1] + bytes([prefix[-1] + 1])


class Catalog:
    """The catalog file. ``Catalog()`` opens (creates) the default one; ``readonly`` never writes."""

    def __init__(self, path: str | Path | None = None, *, readonly: bool = False) -> None:
        default = path is None
        self.path = Path(path).expanduser() if path is not None else default_catalog_path()
        if default and not readonly and not self.path.exists():
            legacy = self.path.with_name("state.sqlite")
            if legacy.exists():
                log.warning(
                    "%s: the state database of an earlier ramtag holds no scores, so the catalog starts "
                    "afresh at %s and images are tagged once more; the old file may be deleted",
                    legacy,
                    self.path,
                )
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn = connect(self.path, readonly=readonly)
        self._vocabs: dict[str, Vocabulary] = {}
        self._tag_ids: dict[str, np.ndarray] = {}  # vocab id -> tags.id per column
        self._thresholds: dict[str, np.ndarray] = {}
        self._cols: dict[str, dict[int, int]] = {}
        self._info: dict[str, dict[int, tuple[str, float, str | None, bool]]] = {}
        self._tags_cache: tuple[int | None, dict[str, int], dict[str, int]] | None = None

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def _tx(self, immediate: bool = True) -> _Transaction:
        return _Transaction(self, immediate)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read query and return all rows (for scripts and tests)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ runs
    def begin_run(
        self, command: str, settings: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Record a new run (``status = running``) and return its id. Secrets are never stored."""
        run = run_id or new_run_id()
        text = json.dumps(public_settings(settings or {}), ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, NULL, 'running', ?, ?, '{}')",
                (run, time.time(), command, text),
            )
        return run

    def finish_run(self, run: str, counts: dict[str, Any], status: str = "finished") -> None:
        text = json.dumps(public_settings(counts), ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._conn.execute(
                "UPDATE runs SET finished = ?, status = ?, counts = ? WHERE id = ?",
                (time.time(), status, text, run),
            )

    def runs(self, limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first."""
        sql = "SELECT * FROM runs ORDER BY started DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._lock:
            rows = self._conn.execute(sql).fetchall()
        return [RunInfo(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def resolve_run(self, spec: str) -> str:
        """A run id from ``spec``: a full id, a unique prefix, or ``last``. Raises UsageError."""
        with self._lock:
            if spec == "last":
                row = self._conn.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
                ids = [row[0]] if row else []
            else:
                ids = [
                    r[0]
                    for r in self._conn.execute(
                        "SELECT id FROM runs WHERE substr(id, 1, ?) = ?", (len(spec), spec)
                    )
                ]
        if len(ids) == 1:
            return str(ids[0])
        if not ids:
            raise UsageError(f"--run {spec}: no such run in {self.path}; list them with 'ramtag runs'")
        raise UsageError(
            f"--run {spec}: matches {len(ids)} runs ({', '.join(ids[:3])}...); give more of the id"
        )

    # ------------------------------------------------------------------ vocabularies
    def add_vocabulary(self, vocab: Vocabulary) -> str:
        """Store ``vocab`` once (keyed by :func:`vocabulary_id`) and return its id."""
        vid = vocabulary_id(vocab)
        if vid in self._vocabs:
            return vid
        d = vocab.to_dict()
        with self._lock, self._tx():
            self._conn.execute(
                "INSERT OR IGNORE INTO vocabs VALUES (?, ?, ?, ?, ?)",
                (
                    vid,
                    json.dumps(d["names"], ensure_ascii=False),
                    json.dumps(d["names_zh"], ensure_ascii=False) if d["names_zh"] is not None else None,
                    json.dumps(d["thresholds"]),
                    json.dumps(d["open_set"]),
                ),
            )
            self._conn.executemany(
                "INSERT OR IGNORE INTO tags (key, name) VALUES (?, ?)", [(n.lower(), n) for n in vocab.names]
            )
        self._vocabs[vid] = vocab
        return vid

    def vocabulary(self, vid: str) -> Vocabulary:
        """The vocabulary stored under ``vid``."""
        if vid not in self._vocabs:
            with self._lock:
                row = self._conn.execute(
                    "SELECT names, names_zh, thresholds, open_set FROM vocabs WHERE id = ?", (vid,)
                ).fetchone()
            if row is None:
                raise KeyError(vid)
            zh = json.loads(row[1]) if row[1] is not None else None
            self._vocabs[vid] = Vocabulary.from_dict(
                {
                    "names": json.loads(row[0]),
                    "names_zh": zh,
                    "thresholds": json.loads(row[2]),
                    "open_set": json.loads(row[3]),
                }
            )
        return self._vocabs[vid]

    def vocabulary_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM vocabs")]

    def _columns(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """(tags.id per column, threshold per column) of vocabulary ``vid``."""
        if vid not in self._tag_ids:
            vocab = self.vocabulary(vid)
            ids = self.tag_ids()
            missing = [n for n in vocab.names if n.lower() not in ids]
            if missing:  # e.g. a vocabulary stored by an interrupted add_vocabulary
                with self._lock:
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO tags (key, name) VALUES (?, ?)",
                        [(n.lower(), n) for n in missing],
                    )
                ids = self.tag_ids()
            self._tag_ids[vid] = np.array([ids[n.lower()] for n in vocab.names], dtype=np.int64)
            self._thresholds[vid] = np.asarray(vocab.thresholds, dtype=np.float64)
        return self._tag_ids[vid], self._thresholds[vid]

    def tag_ids(self) -> dict[str, int]:
        """Lower-cased tag name -> tags.id for every tag of every stored vocabulary."""
        return self._tag_tables()[0]

    def _tag_tables(self) -> tuple[dict[str, int], dict[str, int]]:
        """(key -> id, name -> id), re-read only when tags were added (by any process)."""
        with self._lock:
            top = self._conn.execute("SELECT max(id) FROM tags").fetchone()[0]
            if self._tags_cache is None or self._tags_cache[0] != top:
                rows = self._conn.execute("SELECT key, name, id FROM tags").fetchall()
                self._tags_cache = (top, {k: i for k, _, i in rows}, {n: i for _, n, i in rows})
            return self._tags_cache[1], self._tags_cache[2]

    # ------------------------------------------------------------------ images
    def record_images(self, items: Iterable[ImageScores], run: str) -> int:
        """Record scores (replacing earlier ones of the same paths) in one transaction; returns how many.

        Call only after the image's outputs are durable (or when no output is asked for).
        """
        now = time.time()
        n = 0
        with self._lock, self._tx():
            for item in items:
                scores16 = np.asarray(item.scores, dtype="<f2")
                self._put_image(
                    path_key(item.path), item.identity, item.scorer, item.vocab, scores16, run, now
                )
                n += 1
        return n

    def _put_image(
        self, key: bytes, ident: Identity, scorer: str, vid: str, scores16: np.ndarray, run: str, when: float
    ) -> int:
        """Insert or replace one image's row, scores and hits (inside the caller's transaction)."""
        tag_ids, th = self._columns(vid)
        if scores16.shape != tag_ids.shape:
            raise ValueError(f"{scores16.size} scores for a vocabulary of {len(tag_ids)} tags")
        rows, floor = _hit_rows(scores16, tag_ids, th)
        image_id = int(
            self._conn.execute(
                "INSERT INTO images (path, size, mtime_ns, inode, device, digest, scorer, vocab, run,"
                " tagged_at, hit_floor) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (path) DO UPDATE SET"
                " size=excluded.size, mtime_ns=excluded.mtime_ns, inode=excluded.inode,"
                " device=excluded.device, digest=excluded.digest, scorer=excluded.scorer,"
                " vocab=excluded.vocab, run=excluded.run, tagged_at=excluded.tagged_at,"
                " hit_floor=excluded.hit_floor RETURNING id",
                (
                    key,
                    ident.size,
                    ident.mtime_ns,
                    ident.inode,
                    ident.device,
                    ident.digest,
                    scorer,
                    vid,
                    run,
                    when,
                    floor,
                ),
            ).fetchone()[0]
        )
        self._conn.execute("INSERT OR REPLACE INTO scores VALUES (?, ?)", (image_id, scores16.tobytes()))
        self._conn.execute("DELETE FROM hits WHERE image = ?", (image_id,))
        self._conn.executemany(
            "INSERT OR IGNORE INTO hits VALUES (?, ?, ?, ?)",
            ((tag, image_id, score, above) for tag, score, above in rows),
        )
        return image_id

    def refresh_identity(self, path: PathLike, identity: Identity) -> None:
        """Same content under a new stat (touch, copy, new inode): record the new stat."""
        with self._lock:
            self._conn.execute(
                "UPDATE images SET size=?, mtime_ns=?, inode=?, device=?, digest=coalesce(?, digest)"
                " WHERE path=?",
                (
                    identity.size,
                    identity.mtime_ns,
                    identity.inode,
                    identity.device,
                    identity.digest,
                    path_key(path),
                ),
            )

    def lookup(self, paths: Iterable[PathLike], *, resolved: bool = False) -> dict[bytes, ImageRow]:
        """Recorded rows of ``paths`` (by path_key; paths never tagged are absent). ``resolved``: the
        paths are path_key()s already."""
        keys = list(dict.fromkeys(p if resolved else path_key(p) for p in paths))
        out: dict[bytes, ImageRow] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                sql = (
                    "SELECT id, path, size, mtime_ns, inode, device, digest, scorer, vocab, run, tagged_at"
                    f" FROM images WHERE path IN ({','.join('?' * len(chunk))})"
                )
                for r in self._conn.execute(sql, chunk):
                    out[r[1]] = ImageRow(
                        r[0], r[1], Identity(r[2], r[3], r[4], r[5], r[6]), r[7], r[8], r[9], r[10]
                    )
        return out

    def forget(self, paths: Iterable[PathLike]) -> int:
        """Drop images (scores, hits and outputs); returns how many were recorded."""
        keys = [path_key(p) for p in paths]
        removed = 0
        with self._lock, self._tx():
            for key in keys:
                row = self._conn.execute("SELECT id FROM images WHERE path = ?", (key,)).fetchone()
                if row is None:
                    continue
                for table, col in (
                    ("hits", "image"),
                    ("outputs", "image"),
                    ("scores", "image"),
                    ("images", "id"),
                ):
                    self._conn.execute(f"DELETE FROM {table} WHERE {col} = ?", (row[0],))
                removed += 1
        return removed

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def image_ids(self, paths: Sequence[PathLike] = ()) -> np.ndarray:
        """Sorted ids of every image, or of those under the folders / equal to the files in ``paths``."""
        with self._lock:
            if not paths:
                rows = self._conn.execute("SELECT id FROM images").fetchall()
            else:
                rows = []
                for p in paths:
                    key = path_key(p)
                    lo, hi = _prefix_range(folder_prefix(p))
                    rows += self._conn.execute(
                        "SELECT id FROM images WHERE path = ? OR (path >= ? AND path < ?)", (key, lo, hi)
                    ).fetchall()
        return np.unique(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def scores(
        self, paths: Sequence[PathLike] | None = None, *, resolved: bool = False
    ) -> Iterator[tuple[str, list[bytes], np.ndarray]]:
        """Stored scores grouped by vocabulary: ``(vocab id, path keys, (N, T) float16)``.

        ``paths``: only these images (None: every image). Paths never tagged are left out.
        """
        with self._lock:
            if paths is None:
                rows = self._conn.execute(
                    "SELECT i.vocab, i.path, s.data FROM images i JOIN scores s ON s.image = i.id"
                    " ORDER BY i.vocab, i.path"
                ).fetchall()
            else:
                keys = list(dict.fromkeys(p if resolved else path_key(p) for p in paths))
                rows = []
                for i in range(0, len(keys), _CHUNK):
                    chunk = keys[i : i + _CHUNK]
                    rows += self._conn.execute(
                        "SELECT i.vocab, i.path, s.data FROM images i JOIN scores s ON s.image = i.id"
                        f" WHERE i.path IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                order = {k: i for i, k in enumerate(keys)}
                rows.sort(key=lambda r: (r[0], order[r[1]]))
        start = 0
        while start < len(rows):
            vid = rows[start][0]
            end = start
            while end < len(rows) and rows[end][0] == vid:
                end += 1
            group = rows[start:end]
            matrix = np.frombuffer(b"".join(r[2] for r in group), dtype="<f2").reshape(len(group), -1)
            yield vid, [r[1] for r in group], matrix
            start = end

    # ------------------------------------------------------------------ outputs
    def record_output(
        self,
        path: PathLike,
        kind: str,
        target: PathLike,
        tags: Sequence[tuple[str, float]],
        fingerprint: str,
        settings: str,
        run: str,
        stat: os.stat_result | None = None,
    ) -> None:
        """Record that ``target`` now holds ``tags`` for image ``path`` (call after it is durable).

        ``stat``: the target's stat right after writing (lets a re-run trust it without reading it).
        """
        self.record_outputs([(path, kind, target, tags, fingerprint, settings, stat)], run)

    def record_outputs(self, items: Iterable[tuple[Any, ...]], run: str) -> int:
        """Several :meth:`record_output` in one transaction: tuples ``(path, kind, target, tags,
        fingerprint, settings[, stat])``; images must be recorded first."""
        now = time.time()
        n = 0
        with self._lock, self._tx():
            for path, kind, target, tags, fingerprint, settings, *rest in items:
                st = rest[0] if rest else None
                row = self._conn.execute("SELECT id FROM images WHERE path = ?", (path_key(path),)).fetchone()
                if row is None:
                    raise KeyError(f"{display(path_key(path))}: record the image before its outputs")
                text = json.dumps([[str(n_), round(float(s), 4)] for n_, s in tags], ensure_ascii=False)
                self._conn.execute(
                    "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row[0],
                        kind,
                        path_key(target),
                        text,
                        fingerprint,
                        settings,
                        run,
                        now,
                        st.st_size if st is not None else None,
                        st.st_mtime_ns if st is not None else None,
                    ),
                )
                n += 1
        return n

    def refresh_output_stat(self, path: PathLike, kind: str, target: PathLike, st: os.stat_result) -> None:
        """The target changed on disk but still holds what ramtag wrote: remember its new stat."""
        with self._lock:
            self._conn.execute(
                "UPDATE outputs SET size = ?, mtime_ns = ? WHERE kind = ? AND target = ?"
                " AND image = (SELECT id FROM images WHERE path = ?)",
                (st.st_size, st.st_mtime_ns, kind, path_key(target), path_key(path)),
            )

    def forget_outputs(self, items: Iterable[tuple[PathLike, str, PathLike]]) -> int:
        """Drop output records ``(image, kind, target)`` (after ``untag`` removed them)."""
        n = 0
        with self._lock, self._tx():
            for path, kind, target in items:
                n += self._conn.execute(
                    "DELETE FROM outputs WHERE kind = ? AND target = ?"
                    " AND image = (SELECT id FROM images WHERE path = ?)",
                    (kind, path_key(target), path_key(path)),
                ).rowcount
        return n

    def _output_rows(self, where: str, params: Sequence[Any]) -> list[OutputRow]:
        sql = (
            "SELECT i.path, o.kind, o.target, o.tags, o.fingerprint, o.settings, o.run, o.written_at,"
            f" o.size, o.mtime_ns FROM outputs o JOIN images i ON i.id = o.image WHERE {where}"
            " ORDER BY i.path, o.kind"
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [
            OutputRow(
                r[0],
                r[1],
                r[2],
                tuple((str(a), float(b)) for a, b in json.loads(r[3])),
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
            )
            for r in rows
        ]

    def outputs(
        self, paths: Iterable[PathLike] | None = None, *, resolved: bool = False
    ) -> dict[bytes, list[OutputRow]]:
        """Recorded outputs per image key (every image, or ``paths``; ``resolved``: path_key()s)."""
        out: dict[bytes, list[OutputRow]] = {}
        if paths is None:
            rows = self._output_rows("1", ())
        else:
            keys = list(dict.fromkeys(p if resolved else path_key(p) for p in paths))
            rows = []
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                rows += self._output_rows(f"i.path IN ({','.join('?' * len(chunk))})", chunk)
        for r in rows:
            out.setdefault(r.image, []).append(r)
        return out

    def outputs_of_run(self, run: str) -> list[OutputRow]:
        """Every output a run wrote that is still recorded (what ``untag --run`` reverts)."""
        return self._output_rows("o.run = ?", (run,))

    def outputs_below(
        self, value: float, paths: Sequence[PathLike] = ()
    ) -> list[tuple[OutputRow, list[str]]]:
        """Outputs holding tags scored under ``value``, with those tag names (for ``untag --below``)."""
        where, params = "1", ()  # type: tuple[str, tuple[Any, ...]]
        if paths:
            parts = []
            plist: list[Any] = []
            for p in paths:
                lo, hi = _prefix_range(folder_prefix(p))
                parts.append("(i.path = ? OR (i.path >= ? AND i.path < ?))")
                plist += [path_key(p), lo, hi]
            where, params = " OR ".join(parts), tuple(plist)
        found = []
        for row in self._output_rows(where, params):
            low = [name for name, score in row.tags if score < value]
            if low:
                found.append((row, low))
        return found

    # ------------------------------------------------------------------ answers
    def records(self, ids: np.ndarray, extra_tags: Sequence[int] = ()) -> list[CatalogRecord]:
        """Query records of image ``ids`` (sorted by path): above-threshold tags, and the indexed
        scores of ``extra_tags`` (tags.id) under ``matched``."""
        if len(ids) == 0:
            return []
        extra = set(extra_tags)
        with self._lock, self._tx(immediate=False):
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS sel (id INTEGER PRIMARY KEY)")
            self._conn.execute("DELETE FROM sel")
            self._conn.executemany("INSERT INTO sel VALUES (?)", ((int(i),) for i in ids))
            images = self._conn.execute(
                "SELECT i.id, i.path, i.vocab, i.scorer, i.run, i.hit_floor"
                " FROM sel CROSS JOIN images i ON i.id = sel.id"
            ).fetchall()
            extra_sql = f" OR h.tag IN ({','.join(str(int(t)) for t in extra)})" if extra else ""
            hits = self._conn.execute(
                # CROSS JOIN: sel drives the loop (else SQLite may walk every hit of the catalog)
                f"SELECT h.image, h.tag, h.score, h.above FROM sel CROSS JOIN hits h ON h.image = sel.id"
                f" WHERE h.above = 1{extra_sql} ORDER BY sel.id"
            ).fetchall()
            truncated = [r[0] for r in images if r[5] is not None]
            blobs = self._blobs(truncated) if truncated else []
            self._conn.execute("DELETE FROM sel")
        meta = {i: (key, vid, scorer, run) for i, key, vid, scorer, run, _ in images}
        out: list[CatalogRecord] = []
        done: set[int] = set()
        by_score = operator.attrgetter("score")

        def close(image: int, tags: list[TagScore], matched: dict[str, float]) -> None:
            key, _, scorer, run = meta[image]
            tags.sort(key=by_score, reverse=True)
            out.append(CatalogRecord(key, tags, matched, scorer, run))
            done.add(image)

        # hits arrive grouped by image (sel is walked in id order, hits through their image index)
        cur, tags, matched, info = -1, [], {}, {}  # type: tuple[int, list[TagScore], dict[str, float], Any]
        skip = set(truncated)
        for image, tag, score, above in hits:
            if image in skip:
                continue
            if image != cur:
                if cur in meta:
                    close(cur, tags, matched)
                cur, tags, matched, info = image, [], {}, self._tag_info(meta[image][1])
            i = info.get(tag)
            if i is None:
                continue
            if above:
                tags.append(TagScore(i[0], score, i[1], i[2], i[3]))
            if tag in extra:
                matched[i[0]] = score
        if cur in meta:
            close(cur, tags, matched)
        for image, data in blobs:  # over HIT_CAP indexed scores: the index may miss some, the blob not
            close(image, *self._blob_record(meta[image][1], data, extra))
        for image in meta.keys() - done:  # no tag above its threshold
            close(image, [], {})
        out.sort(key=operator.attrgetter("key"))
        return out

    def _blobs(self, ids: Sequence[int]) -> list[tuple[int, bytes]]:
        """``(image id, float16 score blob)`` of images ``ids``."""
        rows: list[tuple[int, bytes]] = []
        with self._lock:
            for i in range(0, len(ids), _CHUNK):
                chunk = [int(x) for x in ids[i : i + _CHUNK]]
                sql = f"SELECT image, data FROM scores WHERE image IN ({','.join('?' * len(chunk))})"
                rows += self._conn.execute(sql, chunk).fetchall()
        return rows

    def _blob_record(self, vid: str, data: bytes, extra: set[int]) -> tuple[list[TagScore], dict[str, float]]:
        """What ``records`` takes from the hits of a fully indexed image, read from a score blob:
        the above-threshold tags, and the scores of ``extra`` tags that the index would hold."""
        tag_ids, th = self._columns(vid)
        s = np.frombuffer(data, dtype="<f2").astype(np.float64)
        info = self._tag_info(vid)
        above = np.flatnonzero(s > th)
        tags = []
        for t, score in zip(tag_ids[above].tolist(), s[above].tolist(), strict=True):
            i = info[t]
            tags.append(TagScore(i[0], score, i[1], i[2], i[3]))
        matched = {}
        cols = self._col_of(vid)
        for t in extra:
            c = cols.get(t)
            if c is not None and (s[c] >= min(th[c], HIT_FLOOR) or s[c] > th[c]):
                matched[info[t][0]] = float(s[c])
        return tags, matched

    def _tag_info(self, vid: str) -> dict[int, tuple[str, float, str | None, bool]]:
        """tags.id -> (name, threshold, Chinese name, open-set) in vocabulary ``vid`` (cached)."""
        if vid not in self._info:
            vocab = self.vocabulary(vid)
            zh = vocab.names_zh
            self._info[vid] = {
                t: (
                    vocab.names[c],
                    float(vocab.thresholds[c]),
                    zh[c].strip() if zh else None,
                    vocab.open_set[c],
                )
                for t, c in self._col_of(vid).items()
            }
        return self._info[vid]

    def paths_of(self, ids: np.ndarray) -> list[bytes]:
        """Path keys of image ``ids``, sorted (what ``--format paths`` and albums need: no tags)."""
        keys: list[bytes] = []
        with self._lock:
            for i in range(0, len(ids), _CHUNK):
                chunk = [int(x) for x in ids[i : i + _CHUNK]]
                sql = f"SELECT path FROM images WHERE id IN ({','.join('?' * len(chunk))})"
                keys += [r[0] for r in self._conn.execute(sql, chunk)]
        return sorted(keys)

    def _col_of(self, vid: str) -> dict[int, int]:
        """tags.id -> column of vocabulary ``vid`` (cached)."""
        if vid not in self._cols:
            tag_ids, _ = self._columns(vid)
            self._cols[vid] = {int(t): c for c, t in enumerate(tag_ids)}
        return self._cols[vid]

    def _tag_names(self) -> dict[str, int]:
        """English name (as first seen) -> tags.id."""
        return self._tag_tables()[1]

    def query_ids(self, expr: str, paths: Sequence[PathLike] = ()) -> np.ndarray:
        """Sorted ids of the images matching ``expr`` (see :mod:`ramtag.catalog.query`)."""
        from .query import evaluate, parse

        return evaluate(parse(expr), self, paths, text=expr)

    def query(self, expr: str, paths: Sequence[PathLike] = ()) -> list[CatalogRecord]:
        """Images matching ``expr`` under ``paths`` (folders or files; none = the whole catalog),
        sorted by path, each with its above-threshold tags and the scores of the query's tags.

        >>> for rec in ramtag.open_catalog().query("dog & (beach | sea) & !person", paths=["~/Photos"]):
        ...     print(rec.path, rec.tag_names())
        """
        from .query import evaluate, parse

        tree = parse(expr)
        ids = evaluate(tree, self, paths, text=expr)
        tag_ids = self.tag_ids()
        extra = [tag_ids[n.lower()] for n in tree.tag_names() if n.lower() in tag_ids]
        return self.records(ids, extra)

    def stats(self, paths: Sequence[PathLike] = (), limit: int | None = 20) -> list[tuple[str, int]]:
        """The most frequent tags (above their thresholds) with their image counts."""
        with self._lock, self._tx(immediate=False):
            if paths:
                ids = self.image_ids(paths)
                self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS sel (id INTEGER PRIMARY KEY)")
                self._conn.execute("DELETE FROM sel")
                self._conn.executemany("INSERT INTO sel VALUES (?)", ((int(i),) for i in ids))
                join = " JOIN sel ON sel.id = h.image"
            else:
                join = ""
            truncated = [
                int(r[0])
                for r in self._conn.execute(
                    "SELECT i.id FROM images i" + (" JOIN sel ON sel.id = i.id" if paths else "")
                    + " WHERE i.hit_floor IS NOT NULL"
                )
            ]  # fmt: skip
            sql = (
                f"SELECT t.name, COUNT(*) AS n, h.tag FROM hits h{join} JOIN tags t ON t.id = h.tag"
                " WHERE h.above = 1 GROUP BY h.tag ORDER BY n DESC, t.name"
                + (f" LIMIT {int(limit)}" if limit and not truncated else "")
            )
            rows = self._conn.execute(sql).fetchall()
            if paths:
                self._conn.execute("DELETE FROM sel")
            if not truncated:
                return [(str(n), int(c)) for n, c, _ in rows]
            counts = {int(t): int(c) for _, c, t in rows}
            for tag, c in self._truncated_counts(truncated).items():
                counts[tag] = counts.get(tag, 0) + c
        names = {v: k for k, v in self._tag_names().items()}
        ranked = sorted(((-c, names[t]) for t, c in counts.items() if c > 0))
        return [(name, -c) for c, name in ranked[: limit or None]]

    def _truncated_counts(self, ids: Sequence[int]) -> dict[int, int]:
        """Per tags.id: above-threshold counts of images ``ids`` (over HIT_CAP indexed scores) read
        from their score blobs, less what the hits index already counted of them."""
        out: dict[int, int] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for tag, c in self._conn.execute(
                f"SELECT tag, COUNT(*) FROM hits WHERE above = 1 AND image IN ({marks}) GROUP BY tag", chunk
            ):
                out[int(tag)] = out.get(int(tag), 0) - int(c)
            vocab = dict(self._conn.execute(f"SELECT id, vocab FROM images WHERE id IN ({marks})", chunk))
            by_vid: dict[str, list[bytes]] = {}
            for image, data in self._blobs(chunk):
                by_vid.setdefault(vocab[image], []).append(data)
            for vid, blobs in by_vid.items():
                tag_ids, th = self._columns(vid)
                s = np.frombuffer(b"".join(blobs), dtype="<f2").reshape(len(blobs), -1).astype(np.float64)
                for t, c in zip(tag_ids.tolist(), (s > th).sum(axis=0).tolist(), strict=True):
                    if c:
                        out[t] = out.get(t, 0) + c
        return out


def _hit_rows(
    scores16: np.ndarray, tag_ids: np.ndarray, th: np.ndarray
) -> tuple[list[tuple[int, float, int]], float | None]:
    """One image's ``hits`` rows ``(tag, score, above)`` and its ``hit_floor``.

    Every score at or above ``min(threshold, HIT_FLOOR)`` (and so every one above its threshold),
    floor None; or, when that is more than HIT_CAP scores, the highest: every score at or above the
    floor, which is the next float16 over the (HIT_CAP + 1)-th highest score (ties at the cut are
    all left out, so the rule "every score >= floor is indexed" holds exactly).
    """
    s = scores16.astype(np.float64)
    idx = np.flatnonzero((s >= np.minimum(th, HIT_FLOOR)) | (s > th))
    floor = None
    if len(idx) > HIT_CAP:
        k = len(s) - HIT_CAP - 1
        cut = np.partition(s, k)[k]  # the (HIT_CAP + 1)-th highest
        floor = float(np.nextafter(np.float16(cut), np.float16(np.inf)))
        idx = np.flatnonzero(s >= floor)
    score = s[idx]
    above = (score > th[idx]).astype(np.int64)
    rows = list(zip(tag_ids[idx].tolist(), score.tolist(), above.tolist(), strict=True))
    return rows, floor


class _Transaction:
    """``with cat._tx():`` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested uses are no-ops."""

    def __init__(self, cat: Catalog, immediate: bool) -> None:
        self.conn = cat._conn
        self.immediate = immediate  # False: readers (temp tables only), fine on a read-only catalog
        self.outer = False

    def __enter__(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
            self.outer = True

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.outer:
            return
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
