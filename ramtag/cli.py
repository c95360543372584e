"""The ``ramtag`` command line: each command is a few lines calling one importable function.

This is the only module that uses typer/rich. It does not import torch at module level, so
``ramtag --help`` is instant. Library errors (:class:`ramtag.errors.RamtagError`) become one red
line and exit code 1 (2 for usage errors) in :func:`main`, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import RamtagError

app = typer.Typer(
    name="ramtag",
    help="Auto-tag photo libraries with RAM++ (Recognize Anything Plus): 4,585 tags plus your own "
    "open-set tags, written to XMP sidecars, embedded metadata or JSON Lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="List, download, import and remove tagging weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

err = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class WriteMode(str, Enum):
    xmp = "xmp"
    embed = "embed"
    json = "json"
    none = "none"


class SidecarName(str, Enum):
    EXT = "ext"
    REPLACE = "replace"


class Lang(str, Enum):
    en = "en"
    zh = "zh"


class Device(str, Enum):
    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


class Precision(str, Enum):
    """Training and evaluation precisions."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TagPrecision(str, Enum):
    """Tagging precisions (``ramtag.runner``): the training ones plus bf16-checked."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    bf16_checked = "bf16-checked"
    fp16 = "fp16"


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"ramtag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Auto-tag photo libraries with RAM++ (Recognize Anything Plus): 4,585 tags plus your own open-set
    tags, written to XMP sidecars, embedded metadata or JSON Lines."""


# Options shared by `tag` and `describe`.
LLMBaseURL = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url",
        help="OpenAI-compatible server, e.g. http://localhost:11434/v1 (Ollama). Env: RAMTAG_LLM_BASE_URL.",
        rich_help_panel="Open-set",
    ),
]
LLMModel = Annotated[
    str | None,
    typer.Option(
        "--llm-model", help="Model name on that server. Env: RAMTAG_LLM_MODEL.", rich_help_panel="Open-set"
    ),
]
LLMKey = Annotated[
    str | None,
    typer.Option(
        "--llm-api-key",
        envvar="OPENAI_API_KEY",
        show_envvar=True,
        help="API key (prefer the env variable; never logged or cached).",
        rich_help_panel="Open-set",
    ),
]


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


@app.command()
def tag(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Image files and/or folders (walked recursively).")
    ],
    write: Annotated[
        WriteMode,
        typer.Option(
            "--write",
            help="Where tags go: XMP sidecars, embedded in the "
            "image (exiftool), one JSON Lines file, or nowhere.",
            rich_help_panel="Output",
        ),
    ] = WriteMode.xmp,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write JSON Lines (one object per image) to FILE; '-' for stdout.",
            rich_help_panel="Output",
        ),
    ] = None,
    all_scores: Annotated[
        bool,
        typer.Option("--all-scores", help="Put every tag's score in the JSON.", rich_help_panel="Output"),
    ] = False,
    sidecar_name: Annotated[
        SidecarName,
        typer.Option(
            "--sidecar-name",
            help="ext: photo.jpg.xmp (digiKam, darktable, Immich); replace: photo.xmp (Adobe).",
            rich_help_panel="Output",
        ),
    ] = SidecarName.EXT,
    hierarchy_root: Annotated[
        str,
        typer.Option(
            "--hierarchy-root",
            help="Parent of hierarchical keywords (ramtag|dog); '' for flat.",
            rich_help_panel="Output",
        ),
    ] = "ramtag",
    lang: Annotated[
        Lang, typer.Option("--lang", help="Tag names to write.", rich_help_panel="Output")
    ] = Lang.en,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show what would be written; write nothing.", rich_help_panel="Output"
        ),
    ] = False,
    no_backup: Annotated[
        bool,
        typer.Option(
            "--no-backup",
            help="--write embed: do not keep exiftool's *_original copy.",
            rich_help_panel="Output",
        ),
    ] = False,
    repair_sidecars: Annotated[
        bool,
        typer.Option(
            "--repair-sidecars",
            help="Replace sidecars that are not valid XML, keeping the old file as *.bak.",
            rich_help_panel="Output",
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="One threshold for every built-in tag instead of the per-tag ones.",
            rich_help_panel="Tags",
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="At most K tags per image.", rich_help_panel="Tags")
    ] = None,
    open_set: Annotated[
        str | None,
        typer.Option(
            "--open-set",
            help="Extra tags, comma-separated; 'tag=0.6' sets a threshold.",
            rich_help_panel="Open-set",
        ),
    ] = None,
    open_set_file: Annotated[
        Path | None,
        typer.Option(
            "--open-set-file", help="Extra tags, one per line ('#' comments).", rich_help_panel="Open-set"
        ),
    ] = None,
    only_open_set: Annotated[
        bool,
        typer.Option("--only-open-set", help="Score only the open-set tags.", rich_help_panel="Open-set"),
    ] = False,
    open_set_threshold: Annotated[
        float,
        typer.Option(
            "--open-set-threshold",
            min=0.0,
            max=1.0,
            help="Default threshold of open-set tags.",
            rich_help_panel="Open-set",
        ),
    ] = 0.5,
    descriptions: Annotated[
        Path | None,
        typer.Option(
            "--descriptions",
            help="Tag descriptions JSON (official "
            "format, see `ramtag describe --json`) instead of asking an LLM.",
            rich_help_panel="Open-set",
        ),
    ] = None,
    clip: Annotated[
        Path | None,
        typer.Option(
            "--clip",
            help="Local CLIP ViT-B/16 weights (OpenAI state-dict format) for open-set text embeddings.",
            rich_help_panel="Open-set",
        ),
    ] = None,
    llm_base_url: LLMBaseURL = None,
    llm_model: LLMModel = None,
    llm_api_key: LLMKey = None,
    require_llm: Annotated[
        bool,
        typer.Option(
            "--require-llm",
            help="Fail instead of falling back to CLIP prompt templates when no LLM answers.",
            rich_help_panel="Open-set",
        ),
    ] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Registry name or weights folder (default: ram-plus-swin-l-14m, downloaded on first use).",
            rich_help_panel="Model",
        ),
    ] = None,
    device: Annotated[Device, typer.Option("--device", rich_help_panel="Model")] = Device.auto,
    precision: Annotated[
        TagPrecision,
        typer.Option(
            "--precision",
            help="auto: bf16 on GPUs; bf16-checked on CPUs with AMX/AVX512-BF16 (bf16 speed, borderline "
            "tags re-decided in fp32: the fp32 tags); fp32 elsewhere. fp32: exact parity with the "
            "official code. bf16/fp16: fastest, may flip tags that sit on their threshold.",
            rich_help_panel="Model",
        ),
    ] = TagPrecision.auto,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, rich_help_panel="Model")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Decode processes (default: 0 on CPU, decoding in threads; min(4, cores) with a GPU).",
            rich_help_panel="Model",
        ),
    ] = None,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (GPU).", rich_help_panel="Model")
    ] = False,
    draft: Annotated[
        bool,
        typer.Option(
            "--draft", help="Faster JPEG decoding at reduced size (not bit-exact).", rich_help_panel="Model"
        ),
    ] = False,
    no_exif_orientation: Annotated[
        bool,
        typer.Option(
            "--no-exif-orientation",
            help="Ignore EXIF rotation, as the official code does.",
            rich_help_panel="Inputs",
        ),
    ] = False,
    hidden: Annotated[
        bool, typer.Option("--hidden", help="Include dot-files and dot-folders.", rich_help_panel="Inputs")
    ] = False,
    no_recursive: Annotated[
        bool,
        typer.Option("--no-recursive", help="Do not descend into sub-folders.", rich_help_panel="Inputs"),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Re-tag images already tagged with the same settings.", rich_help_panel="Inputs"
        ),
    ] = False,
    state_db: Annotated[
        Path | None,
        typer.Option(
            "--state-db",
            help="SQLite file recording what was tagged (default: in the ramtag cache).",
            rich_help_panel="Inputs",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-image lines or progress bar.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Tag images and write the tags (XMP sidecars by default)."""
    from . import api

    _setup_logging(verbose, quiet)
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
    tagger = api.load_tagger(
        weights, device=device.value, precision=precision.value, open_set=open_opts, compile=compile_model
    )
    opts = api.TagOptions(
        threshold=threshold,
        top_k=top_k,
        all_scores=all_scores,
        lang=lang.value,
        batch_size=batch_size,
        workers=workers,
        exif_orientation=not no_exif_orientation,
        recursive=not no_recursive,
        include_hidden=hidden,
        draft=draft,
    )
    to_stdout = json_file is not None and str(json_file) == "-"
    wopts = api.WriteOptions(
        mode=write.value,
        json_path=None if to_stdout else json_file,
        sidecar_name=sidecar_name.value,
        hierarchy_root=hierarchy_root,
        dry_run=dry_run,
        backup=not no_backup,
        repair_sidecars=repair_sidecars,
    )
    summary = _run_with_progress(
        api,
        paths,
        tagger,
        opts,
        wopts,
        force=force,
        state_db=state_db,
        quiet=quiet,
        to_stdout=to_stdout,
        lang=lang.value,
        dry_run=dry_run,
    )
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def _run_with_progress(
    api: Any,
    paths: list[Path],
    tagger: Any,
    opts: Any,
    wopts: Any,
    *,
    force: bool,
    state_db: Path | None,
    quiet: bool,
    to_stdout: bool,
    lang: str,
    dry_run: bool,
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]tagging"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )
    task = progress.add_task("tag", total=None)

    def on_progress(event: str, done: int, total: int) -> None:
        if event == "discovered":
            progress.update(task, total=total)
        elif event == "image":
            progress.update(task, completed=done)

    def on_result(res: Any) -> None:
        if to_stdout:
            sys.stdout.write(json.dumps(res.to_dict(), ensure_ascii=False) + "\n")
        elif res.ok and not quiet:
            out.print(
                f"[bold]{escape(str(res.path))}[/]: {escape(', '.join(res.tag_names(lang)) or '(no tags)')}",
                highlight=False,
            )
        if not res.ok:
            reason = res.error or "failed"
            line = reason if str(res.path) in reason else f"{res.path}: {reason}"
            progress.console.print(f"[red]skipped[/] {escape(line)}", highlight=False)

    def on_write(outcome: Any) -> None:
        if dry_run and outcome.action == "dry-run" and outcome.target is not None:
            progress.console.print(
                f"[cyan]would write[/] {escape(str(outcome.target))}: "
                f"{escape(', '.join(outcome.tags) or '(no tags)')}",
                highlight=False,
            )

    with progress:
        return api.tag_library(
            paths,
            tagger,
            options=opts,
            write=wopts,
            force=force,
            state_db=state_db,
            progress=on_progress,
            on_result=on_result,
            on_write=on_write,
        )


def _print_summary(summary: Any) -> None:
    for note in summary.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    parts = [f"{summary.found} images found", f"{summary.tagged} tagged"]
    if summary.unchanged:
        parts.append(f"{summary.unchanged} unchanged since the last run")
    parts.append(f"{summary.written} written")
    parts.append(f"{len(summary.failed)} failed")
    err.print(", ".join(parts) + f" ({summary.images_per_second:.1f} images/s)", highlight=False)
    if summary.failed:
        err.print("[red]failed:[/]")
        for path, reason in summary.failed[:50]:
            err.print(f"  {reason if path in reason else f'{path}: {reason}'}", highlight=False, markup=False)
        if len(summary.failed) > 50:
            err.print(f"  ... and {len(summary.failed) - 50} more")


@app.command()
def untag(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="Images, sidecars or folders.")],
    sidecars_only: Annotated[
        bool, typer.Option("--sidecars-only", help="Leave embedded metadata alone.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed.")] = False,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Embedded: no exiftool *_original copy.")
    ] = False,
) -> None:
    """Remove exactly the tags ramtag wrote; your own keywords stay."""
    from . import api

    failed = changed = 0
    for o in api.untag(paths, sidecars_only=sidecars_only, dry_run=dry_run, backup=not no_backup):
        if o.action == "skipped":
            failed += 1
            err.print(f"[red]skipped[/] {escape(o.message)}", highlight=False)
        elif o.action in ("written", "dry-run", "deleted"):
            changed += 1
            verb = "would remove" if dry_run else "removed"
            out.print(
                f"{verb} {escape(', '.join(o.tags) or 'ramtag record')} from {escape(str(o.target))}",
                highlight=False,
            )
    err.print(f"{changed} files {'to change' if dry_run else 'changed'}, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def describe(
    tags: Annotated[
        str, typer.Argument(metavar="TAGS", help='Comma-separated tags, e.g. "corgi,meteor shower".')
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the official descriptions format (a JSON list "
            "of {tag: [51 descriptions]}), which `ramtag tag --descriptions FILE` reads.",
        ),
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the LLM again even if cached.")] = False,
    llm_base_url: LLMBaseURL = None,
    llm_model: LLMModel = None,
    llm_api_key: LLMKey = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Describe open-set tags with an LLM (51 descriptions each, as RAM++ expects) and cache them."""
    from . import api

    _setup_logging(verbose)
    result = api.describe(
        tags, llm_base_url=llm_base_url, llm_model=llm_model, llm_api_key=llm_api_key, use_cache=not no_cache
    )
    if as_json:
        from .text.describe import dump_descriptions

        sys.stdout.write(dump_descriptions(result))
        return
    for tag_name, descriptions in result.items():
        out.print(f"[bold]{escape(tag_name)}[/] ({len(descriptions)} descriptions)")
        for d in descriptions:
            out.print(f"  - {escape(d)}", highlight=False)


@app.command()
def bench(
    arch: Annotated[
        str, typer.Option("--arch", help="Model config with random weights: swin_l_384, swin_b_384, tiny.")
    ] = "swin_l_384",
    images: Annotated[int, typer.Option("--images", min=1, help="How many JPEGs to generate.")] = 16,
    size: Annotated[
        str, typer.Option("--size", help="WxH of the generated JPEGs, or one side (384).")
    ] = "4000x3000",
    inputs: Annotated[
        list[Path] | None, typer.Option("--inputs", help="Use these images instead (repeat the option).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0)] = None,
    device: Annotated[Device, typer.Option("--device")] = Device.auto,
    precision: Annotated[TagPrecision, typer.Option("--precision")] = TagPrecision.auto,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    draft: Annotated[
        bool, typer.Option("--draft", help="JPEG draft decoding in the end-to-end run.")
    ] = False,
    no_reference: Annotated[
        bool, typer.Option("--no-reference", help="Skip the official-style loop.")
    ] = False,
    no_decode_check: Annotated[
        bool, typer.Option("--no-decode-check", help="Skip comparing decode options.")
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="One threshold for every tag (default: the reference scores' 99th percentile).",
        ),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option("--thresholds", help="Per-tag thresholds, one per line (ram_tag_list_threshold.txt)."),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="JSON report (default: bench-results/...).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Measure images/s end to end and per stage, side by side with an official-style reference loop."""
    from . import api

    _setup_logging(False)
    try:
        w, _, h = size.lower().partition("x")
        image_size = (int(w), int(h or w))
    except ValueError:
        raise typer.BadParameter(f"--size {size!r}: use WxH (4000x3000) or one side (384)") from None
    report = api.benchmark(
        arch=arch,
        num_images=images,
        image_size=image_size,
        inputs=tuple(inputs or ()),
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        precision=precision.value,
        compile=compile_model,
        draft=draft,
        reference=not no_reference,
        decode_check=not no_decode_check,
        threshold=threshold,
        thresholds=thresholds,
        out=out_file,
        seed=seed,
    )
    from .bench import format_report

    out.print(format_report(report), highlight=False, markup=False)


PANEL_TRAIN = "Training"  # rich help panels of `ramtag train`
PANEL_VOCAB = "Vocabulary"
PANEL_OPT = "Optimisation"


@app.command()
def train(
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Captioned images: a JSONL/CSV file, a folder "
            "of images with .txt captions, or the official RAM json; repeat it; 'val=PATH' marks a "
            "validation split.",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Result folder (usable as --weights).", rich_help_panel=PANEL_TRAIN),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            help="A recipe from train/ (TOML/JSON); command-line options override it.",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the tags parsed from the captions and their counts; train nothing.",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = False,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Fine-tune from weights (ram-plus-swin-l-14m, a "
            "weights folder, an official .pth) or start a backbone from timm:<swin name>.",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Architecture when training from scratch (swin_l_384, swin_b_384, tiny).",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option("--image-size", help="Train at this input size.", rich_help_panel=PANEL_TRAIN),
    ] = None,
    window_size: Annotated[
        int | None,
        typer.Option("--window-size", help="Swin window at that size.", rich_help_panel=PANEL_TRAIN),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue from the newest checkpoint in --out.", rich_help_panel=PANEL_TRAIN
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option("--seed", rich_help_panel=PANEL_TRAIN)] = None,
    tags: Annotated[
        Path | None,
        typer.Option("--tags", help="Your tag list (one per line, 'tag=0.6').", rich_help_panel=PANEL_VOCAB),
    ] = None,
    vocabulary: Annotated[
        str | None,
        typer.Option("--vocabulary", help="auto | official | custom | union.", rich_help_panel=PANEL_VOCAB),
    ] = None,
    base_tags: Annotated[
        Path | None,
        typer.Option("--base-tags", help="Tag list of an official .pth --init.", rich_help_panel=PANEL_VOCAB),
    ] = None,
    base_thresholds: Annotated[
        Path | None,
        typer.Option("--base-thresholds", help="Its threshold list.", rich_help_panel=PANEL_VOCAB),
    ] = None,
    descriptions: Annotated[
        Path | None,
        typer.Option(
            "--descriptions",
            help="Descriptions of new tags (official JSON format).",
            rich_help_panel=PANEL_VOCAB,
        ),
    ] = None,
    llm_base_url: LLMBaseURL = None,
    llm_model: LLMModel = None,
    require_llm: Annotated[bool, typer.Option("--require-llm", rich_help_panel=PANEL_VOCAB)] = False,
    clip: Annotated[
        Path | None,
        typer.Option(
            "--clip",
            help="CLIP ViT-B/16 weights (OpenAI format) for the frozen text and image encoders.",
            rich_help_panel=PANEL_TRAIN,
        ),
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(
            "--image-root", help="Base folder of the official json's image_path.", rich_help_panel=PANEL_TRAIN
        ),
    ] = None,
    augment: Annotated[
        str | None, typer.Option("--augment", help="none | flip | standard.", rich_help_panel=PANEL_TRAIN)
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, rich_help_panel=PANEL_TRAIN)] = None,
    no_exif_orientation: Annotated[
        bool, typer.Option("--no-exif-orientation", rich_help_panel=PANEL_TRAIN)
    ] = False,
    epochs: Annotated[float | None, typer.Option("--epochs", rich_help_panel=PANEL_OPT)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", rich_help_panel=PANEL_OPT)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, rich_help_panel=PANEL_OPT)] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", min=1, rich_help_panel=PANEL_OPT)] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate.", rich_help_panel=PANEL_OPT)
    ] = None,
    min_lr: Annotated[float | None, typer.Option("--min-lr", rich_help_panel=PANEL_OPT)] = None,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps", rich_help_panel=PANEL_OPT)] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", rich_help_panel=PANEL_OPT)] = None,
    max_grad_norm: Annotated[float | None, typer.Option("--max-grad-norm", rich_help_panel=PANEL_OPT)] = None,
    drop_path: Annotated[float | None, typer.Option("--drop-path", rich_help_panel=PANEL_OPT)] = None,
    precision: Annotated[Precision | None, typer.Option("--precision", rich_help_panel=PANEL_OPT)] = None,
    device: Annotated[Device | None, typer.Option("--device", rich_help_panel=PANEL_OPT)] = None,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", rich_help_panel=PANEL_OPT)
    ] = False,
    tag_loss_weight: Annotated[
        float | None, typer.Option("--tag-loss-weight", rich_help_panel=PANEL_OPT)
    ] = None,
    align_loss_weight: Annotated[
        float | None, typer.Option("--align-loss-weight", rich_help_panel=PANEL_OPT)
    ] = None,
    distill_loss_weight: Annotated[
        float | None, typer.Option("--distill-loss-weight", rich_help_panel=PANEL_OPT)
    ] = None,
    train_label_embed: Annotated[
        bool, typer.Option("--train-label-embed", rich_help_panel=PANEL_OPT)
    ] = False,
    save_every: Annotated[int | None, typer.Option("--save-every", rich_help_panel=PANEL_TRAIN)] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option("--keep-checkpoints", rich_help_panel=PANEL_TRAIN)
    ] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", rich_help_panel=PANEL_TRAIN)] = None,
    log_every: Annotated[int | None, typer.Option("--log-every", rich_help_panel=PANEL_TRAIN)] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", rich_help_panel=PANEL_TRAIN)] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", rich_help_panel=PANEL_TRAIN)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train or fine-tune RAM++ on your captioned photos (single GPU, CPU, or torchrun for many)."""
    values = {k: v for k, v in locals().items() if k not in ("recipe", "dry_run", "verbose", "out_dir")}
    from . import training
    from .training import render

    _setup_logging(verbose)
    values = {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items()}
    values |= {
        "out": out_dir,
        "num_workers": values.pop("workers"),
        "exif_orientation": not no_exif_orientation,
        "progress": not no_progress,
    }
    values.pop("no_exif_orientation")
    values.pop("no_progress")
    # Flags only override a recipe when given; unset options stay None and keep the recipe's value.
    for flag in ("resume", "require_llm", "grad_checkpointing", "train_label_embed", "tensorboard"):
        values[flag] = values[flag] or None
    values["exif_orientation"] = None if values["exif_orientation"] else False
    values["progress"] = None if values["progress"] else False
    if dry_run and values["out"] is None:
        values["out"] = Path(".")
    if recipe is not None:
        opts = training.options_from_recipe(recipe, **values)
    else:
        if not data or (out_dir is None and not dry_run):
            raise typer.BadParameter("--data and --out are required (or give a --recipe)")
        opts = training.TrainOptions(**{k: v for k, v in values.items() if v is not None})
    if dry_run:
        out.print(render.dry_run_table(training.dry_run(opts)))
        return
    with _train_progress(opts.progress) as progress:
        result = training.train(opts, progress)
    out.print(render.train_result_text(result))


@contextlib.contextmanager
def _train_progress(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A rich progress bar for ``training.train`` (steps, losses, learning rate, ETA), or None."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task("train", total=None, info="")
    started: list[bool] = []

    def update(step: int, total: int, info: str) -> None:
        bar.update(task, total=total, completed=step, info=info)
        if not started:  # shown from the first call on: the model and data are loaded by then
            started.append(True)
            bar.start()

    try:
        yield update
    finally:
        if started:
            bar.stop()


@app.command("eval")
def eval_(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Captioned/tagged images (as for train); repeat it; "
            "'NAME=PATH' names a split (val=..., test=...).",
        ),
    ],
    weights: Annotated[str | None, typer.Option("--weights", help="Registry name or weights folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (per tag too).")] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Fit per-tag thresholds (best F1) on the validation split and save them into the weights.",
        ),
    ] = False,
    calibrate_split: Annotated[str, typer.Option("--calibrate-split")] = "val",
    worst: Annotated[int, typer.Option("--worst", help="List this many worst tags per split.")] = 10,
    min_positives: Annotated[int, typer.Option("--min-positives")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    device: Annotated[Device, typer.Option("--device")] = Device.auto,
    precision: Annotated[Precision, typer.Option("--precision")] = Precision.auto,
    workers: Annotated[int | None, typer.Option("--workers", min=0)] = None,
    image_root: Annotated[Path | None, typer.Option("--image-root")] = None,
    no_exif_orientation: Annotated[bool, typer.Option("--no-exif-orientation")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Evaluate weights on labelled images: mAP, precision/recall/F1 per split and per tag."""
    from . import training
    from .training import render

    _setup_logging(verbose)
    report = training.evaluate(
        training.EvalOptions(
            data=data,
            weights=weights,
            batch_size=batch_size,
            device=device.value,
            precision=precision.value,
            num_workers=workers,
            image_root=image_root,
            calibrate=calibrate,
            calibrate_split=calibrate_split,
            worst=worst,
            min_positives=min_positives,
            exif_orientation=not no_exif_orientation,
        )
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(per_tag=True), ensure_ascii=False, indent=2) + "\n")
    else:
        out.print(render.eval_report_table(report))


@weights_app.command("list")
def weights_list() -> None:
    """Show the known weights and which are installed."""
    from .weights import list_weights

    for info in list_weights():
        mark = "[green]installed[/]" if info.installed else "[dim]not downloaded[/]"
        default = " [cyan](default)[/]" if info.default else ""
        out.print(f"[bold]{escape(info.name)}[/]{default}  {mark}  {escape(info.description or '')}")
        details = [
            d for d in (info.arch, f"{info.num_tags} tags" if info.num_tags else None, info.license) if d
        ]
        if details:
            out.print(f"    {escape(', '.join(details))}", highlight=False)
        if info.installed:
            out.print(f"    {escape(str(info.path))}", highlight=False)


@weights_app.command("download")
def weights_download(
    name: Annotated[str | None, typer.Argument(help="Registry name (default: ram-plus-swin-l-14m).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download and convert again.")] = False,
    keep_download: Annotated[
        bool, typer.Option("--keep-download", help="Keep the original .pth after converting it.")
    ] = False,
) -> None:
    """Download weights from Hugging Face into the cache and convert them once."""
    from .registry import DEFAULT_WEIGHTS
    from .weights import download_weights

    path = download_weights(name or DEFAULT_WEIGHTS, force=force, keep_download=keep_download)
    err.print(f"[green]ready:[/] {escape(str(path))}", highlight=False)


@weights_app.command("import")
def weights_import(
    checkpoint: Annotated[
        Path, typer.Argument(help="An official RAM++ .pth checkpoint, or a ramtag weights folder.")
    ],
    name: Annotated[str, typer.Option("--name", help="Name to use with --weights.")],
    tag_list: Annotated[
        Path | None,
        typer.Option(
            "--tag-list",
            help="Tag names, one per line (the official ram_tag_list.txt for the published model).",
        ),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option("--thresholds", help="Per-tag thresholds, one per line (ram_tag_list_threshold.txt)."),
    ] = None,
    tag_list_zh: Annotated[
        Path | None, typer.Option("--tag-list-zh", help="Chinese tag names (ram_tag_list_chinese.txt).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace installed weights of the same name.")
    ] = False,
) -> None:
    """Import a checkpoint you already have (converted once to ramtag's format)."""
    from .weights import import_checkpoint

    path = import_checkpoint(
        checkpoint, tag_list=tag_list, thresholds=thresholds, tag_list_zh=tag_list_zh, name=name, force=force
    )
    err.print(f"[green]imported:[/] {escape(name)} -> {escape(str(path))}", highlight=False)


@weights_app.command("remove")
def weights_remove(name: Annotated[str, typer.Argument(help="Installed weights name.")]) -> None:
    """Delete installed weights from the cache."""
    from .weights import remove_weights

    path = remove_weights(name)
    err.print(f"removed {escape(name)} ({escape(str(path))})", highlight=False)


def main() -> None:
    """Console-script entry point: the one place where library errors become exit codes."""
    try:
        app()
    except RamtagError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
