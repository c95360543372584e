"""A tiny DNG writer for the RAW tests: a Bayer (RGGB) CFA image libraw reads, optionally with a JPEG preview.

Written by hand (little-endian TIFF, uncompressed 16-bit CFA data) so the tests need no download and no
DNG library. ``make_dng`` mosaics an RGB picture: each photosite keeps the colour its filter passes, so
libraw's demosaic gives back (roughly) the picture, and the preview is the same picture as a JPEG.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# TIFF field types
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}


def _pack(kind: int, values: list) -> bytes:
    if kind == ASCII:
        return values[0].encode("ascii") + b"\0"
    if kind == BYTE:
        return bytes(values)
    if kind == SHORT:
        return struct.pack(f"<{len(values)}H", *values)
    if kind == LONG:
        return struct.pack(f"<{len(values)}I", *values)
    if kind in (RATIONAL, SRATIONAL):
        fmt = "<ii" if kind == SRATIONAL else "<II"
        return b"".join(struct.pack(fmt, n, d) for n, d in values)
    raise ValueError(kind)


class _Tiff:
    """Lays out IFDs and data blocks; offsets are patched when an IFD is written."""

    def __init__(self) -> None:
        self.buf = bytearray(b"II*\0\0\0\0\0")

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        offset = len(self.buf)
        self.buf += data
        return offset

    def ifd(self, entries: dict[int, tuple[int, list]]) -> int:
        """Write one IFD (entries: tag -> (type, values)); returns its offset."""
        payloads = {tag: _pack(kind, values) for tag, (kind, values) in entries.items()}
        far = {tag: self.blob(p) for tag, p in payloads.items() if len(p) > 4}
        if len(self.buf) % 2:
            self.buf += b"\0"
        offset = len(self.buf)
        self.buf += struct.pack("<H", len(entries))
        for tag in sorted(entries):
            kind = entries[tag][0]
            p = payloads[tag]
            count = len(p) // _SIZE[kind] if kind != ASCII else len(p)
            field = struct.pack("<I", far[tag]) if tag in far else p.ljust(4, b"\0")
            self.buf += struct.pack("<HHI", tag, kind, count) + field
        self.buf += struct.pack("<I", 0)
        return offset


def mosaic(rgb: np.ndarray, white: int = 4095) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint16 RGGB Bayer data scaled to ``white``."""
    h, w, _ = rgb.shape
    cfa = np.empty((h, w), dtype=np.uint16)
    scale = white / 255.0
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0] * scale  # R
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1] * scale  # G
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1] * scale  # G
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2] * scale  # B
    return cfa


def _raw_entries(cfa: np.ndarray, offset: int, white: int) -> dict[int, tuple[int, list]]:
    h, w = cfa.shape
    return {
        254: (LONG, [0]),  # NewSubfileType: main image
        256: (LONG, [w]),
        257: (LONG, [h]),
        258: (SHORT, [16]),
        259: (SHORT, [1]),  # uncompressed
        262: (SHORT, [32803]),  # PhotometricInterpretation: CFA
        273: (LONG, [offset]),
        277: (SHORT, [1]),
        278: (LONG, [h]),
        279: (LONG, [cfa.nbytes]),
        284: (SHORT, [1]),
        33421: (SHORT, [2, 2]),  # CFARepeatPatternDim
        33422: (BYTE, [0, 1, 1, 2]),  # CFAPattern: RGGB
        50710: (BYTE, [0, 1, 2]),  # CFAPlaneColor
        50711: (SHORT, [1]),  # CFALayout: rectangular
        50714: (LONG, [0]),  # BlackLevel
        50717: (LONG, [white]),  # WhiteLevel
    }


def _dng_entries(orientation: int, xmp: bytes | None) -> dict[int, tuple[int, list]]:
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    entries: dict[int, tuple[int, list]] = {
        271: (ASCII, ["ramtag"]),  # Make
        272: (ASCII, ["Test DNG"]),  # Model
        274: (SHORT, [orientation]),
        50706: (BYTE, [1, 4, 0, 0]),  # DNGVersion
        50707: (BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        50708: (ASCII, ["ramtag Test DNG"]),  # UniqueCameraModel
        50721: (SRATIONAL, identity),  # ColorMatrix1 (XYZ -> camera): identity
        50778: (SHORT, [21]),  # CalibrationIlluminant1: D65
        50728: (RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral
    }
    if xmp is not None:
        entries[700] = (BYTE, list(xmp))
    return entries


def make_dng(
    path: Path,
    rgb: np.ndarray,
    *,
    preview: np.ndarray | None = None,
    orientation: int = 1,
    xmp: bytes | None = None,
    white: int = 4095,
) -> Path:
    """Write ``rgb`` (H, W, 3 uint8, even sides) as a Bayer DNG; ``preview`` (an RGB array) is embedded
    as a JPEG in IFD0 (the raw data then goes to a SubIFD, as cameras and Adobe's converter do)."""
    cfa = mosaic(rgb, white)
    t = _Tiff()
    data_offset = t.blob(cfa.astype("<u2").tobytes())
    if preview is None:
        entries = _raw_entries(cfa, data_offset, white) | _dng_entries(orientation, xmp)
        ifd0 = t.ifd(entries)
    else:
        raw_ifd = t.ifd(_raw_entries(cfa, data_offset, white))
        jpeg = io.BytesIO()
        Image.fromarray(preview).save(jpeg, "JPEG", quality=92)
        jpeg_offset = t.blob(jpeg.getvalue())
        ph, pw = preview.shape[:2]
        entries = {
            254: (LONG, [1]),  # NewSubfileType: reduced-resolution preview
            256: (LONG, [pw]),
            257: (LONG, [ph]),
            258: (SHORT, [8, 8, 8]),
            259: (SHORT, [7]),  # JPEG
            262: (SHORT, [6]),  # YCbCr
            273: (LONG, [jpeg_offset]),
            277: (SHORT, [3]),
            278: (LONG, [ph]),
            279: (LONG, [len(jpeg.getvalue())]),
            284: (SHORT, [1]),
            330: (LONG, [raw_ifd]),  # SubIFDs
        } | _dng_entries(orientation, xmp)
        ifd0 = t.ifd(entries)
    t.buf[4:8] = struct.pack("<I", ifd0)
    path.write_bytes(bytes(t.buf))
    return path


def sample_picture(h: int = 64, w: int = 96) -> np.ndarray:
    """An asymmetric picture for orientation checks: red block top-left, blue bottom-right, green else."""
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 1] = 160
    rgb[: h // 2, : w // 3] = (230, 20, 20)
    rgb[h // 2 :, 2 * w // 3 :] = (20, 20, 230)
    return rgb
