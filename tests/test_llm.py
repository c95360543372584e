"""LLMSettings resolution and LLMClient behaviour against a real loopback HTTP server."""

from __future__ import annotations

import logging
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


def test_malformed_json(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.script = ["malformed"]
    with pytest.raises(LLMError, match="malformed JSON"):
        client_for(fake_llm).chat("p")


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
