"""The one place that downloads.

- :func:`fetch_hub_file`: a file of a Hugging Face Hub repository, into ``huggingface_hub``'s cache layout
  (``<downloads>/hub``). ``huggingface_hub`` finds the file (URL, commit, ETag/sha256, size, auth);
  ramtag streams the body itself so that the bounds below hold.
- :func:`fetch_url`: a file at an HTTPS URL, checked by sha256 (``<downloads>/files/<sha256>/<name>``).

Both stream to a partial file (``*.incomplete`` / ``*.part``) that an HTTP ``Range`` request resumes, in
the same call or a later one (after Ctrl-C too). Every file is bounded: at most ``attempts`` tries
(connection errors, 408/429/5xx, a transfer cut short), ``Retry-After`` honoured up to
``_MAX_RETRY_AFTER`` seconds, connecting and the headers within ``timeout + _STALL_SECONDS``
(:class:`ramtag.net.Deadline`), a body slower than ``_MIN_RATE`` over ``_STALL_SECONDS`` cut (a server
trickling a byte now and then never hits a read timeout), and an overall deadline scaled to the file's
size. The Hub's metadata HEAD (made by ``huggingface_hub``) has the same connect-and-headers deadline:
its call is abandoned when it passes (``huggingface_hub``'s per-read timeout ends it later). Giving up is
one :class:`DownloadError` line naming the file and the cause; what arrived is kept.

Environment, read at call time (so a user's settings always apply):

- ``HF_ENDPOINT``: the Hub (or a mirror) to download from; ``HF_TOKEN``: for gated repositories.
- ``HF_HUB_OFFLINE=1`` / ``RAMTAG_OFFLINE=1``: never touch the network; cached files still work.
- ``RAMTAG_GITHUB_RAW``: replaces ``https://raw.githubusercontent.com`` (mirrors, tests).

Both functions return a path only after checking the file: size and sha256 where known (for Hub LFS
files, the sha256 the Hub reports for the object). A bad download is deleted, never left in place.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from . import paths
from .errors import DownloadError, OfflineError, OutputError, printable
from .fsutil import durable_replace
from .net import Deadline, opener, retry_after
from .registry import GITHUB_RAW, HubFile, UrlFile
from .weights_format import sha256_file

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SAFE_NAME = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}")  # a commit or ETag used as a file name
_CHUNK = 1 << 20  # bytes per read when streaming and hashing
_STALL_SECONDS = 60.0  # a download slower than _MIN_RATE over this long is cut and resumed (Range)
_MIN_RATE = 1024  # bytes per second
_ATTEMPTS = 3  # tries per file; each resumes what the ones before received
_TIMEOUT = 30.0  # seconds for connecting and for each read
_MAX_RETRY_AFTER = 60.0  # a server asking to wait longer (Retry-After) is given up on at once
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_FIX = (
    "retry `ramtag weights download` when online (HF_ENDPOINT=https://MIRROR for a Hub mirror), "
    "or `ramtag weights import` files you already have"
)


# ---------------------------------------------------------------------------------------------- progress


class ProgressBar(Protocol):
    """What a download reports to: bytes as they arrive, then ``close()``."""

    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


# (description, total bytes or None, bytes already present) -> a started bar
ProgressFactory = Callable[[str, int | None, int], ProgressBar]


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _LogBar:
    """The default when no application installed a bar: one log line when a download starts and one
    when it ends (the CLI installs a rendered bar with :func:`set_default_progress`)."""

    def __init__(self, description: str, total: int | None, initial: int) -> None:
        self.description, self.total, self.done = description, total, initial
        size = f"{total / 2**20:.1f} MB" if total else "size unknown"
        resumed = f", resuming at {initial / 2**20:.1f} MB" if initial else ""
        log.info("downloading %s (%s%s)", description, size, resumed)

    def update(self, n: int) -> None:
        self.done += n

    def close(self) -> None:
        if self.total is None or self.done >= self.total:
            log.info("downloaded %s (%.1f MB)", self.description, self.done / 2**20)
        else:  # an attempt that failed: the next one (or the error) says what happens
            log.info("stopped %s at %.1f of %.1f MB", self.description, self.done / 2**20, self.total / 2**20)


def log_progress(description: str, total: int | None, initial: int) -> ProgressBar:
    """A download reported as log lines (INFO) on ``ramtag.hub``'s logger."""
    return _LogBar(description, total, initial)


_default_progress: ProgressFactory = log_progress


def set_default_progress(factory: ProgressFactory | None) -> None:
    """What ``progress=True`` reports to from now on (None: log lines). Applications with a terminal UI
    (the CLI) install their bar here; the library itself never draws one."""
    global _default_progress
    _default_progress = factory if factory is not None else log_progress


def _progress_factory(progress: bool | ProgressFactory) -> ProgressFactory:
    if progress is True:
        return _default_progress
    if progress is False:
        return lambda description, total, initial: _NullBar()
    return progress


# ---------------------------------------------------------------------------------------------- checks


def _offline_error(what: str, url: str) -> OfflineError:
    return OfflineError(
        f"{what} is not downloaded and downloads are off (HF_HUB_OFFLINE / RAMTAG_OFFLINE); bring {url} "
        "and `ramtag weights import` it, or run `ramtag weights download` once while online "
        "(HF_ENDPOINT=https://MIRROR for a Hub mirror)"
    )


def file_url(f: HubFile | UrlFile) -> str:
    """Where ``f`` is downloaded from now (``HF_ENDPOINT`` / ``RAMTAG_GITHUB_RAW`` applied)."""
    if isinstance(f, UrlFile):
        return resolve_url(f.url)
    return f"{hub_endpoint()}/{f.repo_id}/resolve/{f.revision}/{f.filename}"


def is_cached(f: HubFile | UrlFile) -> Path | None:
    """The local copy of ``f`` when it is downloaded (no network, no hashing), else None."""
    if isinstance(f, UrlFile):
        dest = url_cache_path(f)
        return dest if dest.is_file() else None
    return _cached_hub_file(f)


# ---------------------------------------------------------------------------------------------- Hub


def hub_cache_dir() -> Path:
    """huggingface_hub's cache layout (models--owner--name/blobs, snapshots, refs), private to ramtag."""
    return paths.downloads_dir() / "hub"


def hub_endpoint() -> str:
    """The Hub to use: ``$HF_ENDPOINT`` at call time, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _cached_hub_file(f: HubFile) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(f.repo_id, f.filename, cache_dir=hub_cache_dir(), revision=f.revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _remove_hub_file(path: Path) -> None:
    """Delete a snapshot entry and the blob it points to (so the next call downloads again)."""
    blob = path.resolve()
    for p in (path, blob):
        p.unlink(missing_ok=True)


def reported_sha256(path: Path) -> str | None:
    """The sha256 the Hub reported for a downloaded LFS file (huggingface_hub names the blob after it)."""
    name = path.resolve().name
    return name if _SHA256_HEX.fullmatch(name) else None


def hub_commit(path: Path) -> str | None:
    """The commit a file returned by :func:`fetch_hub_file` was downloaded at (its snapshot folder)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def remove_cached_hub_file(f: HubFile) -> bool:
    """Delete ``f`` from the download cache (snapshot entry and blob); True if it was there."""
    cached = _cached_hub_file(f)
    if cached is None:
        return False
    _remove_hub_file(cached)
    return True


def _check_hub_file(f: HubFile, path: Path, *, hash_it: bool) -> None:
    what = f"{f.repo_id}/{f.filename}"
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        _remove_hub_file(path)
        raise DownloadError(f"{what}: downloaded {size} bytes but expected {f.size}; deleted it, {_FIX}")
    if not hash_it:
        return
    expected = f.sha256 or reported_sha256(path)
    if expected is None:
        log.warning("%s: no sha256 known (registry or Hub); only its size was checked", what)
        return
    actual = sha256_file(path)
    if actual != expected:
        _remove_hub_file(path)
        raise DownloadError(
            f"{what}: sha256 {actual} does not match the expected {expected}; deleted it, {_FIX}"
        )


def _is_network_error(e: BaseException) -> bool:
    """True for transport errors of whichever HTTP client huggingface_hub uses (httpx2, httpx, requests)."""
    import importlib

    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(e, cls):
            return True
    return isinstance(e, OSError)


def fetch_hub_file(
    f: HubFile,
    *,
    progress: bool | ProgressFactory = True,
    attempts: int = _ATTEMPTS,
    timeout: float = _TIMEOUT,
) -> Path:
    """Download one Hub file (or find it in the cache) and return its checked local path.

    A cached file is returned without any network request (its size is checked). Otherwise
    ``huggingface_hub`` asks the Hub for the file's commit, ETag (the sha256 of an LFS object), size and
    download URL (one HEAD request), and the body is streamed to ``blobs/<etag>.incomplete`` under the
    bounds of the module docstring, resuming what an earlier call left. The result is checked for size
    and sha256 (the registry's, else the Hub's) and deleted when it does not match.
    Raises :class:`OfflineError` when offline and not cached, :class:`DownloadError` on any failure.
    """
    what = f"{f.repo_id}/{f.filename}@{f.revision}"
    cached = _cached_hub_file(f)
    if cached is not None:
        _check_hub_file(f, cached, hash_it=False)
        return cached
    if paths.offline():
        raise _offline_error(what, file_url(f))

    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    endpoint = hub_endpoint()
    log.info("downloading %s from %s", what, endpoint)
    tries = _Tries(what, attempts, timeout)
    meta = tries.run(lambda: _hub_metadata(f, endpoint, timeout), lambda: "")
    # the ETag and commit become file names, the location is opened: a hostile server must not steer them
    if not (
        _SAFE_NAME.fullmatch(meta.commit_hash or "")
        and _SAFE_NAME.fullmatch(meta.etag or "")
        and urllib.parse.urlsplit(meta.location).scheme in ("http", "https")
    ):
        raise DownloadError(
            f"{what}: {endpoint} did not answer like the Hub (commit {printable(meta.commit_hash)}, ETag "
            f"{printable(meta.etag)}, location {printable(meta.location)}); check HF_ENDPOINT, {_FIX}"
        )
    folder = repo_folder_name(repo_id=f.repo_id, repo_type="model")
    storage = hub_cache_dir() / folder
    blob = storage / "blobs" / meta.etag
    pointer = storage / "snapshots" / meta.commit_hash / f.filename
    if not blob.is_file():
        blob.parent.mkdir(parents=True, exist_ok=True)
        part = blob.with_name(blob.name + ".incomplete")  # huggingface_hub's name: either resumes the other's
        # auth for the Hub itself only, never for the storage the Hub redirects to (signed URLs)
        headers = build_hf_headers(library_name="ramtag")
        if _origin(meta.location) != _origin(endpoint):
            headers.pop("authorization", None)
        lock = hub_cache_dir() / ".locks" / folder / f"{meta.etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):  # another ramtag process downloading the same file: wait for it
            if not blob.is_file():
                tries.size = meta.size
                description = f.filename
                tries.run(
                    lambda: _stream_to_part(
                        meta.location, part, _progress_factory(progress), description, tries, headers
                    ),
                    lambda: _kept(part, meta.size),
                )
                durable_replace(part, blob)
    _link(pointer, blob)
    if f.revision != meta.commit_hash:  # a branch or tag: its commit, which try_to_load_from_cache reads
        ref = storage / "refs" / f.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(meta.commit_hash)
    _check_hub_file(f, pointer, hash_it=True)
    return pointer


def _hub_metadata(f: HubFile, endpoint: str, timeout: float) -> Any:
    """``huggingface_hub``'s metadata of ``f`` (one HEAD request) within ``timeout + _STALL_SECONDS``;
    transient failures (and no answer in time) raise _Transient."""
    # huggingface_hub's client has only a per-read timeout: a server trickling its headers a byte now and
    # then would hold the call forever, so it runs in a daemon thread that is abandoned at the deadline
    limit = timeout + _STALL_SECONDS
    result: list[Any] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            result.append(_hub_metadata_call(f, endpoint, timeout))
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    worker = threading.Thread(target=call, name="ramtag-hub-head", daemon=True)
    worker.start()
    worker.join(limit)
    if failure:
        raise failure[0]
    if not result:
        raise _Transient(f"no answer within {limit:g} s")
    return result[0]


def _hub_metadata_call(f: HubFile, endpoint: str, timeout: float) -> Any:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{f.repo_id}/{f.filename}@{f.revision}"
    url = hf_hub_url(f.repo_id, f.filename, revision=f.revision, endpoint=endpoint)
    try:
        return get_hf_file_metadata(url, timeout=timeout, library_name="ramtag", endpoint=endpoint)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:  # gated: a subclass
        raise DownloadError(
            f"{what} not found on {endpoint} ({type(e).__name__}); check HF_ENDPOINT, {_FIX}"
        ) from e
    except HfHubHTTPError as e:
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if status in _RETRY_STATUS:
            wait = retry_after(response.headers.get("Retry-After") if response is not None else None)
            raise _Transient(f"HTTP {status} from {endpoint}", wait) from e
        raise DownloadError(f"{what}: HTTP {status} from {endpoint}; {_FIX}") from e
    except Exception as e:
        if _is_network_error(e):
            raise _Transient(f"cannot reach {endpoint} ({_one_line(e)})") from e
        raise


def _origin(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme.lower(), parsed.netloc.lower()


def _link(pointer: Path, blob: Path) -> None:
    """``snapshots/<commit>/<file>`` -> ``blobs/<etag>``, as huggingface_hub links them."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symbolic links here (Windows without developer mode): the snapshot holds the file
        os.replace(blob, pointer)


# ---------------------------------------------------------------------------------------------- URLs


def resolve_url(url: str) -> str:
    """``url`` with ``https://raw.githubusercontent.com`` replaced by ``$RAMTAG_GITHUB_RAW`` when set."""
    base = os.environ.get("RAMTAG_GITHUB_RAW")
    if base and url.startswith(GITHUB_RAW + "/"):
        return base.rstrip("/") + url[len(GITHUB_RAW) :]
    return url


def url_cache_path(f: UrlFile) -> Path:
    """Where :func:`fetch_url` keeps ``f``: content-addressed, ``<downloads>/files/<sha256>/<filename>``."""
    return paths.downloads_dir() / "files" / f.sha256 / f.filename


class _Transient(Exception):
    """A failure worth retrying (connection dropped, timeout, too slow, 408/429/5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


_T = TypeVar("_T")


class _Tries:
    """One file's bounded attempts: at most ``attempts`` tries per step, Retry-After honoured up to
    ``_MAX_RETRY_AFTER``, everything over by a deadline scaled to the file's size (once known)."""

    def __init__(self, what: str, attempts: int, timeout: float) -> None:
        self.what, self.attempts, self.timeout = what, max(1, attempts), timeout
        self.started = time.monotonic()
        self.size: int | None = None

    def deadline(self) -> float:
        # per attempt: connecting, one rate window and the longest wait honoured; then the whole file at
        # the floor rate (a transfer that never falls below it ends well before)
        per_attempt = self.timeout + _STALL_SECONDS + _MAX_RETRY_AFTER
        return self.started + self.attempts * per_attempt + (self.size or 0) / _MIN_RATE

    def run(self, step: Callable[[], _T], kept: Callable[[], str]) -> _T:
        """``step()``, tried again on _Transient; raises one-line :class:`DownloadError` when the bound is
        reached (``kept()`` says what was received and is kept for the next call)."""
        used = 0  # counted per step (finding the file, then its body)
        while True:
            used += 1
            try:
                return step()
            except _Transient as e:
                wait = e.retry_after if e.retry_after is not None else min(8.0, 2.0 ** (used - 1))
                if e.retry_after is not None and e.retry_after > _MAX_RETRY_AFTER:
                    raise DownloadError(
                        f"{self.what}: {e.reason}, and the server asked to wait {e.retry_after:.0f} s "
                        f"(Retry-After), longer than ramtag waits ({_MAX_RETRY_AFTER:.0f} s); {kept()}{_FIX}"
                    ) from e
                if used >= self.attempts or time.monotonic() + wait > self.deadline():
                    tries = f"{used} attempt{'s' if used > 1 else ''}"
                    raise DownloadError(
                        f"{self.what}: {e.reason}, stopped after {tries}; {kept()}{_FIX}"
                    ) from e
                log.warning(
                    "%s: %s; trying again in %.0f s (attempt %d of %d)",
                    self.what,
                    e.reason,
                    wait,
                    used + 1,
                    self.attempts,
                )
                time.sleep(wait)


def _kept(part: Path, total: int | None) -> str:
    have = part.stat().st_size if part.exists() else 0
    if not have:
        return ""
    of = f" of {_size(total)}" if total else ""
    return f"re-run to resume ({_size(have)}{of} received are kept in {part}); or "


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"  # as the CLI's bars count


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return printable(text[0]) if text else type(e).__name__


def _stream_to_part(
    url: str,
    part: Path,
    factory: ProgressFactory,
    description: str,
    tries: _Tries,
    headers: dict[str, str] | None = None,
) -> None:
    """Append the rest of ``url`` to ``part`` (Range request when it already holds bytes)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    for name, value in {"User-Agent": "ramtag", **(headers or {}), "Accept-Encoding": "identity"}.items():
        if name.lower() == "authorization":  # never sent on to where a redirect points
            request.add_unredirected_header(name, value)
        else:
            request.add_header(name, value)
    if have:
        request.add_header("Range", f"bytes={have}-")
    # connecting and the headers within one deadline (a server trickling its headers a byte at a time
    # never hits a read timeout); the body is held to the rate floor below
    answer = Deadline(tries.timeout + _STALL_SECONDS)
    try:
        response = opener(answer, follow_redirects=True).open(request, timeout=tries.timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is not a prefix of this file: start again
            part.unlink()
            raise _Transient(f"HTTP 416 for a resumed download of {url}") from e
        if e.code in _RETRY_STATUS:
            raise _Transient(
                f"HTTP {e.code} {printable(e.reason)}", retry_after(e.headers.get("Retry-After"))
            ) from e
        raise DownloadError(
            f"{url}: HTTP {e.code} {printable(e.reason)}; check the URL (RAMTAG_GITHUB_RAW?), {_FIX}"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"no answer within {answer.seconds:g} s" if answer.expired else _one_line(e)) from e
    finally:
        answer.cancel()
    if answer.expired:  # the headers were cut off midway, which http.client may take for their end
        response.close()
        raise _Transient(f"no answer within {answer.seconds:g} s")
    with response:
        content_range = response.headers.get("Content-Range", "")
        if have and response.status == 206 and content_range.startswith(f"bytes {have}-"):
            mode = "ab"
        else:  # the server sent the whole file
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        tries.size = tries.size or total
        bar = factory(description, total, have)
        try:
            with open(part, mode) as out:
                # read1: what has arrived (not a full chunk), so a trickling server is noticed (issue 12)
                window_start, window_bytes = time.monotonic(), 0
                while True:
                    try:
                        chunk = response.read1(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Transient(_one_line(e) or "connection dropped") from e
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    now = time.monotonic()
                    elapsed = now - window_start
                    if elapsed >= _STALL_SECONDS:
                        if window_bytes < _MIN_RATE * elapsed:
                            rate = window_bytes / elapsed / 1024
                            raise _Transient(f"server too slow: {rate:.1f} KB/s over {elapsed:.0f} s")
                        window_start, window_bytes = now, 0
                    if now > tries.deadline():
                        raise _Transient("not finished by the deadline for its size")
        except OSError as e:  # opening, writing or closing the partial file: the disk, not the server
            raise OutputError.from_os(e, part, "cannot write the download") from e
        finally:
            bar.close()
    if total is not None and part.stat().st_size < total:
        raise _Transient(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch_url(
    f: UrlFile,
    *,
    progress: bool | ProgressFactory = True,
    attempts: int = _ATTEMPTS,
    timeout: float = _TIMEOUT,
) -> Path:
    """Download ``f`` (or find it cached) and return its local path, checked against ``f.sha256``.

    Streams to ``<name>.part`` next to the destination under the bounds of the module docstring; an
    interrupted transfer is resumed with an HTTP Range request (within this call and by the next one).
    The finished file is renamed into place atomically only when its sha256 matches; on a mismatch the
    ``.part`` is deleted and :class:`DownloadError` names the URL and both digests.
    """
    dest = url_cache_path(f)
    if dest.is_file():
        if sha256_file(dest) == f.sha256:
            return dest
        log.warning("%s: cached copy is corrupted; downloading it again", dest)
        dest.unlink()
    if paths.offline():
        raise _offline_error(f.filename, file_url(f))
    url = resolve_url(f.url)
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded; check RAMTAG_GITHUB_RAW")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    factory = _progress_factory(progress)
    log.info("downloading %s", url)
    tries = _Tries(f"downloading {url}", attempts, timeout)
    tries.run(lambda: _stream_to_part(url, part, factory, f.filename, tries), lambda: _kept(part, None))
    actual = sha256_file(part)
    if actual != f.sha256:
        part.unlink()
        raise DownloadError(
            f"{url}: sha256 {actual} does not match the expected {f.sha256}; deleted it, {_FIX}"
        )
    durable_replace(part, dest)
    return dest
