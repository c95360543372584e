"""A small client for OpenAI-compatible chat servers (OpenAI, Ollama, llama.cpp, vLLM, LM Studio).

Only ``POST {base_url}/chat/completions`` is used (and ``GET {base_url}/models`` once, to find the
model of a server that was not told one). Settings come from, highest priority first:
explicit arguments (CLI flags) > environment (``RAMTAG_LLM_BASE_URL``, ``RAMTAG_LLM_MODEL``,
``OPENAI_API_KEY``) > the ``[llm]`` section of ``<user config dir>/ramtag/config.toml`` > defaults.

Every request is bounded: at most ``max_retries + 1`` attempts, each with one deadline of ``timeout``
seconds for connecting, sending and reading the whole answer (not per read, so a server trickling
one byte at a time cannot hold a run), a body of at most ``MAX_BODY_BYTES``, ``Retry-After`` honoured
up to ``MAX_RETRY_AFTER``. An answer without usable content (no choices, no text, not JSON) is a failed
attempt like an HTTP 503, so a misbehaving server costs a few requests, never an endless loop.

The API key is never logged, never shown by ``repr``/``str``, never written to any cache, and is
scrubbed from every error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from ..errors import InputError, LLMError, printable
from ..net import Deadline, opener, retry_after

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"  # only for OpenAI's own API; other servers are asked (GET /models)
DEFAULT_TIMEOUT = 60.0  # seconds per HTTP request: connect + send + the whole answer
DEFAULT_MAX_RETRIES = 4  # extra attempts after 429 / 5xx / reset connections / timeouts / unusable answers
MAX_BODY_BYTES = 4 * 2**20  # 10 answers of 77 tokens are a few KB; more is not a chat answer
MAX_RETRY_AFTER = 60.0  # a server asking to wait longer than this is given up on (with its Retry-After)

ENV_BASE_URL = "RAMTAG_LLM_BASE_URL"
ENV_MODEL = "RAMTAG_LLM_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def default_config_file() -> Path:
    """``<platformdirs user_config_dir('ramtag')>/config.toml``."""
    return Path(platformdirs.user_config_dir("ramtag")) / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    """The ``[llm]`` table of a TOML config file ({} when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ModuleNotFoundError:
            raise InputError(
                f"{path}: reading config.toml on Python 3.10 needs 'tomli'; pip install tomli"
            ) from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the config file ({e}); fix or remove it") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e}); fix or remove it") from None
    llm = data.get("llm", {})
    if not isinstance(llm, dict):
        raise InputError(f"{path}: [llm] must be a table with base_url, model, api_key, timeout")
    return llm


@dataclass(frozen=True)
class LLMSettings:
    """Where and how to reach the LLM. ``api_key`` is excluded from ``repr``/``str``."""

    base_url: str = DEFAULT_BASE_URL  # OpenAI-compatible API root, e.g. http://localhost:11434/v1
    model: str | None = None  # model name as the server knows it; None: DEFAULT_MODEL on OpenAI, else asked
    api_key: str | None = field(default=None, repr=False)  # bearer token; None for local servers
    timeout: float = DEFAULT_TIMEOUT  # seconds per request
    max_retries: int = DEFAULT_MAX_RETRIES  # retries on 429 / 5xx / reset connections / timeouts

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LLMError(
                f"LLM base URL {url!r} is not an http(s) URL; set --llm-base-url / {ENV_BASE_URL}, "
                "e.g. http://localhost:11434/v1"
            )
        if parts.path in ("", "/"):  # "http://host:port" -> the usual "/v1" root
            url += "/v1"
        object.__setattr__(self, "base_url", url)
        if not self.model and url == DEFAULT_BASE_URL:
            object.__setattr__(self, "model", DEFAULT_MODEL)
        if self.timeout <= 0:
            raise LLMError(f"LLM timeout must be positive (got {self.timeout})")

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return (
            f"LLMSettings(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>, "
            f"timeout={self.timeout})"
        )

    __str__ = __repr__

    @property
    def host(self) -> str:
        """``host[:port]`` of the base URL (part of the description cache key)."""
        return urllib.parse.urlsplit(self.base_url).netloc.lower()

    @property
    def configured(self) -> bool:
        """False for the bare default (OpenAI without a key): then no request is even tried."""
        return self.api_key is not None or self.base_url != DEFAULT_BASE_URL

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        config_file: Path | None = None,
        timeout: float | None = None,
    ) -> LLMSettings:
        """Resolve settings: arguments > environment > config file ``[llm]`` > defaults."""
        cfg = _read_config(Path(config_file) if config_file is not None else default_config_file())

        def pick(arg: Any, env: str | None, key: str) -> Any:
            if arg not in (None, ""):
                return arg
            if env is not None and os.environ.get(env, "").strip():
                return os.environ[env].strip()
            value = cfg.get(key)
            return value if value not in (None, "") else None

        url = pick(base_url, ENV_BASE_URL, "base_url")
        name = pick(model, ENV_MODEL, "model")
        key = pick(api_key, ENV_API_KEY, "api_key")
        secs = pick(timeout, None, "timeout")
        try:
            secs_f = float(secs) if secs is not None else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise InputError(
                f"LLM timeout {secs!r} is not a number; fix timeout in [llm] of the config file"
            ) from None
        return cls(
            base_url=str(url or DEFAULT_BASE_URL),
            model=str(name) if name else None,
            api_key=str(key) if key else None,
            timeout=secs_f,
        )


def default_backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 1, 2, 4, 8, ... capped at 30."""
    return float(min(30.0, 2.0**attempt))


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with lone surrogates (``"\\ud800"`` in JSON decodes to one) replaced by U+FFFD, so it
    can be encoded as UTF-8 (cache files, sidecars, CLIP's tokenizer)."""
    return _SURROGATE.sub("\ufffd", text)


class _Retry(Exception):
    """A failed attempt worth repeating (timeout, reset, 429/5xx, an answer without usable content)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class LLMClient:
    """Chat completions against one server. Thread-safe; counts the HTTP requests it makes."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        backoff: Callable[[int], float] = default_backoff,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.backoff = backoff  # attempt -> seconds (tests inject 0)
        self.sleep = sleep
        self.requests = 0  # HTTP requests sent (tests compare it)
        self.single_choice = False  # learnt: the server ignores or rejects n > 1
        self._lock = threading.Lock()
        self._model: str | None = settings.model
        self._warned_utf8 = False

    def __repr__(self) -> str:
        return f"LLMClient({self.settings!r})"

    # ------------------------------------------------------------------ public
    @property
    def known_model(self) -> str | None:
        """The model when it is known without a request (configured, or listed once already), else None."""
        with self._lock:
            return self._model or None

    @property
    def model(self) -> str:
        """The model to ask: the configured one, else the only model the server lists (GET /models).

        Raises :class:`LLMError` (naming ``--llm-model``) when the server lists none or several.
        """
        with self._lock:
            if self._model:
                return self._model
        name = self._only_model()
        with self._lock:
            self._model = name
        return name

    def chat(self, prompt: str, n: int = 1, temperature: float = 0.99, max_tokens: int = 77) -> list[str]:
        """``n`` answers (message contents) to one user ``prompt``.

        Servers that reject ``n > 1`` (HTTP 400) or return fewer choices (Ollama, llama.cpp) are
        then asked one answer at a time; the client remembers that for later calls.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        answers: list[str] = []
        if n > 1 and not self.single_choice:
            try:
                answers = self._complete(prompt, n, temperature, max_tokens)
            except _BadRequest as e:
                log.info("LLM server rejected n=%d (%s); asking for one answer per request", n, e.message)
                self.single_choice = True
            else:
                if len(answers) >= n:
                    return answers[:n]
                log.info(
                    "LLM server returned %d of %d answers; asking for one answer per request", len(answers), n
                )
                self.single_choice = True
        while len(answers) < n:
            try:
                answers += self._complete(prompt, 1, temperature, max_tokens)[:1]
            except _BadRequest as e:
                raise LLMError(
                    self._scrub(
                        f"LLM server {self.settings.base_url} rejected the request (HTTP 400: "
                        f"{e.message}); check --llm-model / {ENV_MODEL}"
                    )
                ) from None
        return answers

    # ----------------------------------------------------------------- helpers
    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    def _only_model(self) -> str:
        s = self.settings
        hint = f"set --llm-model / {ENV_MODEL} (or model in [llm] of config.toml)"
        try:
            data = self._request("GET", "/models", None, _model_ids)
        except (LLMError, _BadRequest) as e:
            msg = e.message if isinstance(e, _BadRequest) else str(e)
            raise LLMError(
                self._scrub(f"no LLM model given and {s.base_url}/models did not list one ({msg}); {hint}")
            ) from None
        if len(data) != 1:
            listed = ", ".join(repr(storable_text(m)) for m in data[:8]) + (", ..." if len(data) > 8 else "")
            what = f"serves {len(data)} models ({listed})" if data else "lists no model"
            raise LLMError(f"no LLM model given and {s.base_url} {what}; {hint}")
        log.info("using %s, the only model of %s", data[0], s.base_url)
        return data[0]

    def _complete(self, prompt: str, n: int, temperature: float, max_tokens: int) -> list[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if n > 1:
            body["n"] = n
        answers: list[str] = self._request("POST", "/chat/completions", body, _contents)
        return answers

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, usable: Callable[[Any], Any]
    ) -> Any:
        """One API call with bounded retries; ``usable(json)`` returns the result or raises _Retry."""
        s = self.settings
        attempt = 0
        while True:
            with self._lock:
                self.requests += 1
            try:
                data = self._once(method, path, body)
                return usable(data)
            except _Retry as r:
                retry = r
            if attempt >= s.max_retries:
                if retry.reason.startswith("no answer within"):
                    hint = "try again later, or raise the timeout in [llm] of config.toml"
                elif retry.reason.startswith(("HTTP", "connection")):
                    hint = "try again later"
                else:  # it answers, but not with chat completions
                    hint = f"is {s.base_url} an OpenAI-compatible /v1 root, and --llm-model a chat model?"
                raise LLMError(
                    f"LLM server {s.base_url} failed {attempt + 1} times (last: {retry.reason}); {hint}"
                )
            wait = self.backoff(attempt)
            if retry.retry_after is not None:
                if retry.retry_after > MAX_RETRY_AFTER:
                    raise LLMError(
                        f"LLM server {s.base_url} asked to wait {retry.retry_after:.0f} s before retrying "
                        f"({retry.reason}, Retry-After); ramtag waits at most {MAX_RETRY_AFTER:.0f} s - "
                        "try again later"
                    )
                wait = max(wait, retry.retry_after)
            log.info(
                "LLM request failed (%s); retry %d/%d in %.1f s",
                retry.reason,
                attempt + 1,
                s.max_retries,
                wait,
            )
            self.sleep(wait)
            attempt += 1

    def _once(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One HTTP request under one deadline -> parsed JSON; raises _Retry, _BadRequest or LLMError."""
        s = self.settings
        url = s.base_url + path
        headers = {"Accept": "application/json", "User-Agent": "ramtag"}
        payload = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body).encode("utf-8")
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        req = urllib.request.Request(url, data=payload, headers=headers, method=method)
        deadline = Deadline(s.timeout)
        late = f"no answer within {s.timeout:g} s"
        try:
            with opener(deadline).open(req, timeout=deadline.remaining()) as resp:
                raw = _read_body(resp, deadline)
        except urllib.error.HTTPError as e:
            raise self._http_error(e, path) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if deadline.expired or isinstance(reason, TimeoutError):
                raise _Retry(late) from None
            if isinstance(reason, ConnectionRefusedError):
                raise LLMError(
                    f"cannot connect to the LLM server at {s.base_url} (connection refused); start "
                    f"it or set --llm-base-url / {ENV_BASE_URL}"
                ) from None
            if isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):
                raise _Retry("connection reset") from None
            if isinstance(reason, socket.gaierror):
                raise LLMError(
                    f"cannot resolve the LLM server host {s.host!r}; check --llm-base-url / "
                    f"{ENV_BASE_URL} and the network"
                ) from None
            raise LLMError(
                self._scrub(
                    f"cannot reach the LLM server at {s.base_url} ({reason}); check "
                    f"--llm-base-url / {ENV_BASE_URL}"
                )
            ) from None
        except TimeoutError:
            raise _Retry(late) from None
        except (OSError, http.client.HTTPException) as e:  # resets, cut by the deadline, bad status lines
            raise _Retry(late if deadline.expired else f"connection broken ({type(e).__name__})") from None
        finally:
            deadline.cancel()
        if deadline.expired:
            raise _Retry(late)
        text = raw.decode("utf-8", "replace")
        if "\ufffd" in text and not self._warned_utf8:
            self._warned_utf8 = True
            log.warning("LLM server %s sent text that is not valid UTF-8; bad bytes replaced", s.base_url)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise _Retry(f"malformed JSON {printable(raw[:60].decode('ascii', 'replace'))!r}...") from None

    def _http_error(self, e: urllib.error.HTTPError, path: str) -> Exception:
        s = self.settings
        status, detail = e.code, self._scrub(_error_detail(e))
        if status == 400:
            return _BadRequest(detail)
        if path == "/models" and status not in _RETRY_STATUS:  # _only_model says what to do
            return LLMError(f"HTTP {status}: {detail}")
        if status in (401, 403):
            return LLMError(
                f"LLM server {s.base_url} refused the API key (HTTP {status}: {detail}); "
                f"set {ENV_API_KEY} (or --llm-api-key / api_key in [llm] of config.toml)"
            )
        if status == 404:
            return LLMError(
                f"LLM server {s.base_url} has no model {self._model!r} or no {path} "
                f"(HTTP 404: {detail}); set --llm-model / {ENV_MODEL}, or check "
                f"--llm-base-url / {ENV_BASE_URL} (usually ends in /v1)"
            )
        if status not in _RETRY_STATUS:
            return LLMError(f"LLM server {s.base_url} answered HTTP {status} ({detail})")
        return _Retry(f"HTTP {status}", retry_after(e.headers.get("Retry-After") if e.headers else None))


def _read_body(resp: Any, deadline: Deadline, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, read in pieces as they come (``read1``) so the deadline is checked between them."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise _Retry(f"answer of {int(length)} bytes, more than {limit // 2**20} MiB")
    chunks: list[bytes] = []
    total = 0
    while True:
        if deadline.expired:
            raise _Retry(f"no answer within {deadline.seconds:g} s")
        chunk = resp.read1(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise _Retry(f"answer larger than {limit // 2**20} MiB")
        chunks.append(chunk)


def _contents(data: Any) -> list[str]:
    """The non-empty ``choices[].message.content`` texts; raises _Retry when there are none."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise _Retry("answer without choices[].message.content - is it OpenAI-compatible?")
    out = []
    for c in choices:
        msg = c.get("message") if isinstance(c, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str) and content.strip():
            out.append(storable_text(content))
    if not out:
        raise _Retry(f"answer with {len(choices)} choices and no text in them")
    return out


def _model_ids(data: Any) -> list[str]:
    """``data[].id`` of a GET /models answer (OpenAI, Ollama, llama.cpp, vLLM)."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise _Retry("a /models answer without data[].id")
    return [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str) and i["id"]]


class _BadRequest(Exception):
    """HTTP 400 (handled by :meth:`LLMClient.chat`: maybe the server rejects ``n``)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _error_detail(e: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI ``{"error": {"message": ...}}``), one line, short."""
    try:
        raw = e.read(8192).decode("utf-8", "replace")
    except Exception:
        raw = ""
    msg = raw
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, AttributeError):
        pass
    msg = printable(" ".join(storable_text(msg).split()))
    return (msg[:200] + "...") if len(msg) > 200 else (msg or str(e.reason))
