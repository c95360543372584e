"""XMP sidecar writer: structure, merging, re-runs, untag, malformed files, naming, atomicity."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _xmp_samples import MALFORMED, SAMPLES, USER_SUBJECTS

from ramtag.errors import OutputError, SidecarError, UsageError
from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths
from ramtag.writers.atomic import TMP_SUFFIX, AtomicBatch, AtomicFile, atomic_write_bytes
from ramtag.writers.xmp import (
    NS_DC,
    NS_DIGIKAM,
    NS_LR,
    NS_MSPHOTO,
    NS_RDF,
    SidecarLocator,
    XmpPacket,
    XmpSidecarWriter,
    untag_sidecar,
)

RAMTAG = "https://github.com/ramtag/ns/1.0/"


def result(path: Path | None, *names: str, zh: dict[str, str] | None = None) -> ImageTags:
    zh = zh or {}
    tags = [TagScore(n, 0.9 - 0.01 * i, 0.5, zh.get(n)) for i, n in enumerate(names)]
    return ImageTags(path, tags)


def values(sidecar: Path, ns: str, local: str) -> list[str] | None:
    return XmpPacket.parse(sidecar.read_bytes()).values(ns, local)


def normalized(data: bytes) -> tuple:
    """Namespace-resolved tree (prefixes and declarations do not matter, order and values do)."""

    def norm(el: ET.Element) -> tuple:
        return (el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip(), tuple(norm(c) for c in el))

    return norm(ET.fromstring(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "photo.jpg"
    p.write_bytes(b"\xff\xd8not really a jpeg\xff\xd9")
    return p


# --------------------------------------------------------------------------------------------------
# a new sidecar


def test_new_sidecar_has_every_keyword_property(image: Path) -> None:
    w = XmpSidecarWriter(model="ram_plus_test")
    out = w.write(result(image, "cat", "sofa"))
    sidecar = image.with_name("photo.jpg.xmp")
    assert out.action == "written" and out.target == sidecar and out.tags == ("cat", "sofa")
    data = sidecar.read_bytes()
    assert data.startswith(b"<?xpacket begin=") and data.rstrip().endswith(b'<?xpacket end="w"?>')
    root = ET.fromstring(data)
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    assert values(sidecar, NS_DC, "subject") == ["cat", "sofa"]
    assert values(sidecar, NS_LR, "hierarchicalSubject") == ["ramtag|cat", "ramtag|sofa"]
    assert values(sidecar, NS_DIGIKAM, "TagsList") == ["ramtag/cat", "ramtag/sofa"]
    assert values(sidecar, NS_MSPHOTO, "LastKeywordXMP") is None  # only updated where present
    # the containers are the right RDF types
    subject = root.find(f".//{{{NS_DC}}}subject/{{{NS_RDF}}}Bag")
    tagslist = root.find(f".//{{{NS_DIGIKAM}}}TagsList/{{{NS_RDF}}}Seq")
    assert subject is not None and tagslist is not None
    record = XmpPacket.parse(data).read_record()
    assert record is not None and record.tags == ["cat", "sofa"] and record.model == "ram_plus_test"
    assert record.created and record.date.endswith("+00:00")


def test_hierarchy_root_flat_and_nested(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    XmpSidecarWriter(hierarchy_root="").write(result(a, "cat"))
    XmpSidecarWriter(hierarchy_root="Auto|AI").write(result(b, "cat"))
    assert values(tmp_path / "a.jpg.xmp", NS_LR, "hierarchicalSubject") == ["cat"]
    assert values(tmp_path / "a.jpg.xmp", NS_DIGIKAM, "TagsList") == ["cat"]
    assert values(tmp_path / "b.jpg.xmp", NS_LR, "hierarchicalSubject") == ["Auto|AI|cat"]
    assert values(tmp_path / "b.jpg.xmp", NS_DIGIKAM, "TagsList") == ["Auto/AI/cat"]


def test_chinese_names_and_special_characters(tmp_path: Path) -> None:
    img = tmp_path / "猫咪.jpg"
    zh = {"cat": "猫", "coffee cup": "咖啡杯"}
    XmpSidecarWriter(lang="zh").write(result(img, "cat", "coffee cup", zh=zh))
    sidecar = tmp_path / "猫咪.jpg.xmp"
    assert values(sidecar, NS_DC, "subject") == ["猫", "咖啡杯"]
    img2 = tmp_path / "x.jpg"
    XmpSidecarWriter().write(result(img2, "R&D <lab>", 'say "hi"'))
    assert values(tmp_path / "x.jpg.xmp", NS_DC, "subject") == ["R&D <lab>", 'say "hi"']


def test_no_tags_and_no_sidecar_writes_nothing(image: Path) -> None:
    out = XmpSidecarWriter().write(result(image))
    assert out.action == "unchanged"
    assert not image.with_name("photo.jpg.xmp").exists()


def test_skipped_and_in_memory_results(image: Path) -> None:
    w = XmpSidecarWriter()
    assert w.write(ImageTags(image, error="cannot decode")).action == "skipped"
    assert w.write(result(None, "cat")).action == "skipped"
    assert list(image.parent.iterdir()) == [image]


# --------------------------------------------------------------------------------------------------
# merging into existing sidecars


@pytest.mark.parametrize("style", sorted(SAMPLES))
def test_merge_keeps_everything_and_untag_restores_it(image: Path, style: str) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    original = SAMPLES[style].encode("utf-8")
    sidecar.write_bytes(original)
    w = XmpSidecarWriter()
    assert w.write(result(image, "cat", "dog")).action == "written"
    merged = sidecar.read_bytes()
    subjects = values(sidecar, NS_DC, "subject")
    assert subjects is not None
    assert subjects[: len(USER_SUBJECTS[style])] == USER_SUBJECTS[style]  # the user's keywords, in order
    assert sorted(subjects) == sorted(set(USER_SUBJECTS[style]) | {"cat", "dog"})  # "cat" not duplicated
    # every element/attribute of the original is still there, with its value
    before, after = ET.fromstring(original), ET.fromstring(merged)
    for el in before.iter():
        for name, value in el.attrib.items():
            assert any(e.tag == el.tag and e.attrib.get(name) == value for e in after.iter()), (el.tag, name)
        if el.text and el.text.strip():
            assert any(e.tag == el.tag and e.text == el.text for e in after.iter()), (el.tag, el.text)
    # re-run: nothing changes, byte for byte
    assert w.write(result(image, "cat", "dog")).action == "unchanged"
    assert sidecar.read_bytes() == merged
    # untag: exactly the original (structurally)
    [out] = list(untag_paths([image], embedded=False))
    assert out.action == "written" and out.tags == ("cat", "dog")
    assert normalized(sidecar.read_bytes()) == normalized(original)
    assert values(sidecar, NS_DC, "subject") == USER_SUBJECTS[style]  # "cat" stays where the user had it


def test_lightroom_attributes_and_second_description(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(SAMPLES["lightroom"], encoding="utf-8")
    XmpSidecarWriter().write(result(image, "lake"))
    text = sidecar.read_text(encoding="utf-8")
    assert 'xmp:Rating="3"' in text and 'crs:Exposure2012="+0.35"' in text
    assert 'acme:Multi="line one&#10;line two"' in text  # newline in an attribute survives
    root = ET.fromstring(text)
    descs = root.findall(f".//{{{NS_RDF}}}Description")
    assert len(descs) == 2
    assert descs[0].get("{http://example.com/acme/1.0/}Note") == 'kept & <escaped> "as is"'
    # new properties went beside dc:subject (second Description)
    assert descs[1].find(f"{{{NS_LR}}}hierarchicalSubject") is not None
    assert descs[1].find(f"{{{RAMTAG}}}Tags") is not None


def test_digikam_last_keyword_xmp_is_updated(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(SAMPLES["digikam"], encoding="utf-8")
    XmpSidecarWriter().write(result(image, "猫"))
    assert values(sidecar, NS_MSPHOTO, "LastKeywordXMP") == ["People/Family", "地点/東京", "ramtag/猫"]
    assert values(sidecar, NS_DIGIKAM, "TagsList") == ["People/Family", "地点/東京", "ramtag/猫"]
    data = sidecar.read_bytes()
    assert data.startswith(b"<?xpacket begin=") and b'<?xpacket end="w"?>' in data


def test_rerun_replaces_previous_ramtag_tags(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(SAMPLES["darktable"], encoding="utf-8")
    w = XmpSidecarWriter()
    w.write(result(image, "cat", "dog", "ball"))
    w.write(result(image, "dog", "bird"))
    assert values(sidecar, NS_DC, "subject") == ["vacation", "cat", "dog", "bird"]
    assert values(sidecar, NS_LR, "hierarchicalSubject") == [
        "darktable|format|cr2",
        "places|Zürich",
        "vacation",  # the user's flat keywords, which darktable would not read from dc:subject
        "cat",
        "ramtag|dog",
        "ramtag|bird",
    ]
    record = XmpPacket.parse(sidecar.read_bytes()).read_record()
    assert record is not None and record.added["Subject"] == ["dog", "bird"] and not record.created
    # a run that finds nothing takes ramtag's tags out again
    w.write(result(image))
    assert values(sidecar, NS_DC, "subject") == ["vacation", "cat"]
    assert values(sidecar, NS_DIGIKAM, "TagsList") is None


def test_user_keyword_added_after_ramtag_is_kept(image: Path) -> None:
    w = XmpSidecarWriter()
    w.write(result(image, "cat"))
    sidecar = image.with_name("photo.jpg.xmp")
    text = sidecar.read_text(encoding="utf-8").replace(
        "<rdf:li>cat</rdf:li>\n    </rdf:Bag>\n   </dc:subject>",
        "<rdf:li>cat</rdf:li>\n     <rdf:li>my own</rdf:li>\n    </rdf:Bag>\n   </dc:subject>",
    )
    assert "my own" in text
    sidecar.write_text(text, encoding="utf-8")
    w.write(result(image, "dog"))
    assert values(sidecar, NS_DC, "subject") == ["my own", "dog"]
    [out] = list(untag_paths([sidecar], embedded=False))
    assert out.action == "written"
    assert values(sidecar, NS_DC, "subject") == ["my own"]  # not deleted: the user's keyword is in it


def test_untag_deletes_a_sidecar_only_ramtag_wrote(image: Path) -> None:
    XmpSidecarWriter().write(result(image, "cat"))
    sidecar = image.with_name("photo.jpg.xmp")
    [dry] = list(untag_paths([image], embedded=False, dry_run=True))
    assert dry.action == "dry-run" and sidecar.exists()
    [out] = list(untag_paths([image.parent], embedded=False))
    assert out.action == "deleted" and not sidecar.exists()
    # a second untag finds nothing to do
    assert list(untag_paths([image], embedded=False)) == []


def test_untag_without_ramtag_data_is_unchanged(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(SAMPLES["lightroom"], encoding="utf-8")
    before = sidecar.read_bytes()
    out = untag_sidecar(sidecar)
    assert out.action == "unchanged" and sidecar.read_bytes() == before


def test_record_rewritten_as_attributes_is_understood(image: Path) -> None:
    """exiv2-based tools (digiKam) may rewrite ramtag's simple properties as attributes."""
    XmpSidecarWriter(model="m").write(result(image, "cat"))
    sidecar = image.with_name("photo.jpg.xmp")
    text = sidecar.read_text(encoding="utf-8")
    start, end = text.index("<ramtag:Model>"), text.index("</ramtag:Created>") + len("</ramtag:Created>")
    text = text[:start] + text[end:]
    text = text.replace('rdf:about=""', 'rdf:about="" ramtag:Model="m" ramtag:Created="True"', 1)
    sidecar.write_text(text, encoding="utf-8")
    [out] = list(untag_paths([sidecar], embedded=False))
    assert out.action == "deleted"


def test_simple_value_where_a_list_belongs_becomes_a_list(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:subject>old keyword</dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>",
        encoding="utf-8",
    )
    XmpSidecarWriter().write(result(image, "cat"))
    assert values(sidecar, NS_DC, "subject") == ["old keyword", "cat"]


# --------------------------------------------------------------------------------------------------
# malformed sidecars


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_sidecar_is_never_overwritten(image: Path, kind: str) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_bytes(MALFORMED[kind])
    with pytest.raises(SidecarError, match=r"photo\.jpg\.xmp.*--repair-sidecars"):
        XmpSidecarWriter().write(result(image, "cat"))
    assert sidecar.read_bytes() == MALFORMED[kind]
    out = list(untag_paths([sidecar], embedded=False))
    assert [o.action for o in out] == ["skipped"] and sidecar.read_bytes() == MALFORMED[kind]
    assert sorted(p.name for p in image.parent.iterdir()) == ["photo.jpg", "photo.jpg.xmp"]


def test_repair_sidecars_keeps_a_backup(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_bytes(MALFORMED["truncated"])
    out = XmpSidecarWriter(repair_sidecars=True).write(result(image, "cat"))
    assert out.action == "written" and "photo.jpg.xmp.bak" in out.message
    assert image.with_name("photo.jpg.xmp.bak").read_bytes() == MALFORMED["truncated"]
    assert values(sidecar, NS_DC, "subject") == ["cat"]
    # untag keeps the (now valid) sidecar: it replaced a file the user had
    [u] = list(untag_paths([sidecar], embedded=False))
    assert u.action == "written" and sidecar.exists()


# --------------------------------------------------------------------------------------------------
# naming


def test_sidecar_naming(tmp_path: Path) -> None:
    img = tmp_path / "a.jpg"
    assert SidecarLocator("ext").locate(img) == (tmp_path / "a.jpg.xmp", "")
    assert SidecarLocator("replace").locate(img) == (tmp_path / "a.xmp", "")
    # an existing sidecar under the other name is updated, never a second one created
    (tmp_path / "a.xmp").write_text(SAMPLES["lightroom"], encoding="utf-8")
    XmpSidecarWriter(sidecar_name="ext").write(result(img, "cat"))
    assert not (tmp_path / "a.jpg.xmp").exists()
    assert "cat" in (values(tmp_path / "a.xmp", NS_DC, "subject") or [])
    b = tmp_path / "b.jpg"
    (tmp_path / "b.jpg.xmp").write_text(SAMPLES["darktable"], encoding="utf-8")
    XmpSidecarWriter(sidecar_name="replace").write(result(b, "dog"))
    assert not (tmp_path / "b.xmp").exists()
    assert "dog" in (values(tmp_path / "b.jpg.xmp", NS_DC, "subject") or [])
    with pytest.raises(UsageError, match="sidecar-name"):
        make_writer("xmp", sidecar_name="adobe")


def test_shared_stem_uses_ext_naming_for_the_colliding_image(tmp_path: Path, caplog) -> None:
    jpg, raw = tmp_path / "photo.jpg", tmp_path / "photo.CR2"
    jpg.write_bytes(b"jpg")
    raw.write_bytes(b"raw")
    w = XmpSidecarWriter(sidecar_name="replace")
    out_jpg = w.write(result(jpg, "cat"))
    out_raw = w.write(result(raw, "dog"))
    assert out_raw.target == tmp_path / "photo.xmp"  # the RAW owns photo.xmp (Adobe's convention)
    assert out_jpg.target == tmp_path / "photo.jpg.xmp"
    assert "share photo.xmp" in out_jpg.message and "share photo.xmp" in caplog.text
    assert values(tmp_path / "photo.xmp", NS_DC, "subject") == ["dog"]
    assert values(tmp_path / "photo.jpg.xmp", NS_DC, "subject") == ["cat"]
    # an existing shared photo.xmp is left to its owner in ext mode too
    out2 = XmpSidecarWriter(sidecar_name="ext").write(result(jpg, "cat", "cup"))
    assert out2.target == tmp_path / "photo.jpg.xmp"
    assert values(tmp_path / "photo.xmp", NS_DC, "subject") == ["dog"]
    # untag of the JPEG leaves the RAW's sidecar alone
    outs = list(untag_paths([jpg], embedded=False))
    assert [o.target for o in outs] == [tmp_path / "photo.jpg.xmp"]
    assert values(tmp_path / "photo.xmp", NS_DC, "subject") == ["dog"]


# --------------------------------------------------------------------------------------------------
# dry run, image bytes, atomicity, threads


def test_dry_run_writes_nothing(image: Path) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    out = XmpSidecarWriter(dry_run=True).write(result(image, "cat"))
    assert out.action == "dry-run" and out.tags == ("cat",) and out.target == sidecar
    assert not sidecar.exists()
    sidecar.write_text(SAMPLES["digikam"], encoding="utf-8")
    before = sidecar.read_bytes()
    assert make_writer("xmp", dry_run=True).write(result(image, "cat")).action == "dry-run"
    assert sidecar.read_bytes() == before


def test_image_bytes_never_change(tmp_path: Path, shared_photos: Path) -> None:
    photos = [tmp_path / p.name for p in sorted(shared_photos.glob("*"))[:4] if p.suffix != ".tsv"]
    for p in photos:
        shutil.copy(shared_photos / p.name, p)
    before = {p: sha(p) for p in photos}
    w = make_writer("xmp")
    for p in photos:
        assert w.write(result(p, "cat", "猫")).action == "written"
    w.close()
    list(untag_paths([tmp_path], embedded=False))
    assert {p: sha(p) for p in photos} == before


def test_interrupted_write_leaves_the_old_sidecar(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = image.with_name("photo.jpg.xmp")
    sidecar.write_text(SAMPLES["darktable"], encoding="utf-8")
    before = sidecar.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match=r"photo\.jpg\.xmp: cannot write it \(disk full\)"):
        XmpSidecarWriter().write(result(image, "cat"))
    assert sidecar.read_bytes() == before
    assert not [p for p in image.parent.iterdir() if p.name.endswith(TMP_SUFFIX)]


def test_atomic_file_keeps_permissions_and_discards(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o640
    with pytest.raises(RuntimeError), AtomicFile(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    # writing through a symlink keeps the link
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_bytes(link, b"via link")
    assert link.is_symlink() and target.read_bytes() == b"via link"


def test_writer_from_a_background_thread(tmp_path: Path) -> None:
    w = make_writer("xmp")
    images = [tmp_path / f"img{i}.jpg" for i in range(12)]
    main_thread = threading.get_ident()
    threads: set[int] = set()

    def job(p: Path) -> str:
        threads.add(threading.get_ident())
        return w.write(result(p, "cat", f"tag{p.stem}")).action

    with ThreadPoolExecutor(max_workers=3) as pool:
        actions = list(pool.map(job, images))
    w.close()
    assert actions == ["written"] * 12 and main_thread not in threads
    for p in images:
        assert values(p.with_name(p.name + ".xmp"), NS_DC, "subject") == ["cat", f"tag{p.stem}"]


def test_batched_writer_stages_until_sync_and_commits_before_waiting_for_another_run(tmp_path: Path) -> None:
    """defer_durability(): a sidecar appears only at sync(); a photo another run holds makes the writer
    commit what it staged (releasing those photos' locks) before it waits, so two runs writing the
    same photos in different orders never wait on each other."""
    from ramtag.writers.lock import acquire_lock

    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    for p in (a, b):
        p.write_bytes(b"\xff\xd8 not decoded here")
    side_a, side_b = tmp_path / "a.jpg.xmp", tmp_path / "b.jpg.xmp"
    w = make_writer("xmp")
    w.defer_durability()
    assert w.write(result(a, "cat")).action == "written"
    assert not side_a.exists() and acquire_lock(a, wait=False) is None  # staged, a still locked
    other = acquire_lock(b)  # another run is writing b
    assert other is not None
    done = threading.Event()
    thread = threading.Thread(target=lambda: (w.write(result(b, "dog")), done.set()))
    thread.start()
    deadline = time.monotonic() + 20
    while not side_a.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert side_a.exists() and not done.is_set()  # a is in place while the writer waits for b
    held = acquire_lock(a, wait=False)
    assert held is not None  # and a's lock was let go
    held.release()
    other.release()
    thread.join(20)
    assert done.is_set() and not side_b.exists()
    assert w.sync() == [] and values(side_b, NS_DC, "subject") == ["dog"]
    assert values(side_a, NS_DC, "subject") == ["cat"]
    w.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)] == []


def test_batched_writer_reports_a_failed_commit_per_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sidecar that cannot be put in place: one line naming it, its old sidecar untouched; the
    rest of the batch is written."""
    photos = [tmp_path / f"p{i}.jpg" for i in range(4)]
    for p in photos:
        p.write_bytes(b"\xff\xd8 not decoded here")
    bad = tmp_path / "p2.jpg.xmp"
    w = make_writer("xmp")
    assert w.write(result(photos[2], "old")).action == "written"  # p2 has a sidecar already
    before = bad.read_bytes()
    w.defer_durability()
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if str(dst) == str(bad):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(AtomicBatch, "HELPER_MIN_FILES", 10**9)  # the patch is in this process only
    assert all(w.write(result(p, "new")).action == "written" for p in photos)
    failed = w.sync()
    assert failed == [(str(photos[2]), f"{bad}: cannot write it (disk full)")]
    assert bad.read_bytes() == before
    for p in photos[:2] + photos[3:]:
        assert values(p.with_name(p.name + ".xmp"), NS_DC, "subject") == ["new"]
    w.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)] == []


def test_make_writer_options() -> None:
    with pytest.raises(UsageError, match="--write"):
        make_writer("sidecar")
    with pytest.raises(UsageError, match="--hierarchy-root"):
        make_writer("xmp", hierarchy_root="a/b")
    none = make_writer("none")
    assert none.write(result(Path("x.jpg"), "cat")).action == "unchanged"
