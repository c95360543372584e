"""``ramtag bench``: how fast ramtag tags, measured side by side with an official-style loop.

One run, on the same images, with a model of random weights of the chosen architecture:

1. **end to end**: ramtag's real pipeline (``library.tag_library``: decode workers -> batched
   ``Runner`` -> decide -> XMP writer thread) over copies of the images in a temp folder;
2. **stages**, each timed on its own: decode + resize (exact Pillow, JPEG draft mode, and
   ``torchvision.io.decode_jpeg``), backbone (``Runner.encode``), re-weighting + decoder
   (``Runner.decode``), XMP writing;
3. **reference**: the same images through a loop written the way the official inference script
   works (:mod:`ramtag.bench.reference`).

The report carries the ratio (end-to-end images/s over reference images/s), whether the tag
decisions agree, the decode options' speed and score drift, peak memory, machine info; it is saved
as JSON. Only public API is used (``Tagger``, ``Runner``, ``tag_library``); nothing here is imported
by ``import ramtag``.
"""

from __future__ import annotations

from .images import generate_jpegs
from .machine import machine_info
from .reference import reference_logits
from .report import format_report
from .run import DRAFT_TOLERANCE, BenchOptions, run_benchmark

__all__ = [
    "DRAFT_TOLERANCE",
    "BenchOptions",
    "format_report",
    "generate_jpegs",
    "machine_info",
    "reference_logits",
    "run_benchmark",
]
