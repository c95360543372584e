"""ramtag.library: tag_library's steps on their own (files, shard, skip what is done, the background
writer and what it records), and ramtag.api's promise that every name it offered stays importable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ramtag.errors import RamtagError
from ramtag.library import BackgroundWriter, RunSummary, find_files, rank_json_path, shard_files
from ramtag.options import TagOptions, WriteOptions
from ramtag.results import ImageTags
from ramtag.writers import WriteOutcome


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.jpg"
        p.write_bytes(b"\xff\xd8 not decoded here " + bytes([i]))
        paths.append(p)
    return paths


def test_find_files_counts_what_cannot_be_walked(tmp_path: Path) -> None:
    paths = _images(tmp_path / "lib", 3)
    (tmp_path / "lib" / ".hidden.jpg").write_bytes(b"x")
    summary = RunSummary()
    found = find_files([tmp_path / "lib", tmp_path / "missing"], TagOptions(), summary)
    assert sorted(found) == sorted(paths)  # hidden files only with include_hidden
    assert len(summary.failed) == 1 and "missing" in summary.failed[0][0]
    assert len(find_files([tmp_path / "lib"], TagOptions(include_hidden=True), RunSummary())) == 4


def test_shard_files_and_rank_json_path(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.jpg" for i in range(5)]
    assert shard_files(files, 0, 1) == files
    parts = [shard_files(files, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(files) and not set(parts[0]) & set(parts[1])
    out = tmp_path / "tags.jsonl"
    assert rank_json_path(WriteOptions(json_path=out), 0, 1) == out
    assert rank_json_path(WriteOptions(json_path=out), 1, 2) == tmp_path / "tags.jsonl.rank1"
    assert rank_json_path(WriteOptions(mode="json"), 0, 1) == Path("ramtag-tags.jsonl")
    assert rank_json_path(WriteOptions(mode="xmp"), 0, 1) is None


class _Writer:
    """A writer that does what each path's name asks: written, skipped, or raise."""

    def __init__(self) -> None:
        self.closed = False
        self.seen: list[Path] = []

    def write(self, result: ImageTags) -> WriteOutcome:
        assert result.path is not None
        self.seen.append(result.path)
        name = result.path.stem
        if name == "img1":
            return WriteOutcome(result.path, None, "skipped", "sidecar is not XMP; use --repair-sidecars")
        if name == "img2":
            raise RamtagError(f"{result.path}: disk full; free some space")
        if name == "img3":
            raise ValueError("a writer bug")
        return WriteOutcome(result.path, result.path.with_suffix(".xmp"), "written")

    def close(self) -> None:
        self.closed = True


def test_background_writer_counts_only_what_was_written(tmp_path: Path) -> None:
    """Written -> counted; skipped / failing writes -> one-line errors and the run goes on; failed
    images are passed to the writer but never counted. (What is recorded in the catalog is tested in
    tests/test_catalog_library.py.)"""
    paths = _images(tmp_path / "lib", 5)
    summary = RunSummary()
    writer = _Writer()
    events: list[str] = []
    bg = BackgroundWriter(writer, summary, progress=lambda e, d, t: events.append(e))
    for p in paths[:4]:
        bg.put(ImageTags(path=p))
    bg.put(ImageTags(path=paths[4], error="cannot decode"))
    bg.close()
    assert writer.closed and writer.seen == paths and events == ["written"] * 5
    assert summary.written == 1
    reasons = dict(bg.errors)
    assert set(reasons) == {str(p) for p in paths[1:4]}
    assert "repair-sidecars" in reasons[str(paths[1])] and "disk full" in reasons[str(paths[2])]
    assert reasons[str(paths[3])] == "writing failed: a writer bug"


def test_background_writer_records_sidecars_only_once_they_are_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commits_here: None
) -> None:
    """The XMP writer stages sidecars and the writer thread commits them together: every image handed
    to the catalog has its sidecar in place, with the stat recorded as it is there; one that could
    not be put in place is one error line, not recorded, not counted as written."""
    import os

    from ramtag.results import TagScore
    from ramtag.writers import make_writer
    from ramtag.writers.xmp import XmpPacket

    paths = _images(tmp_path / "lib", 150)
    bad = paths[70].with_name(paths[70].name + ".xmp")
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if str(dst) == str(bad):
            raise OSError(13, "Permission denied")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    recorded: list[Path] = []

    def record(pending: list) -> None:  # type: ignore[type-arg]
        for p in pending:
            [(kind, target, _, fp, st)] = p.outputs
            assert kind == "xmp"
            record_ = XmpPacket.parse(target.read_bytes()).read_record()
            assert record_ is not None and record_.fingerprint() == fp  # in place, as recorded
            assert st is not None and (st.st_ino, st.st_size) == (
                os.stat(target).st_ino,
                target.stat().st_size,
            )
            recorded.append(p.path)

    wanted = SimpleNamespace(json_path=None, decide_key="k")
    book = SimpleNamespace(lang="en", kind="xmp", wanted=wanted, record=record, catalog_path=tmp_path)
    summary = RunSummary()
    bg = BackgroundWriter(make_writer("xmp"), summary, book)  # type: ignore[arg-type]
    for p in paths:
        bg.put(ImageTags(p, [TagScore("cat", 0.9, 0.5)]))
    bg.close()
    assert sorted(recorded) == sorted(set(paths) - {paths[70]})
    assert bg.errors == [(str(paths[70]), f"{bad}: cannot write it (permission denied)")]
    assert summary.written == 149 and not bad.exists()


def test_every_name_of_the_old_api_module_is_still_importable() -> None:
    """Other code imported these from ramtag.api before it was split; they must keep working."""
    import ramtag.api as api

    names = [
        *("EXACT_PRECISIONS", "ImageTags", "OpenSetOptions", "ProgressFn", "RamtagError", "ResultFn"),
        *("RunSummary", "TagOptions", "TagScore", "Tagger", "UsageError", "Vocabulary", "WriteOptions"),
        *("benchmark", "decide", "describe", "effective_thresholds", "load_tagger", "tag_library", "untag"),
    ]
    missing = [n for n in names if not hasattr(api, n)]
    assert not missing
    assert api.EXACT_PRECISIONS == ("fp32", "bf16-checked")


def test_import_ramtag_is_light_and_has_no_circles() -> None:
    """`import ramtag` imports no training, benchmark or torch code; load_tagger is listed by dir();
    the API modules import in any order (no circle)."""
    code = (
        "import sys, ramtag;"
        "bad = [m for m in sys.modules if 'training' in m or 'bench' in m or m == 'torch'];"
        "assert not bad, bad;"
        "assert 'load_tagger' in dir(ramtag) and 'tune_cpu_allocator' in dir(ramtag);"
        "import ramtag.api;"
        "bad = [m for m in sys.modules if 'training' in m or 'bench' in m];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # bench and api imported each other; bench first is the order that would break on a circle
    subprocess.run([sys.executable, "-c", "import ramtag.bench, ramtag.api"], check=True)


def test_spine_modules_do_not_import_torch() -> None:
    code = (
        "import sys, ramtag.library, ramtag.tagger, ramtag.options, ramtag.device;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
