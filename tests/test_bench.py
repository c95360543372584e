"""ramtag.bench: the tiny-config benchmark produces a complete JSON report with a measured ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ramtag.bench import BenchOptions, format_report, generate_jpegs, reference_logits, run_benchmark
from ramtag.model.config import get_config
from ramtag.model.ram_plus import RamPlus


def test_reference_loop_matches_the_model() -> None:
    """The official-style reference (per-image loop, projection after the mix, explicit attention)
    computes the same function as RamPlus.forward."""
    torch.manual_seed(0)
    model = RamPlus(get_config("tiny")).eval()
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert (reference_logits(model, x) - model(x)).abs().max().item() < 1e-5


def test_generated_jpegs_are_real_jpegs(tmp_path: Path) -> None:
    from PIL import Image

    paths = generate_jpegs(tmp_path, 2, (500, 300), seed=1)
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (500, 300)
    assert paths[0].read_bytes() != paths[1].read_bytes()


@pytest.mark.slow
def test_tiny_benchmark_report(tmp_path: Path) -> None:
    out = tmp_path / "res" / "bench.json"
    report = run_benchmark(
        BenchOptions(arch="tiny", num_images=3, image_size=(800, 600), batch_size=2, workers=0, out=out)
    )
    saved = json.loads(out.read_text())
    for key in (
        "machine",
        "model",
        "images",
        "runner",
        "end_to_end",
        "stages",
        "reference",
        "ratio",
        "agreement",
        "decode_options",
        "memory",
        "options",
    ):
        assert key in saved, key
    for key in ("cpu", "cpu_cores", "torch", "gpu"):
        assert key in saved["machine"]
    for key in (
        "decode_resize_s_per_img",
        "backbone_s_per_img",
        "reweight_decoder_s_per_img",
        "write_xmp_s_per_img",
    ):
        assert saved["stages"][key] > 0
    assert saved["images"]["count"] == 3 and saved["images"]["first_size"] == [800, 600]
    assert saved["end_to_end"]["images_per_s"] > 0 and saved["reference"]["images_per_s"] > 0
    ratio = saved["end_to_end"]["images_per_s"] / saved["reference"]["images_per_s"]
    assert saved["ratio"] == pytest.approx(ratio)
    ag = saved["agreement"]
    assert ag["decisions"] == 3 * 40 and "99th percentile" in ag["thresholds"]
    assert ag["selected_reference"] > 0  # the default threshold selects something: not a vacuous check
    # the default precision decides the fp32 tags: fp32 itself, or bf16-checked on CPUs with native bf16
    assert saved["precision"] in ("fp32", "bf16-checked")
    assert ag["differing_decisions"] == 0
    if saved["precision"] == "fp32":
        assert ag["max_abs_score_diff"] < 1e-5
    else:
        assert saved["recheck"]["images"] == 3 and saved["stages"]["recheck_s_per_img"] >= 0
    dec = saved["decode_options"]
    assert {"draft_s_per_img", "draft_max_abs_score_diff", "torchvision_s_per_img", "recommend"} <= set(dec)
    assert saved["memory"]["peak_rss_mb"] > 0
    text = format_report(report)
    assert "images/s" in text and "official-style loop" in text and str(out) in text


@pytest.mark.slow
def test_benchmark_with_per_tag_thresholds_and_bf16_checked(tmp_path: Path) -> None:
    """Per-tag thresholds from a file, bf16-checked forced: same decisions as the fp32 reference, and the
    report says what was re-checked."""
    from ramtag.errors import UsageError

    th = tmp_path / "thresholds.txt"
    th.write_text("\n".join(["0.45", "0.5", "0.55", "0.6"] * 10) + "\n")
    out = tmp_path / "bench.json"
    run_benchmark(
        BenchOptions(
            arch="tiny",
            num_images=4,
            image_size=(384, 384),
            batch_size=2,
            workers=0,
            out=out,
            precision="bf16-checked",
            thresholds=th,
            decode_check=False,
        )
    )
    saved = json.loads(out.read_text())
    assert saved["precision"] == "bf16-checked" and "re-check" in saved["runner"]
    assert saved["agreement"]["thresholds"].startswith("per tag, from")
    assert saved["agreement"]["differing_decisions"] == 0
    rc = saved["recheck"]
    assert rc["images"] == 4 and 0 <= rc["rechecked_images"] <= 4 and rc["margin"] > 0
    th.write_text("0.5\n" * 7)
    with pytest.raises(UsageError, match="7 values for 40 tags"):
        run_benchmark(
            BenchOptions(
                arch="tiny",
                num_images=1,
                image_size=(384, 384),
                workers=0,
                out=out,
                thresholds=th,
                decode_check=False,
            )
        )


def test_benchmarks_script_is_the_cli_command() -> None:
    """benchmarks/bench.py forwards to `ramtag bench`: the same options, no second parser to drift."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    for option in ("--thresholds", "--precision", "--inputs", "--no-reference"):
        assert option in out.stdout, option
    assert "bf16-che" in out.stdout  # the precision choices come from the CLI (wrapped in the table)
