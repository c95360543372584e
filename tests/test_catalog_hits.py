"""The hits index is bounded (at most HIT_CAP rows per image) and every answer stays exact.

Images whose weights put many tags over the index floor (random or badly calibrated weights) keep
their HIT_CAP highest scores in ``hits`` and a ``hit_floor``; queries, records, exports, albums,
stats and ``untag --below`` must answer for them exactly as a brute-force pass over the stored
float16 scores does.
"""

from __future__ import annotations

import csv
import io
import os
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ramtag.catalog import HIT_CAP, HIT_FLOOR, SCHEMA_VERSION, Catalog, Identity, ImageScores, parse
from ramtag.catalog.albums import make_album
from ramtag.catalog.export import write_records
from ramtag.catalog.query import And, Not, Or, Tag
from ramtag.tags import Vocabulary

N_TAGS = 3 * HIT_CAP  # more tags than the cap, so saturated images are cut
NAMES = tuple(f"t{i:03d}" for i in range(N_TAGS))
# two vocabularies of the same names with different thresholds (low ones too: under HIT_FLOOR)
TH_A = tuple((0.1, 0.25, 0.5, 0.7, 0.9)[i % 5] for i in range(N_TAGS))
TH_B = tuple((0.9, 0.6, 0.2, 0.8, 0.4)[i % 5] for i in range(N_TAGS))
VOCABS = (Vocabulary(NAMES, TH_A), Vocabulary(NAMES, TH_B))
QUERY_TAGS = NAMES[:10]  # every threshold of both vocabularies


def _scores(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "realistic":  # a trained tagger's: mostly near 0, a few high
        s = rng.random(N_TAGS) ** 12
        s[rng.choice(N_TAGS, 8, replace=False)] = rng.uniform(0.3, 1.0, 8)
        return s
    if kind == "saturated":  # random weights: most scores over the floor
        return rng.uniform(0.2, 1.0, N_TAGS)
    if kind == "tied":  # more than the cap tied at the top: nothing can be indexed
        return np.full(N_TAGS, 0.9)
    if kind == "stepped":  # a few at the top, then a plateau over the cap
        s = np.full(N_TAGS, 0.05)
        s[:40] = 0.99
        s[40 : 40 + 2 * HIT_CAP] = 0.6
        return rng.permutation(s)
    raise ValueError(kind)


@pytest.fixture
def library(tmp_path: Path) -> tuple[Catalog, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A catalog of mixed images; returns (catalog, root, name -> (float16 scores, thresholds))."""
    rng = np.random.default_rng(11)
    cat = Catalog(tmp_path / "c.sqlite")
    run = cat.begin_run("tag")
    vids = [cat.add_vocabulary(v) for v in VOCABS]
    root = tmp_path / "lib"
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    items = []
    kinds = ["realistic", "saturated", "saturated", "realistic", "tied", "stepped"]
    for i in range(36):
        kind = kinds[i % len(kinds)]
        name = f"{'a' if i % 4 else 'b'}/{kind}{i:02d}.jpg"
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(name.encode())
        v = i % 2
        s = _scores(kind, rng).astype(np.float32)
        items.append(ImageScores(p, Identity.of_path(p), "m", vids[v], s))
        truth[name] = (s.astype(np.float16).astype(np.float64), np.asarray(VOCABS[v].thresholds))
    cat.record_images(items, run)
    return cat, root, truth


def _ok(node: object, s: np.ndarray, th: np.ndarray) -> bool:
    if isinstance(node, Tag):
        c = NAMES.index(node.name)
        v = s[c]
        return {
            None: v > th[c],
            ">=": v >= node.value,
            ">": v > node.value,
            "<": v < node.value,
            "<=": v <= node.value,
        }[node.op]
    if isinstance(node, Not):
        return not _ok(node.child, s, th)
    if isinstance(node, And):
        return all(_ok(c, s, th) for c in node.children)
    if isinstance(node, Or):
        return any(_ok(c, s, th) for c in node.children)
    raise TypeError(node)


def _random_query(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 2 or r < 0.45:
        name = rng.choice(QUERY_TAGS)
        if rng.random() < 0.5:
            op = rng.choice([">=", ">", "<", "<="])
            value = rng.choice([0.05, 0.2, HIT_FLOOR, 0.5, 0.6, 0.8, 0.9, 0.95, 0.99])
            return f"{name}{op}{value}"
        return name
    if r < 0.6:
        return "!" + _random_query(rng, depth + 1)
    op = rng.choice([" & ", " | "])
    return "(" + op.join(_random_query(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"


def _brute_tags(s: np.ndarray, th: np.ndarray) -> list[tuple[str, float]]:
    order = sorted(np.flatnonzero(s > th), key=lambda c: -s[c])
    return [(NAMES[c], float(s[c])) for c in order]


def test_index_is_bounded_and_floor_is_exact(library: tuple[Catalog, Path, dict]) -> None:
    cat, root, truth = library
    rows = {
        os.path.relpath(os.fsdecode(k), root): (i, f)
        for i, k, f in cat.execute("SELECT id, path, hit_floor FROM images")
    }
    tag_col = {int(t): NAMES.index(n) for n, t in cat.execute("SELECT name, id FROM tags")}
    cut = 0
    for name, (s, th) in truth.items():
        image, floor = rows[name]
        hits = {
            tag_col[t]: score
            for t, score in cat.execute("SELECT tag, score FROM hits WHERE image = ?", (image,))
        }
        assert len(hits) <= HIT_CAP, name
        if floor is None:  # fully indexed: every score at or above min(threshold, HIT_FLOOR)
            assert set(hits) == set(np.flatnonzero((s >= np.minimum(th, HIT_FLOOR)) | (s > th))), name
        else:  # cut: exactly the scores at or above the floor, which is over every score left out
            cut += 1
            assert set(hits) == set(np.flatnonzero(s >= floor)), name
            assert len(np.flatnonzero((s >= np.minimum(th, HIT_FLOOR)) | (s > th))) > HIT_CAP
        assert all(hits[c] == s[c] for c in hits)
    assert cut == 24  # saturated, tied and stepped images; the realistic ones are whole
    assert rows["b/tied04.jpg"][1] > 0.9 and cat.execute(
        "SELECT COUNT(*) FROM hits WHERE image = ?", (rows["b/tied04.jpg"][0],)
    ) == [(0,)]


def test_recording_does_not_grow_with_the_scores_over_the_floor(tmp_path: Path) -> None:
    """Recording cost is the rows written: 4,585 tags nearly all over the floor still write HIT_CAP."""
    names = tuple(f"tag{i}" for i in range(4585))
    cat = Catalog(tmp_path / "c.sqlite")
    vid = cat.add_vocabulary(Vocabulary(names, (0.65,) * len(names)))
    p = tmp_path / "x.jpg"
    p.write_bytes(b"x")
    rng = np.random.default_rng(0)
    for n_high in (100, 1000, 4585):
        s = np.full(len(names), 0.01, dtype=np.float32)
        s[:n_high] = rng.uniform(0.31, 1.0, n_high)
        cat.record_images([ImageScores(p, Identity.of_path(p), "m", vid, s)], cat.begin_run("tag"))
        (n,) = cat.execute("SELECT COUNT(*) FROM hits")[0]
        assert HIT_CAP // 2 < n <= HIT_CAP, n_high  # (float16 ties at the cut are left out)


@pytest.mark.parametrize("few", [20000, 1])  # 1: blobs read in one pass over the table, as for big catalogs
def test_queries_match_brute_force(
    library: tuple[Catalog, Path, dict], monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    monkeypatch.setattr("ramtag.catalog.query._FEW", few)
    cat, root, truth = library
    rng = random.Random(5)
    fixed = ["t003", "t004>=0.95", "t002>=0.6", "t000>0.3", "!t001", "t004 & t001>=0.9", "t002<0.99"]
    for q in fixed + [_random_query(rng) for _ in range(150)]:
        node = parse(q)
        want = {k for k, (s, th) in truth.items() if _ok(node, s, th)}
        assert {os.path.relpath(r.path, root) for r in cat.query(q)} == want, q
        under_a = {
            os.path.relpath(os.fsdecode(k), root) for k in cat.paths_of(cat.query_ids(q, [root / "a"]))
        }
        assert under_a == {k for k in want if k.startswith("a/")}, q


def test_records_and_export_match_brute_force(library: tuple[Catalog, Path, dict], tmp_path: Path) -> None:
    cat, root, truth = library
    records = cat.query("t000 | !t000")
    assert len(records) == len(truth)
    for rec in records:
        s, th = truth[os.path.relpath(rec.path, root)]
        assert [(t.name, t.score) for t in rec.tags] == _brute_tags(s, th), rec.path
        assert all(t.threshold == th[NAMES.index(t.name)] for t in rec.tags)
    # the query's own tags' scores, as for a fully indexed image (at or above min(threshold, floor))
    for rec in cat.query("t002>=0.5 | t004"):
        s, th = truth[os.path.relpath(rec.path, root)]
        want = {
            n: s[c] for n, c in (("t002", 2), ("t004", 4)) if s[c] >= min(th[c], HIT_FLOOR) or s[c] > th[c]
        }
        assert rec.matched == pytest.approx(want), rec.path
    out = io.BytesIO()
    assert write_records(cat.records(cat.image_ids()), out, "csv") == len(truth)
    for row in csv.DictReader(io.StringIO(out.getvalue().decode())):
        s, th = truth[os.path.relpath(row["path"], root)]
        tags = _brute_tags(s, th)
        assert row["tags"] == ";".join(n for n, _ in tags)
        assert row["scores"] == ";".join(f"{v:.3f}" for _, v in tags)


def test_albums_match_brute_force(library: tuple[Catalog, Path, dict], tmp_path: Path) -> None:
    cat, root, truth = library
    res = make_album(cat, "t001 & t003>=0.8", tmp_path / "album")
    want = {str(root / k) for k, (s, th) in truth.items() if s[1] > th[1] and s[3] >= 0.8}
    assert want and res.matched == len(want)
    assert {os.readlink(p) for p in (tmp_path / "album").iterdir() if p.is_symlink()} == want


def test_stats_match_brute_force(library: tuple[Catalog, Path, dict]) -> None:
    cat, root, truth = library

    def brute(prefix: str = "") -> list[tuple[str, int]]:
        counts: dict[str, int] = {}
        for k, (s, th) in truth.items():
            if k.startswith(prefix):
                for c in np.flatnonzero(s > th):
                    counts[NAMES[c]] = counts.get(NAMES[c], 0) + 1
        return sorted(counts.items(), key=lambda x: (-x[1], x[0]))

    assert cat.stats(limit=None) == brute()
    assert cat.stats(limit=7) == brute()[:7]
    assert cat.stats([root / "b"], limit=None) == brute("b/")


def test_untag_below_sees_every_written_tag(library: tuple[Catalog, Path, dict], tmp_path: Path) -> None:
    """untag --below works on what was written (outputs), cut index or not."""
    cat, root, truth = library
    run = cat.begin_run("tag")
    jsonl = tmp_path / "tags.jsonl"
    for k, (s, th) in truth.items():
        cat.record_output(root / k, "json", jsonl, _brute_tags(s, th), "fp", "D", run)
    for value in (0.5, 0.95):
        got = {os.path.relpath(r.image_path, root): sorted(low) for r, low in cat.outputs_below(value)}
        want = {
            k: sorted(n for n, v in _brute_tags(s, th) if v < value)
            for k, (s, th) in truth.items()
            if any(v < value for _, v in _brute_tags(s, th))
        }
        assert got == want


def test_version_1_catalog_gains_hit_floor(tmp_path: Path) -> None:
    """A catalog written before the cap: migrated in place, its images read as fully indexed."""
    path = tmp_path / "old.sqlite"
    cat = Catalog(path)
    run = cat.begin_run("tag")
    vid = cat.add_vocabulary(VOCABS[0])
    p = tmp_path / "x.jpg"
    p.write_bytes(b"x")
    s = np.full(N_TAGS, 0.05, dtype=np.float32)
    s[:3] = 0.95
    cat.record_images([ImageScores(p, Identity.of_path(p), "m", vid, s)], run)
    cat.close()
    conn = sqlite3.connect(path)  # back to the version-1 layout
    conn.execute("DROP INDEX images_truncated")
    conn.execute("ALTER TABLE images DROP COLUMN hit_floor")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    cat = Catalog(path, readonly=True)  # a read-only open migrates too (once, read-write)
    assert cat.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert cat.execute("SELECT hit_floor FROM images") == [(None,)]
    assert [r.tag_names() for r in cat.query("t000 & t002")] == [["t000", "t001", "t002"]]
    assert cat.stats() == [("t000", 1), ("t001", 1), ("t002", 1)]
