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


def make_transform(pre: Preprocessing) -> Callable[[Image.Image], Tensor]:
    """A function RGB ``PIL.Image`` -> float32 (3, S, S) tensor, normalised with ``pre.mean`` / ``pre.std``.

    Images that are not RGB are converted with ``Image.convert('RGB')`` first (as the official code does
    right after opening); EXIF orientation, 16-bit and alpha handling belong to :mod:`ramtag.decode`.
    """
    if pre.resize != "squash":
        raise WeightsError(f"preprocessing resize={pre.resize!r} is not supported (only 'squash'); "
                           "re-import the weights with `ramtag weights import`")
    try:
        resample = _FILTERS[pre.interpolation]
    except KeyError:
        raise WeightsError(f"preprocessing interpolation={pre.interpolation!r} is not supported "
                           f"(choose {', '.join(_FILTERS)}); "
                           "re-import the weights with `ramtag weights import`") from None
    size = (pre.image_size, pre.image_size)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)

    def transform(image: Image.Image) -> Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != size:
            image = image.resize(size, resample)  # squash to S x S, uint8 result (Pillow antialiases)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (S, S, 3) uint8
        x = pixels.permute(2, 0, 1).float().div_(255.0)  # (3, S, S) in [0, 1], like ToTensor
        return x.sub_(mean).div_(std)  # (3, S, S) float32, like Normalize

    return transform
