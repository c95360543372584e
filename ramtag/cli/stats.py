"""``ramtag stats``: the most frequent tags in the catalog, and ``ramtag runs``: what each run did."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from .common import QueryPaths, Rows, examples, open_catalog_readonly, show
from .flags import Catalog

EXAMPLES = examples(
    "ramtag stats                      # the 20 most frequent tags", "ramtag stats ~/Photos/2024 --top 50"
)
RUNS_EXAMPLES = examples(
    "ramtag runs", "ramtag untag --run 20261204-170000-3f2a   # revert what one run wrote"
)


def stats(
    paths: QueryPaths = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many tags to list.")] = 20,
    catalog: Catalog = None,
) -> None:
    """The most frequent tags (above their thresholds) and how many images have each."""
    cat = open_catalog_readonly(catalog)
    total = len(cat.image_ids(paths or []))
    rows = Rows(f"{total} images in {cat.path}", ["tag", "images", "share"])
    for name, n in cat.stats(paths or [], limit=top):
        rows.add(name, n, f"{100 * n / total:.1f}%" if total else "-")
    show([rows])


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 20,
    catalog: Catalog = None,
) -> None:
    """Every run recorded in the catalog: id, time, status, what it did, and its settings."""
    cat = open_catalog_readonly(catalog)
    rows = Rows(
        f"runs in {cat.path}", ["id", "started (UTC)", "command", "status", "counts", "settings"], left=6
    )
    for r in cat.runs(limit):
        status = r.status
        if status == "running" and time.time() - r.started > 24 * 3600:
            status = "killed?"
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items() if k != "ranks")
        brief = {
            k: r.settings[k]
            for k in ("write", "mode", "threshold", "top_k", "lang", "weights")
            if k in r.settings
        }
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.started))
        rows.add(r.id, started, r.command, status, counts, json.dumps(brief, ensure_ascii=False))
    show([rows])
