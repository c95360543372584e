"""What a tagging run is asked to do: the option dataclasses and the precision names, each said once.

Plain data, no torch: the CLI builds these from flags, ``load_tagger`` / ``tag_library`` take them.
The write-mode names live with the writers (``ramtag.writers.WRITE_MODES``), the one place that
knows how to make each writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DECODES",
    "DEVICES",
    "EXACT_PRECISIONS",
    "LANGS",
    "PRECISIONS",
    "SIDECAR_NAMES",
    "ModelOptions",
    "OpenSetOptions",
    "TagOptions",
    "WriteOptions",
]

# --precision for tagging (ramtag.precision says what each means); "auto" picks one per device.
PRECISIONS = ("auto", "fp32", "bf16", "bf16-checked", "fp16")
# Precisions whose tag decisions are the fp32 decisions (they share incremental-state records).
EXACT_PRECISIONS = ("fp32", "bf16-checked")
DEVICES = ("auto", "cuda", "mps", "cpu")  # --device; ramtag.device.select_device also takes "cuda:N"
LANGS = ("en", "zh")  # --lang: the tag names to write
DECODES = ("auto", "gpu", "cpu")  # --decode: JPEG decoding
SIDECAR_NAMES = ("ext", "replace")  # --sidecar-name: photo.jpg.xmp | photo.xmp


@dataclass
class ModelOptions:
    """Which model runs, where and how (``load_tagger`` / ``tagger_source``'s arguments)."""

    weights: str | None = None  # registry name or weights folder; None: the default weights
    device: str = "auto"  # one of DEVICES (or "cuda:N")
    precision: str = "auto"  # one of PRECISIONS
    compile: bool = False  # torch.compile the model


@dataclass
class OpenSetOptions:
    """Open-set tags to add to (or use instead of) the built-in vocabulary."""

    tags: str | None = None  # comma-separated, e.g. "corgi,meteor shower=0.6"
    tags_file: Path | None = None  # one tag per line, '#' comments, optional '=threshold'
    only_open_set: bool = False  # score only the open-set tags
    threshold: float = 0.5  # default threshold for open-set tags (the official choice)
    descriptions: Path | None = None  # official-format descriptions JSON instead of asking an LLM
    clip: Path | None = None  # local CLIP ViT-B/16 in OpenAI state-dict format
    llm_base_url: str | None = None  # OpenAI-compatible server, e.g. http://localhost:11434/v1
    llm_model: str | None = None  # model name on that server
    llm_api_key: str | None = None  # API key (never logged or cached)
    require_llm: bool = False  # error instead of falling back to CLIP prompt templates

    @property
    def requested(self) -> bool:
        """True when any open-set tag is asked for (a descriptions file alone asks for all its tags)."""
        return bool(self.tags or self.tags_file or self.descriptions)


@dataclass
class TagOptions:
    """How to decide and which inputs to take."""

    threshold: float | None = None  # replaces every built-in tag's threshold
    top_k: int | None = None  # at most this many tags per image
    all_scores: bool = False  # also report every tag's score
    lang: str = "en"  # "en" or "zh": the tag names to write
    # vocabulary tag -> name to write instead, whatever lang is; "" never writes it (ramtag.tags.rename)
    rename: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None  # None: sized by the runner for the device
    workers: int | None = None  # decode processes; None: 0 on CPU (decoder threads), else min(4, CPUs)
    exif_orientation: bool = True  # rotate by EXIF orientation before tagging (official code does not)
    recursive: bool = True  # walk folders recursively
    include_hidden: bool = False  # also take dot-files and dot-folders
    draft: bool = False  # JPEG draft-mode decoding (faster, not bit-exact)
    decode: str = "auto"  # JPEG decoding: "gpu" (nvJPEG), "cpu" (Pillow), "auto" (gpu on CUDA when available)


@dataclass
class WriteOptions:
    """Where the tags go (see ``ramtag.writers``)."""

    mode: str = "xmp"  # one of ramtag.writers.WRITE_MODES: xmp | embed | json | none
    json_path: Path | None = None  # JSON Lines file (also written next to other modes when given)
    sidecar_name: str = "ext"  # ext (photo.jpg.xmp) | replace (photo.xmp)
    hierarchy_root: str = "ramtag"  # parent of lr:hierarchicalSubject / digiKam:TagsList; "" for flat
    dry_run: bool = False  # show what would be written, write nothing
    backup: bool = True  # embed mode: keep exiftool's *_original backup
    repair_sidecars: bool = False  # replace invalid sidecars, keeping them as *.bak
