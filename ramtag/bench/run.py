"""``run_benchmark``: the measurement, as steps (images -> reference -> end to end -> stages -> decode
options -> memory -> JSON)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..batch import default_threads, default_workers
from ..errors import UsageError
from .images import generate_jpegs, time_decode, torchvision_transform
from .machine import load_average, machine_info
from .reference import reference_loop

if TYPE_CHECKING:
    from ..model.ram_plus import RamPlus
    from ..tagger import Tagger
    from ..weights_format import Preprocessing

log = logging.getLogger(__name__)

DRAFT_TOLERANCE = 0.01  # max |score difference| vs exact decoding that we accept for JPEG draft mode


@dataclass
class BenchOptions:
    """What ``ramtag bench`` measures (CLI flags in brackets)."""

    arch: str = "swin_l_384"  # model architecture, random weights [--arch swin_l_384|swin_b_384|tiny]
    num_images: int = 16  # images to generate [--images]
    image_size: tuple[int, int] = (4000, 3000)  # generated JPEG width, height [--size 4000x3000 | 384]
    inputs: Sequence[Path] = ()  # use these image files (copied to a temp folder) instead [--inputs]
    batch_size: int | None = None  # None: Runner.suggest_batch_size() [--batch-size]
    workers: int | None = None  # decode workers; None: min(4, CPUs) [--workers]
    device: str = "auto"  # [--device]
    precision: str = "auto"  # [--precision]
    compile: bool = False  # torch.compile the model [--compile]
    draft: bool = False  # JPEG draft decoding in the end-to-end run [--draft]
    decode: str = "auto"  # JPEG decoding in the end-to-end run: gpu | cpu | auto [--decode]
    reference: bool = True  # also run the official-style loop [--no-reference]
    decode_check: bool = True  # compare decode options' speed and scores [--no-decode-check]
    threshold: float | None = None  # one threshold for every tag; None: the reference scores' 99th
    #   percentile (random weights put almost no score above a real threshold; this one selects ~1 %
    #   of the pairs and packs many scores near it: a strict, non-vacuous decision check) [--threshold]
    thresholds: Path | None = None  # per-tag thresholds file, one per line [--thresholds]
    out: Path | None = None  # JSON file; None: bench-results/<time>-<arch>-<device>.json [--out]
    seed: int = 0  # random weights and generated images [--seed]


def run_benchmark(options: BenchOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described in :mod:`ramtag.bench`; returns the report (also saved as JSON).

    ``progress`` is called with the name of each phase as it starts (the CLI shows it)."""
    phase = progress or (lambda name: None)
    from ..device import select_device, tune_cpu_allocator
    from ..model.config import get_config
    from ..model.ram_plus import RamPlus
    from ..preprocess import make_transform
    from ..tags.vocab import Vocabulary
    from ..weights_format import OFFICIAL_PREPROCESSING

    opts = options
    if opts.num_images < 1 and not opts.inputs:
        raise UsageError("--images must be at least 1 (or pass --inputs)")
    config = get_config(opts.arch)
    pre = OFFICIAL_PREPROCESSING
    if config.swin.img_size != pre.image_size:
        raise UsageError(
            f"--arch {opts.arch}: input size {config.swin.img_size} has no official preprocessing"
        )
    report = _header(opts)
    torch.manual_seed(opts.seed)
    model = RamPlus(config).eval()
    T = config.num_tags
    names = tuple(f"tag{i:05d}" for i in range(T))
    report["model"] = {
        "arch": opts.arch,
        "num_tags": T,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": "random (seeded)",
    }

    tmp = Path(tempfile.mkdtemp(prefix="ramtag-bench-"))
    try:
        phase(f"preparing {opts.num_images if not opts.inputs else len(opts.inputs)} images")
        paths = _images(opts, tmp / "images", report)
        transform = make_transform(pre)
        # The official-style loop first, in a process whose allocator ramtag has not tuned yet (the
        # tuning would speed this loop up too); then tune it, as `ramtag tag` does, for ramtag's run.
        ref_scores: Tensor | None = None
        if opts.reference:
            device = select_device(opts.device)
            model.to(device)
            phase("official-style reference loop")
            ref_scores, ref_s = reference_loop(model, paths, transform, device)
            report["reference"] = {
                "images_per_s": len(paths) / ref_s,
                "seconds": ref_s,
                "description": "official style: 1 image/step, fp32, per-image Python re-weighting "
                "loop, wordvec_proj after the mix, explicit attention",
            }
        thresholds, described = _thresholds(opts, T, ref_scores)
        vocab = Vocabulary(names=names, thresholds=tuple(float(t) for t in thresholds))
        tune_cpu_allocator(select_device(opts.device))

        phase("ramtag end to end")
        tagger, ours, batch_size = _end_to_end(model, vocab, pre, paths, opts, report)
        phase("stages one by one")
        report["stages"], x_exact = _stages(tagger, paths, transform, batch_size, ours, tmp / "write", report)
        if opts.decode_check:
            phase("decode options")
            exact_s = report["stages"]["decode_resize_s_per_img"]
            report["decode_options"] = _decode_options(
                tagger, paths, pre, transform, (x_exact, exact_s), thresholds, described
            )
        if ref_scores is not None:
            report["ratio"] = report["end_to_end"]["images_per_s"] / report["reference"]["images_per_s"]
            report["agreement"] = _agreement(ours, ref_scores, thresholds, described)
        else:
            report["ratio"] = None
        report["memory"] = _memory()
        report["load_average_end"] = load_average()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _save(report, opts)


# ---------------------------------------------------------------------------------------- steps


def _header(opts: BenchOptions) -> dict[str, Any]:
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "options": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "inputs"
        },
        "load_average_start": load_average(),
    }
    report["options"]["inputs"] = [str(p) for p in opts.inputs]
    return report


def _images(opts: BenchOptions, img_dir: Path, report: dict[str, Any]) -> list[Path]:
    """The benchmark's images, copied or generated into ``img_dir`` (sidecars are written beside them)."""
    img_dir.mkdir()
    if opts.inputs:
        paths = []
        for i, src in enumerate(opts.inputs):
            src = Path(src)
            if not src.is_file():
                raise UsageError(f"--inputs {src}: not a file")
            dst = img_dir / f"{i:04d}_{src.name}"
            shutil.copyfile(src, dst)
            paths.append(dst)
    else:
        paths = generate_jpegs(img_dir, opts.num_images, opts.image_size, seed=opts.seed)
    with Image.open(paths[0]) as im0:
        first_size = im0.size
    report["images"] = {
        "count": len(paths),
        "generated": not opts.inputs,
        "first_size": list(first_size),
        "mean_bytes": int(np.mean([p.stat().st_size for p in paths])),
    }
    return paths


def _end_to_end(
    model: RamPlus,
    vocab: Any,
    pre: Preprocessing,
    paths: list[Path],
    opts: BenchOptions,
    report: dict[str, Any],
) -> tuple[Tagger, Tensor, int]:
    """ramtag's real pipeline over ``paths``: (the tagger, (n, T) scores, batch size)."""
    from ..library import tag_library
    from ..options import TagOptions, WriteOptions
    from ..tagger import Tagger

    name = f"random-{opts.arch}"
    tagger = Tagger.from_model(
        model, vocab, pre, name=name, device=opts.device, precision=opts.precision, compile=opts.compile
    )
    runner = tagger.runner
    batch_size = opts.batch_size or runner.suggest_batch_size()
    tag_opts = TagOptions(
        batch_size=batch_size, workers=opts.workers, draft=opts.draft, all_scores=True, decode=opts.decode
    )
    if opts.compile:  # compile outside the timed run
        tagger.scores(torch.zeros(batch_size, 3, pre.image_size, pre.image_size))
    results: dict[str, np.ndarray] = {}

    def keep(res: Any) -> None:
        if res.ok and res.scores is not None and res.path is not None:
            results[Path(res.path).name] = np.array([res.scores[n] for n in vocab.names], dtype=np.float32)

    runner.synchronize()
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    checks_before = runner.recheck_stats.to_dict()
    summary = tag_library(
        paths, tagger, options=tag_opts, write=WriteOptions(mode="xmp"), use_state=False, on_result=keep
    )
    if summary.failed:
        raise UsageError(f"benchmark images failed: {summary.failed[:3]}")
    report["runner"] = runner.describe()
    report["precision"] = runner.precision
    report["end_to_end"] = {
        "images_per_s": len(paths) / summary.seconds,
        "seconds": summary.seconds,
        "batch_size": batch_size,
        "workers": default_workers(runner.device.type) if tag_opts.workers is None else tag_opts.workers,
        "decode_threads": default_threads(),
        "draft": opts.draft,
        "decode": tagger.decode_mode(tag_opts),
        "written": summary.written,
    }
    if runner.checked:
        after = runner.recheck_stats.to_dict()
        counters = ("images", "rechecked_images", "rechecked_pairs", "seconds")  # this run only
        report["recheck"] = {k: after[k] - checks_before[k] if k in counters else after[k] for k in after}
    ours = torch.from_numpy(np.stack([results[p.name] for p in paths]))  # (n, T)
    return tagger, ours, batch_size


def _stages(
    tagger: Tagger,
    paths: list[Path],
    transform: Callable[[Any], Tensor],
    batch_size: int,
    ours: Tensor,
    write_dir: Path,
    report: dict[str, Any],
) -> tuple[dict[str, Any], Tensor]:
    """Each stage timed on its own, in seconds per image; and the (n, 3, S, S) exactly decoded images."""
    from ..decode import decode_image
    from ..options import TagOptions
    from ..writers import make_writer

    stages: dict[str, Any] = {}
    x_exact, stages["decode_resize_s_per_img"] = time_decode(paths, lambda p: transform(decode_image(p)))
    runner = tagger.runner
    backbone = decoder = 0.0
    for i in range(0, len(paths), batch_size):
        x = x_exact[i : i + batch_size].to(runner.device)
        runner.synchronize()
        t0 = time.perf_counter()
        embeds = runner.encode(x)
        runner.synchronize()
        t1 = time.perf_counter()
        runner.decode(embeds)
        runner.synchronize()
        backbone, decoder = backbone + t1 - t0, decoder + time.perf_counter() - t1
    stages["backbone_s_per_img"] = backbone / len(paths)
    stages["reweight_decoder_s_per_img"] = decoder / len(paths)
    if "recheck" in report:
        stages["recheck_s_per_img"] = report["recheck"]["seconds"] / len(paths)
    write_dir.mkdir()
    writer = make_writer("xmp", model=tagger.name)
    decided = tagger.decide(ours, [write_dir / p.name for p in paths], options=TagOptions())
    for p in paths:
        shutil.copyfile(p, write_dir / p.name)
    t0 = time.perf_counter()
    for res in decided:
        writer.write(res)
    writer.close()
    stages["write_xmp_s_per_img"] = (time.perf_counter() - t0) / len(paths)
    return stages, x_exact


def _decode_options(
    tagger: Tagger,
    paths: list[Path],
    pre: Preprocessing,
    transform: Callable[[Any], Tensor],
    exact: tuple[Tensor, float],
    thresholds: Tensor,
    described: str,
) -> dict[str, Any]:
    """Speed and score drift of the faster decode options vs ``exact`` decoding ((n, 3, S, S) images,
    s/img), scored by the same runner."""
    from ..decode import decode_image

    x_exact, exact_s = exact
    k = min(len(paths), 8)
    exact_scores = tagger.scores(x_exact[:k])
    dec: dict[str, Any] = {"images": k, "exact_s_per_img": exact_s}
    variants: dict[str, Callable[[Path], Tensor]] = {
        "draft": lambda p: transform(decode_image(p, draft_size=pre.image_size)),
    }
    if all(p.suffix.lower() in (".jpg", ".jpeg") for p in paths[:k]):
        variants["torchvision"] = torchvision_transform(pre.image_size, pre.mean, pre.std)
    for name, load in variants.items():
        xv, sec = time_decode(paths, load)
        ag = _agreement(tagger.scores(xv[:k]), exact_scores, thresholds, described)
        dec[f"{name}_s_per_img"] = sec
        dec[f"{name}_max_abs_score_diff"] = ag["max_abs_score_diff"]
        dec[f"{name}_differing_decisions"] = ag["differing_decisions"]
        dec[f"{name}_within_tolerance"] = dec[f"{name}_max_abs_score_diff"] <= DRAFT_TOLERANCE
    dec["tolerance"] = DRAFT_TOLERANCE
    dec["recommend"] = [
        n for n in variants if dec[f"{n}_within_tolerance"] and dec[f"{n}_s_per_img"] < dec["exact_s_per_img"]
    ]
    return dec


def _memory() -> dict[str, Any]:
    return {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "gpu_peak_mb": (
            round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
        ),
    }


def _save(report: dict[str, Any], opts: BenchOptions) -> dict[str, Any]:
    out = opts.out or Path("bench-results") / (
        f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{opts.arch}-{report['runner'].split(' ')[0]}.json"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["out"] = str(out)
    return report


# ----------------------------------------------------------------------------------- decisions


def _agreement(ours: Tensor, ref: Tensor, thresholds: Tensor, described: str) -> dict[str, Any]:
    """Decisions of ``ours`` vs ``ref`` (n, T) scores at per-tag ``thresholds`` (T,)."""
    th = thresholds.to(ours.dtype)[None, :]  # (1, T)
    a, b = ours > th, ref > th
    return {
        "thresholds": described,
        "decisions": int(a.numel()),
        "differing_decisions": int((a != b).sum()),
        "selected_ours": int(a.sum()),
        "selected_reference": int(b.sum()),
        "max_abs_score_diff": float((ours - ref).abs().max()),
        "reference_min_margin": float((ref - th).abs().min()),  # closest score to its threshold
    }


def _thresholds(opts: BenchOptions, num_tags: int, ref_scores: Tensor | None) -> tuple[Tensor, str]:
    """The (T,) float64 decision thresholds of the run and how they were chosen."""
    from ..tags.vocab import read_thresholds

    if opts.thresholds is not None:
        values = read_thresholds(Path(opts.thresholds))
        if len(values) != num_tags:
            raise UsageError(
                f"--thresholds {opts.thresholds}: {len(values)} values for {num_tags} tags; "
                "give one threshold per line for every tag"
            )
        return torch.tensor(values, dtype=torch.float64), f"per tag, from {opts.thresholds}"
    if opts.threshold is not None:
        return torch.full((num_tags,), float(opts.threshold), dtype=torch.float64), f"{opts.threshold:g}"
    if ref_scores is None:
        return torch.full((num_tags,), 0.65, dtype=torch.float64), "0.65 (no reference run to take q99 from)"
    q99 = float(torch.quantile(ref_scores.flatten()[:1_000_000].double(), 0.99))
    return torch.full((num_tags,), q99, dtype=torch.float64), f"{q99:.6f} (99th percentile of the reference)"
