"""ramtag.hub against a real loopback HTTP server standing in for the Hub and GitHub raw."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_hub import COMMIT, FakeHub, serving
from conftest import OFFICIAL_DATA

from ramtag import hub, registry
from ramtag.errors import DownloadError, OfflineError
from ramtag.registry import HubFile, UrlFile
from ramtag.weights_format import sha256_file

DATA = bytes(range(256)) * 4096  # 1 MiB, several read chunks
SHA = hashlib.sha256(DATA).hexdigest()
REPO = "owner/tiny-model"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving(monkeypatch) as server:
        yield server


def hub_file(*, revision: str = "main", size: int | None = len(DATA), sha256: str | None = None) -> HubFile:
    return HubFile(repo_id=REPO, filename="weights.pth", revision=revision, size=size, sha256=sha256)


def raw_file(fake: FakeHub, data: bytes = DATA, *, sha256: str | None = None) -> UrlFile:
    fake.add_raw("owner/repo/abc/data/tags.txt", data)
    return UrlFile(
        url=f"{registry.GITHUB_RAW}/owner/repo/abc/data/tags.txt",
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        filename="tags.txt",
    )


def cache_files() -> list[Path]:
    """Downloaded content in the Hub cache: blobs (complete or temporary) and snapshot entries."""
    root = hub.hub_cache_dir()
    found = list(root.rglob("*")) if root.exists() else []
    return [p for p in found if ("blobs" in p.parts or "snapshots" in p.parts) and not p.is_dir()]


class Recorder:
    """An injected progress factory that records what it is told."""

    def __init__(self) -> None:
        self.bars: list[list[int | None]] = []  # [total, initial, sum of updates, closed]

    def __call__(self, description: str, total: int | None, initial: int) -> Recorder:
        self.bars.append([total, initial, 0, 0])
        return self

    def update(self, n: int) -> None:
        self.bars[-1][2] += n  # type: ignore[operator]

    def close(self) -> None:
        self.bars[-1][3] = 1


# ------------------------------------------------------------------------------------------------ registry


def test_registry_default_entry_and_pinned_tag_files(official_data: Path) -> None:
    spec = registry.WEIGHTS[registry.DEFAULT_WEIGHTS]
    assert spec.checkpoint.repo_id == "xinyu1205/recognize-anything-plus-model"
    assert spec.checkpoint.filename == "ram_plus_swin_large_14m.pth"
    assert spec.checkpoint.size == 3_010_210_801
    assert spec.arch == "swin_l_384" and spec.license == "Apache-2.0"
    for f, name in (
        (spec.tag_list, "ram_tag_list.txt"),
        (spec.tag_list_zh, "ram_tag_list_chinese.txt"),
        (spec.thresholds, "ram_tag_list_threshold.txt"),
    ):
        assert f is not None and f.filename == name
        assert "/7cb804a8609e9f4b1a50b7f31436d2df40bb9481/ram/data/" in f.url
        assert sha256_file(OFFICIAL_DATA / name) == f.sha256  # the pinned digest is the real file's
    assert registry.get_text_encoder().repo_id == "timm/vit_base_patch16_clip_224.openai"


def test_unknown_registry_name_lists_known_names() -> None:
    with pytest.raises(Exception, match="ram-plus-swin-l-14m"):
        registry.get_weights_spec("nope")


def test_github_raw_base_follows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    url = registry.RAM_TAG_LIST.url
    monkeypatch.delenv("RAMTAG_GITHUB_RAW", raising=False)
    assert hub.resolve_url(url) == url
    monkeypatch.setenv("RAMTAG_GITHUB_RAW", "http://mirror.example/raw/")
    assert hub.resolve_url(url).startswith("http://mirror.example/raw/xinyu1205/recognize-anything/7cb804a")
    assert hub.resolve_url("https://example.org/x") == "https://example.org/x"


# ------------------------------------------------------------------------------------------------ Hub


def test_hub_download_is_verified_cached_and_request_free_afterwards(fake: FakeHub) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    rec = Recorder()
    path = hub.fetch_hub_file(hub_file(), progress=rec)
    assert path.read_bytes() == DATA
    assert hub.hub_cache_dir() in path.parents
    assert hub.reported_sha256(path) == SHA and hub.hub_commit(path) == COMMIT
    assert fake.count("GET") == 1
    assert rec.bars and rec.bars[0][0] == len(DATA) and rec.bars[0][2] == len(DATA) and rec.bars[0][3] == 1

    before = len(fake.requests)
    again = hub.fetch_hub_file(hub_file(), progress=False)
    assert again == path and len(fake.requests) == before  # no request at all once cached


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "RAMTAG_OFFLINE"])
def test_hub_offline_uses_cache_or_raises_offline_error(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError) as info:
        hub.fetch_hub_file(hub_file(), progress=False)
    message = str(info.value)
    assert "\n" not in message and "ramtag weights download" in message and "ramtag weights import" in message
    assert fake.requests == []

    monkeypatch.delenv(variable)
    path = hub.fetch_hub_file(hub_file(), progress=False)
    monkeypatch.setenv(variable, "1")
    n = len(fake.requests)
    assert hub.fetch_hub_file(hub_file(), progress=False) == path and len(fake.requests) == n


def test_hub_resumes_a_dropped_transfer_with_a_range_request(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    fake.drop_midway(f"/{REPO}/resolve/main/weights.pth", after=300_000)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: None)
    path = hub.fetch_hub_file(hub_file(), progress=False)
    assert path.read_bytes() == DATA
    assert fake.count("GET") == 2
    assert fake.ranges() == ["bytes=300000-"]  # every byte received is kept


HUB_PATH = f"/{REPO}/resolve/main/weights.pth"


def incomplete_parts() -> list[Path]:
    return list(hub.hub_cache_dir().rglob("*.incomplete"))


def test_hub_trickling_server_is_cut_resumed_and_bounded(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server sending a byte now and then (never silent long enough for a read timeout) is cut below
    the rate floor, resumed a bounded number of times, then given up on with one line; what arrived is
    kept and the next call resumes from it."""
    monkeypatch.setattr(hub, "_STALL_SECONDS", 0.3)
    monkeypatch.setattr(hub, "_MIN_RATE", 1000)
    sleep = time.sleep  # (one function for the whole process: the server's trickle pauses use it too)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: sleep(seconds) if seconds < 0.5 else None)
    data = DATA[:4000]
    fake.add_hub_file(REPO, "weights.pth", data)
    fake.trickle[HUB_PATH] = 0.01  # 100 bytes/s: each read is quick, the file is not
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(size=len(data)), progress=False)
    msg = str(info.value)
    assert time.monotonic() - t0 < 10 and "\n" not in msg, msg
    assert re.search(
        r"weights\.pth.*: server too slow: 0\.\d KB/s over \d+ s, stopped after 3 attempts; ", msg
    )
    assert "re-run to resume" in msg
    assert fake.count("GET") == 3 and len(fake.ranges()) == 2  # attempts 2 and 3 resumed
    (part,) = incomplete_parts()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    del fake.trickle[HUB_PATH]
    path = hub.fetch_hub_file(hub_file(size=len(data)), progress=False)
    assert path.read_bytes() == data and fake.ranges()[-1] == f"bytes={kept}-" and incomplete_parts() == []


def test_hub_metadata_head_trickling_its_headers_is_cut(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub's HEAD (made by huggingface_hub, which has only a per-read timeout) has the same
    connect-and-headers deadline as the body: a server trickling header bytes costs bounded time."""
    monkeypatch.setattr(hub, "_STALL_SECONDS", 0.3)
    sleep = time.sleep  # (one function for the whole process: the server's trickle pauses use it too)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: sleep(seconds) if seconds < 0.5 else None)
    fake.add_hub_file(REPO, "weights.pth", DATA)
    fake.slow_headers[f"HEAD {HUB_PATH}"] = 0.01
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(), progress=False, attempts=2, timeout=0.2)
    msg = str(info.value)
    assert re.search(r"weights\.pth.*: no answer within 0\.5 s, stopped after 2 attempts", msg), msg
    assert time.monotonic() - t0 < 2.5 and fake.count("HEAD") == 2 and fake.count("GET") == 0
    del fake.slow_headers[f"HEAD {HUB_PATH}"]
    assert hub.fetch_hub_file(hub_file(), progress=False).read_bytes() == DATA


def test_hub_download_stopped_with_ctrl_c_resumes_on_the_next_call(fake: FakeHub) -> None:
    data = DATA * 8  # more than one read brings
    fake.add_hub_file(REPO, "weights.pth", data)

    class CtrlC(Recorder):
        def update(self, n: int) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hub.fetch_hub_file(hub_file(size=len(data)), progress=CtrlC())
    (part,) = incomplete_parts()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert hub.fetch_hub_file(hub_file(size=len(data)), progress=False).read_bytes() == data
    assert fake.ranges() == [f"bytes={kept}-"] and incomplete_parts() == []


def test_hub_etag_that_is_a_path_is_refused(fake: FakeHub, tmp_path: Path) -> None:
    """The ETag names the blob file: a server's '../..' must not place it anywhere."""
    fake.add_hub_file(REPO, "weights.pth", DATA, linked_sha256="../../../../evil")
    with pytest.raises(DownloadError, match=r"did not answer like the Hub .*ETag \.\./\.\./") as info:
        hub.fetch_hub_file(hub_file(), progress=False)
    assert "\n" not in str(info.value) and fake.count("GET") == 0
    assert not [p for p in tmp_path.rglob("evil*")]


def test_hub_full_disk_is_one_line_and_not_retried(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import errno

    from ramtag.errors import OutputError

    class Full:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub, "open", lambda *a, **k: Full(builtins.open(*a, **k)), raising=False)  # noqa: SIM115
    fake.add_hub_file(REPO, "weights.pth", DATA)
    with pytest.raises(OutputError, match=r"\.incomplete: cannot write the download \(disk full\)$"):
        hub.fetch_hub_file(hub_file(), progress=False)
    assert fake.count("GET") == 1


def test_hub_retry_after_is_honoured_then_the_download_succeeds(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)
    fake.add_hub_file(REPO, "weights.pth", DATA)
    fake.errors[f"HEAD {HUB_PATH}"] = [(503, "2")]
    fake.errors[f"GET {HUB_PATH}"] = [(429, "3")]
    assert hub.fetch_hub_file(hub_file(), progress=False).read_bytes() == DATA
    assert waits == [2.0, 3.0] and fake.count("GET") == 2
    # a wait longer than ramtag's bound is not slept through: one line says so at once
    fake.errors[f"GET /{REPO}/resolve/main/other.pth"] = [(503, "3600")]
    fake.add_hub_file(REPO, "other.pth", DATA[::-1])  # (the same content would be the same blob)
    other = HubFile(repo_id=REPO, filename="other.pth", revision="main", size=len(DATA), sha256=None)
    with pytest.raises(DownloadError, match=r"other\.pth.*HTTP 503.*asked to wait 3600 s \(Retry-After\)"):
        hub.fetch_hub_file(other, progress=False)
    assert waits == [2.0, 3.0]


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_hub_server_that_always_fails_costs_a_bounded_number_of_requests(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)
    fake.add_hub_file(REPO, "weights.pth", DATA)
    fake.errors[f"{method} {HUB_PATH}"] = [(500, None)] * 100
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(), progress=False)
    msg = str(info.value)
    assert (
        "weights.pth" in msg and "HTTP 500" in msg and "stopped after 3 attempts" in msg and "\n" not in msg
    )
    assert fake.count(method) == 3 and len(waits) == 2


def test_hub_commit_revision(fake: FakeHub) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    path = hub.fetch_hub_file(hub_file(revision=COMMIT), progress=False)
    assert path.read_bytes() == DATA and hub.hub_commit(path) == COMMIT


def test_hub_sha256_mismatch_with_registry_deletes_the_download(fake: FakeHub) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(sha256=wrong), progress=False)
    assert wrong in str(info.value) and SHA in str(info.value)
    assert cache_files() == []
    # the next call downloads again (nothing corrupted was left to be found)
    assert hub.fetch_hub_file(hub_file(sha256=SHA), progress=False).read_bytes() == DATA


def test_hub_content_that_differs_from_the_reported_sha256_is_rejected(fake: FakeHub) -> None:
    corrupted = DATA[:-1] + b"\x00"
    fake.add_hub_file(REPO, "weights.pth", corrupted, linked_sha256=SHA)
    with pytest.raises(DownloadError, match="does not match"):
        hub.fetch_hub_file(hub_file(), progress=False)
    assert cache_files() == []


def test_hub_size_mismatch_is_rejected(fake: FakeHub) -> None:
    fake.add_hub_file(REPO, "weights.pth", DATA)
    with pytest.raises(DownloadError, match=f"expected {len(DATA) + 1}"):
        hub.fetch_hub_file(hub_file(size=len(DATA) + 1), progress=False)
    assert cache_files() == []


def test_hub_missing_file_is_a_download_error(fake: FakeHub) -> None:
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(), progress=False)
    assert "not found" in str(info.value) and "\n" not in str(info.value)


def test_hub_unreachable_is_a_download_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import huggingface_hub.constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RAMTAG_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # huggingface_hub backs off ~23 s, skip it
    with pytest.raises(DownloadError) as info:
        hub.fetch_hub_file(hub_file(), progress=False)
    assert not isinstance(info.value, OfflineError)
    assert f"127.0.0.1:{port}" in str(info.value) and "\n" not in str(info.value)


def test_cli_download_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from ramtag.cli.progress import _DownloadBar

    bar = _DownloadBar("weights.pth", 10, 2)
    bar.update(8)
    bar.close()
    assert "weights.pth" in capsys.readouterr().err


def test_default_progress_logs_and_can_be_replaced(fake: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    """The library never draws: progress=True logs a line at the start and end of a download, unless an
    application (the CLI) installed its own bar."""
    with caplog.at_level("INFO", logger="ramtag.hub"):
        hub.fetch_url(raw_file(fake))
    assert "downloading tags.txt" in caplog.text and "downloaded tags.txt" in caplog.text
    rec = Recorder()
    hub.set_default_progress(rec)
    try:
        hub.fetch_url(raw_file(fake, DATA + b"more"))
    finally:
        hub.set_default_progress(None)
    assert rec.bars and rec.bars[-1][2] == len(DATA) + 4 and rec.bars[-1][3] == 1


# ------------------------------------------------------------------------------------------------ URLs


def test_url_download_is_verified_and_cached(fake: FakeHub) -> None:
    f = raw_file(fake)
    rec = Recorder()
    path = hub.fetch_url(f, progress=rec)
    assert path.read_bytes() == DATA and path == hub.url_cache_path(f)
    assert rec.bars[0][0] == len(DATA) and rec.bars[0][2] == len(DATA)
    n = len(fake.requests)
    assert hub.fetch_url(f, progress=False) == path and len(fake.requests) == n


def test_url_resumes_a_dropped_transfer_within_the_call(fake: FakeHub) -> None:
    f = raw_file(fake)
    fake.drop_midway("/gh/owner/repo/abc/data/tags.txt", after=123_456)
    path = hub.fetch_url(f, progress=False)
    assert path.read_bytes() == DATA
    assert fake.ranges() == ["bytes=123456-"]
    assert not path.with_name(path.name + ".part").exists()


def test_url_resumes_a_part_left_by_an_earlier_run(fake: FakeHub) -> None:
    f = raw_file(fake)
    part = hub.url_cache_path(f).with_name("tags.txt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:500_000])
    assert hub.fetch_url(f, progress=False).read_bytes() == DATA
    assert fake.ranges() == ["bytes=500000-"] and fake.count("GET") == 1


def test_url_server_ignoring_range_restarts_cleanly(fake: FakeHub) -> None:
    fake.add_raw("owner/repo/abc/data/tags.txt", DATA, honour_range=False)
    f = UrlFile(url=f"{registry.GITHUB_RAW}/owner/repo/abc/data/tags.txt", sha256=SHA, filename="tags.txt")
    part = hub.url_cache_path(f).with_name("tags.txt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not a prefix")
    assert hub.fetch_url(f, progress=False).read_bytes() == DATA


def test_url_server_trickling_its_headers_is_cut(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting and the headers have one deadline: a byte now and then never hits a read timeout."""
    monkeypatch.setattr(hub, "_STALL_SECONDS", 0.3)
    sleep = time.sleep  # (one function for the whole process: the server's trickle pauses use it too)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: sleep(seconds) if seconds < 0.5 else None)
    f = raw_file(fake)
    fake.slow_headers["/gh/owner/repo/abc/data/tags.txt"] = 0.01
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"tags\.txt: no answer within 0\.5 s, stopped after 2 attempts"):
        hub.fetch_url(f, progress=False, attempts=2, timeout=0.2)
    assert time.monotonic() - t0 < 2.5 and fake.count("GET") == 2


def test_url_checksum_mismatch_names_url_and_digests_and_leaves_nothing(fake: FakeHub) -> None:
    wrong = "f" * 64
    f = raw_file(fake, sha256=wrong)
    with pytest.raises(DownloadError) as info:
        hub.fetch_url(f, progress=False)
    message = str(info.value)
    assert fake.url + "/gh/owner/repo/abc/data/tags.txt" in message and wrong in message and SHA in message
    assert "\n" not in message
    dest = hub.url_cache_path(f)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_url_corrupted_cache_is_downloaded_again(fake: FakeHub) -> None:
    f = raw_file(fake)
    path = hub.fetch_url(f, progress=False)
    path.write_bytes(b"bit rot")
    assert hub.fetch_url(f, progress=False).read_bytes() == DATA
    assert fake.count("GET") == 2


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "RAMTAG_OFFLINE"])
def test_url_offline(fake: FakeHub, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    f = raw_file(fake)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError, match="ramtag weights download"):
        hub.fetch_url(f, progress=False)
    monkeypatch.delenv(variable)
    path = hub.fetch_url(f, progress=False)
    monkeypatch.setenv(variable, "1")
    n = len(fake.requests)
    assert hub.fetch_url(f, progress=False) == path and len(fake.requests) == n


def test_url_http_error_is_a_download_error(fake: FakeHub) -> None:
    f = UrlFile(url=f"{registry.GITHUB_RAW}/owner/repo/abc/missing.txt", sha256=SHA, filename="missing.txt")
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.fetch_url(f, progress=False)
