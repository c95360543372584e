"""Atomic file replacement: a reader (or a killed run) sees either the old file or the new one, never half.

Every file ramtag writes beside the user's photos goes through :func:`atomic_write_bytes` (or
:class:`AtomicFile` for streamed output): the data goes to a temporary file in the same folder, is
flushed and fsync'ed, then ``os.replace`` swaps it in, and the folder is fsync'ed so the rename itself
survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask() is process-wide and not thread-safe
TMP_SUFFIX = ".ramtag-tmp"  # temporary files left by a killed run end with this


def _fsync_dir(directory: Path) -> None:
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


def _real_target(path: Path) -> Path:
    """Write through a symlinked target instead of replacing the link with a regular file."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


class AtomicFile:
    """A binary file that only appears at ``path`` when :meth:`commit` runs.

    ``mode`` is the permission of a new file; an existing target keeps its own permission bits.
    Use as a context manager: leaving the block without :meth:`commit` (an exception) discards the data.
    """

    def __init__(self, path: str | os.PathLike[str], mode: int = 0o666) -> None:
        self.path = _real_target(Path(path))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TMP_SUFFIX)
        self.tmp_path = Path(tmp)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        try:
            perm = self.path.stat().st_mode & 0o7777
        except OSError:
            perm = mode & ~_UMASK
        with contextlib.suppress(OSError):  # e.g. filesystems without permissions
            os.chmod(self.tmp_path, perm)
        self._done = False

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        """Flush, fsync and move the temporary file over the target."""
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
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Throw the temporary file away; the target is left as it was."""
        if self._done:
            return
        self._done = True
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder + fsync + os.replace)."""
    with AtomicFile(path, mode) as f:
        f.write(data)
