"""``untag --run ID`` (revert what one run wrote) and ``untag --below SCORE`` (drop low-scored tags),
driven by the catalog's record of outputs, which they keep up to date.

Only outputs whose last writer was that run are reverted (a later run's rewrite of the same sidecar
is that later run's). Reverting removes ramtag's keywords and record from the sidecar / image (as
``ramtag untag`` does) and the images' lines from the JSON Lines file. ``--below`` rewrites each
output with the tags at or above the score, with the hierarchy root / model of the run that wrote it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import RamtagError
from ..results import ImageTags, TagScore
from ..writers.atomic import atomic_write_bytes
from ..writers.base import WriteOutcome
from .identity import PathLike, key_path, path_key
from .outputs import line_fingerprint, sidecar_fingerprint
from .store import Catalog, OutputRow

log = logging.getLogger(__name__)


def _rewrite_jsonl(target: bytes, change: dict[bytes, list[tuple[str, float]] | None]) -> dict[bytes, str]:
    """Rewrite a JSON Lines file: drop the lines of images mapped to None, keep only the given tag names
    for the others. Returns the new fingerprints of the rewritten lines."""
    out: list[bytes] = []
    fps: dict[bytes, str] = {}
    with open(target, "rb") as f:
        for raw in f:
            try:
                d = json.loads(raw)
                key = path_key(d["path"].encode("utf-8", "surrogateescape"))
            except (ValueError, TypeError, KeyError, AttributeError):
                out.append(raw if raw.endswith(b"\n") else raw + b"\n")
                continue
            if key not in change:
                out.append(raw if raw.endswith(b"\n") else raw + b"\n")
                continue
            keep = change[key]
            if keep is None:
                continue
            names = {n for n, _ in keep}
            d["tags"] = [t for t in d.get("tags", []) if isinstance(t, dict) and t.get("name") in names]
            line = (json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
            fps[key] = line_fingerprint(line)
            out.append(line)
    atomic_write_bytes(os.fsdecode(target), b"".join(out))
    return fps


def untag_run(
    cat: Catalog, run_spec: str, *, dry_run: bool = False, backup: bool = True
) -> Iterator[WriteOutcome]:
    """Revert every output the run ``run_spec`` (id, unique prefix or ``last``) wrote that is still its."""
    from ..writers.xmp import untag_sidecar

    run = cat.resolve_run(run_spec)
    rows = cat.outputs_of_run(run)
    session = None
    by_json: dict[bytes, list[OutputRow]] = {}
    try:
        for row in rows:
            if row.kind == "json":
                by_json.setdefault(row.target, []).append(row)
                continue
            if not row.tags and not os.path.lexists(row.target):  # no tags: nothing was ever written
                if not dry_run:
                    cat.forget_outputs([(row.image, row.kind, row.target)])
                continue
            try:
                if row.kind == "xmp":
                    outcome = untag_sidecar(row.target_path, image=row.image_path, dry_run=dry_run)
                else:
                    from ..writers.exiftool import ExiftoolSession, untag_image

                    session = session or ExiftoolSession()
                    outcome = untag_image(session, row.image_path, dry_run=dry_run, backup=backup)
            except (RamtagError, OSError) as e:
                yield WriteOutcome(row.image_path, row.target_path, "skipped", str(e))
                continue
            if not dry_run:
                cat.forget_outputs([(row.image, row.kind, row.target)])
            yield outcome
    finally:
        if session is not None:
            session.close()
    for target, jrows in by_json.items():
        tpath = key_path(target)
        if dry_run:
            yield WriteOutcome(tpath, tpath, "dry-run", f"{tpath}: would remove {len(jrows)} lines")
            continue
        try:
            _rewrite_jsonl(target, {r.image: None for r in jrows})
        except OSError as e:
            yield WriteOutcome(tpath, tpath, "skipped", f"{tpath}: cannot rewrite ({e.strerror})")
            continue
        cat.forget_outputs([(r.image, r.kind, r.target) for r in jrows])
        yield WriteOutcome(tpath, tpath, "written", f"{tpath}: removed {len(jrows)} lines")


def _run_settings(cat: Catalog, run: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if run not in cache:
        rows = cat.execute("SELECT settings FROM runs WHERE id = ?", (run,))
        cache[run] = json.loads(rows[0][0]) if rows else {}
    return cache[run]


def untag_below(
    cat: Catalog, value: float, paths: Sequence[PathLike] = (), *, dry_run: bool = False, backup: bool = True
) -> Iterator[WriteOutcome]:
    """Remove the tags scored under ``value`` from every output (under ``paths``) that holds some."""
    from ..writers.exiftool import ExiftoolWriter
    from ..writers.xmp import XmpSidecarWriter

    found = cat.outputs_below(value, paths)
    if not found:
        return
    run = cat.begin_run("untag-below", {"below": value, "paths": [os.fsdecode(path_key(p)) for p in paths]})
    settings_cache: dict[str, dict[str, Any]] = {}
    embed: ExiftoolWriter | None = None
    by_json: dict[bytes, list[tuple[OutputRow, list[tuple[str, float]]]]] = {}
    done = 0
    try:
        for row, low in found:
            keep = [(n, s) for n, s in row.tags if s >= value]
            if row.kind == "json":
                by_json.setdefault(row.target, []).append((row, keep))
                continue
            st = _run_settings(cat, row.run, settings_cache)
            options = {
                "hierarchy_root": st.get("hierarchy_root", "ramtag"),
                "sidecar_name": st.get("sidecar_name", "ext"),
                "model": st.get("model", ""),
                "dry_run": dry_run,
            }
            result = ImageTags(path=row.image_path, tags=[TagScore(n, s, value) for n, s in keep])
            try:
                if row.kind == "xmp":
                    outcome = XmpSidecarWriter(**options).write(result)
                else:
                    embed = embed or ExiftoolWriter(**options, backup=backup)
                    outcome = embed.write(result)
            except (RamtagError, OSError) as e:
                yield WriteOutcome(row.image_path, row.target_path, "skipped", str(e))
                continue
            if not dry_run and outcome.action == "written" and outcome.target is not None:
                fp = sidecar_fingerprint(outcome.target) if row.kind == "xmp" else row.fingerprint
                tstat = os.stat(outcome.target) if row.kind == "xmp" else None
                cat.record_outputs(
                    [(row.image, row.kind, outcome.target, keep, fp or "", row.settings, tstat)], run
                )
                done += 1
            yield WriteOutcome(
                outcome.path,
                outcome.target,
                outcome.action,
                f"{outcome.message} (removed {', '.join(low)})",
                tuple(n for n, _ in keep),
            )
    finally:
        if embed is not None:
            embed.close()
    for target, items in by_json.items():
        tpath = key_path(target)
        if dry_run:
            yield WriteOutcome(tpath, tpath, "dry-run", f"{tpath}: would rewrite {len(items)} lines")
            continue
        try:
            fps = _rewrite_jsonl(target, {r.image: keep for r, keep in items})
        except OSError as e:
            yield WriteOutcome(tpath, tpath, "skipped", f"{tpath}: cannot rewrite ({e.strerror})")
            continue
        cat.record_outputs(
            [(r.image, r.kind, r.target, keep, fps.get(r.image, ""), r.settings) for r, keep in items], run
        )
        done += len(items)
        yield WriteOutcome(tpath, tpath, "written", f"{tpath}: rewrote {len(items)} lines")
    cat.finish_run(run, {"outputs": done})


def forget_untagged(cat: Catalog, outcomes: Sequence[WriteOutcome]) -> int:
    """After ``ramtag untag PATH...``: drop the output records of the sidecars / images it cleaned."""
    n = 0
    for o in outcomes:
        if o.action not in ("written", "deleted", "unchanged") or o.target is None:
            continue
        target = path_key(o.target)
        rows = cat.execute(
            "SELECT image, kind FROM outputs WHERE target = ? AND kind IN ('xmp', 'embed')", (target,)
        )
        for image, kind in rows:
            path = cat.execute("SELECT path FROM images WHERE id = ?", (image,))[0][0]
            n += cat.forget_outputs([(path, kind, target)])
    return n


__all__ = ["forget_untagged", "untag_below", "untag_run"]
