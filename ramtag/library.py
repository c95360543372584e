"""``tag_library``: what ``ramtag tag`` runs, as a few small steps.

    files -> shard (torchrun) -> skip what is done -> tag -> background writer -> summary

Each step is a function of its own. "Skip what is done" and "record as done" are
:func:`open_done_record`, :func:`skip_done` and :func:`record_done`: the only three places that know
how the incremental record is kept.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OutputError, RamtagError, os_cause, printable
from .options import TagOptions, WriteOptions
from .results import ImageTags

if TYPE_CHECKING:
    from .state import StateDB
    from .tagger import Tagger
    from .writers import TagWriter

log = logging.getLogger(__name__)

__all__ = [
    "Interrupted",
    "ProgressFn",
    "ResultFn",
    "RunSummary",
    "Selection",
    "WriteFn",
    "select_files",
    "tag_library",
]

ProgressFn = Callable[[str, int, int], None]  # (event, done, total); events: "discovered", "image", "written"
ResultFn = Callable[[ImageTags], None]
WriteFn = Callable[[Any], None]  # called with each ramtag.writers.WriteOutcome


@dataclass
class RunSummary:
    """What ``tag_library`` did."""

    found: int = 0  # image files found
    tagged: int = 0  # images run through the model
    unchanged: int = 0  # images skipped because they were tagged before with the same settings
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    written: int = 0  # sidecars / files written or updated (dry run: that would be)
    up_to_date: int = 0  # tagged images whose output already held these tags (nothing rewritten)
    no_tags: int = 0  # tagged images with no tag above threshold, so nothing written (no sidecar)
    not_images: dict[str, int] = field(default_factory=dict)  # files in folders left out: suffix -> count
    to_tag: int = 0  # images this run set out to tag (after skipping unchanged ones)
    processed: int = 0  # of those, how many went through the model (tagged or failed)
    write_mode: str = "xmp"  # WriteOptions.mode of the run
    dry_run: bool = False  # nothing was written
    interrupted: bool = False  # stopped by Ctrl-C; what was written is recorded, a re-run resumes
    seconds: float = 0.0  # wall time of the run
    notes: list[str] = field(default_factory=list)  # one-line notes for the user

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def left(self) -> int:
        """Images of this run not tagged yet (non-zero after an interruption)."""
        return max(0, self.to_tag - self.processed)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`tag_library`: raised after what was tagged is written and recorded;
    ``summary`` says what was done (a re-run resumes with the rest)."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


@dataclass
class Selection:
    """The files a run will look at, found before any model loads (see :func:`select_files`)."""

    files: list[Path]  # image files, in order
    skipped: list[tuple[str, str]]  # (path, one-line reason): named paths that cannot be tagged
    not_images: dict[str, int]  # files in folders that are not images: suffix ("" if none) -> count


def select_files(paths: Sequence[str | Path], opts: TagOptions | None = None) -> Selection:
    """Walk ``paths`` (no model needed): the images to tag, what was skipped and why."""
    from .discover import Skipped, discover

    opts = opts or TagOptions()
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    others: dict[str, int] = {}

    def other(path: Path) -> None:
        suffix = path.suffix.lower()
        others[suffix] = others.get(suffix, 0) + 1

    for item in discover(paths, recursive=opts.recursive, include_hidden=opts.include_hidden, on_other=other):
        if isinstance(item, Skipped):
            skipped.append((str(item.path), item.reason))
        else:
            files.append(item)
    return Selection(files, skipped, others)


def tag_library(
    paths: Sequence[str | Path],
    tagger: Tagger,
    *,
    options: TagOptions | None = None,
    write: WriteOptions | None = None,
    force: bool = False,
    use_state: bool = True,
    state_db: Path | None = None,
    progress: ProgressFn | None = None,
    on_result: ResultFn | None = None,
    on_write: WriteFn | None = None,
    selection: Selection | None = None,
) -> RunSummary:
    """Tag every image under ``paths`` and write the tags; what ``ramtag tag`` runs.

    Skips files tagged before with the same settings (unless ``force``), overlaps writing with
    compute on a writer thread, shards the file list across torchrun ranks, and never stops on a
    bad file: each failure is counted in the summary with a one-line reason. ``selection``: the
    files already found by :func:`select_files` (then ``paths`` is not walked again).
    On Ctrl-C, what was tagged is written and recorded first, then :class:`Interrupted` is raised
    with the summary.
    """
    from .distributed import dist_info

    opts = options or TagOptions()
    wopts = write or WriteOptions()
    t0 = time.perf_counter()
    summary = RunSummary()
    rank, world, _ = dist_info()

    summary.write_mode, summary.dry_run = wopts.mode, wopts.dry_run
    files = find_files(paths, opts, summary, selection)
    summary.found = len(files)
    files = shard_files(files, rank, world)
    if progress:
        progress("discovered", 0, len(files))
    json_path = rank_json_path(wopts, rank, world)
    record = open_done_record(tagger, opts, wopts, json_path, state_db) if use_state else None
    try:
        if record is not None:
            files, summary.unchanged = skip_done(files, record, force=force)
        summary.to_tag = len(files)
        run_writer = make_run_writer(tagger, opts, wopts, json_path)
        writer = BackgroundWriter(run_writer, summary, record, on_write=on_write, progress=progress)
        try:
            tag_files(files, tagger, opts, summary, writer.put, on_result=on_result, progress=progress)
        except KeyboardInterrupt:  # write and record what is done (below), then say so
            summary.interrupted = True
        finally:
            writer.close()
    finally:
        if record is not None:
            record.close()
    summary.failed.extend(writer.errors)
    finish(summary, tagger, wopts, world, t0)
    if summary.interrupted:
        raise Interrupted(summary)
    return summary


# ---------------------------------------------------------------------------------- the steps


def find_files(
    paths: Sequence[str | Path], opts: TagOptions, summary: RunSummary, selection: Selection | None = None
) -> list[Path]:
    """The image files under ``paths``; what cannot be walked goes to ``summary.failed``, files that
    are not images to ``summary.not_images``."""
    selection = selection or select_files(paths, opts)
    summary.failed.extend(selection.skipped)
    summary.not_images = dict(selection.not_images)
    return list(selection.files)


def shard_files(files: list[Path], rank: int, world: int) -> list[Path]:
    """This torchrun rank's share of ``files`` (all of them without torchrun)."""
    if world <= 1:
        return files
    from .distributed import shard

    return shard(files, rank, world)


def rank_json_path(wopts: WriteOptions, rank: int, world: int) -> Path | None:
    """The JSON Lines file this rank writes: ``--json`` (per-rank part under torchrun), or the
    default file for ``--write json``."""
    from .distributed import rank_path
    from .writers.jsonl import DEFAULT_JSONL

    json_path = wopts.json_path
    if world > 1 and json_path is not None:
        json_path = rank_path(json_path, rank)
    if wopts.mode == "json" and json_path is None:
        json_path = Path(DEFAULT_JSONL)
    return json_path


def make_run_writer(
    tagger: Tagger, opts: TagOptions, wopts: WriteOptions, json_path: Path | None
) -> TagWriter:
    from .writers import make_writer

    return make_writer(
        wopts.mode,
        sidecar_name=wopts.sidecar_name,
        hierarchy_root=wopts.hierarchy_root,
        lang=opts.lang,
        dry_run=wopts.dry_run,
        backup=wopts.backup,
        repair_sidecars=wopts.repair_sidecars,
        json_path=json_path,
        all_scores=opts.all_scores,
        model=tagger.name,
    )


def tag_files(
    files: Sequence[Path],
    tagger: Tagger,
    opts: TagOptions,
    summary: RunSummary,
    put: Callable[[ImageTags], None],
    *,
    on_result: ResultFn | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Run ``files`` through the model; each result is counted, reported and handed to ``put``."""
    for done, res in enumerate(tagger.tag(files, opts), 1):
        summary.processed = done
        if res.ok:
            summary.tagged += 1
        else:
            summary.failed.append((str(res.path), res.error or "failed"))
        if on_result:
            on_result(res)
        put(res)
        if progress:
            progress("image", done, len(files))


def finish(summary: RunSummary, tagger: Tagger, wopts: WriteOptions, world: int, t0: float) -> None:
    """Merge the ranks' JSON Lines, collect the notes, time the run, log what bf16-checked did."""
    if world > 1 and wopts.json_path is not None:
        from .distributed import gather_jsonl

        gather_jsonl(wopts.json_path, world)
    summary.notes = list(dict.fromkeys(tagger.notes + summary.notes))
    summary.seconds = time.perf_counter() - t0
    if tagger.runner.checked:
        st = tagger.runner.recheck_stats
        log.info(
            "bf16-checked: %d of %d images had tags within %.3g logit of a threshold, re-decided in fp32 "
            "(%d pairs, %.1f s; largest bf16 error %.3g logit)",
            st.rechecked_images,
            st.images,
            st.margin,
            st.rechecked_pairs,
            st.seconds,
            st.max_error,
        )


# ------------------------------------------------------------------- what was done before


@dataclass
class DoneRecord:
    """Where this run records the images it finished, under which settings key."""

    state: StateDB
    key: str

    def close(self) -> None:
        self.state.close()


def open_done_record(
    tagger: Tagger,
    opts: TagOptions,
    wopts: WriteOptions,
    json_path: Path | None,
    state_db: Path | None = None,
) -> DoneRecord | None:
    """The incremental record of this run, or None when nothing is written (dry runs, ``--write none``)."""
    if wopts.dry_run or wopts.mode == "none":
        return None
    from .state import StateDB, settings_key

    key = settings_key(
        **tagger.settings(opts),
        write_mode=wopts.mode,
        json=str(json_path or ""),
        sidecar_name=wopts.sidecar_name,
        hierarchy_root=wopts.hierarchy_root,
    )
    return DoneRecord(StateDB(state_db) if state_db else StateDB(), key)


def skip_done(files: list[Path], record: DoneRecord, *, force: bool = False) -> tuple[list[Path], int]:
    """(the files still to tag, how many were done before with the same settings)."""
    return record.state.filter(files, record.key, force=force)


def record_done(record: DoneRecord, path: Path) -> None:
    """Record ``path`` as done; called only after its output is written."""
    record.state.mark_done(path, None, record.key)


# ----------------------------------------------------------------------- background writer


class BackgroundWriter:
    """Writes results on a thread of its own, so writing overlaps the model's compute.

    ``put`` hands it a result (blocking when 256 are queued); ``close`` waits for the queue, closes
    the writer. Write failures go to ``errors`` (path, one-line reason), never stop the run.
    """

    def __init__(
        self,
        writer: TagWriter,
        summary: RunSummary,
        record: DoneRecord | None = None,
        *,
        on_write: WriteFn | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.writer, self.summary, self.record = writer, summary, record
        self.on_write, self.progress = on_write, progress
        self.errors: list[tuple[str, str]] = []
        self._recorded: list[Path] = []  # recorded as done by this run (forgotten if close() fails)
        self._queue: queue.Queue[ImageTags | None] = queue.Queue(maxsize=256)
        self._thread = threading.Thread(target=self._loop, name="ramtag-writer", daemon=True)
        self._thread.start()

    def put(self, result: ImageTags) -> None:
        self._queue.put(result)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            self.writer.close()
        except (RamtagError, OSError) as e:  # e.g. the JSON Lines file could not be moved into place
            if self.record is not None:  # what this run recorded is not durable after all: redo it next time
                self.record.state.forget(self._recorded, self.record.key)
            msg = (
                str(e) if isinstance(e, RamtagError) else str(OutputError.from_os(e, e.filename or "output"))
            )
            self.errors.append(("", msg))

    def _loop(self) -> None:
        while (res := self._queue.get()) is not None:
            try:
                self.write_one(res)
            except RamtagError as e:
                self.errors.append((str(res.path), str(e)))
            except OSError as e:  # a write site that did not name its file: still one line, counted once
                self.errors.append((str(res.path), str(OutputError.from_os(e, res.path))))
            except Exception as e:  # a writer bug must not lose the rest of the run
                log.exception("writing %s failed", res.path)
                self.errors.append((str(res.path), f"writing failed: {e}"))
            finally:
                if self.progress:
                    self.progress("written", 1, 0)

    def write_one(self, res: ImageTags) -> None:
        """Write one result; count it; record it as done once its output is written."""
        outcome = self.writer.write(res)
        if self.on_write is not None:
            self.on_write(outcome)
        if not res.ok:
            return
        if outcome.action == "skipped":
            self.errors.append((str(res.path), outcome.message))
            return
        self.summary.written += outcome.action in ("written", "fallback-sidecar", "dry-run")
        if outcome.action == "unchanged":
            if res.tags:
                self.summary.up_to_date += 1
            else:
                self.summary.no_tags += 1
        if outcome.action == "fallback-sidecar" and outcome.message:
            self.summary.notes.append(outcome.message)
        if self.record is not None and res.path is not None:
            try:
                record_done(self.record, res.path)
                self._recorded.append(res.path)
            except (OSError, sqlite3.Error) as e:  # the tags are written: one note, stop recording
                cause = os_cause(e) if isinstance(e, OSError) else printable(str(e))
                self.summary.notes.append(
                    f"{printable(self.record.state.path)}: cannot record progress ({cause}); the tags were "
                    "written, but the next run checks these images again"
                )
                self.record = None
