"""``--write embed``: tags written into the image files through exiftool.

One long-lived ``exiftool -stay_open`` process per writer (pyexiftool), every command bounded by a
timeout and its exit status and ``Error:`` lines checked. ramtag's record (what it added to each
keyword property, the last run's tags) lives in the image's XMP under ramtag's own namespace, defined
for exiftool by a small config file passed with ``-config``; so re-runs replace ramtag's previous
tags and ``untag`` removes exactly them. Keywords are added with the ``-=``/``+=`` pair, so nothing
is ever duplicated. Formats exiftool cannot write, and camera RAW files (never modified: they are the
photographer's negatives, and RAW converters read sidecars), get an XMP sidecar instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramtag.errors import ExiftoolError
from ramtag.fsutil import write_target
from ramtag.raw import is_raw
from ramtag.results import ImageTags
from ramtag.writers.base import (
    KeywordField,
    RamtagRecord,
    WriteOutcome,
    clean_tag_names,
    plan_fields,
    utc_now,
)
from ramtag.writers.exiftool_session import (
    EXIFTOOL_CONFIG,
    INSTALL_HINT,
    ExiftoolSession,
    _arg_path,
    _first_error,
    find_exiftool,
)
from ramtag.writers.lock import file_lock
from ramtag.writers.xmp import XmpSidecarWriter

__all__ = [
    "EXIFTOOL_CONFIG",
    "INSTALL_HINT",
    "ExiftoolSession",
    "ExiftoolWriter",
    "find_exiftool",
    "untag_image",
]

log = logging.getLogger(__name__)

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
        filled={f.key: _as_list(get(f"XMP-ramtag:Filled{f.key}")) for f in EMBED_FIELDS},
        user_roots=_as_list(get("XMP-ramtag:UserRoots")),
        model=str(get("XMP-ramtag:Model", "") or ""),
        date=str(get("XMP-ramtag:Date", "") or ""),
    )


def _same_keywords(old: RamtagRecord, new: RamtagRecord) -> bool:
    """True when ``new`` would leave ramtag's embedded keywords as they are: the same tags and additions
    as last time (the date and model alone never rewrite an image)."""
    return RamtagRecord(new.tags, new.added).same_content(RamtagRecord(old.tags, old.added))


def _record_args(record: RamtagRecord) -> list[str]:
    args: list[str] = []
    lists = (
        {"Tags": record.tags}
        | {f"Added{f.key}": record.added.get(f.key, []) for f in EMBED_FIELDS}
        | {f"Filled{f.key}": record.filled.get(f.key, []) for f in EMBED_FIELDS}
        | {"UserRoots": record.user_roots}
    )
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
        self._warned_names: set[str] = set()
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
        if is_raw(path):
            return self._fallback(result, path, "RAW files are never modified")
        if path.suffix.lower() not in self.session.writable_suffixes():
            return self._fallback(result, path, f"exiftool cannot write {path.suffix} files")
        names = clean_tag_names(result.tag_names(self.lang), self._warned_names)
        # exiftool replaces the file it writes: a symlinked photo is written through to its target (which
        # must exist, in the photo's folder), so the link stays a link.
        path = write_target(path, within=[path.parent])
        # The lock orders concurrent ramtag runs on this photo: read, merge and write are one step.
        with contextlib.nullcontext() if self.dry_run else file_lock(path):
            return self._write(path, names)

    def _write(self, path: Path, names: list[str]) -> WriteOutcome:
        meta = self.session.read(path, _READ_TAGS)
        old = _record_from(meta)
        holds_iptc = meta.get("File:FileType") in IPTC_FILE_TYPES or "IPTC:Keywords" in meta
        record = RamtagRecord(tags=list(names), model=self.model, date=utc_now())
        if old is None and not names:  # nothing of ramtag's to add or take out: the photo is left alone,
            # even where its own keyword fields disagree (reconciling them is not worth a rewrite)
            note = f"{path}: no tags to embed"
            return WriteOutcome(path, path, "unchanged", note, (), record.fingerprint())
        fields = [f for f in EMBED_FIELDS if holds_iptc or not f.tag.startswith("IPTC:")]
        current = {f.key: _as_list(meta[f.tag]) if f.tag in meta else None for f in fields}
        final = plan_fields(fields, current, old, record, names, self.hierarchy_root, fill=True)
        args: list[str] = []
        for field in fields:
            if field.key not in final:
                continue
            args += _field_args(field.tag, current[field.key] or [], final[field.key])
            if field.key == "Keywords" and final["Keywords"] and meta.get("IPTC:CodedCharacterSet") != "UTF8":
                args.append("-IPTC:CodedCharacterSet=UTF8")
        tags = tuple(names)
        if old is not None and not args and _same_keywords(old, record):  # no rewrite, no *_original
            return WriteOutcome(path, path, "unchanged", f"{path}: up to date", tags, old.fingerprint())
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

    def _fallback(self, result: ImageTags, path: Path, note: str) -> WriteOutcome:
        outcome = self.fallback.write(result)
        action = "fallback-sidecar" if outcome.action == "written" else outcome.action
        msg = f"{note}: {outcome.message}"
        return WriteOutcome(path, outcome.target, action, msg, outcome.tags, outcome.fingerprint)

    def close(self) -> None:
        try:
            self.fallback.close()
        finally:
            self.session.close()


def untag_image(
    session: ExiftoolSession, path: Path, *, dry_run: bool = False, backup: bool = True
) -> WriteOutcome:
    """Remove what ramtag embedded in one image (keywords it added and its XMP record)."""
    path = write_target(path, within=[path.parent])
    with contextlib.nullcontext() if dry_run else file_lock(path):
        return _untag_image(session, path, dry_run=dry_run, backup=backup)


def _untag_image(session: ExiftoolSession, path: Path, *, dry_run: bool, backup: bool) -> WriteOutcome:
    meta = session.read(path, _READ_TAGS)
    old = _record_from(meta)
    if old is None:
        return WriteOutcome(path, path, "unchanged", f"{path}: no embedded ramtag tags")
    current = {f.key: _as_list(meta[f.tag]) if f.tag in meta else None for f in EMBED_FIELDS}
    final = plan_fields(EMBED_FIELDS, current, old, RamtagRecord(), [], "", fill=False)
    args: list[str] = []
    for field in EMBED_FIELDS:
        if field.key in final:
            args += _field_args(field.tag, current[field.key] or [], final[field.key])
    tags = tuple(old.tags)
    if dry_run:
        return WriteOutcome(path, path, "dry-run", f"{path}: would remove {len(tags)} embedded tags", tags)
    mode = [] if backup else ["-overwrite_original"]
    _, err, status = session.execute(*mode, *args, "-XMP-ramtag:all=", _arg_path(path))
    if status != 0 or "Error" in err:
        raise ExiftoolError(f"{path}: exiftool could not write it ({_first_error(err)}); file left as it was")
    return WriteOutcome(path, path, "written", f"{path}: removed {len(tags)} embedded tags", tags)
