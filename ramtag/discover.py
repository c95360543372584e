"""Find the image files to tag: paths (files and folders) -> image files, in a deterministic order.

``discover`` is lazy: it yields each image file as soon as it is found, and a :class:`Skipped` record for
every path the user named (or a link found while walking) that cannot be tagged, with the reason. Ordinary
non-image files inside folders (``notes.txt``, ramtag's own ``.xmp``/``.json``/``.jsonl`` outputs) are
left out silently: reporting each would drown the real problems.

This is the one folder walker: tagging, ``untag`` (``accept`` also takes ``.xmp``) and training data all
use it, so hidden files, links, loops and optional formats are treated alike everywhere. Which
extensions are images is :mod:`ramtag.formats`' business.

Rules:

- Files named explicitly are taken when their extension is an image extension (case-insensitive, see
  :func:`supported_extensions`), whatever their name (hidden or not).
- Folders are walked depth-first, entries sorted by name, so runs are reproducible on every platform.
- Hidden entries (names starting with ``.``, and on Windows entries with the hidden attribute) are left out
  unless ``include_hidden``. Folders the user names explicitly are always walked.
- A folder named like an image (``holiday.jpg/``) is walked as a folder; only regular files are yielded
  (never FIFOs or devices, which would block the decoder).
- Symbolic links to folders are followed when ``follow_symlinks`` but every real folder is walked at most
  once (tracked by ``(st_dev, st_ino)``), so link loops terminate. The same real file reached twice (two
  arguments, a link and its target, hard links) is yielded once, under the first path that reached it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .formats import OUTPUT_EXTENSIONS, is_image_name, supported_extensions, unsupported_reason

__all__ = ["NamePredicate", "Skipped", "discover", "is_image_name", "supported_extensions"]

log = logging.getLogger(__name__)

_FILE_ATTRIBUTE_HIDDEN = 0x2  # Windows stat.FILE_ATTRIBUTE_HIDDEN (not defined on other platforms)

# Which file names a walk yields (``is_image_name`` for tagging and training; untag also takes ``.xmp``).
NamePredicate = Callable[[str], bool]


@dataclass(frozen=True)
class Skipped:
    """A path that will not be tagged, and why (one line, naming the fix where there is one).

    Used both by :func:`discover` (missing paths, wrong extension, unreadable folders) and by the batch
    loader for files that fail to decode.
    """

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _is_hidden(name: str, st: os.stat_result | None) -> bool:
    if name.startswith("."):
        return True
    attributes = getattr(st, "st_file_attributes", 0) if st is not None else 0
    return bool(attributes & _FILE_ATTRIBUTE_HIDDEN)


def _file_key(path: Path, st: os.stat_result) -> tuple[int, int] | str:
    """Identity of a real file or folder: (device, inode), or the resolved path where inodes are 0."""
    if st.st_ino:
        return (st.st_dev, st.st_ino)
    return str(path.resolve())


def _is_output(path: Path) -> bool:
    """ramtag's own sidecars and JSON Lines: never reported as "not an image"."""
    return path.suffix.lower() in OUTPUT_EXTENSIONS


def _os_reason(err: OSError) -> str:
    """One line for an OSError, without repeating the path (the Skipped record carries it)."""
    return err.strerror or type(err).__name__


@dataclass(frozen=True)
class _Rules:
    recursive: bool
    include_hidden: bool
    follow_symlinks: bool
    accept: NamePredicate
    on_other: Callable[[Path], None] | None = None  # told of each regular file left out silently


def discover(
    paths: Iterable[str | Path],
    *,
    recursive: bool = True,
    include_hidden: bool = False,
    follow_symlinks: bool = True,
    accept: NamePredicate = is_image_name,
    explain: Callable[[Path], str] = unsupported_reason,
    on_other: Callable[[Path], None] | None = None,
) -> Iterator[Path | Skipped]:
    """Yield the image files under ``paths`` (files and folders), and a :class:`Skipped` for each problem.

    Args:
        paths: files and folders, in the order given; each folder's files follow in sorted name order.
        recursive: walk sub-folders; when False only the files directly inside each named folder are taken.
        include_hidden: also take dot-files and dot-folders found while walking.
        follow_symlinks: follow links found while walking (links named explicitly are always followed).
            Each real folder is walked once, so loops end.
        accept: which file names to take (default: images this installation decodes). Files named
            explicitly that it refuses become ``Skipped(path, explain(path))``; others are left out.
        explain: the reason given for a named file that ``accept`` refuses.
        on_other: called with each regular file inside a folder that is left out silently because
            ``accept`` refuses it (ramtag's own outputs excepted), so a caller can say what was not tagged.

    Yields:
        ``Path`` of each file taken (as reached: the argument joined with the names below it, never
        resolved), or ``Skipped(path, reason)``.
    """
    rules = _Rules(recursive, include_hidden, follow_symlinks, accept, on_other)
    seen_files: set[tuple[int, int] | str] = set()
    seen_dirs: set[tuple[int, int] | str] = set()

    for raw in paths:
        path = Path(raw)
        try:
            st = path.stat()  # follows links
        except FileNotFoundError:
            if path.is_symlink():
                yield Skipped(path, "broken symbolic link (its target does not exist)")
            else:
                yield Skipped(path, "no such file or folder")
            continue
        except OSError as err:
            yield Skipped(path, f"cannot access: {_os_reason(err)}; check permissions")
            continue

        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path, st, rules, seen_files, seen_dirs)
        elif not stat.S_ISREG(st.st_mode):
            yield Skipped(path, "not a regular file (device, pipe or socket)")
        elif not accept(path.name):
            yield Skipped(path, explain(path))
        else:
            key = _file_key(path, st)
            if key not in seen_files:
                seen_files.add(key)
                yield path


def _walk(
    top: Path,
    top_st: os.stat_result,
    rules: _Rules,
    seen_files: set[tuple[int, int] | str],
    seen_dirs: set[tuple[int, int] | str],
) -> Iterator[Path | Skipped]:
    """Depth-first walk with an explicit stack (deep trees cannot hit the recursion limit)."""
    top_key = _file_key(top, top_st)
    if top_key in seen_dirs:
        return
    seen_dirs.add(top_key)
    # Each stack entry is an iterator over one folder's sorted entries; a sub-folder's entries are
    # pushed on top and walked before the parent's next entry.
    stack: list[Iterator[Path | Skipped | tuple[Path, os.stat_result]]] = [_list_folder(top, rules)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        if not isinstance(item, tuple):
            yield item
            continue
        path, st = item
        if stat.S_ISDIR(st.st_mode):
            if not rules.recursive:
                continue
            key = _file_key(path, st)
            if key in seen_dirs:
                log.debug("not walking %s again (already walked via another path or a link loop)", path)
                continue
            seen_dirs.add(key)
            stack.append(_list_folder(path, rules))
        else:
            key = _file_key(path, st)
            if key not in seen_files:
                seen_files.add(key)
                yield path


def _list_folder(folder: Path, rules: _Rules) -> Iterator[Path | Skipped | tuple[Path, os.stat_result]]:
    """One folder's entries in name order: ``(path, stat)`` for sub-folders and files to take,
    ``Skipped`` for problems worth reporting. Other files are dropped silently."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        yield Skipped(folder, f"cannot read folder: {_os_reason(err)}; check its permissions")
        return

    for entry in entries:
        path = folder / entry.name
        wanted = rules.accept(entry.name)
        try:
            is_link = entry.is_symlink()
            lst = entry.stat(follow_symlinks=False)
        except OSError as err:
            if wanted:
                yield Skipped(path, f"cannot access: {_os_reason(err)}")
            continue
        if not rules.include_hidden and _is_hidden(entry.name, lst):
            continue
        if is_link:
            if not rules.follow_symlinks:
                if wanted:
                    yield Skipped(path, "symbolic link not followed (follow_symlinks is off)")
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                if wanted:
                    yield Skipped(path, "broken symbolic link (its target does not exist)")
                continue
        else:
            st = lst

        if stat.S_ISDIR(st.st_mode):
            yield (path, st)
        elif wanted:
            if stat.S_ISREG(st.st_mode):
                yield (path, st)
            else:
                yield Skipped(path, "not a regular file (device, pipe or socket)")
        elif rules.on_other is not None and stat.S_ISREG(st.st_mode) and not _is_output(path):
            rules.on_other(path)
