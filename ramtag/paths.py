"""Where ramtag keeps its files: one cache root (platformdirs), overridable with RAMTAG_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def ramtag_home() -> Path:
    """The cache root: ``$RAMTAG_HOME`` if set, else the platform's user cache dir for ramtag."""
    env = os.environ.get("RAMTAG_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("ramtag"))


def weights_dir() -> Path:
    """Converted weights in ramtag's format: ``<home>/weights/<name>/``."""
    return ramtag_home() / "weights"


def downloads_dir() -> Path:
    """Raw downloads (Hugging Face cache layout and checksummed URL files)."""
    return ramtag_home() / "downloads"


def text_cache_dir() -> Path:
    """LLM descriptions and CLIP text embeddings (open-set tags)."""
    return ramtag_home() / "text"


def offline() -> bool:
    """True when downloads are disabled (HF_HUB_OFFLINE=1 or RAMTAG_OFFLINE=1)."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "RAMTAG_OFFLINE")
    )
