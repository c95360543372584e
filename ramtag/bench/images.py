"""Benchmark inputs: generated photo-like JPEGs, and the decode options compared with exact decoding."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def generate_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Write ``n`` photo-like JPEGs of ``size`` (W, H): smooth colour fields + edges + sensor noise,
    quality 90 with 4:2:0 chroma (a camera's usual output, a few MB at 12 MP)."""
    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(6 + i % 5, 8 + i % 7, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        detail = rng.integers(0, 256, size=(max(h // 64, 2), max(w // 64, 2), 3), dtype=np.uint8)
        edges = Image.fromarray(detail).resize((w, h), Image.Resampling.NEAREST)
        img = Image.blend(img, edges, 0.25)
        pixels = np.asarray(img, dtype=np.int16)
        pixels = pixels + rng.normal(0, 4, size=pixels.shape).astype(np.int16)
        path = folder / f"bench_{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90, subsampling=2)
        paths.append(path)
    return paths


def torchvision_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Path], Tensor]:
    """JPEG bytes -> libjpeg-turbo via torchvision.io.decode_jpeg -> antialiased bilinear resize -> normalise.

    (No EXIF orientation: decode_jpeg ignores it; fine for the generated images.)"""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs (in favour of torchcodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)

    def load(path: Path) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        img = TF.resize(img, [image_size, image_size], antialias=True)  # bilinear, squash
        return (img.float() / 255.0 - m) / s  # (3, S, S) float32

    return load


def time_decode(paths: Sequence[Path], load: Callable[[Path], Tensor]) -> tuple[Tensor, float]:
    """((n, 3, S, S) images, seconds per image) of ``load`` over ``paths``."""
    t0 = time.perf_counter()
    out = torch.stack([load(p) for p in paths])
    return out, (time.perf_counter() - t0) / len(paths)
