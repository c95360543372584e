"""Catalog benchmark: queries over a synthetic 100,000-image x 4,585-tag catalog, and re-deciding.

    python benchmarks/catalog_bench.py                       # build (once, cached) and measure
    python benchmarks/catalog_bench.py --images 20000        # smaller, quicker
    python benchmarks/catalog_bench.py --out benchmarks/results/catalog.json
    python benchmarks/catalog_bench.py --record-only        # ms to record one image, two kinds of scores
    python benchmarks/catalog_bench.py --saturated --rerun 0  # random-weights scores: every image cut
    python benchmarks/catalog_bench.py --rerun-only --out benchmarks/results/catalog-100k.json
        # only the re-run and re-decide of --rerun files and the I/O floor (updates those entries)

The synthetic catalog has the shape of a real one: the official 4,585 tags and thresholds when
../shared/official-data is there (else made-up names at 0.65), every image with the float16 score
of every tag, most scores tiny (sigmoid of N(-7, 2) logits) and ~12 tags per image high, drawn with
Zipf-like popularity so that some tags are common (``person``-like) and most are rare. It is built
through ``Catalog.record_images`` (the same code the tagging path records with) and kept at
``--db`` so later runs skip building. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ramtag.catalog import Catalog, Identity, ImageScores
from ramtag.catalog.redecide import decide_stored
from ramtag.tags import Vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMTAG_SHARED", REPO.parent / "shared"))
T = TypeVar("T")
OFFICIAL = next(
    (p for p in (SHARED / "official-data", Path("/work/shared/official-data")) if p.exists()), SHARED
)


def vocabulary(n_tags: int) -> Vocabulary:
    if (OFFICIAL / "ram_tag_list.txt").exists() and n_tags == 4585:
        v = Vocabulary.from_files(
            OFFICIAL / "ram_tag_list.txt",
            OFFICIAL / "ram_tag_list_threshold.txt",
            OFFICIAL / "ram_tag_list_chinese.txt",
        )
        if len(v) == n_tags:
            return v
    names = tuple(f"tag{i:04d}" for i in range(n_tags))
    return Vocabulary(names, (0.65,) * n_tags)


def build(db: Path, n_images: int, vocab: Vocabulary, seed: int = 0, saturated: bool = False) -> float:
    """Fill a new catalog at ``db``; returns seconds spent recording. ``saturated``: every score
    uniform in [0.2, 1) (random weights: every image's hits cut at HIT_CAP)."""
    rng = np.random.default_rng(seed)
    n_tags = len(vocab)
    popularity = 1.0 / np.arange(1, n_tags + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    cat = Catalog(db)
    vid = cat.add_vocabulary(vocab)
    run = cat.begin_run("bench-build", {"images": n_images})
    ident = Identity(1000, 0, 0, 0, "0" * 64)
    t0 = time.perf_counter()
    chunk = 2000
    for start in range(0, n_images, chunk):
        n = min(chunk, n_images - start)
        logits = rng.normal(-7.0, 2.0, size=(n, n_tags)).astype(np.float32)
        scores = 1.0 / (1.0 + np.exp(-logits))
        if saturated:
            scores = rng.uniform(0.2, 1.0, size=(n, n_tags)).astype(np.float32)
        for row in range(0 if saturated else n):
            high = rng.choice(n_tags, size=rng.poisson(12), replace=False, p=popularity)
            scores[row, high] = rng.uniform(0.5, 1.0, size=len(high))
        items = (
            ImageScores(
                f"/bench/library/{(start + r) // 1000:03d}/img{start + r:06d}.jpg",
                ident,
                "bench",
                vid,
                scores[r],
            )
            for r in range(n)
        )
        cat.record_images(items, run)
        print(f"\r  built {start + n}/{n_images}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    seconds = time.perf_counter() - t0
    cat.finish_run(run, {"images": n_images})
    cat.close()
    return seconds


def record_bench(vocab: Vocabulary, n_images: int = 320, seed: int = 2) -> dict[str, dict[str, float]]:
    """Milliseconds per image spent in ``Catalog.record_images`` (64 images per transaction, as the
    tagging writer records), on a fresh catalog that already holds 2,000 images, for two kinds of
    scores: a trained tagger's (~20 of the tags at or above 0.3) and random or badly calibrated
    weights' (most tags above 0.3, which the hits index must not grow with)."""
    import tempfile

    rng = np.random.default_rng(seed)
    n_tags = len(vocab)

    def realistic(n: int) -> np.ndarray:
        s = 1.0 / (1.0 + np.exp(-rng.normal(-7.0, 2.0, size=(n, n_tags))))
        for row in s:
            row[rng.choice(n_tags, size=20, replace=False)] = rng.uniform(0.3, 1.0, size=20)
        return s.astype(np.float32)

    def saturated(n: int) -> np.ndarray:
        return rng.uniform(0.2, 1.0, size=(n, n_tags)).astype(np.float32)

    out: dict[str, dict[str, float]] = {}
    for label, make in (("realistic", realistic), ("saturated", saturated)):
        with tempfile.TemporaryDirectory(prefix="ramtag-record-") as tmp:
            cat = Catalog(Path(tmp) / "c.sqlite")
            vid = cat.add_vocabulary(vocab)
            run = cat.begin_run("bench-record")
            _record(cat, label, 0, make(2000), vid, run)  # an index that is not empty
            scores = make(n_images)
            seconds = _record(cat, label, 10_000, scores, vid, run)
            rows = cat.execute("SELECT COUNT(*) FROM hits")[0][0] / (2000 + n_images)
            above = float((scores >= 0.3).sum(axis=1).mean())
            cat.close()
        out[label] = {
            "ms_per_image": round(1000 * seconds / n_images, 2),
            "scores_at_or_above_0.3": round(above, 1),
            "hit_rows_per_image": round(rows, 1),
        }
        print(f"record {label:10s} {out[label]}", file=sys.stderr)
    return out


def _record(cat: Catalog, label: str, start: int, scores: np.ndarray, vid: str, run: str) -> float:
    """Seconds to record ``scores`` (one image per row), 64 images per transaction."""
    ident = Identity(1000, 0, 0, 0, "0" * 64)
    t0 = time.perf_counter()
    for a in range(0, len(scores), 64):
        batch = scores[a : a + 64]
        cat.record_images(
            (
                ImageScores(f"/bench/{label}/img{start + a + r:06d}.jpg", ident, "b", vid, row)
                for r, row in enumerate(batch)
            ),
            run,
        )
    return time.perf_counter() - t0


def timed(fn: Callable[[], T], repeat: int = 3) -> tuple[float, T]:
    """(median seconds over ``repeat`` calls, the last result)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def tiny_jpeg(rng: np.random.Generator) -> bytes:
    """A small valid JPEG, different for every call (a photo's metadata is read from it when ramtag
    creates its sidecar; random bytes named .jpg would send every such file to exiftool instead)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def io_floor(n_files: int, size: int = 1700) -> dict[str, float]:
    """Seconds to replace ``n_files`` existing sidecar-sized files durably, by the two fsutil paths:
    one :func:`atomic_write_bytes` each (fsync file + folder each), :class:`AtomicBatch` in batches of
    64 committed here, and the same through its helper process with one batch in flight (what the
    writer thread does): the file system's share of a re-decide."""
    import shutil
    import tempfile

    from ramtag.fsutil import atomic_write_bytes

    try:
        from ramtag.fsutil import AtomicBatch
    except ImportError:  # measuring an older ramtag
        AtomicBatch = None  # type: ignore[assignment,misc]

    tmp = Path(tempfile.mkdtemp(prefix="ramtag-iofloor-"))
    paths = [tmp / f"{i // 500:03d}" / f"img{i:05d}.jpg.xmp" for i in range(n_files)]
    for p in paths:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"o" * size)
    os.sync()
    t0 = time.perf_counter()
    for p in paths:
        atomic_write_bytes(p, b"a" * size)
    each = time.perf_counter() - t0
    os.sync()
    if AtomicBatch is None:
        shutil.rmtree(tmp, ignore_errors=True)
        return {"files": n_files, "atomic_write_each_s": round(each, 2)}
    batch = AtomicBatch()
    t0 = time.perf_counter()
    for start in range(0, n_files, 64):
        for p in paths[start : start + 64]:
            batch.add(p, b"b" * size)
        assert not batch.commit()
    batched = time.perf_counter() - t0
    batch.close()
    out = {"files": n_files, "atomic_write_each_s": round(each, 2), "atomic_batch_64_s": round(batched, 2)}
    if hasattr(AtomicBatch, "start_commit"):  # the helper process, one batch in flight (the writer's way)
        os.sync()
        batch = AtomicBatch(background=True)
        t0 = time.perf_counter()
        previous = None
        for start in range(0, n_files, 64):
            for p in paths[start : start + 64]:
                batch.add(p, b"c" * size)
            started = batch.start_commit()
            if previous is not None:
                assert not previous.wait()
            previous = started
        assert previous is not None and not previous.wait()
        out["helper_batch_64_s"] = round(time.perf_counter() - t0, 2)
        batch.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def rerun_bench(
    n_files: int, shared: Path, rewrite: bool = True, profile: Path | None = None
) -> dict[str, object]:
    """An unchanged re-run of ``n_files`` tagged files (XMP sidecars), then a re-decide at a new threshold,
    each timed as ``ramtag tag DIR`` wall clock in a fresh process (what a user waits for). ``profile``:
    also run the re-decide once more under cProfile (from the same starting state) into that file."""
    import subprocess
    import tempfile

    from ramtag.library import decide_key
    from ramtag.options import TagOptions, WriteOptions
    from ramtag.writers.xmp import merge_tags

    tmp = Path(tempfile.mkdtemp(prefix="ramtag-rerun-"))
    env = {**os.environ, "RAMTAG_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
    parity = shared / "parity"
    subprocess.run(
        [sys.executable, "-m", "ramtag", "weights", "import", str(parity / "ram_plus_tiny_official.pth"),
         "--tag-list", str(parity / "tag_list.txt"), "--thresholds", str(parity / "thresholds.txt"),
         "--name", "tiny"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    os.environ["RAMTAG_HOME"] = env["RAMTAG_HOME"]
    from ramtag.api import tagger_source

    source = tagger_source("tiny")
    vocab = source.vocabulary
    cat = Catalog()
    vid = cat.add_vocabulary(vocab)
    run = cat.begin_run("bench-setup")
    key = decide_key(vocab, TagOptions(), WriteOptions())
    lib = tmp / "library"
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for start in range(0, n_files, 1000):
        items, outputs = [], []
        for i in range(start, min(n_files, start + 1000)):
            folder = lib / f"{i // 500:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"img{i:05d}.jpg"
            p.write_bytes(tiny_jpeg(rng))
            scores = rng.random(len(vocab)).astype(np.float32) ** 8
            items.append(ImageScores(p, Identity.of_path(p), source.scorer(TagOptions()), vid, scores))
            order = np.argsort(-scores)
            names = [vocab.names[c] for c in order if scores[c] > vocab.thresholds[c]]
            sidecar = p.with_name(p.name + ".xmp")
            data, record = merge_tags(None, names, path=sidecar, model="tiny")
            tags = [(n, float(scores[vocab.names.index(n)])) for n in names]
            if data is not None:
                sidecar.write_bytes(data)
            st = os.stat(sidecar) if data is not None else None
            outputs.append((p, "xmp", sidecar, tags, record.fingerprint(), key, st))
        cat.record_images(items, run)
        cat.record_outputs(outputs, run)
    setup = time.perf_counter() - t0
    cat.close()

    def wall(*extra: str, prefix: tuple[str, ...] = ("-m", "ramtag")) -> tuple[float, str]:
        t = time.perf_counter()
        res = subprocess.run(
            [sys.executable, *prefix, "tag", str(lib), "--weights", "tiny", "-q", *extra],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        lines = res.stderr.strip().splitlines()
        first = max((i for i, ln in enumerate(lines) if "images found" in ln), default=max(0, len(lines) - 3))
        return time.perf_counter() - t, " ".join(" ".join(lines[first:]).split())  # the summary

    unchanged_s, unchanged_line = wall()
    unchanged2_s, _ = wall()
    if rewrite and profile is not None:  # the same re-decide under cProfile, then back to the start
        import shutil

        keep = tmp / "before-redecide"
        shutil.copytree(lib, keep / "library", symlinks=True)
        shutil.copy2(Path(env["RAMTAG_HOME"]) / "catalog.sqlite", keep / "catalog.sqlite")
        wall("--threshold", "0.5", prefix=("-m", "cProfile", "-o", str(profile), "-m", "ramtag"))
        shutil.rmtree(lib)
        shutil.move(keep / "library", lib)
        shutil.copy2(keep / "catalog.sqlite", Path(env["RAMTAG_HOME"]) / "catalog.sqlite")
        os.sync()
    load = os.getloadavg()
    redecide_s, redecide_line = wall("--threshold", "0.5") if rewrite else (0.0, "")
    again_s, again_line = wall("--threshold", "0.5") if rewrite else (0.0, "")
    out = {
        "files": n_files,
        "setup_s": round(setup, 1),
        "unchanged_rerun_s": round(unchanged_s, 2),
        "unchanged_rerun_again_s": round(unchanged2_s, 2),
        "unchanged_summary": unchanged_line,
        "redecide_and_rewrite_sidecars_s": round(redecide_s, 2),
        "load_before_redecide": [round(x, 2) for x in load],
        "redecide_summary": redecide_line,
        "unchanged_after_redecide_s": round(again_s, 2),
        "unchanged_after_redecide_summary": again_line,
    }
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--tags", type=int, default=4585)
    ap.add_argument("--redecide", type=int, default=10_000, help="images re-decided at new thresholds")
    ap.add_argument("--db", type=Path, default=None, help="catalog file (kept; default /tmp/...)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    ap.add_argument("--rerun", type=int, default=10_000, help="files in the unchanged re-run test (0: skip)")
    ap.add_argument("--record-only", action="store_true", help="only time recording (no 100k catalog)")
    ap.add_argument(
        "--saturated", action="store_true", help="random-weights scores (most tags over 0.3) in the catalog"
    )
    ap.add_argument(
        "--rerun-only", action="store_true",
        help="only the re-run / re-decide of --rerun files and the I/O floor (no synthetic catalog); "
        "with --out, updates those entries of an existing report",
    )  # fmt: skip
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the re-decide run into this file")
    args = ap.parse_args()
    if args.record_only:
        print(json.dumps(record_bench(vocabulary(args.tags)), indent=1))
        return
    shared = SHARED if (SHARED / "parity").exists() else Path("/work/shared")
    if args.rerun_only:
        old = json.loads(args.out.read_text()) if args.out is not None and args.out.exists() else {}
        old["rerun"] = rerun_bench(args.rerun, shared, profile=args.profile)
        old["io_floor"] = io_floor(args.rerun)
        old["rerun_machine"] = {
            "cpus": os.cpu_count(), "load_after": os.getloadavg(), "python": platform.python_version()
        }  # fmt: skip
        print(json.dumps({k: old[k] for k in ("rerun", "io_floor", "rerun_machine")}, indent=1))
        if args.out:
            args.out.write_text(json.dumps(old, indent=1) + "\n")
        return
    kind = "-saturated" if args.saturated else ""
    db = args.db or Path(f"/tmp/ramtag-catalog-bench-{args.images}x{args.tags}{kind}.sqlite")
    vocab = vocabulary(args.tags)
    report: dict[str, object] = {"images": args.images, "tags": len(vocab), "db": str(db)}
    report["saturated"] = args.saturated
    if args.rebuild or not db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        secs = build(db, args.images, vocab, saturated=args.saturated)
        report["build_s"] = round(secs, 1)
        report["record_images_per_s"] = round(args.images / secs)
    report["db_mib"] = round(db.stat().st_size / 2**20)

    report["record"] = record_bench(vocab)
    with Catalog(db, readonly=True) as c:
        report["cut_images"] = c.execute("SELECT COUNT(*) FROM images WHERE hit_floor IS NOT NULL")[0][0]
    cat = Catalog(db, readonly=True)
    n = cat.count()
    hits = cat.execute("SELECT COUNT(*), SUM(above) FROM hits")[0]
    report["hits_rows"], report["above_threshold_pairs"] = hits
    t0 = time.perf_counter()
    top = [name for name, _ in cat.stats(limit=40)]
    print(f"stats (top 40, first): {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    common, mid, rare = top[0], top[5], top[30]
    quoted = [f'"{t}"' if " " in t else t for t in (common, mid, rare)]
    queries = {
        "one common tag": quoted[0],
        "and/or/not": f"{quoted[1]} & ({quoted[2]} | {quoted[0]}) & !{quoted[0]}>=0.9",
        "minimum score (indexed)": f"{quoted[1]}>=0.8",
        "below the index floor (blob scan, all images)": f"{quoted[2]}>=0.05",
        "below the floor, after an indexed &": f"{quoted[1]} & {quoted[2]}>=0.05",
        "under one folder": quoted[0],
    }
    results: dict[str, dict[str, object]] = {}
    for label, q in queries.items():
        paths = [f"/bench/library/{n // 2000:03d}"] if label == "under one folder" else []
        t_ids, ids = timed(functools.partial(cat.query_ids, q, paths))
        # saturated scores put ~1,500 tags over their thresholds per image: full records of tens of
        # thousands of matches are gigabytes of Python objects, not a query's cost
        big = args.saturated and len(ids) > 5000
        t_rec = float("nan") if big else timed(functools.partial(cat.query, q, paths))[0]
        results[label] = {
            "query": q,
            "matches": len(ids),
            "ids_s": round(t_ids, 3),
            "records_s": None if big else round(t_rec, 3),
        }
        print(f"{label:48s} {len(ids):7d} matches  ids {t_ids:6.3f} s  records {t_rec:6.3f} s   {q}")
    report["queries"] = results
    t_stats, _ = timed(lambda: cat.stats(limit=20), repeat=1)
    report["stats_s"] = round(t_stats, 3)
    print(f"{'stats (top 20 tags)':48s} {t_stats:6.3f} s")

    paths = [r[0] for r in cat.execute(f"SELECT path FROM images ORDER BY id LIMIT {int(args.redecide)}")]
    t_red, (res, missing) = timed(lambda: decide_stored(cat, paths, threshold=0.5, top_k=20), repeat=1)
    assert not missing and len(res) == len(paths)
    report["redecide"] = {
        "images": len(paths),
        "seconds": round(t_red, 2),
        "tags_per_image": round(sum(len(r.tags) for r in res) / len(res), 1),
    }
    print(f"re-decide {len(paths)} images at --threshold 0.5 --top-k 20: {t_red:.2f} s")
    if args.rerun:
        report["rerun"] = rerun_bench(args.rerun, shared, profile=args.profile)
        report["io_floor"] = io_floor(args.rerun)
        print(json.dumps(report["rerun"], indent=1))
    report["machine"] = {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()}
    report["catalog_images"] = n
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
