"""ramtag.state: incremental runs (skip / touch / change / settings / force) and resume after a kill."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MULTIPROCESS_TIMEOUT_S

from ramtag.errors import InputError
from ramtag.state import StateDB, content_digest, default_state_path, settings_key

KEY = settings_key(weights="w1", tags=("cat", "dog"), thresholds=(0.5, 0.6), lang="en", write="xmp")


def _files(folder: Path, n: int, size: int = 100) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i:05d}.jpg"
        p.write_bytes(bytes([i % 251]) * size + i.to_bytes(4, "little"))
        out.append(p)
    return out


def _mark_all(db: StateDB, paths: list[Path], key: str = KEY) -> None:
    for p in paths:
        db.mark_done(p, os.stat(p), key)


def test_default_location_is_under_ramtag_home(ramtag_home: Path) -> None:
    assert default_state_path() == ramtag_home / "state.sqlite"
    with StateDB() as db:
        assert db.path.exists()
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_settings_key_is_stable_and_sensitive() -> None:
    @dataclass(frozen=True)
    class Pre:
        image_size: int
        mean: tuple[float, ...]

    a = settings_key(lang="en", thresholds=(0.5, 0.6), pre=Pre(384, (0.1, 0.2)), out=Path("/x"))
    b = settings_key(out=Path("/x"), pre=Pre(384, (0.1, 0.2)), thresholds=[0.5, 0.6], lang="en")
    assert a == b and len(a) == 32
    assert a != settings_key(lang="zh", thresholds=(0.5, 0.6), pre=Pre(384, (0.1, 0.2)), out=Path("/x"))
    assert a != settings_key(lang="en", thresholds=(0.5, 0.61), pre=Pre(384, (0.1, 0.2)), out=Path("/x"))
    assert a != settings_key(lang="en", thresholds=(0.5, 0.6), pre=Pre(448, (0.1, 0.2)), out=Path("/x"))


def test_unchanged_files_are_skipped_and_new_ones_kept(tmp_path: Path) -> None:
    paths = _files(tmp_path / "lib", 5)
    with StateDB(tmp_path / "s.sqlite") as db:
        todo, skipped = db.filter(paths, KEY)
        assert todo == paths and skipped == 0
        _mark_all(db, paths[:3])
        todo, skipped = db.filter(paths, KEY)
        assert todo == paths[3:] and skipped == 3
        assert not db.needs_work(paths[0], os.stat(paths[0]), KEY)
        assert db.needs_work(paths[4], None, KEY)
        # paths are stored resolved: a relative spelling of the same file is the same record
        rel = Path(os.path.relpath(paths[0]))
        assert not db.needs_work(rel, None, KEY)


def test_touch_with_same_content_is_skipped_via_digest(tmp_path: Path) -> None:
    (p,) = _files(tmp_path, 1, size=3 * 1024 * 1024)  # > 2 MiB: head + tail digest
    with StateDB(tmp_path / "s.sqlite") as db:
        db.mark_done(p, os.stat(p), KEY)
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        assert db.filter([p], KEY) == ([], 1)
        # the row's mtime was refreshed: the fast path applies again
        row = db._conn.execute("SELECT mtime_ns FROM done").fetchone()
        assert row[0] == os.stat(p).st_mtime_ns


def test_changed_files_are_redone(tmp_path: Path) -> None:
    a, b, c = _files(tmp_path, 3, size=3 * 1024 * 1024)
    with StateDB(tmp_path / "s.sqlite") as db:
        _mark_all(db, [a, b, c])
        # a: different size
        a.write_bytes(a.read_bytes() + b"more")
        # b: same size, same mtime moved, one byte changed in the last MiB
        data = bytearray(b.read_bytes())
        data[-10] ^= 0xFF
        st = os.stat(b)
        b.write_bytes(bytes(data))
        os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        todo, skipped = db.filter([a, b, c], KEY)
        assert todo == [a, b] and skipped == 1
        assert db.needs_work(b, None, KEY)


def test_digest_covers_small_files_whole(tmp_path: Path) -> None:
    p = tmp_path / "x.jpg"
    p.write_bytes(b"a" * 5000)
    d1 = content_digest(p)
    p.write_bytes(b"a" * 2500 + b"b" + b"a" * 2499)
    assert content_digest(p) != d1


def test_settings_change_redoes_everything_and_force_returns_all(tmp_path: Path) -> None:
    paths = _files(tmp_path / "lib", 4)
    other = settings_key(weights="w1", tags=("cat", "dog"), thresholds=(0.5, 0.6), lang="zh", write="xmp")
    with StateDB(tmp_path / "s.sqlite") as db:
        _mark_all(db, paths)
        assert db.filter(paths, KEY) == ([], 4)
        assert db.filter(paths, other) == (paths, 0)
        assert db.filter(paths, KEY, force=True) == (paths, 0)
        assert db.count(KEY) == 4 and db.count() == 4


def test_missing_files_stay_in_the_work_list(tmp_path: Path) -> None:
    paths = _files(tmp_path, 2)
    with StateDB(tmp_path / "s.sqlite") as db:
        _mark_all(db, paths)
        paths[1].unlink()
        assert db.filter(paths, KEY) == ([paths[1]], 1)
        assert db.needs_work(paths[1], None, KEY)
        assert db.forget(paths) == 2 and db.count() == 0


def test_resume_after_kill_redoes_only_unwritten_files(tmp_path: Path) -> None:
    """Simulate SIGKILL mid-run: only files whose output was written were marked, and the DB (a
    fresh connection, as after a crash) sends exactly the rest back."""
    paths = _files(tmp_path / "lib", 10)
    db_path = tmp_path / "s.sqlite"
    db = StateDB(db_path)
    written = paths[:6]  # tagged and written before the kill
    for p in written:
        db.mark_done(p, os.stat(p), KEY)
    # paths[6:8] were tagged but the process died before their sidecars were written: not marked.
    del db  # no close(): the connection is dropped as a killed process would drop it
    with StateDB(db_path) as db2:
        todo, skipped = db2.filter(paths, KEY)
        assert todo == paths[6:] and skipped == 6
        # writing twice is harmless for the record too
        db2.mark_done(paths[0], None, KEY)
        assert db2.count(KEY) == 6


def test_filter_ten_thousand_files(tmp_path: Path) -> None:
    paths = _files(tmp_path / "big", 10_000, size=16)
    with StateDB(tmp_path / "s.sqlite") as db:
        db._conn.execute("BEGIN")
        for p in paths[::2]:
            db.mark_done(p, os.stat(p), KEY)
        db._conn.execute("COMMIT")
        todo, skipped = db.filter(paths, KEY)
        assert skipped == 5000
        assert todo == paths[1::2]


def test_writer_thread_and_main_thread_share_one_db(tmp_path: Path) -> None:
    paths = _files(tmp_path / "lib", 200)
    with StateDB(tmp_path / "s.sqlite") as db:
        errors: list[BaseException] = []

        def writer(chunk: list[Path]) -> None:
            try:
                for p in chunk:
                    db.mark_done(p, None, KEY)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(paths[i::2],)) for i in range(2)]
        for t in threads:
            t.start()
        for _ in range(20):
            db.filter(paths[:50], KEY)
        for t in threads:
            t.join()
        assert not errors
        assert db.filter(paths, KEY) == ([], 200)


def test_unusable_database_file_names_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "state.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match=r"state\.sqlite.*--state-db"):
        StateDB(bad)


def _open_at_once(path: str, image: str, start: Any, errors: Any) -> None:
    start.wait()
    try:
        db = StateDB(path)  # open (switches a new file to WAL), then write at once, like a rank does
        todo, _ = db.filter([Path(image)], "key")
        for p in todo:
            db.mark_done(p, None, "key")
        db.close()
    except Exception as e:  # reported to the parent
        errors.put(repr(e))


@pytest.mark.slow
def test_processes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    """torchrun ranks create the same state.sqlite at the same moment: none may fail with 'locked'."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    deadline = time.monotonic() + MULTIPROCESS_TIMEOUT_S  # for all 30 rounds: only a hang reaches it
    for round_ in range(30):
        start, errors = ctx.Barrier(6), ctx.Queue()
        db = tmp_path / f"state{round_}.sqlite"
        args = (str(db), str(image), start, errors)
        procs = [ctx.Process(target=_open_at_once, args=args) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
        assert not failures, failures
        assert all(p.exitcode == 0 for p in procs)
