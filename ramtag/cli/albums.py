"""``ramtag albums``: a folder of links to the photos matching a query, made or refreshed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import QueryPaths, err, examples, open_catalog_readonly, out
from .flags import Catalog
from .query import QUERY_HELP

EXAMPLES = examples(
    "ramtag albums 'dog & beach' --to ~/Albums/dogs-at-the-beach     # symbolic links",
    "ramtag albums 'sunset>=0.9' ~/Photos/2024 --to ~/Albums/sunsets --hardlink",
)


def albums(
    expr: Annotated[str, typer.Argument(metavar="EXPR", help=QUERY_HELP)],
    paths: QueryPaths = None,
    to: Annotated[
        Path, typer.Option("--to", metavar="FOLDER", help="The album folder (made if missing).")
    ] = ...,  # type: ignore[assignment]
    hardlink: Annotated[
        bool,
        typer.Option(
            "--hardlink/--no-hardlink", help="Hard links (same filesystem) instead of symbolic links."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="Show the changes; make none.")
    ] = False,
    catalog: Catalog = None,
) -> None:
    """Make or refresh FOLDER as links to the matching photos; only links ramtag made are ever removed."""
    from ..catalog.albums import make_album

    res = make_album(
        open_catalog_readonly(catalog), expr, to, paths=paths or [], hardlink=hardlink, dry_run=dry_run
    )
    verb = "would " if dry_run else ""
    for name in res.added:
        out.print(f"{verb}add {escape(name)}", highlight=False)
    for name in res.removed:
        out.print(f"{verb}remove {escape(name)}", highlight=False)
    for what, why in res.skipped:
        err.print(f"[yellow]left alone[/] {escape(what)}: {escape(why)}", highlight=False)
    err.print(
        f"{res.folder}: {res.matched} matches, {len(res.added)} added, {len(res.removed)} removed, "
        f"{res.kept} kept",
        highlight=False,
        markup=False,
    )
