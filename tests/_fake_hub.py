"""A real loopback HTTP server standing in for the Hugging Face Hub and raw.githubusercontent.com.

Hub: ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` answered the way huggingface_hub expects
for an LFS file (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` = sha256, ``X-Linked-Size``,
``Content-Length``), with HTTP Range support. Raw files: ``GET /gh/<path>``. Every request is recorded;
a path can be set to drop the connection midway through its next GET body, to trickle its body, or to
answer its next requests with scripted HTTP errors (``errors``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# the server's own pauses: tests patch time.sleep to skip ramtag's waits, and a handler still trickling
# bytes from an earlier test must neither be skipped nor show up among the next test's waits
_sleep = time.sleep

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class Served:
    data: bytes
    linked_sha256: str  # what the Hub says the LFS object's sha256 is (may be wrong on purpose)
    honour_range: bool = True


@dataclass
class FakeHub:
    files: dict[str, Served] = field(default_factory=dict)  # URL path -> content
    hub_paths: set[str] = field(default_factory=set)  # paths that get Hub headers
    drop_next: dict[str, int] = field(default_factory=dict)  # path -> bytes to send before dropping (once)
    trickle: dict[str, float] = field(default_factory=dict)  # path -> seconds between single body bytes
    # path (GET only) or "METHOD path" -> seconds between header bytes
    slow_headers: dict[str, float] = field(default_factory=dict)
    # "GET /path" or "HEAD /path" -> (status, Retry-After or None) answers for its next requests, in order
    errors: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- content ------------------------------------------------------------------------------------

    def add_hub_file(
        self, repo_id: str, filename: str, data: bytes, *, linked_sha256: str | None = None
    ) -> None:
        """Serve ``data`` at both the branch ("main") and the commit revision of ``repo_id``."""
        sha = linked_sha256 or hashlib.sha256(data).hexdigest()
        for revision in ("main", COMMIT):
            path = f"/{repo_id}/resolve/{revision}/{filename}"
            self.files[path] = Served(data, sha)
            self.hub_paths.add(path)

    def add_raw(self, path: str, data: bytes, *, honour_range: bool = True) -> str:
        """Serve ``data`` at ``/gh/<path>``; returns the URL path."""
        url_path = "/gh/" + path.lstrip("/")
        self.files[url_path] = Served(data, hashlib.sha256(data).hexdigest(), honour_range)
        return url_path

    def drop_midway(self, path: str, after: int) -> None:
        """The next GET of ``path`` sends ``after`` body bytes, then closes the connection."""
        self.drop_next[path] = after

    # -- inspection ---------------------------------------------------------------------------------

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.requests if method is None or r.method == method)

    def ranges(self) -> list[str]:
        return [r.range for r in self.requests if r.range]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            rng = self.headers.get("Range")
            with hub.lock:
                hub.requests.append(Request(self.command, path, rng))
                served = hub.files.get(path)
                drop = hub.drop_next.pop(path, None) if body else None
                scripted = hub.errors.get(f"{self.command} {path}")
                error = scripted.pop(0) if scripted else None
            pause = hub.slow_headers.get(
                f"{self.command} {path}", hub.slow_headers.get(path) if body else None
            )
            if pause is not None:  # 3 s of header bytes, one at a time, then the connection closes
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * int(3 / pause):
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return
                    _sleep(pause)
                self.close_connection = True
                return
            if error is not None:
                self.send_response(error[0])
                if error[1] is not None:
                    self.send_header("Retry-After", error[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if served is None:
                self.send_response(404)
                if path in hub.hub_paths or "/resolve/" in path:
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data, size = served.data, len(served.data)
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and served.honour_range:
                start = int(m.group(1))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            if path in hub.hub_paths:
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{served.linked_sha256}"')
                self.send_header("X-Linked-Etag", f'"{served.linked_sha256}"')
                self.send_header("X-Linked-Size", str(size))
            self.end_headers()
            if not body:
                return
            chunk = data[start:]
            pause = hub.trickle.get(path)
            if pause is not None:  # one byte at a time: never silent long enough for a read timeout
                for i in range(len(chunk)):
                    try:
                        self.wfile.write(chunk[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    _sleep(pause)
                return
            if drop is not None:
                self.wfile.write(chunk[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # SHUT_RDWR: the client sees the body end early
                return
            self.wfile.write(chunk)

    return Handler


class FakeHubServer:
    """Context manager: start the server on 127.0.0.1 (random port), stop it on exit."""

    def __init__(self) -> None:
        self.hub = FakeHub()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self._server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Run a fake server and point HF_ENDPOINT and RAMTAG_GITHUB_RAW at it, online."""
    import huggingface_hub.constants

    with FakeHubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("RAMTAG_GITHUB_RAW", server.url + "/gh")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RAMTAG_OFFLINE", raising=False)
        # huggingface_hub reads HF_HUB_OFFLINE once at import; a developer's global setting must not leak in.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server
