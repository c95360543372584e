"""Run ramtag's speed benchmark (the same as `ramtag bench`); results go to bench-results/*.json.

    python benchmarks/bench.py                         # Swin-L, 16 generated 4000x3000 JPEGs, batch 8
    python benchmarks/bench.py --arch tiny --images 3  # a quick check
    python benchmarks/bench.py --size 384              # 384x384 inputs (no resize cost)
    python benchmarks/bench.py --inputs ../shared/photos/*.jpg --precision bf16
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ramtag.bench import BenchOptions, format_report, run_benchmark


def parse_size(text: str) -> tuple[int, int]:
    if "x" in text:
        w, h = text.lower().split("x")
        return int(w), int(h)
    return int(text), int(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="swin_l_384", help="swin_l_384 | swin_b_384 | tiny (random weights)")
    p.add_argument("--images", type=int, default=16, help="number of JPEGs to generate")
    p.add_argument("--size", type=parse_size, default=(4000, 3000), help="WxH of generated JPEGs, or a side")
    p.add_argument("--inputs", type=Path, nargs="*", default=(), help="use these images instead (copied)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--draft", action="store_true", help="JPEG draft decoding in the end-to-end run")
    p.add_argument("--no-reference", action="store_true", help="skip the official-style loop")
    p.add_argument("--no-decode-check", action="store_true", help="skip the decode options comparison")
    p.add_argument("--threshold", type=float, default=0.65)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench-results/<time>-...json)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = BenchOptions(
        arch=a.arch, num_images=a.images, image_size=a.size, inputs=a.inputs, batch_size=a.batch_size,
        workers=a.workers, device=a.device, precision=a.precision, compile=a.compile, draft=a.draft,
        reference=not a.no_reference, decode_check=not a.no_decode_check, threshold=a.threshold, out=a.out,
        seed=a.seed,
    )
    print(format_report(run_benchmark(opts)))


if __name__ == "__main__":
    main()
