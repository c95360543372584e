"""``ramtag untag``: remove exactly the tags ramtag wrote (``ramtag.api.untag``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import err, examples, out

EXAMPLES = examples(
    "ramtag untag ~/Photos --dry-run        # what would be removed",
    "ramtag untag ~/Photos                  # sidecars and embedded tags (with exiftool)",
    "ramtag untag photo.jpg --sidecars-only",
)


def untag(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="Images, sidecars or folders.")],
    sidecars_only: Annotated[
        bool, typer.Option("--sidecars-only/--no-sidecars-only", help="Leave embedded metadata alone.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    backup: Annotated[
        bool, typer.Option("--backup/--no-backup", help="Embedded tags: keep exiftool's *_original copy.")
    ] = True,
) -> None:
    """Remove exactly the tags ramtag wrote; your own keywords stay."""
    from .. import api

    failed = changed = 0
    for o in api.untag(paths, sidecars_only=sidecars_only, dry_run=dry_run, backup=backup):
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
