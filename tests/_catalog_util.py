"""Helpers for the catalog tests: a tiny vocabulary and a catalog filled with chosen scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ramtag.catalog import Catalog, Identity, ImageScores
from ramtag.tags import Vocabulary

NAMES = ("dog", "beach", "sea", "person", "sea lion", "hot dog")
VOCAB = Vocabulary(NAMES, (0.7, 0.7, 0.7, 0.7, 0.7, 0.8), ("狗", "海滩", "海", "人", "海狮", "热狗"))


def fill(
    cat: Catalog,
    folder: Path,
    rows: dict[str, Sequence[float]],
    vocab: Vocabulary = VOCAB,
    run: str | None = None,
) -> tuple[str, dict[str, Path]]:
    """Make one small file per name under ``folder`` and record ``rows[name]`` as its scores."""
    vid = cat.add_vocabulary(vocab)
    run = cat.begin_run("tag", {"threshold": None}, run_id=run)
    paths: dict[str, Path] = {}
    items = []
    for name, scores in rows.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(name.encode("utf-8", "surrogateescape") * 3)
        paths[name] = p
        items.append(ImageScores(p, Identity.of_path(p), "tiny", vid, np.asarray(scores, dtype=np.float32)))
    cat.record_images(items, run)
    return run, paths
