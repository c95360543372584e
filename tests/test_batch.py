"""Batch loader: order, shapes, failures passed through (never fatal), workers == in-process results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ramtag.batch import (
    Batch,
    ImageDataset,
    collate,
    default_threads,
    default_workers,
    make_batches,
    make_loader,
)
from ramtag.decode import decode_image
from ramtag.errors import UsageError

SIZE = 32


class Squash:
    """A small picklable stand-in for the weights' transform: RGB -> (3, SIZE, SIZE) float32 in [0, 1]."""

    def __init__(self, size: int = SIZE):
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        assert image.mode == "RGB"
        arr = np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.float32)
        return torch.from_numpy(arr / 255.0).permute(2, 0, 1).contiguous()  # (3, S, S)


class FailsOnWide(Squash):
    """Raises a non-ramtag exception for wide images, as a buggy transform or library might."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.width > 1000:
            raise RuntimeError("boom\nsecond line")
        return super().__call__(image)


@pytest.fixture
def mixed_files(tmp_path: Path, shared_photos: Path) -> list[Path]:
    """Good photos with bad files in between (their positions: 1, 3, 4)."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    return [
        shared_photos / "coffee_cup.jpg",
        empty,
        shared_photos / "cat_chelsea.png",
        text,
        folder,
        shared_photos / "cat_orientation6.jpg",
        shared_photos / "cameraman_gray.png",
    ]


def run(loader) -> tuple[list[Batch], list[int], list[int]]:
    batches = list(loader)
    good = [i for b in batches for i in b.indices]
    bad = [i for b in batches for i, _, _ in b.failures]
    return batches, good, bad


def test_dataset_item(mixed_files: list[Path]) -> None:
    ds = ImageDataset(mixed_files, Squash())
    assert len(ds) == 7
    image, index, error, st = ds[0]
    assert index == 0 and error is None
    assert image is not None and image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    expected = Squash()(decode_image(mixed_files[0]))
    assert torch.equal(image, expected)
    now = os.stat(mixed_files[0])  # the identity of the file as decoded travels with the image
    assert st is not None and (st.st_ino, st.st_size, st.st_mtime_ns) == (
        now.st_ino,
        now.st_size,
        now.st_mtime_ns,
    )
    image, index, error, st = ds[1]
    assert image is None and index == 1 and error is not None and st is None
    assert str(mixed_files[1]) in error and "empty file" in error


def test_loader_in_process(mixed_files: list[Path]) -> None:
    loader = make_loader(mixed_files, Squash(), batch_size=3, workers=0)
    assert len(loader) == 3
    batches, good, bad = run(loader)
    assert [len(b) + len(b.failures) for b in batches] == [3, 3, 1]
    assert good == [0, 2, 5, 6] and bad == [1, 3, 4]
    first = batches[0]
    assert first.images.shape == (2, 3, SIZE, SIZE) and first.images.dtype == torch.float32
    assert first.paths == [mixed_files[0], mixed_files[2]] and first.indices == [0, 2]
    idx, path, error = first.failures[0]
    assert (idx, path) == (1, mixed_files[1]) and "empty file" in error
    reasons = {i: e for b in batches for i, _, e in b.failures}
    assert "not an image" in reasons[3] and "folder" in reasons[4]
    # rows follow the indices; EXIF-rotated photo decoded upright by default
    second = batches[1]
    assert second.indices == [5] and len(second.failures) == 2
    upright = Squash()(decode_image(mixed_files[5]))
    assert torch.equal(second.images[0], upright)
    sideways = make_loader(mixed_files[5:6], Squash(), batch_size=1, workers=0, exif_orientation=False)
    assert not torch.equal(next(iter(sideways)).images[0], upright)


def test_workers_give_identical_batches_in_order(mixed_files: list[Path]) -> None:
    ref = list(make_loader(mixed_files, Squash(), batch_size=2, workers=0))
    par = list(make_loader(mixed_files, Squash(), batch_size=2, workers=2))
    assert [b.indices for b in par] == [b.indices for b in ref]
    assert [b.failures for b in par] == [b.failures for b in ref]
    assert all(torch.equal(a.images, b.images) for a, b in zip(par, ref, strict=True))


@pytest.mark.parametrize(("workers", "threads"), [(0, 1), (0, 3), (2, None)])
def test_make_batches_threads_or_processes_give_the_loaders_batches(
    mixed_files: list[Path], workers: int, threads: int | None
) -> None:
    ref = list(make_loader(mixed_files, Squash(), batch_size=2, workers=0))
    got = list(make_batches(mixed_files, Squash(), batch_size=2, workers=workers, threads=threads))
    assert [b.indices for b in got] == [b.indices for b in ref]
    assert [b.failures for b in got] == [b.failures for b in ref]
    assert all(torch.equal(a.images, b.images) for a, b in zip(got, ref, strict=True))
    # every row carries the identity of the file it was decoded from (also out of worker processes)
    rows = [(p, st) for b in got for p, st in zip(b.paths, b.stats, strict=True)]
    assert rows and all(st is not None and p is not None and st.st_ino == p.stat().st_ino for p, st in rows)


def test_make_batches_stops_its_thread_when_the_consumer_stops(mixed_files: list[Path]) -> None:
    import threading

    gen = make_batches(mixed_files * 4, Squash(), batch_size=1, workers=0, ahead=1)
    first = next(gen)
    assert first.indices == [0]
    gen.close()  # the producer is blocked on a full queue: it must notice and end
    assert not [t for t in threading.enumerate() if t.name == "ramtag-batches"]
    with pytest.raises(UsageError, match="batch size"):
        next(make_batches(mixed_files, Squash(), batch_size=0, workers=0))


def test_default_decoders() -> None:
    assert default_workers("cpu") == 0  # CPU runs decode in threads (no copy-on-write of the heap)
    assert 1 <= default_workers("cuda") <= 4 and 1 <= default_threads() <= 4


@pytest.mark.parametrize("workers", [0, 2])
def test_exception_in_worker_becomes_failure(shared_photos: Path, workers: int) -> None:
    files = [
        shared_photos / "coffee_cup.jpg",  # 600 wide
        shared_photos / "honey_bee_flower.jpg",  # 1620 wide: the transform raises
        shared_photos / "dahlia_flower.jpg",
    ]
    batches, good, bad = run(make_loader(files, FailsOnWide(), batch_size=4, workers=workers))
    assert good == [0, 2] and bad == [1]
    ((_, path, error),) = batches[0].failures
    assert path == files[1]
    assert "RuntimeError" in error and "boom second line" in error and "\n" not in error
    assert batches[0].images.shape == (2, 3, SIZE, SIZE)


def test_all_failed_batch_is_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    (batch,) = list(make_loader([bad, tmp_path / "missing.jpg"], Squash(), batch_size=4, workers=0))
    assert len(batch) == 0 and batch.images.shape[0] == 0 and batch.paths == []
    assert [i for i, _, _ in batch.failures] == [0, 1]


def test_in_memory_images_and_paths_mixed(shared_photos: Path) -> None:
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent -> grey
    gray16 = Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16))
    items = [rgba, shared_photos / "coffee_cup.jpg", gray16, str(shared_photos / "cat_chelsea.png")]
    (batch,) = list(make_loader(items, Squash(), batch_size=4, workers=0))
    assert batch.indices == [0, 1, 2, 3] and batch.failures == []
    assert batch.paths == [None, shared_photos / "coffee_cup.jpg", None, shared_photos / "cat_chelsea.png"]
    assert torch.allclose(batch.images[0], torch.full((3, SIZE, SIZE), 128 / 255))
    assert torch.allclose(batch.images[2], torch.full((3, SIZE, SIZE), 255 / 255))
    assert rgba.mode == "RGBA"  # caller's image untouched


def test_draft_size_passed_to_decoder(shared_photos: Path) -> None:
    seen: list[tuple[int, int]] = []

    def record(image: Image.Image) -> torch.Tensor:
        seen.append(image.size)
        return Squash()(image)

    path = shared_photos / "honey_bee_flower.jpg"
    list(make_loader([path], record, batch_size=1, workers=0))
    list(make_loader([path], record, batch_size=1, workers=0, draft_size=384))
    assert seen == [(1620, 1280), (810, 640)]


def test_collate_rejects_odd_shapes(shared_photos: Path) -> None:
    items = [shared_photos / "coffee_cup.jpg", shared_photos / "cat_chelsea.png"]
    samples = [(torch.zeros(3, 8, 8), 0, None, None), (torch.zeros(3, 4, 4), 1, None, None)]
    batch = collate(samples, items)
    assert batch.indices == [0] and batch.images.shape == (1, 3, 8, 8)
    assert batch.failures[0][0] == 1 and "shape" in batch.failures[0][2]


def test_bad_transform_output_is_a_failure(shared_photos: Path) -> None:
    ds = ImageDataset([shared_photos / "coffee_cup.jpg"], lambda im: np.zeros((3, 4, 4)))
    image, _, error, _ = ds[0]
    assert image is None and error is not None and "expected a (3, S, S) tensor" in error


def test_empty_input() -> None:
    assert list(make_loader([], Squash(), batch_size=4, workers=0)) == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0, "workers": 0}, "batch size"),
        ({"batch_size": 1, "workers": -1}, "workers"),
        ({"batch_size": 1, "workers": 0, "draft_size": 0}, "draft size"),
    ],
)
def test_bad_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        make_loader([], Squash(), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory(shared_photos: Path) -> None:
    (batch,) = list(
        make_loader([shared_photos / "coffee_cup.jpg"], Squash(), batch_size=1, workers=0, pin_memory=True)
    )
    assert isinstance(batch, Batch) and batch.images.is_pinned()


def test_with_official_transform_if_available(shared_photos: Path) -> None:
    preprocess = pytest.importorskip("ramtag.preprocess")
    weights_format = pytest.importorskip("ramtag.weights_format")
    pre = weights_format.OFFICIAL_PREPROCESSING
    transform = preprocess.make_transform(pre)
    files = [shared_photos / "coffee_cup.jpg", shared_photos / "cameraman_gray.png"]
    (batch,) = list(make_loader(files, transform, batch_size=2, workers=0))
    assert batch.images.shape == (2, 3, pre.image_size, pre.image_size)
