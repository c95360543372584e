"""``ramtag tag``: tag images and write the tags (``ramtag.api.tag_library``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..writers import WRITERS
from .common import (
    AUTO_TAG_PRECISION,
    Device,
    Lang,
    LLMBaseURL,
    LLMKey,
    LLMModel,
    SidecarName,
    TagPrecision,
    Verbose,
    WriteMode,
    examples,
    setup_logging,
    value,
)

if TYPE_CHECKING:
    from ..api import Selection, TagOptions

EXAMPLES = examples(
    "ramtag tag ~/Photos                                  # XMP sidecars next to each photo",
    "ramtag tag ~/Photos --json tags.jsonl --all-scores   # also JSON Lines with every score",
    'ramtag tag ~/Photos --open-set "corgi,meteor shower" --llm-base-url http://localhost:11434/v1',
)
OUTPUT, TAGS, OPEN, MODEL, INPUTS = "Output", "Tags", "Open-set", "Model", "Inputs"


def tag(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Image files and/or folders (walked recursively).")
    ],
    write: Annotated[
        WriteMode,
        typer.Option(
            "--write",
            help="Where tags go: " + "; ".join(f"{k}: {e.help}" for k, e in WRITERS.items()) + ".",
            rich_help_panel=OUTPUT,
        ),
    ] = WriteMode.xmp,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Also write JSON Lines (one object per image) to FILE; '-' for stdout.",
            show_default="none",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    all_scores: Annotated[
        bool,
        typer.Option(
            "--all-scores/--no-all-scores", help="Put every tag's score in the JSON.", rich_help_panel=OUTPUT
        ),
    ] = False,
    sidecar_name: Annotated[
        SidecarName,
        typer.Option(
            "--sidecar-name",
            help="ext: photo.jpg.xmp (digiKam, darktable, Immich); replace: photo.xmp (Adobe).",
            rich_help_panel=OUTPUT,
        ),
    ] = SidecarName.ext,
    hierarchy_root: Annotated[
        str,
        typer.Option(
            "--hierarchy-root",
            help="Parent of hierarchical keywords (ramtag|dog); '' for flat.",
            rich_help_panel=OUTPUT,
        ),
    ] = "ramtag",
    lang: Annotated[
        Lang, typer.Option("--lang", help="Tag names to write.", rich_help_panel=OUTPUT)
    ] = Lang.en,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--no-dry-run",
            help="Show, once per image, what would be written (or why nothing would); write nothing.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    backup: Annotated[
        bool,
        typer.Option(
            "--backup/--no-backup",
            help="--write embed: keep exiftool's *_original copy.",
            rich_help_panel=OUTPUT,
        ),
    ] = True,
    repair_sidecars: Annotated[
        bool,
        typer.Option(
            "--repair-sidecars/--no-repair-sidecars",
            help="Replace sidecars that are not valid XML, keeping the old file as *.bak.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="One threshold for every built-in tag instead of the per-tag ones.",
            show_default="the weights' per-tag thresholds",
            rich_help_panel=TAGS,
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k", min=1, help="At most K tags per image.", show_default="no limit", rich_help_panel=TAGS
        ),
    ] = None,
    open_set: Annotated[
        str | None,
        typer.Option(
            "--open-set",
            metavar="TAGS",
            help="Extra tags, comma-separated; 'tag=0.6' sets a threshold.",
            show_default="none",
            rich_help_panel=OPEN,
        ),
    ] = None,
    open_set_file: Annotated[
        Path | None,
        typer.Option(
            "--open-set-file",
            metavar="FILE",
            help="Extra tags, one per line ('#' comments).",
            show_default="none",
            rich_help_panel=OPEN,
        ),
    ] = None,
    only_open_set: Annotated[
        bool,
        typer.Option(
            "--only-open-set/--no-only-open-set", help="Score only the open-set tags.", rich_help_panel=OPEN
        ),
    ] = False,
    open_set_threshold: Annotated[
        float,
        typer.Option(
            "--open-set-threshold",
            min=0.0,
            max=1.0,
            help="Default threshold of open-set tags.",
            rich_help_panel=OPEN,
        ),
    ] = 0.5,
    descriptions: Annotated[
        Path | None,
        typer.Option(
            "--descriptions",
            metavar="FILE",
            help="Tag descriptions JSON (official format, see `ramtag describe --json`) instead of asking "
            "an LLM.",
            show_default="the cache, then the LLM",
            rich_help_panel=OPEN,
        ),
    ] = None,
    clip: Annotated[
        Path | None,
        typer.Option(
            "--clip",
            metavar="FILE",
            help="Local CLIP ViT-B/16 weights (OpenAI state-dict format) for open-set text embeddings.",
            show_default="clip-vit-b-16, downloaded once",
            rich_help_panel=OPEN,
        ),
    ] = None,
    llm_base_url: LLMBaseURL = None,
    llm_model: LLMModel = None,
    llm_api_key: LLMKey = None,
    require_llm: Annotated[
        bool,
        typer.Option(
            "--require-llm/--no-require-llm",
            help="Fail instead of falling back to CLIP prompt templates when no LLM answers.",
            rich_help_panel=OPEN,
        ),
    ] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            metavar="NAME|DIR",
            help="Registry name or weights folder (see `ramtag weights list`).",
            show_default="ram-plus-swin-l-14m, downloaded on first use",
            rich_help_panel=MODEL,
        ),
    ] = None,
    device: Annotated[
        Device, typer.Option("--device", help="auto: CUDA, then MPS, then CPU.", rich_help_panel=MODEL)
    ] = Device.auto,
    precision: Annotated[
        TagPrecision,
        typer.Option(
            "--precision",
            help="auto: bf16 on GPUs; bf16-checked on CPUs with AMX/AVX512-BF16 (bf16 speed, borderline "
            "tags re-decided in fp32: the fp32 tags); fp32 elsewhere. fp32: exact parity with the "
            "official code. bf16/fp16: fastest, may flip tags that sit on their threshold.",
            rich_help_panel=MODEL,
        ),
    ] = AUTO_TAG_PRECISION,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per forward pass.",
            show_default="sized for the device",
            rich_help_panel=MODEL,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Decode processes; 0 decodes in threads.",
            show_default="0 on CPU, min(4, cores) with a GPU",
            rich_help_panel=MODEL,
        ),
    ] = None,
    compile_model: Annotated[
        bool,
        typer.Option("--compile/--no-compile", help="torch.compile the model (GPU).", rich_help_panel=MODEL),
    ] = False,
    draft: Annotated[
        bool,
        typer.Option(
            "--draft/--no-draft",
            help="Faster JPEG decoding at reduced size (not bit-exact).",
            rich_help_panel=MODEL,
        ),
    ] = False,
    decode: Annotated[
        str,
        typer.Option(
            "--decode",
            help="JPEG decoding: gpu (nvJPEG), cpu (Pillow), auto (gpu on CUDA when available).",
            rich_help_panel=MODEL,
        ),
    ] = "auto",
    exif_orientation: Annotated[
        bool,
        typer.Option(
            "--exif-orientation/--no-exif-orientation",
            help="Rotate by EXIF orientation first (--no-...: as the official code does).",
            rich_help_panel=INPUTS,
        ),
    ] = True,
    hidden: Annotated[
        bool,
        typer.Option(
            "--hidden/--no-hidden", help="Include dot-files and dot-folders.", rich_help_panel=INPUTS
        ),
    ] = False,
    recursive: Annotated[
        bool,
        typer.Option("--recursive/--no-recursive", help="Descend into sub-folders.", rich_help_panel=INPUTS),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force/--no-force",
            help="Run the model again on images the catalog has scores for.",
            rich_help_panel=INPUTS,
        ),
    ] = False,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            "--state-db",
            metavar="FILE",
            help="The catalog: what was tagged, every tag's score, what was written where.",
            show_default="catalog.sqlite in the ramtag cache",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet/--no-quiet", "-q", help="No per-image lines or progress bar.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Tag images and write the tags (XMP sidecars by default); re-runs do only new work.

    A re-run tags only new or changed images; after Ctrl-C, what was written is kept and a re-run
    resumes."""
    from .. import api
    from ..device import tune_cpu_allocator
    from .progress import print_summary, run_with_progress

    setup_logging(verbose, quiet)
    to_stdout = json_file is not None and str(json_file) == "-"
    # everything that can be checked without the model is checked first (a typo fails at once)
    check_outputs(
        weights, catalog, None if to_stdout else json_file, open_set, open_set_file, open_set_threshold
    )
    open_opts = api.OpenSetOptions(
        tags=open_set,
        tags_file=open_set_file,
        only_open_set=only_open_set,
        threshold=open_set_threshold,
        descriptions=descriptions,
        clip=clip,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        llm_api_key=llm_api_key,
        require_llm=require_llm,
    )
    # The model loads only if some image needs new scores (see ramtag.source).
    source = api.tagger_source(
        weights,
        device=device.value,
        precision=precision.value,
        open_set=open_opts,
        compile=compile_model,
        # CPU runs: keep the model's large temporaries in the heap
        on_load=lambda tagger: tune_cpu_allocator(tagger.runner.device),
    )
    opts = api.TagOptions(
        threshold=threshold,
        top_k=top_k,
        all_scores=all_scores,
        lang=lang.value,
        batch_size=batch_size,
        workers=workers,
        exif_orientation=exif_orientation,
        recursive=recursive,
        include_hidden=hidden,
        draft=draft,
        decode=decode,
    )
    selection = select_or_fail(paths, opts)
    wopts = api.WriteOptions(
        mode=value(write),
        json_path=None if to_stdout else json_file,
        sidecar_name=sidecar_name.value,
        hierarchy_root=hierarchy_root,
        dry_run=dry_run,
        backup=backup,
        repair_sidecars=repair_sidecars,
    )
    try:
        summary = run_with_progress(
            paths,
            source,
            opts,
            wopts,
            force=force,
            catalog=catalog,
            quiet=quiet,
            to_stdout=to_stdout,
            selection=selection,
        )
    except api.Interrupted as e:  # Ctrl-C: what was written is recorded; say so and how to go on
        print_summary(e.summary)
        sys.exit(130)
    print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def check_outputs(
    weights: str | None,
    catalog: Path | None,
    json_file: Path | None,
    open_set: str | None,
    open_set_file: Path | None,
    open_set_threshold: float,
) -> None:
    """The checks that need no model: weights name, output and state locations, open-set tags."""
    from ..errors import InputError, WeightsError
    from ..registry import WEIGHTS
    from ..text.openset import parse_open_set
    from ..weights import resolve_weights

    try:
        resolve_weights(weights, download=False)
    except WeightsError:
        if weights is not None and weights not in WEIGHTS:
            raise  # unknown names and bad folders; registry weights are downloaded when the model loads
    for path, what, option in (
        (catalog, "catalog", "--catalog"),
        (json_file, "JSON Lines file", "--json"),
    ):
        if path is None:
            continue
        folder = path.expanduser().absolute().parent
        if path.is_dir():
            raise InputError(f"{path}: is a folder; {option} needs a file name for the {what}")
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder for the {what}; create it or fix {option}")
    parse_open_set(open_set, open_set_file, open_set_threshold)


def select_or_fail(paths: list[Path], opts: TagOptions) -> Selection:
    """The files to tag, found before the model loads; a missing path or nothing to tag fails here."""
    from .. import api
    from ..errors import InputError, UsageError
    from .progress import _suffixes

    missing = [p for p in paths if not os.path.lexists(p)]  # a typo; broken links are reported per file
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder; check the path")
    selection = api.select_files(paths, opts)
    if not selection.files:
        what = [f"{p}: {r}" for p, r in selection.skipped[:3]]
        n = sum(selection.not_images.values())
        if n:
            what.append(
                f"{n} {'file that is not an image' if n == 1 else 'files that are not images'} "
                f"({_suffixes(selection.not_images)})"
            )
        hint = "" if opts.recursive else "; --recursive walks sub-folders"
        found = "; ".join(what) or "empty"
        raise InputError(f"no images to tag in {', '.join(map(str, paths))} ({found}){hint}")
    return selection
