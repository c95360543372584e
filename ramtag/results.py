"""Result records passed from the model stage to the writers (plain data, no torch)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TagScore:
    """One selected tag of one image."""

    name: str  # English tag name (or the open-set tag as the user typed it)
    score: float  # sigmoid(logit), in [0, 1]
    threshold: float  # the threshold it beat (score > threshold)
    name_zh: str | None = None  # Chinese name where the vocabulary has one (trailing spaces stripped)
    open_set: bool = False  # True for a tag added at run time
    rename: str | None = None  # the name written instead, in every language (--rename); None: not renamed

    def display_name(self, lang: str = "en") -> str:
        """The name to write for ``lang`` ("en" or "zh"): the rename, else the vocabulary's name
        (Chinese falls back to English)."""
        if self.rename:
            return self.rename
        if lang == "zh" and self.name_zh:
            return self.name_zh.strip()
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON form; a renamed tag's "name" is the name written, "renamed_from" the vocabulary's."""
        d: dict[str, Any] = {
            "name": self.display_name(),
            "score": round(self.score, 6),
            "threshold": self.threshold,
        }
        if self.rename:
            d["renamed_from"] = self.name
        elif self.name_zh:
            d["name_zh"] = self.name_zh.strip()
        if self.open_set:
            d["open_set"] = True
        return d


class ScoreMap(Mapping[str, float]):
    """Every tag's score of one image, read-only, as ``{tag name: score}``, backed by the model's score
    row (no dict of thousands of floats is built per image; the catalog takes the row as it is).

    ``index``: tag name -> column (shared by every result of a vocabulary); ``row``: the scores in
    that order (a float32 NumPy row, or any sequence of floats)."""

    __slots__ = ("_index", "row")

    def __init__(self, index: Mapping[str, int], row: Sequence[float] | Any) -> None:
        self._index = index
        self.row = row

    def __getitem__(self, name: str) -> float:
        return float(self.row[self._index[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"ScoreMap({len(self)} tags)"


@dataclass
class ImageTags:
    """The outcome for one input image: its selected tags, or why it was skipped."""

    path: Path | None  # the image file (None for in-memory images)
    tags: list[TagScore] = field(default_factory=list)  # selected tags, highest score first
    scores: Mapping[str, float] | None = None  # every tag's score (only with all_scores=True)
    error: str | None = None  # one-line reason when the image was skipped; tags are then empty
    index: int = 0  # position in the input order
    # the file as decoded (os.fstat of the descriptor read): the identity the catalog records with
    # these tags; None for in-memory images and results decided from stored scores
    stat: os.stat_result | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def tag_names(self, lang: str = "en") -> list[str]:
        return [t.display_name(lang) for t in self.tags]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": str(self.path) if self.path is not None else None}
        if self.error is not None:
            d["error"] = self.error
        d["tags"] = [t.to_dict() for t in self.tags]
        if self.scores is not None:
            d["scores"] = {k: round(v, 6) for k, v in self.scores.items()}
        return d
