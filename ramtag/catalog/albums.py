"""Albums: a folder of links to the images matching a query, made or refreshed in place.

The folder keeps a manifest (``.ramtag-album.json``) of the links ramtag made there. A refresh adds
links for new matches, removes links of images that no longer match, and re-creates links that
went missing; it only ever removes an entry that is in the manifest AND is still the link ramtag
made (same symlink target, or for hard links the same inode). Anything else in the folder (the
user's own files, a link replaced by a real file) is never touched.

Crash safety: the manifest is written (atomically) listing the links about to be made before they
are made, and rewritten after removals, so a killed refresh never leaves a link ramtag forgot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from ..writers.atomic import atomic_write_bytes
from .identity import PathLike, display, path_key
from .store import Catalog

log = logging.getLogger(__name__)

MANIFEST = ".ramtag-album.json"


@dataclass
class AlbumResult:
    folder: Path
    matched: int = 0
    added: list[str] = field(default_factory=list)  # link names made
    removed: list[str] = field(default_factory=list)  # link names removed
    kept: int = 0  # links already right
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name or image, one-line reason)


def _enc(b: bytes) -> str:
    """Bytes -> a JSON-safe str that round-trips (undecodable bytes as surrogate escapes)."""
    return os.fsdecode(b)


def _load(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "links": {}}
    except (OSError, ValueError) as e:
        raise InputError(
            f"{path}: unreadable album manifest ({e}); move it away to start the album afresh"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("links"), dict):
        raise InputError(f"{path}: not a ramtag album manifest; move it away to start the album afresh")
    return data


def _save(folder: Path, data: dict[str, Any]) -> None:
    # ensure_ascii: surrogate-escaped (non-UTF-8) names survive as \udcxx escapes
    atomic_write_bytes(folder / MANIFEST, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("ascii"))


def _link_name(target: bytes, taken: set[bytes]) -> bytes:
    """The image's file name, or ``name~<hash>.ext`` when another image took it."""
    base = os.path.basename(target)
    if base not in taken:
        return base
    stem, ext = os.path.splitext(base)
    tag = hashlib.sha256(target).hexdigest()[:8].encode()
    return stem + b"~" + tag + ext


def _ours(link: bytes, entry: dict[str, Any]) -> bool:
    """Is ``link`` still exactly what ramtag made?"""
    try:
        st = os.lstat(link)
    except OSError:
        return False
    if entry.get("kind") == "hardlink":
        return (st.st_ino, st.st_dev) == (entry.get("inode"), entry.get("device")) and os.path.isfile(link)
    return os.path.islink(link) and os.readlink(link) == os.fsencode(entry["target"])


def make_album(
    cat: Catalog,
    expr: str,
    folder: PathLike,
    *,
    paths: Sequence[PathLike] = (),
    hardlink: bool = False,
    dry_run: bool = False,
) -> AlbumResult:
    """Make or refresh ``folder`` as the links to the images matching ``expr`` under ``paths``."""
    folder_b = os.fsencode(os.path.abspath(os.fsencode(folder)))
    fpath = Path(os.fsdecode(folder_b))
    result = AlbumResult(fpath)
    if os.path.exists(folder_b) and not os.path.isdir(folder_b):
        raise UsageError(f"--to {fpath}: exists and is not a folder; pick another")
    kind = "hardlink" if hardlink else "symlink"
    targets = cat.paths_of(cat.query_ids(expr, paths))
    result.matched = len(targets)
    manifest = _open_manifest(fpath, folder_b, kind)
    links: dict[str, dict[str, Any]] = manifest["links"]
    wanted = {path_key(t) for t in targets}
    plan = _plan_links(folder_b, links, wanted, result)
    stale = [n for n, e in links.items() if os.fsencode(e["target"]) not in wanted]
    if dry_run:
        result.added = [display(n) for n, _ in plan]
        result.removed = stale
        return result

    os.makedirs(folder_b, exist_ok=True)
    manifest["kind"] = kind
    manifest["query"] = expr
    for name, target in plan:
        links[_enc(name)] = {"target": _enc(target), "kind": kind}
    _save(fpath, manifest)  # before making them: a killed refresh never leaves a link it forgot
    _make_links(folder_b, plan, links, hardlink, result)
    _remove_stale(folder_b, stale, links, result)
    _save(fpath, manifest)
    log.info(
        "album %s: %d matches, %d added, %d removed",
        fpath,
        result.matched,
        len(result.added),
        len(result.removed),
    )
    return result


def _open_manifest(fpath: Path, folder_b: bytes, kind: str) -> dict[str, Any]:
    """The album's manifest (empty for a new folder); refuses to refresh it with the other link kind."""
    manifest: dict[str, Any] = _load(fpath) if os.path.isdir(folder_b) else {"version": 1, "links": {}}
    if manifest.get("kind", kind) != kind:
        raise UsageError(
            f"{fpath}: album was made with {manifest.get('kind')}s; "
            "refresh it the same way or use another folder"
        )
    return manifest


def _plan_links(
    folder_b: bytes, links: dict[str, dict[str, Any]], wanted: set[bytes], result: AlbumResult
) -> list[tuple[bytes, bytes]]:
    """The (link name, target) pairs to make for ``wanted``; counts links already right as kept.

    A manifest entry whose link was replaced by another file is dropped from ``links`` (the file is
    left alone) and its image gets a new name; a name taken by anything in the folder is never reused.
    """
    by_target = {os.fsencode(e["target"]): name for name, e in links.items()}
    # names in use: ours, and anything else already in the folder (never overwritten)
    taken = {os.fsencode(n) for n in links}
    if os.path.isdir(folder_b):
        taken |= set(os.listdir(folder_b))

    plan: list[tuple[bytes, bytes]] = []
    for target in sorted(wanted):
        name_s = by_target.get(target)
        if name_s is not None:
            link = os.path.join(folder_b, os.fsencode(name_s))
            if _ours(link, links[name_s]):
                result.kept += 1
                continue
            if not os.path.lexists(link):  # our link went missing: make it again under its name
                plan.append((os.fsencode(name_s), target))
                continue
            result.skipped.append((name_s, "replaced by another file since ramtag made it; left alone"))
            del links[name_s]
        name = _link_name(target, taken)
        if name in taken:
            result.skipped.append((display(target), f"{display(name)} is taken in the album folder"))
            continue
        taken.add(name)
        plan.append((name, target))
    return plan


def _make_links(
    folder_b: bytes,
    plan: list[tuple[bytes, bytes]],
    links: dict[str, dict[str, Any]],
    hardlink: bool,
    result: AlbumResult,
) -> None:
    """Make the planned links (already in ``links``); one that cannot be made leaves ``links`` again."""
    for name, target in plan:
        link = os.path.join(folder_b, name)
        try:
            if hardlink:
                os.link(target, link)
                st = os.stat(link)
                links[_enc(name)].update(inode=st.st_ino, device=st.st_dev)
            else:
                os.symlink(target, link)
            result.added.append(display(name))
        except OSError as e:
            del links[_enc(name)]
            why = "hard links cannot cross filesystems; drop --hardlink" if e.errno == 18 else e.strerror
            result.skipped.append((display(target), f"cannot link: {why}"))


def _remove_stale(
    folder_b: bytes, stale: list[str], links: dict[str, dict[str, Any]], result: AlbumResult
) -> None:
    """Remove the links of images that no longer match, only where each is still what ramtag made.

    An entry whose link could not be removed stays in ``links`` (a later refresh tries again); one
    whose link was changed or is gone is dropped and the file left alone.
    """
    for name_s in stale:
        link = os.path.join(folder_b, os.fsencode(name_s))
        if _ours(link, links[name_s]):
            try:
                os.unlink(link)
                result.removed.append(name_s)
            except OSError as e:
                result.skipped.append((display(os.fsencode(name_s)), f"cannot remove: {e.strerror}"))
                continue
        elif os.path.lexists(link):
            result.skipped.append((display(os.fsencode(name_s)), "changed since ramtag made it; left alone"))
        del links[name_s]
