"""Swin checkpoint surgery: fit a state dict trained at one image size / window to another (pure functions).

The counterpart of timm's ``checkpoint_filter_fn``, kept next to the model: a Swin's only size-dependent
parameters are the relative-position bias tables, ``((2w-1)^2, heads)`` for window ``w``; everything else
(patch embedding, attention, MLPs, norms) is independent of the image size. Used when training at a new
``--image-size`` / ``--window-size`` and when starting a backbone from timm's ImageNet weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

REL_POS_TABLE = "relative_position_bias_table"


def resize_rel_pos_table(table: Tensor, window: int) -> Tensor:
    """((2w-1)^2, heads) relative position bias table -> ((2*window-1)^2, heads).

    Bicubic interpolation of the table as a (heads, 2w-1, 2w-1) image, as the official loader does.
    Returns ``table`` itself when it already fits."""
    rows, heads = table.shape
    old = math.isqrt(rows)
    new = 2 * window - 1
    if old == new:
        return table
    grid = table.t().reshape(1, heads, old, old).float()  # (1, heads, 2w-1, 2w-1)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(heads, new * new).t().to(table.dtype).contiguous()  # ((2*window-1)^2, heads)


def window_of_table(rows: int) -> int:
    """The window ``w`` of a relative position table with ``rows == (2w-1)^2`` rows."""
    return (math.isqrt(rows) + 1) // 2


def resize_rel_pos_tables(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """A copy of ``state_dict`` whose relative position tables have ``expected``'s shapes.

    ``expected`` is the target model's ``state_dict()`` (same key names); tables it does not hold, and
    every other tensor, are passed through unchanged."""
    out = dict(state_dict)
    for key, value in state_dict.items():
        if key.endswith(REL_POS_TABLE) and key in expected and value.shape != expected[key].shape:
            out[key] = resize_rel_pos_table(value, window_of_table(expected[key].shape[0]))
    return out


def timm_backbone_state_dict(
    source: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """timm Swin weights (``timm.create_model(name).state_dict()``) -> our ``SwinBackbone``'s tensors.

    ``expected`` is the backbone's ``state_dict()``. The classifier head is dropped and the position
    tables resized to the backbone's windows. Returns ``(state_dict, mismatched, missing)``: keys whose
    shapes still differ (a different Swin size) and backbone keys the source lacks; both empty when the
    result loads."""
    sd = {k: v for k, v in source.items() if not k.startswith("head")}
    sd = resize_rel_pos_tables(sd, expected)
    mismatched = [k for k, v in sd.items() if k in expected and v.shape != expected[k].shape]
    missing = [k for k in expected if k not in sd]
    return sd, mismatched, missing
