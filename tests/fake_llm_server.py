"""A fake OpenAI-compatible chat server on loopback (real HTTP, one thread per request) for the LLM tests.

``FakeLLM`` records every request (path, headers, JSON body) and answers ``POST /v1/chat/completions``
according to its knobs:

- ``script``: a queue of steps served before normal answers: HTTP statuses, ``"malformed"`` (not JSON),
  ``"reset"`` (close without answering), ``"empty-choices"`` (``choices: []``), ``"no-content"`` (choices
  whose content is null), ``"slow"`` (a valid answer trickled one byte every ``trickle`` seconds),
  ``"huge"`` (``huge_bytes`` of padding, no Content-Length), ``"huge-declared"`` (a Content-Length of 1 GB),
  ``"bad-utf8"`` (content with bytes that are not UTF-8),
  ``"redirect"`` (HTTP 302 elsewhere), ``"slow-headers"`` (headers trickled like ``"slow"``),
  ``"surrogate"`` (content with a lone ``\\ud800``);
  ``forever`` repeats the last step for every later request (a server that always misbehaves);
- ``n_mode``: ``"ok"`` (n choices), ``"ignore"`` (always 1 choice, like Ollama), ``"reject"`` (HTTP 400 when
  n > 1, like llama.cpp);
- ``status``: a fixed error status for every request (401, 404, ...), with ``error_message`` as its body;
- ``delay``: seconds to wait before answering (for timeouts);
- ``answer(prompt, index)``: the text of each choice;
- ``models``: what ``GET /v1/models`` lists (None: HTTP 404, as on servers without that route).

It binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def default_answer(prompt: str, index: int) -> str:
    return f'  - "Answer {index} to: {prompt}"  '


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int | str] = []
        self.n_mode = "ok"
        self.status: int | None = None
        self.error_message = "something went wrong"
        self.delay = 0.0
        self.answer: Callable[[str, int], str] = default_answer
        self.forever = False
        self.trickle = 2.0
        self.huge_bytes = 6 * 2**20
        self.models: list[str] | None = None
        self.retry_after = "0"  # Retry-After of scripted 429/5xx answers
        self._lock = threading.Lock()
        self._counter = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
                if self.path != "/v1/models" or fake.models is None:
                    return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                data = [{"id": m, "object": "model", "owned_by": "me"} for m in fake.models]
                self._send_json(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    if fake.forever and len(fake.script) == 1:
                        step = fake.script[0]
                    else:
                        step = fake.script.pop(0) if fake.script else None
                if fake.delay:
                    time.sleep(fake.delay)
                if step == "reset":
                    self.connection.shutdown(2)  # close without any answer
                    return
                if step == "malformed":
                    return self._send(200, b"<html>this is not json")
                if step == "slow-headers":  # the status line, then headers one byte at a time
                    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"x" * 200 + b"\r\n\r\n"
                    with contextlib.suppress(OSError):
                        for i in range(len(raw)):
                            self.wfile.write(raw[i : i + 1])
                            self.wfile.flush()
                            time.sleep(fake.trickle)
                    self.close_connection = True
                    return None
                if step == "redirect":  # to another "host" (path) on this server
                    return self._send(302, b"", {"Location": "/elsewhere/v1/chat/completions"})
                if step == "empty-choices":
                    return self._send_json(200, {"id": "x", "object": "chat.completion", "choices": []})
                if step == "no-content":
                    choice = {"index": 0, "message": {"role": "assistant", "content": None}}
                    return self._send_json(200, {"id": "x", "choices": [choice]})
                if step == "huge-declared":
                    return self._send(200, b"{}", {"Content-Length": str(10**9)}, declared=False)
                if step == "huge":
                    return self._send_stream(b'{"pad": "' + b"x" * fake.huge_bytes + b'"}', 65536, 0.0)
                if step in ("slow", "bad-utf8", "surrogate"):
                    content = {
                        "slow": b"A slow owl with feathers.",
                        "bad-utf8": b"A grey owl \xff\xfe with big eyes.",
                        "surrogate": b"A lone surrogate \\ud800 owl with big eyes.",
                    }[step]
                    data = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
                    data += content + b'"}}]}'
                    if step == "slow":
                        return self._send_stream(data, 1, fake.trickle)
                    return self._send(200, data)
                if isinstance(step, int):
                    return self._send_json(
                        step, {"error": {"message": f"scripted {step}"}}, {"Retry-After": fake.retry_after}
                    )
                if fake.status is not None:
                    return self._send_json(fake.status, {"error": {"message": fake.error_message}})
                if self.path != "/v1/chat/completions":
                    return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                n = int(body.get("n", 1))
                if n > 1 and fake.n_mode == "reject":
                    return self._send_json(400, {"error": {"message": "n > 1 is not supported"}})
                if fake.n_mode == "ignore":
                    n = 1
                prompt = body["messages"][0]["content"]
                choices = []
                for i in range(n):
                    with fake._lock:
                        fake._counter += 1
                        k = fake._counter
                    choices.append(
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": fake.answer(prompt, k)},
                            "finish_reason": "stop",
                        }
                    )
                self._send_json(
                    200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices}
                )

            def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(obj).encode(), headers)

            def _send_stream(self, data: bytes, piece: int, interval: float) -> None:
                """``data`` in ``piece``-byte writes ``interval`` s apart, then the connection closes."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                    for i in range(0, len(data), piece):
                        self.wfile.write(data[i : i + piece])
                        self.wfile.flush()
                        if interval:
                            time.sleep(interval)

            def _send(
                self, status: int, data: bytes, headers: dict[str, str] | None = None, declared: bool = True
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if declared:
                    self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client left
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def hits(self) -> int:
        return len(self.requests)

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"
