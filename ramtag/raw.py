"""Camera RAW files: how one becomes a picture for the model (rawpy / libraw).

Decoding takes the fast path where it can: the JPEG (or bitmap) preview every camera embeds, when its
shorter side is at least the model's input size (RAM++ squashes every image to 384 x 384, so a larger
preview loses nothing). Otherwise libraw demosaics the sensor data at half size (one RGB pixel per 2 x 2
Bayer block: four times fewer pixels, no interpolation), with the camera's white balance. Either way the
picture is turned upright from the RAW's own orientation (libraw's ``flip``, read from the RAW's
metadata, not from the preview, whose own EXIF is often missing or wrong), and the caller applies the
official preprocessing after that.

Which extensions are RAW is :data:`ramtag.formats.RAW_EXTENSIONS` (discovery, sidecar naming and
``--write embed`` use it). rawpy is imported only when a RAW file is decoded.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from ramtag.errors import ImageDecodeError
from ramtag.formats import RAW_EXTENSIONS

log = logging.getLogger(__name__)


# The RAM++ input size: a preview with a shorter side at least this long is used instead of demosaicing.
DEFAULT_MIN_PREVIEW = 384

# libraw's ``sizes.flip`` -> the transpose that turns the stored picture upright.
_UPRIGHT = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def is_raw(path: str | Path) -> bool:
    """True when ``path``'s extension is a camera RAW extension (case-insensitive)."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def _fail(path: Path, reason: str) -> ImageDecodeError:
    return ImageDecodeError(f"cannot decode {path}: {reason}")


def decode_raw(
    path: Path,
    *,
    min_preview: int = DEFAULT_MIN_PREVIEW,
    exif_orientation: bool = True,
    draft_size: int | None = None,
    source: str | None = None,
) -> Image.Image:
    """One RAW file -> an upright ``PIL.Image`` (RGB, or the preview's own mode for the caller to convert).

    ``min_preview``: the shortest preview side worth using (the model's input size). ``exif_orientation``
    False keeps the sensor's orientation. ``draft_size`` lets libjpeg decode a large preview at reduced
    scale (as for JPEG files). ``source``: the name libraw opens instead of ``path`` (the caller's
    open descriptor, ``/proc/self/fd/N``); messages name ``path``. Raises :class:`ImageDecodeError`
    (one line) for anything libraw cannot read.
    """
    try:
        import rawpy
    except ImportError:
        raise _fail(path, "RAW files need rawpy (pip install rawpy)") from None
    try:
        with rawpy.imread(source or str(path)) as raw:
            flip = int(raw.sizes.flip) if exif_orientation else 0
            landscape = raw.sizes.width >= raw.sizes.height
            preview = _preview(rawpy, raw, path, min_preview, draft_size)
            if preview is not None:
                return _upright(preview, flip, landscape)
            pixels = (raw.sizes.width // 2) * (raw.sizes.height // 2)
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and pixels > limit:
                raise _fail(
                    path,
                    f"half-size image has {pixels:,} pixels, over Pillow's decompression-bomb limit "
                    f"({limit:,}); if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS",
                )
            rgb = raw.postprocess(
                half_size=True,  # one pixel per Bayer block: fast, and far above the model's input size
                use_camera_wb=True,
                output_bps=8,
                user_flip=None if exif_orientation else 0,  # None: libraw applies the RAW's orientation
            )
            return Image.fromarray(rgb, mode="RGB")
    except ImageDecodeError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise _fail(path, "not a RAW format libraw can read (unsupported or not a RAW file)") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
        raise _fail(path, f"truncated or corrupt RAW data ({e}); re-copy the file") from None
    except rawpy.LibRawTooBigError:
        raise _fail(path, "RAW image too large for libraw") from None
    except (rawpy.LibRawError, OSError, ValueError) as e:
        raise _fail(path, f"libraw could not read it ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise _fail(path, "not enough memory to decode this RAW file") from None


def _preview(
    rawpy: Any, raw: Any, path: Path, min_preview: int, draft_size: int | None
) -> Image.Image | None:
    """The embedded preview when it is large enough, else None (no preview, too small, unreadable)."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError as e:
        log.debug("%s: unreadable preview (%s); demosaicing instead", path, e)
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.BITMAP:
            img = Image.fromarray(thumb.data)
            return img if min(img.size) >= min_preview else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(thumb.data))
        if min(img.size) < min_preview:
            return None
        if draft_size is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        log.debug("%s: unreadable preview (%s); demosaicing instead", path, e)
        return None


def _upright(img: Image.Image, flip: int, landscape: bool) -> Image.Image:
    """Apply the RAW's orientation to its preview, unless the camera stored the preview already turned."""
    turn = _UPRIGHT.get(flip)
    if turn is None:
        return img
    if flip in (5, 6) and (img.width >= img.height) != landscape:
        return img  # the preview's shape already differs from the sensor's: it is upright
    return img.transpose(turn)
