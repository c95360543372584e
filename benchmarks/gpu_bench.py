"""One-shot GPU benchmark of ramtag (issue 14): run it once on a GPU machine, under 8 minutes.

    bash benchmarks/gpu.sh              # the real run (full-size Swin-L, 2,000 + 2,000 JPEGs)
    python benchmarks/gpu_bench.py --smoke    # a seconds-long check of the script itself (CPU is fine)

What it does, in order of priority (a global time budget, ``RAMTAG_GPU_BUDGET`` seconds, default 420,
skips whatever is left when spent):

1. a full-size RAM++ Swin-L checkpoint with random weights (4,585 tags) saved in ramtag's own weights
   format and loaded back the way ``ramtag tag`` loads it (nothing downloaded);
2. 2,000 JPEGs of 4000x3000 and 2,000 of 384x384 (quality 90; 64 distinct pictures, repeated, made by
   all cores);
3. measurements, each one an entry in the JSON: ``model_only`` (tensors already on the GPU),
   ``end_to_end`` (ramtag's real path: ``tag_library`` with ``--write none``), ``decode_only`` (CPU
   workers, ``--draft``, GPU nvJPEG), for bf16 with and without ``--compile`` and batch sizes
   64/128/256, peak GPU memory, fp32-vs-bf16 decision agreement, GPU-vs-CPU decode score drift, and
   CUDA-only tuning entries (CUDA graphs, batch 512, more decode workers).

Every measurement runs in try/except (an error is recorded and the run goes on) and the JSON is
rewritten after each one, so a kill still leaves results: benchmarks/results/<date>-<gpu>-gpu.json
(a copy goes to $OUT when that is set). Progress lines are printed as it goes.

Needs torch, torchvision, timm, safetensors, pillow, numpy (not open_clip, platformdirs or exiftool).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ images


def _make_one(args: tuple[Path, int, tuple[int, int]]) -> None:
    """One photo-like JPEG: smooth colour fields, blocky edges, noise; quality 90, 4:2:0."""
    path, seed, (w, h) = args
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6 + seed % 5, 8 + seed % 7, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
    detail = rng.integers(0, 256, size=(max(h // 64, 2), max(w // 64, 2), 3), dtype=np.uint8)
    img = Image.blend(img, Image.fromarray(detail).resize((w, h), Image.Resampling.NEAREST), 0.25)
    noise = rng.integers(-6, 7, size=(h, w, 3), dtype=np.int16)
    pixels = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90, subsampling=2)


def make_jpegs(folder: Path, n: int, size: tuple[int, int], distinct: int, procs: int) -> list[Path]:
    """``n`` JPEGs of ``size`` in ``folder``: ``distinct`` pictures made in parallel, then copied to
    reach ``n`` files (the decoders do the same work for every file)."""
    folder.mkdir(parents=True, exist_ok=True)
    distinct = max(1, min(distinct, n))
    bases = [folder / f"img_{i:05d}.jpg" for i in range(distinct)]
    jobs = [(p, i, size) for i, p in enumerate(bases)]
    if procs > 1:
        with ProcessPoolExecutor(procs) as pool:
            list(pool.map(_make_one, jobs))
    else:
        for job in jobs:
            _make_one(job)
    paths = list(bases)
    for i in range(distinct, n):
        dst = folder / f"img_{i:05d}.jpg"
        shutil.copyfile(bases[i % distinct], dst)  # copies, not links: ramtag's walk keeps one per inode
        paths.append(dst)
    return paths


# ------------------------------------------------------------------------------------------ report


class Report:
    """The JSON report, rewritten (atomically) after every entry; a copy under $OUT when set."""

    def __init__(self, path: Path, budget: float, only: list[str] | None = None) -> None:
        self.path = path
        self.budget = budget
        self.only = only or []  # glob patterns of the entries to run (--only); the set-up always runs
        self.data: dict[str, Any] = {"entries": {}, "errors": {}, "skipped": {}}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - T0)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - T0, 1)
        text = json.dumps(self.data, indent=2, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        out = os.environ.get("OUT")
        if out:
            try:
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / self.path.name).write_text(text, encoding="utf-8")
            except OSError as err:
                log(f"cannot copy the report to $OUT ({err})")

    def measure(
        self, name: str, fn: Callable[[], dict[str, Any]], *, need: float = 5.0
    ) -> dict[str, Any] | None:
        """Run ``fn`` unless under ``need`` seconds of budget are left; record its dict or its error."""
        if self.only and not any(fnmatch.fnmatch(name, pat) for pat in self.only):
            return None  # not asked for (--only)
        if self.left() < need:
            self.data["skipped"][name] = f"time budget spent ({self.left():.0f} s left, needs ~{need:.0f})"
            log(f"SKIP {name}: time budget")
            self.save()
            return None
        log(f"start {name}")
        t = time.perf_counter()
        try:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            result = fn()
            result["wall_s"] = round(time.perf_counter() - t, 2)
            if torch.cuda.is_available():
                result.setdefault("gpu_peak_mb", round(torch.cuda.max_memory_allocated() / 2**20, 1))
            self.data["entries"][name] = result
            shown = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
            log(f"done  {name}: {shown}")
            return result
        except Exception as err:
            self.data["errors"][name] = {
                "error": f"{type(err).__name__}: {err}",
                "trace": traceback.format_exc(),
            }
            log(f"FAIL  {name}: {type(err).__name__}: {err}")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return None
        finally:
            self.save()

    def skip(self, name: str, why: str) -> None:
        self.data["skipped"][name] = why
        log(f"SKIP {name}: {why}")
        self.save()


# --------------------------------------------------------------------------------------------- run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model, 8 tiny JPEGs: checks the script")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("RAMTAG_GPU_BUDGET", "420")))
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--images", type=int, default=None, help="JPEGs per size (default 2000; smoke 8)")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--only", action="append", default=[], help="run only entries matching this glob (repeatable)"
    )
    ap.add_argument("--photos", type=Path, default=None, help="real photos for the decode drift check")
    args = ap.parse_args(argv)

    from ramtag.api import Tagger, TagOptions, WriteOptions, tag_library
    from ramtag.batch import make_batches
    from ramtag.bench import machine_info
    from ramtag.device import select_device
    from ramtag.model.config import get_config
    from ramtag.model.ram_plus import RamPlus
    from ramtag.preprocess import make_transform
    from ramtag.runner import Runner
    from ramtag.tags.vocab import Vocabulary
    from ramtag.weights_format import (
        OFFICIAL_PREPROCESSING,
        LoadedWeights,
        build_model,
        load_weights,
        save_weights,
    )

    smoke = args.smoke
    device = select_device(args.device)
    cuda = device.type == "cuda"
    arch = "tiny" if smoke else "swin_l_384"
    n_img = args.images or (8 if smoke else 2000)
    big_size = (64, 48) if smoke else (4000, 3000)
    batch_sizes = [2, 4] if smoke else [64, 128, 256]
    main_b = batch_sizes[1]
    cores = os.cpu_count() or 1
    gpu_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    date = _dt.date.today().isoformat()
    report = Report(
        args.out_dir / f"{date}-{slug}-gpu{'-smoke' if smoke else ''}{'-partial' if args.only else ''}.json",
        args.budget,
        args.only,
    )
    report.data.update(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        smoke=smoke,
        budget_s=args.budget,
        machine=machine_info(),
        arch=arch,
        device=str(device),
    )
    report.save()
    log(f"report: {report.path}; device {device} ({gpu_name}); budget {args.budget:.0f} s")

    pre = OFFICIAL_PREPROCESSING
    S = pre.image_size
    work = Path(tempfile.mkdtemp(prefix="ramtag-gpu-bench-"))
    try:
        # ---- checkpoint: random weights in ramtag's format, loaded back as ramtag loads weights
        state: dict[str, Any] = {}

        def checkpoint() -> dict[str, Any]:
            config = get_config(arch)
            torch.manual_seed(0)
            info: dict[str, Any] = {"num_tags": config.num_tags}
            try:
                with torch.device(device):  # random init on the GPU: seconds instead of a minute on a CPU
                    model = RamPlus(config)
            except Exception as err:
                info["init_on_device_error"] = f"{type(err).__name__}: {err}"
                model = RamPlus(config)
            names = tuple(f"tag{i:05d}" for i in range(config.num_tags))
            vocab = Vocabulary(names=names, thresholds=(0.65,) * config.num_tags)
            try:  # the way `ramtag tag` gets its model: a weights directory on disk
                t = time.perf_counter()
                save_weights(
                    work / "weights",
                    state_dict=model.state_dict(),
                    config=config,
                    vocabulary=vocab,
                    preprocessing=pre,
                    provenance={"note": "random weights, ramtag gpu_bench"},
                )
                info["save_s"] = round(time.perf_counter() - t, 2)
                info["bytes"] = (work / "weights" / "model.safetensors").stat().st_size
                t = time.perf_counter()
                loaded = load_weights(work / "weights")
                state["model"] = build_model(loaded)
                info["load_s"] = round(time.perf_counter() - t, 2)
            except Exception as err:  # go on with the model in memory rather than measure nothing
                info["save_load_error"] = f"{type(err).__name__}: {err}"
                loaded = LoadedWeights(config=config, state_dict={}, vocabulary=vocab, preprocessing=pre)
                state["model"] = model.float().eval()
            del model  # the random-init copy (the loaded one is used)
            state["loaded"] = loaded
            info["parameters"] = sum(p.numel() for p in state["model"].parameters())
            return info

        report.only.extend(["checkpoint", "images"] if report.only else [])
        if report.measure("checkpoint", checkpoint, need=-math.inf) is None:
            log("no model: stopping")
            return 1
        model = state["model"]
        loaded = state["loaded"]
        label_embed = model.builtin_label_embed().detach()

        # ---- images
        def images() -> dict[str, Any]:
            procs = 1 if smoke else max(1, cores)
            t = time.perf_counter()
            state["big"] = make_jpegs(work / "big", n_img, big_size, 4 if smoke else 64, procs)
            state["small"] = make_jpegs(
                work / "small", n_img, (S, S) if not smoke else (32, 32), 4 if smoke else 64, procs
            )
            return {
                "per_size": n_img,
                "big": list(big_size),
                "big_mean_bytes": int(np.mean([p.stat().st_size for p in state["big"][:64]])),
                "small_mean_bytes": int(np.mean([p.stat().st_size for p in state["small"][:64]])),
                "generate_s": round(time.perf_counter() - t, 1),
            }

        if report.measure("images", images, need=-math.inf) is None:
            return 1
        big, small = state["big"], state["small"]

        runners: dict[tuple[str, bool, int], Runner] = {}

        def runner(precision: str = "bf16", compile: bool = False, batch: int = 0) -> Runner:
            # a compiled runner pads every batch to its first one's size: one runner per batch size
            key = (precision, compile, batch if compile else 0)
            if key not in runners:
                runners[key] = Runner(model, label_embed, device=device, precision=precision, compile=compile)
            return runners[key]

        def tagger(r: Runner) -> Tagger:
            return Tagger(r, loaded.vocabulary, loaded.preprocessing, label_embed=label_embed, name="random")

        # ---- model only: batches already on the device
        def model_only(
            b: int, precision: str = "bf16", compile: bool = False, steps: int = 0
        ) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                r = runner(precision, compile, b)
                x = torch.randn(b, 3, S, S, device=device)
                t = time.perf_counter()
                r.logits(x)  # warm-up (and the compile)
                _sync(device)
                warm = time.perf_counter() - t
                r.logits(x)
                n = steps or (1 if smoke else max(3, 1024 // b))
                _sync(device)
                t = time.perf_counter()
                for _ in range(n):
                    r.logits(x)
                _sync(device)
                dt = time.perf_counter() - t
                return {
                    "images_per_s": round(n * b / dt, 1),
                    "batch": b,
                    "steps": n,
                    "precision": r.precision,
                    "compile": compile,
                    "first_batch_s": round(warm, 2),
                    "runner": r.describe(),
                }

            return run

        # ---- end to end: ramtag's real tagging path (tag_library, --write none)
        def end_to_end(
            paths: list[Path],
            b: int,
            decode: str,
            *,
            draft: bool = False,
            workers: int | None = None,
            compile: bool = False,
            catalog: Path | None = None,
        ) -> Callable[[], dict[str, Any]]:
            """``catalog``: record into that catalog and write JSON Lines beside it (what `ramtag tag
            --write json` does), instead of --write none without a catalog."""

            def run() -> dict[str, Any]:
                tg = tagger(runner("bf16", compile, b))
                if compile:  # compile outside the timed run
                    tg.scores(torch.zeros(b, 3, S, S))
                opts = TagOptions(batch_size=b, workers=workers, draft=draft, decode=decode)
                restore = None
                if (
                    decode == "gpu" and not cuda
                ):  # smoke on a CPU: the same path with torchvision's CPU decoder
                    restore = Tagger.decode_mode
                    Tagger.decode_mode = lambda self, options: "gpu"  # type: ignore[method-assign]
                try:
                    if catalog is None:
                        summary = tag_library(
                            paths, tg, options=opts, write=WriteOptions(mode="none"), use_state=False
                        )
                    else:
                        write = WriteOptions(mode="json", json_path=catalog.with_suffix(".jsonl"))
                        summary = tag_library(paths, tg, options=opts, write=write, catalog=catalog)
                finally:
                    if restore is not None:
                        Tagger.decode_mode = restore  # type: ignore[method-assign]
                return {
                    "images_per_s": round(summary.tagged / summary.seconds, 1) if summary.tagged else None,
                    "files_per_s": round(len(paths) / summary.seconds, 1),
                    "images": summary.tagged,
                    "failed": len(summary.failed),
                    "batch": b,
                    "decode": decode,
                    "draft": draft,
                    "workers": workers,
                    "compile": compile,
                    "seconds": round(summary.seconds, 2),
                }

            return run

        # ---- decode only: make_batches without the model
        def decode_only(
            paths: list[Path], decode: str, *, draft: bool = False, workers: int | None = None
        ) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                from ramtag.batch import default_workers

                w = default_workers(device.type) if workers is None else workers
                t = time.perf_counter()
                n = 0
                for batch in make_batches(
                    paths,
                    make_transform(pre),
                    batch_size=main_b,
                    workers=w,
                    pin_memory=cuda,
                    draft_size=S if draft else None,
                    decode=decode,
                    device=device,
                ):
                    n += len(batch)
                    if decode == "gpu":
                        _sync(device)
                dt = time.perf_counter() - t
                return {
                    "images_per_s": round(n / dt, 1),
                    "images": n,
                    "decode": decode,
                    "draft": draft,
                    "workers": w,
                    "batch": main_b,
                }

            return run

        # ---- agreement: fp32 vs bf16 decisions, GPU vs CPU decode scores
        def agreement() -> dict[str, Any]:
            k = min(len(small), 8 if smoke else 128)
            batches = list(make_batches(small[:k], make_transform(pre), batch_size=main_b, workers=0))
            x = torch.cat([bt.images for bt in batches])
            fp32 = torch.cat([runner("fp32").scores(x[i : i + 32]) for i in range(0, len(x), 32)])
            bf16 = torch.cat([runner("bf16").scores(x[i : i + 32]) for i in range(0, len(x), 32)])
            out: dict[str, Any] = {"images": len(x), "decisions": int(fp32.numel())}
            for label, th in (
                ("q99", float(torch.quantile(fp32.flatten()[:1_000_000].double(), 0.99))),
                ("0.65", 0.65),
            ):
                a, b = fp32 > th, bf16 > th
                out[f"threshold_{label}"] = {
                    "threshold": th,
                    "differing_decisions": int((a != b).sum()),
                    "selected_fp32": int(a.sum()),
                }
            out["max_abs_score_diff"] = float((fp32 - bf16).abs().max())
            return out

        def decode_drift(paths: list[Path], label: str) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                k = min(len(paths), 8 if smoke else 64)
                tf = make_transform(pre)
                cpu_x = torch.cat([bt.images for bt in make_batches(paths[:k], tf, batch_size=16, workers=0)])
                gpu_dev = device if cuda else torch.device("cpu")
                gpu_x = torch.cat(
                    [
                        bt.images.cpu()
                        for bt in make_batches(
                            paths[:k], tf, batch_size=16, workers=0, decode="gpu", device=gpu_dev
                        )
                    ]
                )
                r = runner("fp32")
                a, b = r.scores(cpu_x), r.scores(gpu_x)
                th = float(torch.quantile(a.flatten()[:1_000_000].double(), 0.99))
                diff = (gpu_x - cpu_x).abs()
                return {
                    "source": label,
                    "images": k,
                    "pixel_max_abs_diff": float(diff.max()),
                    "pixel_mean_abs_diff": float(diff.mean()),
                    "score_max_abs_diff": float((a - b).abs().max()),
                    "score_mean_abs_diff": float((a - b).abs().mean()),
                    "threshold_q99": th,
                    "differing_decisions_q99": int(((a > th) != (b > th)).sum()),
                    "decisions": int(a.numel()),
                    "precision": "fp32",
                }

            return run

        def cuda_graph(b: int) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                r = runner("bf16")
                x = torch.randn(b, 3, S, S, device=device).contiguous(memory_format=torch.channels_last)
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side), torch.inference_mode(), r.autocast_context():
                    for _ in range(3):
                        r._forward(x)
                torch.cuda.current_stream(device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), r.autocast_context(), torch.cuda.graph(graph):
                    out = r._forward(x)
                graph.replay()
                _sync(device)
                n = max(3, 1024 // b)
                t = time.perf_counter()
                for _ in range(n):
                    graph.replay()
                    out.float().cpu()
                _sync(device)
                dt = time.perf_counter() - t
                return {
                    "images_per_s": round(n * b / dt, 1),
                    "batch": b,
                    "steps": n,
                    "precision": "bf16",
                    "note": "whole forward captured in one CUDA graph; static input buffer",
                }

            return run

        m = report.measure
        cw = max(1, cores - 1)  # CPU decode workers when all cores decode
        # 1. model only, bf16, no compile
        for b in batch_sizes:
            m(f"model_only_bf16_b{b}", model_only(b))
        # 2. end to end, 384-px JPEGs
        m(f"e2e_384_bf16_b{main_b}_decode_gpu", end_to_end(small, main_b, "gpu"), need=15)
        m(f"e2e_384_bf16_b{main_b}_decode_cpu_w{cw}", end_to_end(small, main_b, "cpu", workers=cw), need=15)
        # 3. decode only
        big_cpu = big[: max(1, len(big) // 2)]  # full Pillow decode of 12 MP is slow: half the files
        m("decode_only_12mp_gpu", decode_only(big, "gpu"), need=15)
        m(f"decode_only_12mp_cpu_draft_w{cw}", decode_only(big, "cpu", draft=True, workers=cw), need=15)
        m(f"decode_only_12mp_cpu_w{cw}", decode_only(big_cpu, "cpu", workers=cw), need=20)
        m("decode_only_384_gpu", decode_only(small, "gpu"), need=10)
        m(f"decode_only_384_cpu_w{cw}", decode_only(small, "cpu", workers=cw), need=10)
        # 4. end to end, 12 MP JPEGs
        m(f"e2e_12mp_bf16_b{main_b}_decode_gpu", end_to_end(big, main_b, "gpu"), need=20)
        m(
            f"e2e_12mp_bf16_b{main_b}_decode_cpu_draft_w{cw}",
            end_to_end(big, main_b, "cpu", draft=True, workers=cw),
            need=20,
        )
        # 5. agreement and drift
        m("agreement_fp32_vs_bf16", agreement, need=10)
        m("decode_drift_gpu_vs_cpu_384", decode_drift(small, "generated 384x384"), need=10)
        m("decode_drift_gpu_vs_cpu_12mp", decode_drift(big, "generated 4000x3000"), need=15)
        photos = args.photos or Path(os.environ.get("RAMTAG_SHARED", REPO.parent / "shared")) / "photos"
        if photos.is_dir():
            files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            m("decode_drift_gpu_vs_cpu_photos", decode_drift(files, str(photos)), need=10)
        else:
            report.skip("decode_drift_gpu_vs_cpu_photos", f"no photos at {photos} (pass --photos DIR)")
        # 6. default settings end to end (what `ramtag tag` does with no flags)
        m("e2e_384_defaults", end_to_end(small, main_b, "auto"), need=15)
        # 7. compile (slow first batch), CUDA tuning
        if smoke:
            report.skip("compile", "smoke run: torch.compile is for the GPU run")
        else:
            m(f"model_only_bf16_compile_b{main_b}", model_only(main_b, compile=True), need=90)
            m(
                f"e2e_384_bf16_compile_b{main_b}_decode_gpu",
                end_to_end(small, main_b, "gpu", compile=True),
                need=20,
            )
        # the catalog and JSON Lines on top (fsync per batch), then the unchanged re-run of the same
        cat = work / "catalog.sqlite"
        m(
            f"e2e_384_bf16{'' if smoke else '_compile'}_b{main_b}_decode_gpu_catalog_json",
            end_to_end(small, main_b, "gpu", compile=not smoke, catalog=cat),
            need=20,
        )
        m("rerun_384_unchanged_catalog_json", end_to_end(small, main_b, "gpu", catalog=cat), need=15)
        if cuda:
            m("model_only_bf16_b512", model_only(512), need=15)
            m(f"e2e_384_bf16_b256_decode_gpu_w{cw}", end_to_end(small, 256, "gpu", workers=cw), need=15)
            m(f"e2e_12mp_bf16_b256_decode_gpu_w{cw}", end_to_end(big, 256, "gpu", workers=cw), need=20)
            for b in batch_sizes:
                if b != main_b:
                    m(f"model_only_bf16_compile_b{b}", model_only(b, compile=True), need=90)
            # last: a failed graph capture can leave the CUDA context unusable
            m("cuda_graph_bf16_b128", cuda_graph(128), need=30)
            m("cuda_graph_bf16_b256", cuda_graph(256), need=30)
        else:
            report.skip("cuda_tuning", f"no CUDA device ({device})")
        peaks = [
            v["gpu_peak_mb"] for v in report.data["entries"].values() if v.get("gpu_peak_mb") is not None
        ]
        report.data["gpu_peak_mb_max"] = max(peaks) if peaks else None
        report.data["summary"] = {
            k: v.get("images_per_s") for k, v in report.data["entries"].items() if "images_per_s" in v
        }
        report.save()
        log("summary (images/s):")
        for k, v in report.data["summary"].items():
            log(f"  {k:45s} {v}")
        log(
            f"errors: {len(report.data['errors'])}, skipped: {len(report.data['skipped'])}; "
            f"saved {report.path}"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
