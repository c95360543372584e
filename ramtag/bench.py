"""``ramtag bench``: how fast ramtag tags, measured side by side with an official-style loop.

One run, on the same images, with a model of random weights of the chosen architecture:

1. **end to end**: ramtag's real pipeline (``api.tag_library``: DataLoader decode workers -> batched
   ``Runner`` -> decide -> XMP writer thread) over copies of the images in a temp folder;
2. **stages**, each timed on its own: decode + resize (exact Pillow, JPEG draft mode, and
   ``torchvision.io.decode_jpeg``), backbone, re-weighting + decoder, XMP writing;
3. **reference**: the same images through a loop written the way the official inference script
   works: one image at a time, fp32, decode + transform in the main process, a per-image Python loop
   that mixes the 51 description embeddings in 512-d, ``wordvec_proj`` applied after the mix (per
   image), and an explicit-softmax decoder. It is written from the parity README's description.

The report carries the ratio (end-to-end images/s over reference images/s), whether the tag
decisions agree (number of differing (image, tag) decisions, max |score difference|), the decode
options' speed and score drift, peak memory, machine info; it is saved as JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from .batch import default_threads, default_workers
from .errors import UsageError

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


# ------------------------------------------------------------------------------------ machine info


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, library versions and GPU name of this machine."""
    import timm
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(_total_ram() / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def _total_ram() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ----------------------------------------------------------------------------------------- images


def generate_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Write ``n`` photo-like JPEGs of ``size`` (W, H): smooth colour fields + edges + sensor noise,
    quality 90 with 4:2:0 chroma (a camera's usual output, a few MB at 12 MP)."""
    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(6 + i % 5, 8 + i % 7, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        detail = rng.integers(0, 256, size=(max(h // 64, 2), max(w // 64, 2), 3), dtype=np.uint8)
        edges = Image.fromarray(detail).resize((w, h), Image.Resampling.NEAREST)
        img = Image.blend(img, edges, 0.25)
        pixels = np.asarray(img, dtype=np.int16)
        pixels = pixels + rng.normal(0, 4, size=pixels.shape).astype(np.int16)
        path = folder / f"bench_{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90, subsampling=2)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------- official-style reference


def reference_logits(model: Any, image: Tensor) -> Tensor:
    """One image the way the official inference code computes it: (1, 3, S, S) -> (1, T) logits, fp32.

    Mixes the D description embeddings of every tag in E space with a per-image Python loop,
    then applies ``wordvec_proj`` (+ ReLU) to the mixed (1, T, E) queries, then runs the decoder with
    explicit softmax attention. Uses the model's parameters, none of ramtag's fast paths.
    """
    cfg = model.config
    T, D, E = cfg.num_tags, cfg.descriptions_per_tag, cfg.embed_dim
    image_embeds = model.image_proj(model.visual_encoder(image))  # (1, 1+N, E)
    image_cls = F.normalize(image_embeds[:, 0, :], dim=-1)  # (1, E)
    label_embed = model.label_embed  # (T * D, E)
    sims = (image_cls @ label_embed.t()).view(-1, T, D)  # (1, T, D)
    weights = torch.softmax(model.reweight_scale.exp() * sims, dim=-1)  # (1, T, D)
    mixed = torch.empty(image.shape[0], T, E, device=image.device)
    for i in range(image.shape[0]):  # the official per-image loop over the batch
        mixed[i] = (weights[i].unsqueeze(-1) * label_embed.view(T, D, E)).sum(dim=1)  # (T, E)
    h = F.relu(model.wordvec_proj(mixed))  # (1, T, H): projected after mixing
    for layer in model.tagging_head.layers:
        att = layer.cross_attn
        B, Tq, H = h.shape
        nh = att.num_heads
        hd = H // nh
        q = att.query(h).view(B, Tq, nh, hd).transpose(1, 2)  # (1, nh, T, hd)
        k = att.key(image_embeds).view(B, -1, nh, hd).transpose(1, 2)  # (1, nh, L, hd)
        v = att.value(image_embeds).view(B, -1, nh, hd).transpose(1, 2)  # (1, nh, L, hd)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)  # (1, nh, T, L)
        ctx = (probs @ v).transpose(1, 2).reshape(B, Tq, H)  # (1, T, H)
        h = layer.norm1(att.out(ctx) + h)
        h = layer.norm2(layer.ffn.fc2(F.gelu(layer.ffn.fc1(h))) + h)
    return model.fc(h).squeeze(-1)  # (1, T)


def _reference_loop(
    model: Any, paths: Sequence[Path], transform: Callable[[Image.Image], Tensor], device: torch.device
) -> tuple[Tensor, float]:
    """Official-style loop over ``paths`` (model already on ``device``): ((n, T) CPU scores, seconds)."""
    model.set_fused_attention(False)  # explicit softmax(q k^T + bias) window attention
    scores = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            with Image.open(p) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
            x = transform(rgb).unsqueeze(0).to(device)  # (1, 3, S, S)
            scores.append(torch.sigmoid(reference_logits(model, x))[0].cpu())
    return torch.stack(scores), time.perf_counter() - t0


# ------------------------------------------------------------------------------------ decode options


def _torchvision_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Path], Tensor]:
    """JPEG bytes -> libjpeg-turbo via torchvision.io.decode_jpeg -> antialiased bilinear resize -> normalise.

    (No EXIF orientation: decode_jpeg ignores it; fine for the generated images.)"""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs (in favour of torchcodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)

    def load(path: Path) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        img = TF.resize(img, [image_size, image_size], antialias=True)  # bilinear, squash
        return (img.float() / 255.0 - m) / s  # (3, S, S) float32

    return load


def _time_decode(paths: Sequence[Path], load: Callable[[Path], Tensor]) -> tuple[Tensor, float]:
    t0 = time.perf_counter()
    out = torch.stack([load(p) for p in paths])
    return out, (time.perf_counter() - t0) / len(paths)


# -------------------------------------------------------------------------------------------- run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    from .tags.vocab import read_thresholds

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


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described in the module doc; returns the report (also saved as JSON)."""
    from .api import Tagger, TagOptions, WriteOptions, tag_library
    from .decode import decode_image
    from .model.config import get_config
    from .model.ram_plus import RamPlus
    from .preprocess import make_transform
    from .runner import Runner, select_device
    from .tags.vocab import Vocabulary
    from .weights_format import OFFICIAL_PREPROCESSING, LoadedWeights
    from .writers import make_writer

    opts = options
    if opts.num_images < 1 and not opts.inputs:
        raise UsageError("--images must be at least 1 (or pass --inputs)")
    config = get_config(opts.arch)
    pre = OFFICIAL_PREPROCESSING
    if config.swin.img_size != pre.image_size:
        raise UsageError(
            f"--arch {opts.arch}: input size {config.swin.img_size} has no official preprocessing"
        )
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "options": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "inputs"
        },
        "load_average_start": _load(),
    }
    report["options"]["inputs"] = [str(p) for p in opts.inputs]

    torch.manual_seed(opts.seed)
    model = RamPlus(config).eval()
    T = config.num_tags
    names = tuple(f"tag{i:05d}" for i in range(T))
    label_embed = model.builtin_label_embed().detach()  # (T, D, E)
    report["model"] = {
        "arch": opts.arch,
        "num_tags": T,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": "random (seeded)",
    }

    tmp = Path(tempfile.mkdtemp(prefix="ramtag-bench-"))
    try:
        # ---- images (copies in a temp folder: sidecars are written beside them)
        img_dir = tmp / "images"
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
        transform = make_transform(pre)

        # ---- official-style reference loop first: same images, fp32, in a process ramtag has not
        # touched yet (the Runner below tunes the CPU allocator, which would speed this loop up too)
        ref_scores: Tensor | None = None
        if opts.reference:
            device = select_device(opts.device)
            model.to(device)
            ref_scores, ref_s = _reference_loop(model, paths, transform, device)
            report["reference"] = {
                "images_per_s": len(paths) / ref_s,
                "seconds": ref_s,
                "description": "official style: 1 image/step, fp32, per-image Python re-weighting "
                "loop, wordvec_proj after the mix, explicit attention",
            }
        thresholds, described = _thresholds(opts, T, ref_scores)
        vocab = Vocabulary(names=names, thresholds=tuple(float(t) for t in thresholds))

        # ---- end to end: the real pipeline
        runner = Runner(
            model, label_embed, device=opts.device, precision=opts.precision, compile=opts.compile
        )
        batch_size = opts.batch_size or runner.suggest_batch_size()
        loaded = LoadedWeights(
            config=config,
            state_dict={},
            vocabulary=vocab,
            preprocessing=pre,
            metadata={"name": f"random-{opts.arch}"},
        )
        tagger = Tagger(
            loaded, vocabulary=vocab, label_embed=label_embed, runner=runner, name=f"random-{opts.arch}"
        )
        tag_opts = TagOptions(batch_size=batch_size, workers=opts.workers, draft=opts.draft, all_scores=True,
                              decode=opts.decode)
        if opts.compile:  # compile outside the timed run
            tagger.scores(torch.zeros(batch_size, 3, pre.image_size, pre.image_size))
        results: dict[str, np.ndarray] = {}

        def keep(res: Any) -> None:
            if res.ok and res.scores is not None and res.path is not None:
                results[Path(res.path).name] = np.array([res.scores[n] for n in names], dtype=np.float32)

        _sync(runner.device)
        if runner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        checks_before = runner.recheck_stats.to_dict()
        summary = tag_library(
            paths, tagger, options=tag_opts, write=WriteOptions(mode="xmp"), use_state=False, on_result=keep
        )
        if summary.failed:
            raise UsageError(f"benchmark images failed: {summary.failed[:3]}")
        e2e_s = summary.seconds
        report["runner"] = runner.describe()
        report["precision"] = runner.precision
        report["end_to_end"] = {
            "images_per_s": len(paths) / e2e_s,
            "seconds": e2e_s,
            "batch_size": batch_size,
            "workers": default_workers(runner.device.type) if tag_opts.workers is None else tag_opts.workers,
            "decode_threads": default_threads(),
            "draft": opts.draft,
            "decode": tagger._decode(tag_opts),
            "written": summary.written,
        }
        if runner.checked:
            after = runner.recheck_stats.to_dict()
            counters = ("images", "rechecked_images", "rechecked_pairs", "seconds")  # this run only
            report["recheck"] = {k: after[k] - checks_before[k] if k in counters else after[k] for k in after}
        ours = torch.from_numpy(np.stack([results[p.name] for p in paths]))  # (n, T)

        # ---- stages, each on its own
        stages: dict[str, Any] = {}
        x_exact, stages["decode_resize_s_per_img"] = _time_decode(paths, lambda p: transform(decode_image(p)))
        bb, tl = 0.0, 0.0
        fast = runner.fast_model
        with torch.inference_mode(), runner.autocast_context():
            for i in range(0, len(paths), batch_size):
                x = x_exact[i : i + batch_size].to(runner.device)
                if runner.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                _sync(runner.device)
                t0 = time.perf_counter()
                emb = fast.encode_image(x)
                _sync(runner.device)
                t1 = time.perf_counter()
                fast.tag_logits(emb, runner.label_embed, projected=runner.projected)
                _sync(runner.device)
                bb, tl = bb + t1 - t0, tl + time.perf_counter() - t1
        stages["backbone_s_per_img"] = bb / len(paths)
        stages["reweight_decoder_s_per_img"] = tl / len(paths)
        if "recheck" in report:
            stages["recheck_s_per_img"] = report["recheck"]["seconds"] / len(paths)
        write_dir = tmp / "write"
        write_dir.mkdir()
        writer = make_writer("xmp", model=f"random-{opts.arch}")
        decided = tagger._results(
            ours, [write_dir / p.name for p in paths], list(range(len(paths))), TagOptions()
        )
        for p in paths:
            shutil.copyfile(p, write_dir / p.name)
        t0 = time.perf_counter()
        for res in decided:
            writer.write(res)
        writer.close()
        stages["write_xmp_s_per_img"] = (time.perf_counter() - t0) / len(paths)
        report["stages"] = stages

        # ---- decode options: speed and score drift vs exact decoding (same runner)
        if opts.decode_check:
            k = min(len(paths), 8)
            exact_scores = tagger.scores(x_exact[:k])
            dec: dict[str, Any] = {"images": k, "exact_s_per_img": stages["decode_resize_s_per_img"]}
            variants: dict[str, Callable[[Path], Tensor]] = {
                "draft": lambda p: transform(decode_image(p, draft_size=pre.image_size)),
            }
            if all(p.suffix.lower() in (".jpg", ".jpeg") for p in paths[:k]):
                variants["torchvision"] = _torchvision_transform(pre.image_size, pre.mean, pre.std)
            for name, load in variants.items():
                xv, sec = _time_decode(paths, load)
                ag = _agreement(tagger.scores(xv[:k]), exact_scores, thresholds, described)
                dec[f"{name}_s_per_img"] = sec
                dec[f"{name}_max_abs_score_diff"] = ag["max_abs_score_diff"]
                dec[f"{name}_differing_decisions"] = ag["differing_decisions"]
                dec[f"{name}_within_tolerance"] = dec[f"{name}_max_abs_score_diff"] <= DRAFT_TOLERANCE
            dec["tolerance"] = DRAFT_TOLERANCE
            dec["recommend"] = [
                n
                for n in variants
                if dec[f"{n}_within_tolerance"] and dec[f"{n}_s_per_img"] < dec["exact_s_per_img"]
            ]
            report["decode_options"] = dec

        if ref_scores is not None:
            report["ratio"] = report["end_to_end"]["images_per_s"] / report["reference"]["images_per_s"]
            report["agreement"] = _agreement(ours, ref_scores, thresholds, described)
        else:
            report["ratio"] = None

        report["memory"] = {
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "gpu_peak_mb": (
                round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
            ),
        }
        report["load_average_end"] = _load()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = opts.out or Path("bench-results") / (
        f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{opts.arch}-{report['runner'].split(' ')[0]}.json"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["out"] = str(out)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines for the CLI."""
    e2e = report["end_to_end"]
    st = report["stages"]
    lines = [
        f"{report['model']['arch']} on {report['runner']}; {report['images']['count']} images "
        f"{report['images']['first_size'][0]}x{report['images']['first_size'][1]}, batch {e2e['batch_size']}",
        f"end to end: {e2e['images_per_s']:.3f} images/s",
        f"stages (s/img): decode+resize {st['decode_resize_s_per_img']:.4f}, "
        f"backbone {st['backbone_s_per_img']:.4f}, "
        f"re-weighting+decoder {st['reweight_decoder_s_per_img']:.4f}, "
        f"XMP write {st['write_xmp_s_per_img']:.4f}",
    ]
    if report.get("recheck"):
        rc = report["recheck"]
        lines.append(
            f"fp32 re-check: {rc['rechecked_images']} of {rc['images']} images, {rc['rechecked_pairs']} "
            f"(image, tag) pairs within {rc['margin']:g} logit of a threshold "
            f"({st.get('recheck_s_per_img', 0.0):.4f} s/img; largest bf16 error {rc['max_error']:.4f} logit)"
        )
    if report.get("reference"):
        ag = report["agreement"]
        lines.append(
            f"official-style loop: {report['reference']['images_per_s']:.3f} images/s; "
            f"ramtag is {report['ratio']:.2f}x faster"
        )
        lines.append(
            f"decisions: {ag['differing_decisions']} of {ag['decisions']} differ "
            f"(max |score diff| {ag['max_abs_score_diff']:.2e}; threshold {ag['thresholds']}; "
            f"{ag['selected_reference']} selected by the reference)"
        )
    if report.get("decode_options"):
        d = report["decode_options"]
        parts = [f"exact {d['exact_s_per_img']:.4f}"]
        for n in ("draft", "torchvision"):
            if f"{n}_s_per_img" in d:
                parts.append(
                    f"{n} {d[f'{n}_s_per_img']:.4f} (max |score diff| {d[f'{n}_max_abs_score_diff']:.1e})"
                )
        lines.append(
            "decode s/img: " + ", ".join(parts) + f"; recommended: {', '.join(d['recommend']) or 'exact'}"
        )
    m = report["memory"]
    lines.append(
        f"peak RSS {m['peak_rss_mb']:.0f} MB"
        + (f", GPU {m['gpu_peak_mb']:.0f} MB" if m["gpu_peak_mb"] else "")
    )
    lines.append(f"saved {report['out']}")
    return "\n".join(lines)


__all__ = [
    "BenchOptions",
    "format_report",
    "generate_jpegs",
    "machine_info",
    "reference_logits",
    "run_benchmark",
]
