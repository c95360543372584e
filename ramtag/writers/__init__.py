"""Writers: where the tags go (XMP sidecars, embedded metadata, JSON Lines) and ``untag``.

Use :func:`make_writer` for a run and :func:`untag_paths` for ``ramtag untag``. :data:`WRITERS` is the
registry of output formats (name -> factory); the CLI's ``--write`` choices are built from it. Every writer
follows :class:`TagWriter`: ``write(result) -> WriteOutcome`` for each image, ``close()`` once at the
end. A problem with one image raises :class:`~ramtag.errors.SidecarError` /
:class:`~ramtag.errors.ExiftoolError` (one line naming the file and the fix) or returns a
``"skipped"`` outcome; the caller counts it and goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ramtag.discover import Skipped, discover
from ramtag.errors import ExiftoolError, RamtagError, UsageError
from ramtag.formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS, extension
from ramtag.results import ImageTags
from ramtag.writers.base import Action, TagWriter, WriteOutcome
from ramtag.writers.jsonl import DEFAULT_JSONL, JsonlWriter
from ramtag.writers.xmp import SidecarLocator, XmpSidecarWriter, untag_sidecar

__all__ = [
    "DEFAULT_JSONL",
    "WRITERS",
    "WRITE_MODES",
    "Action",
    "JsonlWriter",
    "TagWriter",
    "WriteOutcome",
    "WriterEntry",
    "WriterSettings",
    "XmpSidecarWriter",
    "make_writer",
    "untag_paths",
]

log = logging.getLogger(__name__)


class NullWriter:
    """``--write none``: writes nothing (tags are only shown)."""

    def write(self, result: ImageTags) -> WriteOutcome:
        tags = tuple(result.tag_names())
        return WriteOutcome(result.path, None, "unchanged", "not written (--write none)", tags)

    def close(self) -> None:
        pass


class MultiWriter:
    """A main writer plus a JSON Lines file (``--write xmp --json FILE``); reports the main outcome."""

    def __init__(self, main: TagWriter, jsonl: JsonlWriter) -> None:
        self.main = main
        self.jsonl = jsonl

    def write(self, result: ImageTags) -> WriteOutcome:
        self.jsonl.write(result)  # first, so the line is there even if the main writer fails
        return self.main.write(result)

    def close(self) -> None:
        try:
            self.main.close()
        finally:
            self.jsonl.close()


@dataclass(frozen=True)
class WriterSettings:
    """Everything a writer factory may use (the ``make_writer`` keywords); each writer takes what it needs."""

    sidecar_name: str = "ext"  # ext (photo.jpg.xmp) | replace (photo.xmp)
    hierarchy_root: str = "ramtag"  # parent of hierarchical keywords; "" for flat
    lang: str = "en"  # en | zh: the tag names written
    dry_run: bool = False  # report what would be written, write nothing
    backup: bool = True  # embed: keep exiftool's *_original copy
    repair_sidecars: bool = False  # replace invalid sidecars, keeping them as *.bak
    json_path: Path | None = None  # --json FILE (the json writer's file; a second output for the others)
    all_scores: bool = False  # JSON: every tag's score
    model: str = ""  # recorded in ramtag's XMP record (e.g. the weights name)
    exiftool_timeout: float = 60.0  # seconds per exiftool call


@dataclass(frozen=True)
class WriterEntry:
    """One ``--write`` mode: the factory and the words ``ramtag tag --help`` shows for it."""

    factory: Callable[[WriterSettings], TagWriter]
    help: str


def _xmp(s: WriterSettings) -> TagWriter:
    return XmpSidecarWriter(
        sidecar_name=s.sidecar_name,
        hierarchy_root=s.hierarchy_root,
        lang=s.lang,
        dry_run=s.dry_run,
        repair_sidecars=s.repair_sidecars,
        model=s.model,
    )


def _embed(s: WriterSettings) -> TagWriter:
    from ramtag.writers.exiftool import ExiftoolWriter  # exiftool only when asked for

    return ExiftoolWriter(
        sidecar_name=s.sidecar_name,
        hierarchy_root=s.hierarchy_root,
        lang=s.lang,
        dry_run=s.dry_run,
        backup=s.backup,
        repair_sidecars=s.repair_sidecars,
        model=s.model,
        timeout=s.exiftool_timeout,
    )


def _json(s: WriterSettings) -> TagWriter:
    return JsonlWriter(s.json_path or Path.cwd() / DEFAULT_JSONL, dry_run=s.dry_run, all_scores=s.all_scores)


def _none(s: WriterSettings) -> TagWriter:
    return NullWriter()


# The output formats, in the order ``--help`` lists them: a new format is one entry here (the CLI's
# ``--write`` choices and help are built from this dict).
WRITERS: dict[str, WriterEntry] = {
    "xmp": WriterEntry(_xmp, "XMP sidecars next to the images"),
    "embed": WriterEntry(_embed, "into the images' own metadata (exiftool)"),
    "json": WriterEntry(_json, "one JSON Lines file (--json FILE, default ramtag-tags.jsonl)"),
    "none": WriterEntry(_none, "nowhere (show the tags only)"),
}
WRITE_MODES = tuple(WRITERS)  # the names at import time; make_writer reads WRITERS itself


def make_writer(
    mode: str = "xmp",
    *,
    sidecar_name: str = "ext",
    hierarchy_root: str = "ramtag",
    lang: str = "en",
    dry_run: bool = False,
    backup: bool = True,
    repair_sidecars: bool = False,
    json_path: str | Path | None = None,
    all_scores: bool = False,
    model: str = "",
    exiftool_timeout: float = 60.0,
) -> TagWriter:
    """The writer for ``--write MODE`` (a :data:`WRITERS` name: xmp | embed | json | none).

    ``json_path`` adds a JSON Lines file to any mode (``--json FILE``); ``--write json`` without it
    writes ``ramtag-tags.jsonl`` in the current folder. ``backup`` only concerns ``embed`` (exiftool's
    ``_original`` copy). ``model`` is recorded in ramtag's XMP record (e.g. the weights name).
    Raises UsageError for bad options and ExiftoolError (with install hints) when ``embed`` lacks exiftool.
    """
    if mode not in WRITERS:
        raise UsageError(f"--write {mode!r}: choose one of {', '.join(WRITERS)}")
    if sidecar_name not in ("ext", "replace"):
        raise UsageError(f"--sidecar-name {sidecar_name!r}: choose 'ext' (a.jpg.xmp) or 'replace' (a.xmp)")
    if lang not in ("en", "zh"):
        raise UsageError(f"--lang {lang!r}: choose 'en' or 'zh'")
    if "/" in hierarchy_root:
        raise UsageError(f"--hierarchy-root {hierarchy_root!r}: use '|' to separate levels, not '/'")
    settings = WriterSettings(
        sidecar_name=sidecar_name,
        hierarchy_root=hierarchy_root,
        lang=lang,
        dry_run=dry_run,
        backup=backup,
        repair_sidecars=repair_sidecars,
        json_path=None if json_path is None else Path(json_path),
        all_scores=all_scores,
        model=model,
        exiftool_timeout=exiftool_timeout,
    )
    main = WRITERS[mode].factory(settings)
    if json_path is None or isinstance(main, JsonlWriter):  # the json writer already writes that file
        return main
    return MultiWriter(main, JsonlWriter(json_path, dry_run=dry_run, all_scores=all_scores))


_UNTAG_WALK = IMAGE_EXTENSIONS | {".xmp"}


def _untag_candidate(name: str) -> bool:
    """A file a folder walk of ``untag`` looks at: a sidecar, or an image that may hold embedded tags."""
    return extension(name) in _UNTAG_WALK


def untag_paths(
    paths: Iterable[str | Path],
    *,
    embedded: bool | None = None,
    dry_run: bool = False,
    backup: bool = True,
) -> Iterator[WriteOutcome]:
    """``ramtag untag PATH...``: remove exactly what ramtag wrote, one outcome per file touched.

    A PATH may be an image (its sidecars, and with exiftool its embedded tags), a ``.xmp`` sidecar,
    or a folder (walked by :func:`ramtag.discover.discover`, as tagging walks it: hidden entries
    skipped, links followed once). ``embedded``: None = also embedded tags
    where exiftool is installed, True = require exiftool, False = sidecars only. Problems with one
    file come back as ``"skipped"`` outcomes; the iteration goes on.
    """
    from ramtag.writers.exiftool import ExiftoolSession, find_exiftool, untag_image

    session: ExiftoolSession | None = None
    if embedded or (embedded is None and find_exiftool() is not None):
        session = ExiftoolSession()  # raises ExiftoolError with install hints when missing
    locator = SidecarLocator()
    done: set[Path] = set()

    def one(path: Path, embedded_in: bool, image: Path | None = None) -> Iterator[WriteOutcome]:
        """Untag ``path``: a sidecar (of ``image`` where known) or, with ``embedded_in``, an image."""
        key = Path(os.path.abspath(path))
        if key in done:
            return
        done.add(key)
        try:
            if embedded_in:
                assert session is not None
                yield untag_image(session, path, dry_run=dry_run, backup=backup)
            else:
                yield untag_sidecar(path, image=image, dry_run=dry_run)
        except (RamtagError, OSError) as e:
            yield WriteOutcome(image or path, path, "skipped", str(e))

    def embeddable(path: Path) -> bool:
        suffix = path.suffix.lower()
        if (
            session is None
            or suffix not in IMAGE_EXTENSIONS
            or suffix in RAW_EXTENSIONS
            or not path.is_file()
        ):
            return False  # (RAW files are never written into)
        try:
            return path.suffix.lower() in session.writable_suffixes()
        except ExiftoolError:
            return False

    def image_file(path: Path) -> Iterator[WriteOutcome]:
        if path.suffix.lower() == ".xmp":
            yield from one(path, False)
            return
        for sidecar in locator.sidecars_of(path):
            yield from one(sidecar, False, image=path)
        if embeddable(path):
            yield from one(path, True)

    try:
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                for f in discover([path], accept=_untag_candidate):
                    if isinstance(f, Skipped):
                        yield WriteOutcome(f.path, None, "skipped", str(f))
                    elif f.suffix.lower() == ".xmp":
                        yield from one(f, False)
                    elif embeddable(f):
                        yield from one(f, True)
            elif path.is_file() or locator.sidecars_of(path):  # (an image may be gone, its sidecar not)
                yield from image_file(path)
            else:
                yield WriteOutcome(path, None, "skipped", f"{path}: no such file or folder")
    finally:
        if session is not None:
            session.close()
