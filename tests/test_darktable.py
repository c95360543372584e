"""Issue 11, read back by a real photo manager: darktable imports ramtag's sidecars (``darktable-cli``,
headless, library and config in temporary folders) and its library database must hold the user's own
keywords and ramtag's tags, with no false nesting; after ``ramtag untag`` it sees what it saw before.

darktable reads ``lr:hierarchicalSubject`` (and ignores ``dc:subject`` when it is there), so this checks that
ramtag's sidecar carries the photo's embedded keywords in the property darktable trusts. CI installs darktable
from the distribution's packages (``.ci/run``); without ``darktable-cli`` the tests skip (fail in CI).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _dng import make_dng
from _embedded import make_jpeg, xmp_packet
from _xmp_samples import SAMPLES

from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths
from ramtag.writers.base import PIPE_LOOKALIKE, SLASH_LOOKALIKE

DARKTABLE = shutil.which("darktable-cli") or "darktable-cli"
pytestmark = pytest.mark.interop("darktable-cli")  # skipped without it, a failure in CI (conftest.py)

RAMTAG_TAGS = ["cat", "胡同/球道", "AC|DC"]
EXPECTED_RAMTAG = {"ramtag|cat", f"ramtag|胡同{SLASH_LOOKALIKE}球道", f"ramtag|AC{PIPE_LOOKALIKE}DC"}
USER_HIERARCHY = {"People|Family", "Places|Paris"}


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def darktable_tags(image: Path, work: Path) -> set[str]:
    """Import ``image`` (and its sidecar) into a fresh darktable library; the tag names darktable attached."""
    work.mkdir()
    env = dict(
        os.environ, HOME=str(work), XDG_CONFIG_HOME=str(work / "xdg"), XDG_CACHE_HOME=str(work / "cache")
    )
    cmd = [
        str(DARKTABLE),
        str(image),
        str(work / "out.jpg"),  # darktable-cli always exports; a tiny one
        "--width",
        "16",
        "--height",
        "16",
        "--core",
        "--configdir",
        str(work / "config"),
        "--cachedir",
        str(work / "cache"),
        "--library",
        str(work / "library.db"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = sqlite3.connect(work / "library.db")
    try:
        db.execute("ATTACH DATABASE ? AS data", (str(work / "config" / "data.db"),))
        rows = db.execute(
            "SELECT t.name FROM main.tagged_images ti JOIN main.images i ON i.id = ti.imgid "
            "JOIN data.tags t ON t.id = ti.tagid WHERE i.filename = ?",
            (image.name,),
        ).fetchall()
    finally:
        db.close()
    return {name for (name,) in rows if not name.startswith("darktable|")}  # darktable's own format tags


def test_darktable_sees_the_users_keywords_and_ramtags_without_false_nesting(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = make_jpeg(
        photos / "photo.jpg",
        xmp=xmp_packet(["Family", "beach"], sorted(USER_HIERARCHY)),
        iptc_keywords=["Family", "beach"],
        size=(64, 48),
    )
    embedded_only = darktable_tags(photo, tmp_path / "dt0")  # darktable's view of the photo alone
    assert embedded_only >= USER_HIERARCHY

    w = make_writer("xmp")
    assert w.write(result(photo, *RAMTAG_TAGS)).action == "written"
    tags = darktable_tags(photo, tmp_path / "dt1")
    # every keyword darktable showed before is still there: as itself, or as the leaf of the user's own
    # hierarchical keyword ("Family" is People|Family); "beach" only because ramtag put the flat keywords
    # into lr:hierarchicalSubject, the one property darktable reads from a sidecar
    leaves = {t.rsplit("|", 1)[-1] for t in tags}
    assert all(t in tags or t in leaves for t in embedded_only), (embedded_only, tags)
    assert tags >= USER_HIERARCHY | {"beach"}
    assert tags >= EXPECTED_RAMTAG
    # no false nesting: nothing split at the "/" or "|" inside a tag name
    assert not {t for t in tags if "球道" in t} - EXPECTED_RAMTAG
    assert not [t for t in tags if t.endswith("|DC") or t == "ramtag|AC"]
    assert all(t.count("|") <= 1 for t in tags)

    list(untag_paths([photos], embedded=False))
    assert sorted(p.name for p in photos.iterdir()) == ["photo.jpg"]
    assert darktable_tags(photo, tmp_path / "dt2") == embedded_only


def test_darktable_reads_the_sidecar_of_a_raw_file(tmp_path: Path) -> None:
    pytest.importorskip("rawpy")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    pic = rng.integers(40, 200, size=(64, 96, 3), dtype=np.uint8)
    dng = make_dng(photos / "IMG_0001.DNG", pic, xmp=xmp_packet(["Anna"], ["People|Anna"]))
    out = make_writer("xmp").write(result(dng, *RAMTAG_TAGS))
    assert out.target == photos / "IMG_0001.DNG.xmp"  # darktable's own sidecar name for a RAW
    tags = darktable_tags(dng, tmp_path / "dt")
    assert tags >= {"People|Anna", *EXPECTED_RAMTAG}


@pytest.mark.parametrize("style", ["darktable", "lightroom", "digikam"])
def test_darktable_sees_the_same_after_tag_and_untag_of_an_existing_sidecar(
    tmp_path: Path, style: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = make_jpeg(photos / "photo.jpg", size=(64, 48))
    (photos / "photo.jpg.xmp").write_text(SAMPLES[style], encoding="utf-8")
    before = darktable_tags(photo, tmp_path / "dt0")
    make_writer("xmp").write(result(photo, *RAMTAG_TAGS))
    during = darktable_tags(photo, tmp_path / "dt1")
    assert during >= EXPECTED_RAMTAG
    leaves = {t.rsplit("|", 1)[-1] for t in during}
    assert all(t in during or t in leaves for t in before), (before, during)
    list(untag_paths([photos], embedded=False))
    assert darktable_tags(photo, tmp_path / "dt2") == before
