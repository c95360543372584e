"""Tag renames (``--rename OLD=NEW``, ``--rename-file FILE``): the name written for a vocabulary tag.

OLD is a tag of the vocabulary the run decides with (its English name, built-in or open-set, any
case); NEW is written instead of it in every output and whatever ``--lang`` is; an empty NEW means
the tag is never written. Several OLDs may share one NEW: the image gets NEW once, with the best
score. Renames change what is written, not what is scored: the catalog, ``ramtag query`` and
``--all-scores`` keep the vocabulary's names.

The file has one rename per line, ``old = new`` (or ``old<TAB>new``, as a spreadsheet exports two
columns); blank lines and lines starting with ``#`` are skipped (a ``#`` elsewhere is part of the
name, so ``sunset = #goldenhour`` works).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import UsageError, printable
from ..fsutil import read_user_text
from .vocab import Vocabulary

__all__ = ["canonical_renames", "parse_renames", "rename_columns"]


def _split(item: str, where: str) -> tuple[str, str]:
    sep = "\t" if "\t" in item else "="
    if sep not in item:
        raise UsageError(
            f"{where}: {printable(item)!r} is not OLD=NEW; write e.g. \"cat=Cats\" ('cat=' drops it)"
        )
    old, new = item.split(sep, 1)
    old, new = old.strip(), new.strip()
    if not old:
        raise UsageError(f'{where}: {printable(item)!r} names no tag before {sep!r}; write e.g. "cat=Cats"')
    return old, new


def parse_renames(
    items: Iterable[str] = (), file: str | Path | None = None, vocab: Vocabulary | None = None
) -> dict[str, str]:
    """``--rename OLD=NEW`` values and/or a ``--rename-file`` -> {OLD: NEW} (OLD as typed).

    The same OLD twice with two different NEWs is an error (which one was meant?); errors name the
    option or the file and line. With ``vocab``, each OLD must be one of its tags
    (:func:`rename_columns`).
    """
    pairs: list[tuple[str, str, str]] = [(*_split(s, "--rename"), "--rename") for s in items]
    if file is not None:
        p = Path(file)
        text = read_user_text(p, "rename file", "--rename-file")
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                where = f"{printable(p)}:{lineno}"
                pairs.append((*_split(line, where), where))
    out: dict[str, str] = {}
    seen: dict[str, tuple[str, str]] = {}  # lower-cased OLD -> (NEW, where)
    for old, new, where in pairs:
        before = seen.get(old.lower())
        if before is not None and before[0] != new:
            raise UsageError(
                f"{where}: {printable(old)!r} is renamed twice ({before[0]!r} at {before[1]}, {new!r} here); "
                "keep one"
            )
        seen[old.lower()] = (new, where)
        out[old] = new
    if vocab is not None:
        for old, new, where in pairs:
            rename_columns({old: new}, vocab, where=where)
    return out


def rename_columns(
    rename: Mapping[str, str], vocab: Vocabulary, *, where: str = "--rename"
) -> dict[int, str]:
    """{column of ``vocab``: NEW} for ``rename`` ({OLD: NEW}, OLD matched case-insensitively).

    An OLD the vocabulary lacks is a :class:`UsageError` naming ``where`` it came from and its closest
    spellings (checked before any model loads: ``ramtag tag`` calls this first).
    """
    if not rename:
        return {}
    index = vocab.index()
    out: dict[int, str] = {}
    for old, new in rename.items():
        col = index.get(old.strip().lower())
        if col is None:
            close = difflib.get_close_matches(old.strip().lower(), list(index), n=3, cutoff=0.75)
            hint = (
                f"did you mean {' or '.join(repr(vocab.names[index[c]]) for c in close)}?"
                if close
                else f"`ramtag tags {printable(old.strip())}` searches the tags"
            )
            raise UsageError(f"{where}: {printable(old)!r}: the vocabulary has no such tag; {hint}")
        out[col] = new
    return out


def canonical_renames(rename: Mapping[str, str], vocab: Vocabulary) -> dict[str, str]:
    """``rename`` keyed by the vocabulary's own spelling, sorted: the same renames give the same dict
    however they were typed (what the catalog compares to tell whether outputs must be rewritten)."""
    cols = rename_columns(rename, vocab)
    return {vocab.names[c]: cols[c] for c in sorted(cols)}
