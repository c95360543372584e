"""Durable, atomic file writes: a reader (or a killed run, or a power cut) sees the old file or the new
one, never half of it. The one implementation; everything ramtag writes goes through it.

- :class:`AtomicFile` / :func:`atomic_write_bytes`: ramtag writes the bytes itself.
- :func:`atomic_path`: a library writes to a path (``torch.save``, safetensors).
- :func:`durable_replace`: a finished temporary file (a download's ``.part``) is moved into place.
- :class:`AtomicBatch`: many :class:`AtomicFile` made durable together (thousands of sidecars).

Each writes a temporary file in the target's folder, fsyncs it, ``os.replace``-s it onto the target and
fsyncs the folder so the rename itself is durable. A batch does the same for each file, many files at
once, and fsyncs each folder once at the end: a file is in place only once its data is on disk, and
every file is durable when ``commit`` returns. Temporary names: ``.<name>.<random>.ramtag-tmp``,
``<name>`` cut so the whole stays within the file system's NAME_MAX; a failure anywhere (disk full,
permission, ...) removes the temporary file and re-raises.

A target that is a symbolic link is written through (the link stays a link), but only to an existing
regular file, and only inside ``within`` when given: a dangling or stray link is refused with
:class:`~ramtag.errors.OutputError`, so a planted link cannot make ramtag create files elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from .errors import InputError, OutputError, printable


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask() is process-wide and not thread-safe
TMP_SUFFIX = ".ramtag-tmp"  # temporary files left by a killed run end with this


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _real_target(path: Path, within: Sequence[Path] | None = None) -> Path:
    """Write through a symlinked target instead of replacing the link with a regular file, but never
    to a path that does not exist, is not a regular file, or lies outside ``within``."""
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if not real.is_file():
        why = "which does not exist" if not real.exists() else "which is not a regular file"
        raise OutputError(
            f"{printable(path)}: is a symbolic link to {printable(real)}, {why}; not writing through it "
            "(remove the link, or point it at the file)"
        )
    if within is not None and not any(real.is_relative_to(os.path.realpath(w)) for w in within):
        raise OutputError(
            f"{printable(path)}: is a symbolic link to {printable(real)}, outside the folders being tagged; "
            "not writing through it (remove the link, or tag that folder too)"
        )
    return real


def write_target(path: str | os.PathLike[str], within: Sequence[Path] | None = None) -> Path:
    """The file a write to ``path`` must go to: ``path`` itself, or the existing regular file a symbolic
    link leads to inside ``within`` (else :class:`~ramtag.errors.OutputError`). For writers that replace
    files themselves (exiftool would turn a link into a copy)."""
    return _real_target(Path(path), within)


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer: the usual limit
        return 255


def _temp_beside(target: Path) -> tuple[int, Path]:
    """A new temporary file in ``target``'s folder (same filesystem, so ``os.replace`` is atomic).

    ``.<name>.XXXXXXXX.ramtag-tmp`` is 21 bytes longer than ``name``: the name part is cut to fit NAME_MAX
    (a 240-character photo name still gets its sidecar)."""
    name = target.name
    room = _name_max(target.parent) - len(TMP_SUFFIX) - 8 - 2  # 8 random characters, 2 dots
    while len(os.fsencode(name)) > room and name:
        name = name[:-1]
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=TMP_SUFFIX)
    return fd, Path(tmp)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to the disk (for files written by a library that only takes a path)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """fsync ``src``, move it onto ``dst`` (``os.replace``) and fsync the folder, so the new file
    survives a power cut as a whole."""
    fsync_file(src)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


class AtomicFile:
    """A binary file that only appears at ``path`` when :meth:`commit` runs.

    ``mode`` is the permission of a new file; an existing target keeps its own permission bits.
    Use as a context manager: leaving the block without :meth:`commit` (an exception) discards the data.
    """

    def __init__(
        self, path: str | os.PathLike[str], mode: int = 0o666, *, within: Sequence[Path] | None = None
    ) -> None:
        self.path = _real_target(Path(path), within)
        fd, self.tmp_path = _temp_beside(self.path)
        try:
            self.file: IO[bytes] = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp_path.unlink(missing_ok=True)
            raise
        try:
            perm = self.path.stat().st_mode & 0o7777
        except OSError:
            perm = mode & ~_UMASK
        with contextlib.suppress(OSError):  # e.g. filesystems without permissions
            os.chmod(self.tmp_path, perm)
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except BaseException:
            self.discard()
            raise

    def commit(self, *, sync_folder: bool = True) -> None:
        """Flush, fsync and move the temporary file over the target; then fsync the folder (unless
        ``sync_folder=False``: an :class:`AtomicBatch` does it once for many files)."""
        if self._done:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        if sync_folder:
            fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Throw the temporary file away; the target is left as it was."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp_path.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicBatch:
    """Atomic replacements made durable together; the same guarantees as :class:`AtomicFile` per file.

    :meth:`add` only checks the target and keeps the bytes (nothing is visible yet); :meth:`commit`
    writes each file as :class:`AtomicFile` does (temporary file, fsync, rename), many at once on up to
    ``SYNC_THREADS`` threads (file I/O releases the GIL; the file system commits concurrent fsyncs in
    one journal transaction, and freeing the replaced files' blocks, slow where the disk is mounted
    with ``discard``, overlaps), then fsyncs each folder once. A failure touches only its own file:
    its target is left as it was and :meth:`commit` returns it, the others go ahead. Not thread-safe
    (one writer fills and commits it).
    """

    SYNC_THREADS = 16

    def __init__(self) -> None:
        self._files: list[tuple[Path, bytes, int]] = []
        self._pool: ThreadPoolExecutor | None = None  # started on the first commit of many files

    def __len__(self) -> int:
        return len(self._files)

    def add(
        self,
        path: str | os.PathLike[str],
        data: bytes,
        mode: int = 0o666,
        *,
        within: Sequence[Path] | None = None,
    ) -> Path:
        """Stage ``data`` for ``path``; returns the file the commit will replace (a symbolic link's
        target, checked now: see :class:`AtomicFile`)."""
        target = _real_target(Path(path), within)
        self._files.append((target, data, mode))
        return target

    def commit(self) -> list[tuple[Path, BaseException]]:
        """Make every staged file durable in place; returns ``(target, error)`` for those that failed."""
        files, self._files = self._files, []

        def write(item: tuple[Path, bytes, int]) -> BaseException | None:
            try:
                f = AtomicFile(item[0], item[2])
                f.write(item[1])
                f.commit(sync_folder=False)
            except Exception as e:  # handed back with its file
                return e
            return None

        if len(files) <= 1:
            errors = [write(item) for item in files]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.SYNC_THREADS, "ramtag-fsync")
            errors = list(self._pool.map(write, files))
        failed = [(item[0], err) for item, err in zip(files, errors, strict=True) if err is not None]
        for folder in dict.fromkeys(
            item[0].parent for item, err in zip(files, errors, strict=True) if err is None
        ):
            fsync_dir(folder)
        return failed

    def discard(self) -> None:
        """Forget every staged file; the targets are left as they were."""
        self._files = []

    def close(self) -> None:
        """Stop the threads (what is staged and not committed is forgotten)."""
        self.discard()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o666, *, within: Sequence[Path] | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder + fsync + os.replace)."""
    with AtomicFile(path, mode, within=within) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` for a writer that only takes a path (``torch.save``,
    safetensors); when the block ends normally the file is fsync'ed and moved onto ``target``
    (:func:`durable_replace`), else deleted."""
    final = _real_target(Path(target))
    fd, tmp = _temp_beside(final)
    os.close(fd)
    try:
        yield tmp
        durable_replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def read_user_text(path: str | Path, what: str, option: str) -> str:
    """A text file the user names with ``option`` (UTF-8, a BOM allowed); each way it cannot be read
    is one InputError line naming the file and the fix."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found; check {option}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text; save the {what} as UTF-8") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror}); check {option}") from None
