"""ramtag.gpu_decode: the nvJPEG path, run on the CPU (torchvision's CPU decode_jpeg has the same API).

What differs on a GPU is only where decode_jpeg and the resize run; the routing (what goes to nvJPEG,
what falls back to Pillow), orientation, batching order and preprocessing are the same code.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from ramtag.batch import make_batches
from ramtag.decode import decode_image
from ramtag.errors import UsageError
from ramtag.gpu_decode import GpuDecoder, orient, read_encoded, resolve_decode
from ramtag.preprocess import make_transform
from ramtag.weights_format import OFFICIAL_PREPROCESSING

PRE = OFFICIAL_PREPROCESSING
# GPU-path pixels vs Pillow's, in normalised units (1 level of 255 is ~0.017): the decoders' IDCT /
# chroma upsampling and the float resize differ by a few levels at most, on average far less.
MAX_PIXEL_DIFF = 0.25
MEAN_PIXEL_DIFF = 0.02


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth, asymmetric test picture (gradients + a bright block in one corner)."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).copy()
    img[: h // 4, : w // 5] = (250, 240, 10)
    return Image.fromarray(img)


def _jpeg(path: Path, img: Image.Image, orientation: int = 1, **kw: object) -> Path:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    img.save(path, format="JPEG", quality=92, exif=exif.tobytes(), **kw)  # type: ignore[arg-type]
    return path


def _cpu_path(path: Path) -> torch.Tensor:
    return make_transform(PRE)(decode_image(path))  # (3, S, S)


def _gpu_path(paths: list[Path], batch_size: int = 8, workers: int = 0) -> list:
    batches = make_batches(
        paths, make_transform(PRE), batch_size=batch_size, workers=workers, decode="gpu", device="cpu"
    )
    return list(batches)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation: int) -> None:
    img = _photo((40, 24))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img))  # (H', W', 3)
    chw = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, H, W)
    got = orient(chw, orientation).permute(1, 2, 0).numpy()
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_read_encoded_routes_files(tmp_path: Path) -> None:
    img = _photo((64, 48))
    jpg = _jpeg(tmp_path / "a.jpg", img, orientation=6)
    enc = read_encoded(jpg)
    assert enc is not None and enc.orientation == 6 and enc.size == (64, 48)
    assert enc.data.dtype == torch.uint8 and enc.data.numel() == jpg.stat().st_size
    # the identity of the bytes read (fstat of the descriptor), carried to the catalog
    assert enc.stat is not None and (enc.stat.st_ino, enc.stat.st_size) == (
        jpg.stat().st_ino,
        jpg.stat().st_size,
    )
    no_exif = read_encoded(jpg, exif_orientation=False)
    assert no_exif is not None and no_exif.orientation == 1
    grey = _jpeg(tmp_path / "grey.jpg", img.convert("L"))
    assert read_encoded(grey) is not None
    img.save(tmp_path / "b.png")
    img.convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "trunc.jpg").write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("b.png", "cmyk.jpg", "trunc.jpg", "empty.jpg", "text.jpg", "missing.jpg"):
        assert read_encoded(tmp_path / name) is None, name


def test_gpu_path_matches_pillow_and_keeps_order(tmp_path: Path) -> None:
    big = _photo((800, 600), seed=1)
    files = [
        _jpeg(tmp_path / "0_plain.jpg", big),
        tmp_path / "1_png.png",
        _jpeg(tmp_path / "2_rotated.jpg", _photo((640, 480), seed=2), orientation=6),
        tmp_path / "3_cmyk.jpg",
        tmp_path / "4_missing.jpg",
        tmp_path / "5_truncated.jpg",
        _jpeg(tmp_path / "6_same_shape.jpg", _photo((800, 600), seed=3)),
        _jpeg(tmp_path / "7_grey.jpg", _photo((300, 200), seed=4).convert("L")),
        _jpeg(tmp_path / "8_small.jpg", _photo((384, 384), seed=5)),
    ]
    _photo((500, 300), seed=6).save(files[1])
    _photo((320, 240), seed=7).convert("CMYK").save(files[3], format="JPEG")
    files[5].write_bytes(files[0].read_bytes()[:5000])

    batches = _gpu_path(files, batch_size=4)
    assert [b.indices for b in batches] == [[0, 1, 2, 3], [6, 7], [8]]
    failures = [f for b in batches for f in b.failures]
    assert [(i, p) for i, p, _ in failures] == [(4, files[4]), (5, files[5])]
    assert "no such file" in failures[0][2] and "5_truncated.jpg" in failures[1][2]
    # The CPU path gives the same failures with the same lines.
    cpu = list(make_batches(files, make_transform(PRE), batch_size=4, workers=0))
    assert [f for b in cpu for f in b.failures] == failures
    for gpu_batch, cpu_batch in zip(batches, cpu, strict=True):
        assert gpu_batch.images.shape == cpu_batch.images.shape
        assert gpu_batch.paths == cpu_batch.paths
        diff = (gpu_batch.images - cpu_batch.images).abs()
        assert float(diff.max()) < MAX_PIXEL_DIFF
        assert float(diff.mean()) < MEAN_PIXEL_DIFF
    # PNG and CMYK took Pillow's path: bit-identical to it.
    assert torch.equal(batches[0].images[1], _cpu_path(files[1]))
    assert torch.equal(batches[0].images[3], _cpu_path(files[3]))
    # The rotated photo came out upright (480 wide x 640 tall before the squash): compare with Pillow's.
    upright = _cpu_path(files[2])
    assert float((batches[0].images[2] - upright).abs().mean()) < MEAN_PIXEL_DIFF
    sideways = make_transform(PRE)(decode_image(files[2], exif_orientation=False))
    assert float((batches[0].images[2] - sideways).abs().mean()) > 10 * MEAN_PIXEL_DIFF


def test_gpu_path_with_worker_processes(tmp_path: Path) -> None:
    files = [_jpeg(tmp_path / f"{i}.jpg", _photo((200 + 8 * i, 150), seed=i)) for i in range(5)]
    (tmp_path / "x.png").write_bytes(b"\x89PNG broken")
    files.insert(2, tmp_path / "x.png")
    batches = _gpu_path(files, batch_size=3, workers=2)
    assert [b.indices for b in batches] == [[0, 1], [3, 4, 5]]
    assert [i for b in batches for i, _, _ in b.failures] == [2]
    for b in batches:
        for row, path, st in zip(b.images, b.paths, b.stats, strict=True):
            assert path is not None
            assert float((row - _cpu_path(path)).abs().max()) < MAX_PIXEL_DIFF
            assert st is not None and st.st_ino == path.stat().st_ino  # through the worker processes


def test_failed_nvjpeg_decode_falls_back_per_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the decoder fails on one image, the batch is retried one by one and that image alone
    takes the CPU path (nvJPEG returns nothing for a batch with one bad image)."""
    import torchvision.io as tvio

    files = [_jpeg(tmp_path / f"{i}.jpg", _photo((120, 90), seed=i)) for i in range(3)]
    bad = read_encoded(files[1])
    assert bad is not None
    real = tvio.decode_jpeg
    calls: list[int] = []

    def flaky(data: list[torch.Tensor], **kw: object) -> list[torch.Tensor]:
        calls.append(len(data))
        if any(torch.equal(d, bad.data) for d in data):
            raise RuntimeError("nvjpeg: unsupported JPEG")
        return real(data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tvio, "decode_jpeg", flaky)
    (batch,) = _gpu_path(files)
    assert calls == [3, 1, 1, 1]
    assert batch.indices == [0, 1, 2] and not batch.failures
    assert torch.equal(batch.images[1], _cpu_path(files[1]))  # Pillow decoded the one nvJPEG refused


def test_decoder_resizes_groups_and_normalises() -> None:
    dec = GpuDecoder("cpu", (384, 384), PRE.mean, PRE.std)
    flat = torch.full((2, 3, 100, 50), 128, dtype=torch.uint8)
    out = dec.preprocess(flat)
    assert out.shape == (2, 3, 384, 384)
    expected = (128 / 255 - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-6)


def test_resolve_decode_on_cpu() -> None:
    assert resolve_decode("auto", "cpu") == "cpu"
    assert resolve_decode("CPU", torch.device("cpu")) == "cpu"
    with pytest.raises(UsageError, match="--decode gpu"):
        resolve_decode("gpu", "cpu")
    with pytest.raises(UsageError, match="unknown"):
        resolve_decode("nvjpeg", "cpu")


def test_scores_close_to_the_pillow_path(shared_photos: Path) -> None:
    """Shared photos (JPEG and PNG, one EXIF-rotated): tiny random model's scores through both paths."""
    from ramtag.model.config import get_config
    from ramtag.model.ram_plus import RamPlus
    from ramtag.runner import Runner

    files = sorted(p for p in shared_photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:10]
    torch.manual_seed(0)
    model = RamPlus(get_config("tiny")).eval()
    runner = Runner(model, model.builtin_label_embed().detach(), device="cpu", precision="fp32")
    transform = make_transform(PRE)
    gpu = torch.cat([runner.scores(b.images) for b in _gpu_path(files, batch_size=4)])
    cpu = torch.cat(
        [runner.scores(b.images) for b in make_batches(files, transform, batch_size=4, workers=0)]
    )
    assert gpu.shape == cpu.shape == (len(files), model.config.num_tags)
    assert float((gpu - cpu).abs().max()) < 0.02


def test_in_memory_images_take_the_cpu_path() -> None:
    img = _photo((100, 80))
    (batch,) = list(
        make_batches(
            [img], make_transform(PRE), batch_size=2, workers=0, threads=1, decode="gpu", device="cpu"
        )
    )
    assert torch.equal(batch.images[0], make_transform(PRE)(img))


def test_corrupt_jpeg_bytes_report_like_the_cpu_path(tmp_path: Path) -> None:
    """A JPEG with an intact header and end marker but garbage in between: whatever the decoders make
    of it, the batch keeps its order and the result is the CPU path's (image or error line)."""
    good = _jpeg(tmp_path / "good.jpg", _photo((160, 120)))
    data = bytearray(good.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = bytes(range(256)) + bytes(144)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    buf = io.BytesIO()
    _photo((64, 64)).save(buf, format="JPEG")
    files = [good, bad, good]
    (gpu,) = _gpu_path(files, batch_size=3)
    (cpu,) = list(make_batches(files, make_transform(PRE), batch_size=3, workers=0))
    assert [i for i, _, _ in gpu.failures] == [i for i, _, _ in cpu.failures]
    assert gpu.indices == cpu.indices
