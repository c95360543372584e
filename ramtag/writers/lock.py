"""Per-file advisory locks, so concurrent ramtag runs writing the same photo cannot interleave a
read-merge-write (both reading the old keywords, the second writing over the first's record).

The lock is an ``flock`` on the image file itself, opened read-only: nothing is created beside the
user's photos, and it holds across the sidecar's and the image's atomic replacement. Because
``--write embed`` replaces the image (a new inode), a lock taken on a file that was replaced while
waiting is dropped and taken again on the current one. Other programs do not look at these locks
(they are advisory); they only order ramtag runs. On Windows (no ``flock``; its byte-range locks are
mandatory and would stop exiftool reading the photo) the lock is taken with ``msvcrt`` on a small file
under ``<ramtag home>/locks`` named after the photo's path, so nothing is created beside the photos there
either.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from ramtag.errors import OutputError, printable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_TIMEOUT = 120.0  # seconds to wait for another run's write of one photo (one write takes well under 1 s)
_POLL = 0.02  # seconds between attempts


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (an existing file) for the ``with`` block.

    Waits for another ramtag run holding it; raises :class:`OutputError` after ``timeout`` seconds.
    A file that cannot be opened is not locked (the write itself then reports the problem).
    """
    if fcntl is None:
        with _windows_lock(path, timeout):
            yield
        return
    held = acquire_lock(path, timeout)
    assert held is not None
    try:
        yield
    finally:
        held.release()


class HeldLock:
    """A lock taken by :func:`acquire_lock`, held until :meth:`release` (for a writer that keeps the
    locks of a whole batch of photos until the batch is durable)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd  # None: the file could not be opened or locked; nothing to release

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def acquire_lock(
    path: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT, *, wait: bool = True
) -> HeldLock | None:
    """:func:`file_lock` without the ``with`` block (POSIX only: ``fcntl`` is needed). ``wait=False``:
    None at once when another run holds the lock (a batch writer then finishes its own batch first, so
    no two runs ever wait on each other's held locks)."""
    assert fcntl is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return HeldLock(None)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        os.close(fd)
                        return None
                    if time.monotonic() >= deadline:
                        raise _busy(path, timeout) from None
                    time.sleep(_POLL)
                except OSError:  # no locks on this file system (some network mounts): go on unlocked
                    break
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = True  # gone: the write reports it
        except BaseException:
            os.close(fd)
            raise
        if same:
            return HeldLock(fd)
        os.close(fd)  # replaced while we waited (--write embed): lock the current file


def _busy(path: str | os.PathLike[str], timeout: float) -> OutputError:
    return OutputError(
        f"{printable(path)}: another ramtag run has been writing it for {timeout:.0f} s; "
        "not written - run again when that run has finished"
    )


@contextlib.contextmanager
def _windows_lock(path: str | os.PathLike[str], timeout: float) -> Iterator[None]:
    import hashlib
    import msvcrt  # type: ignore[import-not-found,unused-ignore]

    from ramtag.paths import ramtag_home

    real = os.path.normcase(os.path.realpath(path))
    key = hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    folder = ramtag_home() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # no lock folder: go on unlocked (the write itself reports real problems)
        yield
        return
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise _busy(path, timeout) from None
                time.sleep(_POLL)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
    finally:
        os.close(fd)
