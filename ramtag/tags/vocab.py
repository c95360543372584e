"""The tag vocabulary that travels with a set of weights.

Files follow the official ``ram/data/`` layout: one tag per line (``ram_tag_list.txt``), the Chinese
names line by line (``ram_tag_list_chinese.txt``, trailing spaces kept as the official code keeps
them), one float threshold per line (``ram_tag_list_threshold.txt``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, VocabularyError, printable

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")  # not tabs
OPEN_SET_THRESHOLD = 0.5  # the official threshold for tags the model was not trained on


def _read_lines(path: str | Path, what: str) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # (a BOM, as some editors save, is not part of a tag)
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found; check the path") from None
    except UnicodeDecodeError:
        raise VocabularyError(f"{p}: {what} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read {what} ({e.strerror}); check permissions") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_tag_list(path: str | Path, *, keep_trailing_space: bool = False) -> list[str]:
    """Read a tag list, one tag per line. English names are stripped; Chinese names keep their
    trailing spaces when ``keep_trailing_space`` (byte-faithful to the official files)."""
    lines = _read_lines(path, "tag list")
    names = lines if keep_trailing_space else [line.strip() for line in lines]
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise VocabularyError(f"{path}: line {i} is empty; a tag list has one tag per line")
        bad = _CONTROL.search(name)
        if bad is not None:  # it would be written into every sidecar (XML cannot hold it) and terminal
            raise VocabularyError(
                f"{printable(path)}: line {i} ({printable(name)!r}) contains the control character "
                f"{printable(bad.group())}; remove it"
            )
    return names


def read_thresholds(path: str | Path) -> list[float]:
    """Read one float threshold per line; each must lie in [0, 1]."""
    out: list[float] = []
    for i, line in enumerate(_read_lines(path, "threshold list"), 1):
        try:
            value = float(line.strip())
        except ValueError:
            raise VocabularyError(
                f"{path}: line {i} ({line.strip()!r}) is not a number; one threshold per line"
            ) from None
        if not 0.0 <= value <= 1.0:
            raise VocabularyError(f"{path}: line {i} threshold {value} is outside [0, 1]")
        out.append(value)
    return out


@dataclass(frozen=True)
class Vocabulary:
    """Tag names with their per-tag thresholds, in model output order.

    ``names[i]`` is the tag scored by logit ``i``; a tag is selected when
    ``sigmoid(logit_i) > thresholds[i]`` (strictly greater, as in the official code).
    """

    names: tuple[str, ...]  # English tag names, model output order
    thresholds: tuple[float, ...]  # per-tag thresholds in [0, 1]
    names_zh: tuple[str, ...] | None = None  # Chinese names (official file, trailing spaces kept) or None
    open_set: tuple[bool, ...] = field(default=())  # True for tags added at run time; () = all built-in

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.thresholds) != n:
            raise VocabularyError(
                f"the tag list has {n} tags but the threshold list has {len(self.thresholds)}; "
                "they must match line for line"
            )
        if self.names_zh is not None and len(self.names_zh) != n:
            raise VocabularyError(
                f"the tag list has {n} tags but the Chinese tag list has {len(self.names_zh)}; "
                "they must match line for line"
            )
        if not self.open_set:
            object.__setattr__(self, "open_set", (False,) * n)
        elif len(self.open_set) != n:
            raise VocabularyError("open_set flags must have one entry per tag")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_files(
        cls, tag_list: str | Path, thresholds: str | Path | None = None, tag_list_zh: str | Path | None = None
    ) -> Vocabulary:
        """Build from official-format files; missing thresholds default to 0.68 (the official default)."""
        names = read_tag_list(tag_list)
        ths = read_thresholds(thresholds) if thresholds is not None else [0.68] * len(names)
        zh = read_tag_list(tag_list_zh, keep_trailing_space=True) if tag_list_zh is not None else None
        if len(ths) != len(names):
            raise VocabularyError(
                f"{thresholds}: has {len(ths)} thresholds but {tag_list} has {len(names)} tags; "
                "they must match line for line"
            )
        if zh is not None and len(zh) != len(names):
            raise VocabularyError(
                f"{tag_list_zh}: has {len(zh)} names but {tag_list} has {len(names)} tags; "
                "they must match line for line"
            )
        return cls(tuple(names), tuple(ths), tuple(zh) if zh is not None else None)

    def extend(
        self, names: Sequence[str], thresholds: Sequence[float], *, open_set: bool = True
    ) -> Vocabulary:
        """A new vocabulary with extra tags appended (Chinese name = English name for them)."""
        zh = None if self.names_zh is None else self.names_zh + tuple(names)
        return Vocabulary(
            self.names + tuple(names),
            self.thresholds + tuple(float(t) for t in thresholds),
            zh,
            self.open_set + (open_set,) * len(names),
        )

    def subset(self, indices: Sequence[int]) -> Vocabulary:
        """The tags at ``indices``, in that order."""
        zh = None if self.names_zh is None else tuple(self.names_zh[i] for i in indices)
        return Vocabulary(
            tuple(self.names[i] for i in indices),
            tuple(self.thresholds[i] for i in indices),
            zh,
            tuple(self.open_set[i] for i in indices),
        )

    def index(self) -> dict[str, int]:
        """Lower-cased name -> position."""
        return {n.lower(): i for i, n in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "thresholds": list(self.thresholds),
            "names_zh": list(self.names_zh) if self.names_zh is not None else None,
            "open_set": list(self.open_set),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        zh = data.get("names_zh")
        return cls(
            tuple(data["names"]),
            tuple(float(t) for t in data["thresholds"]),
            tuple(zh) if zh is not None else None,
            tuple(bool(b) for b in data.get("open_set") or ()),
        )
