"""What ``ramtag tag`` shows while it runs: a progress bar, a line per image, the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from ..formats import suffix_list
from .common import err, out, printable

if TYPE_CHECKING:
    from ..api import RunSummary, Selection, TagSettings
    from ..source import TaggerSource


PLAIN_EVERY = 30.0  # seconds between plain progress lines when stderr is not a terminal


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown"
    s = int(seconds)
    return (
        f"ETA {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"ETA {s // 60}:{s % 60:02d}"
    )


class PlainProgress:
    """Progress as a plain line every ``every`` seconds (log files, pipes, CI): ``what: done/total,
    rate, ETA``. Used where stderr is not a terminal; a rich bar would print nothing readable there."""

    def __init__(self, what: str, unit: str = "images", every: float | None = None) -> None:
        import time

        self.what, self.unit = what, unit
        self.every = PLAIN_EVERY if every is None else every
        self.total: int | None = None
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, done: int, total: int | None = None) -> None:
        import time

        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            err.print(self.line(now), highlight=False, markup=False)

    def line(self, now: float | None = None) -> str:
        import time

        elapsed = (now or time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        left = (self.total - self.done) / rate if rate > 0 and self.total is not None else None
        return f"{self.what}: {self.done}{of} {self.unit}, {rate:.1f} {self.unit}/s, {_eta(left)}"


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """images/s of the task (rich's speed estimate), blank until there is one."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} images/s" if speed else "", style="progress.data.speed")

    return RateColumn()


class _TagDisplay:
    """``ramtag tag``'s screen: the bar (or plain lines), a line per image, the dry run's would-writes."""

    def __init__(self, lang: str, *, dry_run: bool, quiet: bool, to_stdout: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.lang, self.dry_run, self.quiet, self.to_stdout = lang, dry_run, quiet, to_stdout
        self.bar = not quiet and err.is_terminal
        self.plain = PlainProgress("tagging") if not quiet and not err.is_terminal else None
        self.progress = Progress(
            TextColumn("[bold]tagging"),
            BarColumn(),
            MofNCompleteColumn(),
            _rate_column(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not self.bar,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task = self.progress.add_task("tag", total=None)

    def show(self, line: str, *, stdout: bool = True) -> None:
        # above the bar when the bar and the line share the screen; else where they belong
        if self.bar and (not stdout or out.is_terminal):
            self.progress.console.print(line, highlight=False)
        else:
            (out if stdout else err).print(line, highlight=False)

    def on_progress(self, event: str, done: int, total: int) -> None:
        if event == "discovered":
            self.progress.update(self.task, total=total)
            if self.plain is not None:
                self.plain.total = total
        elif event == "image":
            self.progress.update(self.task, completed=done)
            if self.plain is not None:
                self.plain.update(done, total)

    def on_result(self, res: Any) -> None:
        if self.to_stdout:
            line = json.dumps(res.to_dict(), ensure_ascii=False)
            if any("\ud800" <= c <= "\udfff" for c in line):  # a file name that is not UTF-8: \udcxx escapes
                line = json.dumps(res.to_dict())
            sys.stdout.write(line + "\n")
        elif res.ok and not self.quiet and not self.dry_run:  # a dry run shows the write instead
            names = escape(", ".join(res.tag_names(self.lang)) or "(no tag above threshold)")
            self.show(f"[bold]{escape(printable(res.path))}[/]: {names}")
        if not res.ok:
            reason = res.error or "failed"
            line = printable(reason if str(res.path) in reason else f"{res.path}: {reason}")
            self.show(f"[red]skipped[/] {escape(line)}", stdout=False)

    def on_write(self, outcome: Any) -> None:
        if not self.dry_run or self.quiet or self.to_stdout or outcome.path is None:
            return
        tags = escape(", ".join(outcome.tags) or "(no tags)")
        if outcome.action == "dry-run" and outcome.target is not None:
            self.show(f"[cyan]would write[/] {escape(printable(outcome.target))}: {tags}")
        elif outcome.action == "unchanged":
            why = outcome.message.split(": ", 1)[-1] if outcome.message else "nothing to write"
            self.show(f"[dim]would not write[/] {escape(printable(outcome.path))}: {escape(why)}")


def run_with_progress(
    paths: list[Path],
    tagger: TaggerSource,
    settings: TagSettings,
    *,
    force: bool,
    catalog: Path | None,
    quiet: bool,
    selection: Selection | None = None,
) -> RunSummary:
    """``api.tag_library`` with a progress bar on stderr (a plain line every 30 s when stderr is not a
    terminal) and one line per image on stdout, printed above the bar. A dry run prints one line per
    image: what the real run would write there, or why it would write nothing. JSON Lines go to stdout
    when ``settings.json_to_stdout``."""
    from .. import api

    opts, wopts = settings.tag, settings.write
    display = _TagDisplay(opts.lang, dry_run=wopts.dry_run, quiet=quiet, to_stdout=settings.json_to_stdout)
    with display.progress:
        return api.tag_library(
            paths,
            tagger,
            options=opts,
            write=wopts,
            force=force,
            catalog=catalog,
            progress=display.on_progress,
            on_result=display.on_result,
            on_write=display.on_write,
            selection=selection,
        )


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run summary as plain lines: what was found, tagged, written, skipped and why."""
    s = summary
    lines = []
    first = [f"{s.found} images found", f"{s.tagged} tagged"]
    if s.redecided:
        first.append(f"{s.redecided} re-decided from the catalog (no model)")
    if s.unchanged:
        first.append(f"{s.unchanged} unchanged since the last run (skipped; --force re-tags them)")
    lines.append(", ".join(first) + (f" ({s.images_per_second:.1f} images/s)" if s.tagged else ""))
    if s.tagged or s.redecided:
        if s.write_mode == "none":
            lines.append("  nothing written (--write none)")
        else:
            verb = "would be written" if s.dry_run else "written"
            parts = [f"{s.written} {verb}"]
            if s.up_to_date:
                parts.append(f"{s.up_to_date} already up to date")
            if s.no_tags:
                parts.append(f"{s.no_tags} with no tag above threshold (nothing written, no sidecar)")
            lines.append("  " + ", ".join(parts))
    if s.not_images:
        n = sum(s.not_images.values())
        lines.append(
            f"  skipped {n} {'file that is not an image' if n == 1 else 'files that are not images'} "
            f"({suffix_list(s.not_images)})"
        )
    lines.append(f"  {len(s.failed)} failed" + (" (listed below)" if s.failed else ""))
    if s.interrupted:
        saved = (
            "nothing was written (dry run)"
            if s.dry_run
            else "what was done is saved, re-run the same command to resume"
        )
        lines.append(f"interrupted: {s.done} done, {s.left} left; {saved}")
    return lines


def print_summary(summary: RunSummary) -> None:
    for note in summary.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for line in summary_lines(summary):
        err.print(line, highlight=False, markup=False)
    if summary.failed:
        err.print("[red]failed:[/]")
        for path, reason in summary.failed[:50]:
            err.print(f"  {reason if path in reason else f'{path}: {reason}'}", highlight=False, markup=False)
        if len(summary.failed) > 50:
            err.print(f"  ... and {len(summary.failed) - 50} more")


class Phases:
    """A long run told in phases (``ramtag bench``): a spinner with the phase on a terminal; else a
    line when each phase starts and one every 30 s while it runs, with the time elapsed."""

    def __init__(self, what: str, every: float | None = None) -> None:
        import threading
        import time

        self.what, self.every = what, PLAIN_EVERY if every is None else every
        self.name, self.start = "starting", time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ramtag-progress", daemon=True)
        self._status: Any = None

    def __call__(self, name: str) -> None:
        self.name = name
        if self._status is not None:
            self._status.update(f"{self.what}: {escape(name)}")
        else:
            err.print(self.line(), highlight=False, markup=False)

    def line(self) -> str:
        import time

        s = int(time.monotonic() - self.start)
        return f"{self.what}: {self.name} ({s // 60}:{s % 60:02d} elapsed)"

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            err.print(self.line(), highlight=False, markup=False)

    def __enter__(self) -> Phases:
        if err.is_terminal:
            self._status = err.status(f"{self.what}: {self.name}")
            self._status.start()
        else:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
        self._stop.set()


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


class _PlainDownloadBar:
    """A download on a log file or pipe: a line when it starts, one every 30 s, one when it ends."""

    def __init__(self, description: str, total: int | None, initial: int) -> None:
        self.description, self.total = description, total
        self.plain = PlainProgress(f"downloading {description}", unit="MB")
        self.bytes = initial
        size = f"{total / 1e6:.1f} MB" if total else "size unknown"
        resumed = f", resuming at {initial / 1e6:.1f} MB" if initial else ""
        err.print(f"downloading {description} ({size}{resumed})", highlight=False, markup=False)

    def update(self, n: int) -> None:
        self.bytes += n
        total = round(self.total / 1e6) if self.total else None
        self.plain.update(round(self.bytes / 1e6), total)

    def close(self) -> None:
        if self.total is None or self.bytes >= self.total:
            line = f"downloaded {self.description} ({self.bytes / 1e6:.1f} MB)"
        else:  # an attempt that failed: the next one (or the error) says what happens
            line = f"stopped {self.description} at {self.bytes / 1e6:.1f} of {self.total / 1e6:.1f} MB"
        err.print(line, highlight=False, markup=False)


def download_bar(description: str, total: int | None, initial: int) -> Any:
    """A rich download bar when stderr is a terminal; else a plain line every 30 s."""
    description = description.rsplit("/", 1)[-1]  # a path or URL: the file name
    if err.is_terminal:
        return _DownloadBar(description, total, initial)
    return _PlainDownloadBar(description, total, initial)
