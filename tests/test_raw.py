"""Issue 11.7: camera RAW files are found, decoded (preview or half-size demosaic, upright) and get sidecars,
never embedded writes. Every RAW here is a DNG the test writes itself (tests/_dng.py)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _dng import make_dng, sample_picture
from _embedded import xmp_packet
from PIL import Image
from test_cli import run_cli, tiny_weights

from ramtag.decode import decode_image
from ramtag.discover import Skipped, discover
from ramtag.errors import ImageDecodeError
from ramtag.raw import RAW_EXTENSIONS, decode_raw
from ramtag.results import ImageTags, TagScore
from ramtag.writers import make_writer, untag_paths
from ramtag.writers.xmp import NS_DC, XmpPacket, XmpSidecarWriter

pytest.importorskip("rawpy")

YELLOW = (240, 220, 10)


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def colour_at(img: Image.Image, fx: float, fy: float) -> str:
    """'red', 'blue' or 'other' at a relative position (the sample picture has a red block top-left and a
    blue block bottom-right, the rest green)."""
    r, g, b = img.getpixel((int(fx * (img.width - 1)), int(fy * (img.height - 1))))[:3]
    if r > 2 * max(g, b):
        return "red"
    if b > 2 * max(r, g):
        return "blue"
    return "other"


# --------------------------------------------------------------------------------------------------
# discovery


def test_raw_files_are_discovered_whatever_the_case(tmp_path: Path) -> None:
    names = ["a.CR2", "b.nef", "c.Dng", "d.ARW", "e.raf", "f.ORF", "g.rw2", "h.PEF", "i.srw", "j.CR3"]
    names += ["k.3fr", "l.NRW", "m.sr2", "n.IIQ", "o.erf", "p.kdc", "q.MRW", "r.x3f"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = [p.name for p in discover([tmp_path]) if not isinstance(p, Skipped)]
    assert found == sorted(names)
    assert {Path(n).suffix.lower() for n in names} <= RAW_EXTENSIONS


# --------------------------------------------------------------------------------------------------
# decoding


def test_dng_without_preview_is_demosaiced_at_half_size(tmp_path: Path) -> None:
    dng = make_dng(tmp_path / "a.dng", sample_picture(400, 600))
    img = decode_image(dng)
    assert img.mode == "RGB" and img.size == (300, 200)
    assert colour_at(img, 0.1, 0.1) == "red" and colour_at(img, 0.9, 0.9) == "blue"
    assert colour_at(img, 0.9, 0.1) == "other"


def test_a_large_preview_is_used_a_small_one_is_not(tmp_path: Path) -> None:
    pic = sample_picture(400, 600)
    big = np.full((400, 600, 3), YELLOW, dtype=np.uint8)  # differs from the sensor data on purpose
    dng = make_dng(tmp_path / "big.dng", pic, preview=big)
    img = decode_image(dng)
    assert img.size == (600, 400)  # the preview, not a half-size demosaic
    r, g, b = img.getpixel((300, 200))
    assert abs(r - YELLOW[0]) < 12 and abs(g - YELLOW[1]) < 12 and b < 40
    small = make_dng(tmp_path / "small.dng", pic, preview=np.full((120, 180, 3), YELLOW, dtype=np.uint8))
    img = decode_image(small)
    assert img.size == (300, 200) and colour_at(img, 0.1, 0.1) == "red"  # demosaiced
    # a smaller model input size accepts the small preview
    assert decode_raw(small, min_preview=100).size == (180, 120)


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (300, 200), (0.1, 0.1)),
        (3, (300, 200), (0.9, 0.9)),  # 180 degrees
        (6, (200, 300), (0.9, 0.1)),  # stored sideways: turn clockwise
        (8, (200, 300), (0.1, 0.9)),  # turn counter-clockwise
    ],
)
def test_orientation_comes_from_the_raw_both_ways(
    tmp_path: Path, orientation: int, size: tuple[int, int], red_at: tuple[float, float]
) -> None:
    pic = sample_picture(400, 600)
    demosaiced = decode_image(make_dng(tmp_path / "d.dng", pic, orientation=orientation))
    preview = decode_image(make_dng(tmp_path / "p.dng", pic, preview=pic, orientation=orientation))
    assert demosaiced.size == size
    assert preview.size == (size[0] * 2, size[1] * 2)
    for img in (demosaiced, preview):
        assert colour_at(img, *red_at) == "red"
    # the official decode keeps the stored orientation
    assert decode_image(tmp_path / "p.dng", exif_orientation=False).size == (600, 400)
    assert decode_image(tmp_path / "d.dng", exif_orientation=False).size == (300, 200)


def test_a_preview_stored_upright_is_not_turned_twice(tmp_path: Path) -> None:
    pic = sample_picture(400, 600)
    upright = np.ascontiguousarray(np.rot90(pic, k=-1))  # already turned clockwise: 400 wide, 600 high
    img = decode_image(make_dng(tmp_path / "u.dng", pic, preview=upright, orientation=6))
    assert img.size == (400, 600) and colour_at(img, 0.9, 0.1) == "red"


@pytest.mark.parametrize("junk", [b"II*\x00" + b"\x00" * 64, b"not a raw file at all" * 20])
def test_unreadable_raw_is_one_line_naming_the_file(tmp_path: Path, junk: bytes) -> None:
    bad = tmp_path / "broken.CR2"
    bad.write_bytes(junk)
    with pytest.raises(ImageDecodeError) as e:
        decode_image(bad)
    assert "broken.CR2" in str(e.value) and "\n" not in str(e.value)


def test_missing_rawpy_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dng = make_dng(tmp_path / "a.dng", sample_picture())
    monkeypatch.setitem(sys.modules, "rawpy", None)
    with pytest.raises(ImageDecodeError, match=r"a\.dng.*pip install rawpy"):
        decode_image(dng)


# --------------------------------------------------------------------------------------------------
# sidecars, never embedded


def test_raw_gets_an_ext_sidecar_seeded_from_its_own_xmp(tmp_path: Path) -> None:
    dng = make_dng(tmp_path / "IMG_1.DNG", sample_picture(), xmp=xmp_packet(["Anna"], ["People|Anna"]))
    before = sha(dng)
    out = XmpSidecarWriter().write(result(dng, "cat"))
    assert out.target == tmp_path / "IMG_1.DNG.xmp"
    assert XmpPacket.parse(out.target.read_bytes()).values(NS_DC, "subject") == ["Anna", "cat"]
    assert sha(dng) == before
    list(untag_paths([tmp_path], embedded=False))
    assert not out.target.exists() and sha(dng) == before


def test_raw_jpeg_pair_with_replace_naming_never_shares_a_sidecar(tmp_path: Path) -> None:
    raw = make_dng(tmp_path / "photo.dng", sample_picture())
    jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpg)
    w = make_writer("xmp", sidecar_name="replace")
    a = w.write(result(jpg, "cat"))  # the JPEG first: the RAW still owns photo.xmp
    b = w.write(result(raw, "dog"))
    assert b.target == tmp_path / "photo.xmp" and a.target == tmp_path / "photo.jpg.xmp"
    assert XmpPacket.parse(b.target.read_bytes()).values(NS_DC, "subject") == ["dog"]
    assert XmpPacket.parse(a.target.read_bytes()).values(NS_DC, "subject") == ["cat"]
    list(untag_paths([tmp_path], embedded=False))
    assert not list(tmp_path.glob("*.xmp"))


@pytest.mark.interop("exiftool")
def test_embed_never_writes_into_a_raw_file(tmp_path: Path) -> None:
    dng = make_dng(tmp_path / "a.dng", sample_picture())
    before = sha(dng)
    w = make_writer("embed")
    out = w.write(result(dng, "cat"))
    w.close()
    assert out.action == "fallback-sidecar" and out.target == tmp_path / "a.dng.xmp"
    assert "RAW files are never modified" in out.message
    assert sha(dng) == before and not (tmp_path / "a.dng_original").exists()
    outs = list(untag_paths([tmp_path], embedded=True))
    assert [o.action for o in outs] == ["deleted"] and sha(dng) == before


def test_ramtag_tag_writes_a_sidecar_for_a_dng(
    tmp_path: Path, tiny_weights: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole path (discover -> decode -> preprocess -> model -> sidecar) on RAW files."""
    folder = tmp_path / "shoot"
    folder.mkdir()
    pic = sample_picture(400, 600)
    make_dng(folder / "IMG_1.DNG", pic)
    make_dng(folder / "IMG_2.dng", pic, preview=pic, orientation=6)
    before = {p.name: sha(p) for p in folder.iterdir()}
    args = ["tag", str(folder), "--weights", tiny_weights, "--precision", "fp32", "--threshold", "0.01"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "2 images found, 2 tagged" in err
    for name in ("IMG_1.DNG.xmp", "IMG_2.dng.xmp"):
        record = XmpPacket.parse((folder / name).read_bytes()).read_record()
        assert record is not None and record.tags
    assert {p.name: sha(p) for p in folder.iterdir() if p.suffix != ".xmp"} == before


@pytest.mark.parametrize("own_fd_name", [True, False])
def test_raw_identity_is_of_the_file_libraw_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_fd_name: bool
) -> None:
    """libraw opens the decoder's own descriptor (/proc/self/fd/N), so a RAW replaced at its path
    meanwhile is not read; where the OS has no such name it opens the path, and a replacement is
    caught after decoding and refused (never recorded with the other file's identity)."""
    import os

    import rawpy

    from ramtag import decode as decode_mod

    if own_fd_name and not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd on this platform")
    dng = make_dng(tmp_path / "a.dng", sample_picture(400, 600))
    other = make_dng(tmp_path / "b.dng", sample_picture(200, 300))
    before = os.stat(dng)
    real = rawpy.imread

    def swap_then_read(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        os.replace(other, dng)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(rawpy, "imread", swap_then_read)
    if own_fd_name:
        decoded = decode_mod.decode_file(dng)
        assert decoded.image.size == (300, 200) and decoded.stat.st_ino == before.st_ino
    else:
        real_exists = os.path.exists
        monkeypatch.setattr(
            decode_mod.os.path,
            "exists",
            lambda p: False if str(p).startswith("/proc/self/fd/") else real_exists(p),
        )
        with pytest.raises(ImageDecodeError, match="replaced while it was being decoded"):
            decode_mod.decode_file(dng)
