"""untag --run (revert one run's outputs) and untag --below (drop low-scored tags), via the catalog."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _catalog_util import VOCAB

from ramtag.catalog import Catalog, Identity, ImageScores, path_key
from ramtag.catalog.outputs import line_fingerprint, sidecar_fingerprint
from ramtag.catalog.untag import forget_untagged, untag_below, untag_run
from ramtag.writers import untag_paths
from ramtag.writers.xmp import XmpPacket, merge_tags

USER_SIDECAR = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:subject><rdf:Bag><rdf:li>my own keyword</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def _tag(
    cat: Catalog, photo: Path, tags: list[tuple[str, float]], run: str, settings: dict | None = None
) -> Path:
    """What a tagging run does for one photo with an XMP sidecar."""
    cat.begin_run("tag", settings or {"hierarchy_root": "ramtag"}, run_id=run)
    vid = cat.add_vocabulary(VOCAB)
    scores = np.zeros(len(VOCAB))
    for name, s in tags:
        scores[VOCAB.names.index(name)] = s
    cat.record_images([ImageScores(photo, Identity.of_path(photo), "m", vid, scores)], run)
    sidecar = photo.with_name(photo.name + ".xmp")
    old = sidecar.read_bytes() if sidecar.exists() else None
    data, _ = merge_tags(old, [n for n, _ in tags], path=sidecar, hierarchy_root="ramtag")
    if data is not None:
        sidecar.write_bytes(data)
    cat.record_output(
        photo, "xmp", sidecar, tags, sidecar_fingerprint(sidecar) or "", "D", run, os.stat(sidecar)
    )
    return sidecar


def _subjects(sidecar: Path) -> list[str]:
    return XmpPacket.parse(sidecar.read_bytes()).values("http://purl.org/dc/elements/1.1/", "subject") or []


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        p.write_bytes(b"photo%d" % i)
        out.append(p)
    return out


def test_untag_run_reverts_only_what_that_run_still_owns(tmp_path: Path, photos: list[Path]) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    photos[0].with_name("p0.jpg.xmp").write_bytes(USER_SIDECAR)  # the user's sidecar before ramtag
    s0 = _tag(cat, photos[0], [("dog", 0.9)], "run-1")
    s1 = _tag(cat, photos[1], [("dog", 0.9)], "run-1")
    s2 = _tag(cat, photos[2], [("beach", 0.9)], "run-2")
    _tag(cat, photos[1], [("sea", 0.9)], "run-2")  # run-2 rewrote p1's sidecar: now run-2's
    outcomes = list(untag_run(cat, "run-1"))
    assert [o.action for o in outcomes] == ["written"]
    assert _subjects(s0) == ["my own keyword"]  # the user's keyword stays, ramtag's record is gone
    assert "sea" in _subjects(s1) and "beach" in _subjects(s2)
    assert cat.outputs_of_run("run-1") == []
    assert [o.action for o in untag_run(cat, "run-2", dry_run=True)] == ["dry-run", "dry-run"]
    assert {o.action for o in untag_run(cat, "run-2")} == {"deleted"}  # ramtag created those sidecars
    assert not s1.exists() and not s2.exists()


def test_untag_run_json_lines(tmp_path: Path, photos: list[Path]) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    out = tmp_path / "tags.jsonl"
    lines = []
    for i, p in enumerate(photos):
        run = "run-1" if i < 2 else "run-2"
        _tag(cat, p, [("dog", 0.9)], run)
        line = json.dumps({"path": str(p), "tags": [{"name": "dog", "score": 0.9}]}).encode() + b"\n"
        lines.append(line)
        cat.record_output(p, "json", out, [("dog", 0.9)], line_fingerprint(line), "D", run)
    out.write_bytes(b'{"note": "not ours"}\n' + b"".join(lines))
    outcomes = [o for o in untag_run(cat, "run-1") if o.target == out]
    assert [o.message for o in outcomes] == [f"{out}: removed 2 lines"]
    kept = [json.loads(x) for x in out.read_bytes().splitlines()]
    assert kept == [{"note": "not ours"}, {"path": str(photos[2]), "tags": [{"name": "dog", "score": 0.9}]}]


def test_untag_below_rewrites_with_the_remaining_tags(tmp_path: Path, photos: list[Path]) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    s0 = _tag(cat, photos[0], [("dog", 0.95), ("beach", 0.72), ("sea", 0.71)], "run-1")
    s1 = _tag(cat, photos[1], [("dog", 0.95)], "run-1")
    out = tmp_path / "tags.jsonl"
    d = {"path": str(photos[0]), "tags": [{"name": "dog", "score": 0.95}, {"name": "sea", "score": 0.71}]}
    line = json.dumps(d).encode() + b"\n"
    out.write_bytes(line)
    cat.record_output(
        photos[0], "json", out, [("dog", 0.95), ("sea", 0.71)], line_fingerprint(line), "D", "run-1"
    )
    before1 = s1.read_bytes()
    outcomes = list(untag_below(cat, 0.8))
    assert sorted(o.action for o in outcomes) == ["written", "written"]
    assert _subjects(s0) == ["dog"] and "ramtag|dog" in XmpPacket.parse(s0.read_bytes()).values(
        "http://ns.adobe.com/lightroom/1.0/", "hierarchicalSubject"
    )
    assert s1.read_bytes() == before1  # nothing under 0.8 there: untouched
    assert json.loads(out.read_bytes())["tags"] == [{"name": "dog", "score": 0.95}]
    rows = cat.outputs([photos[0]])[path_key(photos[0])]
    assert {r.kind: r.tags for r in rows} == {"json": (("dog", 0.95),), "xmp": (("dog", 0.95),)}
    assert cat.runs()[0].command == "untag-below" and cat.runs()[0].counts == {"outputs": 2}
    assert list(untag_below(cat, 0.8)) == []  # nothing left under 0.8


def test_plain_untag_updates_the_catalog(tmp_path: Path, photos: list[Path]) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    _tag(cat, photos[0], [("dog", 0.9)], "run-1")
    _tag(cat, photos[1], [("dog", 0.9)], "run-1")
    outcomes = list(untag_paths([photos[0]], embedded=False))
    assert forget_untagged(cat, outcomes) == 1
    assert [r.image_path for r in cat.outputs_of_run("run-1")] == [photos[1]]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_untag_run_embedded(tmp_path: Path) -> None:
    from PIL import Image

    from ramtag.results import ImageTags, TagScore
    from ramtag.writers.exiftool import ExiftoolSession, ExiftoolWriter

    photo = tmp_path / "e.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    cat = Catalog(tmp_path / "c.sqlite")
    cat.begin_run("tag", {}, run_id="run-e")
    vid = cat.add_vocabulary(VOCAB)
    w = ExiftoolWriter(backup=False)
    w.write(ImageTags(path=photo, tags=[TagScore("dog", 0.9, 0.7)]))
    w.close()
    cat.record_images(
        [ImageScores(photo, Identity.of_path(photo), "m", vid, np.full(len(VOCAB), 0.9))], "run-e"
    )
    cat.record_output(photo, "embed", photo, [("dog", 0.9)], "rec:x", "D", "run-e")
    s = ExiftoolSession()
    try:
        before = s.read(photo, ["XMP-dc:Subject", "XMP-ramtag:all"])
        assert [o.action for o in untag_run(cat, "run-e", backup=False)] == ["written"]
        after = s.read(photo, ["XMP-dc:Subject", "XMP-ramtag:all"])
    finally:
        s.close()
    assert any(k.endswith("Subject") for k in before) and not any(k.endswith("Subject") for k in after)
