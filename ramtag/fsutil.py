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
import logging
import marshal
import os
import struct
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from .errors import InputError, OutputError, printable

log = logging.getLogger(__name__)


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

    ``background=True``: :meth:`start_commit` hands the files to a helper process (started on first
    need) and returns at once, so the caller goes on preparing the next batch while this one reaches
    the disk. A process, not threads: each of a commit's system calls gives up Python's GIL and must
    win it back from the caller's busy thread, which it gets only every switch interval (5 ms), so a
    commit run on threads beside busy Python code takes an order of magnitude longer than alone. Where
    the helper cannot start or dies, the batch is done here instead (the same files, the same result).
    """

    SYNC_THREADS = 8
    HELPER_MIN_FILES = 2  # smaller batches are committed here (starting a process is not worth it)

    def __init__(self, *, background: bool = False) -> None:
        self._files: list[tuple[Path, bytes, int]] = []
        self._pool: ThreadPoolExecutor | None = None  # started on the first commit of many files here
        self._background = background
        self._helper: _SyncHelper | None = None
        self._sent: deque[PendingCommit] = deque()  # handed to the helper, oldest first, not answered

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
        return self.start_commit().wait()

    def start_commit(self) -> PendingCommit:
        """Start making the staged files durable; the handle's ``wait()`` returns what :meth:`commit`
        returns, once every one of them is durable or failed. Handles finish in the order started."""
        files, self._files = self._files, []
        pending = PendingCommit(self, files)
        helper = self._helper_for(files)
        if helper is not None:
            try:
                helper.send(files)
                self._sent.append(pending)
                return pending
            except OSError:  # the helper is gone: this batch and the rest are done here
                self._helper_failed()
        pending._finish(self._commit_here(files))
        return pending

    def _helper_for(self, files: list[tuple[Path, bytes, int]]) -> _SyncHelper | None:
        if not self._background or len(files) < self.HELPER_MIN_FILES:
            return None
        if self._helper is None:
            self._helper = _SyncHelper.start(self.SYNC_THREADS)
            if self._helper is None:
                self._background = False
        return self._helper

    def _receive_until(self, pending: PendingCommit) -> None:
        """Take the helper's answers, oldest first, until ``pending`` has its own."""
        while not pending.done and self._sent:
            oldest = self._sent[0]
            try:
                assert self._helper is not None
                answer = self._helper.receive(oldest.files)
            except (OSError, EOFError, ValueError, TypeError, IndexError):
                self._helper_failed()
                return
            self._sent.popleft()
            oldest._finish(answer)

    def _helper_failed(self) -> None:
        """The helper died or answered nonsense: what it was given is done again here (rewriting a file
        it already replaced writes the same bytes), and so is every later batch."""
        log.debug("the sync helper process stopped; committing in this process", exc_info=True)
        helper, self._helper, self._background = self._helper, None, False
        if helper is not None:
            helper.close()
        while self._sent:
            pending = self._sent.popleft()
            pending._finish(self._commit_here(pending.files))

    def _commit_here(self, files: list[tuple[Path, bytes, int]]) -> list[BaseException | None]:
        if len(files) > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.SYNC_THREADS, "ramtag-fsync")
        return commit_files(files, self._pool)

    def discard(self) -> None:
        """Forget every staged file (not yet committed); the targets are left as they were."""
        self._files = []

    def close(self) -> None:
        """Wait for every started commit, stop the threads and the helper (what is staged and not
        committed is forgotten)."""
        self.discard()
        while self._sent:
            self._sent[0].wait()
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class PendingCommit:
    """One :meth:`AtomicBatch.start_commit` on its way to the disk."""

    def __init__(self, batch: AtomicBatch, files: list[tuple[Path, bytes, int]]) -> None:
        self.batch, self.files = batch, files
        self.done = False
        self._failed: list[tuple[Path, BaseException]] = []

    def _finish(self, errors: list[BaseException | None]) -> None:
        self._failed = [(f[0], e) for f, e in zip(self.files, errors, strict=True) if e is not None]
        self.done, self.files = True, []

    def wait(self) -> list[tuple[Path, BaseException]]:
        """``(target, error)`` for each file that could not be made durable (left as it was)."""
        if not self.done:  # (should the helper fail meanwhile, this one is done here)
            self.batch._receive_until(self)
        assert self.done
        return self._failed


def commit_files(
    files: Sequence[tuple[Path, bytes, int]], pool: ThreadPoolExecutor | None
) -> list[BaseException | None]:
    """Write each file atomically (no folder fsync), on ``pool`` when given, then fsync each folder
    that got a file once; the error of each file (None where it is durable in place)."""

    def write(item: tuple[Path, bytes, int]) -> BaseException | None:
        try:
            f = AtomicFile(item[0], item[2])
            f.write(item[1])
            f.commit(sync_folder=False)
        except Exception as e:  # handed back with its file
            return e
        return None

    errors = list(pool.map(write, files)) if pool is not None else [write(item) for item in files]
    for folder in dict.fromkeys(
        item[0].parent for item, err in zip(files, errors, strict=True) if err is None
    ):
        fsync_dir(folder)
    return errors


# The helper process: frames of an 8-byte little-endian length and a marshal payload. Parent -> helper:
# [(target as bytes, data, mode), ...]; helper -> parent: [(index, errno, message), ...] for the files
# that failed (errno 0: not an OSError; the message is then the whole error line).
_FRAME = struct.Struct("<Q")


def _send_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)) + payload)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_FRAME.size)
    if not head:
        return None
    if len(head) != _FRAME.size:
        raise EOFError("truncated frame")
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    if len(payload) != size:
        raise EOFError("truncated frame")
    return payload


class _SyncHelper:
    """The parent's end of the helper process (``python -I -c "... _serve(threads)"``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, threads: int) -> _SyncHelper | None:
        if not sys.executable or os.name != "posix" or getattr(sys, "frozen", False):
            return None  # (a frozen app's executable is the app, not a Python to run ``-c`` with)
        package_root = str(Path(__file__).resolve().parents[1])
        code = (
            f"import sys; sys.path.insert(0, {package_root!r}); "
            f"from ramtag.fsutil import _serve; _serve({int(threads)})"
        )
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            log.debug("cannot start the sync helper process", exc_info=True)
            return None
        return cls(proc)

    def send(self, files: list[tuple[Path, bytes, int]]) -> None:
        assert self.proc.stdin is not None
        _send_frame(self.proc.stdin, marshal.dumps([(os.fsencode(t), d, m) for t, d, m in files]))

    def receive(self, files: list[tuple[Path, bytes, int]]) -> list[BaseException | None]:
        """The answer to the oldest batch sent (``files``): each file's error, None where durable."""
        assert self.proc.stdout is not None
        payload = _read_frame(self.proc.stdout)
        if payload is None:
            raise EOFError("the sync helper process ended")
        errors: list[BaseException | None] = [None] * len(files)
        for i, errno, message in marshal.loads(payload):
            target = files[i][0]
            errors[i] = OSError(errno, message, str(target)) if errno else OutputError(message)
        return errors

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _serve(threads: int) -> None:
    """The helper process: commit each batch read from stdin, answer on stdout, until stdin ends."""
    import queue
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which then closes stdin
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    frames: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:  # always reading, so the parent never blocks handing over the next batch
        try:
            while (frame := _read_frame(inp)) is not None:
                frames.put(frame)
        finally:
            frames.put(None)

    threading.Thread(target=read, daemon=True).start()
    parent = os.getppid()
    with ThreadPoolExecutor(threads) as pool:
        while (frame := frames.get()) is not None:
            if os.getppid() != parent:  # the parent was killed: nothing will record these, and the
                break  # next run may be writing the same sidecars already
            files = [(Path(os.fsdecode(t)), d, m) for t, d, m in marshal.loads(frame)]
            errors = commit_files(files, pool)
            answer = [(i, *_error_fields(e)) for i, e in enumerate(errors) if e is not None]
            _send_frame(out, marshal.dumps(answer))


def _error_fields(e: BaseException) -> tuple[int, str]:
    if isinstance(e, OSError) and e.errno:
        return e.errno, e.strerror or os.strerror(e.errno)
    return 0, str(e)


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
