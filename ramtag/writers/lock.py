"""Per-file advisory locks, so concurrent ramtag runs writing the same photo cannot interleave a
read-merge-write (both reading the old keywords, the second writing over the first's record).

The lock is an ``flock`` on the image file itself, opened read-only: nothing is created beside the
user's photos, and it holds across the sidecar's and the image's atomic replacement. Because
``--write embed`` replaces the image (a new inode), a lock taken on a file that was replaced while
waiting is dropped and taken again on the current one. Other programs do not look at these locks
(they are advisory); they only order ramtag runs. Where ``fcntl`` does not exist (Windows) files are
not locked.
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
        yield
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            yield
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OutputError(
                            f"{printable(path)}: another ramtag run has been writing it for {timeout:.0f} s; "
                            "not written - run again when that run has finished"
                        ) from None
                    time.sleep(_POLL)
                except OSError:  # no locks on this file system (some network mounts): go on unlocked
                    break
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = True  # gone: the write reports it
            if same:
                yield
                return
        finally:
            os.close(fd)  # releases the lock
