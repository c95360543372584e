"""What every writer shares: the outcome record, the writer protocol and the keyword bookkeeping.

Keyword bookkeeping (used by both the sidecar writer and the exiftool writer): ramtag records, per
keyword property, exactly the values *it added* (values the user already had are never recorded).
On a re-run those values are taken out and the new tags put in; ``untag`` takes them out and stops.
So re-runs never duplicate and a keyword the user had before ramtag survives ``untag``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from ramtag.results import ImageTags

Action = Literal["written", "unchanged", "skipped", "dry-run", "fallback-sidecar", "deleted"]

RAMTAG_NS = "https://github.com/ramtag/ns/1.0/"  # ramtag's own XMP namespace (prefix "ramtag")


@dataclass(frozen=True)
class WriteOutcome:
    """What a writer did for one image (or, for ``untag``, one sidecar or image)."""

    path: Path | None  # the image (for untag of a bare sidecar: the sidecar)
    target: Path | None  # the file written, or that would be written (sidecar, image, JSON Lines file)
    action: Action
    message: str = ""  # one line for the user; says why for "skipped" and "fallback-sidecar"
    tags: tuple[str, ...] = ()  # the tag names written / that would be written / that were removed
    fingerprint: str = ""  # hash of what was written (ramtag's record or the JSON line), kept by the catalog


class TagWriter(Protocol):
    """Writes one image's tags somewhere. Must be usable from one background thread."""

    def write(self, result: ImageTags) -> WriteOutcome: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class KeywordField:
    """One keyword property ramtag maintains, and how a tag name becomes a value in it."""

    key: str  # name in ramtag's record: ramtag:Added<key>
    style: Literal["flat", "pipe", "slash"]  # "cat", "ramtag|cat", "ramtag/cat"
    create: bool  # add the property where it is missing (False: only update one that exists)


@dataclass
class RamtagRecord:
    """ramtag's own note in the metadata: the last run's tags and what it added to each property."""

    tags: list[str] = field(default_factory=list)  # tag names of the last run, best first
    added: dict[str, list[str]] = field(default_factory=dict)  # KeywordField.key -> values ramtag added
    model: str = ""
    date: str = ""  # ISO 8601, UTC
    created: bool = False  # ramtag created the sidecar (untag may delete it when nothing else is left)
    created_date: str = ""  # when it did (ISO 8601, UTC; written as ramtag:Created), "" if unknown

    def fingerprint(self) -> str:
        """Hash of what makes this record ramtag's output: the tags and the values added per property
        (not the date or model), so a re-run can tell whether the file still holds it."""
        body = {"tags": list(self.tags), "added": {k: list(v) for k, v in sorted(self.added.items()) if v}}
        text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return "rec:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def same_content(self, other: RamtagRecord | None) -> bool:
        """Equal apart from the date (a re-run with the same outcome is 'unchanged')."""
        if other is None:
            return False
        norm = {k: v for k, v in self.added.items() if v}
        other_norm = {k: v for k, v in other.added.items() if v}
        return (self.tags, norm, self.model, self.created) == (
            other.tags,
            other_norm,
            other.model,
            other.created,
        )


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def keyword_values(names: Sequence[str], style: str, hierarchy_root: str) -> list[str]:
    """Tag names -> the values of one property (deduplicated, order kept).

    ``hierarchy_root`` is a ``|``-separated parent path ("" for flat keywords); digiKam's
    ``TagsList`` style uses ``/`` as separator.
    """
    root = hierarchy_root.strip("|")
    out: list[str] = []
    for name in names:
        if style == "pipe" and root:
            value = f"{root}|{name}"
        elif style == "slash" and root:
            value = f"{root.replace('|', '/')}/{name}"
        else:
            value = name
        if value not in out:
            out.append(value)
    return out


def plan_keywords(
    current: Iterable[str], previously_added: Iterable[str], wanted: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Return ``(final, added)`` for one property.

    ``final`` = the user's own values (``current`` minus what ramtag added before) plus every wanted
    value they lack; ``added`` = the wanted values ramtag adds (to be recorded for the next run).
    """
    prev = set(previously_added)
    base = [v for v in current if v not in prev]
    present = set(base)
    added: list[str] = []
    for v in wanted:
        if v not in present:
            present.add(v)
            added.append(v)
    return base + added, added
