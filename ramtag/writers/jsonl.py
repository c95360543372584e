"""JSON Lines output: one object per image (``ImageTags.to_dict()``) in one file, written as the run goes.

Durability (so that ``kill -9`` loses at most the batch in flight): each result is appended as one
line with a single ``write`` on a file opened for appending; :meth:`JsonlWriter.sync` fsyncs it, and
the tagging run records images as done in the catalog only after that. A line torn by a kill is cut
off when the file is opened next, and those images, never recorded, are written again.

One line per image: when a run writes an image that already has a line (re-tagged, re-decided, or
a kill between the write and the record), :meth:`JsonlWriter.close` rewrites the file atomically,
keeping each image's newest line at the place of its first. Lines that are not ramtag's (not JSON
objects with a ``"path"``) are kept as they are. Paths are absolute and resolved (one spelling per
file, whatever the command line said); those that are not valid UTF-8 are written with
``\\udcXX`` escapes (``os.fsencode(json.loads(line)["path"])`` gives the bytes back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from ramtag.errors import OutputError, UsageError, os_cause
from ramtag.results import ImageTags
from ramtag.writers.atomic import AtomicFile
from ramtag.writers.base import WriteOutcome

log = logging.getLogger(__name__)

DEFAULT_JSONL = "ramtag-tags.jsonl"
_KEPT = "cannot write it; the lines written before stay, run again to write the others"


def line_fingerprint(line: bytes) -> str:
    """The fingerprint of one JSON Lines record (its newline excluded)."""
    return "line:" + hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()[:32]


def encode_line(d: dict[str, object]) -> bytes:
    """One record as UTF-8 bytes with a newline; a non-UTF-8 path is kept as \\udcXX escapes."""
    try:
        return (json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(d) + "\n").encode("ascii")


def line_key(raw: bytes) -> str | None:
    """The image path of one line, or None for a line that is not ramtag's."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return str(value["path"])
    return None


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a kill in the middle of a write)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        log.warning("%s: cut off an incomplete last line (a run was killed while writing it)", path)
        f.truncate(pos)
        f.flush()
        os.fsync(f.fileno())


def compact(path: str | Path) -> int:
    """Rewrite ``path`` atomically with one line per image (the newest, at the place of the first).

    Returns the number of lines dropped (0: the file was left untouched).
    """
    path = Path(path)
    order: list[str | bytes] = []
    newest: dict[str, bytes] = {}
    dropped = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            raw = raw if raw.endswith(b"\n") else raw + b"\n"
            key = line_key(raw)
            if key is None:
                order.append(raw)
            elif key in newest:
                newest[key] = raw
                dropped += 1
            else:
                newest[key] = raw
                order.append(key)
    if dropped:
        with AtomicFile(path) as out:
            for item in order:
                out.write(item if isinstance(item, bytes) else newest[item])
    return dropped


class JsonlWriter:
    """Appends every result (tagged or skipped) as one JSON line. Thread-safe."""

    def __init__(self, path: str | Path = DEFAULT_JSONL, *, dry_run: bool = False, all_scores: bool = False):
        self.path = Path(path)
        self.dry_run = dry_run
        self.all_scores = all_scores
        self._lock = threading.Lock()
        self._keys: set[str] = set()  # image paths that have a line in the file
        self._dupes = False  # some image now has two lines: compact at close
        self._fd: int | None = None
        self._closed = False
        self._failure: str | None = None  # why the file could not be written (disk full, ...)
        if dry_run:
            return
        try:
            if self.path.is_file():
                _cut_torn_tail(self.path)
                with open(self.path, "rb") as f:
                    for raw in f:
                        key = line_key(raw)
                        if key is not None:
                            self._dupes |= key in self._keys
                            self._keys.add(key)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise UsageError(
                f"--json {self.path}: cannot write there ({e.strerror}); pick another file"
            ) from e

    def write(self, result: ImageTags) -> WriteOutcome:
        d = result.to_dict()
        if result.path is not None:  # one spelling per file: "photos/a.jpg" and "/abs/photos/a.jpg" are one
            d["path"] = os.fsdecode(os.path.realpath(os.fsencode(result.path)))
        if not self.all_scores:
            d.pop("scores", None)
        tags = tuple(result.tag_names())
        if self.dry_run:
            return WriteOutcome(result.path, self.path, "dry-run", f"{self.path}: would add 1 line", tags)
        line = encode_line(d)
        with self._lock:
            if self._failure is not None:
                raise OutputError(f"{self.path}: not written ({self._failure}, see above)")
            if self._fd is None or self._closed:
                raise ValueError(f"{self.path}: JSON Lines writer is closed")
            try:
                os.write(self._fd, line)  # one write on an O_APPEND file: whole lines, never interleaved
            except OSError as e:  # (a short write leaves a torn line: cut off when the file is next opened)
                self._failure = os_cause(e)
                raise OutputError.from_os(e, self.path, _KEPT) from None
            if d["path"] is not None:
                key = str(d["path"])
                self._dupes |= key in self._keys
                self._keys.add(key)
        return WriteOutcome(
            result.path,
            self.path,
            "written",
            f"{self.path}: 1 line",
            tags,
            fingerprint=line_fingerprint(line),
        )

    def sync(self) -> None:
        """Make every line written so far durable (call before recording those images as done)."""
        with self._lock:
            if self._fd is not None and not self._closed and self._failure is None:
                try:
                    os.fsync(self._fd)
                except OSError as e:
                    self._failure = os_cause(e)
                    raise OutputError.from_os(e, self.path, _KEPT) from None

    def close(self) -> None:
        """fsync, then leave one line per image (atomic rewrite only when some image has two)."""
        with self._lock:
            if self._closed or self._fd is None:
                self._closed = True
                return
            self._closed = True
            fd, self._fd = self._fd, None
            try:
                if self._failure is None:  # (after a failure it was reported once, where it happened)
                    os.fsync(fd)
                    if self._dupes:
                        compact(self.path)
            except OSError as e:
                raise OutputError.from_os(e, self.path, _KEPT) from None
            finally:
                os.close(fd)

    def abort(self) -> None:
        """Stop writing; the lines written so far stay (they are complete, and the catalog knows
        which images were recorded)."""
        self.close()
