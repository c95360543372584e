"""``tag_library``: what ``ramtag tag`` runs, as a few small steps.

    files -> shard (torchrun) -> ask the catalog what is done -> decide again from stored scores
          -> tag the rest with the model -> background writer -> record in the catalog -> summary

The catalog (:mod:`ramtag.catalog`) is the record of what was done: an image is skipped only when
the output the current settings ask for is still there with the content that was written; when
only deciding settings changed (thresholds, top-k, renames, language, hierarchy root, output mode)
its tags are decided again from the stored scores, so a run that needs no new scores never loads the
model or imports torch. Nothing is recorded before its output is durable: a batch of sidecars is
committed together (each atomic and fsynced, :class:`~ramtag.fsutil.AtomicBatch`) and the JSON Lines
are fsynced (:meth:`JsonlWriter.sync`) before the batch is recorded.
:class:`RunBook` is the one place that knows how this run reads and writes the catalog.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .errors import OutputError, RamtagError, os_cause, printable
from .options import TagOptions, WriteOptions
from .results import ImageTags, ScoreMap

if TYPE_CHECKING:
    from .catalog import Catalog
    from .catalog.sync import Plan, Wanted
    from .source import TaggerSource
    from .tagger import Tagger
    from .writers import TagWriter
    from .writers.jsonl import JsonlWriter

log = logging.getLogger(__name__)

__all__ = [
    "Interrupted",
    "ProgressFn",
    "ResultFn",
    "RunBook",
    "RunSummary",
    "Selection",
    "WriteFn",
    "select_files",
    "select_or_fail",
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
    unchanged: int = 0  # images skipped: their outputs are there, as these settings would write them
    redecided: int = 0  # images whose tags were decided again from the catalog's scores (no model)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    written: int = 0  # sidecars / files written or updated (dry run: that would be)
    up_to_date: int = 0  # tagged images whose output already held these tags (nothing rewritten)
    no_tags: int = 0  # tagged images with no tag above threshold, so nothing written (no sidecar)
    not_images: dict[str, int] = field(default_factory=dict)  # files in folders left out: suffix -> count
    to_tag: int = 0  # images this run set out to tag (after skipping unchanged ones)
    processed: int = 0  # of those, how many went through the model (tagged or failed)
    to_redecide: int = 0  # images this run set out to decide again from stored scores
    write_mode: str = "xmp"  # WriteOptions.mode of the run
    dry_run: bool = False  # nothing was written
    interrupted: bool = False  # stopped by Ctrl-C; what was written is recorded, a re-run resumes
    seconds: float = 0.0  # wall time of the run
    notes: list[str] = field(default_factory=list)  # one-line notes for the user
    run: str = ""  # the catalog's id of this run ("" when nothing is recorded)
    model_loaded: bool = False  # whether the model was needed

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def done(self) -> int:
        """Images of this run tagged, failed or decided again so far."""
        return self.processed + self.redecided

    @property
    def left(self) -> int:
        """Images of this run not tagged or decided again yet (non-zero after an interruption)."""
        return max(0, self.to_tag - self.processed) + max(0, self.to_redecide - self.redecided)


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


def select_or_fail(paths: Sequence[str | Path], opts: TagOptions | None = None) -> Selection:
    """:func:`select_files`, where a missing path (a typo: a UsageError) or nothing to tag (an
    InputError naming what was found instead) fails before any model loads."""
    from .errors import InputError, UsageError
    from .formats import suffix_list

    missing = [p for p in paths if not os.path.lexists(p)]  # a typo; broken links are reported per file
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder; check the path")
    opts = opts or TagOptions()
    selection = select_files(paths, opts)
    if not selection.files:
        what = [f"{p}: {r}" for p, r in selection.skipped[:3]]
        n = sum(selection.not_images.values())
        if n:
            what.append(
                f"{n} {'file that is not an image' if n == 1 else 'files that are not images'} "
                f"({suffix_list(selection.not_images)})"
            )
        hint = "" if opts.recursive else "; --recursive walks sub-folders"
        found = "; ".join(what) or "empty"
        raise InputError(f"no images to tag in {', '.join(map(str, paths))} ({found}){hint}")
    return selection


def tag_library(
    paths: Sequence[str | Path],
    tagger: Tagger | TaggerSource,
    *,
    options: TagOptions | None = None,
    write: WriteOptions | None = None,
    force: bool = False,
    use_catalog: bool = True,
    catalog: Path | None = None,
    progress: ProgressFn | None = None,
    on_result: ResultFn | None = None,
    on_write: WriteFn | None = None,
    use_state: bool | None = None,
    state_db: Path | None = None,
    selection: Selection | None = None,
) -> RunSummary:
    """Tag every image under ``paths`` and write the tags; what ``ramtag tag`` runs.

    ``tagger``: a loaded :class:`Tagger`, or a :class:`~ramtag.source.TaggerSource` that loads the
    model only if some image needs new scores. ``catalog``: the catalog file (default: the one in the
    ramtag cache); ``use_catalog=False`` tags everything and records nothing. ``use_state`` /
    ``state_db`` are the old names of ``use_catalog`` / ``catalog``. Overlaps writing with compute
    on a writer thread, shards the files across torchrun ranks, and never stops on a bad file.
    ``selection``: the files already found by :func:`select_files` (then ``paths`` is not walked
    again). On Ctrl-C, what was tagged is written and recorded first, then :class:`Interrupted` is
    raised with the summary.
    """
    from .distributed import dist_info
    from .source import TaggerSource
    from .tags.rename import rename_columns

    use_catalog = use_catalog if use_state is None else use_state
    catalog = catalog if catalog is not None else state_db
    source = tagger if isinstance(tagger, TaggerSource) else TaggerSource.of(tagger)
    opts = options or TagOptions()
    wopts = write or WriteOptions()
    rename_columns(opts.rename, source.vocabulary)  # a misspelt --rename fails before the model loads
    t0 = time.perf_counter()
    summary = RunSummary()
    rank, world, _ = dist_info()
    if world > 1:
        source.get()  # joins the process group (every rank, before any collective)

    summary.write_mode, summary.dry_run = wopts.mode, wopts.dry_run
    files = find_files(paths, opts, summary, selection)
    summary.found = len(files)
    files = shard_files(files, rank, world)
    if progress:
        progress("discovered", 0, len(files))
    json_path = rank_json_path(wopts, rank, world)
    book = RunBook.open(source, opts, wopts, json_path, catalog, rank, world) if use_catalog else None
    try:
        redecide, todo = plan_files(files, book, summary, force=force)
        main_writer, jsonl = make_run_writers(source, opts, wopts, json_path)
        writer = BackgroundWriter(
            main_writer, summary, book, jsonl=jsonl, on_write=on_write, progress=progress
        )
        try:
            if redecide:
                assert book is not None
                redecide_files(redecide, book, opts, summary, writer.put, on_result=on_result)
            if todo:
                summary.model_loaded = True
                score_files(todo, source.get(), opts, book, summary, writer, on_result, progress)
        except KeyboardInterrupt:  # write and record what is done (below), then say so
            summary.interrupted = True
        finally:
            writer.close()
        summary.failed.extend(writer.errors)
        if book is not None:
            summary.run = book.run
            book.finish(summary)
    finally:
        if book is not None:
            book.close()
    finish(summary, source, wopts, world, t0)
    if summary.interrupted:
        raise Interrupted(summary)
    return summary


# ---------------------------------------------------------------------------------- the steps


def score_files(
    todo: list[Path],
    tagger: Tagger,
    opts: TagOptions,
    book: RunBook | None,
    summary: RunSummary,
    writer: BackgroundWriter,
    on_result: ResultFn | None,
    progress: ProgressFn | None,
) -> None:
    """Run the model on ``todo`` and hand each result to the writer; with a catalog, every tag's score
    goes to it too (the results keep them only with ``all_scores``)."""
    raw: dict[int, np.ndarray] = {}

    def keep_scores(res: ImageTags) -> ImageTags:
        if book is not None and res.scores is not None:
            if isinstance(res.scores, ScoreMap):  # the model's row as it is
                raw[res.index] = np.asarray(res.scores.row, np.float32)
            else:
                raw[res.index] = np.fromiter(res.scores.values(), np.float32, len(res.scores))
            if not opts.all_scores:
                res.scores = None
        return res

    def put(res: ImageTags) -> None:
        # the identity the decoder took from the file it read (a failed file has none; a tagger that
        # does not decode files itself reports none either: its file is stat'ed now, the best there is)
        st = res.stat if res.stat is not None or res.path is None or not res.ok else _stat(res.path)
        writer.put(res, st if book is not None else None, raw.pop(res.index, None))

    model_opts = opts if book is None else _with_all_scores(opts)
    tag_files(
        todo, tagger, model_opts, summary, put, on_result=on_result, progress=progress, transform=keep_scores
    )


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


def plan_files(
    files: list[Path], book: RunBook | None, summary: RunSummary, *, force: bool
) -> tuple[list[Path], list[Path]]:
    """Split ``files`` into (re-decide from stored scores, score with the model), counting the
    unchanged ones and the ones for the model in ``summary``; without a catalog every file is scored."""
    plan = book.plan(files, force=force) if book is not None else None
    redecide = cast("list[Path]", plan.redecide) if plan is not None else []
    todo = cast("list[Path]", plan.score) if plan is not None else list(files)
    summary.unchanged = len(plan.skip) if plan is not None else 0
    summary.to_tag = len(todo)  # images for the model (re-decided ones are counted apart)
    summary.to_redecide = len(redecide)
    return redecide, todo


def make_run_writers(
    source: TaggerSource, opts: TagOptions, wopts: WriteOptions, json_path: Path | None
) -> tuple[TagWriter, JsonlWriter | None]:
    """(the main writer for ``--write``, the JSON Lines writer when there is one besides it).

    Kept apart (not one MultiWriter) so the catalog learns what each of them wrote.
    """
    from .writers import make_writer
    from .writers.jsonl import JsonlWriter

    common: dict[str, Any] = {
        "sidecar_name": wopts.sidecar_name,
        "hierarchy_root": wopts.hierarchy_root,
        "lang": opts.lang,
        "dry_run": wopts.dry_run,
        "backup": wopts.backup,
        "repair_sidecars": wopts.repair_sidecars,
        "all_scores": opts.all_scores,
        "model": source.name,
    }
    if wopts.mode == "json":
        return make_writer("json", json_path=json_path, **common), None
    main = make_writer(wopts.mode, **common)
    jsonl = JsonlWriter(json_path, dry_run=wopts.dry_run, all_scores=opts.all_scores) if json_path else None
    return main, jsonl


def tag_files(
    files: Sequence[Path],
    tagger: Tagger,
    opts: TagOptions,
    summary: RunSummary,
    put: Callable[[ImageTags], None],
    *,
    on_result: ResultFn | None = None,
    progress: ProgressFn | None = None,
    transform: Callable[[ImageTags], ImageTags] | None = None,
) -> None:
    """Run ``files`` through the model; each result is counted, reported and handed to ``put``."""
    for done, res in enumerate(tagger.tag(files, opts), 1):
        if transform is not None:
            res = transform(res)
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


def redecide_files(
    files: Sequence[Path],
    book: RunBook,
    opts: TagOptions,
    summary: RunSummary,
    put: Callable[..., None],
    *,
    on_result: ResultFn | None = None,
) -> None:
    """Decide tags again from the catalog's scores (no model) and hand each result to the writer."""
    from .catalog.redecide import decide_stored

    for i in range(0, len(files), 1000):
        chunk = files[i : i + 1000]
        results, missing = decide_stored(
            book.read,
            chunk,
            book.wanted.vocab,
            threshold=opts.threshold,
            top_k=opts.top_k,
            all_scores=opts.all_scores,
            rename=opts.rename,
            lang=opts.lang,
        )
        for path in missing:  # (raced with another process's change of the catalog)
            summary.failed.append((str(path), "its scores left the catalog during the run; run again"))
        for res in results:
            res.path = chunk[res.index]  # the path as discovered (the catalog spells it resolved)
            if on_result:
                on_result(res)
            put(res)
            summary.redecided += 1  # (after put: Ctrl-C while the writer's queue is full is not one)


def _with_all_scores(opts: TagOptions) -> TagOptions:
    import dataclasses

    return dataclasses.replace(opts, all_scores=True)


def finish(summary: RunSummary, source: TaggerSource, wopts: WriteOptions, world: int, t0: float) -> None:
    """Merge the ranks' JSON Lines, collect the notes, time the run, log what bf16-checked did."""
    if world > 1 and wopts.json_path is not None:
        from .distributed import gather_jsonl
        from .writers.jsonl import compact

        if gather_jsonl(wopts.json_path, world) and wopts.json_path.exists():
            compact(wopts.json_path)  # a re-run appended images the file already had
    tagger = source.loaded
    summary.notes = list(dict.fromkeys((tagger.notes if tagger else []) + summary.notes))
    summary.seconds = time.perf_counter() - t0
    if tagger is not None and tagger.runner.checked:
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


# ----------------------------------------------------------------------------- the catalog


@dataclass
class Pending:
    """One image whose outputs are written, waiting to be recorded (after the JSON Lines sync)."""

    path: Path
    identity: Any  # ramtag.catalog.Identity to record, or None: keep the catalog's (re-decided image)
    scores: np.ndarray | None  # (T,) every tag's score (None: re-decided, the catalog has them)
    outputs: list[tuple[str, Path, list[tuple[str, float]], str, os.stat_result | None]]  # kind, target, ...


class RunBook:
    """This run's side of the catalog: what is done (:meth:`plan`), the run's id, and recording.

    Single process: one catalog file read and written. Under torchrun each rank records into its own
    part on local storage and reads the catalog; rank 0 merges the parts at the start (a killed
    run's) and at the end (:func:`ramtag.distributed.gather_catalog`).
    """

    def __init__(self, write: Catalog, read: Catalog, wanted: Wanted, run: str, lang: str, kind: str | None):
        self.write, self.read, self.wanted, self.run, self.lang = write, read, wanted, run, lang
        self.kind = kind  # the main writer's output kind (xmp | embed | json), None for --write none
        self.vocab_id = write.add_vocabulary(wanted.vocab)
        self.scorer = wanted.scorer
        self.catalog_path: Path = read.path
        self.part: Path | None = None
        self._copied: set[bytes] = set()

    @classmethod
    def open(
        cls,
        source: TaggerSource,
        opts: TagOptions,
        wopts: WriteOptions,
        json_path: Path | None,
        catalog: Path | None,
        rank: int = 0,
        world: int = 1,
    ) -> RunBook | None:
        """The run's book, or None for a dry run (which records nothing)."""
        if wopts.dry_run:
            return None
        from .catalog import Catalog, default_catalog_path, new_run_id
        from .catalog.sync import Wanted

        path = Path(catalog).expanduser() if catalog is not None else default_catalog_path()
        kinds = {"xmp": ("xmp",), "embed": ("embed",), "json": ("json",)}.get(wopts.mode, ())
        final_json = (
            wopts.json_path if wopts.json_path is not None else json_path if wopts.mode == "json" else None
        )
        if final_json is not None and "json" not in kinds:
            kinds = (*kinds, "json")
        wanted = Wanted(
            scorer=source.scorer(opts),
            vocab=source.vocabulary,
            decide_key=decide_key(source.vocabulary, opts, wopts),
            kinds=kinds,
            json_path=final_json,
        )
        settings = run_settings(source, opts, wopts, final_json, path)
        if world <= 1:
            cat = Catalog(path)
            book = cls(
                cat, cat, wanted, cat.begin_run("tag", settings), opts.lang, kinds[0] if kinds else None
            )
            return book
        import torch.distributed as dist

        from .catalog.parts import part_path
        from .distributed import gather_catalog

        part = part_path(path, rank)
        gather_catalog(path, part)  # a killed run's parts first, so this run sees what it did
        ids = [new_run_id() if rank == 0 else ""]
        dist.broadcast_object_list(ids, src=0)  # one run id on every rank
        write = Catalog(part)
        read = Catalog(path)
        book = cls(write, read, wanted, write.begin_run("tag", settings, run_id=ids[0]), opts.lang, None)
        book.kind = kinds[0] if kinds else None
        book.part = part
        return book

    def plan(self, files: Sequence[Path], *, force: bool = False) -> Plan:
        from .catalog.sync import plan_run

        return plan_run(self.read, files, self.wanted, force=force)

    def record(self, pending: Sequence[Pending]) -> None:
        """Record images and outputs whose outputs are durable, in one transaction."""
        from .catalog import ImageScores, path_key

        images, outputs = [], []
        for p in pending:
            if p.scores is not None:
                images.append(ImageScores(p.path, p.identity, self.scorer, self.vocab_id, p.scores))
            elif self.write is not self.read and path_key(p.path) not in self._copied:
                self._copy_image(p.path)  # a re-decided image: the part needs its row for its outputs
            for kind, target, tags, fp, st in p.outputs:
                outputs.append((p.path, kind, target, tags, fp, self.wanted.decide_key, st))
        with self.write._lock, self.write._tx():
            if images:
                self.write.record_images(images, self.run)
            for p in pending:
                if p.scores is None and p.identity is not None:  # re-decided into the image itself (embed)
                    self.write.refresh_identity(p.path, p.identity)
            if outputs:
                self.write.record_outputs(outputs, self.run)

    def _copy_image(self, path: Path) -> None:
        from .catalog import ImageScores, path_key

        key = path_key(path)
        row = self.read.lookup([key]).get(key)
        for vid, _, matrix in self.read.scores([key]):
            vocab = self.read.vocabulary(vid)
            self.write.add_vocabulary(vocab)
            assert row is not None
            self.write.record_images([ImageScores(key, row.identity, row.scorer, vid, matrix[0])], row.run)
        self._copied.add(key)

    def finish(self, summary: RunSummary) -> None:
        counts = {
            "found": summary.found,
            "tagged": summary.tagged,
            "unchanged": summary.unchanged,
            "redecided": summary.redecided,
            "written": summary.written,
            "failed": len(summary.failed),
        }
        self.write.finish_run(self.run, counts, status="finished" if summary.ok else "failed")
        if self.part is not None:
            from .distributed import gather_catalog

            self.write.close()
            if self.read is not self.write:
                self.read.close()
            gather_catalog(self.catalog_path, self.part)

    def close(self) -> None:
        for cat in {id(self.write): self.write, id(self.read): self.read}.values():
            with contextlib.suppress(Exception):  # already closed by finish()
                cat.close()


def decide_key(vocab: Any, opts: TagOptions, wopts: WriteOptions) -> str:
    """A hash of every setting that decides what an output holds (not what produced the scores)."""
    import hashlib
    import json

    from .catalog import vocabulary_id
    from .tags.rename import canonical_renames

    body: dict[str, Any] = {
        "vocabulary": vocabulary_id(vocab),  # names, Chinese names, thresholds, open-set flags
        "threshold": opts.threshold,
        "top_k": opts.top_k,
        "lang": opts.lang,
        "all_scores": opts.all_scores,
        "hierarchy_root": wopts.hierarchy_root,
        "sidecar_name": wopts.sidecar_name,
    }
    if opts.rename:  # (left out when there is none: outputs recorded before renames existed still match)
        body["rename"] = canonical_renames(opts.rename, vocab)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def run_settings(
    source: TaggerSource, opts: TagOptions, wopts: WriteOptions, json_path: Path | None, catalog: Path
) -> dict[str, Any]:
    """What ``ramtag runs`` shows of a run's settings (the catalog drops anything secret)."""
    import dataclasses

    out: dict[str, Any] = {"weights": source.name, "model": source.name, "catalog": str(catalog)}
    out.update({k: v for k, v in dataclasses.asdict(opts).items() if k not in ("batch_size", "workers")})
    out.update({k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(wopts).items()})
    out["json_path"] = str(json_path) if json_path is not None else None
    out["tags"] = len(source.vocabulary)
    out["open_set_tags"] = [
        n for n, o in zip(source.vocabulary.names, source.vocabulary.open_set, strict=True) if o
    ][:50]
    return out


# ----------------------------------------------------------------------- background writer


class BackgroundWriter:
    """Writes results on a thread of its own, so writing overlaps the model's compute.

    ``put`` hands it a result (blocking when 256 are queued); ``close`` waits for the queue, records
    the last batch, closes the writers. Write failures go to ``errors`` (path, one-line reason), never
    stop the run. Written images are recorded in batches, each only after its outputs are durable:
    the writer's staged sidecars committed together (``sync``, see
    :meth:`~ramtag.writers.xmp.XmpSidecarWriter.defer_durability`) and the JSON Lines file synced;
    an image whose file changed since it was decoded is not written (its tags are the old photo's)
    and not recorded.
    """

    FLUSH_EVERY = 64  # images per catalog transaction (and JSON Lines fsync) at most

    def __init__(
        self,
        writer: TagWriter,
        summary: RunSummary,
        book: RunBook | None = None,
        *,
        jsonl: JsonlWriter | None = None,
        on_write: WriteFn | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.writer, self.jsonl, self.summary, self.book = writer, jsonl, summary, book
        self.on_write, self.progress = on_write, progress
        self.errors: list[tuple[str, str]] = []
        self._pending: list[Pending] = []
        self._unsynced = 0  # results handed to the writers since the last flush
        # the batch on its way to the disk (sync_begin's wait, its images), recorded at the next flush
        self._inflight: tuple[Callable[[], list[tuple[str, str]]], list[Pending]] | None = None
        self._queue: queue.Queue[tuple[ImageTags, Any, Any] | None] = queue.Queue(maxsize=256)
        defer = getattr(writer, "defer_durability", None)
        if defer is not None:
            defer()  # sidecars staged and made durable together in flush(), before they are recorded
        self._thread = threading.Thread(target=self._loop, name="ramtag-writer", daemon=True)
        self._thread.start()

    def put(
        self, result: ImageTags, stat: os.stat_result | None = None, scores: np.ndarray | None = None
    ) -> None:
        """``stat``: the file's stat taken by the decoder on the descriptor it read (its identity as
        decoded) and ``scores`` every tag's score (tagged by the model); both None for a result
        decided again from the catalog."""
        self._queue.put((result, stat, scores))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            self.flush()
            try:
                self.writer.close()
            finally:
                if self.jsonl is not None:
                    self.jsonl.close()
        except (RamtagError, OSError) as e:  # e.g. the disk filled while writing the JSON Lines file
            self._report(e)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            res = item[0]
            try:
                self.write_one(*item)
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
            self._unsynced += 1
            if self._queue.empty():  # nothing else to write: durable and recorded now
                self.flush()
            elif self._unsynced >= self.FLUSH_EVERY:  # more to write meanwhile: this batch on its way
                self.flush(wait=False)

    def flush(self, *, wait: bool = True) -> None:
        """Make what was written durable (staged sidecars, JSON Lines), then record it. ``wait=False``
        (the loop's flushes): a writer with ``sync_begin`` makes this batch durable while the next one
        is written; the batch before it is recorded now (one in flight at most)."""
        if self._pending or self._unsynced:
            pending, self._pending, self._unsynced = self._pending, [], 0
            begin = getattr(self.writer, "sync_begin", None)  # staged sidecars, pipelined
            sync = getattr(self.writer, "sync", None)  # the same at once; or --write json's JSON Lines
            try:
                if begin is not None:
                    done = begin()
                else:
                    failed = (sync() if sync is not None else None) or []
                    done = lambda failed=failed: failed  # noqa: E731
                if self.jsonl is not None:
                    self.jsonl.sync()
            except (RamtagError, OSError) as e:  # not durable: not recorded (the next run writes them again)
                self._report(e)
            else:
                previous, self._inflight = self._inflight, (done, pending)
                if previous is not None:
                    self._record(*previous)
        if wait and self._inflight is not None:
            last, self._inflight = self._inflight, None
            self._record(*last)

    def _report(self, e: RamtagError | OSError) -> None:
        """One line for a failure that no single image owns (the JSON Lines file, a whole batch)."""
        if isinstance(e, RamtagError):
            self.errors.append(("", str(e)))
        else:
            self.errors.append(("", str(OutputError.from_os(e, e.filename or "output"))))

    def _record(self, done: Callable[[], list[tuple[str, str]]], pending: list[Pending]) -> None:
        """Record ``pending`` once ``done()`` says its outputs are durable (less those that failed)."""
        try:
            failed = done()
        except (RamtagError, OSError) as e:
            self._report(e)
            return
        if failed:  # those images' outputs are not durable: reported, not recorded
            self.errors.extend(failed)
            bad = {path for path, _ in failed}
            self.summary.written -= len(bad)  # each was counted when it was staged
            pending = [p for p in pending if str(p.path) not in bad]
        for p in pending:  # a sidecar's stat as it is now in place (the re-run's quick "still there")
            p.outputs = [(k, t, tg, fp, _stat(t) if st is STAGED else st) for k, t, tg, fp, st in p.outputs]
        if self.book is not None:
            try:
                self.book.record(pending)
            except Exception as e:  # the tags are written: one note, stop recording (redone next run)
                cause = os_cause(e) if isinstance(e, OSError) else printable(str(e))
                self.summary.notes.append(
                    f"{printable(self.book.catalog_path)}: cannot record progress ({cause}); the tags were "
                    "written, but the next run checks these images again"
                )
                self.book = None

    def write_one(
        self, res: ImageTags, stat: os.stat_result | None = None, scores: np.ndarray | None = None
    ) -> None:
        """Write one result; count it; queue it for recording once its outputs are written."""
        book = self.book
        if (
            book is not None
            and res.ok
            and res.path is not None
            and stat is not None
            and _moved(res.path, stat)
        ):
            self.errors.append((str(res.path), "changed while it was being tagged; not written, run again"))
            return
        outputs: list[tuple[str, Path, list[tuple[str, float]], str, os.stat_result | None]] = []
        if self.jsonl is not None:
            jo = self.jsonl.write(res)  # first, so the line is there even if the main writer fails
            if jo.action == "written" and jo.target is not None:
                outputs.append(("json", jo.target, [], jo.fingerprint, None))
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
        if book is None or res.path is None:
            return
        tags = [(t.display_name(book.lang), t.score) for t in res.tags]
        outputs = [(k, tgt, tags, fp, st) for k, tgt, _, fp, st in outputs]
        if book.kind is not None and outcome.target is not None and outcome.action != "dry-run":
            kind = book.kind
            if kind == "json":
                target = book.wanted.json_path or outcome.target
                outputs.append(("json", Path(os.fsdecode(target)), tags, outcome.fingerprint, None))
            else:  # a sidecar's stat is taken once it is in place (flush)
                st = STAGED if outcome.target != res.path else None
                outputs.append((kind, outcome.target, tags, outcome.fingerprint, st))
        if book.wanted.json_path is not None:  # JSON lines are recorded under the final file
            final = Path(os.fsdecode(book.wanted.json_path))
            outputs = [(k, final if k == "json" else t, tg, fp, st) for k, t, tg, fp, st in outputs]
        if stat is not None and scores is None:  # tagged, but the tagger gave no scores: nothing to record
            return
        identity = _identity(res.path, stat, book.kind == "embed" and outcome.action != "unchanged")
        if identity is False:
            self.errors.append((str(res.path), "changed while it was being tagged; run again"))
            return
        self._pending.append(Pending(res.path, identity, scores, outputs))


STAGED: Any = object()  # in a Pending output: the sidecar's stat, to be taken after the writer's sync


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # no tags and no sidecar before: nothing was written, nothing to stat
        return None


def _moved(path: Path, stat: os.stat_result) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev) != (
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ino,
        stat.st_dev,
    )


def _identity(path: Path, stat: os.stat_result | None, rewritten: bool) -> Any:
    """The identity to record: the stat the decoder took on the file it read, plus the content
    digest, read now and checked against that stat (so both are of the decoded file); after
    embedding, the file as written. None: keep the catalog's (a re-decided image that was not
    rewritten). False: the file changed since it was decoded."""
    from .catalog import Identity, content_digest

    if rewritten:  # --write embed changed the file itself: record it as it is now
        return Identity.of_path(path)
    if stat is None:
        return None
    digest = content_digest(path, stat.st_size)
    if _moved(path, stat):
        return False
    return Identity.from_stat(stat, digest)
