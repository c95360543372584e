"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``), for ``--decode gpu``.

Decoding 12-megapixel JPEGs is the bottleneck of a GPU run: the CPU path (:mod:`ramtag.decode`, Pillow)
needs far more cores than a GPU host has. Here the CPU only reads each file's bytes and its header
(:func:`read_encoded`: format, size, colour mode, EXIF orientation; Pillow parses the header without
decoding); :class:`GpuDecoder` then decodes a whole batch with one batched nvJPEG call, turns each image
upright, resizes it with antialiasing and normalises it, all on the device.

Anything nvJPEG is not given, or fails on, takes the CPU path of :mod:`ramtag.decode` for that image
alone, with the same per-image result (tensor or one-line error):

- not a JPEG (PNG, HEIC, TIFF, ...), CMYK/YCCK JPEGs, JPEGs without their end-of-image marker
  (truncated), images over Pillow's decompression-bomb limit, in-memory ``PIL.Image`` items: never
  sent to nvJPEG;
- a batch nvJPEG refuses (it returns no partial results) is retried image by image; an image that
  still fails (corrupt, truncated, an odd JPEG) is decoded by Pillow, which gives the error line.

Pixels differ slightly from the Pillow path, so scores are close, not equal: nvJPEG's IDCT and chroma
upsampling differ from libjpeg-turbo's by a few levels, and the resize runs on float pixels (torch's
antialiased bilinear is Pillow's filter, but Pillow rounds to uint8 between its horizontal and
vertical passes). The result is rounded to uint8 like Pillow's. Measured differences are in the README.

The same code runs with ``device="cpu"`` (torchvision's CPU ``decode_jpeg`` has the same API), which
is how it is tested without a GPU.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .errors import UsageError

log = logging.getLogger(__name__)

DECODES = ("auto", "cpu", "gpu")

# Pillow's JPEG header fields that nvJPEG can decode: 8-bit baseline / extended / progressive Huffman
# JPEGs in RGB (YCbCr) or greyscale. Everything else goes to Pillow.
_NVJPEG_MODES = frozenset({"RGB", "L"})
_NVJPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: the first picture is an ordinary JPEG

_CHUNK = 16  # images resized at once (bounds the float32 full-size copy: 16 x 144 MB at 12 MP)
_INTERPOLATIONS = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling value -> torch mode


@dataclass
class Encoded:
    """One JPEG file's bytes, for nvJPEG, and what the CPU learnt from its header."""

    data: Tensor  # (n,) uint8, the file's bytes (CPU)
    orientation: int  # EXIF Orientation 1..8 to apply after decoding (1: as stored)
    size: tuple[int, int]  # (W, H) as stored
    stat: os.stat_result | None = None  # os.fstat of the descriptor the bytes were read from


# One raw sample (what the CPU workers produce): an Encoded JPEG for the GPU, or the CPU path's
# (3, S, S) float32 tensor, or None with an error line; plus the item's index and the file's stat as
# decoded (the CPU path's; an Encoded carries its own).
RawSample = tuple[Union[Encoded, Tensor, None], int, Union[str, None], Union[os.stat_result, None]]  # noqa: UP007


def _quiet_torchvision_io() -> Any:
    """``torchvision.io`` without its deprecation warning (torchvision 0.29 points to torchcodec)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        import torchvision.io as tvio
    return tvio


def read_encoded(path: str | Path, *, exif_orientation: bool = True) -> Encoded | None:
    """The bytes and header of ``path`` when nvJPEG should decode it; None when the CPU path should.

    Cheap: Pillow reads the header only (no pixel is decoded). Any problem (unreadable file, not a JPEG,
    CMYK, unsupported coding, over the decompression-bomb limit) returns None: the CPU path then
    decodes the file or reports the problem with its usual one-line error.
    """
    try:
        with open(path, "rb", opener=_nonblocking) as f:  # one open: the stat is of the bytes read
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                return None
            os.set_blocking(f.fileno(), True)
            data = f.read()
        if data.rstrip(b"\0")[-2:] != b"\xff\xd9":  # no end-of-image marker: truncated, let the CPU
            return None  # path refuse it (libjpeg and nvJPEG would fill the rest with grey)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            if img.format not in _NVJPEG_FORMATS or img.mode not in _NVJPEG_MODES:
                return None
            if Image.MAX_IMAGE_PIXELS is not None and img.width * img.height > Image.MAX_IMAGE_PIXELS:
                return None
            layers = getattr(img, "layers", None)
            if layers not in (None, 1, 3):
                return None
            orientation = 1
            if exif_orientation:
                try:
                    value = img.getexif().get(0x0112, 1)
                    orientation = int(value) if int(value) in range(1, 9) else 1
                except Exception:  # malformed EXIF: keep the pixels as stored (as decode.py does)
                    orientation = 1
            size = (img.width, img.height)
    except Exception:
        return None
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (n,)
    return Encoded(data=buf, orientation=orientation, size=size, stat=st)


def _nonblocking(path: str, flags: int) -> int:
    """``open``'s opener: a named pipe must not block the open (it is refused after the fstat)."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def orient(image: Tensor, orientation: int) -> Tensor:
    """(..., H, W) -> the image turned upright for EXIF ``orientation`` (as ``ImageOps.exif_transpose``)."""
    if orientation == 2:  # mirrored left-right
        return image.flip(-1)
    if orientation == 3:  # rotated 180
        return image.flip(-1).flip(-2)
    if orientation == 4:  # mirrored top-bottom
        return image.flip(-2)
    if orientation == 5:  # transposed
        return image.transpose(-1, -2)
    if orientation == 6:  # stored rotated 90 counter-clockwise: turn 90 clockwise
        return torch.rot90(image, k=-1, dims=(-2, -1))
    if orientation == 7:  # transverse
        return torch.rot90(image, k=2, dims=(-2, -1)).transpose(-1, -2)
    if orientation == 8:  # stored rotated 90 clockwise: turn 90 counter-clockwise
        return torch.rot90(image, k=1, dims=(-2, -1))
    return image


@lru_cache(maxsize=8)
def nvjpeg_available(device: str) -> bool:
    """True when torchvision can decode a JPEG on ``device`` (a CUDA device with nvJPEG built in)."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        tvio = _quiet_torchvision_io()
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 100, 50)).save(buf, format="JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        out = tvio.decode_jpeg([data], mode=tvio.ImageReadMode.UNCHANGED, device=dev)
        return bool(out[0].shape == (3, 16, 16))
    except Exception as err:
        log.info("nvJPEG decoding is not available on %s (%s); decoding on the CPU", device, err)
        return False


def resolve_decode(decode: str, device: torch.device | str) -> str:
    """``"auto"`` / ``"cpu"`` / ``"gpu"`` -> the decode path to use (``"cpu"`` or ``"gpu"``) on ``device``.

    ``auto`` is ``gpu`` on a CUDA device where torchvision's nvJPEG works, else ``cpu``. ``gpu`` where
    it cannot run is a :class:`UsageError` naming the fix.
    """
    key = decode.strip().lower()
    if key not in DECODES:
        raise UsageError(f"--decode {decode!r} is unknown; use one of: {', '.join(DECODES)}")
    dev = torch.device(device)
    if key == "cpu":
        return "cpu"
    available = nvjpeg_available(str(dev))
    if key == "gpu" and not available:
        raise UsageError(
            f"--decode gpu: JPEG decoding on the GPU needs a CUDA device and torchvision with nvJPEG "
            f"(device is {dev}); use --decode cpu"
        )
    return "gpu" if available else "cpu"


class GpuDecoder:
    """A batch of :class:`Encoded` JPEGs -> ``(3, S, S)`` float32 normalised tensors on ``device``.

    Args:
        device: where nvJPEG decodes and the resize runs (``"cpu"`` runs torchvision's CPU decoder, for
            tests).
        size: (S, S) output size (squash: aspect ratio not kept, as the official transform).
        mean, std: per-channel normalisation, RGB order, on [0, 1] pixels.
        interpolation: ``"bilinear"`` (official), ``"bicubic"`` or ``"nearest"``.
    """

    def __init__(
        self,
        device: torch.device | str,
        size: tuple[int, int],
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
        interpolation: str = "bilinear",
    ) -> None:
        if interpolation not in _INTERPOLATIONS.values():
            raise UsageError(
                f"--decode gpu: interpolation {interpolation!r} is not supported; use --decode cpu"
            )
        self.device = torch.device(device)
        self.size = (int(size[0]), int(size[1]))
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1).to(self.device)
        self.interpolation = interpolation

    @classmethod
    def from_transform(cls, transform: Any, device: torch.device | str) -> GpuDecoder:
        """The decoder matching a :class:`ramtag.preprocess.Transform` (its size, filter, mean and std)."""
        try:
            size, resample = transform.size, int(transform.resample)
            mean, std = transform.mean.flatten(), transform.std.flatten()
        except AttributeError:
            raise UsageError(
                "--decode gpu needs the weights' own transform (ramtag.preprocess.Transform); "
                "use --decode cpu"
            ) from None
        if resample not in _INTERPOLATIONS:
            raise UsageError(f"--decode gpu: resampling filter {resample} is not supported; use --decode cpu")
        return cls(device, size, mean, std, _INTERPOLATIONS[resample])

    def decode(self, encoded: Sequence[Encoded]) -> list[Tensor | None]:
        """Decode and preprocess; one ``(3, S, S)`` float32 tensor on the device per input, or None where
        nvJPEG failed on that image (the caller decodes it on the CPU)."""
        if not encoded:
            return []
        decoded: list[Tensor | None]
        try:
            decoded = list(self._decode_jpeg([e.data for e in encoded]))
        except Exception as err:  # nvJPEG returns nothing when one image fails: retry one by one
            log.debug("batched JPEG decode failed (%s); decoding image by image", err)
            decoded = []
            for e in encoded:
                try:
                    decoded.append(self._decode_jpeg([e.data])[0])
                except Exception as one:
                    log.debug("JPEG decode on %s failed (%s); using the CPU path", self.device, one)
                    decoded.append(None)
        out: list[Tensor | None] = [None] * len(encoded)
        # Upright images of one shape are resized together (a camera's photos all share one shape).
        groups: dict[tuple[int, ...], list[int]] = {}
        upright: list[Tensor | None] = []
        for i, (e, img) in enumerate(zip(encoded, decoded, strict=True)):
            if img is None or img.ndim != 3 or img.shape[0] not in (1, 3):
                upright.append(None)
                continue
            img = orient(img if img.shape[0] == 3 else img.expand(3, -1, -1), e.orientation)  # (3, H, W)
            upright.append(img)
            groups.setdefault(tuple(img.shape), []).append(i)
        for rows in groups.values():
            # in chunks: a float copy of 12-megapixel images is 144 MB each
            for c in range(0, len(rows), _CHUNK):
                chunk = rows[c : c + _CHUNK]
                stack = torch.stack([upright[i] for i in chunk])  # type: ignore[misc]  # (n, 3, H, W) uint8
                for i, x in zip(chunk, self.preprocess(stack), strict=True):
                    out[i] = x
                    upright[i] = None  # free the full-size pixels as we go
        return out

    def _decode_jpeg(self, data: list[Tensor]) -> list[Tensor]:
        # UNCHANGED (not RGB): every torchvision version decodes it on the GPU; only RGB and greyscale
        # JPEGs get here, and greyscale's one channel is repeated below (as Pillow's L -> RGB).
        tvio = _quiet_torchvision_io()
        with warnings.catch_warnings():  # torchvision 0.29 warns on every call (its codecs are deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(tvio.decode_jpeg(data, mode=tvio.ImageReadMode.UNCHANGED, device=self.device))

    def preprocess(self, pixels: Tensor) -> Tensor:
        """(n, 3, H, W) uint8 upright pixels -> (n, 3, S, S) float32, resized (antialiased) and normalised."""
        x = pixels.to(self.device, torch.float32)  # (n, 3, H, W) in 0..255
        if tuple(x.shape[-2:]) != (self.size[1], self.size[0]):
            if self.interpolation == "nearest":
                x = F.interpolate(x, size=(self.size[1], self.size[0]), mode="nearest")
            else:
                x = F.interpolate(
                    x,
                    size=(self.size[1], self.size[0]),
                    mode=self.interpolation,
                    antialias=True,
                    align_corners=False,
                )
            x = x.round_().clamp_(0, 255)  # uint8 values, as Pillow's resize returns
        return x.div_(255.0).sub_(self.mean).div_(self.std)  # (n, 3, S, S)


def decode_raw(
    samples: Sequence[RawSample],
    decoder: GpuDecoder,
    cpu_fallback: Callable[[int], tuple[Tensor | None, str | None, os.stat_result | None]],
) -> list[tuple[Tensor | None, int, str | None, os.stat_result | None]]:
    """Raw samples of one batch -> ``(image on the decoder's device or None, index, error, the file's
    stat as decoded)`` in input order.

    ``cpu_fallback(index)`` runs the CPU path for an item nvJPEG failed on: ``(tensor, None, stat)`` or
    ``(None, error line, None)`` (it reads the file again, so the stat is of that read).
    """
    jpegs = [(pos, s[0]) for pos, s in enumerate(samples) if isinstance(s[0], Encoded)]
    images = decoder.decode([e for _, e in jpegs])
    result: list[tuple[Tensor | None, int, str | None, os.stat_result | None]] = []
    gpu = {pos: img for (pos, _), img in zip(jpegs, images, strict=True)}
    for pos, (thing, index, error, st) in enumerate(samples):
        if pos in gpu:
            image = gpu[pos]
            st = thing.stat if isinstance(thing, Encoded) else None
            if image is None:
                image, error, st = cpu_fallback(index)
        else:
            image = thing if isinstance(thing, Tensor) else None
        if image is not None:
            image = image.to(decoder.device, non_blocking=True)
        result.append((image, index, error, st))
    return result


__all__ = [
    "DECODES",
    "Encoded",
    "GpuDecoder",
    "decode_raw",
    "nvjpeg_available",
    "orient",
    "read_encoded",
    "resolve_decode",
]
