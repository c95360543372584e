"""--write embed: exiftool writes keywords into images; merged, never duplicated, undone by untag."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from ramtag.errors import ExiftoolError
from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths
from ramtag.writers.exiftool import ExiftoolSession, ExiftoolWriter

needs_exiftool = pytest.mark.interop("exiftool")  # skipped without it, a failure in CI (conftest.py)

OWNED = ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "IPTC:Keywords", "IPTC:CodedCharacterSet")


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def meta(path: Path) -> dict:
    """Every tag exiftool reads, except the file system's and exiftool's own."""
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-struct", "-a", str(path)], capture_output=True, check=True
    ).stdout
    d = json.loads(out)[0]
    skip = ("SourceFile", "System", "ExifTool", "File")
    # XMPToolkit names the program that last wrote the XMP (exiftool), not user data
    return {k: v for k, v in d.items() if k.split(":")[0] not in skip and k != "XMP-x:XMPToolkit"}


def as_list(v: object) -> list:
    return [] if v is None else (v if isinstance(v, list) else [v])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bee(tmp_path: Path, shared_photos: Path) -> Path:
    p = tmp_path / "bee.jpg"
    shutil.copy(shared_photos / "bee_with_existing_keywords.jpg", p)
    p.chmod(0o644)
    return p


@needs_exiftool
def test_embed_merges_and_reruns_do_not_duplicate(bee: Path) -> None:
    pristine, pristine_sha = meta(bee), sha(bee)
    user_keywords = ["bee", "insect", "flower", "Zürich", "東京"]
    assert pristine["IPTC:Keywords"] == user_keywords and pristine["XMP-dc:Subject"] == user_keywords

    w = ExiftoolWriter(model="test-model")
    out = w.write(result(bee, "bee", "猫", "咖啡杯"))
    assert out.action == "written" and out.target == bee
    m = meta(bee)
    assert m["XMP-dc:Subject"] == [*user_keywords, "猫", "咖啡杯"]  # "bee" was there already
    assert m["IPTC:Keywords"] == [*user_keywords, "猫", "咖啡杯"]
    assert m["IPTC:CodedCharacterSet"] == "UTF8"
    assert m["XMP-lr:HierarchicalSubject"] == [
        "Animals|Insects|Bee",
        "Places|Europe|Zürich",
        "insect",  # flat keywords the hierarchy lacks: top level (darktable reads only this property)
        "flower",
        "東京",
        "ramtag|bee",
        "ramtag|猫",
        "ramtag|咖啡杯",
    ]
    assert m["XMP-ramtag:Tags"] == ["bee", "猫", "咖啡杯"] and m["XMP-ramtag:Model"] == "test-model"
    for key, value in pristine.items():  # rating, title, creator, ... all kept
        if key not in OWNED:
            assert m[key] == value, key
    # exiftool kept the untouched original
    assert sha(bee.with_name("bee.jpg_original")) == pristine_sha

    # the same result again: the file is not touched at all
    written_sha, mtime = sha(bee), bee.stat().st_mtime_ns
    assert w.write(result(bee, "bee", "猫", "咖啡杯")).action == "unchanged"
    assert sha(bee) == written_sha and bee.stat().st_mtime_ns == mtime

    # new tags replace ramtag's previous ones, never duplicating
    assert w.write(result(bee, "insect", "花")).action == "written"
    m = meta(bee)
    assert m["XMP-dc:Subject"] == [*user_keywords, "花"]
    assert m["IPTC:Keywords"] == [*user_keywords, "花"]
    assert m["XMP-lr:HierarchicalSubject"][5:] == ["ramtag|insect", "ramtag|花"]
    assert sha(bee.with_name("bee.jpg_original")) == pristine_sha
    w.close()

    # untag: every tag exactly as before ramtag
    outs = list(untag_paths([bee], embedded=True))
    assert [o.action for o in outs] == ["written"] and outs[0].tags == ("insect", "花")
    assert meta(bee) == pristine


@needs_exiftool
def test_no_backup_overwrites_in_place(bee: Path) -> None:
    w = make_writer("embed", backup=False)
    assert w.write(result(bee, "cat")).action == "written"
    w.close()
    assert not bee.with_name("bee.jpg_original").exists()
    assert "cat" in meta(bee)["XMP-dc:Subject"]


@needs_exiftool
def test_png_embed_has_no_iptc(tmp_path: Path, shared_photos: Path) -> None:
    png = tmp_path / "cat.png"
    shutil.copy(shared_photos / "cat_chelsea.png", png)
    png.chmod(0o644)
    before = meta(png)
    w = make_writer("embed", backup=False, hierarchy_root="")
    assert w.write(result(png, "cat", "猫")).action == "written"
    assert w.write(result(png, "cat", "猫")).action == "unchanged"
    w.close()
    m = meta(png)
    assert m["XMP-dc:Subject"] == ["cat", "猫"] and m["XMP-lr:HierarchicalSubject"] == ["cat", "猫"]
    assert not [k for k in m if k.startswith("IPTC:")]
    assert Image.open(png).size == Image.open(shared_photos / "cat_chelsea.png").size
    list(untag_paths([tmp_path], embedded=True, backup=False))
    assert meta(png) == before


@needs_exiftool
def test_unwritable_format_falls_back_to_a_sidecar(tmp_path: Path) -> None:
    bmp = tmp_path / "scan.bmp"
    Image.new("RGB", (8, 8), "red").save(bmp)
    digest = sha(bmp)
    w = make_writer("embed")
    out = w.write(result(bmp, "red"))
    w.close()
    assert out.action == "fallback-sidecar" and out.target == tmp_path / "scan.bmp.xmp"
    assert "exiftool cannot write .bmp files" in out.message
    assert sha(bmp) == digest
    assert meta(tmp_path / "scan.bmp.xmp")["XMP-dc:Subject"] == ["red"]


@needs_exiftool
def test_dry_run_embed_changes_nothing(bee: Path) -> None:
    digest = sha(bee)
    out = make_writer("embed", dry_run=True).write(result(bee, "cat"))
    assert out.action == "dry-run" and out.tags == ("cat",)
    assert sha(bee) == digest and sorted(p.name for p in bee.parent.iterdir()) == ["bee.jpg"]


@needs_exiftool
def test_exiftool_failure_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a real jpeg" * 10)
    digest = sha(broken)
    w = make_writer("embed")
    with pytest.raises(ExiftoolError, match=r"broken\.jpg"):
        w.write(result(broken, "cat"))
    # the session survives a failed file
    good = tmp_path / "good.jpg"
    Image.new("RGB", (8, 8)).save(good)
    assert w.write(result(good, "cat")).action == "written"
    w.close()
    assert sha(broken) == digest


@needs_exiftool
def test_embed_from_a_background_thread(tmp_path: Path) -> None:
    images = []
    for i in range(4):
        p = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(p)
        images.append(p)
    w = make_writer("embed", backup=False)
    with ThreadPoolExecutor(max_workers=1) as pool:
        actions = list(pool.map(lambda p: w.write(result(p, "red", p.stem)).action, images))
    w.close()
    assert actions == ["written"] * 4
    m = meta(images[3])
    assert m["XMP-dc:Subject"] == ["red", "img3"]
    assert m["IPTC:Keywords"] == ["red", "img3"] and m["IPTC:CodedCharacterSet"] == "UTF8"  # JPEG holds IPTC


@needs_exiftool
def test_session_recovers_after_exiftool_dies() -> None:
    session = ExiftoolSession(timeout=20)
    assert session.execute("-ver")[0].strip()
    tool = session._tool
    assert tool is not None
    os.kill(tool._process.pid, 9)  # type: ignore[union-attr]
    tool._process.wait()  # type: ignore[union-attr]
    version, _, status = session.execute("-ver")  # noticed and restarted
    assert status == 0 and version.strip()
    session.close()


def test_hung_exiftool_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "exiftool"
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    session = ExiftoolSession(timeout=1)
    started = time.monotonic()
    with pytest.raises(ExiftoolError, match="did not answer within 1 s"):
        session.execute("-ver")
    assert time.monotonic() - started < 10
    assert session._tool is None or not session._tool.running
    session.close()


FAKE_EXIFTOOL = """#!{python}
# Speaks exiftool's -stay_open protocol for one command, then exits mid-way through the next one.
import re, sys
args, answered = [], 0
for line in sys.stdin:
    line = line.rstrip("\\n")
    m = re.fullmatch(r"-execute(\\d+)", line)
    if not m:
        args.append(line)
        continue
    if answered:
        sys.exit(3)
    answered += 1
    sys.stdout.write("12.57\\n{{ready%s}}\\n" % m.group(1))
    sys.stdout.flush()
    sys.stderr.write(args[args.index("-echo4") + 1].replace("${{status}}", "0") + "\\n")
    sys.stderr.flush()
    args = []
"""


def test_exiftool_dying_mid_command_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "exiftool"
    fake.write_text(FAKE_EXIFTOOL.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    session = ExiftoolSession(timeout=20)
    assert session._start().version == "12.57"  # start-up asks -ver: answered
    with pytest.raises(ExiftoolError, match="exited unexpectedly"):
        session.execute("-j", "x.jpg")
    session.close()


def test_missing_exiftool_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExiftoolError, match=r"libimage-exiftool-perl.*brew install exiftool"):
        make_writer("embed")
    with pytest.raises(ExiftoolError, match="exiftool not found"):
        list(untag_paths([tmp_path], embedded=True))
    # sidecars alone need no exiftool
    img = tmp_path / "a.jpg"
    make_writer("xmp").write(result(img, "cat"))
    assert [o.action for o in untag_paths([img])] == ["deleted"]
