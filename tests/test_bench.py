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
    for key in ("machine", "model", "images", "runner", "end_to_end", "stages", "reference", "ratio",
                "agreement", "decode_options", "memory", "options"):
        assert key in saved, key
    for key in ("cpu", "cpu_cores", "torch", "gpu"):
        assert key in saved["machine"]
    for key in ("decode_resize_s_per_img", "backbone_s_per_img", "reweight_decoder_s_per_img",
                "write_xmp_s_per_img"):
        assert saved["stages"][key] > 0
    assert saved["images"]["count"] == 3 and saved["images"]["first_size"] == [800, 600]
    assert saved["end_to_end"]["images_per_s"] > 0 and saved["reference"]["images_per_s"] > 0
    ratio = saved["end_to_end"]["images_per_s"] / saved["reference"]["images_per_s"]
    assert saved["ratio"] == pytest.approx(ratio)
    ag = saved["agreement"]
    assert ag["decisions"] == 3 * 40
    assert ag["differing_decisions"] == 0 and ag["max_abs_score_diff"] < 1e-5  # fp32 on CPU by default
    q99 = saved["agreement_q99"]
    assert q99["selected_reference"] > 0 and q99["differing_decisions"] == 0
    dec = saved["decode_options"]
    assert {"draft_s_per_img", "draft_max_abs_score_diff", "torchvision_s_per_img", "recommend"} <= set(dec)
    assert saved["memory"]["peak_rss_mb"] > 0
    text = format_report(report)
    assert "images/s" in text and "official-style loop" in text and str(out) in text
