"""Read the metadata a photo carries inside it (never modifying the file), to seed a new sidecar.

Photo managers that find a sidecar read it *instead of* the photo's embedded metadata (digiKam,
darktable, Immich), so a sidecar ramtag creates must start from what the photo already holds: its XMP
packet, its IPTC keywords, title and caption, and the EXIF fields Windows and cameras write
(ImageDescription, XPTitle, XPKeywords, Rating). Which source wins where they disagree is decided by
:mod:`ramtag.writers.xmp` following the Metadata Working Group's guidance; this module only reads.

Pillow reads all of it from JPEG, TIFF (and the TIFF-based RAW formats: CR2, NEF, ARW, DNG, ...), PNG and
WebP without decoding a pixel. For other formats (CR3, RAF, HEIC, ...) exiftool, where it is installed,
supplies the XMP packet. Anything unreadable yields no metadata (and a debug line), never an error: the
photo's own bytes are the user's, a sidecar without them is the worst case, not a failed run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, IptcImagePlugin

log = logging.getLogger(__name__)

MAX_EMBEDDED_XMP = 4 * 1024 * 1024  # a larger "packet" is not photo metadata; ignored

_IPTC_KEYWORDS, _IPTC_TITLE, _IPTC_CAPTION, _IPTC_CHARSET = (2, 25), (2, 5), (2, 120), (1, 90)
_PS_IPTC, _PS_IPTC_DIGEST = 0x0404, 0x0425  # Photoshop image resources: IPTC block, its MD5 digest
_EXIF_DESCRIPTION, _EXIF_RATING = 0x010E, 0x4746
_EXIF_XP_TITLE, _EXIF_XP_KEYWORDS = 0x9C9B, 0x9C9E
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@dataclass
class EmbeddedMetadata:
    """What one photo carries. ``None`` / empty: the photo does not have it."""

    xmp: bytes | None = None  # the XMP packet as stored
    iptc_keywords: list[str] = field(default_factory=list)
    iptc_title: str | None = None  # IPTC ObjectName (2:05)
    iptc_caption: str | None = None  # IPTC Caption-Abstract (2:120)
    # the IPTC digest Photoshop-compatible writers store: True = it matches the IPTC (XMP is in sync
    # with it), False = the IPTC was changed by a tool unaware of XMP, None = no digest stored
    iptc_digest_matches: bool | None = None
    exif_description: str | None = None
    exif_title: str | None = None  # XPTitle (Windows)
    exif_keywords: list[str] = field(default_factory=list)  # XPKeywords (Windows), ';'-separated
    exif_rating: int | None = None  # Rating (Windows), 0..5

    def is_empty(self) -> bool:
        return not (
            self.xmp
            or self.iptc_keywords
            or self.iptc_title
            or self.iptc_caption
            or self.exif_description
            or self.exif_title
            or self.exif_keywords
            or self.exif_rating
        )


def _text(value: str) -> str:
    return _CONTROL.sub("", value).strip()


def _iptc_text(raw: bytes, utf8: bool) -> str:
    """IPTC bytes -> text: UTF-8 when declared (or when the bytes are valid UTF-8), else Latin-1 (the
    legacy encoding MWG tells readers to assume)."""
    try:
        return _text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _text(raw.decode("utf-8" if utf8 else "latin-1", "replace"))


def _xp_text(value: Any) -> str:
    """Windows XP* tags are UTF-16LE; Pillow hands them over as bytes or a tuple of byte values."""
    if isinstance(value, str):
        return _text(value)
    data = bytes(value) if isinstance(value, (tuple, list)) else value
    if not isinstance(data, bytes):
        return ""
    return _text(data.decode("utf-16-le", "replace").split("\x00", 1)[0])


def _packet(data: Any) -> bytes | None:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (tuple, list)):
        data = bytes(data)
    if not isinstance(data, bytes) or not data.strip(b"\x00 \t\r\n"):
        return None
    if len(data) > MAX_EMBEDDED_XMP:
        return None
    return data.strip(b"\x00 \t\r\n")


def _from_pillow(img: ImageFile.ImageFile, meta: EmbeddedMetadata) -> None:
    info = img.info
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    tags = getattr(img, "tag_v2", None)
    if xmp is None and tags is not None:
        xmp = tags.get(700)
    meta.xmp = _packet(xmp)

    iptc: dict[tuple[int, int], Any] | None = None
    try:
        iptc = IptcImagePlugin.getiptcinfo(img)
    except Exception as e:  # malformed IPTC: the rest still counts
        log.debug("unreadable IPTC (%s)", e)
    if iptc:
        utf8 = iptc.get(_IPTC_CHARSET) == b"\x1b%G"
        words = iptc.get(_IPTC_KEYWORDS, [])
        words = words if isinstance(words, list) else [words]
        meta.iptc_keywords = [w for w in (_iptc_text(b, utf8) for b in words) if w]
        for key, attr in ((_IPTC_TITLE, "iptc_title"), (_IPTC_CAPTION, "iptc_caption")):
            value = iptc.get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, bytes):
                setattr(meta, attr, _iptc_text(value, utf8) or None)
    photoshop = info.get("photoshop")
    if isinstance(photoshop, dict) and _PS_IPTC_DIGEST in photoshop and _PS_IPTC in photoshop:
        block = photoshop[_PS_IPTC]
        meta.iptc_digest_matches = hashlib.md5(block, usedforsecurity=False).digest() == bytes(
            photoshop[_PS_IPTC_DIGEST]
        )

    try:
        exif = img.getexif()
    except Exception as e:
        log.debug("unreadable EXIF (%s)", e)
        return
    description = exif.get(_EXIF_DESCRIPTION)
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    if isinstance(description, str) and _text(description):
        meta.exif_description = _text(description)
    title = exif.get(_EXIF_XP_TITLE)
    if title is not None:
        meta.exif_title = _xp_text(title) or None
    keywords = exif.get(_EXIF_XP_KEYWORDS)
    if keywords is not None:
        meta.exif_keywords = [k for k in (_text(w) for w in _xp_text(keywords).split(";")) if k]
    rating = exif.get(_EXIF_RATING)
    if isinstance(rating, int) and 0 < rating <= 5:
        meta.exif_rating = rating


def read_embedded(path: Path, xmp_reader: Callable[[Path], bytes | None] | None = None) -> EmbeddedMetadata:
    """The metadata ``path`` carries (empty where it has none or cannot be read). Read-only.

    ``xmp_reader`` (exiftool, where installed) supplies the XMP packet of files Pillow cannot open.
    """
    meta = EmbeddedMetadata()
    opened = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb and TIFF-tag warnings: no pixel is read
            with Image.open(path) as img:
                opened = True
                _from_pillow(img, meta)
    except Exception as e:  # not a format Pillow knows (CR3, RAF, ...) or unreadable headers
        log.debug("%s: Pillow cannot read its metadata (%s)", path, e)
    if meta.xmp is None and not opened and xmp_reader is not None:
        try:
            meta.xmp = _packet(xmp_reader(path))
        except Exception as e:  # a failing exiftool costs the seed, never the write
            log.debug("%s: exiftool could not read its XMP (%s)", path, e)
    return meta
