"""JSON Lines output: one object per image (``ImageTags.to_dict()``) in one file.

How runs combine: results stream, one flushed line each, into a temporary file beside the target;
:meth:`JsonlWriter.close` then appends the earlier file's lines for images this run did not see and
atomically replaces the target. So the file always holds one line per image (this run's images
first, then earlier runs' other images), and a killed run leaves the previous file untouched (plus a
``.<name>.*.ramtag-tmp`` file that may be deleted).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ramtag.errors import OutputError, UsageError, os_cause
from ramtag.results import ImageTags
from ramtag.writers.atomic import AtomicFile
from ramtag.writers.base import WriteOutcome

log = logging.getLogger(__name__)

DEFAULT_JSONL = "ramtag-tags.jsonl"
_KEPT = "cannot write it; the earlier file was left as it was"


class JsonlWriter:
    """Writes every result (tagged or skipped) as one JSON line. Thread-safe."""

    def __init__(self, path: str | Path = DEFAULT_JSONL, *, dry_run: bool = False, all_scores: bool = False):
        self.path = Path(path)
        self.dry_run = dry_run
        self.all_scores = all_scores
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._out: AtomicFile | None = None
        if not dry_run:
            try:
                self._out = AtomicFile(self.path, 0o666)
            except OSError as e:
                raise UsageError(
                    f"--json {self.path}: cannot write there ({e.strerror}); pick another file"
                ) from e
        self._closed = False
        self._failure: str | None = None  # why the file could not be written (disk full, ...)

    def write(self, result: ImageTags) -> WriteOutcome:
        d = result.to_dict()
        if not self.all_scores:
            d.pop("scores", None)
        tags = tuple(result.tag_names())
        if self.dry_run:
            return WriteOutcome(result.path, self.path, "dry-run", f"{self.path}: would add 1 line", tags)
        try:
            line = (json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8: \udcxx escapes (json reads them back)
            line = (json.dumps(d, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock:
            if self._failure is not None:
                raise OutputError(f"{self.path}: not written ({self._failure}, see above)")
            if self._out is None or self._closed:
                raise ValueError(f"{self.path}: JSON Lines writer is closed")
            try:
                self._out.write(line)
                self._out.file.flush()
            except OSError as e:
                self._out.discard()
                self._failure = os_cause(e)
                raise OutputError.from_os(e, self.path, _KEPT) from None
            if d["path"] is not None:
                self._seen.add(d["path"])
        return WriteOutcome(result.path, self.path, "written", f"{self.path}: 1 line", tags)

    def close(self) -> None:
        """Keep earlier runs' lines for images not in this run and move the file into place."""
        with self._lock:
            if self._failure is not None and not self._closed:  # the temporary file is already gone
                self._closed = True
                raise OutputError(
                    f"{self.path}: this run's lines were not written ({self._failure}); the earlier file was "
                    "left as it was - run again to write them"
                )
            if self._closed or self._out is None:
                self._closed = True
                return
            self._closed = True
            out = self._out
            try:
                if self.path.is_file():
                    with self.path.open("rb") as old:
                        for raw in old:
                            if raw.strip() and self._key(raw) not in self._seen:
                                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                out.commit()
            except OSError as e:
                out.discard()
                raise OutputError.from_os(e, self.path, _KEPT) from None
            except BaseException:
                out.discard()
                raise

    @staticmethod
    def _key(raw: bytes) -> object:
        """The image path of one earlier line (a line that is not ours is kept: never matches)."""
        try:
            value = json.loads(raw)
        except ValueError:
            return object()
        return value.get("path") if isinstance(value, dict) else object()

    def abort(self) -> None:
        """Drop this run's lines; the earlier file stays as it was."""
        with self._lock:
            if self._out is not None and not self._closed:
                self._out.discard()
            self._closed = True
