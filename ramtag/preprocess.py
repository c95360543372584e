"""PIL image -> normalised float tensor, exactly the official RAM++ transform.

The official ``get_transform(384)`` is torchvision ``Resize((384, 384))`` on a PIL image (Pillow's
antialiased bilinear filter on the uint8 pixels, aspect ratio NOT kept) -> ``ToTensor()`` (uint8 / 255,
CHW) -> ``Normalize(mean, std)``. :func:`make_transform` does the same with Pillow and torch and is
bit-identical to it (tested). All parameters come from the weights' :class:`Preprocessing`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import WeightsError
from .weights_format import Preprocessing

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class Transform:
    """RGB ``PIL.Image`` -> float32 (3, S, S) tensor, normalised with ``pre.mean`` / ``pre.std``.

    A module-level class (not a closure) so DataLoader workers started with ``spawn`` (macOS, Windows)
    can pickle it. Images that are not RGB are converted with ``Image.convert('RGB')`` first (as the
    official code does right after opening); EXIF orientation, 16-bit and alpha handling belong to
    :mod:`ramtag.decode`.
    """

    def __init__(self, pre: Preprocessing) -> None:
        if pre.resize != "squash":
            raise WeightsError(
                f"preprocessing resize={pre.resize!r} is not supported (only 'squash'); "
                "re-import the weights with `ramtag weights import`"
            )
        if pre.interpolation not in _FILTERS:
            raise WeightsError(
                f"preprocessing interpolation={pre.interpolation!r} is not supported "
                f"(choose {', '.join(_FILTERS)}); "
                "re-import the weights with `ramtag weights import`"
            )
        self.resample = _FILTERS[pre.interpolation]
        self.size = (pre.image_size, pre.image_size)
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != self.size:
            image = image.resize(
                self.size, self.resample
            )  # squash to S x S, uint8 result (Pillow antialiases)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (S, S, 3) uint8
        x = pixels.permute(2, 0, 1).float().div_(255.0)  # (3, S, S) in [0, 1], like ToTensor
        return x.sub_(self.mean).div_(self.std)  # (3, S, S) float32, like Normalize


def make_transform(pre: Preprocessing) -> Callable[[Image.Image], Tensor]:
    """The weights' transform: RGB ``PIL.Image`` -> float32 (3, S, S) (see :class:`Transform`)."""
    return Transform(pre)
