"""The catalog store: paths as bytes, identity, scores, vocabularies, outputs, runs, migration, parts."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _catalog_util import NAMES, VOCAB, fill

from ramtag.catalog import (
    SCHEMA_VERSION,
    Catalog,
    Identity,
    ImageScores,
    default_catalog_path,
    open_catalog,
    path_key,
    public_settings,
    vocabulary_id,
)
from ramtag.catalog.identity import unchanged
from ramtag.catalog.outputs import (
    jsonl_fingerprints,
    line_fingerprint,
    record_fingerprint,
    sidecar_fingerprint,
)
from ramtag.catalog.parts import merge_part, part_path
from ramtag.catalog.redecide import decide_stored
from ramtag.errors import InputError, UsageError
from ramtag.tags import Vocabulary

REPO = Path(__file__).resolve().parents[1]


def test_default_file_is_wal_in_the_ramtag_cache(ramtag_home: Path) -> None:
    with open_catalog() as cat:
        assert cat.path == ramtag_home / "catalog.sqlite" == default_catalog_path()
        assert cat.execute("PRAGMA journal_mode")[0][0] == "wal"
        assert cat.execute("PRAGMA user_version")[0][0] == SCHEMA_VERSION


def test_importing_and_querying_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np, ramtag\n"
        "from ramtag.catalog import Identity, ImageScores\n"
        "from ramtag.catalog.redecide import decide_stored\n"
        "from ramtag.catalog.albums import make_album\n"
        "from ramtag.catalog.export import write_records\n"
        "from ramtag.catalog.parts import merge_part\n"
        "from ramtag.tags import Vocabulary\n"
        f"cat = ramtag.open_catalog({str(tmp_path / 'c.sqlite')!r})\n"
        "v = Vocabulary(('dog',), (0.5,))\n"
        "vid = cat.add_vocabulary(v)\n"
        f"p = {str(tmp_path / 'a.jpg')!r}; open(p, 'wb').write(b'x')\n"
        "item = ImageScores(p, Identity.of_path(p), 'm', vid, np.array([0.9]))\n"
        "cat.record_images([item], cat.begin_run('t'))\n"
        "assert [r.path.name for r in cat.query('dog')] == ['a.jpg']\n"
        "assert decide_stored(cat, [p], threshold=0.95)[0][0].tags == []\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


def test_one_record_per_file_whatever_the_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"a")
    os.symlink(tmp_path / "photos", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    keys = {
        path_key(p)
        for p in ["photos/a.jpg", "./photos/../photos/a.jpg", tmp_path / "photos/a.jpg", "link/a.jpg"]
    }
    assert keys == {os.fsencode(os.path.realpath(tmp_path / "photos/a.jpg"))}
    cat = Catalog(tmp_path / "c.sqlite")
    vid = cat.add_vocabulary(VOCAB)
    run = cat.begin_run("tag")
    for spelling in ["photos/a.jpg", str(tmp_path / "photos/a.jpg")]:
        ident = Identity.of_path(spelling)
        cat.record_images([ImageScores(spelling, ident, "m", vid, np.full(len(NAMES), 0.9))], run)
    assert cat.count() == 1


@pytest.mark.parametrize(
    "name",
    [b"caf\xe9-latin1.jpg", b"line\nbreak.jpg", "日本語.jpg".encode(), b"\xff\xfe.jpg"],
    ids=["latin1", "newline", "utf8", "garbage"],
)
def test_any_bytes_name_round_trips(tmp_path: Path, name: bytes) -> None:
    folder = os.fsencode(tmp_path)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(b"data")
    cat = Catalog(tmp_path / "c.sqlite")
    vid = cat.add_vocabulary(VOCAB)
    cat.record_images([ImageScores(path, Identity.of_path(path), "m", vid, np.full(len(NAMES), 0.9))], "r1")
    (row,) = cat.lookup([path]).values()
    assert row.key == path and os.fsencode(row.path) == path
    (rec,) = cat.query("dog")
    assert os.fsencode(rec.path) == path and os.path.exists(rec.path)


def test_4000_character_path(tmp_path: Path) -> None:
    folder = tmp_path
    while len(str(folder)) < 3700:
        folder = folder / ("d" * 200)
    folder.mkdir(parents=True)
    path = folder / ("f" * (4000 - len(str(folder)) - 5) + ".jpg")
    assert len(str(path)) == 4000
    path.write_bytes(b"x")
    cat = Catalog(tmp_path / "c.sqlite")
    vid = cat.add_vocabulary(VOCAB)
    cat.record_images([ImageScores(path, Identity.of_path(path), "m", vid, np.full(len(NAMES), 0.9))], "r")
    assert [r.path for r in cat.query("dog", paths=[tmp_path])] == [path]


def test_identity_same_stat_touch_and_edit(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(b"a" * 100)
    ident = Identity.of_path(p)
    assert unchanged(ident, p) is True
    os.utime(p, ns=(1, 1))  # touched: stat moved, content the same
    assert unchanged(ident, p) is None
    p.write_bytes(b"b" * 100)  # same size, other bytes
    assert unchanged(ident, p) is False
    p.unlink()
    assert unchanged(ident, p) is False


def test_identity_of_fd_is_the_decoded_file_even_if_the_name_moves(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(b"old" * 10)
    fd = os.open(p, os.O_RDONLY)
    try:
        (tmp_path / "new.jpg").write_bytes(b"new!" * 10)
        os.replace(tmp_path / "new.jpg", p)  # replaced between decoding and writing
        ident = Identity.of_fd(fd)
    finally:
        os.close(fd)
    assert ident.size == 30
    assert unchanged(ident, p) is False  # the re-run sees the new photo as changed


def test_scores_are_float16_of_every_tag_and_rescoring_replaces(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    _, paths = fill(cat, tmp_path, {"a.jpg": [0.9, 0.1, 0.2, 0.3, 0.01, 0.85]})
    ((vid, _keys, m),) = cat.scores([paths["a.jpg"]])
    assert m.dtype == np.float16 and m.shape == (1, len(NAMES))
    np.testing.assert_allclose(m[0], [0.9, 0.1, 0.2, 0.3, 0.01, 0.85], atol=1e-3)
    assert cat.vocabulary(vid) == VOCAB
    fill(cat, tmp_path, {"a.jpg": [0.1, 0.9, 0.2, 0.3, 0.01, 0.0]}, run="r2")
    assert [r.path.name for r in cat.query("beach")] == ["a.jpg"]
    assert cat.query("dog") == [] and cat.query("hot dog") == []
    assert cat.lookup([paths["a.jpg"]])[path_key(paths["a.jpg"])].run == "r2"


def test_vocabularies_are_stored_once_by_hash(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path, {"a.jpg": [0.9] * 6})
    fill(cat, tmp_path, {"b.jpg": [0.9] * 6})
    other = VOCAB.extend(["corgi"], [0.5])
    fill(cat, tmp_path, {"c.jpg": [0.9] * 7}, vocab=other)
    assert sorted(cat.vocabulary_ids()) == sorted({vocabulary_id(VOCAB), vocabulary_id(other)})
    reopened = Catalog(tmp_path / "c.sqlite")
    assert reopened.vocabulary(vocabulary_id(other)).open_set[-1] is True
    assert [r.path.name for r in reopened.query("corgi")] == ["c.jpg"]


def test_runs_keep_settings_without_secrets(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    settings = {
        "threshold": 0.3,
        "llm_api_key": "sk-secret-1",
        "open_set": {"api_key": "sk-secret-2", "llm_base_url": "https://user:sk-secret-3@llm.local/v1"},
        "auth_token": "sk-secret-4",
    }
    run = cat.begin_run("tag", settings)
    cat.finish_run(run, {"tagged": 3, "failed": 0})
    (info,) = cat.runs()
    assert info.id == run and info.status == "finished" and info.counts == {"tagged": 3, "failed": 0}
    assert (
        info.settings["threshold"] == 0.3
        and info.settings["open_set"]["llm_base_url"] == "https://llm.local/v1"
    )
    raw = (tmp_path / "c.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite-*"))
    assert b"sk-secret" not in raw
    assert public_settings({"password": "x", "Token": 1, "keep": [Path("/a")]}) == {"keep": ["/a"]}


def test_resolve_run_ids(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    a = cat.begin_run("tag", run_id="20260101-000000-aaaa")
    b = cat.begin_run("tag", run_id="20260101-000000-aabb")
    assert cat.resolve_run(b) == b and cat.resolve_run("20260101-000000-aab") == b
    with pytest.raises(UsageError, match="matches 2 runs"):
        cat.resolve_run("20260101-000000-aa")
    with pytest.raises(UsageError, match="no such run"):
        cat.resolve_run("1999")
    assert cat.resolve_run("last") in (a, b)


def test_outputs_per_run_and_below(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    run, paths = fill(cat, tmp_path, {"a.jpg": [0.9, 0.75, 0, 0, 0, 0], "b.jpg": [0.95, 0, 0, 0, 0, 0]})
    sidecar = tmp_path / "a.jpg.xmp"
    cat.record_output(paths["a.jpg"], "xmp", sidecar, [("dog", 0.9), ("beach", 0.75)], "fp-a", "s1", run)
    cat.record_output(paths["b.jpg"], "json", tmp_path / "t.jsonl", [("dog", 0.95)], "fp-b", "s1", "other")
    (row,) = cat.outputs_of_run(run)
    assert row.image_path == paths["a.jpg"] and row.target_path == sidecar and row.kind == "xmp"
    assert row.tags == (("dog", 0.9), ("beach", 0.75)) and row.fingerprint == "fp-a"
    low = cat.outputs_below(0.8)
    assert [(r.image_path.name, names) for r, names in low] == [("a.jpg", ["beach"])]
    assert cat.outputs_below(0.8, paths=[tmp_path / "elsewhere"]) == []
    assert cat.forget_outputs([(paths["a.jpg"], "xmp", sidecar)]) == 1
    assert cat.outputs_of_run(run) == []
    assert set(cat.outputs()) == {path_key(paths["b.jpg"])}
    with pytest.raises(KeyError):
        cat.record_output(tmp_path / "never.jpg", "xmp", sidecar, [], "x", "s", run)


def test_forget_drops_everything_of_an_image(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    run, paths = fill(cat, tmp_path, {"a.jpg": [0.9] * 6, "b.jpg": [0.9] * 6})
    cat.record_output(paths["a.jpg"], "xmp", tmp_path / "a.xmp", [("dog", 0.9)], "f", "s", run)
    assert cat.forget([paths["a.jpg"], tmp_path / "nope.jpg"]) == 1
    assert [r.path.name for r in cat.query("dog")] == ["b.jpg"]
    for table in ("images", "scores", "outputs"):
        assert cat.execute(f"SELECT COUNT(*) FROM {table}")[0][0] == (1 if table != "outputs" else 0)


def test_legacy_state_database_is_taken_over_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "state.sqlite"
    conn = sqlite3.connect(legacy)
    conn.execute(
        "CREATE TABLE done (path TEXT, settings TEXT, size INTEGER, mtime_ns INTEGER, digest TEXT,"
        " tagged_at REAL, PRIMARY KEY (path, settings)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO done VALUES ('/a.jpg', 'k', 1, 1, 'd', 0)")
    conn.commit()
    conn.close()
    with caplog.at_level("WARNING"):
        cat = Catalog(legacy)
    assert "state database" in caplog.text and "1 records" in caplog.text
    assert cat.count() == 0 and cat.execute("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    fill(cat, tmp_path, {"a.jpg": [0.9] * 6})
    assert len(cat.query("dog")) == 1


def test_default_catalog_notes_an_old_state_file(ramtag_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    (ramtag_home / "state.sqlite").write_bytes(b"")
    with caplog.at_level("WARNING"):
        Catalog().close()
    assert "starts afresh" in caplog.text
    assert (ramtag_home / "state.sqlite").exists()  # left for the user to delete


def test_foreign_files_get_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match=r"junk.sqlite: cannot open the catalog .*--catalog"):
        Catalog(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(InputError, match="not a ramtag catalog"):
        Catalog(other)
    newer = tmp_path / "newer.sqlite"
    Catalog(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="newer ramtag"):
        Catalog(newer)
    with pytest.raises(InputError, match="no catalog there yet"):
        Catalog(tmp_path / "missing.sqlite", readonly=True)


def test_readonly_catalog_answers_queries(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    fill(cat, tmp_path, {"a.jpg": [0.9] * 6})
    cat.close()
    ro = open_catalog(tmp_path / "c.sqlite", readonly=True)
    assert [r.path.name for r in ro.query("dog")] == ["a.jpg"]
    assert ro.stats()[0][1] == 1
    with pytest.raises(sqlite3.OperationalError):
        ro.begin_run("tag")


def test_fingerprints(tmp_path: Path) -> None:
    from ramtag.writers.xmp import merge_tags

    sidecar = tmp_path / "a.jpg.xmp"
    assert sidecar_fingerprint(sidecar) is None
    data, record = merge_tags(None, ["dog", "beach"], path=sidecar)
    assert data is not None
    sidecar.write_bytes(data)
    fp = sidecar_fingerprint(sidecar)
    assert fp == record_fingerprint(record.tags, record.added)
    data2, _ = merge_tags(data, ["dog"], path=sidecar)
    assert data2 is not None
    sidecar.write_bytes(data2)
    assert sidecar_fingerprint(sidecar) not in (None, fp)
    sidecar.write_bytes(b"<not xml")
    assert sidecar_fingerprint(sidecar) is None

    jl = tmp_path / "t.jsonl"
    line_a = json.dumps({"path": str(tmp_path / "a.jpg"), "tags": []}).encode() + b"\n"
    line_b = json.dumps({"path": str(tmp_path / "b.jpg"), "tags": []}).encode()
    jl.write_bytes(line_a + line_b)  # b's line torn by a kill: not counted
    assert jsonl_fingerprints(jl) == {path_key(tmp_path / "a.jpg"): line_fingerprint(line_a)}
    assert jsonl_fingerprints(tmp_path / "none.jsonl") == {}


def test_decide_stored_new_thresholds_topk_and_vocab(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    _, paths = fill(cat, tmp_path, {"a.jpg": [0.9, 0.75, 0.2, 0.0, 0.0, 0.85], "b.jpg": [0.1] * 6})
    order = [paths["b.jpg"], tmp_path / "never.jpg", paths["a.jpg"]]
    res, missing = decide_stored(cat, order)
    assert missing == [tmp_path / "never.jpg"]
    assert [r.path.name for r in res] == ["b.jpg", "a.jpg"] and [r.index for r in res] == [0, 2]
    assert res[1].tag_names() == ["dog", "hot dog", "beach"] and res[0].tags == []
    low, _ = decide_stored(cat, order, threshold=0.15, top_k=4)
    assert low[1].tag_names() == ["dog", "hot dog", "beach", "sea"]
    assert low[0].tag_names() == []  # 0.1 is under 0.15 for every tag
    zh, _ = decide_stored(cat, [paths["a.jpg"]])
    assert zh[0].tag_names("zh") == ["狗", "热狗", "海滩"]
    # a vocabulary with other thresholds (e.g. an open-set threshold changed): columns matched by name
    v2 = Vocabulary(NAMES[::-1], tuple([0.5] * 6), None)
    res2, missing2 = decide_stored(cat, [paths["a.jpg"]], v2)
    assert missing2 == [] and res2[0].tag_names() == ["dog", "hot dog", "beach"]
    v3 = VOCAB.extend(["corgi"], [0.5])
    assert decide_stored(cat, [paths["a.jpg"]], v3)[1] == [paths["a.jpg"]]  # never scored corgi


def test_parts_merge_idempotently_and_newer_wins(tmp_path: Path, ramtag_home: Path) -> None:
    main = Catalog(tmp_path / "main.sqlite")
    fill(main, tmp_path, {"old.jpg": [0.9] * 6})
    parts = []
    for rank, names in enumerate([["a.jpg", "b.jpg"], ["c.jpg"]]):
        p = part_path(main.path, rank)
        assert p.parent == ramtag_home / "catalog-parts"
        part = Catalog(p)
        run, paths = fill(part, tmp_path, {n: [0.9, 0, 0, 0, 0, 0] for n in names}, run="R1")
        for n in names:
            part.record_output(paths[n], "xmp", tmp_path / f"{n}.xmp", [("dog", 0.9)], "fp", "s", run)
        part.finish_run(run, {"tagged": len(names), "rank": rank})
        part.close()
        parts.append(p)
    assert merge_part(main, parts[0], remove=False) == 2
    assert merge_part(main, parts[0], remove=False) == 0  # again: nothing changes
    assert merge_part(main, parts[1]) == 1
    assert not parts[1].exists()
    assert sorted(r.path.name for r in main.query("dog")) == ["a.jpg", "b.jpg", "c.jpg", "old.jpg"]
    assert len(main.outputs_of_run("R1")) == 3
    (r1,) = [r for r in main.runs() if r.id == "R1"]
    assert r1.counts["ranks"][parts[1].stem]["rank"] == 1
    # a newer record in the catalog is not overwritten by an older part
    fill(main, tmp_path, {"a.jpg": [0.0, 0.9, 0, 0, 0, 0]}, run="R2")
    assert merge_part(main, parts[0]) == 0
    assert [r.path.name for r in main.query("beach & !dog")] == ["a.jpg"]
    assert not parts[0].exists()
    assert merge_part(main, parts[0]) == 0  # gone: no-op
