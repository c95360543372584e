"""benchmarks/gpu_bench.py --smoke: the one-shot GPU benchmark script runs end to end on a CPU (tiny
model, 8 tiny JPEGs) without open_clip, platformdirs or exiftool, and leaves a complete JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_smoke(tmp_path: Path) -> None:
    blocker = (
        "import sys, runpy\n"
        "for m in ('open_clip', 'exiftool'): sys.modules[m] = None\n"  # platformdirs: the catalog needs it
        f"sys.argv = ['gpu_bench.py', '--smoke', '--device', 'cpu', '--out-dir', {str(tmp_path / 'res')!r}]\n"
        f"runpy.run_path({str(REPO / 'benchmarks' / 'gpu_bench.py')!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", blocker], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = (tmp_path / "res").glob("*-cpu-gpu-smoke.json")
    report = json.loads(path.read_text())
    assert (tmp_path / "out" / path.name).read_text() == path.read_text()  # the $OUT copy
    assert report["errors"] == {}, report["errors"]
    entries = report["entries"]
    for name in (
        "checkpoint",
        "images",
        "model_only_bf16_b2",
        "model_only_bf16_b4",
        "e2e_384_bf16_b4_decode_gpu",
        "decode_only_12mp_gpu",
        "decode_only_12mp_cpu_draft_w1",
        "agreement_fp32_vs_bf16",
        "decode_drift_gpu_vs_cpu_384",
        "e2e_384_defaults",
    ):
        assert name in entries or any(k.startswith(name.rsplit("_w", 1)[0]) for k in entries), name
    e2e = entries["e2e_384_bf16_b4_decode_gpu"]
    assert e2e["images"] == 8 and e2e["failed"] == 0 and e2e["images_per_s"] > 0
    assert entries["checkpoint"]["num_tags"] == 40
    assert entries["decode_drift_gpu_vs_cpu_384"]["score_max_abs_diff"] < 0.02
    assert "summary (images/s)" in proc.stdout


def test_gpu_bench_budget_skips_and_records(tmp_path: Path) -> None:
    """With no time budget left every measurement is skipped, recorded, and the JSON still written."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAMTAG_GPU_BUDGET": "0"}
    env.pop("OUT", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_bench.py"),
            "--smoke",
            "--device",
            "cpu",
            "--out-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (path,) = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "model_only_bf16_b2" in report["skipped"] and "e2e_384_defaults" in report["skipped"]
    assert "checkpoint" in report["entries"]
