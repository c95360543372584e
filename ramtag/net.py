"""Bounded HTTP requests with urllib: a deadline that cuts a request's socket whatever it is waiting
for (connecting, a TLS handshake, headers trickled a byte at a time), which a per-read timeout cannot.
Used by the LLM client (the whole request) and by downloads (connecting and the headers; the body has
its own rate floor in :mod:`ramtag.hub`)."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import socket
import threading
import time
import urllib.request
from typing import Any


class Deadline:
    """One request's deadline: shuts the socket down when it passes, whatever a read is waiting for."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def opener(deadline: Deadline, *, follow_redirects: bool = False) -> urllib.request.OpenerDirector:
    """urllib (proxies, TLS) with connections whose socket ``deadline`` can cut from the moment it is
    connected (so a TLS handshake or proxy CONNECT is inside the deadline too). Redirects are followed
    only with ``follow_redirects`` (an API key must not follow to another host; a header added with
    ``Request.add_unredirected_header`` never does)."""

    def connect(*args: Any, **kwargs: Any) -> socket.socket:
        sock = socket.create_connection(*args, **kwargs)
        deadline.attach(sock)
        return sock

    def wrap(cls: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Conn(cls):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._create_connection = connect

        return Conn

    http_conn, https_conn = wrap(http.client.HTTPConnection), wrap(http.client.HTTPSConnection)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(http_conn, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(https_conn, req, context=self._context)  # type: ignore[attr-defined]

    class NoRedirect(urllib.request.HTTPRedirectHandler):  # the API key must not follow to another host
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    if follow_redirects:
        return urllib.request.build_opener(Http, Https)
    return urllib.request.build_opener(Http, Https, NoRedirect)


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
