"""The ``ramtag`` typer app, built from one module per command, and :func:`main`: the one place where
errors become a red line and an exit code (1 for failures, 2 for usage errors, 130 for Ctrl-C)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import RamtagError, os_cause
from . import albums, bench, describe, evaluate, query, stats, tag, tags, train, untag, weights
from .common import Command, Group, NoArgsIsHelp, UsageErrors, err, examples, out, state

app = typer.Typer(
    cls=Group,
    name="ramtag",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=examples(
        "ramtag tag ~/Photos                  # XMP sidecars with the 4,585 RAM++ tags",
        "ramtag tag ~/Photos --write embed    # into the files (exiftool; keeps *_original)",
        "ramtag COMMAND --help                # every option of a command",
    ),
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

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


app.command("tag", cls=Command, epilog=tag.EXAMPLES)(tag.tag)
app.command("untag", cls=Command, epilog=untag.EXAMPLES)(untag.untag)
app.command("query", cls=Command, epilog=query.EXAMPLES)(query.query)
app.command("export", cls=Command, epilog=query.EXPORT_EXAMPLES)(query.export)
app.command("albums", cls=Command, epilog=albums.EXAMPLES)(albums.albums)
app.command("stats", cls=Command, epilog=stats.EXAMPLES)(stats.stats)
app.command("runs", cls=Command, epilog=stats.RUNS_EXAMPLES)(stats.runs)
app.command("tags", cls=Command, epilog=tags.EXAMPLES)(tags.tags)
app.command("describe", cls=Command, epilog=describe.EXAMPLES)(describe.describe)
app.command("bench", cls=Command, epilog=bench.EXAMPLES)(bench.bench)
app.command("train", cls=Command, epilog=train.EXAMPLES)(train.train)
app.command("eval", cls=Command, epilog=evaluate.EXAMPLES)(evaluate.eval_)
app.add_typer(weights.app, name="weights")


def _usage_line(e: UsageErrors) -> str:
    """click's usage error as one line, without pydantic's "Value error," and with where to look."""
    message = e.format_message().replace("Value error, ", "")
    command = e.ctx.command_path if e.ctx is not None else "ramtag"
    return f"{message} (see '{command} --help')"


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: the one place where errors become exit codes."""
    from ..hub import set_default_progress
    from .progress import download_bar

    set_default_progress(download_bar)  # downloads draw a bar here; the library only logs
    try:
        code = app(args=args, standalone_mode=False)
    except UsageErrors as e:  # bad option, missing argument, bad choice: click found it
        if isinstance(e, NoArgsIsHelp):  # the help was printed when the error was made
            sys.exit(e.exit_code)
        err.print(f"[red]error:[/] {escape(_usage_line(e))}", highlight=False)
        sys.exit(2)
    except typer.Abort:
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except RamtagError as e:
        if state.verbose:
            err.print_exception()
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except OSError as e:  # a disk or permission error no layer below named: still one line (issue 12)
        if state.verbose:
            err.print_exception()
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[red]error:[/] {escape(f'{where}{os_cause(e)}')}", highlight=False)
        sys.exit(1)
    finally:
        set_default_progress(None)  # in-process callers (tests, embedders) get the library's default back
    if code == 130:  # typer turns Ctrl-C into exit code 130
        err.print("[red]interrupted[/]")
    sys.exit(code or 0)
