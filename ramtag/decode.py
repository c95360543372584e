"""Decode one image file into an 8-bit RGB ``PIL.Image``, or raise a one-line :class:`ImageDecodeError`.

The official RAM++ code reads images with ``Image.open(path).convert("RGB")``. For ordinary 8-bit RGB, L
and P (palette, no transparency) images ramtag does exactly that, bit for bit (with
``exif_orientation=False``; with the default only EXIF-rotated photos differ). Where that one-liner gives
the model a wrong picture, ramtag does better:

- **EXIF orientation** (``exif_orientation=True``): phone photos stored sideways are turned upright
  (``ImageOps.exif_transpose``), as every photo viewer shows them. The official code tags them sideways.
- **16-bit grey** (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): scaled to 8 bits (``x >> 8``). Pillow's
  ``convert("RGB")`` clamps every value above 255 to 255, so these come out almost white.
- **32-bit integer** (``I``): by value range: ``[0, 255]`` kept, ``[0, 65535]`` shifted ``>> 8``, anything
  else stretched min..max to 0..255 (``convert`` clamps instead).
- **Float** (``F``): ``[0, 1]`` scaled by 255, any other range stretched min..max (``convert`` truncates, so
  a ``[0, 1]`` image comes out black).
- **Alpha** (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``P``/``L``/``RGB`` with a transparency key):
  composited over neutral mid-grey (128, 128, 128). ``convert("RGB")`` drops the alpha channel, which
  shows whatever colour the invisible pixels happen to hold (often black, sometimes garbage).
- **CMYK**: converted to sRGB through the embedded ICC profile (``ImageCms``) when there is one, else with
  Pillow's naive conversion. Pillow assumes Adobe's inverted CMYK for every CMYK JPEG; a CMYK JPEG without
  Adobe's APP14 marker is stored non-inverted, so ramtag inverts it back.
- **Multi-frame files** (animated GIF/WebP, multi-page TIFF): the first frame (as the official code).
- Embedded ICC profiles of RGB images are *not* applied, matching the decode the model was trained with.
- **Camera RAW** (CR2, NEF, ARW, DNG, ... see :mod:`ramtag.raw`): the embedded preview when it is at least
  the model's input size, else a half-size libraw demosaic; upright from the RAW's own orientation.

Safety: the file is fully decoded inside :func:`decode_image` (``img.load()``), so truncated files fail
here with a clear reason; ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set. Pillow's
``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels by default) is honoured: anything over it is refused as a
possible decompression bomb (Pillow itself only warns between 1x and 2x the limit).

Speed: ``draft_size`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (never below ``draft_size`` on
either side). Off by default, because it changes pixels slightly compared with the official decode.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from ramtag.errors import ImageDecodeError
from ramtag.raw import DEFAULT_MIN_PREVIEW, decode_raw, is_raw

log = logging.getLogger(__name__)

# Background for images with transparency: neutral mid-grey, which biases no colour and no tag.
ALPHA_BACKGROUND = (128, 128, 128)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


@lru_cache(maxsize=1)
def register_optional_formats() -> tuple[str, ...]:
    """Register optional Pillow plugins once (pillow-heif for HEIC/HEIF); returns the ones registered."""
    registered: list[str] = []
    try:
        import pillow_heif
    except ImportError:
        return ()
    except Exception as err:  # a broken optional plugin must not break decoding of ordinary files
        log.warning("pillow-heif is installed but failed to import (%s); HEIC files will be skipped", err)
        return ()
    pillow_heif.register_heif_opener()
    registered.append("heif")
    if hasattr(pillow_heif, "register_avif_opener"):
        from PIL import features

        if not features.check("avif"):
            pillow_heif.register_avif_opener()
            registered.append("avif")
    return tuple(registered)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _fail(path: Path, reason: str) -> ImageDecodeError:
    return ImageDecodeError(f"cannot decode {path}: {reason}")


def _bomb_error(path: Path, pixels: int | None, detail: str = "") -> ImageDecodeError:
    limit = Image.MAX_IMAGE_PIXELS
    count = f"{pixels:,} pixels" if pixels is not None else f"more pixels than allowed ({detail})"
    return _fail(
        path,
        f"image has {count}, over Pillow's decompression-bomb limit ({limit:,}); if you trust the file, "
        "raise PIL.Image.MAX_IMAGE_PIXELS",
    )


@dataclass(frozen=True)
class Decoded:
    """One decoded file: the picture and the identity of the very file it was read from."""

    image: Image.Image  # 8-bit RGB
    stat: os.stat_result  # os.fstat of the descriptor the pixels were read from (size, mtime, inode)


def decode_image(
    path: str | Path,
    *,
    exif_orientation: bool = True,
    draft_size: int | None = None,
) -> Image.Image:
    """Read one image file as an 8-bit RGB ``PIL.Image`` (mode ``"RGB"``, size (W, H), values 0..255).

    Args:
        path: the image file.
        exif_orientation: turn the image upright according to its EXIF Orientation tag (the official code
            does not; set False to reproduce it exactly).
        draft_size: for JPEGs only, let libjpeg decode at a reduced scale whose width and height both stay
            >= ``draft_size`` (pass the model's input size). None (default) decodes at full size, exactly.
            For RAW files it is also the smallest embedded preview used instead of demosaicing.

    Raises:
        ImageDecodeError: one line naming the file and the reason (missing, folder, empty, unreadable, not
            an image, truncated or corrupt, over the decompression-bomb limit).
    """
    return decode_file(path, exif_orientation=exif_orientation, draft_size=draft_size).image


def decode_file(
    path: str | Path,
    *,
    exif_orientation: bool = True,
    draft_size: int | None = None,
) -> Decoded:
    """:func:`decode_image`, with the file's identity taken from the descriptor it was decoded from.

    The file is opened once; its stat is ``os.fstat`` of that descriptor and the pixels are read
    through it, so a photo replaced at its path meanwhile can never lend its identity to the other
    one's pixels (the catalog records that identity with the scores).
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer (it is refused just below)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except PermissionError:
        raise _fail(path, "permission denied; check the file's read permissions") from None
    except OSError as err:
        raise _fail(path, f"cannot access the file ({_one_line(err)}); check its permissions") from None
    fp: io.BufferedReader | None = None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _fail(path, "it is a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, "not a regular file (device, pipe or socket)")
        if st.st_size == 0:
            raise _fail(path, "empty file (0 bytes); copy it again from the original")
        if is_raw(path):
            return Decoded(_decode_raw(path, fd, st, exif_orientation, draft_size), st)
        os.set_blocking(fd, True)
        fp = os.fdopen(fd, "rb")  # owns fd from here
        return Decoded(_decode_pillow(path, fp, exif_orientation, draft_size), st)
    finally:  # after the full decode (Pillow reads lazily)
        if fp is not None:
            fp.close()
        else:
            os.close(fd)


def _decode_raw(
    path: Path, fd: int, st: os.stat_result, exif_orientation: bool, draft_size: int | None
) -> Image.Image:
    """libraw opens the file by name: the name of the open descriptor where the OS has one (Linux),
    else the path, checked after decoding to still be the file ``fd`` was opened on."""
    own = f"/proc/self/fd/{fd}"
    source = own if os.path.exists(own) else None
    img = decode_raw(
        path,
        min_preview=draft_size or DEFAULT_MIN_PREVIEW,
        exif_orientation=exif_orientation,
        draft_size=draft_size,
        source=source,
    )
    if source is None:
        try:
            now = os.stat(path)
        except OSError:
            now = None
        if now is None or (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) != (
            st.st_ino,
            st.st_dev,
            st.st_size,
            st.st_mtime_ns,
        ):
            raise _fail(path, "the file was replaced while it was being decoded; run again")
    try:
        return _to_rgb(img, exif_orientation=False, owned=True)  # already upright
    except _ModeError as err:
        raise _fail(path, str(err)) from None


def _decode_pillow(
    path: Path, fp: io.BufferedReader, exif_orientation: bool, draft_size: int | None
) -> Image.Image:
    register_optional_formats()
    try:
        with warnings.catch_warnings():
            # We refuse anything over the limit ourselves (below), so Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        pixels = img.width * img.height
        if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
            raise _bomb_error(path, pixels)
        if draft_size is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (draft_size, draft_size))
        img.load()  # force the full decode now, so truncated data fails here
        return _to_rgb(img, exif_orientation=exif_orientation, owned=True)
    except ImageDecodeError:
        raise
    except _ModeError as err:
        raise _fail(path, str(err)) from None
    except Image.DecompressionBombError as err:
        match = re.search(r"\((\d+) pixels\)", str(err))
        raise _bomb_error(path, int(match.group(1)) if match else None, _one_line(err)) from None
    except UnidentifiedImageError:
        hint = ""
        if path.suffix.lower() in (".heic", ".heif", ".avif"):
            hint = "; install pillow-heif for HEIC/HEIF/AVIF: pip install 'ramtag[heif]'"
        raise _fail(path, f"not an image Pillow can read (unknown or unsupported format){hint}") from None
    except PermissionError:
        raise _fail(path, "permission denied; check the file's read permissions") from None
    except MemoryError:
        raise _fail(path, "not enough memory to decode this image") from None
    except Exception as err:  # OSError, SyntaxError, ValueError, struct.error, ... from the decoders
        raise _fail(
            path, f"truncated or corrupt image data ({_one_line(err)}); re-copy or re-export the file"
        ) from None


class _ModeError(ValueError):
    """An image mode with no conversion to RGB (message without the file name)."""


def to_rgb(img: Image.Image, *, exif_orientation: bool = True) -> Image.Image:
    """Convert an in-memory ``PIL.Image`` (any mode) to 8-bit RGB with the same rules as
    :func:`decode_image` (orientation, 16-bit, float, alpha, CMYK). The input image is not modified.

    Raises:
        ImageDecodeError: the image cannot be read or its mode cannot be converted to RGB.
    """
    try:
        img.load()
        return _to_rgb(img, exif_orientation=exif_orientation, owned=False)
    except _ModeError as err:
        raise ImageDecodeError(f"cannot use the in-memory image: {err}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"cannot use the in-memory image: {_one_line(err)}") from None


def _to_rgb(img: Image.Image, *, exif_orientation: bool, owned: bool) -> Image.Image:
    """The conversions of :func:`to_rgb`; ``owned`` images may be modified in place."""
    if exif_orientation:
        try:
            if owned:
                ImageOps.exif_transpose(img, in_place=True)
            else:
                img = ImageOps.exif_transpose(img)
        except Exception as err:  # malformed EXIF: keep the pixels as stored rather than fail
            log.debug("ignoring unreadable EXIF orientation (%s)", _one_line(err))

    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img if owned else img.copy()
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(np.asarray(img).astype(np.uint16) >> 8)
    if mode == "I":
        return _grey_to_rgb(_int_to_uint8(np.asarray(img)))
    if mode == "F":
        return _grey_to_rgb(_float_to_uint8(np.asarray(img)))
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_grey(img)
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise _ModeError(f"image mode {mode!r} cannot be converted to RGB ({_one_line(err)})") from None


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """(H, W) integer array with values 0..255 -> RGB image with three equal channels."""
    return Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L").convert("RGB")


def _int_to_uint8(values: np.ndarray) -> np.ndarray:
    """(H, W) int32 -> uint8 by value range: 8-bit kept, 16-bit shifted, otherwise stretched."""
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi <= 255:
        return values.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return (values >> 8).astype(np.uint8)
    return _stretch(values.astype(np.float64), lo, hi)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """(H, W) float32 -> uint8: [0, 1] scaled by 255 (rounded), other ranges stretched min..max."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.round(values * 255.0).astype(np.uint8)
    return _stretch(values, lo, hi)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # constant image
        return np.full(values.shape, 128, dtype=np.uint8)
    return np.round((values - lo) * 255.0 / (hi - lo)).clip(0, 255).astype(np.uint8)


def _composite_on_grey(img: Image.Image) -> Image.Image:
    """Any image with alpha or a transparency key -> RGB, transparent areas shown as mid-grey."""
    rgba = img.convert("RGBA")  # applies palette/colour-key transparency and un-premultiplies RGBa/La
    background = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK -> sRGB: through the embedded ICC profile when usable, else Pillow's naive formula."""
    if img.format in ("JPEG", "MPO") and "adobe" not in img.info:
        # Pillow decodes every CMYK JPEG as Adobe-inverted; without Adobe's APP14 marker the data was
        # stored the standard way, so undo Pillow's inversion.
        img = ImageChops.invert(img)
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                img,
                source,
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
            if converted is not None:
                return converted
        except Exception as err:  # unusable profile or no littlecms: fall back rather than fail
            log.debug("CMYK ICC conversion failed (%s); using Pillow's conversion", _one_line(err))
    return img.convert("RGB")
