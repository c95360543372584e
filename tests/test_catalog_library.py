"""Issue 15's list, end to end through `ramtag tag` on the tiny official-format checkpoint: every case
that used to leave photos without their tags ("unchanged", exit 0) writes the right tags on the next run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import photos, read_jsonl, run_cli, tiny_weights  # fixtures and helpers

from ramtag.catalog import open_catalog
from ramtag.writers.xmp import XmpPacket

DC = "http://purl.org/dc/elements/1.1/"
Run = tuple[int, str, str]


@pytest.fixture
def tag(tiny_weights: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def run(*args: str) -> Run:
        return run_cli(["tag", *args, "--weights", tiny_weights, "--precision", "fp32"], monkeypatch, capsys)

    return run


def _subjects(sidecar: Path) -> list[str]:
    """The tags ramtag wrote into a sidecar (its record; the photo's own keywords may be there too)."""
    if not sidecar.exists():
        return []
    packet = XmpPacket.parse(sidecar.read_bytes())
    record = packet.read_record()
    ours = record.tags if record is not None else []
    assert set(ours) <= set(packet.values(DC, "subject") or [])  # and they are in dc:subject
    return ours


def _low(photos: Path) -> Path:
    """A photo with tags at --threshold 0.3 (tiny random weights put few scores above the real ones)."""
    return photos / "hubble_deep_field.jpg"


def test_untag_then_tag_writes_the_sidecars_again(tag, photos: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = tag(str(photos), "--threshold", "0.3")
    assert code == 0, err
    sidecars = sorted(photos.glob("*.xmp"))
    before = {p.name: _subjects(p) for p in sidecars}
    assert sidecars and any(before.values())
    assert run_cli(["untag", str(photos)], monkeypatch, capsys)[0] == 0
    assert not any(_subjects(p) for p in photos.glob("*.xmp"))
    code, _, err = tag(str(photos), "--threshold", "0.3")
    assert code == 0 and "0 tagged" in err and "re-decided from the catalog" in err
    assert {p.name: _subjects(p) for p in sorted(photos.glob("*.xmp"))} == before


def test_deleted_sidecar_and_fresh_copy_are_written(tag, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert tag(str(photos), "--threshold", "0.3")[0] == 0
    sidecar = _low(photos).with_name(_low(photos).name + ".xmp")
    want = _subjects(sidecar)
    assert want
    sidecar.unlink()
    code, _, err = tag(str(photos), "--threshold", "0.3")
    assert code == 0 and "1 re-decided" in err and _subjects(sidecar) == want
    copy = tmp_path / "copy"
    shutil.copytree(photos, copy, ignore=shutil.ignore_patterns("*.xmp"))
    code, _, err = tag(str(copy), "--threshold", "0.3")
    assert code == 0 and _subjects(copy / (sidecar.name)) == want


def test_threshold_and_language_round_trips_without_the_model(tag, photos: Path) -> None:  # type: ignore[no-untyped-def]
    sidecar = _low(photos).with_name(_low(photos).name + ".xmp")
    assert tag(str(photos), "--threshold", "0.1")[0] == 0
    at_01 = _subjects(sidecar)
    code, _, err = tag(str(photos), "--threshold", "0.3")
    assert code == 0 and "0 tagged" in err
    at_03 = _subjects(sidecar)
    assert set(at_03) < set(at_01)
    code, _, err = tag(str(photos), "--threshold", "0.1")
    assert code == 0 and "0 tagged" in err
    _same_but_float16(_subjects(sidecar), at_01, _low(photos), 0.1)
    again = _subjects(sidecar)
    code, _, err = tag(str(photos), "--threshold", "0.1", "--lang", "zh")
    zh = _subjects(sidecar)
    assert code == 0 and zh != again and any(ord(c) > 0x2E80 for v in zh for c in v)
    assert tag(str(photos), "--threshold", "0.1", "--lang", "en")[0] == 0
    assert _subjects(sidecar) == again


def _same_but_float16(got: list[str], want: list[str], photo: Path, threshold: float) -> None:
    """The tags re-decided from the stored (float16) scores are the first run's, except a tag whose
    score lies within float16's rounding of the threshold (and the order of near-equal scores)."""
    ((vid, _, m),) = open_catalog().scores([photo])
    score = dict(zip(open_catalog().vocabulary(vid).names, m[0].astype(float), strict=True))
    assert all(abs(score[n] - threshold) < 1e-3 for n in set(got) ^ set(want)), set(got) ^ set(want)


def test_unchanged_and_redecided_runs_never_import_torch(tiny_weights: str, photos: Path, tag) -> None:  # type: ignore[no-untyped-def]
    assert tag(str(photos))[0] == 0
    code = (
        "import sys\nfrom ramtag.cli import main\n"
        "a = sys.argv\nsys.argv = ['ramtag', 'tag', a[1], '--weights', a[2], '--threshold', a[3], '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for threshold in ("0.3", "0.3"):  # re-decided, then unchanged
        res = subprocess.run(
            [sys.executable, "-c", code, str(photos), tiny_weights, threshold],
            env=env,
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr[-2000:]


def test_photo_replaced_while_tagged_is_not_written_with_the_old_tags(
    tiny_weights: str, photos: Path
) -> None:
    from ramtag.api import tagger_source
    from ramtag.library import tag_library
    from ramtag.options import TagOptions

    victim = _low(photos)
    other = photos / "coffee_cup.jpg"

    def swap(res) -> None:  # type: ignore[no-untyped-def]
        if res.path == victim:  # decoded and scored; now someone replaces the photo
            tmp = victim.with_name("tmp.bin")
            tmp.write_bytes(other.read_bytes())
            os.replace(tmp, victim)

    opts = TagOptions(threshold=0.3)
    summary = tag_library(
        [photos], tagger_source(tiny_weights, precision="fp32"), options=opts, on_result=swap
    )
    assert [p for p, _ in summary.failed] == [str(victim)] and "changed while" in summary.failed[0][1]
    assert not victim.with_name(victim.name + ".xmp").exists()
    again = tag_library([photos], tagger_source(tiny_weights, precision="fp32"), options=opts)
    assert again.tagged == 1 and again.ok
    assert _subjects(victim.with_name(victim.name + ".xmp")) == _subjects(
        other.with_name(other.name + ".xmp")
    )


def test_photo_replaced_between_the_walk_and_decoding_is_recorded_as_the_file_decoded(
    tiny_weights: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity comes from the descriptor the decoder read, not from a stat taken before: a
    photo swapped after the walk is recorded with the new file's identity and the new file's scores."""
    import numpy as np

    from ramtag import batch as batch_mod
    from ramtag.api import tagger_source
    from ramtag.catalog import Catalog, content_digest, path_key
    from ramtag.library import tag_library
    from ramtag.options import TagOptions

    victim, other = _low(photos), photos / "coffee_cup.jpg"
    walked = os.stat(victim)
    real = batch_mod.decode_file

    def swap_then_decode(path, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == victim:  # the walk has stat'ed every file; someone replaces this one now
            tmp = victim.with_name("tmp.bin")
            tmp.write_bytes(other.read_bytes())
            os.replace(tmp, victim)
        return real(path, **kwargs)

    monkeypatch.setattr(batch_mod, "decode_file", swap_then_decode)
    catalog = tmp_path / "c.sqlite"
    opts = TagOptions(threshold=0.3, workers=0)
    summary = tag_library(
        [photos], tagger_source(tiny_weights, precision="fp32"), options=opts, catalog=catalog
    )
    assert summary.ok and not summary.failed
    now = os.stat(victim)
    assert now.st_ino != walked.st_ino  # (os.replace: a new inode)
    with Catalog(catalog, readonly=True) as cat:
        ident = cat.lookup([victim])[path_key(victim)].identity
        assert (ident.size, ident.mtime_ns, ident.inode, ident.device) == (
            now.st_size,
            now.st_mtime_ns,
            now.st_ino,
            now.st_dev,
        )
        assert ident.digest == content_digest(victim)
        ((_, keys, matrix),) = list(cat.scores([victim, other]))
        assert keys == [path_key(victim), path_key(other)]
        assert np.allclose(
            matrix[0].astype(np.float32), matrix[1].astype(np.float32), atol=2e-3
        )  # same bytes


def test_non_utf8_name_and_two_spellings_of_one_folder(
    tag, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    odd = os.path.join(os.fsencode(photos), b"caf\xe9 \xff.jpg")
    shutil.copy(os.fsencode(_low(photos)), odd)
    out = photos.parent / "tags.jsonl"
    monkeypatch.chdir(photos.parent)
    code, _, err = tag("photos", "--write", "json", "--json", str(out), "--threshold", "0.3")
    assert code == 0, err
    code, _, err = tag(str(photos.resolve()), "--write", "json", "--json", str(out), "--threshold", "0.3")
    assert code == 0 and "0 tagged" in err
    rows = read_jsonl(out)
    paths = [os.fsencode(r["path"]) for r in rows]
    assert len(paths) == len(set(paths)) == 13 and odd in paths
    assert all(os.path.isabs(p) for p in paths)
    assert open_catalog().count() == 13


def _killed_run(args: list[str], env: dict[str, str], ready) -> None:  # type: ignore[no-untyped-def]
    """Start `ramtag ARGS`, SIGKILL it as soon as ``ready()``, wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "ramtag", *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["json", "xmp", "embed"])
def test_kill_9_then_rerun_completes_every_image_once(
    tiny_weights: str, photos: Path, tmp_path: Path, ramtag_home: Path, mode: str
) -> None:
    if mode == "embed" and shutil.which("exiftool") is None:
        pytest.skip("exiftool not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAMTAG_HOME": str(ramtag_home), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "tags.jsonl"
    args = [
        "tag",
        str(photos),
        "--weights",
        tiny_weights,
        "--write",
        mode,
        "--json",
        str(out),
        "--batch-size",
        "1",
    ]
    args += ["--workers", "0", "--threshold", "0.3", "--precision", "fp32", "-q", "--no-backup"]

    def some_recorded() -> bool:  # killed once some images are recorded and others are not
        try:
            return 2 <= len(out.read_bytes().splitlines()) < 10
        except OSError:
            return False

    _killed_run(args, env, some_recorded)
    done_before = open_catalog().count()
    res = subprocess.run([sys.executable, "-m", "ramtag", *args], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_jsonl(out)
    names = sorted(Path(r["path"]).name for r in rows)
    images = sorted(p.name for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert names == images  # every image, once
    assert open_catalog().count() == len(images) > done_before
    if mode != "json":  # every image's tags are in its sidecar / file, as the JSON line says
        for r in rows:
            names_written = [t["name"] for t in r["tags"]]
            if mode == "xmp" and names_written:  # (the photo's own keywords may be there too)
                record = XmpPacket.parse(Path(r["path"] + ".xmp").read_bytes()).read_record()
                assert record is not None and record.tags == names_written
    res = subprocess.run([sys.executable, "-m", "ramtag", *args], env=env, capture_output=True, text=True)
    assert "0 tagged" in res.stderr and f"{len(images)} unchanged" in res.stderr


def _scored_library(folder: Path, n: int, weights: str) -> None:
    """``n`` small JPEGs whose scores are in the catalog (as a tagging run leaves them) and no sidecars:
    the next ``ramtag tag`` re-decides them all without the model."""
    import io

    import numpy as np
    from PIL import Image

    from ramtag.api import tagger_source
    from ramtag.catalog import Identity, ImageScores
    from ramtag.options import TagOptions

    source = tagger_source(weights)
    cat = open_catalog()
    vid = cat.add_vocabulary(source.vocabulary)
    run = cat.begin_run("setup")
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        p = folder / f"{i // 100:02d}" / f"img{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
        p.write_bytes(buf.getvalue())
        scores = rng.random(len(source.vocabulary)).astype(np.float32)
        items.append(ImageScores(p, Identity.of_path(p), source.scorer(TagOptions()), vid, scores))
    cat.record_images(items, run)
    cat.close()


@pytest.mark.slow
def test_kill_9_during_batched_sidecar_writes_records_only_sidecars_in_place(
    tiny_weights: str, tmp_path: Path, ramtag_home: Path
) -> None:
    """Re-deciding writes sidecars in batches (staged, committed together, then recorded): killed
    while the first batches go to disk, the catalog claims no sidecar that is not there with the
    recorded content, and the re-run completes the library."""
    from ramtag.catalog import path_key
    from ramtag.catalog.outputs import sidecar_fingerprint

    lib = tmp_path / "lib"
    _scored_library(lib, 600, tiny_weights)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAMTAG_HOME": str(ramtag_home)}
    args = ["tag", str(lib), "--weights", tiny_weights, "--threshold", "0.6", "-q"]

    def sidecars() -> int:
        return sum(1 for _ in lib.glob("*/*.xmp"))

    _killed_run(args, env, lambda: sidecars() >= 1)  # killed in the middle of committing a batch
    images = sorted(lib.glob("*/*.jpg"))
    cat = open_catalog()
    outputs = cat.outputs(images)
    recorded = [row for rows in outputs.values() for row in rows if row.kind == "xmp"]
    assert 0 < sidecars() < len(images)  # some written, not all
    for row in recorded:  # every record's sidecar is there, with what the record says
        assert sidecar_fingerprint(row.target) == row.fingerprint
    cat.close()
    res = subprocess.run([sys.executable, "-m", "ramtag", *args], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    cat = open_catalog()
    outputs = cat.outputs(images)
    assert len(outputs) == len(images)
    for p in images:
        [row] = [r for r in outputs[path_key(p)] if r.kind == "xmp"]
        assert row.tags and sidecar_fingerprint(row.target) == row.fingerprint
    cat.close()
    res = subprocess.run([sys.executable, "-m", "ramtag", *args], env=env, capture_output=True, text=True)
    assert f"{len(images)} unchanged" in res.stderr


def test_query_export_albums_stats_runs_untag_commands(
    tag, photos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    assert tag(str(photos), "--threshold", "0.3")[0] == 0
    cat = open_catalog()
    (top, n), *_ = cat.stats()
    code, out, err = run_cli(["query", top, str(photos)], monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == n
    code, out, _ = run_cli(["query", f"{top} & !{top}"], monkeypatch, capsys)
    assert code == 0 and out == ""
    code, _, err = run_cli(["query", f"{top} & ("], monkeypatch, capsys)
    assert code == 2 and "character" in err and "Traceback" not in err
    code, out, _ = run_cli(["export", "--format", "csv"], monkeypatch, capsys)
    assert code == 0 and out.splitlines()[0] == "path,tags,scores,model,run" and len(out.splitlines()) == 13
    code, _, err = run_cli(["albums", top, "--to", str(tmp_path / "album")], monkeypatch, capsys)
    assert code == 0 and len([p for p in (tmp_path / "album").iterdir() if p.is_symlink()]) == n
    code, out, _ = run_cli(["stats", "--top", "3"], monkeypatch, capsys)
    assert code == 0 and top in out
    code, out, _ = run_cli(["runs"], monkeypatch, capsys)
    (run,) = [r.id for r in cat.runs()]
    assert code == 0 and run in out
    code, _, _ = run_cli(["untag", "--below", "0.99"], monkeypatch, capsys)
    assert code == 0 and not any(_subjects(p) for p in photos.glob("*.xmp"))
    code, _, err = run_cli(["untag", "--run", run], monkeypatch, capsys)
    assert code == 0
    for cmd in ("query", "export", "albums", "stats", "runs", "untag"):
        code, out, _ = run_cli([cmd, "--help"], monkeypatch, capsys)
        assert code == 0 and "Usage" in out


def test_python_api_tags_folders_and_queries_the_catalog(tiny_weights: str, photos: Path) -> None:
    import ramtag
    from ramtag.source import TaggerSource

    tagger = ramtag.load_tagger(tiny_weights, precision="fp32")
    results = list(tagger.tag([photos], threshold=0.3))  # a folder: walked like the CLI
    images = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert [r.path for r in results] == images and all(r.ok for r in results)
    summary = ramtag.tag_library([photos], TaggerSource.of(tagger), options=ramtag.TagOptions(threshold=0.3))
    assert summary.tagged == len(images)
    cat = ramtag.open_catalog()
    by_path = {r.path: r for r in results}
    (top, _), *_ = cat.stats()
    recs = cat.query(top, paths=[photos])
    assert recs and all(top in rec.tag_names() for rec in recs)
    for rec in recs:  # the catalog's score of the tag is the tagger's (to float16 precision)
        mine = {t.name: t.score for t in rec.tags}
        scored = {t.name: t.score for t in by_path[rec.path].tags}
        if top in scored:
            assert abs(mine[top] - scored[top]) < 1e-3
