"""LLMSettings resolution and LLMClient behaviour against a real loopback HTTP server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLM, closed_port_url, fake_llm  # noqa: F401

from ramtag.errors import InputError, LLMError
from ramtag.text.llm import DEFAULT_BASE_URL, DEFAULT_MODEL, LLMClient, LLMSettings, default_backoff

SECRET = "sk-test-SECRET123"


def client_for(
    fake: FakeLLM,
    *,
    key: str | None = SECRET,
    timeout: float = 5.0,
    retries: int = 4,
    sleeps: list[float] | None = None,
) -> LLMClient:
    settings = LLMSettings(
        base_url=fake.url, model="fake-model", api_key=key, timeout=timeout, max_retries=retries
    )
    record = sleeps if sleeps is not None else []
    return LLMClient(settings, sleep=record.append)


# ------------------------------------------------------------------------------------------ settings
def test_settings_precedence_flags_env_config_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[llm]\nbase_url = "http://cfg-host:1/v1"\nmodel = "cfg-model"\napi_key = "sk-cfg"\ntimeout = 12\n'
    )
    s = LLMSettings.from_env(config_file=tmp_path / "missing.toml")
    assert (s.base_url, s.model, s.api_key, s.configured) == (DEFAULT_BASE_URL, DEFAULT_MODEL, None, False)

    s = LLMSettings.from_env(config_file=cfg)
    assert (s.base_url, s.model, s.api_key, s.timeout) == (
        "http://cfg-host:1/v1",
        "cfg-model",
        "sk-cfg",
        12.0,
    )

    monkeypatch.setenv("RAMTAG_LLM_BASE_URL", "http://env-host:2/v1/")
    monkeypatch.setenv("RAMTAG_LLM_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    s = LLMSettings.from_env(config_file=cfg)
    assert (s.base_url, s.model, s.api_key) == ("http://env-host:2/v1", "env-model", "sk-env")

    s = LLMSettings.from_env(
        base_url="http://flag-host:3", model="flag-model", api_key="sk-flag", config_file=cfg
    )
    assert (s.base_url, s.model, s.api_key) == ("http://flag-host:3/v1", "flag-model", "sk-flag")
    assert s.host == "flag-host:3" and s.configured


def test_settings_default_config_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_config_dir", lambda name: str(tmp_path / name))
    (tmp_path / "ramtag").mkdir()
    (tmp_path / "ramtag" / "config.toml").write_text('[llm]\nmodel = "from-user-config"\n')
    assert LLMSettings.from_env().model == "from-user-config"


def test_settings_bad_config_and_url(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[llm\nmodel = 1")
    with pytest.raises(InputError, match=r"config\.toml: not valid TOML"):
        LLMSettings.from_env(config_file=bad)
    with pytest.raises(LLMError, match="RAMTAG_LLM_BASE_URL"):
        LLMSettings(base_url="localhost:11434")


def test_settings_never_show_the_key() -> None:
    s = LLMSettings(base_url="http://h:1/v1", model="m", api_key=SECRET)
    for text in (repr(s), str(s), f"{s}", repr(LLMClient(s))):
        assert SECRET not in text
        assert "api_key=<set>" in text


# ------------------------------------------------------------------------------------------ requests
def test_chat_sends_openai_request(fake_llm: FakeLLM) -> None:  # noqa: F811
    client = client_for(fake_llm)
    answers = client.chat("Describe a cat", n=3, temperature=0.99, max_tokens=77)
    assert len(answers) == 3 and all("Describe a cat" in a for a in answers)
    (req,) = fake_llm.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"] == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Describe a cat"}],
        "temperature": 0.99,
        "max_tokens": 77,
        "n": 3,
    }


def test_chat_without_key_sends_no_authorization(fake_llm: FakeLLM) -> None:  # noqa: F811
    client_for(fake_llm, key=None).chat("hi")
    assert "Authorization" not in fake_llm.requests[0]["headers"]
    assert "n" not in fake_llm.requests[0]["body"]


@pytest.mark.parametrize("mode", ["reject", "ignore"])
def test_n_fallback_is_remembered(fake_llm: FakeLLM, mode: str) -> None:  # noqa: F811
    fake_llm.n_mode = mode
    client = client_for(fake_llm)
    answers = client.chat("p", n=4)
    assert len(answers) == 4 and len(set(answers)) == 4
    assert client.single_choice
    # one n=4 try, then single requests: 4 (reject) or 3 more (ignore keeps the first answer)
    assert fake_llm.hits == (5 if mode == "reject" else 4)
    assert [b.get("n") for b in fake_llm.bodies()][1:] == [None] * (fake_llm.hits - 1)
    before = fake_llm.hits
    assert len(client.chat("q", n=3)) == 3
    assert fake_llm.hits == before + 3  # no more n > 1 attempts
    assert all("n" not in b for b in fake_llm.bodies()[before:])


def test_retries_429_and_503_with_exponential_backoff(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = [429, 503, 502]
    sleeps: list[float] = []
    client = client_for(fake_llm, sleeps=sleeps)
    assert len(client.chat("p", n=2)) == 2
    assert fake_llm.hits == 4
    assert sleeps == [default_backoff(0), default_backoff(1), default_backoff(2)] == [1.0, 2.0, 4.0]


def test_retries_connection_reset(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = ["reset"]
    sleeps: list[float] = []
    assert len(client_for(fake_llm, sleeps=sleeps).chat("p")) == 1
    assert fake_llm.hits == 2 and sleeps == [1.0]


def test_gives_up_after_max_retries(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = [503] * 10
    with pytest.raises(LLMError, match=r"failed 3 times \(last: HTTP 503\)"):
        client_for(fake_llm, retries=2).chat("p")
    assert fake_llm.hits == 3


def test_malformed_json_is_a_failed_attempt(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = ["malformed"]
    assert len(client_for(fake_llm).chat("p")) == 1 and fake_llm.hits == 2
    fake_llm.script, fake_llm.forever = ["malformed"], True
    with pytest.raises(LLMError, match=r"failed 3 times .*malformed JSON"):
        client_for(fake_llm, retries=2).chat("p")


# ------------------------------------------------------------------ hostile servers (issue 12, case 1-3)
@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("empty-choices", "0 choices and no text"),
        ("no-content", "1 choices and no text"),
        ("malformed", "malformed JSON"),
        ("huge", "larger than 4 MiB"),
        ("huge-declared", "1000000000 bytes"),
    ],
)
def test_unusable_answers_cost_a_bounded_number_of_requests(
    fake_llm: FakeLLM,  # noqa: F811
    step: str,
    reason: str,
) -> None:
    # An empty `choices` list used to make describe loop forever (257,633 requests in 300 s).
    fake_llm.script, fake_llm.forever = [step], True
    sleeps: list[float] = []
    client = client_for(fake_llm, retries=3, sleeps=sleeps)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match=rf"failed 4 times \(last: .*{reason}") as e:
        client.chat("p", n=10)
    assert fake_llm.hits == client.requests == 4 and sleeps == [1.0, 2.0, 4.0]
    assert time.monotonic() - t0 < 20 and "\n" not in str(e.value)


def test_unusable_answer_then_a_good_one(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = ["empty-choices", "no-content"]
    assert len(client_for(fake_llm).chat("p", n=3)) == 3 and fake_llm.hits == 3


def test_trickling_body_hits_one_overall_deadline(fake_llm: FakeLLM) -> None:  # noqa: F811
    # One byte every 0.2 s never trips a per-read timeout of 1 s; the answer (~100 bytes) would take 20 s.
    fake_llm.script, fake_llm.forever, fake_llm.trickle = ["slow"], True, 0.2
    t0 = time.monotonic()
    with pytest.raises(LLMError, match=r"failed 2 times \(last: no answer within 1 s\)"):
        client_for(fake_llm, timeout=1.0, retries=1).chat("p")
    assert time.monotonic() - t0 < 4.0 and fake_llm.hits == 2


def test_trickling_headers_hit_the_same_deadline(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script, fake_llm.forever, fake_llm.trickle = ["slow-headers"], True, 0.2
    t0 = time.monotonic()
    with pytest.raises(LLMError, match=r"failed 2 times \(last: no answer within 1 s\)"):
        client_for(fake_llm, timeout=1.0, retries=1).chat("p")
    assert time.monotonic() - t0 < 4.0


def test_a_slow_body_within_the_deadline_is_fine(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script, fake_llm.trickle = ["slow"], 0.0
    assert client_for(fake_llm, timeout=5.0).chat("p") == ["A slow owl with feathers."]


def test_invalid_utf8_and_lone_surrogates_become_replacement_characters(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    fake_llm.script = ["bad-utf8", "surrogate"]
    client = client_for(fake_llm)
    bad, sur = client.chat("p")[0], client.chat("p")[0]
    assert bad == "A grey owl \ufffd\ufffd with big eyes."
    assert sur == "A lone surrogate \ufffd owl with big eyes."
    for text in (bad, sur):
        text.encode("utf-8")  # storable


def test_retry_after_is_honoured_within_a_bound(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script, fake_llm.retry_after = [429], "7"
    sleeps: list[float] = []
    assert len(client_for(fake_llm, sleeps=sleeps).chat("p")) == 1 and sleeps == [7.0]
    fake_llm.script, fake_llm.retry_after = [429], "3600"
    sleeps.clear()
    with pytest.raises(LLMError, match=r"asked to wait 3600 s .*Retry-After.*at most 60 s"):
        client_for(fake_llm, sleeps=sleeps).chat("p")
    assert sleeps == []


# ------------------------------------------------------------------------ model discovery (issue 13.6)
def test_no_model_invented_for_a_local_server(fake_llm: FakeLLM) -> None:  # noqa: F811
    assert LLMSettings().model == DEFAULT_MODEL  # OpenAI's own API keeps its default
    settings = LLMSettings(base_url=fake_llm.url)
    assert settings.model is None
    fake_llm.models = ["llama3.2:3b"]
    client = LLMClient(settings, sleep=lambda s: None)
    client.chat("p")
    client.chat("q")
    assert [r["path"] for r in fake_llm.requests].count("/v1/models") == 1
    assert [b["model"] for b in fake_llm.bodies() if b] == ["llama3.2:3b", "llama3.2:3b"]


@pytest.mark.parametrize(("models", "says"), [(None, "did not list one"), (["a", "b"], "serves 2 models")])
def test_unknown_model_fails_naming_llm_model(
    fake_llm: FakeLLM,  # noqa: F811
    models: list[str] | None,
    says: str,
) -> None:
    fake_llm.models = models
    client = LLMClient(LLMSettings(base_url=fake_llm.url), sleep=lambda s: None)
    with pytest.raises(LLMError, match=rf"no LLM model given and .*{says}.*--llm-model"):
        client.chat("p")
    assert not any(r["path"] == "/v1/chat/completions" for r in fake_llm.requests)


def test_slow_answer_times_out(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.delay = 1.0
    with pytest.raises(LLMError, match=r"no answer within 0.2 s"):
        client_for(fake_llm, timeout=0.2, retries=1).chat("p")
    assert fake_llm.hits == 2


def test_401_names_the_key_setting_and_hides_the_key(
    fake_llm: FakeLLM,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_llm.status = 401
    fake_llm.error_message = f"Incorrect API key provided: {SECRET}"  # real servers echo (part of) it
    with pytest.raises(LLMError) as e:
        client_for(fake_llm).chat("p")
    msg = str(e.value)
    assert "OPENAI_API_KEY" in msg and "HTTP 401" in msg and "\n" not in msg
    assert SECRET not in msg and SECRET not in caplog.text
    assert fake_llm.hits == 1  # not retried


def test_404_names_the_model_and_url_settings(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.status = 404
    with pytest.raises(LLMError, match=r"'fake-model'.*RAMTAG_LLM_MODEL.*RAMTAG_LLM_BASE_URL"):
        client_for(fake_llm).chat("p")


def test_connection_refused_names_the_base_url_setting() -> None:
    client = LLMClient(LLMSettings(base_url=closed_port_url(), model="m"), sleep=lambda s: None)
    with pytest.raises(LLMError, match=r"connection refused.*--llm-base-url / RAMTAG_LLM_BASE_URL"):
        client.chat("p")
    assert client.requests == 1


def test_key_never_logged(fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    fake_llm.script = [429]
    fake_llm.n_mode = "reject"
    client_for(fake_llm).chat("p", n=2)
    assert caplog.records  # the retry and the n fallback were logged
    assert SECRET not in caplog.text


def test_redirects_are_not_followed_so_the_key_stays_home(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = ["redirect"]
    with pytest.raises(LLMError, match="answered HTTP 302"):
        client_for(fake_llm).chat("p")
    assert [r["path"] for r in fake_llm.requests] == ["/v1/chat/completions"]
