"""Find the image files to tag: paths (files and folders) -> image files, in a deterministic order.

``discover`` is lazy: it yields each image file as soon as it is found, and a :class:`Skipped` record for
every path the user named (or a link found while walking) that cannot be tagged, with the reason. Ordinary
non-image files inside folders (``notes.txt``, ramtag's own ``.xmp``/``.json``/``.jsonl`` outputs) are
left out silently: reporting each would drown the real problems.

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

import importlib.util
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# Always decodable by Pillow (with its bundled libjpeg, libpng, libwebp, libtiff).
_BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
# ramtag's own outputs: sidecars and JSON Lines, never images.
_OUTPUT_EXTENSIONS = frozenset({".xmp", ".json", ".jsonl"})

_FILE_ATTRIBUTE_HIDDEN = 0x2  # Windows stat.FILE_ATTRIBUTE_HIDDEN (not defined on other platforms)


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


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@lru_cache(maxsize=1)
def supported_extensions() -> frozenset[str]:
    """Lower-case image extensions, with the dot, that this installation can decode.

    ``.heic``/``.heif`` need pillow-heif (``pip install 'ramtag[heif]'``); ``.avif`` needs Pillow's own AVIF
    support (Pillow >= 11.2 wheels) or a pillow-heif that still reads AVIF.
    """
    extensions = set(_BASE_EXTENSIONS)
    heif = _module_available("pillow_heif")
    if heif:
        extensions |= {".heic", ".heif"}
    try:
        from PIL import features

        avif = bool(features.check("avif"))
    except (ImportError, ValueError):
        avif = False
    if avif or (heif and _pillow_heif_reads_avif()):
        extensions.add(".avif")
    return frozenset(extensions)


def _pillow_heif_reads_avif() -> bool:
    try:
        import pillow_heif
    except Exception:  # a broken optional plugin must not break discovery
        return False
    return hasattr(pillow_heif, "register_avif_opener")


def is_image_name(path: str | Path) -> bool:
    """True when ``path``'s extension is a supported image extension (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in supported_extensions()


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


def _extension_reason(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _OUTPUT_EXTENSIONS:
        return "a sidecar or ramtag output (.xmp/.json/.jsonl), not an image"
    if suffix in {".heic", ".heif"}:
        return "HEIC/HEIF needs pillow-heif; install it with: pip install 'ramtag[heif]'"
    if suffix == ".avif":
        return "AVIF needs a Pillow with AVIF support (pip install -U pillow) or pillow-heif"
    return (
        "not an image file extension (supported: "
        + ", ".join(sorted(e.lstrip(".") for e in supported_extensions()))
        + ")"
    )


def _os_reason(err: OSError) -> str:
    """One line for an OSError, without repeating the path (the Skipped record carries it)."""
    return err.strerror or type(err).__name__


def discover(
    paths: Iterable[str | Path],
    *,
    recursive: bool = True,
    include_hidden: bool = False,
    follow_symlinks: bool = True,
    on_other: Callable[[Path], None] | None = None,
) -> Iterator[Path | Skipped]:
    """Yield the image files under ``paths`` (files and folders), and a :class:`Skipped` for each problem.

    Args:
        paths: files and folders, in the order given; each folder's files follow in sorted name order.
        recursive: walk sub-folders; when False only the files directly inside each named folder are taken.
        include_hidden: also take dot-files and dot-folders found while walking.
        follow_symlinks: follow links found while walking (links named explicitly are always followed).
            Each real folder is walked once, so loops end.
        on_other: called with each regular file inside a folder that is left out silently because it
            is not an image (ramtag's own outputs excepted), so a caller can say what was not tagged.

    Yields:
        ``Path`` of each image file (as reached: the argument joined with the names below it, never
        resolved), or ``Skipped(path, reason)``.
    """
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
            yield from _walk(
                path, st, recursive, include_hidden, follow_symlinks, seen_files, seen_dirs, on_other
            )
        elif not stat.S_ISREG(st.st_mode):
            yield Skipped(path, "not a regular file (device, pipe or socket)")
        elif not is_image_name(path):
            yield Skipped(path, _extension_reason(path))
        else:
            key = _file_key(path, st)
            if key not in seen_files:
                seen_files.add(key)
                yield path


def _walk(
    top: Path,
    top_st: os.stat_result,
    recursive: bool,
    include_hidden: bool,
    follow_symlinks: bool,
    seen_files: set[tuple[int, int] | str],
    seen_dirs: set[tuple[int, int] | str],
    on_other: Callable[[Path], None] | None = None,
) -> Iterator[Path | Skipped]:
    """Depth-first walk with an explicit stack (deep trees cannot hit the recursion limit)."""
    top_key = _file_key(top, top_st)
    if top_key in seen_dirs:
        return
    seen_dirs.add(top_key)
    # Each stack entry is an iterator over one folder's sorted entries; a sub-folder's entries are
    # pushed on top and walked before the parent's next entry.
    stack: list[Iterator[Path | Skipped | tuple[Path, os.stat_result]]] = [
        _list_folder(top, include_hidden, follow_symlinks, on_other)
    ]
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
            if not recursive:
                continue
            key = _file_key(path, st)
            if key in seen_dirs:
                log.debug("not walking %s again (already walked via another path or a link loop)", path)
                continue
            seen_dirs.add(key)
            stack.append(_list_folder(path, include_hidden, follow_symlinks, on_other))
        else:
            key = _file_key(path, st)
            if key not in seen_files:
                seen_files.add(key)
                yield path


def _list_folder(
    folder: Path, include_hidden: bool, follow_symlinks: bool, on_other: Callable[[Path], None] | None = None
) -> Iterator[Path | Skipped | tuple[Path, os.stat_result]]:
    """One folder's entries in name order: ``(path, stat)`` for sub-folders and image files to take,
    ``Skipped`` for problems worth reporting. Other files are dropped silently."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        yield Skipped(folder, f"cannot read folder: {_os_reason(err)}; check its permissions")
        return

    for entry in entries:
        path = folder / entry.name
        try:
            is_link = entry.is_symlink()
            lst = entry.stat(follow_symlinks=False)
        except OSError as err:
            if is_image_name(entry.name):
                yield Skipped(path, f"cannot access: {_os_reason(err)}")
            continue
        if not include_hidden and _is_hidden(entry.name, lst):
            continue
        if is_link:
            if not follow_symlinks:
                if is_image_name(entry.name):
                    yield Skipped(path, "symbolic link not followed (follow_symlinks is off)")
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                if is_image_name(entry.name):
                    yield Skipped(path, "broken symbolic link (its target does not exist)")
                continue
        else:
            st = lst

        if stat.S_ISDIR(st.st_mode):
            yield (path, st)
        elif is_image_name(entry.name):
            if stat.S_ISREG(st.st_mode):
                yield (path, st)
            else:
                yield Skipped(path, "not a regular file (device, pipe or socket)")
        elif (
            on_other is not None
            and stat.S_ISREG(st.st_mode)
            and path.suffix.lower() not in _OUTPUT_EXTENSIONS
        ):
            on_other(path)
