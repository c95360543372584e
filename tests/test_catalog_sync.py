"""plan_run: skip only when the output the current settings ask for is still there with that content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _catalog_util import VOCAB

from ramtag.catalog import Catalog, Identity, ImageScores, path_key
from ramtag.catalog.outputs import fingerprint_of, line_fingerprint
from ramtag.catalog.sync import Wanted, plan_run
from ramtag.writers.xmp import merge_tags

SCORES = np.array([0.9, 0.75, 0.1, 0.1, 0.1, 0.1])


@pytest.fixture
def lib(tmp_path: Path) -> tuple[Catalog, list[Path], str]:
    """Three tagged photos with XMP sidecars recorded, as a finished run leaves them."""
    cat = Catalog(tmp_path / "c.sqlite")
    vid = cat.add_vocabulary(VOCAB)
    run = cat.begin_run("tag")
    photos = []
    for i in range(3):
        p = tmp_path / "lib" / f"p{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"photo%d" % i)
        photos.append(p)
        cat.record_images([ImageScores(p, Identity.of_path(p), "model-A", vid, SCORES)], run)
        sidecar = p.with_name(p.name + ".xmp")
        data, record = merge_tags(None, ["dog", "beach"], path=sidecar)
        assert data is not None
        sidecar.write_bytes(data)
        cat.record_output(
            p,
            "xmp",
            sidecar,
            [("dog", 0.9), ("beach", 0.75)],
            fingerprint_of(record) or "",
            "D1",
            run,
            os.stat(sidecar),
        )
    return cat, photos, run


def _names(paths: list) -> list[str]:
    return [Path(os.fsdecode(p)).name for p in paths]


def test_unchanged_library_is_skipped(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, _ = lib
    plan = plan_run(cat, photos, Wanted("model-A", VOCAB, "D1"))
    assert _names(plan.skip) == ["p0.jpg", "p1.jpg", "p2.jpg"] and not plan.redecide and not plan.score
    assert _names(plan_run(cat, photos, Wanted("model-A", VOCAB, "D1"), force=True).score) == _names(photos)


def test_deleted_or_untagged_sidecar_is_redecided(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, _ = lib
    photos[0].with_name("p0.jpg.xmp").unlink()  # deleted by hand
    s1 = photos[1].with_name("p1.jpg.xmp")  # ramtag's keywords removed (untag) but the file kept
    s1.write_bytes(merge_tags(None, [], path=s1)[0] or b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    plan = plan_run(cat, photos, Wanted("model-A", VOCAB, "D1"))
    assert _names(plan.redecide) == ["p0.jpg", "p1.jpg"] and _names(plan.skip) == ["p2.jpg"]


def test_user_edit_to_a_sidecar_keeps_it_done(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, _ = lib
    s = photos[0].with_name("p0.jpg.xmp")
    data = s.read_bytes().replace(b"<rdf:Description ", b'<rdf:Description xmp:Rating="5" ', 1)
    data = data.replace(b"<x:xmpmeta ", b'<x:xmpmeta xmlns:xmp="http://ns.adobe.com/xap/1.0/" ', 1)
    s.write_bytes(data)
    os.utime(s, ns=(5, 5))
    assert _names(plan_run(cat, photos, Wanted("model-A", VOCAB, "D1")).skip) == _names(photos)
    (row,) = cat.outputs([photos[0]])[path_key(photos[0])]
    assert row.mtime_ns == 5  # remembered: the next run does not parse it again


def test_new_deciding_settings_redecide_without_the_model(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, _ = lib
    plan = plan_run(cat, photos, Wanted("model-A", VOCAB, "D2"))  # e.g. --threshold 0.3, --lang zh
    assert _names(plan.redecide) == _names(photos) and not plan.score


def test_other_model_or_unscored_tag_or_changed_file_needs_the_model(
    lib: tuple[Catalog, list[Path], str], tmp_path: Path
) -> None:
    cat, photos, _ = lib
    assert _names(plan_run(cat, photos, Wanted("model-B", VOCAB, "D1")).score) == _names(photos)
    more = VOCAB.extend(["corgi"], [0.5])
    assert _names(plan_run(cat, photos, Wanted("model-A", more, "D1")).score) == _names(photos)
    fewer = VOCAB.subset([0, 1])  # --only some tags: every tag was scored
    assert not plan_run(cat, photos, Wanted("model-A", fewer, "D1")).score
    photos[0].write_bytes(b"another photo")  # edited
    photos[1].unlink()
    (tmp_path / "lib" / "x.jpg").write_bytes(b"other")
    os.replace(tmp_path / "lib" / "x.jpg", photos[1])  # replaced by another with... other bytes
    new = tmp_path / "lib" / "new.jpg"
    new.write_bytes(b"new")
    plan = plan_run(cat, [*photos, new], Wanted("model-A", VOCAB, "D1"))
    assert _names(plan.score) == ["p0.jpg", "p1.jpg", "new.jpg"] and _names(plan.skip) == ["p2.jpg"]


def test_touched_or_copied_file_with_the_same_bytes(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, _ = lib
    os.utime(photos[0], ns=(10**18, 10**18))
    plan = plan_run(cat, photos, Wanted("model-A", VOCAB, "D1"))
    assert plan.refreshed == 1 and _names(plan.skip) == _names(photos)
    assert plan_run(cat, photos, Wanted("model-A", VOCAB, "D1")).refreshed == 0  # back on the fast path


def test_fresh_copy_of_the_folder_is_tagged(lib: tuple[Catalog, list[Path], str], tmp_path: Path) -> None:
    cat, photos, _ = lib
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in photos:
        (copy / p.name).write_bytes(p.read_bytes())
    plan = plan_run(cat, sorted(copy.iterdir()), Wanted("model-A", VOCAB, "D1"))
    assert len(plan.score) == 3  # new paths: never tagged there (their sidecars are not there either)


def test_json_lines_output_checked_per_line(lib: tuple[Catalog, list[Path], str], tmp_path: Path) -> None:
    cat, photos, run = lib
    out = tmp_path / "tags.jsonl"
    lines = {p: json.dumps({"path": str(p), "tags": ["dog"]}).encode() + b"\n" for p in photos}
    out.write_bytes(b"".join(lines.values()))
    for p in photos:
        cat.record_output(p, "json", out, [("dog", 0.9)], line_fingerprint(lines[p]), "D1", run)
    wanted = Wanted("model-A", VOCAB, "D1", kinds=("json",), json_path=out)
    assert _names(plan_run(cat, photos, wanted).skip) == _names(photos)
    out.write_bytes(lines[photos[0]] + lines[photos[2]][:-5])  # p1's line lost, p2's torn
    assert _names(plan_run(cat, photos, wanted).redecide) == ["p1.jpg", "p2.jpg"]
    other = Wanted("model-A", VOCAB, "D1", kinds=("json",), json_path=tmp_path / "other.jsonl")
    assert len(plan_run(cat, photos, other).redecide) == 3
    both = Wanted("model-A", VOCAB, "D1", kinds=("xmp", "json"), json_path=out)
    assert _names(plan_run(cat, photos, both).skip) == ["p0.jpg"]


def test_embedded_keywords_trusted_while_the_image_is_unchanged(lib: tuple[Catalog, list[Path], str]) -> None:
    cat, photos, run = lib
    for p in photos:
        cat.record_output(p, "embed", p, [("dog", 0.9)], "rec:x", "D1", run)
    wanted = Wanted("model-A", VOCAB, "D1", kinds=("embed",))
    assert _names(plan_run(cat, photos, wanted).skip) == _names(photos)
    assert _names(plan_run(cat, photos, Wanted("model-A", VOCAB, "D2", kinds=("embed",))).redecide) == _names(
        photos
    )
    photos[0].write_bytes(b"keywords stripped by another tool")
    assert _names(plan_run(cat, photos, wanted).score) == ["p0.jpg"]
