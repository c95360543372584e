"""``ramtag query`` and ``ramtag export``: answers from the catalog, for scripts (no model, no torch)."""

from __future__ import annotations

import io
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import QueryPaths, examples, open_catalog_readonly, write_binary
from .flags import Catalog

EXAMPLES = examples(
    "ramtag query 'dog & (beach | sea) & !person' ~/Photos     # one path per line",
    "ramtag query 'sunset>=0.8' -0 | xargs -0 cp -t ~/best/      # NUL-separated, any file name",
    "ramtag query '\"sea lion\" | seal' --format csv > seals.csv",
)
EXPORT_EXAMPLES = examples(
    "ramtag export --format csv > library.csv                  # every image, its tags and scores",
    "ramtag export ~/Photos/2024 --query dog --format jsonl -o dogs.jsonl",
)
QUERY_HELP = (
    "Tags joined with & (and), | (or), ! (not) and parentheses; 'tag>=0.8' asks for a score (also under "
    "the tag's threshold); quote names with spaces or write them as they are: sea lion."
)


class Format(str, Enum):
    paths = "paths"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"


def query(
    expr: Annotated[str, typer.Argument(metavar="EXPR", help=QUERY_HELP)],
    paths: QueryPaths = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="How to print the matches.")] = Format.paths,
    nul: Annotated[
        bool,
        typer.Option("--null/--no-null", "-0", help="Paths end with NUL instead of a newline (xargs -0)."),
    ] = False,
    catalog: Catalog = None,
) -> None:
    """Print the images whose tags match EXPR (from the catalog; nothing is re-tagged)."""
    from ..catalog.export import write_records

    cat = open_catalog_readonly(catalog)
    if fmt is Format.paths:
        keys = cat.paths_of(cat.query_ids(expr, paths or []))
        end = b"\0" if nul else b"\n"
        write_binary(b"".join(k + end for k in keys))
        return
    buf = io.BytesIO()
    write_records(cat.query(expr, paths or []), buf, fmt.value, nul=nul)
    write_binary(buf.getvalue())


def export(
    paths: QueryPaths = None,
    expr: Annotated[
        str | None,
        typer.Option(
            "--query", "-q", metavar="EXPR", help="Only the images matching EXPR.", show_default="every image"
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="File format.")] = Format.csv,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here.", show_default="stdout")
    ] = None,
    catalog: Catalog = None,
) -> None:
    """Write the catalog (or a query's matches) as CSV, TSV or JSON Lines: path, tags, scores."""
    from ..catalog.export import write_records
    from ..writers.atomic import AtomicFile

    cat = open_catalog_readonly(catalog)
    ids = cat.query_ids(expr, paths or []) if expr else cat.image_ids(paths or [])
    records = cat.records(ids)
    if output is None:
        buf = io.BytesIO()
        n = write_records(records, buf, fmt.value)
        write_binary(buf.getvalue())
    else:
        with AtomicFile(output) as f:
            n = write_records(records, f.file, fmt.value)  # type: ignore[arg-type]
    print(f"{n} images exported", file=sys.stderr)
