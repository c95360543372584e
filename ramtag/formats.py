"""Which files are images: the one list of image file extensions (lower case, with the dot).

Two questions, answered here only:

- :func:`supported_extensions` / :func:`is_image_name`: can this installation decode the file (tagging,
  untag's embedded tags, training data)? The optional formats depend on what is installed.
- :data:`IMAGE_EXTENSIONS`: is the file a photo at all, decodable here or not (sidecar ownership:
  ``photo.CR2`` and ``photo.jpg`` share ``photo.xmp``)?

RAW files: :data:`RAW_EXTENSIONS` lists them; they join :func:`supported_extensions` when rawpy (libraw),
which :mod:`ramtag.raw` decodes them with, is installed (it is a dependency).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

# Always decodable by Pillow (with its bundled libjpeg, libpng, libwebp, libtiff).
BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
# Decodable with pillow-heif (``pip install 'ramtag[heif]'``).
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# Decodable with a Pillow built with AVIF (>= 11.2 wheels) or a pillow-heif that still reads AVIF.
AVIF_EXTENSIONS = frozenset({".avif"})
# Camera RAW formats libraw reads (the ones darktable / Lightroom pair with a same-stem JPEG).
RAW_EXTENSIONS = frozenset(
    {
        ".3fr",
        ".ari",
        ".arw",
        ".bay",
        ".cap",
        ".cr2",
        ".cr3",
        ".crw",
        ".dcr",
        ".dcs",
        ".dng",
        ".eip",
        ".erf",
        ".fff",
        ".gpr",
        ".iiq",
        ".k25",
        ".kdc",
        ".mdc",
        ".mef",
        ".mos",
        ".mrw",
        ".nef",
        ".nrw",
        ".orf",
        ".ori",
        ".pef",
        ".raf",
        ".raw",
        ".rw2",
        ".rwl",
        ".sr2",
        ".srf",
        ".srw",
        ".x3f",
    }
)
# Images ramtag cannot decode but which still own sidecars.
OTHER_IMAGE_EXTENSIONS = frozenset({".jxl", ".jp2", ".psd"})
# Every image extension, decodable here or not.
IMAGE_EXTENSIONS = (
    BASE_EXTENSIONS | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS | OTHER_IMAGE_EXTENSIONS
)
# ramtag's own outputs: sidecars and JSON Lines, never images.
OUTPUT_EXTENSIONS = frozenset({".xmp", ".json", ".jsonl"})


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _pillow_heif_reads_avif() -> bool:
    try:
        import pillow_heif
    except Exception:  # a broken optional plugin must not break discovery
        return False
    return hasattr(pillow_heif, "register_avif_opener")


def raw_decoding_available() -> bool:
    """True when RAW files can be decoded: rawpy (libraw) is installed (:mod:`ramtag.raw`)."""
    return _module_available("rawpy")


@lru_cache(maxsize=1)
def supported_extensions() -> frozenset[str]:
    """Lower-case image extensions, with the dot, that this installation can decode."""
    extensions = set(BASE_EXTENSIONS)
    heif = _module_available("pillow_heif")
    if heif:
        extensions |= HEIF_EXTENSIONS
    try:
        from PIL import features

        avif = bool(features.check("avif"))
    except (ImportError, ValueError):
        avif = False
    if avif or (heif and _pillow_heif_reads_avif()):
        extensions |= AVIF_EXTENSIONS
    if raw_decoding_available():
        extensions |= RAW_EXTENSIONS
    return frozenset(extensions)


def extension(path: str | Path) -> str:
    """The lower-case extension of ``path`` with the dot ("" when none)."""
    return os.path.splitext(str(path))[1].lower()


def is_image_name(path: str | Path) -> bool:
    """True when ``path``'s extension is one this installation decodes (case-insensitive)."""
    return extension(path) in supported_extensions()


def unsupported_reason(path: str | Path) -> str:
    """One line saying why ``path`` is not taken as an image, naming the fix where there is one."""
    suffix = extension(path)
    if suffix in OUTPUT_EXTENSIONS:
        return "a sidecar or ramtag output (.xmp/.json/.jsonl), not an image"
    if suffix in HEIF_EXTENSIONS:
        return "HEIC/HEIF needs pillow-heif; install it with: pip install 'ramtag[heif]'"
    if suffix in AVIF_EXTENSIONS:
        return "AVIF needs a Pillow with AVIF support (pip install -U pillow) or pillow-heif"
    if suffix in RAW_EXTENSIONS:
        return "camera RAW files need rawpy (libraw); install it with: pip install rawpy"
    return (
        "not an image file extension (supported: "
        + ", ".join(sorted(e.lstrip(".") for e in supported_extensions()))
        + ")"
    )


def suffix_list(counts: dict[str, int], limit: int = 5) -> str:
    """``{".txt": 3, "": 1}`` -> ``".txt, no extension"``: the commonest suffixes first (for messages)."""
    names = sorted(counts, key=lambda k: (-counts[k], k))
    shown = [k or "no extension" for k in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")
