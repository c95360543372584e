"""nn.Modules only (segment-anything style). The user API lives in ``ramtag.api``.

The config names are light to import; ``RamPlus`` and the converters import torch/timm on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import CONFIGS, DecoderConfig, RamPlusConfig, SwinConfig, get_config

if TYPE_CHECKING:
    from .backbone import SwinBackbone
    from .convert import (
        convert_official_state_dict,
        infer_official_config,
        load_state_dict_strict,
        read_official_checkpoint,
    )
    from .decoder import TagDecoder
    from .ram_plus import RamPlus

_LAZY = {
    "RamPlus": "ram_plus",
    "SwinBackbone": "backbone",
    "TagDecoder": "decoder",
    "convert_official_state_dict": "convert",
    "infer_official_config": "convert",
    "load_state_dict_strict": "convert",
    "read_official_checkpoint": "convert",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONFIGS",
    "DecoderConfig",
    "RamPlus",
    "RamPlusConfig",
    "SwinBackbone",
    "SwinConfig",
    "TagDecoder",
    "convert_official_state_dict",
    "get_config",
    "infer_official_config",
    "load_state_dict_strict",
    "read_official_checkpoint",
]
