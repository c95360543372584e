"""decode_image() / to_rgb(): faithful for ordinary images, better where the official one-liner is wrong,
and one-line errors for every kind of bad file."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageFile

from ramtag import decode as decode_mod
from ramtag.decode import ALPHA_BACKGROUND, decode_image, to_rgb
from ramtag.errors import ImageDecodeError, InputError


def official(path: Path) -> Image.Image:
    """What the official RAM++ code does."""
    return Image.open(path).convert("RGB")


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


# ---------------------------------------------------------------- faithful for ordinary photos


def test_bit_identical_to_official_without_orientation(shared_photos: Path) -> None:
    photos = sorted(p for p in shared_photos.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(photos) >= 20
    for path in photos:
        ours = decode_image(path, exif_orientation=False)
        assert ours.mode == "RGB"
        ref = official(path)
        assert ours.size == ref.size, path.name
        assert np.array_equal(np.asarray(ours), np.asarray(ref)), path.name


def test_default_matches_official_for_upright_photos(shared_photos: Path) -> None:
    for name in ("coffee_cup.jpg", "cameraman_gray.png", "cat_chelsea.png", "cameratrap_elephants.jpg"):
        path = shared_photos / name
        assert np.array_equal(np.asarray(decode_image(path)), np.asarray(official(path))), name


@pytest.mark.parametrize("name", ["cat_orientation6.jpg", "cameratrap_elephants_orientation6.jpg"])
def test_exif_orientation_6_is_rotated(shared_photos: Path, name: str) -> None:
    path = shared_photos / name
    stored = official(path)
    upright = decode_image(path)
    w, h = stored.size
    assert upright.size == (h, w)
    # orientation 6 = stored rotated 90 degrees counter-clockwise; the viewer turns it clockwise
    assert np.array_equal(np.asarray(upright), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))
    assert decode_image(path, exif_orientation=False).size == (w, h)


def test_grayscale_png_becomes_rgb(shared_photos: Path) -> None:
    img = decode_image(shared_photos / "cameraman_gray.png")
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (512, 512, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


def test_palette_png_without_transparency_matches_official(tmp_path: Path, shared_photos: Path) -> None:
    path = tmp_path / "pal.png"
    Image.open(shared_photos / "coffee_cup.jpg").convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    assert Image.open(path).mode == "P" and "transparency" not in Image.open(path).info
    assert np.array_equal(np.asarray(decode_image(path)), np.asarray(official(path)))


# ---------------------------------------------------------------- better than the official decode


def test_16bit_grey_png_scaled_not_white(tmp_path: Path) -> None:
    values = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(official(path)).mean() > 250  # the official decode: almost all white
    arr = np.asarray(decode_image(path))
    assert arr.dtype == np.uint8 and arr.shape == (64, 64, 3)
    assert np.array_equal(arr[..., 0], (values >> 8).astype(np.uint8))
    assert np.array_equal(arr[..., 1], arr[..., 0]) and np.array_equal(arr[..., 2], arr[..., 0])
    assert 120 < arr.mean() < 135


def test_16bit_big_endian_and_int_modes() -> None:
    values = np.array([[0, 256, 65535], [1000, 30000, 50000]], dtype=np.uint16)
    img = Image.frombytes("I;16B", (3, 2), values.astype(">u2").tobytes())
    assert img.mode == "I;16B"
    assert np.array_equal(np.asarray(to_rgb(img))[..., 0], values >> 8)
    wide = Image.fromarray(values.astype(np.int32))
    assert np.array_equal(np.asarray(to_rgb(wide))[..., 0], values >> 8)
    small = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))
    assert np.asarray(to_rgb(small))[0, :, 0].tolist() == [0, 7, 255]
    signed = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))
    assert np.asarray(to_rgb(signed))[0, :, 0].tolist() == [0, 128, 255]


def test_float_mode_scaled() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 64, 255]


def test_rgba_png_transparent_areas_are_grey(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:4, :, 3] = 255  # ... opaque in the top half, fully transparent below
    rgba[4:, :, :3] = 0  # invisible pixels stored black (what convert("RGB") would show)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    arr = np.asarray(decode_image(path))
    assert (arr[:4] == (255, 0, 0)).all()
    assert (arr[4:] == ALPHA_BACKGROUND).all()
    assert (np.asarray(official(path))[4:] == 0).all()  # the official decode shows black


def test_half_transparent_is_blended() -> None:
    img = Image.new("LA", (2, 2), (255, 128))
    value = np.asarray(to_rgb(img))[0, 0, 0]
    assert abs(int(value) - (255 * 128 + 128 * 127) // 255) <= 1


def test_palette_with_transparency_composited(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(0, (0, 0, 2, 4))
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    arr = np.asarray(decode_image(path))
    assert (arr[:, :2] == ALPHA_BACKGROUND).all() and (arr[:, 2:] == (0, 255, 0)).all()


def _cmyk_jpeg(tmp_path: Path, photo: Path) -> tuple[Path, Image.Image]:
    rgb = Image.open(photo).convert("RGB").resize((160, 120))
    path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(path, quality=95)
    return path, rgb


def test_cmyk_jpeg(tmp_path: Path, shared_photos: Path) -> None:
    path, rgb = _cmyk_jpeg(tmp_path, shared_photos / "coffee_cup.jpg")
    src = Image.open(path)
    assert src.mode == "CMYK" and "adobe" in src.info
    out = decode_image(path)
    assert out.mode == "RGB" and out.size == rgb.size
    assert np.abs(pixels(out) - pixels(rgb)).mean() < 4


def _strip_jpeg_segment(data: bytes, marker: int) -> bytes:
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        assert data[i] == 0xFF
        kind = data[i + 1]
        if kind == 0xDA:  # start of scan: the rest is entropy-coded data
            out += data[i:]
            break
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if kind != marker:
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out)


def test_cmyk_jpeg_without_adobe_marker_not_inverted(tmp_path: Path, shared_photos: Path) -> None:
    adobe, _ = _cmyk_jpeg(tmp_path, shared_photos / "coffee_cup.jpg")
    plain = tmp_path / "plain_cmyk.jpg"
    plain.write_bytes(_strip_jpeg_segment(adobe.read_bytes(), 0xEE))  # drop APP14 "Adobe"
    assert "adobe" not in Image.open(plain).info
    stored = Image.open(adobe)
    stored.load()
    # the same bytes, read without the Adobe convention, mean the inverted inks
    expected = ImageChops.invert(stored).convert("RGB")
    assert np.array_equal(np.asarray(decode_image(plain)), np.asarray(expected))


def test_cmyk_bad_icc_profile_falls_back(tmp_path: Path) -> None:
    img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red ink mix
    img.info["icc_profile"] = b"not a profile"
    assert to_rgb(img).getpixel((0, 0)) == (255, 0, 0)


def test_cmyk_embedded_profile_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageCms

    calls: list[str] = []

    def fake_profile(data):
        calls.append("profile")
        return ImageCms.createProfile("sRGB")

    def fake_convert(im, src, dst, **kwargs):
        calls.append(kwargs["outputMode"])
        return Image.new("RGB", im.size, (1, 2, 3))

    monkeypatch.setattr(ImageCms, "ImageCmsProfile", fake_profile)
    monkeypatch.setattr(ImageCms, "profileToProfile", fake_convert)
    img = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    img.info["icc_profile"] = b"icc bytes"
    assert to_rgb(img).getpixel((0, 0)) == (1, 2, 3) and calls == ["profile", "RGB"]


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    assert decode_image(path).getpixel((4, 4)) == (255, 0, 0)


def test_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (8, 8), c) for c in ((10, 20, 30), (200, 200, 200))]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert decode_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_to_rgb_does_not_modify_input(shared_photos: Path) -> None:
    img = Image.open(shared_photos / "cat_orientation6.jpg")
    img.load()
    size = img.size
    out = to_rgb(img)
    assert img.size == size and out.size == (size[1], size[0])
    assert img.getexif().get(0x0112) == 6
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    to_rgb(rgba)
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (0, 0, 0, 0)


# ---------------------------------------------------------------- draft mode (opt-in)


def test_draft_size_only_when_requested(shared_photos: Path) -> None:
    path = shared_photos / "honey_bee_flower.jpg"  # 1620 x 1280
    full = decode_image(path)
    assert full.size == (1620, 1280)
    # libjpeg scales by 1/2, 1/4, 1/8: the smallest scale keeping both sides >= draft_size
    assert decode_image(path, draft_size=384).size == (810, 640)
    assert decode_image(path, draft_size=300).size == (405, 320)
    assert decode_image(path, draft_size=64).size == (203, 160)
    # orientation is applied after drafting: (300, 451) stored -> upright (226, 150) at 1/2
    assert decode_image(shared_photos / "cat_orientation6.jpg", draft_size=100).size == (226, 150)
    # PNGs are never drafted
    assert decode_image(shared_photos / "cat_chelsea.png", draft_size=64).size == (451, 300)


def test_draft_size_never_below_requested(shared_photos: Path) -> None:
    for name in ("honey_bee_flower.jpg", "cat_orientation6.jpg", "coffee_cup.jpg"):
        for size in (64, 200, 384):
            img = decode_image(shared_photos / name, draft_size=size)
            assert min(img.size) >= min(size, *Image.open(shared_photos / name).size), (name, size)


# ---------------------------------------------------------------- bad input -> one-line errors


def assert_error(path: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, InputError)
    return message


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_error(path, "empty file (0 bytes)")


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "gone.jpg", "no such file")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    assert_error(folder, "folder")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a photo\n")
    assert_error(path, "not an image")


def test_heic_without_plugin_names_the_fix(tmp_path: Path) -> None:
    try:
        import pillow_heif  # noqa: F401

        pytest.skip("pillow-heif installed")
    except ImportError:
        pass
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert_error(path, "pillow-heif")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_jpeg(tmp_path: Path, shared_photos: Path, keep: float) -> None:
    data = (shared_photos / "coffee_cup.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert_error(path, "truncated or corrupt")


def test_truncated_png(tmp_path: Path, shared_photos: Path) -> None:
    data = (shared_photos / "cat_chelsea.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert_error(path, "truncated or corrupt")


def test_corrupt_header(tmp_path: Path, shared_photos: Path) -> None:
    data = bytearray((shared_photos / "cat_chelsea.png").read_bytes())
    data[16:24] = b"\xff" * 8  # absurd width/height in IHDR (and a bad CRC)
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError):
        decode_image(path)


def test_decompression_bomb_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is 10x over: Pillow raises
    assert_error(path, "image has 10,000 pixels", "decompression-bomb limit")


def test_decompression_bomb_warning_range_also_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 7000)  # between 1x and 2x: Pillow only warns
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and we must not leak the warning either
        assert_error(path, "image has 10,000 pixels")


def test_default_bomb_limit_kept_and_huge_header_refused(tmp_path: Path) -> None:
    default_limit = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default, which ramtag keeps
    assert default_limit == Image.MAX_IMAGE_PIXELS
    # a tiny PNG whose header claims 100,000 x 100,000 pixels
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    import zlib

    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    assert_error(path, "10,000,000,000 pixels", "decompression-bomb")
    assert default_limit == Image.MAX_IMAGE_PIXELS


def test_unreadable_file_via_mocked_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (4, 4)).save(path)

    real_open = os.open

    def deny(file, *args, **kwargs):  # the decoder opens the file once, with os.open
        if os.fsdecode(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(decode_mod.os, "open", deny)
    assert_error(path, "permission denied", "permissions")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        assert_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_uppercase_extension(tmp_path: Path, shared_photos: Path) -> None:
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes((shared_photos / "coffee_cup.jpg").read_bytes())
    expected = official(shared_photos / "coffee_cup.jpg")
    assert np.array_equal(np.asarray(decode_image(path)), np.asarray(expected))


def test_wrong_extension_still_decodes_by_content(tmp_path: Path, shared_photos: Path) -> None:
    path = tmp_path / "actually_png.jpg"
    path.write_bytes((shared_photos / "cat_chelsea.png").read_bytes())
    assert decode_image(path).size == (451, 300)


def test_decode_file_identity_is_of_the_bytes_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is opened once: its stat is fstat of that descriptor and the pixels come through it,
    so a photo replaced at the path meanwhile lends neither its pixels nor its identity."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(a)
    Image.new("RGB", (6, 6), (0, 0, 255)).save(b)
    before = os.stat(a)
    real_open = Image.open

    def swap_then_open(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        os.replace(b, a)  # the name now points at another photo
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(decode_mod.Image, "open", swap_then_open)
    decoded = decode_mod.decode_file(a)
    assert decoded.image.size == (4, 4) and decoded.image.getpixel((0, 0)) == (255, 0, 0)
    assert (decoded.stat.st_ino, decoded.stat.st_size, decoded.stat.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert os.stat(a).st_ino != before.st_ino
