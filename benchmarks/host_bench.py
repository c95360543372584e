"""The host's ceiling for a GPU run: images/s that ``tag_library`` sustains after the model, with the
model and the decoding taken away.

A GPU can hand over scores faster than one Python process can decide tags, record every score in the
catalog and write sidecars or JSON lines; this measures that side alone, on any machine, so that the
end-to-end figure of ``benchmarks/gpu.sh`` can be read against it. A stand-in tagger yields, for each
batch of 64 files, scores drawn like a trained tagger's (~20 of 4,585 tags at or above 0.3, the rest
tiny) through the real ``Tagger.decide``; everything after it is ramtag's own code path (the writer
thread, the catalog, the XMP writer with its helper process, JSON Lines).

    python benchmarks/host_bench.py                       # 4,000 files, every output mode
    python benchmarks/host_bench.py --files 10000 --out benchmarks/results/host.json

Needs torch (the decide step takes a tensor, as the runner gives it); no model, no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_bench import tiny_jpeg, vocabulary

from ramtag.results import ImageTags
from ramtag.tagger import Tagger


class ScoresOnlyTagger(Tagger):
    """A :class:`Tagger` whose scores are drawn, not computed: ``decide`` and everything after it is
    the real code."""

    def __init__(self, n_tags: int, seed: int = 0) -> None:  # (no model: Tagger.__init__ not called)
        import torch

        self.vocabulary = vocabulary(n_tags)
        self.runner = SimpleNamespace(
            precision="fp32", checked=False, device=torch.device("cpu"), describe=lambda: "drawn scores"
        )
        self.label_embed = torch.zeros(len(self.vocabulary), 1)
        self.preprocessing = SimpleNamespace(image_size=384)
        self.name, self.weights_sha, self.notes = "drawn", "", []
        self._rng = np.random.default_rng(seed)

    def decode_mode(self, options: Any) -> str:
        return "cpu"

    def _draw(self, n: int) -> np.ndarray:
        t = len(self.vocabulary)
        s = 1.0 / (1.0 + np.exp(-self._rng.normal(-7.0, 2.0, size=(n, t))))
        for row in s:
            row[self._rng.choice(t, size=20, replace=False)] = self._rng.uniform(0.3, 1.0, size=20)
        return s.astype(np.float32)

    def tag(self, items: Any, options: Any = None, **kwargs: Any) -> Iterator[ImageTags]:
        import torch

        files = list(items)
        pool = torch.from_numpy(self._draw(256))  # drawn once: drawing is not what is measured
        for start in range(0, len(files), 64):
            paths = files[start : start + 64]
            scores = pool[torch.randint(0, 256, (len(paths),))]
            results = self.decide(scores, paths, range(start, start + len(paths)), options)
            for res in results:  # the decoder's fstat, as a real batch carries it
                res.stat = os.stat(res.path)
            yield from results


def run_mode(lib: Path, mode: str, catalog: bool, n_tags: int) -> dict[str, Any]:
    from ramtag.library import tag_library
    from ramtag.options import TagOptions, WriteOptions

    json_path = lib.parent / "tags.jsonl" if mode == "json" else None
    write = WriteOptions(mode=mode, json_path=json_path)
    tagger = ScoresOnlyTagger(n_tags)
    t0 = time.perf_counter()
    summary = tag_library([lib], tagger, options=TagOptions(), write=write, use_catalog=catalog)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    assert not summary.failed, summary.failed[:3]
    return {
        "mode": mode,
        "catalog": catalog,
        "images": summary.tagged,
        "seconds": round(wall, 2),
        "images_per_s": round(summary.tagged / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--tags", type=int, default=4585)
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    ap.add_argument("--only", default="", help="one case, e.g. json+catalog or xmp (no catalog)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ramtag-host-"))
    os.environ["RAMTAG_HOME"] = str(tmp / "home")  # a fresh catalog for each mode (below)
    rng = np.random.default_rng(1)
    jpeg = tiny_jpeg(rng)
    results = []
    for mode, catalog in (("xmp", True), ("json", True), ("xmp", False), ("json", False)):
        if args.only and args.only != mode + ("+catalog" if catalog else ""):
            continue
        lib = tmp / f"lib-{mode}-{catalog}" / "photos"
        for i in range(args.files):
            folder = lib / f"{i // 500:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img{i:05d}.jpg").write_bytes(jpeg)
        os.environ["RAMTAG_HOME"] = str(tmp / f"home-{mode}-{catalog}")
        os.sync()
        results.append(run_mode(lib, mode, catalog, args.tags))
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(lib.parent, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "what": "tag_library after the model: drawn scores -> decide -> catalog -> outputs (no decode/model)",
        "files": args.files,
        "tags": args.tags,
        "results": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
