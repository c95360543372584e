"""Fingerprints of what was written, so a re-run can ask "is that output still there, with that content?".

- XMP sidecar / embedded metadata: the hash of ramtag's own record in it (``ramtag:Tags`` and the
  ``ramtag:Added*`` lists), never of the whole file, so the user editing a rating or their own
  keywords in Lightroom does not make ramtag rewrite it, while deleting the sidecar, ``untag``, or
  ramtag's keywords changing does.
- JSON Lines: the hash of the image's line (one file read answers every image).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..writers.jsonl import line_fingerprint
from .identity import PathLike, path_key

if TYPE_CHECKING:
    from ..writers.base import RamtagRecord


def record_fingerprint(tags: Iterable[str], added: dict[str, list[str]]) -> str:
    """The fingerprint of ramtag's record: tag names as written and the values it added per property."""
    from ..writers.base import RamtagRecord

    return RamtagRecord(tags=list(tags), added=dict(added)).fingerprint()


def fingerprint_of(record: RamtagRecord | None) -> str | None:
    return None if record is None else record.fingerprint()


def sidecar_fingerprint(sidecar: PathLike) -> str | None:
    """The fingerprint of the ramtag record in an XMP sidecar; None: missing, unreadable or without one."""
    from ..writers.xmp import XmpPacket

    try:
        with open(sidecar, "rb") as f:
            data = f.read()
        return fingerprint_of(XmpPacket.parse(data).read_record())
    except (OSError, ValueError):
        return None


def jsonl_fingerprints(path: PathLike) -> dict[bytes, str]:
    """Image key -> fingerprint of its (last) line in a JSON Lines file; {} when the file is missing."""
    out: dict[bytes, str] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; OSError means "no output there"
    except OSError:
        return out
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a torn last line (killed run) does not count as written
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("path"), str):
                out[path_key(value["path"].encode("utf-8", "surrogateescape"))] = line_fingerprint(raw)
    return out
