"""``ramtag untag``: remove exactly the tags ramtag wrote (``ramtag.api.untag``); ``--run`` reverts
one run, ``--below`` drops low-scored tags (both from the catalog's record of what was written)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import UsageError
from .common import err, examples, out
from .flags import Catalog, UntagBackup

EXAMPLES = examples(
    "ramtag untag ~/Photos --dry-run        # what would be removed",
    "ramtag untag ~/Photos                  # sidecars and embedded tags (with exiftool)",
    "ramtag untag photo.jpg --sidecars-only",
    "ramtag untag --run last                # revert what the last run wrote (ids: ramtag runs)",
    "ramtag untag --below 0.8 ~/Photos      # drop the tags scored under 0.8",
)


def untag(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[PATH]...", help="Images, sidecars or folders.", show_default=False),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            metavar="ID",
            help="Revert what run ID wrote (an id, a unique prefix, or 'last').",
            show_default="none",
        ),
    ] = None,
    below: Annotated[
        float | None,
        typer.Option(
            "--below",
            metavar="SCORE",
            min=0.0,
            max=1.0,
            help="Remove the tags scored under SCORE.",
            show_default="none",
        ),
    ] = None,
    sidecars_only: Annotated[
        bool, typer.Option("--sidecars-only/--no-sidecars-only", help="Leave embedded metadata alone.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    backup: UntagBackup = True,
    catalog: Catalog = None,
) -> None:
    """Remove exactly the tags ramtag wrote; your own keywords stay."""
    from .. import api
    from ..catalog import default_catalog_path, open_catalog
    from ..catalog.untag import forget_untagged, untag_below, untag_run

    if run is not None and below is not None:
        raise UsageError("--run and --below: give one of them")
    if run is None and below is None and not paths:
        raise UsageError("give PATHs to untag, or --run ID, or --below SCORE")
    cat_path = catalog or default_catalog_path()
    if run is not None or below is not None:
        cat = open_catalog(cat_path)
        if run is not None:
            if paths:
                raise UsageError("--run reverts a whole run; leave out the PATHs")
            outcomes: Iterable[Any] = untag_run(cat, run, dry_run=dry_run, backup=backup)
        else:
            assert below is not None
            outcomes = untag_below(cat, below, paths or [], dry_run=dry_run, backup=backup)
        seen, failed = _report(outcomes, dry_run)
    else:
        assert paths is not None
        seen, failed = _report(
            api.untag(paths, sidecars_only=sidecars_only, dry_run=dry_run, backup=backup), dry_run
        )
        if not dry_run and cat_path.exists():
            forget_untagged(open_catalog(cat_path), seen)  # the catalog stays true: nothing written there now
    if failed:
        raise typer.Exit(1)


def _report(outcomes: Iterable[Any], dry_run: bool) -> tuple[list[Any], int]:
    failed = changed = 0
    seen = []
    for o in outcomes:
        seen.append(o)
        if o.action == "skipped":
            failed += 1
            err.print(f"[red]skipped[/] {escape(o.message)}", highlight=False)
        elif o.action in ("written", "dry-run", "deleted"):
            changed += 1
            verb = "would change" if dry_run else "changed"
            out.print(f"{verb}: {escape(o.message)}", highlight=False)
    files = "file" if changed == 1 else "files"
    err.print(f"{changed} {files} {'to change' if dry_run else 'changed'}, {failed} failed", highlight=False)
    return seen, failed
