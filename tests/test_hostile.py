"""Hostile disks, file names and sidecars (issue 12, cases 3-7 and 10): every fault is one line naming the
file and the cause, counted once in the summary, the run goes on, no temporary file is left, nothing the
user owns changes. Disk faults are simulated by monkeypatching (no tiny loop or tmpfs mount is needed).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fake_llm_server import fake_llm  # noqa: F401
from test_cli import tiny_weights  # noqa: F401
from test_hub import fake  # noqa: F401

from ramtag import api
from ramtag.errors import OutputError, printable
from ramtag.results import ImageTags, TagScore
from ramtag.tags import Vocabulary
from ramtag.writers.atomic import TMP_SUFFIX, AtomicFile, atomic_write_bytes
from ramtag.writers.xmp import MAX_SIDECAR_BYTES, XmpSidecarWriter

REPO = Path(__file__).resolve().parents[1]


class FakeTagger:
    """Stands in for a loaded model: every image gets the tags cat and dog (the writers are under test)."""

    name = "fake-weights"
    runner = SimpleNamespace(checked=False, precision="fp32")
    vocabulary = Vocabulary(("cat", "dog"), (0.5, 0.5))  # (what the catalog records the scores of)
    preprocessing = "fake"

    def __init__(self) -> None:
        self.notes: list[str] = []

    def settings(self, options: Any) -> dict[str, Any]:
        return {"weights": self.name}

    def tag(self, files: list[Path], options: Any) -> Iterator[ImageTags]:
        for i, f in enumerate(files):
            scores = {"cat": 0.9, "dog": 0.8} if options.all_scores else None
            yield ImageTags(Path(f), [TagScore("cat", 0.9, 0.5), TagScore("dog", 0.8, 0.5)], scores, index=i)


def library(tmp_path: Path, names: list[str]) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    for n in names:
        (lib / n).write_bytes(b"\xff\xd8\xff\xd9")  # the fake tagger never decodes
    return lib


def run(lib: Path, mode: str = "xmp", json_path: Path | None = None, state: bool = True) -> api.RunSummary:
    write = api.WriteOptions(mode=mode, json_path=json_path)
    return api.tag_library([lib], FakeTagger(), write=write, use_state=state)  # type: ignore[arg-type]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def one_line_each(summary: api.RunSummary) -> None:
    for _, reason in summary.failed:
        assert "\n" not in reason and "Traceback" not in reason


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def _fail_on(monkeypatch: pytest.MonkeyPatch, name: str, err: int, when: Any = lambda *a: True) -> None:
    real = getattr(os, name)

    def fake(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


# ------------------------------------------------------------------------------ case 4: disk faults
def test_disk_full_sidecars_are_one_line_each_and_leave_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tracebacks: None, commits_here: None
) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    (lib / "b.jpg.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    before = (lib / "b.jpg.xmp").read_bytes()
    with pytest.MonkeyPatch.context() as mp:  # (monkeypatch.undo() would also undo RAMTAG_HOME)
        _fail_on(mp, "fsync", errno.ENOSPC)
        summary = run(lib)
    assert summary.tagged == 3 and summary.written == 0 and len(summary.failed) == 3
    assert all(reason.endswith("cannot write it (disk full)") for _, reason in summary.failed)
    assert {Path(p).name for p, _ in summary.failed} == {"a.jpg", "b.jpg", "c.jpg"}
    one_line_each(summary)
    assert leftovers(lib) == [] and (lib / "b.jpg.xmp").read_bytes() == before
    assert not (lib / "a.jpg.xmp").exists()
    again = run(lib)  # nothing was recorded as done: the next run writes them
    assert again.written == 3 and not again.failed


@pytest.mark.parametrize(
    ("err", "cause"), [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")]
)
def test_unwritable_folder_counts_each_image_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    cause: str,
    no_tracebacks: None,
    commits_here: None,
) -> None:
    # (tests may run as root, where chmod does not stop writes: the refusal is simulated at mkstemp)
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    _fail_on(monkeypatch, "open", err, lambda path, flags, *a: str(path).endswith(TMP_SUFFIX))
    summary = run(lib)
    assert summary.written == 0 and len(summary.failed) == 2
    assert all(r.endswith(f"cannot write it ({cause})") for _, r in summary.failed)
    one_line_each(summary)


def test_name_too_long_is_one_line_and_the_run_goes_on(tmp_path: Path, no_tracebacks: None) -> None:
    long = "x" * 251 + ".jpg"  # 255 bytes: fine as an image, but its sidecar name would be 259
    lib = library(tmp_path, [long, "short.jpg"])
    summary = run(lib)
    assert summary.written == 1 and len(summary.failed) == 1
    ((path, reason),) = summary.failed
    assert Path(path).name == long and reason.endswith("cannot write it (file name too long)")
    assert (lib / "short.jpg.xmp").is_file() and leftovers(lib) == []


def test_catalog_full_is_one_note_and_the_tags_count_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tracebacks: None
) -> None:
    from ramtag.catalog import Catalog

    def full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Catalog, "record_images", full)
    lib = library(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    summary = run(lib)
    assert summary.written == 3 and summary.failed == []  # counted once: written, not also failed
    notes = [n for n in summary.notes if "cannot record progress" in n]
    assert len(notes) == 1 and "database or disk is full" in notes[0] and "catalog.sqlite" in notes[0]


def test_json_lines_disk_full_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tracebacks: None
) -> None:
    """Lines are appended as the run goes (issue 15): a full disk keeps the earlier lines and this run's
    lines before it; the images after it fail with one line each and the next run writes them."""
    lib = library(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "tags.jsonl"
    out.write_text('{"path": "/earlier/run.jpg", "tags": []}\n')
    with pytest.MonkeyPatch.context() as mp:  # (monkeypatch.undo() would also undo RAMTAG_HOME)
        _fail_on(mp, "write", errno.ENOSPC, when=lambda fd, data, *a: b"b.jpg" in bytes(data))
        summary = run(lib, mode="json", json_path=out)
    reasons = [reason for _, reason in summary.failed]
    assert summary.tagged == 3 and len(reasons) == 2
    assert (
        reasons[0]
        == f"{out}: cannot write it; the lines written before stay, run again to write the others (disk full)"
    )
    assert reasons[1] == f"{out}: not written (disk full, see above)"
    one_line_each(summary)
    kept = [json.loads(x)["path"] for x in out.read_text().splitlines()]
    assert kept == ["/earlier/run.jpg", str(lib / "a.jpg")] and leftovers(tmp_path) == []
    again = run(lib, mode="json", json_path=out)  # a.jpg was recorded; b and c were not: written now
    assert again.written == 2 and again.unchanged == 1 and len(out.read_text().splitlines()) == 4


def test_json_lines_full_disk_at_the_end_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tracebacks: None
) -> None:
    lib = library(tmp_path, ["a.jpg"])
    out = tmp_path / "tags.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        _fail_on(mp, "fsync", errno.ENOSPC)
        summary = run(lib, mode="json", json_path=out)  # used to raise out of the run: no summary
    reasons = [reason for _, reason in summary.failed]
    assert reasons == [
        f"{out}: cannot write it; the lines written before stay, run again to write the others (disk full)"
    ]
    assert leftovers(tmp_path) == []
    again = run(lib, mode="json", json_path=out)  # not durable, so not recorded: the next run writes it
    assert again.written == 1 and again.unchanged == 0 and len(out.read_text().splitlines()) == 1


def test_json_lines_stores_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("macOS refuses non-UTF-8 file names")
    lib = tmp_path / "lib"
    lib.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 name: a lone surrogate in Python
    (lib / name).write_bytes(b"\xff\xd8\xff\xd9")
    out = tmp_path / "tags.jsonl"
    # (state.py's SQLite cannot bind such a name yet: the catalog rewrite stores paths as bytes)
    summary = run(lib, mode="json", json_path=out, state=False)
    assert summary.written == 1 and not summary.failed
    text = out.read_bytes().decode("utf-8")  # still valid UTF-8
    import json

    assert json.loads(text)["path"] == str(lib / name)  # and it reads back as the same path


# ------------------------------------------------------------------------- case 5: long file names
@pytest.mark.parametrize("length", [236, 240, 249])
def test_long_names_still_get_their_sidecar(tmp_path: Path, length: int) -> None:
    name = "p" * (length - 4) + ".jpg"
    lib = library(tmp_path, [name])
    summary = run(lib)
    assert summary.written == 1 and not summary.failed, summary.failed
    assert (lib / f"{name}.xmp").is_file() and leftovers(lib) == []


def test_temporary_names_fit_name_max_in_bytes(tmp_path: Path) -> None:
    target = tmp_path / ("é" * 125 + ".xmp")  # 254 bytes in UTF-8
    atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data" and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- case 6: symlinks
def test_a_dangling_sidecar_link_creates_nothing_outside(tmp_path: Path, no_tracebacks: None) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    outside = tmp_path / "elsewhere" / "planted.xmp"
    outside.parent.mkdir()
    (lib / "a.jpg.xmp").symlink_to(outside)
    summary = run(lib)
    assert summary.written == 1 and len(summary.failed) == 1
    assert "is a symbolic link to" in summary.failed[0][1] and "does not exist" in summary.failed[0][1]
    assert not outside.exists() and (lib / "a.jpg.xmp").is_symlink()


def test_a_sidecar_link_leading_outside_the_folder_is_not_written(tmp_path: Path) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    outside = tmp_path / "elsewhere.xmp"
    outside.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    before = outside.read_bytes()
    (lib / "a.jpg.xmp").symlink_to(outside)
    (lib / "shared.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    (lib / "b.jpg.xmp").symlink_to("shared.xmp")  # a link inside the folder is written through
    summary = run(lib)
    assert [Path(p).name for p, _ in summary.failed] == ["a.jpg"]
    assert "outside the folders being tagged" in summary.failed[0][1]
    assert outside.read_bytes() == before
    assert (lib / "b.jpg.xmp").is_symlink() and b"cat" in (lib / "shared.xmp").read_bytes()


# ------------------------------------------------------------------------------- case 10: huge sidecar
def test_a_huge_sidecar_is_reported_and_left_alone(tmp_path: Path, no_tracebacks: None) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    big = lib / "a.jpg.xmp"
    body = b"<rdf:li>kw</rdf:li>\n" * (MAX_SIDECAR_BYTES // 20 + 10)
    big.write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><!--" + body + b"--></x:xmpmeta>")
    before = big.stat()
    t0 = time.monotonic()
    summary = run(lib)
    assert time.monotonic() - t0 < 10
    assert summary.written == 1 and len(summary.failed) == 1
    assert "larger than 4 MB, which no real sidecar reaches; left alone" in summary.failed[0][1]
    assert big.stat().st_mtime_ns == before.st_mtime_ns and big.stat().st_size == before.st_size


def test_a_sidecar_that_is_a_device_or_fifo_is_not_read(tmp_path: Path) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    (lib / "a.jpg.xmp").symlink_to("/dev/zero")  # would never end
    os.mkfifo(lib / "b.jpg.xmp")  # would block the run forever
    summary = run(lib)
    assert len(summary.failed) == 2
    assert all(r.endswith("not a regular file; left alone - move it away") for _, r in summary.failed)


# -------------------------------------------------------------------- case 3: escapes on the terminal
def test_file_names_are_escaped_on_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli import run_cli

    lib = tmp_path / "lib"
    lib.mkdir()
    evil = "x\x1b]0;pwned\x07\x1b[2J.jpg.xmp"
    (lib / evil).write_text("not xml at all")
    code, out, err = run_cli(["untag", str(lib), "--sidecars-only"], monkeypatch, capsys)
    assert code == 1
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "x\\x1b]0;pwned\\x07\\x1b[2J.jpg.xmp" in err


def test_printable_escapes_controls_bidi_and_surrogates() -> None:
    assert printable("a\x1b[31mb\x9bc\u202ed\udcffe\n") == "a\\x1b[31mb\\x9bc\\u202ed\\udcffe\\x0a"
    assert printable("中文 café\nnext", keep_newlines=True) == "中文 café\nnext"


# ---------------------------------------------------------------------- case 7: two concurrent runs
_RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ramtag.results import ImageTags, TagScore
    from ramtag.writers import exiftool as et

    image, tags, lock, marker = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], Path(sys.argv[4])
    first = tags[0] == "cat"
    if lock == "nolock":  # the control: what happened before the lock
        import contextlib
        et.file_lock = lambda path: contextlib.nullcontext()
    real_read = et.ExiftoolSession.read

    def slow_read(self, path, wanted):
        meta = real_read(self, path, wanted)
        if first:  # hold the read-merge-write window open until the second run has written
            print("READ", flush=True)  # (with the lock it cannot: then 5 s after it started)
            started, t0 = marker.with_suffix(".started"), time.monotonic()
            while not marker.exists() and time.monotonic() - t0 < 60:
                if started.exists() and time.time() - started.stat().st_mtime > 5:
                    break
                time.sleep(0.05)
        return meta

    et.ExiftoolSession.read = slow_read
    if not first:
        marker.with_suffix(".started").touch()
    writer = et.ExiftoolWriter(backup=False, model="race")
    writer.write(ImageTags(image, [TagScore(t, 0.9, 0.5) for t in tags]))
    writer.close()
    if not first:
        marker.touch()
    """
)


def _race(image: Path, lock: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    marker = image.with_suffix(".second-done")
    cmd = [sys.executable, "-c", _RACER, str(image)]
    first = subprocess.Popen([*cmd, "cat,dog", lock, str(marker)], env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "READ"  # inside its window
    second = subprocess.Popen([*cmd, "owl,tree", lock, str(marker)], env=env)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0


def _keywords(image: Path) -> set[str]:
    out = subprocess.run(
        ["exiftool", "-s3", "-sep", ",", "-XMP-dc:Subject", "-IPTC:Keywords", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {k for line in out.splitlines() for k in line.split(",") if k}


def test_two_concurrent_embed_runs_leave_keywords_untag_can_remove(tmp_path: Path) -> None:
    from PIL import Image

    from ramtag.writers import untag_paths
    from ramtag.writers.exiftool import find_exiftool

    if find_exiftool() is None:
        pytest.skip("exiftool is not installed")
    results = {}
    for lock in ("nolock", "lock"):
        image = tmp_path / f"{lock}.jpg"
        Image.new("RGB", (16, 16), "red").save(image)
        _race(image, lock)
        after_runs = _keywords(image)
        list(untag_paths([image], embedded=True, backup=False))
        results[lock] = (after_runs, _keywords(image))
    # without the lock the first run wrote last, merging into what it had read before the second wrote:
    # owl and tree stay in the file but not in ramtag's record, so untag cannot remove them
    assert results["nolock"] == ({"cat", "dog", "owl", "tree"}, {"owl", "tree"})
    assert results["lock"] == ({"owl", "tree"}, set())


def test_lock_waits_for_the_other_holder(tmp_path: Path) -> None:
    from ramtag.writers.lock import file_lock

    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    code = "import sys,time\nfrom ramtag.writers.lock import file_lock\n"
    code += "with file_lock(sys.argv[1]):\n print('LOCKED', flush=True)\n time.sleep(1.0)"

    def holder() -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        p = subprocess.Popen([sys.executable, "-c", code, str(f)], env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "LOCKED"
        return p

    other = holder()
    t0 = time.monotonic()
    with file_lock(f):
        waited = time.monotonic() - t0
    other.wait(timeout=30)
    assert waited > 0.2
    other = holder()
    with (
        pytest.raises(OutputError, match="another ramtag run has been writing it"),
        file_lock(f, timeout=0.1),
    ):
        pass
    other.wait(timeout=30)


def test_xmp_writer_takes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ramtag.writers.xmp as xmp

    seen = []

    class Spy:
        def __init__(self, path: Path) -> None:
            seen.append(Path(path).name)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *a: object) -> None:
            return None

    monkeypatch.setattr(xmp, "file_lock", Spy)
    lib = library(tmp_path, ["a.jpg"])
    XmpSidecarWriter().write(ImageTags(lib / "a.jpg", [TagScore("cat", 0.9, 0.5)]))
    assert seen == ["a.jpg"]


@pytest.mark.parametrize(
    ("files", "given", "locked"),
    [
        (["a.jpg", "a.jpg.xmp"], "a.jpg.xmp", "a.jpg"),  # the sidecar passed on its own
        (["a.CR2", "a.jpg", "a.xmp"], "a.xmp", "a.CR2"),  # Adobe naming: the photo that owns a.xmp
        (["a.jpg", "a.jpg.xmp"], ".", "a.jpg"),  # found in a folder walk
        (["a.jpg.xmp"], "a.jpg.xmp", "a.jpg.xmp"),  # no photo (tag cannot be writing it): the sidecar
    ],
)
def test_untag_of_a_sidecar_takes_the_lock_tagging_its_photo_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], given: str, locked: str
) -> None:
    import ramtag.writers.xmp as xmp

    seen = []

    class Spy:
        def __init__(self, path: Path) -> None:
            seen.append(Path(path).name)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *a: object) -> None:
            return None

    lib = library(tmp_path, [f for f in files if not f.endswith(".xmp")])
    XmpSidecarWriter().write(ImageTags(lib / "a.jpg", [TagScore("cat", 0.9, 0.5)]))
    sidecar = next(lib.glob("a.jpg.xmp"))
    for f in files:
        if f.endswith(".xmp") and not (lib / f).exists():
            (lib / f).write_bytes(sidecar.read_bytes())
    for f in lib.iterdir():
        if f.name not in files:
            f.unlink()
    monkeypatch.setattr(xmp, "file_lock", Spy)
    outcomes = list(api.untag([lib / given], sidecars_only=True))
    assert seen == [locked] and [o.action for o in outcomes] == ["deleted"], outcomes


def test_untag_of_a_bare_sidecar_waits_for_a_run_tagging_its_photo(tmp_path: Path) -> None:
    import threading

    from ramtag.writers.lock import file_lock

    lib = library(tmp_path, ["a.jpg"])
    XmpSidecarWriter().write(ImageTags(lib / "a.jpg", [TagScore("cat", 0.9, 0.5)]))
    done: list[Any] = []
    sidecar = lib / "a.jpg.xmp"
    with file_lock(lib / "a.jpg"):  # a `ramtag tag` run writing a.jpg's sidecar holds this
        worker = threading.Thread(target=lambda: done.extend(api.untag([sidecar], sidecars_only=True)))
        worker.start()
        worker.join(0.5)
        assert done == [] and (lib / "a.jpg.xmp").exists()  # untag waits for it
    worker.join(10)
    assert [o.action for o in done] == ["deleted"] and not (lib / "a.jpg.xmp").exists()


# -------------------------------------------------------------------------- through the `ramtag` command
def test_open_set_of_only_commas_is_a_usage_error(
    tiny_weights: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from test_cli import run_cli

    lib = library(tmp_path, ["a.jpg"])
    args = ["tag", str(lib), "--weights", tiny_weights, "--open-set", ",,,,", "--only-open-set"]
    code, _, err = run_cli([*args, "--write", "none"], monkeypatch, capsys)
    assert code == 2, err
    assert "names no tag" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_describe_shows_cached_descriptions_without_an_llm(
    fake_llm: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from test_cli import run_cli

    code, first, err = run_cli(
        ["describe", "owl", "--llm-base-url", fake_llm.url, "--llm-model", "m"], monkeypatch, capsys
    )
    assert code == 0, err
    hits = fake_llm.hits
    code, again, err = run_cli(["describe", "owl"], monkeypatch, capsys)  # no LLM configured
    assert code == 0, err
    assert again == first and fake_llm.hits == hits
    code, _, err = run_cli(["describe", "eagle"], monkeypatch, capsys)
    assert code == 1 and "no cached descriptions of 'eagle' and no LLM configured" in err


# ------------------------------------------------------------------ downloads: a trickling server too
def test_a_trickling_download_is_cut_and_bounded(
    fake: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_hub import raw_file

    from ramtag import hub
    from ramtag.errors import DownloadError

    monkeypatch.setattr(hub, "_STALL_SECONDS", 0.5)
    monkeypatch.setattr(hub, "_MIN_RATE", 100)
    f = raw_file(fake, b"x" * 5000)
    fake.trickle["/gh/owner/repo/abc/data/tags.txt"] = 0.05  # 20 bytes/s: each read is quick, the file is not
    t0 = time.monotonic()
    sleep = time.sleep  # (one function for the whole process: the server's trickle pauses use it too)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: sleep(seconds) if seconds < 0.5 else None)
    with pytest.raises(DownloadError, match=r"server too slow: 0\.0 KB/s over \d+ s, stopped after 2 "):
        hub.fetch_url(f, progress=False, attempts=2)
    assert time.monotonic() - t0 < 10 and fake.count("GET") == 2


def test_a_tag_list_with_control_characters_is_refused(tmp_path: Path) -> None:
    from ramtag.errors import VocabularyError
    from ramtag.tags.vocab import read_tag_list

    f = tmp_path / "tags.txt"
    f.write_text("cat\nbad\x1b[31mtag\ndog\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"line 2 .*control character \\x1b; remove it") as e:
        read_tag_list(f)
    assert "\x1b" not in str(e.value)


def test_tag_and_threshold_lists_saved_with_a_bom_read_as_written(tmp_path: Path) -> None:
    """Some editors (Windows Notepad) start UTF-8 text with a byte-order mark: it is not part of the
    first tag's name, nor of the first threshold."""
    from ramtag.tags.vocab import read_tag_list, read_thresholds

    tags, thresholds = tmp_path / "tags.txt", tmp_path / "thresholds.txt"
    tags.write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\n")
    thresholds.write_bytes(b"\xef\xbb\xbf0.5\n0.7\n")
    assert read_tag_list(tags) == ["cat", "dog"]
    assert read_thresholds(thresholds) == [0.5, 0.7]


def test_an_unnamed_os_error_is_one_line_in_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli import run_cli

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/photos/out.json")

    monkeypatch.setattr(api, "describe", full)
    code, _, err = run_cli(["describe", "owl"], monkeypatch, capsys)
    assert code == 1 and err.strip() == "error: /photos/out.json: disk full"


def test_windows_lock_uses_a_lock_file_in_the_ramtag_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ramtag_home: Path
) -> None:
    import fcntl
    import types

    import ramtag.writers.lock as lock

    def locking(fd: int, mode: int, nbytes: int) -> None:  # msvcrt.locking, acted out with flock
        fcntl.flock(fd, fcntl.LOCK_UN if mode == 0 else fcntl.LOCK_EX | fcntl.LOCK_NB)

    fake = types.SimpleNamespace(locking=locking, LK_UNLCK=0, LK_NBLCK=2)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(lock, "fcntl", None)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    with lock.file_lock(photo):
        with pytest.raises(OutputError, match="another ramtag run"), lock.file_lock(photo, timeout=0.1):
            pass
        assert len(list((ramtag_home / "locks").glob("*.lock"))) == 1
    with lock.file_lock(photo, timeout=0.1):  # released
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]


def test_an_unreadable_sidecar_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tracebacks: None
) -> None:
    lib = library(tmp_path, ["a.jpg", "b.jpg"])
    (lib / "a.jpg.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    # (as root a chmod does not stop reading: the refusal is simulated where the sidecar is opened)
    _fail_on(monkeypatch, "open", errno.EACCES, lambda path, *a: str(path).endswith("a.jpg.xmp"))
    summary = run(lib)
    assert [r for _, r in summary.failed] == [f"{lib / 'a.jpg.xmp'}: cannot read it (permission denied)"]
    assert summary.written == 1


def test_embed_keeps_symlinked_photos_links_and_never_writes_outside(tmp_path: Path) -> None:
    from PIL import Image

    from ramtag.writers.exiftool import ExiftoolWriter, find_exiftool

    if find_exiftool() is None:
        pytest.skip("exiftool is not installed")
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    lib.mkdir()
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(lib / "real.jpg")
    Image.new("RGB", (8, 8), "red").save(outside / "far.jpg")
    far_before = (outside / "far.jpg").read_bytes()
    (lib / "near.jpg").symlink_to("real.jpg")
    (lib / "far.jpg").symlink_to(outside / "far.jpg")
    writer = ExiftoolWriter(backup=False)
    try:
        tags = [TagScore("cat", 0.9, 0.5)]
        assert writer.write(ImageTags(lib / "near.jpg", tags)).action == "written"
        with pytest.raises(OutputError, match="outside the folders being tagged"):
            writer.write(ImageTags(lib / "far.jpg", tags))
    finally:
        writer.close()
    assert (lib / "near.jpg").is_symlink() and (lib / "far.jpg").is_symlink()  # exiftool alone replaces links
    assert _keywords(lib / "real.jpg") == {"cat"} and (outside / "far.jpg").read_bytes() == far_before
