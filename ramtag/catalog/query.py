"""The query language of ``ramtag query`` / ``Catalog.query``: tokenizer, parser and evaluator.

    dog & (beach | sea) & !person        and / or / not (also the words and, or, not)
    dog>=0.8   "sea lion" > 0.5          a minimum score (any value: below the threshold works too)
    cat<0.2                              scored, and under 0.2
    'ice cream' & !"hot dog"             quoted names; unquoted words next to each other are one
                                         name (sea lion), so quoting is only needed for and/or/not
                                         and the characters ( ) & | ! < > = " '

A bare tag means "above that tag's threshold" in the vocabulary the image was scored with. Names
match case-insensitively, English or Chinese. Precedence: ``!`` over ``&`` over ``|``.

Evaluation works on sorted arrays of image ids. Above-threshold tags and scores at or above
``HIT_FLOOR`` come from the ``hits`` index; a minimum under ``HIT_FLOOR`` reads the stored score
blobs, only for the images the rest of an ``&`` leaves. Images whose index was cut at ``HIT_CAP``
rows (``images.hit_floor``) answer from their blobs wherever the bound asked for (a minimum, or the
tag's threshold) is under their floor; a library without such images never reads them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from .schema import HIT_FLOOR

if TYPE_CHECKING:
    from .identity import PathLike
    from .store import Catalog

_SPECIAL = set("()&|!<>=\"'")
_KEYWORDS = {"and": "&", "or": "|", "not": "!"}
_OPS = (">=", "<=", ">", "<", "=")
_FEW = 20000  # blob reads: under this many images, read theirs by id; more, one pass over the table


class QueryError(UsageError):
    """A query that does not parse, or names a tag no image was scored with. One line."""


@dataclass(frozen=True)
class Token:
    kind: str  # "tag" | "num" | "op" (>= > < <=) | one of ( ) & | !  | "end"
    text: str
    pos: int  # 0-based character offset in the query


def _fail(text: str, pos: int, msg: str) -> QueryError:
    pos = max(0, min(pos, len(text)))
    return QueryError(f"query error at character {pos + 1}: {msg}: {text[:pos]}»{text[pos:]}")


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens; adjacent bare words become one multi-word tag token."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()!":
            out.append(Token(c, c, i))
            i += 1
        elif c in "&|":
            j = i + 2 if text[i : i + 2] == c * 2 else i + 1  # && and || read as & and |
            out.append(Token(c, c, i))
            i = j
        elif c in "<>=":
            op = next(o for o in _OPS if text.startswith(o, i))
            out.append(Token("op", ">=" if op == "=" else op, i))  # "dog=0.8" reads as dog>=0.8
            i += len(op)
        elif c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                raise _fail(text, i, f"this {c} is never closed")
            name = " ".join(text[i + 1 : end].split())
            if not name:
                raise _fail(text, i, "empty tag name")
            out.append(Token("tag", name, i))
            i = end + 1
        else:
            j = i
            while j < n and not text[j].isspace() and (text[j] not in _SPECIAL or (text[j] == "'" and j > i)):
                j += 1
            word = text[i:j]
            if out and out[-1].kind == "op":
                out.append(Token("num", word, i))
            elif word.lower() in _KEYWORDS:
                out.append(Token(_KEYWORDS[word.lower()], word, i))
            elif out and out[-1].kind == "tag" and out[-1].text[:1] not in "\"'" and _bare(out[-1], text):
                prev = out.pop()
                out.append(Token("tag", f"{prev.text} {word}", prev.pos))
            else:
                out.append(Token("tag", word, i))
            i = j
    out.append(Token("end", "", n))
    return out


def _bare(tok: Token, text: str) -> bool:
    """Was ``tok`` written without quotes (so the next bare word continues its name)?"""
    return text[tok.pos] not in "\"'"


# ---------------------------------------------------------------------- syntax tree
@dataclass(frozen=True)
class Node:
    def tag_names(self) -> list[str]:
        return list(dict.fromkeys(self._names()))

    def _names(self) -> Iterator[str]:
        yield from ()


@dataclass(frozen=True)
class Tag(Node):
    name: str
    pos: int
    op: str | None = None  # None: above the tag's threshold; else ">=", ">", "<", "<="
    value: float = 0.0

    def _names(self) -> Iterator[str]:
        yield self.name

    def __str__(self) -> str:
        name = json.dumps(self.name, ensure_ascii=False) if " " in self.name else self.name
        return name if self.op is None else f"{name}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Not(Node):
    child: Node

    def _names(self) -> Iterator[str]:
        yield from self.child._names()

    def __str__(self) -> str:
        return f"!{self.child}"


@dataclass(frozen=True)
class And(Node):
    children: tuple[Node, ...]

    def _names(self) -> Iterator[str]:
        for c in self.children:
            yield from c._names()

    def __str__(self) -> str:
        return "(" + " & ".join(map(str, self.children)) + ")"


@dataclass(frozen=True)
class Or(Node):
    children: tuple[Node, ...]

    def _names(self) -> Iterator[str]:
        for c in self.children:
            yield from c._names()

    def __str__(self) -> str:
        return "(" + " | ".join(map(str, self.children)) + ")"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _fail(self.text, 0, "empty query; e.g. 'dog & (beach | sea) & !person'")
        node = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            what = "unmatched ')'" if tok.kind == ")" else f"expected '&', '|' or the end, found {tok.text!r}"
            raise _fail(self.text, tok.pos, what)
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.peek().kind == "|":
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.unary()]
        while self.peek().kind == "&":
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        if self.peek().kind == "!":
            self.take()
            return Not(self.unary())
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "(":
            node = self.or_()
            close = self.peek()
            if close.kind != ")":
                raise _fail(self.text, close.pos, f"expected ')' to close the '(' at character {tok.pos + 1}")
            self.take()
            return node
        if tok.kind != "tag":
            found = "the end" if tok.kind == "end" else repr(tok.text)
            raise _fail(self.text, tok.pos, f"expected a tag name, '(' or '!', found {found}")
        if self.peek().kind != "op":
            return Tag(tok.text, tok.pos)
        op = self.take()
        num = self.take()
        if num.kind != "num":
            raise _fail(self.text, num.pos, f"expected a score between 0 and 1 after {op.text!r}")
        try:
            value = float(num.text)
        except ValueError:
            raise _fail(
                self.text, num.pos, f"{num.text!r} is not a number; write e.g. {tok.text}>=0.8"
            ) from None
        if not 0.0 <= value <= 1.0:
            raise _fail(self.text, num.pos, f"score {num.text} is outside 0..1")
        return Tag(tok.text, tok.pos, op.text, value)


def parse(text: str) -> Node:
    """The syntax tree of a query; raises :class:`QueryError` (one line, pointing at the position)."""
    return _Parser(text).parse()


# ---------------------------------------------------------------------- evaluation
class _Eval:
    def __init__(self, cat: Catalog, text: str, paths: Sequence[PathLike]) -> None:
        self.cat = cat
        self.text = text
        self.restricted = bool(paths)  # False: every image, so index answers need no intersection
        self.paths = paths
        self._universe: np.ndarray | None = None
        self.tag_ids = cat.tag_ids()
        self._zh: dict[str, str] | None = None
        self._truncated: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def tag_id(self, node: Tag) -> int | None:
        key = node.name.lower()
        if key in self.tag_ids:
            return self.tag_ids[key]
        if self._zh is None:  # Chinese names of every stored vocabulary -> English key
            self._zh = {}
            for vid in self.cat.vocabulary_ids():
                v = self.cat.vocabulary(vid)
                for en, zh in zip(v.names, v.names_zh or (), strict=False):
                    self._zh.setdefault(zh.strip().lower(), en.lower())
        if key in self._zh:
            return self.tag_ids[self._zh[key]]
        if not self.tag_ids:
            return None  # an empty catalog answers nothing, whatever is asked
        close = difflib.get_close_matches(key, list(self.tag_ids), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "; see 'ramtag stats'"
        raise _fail(self.text, node.pos, f"no image in the catalog was scored with a tag {node.name!r}{hint}")

    @property
    def universe(self) -> np.ndarray:
        """Sorted ids of the images under the query's paths (all images without paths); read once."""
        if self._universe is None:
            self._universe = self.cat.image_ids(self.paths)
        return self._universe

    def within_universe(self, ids: np.ndarray) -> np.ndarray:
        return np.intersect1d(ids, self.universe, assume_unique=True) if self.restricted else ids

    def cheap(self, node: Node) -> bool:
        """Answered from the hits index alone."""
        if isinstance(node, Tag):
            return node.op is None or node.value >= HIT_FLOOR
        if isinstance(node, Not):
            return self.cheap(node.child)
        if isinstance(node, (And, Or)):
            return all(self.cheap(c) for c in node.children)
        raise TypeError(node)

    def run(self, node: Node, within: np.ndarray | None = None) -> np.ndarray:
        """Sorted ids in ``universe`` matching ``node``; only ids in ``within`` are guaranteed
        correct (they restrict the blob reads; the caller intersects)."""
        if isinstance(node, Tag):
            return self.tag(node, within)
        if isinstance(node, Not):
            return np.setdiff1d(
                self.universe if within is None else within, self.run(node.child, within), True
            )
        if isinstance(node, And):
            # index answers first (positive before negated: "a & !b" needs no universe), blobs last
            children = sorted(node.children, key=lambda c: (not self.cheap(c), isinstance(c, Not)))
            acc = self.universe if within is None else within
            for c in children:
                acc = np.intersect1d(acc, self.run(c, acc), assume_unique=True)
                if len(acc) == 0:
                    break
            return acc
        if isinstance(node, Or):
            acc = np.empty(0, dtype=np.int64)
            for c in node.children:
                acc = np.union1d(acc, self.run(c, within))
            return acc
        raise TypeError(node)

    def tag(self, node: Tag, within: np.ndarray | None) -> np.ndarray:
        tid = self.tag_id(node)
        if tid is None:
            return np.empty(0, dtype=np.int64)
        if node.op in ("<", "<="):  # scored with this tag, and not at/above the value
            upper = Tag(node.name, node.pos, ">=" if node.op == "<" else ">", node.value)
            scored = self.scored_with(tid, within)
            return np.setdiff1d(scored, self.tag(upper, scored), assume_unique=True)
        params: tuple[int | float, ...]
        if node.op is None:
            sql, params = "SELECT image FROM hits WHERE tag = ? AND above = 1", (tid,)
        elif node.value >= HIT_FLOOR:
            cmp = ">=" if node.op == ">=" else ">"
            sql, params = f"SELECT image FROM hits WHERE tag = ? AND score {cmp} ?", (tid, node.value)
        else:
            return self.scan(tid, node, within)
        rows = self.cat.execute(sql, params)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ids.sort()
        ids = self.within_universe(ids)
        missed = self.unindexed(tid, node, within)
        return ids if len(missed) == 0 else np.union1d(ids, missed)

    @property
    def truncated(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """vocab id -> (image ids, hit_floors) of the images whose hits were cut at HIT_CAP (read
        once; none in a library scored by a trained tagger)."""
        if self._truncated is None:
            rows = self.cat.execute(
                "SELECT vocab, id, hit_floor FROM images WHERE hit_floor IS NOT NULL ORDER BY vocab"
            )
            groups: dict[str, list[tuple[int, float]]] = {}
            for vid, image, floor in rows:
                groups.setdefault(vid, []).append((image, floor))
            self._truncated = {
                vid: (np.array([g[0] for g in got], dtype=np.int64), np.array([g[1] for g in got]))
                for vid, got in groups.items()
            }
        return self._truncated

    def unindexed(self, tid: int, node: Tag, within: np.ndarray | None) -> np.ndarray:
        """Images that match ``node`` (an index answer) with a score the index left out: those whose
        hit_floor is over the bound (the minimum, or the tag's threshold), read from their blobs."""
        found: list[np.ndarray] = []
        for vid, (images, floors) in self.truncated.items():
            col = self.cat._col_of(vid).get(tid)
            if col is None:
                continue
            bound = float(self.cat._columns(vid)[1][col]) if node.op is None else node.value
            ids = np.sort(images[floors > bound])
            ids = self.within_universe(ids)
            if within is not None:
                ids = np.intersect1d(ids, within, assume_unique=True)
            if len(ids) == 0:
                continue
            got, vals = _column(self.cat, col, ids)
            found.append(got[vals >= bound if node.op == ">=" else vals > bound])
        return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)

    def scored_with(self, tid: int, within: np.ndarray | None) -> np.ndarray:
        """Images in ``within`` (or the universe) whose vocabulary has tag ``tid``."""
        vids = [vid for vid in self.cat.vocabulary_ids() if tid in self.cat._col_of(vid)]
        rows: list[tuple[int]] = []
        for vid in vids:
            rows += self.cat.execute("SELECT id FROM images WHERE vocab = ?", (vid,))
        ids = np.unique(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        ids = self.within_universe(ids)
        return ids if within is None else np.intersect1d(ids, within, assume_unique=True)

    def scan(self, tid: int, node: Tag, within: np.ndarray | None) -> np.ndarray:
        """A minimum under HIT_FLOOR: read the tag's score out of each candidate's blob."""
        candidates = within if within is not None else (self.universe if self.restricted else None)
        found: list[np.ndarray] = []
        vids = self.cat.vocabulary_ids()
        for vid in vids:
            col = self.cat._col_of(vid).get(tid)
            if col is None:
                continue
            params: tuple[object, ...]
            if len(vids) == 1:  # one vocabulary: every blob has the tag at the same place
                sql, params = "SELECT s.image, substr(s.data, ?, 2) FROM scores s WHERE 1", (2 * col + 1,)
            else:
                sql = (
                    "SELECT s.image, substr(s.data, ?, 2) FROM images i JOIN scores s ON s.image = i.id"
                    " WHERE i.vocab = ?"
                )
                params = (2 * col + 1, vid)
            rows: list[tuple[int, bytes]] = []
            if candidates is not None and len(candidates) < _FEW:
                for i in range(0, len(candidates), 500):  # few candidates: read only theirs
                    chunk = [int(x) for x in candidates[i : i + 500]]
                    marks = ",".join("?" * len(chunk))
                    rows += self.cat.execute(f"{sql} AND s.image IN ({marks})", (*params, *chunk))
            else:
                rows = self.cat.execute(sql, params)
            if not rows:
                continue
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vals = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").astype(np.float64)
            keep = vals >= node.value if node.op == ">=" else vals > node.value
            found.append(ids[keep])
        if not found:
            return np.empty(0, dtype=np.int64)
        ids = np.unique(np.concatenate(found))
        return ids if candidates is None else np.intersect1d(ids, candidates, assume_unique=True)


def _column(cat: Catalog, col: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, float64 scores)`` of column ``col`` in the score blobs of images ``ids`` (sorted)."""
    rows: list[tuple[int, bytes]] = []
    sql = "SELECT image, substr(data, ?, 2) FROM scores"
    if len(ids) >= _FEW:  # many: one pass over the table beats thousands of lookups
        rows = cat.execute(sql, (2 * col + 1,))
    else:
        for i in range(0, len(ids), 500):
            chunk = [int(x) for x in ids[i : i + 500]]
            rows += cat.execute(f"{sql} WHERE image IN ({','.join('?' * len(chunk))})", (2 * col + 1, *chunk))
    got = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vals = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").astype(np.float64)
    if len(ids) >= _FEW:
        keep = np.isin(got, ids, assume_unique=True)
        got, vals = got[keep], vals[keep]
    return got, vals


def evaluate(
    node: Node, cat: Catalog, paths: Sequence[PathLike] = (), *, text: str | None = None
) -> np.ndarray:
    """Sorted image ids (``images.id``) matching ``node`` under ``paths`` (none: every image)."""
    return _Eval(cat, text if text is not None else str(node), paths).run(node)
