"""What ramtag writes, read back by real readers: exiftool (-j -G1 -struct) and exiv2 (-px)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _xmp_samples import MALFORMED, SAMPLES

from ramtag.errors import SidecarError
from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths

# skipped without them (apt install libimage-exiftool-perl exiv2); a failure in CI (conftest.py)
pytestmark = pytest.mark.interop("exiftool", "exiv2")

TAGS = ["cat", "咖啡杯", "猫", "Zürich café"]
# exiftool keys of the properties ramtag maintains (values may grow; everything else must not change)
OWNED = (
    "XMP-dc:Subject",
    "XMP-lr:HierarchicalSubject",
    "XMP-digiKam:TagsList",
    "XMP-microsoft:LastKeywordXMP",
)


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def exiftool(path: Path) -> dict:
    cmd = ["exiftool", "-j", "-G1", "-struct", "-a", str(path)]
    d = json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout)[0]
    skip = ("SourceFile", "System", "ExifTool", "File")
    return {k: v for k, v in d.items() if k.split(":")[0] not in skip}


def exiv2(path: Path) -> dict[str, str]:
    """``exiv2 -px``: key -> printed value (multi-line values joined); fails on any warning."""
    proc = subprocess.run(["exiv2", "-px", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    out: dict[str, str] = {}
    key = None
    for line in proc.stdout.splitlines():
        m = re.match(r"^(Xmp\.\S+)\s+\S+\s+\d+(?: {2}(.*))?$", line)  # key, type, count, value
        if m:
            key = m.group(1)
            out[key] = m.group(2) or ""
        elif key is not None:
            out[key] += "\n" + line
    return out


def as_list(v: object) -> list:
    return [] if v is None else (v if isinstance(v, list) else [v])


CASES = ["new", *sorted(SAMPLES)]


def make_sidecar(tmp_path: Path, case: str) -> tuple[Path, Path]:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8 placeholder \xff\xd9")
    sidecar = tmp_path / "photo.jpg.xmp"
    if case != "new":
        sidecar.write_text(SAMPLES[case], encoding="utf-8")
    return image, sidecar


@pytest.mark.parametrize("case", CASES)
def test_both_readers_see_the_tags(tmp_path: Path, case: str) -> None:
    image, sidecar = make_sidecar(tmp_path, case)
    w = make_writer("xmp", model="test-model")
    assert w.write(result(image, *TAGS)).action == "written"
    et = exiftool(sidecar)
    assert set(TAGS) <= set(as_list(et["XMP-dc:Subject"]))
    assert {f"ramtag|{t}" for t in TAGS} <= set(as_list(et["XMP-lr:HierarchicalSubject"]))
    assert {f"ramtag/{t}" for t in TAGS} <= set(as_list(et["XMP-digiKam:TagsList"]))
    assert as_list(et["XMP-ramtag:Tags"]) == TAGS
    ex = exiv2(sidecar)
    for t in TAGS:
        assert t in ex["Xmp.dc.subject"].split(", ")
        assert f"ramtag|{t}" in ex["Xmp.lr.hierarchicalSubject"].split(", ")
        assert f"ramtag/{t}" in ex["Xmp.digiKam.TagsList"].split(", ")
    if case == "digikam":
        assert {f"ramtag/{t}" for t in TAGS} <= set(as_list(et["XMP-microsoft:LastKeywordXMP"]))
        assert "ramtag/猫" in ex["Xmp.MicrosoftPhoto.LastKeywordXMP"].split(", ")


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_merge_keeps_every_prior_value_and_untag_restores_it(tmp_path: Path, case: str) -> None:
    image, sidecar = make_sidecar(tmp_path, case)
    before_et, before_ex = exiftool(sidecar), exiv2(sidecar)
    w = make_writer("xmp")
    w.write(result(image, "cat", "dog", "猫"))
    after = exiftool(sidecar)
    for key, value in before_et.items():
        if key in OWNED:
            assert as_list(after[key])[: len(as_list(value))] == as_list(value), key  # user's values first
        else:
            assert after[key] == value, key
    new_keys = set(after) - set(before_et)
    assert all(k in OWNED or k.startswith("XMP-ramtag:") for k in new_keys), new_keys
    # re-runs never duplicate
    for _ in range(2):
        w.write(result(image, "cat", "dog", "猫"))
    again = exiftool(sidecar)
    assert again == after
    for key in OWNED:
        values = as_list(again.get(key))
        assert len(values) == len(set(values)), key
    # a different result replaces ramtag's previous tags
    w.write(result(image, "bird"))
    changed = exiftool(sidecar)
    assert "dog" not in as_list(changed["XMP-dc:Subject"]) and "bird" in as_list(changed["XMP-dc:Subject"])
    # untag restores what both readers see, exactly
    [out] = list(untag_paths([image], embedded=False))
    assert out.action == "written"
    assert exiftool(sidecar) == before_et
    assert exiv2(sidecar) == before_ex


def test_untag_of_a_ramtag_sidecar_removes_it(tmp_path: Path) -> None:
    image, sidecar = make_sidecar(tmp_path, "new")
    make_writer("xmp").write(result(image, *TAGS))
    assert exiv2(sidecar)["Xmp.ramtag.Tags"].split(", ") == TAGS
    assert [o.action for o in untag_paths([tmp_path], embedded=False)] == ["deleted"]
    assert not sidecar.exists()


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_sidecar_left_byte_identical(tmp_path: Path, kind: str) -> None:
    image, sidecar = make_sidecar(tmp_path, "new")
    sidecar.write_bytes(MALFORMED[kind])
    with pytest.raises(SidecarError, match=r"photo\.jpg\.xmp"):
        make_writer("xmp").write(result(image, "cat"))
    assert sidecar.read_bytes() == MALFORMED[kind]


@pytest.mark.parametrize("mode", ["xmp", "json"])
def test_image_bytes_unchanged(tmp_path: Path, shared_photos: Path, mode: str) -> None:
    photos = sorted(p for p in shared_photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    copies = []
    for p in photos:
        shutil.copy(p, tmp_path / p.name)
        copies.append(tmp_path / p.name)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copies}
    w = make_writer(mode, json_path=tmp_path / "tags.jsonl" if mode == "json" else None)
    for p in copies:
        assert w.write(result(p, "cat", "猫")).action == "written"
    w.close()
    if mode == "xmp":
        bee = exiftool(tmp_path / "bee_with_existing_keywords.jpg.xmp")
        # the new sidecar starts from the photo's own keywords (issue 11.1), then ramtag's
        user = ["bee", "insect", "flower", "Zürich", "東京"]
        assert as_list(bee["XMP-dc:Subject"]) == [*user, "cat", "猫"]
        assert bee["XMP-xmp:Rating"] == 4 and bee["XMP-dc:Title"] == "Bee on aster"
        assert as_list(bee["XMP-lr:HierarchicalSubject"])[:2] == [
            "Animals|Insects|Bee",
            "Places|Europe|Zürich",
        ]
        assert exiv2(tmp_path / "coffee_cup.jpg.xmp")["Xmp.dc.subject"] == "cat, 猫"
    list(untag_paths([tmp_path], embedded=False))
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copies} == digests
