"""The CUDA paths end to end, on a real GPU (marker ``gpu``; skipped without CUDA).

Run them with ``pytest -m gpu``. Tiny random models: what is checked is the plumbing (nvJPEG decode with
its CPU fall-backs, pinned async copies, bf16 autocast, torch.compile's padded last batch), against the
CPU/fp32 path with tolerances, never bit-identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ramtag.api import TagOptions, WriteOptions, tag_library
from ramtag.model.config import get_config
from ramtag.model.ram_plus import RamPlus
from ramtag.tagger import Tagger
from ramtag.tags.vocab import Vocabulary
from ramtag.weights_format import OFFICIAL_PREPROCESSING

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def _model() -> RamPlus:
    torch.manual_seed(0)
    return RamPlus(get_config("tiny")).eval()


def _library(folder: Path) -> list[Path]:
    """JPEGs nvJPEG reads (one rotated by EXIF), plus a PNG and a CMYK JPEG that take the CPU path."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((400 + 8 * i, 300), Image.Resampling.BICUBIC)
        exif = Image.Exif()
        if i == 3:
            exif[0x0112] = 6
        path = folder / f"img{i:02d}.jpg"
        img.save(path, quality=92, exif=exif.tobytes())
        paths.append(path)
    Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)).save(folder / "flat.png")
    Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)).convert("CMYK").save(
        folder / "cmyk.jpg"
    )
    return sorted(folder.iterdir())


def _scores(tagger: Tagger, folder: Path, **opts: object) -> dict[str, np.ndarray]:
    got: dict[str, np.ndarray] = {}

    def keep(result: object) -> None:
        assert getattr(result, "error", None) is None, result
        scores = result.scores  # type: ignore[attr-defined]
        got[Path(result.path).name] = np.array([scores[n] for n in tagger.vocabulary.names])  # type: ignore[attr-defined]

    options = TagOptions(batch_size=4, all_scores=True, **opts)  # type: ignore[arg-type]
    summary = tag_library(
        [folder], tagger, options=options, write=WriteOptions(mode="none"), use_state=False, on_result=keep
    )
    assert not summary.failed
    return got


def _tagger(device: str, precision: str, compile: bool = False) -> Tagger:
    cfg = get_config("tiny")
    names = tuple(f"tag{i}" for i in range(cfg.num_tags))
    vocab = Vocabulary(names=names, thresholds=(0.5,) * cfg.num_tags)
    return Tagger.from_model(
        _model(),
        vocab,
        OFFICIAL_PREPROCESSING,
        name="tiny",
        device=device,
        precision=precision,
        compile=compile,
    )


def test_gpu_decode_and_bf16_match_the_cpu_path(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    _library(folder)
    cpu = _scores(_tagger("cpu", "fp32"), folder, decode="cpu")
    gpu = _scores(_tagger("cuda", "bf16"), folder, decode="gpu")
    assert set(gpu) == set(cpu) and len(cpu) == 13  # every file, the PNG and CMYK fall-backs included
    worst = max(float(np.abs(gpu[k] - cpu[k]).max()) for k in cpu)
    assert worst < 0.03, worst  # nvJPEG + GPU resize + bf16 against Pillow + fp32


def test_compiled_runner_pads_the_last_batch(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    _library(folder)  # 13 files at batch 4: a last batch of 1, padded to 4 by the compiled runner
    plain = _scores(_tagger("cuda", "bf16"), folder, decode="gpu")
    compiled = _scores(_tagger("cuda", "bf16", compile=True), folder, decode="gpu")
    assert set(plain) == set(compiled)
    worst = max(float(np.abs(plain[k] - compiled[k]).max()) for k in plain)
    assert worst < 0.02, worst


def test_auto_decode_is_gpu_on_cuda() -> None:
    tagger = _tagger("cuda", "bf16")
    assert tagger.decode_mode(TagOptions()) == "gpu"
    assert tagger.runner.pin_memory
