"""The one place that downloads.

- :func:`fetch_hub_file`: a file of a Hugging Face Hub repository, through ``huggingface_hub``'s cache
  (``<downloads>/hub``). The only ``hf_hub_download`` call in ramtag.
- :func:`fetch_url`: a file at an HTTPS URL, checked by sha256 (``<downloads>/files/<sha256>/<name>``),
  streamed to ``*.part`` and resumed with an HTTP ``Range`` request when interrupted.

Environment, read at call time (so a user's settings always apply):

- ``HF_ENDPOINT``: the Hub (or a mirror) to download from.
- ``HF_HUB_OFFLINE=1`` / ``RAMTAG_OFFLINE=1``: never touch the network; cached files still work.
- ``RAMTAG_GITHUB_RAW``: replaces ``https://raw.githubusercontent.com`` (mirrors, tests).

Both functions return a path only after checking the file: size and sha256 where known (for Hub LFS
files, the sha256 the Hub reports for the object). A bad download is deleted, never left in place.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import paths
from .errors import DownloadError, OfflineError
from .fsutil import durable_replace
from .registry import GITHUB_RAW, HubFile, UrlFile
from .weights_format import sha256_file

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20  # bytes per read when streaming and hashing
_STALL_SECONDS = 60.0  # a download slower than _MIN_RATE over this long is cut and resumed (Range)
_MIN_RATE = 1024  # bytes per second
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
        log.info("downloaded %s (%.1f MB)", self.description, self.done / 2**20)


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


class _TqdmShim:
    """Looks enough like tqdm for ``hf_hub_download(tqdm_class=...)`` and forwards to a ProgressBar."""

    def __init__(
        self,
        factory: ProgressFactory,
        *,
        desc: str = "",
        total: float | None = None,
        initial: float = 0,
        **_: Any,
    ) -> None:
        self._bar = factory(desc, int(total) if total is not None else None, int(initial))

    def __enter__(self) -> _TqdmShim:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def update(self, n: float | None = 1) -> None:
        self._bar.update(int(n or 0))


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


def fetch_hub_file(f: HubFile, *, progress: bool | ProgressFactory = True) -> Path:
    """Download one Hub file (or find it in the cache) and return its checked local path.

    A cached file is returned without any network request (its size is checked). A new download is
    checked for size and sha256 (the registry's, else the one the Hub reports for the LFS object) and
    deleted when it does not match. huggingface_hub resumes a transfer that drops midway (HTTP Range).
    Raises :class:`OfflineError` when offline and not cached, :class:`DownloadError` on any failure.
    """
    what = f"{f.repo_id}/{f.filename}@{f.revision}"
    cached = _cached_hub_file(f)
    if cached is not None:
        _check_hub_file(f, cached, hash_it=False)
        return cached
    if paths.offline():
        raise _offline_error(what, file_url(f))

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    log.info("downloading %s from %s", what, endpoint)
    tqdm_class: Any = functools.partial(_TqdmShim, _progress_factory(progress))
    try:
        local = hf_hub_download(
            f.repo_id,
            f.filename,
            revision=f.revision,
            cache_dir=hub_cache_dir(),
            endpoint=endpoint,
            library_name="ramtag",
            tqdm_class=tqdm_class,
        )
    except LocalEntryNotFoundError as e:  # the Hub could not be reached and nothing is cached
        if paths.offline():
            raise _offline_error(what, file_url(f)) from e
        cause = e.__cause__ or e
        raise DownloadError(f"cannot reach {endpoint} for {what} ({_one_line(cause)}); {_FIX}") from e
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise DownloadError(
            f"{what} not found on {endpoint} ({type(e).__name__}); check HF_ENDPOINT, {_FIX}"
        ) from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise DownloadError(f"{what}: HTTP {status} from {endpoint}; {_FIX}") from e
    except Exception as e:
        if _is_network_error(e):
            raise DownloadError(f"downloading {what} from {endpoint} failed ({_one_line(e)}); {_FIX}") from e
        raise
    path = Path(local)
    _check_hub_file(f, path, hash_it=True)
    return path


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
    """A failure worth retrying (connection dropped, timeout, 5xx)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _stream_to_part(url: str, part: Path, factory: ProgressFactory, description: str, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (Range request when it already holds bytes)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "ramtag", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is not a prefix of this file: start again
            part.unlink()
            raise _Transient(f"HTTP 416 for a resumed download of {url}") from e
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(
            f"{url}: HTTP {e.code} {e.reason}; check the URL (RAMTAG_GITHUB_RAW?), {_FIX}"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(_one_line(e)) from e
    with response:
        content_range = response.headers.get("Content-Range", "")
        if have and response.status == 206 and content_range.startswith(f"bytes {have}-"):
            mode = "ab"
        else:  # the server sent the whole file
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = factory(description, total, have)
        try:
            with open(part, mode) as out:
                # read1: what has arrived (not a full chunk), so a trickling server is noticed (issue 12)
                window_start, window_bytes = time.monotonic(), 0
                while chunk := response.read1(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= _STALL_SECONDS:
                        if window_bytes < _MIN_RATE * elapsed:
                            raise _Transient(f"slower than {_MIN_RATE // 1024} KB/s for {elapsed:.0f} s")
                        window_start, window_bytes = time.monotonic(), 0
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_one_line(e) or "connection dropped") from e
        finally:
            bar.close()
    if total is not None and part.stat().st_size < total:
        raise _Transient(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch_url(
    f: UrlFile, *, progress: bool | ProgressFactory = True, attempts: int = 3, timeout: float = 30.0
) -> Path:
    """Download ``f`` (or find it cached) and return its local path, checked against ``f.sha256``.

    Streams to ``<name>.part`` next to the destination; an interrupted transfer is resumed with an HTTP
    Range request (within this call, up to ``attempts`` tries, and by the next call when all fail).
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
    for attempt in range(1, attempts + 1):
        try:
            _stream_to_part(url, part, factory, f.filename, timeout)
            break
        except _Transient as e:
            if attempt == attempts:
                raise DownloadError(f"downloading {url} failed ({e}); {_FIX}") from e
            log.warning("downloading %s: %s; resuming (attempt %d of %d)", url, e, attempt + 1, attempts)
            time.sleep(0.2 * attempt)
    actual = sha256_file(part)
    if actual != f.sha256:
        part.unlink()
        raise DownloadError(
            f"{url}: sha256 {actual} does not match the expected {f.sha256}; deleted it, {_FIX}"
        )
    durable_replace(part, dest)
    return dest
