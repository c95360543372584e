"""Deciding again from stored scores: new thresholds, top-k, renames, language, hierarchy, outputs, no
model.

The stored scores are float16, so a score within about 0.0005 of a threshold may decide the other
way than the float32 score did when the image was tagged; everything else is the official rule
(``ramtag.tags.decide``) applied to the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..results import ImageTags
from ..tags import Vocabulary, decide
from .identity import PathLike, key_path, path_key
from .store import Catalog


def decide_stored(
    cat: Catalog,
    paths: Sequence[PathLike],
    vocab: Vocabulary | None = None,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    all_scores: bool = False,
    rename: Mapping[str, str] | None = None,
    lang: str = "en",
) -> tuple[list[ImageTags], list[PathLike]]:
    """Decide tags for ``paths`` from their stored scores.

    ``vocab``: the vocabulary to decide with (its thresholds, Chinese names and open-set flags); the
    stored columns are matched to it by name. None: each image's own stored vocabulary.
    ``threshold``, ``top_k``, ``rename``, ``lang``: as :func:`ramtag.tags.decide` takes them.
    Returns ``(results in the order of paths, paths that need the model)``: an image is left for the
    model when it was never scored or its stored vocabulary lacks one of ``vocab``'s tags.
    """
    keys = [path_key(p) for p in paths]
    decided: dict[bytes, ImageTags] = {}
    for vid, group, matrix in cat.scores(keys, resolved=True):
        stored = cat.vocabulary(vid)
        use = stored if vocab is None else vocab
        if vocab is not None and stored.names != vocab.names:
            col = {n.lower(): i for i, n in enumerate(stored.names)}
            idx = [col.get(n.lower()) for n in vocab.names]
            if any(i is None for i in idx):
                continue
            matrix = matrix[:, np.asarray(idx, dtype=np.int64)]
        for start in range(0, len(group), 512):  # bounded memory: decide() works in float64
            scores = matrix[start : start + 512].astype(np.float32)
            rows = decide(scores, use, threshold=threshold, top_k=top_k, rename=rename, lang=lang)
            for r, (key, tags) in enumerate(zip(group[start : start + 512], rows, strict=True)):
                all_s = (
                    {n: float(s) for n, s in zip(use.names, scores[r], strict=True)} if all_scores else None
                )
                decided[key] = ImageTags(path=key_path(key), tags=tags, scores=all_s)
    results: list[ImageTags] = []
    missing: list[PathLike] = []
    for i, (p, key) in enumerate(zip(paths, keys, strict=True)):
        res = decided.get(key)
        if res is None:
            missing.append(p)
        else:
            res.index = i
            results.append(res)
    return results, missing
