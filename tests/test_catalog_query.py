"""The query language: tokenizer, parser errors (one line, pointing at the position), and evaluation
checked against a plain numpy evaluation of the same expression over the same scores."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from _catalog_util import NAMES, VOCAB, fill

from ramtag.catalog import HIT_FLOOR, Catalog, QueryError, parse
from ramtag.catalog.query import And, Not, Or, Tag, tokenize


def test_tokens_and_multiword_names() -> None:
    toks = [(t.kind, t.text) for t in tokenize("sea lion>=0.5 && !'hot dog' || children's toy")]
    assert toks == [
        ("tag", "sea lion"),
        ("op", ">="),
        ("num", "0.5"),
        ("&", "&"),
        ("!", "!"),
        ("tag", "hot dog"),
        ("|", "|"),
        ("tag", "children's toy"),
        ("end", ""),
    ]
    assert [t.kind for t in tokenize("dog and not cat or NOT bird")] == [
        "tag",
        "&",
        "!",
        "tag",
        "|",
        "!",
        "tag",
        "end",
    ]


def test_precedence_not_over_and_over_or() -> None:
    tree = parse("a | b & !c")
    assert tree == Or((Tag("a", 0), And((Tag("b", 4), Not(Tag("c", 9))))))
    assert parse("(a | b) & c") == And((Or((Tag("a", 1), Tag("b", 5))), Tag("c", 10)))
    assert parse("dog>=0.8") == Tag("dog", 0, ">=", 0.8)
    assert parse('"sea lion" > .5') == Tag("sea lion", 0, ">", 0.5)
    assert parse("dog=0.3") == Tag("dog", 0, ">=", 0.3)
    assert parse("dog & (beach | sea) & !person").tag_names() == ["dog", "beach", "sea", "person"]


@pytest.mark.parametrize(
    ("query", "pos", "words"),
    [
        ("dog & )", 7, "expected a tag name"),
        ("dog & (beach | sea", 19, "expected ')' to close the '(' at character 7"),
        ("dog )", 5, "unmatched ')'"),
        ("dog >= 2", 8, "outside 0..1"),
        ("dog >= high", 8, "not a number"),
        ("dog >= &", 8, "expected a score"),
        ('"sea lion & dog', 1, '" is never closed'),
        ("", 1, "empty query"),
        ("dog &", 6, "found the end"),
        ("!", 2, "found the end"),
        ('dog & ""', 7, "empty tag name"),
    ],
)
def test_errors_are_one_line_with_the_position(query: str, pos: int, words: str) -> None:
    with pytest.raises(QueryError) as err:
        parse(query)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"query error at character {pos}: ")
    assert words in msg
    assert msg.endswith(query[: pos - 1] + "»" + query[pos - 1 :])
    assert err.value.exit_code == 2


def test_unknown_tag_suggests(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    assert cat.query("anything") == []  # an empty catalog answers nothing
    fill(cat, tmp_path, {"a.jpg": [0.9] * 6})
    with pytest.raises(QueryError, match=r"character 7: .*tag 'bech'; did you mean 'beach'\?"):
        cat.query("dog & bech")


@pytest.fixture
def library(tmp_path: Path) -> tuple[Catalog, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    rows = {}
    for i in range(60):
        folder = "holiday" if i % 3 == 0 else ("home/garden" if i % 3 == 1 else "home")
        s = rng.random(len(NAMES)) ** 2  # many low scores, some high
        rows[f"{folder}/img{i:02d}.jpg"] = s
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path / "lib", rows)
    return (
        cat,
        tmp_path / "lib",
        {k: np.asarray(v, dtype=np.float16).astype(np.float64) for k, v in rows.items()},
    )


def _reference(node: object, scores: dict[str, np.ndarray]) -> set[str]:
    col = {n: i for i, n in enumerate(NAMES)}
    th = VOCAB.thresholds

    def ok(n: object, s: np.ndarray) -> bool:
        if isinstance(n, Tag):
            c = col[n.name]
            v = s[c]
            return {
                None: v > th[c],
                ">=": v >= n.value,
                ">": v > n.value,
                "<": v < n.value,
                "<=": v <= n.value,
            }[n.op]
        if isinstance(n, Not):
            return not ok(n.child, s)
        if isinstance(n, And):
            return all(ok(c, s) for c in n.children)
        if isinstance(n, Or):
            return any(ok(c, s) for c in n.children)
        raise TypeError(n)

    return {k for k, s in scores.items() if ok(node, s)}


def _random_query(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 2 or r < 0.4:
        name = rng.choice(NAMES)
        name = f'"{name}"' if " " in name and rng.random() < 0.5 else name
        if rng.random() < 0.5:
            op = rng.choice([">=", ">", "<", "<="])
            value = rng.choice([0.05, 0.1, HIT_FLOOR, 0.5, 0.8, 0.95])
            return f"{name}{op}{value}"
        return name
    if r < 0.55:
        return "!" + _random_query(rng, depth + 1)
    op = rng.choice([" & ", " | ", " and ", " or "])
    return "(" + op.join(_random_query(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"


def test_evaluation_matches_a_brute_force_reference(
    library: tuple[Catalog, Path, dict[str, np.ndarray]],
) -> None:
    cat, root, scores = library
    rng = random.Random(3)
    for _ in range(150):
        q = _random_query(rng)
        got = {os.path.relpath(r.path, root) for r in cat.query(q)}
        assert got == _reference(parse(q), scores), q


def test_path_prefixes(library: tuple[Catalog, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    cat, root, scores = library
    everything = {k for k in scores}
    home = {os.path.relpath(r.path, root) for r in cat.query("dog | !dog", paths=[root / "home"])}
    assert home == {k for k in everything if k.startswith("home/")}
    # "home" must not match "homework/" and a file path selects itself
    two = cat.query("dog | !dog", paths=[root / "hom", root / "holiday" / "img00.jpg"])
    assert [os.path.relpath(r.path, root) for r in two] == ["holiday/img00.jpg"]
    garden = cat.query("beach>=0", paths=[root / "home" / "garden", root / "home/garden/"])
    assert len(garden) == 20


def test_records_carry_tags_and_matched_scores(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path, {"a.jpg": [0.9, 0.75, 0.2, 0.35, 0.0, 0.81]})
    (rec,) = cat.query("dog & person>=0.3")
    assert rec.tag_names() == ["dog", "hot dog", "beach"]
    assert rec.tag_names("zh") == ["狗", "热狗", "海滩"]
    assert rec.tags[0].threshold == 0.7 and abs(rec.tags[0].score - 0.9) < 1e-3
    assert set(rec.matched) == {"dog", "person"} and abs(rec.matched["person"] - 0.35) < 1e-3
    d = rec.to_dict()
    assert d["path"] == str(tmp_path / "a.jpg") and d["tags"][0]["name"] == "dog" and d["model"] == "tiny"


def test_chinese_names_and_case(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path, {"a.jpg": [0.9, 0, 0, 0, 0.8, 0], "b.jpg": [0, 0, 0, 0, 0, 0]})
    assert [r.path.name for r in cat.query("狗 & 海狮")] == ["a.jpg"]
    assert [r.path.name for r in cat.query("DOG & 'Sea Lion'")] == ["a.jpg"]


def test_open_set_tags_and_mixed_vocabularies(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path, {"old.jpg": [0.9] * 6})
    fill(cat, tmp_path, {"new.jpg": [0.9] * 6 + [0.6]}, vocab=VOCAB.extend(["corgi"], [0.5]))
    assert [r.path.name for r in cat.query("dog & corgi")] == ["new.jpg"]
    assert [r.path.name for r in cat.query("dog & !corgi")] == ["old.jpg"]  # never scored: not a corgi
    assert [r.path.name for r in cat.query("corgi < 0.7")] == ["new.jpg"]  # only images scored with it
    assert cat.query("corgi>=0.7") == []
