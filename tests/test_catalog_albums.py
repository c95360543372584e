"""Albums (links made, refreshed, never touching what ramtag did not make) and exports."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from _catalog_util import fill

from ramtag.catalog import Catalog
from ramtag.catalog.albums import MANIFEST, make_album
from ramtag.catalog.export import write_records
from ramtag.errors import UsageError

DOG = [0.9, 0, 0, 0, 0, 0]
CAT = [0, 0.9, 0, 0, 0, 0]


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    c = Catalog(tmp_path / "c.sqlite")
    fill(c, tmp_path / "lib", {"2023/a.jpg": DOG, "2024/a.jpg": DOG, "2024/b.jpg": DOG, "2024/c.jpg": CAT})
    return c


def _links(folder: Path) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}


def test_album_made_and_refreshed(cat: Catalog, tmp_path: Path) -> None:
    album = tmp_path / "albums" / "dogs"
    lib = tmp_path / "lib"
    res = make_album(cat, "dog", album)
    assert res.matched == 3 and len(res.added) == 3 and not res.removed
    links = _links(album)
    # two images named a.jpg: the second gets a name with a hash; every link points at its image
    assert "a.jpg" in links and "b.jpg" in links and len(links) == 3
    assert {links[n] for n in links} == {
        str(lib / "2023/a.jpg"),
        str(lib / "2024/a.jpg"),
        str(lib / "2024/b.jpg"),
    }
    assert all((album / n).resolve().exists() for n in links)

    (album / "notes.txt").write_text("mine")  # the user's own file in the album folder
    os.symlink(lib / "2024/c.jpg", album / "my-link.jpg")  # and their own link
    again = make_album(cat, "dog", album)
    assert again.kept == 3 and not again.added and not again.removed

    fill(cat, lib, {"2024/b.jpg": CAT}, run="r2")  # b is no longer a dog
    (album / "a.jpg").unlink()  # one of ours deleted by hand: re-made
    res = make_album(cat, "dog", album)
    assert res.removed == ["b.jpg"] and res.added == ["a.jpg"]
    assert not (album / "b.jpg").exists()
    assert (album / "notes.txt").read_text() == "mine" and (album / "my-link.jpg").is_symlink()


def test_album_never_removes_what_the_user_replaced(cat: Catalog, tmp_path: Path) -> None:
    album = tmp_path / "dogs"
    make_album(cat, "dog", album)
    (album / "b.jpg").unlink()
    (album / "b.jpg").write_text("the user's own photo now")
    fill(cat, tmp_path / "lib", {"2024/b.jpg": CAT}, run="r2")
    res = make_album(cat, "dog", album)
    assert not res.removed and (album / "b.jpg").read_text() == "the user's own photo now"
    assert any("changed since" in why for _, why in res.skipped)
    manifest = json.loads((album / MANIFEST).read_text())
    assert "b.jpg" not in manifest["links"]  # no longer ours


def test_album_link_replaced_by_the_user_while_still_matching(cat: Catalog, tmp_path: Path) -> None:
    album = tmp_path / "dogs"
    make_album(cat, "dog", album)
    (album / "b.jpg").unlink()
    (album / "b.jpg").write_text("the user's own photo now")
    res = make_album(cat, "dog", album)
    assert any("replaced by another file" in why for _, why in res.skipped)
    assert (album / "b.jpg").read_text() == "the user's own photo now"
    (name,) = res.added  # the image is linked again, under a name that is free
    assert name.startswith("b~") and os.readlink(album / name) == str(tmp_path / "lib/2024/b.jpg")
    manifest = json.loads((album / MANIFEST).read_text())
    assert "b.jpg" not in manifest["links"] and name in manifest["links"]


def test_album_name_taken_by_a_user_file(cat: Catalog, tmp_path: Path) -> None:
    album = tmp_path / "dogs"
    album.mkdir()
    (album / "b.jpg").write_text("mine")
    make_album(cat, "dog", album)
    assert (album / "b.jpg").read_text() == "mine"
    assert any(n.startswith("b~") for n in _links(album))


def test_hardlink_album_and_dry_run(cat: Catalog, tmp_path: Path) -> None:
    album = tmp_path / "dogs"
    dry = make_album(cat, "dog", album, hardlink=True, dry_run=True)
    assert len(dry.added) == 3 and not album.exists()
    make_album(cat, "dog", album, hardlink=True)
    files = sorted(p.name for p in album.iterdir() if p.name != MANIFEST)
    assert len(files) == 3 and all((album / f).stat().st_nlink == 2 for f in files)
    with pytest.raises(UsageError, match="hardlinks"):
        make_album(cat, "dog", album)
    fill(cat, tmp_path / "lib", {"2024/b.jpg": CAT}, run="r2")
    res = make_album(cat, "dog", album, hardlink=True)
    assert res.removed == ["b.jpg"] and (tmp_path / "lib/2024/b.jpg").exists()


def test_album_restricted_to_paths_and_bad_target(cat: Catalog, tmp_path: Path) -> None:
    res = make_album(cat, "dog", tmp_path / "d23", paths=[tmp_path / "lib/2023"])
    assert res.matched == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        make_album(cat, "dog", tmp_path / "file")


def test_non_utf8_names_in_albums_and_exports(tmp_path: Path) -> None:
    c = Catalog(tmp_path / "c.sqlite")
    odd = os.fsdecode(b"caf\xe9\nx.jpg")
    fill(c, tmp_path / "lib", {odd: DOG})
    album = tmp_path / "dogs"
    make_album(c, "dog", album)
    (link,) = [p for p in os.listdir(os.fsencode(album)) if p != MANIFEST.encode()]
    assert link == b"caf\xe9\nx.jpg"
    assert make_album(c, "dog", album).kept == 1  # the manifest round-trips the bytes

    out = io.BytesIO()
    write_records(c.query("dog"), out, "paths", nul=True)
    assert out.getvalue() == os.fsencode(tmp_path / "lib") + b"/caf\xe9\nx.jpg\0"
    out = io.BytesIO()
    write_records(c.query("dog"), out, "jsonl")
    line = json.loads(out.getvalue())
    assert os.fsencode(line["path"]).endswith(b"/caf\xe9\nx.jpg")
    out = io.BytesIO()
    write_records(c.query("dog"), out, "tsv")
    assert out.getvalue().count(b"\n") == 1 and b"caf\xe9\\nx.jpg\tdog\t0.900" in out.getvalue()


def test_export_csv_and_jsonl(cat: Catalog, tmp_path: Path) -> None:
    out = io.BytesIO()
    assert write_records(cat.query("dog | beach"), out, "csv") == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert [Path(r["path"]).relative_to(tmp_path / "lib").as_posix() for r in rows] == [
        "2023/a.jpg",
        "2024/a.jpg",
        "2024/b.jpg",
        "2024/c.jpg",
    ]
    assert rows[0]["tags"] == "dog" and rows[0]["scores"] == "0.900" and rows[3]["tags"] == "beach"
    out = io.BytesIO()
    write_records(cat.query("beach"), out, "jsonl")
    (rec,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rec["tags"][0]["name"] == "beach" and rec["tags"][0]["threshold"] == 0.7
    with pytest.raises(UsageError, match="--format 'xml'"):
        write_records([], io.BytesIO(), "xml")


def test_stats(cat: Catalog, tmp_path: Path) -> None:
    assert cat.stats() == [("dog", 3), ("beach", 1)]
    assert cat.stats(paths=[tmp_path / "lib/2023"]) == [("dog", 1)]
    assert cat.stats(limit=1) == [("dog", 3)]
