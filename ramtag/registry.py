"""The weights registry (timm style): one entry per downloadable set of weights.

An entry says where every file comes from (repository, revision, file name, size, sha256), which
architecture the checkpoint is, how images are preprocessed for it and under which licence it is
published. ``ramtag.hub`` downloads the files, ``ramtag.weights`` converts them once into ramtag's own
format (see ``weights/README.md``).

This module is data only: importing it downloads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownWeightsError
from .weights_format import OFFICIAL_PREPROCESSING, Preprocessing


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face Hub model repository."""

    repo_id: str  # "owner/name" of the model repository
    filename: str  # path of the file inside the repository
    revision: str  # branch, tag or commit hash; a 40-hex commit hash makes cached look-ups request-free
    size: int | None  # exact size in bytes when known (always checked after a download)
    sha256: str | None  # hex digest when known; else the sha256 the Hub reports for the LFS object is checked


@dataclass(frozen=True)
class UrlFile:
    """One file at a plain HTTPS URL, pinned by its sha256."""

    url: str  # the canonical URL (raw.githubusercontent.com URLs follow $RAMTAG_GITHUB_RAW, see ramtag.hub)
    sha256: str  # hex digest of the exact bytes; a download with another digest is rejected
    filename: str  # the file's name once downloaded


@dataclass(frozen=True)
class WeightsSpec:
    """A downloadable RAM++ checkpoint with the vocabulary files that belong to it."""

    name: str  # the registry key, also the folder name under paths.weights_dir()
    arch: str  # key of ramtag.model.config.CONFIGS the checkpoint must match
    checkpoint: HubFile  # the official-format .pth checkpoint
    tag_list: UrlFile  # English tag names, one per line, model output order
    tag_list_zh: UrlFile | None  # Chinese tag names, line for line, or None
    thresholds: UrlFile  # per-tag thresholds, one float per line
    preprocessing: Preprocessing  # how images are resized and normalised for this checkpoint
    license: str  # SPDX identifier of the weights' licence
    description: str  # one line for `ramtag weights list`
    paper: str  # citation URL


GITHUB_RAW = "https://raw.githubusercontent.com"  # overridden at download time by $RAMTAG_GITHUB_RAW

# The official recognize-anything repository, pinned: the tag files below are checked by sha256.
_RAM_REPO = "xinyu1205/recognize-anything"
_RAM_COMMIT = "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"


def _ram_data_file(filename: str, sha256: str) -> UrlFile:
    url = f"{GITHUB_RAW}/{_RAM_REPO}/{_RAM_COMMIT}/ram/data/{filename}"
    return UrlFile(url=url, sha256=sha256, filename=filename)


RAM_TAG_LIST = _ram_data_file(
    "ram_tag_list.txt", "5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b"
)
RAM_TAG_LIST_ZH = _ram_data_file(
    "ram_tag_list_chinese.txt", "c912657a0f30be7b2f5df6ccffa17e1d84561d0bea508528e38b6d0d711bcfbe"
)
RAM_THRESHOLDS = _ram_data_file(
    "ram_tag_list_threshold.txt", "b6f81d0de1bc7f9c251af512c413eae976c77dbfbadf700d4e3d90510f4c6447"
)

DEFAULT_WEIGHTS = "ram-plus-swin-l-14m"

WEIGHTS: dict[str, WeightsSpec] = {
    # The published RAM++ (Swin-L, 384 px, 4,585 tags, trained on 14M images).
    DEFAULT_WEIGHTS: WeightsSpec(
        name=DEFAULT_WEIGHTS,
        arch="swin_l_384",
        checkpoint=HubFile(
            repo_id="xinyu1205/recognize-anything-plus-model",
            filename="ram_plus_swin_large_14m.pth",
            revision="main",
            size=3_010_210_801,
            sha256=None,  # not published; the Hub's LFS sha256 is verified and recorded in the provenance
        ),
        tag_list=RAM_TAG_LIST,
        tag_list_zh=RAM_TAG_LIST_ZH,
        thresholds=RAM_THRESHOLDS,
        preprocessing=OFFICIAL_PREPROCESSING,
        license="Apache-2.0",
        description="RAM++ Swin-L 384 px, 4,585 tags (official release, 14M training images)",
        paper="https://arxiv.org/abs/2310.15200",
    ),
}


@dataclass(frozen=True)
class TextEncoderSpec:
    """A downloadable CLIP text encoder for open-set tags (label embeddings of tag descriptions)."""

    name: str  # the registry key (`ramtag weights download NAME`)
    file: HubFile  # the weights file, in OpenAI's state-dict key layout
    approx_bytes: int  # rough download size for messages before the download (the exact size is the Hub's)
    license: str  # SPDX identifier of the weights' licence
    description: str  # one line for `ramtag weights list`
    paper: str  # citation URL


# CLIP text encoders for open-set tags (label embeddings of LLM descriptions), in open_clip's format.
DEFAULT_TEXT_ENCODER = "clip-vit-b-16"

TEXT_ENCODERS: dict[str, TextEncoderSpec] = {
    # OpenAI CLIP ViT-B/16 as open_clip publishes it (open_clip "ViT-B-16", pretrained "openai", QuickGELU):
    # the text tower RAM++'s label embeddings were computed with.
    DEFAULT_TEXT_ENCODER: TextEncoderSpec(
        name=DEFAULT_TEXT_ENCODER,
        file=HubFile(
            repo_id="timm/vit_base_patch16_clip_224.openai",
            filename="open_clip_model.safetensors",
            revision="main",
            size=None,  # not pinned: the size and sha256 the Hub reports for the LFS object are checked
            sha256=None,
        ),
        approx_bytes=600_000_000,  # ~150M float32 parameters
        license="MIT",  # OpenAI's CLIP release (the timm Hub repository is tagged Apache-2.0)
        description="CLIP ViT-B/16 (OpenAI) text encoder, needed for open-set tags (--open-set)",
        paper="https://arxiv.org/abs/2103.00020",
    ),
}

# What `ramtag weights download --all` fetches: everything the default setup uses.
DEFAULT_SETUP = (DEFAULT_WEIGHTS, DEFAULT_TEXT_ENCODER)


def get_weights_spec(name: str) -> WeightsSpec:
    """The registry entry called ``name``; raises :class:`WeightsError` listing the known names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(WEIGHTS)) or "(none)"
        raise UnknownWeightsError(
            f"unknown weights {name!r}; registered: {known} (see `ramtag weights list`)"
        ) from None


def get_text_encoder_spec(name: str = DEFAULT_TEXT_ENCODER) -> TextEncoderSpec:
    """The registered text encoder called ``name``; raises :class:`WeightsError` listing the names."""
    try:
        return TEXT_ENCODERS[name]
    except KeyError:
        known = ", ".join(sorted(TEXT_ENCODERS))
        raise UnknownWeightsError(f"unknown text encoder {name!r}; registered: {known}") from None


def get_text_encoder(name: str = DEFAULT_TEXT_ENCODER) -> HubFile:
    """The weights file of the registered text encoder called ``name``."""
    return get_text_encoder_spec(name).file
