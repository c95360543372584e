"""``--write embed``: tags written into the image files through exiftool.

One long-lived ``exiftool -stay_open`` process per writer (pyexiftool), every command bounded by a
timeout and its exit status and ``Error:`` lines checked. ramtag's record (what it added to each
keyword property, the last run's tags) lives in the image's XMP under ramtag's own namespace, defined
for exiftool by a small config file passed with ``-config``; so re-runs replace ramtag's previous
tags and ``untag`` removes exactly them. Keywords are added with the ``-=``/``+=`` pair, so nothing
is ever duplicated. Formats exiftool cannot write get an XMP sidecar instead.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import exiftool as pyexiftool

from ramtag.errors import ExiftoolError
from ramtag.results import ImageTags
from ramtag.writers.base import (
    RAMTAG_NS,
    KeywordField,
    RamtagRecord,
    WriteOutcome,
    keyword_values,
    plan_keywords,
    utc_now,
)
from ramtag.writers.xmp import XmpSidecarWriter

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "exiftool not found; install it (Debian/Ubuntu: apt install libimage-exiftool-perl, "
    "macOS: brew install exiftool, Windows: exiftool.org) or use --write xmp"
)

# exiftool config defining ramtag's XMP namespace (same properties as in ramtag's sidecars).
_RECORD_LISTS = (
    "Tags",
    "AddedSubject",
    "AddedHierarchicalSubject",
    "AddedTagsList",
    "AddedLastKeywordXMP",
    "AddedKeywords",
)
_RECORD_SIMPLE = ("Model", "Date", "Created")
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

# File types (exiftool's File:FileType) whose format holds IPTC; others get IPTC only if they have it.
IPTC_FILE_TYPES = frozenset({"JPEG", "TIFF", "PSD", "PSB"})


@dataclass(frozen=True)
class EmbedField(KeywordField):
    """A keyword tag written through exiftool."""

    tag: str = ""  # exiftool's group:name


EMBED_FIELDS: tuple[EmbedField, ...] = (
    EmbedField("Subject", "flat", True, "XMP-dc:Subject"),
    EmbedField("HierarchicalSubject", "pipe", True, "XMP-lr:HierarchicalSubject"),
    EmbedField("TagsList", "slash", False, "XMP-digiKam:TagsList"),
    EmbedField("LastKeywordXMP", "slash", False, "XMP-microsoft:LastKeywordXMP"),
    EmbedField("Keywords", "flat", True, "IPTC:Keywords"),  # create only where the format holds IPTC
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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


_READ_TAGS = [f.tag for f in EMBED_FIELDS] + ["IPTC:CodedCharacterSet", "XMP-ramtag:all", "File:FileType"]


def _record_from(meta: dict[str, Any]) -> RamtagRecord | None:
    if not any(k.startswith("XMP-ramtag:") for k in meta):
        return None
    get = meta.get
    return RamtagRecord(
        tags=_as_list(get("XMP-ramtag:Tags")),
        added={f.key: _as_list(get(f"XMP-ramtag:Added{f.key}")) for f in EMBED_FIELDS},
        model=str(get("XMP-ramtag:Model", "") or ""),
        date=str(get("XMP-ramtag:Date", "") or ""),
    )


def _same_keywords(old: RamtagRecord | None, new: RamtagRecord) -> bool:
    """True when ``new`` would leave ramtag's embedded keywords as they are: the same tags and additions
    as last time, or no tags and no earlier record (the date and model alone never rewrite an image)."""
    if old is None:
        return not new.tags
    return RamtagRecord(new.tags, new.added).same_content(RamtagRecord(old.tags, old.added))


def _record_args(record: RamtagRecord) -> list[str]:
    args: list[str] = []
    lists = {"Tags": record.tags} | {f"Added{f.key}": record.added.get(f.key, []) for f in EMBED_FIELDS}
    for name, values in lists.items():
        if values:
            args += [f"-XMP-ramtag:{name}={v}" for v in values]
        else:
            args.append(f"-XMP-ramtag:{name}=")
    args += [f"-XMP-ramtag:Model={record.model}", f"-XMP-ramtag:Date={record.date}"]
    return args


def _field_args(tag: str, current: list[str], final: list[str]) -> list[str]:
    """exiftool arguments turning list ``current`` into ``final`` (as sets; the user's order kept)."""
    remove = [v for v in dict.fromkeys(current) if v not in final]
    add = [v for v in dict.fromkeys(final) if v not in current]
    return [f"-{tag}-={v}" for v in remove] + [a for v in add for a in (f"-{tag}-={v}", f"-{tag}+={v}")]


class ExiftoolWriter:
    """Embeds tags into image files with exiftool (``--write embed``). Thread-safe (one process).

    ``backup=True`` keeps exiftool's ``<file>_original`` copy of the untouched image; ``backup=False``
    passes ``-overwrite_original``. Formats exiftool cannot write get a sidecar
    (action ``"fallback-sidecar"``).
    """

    def __init__(
        self,
        *,
        sidecar_name: str = "ext",
        hierarchy_root: str = "ramtag",
        lang: str = "en",
        dry_run: bool = False,
        backup: bool = True,
        repair_sidecars: bool = False,
        model: str = "",
        timeout: float = 60.0,
    ) -> None:
        self.session = ExiftoolSession(timeout=timeout)
        self.session.writable_suffixes()  # starts exiftool now: a broken install fails once, up front
        self.hierarchy_root = hierarchy_root
        self.lang = lang
        self.dry_run = dry_run
        self.backup = backup
        self.model = model
        self.fallback = XmpSidecarWriter(
            sidecar_name=sidecar_name,
            hierarchy_root=hierarchy_root,
            lang=lang,
            dry_run=dry_run,
            repair_sidecars=repair_sidecars,
            model=model,
        )

    def write(self, result: ImageTags) -> WriteOutcome:
        if result.error is not None:
            return WriteOutcome(result.path, None, "skipped", result.error)
        if result.path is None:
            return WriteOutcome(None, None, "skipped", "in-memory image: no file to embed tags in")
        path = Path(result.path)
        if path.suffix.lower() not in self.session.writable_suffixes():
            return self._fallback(result, path)
        names = result.tag_names(self.lang)
        meta = self.session.read(path, _READ_TAGS)
        old = _record_from(meta)
        holds_iptc = meta.get("File:FileType") in IPTC_FILE_TYPES or "IPTC:Keywords" in meta
        record = RamtagRecord(tags=list(names), model=self.model, date=utc_now())
        args: list[str] = []
        for field in EMBED_FIELDS:
            current = _as_list(meta.get(field.tag))
            exists = field.tag in meta
            if field.tag.startswith("IPTC:") and not holds_iptc:
                continue
            if not exists and not field.create:
                continue
            prev = old.added.get(field.key, []) if old else []
            wanted = keyword_values(names, field.style, self.hierarchy_root)
            final, record.added[field.key] = plan_keywords(current, prev, wanted)
            args += _field_args(field.tag, current, final)
            if field.tag == "IPTC:Keywords" and final and meta.get("IPTC:CodedCharacterSet") != "UTF8":
                args.append("-IPTC:CodedCharacterSet=UTF8")
        tags = tuple(names)
        if not args and _same_keywords(old, record):  # no keyword changes: no rewrite, no *_original
            fp = (old or record).fingerprint()
            return WriteOutcome(path, path, "unchanged", f"{path}: up to date", tags, fp)
        if self.dry_run:
            return WriteOutcome(path, path, "dry-run", f"{path}: would embed {len(names)} tags", tags)
        self._run_write(path, args + _record_args(record))
        msg = f"{path}: embedded {len(names)} tags"
        return WriteOutcome(path, path, "written", msg, tags, record.fingerprint())

    def _run_write(self, path: Path, args: list[str]) -> None:
        mode = [] if self.backup else ["-overwrite_original"]
        out, err, status = self.session.execute(*mode, *args, _arg_path(path))
        if status != 0 or "Error" in err or not re.search(r"\b1 image files? (updated|unchanged)", out):
            raise ExiftoolError(f"{path}: exiftool could not write it ({_first_error(err)}); file unchanged")
        for line in err.splitlines():
            if line.strip():
                log.warning("%s: exiftool: %s", path, line.strip())

    def _fallback(self, result: ImageTags, path: Path) -> WriteOutcome:
        note = f"exiftool cannot write {path.suffix} files"
        outcome = self.fallback.write(result)
        action = "fallback-sidecar" if outcome.action == "written" else outcome.action
        msg = f"{note}: {outcome.message}"
        return WriteOutcome(path, outcome.target, action, msg, outcome.tags, outcome.fingerprint)

    def close(self) -> None:
        self.session.close()


def untag_image(
    session: ExiftoolSession, path: Path, *, dry_run: bool = False, backup: bool = True
) -> WriteOutcome:
    """Remove what ramtag embedded in one image (keywords it added and its XMP record)."""
    meta = session.read(path, _READ_TAGS)
    old = _record_from(meta)
    if old is None:
        return WriteOutcome(path, path, "unchanged", f"{path}: no embedded ramtag tags")
    args: list[str] = []
    for field in EMBED_FIELDS:
        current = _as_list(meta.get(field.tag))
        final, _ = plan_keywords(current, old.added.get(field.key, []), [])
        args += _field_args(field.tag, current, final)
    tags = tuple(old.tags)
    if dry_run:
        return WriteOutcome(path, path, "dry-run", f"{path}: would remove {len(tags)} embedded tags", tags)
    mode = [] if backup else ["-overwrite_original"]
    _, err, status = session.execute(*mode, *args, "-XMP-ramtag:all=", _arg_path(path))
    if status != 0 or "Error" in err:
        raise ExiftoolError(f"{path}: exiftool could not write it ({_first_error(err)}); file left as it was")
    return WriteOutcome(path, path, "written", f"{path}: removed {len(tags)} embedded tags", tags)
