"""``ramtag weights list|download|import|remove`` (``ramtag.weights``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import Command, Group, err, examples, out

app = typer.Typer(
    cls=Group,
    help="List, download, import and remove tagging weights and the CLIP text encoder (open-set tags).",
    no_args_is_help=True,
    epilog=examples(
        "ramtag weights list",
        "ramtag weights download --all                # RAM++ weights and CLIP ViT-B/16",
        "ramtag weights import ram_plus.pth --name my-ram --tag-list tags.txt --thresholds th.txt",
    ),
)

LIST_EXAMPLES = examples("ramtag weights list", "ramtag weights list | grep installed")
DOWNLOAD_EXAMPLES = examples(
    "ramtag weights download --all                # RAM++ weights and CLIP (open-set tags)",
    "ramtag weights download clip-vit-b-16",
    "HF_ENDPOINT=https://hf-mirror.com ramtag weights download ram-plus-swin-l-14m",
)
IMPORT_EXAMPLES = examples(
    "ramtag weights import ram_plus_swin_large_14m.pth --name ram-plus --tag-list ram_tag_list.txt \\",
    "    --thresholds ram_tag_list_threshold.txt --tag-list-zh ram_tag_list_chinese.txt",
    "ramtag weights import runs/my-ram --name my-ram      # a ramtag weights folder",
    "ramtag weights import open_clip_model.safetensors --name clip-vit-b-16   # CLIP, brought by hand",
)
REMOVE_EXAMPLES = examples("ramtag weights remove my-ram", "ramtag weights remove ram-plus-swin-l-14m")


def weights_list() -> None:
    """Show the known weights and CLIP text encoder, which are installed, and their sizes."""
    from ..weights import _human, list_weights

    for info in list_weights():
        if info.installed:
            mark = f"[green]installed[/] ({_human(info.size)})"
        else:
            size = f"{'about ' if info.registered and info.size else ''}{_human(info.size)}"
            mark = f"[dim]not downloaded ({size})[/]"
        default = " [cyan](default)[/]" if info.default else ""
        out.print(f"[bold]{escape(info.name)}[/]{default}  {mark}  {escape(info.description or '')}")
        details = [
            d for d in (info.arch, f"{info.num_tags} tags" if info.num_tags else None, info.license) if d
        ]
        if details:
            out.print(f"    {escape(', '.join(details))}", highlight=False)
        if info.installed:
            out.print(f"    {escape(str(info.path))}", highlight=False)


def weights_download(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="Registry name (see `ramtag weights list`): RAM++ weights or clip-vit-b-16.",
            show_default="ram-plus-swin-l-14m",
        ),
    ] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all/--no-all",
            help="Everything the default setup uses: the default weights and CLIP ViT-B/16 (open-set tags).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force/--no-force", help="Download and convert again.")] = False,
    keep_download: Annotated[
        bool,
        typer.Option(
            "--keep-download/--no-keep-download", help="Keep the original .pth after converting it."
        ),
    ] = False,
) -> None:
    """Download weights (or the CLIP text encoder) from Hugging Face into the cache; weights are
    converted once. HF_ENDPOINT selects a Hub mirror."""
    from ..errors import UsageError
    from ..registry import DEFAULT_SETUP, DEFAULT_WEIGHTS
    from ..weights import download_weights

    if all_ and name is not None:
        raise UsageError("pass a NAME or --all, not both")
    for item in DEFAULT_SETUP if all_ else (name or DEFAULT_WEIGHTS,):
        path = download_weights(item, force=force, keep_download=keep_download)
        err.print(f"[green]ready:[/] {escape(item)} -> {escape(str(path))}", highlight=False)


def weights_import(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT",
            help="An official RAM++ .pth checkpoint, a ramtag weights folder, or with --name clip-vit-b-16 "
            "a CLIP ViT-B/16 file (open_clip_model.safetensors).",
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", help="Name to use with --weights (clip-vit-b-16 for a CLIP file).")
    ],
    tag_list: Annotated[
        Path | None,
        typer.Option(
            "--tag-list",
            metavar="FILE",
            help="Tag names, one per line (the official ram_tag_list.txt for the published model).",
            show_default="the registry entry's when --name is one; a folder keeps its own",
        ),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(
            "--thresholds",
            metavar="FILE",
            help="Per-tag thresholds, one per line (ram_tag_list_threshold.txt).",
            show_default="as --tag-list",
        ),
    ] = None,
    tag_list_zh: Annotated[
        Path | None,
        typer.Option(
            "--tag-list-zh",
            metavar="FILE",
            help="Chinese tag names (ram_tag_list_chinese.txt).",
            show_default="as --tag-list",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force/--no-force", help="Replace installed weights of the same name.")
    ] = False,
) -> None:
    """Import a checkpoint you already have (converted once to ramtag's format), or a CLIP file."""
    from ..registry import TEXT_ENCODERS
    from ..weights import import_checkpoint

    if name in TEXT_ENCODERS:  # a CLIP file: checked by the text stage, then copied
        from ..text.clip import import_clip

        path = import_clip(checkpoint, name=name, force=force)
        err.print(f"[green]imported:[/] {escape(name)} -> {escape(str(path))}", highlight=False)
        return
    path = import_checkpoint(
        checkpoint, tag_list=tag_list, thresholds=thresholds, tag_list_zh=tag_list_zh, name=name, force=force
    )
    err.print(f"[green]imported:[/] {escape(name)} -> {escape(str(path))}", highlight=False)


def weights_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Installed weights name, or clip-vit-b-16.")],
) -> None:
    """Delete installed weights from the cache."""
    from ..weights import remove_weights

    path = remove_weights(name)
    err.print(f"removed {escape(name)} ({escape(str(path))})", highlight=False)


app.command("list", cls=Command, epilog=LIST_EXAMPLES)(weights_list)
app.command("download", cls=Command, epilog=DOWNLOAD_EXAMPLES)(weights_download)
app.command("import", cls=Command, epilog=IMPORT_EXAMPLES)(weights_import)
app.command("remove", cls=Command, epilog=REMOVE_EXAMPLES)(weights_remove)
