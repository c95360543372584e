"""The catalog's SQLite schema, its version, and opening a file (WAL, migration, legacy state files).

Version history (``PRAGMA user_version``):

- 0: an empty file, or the pre-catalog ``state.sqlite`` (one ``done`` table of path + settings
  hashes, no scores): such a file is taken over, its records dropped with a logged note (they hold
  no scores, so the images are tagged once more and the catalog is complete from then on).
- 1: the first catalog layout.
- 2: ``images.hit_floor`` (the hits index holds at most ``HIT_CAP`` rows per image); a version-1
  file gains the column (NULL: every image of such a file is fully indexed).

Paths are BLOBs (the OS bytes of the resolved absolute path); scores are float16 BLOBs (table
``scores``) in the column order of the image's vocabulary; ``hits`` indexes every score at or above
``min(threshold, HIT_FLOOR)`` so queries need not read the score blobs, but at most ``HIT_CAP`` per
image: an image with more (random or badly calibrated weights put most of 4,585 tags above 0.3)
keeps its highest scores and records in ``images.hit_floor`` the bound every indexed score reaches;
queries read the blobs of those images alone where they need a score under it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
HIT_FLOOR = 0.3  # scores at or above min(threshold, HIT_FLOOR) are indexed in `hits`...
HIT_CAP = 64  # ...but at most this many per image (the highest; see images.hit_floor)
MMAP_BYTES = 1 << 31  # memory-mapped reads (SQLite's default upper limit; address space, not memory)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id       TEXT PRIMARY KEY,       -- e.g. 20261204-170000-3f2a (UTC time + random)
    started  REAL NOT NULL,          -- unix time
    finished REAL,                   -- unix time; NULL while running (or killed)
    status   TEXT NOT NULL,          -- running | finished | failed
    command  TEXT NOT NULL,          -- tag | redecide | untag | ...
    settings TEXT NOT NULL,          -- JSON, secrets removed (public_settings)
    counts   TEXT NOT NULL           -- JSON: found / tagged / unchanged / written / failed ...
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vocabs (
    id         TEXT PRIMARY KEY,     -- vocabulary_id(): hash of the four lists below
    names      TEXT NOT NULL,        -- JSON list of English names, score column order
    names_zh   TEXT,                 -- JSON list or NULL
    thresholds TEXT NOT NULL,        -- JSON list of floats
    open_set   TEXT NOT NULL         -- JSON list of booleans
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    id   INTEGER PRIMARY KEY,
    key  TEXT NOT NULL UNIQUE,       -- str.lower() of the English name (what queries match)
    name TEXT NOT NULL               -- the English name as first seen
);
CREATE TABLE IF NOT EXISTS images (
    id        INTEGER PRIMARY KEY,
    path      BLOB NOT NULL UNIQUE,  -- os.fsencode(realpath)
    size      INTEGER NOT NULL,      -- identity when decoded: st_size
    mtime_ns  INTEGER NOT NULL,      --   st_mtime_ns
    inode     INTEGER NOT NULL,      --   st_ino
    device    INTEGER NOT NULL,      --   st_dev
    digest    TEXT,                  --   content_digest (sha256 of size + first/last MiB)
    scorer    TEXT NOT NULL,         -- what produced the scores (weights, preprocessing, precision...)
    vocab     TEXT NOT NULL REFERENCES vocabs(id),
    run       TEXT NOT NULL,         -- runs.id that scored it
    tagged_at REAL NOT NULL,         -- unix time the scores were recorded
    hit_floor REAL                   -- NULL: hits holds every score >= min(threshold, HIT_FLOOR),
                                     --   else (over HIT_CAP of them) exactly the scores >= hit_floor
);
CREATE INDEX IF NOT EXISTS images_vocab ON images (vocab);
CREATE TABLE IF NOT EXISTS scores (  -- apart from images, so scanning images never reads the blobs
    image INTEGER PRIMARY KEY,       -- images.id
    data  BLOB NOT NULL              -- float16 little-endian, one per tag of the image's vocabulary
);
CREATE TABLE IF NOT EXISTS hits (
    tag   INTEGER NOT NULL,          -- tags.id
    image INTEGER NOT NULL,          -- images.id
    score REAL NOT NULL,             -- the stored (float16) score
    above INTEGER NOT NULL,          -- 1 when score > the tag's threshold in the image's vocabulary
    PRIMARY KEY (tag, image)
) WITHOUT ROWID;
-- covering: a record's tags come from the index alone (no lookup per hit in the table)
CREATE INDEX IF NOT EXISTS hits_image ON hits (image, above, tag, score);
CREATE TABLE IF NOT EXISTS outputs (
    image       INTEGER NOT NULL,    -- images.id
    kind        TEXT NOT NULL,       -- xmp | embed | json
    target      BLOB NOT NULL,       -- the file written (sidecar, the image itself, JSON Lines file)
    tags        TEXT NOT NULL,       -- JSON [[name, score], ...] as written
    fingerprint TEXT NOT NULL,       -- hash of what was written (see ramtag.catalog.outputs)
    settings    TEXT NOT NULL,       -- hash of the deciding settings that produced `tags`
    run         TEXT NOT NULL,       -- runs.id that wrote it
    written_at  REAL NOT NULL,
    size        INTEGER,             -- the target's st_size / st_mtime_ns after writing: while they
    mtime_ns    INTEGER,             --   hold, the content need not be read again (NULL: unknown)
    PRIMARY KEY (image, kind, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outputs_run ON outputs (run);
"""
# the few images with a hit_floor, found without reading every row (version 2)
_TRUNCATED = "CREATE INDEX IF NOT EXISTS images_truncated ON images (hit_floor) WHERE hit_floor IS NOT NULL"
_SCHEMA += _TRUNCATED + ";\n"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION (inside the caller's exclusive transaction)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise InputError(
            f"{path}: catalog version {version} was written by a newer ramtag; upgrade ramtag "
            "or pass another --catalog"
        )
    if version == SCHEMA_VERSION:
        return
    tables = _tables(conn)
    if version == 1 and "images" in tables:
        conn.execute("ALTER TABLE images ADD COLUMN hit_floor REAL")  # NULL: indexed in full
        conn.execute(_TRUNCATED)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if "done" in tables:  # the pre-catalog state database
        n = int(conn.execute("SELECT COUNT(*) FROM done").fetchone()[0])
        conn.execute("DROP TABLE done")
        tables.discard("done")
        log.warning(
            "%s: was a ramtag state database (%d records without scores); it is now a catalog and "
            "those images will be tagged once more",
            path,
            n,
        )
    if tables:
        raise InputError(
            f"{path}: is an SQLite database but not a ramtag catalog (tables {', '.join(sorted(tables))}); "
            "pass another --catalog"
        )
    for statement in _SCHEMA.split(";\n"):  # not executescript: it would commit the caller's transaction
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('created', ?)", (str(time.time()),))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (create) the catalog at ``path``: WAL journal, schema migrated. Raises InputError."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _connect(path, readonly)
        except sqlite3.OperationalError as e:
            # Several processes creating one file at once: switching to WAL takes a lock that the busy
            # timeout does not wait for, so retry here.
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise _error(path, e) from None
            time.sleep(0.05)
        except sqlite3.DatabaseError as e:
            raise _error(path, e) from None
        except OSError as e:
            raise InputError(
                f"{path}: cannot open the catalog ({e.strerror}); pass another --catalog"
            ) from None


def _error(path: Path, e: BaseException) -> InputError:
    return InputError(f"{path}: cannot open the catalog ({e}); move it away or pass another --catalog")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise InputError(f"{path}: no catalog there yet; tag a folder first (ramtag tag FOLDER)")
        uri = f"{path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit; check_same_thread=False: Catalog's lock
        # serialises the writer thread and the main thread.
        conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        # reads straight from the OS page cache instead of copying every page (halves a blob scan)
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if readonly:
            if version != SCHEMA_VERSION:
                conn.close()
                # A read-only open cannot migrate: open it read-write once (any write command does).
                return _connect(path, False)
            return conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if version != SCHEMA_VERSION:
            conn.execute("BEGIN EXCLUSIVE")
            try:
                _migrate(conn, path)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except BaseException:
        conn.close()
        raise
    return conn
