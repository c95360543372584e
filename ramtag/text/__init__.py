"""Open-set tags: LLM descriptions, CLIP text embeddings and their caches.

Importing this package is light (no torch, no open_clip); ``build_open_set``/``combine`` import torch
and ``ClipTextEncoder`` imports open_clip only when used.
"""

from __future__ import annotations

from .describe import dump_descriptions, generate_descriptions, load_descriptions
from .llm import LLMClient, LLMSettings
from .openset import OpenSet, OpenSetTag, build_open_set, combine, describe_tags, parse_open_set

__all__ = [
    "LLMClient",
    "LLMSettings",
    "OpenSet",
    "OpenSetTag",
    "build_open_set",
    "combine",
    "describe_tags",
    "dump_descriptions",
    "generate_descriptions",
    "load_descriptions",
    "parse_open_set",
]
