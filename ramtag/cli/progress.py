"""What ``ramtag tag`` shows while it runs: a progress bar, a line per image, the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from .common import err, out, printable

if TYPE_CHECKING:
    from ..api import RunSummary, TagOptions, WriteOptions
    from ..source import TaggerSource


def run_with_progress(
    paths: list[Path],
    tagger: TaggerSource,
    opts: TagOptions,
    wopts: WriteOptions,
    *,
    force: bool,
    catalog: Path | None,
    quiet: bool,
    to_stdout: bool,
) -> RunSummary:
    """``api.tag_library`` with a progress bar on stderr and one line per image on stdout."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .. import api

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
    lang, dry_run = opts.lang, wopts.dry_run

    def on_progress(event: str, done: int, total: int) -> None:
        if event == "discovered":
            progress.update(task, total=total)
        elif event == "image":
            progress.update(task, completed=done)

    def on_result(res: Any) -> None:
        if to_stdout:
            sys.stdout.write(json.dumps(res.to_dict(), ensure_ascii=False) + "\n")
        elif res.ok and not quiet:
            names = ", ".join(res.tag_names(lang)) or "(no tags)"
            out.print(f"[bold]{escape(printable(res.path))}[/]: {escape(names)}", highlight=False)
        if not res.ok:
            reason = res.error or "failed"
            line = printable(reason if str(res.path) in reason else f"{res.path}: {reason}")
            progress.console.print(f"[red]skipped[/] {escape(line)}", highlight=False)

    def on_write(outcome: Any) -> None:
        if dry_run and outcome.action == "dry-run" and outcome.target is not None:
            progress.console.print(
                f"[cyan]would write[/] {escape(printable(outcome.target))}: "
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
            catalog=catalog,
            progress=on_progress,
            on_result=on_result,
            on_write=on_write,
        )


def print_summary(summary: RunSummary) -> None:
    for note in summary.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    parts = [f"{summary.found} images found", f"{summary.tagged} tagged"]
    if summary.redecided:
        parts.append(f"{summary.redecided} re-decided from the catalog")
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


class TrainBar:
    """``ramtag train``'s progress (``training.TrainProgress``): a bar with the losses, learning rate
    and ETA on a terminal; a plain line every 30 s when stderr is a log file or pipe."""

    EVERY = 30.0  # seconds between plain lines

    def __init__(self) -> None:
        self.bar: Any = None
        self.total, self.last = 0, 0.0

    def start(self, total: int, done: int) -> None:
        import time

        self.total, self.last = total, time.monotonic()
        if not err.is_terminal:
            err.print(f"train: {total} steps, starting at {done}", highlight=False, markup=False)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.task = self.bar.add_task("train", total=total, completed=done, info="")
        self.bar.start()

    def update(self, step: int, info: str) -> None:
        import time

        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        elif time.monotonic() - self.last >= self.EVERY:
            self.last = time.monotonic()
            err.print(f"train: step {step}/{self.total}  {info}", highlight=False, markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _DownloadBar:
    """A rich download bar on stderr (installed as `ramtag.hub`'s default by `ramtag.cli.app.main`)."""

    def __init__(self, description: str, total: int | None, initial: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=initial)

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()


def download_bar(description: str, total: int | None, initial: int) -> Any:
    """A rich download bar when stderr is a terminal; else ``ramtag.hub``'s log lines."""
    from ..hub import log_progress

    if err.is_terminal:
        return _DownloadBar(description, total, initial)
    return log_progress(description, total, initial)
