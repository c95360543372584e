"""Shared test fixtures. Fixture files are read from ../shared (beside the checkout), never copied.

Without ../shared (a fresh clone) the tests that need it skip with one line naming the missing path;
``RAMTAG_REQUIRE_FIXTURES=1`` (set by ``.ci/run``) turns each such skip into a failure, so CI always runs
them. The same switch applies to the external programs that ``@pytest.mark.interop("exiftool", ...)``
tests need.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMTAG_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
PHOTOS = SHARED / "photos"
OFFICIAL_DATA = SHARED / "official-data"

# Wall-clock limit for tests that start several processes (torchrun, gloo, fork): generous because a
# loaded 2-core machine runs the ranks one after another; it only has to stop a hang, not measure speed.
MULTIPROCESS_TIMEOUT_S = 600


def fixtures_required() -> bool:
    """True where a missing fixture must fail the run instead of skipping (CI)."""
    return os.environ.get("RAMTAG_REQUIRE_FIXTURES", "").strip().lower() not in ("", "0", "false", "no")


def missing_fixture(what: str, fix: str) -> None:
    """Skip the current test with one line (or fail it under RAMTAG_REQUIRE_FIXTURES=1)."""
    if fixtures_required():
        pytest.fail(f"{what} missing: {fix} (RAMTAG_REQUIRE_FIXTURES is set, so this fails)", pytrace=False)
    pytest.skip(f"{what} missing: {fix}")


def _need(path: Path) -> Path:
    if not path.exists():
        missing_fixture(f"fixture {path}", "put ../shared beside the checkout or set RAMTAG_SHARED")
    return path


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.interop("exiftool", "exiv2")``: the test runs real programs; skip (or fail in CI)
    when one is not on PATH."""
    for mark in item.iter_markers("interop"):
        for program in mark.args:
            if shutil.which(program) is None:
                missing_fixture(f"program {program!r}", f"install it (see .ci/run) to run {item.name}")


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
def commits_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batched sidecar commits in this process, not the helper process: for tests that simulate a
    disk fault by patching ``os`` here (the helper's own error path is tested with real faults)."""
    from ramtag.fsutil import AtomicBatch

    monkeypatch.setattr(AtomicBatch, "HELPER_MIN_FILES", 10**9)


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
