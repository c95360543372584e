"""The library catalog: what was tagged, with every tag's score, and what was written where.

One SQLite file (``ramtag_home()/catalog.sqlite`` unless ``--catalog FILE``), the single source of
truth for incremental runs, re-deciding without the model, queries, exports, albums and ``untag``.
Nothing here imports torch.

    import ramtag
    cat = ramtag.open_catalog()
    for rec in cat.query("dog & (beach | sea) & !person", paths=["~/Photos/2024"]):
        print(rec.path, [(t.name, round(t.score, 2)) for t in rec.tags])
"""

from __future__ import annotations

from pathlib import Path

from .identity import Identity, content_digest, display, folder_prefix, key_path, path_key
from .query import QueryError, parse
from .schema import HIT_CAP, HIT_FLOOR, SCHEMA_VERSION
from .store import (
    Catalog,
    CatalogRecord,
    ImageRow,
    ImageScores,
    OutputRow,
    RunInfo,
    default_catalog_path,
    new_run_id,
    public_settings,
    vocabulary_id,
)

__all__ = [
    "HIT_CAP",
    "HIT_FLOOR",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogRecord",
    "Identity",
    "ImageRow",
    "ImageScores",
    "OutputRow",
    "QueryError",
    "RunInfo",
    "content_digest",
    "default_catalog_path",
    "display",
    "folder_prefix",
    "key_path",
    "new_run_id",
    "open_catalog",
    "parse",
    "path_key",
    "public_settings",
    "vocabulary_id",
]


def open_catalog(path: str | Path | None = None, *, readonly: bool = False) -> Catalog:
    """Open the catalog (default ``ramtag_home()/catalog.sqlite``); ``readonly`` for scripts that ask."""
    return Catalog(path, readonly=readonly)
