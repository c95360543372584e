"""nn.Modules only (segment-anything style). The user API lives in ``ramtag.api``."""

from .config import CONFIGS, DecoderConfig, RamPlusConfig, SwinConfig, get_config

__all__ = ["CONFIGS", "DecoderConfig", "RamPlusConfig", "SwinConfig", "get_config"]
