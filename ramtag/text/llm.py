"""A small client for OpenAI-compatible chat servers (OpenAI, Ollama, llama.cpp, vLLM, LM Studio).

Only ``POST {base_url}/chat/completions`` is used. Settings come from, highest priority first:
explicit arguments (CLI flags) > environment (``RAMTAG_LLM_BASE_URL``, ``RAMTAG_LLM_MODEL``,
``OPENAI_API_KEY``) > the ``[llm]`` section of ``<user config dir>/ramtag/config.toml`` > defaults.

The API key is never logged, never shown by ``repr``/``str``, never written to any cache, and is
scrubbed from every error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
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

from ..errors import InputError, LLMError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0  # seconds per HTTP request
DEFAULT_MAX_RETRIES = 4  # extra attempts after 429 / 5xx / reset connections / timeouts

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
    model: str = DEFAULT_MODEL  # model name as the server knows it
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
            model=str(name or DEFAULT_MODEL),
            api_key=str(key) if key else None,
            timeout=secs_f,
        )


def default_backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 1, 2, 4, 8, ... capped at 30."""
    return float(min(30.0, 2.0**attempt))


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

    def __repr__(self) -> str:
        return f"LLMClient({self.settings!r})"

    # ------------------------------------------------------------------ public
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

    def _complete(self, prompt: str, n: int, temperature: float, max_tokens: int) -> list[str]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if n > 1:
            body["n"] = n
        data = self._post("/chat/completions", body)
        try:
            choices = data["choices"]
            out = [str(c["message"]["content"] or "") for c in choices]
        except (KeyError, TypeError, IndexError):
            raise LLMError(
                f"LLM server {self.settings.base_url} answered without choices[].message.content; "
                "is it OpenAI-compatible? check --llm-base-url / " + ENV_BASE_URL
            ) from None
        return out

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        s = self.settings
        url = s.base_url + path
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "ramtag"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        payload = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
            with self._lock:
                self.requests += 1
            retry_reason: str
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(req, timeout=s.timeout) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise LLMError(
                        f"LLM server {s.base_url} answered with malformed JSON ({raw[:60]!r}...); "
                        f"is --llm-base-url / {ENV_BASE_URL} an OpenAI-compatible /v1 root?"
                    ) from None
            except urllib.error.HTTPError as e:
                status, detail = e.code, self._scrub(_error_detail(e))
                if status == 400:
                    raise _BadRequest(detail) from None
                if status in (401, 403):
                    raise LLMError(
                        f"LLM server {s.base_url} refused the API key (HTTP {status}: {detail}); "
                        f"set {ENV_API_KEY} (or --llm-api-key / api_key in [llm] of config.toml)"
                    ) from None
                if status == 404:
                    raise LLMError(
                        f"LLM server {s.base_url} has no model {s.model!r} or no /chat/completions "
                        f"(HTTP 404: {detail}); set --llm-model / {ENV_MODEL}, or check "
                        f"--llm-base-url / {ENV_BASE_URL} (usually ends in /v1)"
                    ) from None
                if status not in _RETRY_STATUS:
                    raise LLMError(f"LLM server {s.base_url} answered HTTP {status} ({detail})") from None
                retry_reason = f"HTTP {status}"
                retry_after = _retry_after(e)
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, ConnectionRefusedError):
                    raise LLMError(
                        f"cannot connect to the LLM server at {s.base_url} (connection refused); start "
                        f"it or set --llm-base-url / {ENV_BASE_URL}"
                    ) from None
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    retry_reason = f"no answer within {s.timeout:g} s"
                elif isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):
                    retry_reason = "connection reset"
                elif isinstance(reason, socket.gaierror):
                    raise LLMError(
                        f"cannot resolve the LLM server host {s.host!r}; check --llm-base-url / "
                        f"{ENV_BASE_URL} and the network"
                    ) from None
                else:
                    raise LLMError(
                        self._scrub(
                            f"cannot reach the LLM server at {s.base_url} ({reason}); check "
                            f"--llm-base-url / {ENV_BASE_URL}"
                        )
                    ) from None
            except TimeoutError:
                retry_reason = f"no answer within {s.timeout:g} s"
            except (
                ConnectionResetError,
                ConnectionAbortedError,
                http.client.RemoteDisconnected,
                http.client.IncompleteRead,
            ):
                retry_reason = "connection reset"
            if attempt >= s.max_retries:
                raise LLMError(
                    f"LLM server {s.base_url} failed {attempt + 1} times (last: {retry_reason}); "
                    "try again later, or raise the timeout in [llm] of config.toml"
                )
            wait = self.backoff(attempt)
            if retry_after is not None:
                wait = max(wait, min(retry_after, 60.0))
            log.info(
                "LLM request failed (%s); retry %d/%d in %.1f s",
                retry_reason,
                attempt + 1,
                s.max_retries,
                wait,
            )
            self.sleep(wait)
            attempt += 1


class _BadRequest(Exception):
    """HTTP 400 (handled by :meth:`LLMClient.chat`: maybe the server rejects ``n``)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _error_detail(e: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI ``{"error": {"message": ...}}``), one line, short."""
    try:
        raw = e.read().decode("utf-8", "replace")
    except Exception:
        raw = ""
    msg = raw
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, AttributeError):
        pass
    msg = " ".join(msg.split())
    return (msg[:200] + "...") if len(msg) > 200 else (msg or str(e.reason))


def _retry_after(e: urllib.error.HTTPError) -> float | None:
    value = e.headers.get("Retry-After") if e.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
