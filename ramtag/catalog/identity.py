"""Which file is which: canonical path keys (bytes) and file identity (size, mtime, inode, content hash).

Paths are stored as the bytes the operating system uses (``os.fsencode``), so names that are not
valid UTF-8, names with newlines and very long paths are recorded exactly. The key of a path is
absolute and resolved (symbolic links followed), so ``photos``, ``./photos`` and ``/abs/photos``
are one record.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_EDGE = 1 << 20  # bytes hashed at each end of a file by content_digest

PathLike = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def path_key(path: PathLike) -> bytes:
    """The catalog spelling of ``path``: absolute, resolved, as OS bytes.

    Folders are resolved once each (cached: a library has few folders and many files), the file
    itself only when it is a symbolic link.
    """
    raw = os.path.abspath(os.path.expanduser(os.fsencode(path)))
    folder, name = os.path.split(raw)
    if not name:
        return _real_folder(raw)
    full = os.path.join(_real_folder(folder), name)
    return os.path.realpath(full) if os.path.islink(full) else full


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: bytes) -> bytes:
    return os.path.realpath(folder)


def folder_prefix(path: PathLike) -> bytes:
    """The key prefix of every file under folder ``path`` (``/a/b`` -> ``/a/b/``; ``/`` -> ``/``)."""
    key = path_key(path)
    return key if key.endswith(b"/") else key + b"/"


def key_path(key: bytes) -> Path:
    """A catalog key back to a ``Path`` (undecodable bytes become surrogate escapes, as ``os`` does)."""
    return Path(os.fsdecode(key))


def display(key: bytes) -> str:
    """A printable one-line spelling of a key (undecodable bytes and newlines escaped)."""
    text = key.decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def content_digest(path: PathLike | int, size: int | None = None) -> str:
    """sha256 of (size, first MiB, last MiB) of a file; small files (<= 2 MiB) are hashed whole.

    ``path`` may be an open file descriptor (read with ``os.pread``, its position untouched), so
    the hash is of the very file that was decoded even if the name now points elsewhere.
    """
    h = hashlib.sha256()
    fd = path if isinstance(path, int) else os.open(os.fsencode(path), os.O_RDONLY)
    try:
        if size is None:
            size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        spans = [(0, size)] if size <= 2 * _EDGE else [(0, _EDGE), (size - _EDGE, _EDGE)]
        for start, length in spans:
            done = 0
            while done < length:
                chunk = os.pread(fd, min(length - done, 1 << 20), start + done)
                if not chunk:
                    break
                h.update(chunk)
                done += len(chunk)
    finally:
        if not isinstance(path, int):
            os.close(fd)
    return h.hexdigest()


@dataclass(frozen=True)
class Identity:
    """What a file was when it was decoded; compared with the disk to tell whether it changed."""

    size: int  # st_size, bytes
    mtime_ns: int  # st_mtime_ns
    inode: int  # st_ino (0 where the platform has none)
    device: int  # st_dev
    digest: str | None = None  # content_digest; None when not taken (filled in lazily)

    @classmethod
    def from_stat(cls, st: os.stat_result, digest: str | None = None) -> Identity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, digest)

    @classmethod
    def of_fd(cls, fd: int, *, digest: bool = True) -> Identity:
        """The identity of an open file (the one being decoded), with its content digest."""
        st = os.fstat(fd)
        return cls.from_stat(st, content_digest(fd, st.st_size) if digest else None)

    @classmethod
    def of_path(cls, path: PathLike, *, digest: bool = True) -> Identity:
        fd = os.open(os.fsencode(path), os.O_RDONLY)
        try:
            return cls.of_fd(fd, digest=digest)
        finally:
            os.close(fd)

    def same_stat(self, st: os.stat_result) -> bool:
        """Unchanged without reading the file: same size, mtime, inode and device."""
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev) == (
            self.size,
            self.mtime_ns,
            self.inode,
            self.device,
        )


def unchanged(recorded: Identity, path: PathLike, st: os.stat_result | None = None) -> bool | None:
    """Is the file at ``path`` still the one ``recorded``?

    True: same stat. None: the stat moved (``touch``, a copy keeping the bytes, a new inode) but the
    content digest is the same (the caller refreshes the record). False: changed, gone or unreadable.
    """
    try:
        st = st if st is not None else os.stat(os.fsencode(path))
    except OSError:
        return False
    if recorded.same_stat(st):
        return True
    if st.st_size != recorded.size or recorded.digest is None:
        return False
    try:
        return None if content_digest(path, st.st_size) == recorded.digest else False
    except OSError:
        return False
