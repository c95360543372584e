"""Where the GPU time of a full-size RAM++ forward pass goes, and which variants shorten it.

Run on a CUDA machine after ``gpu.sh`` (issue 14's tuning step): random Swin-L weights (no download),
model only (inputs already on the GPU), batch 128 by default. Each entry is timed on its own, with a
time budget; the JSON is rewritten after every entry (``$OUT`` gets a copy when set).

    python benchmarks/gpu_variants.py [--batch 128] [--budget 240]

Entries: backbone vs decoder split (ramtag's bf16 autocast Runner), the top CUDA kernels of one
forward pass, a pure-bf16 copy of the model (every parameter bf16, no autocast: norms and residuals
in bf16 halve the memory traffic of the (B, 4585, 768) decoder activations) eager and compiled, and how
far its scores are from the autocast ones.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--budget", type=float, default=240.0)
    ap.add_argument("--arch", default="swin_l_384")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)

    from ramtag.device import select_device
    from ramtag.model.config import get_config
    from ramtag.model.ram_plus import RamPlus
    from ramtag.runner import Runner

    device = select_device("auto")
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    out = REPO / "benchmarks" / "results" / f"{_dt.date.today().isoformat()}-{slug}-gpu-variants.json"
    data: dict[str, Any] = {"device": name, "torch": torch.__version__, "batch": args.batch, "entries": {}}

    def save() -> None:
        text = json.dumps(data, indent=2)
        out.write_text(text)
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / out.name).write_text(text)

    def measure(key: str, fn: Callable[[], dict[str, Any]], need: float = 10) -> None:
        left = args.budget - (time.perf_counter() - T0)
        if left < need:
            log(f"SKIP {key}: budget")
            data["entries"][key] = {"skipped": "budget"}
            save()
            return
        log(f"start {key}")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        try:
            res = fn()
        except Exception as err:  # record and go on
            res = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        res["wall_s"] = round(time.perf_counter() - t, 2)
        if cuda:
            res["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        data["entries"][key] = res
        log(f"done  {key}: { {k: v for k, v in res.items() if k != 'traceback'} }")
        save()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def timed(fn: Callable[[], Any], steps: int) -> float:
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - t) / steps

    config = get_config(args.arch)
    torch.manual_seed(0)
    with torch.device(device):
        model = RamPlus(config)
    model = model.float().eval()
    label_embed = model.builtin_label_embed().detach()
    runner = Runner(model, label_embed, device=device, precision="bf16")
    B, S = args.batch, config.swin.img_size
    x = torch.randn(B, 3, S, S, device=device)

    def split() -> dict[str, Any]:
        emb = runner.encode(x)
        enc = timed(lambda: runner.encode(x), args.steps)
        dec = timed(lambda: runner.decode(emb), args.steps)
        full = timed(lambda: runner.logits(x), args.steps)
        return {
            "encode_ms_per_image": round(enc * 1000 / B, 4),
            "decode_ms_per_image": round(dec * 1000 / B, 4),
            "full_images_per_s": round(B / full, 1),
            "encode_images_per_s": round(B / enc, 1),
            "decode_images_per_s": round(B / dec, 1),
        }

    measure("autocast_split", split)

    def profile() -> dict[str, Any]:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        runner.logits(x)
        sync()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with prof(activities=acts) as p:
            runner.logits(x)
            sync()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        table = p.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60)
        print(table, flush=True)
        return {"table": table}

    measure("autocast_profile", profile, need=15)

    pure_holder: dict[str, Any] = {}

    def pure_model() -> Any:
        if "m" not in pure_holder:
            m = copy.deepcopy(runner.model).to(torch.bfloat16).eval()
            pure_holder["m"] = m
            pure_holder["emb"] = runner.label_embed.to(torch.bfloat16)
            pure_holder["proj"] = runner.projected.to(torch.bfloat16)
        return pure_holder["m"]

    def pure_forward(xb: torch.Tensor) -> torch.Tensor:
        m = pure_model()
        with torch.inference_mode():
            emb = m.encode_image(xb)
            return m.tag_logits(emb, pure_holder["emb"], projected=pure_holder["proj"])

    xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def pure_eager() -> dict[str, Any]:
        m = pure_model()
        m.to(memory_format=torch.channels_last)
        dt = timed(lambda: pure_forward(xb), args.steps)
        ref = runner.logits(x).float()
        got = pure_forward(xb).float().cpu()
        diff = (torch.sigmoid(ref) - torch.sigmoid(got)).abs()
        q = torch.quantile(torch.sigmoid(ref).flatten()[:1_000_000], 0.99).item()
        flips = int(((torch.sigmoid(ref) > q) != (torch.sigmoid(got) > q)).sum())
        return {
            "images_per_s": round(B / dt, 1),
            "score_max_abs_diff_vs_autocast": round(diff.max().item(), 5),
            "score_mean_abs_diff_vs_autocast": round(diff.mean().item(), 6),
            "flips_at_q99_vs_autocast": flips,
            "decisions": ref.numel(),
        }

    measure("pure_bf16_eager", pure_eager)

    def compiled(fn: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, mode: str | None):
        def run() -> dict[str, Any]:
            c = torch.compile(fn, dynamic=False, mode=mode)
            t = time.perf_counter()
            with torch.inference_mode():
                c(inp)
            sync()
            first = time.perf_counter() - t
            with torch.inference_mode():
                dt = timed(lambda: c(inp), args.steps)
            return {"images_per_s": round(B / dt, 1), "compile_s": round(first, 1), "mode": mode or "default"}

        return run

    measure("pure_bf16_compile", compiled(pure_forward, xb, None), need=70)

    def autocast_fwd(xin: torch.Tensor) -> torch.Tensor:
        with runner.autocast_context():
            return runner._forward(xin)

    xc = x.contiguous(memory_format=torch.channels_last)
    measure(
        "autocast_compile_max_autotune_no_cudagraphs",
        compiled(autocast_fwd, xc, "max-autotune-no-cudagraphs"),
        need=120,
    )
    measure(
        "pure_bf16_compile_max_autotune_no_cudagraphs",
        compiled(pure_forward, xb, "max-autotune-no-cudagraphs"),
        need=120,
    )
    log(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
