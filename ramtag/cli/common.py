"""What the command modules share: the consoles, the option types, logging, examples and tables.

No torch here (``ramtag --help`` stays instant); command modules import the library inside the command.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..errors import printable
from ..options import PRECISIONS
from ..writers import WRITERS

try:  # typer >= 0.22 vendors its own click; its commands, options and errors are those classes
    from typer._click import core as click_core
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the click package
    from click import core as click_core  # type: ignore[no-redef]
    from click import exceptions as click_errors  # type: ignore[no-redef]

UsageErrors = click_errors.UsageError  # bad option, value or argument: click/typer found it
NoArgsIsHelp = getattr(click_errors, "NoArgsIsHelpError", ())  # `ramtag` alone: show the help


class _SafeConsole(Console):
    """Escapes control characters in every string it prints: file names and LLM answers come from
    outside, and an ESC in them would otherwise drive the user's terminal."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(
            *(printable(o, keep_newlines=True) if isinstance(o, str) else o for o in objects), **kwargs
        )


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep_newlines=True)


err = _SafeConsole(stderr=True, soft_wrap=True)
out = _SafeConsole(highlight=False, soft_wrap=True)


class _State:
    verbose = False  # set by setup_logging; main() shows tracebacks of library errors only then


state = _State()


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    state.verbose = verbose
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s: %(message)s"))  # names from outside: escaped
    logging.basicConfig(level=level, handlers=[handler])


def _words(param: Any, show_default_is_str: bool, typer_default: Any) -> str:
    # a default given as words reads [default: words] (typer would add parentheses)
    return str(param.show_default) if show_default_is_str else typer_default()


class _Option(TyperOption):
    """An option in ``--help``: a flag reads ``--flag/--no-flag`` alone (typer would add ``<bool>``)."""

    def display_type_rich(self, ctx: click_core.Context) -> str | None:
        return None if self.is_flag and not self.count else super().display_type_rich(ctx)

    def _get_default_string(self, *, ctx: Any, show_default_is_str: bool, default_value: Any) -> str:
        sup = super()._get_default_string
        return _words(
            self,
            show_default_is_str,
            lambda: sup(ctx=ctx, show_default_is_str=False, default_value=default_value),
        )


class _Argument(TyperArgument):
    """An argument reads as its metavar (``PATH``), without typer's ``<list[Path]>``."""

    def display_type_rich(self, ctx: click_core.Context) -> str | None:
        return None

    def _get_default_string(self, *, ctx: Any, show_default_is_str: bool, default_value: Any) -> str:
        sup = super()._get_default_string
        return _words(
            self,
            show_default_is_str,
            lambda: sup(ctx=ctx, show_default_is_str=False, default_value=default_value),
        )


def _plain_flags(params: Iterable[click_core.Parameter]) -> None:
    for p in params:
        if type(p) is TyperOption:
            p.__class__ = _Option
        elif type(p) is TyperArgument:
            p.__class__ = _Argument
        elif getattr(p, "is_flag", False):  # click's own --help
            p.metavar = ""


class _PlainFlagsMixin:
    """Flags shown as ``--flag/--no-flag`` only (no ``<bool>``), the help option included."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

    def get_help_option(self, ctx: click_core.Context) -> Any:
        opt = super().get_help_option(ctx)  # type: ignore[misc]
        _plain_flags([opt] if opt is not None else [])
        return opt


class Command(_PlainFlagsMixin, TyperCommand):
    """typer's command with plain flags."""


class Group(_PlainFlagsMixin, TyperGroup):
    """The same for command groups (``ramtag``, ``ramtag weights``)."""


def examples(*lines: str) -> str:
    """A command's help epilog: its examples, one per line, as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


# -- option types shared by several commands ------------------------------------------------------


def _choices(name: str, values: Iterable[str]) -> Any:
    # a str Enum built from a list kept elsewhere, so the names are written once (writers, precisions)
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


WriteMode = _choices("WriteMode", WRITERS)  # the writers registry: one entry there = one --write choice


SidecarName = _choices("SidecarName", ("ext", "replace"))  # (an Enum member may not be called "replace")


class Lang(str, Enum):
    en = "en"
    zh = "zh"


class Device(str, Enum):
    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


# Built from ramtag.options.PRECISIONS, the one list of precision names (member names: '-' -> '_').
TagPrecision = Enum(  # type: ignore[misc]
    "TagPrecision", {name.replace("-", "_"): name for name in PRECISIONS}, type=str
)
TagPrecision.__doc__ = "Tagging precisions (ramtag.options.PRECISIONS)."
# Training and evaluation have no bf16-checked (it is a tagging-time re-check).
Precision = Enum(  # type: ignore[misc]
    "Precision", {name: name for name in PRECISIONS if name != "bf16-checked"}, type=str
)

AUTO_TAG_PRECISION = TagPrecision("auto")
AUTO_PRECISION = Precision("auto")


def value(choice: Any) -> Any:
    """An Enum choice's string (None stays None)."""
    return None if choice is None else choice.value


# -- tables that fit the terminal, or plain rows when piped -------------------------------------


@dataclass
class Rows:
    """A table to show: a rich table on a terminal, tab-separated lines (header first) otherwise."""

    title: str
    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    left: int = 1  # how many leading columns are text (left-aligned); the rest are numbers

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])


def show(blocks: Iterable[Rows | Text], console: Console | None = None) -> None:
    """Print report blocks: tables that fit the terminal, or plain rows when stdout is not a terminal."""
    console = console or out
    for block in blocks:
        if console.is_terminal:
            console.print(block if isinstance(block, Text) else _table(block))
        elif isinstance(block, Text):
            console.file.write(block.plain + "\n")
        else:
            # no rich table when piped: it would be cut at 80 columns ("spl...") and be hard to parse
            lines = [f"# {block.title}", *("\t".join(row) for row in (block.header, *block.rows))]
            console.file.write("\n".join(lines) + "\n")


def _table(block: Rows) -> Table:
    table = Table(title=block.title, title_justify="left")
    for i, col in enumerate(block.header):
        table.add_column(col, justify="left" if i < block.left else "right", overflow="fold")
    for row in block.rows:
        table.add_row(*row)
    return table


# -- the catalog ----------------------------------------------------------------------------------

QueryPaths = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[PATH]...", help="Only images under these folders (or these files).", show_default=False
    ),
]


def open_catalog_readonly(path: Path | None) -> Any:
    """The catalog to answer questions from (never written by these commands)."""
    from ..catalog import open_catalog

    return open_catalog(path, readonly=True)


def write_binary(data: bytes) -> None:
    """Bytes to stdout as they are (paths that are not UTF-8 stay intact for xargs -0)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
