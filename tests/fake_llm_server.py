"""A fake OpenAI-compatible chat server on loopback (real HTTP, one thread per request) for the LLM tests.

``FakeLLM`` records every request (path, headers, JSON body) and answers ``POST /v1/chat/completions``
according to its knobs:

- ``script``: a queue of HTTP statuses (or ``"malformed"`` / ``"reset"``) served before normal answers;
- ``n_mode``: ``"ok"`` (n choices), ``"ignore"`` (always 1 choice, like Ollama), ``"reject"`` (HTTP 400 when
  n > 1, like llama.cpp);
- ``status``: a fixed error status for every request (401, 404, ...), with ``error_message`` as its body;
- ``delay``: seconds to wait before answering (for timeouts);
- ``answer(prompt, index)``: the text of each choice.
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
        self._lock = threading.Lock()
        self._counter = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = fake.script.pop(0) if fake.script else None
                if fake.delay:
                    time.sleep(fake.delay)
                if step == "reset":
                    self.connection.shutdown(2)  # close without any answer
                    return
                if step == "malformed":
                    return self._send(200, b"<html>this is not json")
                if isinstance(step, int):
                    return self._send_json(
                        step, {"error": {"message": f"scripted {step}"}}, {"Retry-After": "0"}
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

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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
