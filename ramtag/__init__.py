"""ramtag: auto-tag photo libraries with RAM++ (Recognize Anything Plus).

Quick start::

    import ramtag
    tagger = ramtag.load_tagger()          # default weights, downloaded on first use
    for result in tagger.tag(["photo.jpg"]):
        print(result.path, result.tag_names())

Importing ramtag is cheap: torch and the model load only when a tagger is created. Training and
benchmark code (``ramtag.training``, ``ramtag.bench``) is never imported from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import RamtagError
from .results import ImageTags, TagScore

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import OpenSetOptions, Tagger, TagOptions, WriteOptions, load_tagger, tag_library
    from .catalog import open_catalog
    from .device import tune_cpu_allocator
    from .weights import list_weights

_LAZY = {
    "load_tagger": "api",
    "Tagger": "api",
    "TagOptions": "api",
    "WriteOptions": "api",
    "OpenSetOptions": "api",
    "tag_library": "api",
    "list_weights": "weights",
    "tune_cpu_allocator": "device",
    "open_catalog": "catalog",
}

__all__ = [
    "ImageTags",
    "OpenSetOptions",
    "RamtagError",
    "TagOptions",
    "TagScore",
    "Tagger",
    "WriteOptions",
    "__version__",
    "list_weights",
    "load_tagger",
    "open_catalog",
    "tag_library",
    "tune_cpu_allocator",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'ramtag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
