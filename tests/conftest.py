"""Shared test fixtures. Fixture files are read from ../shared (beside the checkout), never copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMTAG_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
PHOTOS = SHARED / "photos"
OFFICIAL_DATA = SHARED / "official-data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path} missing (expected ../shared beside the checkout)")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty RAMTAG_HOME, so nothing leaks into the user's cache."""
    home = tmp_path_factory.mktemp("ramtag_home")
    monkeypatch.setenv("RAMTAG_HOME", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RAMTAG_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("RAMTAG_LLM_MODEL", raising=False)
    return home


@pytest.fixture
def ramtag_home() -> Path:
    return Path(os.environ["RAMTAG_HOME"])


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _need(PARITY)


@pytest.fixture(scope="session")
def shared_photos() -> Path:
    return _need(PHOTOS)


@pytest.fixture(scope="session")
def official_data() -> Path:
    return _need(OFFICIAL_DATA)
