"""Decide tags from scores: the official rule (score > per-tag threshold), plus user overrides."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..results import TagScore
from .rename import rename_columns
from .vocab import Vocabulary


def effective_thresholds(vocab: Vocabulary, threshold: float | None = None) -> np.ndarray:
    """Per-tag thresholds (T,); ``threshold`` replaces the built-in ones (open-set tags keep theirs)."""
    th = np.asarray(vocab.thresholds, dtype=np.float64)
    if threshold is not None:
        builtin = ~np.asarray(vocab.open_set, dtype=bool)
        th = np.where(builtin, threshold, th)
    return th


def decide(
    scores: np.ndarray,
    vocab: Vocabulary,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    rename: Mapping[str, str] | None = None,
    lang: str = "en",
) -> list[list[TagScore]]:
    """Select tags for each image.

    Args:
        scores: (B, T) float array of sigmoid scores in [0, 1], columns in ``vocab`` order.
        vocab: the vocabulary the scores belong to.
        threshold: if given, replaces every built-in tag's threshold (open-set tags keep their own).
        top_k: keep at most this many selected tags per image (highest scores first), counted after
            ``rename`` (a tag renamed away does not take a place).
        rename: {vocabulary tag: name to write} (``ramtag.tags.rename``); "" drops the tag. With any
            rename, tags written under one name in ``lang`` are kept once, with the best score.
        lang: the language written ("en" | "zh"): only what tells two tags' written names apart.

    Returns:
        Per image, the selected tags (``score > threshold``, strictly, as the official code does),
        sorted by score, highest first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(vocab):
        raise ValueError(f"scores must be (B, {len(vocab)}), got {scores.shape}")
    th = effective_thresholds(vocab, threshold)
    selected = scores > th[None, :]  # (B, T)
    out: list[list[TagScore]] = []
    zh: tuple[str, ...] | None = vocab.names_zh
    renamed = rename_columns(rename or {}, vocab)  # column -> NEW ("" = never written)
    for b in range(scores.shape[0]):
        idx = np.flatnonzero(selected[b])
        idx = idx[np.argsort(-scores[b, idx], kind="stable")]
        if not renamed and top_k is not None:
            idx = idx[:top_k]
        tags = [
            TagScore(
                name=vocab.names[i],
                score=float(scores[b, i]),
                threshold=float(th[i]),
                name_zh=zh[i] if zh is not None else None,
                open_set=vocab.open_set[i],
                rename=renamed.get(int(i)),
            )
            for i in idx
            if renamed.get(int(i)) != ""
        ]
        if renamed:  # best first, so the first of each written name has its best score
            once: dict[str, TagScore] = {}
            for t in tags:
                once.setdefault(t.display_name(lang), t)
            tags = list(once.values())[:top_k]
        out.append(tags)
    return out
