"""One long-lived ``exiftool -stay_open`` process (pyexiftool), every command bounded by a timeout.

Used by ``--write embed`` (:mod:`ramtag.writers.exiftool`), by ``untag`` for embedded tags and by the
sidecar writer to read the XMP of files Pillow cannot open. Its own module so that the sidecar writer
can use it without importing the embed writer (which builds on the sidecar writer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import select
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import exiftool as pyexiftool

from ramtag.errors import ExiftoolError
from ramtag.writers.base import RAMTAG_NS

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "exiftool not found; install it (Debian/Ubuntu: apt install libimage-exiftool-perl, "
    "macOS: brew install exiftool, Windows: exiftool.org) or use --write xmp"
)

# exiftool config defining ramtag's XMP namespace (same properties as in ramtag's sidecars).
_FIELD_KEYS = ("Subject", "HierarchicalSubject", "TagsList", "LastKeywordXMP", "Keywords")
_RECORD_LISTS = (
    "Tags",
    *(f"Added{k}" for k in _FIELD_KEYS),
    *(f"Filled{k}" for k in _FIELD_KEYS),
    "UserRoots",
)
_RECORD_SIMPLE = ("Model", "Date", "Created", "Seeded")
EXIFTOOL_CONFIG = (
    "%Image::ExifTool::UserDefined = (\n"
    "    'Image::ExifTool::XMP::Main' => {\n"
    "        ramtag => { SubDirectory => { TagTable => 'Image::ExifTool::UserDefined::ramtag' } },\n"
    "    },\n"
    ");\n"
    "%Image::ExifTool::UserDefined::ramtag = (\n"
    "    GROUPS => { 0 => 'XMP', 1 => 'XMP-ramtag', 2 => 'Image' },\n"
    f"    NAMESPACE => {{ 'ramtag' => '{RAMTAG_NS}' }},\n"
    "    WRITABLE => 'string',\n"
    + "".join(f"    {name} => {{ List => 'Bag' }},\n" for name in _RECORD_LISTS)
    + "".join(f"    {name} => {{ }},\n" for name in _RECORD_SIMPLE)
    + ");\n1;\n"
)


def find_exiftool() -> str | None:
    """Path of the exiftool executable, or None."""
    return shutil.which("exiftool")


class _TimedExifTool(pyexiftool.ExifTool):
    """pyexiftool's process handling, with a command protocol that has a timeout and detects EOF.

    (pyexiftool 0.5.6 waits forever on a hung exiftool and spins on a dead one.)
    """

    timeout: float = 60.0

    def execute(self, *params: str | bytes, raw_bytes: bool = False) -> Any:
        if os.name == "nt":  # select() does not work on pipes there: no timeout
            return super().execute(*params, raw_bytes=raw_bytes)
        if not self.running:
            raise ExiftoolError("exiftool is not running; it is restarted on the next image")
        token = secrets.randbelow(900_000) + 100_000
        args = [p if isinstance(p, bytes) else p.encode("utf-8") for p in params]
        for a in args:
            if b"\n" in a or b"\r" in a:
                raise ExiftoolError(f"{a[:80]!r}: exiftool cannot take a newline in an argument; rename it")
        args += [b"-echo4", f"=${{status}}=post{token}".encode(), f"-execute{token}".encode()]
        proc: Any = self._process
        out_end, err_end = f"{{ready{token}}}".encode(), f"post{token}".encode()
        bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        ends = {proc.stdout.fileno(): out_end, proc.stderr.fileno(): err_end}
        deadline = time.monotonic() + self.timeout
        try:
            proc.stdin.write(b"\n".join(args) + b"\n")
            proc.stdin.flush()
            pending = set(bufs)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill()
                    raise ExiftoolError(f"exiftool did not answer within {self.timeout:.0f} s; stopped it")
                ready, _, _ = select.select(list(pending), [], [], remaining)
                for fd in ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        self._kill()
                        raise ExiftoolError("exiftool exited unexpectedly; it is restarted on the next image")
                    bufs[fd] += chunk
                    if bytes(bufs[fd][-len(ends[fd]) - 8 :]).strip().endswith(ends[fd]):
                        pending.discard(fd)
        except (OSError, ValueError) as e:
            self._kill()
            raise ExiftoolError(
                f"lost the connection to exiftool ({e}); restarting it for the next image"
            ) from e
        out = bytes(bufs[proc.stdout.fileno()]).strip()[: -len(out_end)]
        err = bytes(bufs[proc.stderr.fileno()]).strip()[: -len(err_end)]
        m = re.search(rb"=(\d+)=$", err)
        status = int(m.group(1)) if m else 1
        err = err[: m.start()] if m else err
        self._last_stdout = out.decode("utf-8", "replace")
        self._last_stderr = err.decode("utf-8", "replace")
        self._last_status = status
        return out if raw_bytes else self._last_stdout

    def _kill(self) -> None:
        proc: Any = self._process
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self._flag_running_false()


class ExiftoolSession:
    """One long-lived exiftool process; started on first use, restarted after a failure. Thread-safe."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.executable = find_exiftool()
        if self.executable is None:
            raise ExiftoolError(INSTALL_HINT)
        self.timeout = timeout
        self._tool: _TimedExifTool | None = None
        self._writable: frozenset[str] | None = None
        self._lock = threading.Lock()

    def _start(self) -> _TimedExifTool:
        if self._tool is not None:
            with warnings.catch_warnings():  # pyexiftool warns when it finds its process died
                warnings.simplefilter("ignore")
                if self._tool.running:
                    return self._tool
            log.warning("exiftool stopped unexpectedly; starting it again")
        fd, config = tempfile.mkstemp(prefix="ramtag-exiftool-", suffix=".config")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(EXIFTOOL_CONFIG)
            tool = _TimedExifTool(executable=self.executable, common_args=[], config_file=config)
            tool.timeout = self.timeout
            tool.run()  # exiftool reads the config at start-up; the file can go afterwards
        except (OSError, RuntimeError, pyexiftool.exceptions.ExifToolException) as e:
            raise ExiftoolError(f"{self.executable}: could not start exiftool ({e}); {INSTALL_HINT}") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(config)
        self._tool = tool
        return tool

    def execute(self, *args: str | bytes) -> tuple[str, str, int]:
        """Run one command: ``(stdout, stderr, exit status)``. Raises ExiftoolError on timeout/crash."""
        with self._lock:
            tool = self._start()
            out = tool.execute(*args)
            return str(out), str(tool.last_stderr or ""), int(tool.last_status or 0)

    def writable_suffixes(self) -> frozenset[str]:
        """Lower-case extensions (".jpg") exiftool can write, from ``exiftool -listwf``."""
        if self._writable is None:
            out, _, _ = self.execute("-listwf")
            words = out.split(":", 1)[-1].split()
            self._writable = frozenset("." + w.lower() for w in words)
        return self._writable

    def read(self, path: Path, tags: list[str]) -> dict[str, Any]:
        """The requested tags of one file (-j -G1), values kept as exiftool's text."""
        out, err, status = self.execute("-j", "-G1", *(f"-{t}" for t in tags), _arg_path(path))
        if status != 0 or not out.strip():
            raise ExiftoolError(f"{path}: exiftool could not read it ({_first_error(err)})")
        try:
            return dict(json.loads(out, parse_float=str, parse_int=str)[0])
        except (ValueError, IndexError, KeyError) as e:
            raise ExiftoolError(f"{path}: unexpected exiftool output ({e})") from None

    def close(self) -> None:
        with self._lock:
            if self._tool is not None and self._tool.running:
                with contextlib.suppress(Exception):
                    self._tool.terminate(timeout=5)
            self._tool = None


def _arg_path(path: Path) -> bytes:
    return os.fsencode(os.path.abspath(path))


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return (errors or lines or ["no details"])[0]
