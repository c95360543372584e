"""The public Python API: load a tagger, tag images or a library, untag, describe, benchmark.

    discover -> decode -> batch -> model -> decide tags -> write

``load_tagger`` loads weights (downloading the default on first use), optional open-set tags, and
prepares the vocabulary once; ``Tagger.tag`` yields :class:`ImageTags` for paths or PIL images;
``tag_library`` (:mod:`ramtag.library`) is what ``ramtag tag`` runs, with the options ``tag_settings``
(:mod:`ramtag.settings`) reads from a config file, ``--set`` overrides and flags. The option dataclasses
live in :mod:`ramtag.options`; every name this module offered before the split is still importable here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RamtagError, UsageError
from .library import (
    Interrupted,
    ProgressFn,
    ResultFn,
    RunSummary,
    Selection,
    select_files,
    select_or_fail,
    tag_library,
)
from .options import EXACT_PRECISIONS, ModelOptions, OpenSetOptions, TagOptions, WriteOptions
from .results import ImageTags, TagScore
from .settings import TagSettings, check_settings, tag_settings
from .tagger import Tagger, _with, _workers  # noqa: F401  (the private two: for old imports)
from .tags import Vocabulary, decide, effective_thresholds

if TYPE_CHECKING:
    import torch

    from .source import TaggerSource

log = logging.getLogger(__name__)

__all__ = [
    "EXACT_PRECISIONS",
    "ImageTags",
    "Interrupted",
    "ModelOptions",
    "OpenSetOptions",
    "ProgressFn",
    "RamtagError",
    "ResultFn",
    "RunSummary",
    "Selection",
    "TagOptions",
    "TagScore",
    "TagSettings",
    "Tagger",
    "UsageError",
    "Vocabulary",
    "WriteOptions",
    "benchmark",
    "check_settings",
    "decide",
    "describe",
    "effective_thresholds",
    "load_tagger",
    "select_files",
    "select_or_fail",
    "tag_library",
    "tag_settings",
    "tagger_source",
    "untag",
]


def load_tagger(
    weights: str | Path | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    open_set: OpenSetOptions | None = None,
    compile: bool = False,
    download: bool = True,
) -> Tagger:
    """Load weights (a registry name, a ramtag weights directory, or None for the default) and
    prepare the vocabulary (built-in and optional open-set tags) on ``device``.

    The default weights are downloaded on first use unless ``download=False`` or offline.
    """
    from .device import select_device
    from .distributed import init_if_needed
    from .weights import resolve_weights
    from .weights_format import build_model, load_weights

    directory = resolve_weights(weights, download=download)
    loaded = load_weights(directory)
    model = build_model(loaded)
    vocabulary = loaded.vocabulary
    label_embed = model.builtin_label_embed().detach()  # (T, 51, 512)
    notes: list[str] = []
    if open_set is not None and open_set.requested:
        vocabulary, label_embed, notes = _add_open_set(vocabulary, label_embed, open_set)
    elif open_set is not None and open_set.only_open_set:
        raise UsageError("--only-open-set needs open-set tags: pass --open-set or --open-set-file")
    files = loaded.metadata.get("files", {})
    weights_sha = next((f.get("sha256", "") for f in files.values() if isinstance(f, dict)), "")
    # Under torchrun every rank joins the process group and takes its own GPU (cuda:LOCAL_RANK).
    return Tagger.from_model(
        model,
        vocabulary,
        loaded.preprocessing,
        label_embed=label_embed,
        name=str(weights) if weights is not None else directory.name,
        device=init_if_needed(select_device(device)),
        precision=precision,
        compile=compile,
        weights_sha=weights_sha,
        notes=notes,
    )


def tagger_source(
    weights: str | Path | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    open_set: OpenSetOptions | None = None,
    compile: bool = False,
    download: bool = True,
    on_load: Any = None,
) -> TaggerSource:
    """A tagger that loads only when an image needs new scores: what ``ramtag tag`` passes to
    ``tag_library`` (its vocabulary and scorer key are read without torch; see ``ramtag.source``)."""
    import functools

    from .source import TaggerSource

    loader = functools.partial(
        load_tagger,
        weights,
        device=device,
        precision=precision,
        open_set=open_set,
        compile=compile,
        download=download,
    )
    return TaggerSource(weights, loader=loader, open_set=open_set, download=download, on_load=on_load)


def _add_open_set(
    vocabulary: Vocabulary, label_embed: torch.Tensor, opts: OpenSetOptions
) -> tuple[Vocabulary, torch.Tensor, list[str]]:
    import torch

    from .text.llm import LLMSettings
    from .text.openset import OpenSetTag, build_open_set, combine, parse_open_set

    tags = parse_open_set(opts.tags, opts.tags_file, default_threshold=opts.threshold)
    if not tags and opts.descriptions is not None:  # a descriptions file alone: tag with all its tags
        from .text.describe import load_descriptions

        tags = [OpenSetTag(name, opts.threshold) for name in load_descriptions(opts.descriptions)]
    llm = LLMSettings.from_env(base_url=opts.llm_base_url, model=opts.llm_model, api_key=opts.llm_api_key)
    built = build_open_set(
        tags,
        descriptions_file=opts.descriptions,
        clip_file=opts.clip,
        llm=llm,
        require_llm=opts.require_llm,
        vocabulary=vocabulary,
    )
    vocab, embed = combine(vocabulary, label_embed, built, only_open_set=opts.only_open_set)
    notes = [f"{t!r} is a built-in tag; using the built-in one" for t in built.reused_builtin]
    return vocab, torch.as_tensor(embed, dtype=torch.float32), notes


def untag(
    paths: Sequence[str | Path], *, sidecars_only: bool = False, dry_run: bool = False, backup: bool = True
) -> Iterator[Any]:
    """Remove exactly the tags ramtag wrote (sidecars, and embedded tags where exiftool is installed).

    Yields one ``ramtag.writers.WriteOutcome`` per sidecar or image touched; ``action == "skipped"``
    carries a one-line reason.
    """
    from .writers import untag_paths

    yield from untag_paths(paths, embedded=False if sidecars_only else None, dry_run=dry_run, backup=backup)


def describe(
    tags: str,
    *,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    use_cache: bool = True,
) -> dict[str, list[str]]:
    """51 descriptions per tag from the configured LLM (cached), as ``ramtag describe`` shows them.

    ``tags`` is comma-separated like ``--open-set`` (thresholds are ignored here).
    """
    from .text.llm import LLMSettings
    from .text.openset import describe_tags, parse_open_set

    names = [t.name for t in parse_open_set(tags, None)]
    if not names:
        raise UsageError('no tags given; e.g. ramtag describe "corgi,meteor shower"')
    llm = LLMSettings.from_env(base_url=llm_base_url, model=llm_model, api_key=llm_api_key)
    return describe_tags(names, llm, use_cache=use_cache)


def benchmark(*, progress: Any = None, **options: Any) -> dict[str, Any]:
    """Run the speed benchmark (``ramtag bench``); keyword arguments are ``ramtag.bench.BenchOptions`` fields.

    Returns the report dict that is also written as JSON (its path under ``"out"``). ``progress``: called
    with each phase's name as it starts.
    """
    from .bench import BenchOptions, run_benchmark

    return run_benchmark(BenchOptions(**options), progress=progress)
