"""Issue 11: what photo managers see after ramtag — the user's keywords beside ramtag's, no false nesting,
valid XML whatever the tag names, both sidecar names kept in step, nothing left behind by untag."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _embedded import make_jpeg, xmp_packet
from _xmp_samples import SAMPLES

from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths
from ramtag.writers.base import PIPE_LOOKALIKE, SLASH_LOOKALIKE, clean_tag_names
from ramtag.writers.embedded import read_embedded
from ramtag.writers.xmp import NS_DC, NS_DIGIKAM, NS_LR, NS_XMP, XmpPacket, XmpSidecarWriter

NS_PHOTOSHOP = "http://ns.adobe.com/photoshop/1.0/"
NS_DARKTABLE = "http://darktable.sf.net/"


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def packet(sidecar: Path) -> XmpPacket:
    return XmpPacket.parse(sidecar.read_bytes())


def values(sidecar: Path, ns: str, local: str) -> list[str] | None:
    return packet(sidecar).values(ns, local)


def normalized(data: bytes) -> tuple:
    def norm(el: ET.Element) -> tuple:
        return (el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip(), tuple(norm(c) for c in el))

    return norm(ET.fromstring(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# 1. a new sidecar starts from what the photo carries


def test_new_sidecar_starts_from_the_photos_embedded_metadata(tmp_path: Path) -> None:
    photo = make_jpeg(
        tmp_path / "photo.jpg",
        xmp=xmp_packet(["sunset", "Family"], ["People|Family", "Places|Paris"], "At the lake", "Evening"),
        iptc_keywords=["sunset", "Family"],
        digest="match",
    )
    before = sha(photo)
    out = XmpSidecarWriter().write(result(photo, "cat", "dog"))
    sidecar = tmp_path / "photo.jpg.xmp"
    assert out.action == "written" and out.target == sidecar
    assert values(sidecar, NS_DC, "subject") == ["sunset", "Family", "cat", "dog"]
    hier = values(sidecar, NS_LR, "hierarchicalSubject")
    assert hier == ["People|Family", "Places|Paris", "sunset", "ramtag|cat", "ramtag|dog"]
    tags_list = values(sidecar, NS_DIGIKAM, "TagsList")
    assert tags_list == ["People/Family", "Places/Paris", "sunset", "ramtag/cat", "ramtag/dog"]
    p = packet(sidecar)
    assert p.simple(NS_XMP, "Rating") == "4" and p.simple(NS_XMP, "Label") == "Green"
    assert p.lang_default(NS_DC, "title") == "At the lake"
    assert p.lang_default(NS_DC, "description") == "Evening"
    assert p.simple(NS_PHOTOSHOP, "City") == "Paris"
    # develop settings are never copied into a sidecar (darktable would apply them to the JPEG)
    text = sidecar.read_text(encoding="utf-8")
    assert NS_DARKTABLE not in text and "camera-raw-settings" not in text and "Exposure2012" not in text
    assert sha(photo) == before
    assert XmpSidecarWriter().write(result(photo, "cat", "dog")).action == "unchanged"  # stable re-run
    # untag: the sidecar held nothing but the photo's own metadata and ramtag's: it goes
    [u] = list(untag_paths([photo], embedded=False))
    assert u.action == "deleted" and not sidecar.exists() and sha(photo) == before


def test_untag_keeps_a_seeded_sidecar_the_user_has_changed_since(tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "photo.jpg", xmp=xmp_packet(["sunset"], None))
    XmpSidecarWriter().write(result(photo, "cat"))
    sidecar = tmp_path / "photo.jpg.xmp"
    edited = sidecar.read_text(encoding="utf-8").replace(
        "<rdf:li>sunset</rdf:li>", "<rdf:li>sunset</rdf:li><rdf:li>my later keyword</rdf:li>"
    )
    sidecar.write_text(edited, encoding="utf-8")
    [u] = list(untag_paths([photo], embedded=False))
    assert u.action == "written" and sidecar.exists()
    assert values(sidecar, NS_DC, "subject") == ["sunset", "my later keyword"]


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        (None, ["a", "b"]),  # no digest: the XMP wins
        ("match", ["a", "b"]),  # IPTC in sync with the XMP: the XMP wins
        ("mismatch", ["a", "b", "c"]),  # IPTC changed by a tool that left the XMP: IPTC wins
    ],
)
def test_keywords_follow_mwg_precedence(tmp_path: Path, digest: str | None, expected: list[str]) -> None:
    photo = make_jpeg(
        tmp_path / "p.jpg", xmp=xmp_packet(["a", "b"], None), iptc_keywords=["a", "b", "c"], digest=digest
    )
    XmpSidecarWriter(hierarchy_root="").write(result(photo, "z"))
    assert values(tmp_path / "p.jpg.xmp", NS_DC, "subject") == [*expected, "z"]


def test_iptc_only_photo_latin1_and_truncated_keyword(tmp_path: Path) -> None:
    long = "L" * 70
    photo = make_jpeg(
        tmp_path / "p.jpg",
        iptc_keywords=[b"Z\xfcrich", b"caf\xe9", long[:64].encode()],
        iptc_utf8=False,
        iptc_title="Titel",
        iptc_caption="Beschreibung",
    )
    XmpSidecarWriter().write(result(photo, "cat"))
    sidecar = tmp_path / "p.jpg.xmp"
    assert values(sidecar, NS_DC, "subject") == ["Zürich", "café", long[:64], "cat"]
    assert packet(sidecar).lang_default(NS_DC, "title") == "Titel"
    assert packet(sidecar).lang_default(NS_DC, "description") == "Beschreibung"
    # with an XMP holding the full keyword and a changed IPTC, the 64-byte cut is recovered
    photo2 = make_jpeg(
        tmp_path / "q.jpg",
        xmp=xmp_packet([long], None),
        iptc_keywords=[long[:64], "new"],
        digest="mismatch",
    )
    XmpSidecarWriter().write(result(photo2, "cat"))
    assert values(tmp_path / "q.jpg.xmp", NS_DC, "subject") == [long, "new", "cat"]


def test_exif_fields_seed_a_photo_without_xmp(tmp_path: Path) -> None:
    photo = make_jpeg(
        tmp_path / "p.jpg",
        exif={0x010E: "Harbour at dawn", 0x4746: 3, 0x9C9E: "boat;sea".encode("utf-16-le") + b"\0\0"},
    )
    meta = read_embedded(photo)
    assert meta.exif_keywords == ["boat", "sea"] and meta.exif_rating == 3
    XmpSidecarWriter().write(result(photo, "cat"))
    sidecar = tmp_path / "p.jpg.xmp"
    assert values(sidecar, NS_DC, "subject") == ["boat", "sea", "cat"]
    assert packet(sidecar).lang_default(NS_DC, "description") == "Harbour at dawn"
    assert packet(sidecar).simple(NS_XMP, "Rating") == "3"
    [u] = list(untag_paths([photo], embedded=False))
    assert u.action == "deleted"


@pytest.mark.parametrize(
    "bad_xmp",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="&b;"/>'
        b"</rdf:RDF></x:xmpmeta>",
        b"<x:xmpmeta <<< not xml",
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject>'
        + b"<rdf:Bag><rdf:li>" * 1500
        + b"deep"
        + b"</rdf:li></rdf:Bag>" * 1500
        + b"</dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>",
    ],
    ids=["entities", "garbage", "deep"],
)
def test_hostile_embedded_xmp_is_ignored_with_a_warning(
    tmp_path: Path, bad_xmp: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    photo = make_jpeg(tmp_path / "p.jpg", xmp=bad_xmp, iptc_keywords=["kept"])
    with caplog.at_level(logging.WARNING):
        out = XmpSidecarWriter().write(result(photo, "cat"))
    assert out.action == "written"
    assert "p.jpg" in caplog.text and "embedded XMP" in caplog.text
    sidecar = tmp_path / "p.jpg.xmp"
    assert values(sidecar, NS_DC, "subject") == ["kept", "cat"]
    assert b"aaaa" not in sidecar.read_bytes()


def test_files_pillow_cannot_open_get_their_xmp_from_exiftool(tmp_path: Path) -> None:
    odd = tmp_path / "IMG_1.CR3"
    odd.write_bytes(b"\x00\x00\x00\x18ftypcrx not something Pillow opens")
    asked: list[Path] = []

    def reader(path: Path) -> bytes:
        asked.append(path)
        return xmp_packet(["from exiftool"], None)

    assert read_embedded(odd, reader).xmp is not None and asked == [odd]
    jpeg = make_jpeg(tmp_path / "p.jpg", xmp=xmp_packet(["own"], None))
    assert b"own" in (read_embedded(jpeg, reader).xmp or b"") and asked == [odd]  # Pillow read it
    assert read_embedded(odd, lambda p: b"x" * (5 * 2**20)).xmp is None  # too large: not metadata
    w = XmpSidecarWriter()
    w._exiftool_xmp = reader  # type: ignore[method-assign]
    w.write(result(odd, "cat"))
    w.close()
    assert values(tmp_path / "IMG_1.CR3.xmp", NS_DC, "subject") == ["from exiftool", "cat"]


def test_an_existing_sidecar_is_not_reseeded(tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "p.jpg", xmp=xmp_packet(["embedded"], None))
    sidecar = tmp_path / "p.jpg.xmp"
    sidecar.write_text(SAMPLES["lightroom"], encoding="utf-8")
    XmpSidecarWriter().write(result(photo, "cat"))
    assert values(sidecar, NS_DC, "subject") == ["sunset", "cat"]  # the sidecar is the user's truth


# --------------------------------------------------------------------------------------------------
# 2. the keyword properties agree


HIER_ONLY = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description rdf:about="" xmlns:lr="http://ns.adobe.com/lightroom/1.0/">
  <lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Anna</rdf:li><rdf:li>Places|AC/DC bar</rdf:li></rdf:Bag>
  </lr:hierarchicalSubject>
 </rdf:Description></rdf:RDF></x:xmpmeta>"""

TAGSLIST_ONLY = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/">
  <digiKam:TagsList><rdf:Seq><rdf:li>People/Anna</rdf:li><rdf:li>Places/Rome</rdf:li></rdf:Seq></digiKam:TagsList>
 </rdf:Description></rdf:RDF></x:xmpmeta>"""


@pytest.mark.parametrize(
    ("sample", "subject", "hier", "tags_list"),
    [
        (
            HIER_ONLY,
            ["Anna", "AC/DC bar", "cat"],
            ["People|Anna", "Places|AC/DC bar", "ramtag|cat"],
            ["People/Anna", f"Places/AC{SLASH_LOOKALIKE}DC bar", "ramtag/cat"],
        ),
        (
            TAGSLIST_ONLY,
            ["Anna", "Rome", "cat"],
            ["People|Anna", "Places|Rome", "ramtag|cat"],
            ["People/Anna", "Places/Rome", "ramtag/cat"],
        ),
        (
            SAMPLES["lightroom"],  # dc:subject only: the flat keywords become top-level keywords
            ["sunset", "cat"],
            ["sunset", "cat", "ramtag|cat"],
            ["sunset", "cat", "ramtag/cat"],
        ),
    ],
    ids=["hierarchical-only", "tagslist-only", "subject-only"],
)
def test_missing_keyword_properties_are_filled_and_untag_takes_the_fill_out(
    tmp_path: Path, sample: str, subject: list[str], hier: list[str], tags_list: list[str]
) -> None:
    image = tmp_path / "photo.jpg"
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(sample, encoding="utf-8")
    original = sidecar.read_bytes()
    w = XmpSidecarWriter()
    w.write(result(image, "cat"))
    assert values(sidecar, NS_DC, "subject") == subject
    assert values(sidecar, NS_LR, "hierarchicalSubject") == hier
    assert values(sidecar, NS_DIGIKAM, "TagsList") == tags_list
    assert w.write(result(image, "cat")).action == "unchanged"  # re-runs are stable
    [u] = list(untag_paths([image], embedded=False))
    assert u.action == "written"
    assert normalized(sidecar.read_bytes()) == normalized(original)


# --------------------------------------------------------------------------------------------------
# 3. tag names never create nesting


def test_slash_and_pipe_in_a_name_never_nest(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    names = ["胡同/球道", "AC|DC", "cat"]
    XmpSidecarWriter().write(result(image, *names))
    sidecar = tmp_path / "photo.jpg.xmp"
    assert values(sidecar, NS_DC, "subject") == names  # flat: the names as they are
    hier = values(sidecar, NS_LR, "hierarchicalSubject") or []
    tags_list = values(sidecar, NS_DIGIKAM, "TagsList") or []
    assert hier == [f"ramtag|胡同{SLASH_LOOKALIKE}球道", f"ramtag|AC{PIPE_LOOKALIKE}DC", "ramtag|cat"]
    assert tags_list == [f"ramtag/胡同{SLASH_LOOKALIKE}球道", f"ramtag/AC{PIPE_LOOKALIKE}DC", "ramtag/cat"]
    assert all(v.count("|") == 1 and "/" not in v for v in hier)
    assert all(v.count("/") == 1 and "|" not in v for v in tags_list)
    # without a hierarchy root, no level at all
    flat = tmp_path / "flat.jpg"
    XmpSidecarWriter(hierarchy_root="").write(result(flat, "胡同/球道"))
    assert values(tmp_path / "flat.jpg.xmp", NS_LR, "hierarchicalSubject") == [f"胡同{SLASH_LOOKALIKE}球道"]
    assert values(tmp_path / "flat.jpg.xmp", NS_DIGIKAM, "TagsList") == [f"胡同{SLASH_LOOKALIKE}球道"]
    list(untag_paths([tmp_path], embedded=False))
    assert not list(tmp_path.glob("*.xmp"))


@pytest.mark.interop("exiv2")
def test_exiv2_reads_no_nesting(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    XmpSidecarWriter().write(result(image, "胡同/球道"))
    out = subprocess.run(
        ["exiv2", "-px", str(tmp_path / "photo.jpg.xmp")], capture_output=True, text=True, check=True
    ).stdout
    assert f"ramtag/胡同{SLASH_LOOKALIKE}球道" in out and "ramtag/胡同/球道" not in out


# --------------------------------------------------------------------------------------------------
# 6. characters XML forbids never reach a file


def test_control_characters_never_reach_a_sidecar(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = tmp_path / "photo.jpg"
    names = ["bad\x01name", "two\nlines", "\x00\x1f", "fine", "\ud800lone"]
    with caplog.at_level(logging.WARNING):
        out = XmpSidecarWriter().write(result(image, *names))
    assert out.action == "written" and out.tags == ("badname", "two lines", "fine", "lone")
    data = (tmp_path / "photo.jpg.xmp").read_bytes()
    ET.fromstring(data)  # valid XML
    assert values(tmp_path / "photo.jpg.xmp", NS_DC, "subject") == ["badname", "two lines", "fine", "lone"]
    assert "'bad\\x01name'" in caplog.text and "left out" in caplog.text
    assert clean_tag_names(["ok", "ok"]) == ["ok"]


@pytest.mark.interop("exiftool")
def test_control_characters_never_reach_an_embedded_tag(tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "p.jpg")
    w = make_writer("embed", backup=False)
    assert w.write(result(photo, "bad\x01name", "two\nlines")).action == "written"
    w.close()
    out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(photo)], capture_output=True, text=True)
    assert '"badname"' in out.stdout and '"two lines"' in out.stdout


# --------------------------------------------------------------------------------------------------
# 4. both sidecar names present


def test_both_sidecar_names_are_kept_in_step(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8 placeholder \xff\xd9")
    adobe, ext = tmp_path / "photo.xmp", tmp_path / "photo.jpg.xmp"
    adobe.write_text(SAMPLES["lightroom"], encoding="utf-8")
    ext.write_text(SAMPLES["darktable"], encoding="utf-8")
    originals = {p: p.read_bytes() for p in (adobe, ext)}
    w = XmpSidecarWriter()
    out = w.write(result(image, "cat", "dog"))
    assert out.action == "written" and str(adobe) in out.message and str(ext) in out.message
    for p in (adobe, ext):
        assert {"cat", "dog"} <= set(values(p, NS_DC, "subject") or [])
        assert {"ramtag|cat", "ramtag|dog"} <= set(values(p, NS_LR, "hierarchicalSubject") or [])
    w.write(result(image, "bird"))
    for p in (adobe, ext):
        assert "dog" not in (values(p, NS_DC, "subject") or []) and "bird" in (
            values(p, NS_DC, "subject") or []
        )
    outs = list(untag_paths([image], embedded=False))
    assert sorted(o.target for o in outs) == sorted([adobe, ext])  # type: ignore[type-var]
    for p, data in originals.items():
        assert normalized(p.read_bytes()) == normalized(data)


# --------------------------------------------------------------------------------------------------
# 5. the hierarchy root never stays behind


def _darktable_rewrite(sidecar: Path) -> None:
    """What darktable does when it rewrites a sidecar: every level of each hierarchical tag also goes
    into dc:subject as a flat keyword (``ramtag`` among them)."""
    p = packet(sidecar)
    hier = p.values(NS_LR, "hierarchicalSubject") or []
    flat = list(p.values(NS_DC, "subject") or [])
    for value in hier:
        for level in value.split("|"):
            if level not in flat:
                flat.append(level)
    from ramtag.writers.xmp import FIELDS_BY_KEY

    p.set_values(FIELDS_BY_KEY["Subject"], flat)
    sidecar.write_bytes(p.to_bytes())


def test_untag_removes_the_root_darktable_added(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(HIER_ONLY, encoding="utf-8")
    XmpSidecarWriter().write(result(image, "cat"))
    _darktable_rewrite(sidecar)
    assert "ramtag" in (values(sidecar, NS_DC, "subject") or [])
    [u] = list(untag_paths([image], embedded=False))
    assert u.action == "written"
    subject = values(sidecar, NS_DC, "subject") or []
    assert "ramtag" not in subject and "cat" not in subject
    assert {"People", "Places"} <= set(subject)  # darktable's levels of the user's own tags stay
    assert values(sidecar, NS_LR, "hierarchicalSubject") == ["People|Anna", "Places|AC/DC bar"]


def test_a_root_the_user_had_before_stays(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(SAMPLES["lightroom"].replace("<rdf:li>cat</rdf:li>", "<rdf:li>ramtag</rdf:li>"))
    original = sidecar.read_bytes()
    XmpSidecarWriter().write(result(image, "cat"))
    _darktable_rewrite(sidecar)
    list(untag_paths([image], embedded=False))
    assert values(sidecar, NS_DC, "subject") == ["sunset", "ramtag"]
    assert normalized(sidecar.read_bytes()) == normalized(original)


def test_a_run_that_finds_nothing_also_drops_the_root(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(SAMPLES["digikam"], encoding="utf-8")
    w = XmpSidecarWriter()
    w.write(result(image, "cat"))
    _darktable_rewrite(sidecar)
    w.write(result(image))
    assert "ramtag" not in (values(sidecar, NS_DC, "subject") or [])
    assert not [v for v in values(sidecar, NS_DIGIKAM, "TagsList") or [] if v.startswith("ramtag")]


# --------------------------------------------------------------------------------------------------
# tag + untag leaves everything as it was


@pytest.mark.parametrize("sample", ["none", *sorted(SAMPLES)])
def test_tag_untag_round_trip_on_a_photo_with_embedded_keywords(tmp_path: Path, sample: str) -> None:
    photo = make_jpeg(
        tmp_path / "photo.jpg",
        xmp=xmp_packet(["Family", "beach"], ["People|Family"], "T", "D"),
        iptc_keywords=["Family", "beach"],
    )
    sidecar = tmp_path / "photo.jpg.xmp"
    if sample != "none":
        sidecar.write_text(SAMPLES[sample], encoding="utf-8")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    w = make_writer("xmp")
    w.write(result(photo, "cat", "胡同/球道", "a|b"))
    w.write(result(photo, "dog"))
    list(untag_paths([tmp_path], embedded=False))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)
    assert after["photo.jpg"] == before["photo.jpg"]
    if sample != "none":
        assert normalized(after["photo.jpg.xmp"]) == normalized(before["photo.jpg.xmp"])


@pytest.mark.interop("exiftool")
def test_embed_fills_the_hierarchy_from_an_embedded_tagslist_and_untag_restores(tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "p.jpg")
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-digiKam:TagsList=People/Anna", str(photo)], check=True
    )

    def read() -> dict:
        import json

        cmd = ["exiftool", "-j", "-G1", "-XMP:all", "-IPTC:Keywords", str(photo)]
        d = json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout)[0]
        return {k: v for k, v in d.items() if k not in ("SourceFile", "XMP-x:XMPToolkit")}

    before = read()
    w = make_writer("embed", backup=False)
    assert w.write(result(photo, "胡同/球道")).action == "written"
    w.close()
    m = read()
    assert m["XMP-lr:HierarchicalSubject"] == ["People|Anna", f"ramtag|胡同{SLASH_LOOKALIKE}球道"]
    assert m["XMP-digiKam:TagsList"] == ["People/Anna", f"ramtag/胡同{SLASH_LOOKALIKE}球道"]
    assert m["XMP-dc:Subject"] == ["Anna", "胡同/球道"]
    list(untag_paths([photo], embedded=True, backup=False))
    assert read() == before  # (an IPTC envelope ramtag's keywords needed stays: empty of keywords)
