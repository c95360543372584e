"""What every writer shares: the outcome record, the writer protocol and the keyword bookkeeping.

Keyword bookkeeping (used by both the sidecar writer and the exiftool writer): ramtag records, per
keyword property, exactly the values *it added* (values the user already had are never recorded).
On a re-run those values are taken out and the new tags put in; ``untag`` takes them out and stops.
So re-runs never duplicate and a keyword the user had before ramtag survives ``untag``. It also
records the values it copied between the user's own properties so that they agree (``filled``), and
which hierarchy-root values the user had before (:func:`plan_fields` plans all of it for both writers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from ramtag.results import ImageTags

log = logging.getLogger(__name__)

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
    # KeywordField.key -> values ramtag copied between the user's own keyword properties so that they
    # agree (dc:subject <-> lr:hierarchicalSubject <-> digiKam:TagsList); untag takes them out again
    filled: dict[str, list[str]] = field(default_factory=dict)
    # hierarchy-root values (``ramtag``, ``ramtag|...``) the user's keywords held before ramtag's first
    # write: never taken out as leftovers of ramtag's hierarchy
    user_roots: list[str] = field(default_factory=list)
    # digest of what a sidecar ramtag created held right after it was seeded from the photo's embedded
    # metadata (untag deletes such a sidecar when, without ramtag's additions, it still holds just that)
    seeded: str = ""

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

        def norm(d: dict[str, list[str]]) -> dict[str, list[str]]:
            return {k: v for k, v in d.items() if v}

        mine = (self.tags, norm(self.added), norm(self.filled), self.model, self.created)
        theirs = (other.tags, norm(other.added), norm(other.filled), other.model, other.created)
        return mine == theirs and (self.user_roots, self.seeded) == (other.user_roots, other.seeded)


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# Look-alikes for the hierarchy separators inside one level's name: readers split lr:hierarchicalSubject
# on "|" and digiKam:TagsList on "/" (digiKam also turns "|" into "/" when it reads lr:...), so a tag
# named "胡同/球道" must not carry either character into a hierarchical value. U+2215 DIVISION SLASH and
# U+2223 DIVIDES look the same in common fonts and no reader splits on them. dc:subject (flat) and
# IPTC Keywords keep the name as it is.
SLASH_LOOKALIKE = "\u2215"  # ∕
PIPE_LOOKALIKE = "\u2223"  # ∣


def level_name(name: str) -> str:
    """One level of a hierarchical keyword, with ``/`` and ``|`` replaced by their look-alikes."""
    return name.replace("/", SLASH_LOOKALIKE).replace("|", PIPE_LOOKALIKE)


def pipe_to_slash(value: str) -> str:
    """``People|AC/DC`` (lr:hierarchicalSubject) -> ``People/AC∕DC`` (digiKam:TagsList)."""
    return "/".join(level.replace("/", SLASH_LOOKALIKE) for level in value.split("|"))


def slash_to_pipe(value: str) -> str:
    """``People/A|B`` (digiKam:TagsList) -> ``People|A∣B`` (lr:hierarchicalSubject)."""
    return "|".join(level.replace("|", PIPE_LOOKALIKE) for level in value.split("/"))


# Characters XML 1.0 forbids (C0 controls but tab/newline/CR, lone surrogates, U+FFFE/U+FFFF), plus the
# whitespace controls and C1 controls, which have no place in a keyword either.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_SPACES = re.compile("[\t\n\r\x0b\x0c]+")


def clean_tag_names(names: Iterable[str], warned: set[str] | None = None) -> list[str]:
    """Tag names as they may go into a file: tab/newline/CR become a space, other control characters
    and anything XML forbids are dropped (a name left empty is dropped), each change logged once per
    name (``warned`` remembers which)."""
    out: list[str] = []
    for name in names:
        clean = _FORBIDDEN.sub("", _SPACES.sub(" ", name))
        clean = clean.strip() if clean != name else clean
        if clean != name and (warned is None or name not in warned):
            if warned is not None:
                warned.add(name)
            what = f"written as {clean!r}" if clean else "left out"
            log.warning("tag %r holds characters a metadata file cannot hold; %s", name, what)
        if clean and clean not in out:
            out.append(clean)
    return out


def keyword_values(names: Sequence[str], style: str, hierarchy_root: str) -> list[str]:
    """Tag names -> the values of one property (deduplicated, order kept).

    ``hierarchy_root`` is a ``|``-separated parent path ("" for flat keywords); digiKam's
    ``TagsList`` style uses ``/`` as separator. In the hierarchical styles a ``/`` or ``|`` inside a
    name becomes its look-alike (:data:`SLASH_LOOKALIKE`, :data:`PIPE_LOOKALIKE`), never a level.
    """
    root = hierarchy_root.strip("|")
    out: list[str] = []
    for name in names:
        if style == "pipe":
            value = f"{root}|{level_name(name)}" if root else level_name(name)
        elif style == "slash":
            value = f"{pipe_to_slash(root)}/{level_name(name)}" if root else level_name(name)
        else:
            value = name
        if value not in out:
            out.append(value)
    return out


# Keys (KeywordField.key) of the properties the fill and the root clean-up look at.
_S, _H, _T = "Subject", "HierarchicalSubject", "TagsList"
_SLASH_KEYS = ("TagsList", "LastKeywordXMP")


def _fills(base: dict[str, list[str]], wanted: dict[str, list[str]], kept: set[str]) -> dict[str, list[str]]:
    """Values that make the user's keyword properties agree: a missing one of dc:subject /
    lr:hierarchicalSubject / digiKam:TagsList is filled from a present one (``|`` <-> ``/``), and flat
    keywords the hierarchy does not hold become top-level keywords in it (darktable reads only
    lr:hierarchicalSubject, digiKam and Immich read digiKam:TagsList first).

    ``base``: the user's own values of each property; ``wanted``: ramtag's; ``kept``: the properties
    that may exist. A property is only filled when it will exist anyway (the user has it or ramtag adds
    to it).
    """
    flat, pipe, slash = base.get(_S, []), base.get(_H, []), base.get(_T, [])
    exists = {k: k in kept and bool(base.get(k) or wanted.get(k)) for k in (_S, _H, _T)}
    out: dict[str, list[str]] = {_S: [], _H: [], _T: []}
    if exists[_H] and not pipe and slash:
        out[_H] += [slash_to_pipe(v) for v in slash]
    if exists[_T] and not slash and pipe:
        out[_T] += [pipe_to_slash(v) for v in pipe]
    hierarchy = pipe or [slash_to_pipe(v) for v in slash]
    if exists[_S] and not flat and hierarchy:
        out[_S] += list(dict.fromkeys(v.split("|")[-1] for v in hierarchy))
    levels = {level.casefold() for v in hierarchy for level in v.split("|")}
    levels |= {level.casefold() for v in slash for level in v.split("/")}
    for value in flat:
        if value.casefold() not in levels:  # a flat keyword the hierarchy does not hold: top level
            for key in (_H, _T):
                if exists[key]:
                    out[key].append(level_name(value))
    return out


def _roots(hierarchy_root: str, old: RamtagRecord | None) -> list[str]:
    """The hierarchy roots ramtag's values live under (the current one, and the previous run's)."""
    roots = [hierarchy_root.strip("|")] if hierarchy_root.strip("|") else []
    for value in old.added.get(_H, []) if old else []:
        if "|" in value:
            roots.append(value.rsplit("|", 1)[0])
    return list(dict.fromkeys(roots))


def _root_values(roots: list[str]) -> dict[str, dict[str, str]]:
    """Per property style, the values a root leaves behind -> the root prefix (pipe path) they stand for:
    ``ramtag`` in dc:subject (darktable adds each level of a hierarchy as a flat keyword), ``ramtag`` in
    lr:hierarchicalSubject and digiKam:TagsList."""
    flat: dict[str, str] = {}
    pipe: dict[str, str] = {}
    slash: dict[str, str] = {}
    for root in roots:
        levels = root.split("|")
        for i, level in enumerate(levels):
            prefix = "|".join(levels[: i + 1])
            flat.setdefault(level, prefix)
            pipe.setdefault(prefix, prefix)
            slash.setdefault(pipe_to_slash(prefix), prefix)
    return {"flat": flat, "pipe": pipe, "slash": slash}


def plan_fields(
    fields: Sequence[KeywordField],
    current: dict[str, list[str] | None],
    old: RamtagRecord | None,
    record: RamtagRecord,
    names: list[str],
    hierarchy_root: str,
    *,
    fill: bool,
) -> dict[str, list[str]]:
    """The final values of every keyword property (``current``: key -> values, None where absent): the
    user's own values, the fills that make the properties agree (``fill``), then ramtag's ``names``.
    Notes in ``record`` what ramtag added and filled, and takes the hierarchy root out where nothing
    under it is left. ``names=[]`` with ``fill=False`` takes everything of ramtag's out (``untag``)."""
    base: dict[str, list[str]] = {}
    for key, values in current.items():
        ours = set(old.added.get(key, [])) | set(old.filled.get(key, [])) if old else set()
        base[key] = [v for v in values or [] if v not in ours]
    wanted = {f.key: keyword_values(names, f.style, hierarchy_root) for f in fields}
    kept = {f.key for f in fields if current[f.key] is not None or f.create}  # properties that may exist
    fills = _fills(base, wanted, kept) if fill else {}
    final: dict[str, list[str]] = {}
    for f in fields:
        if current[f.key] is None and not f.create:
            continue
        seen = set(base[f.key])
        filled = [v for v in dict.fromkeys(fills.get(f.key, [])) if v not in seen]
        seen.update(filled)
        added = [v for v in wanted[f.key] if v not in seen]
        final[f.key] = base[f.key] + filled + added
        record.added[f.key], record.filled[f.key] = added, filled

    # The hierarchy root (and darktable's flat copy of it) goes when no value under it is left, unless
    # the user had it before ramtag's first write.
    leftovers = _root_values(_roots(hierarchy_root if names else "", old))
    style = {f.key: f.style for f in fields}
    if old is None:
        record.user_roots = [
            v for k, vs in base.items() if k in final for v in vs if v in leftovers[style[k]]
        ]
    else:
        record.user_roots = list(old.user_roots)

    def in_use(prefix: str) -> bool:
        slash = pipe_to_slash(prefix) + "/"
        return any(v.startswith(prefix + "|") for v in final.get(_H, [])) or any(
            v.startswith(slash) for k in _SLASH_KEYS for v in final.get(k, [])
        )

    for key, values in final.items():
        table = leftovers[style[key]]
        final[key] = [v for v in values if v not in table or v in record.user_roots or in_use(table[v])]
    return final
