"""Batches of model inputs: image files (or in-memory images) -> ``(B, 3, S, S)`` float tensors.

Decoding and resizing are the slow, CPU-bound part of tagging, so they run ahead of the model while it
works on the previous batch, in one of two ways (:func:`make_batches`):

- ``workers > 0``: a ``torch.utils.data.DataLoader`` with that many worker processes (GPU runs: many
  cores feed one fast device, and the host heap is small);
- ``workers == 0``: ``threads`` decoder threads in this process (Pillow releases the GIL while it
  decodes and resizes). The default for CPU runs: a forked worker shares the parent's multi-GB heap
  copy-on-write, so every page the model then writes is copied once while workers live (Swin-L on 2
  cores: +2.5 s per run, +60 % on the first batches) and the decoded batches are pickled between
  processes for nothing.

``decode="gpu"`` (:mod:`ramtag.gpu_decode`): the workers or threads only read each JPEG's bytes and
header; a producer thread decodes each batch with nvJPEG and resizes it on the device, ahead of the
model; everything else (PNG, HEIC, CMYK, files nvJPEG fails on, in-memory images) takes the CPU path
per image. Its batches are already on the device.

Batches come out in input order. A file that fails (decode error, or any other exception while
decoding) becomes a failure record in its batch; it never stops the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ramtag.decode import decode_file, to_rgb
from ramtag.errors import ImageDecodeError, UsageError
from ramtag.gpu_decode import Encoded, GpuDecoder, RawSample, decode_raw, read_encoded

log = logging.getLogger(__name__)

# What the loader accepts per item: a file, or an image already in memory (API users).
Item = Union[str, Path, Image.Image]  # noqa: UP007 -- a runtime alias, must work on Python 3.10
# RGB PIL image -> (3, S, S) float32 tensor (the weights' resize + normalize).
Transform = Callable[[Image.Image], Tensor]
# One dataset item: (image (3, S, S) float32 or None, index into the input list, error or None, the
# file's stat taken on the descriptor it was decoded from, or None for in-memory images and failures).
Sample = tuple[Union[Tensor, None], int, Union[str, None], Union[os.stat_result, None]]  # noqa: UP007


@dataclass
class Batch:
    """One batch of model inputs.

    Attributes:
        images: ``(B, 3, S, S)`` float32, normalized, the images that decoded; B may be 0 (then the
            tensor is ``(0, 3, 0, 0)`` and the caller skips the model for this batch).
        indices: B positions in the loader's input list, in order, one per row of ``images``.
        paths: B paths, one per row (None for in-memory images).
        stats: B file identities, one per row: ``os.fstat`` of the descriptor the image was decoded
            from (None for in-memory images), so a result is recorded with the file it came from.
        failures: ``(index, path, error)`` for each item of this batch that failed; ``error`` is one line
            naming the file and the reason.
    """

    images: Tensor  # (B, 3, S, S) float32
    indices: list[int]
    paths: list[Path | None]
    failures: list[tuple[int, Path | None, str]] = field(default_factory=list)
    stats: list[os.stat_result | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader when ``pin_memory=True``: page-locked images for faster H2D copies."""
        if self.images.device.type != "cpu":  # decoded on the GPU already
            return self
        return replace(self, images=self.images.pin_memory())


def _item_path(item: Item) -> Path | None:
    return None if isinstance(item, Image.Image) else Path(item)


class ImageDataset(Dataset[Sample]):
    """Map-style dataset over files (or in-memory images): ``dataset[i] -> (image, i, error)``.

    ``image`` is ``transform(rgb)``, a ``(3, S, S)`` float32 tensor, or None when the item failed; then
    ``error`` is a one-line reason. Nothing raised while decoding or transforming escapes ``__getitem__``.
    """

    def __init__(
        self,
        items: Sequence[Item],
        transform: Transform,
        *,
        exif_orientation: bool = True,
        draft_size: int | None = None,
    ):
        self.items = list(items)
        self.transform = transform
        self.exif_orientation = exif_orientation
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        name = f"in-memory image #{index}" if isinstance(item, Image.Image) else str(item)
        try:
            st = None
            if isinstance(item, Image.Image):
                rgb = to_rgb(item, exif_orientation=self.exif_orientation)
            else:
                decoded = decode_file(
                    item, exif_orientation=self.exif_orientation, draft_size=self.draft_size
                )
                rgb, st = decoded.image, decoded.stat
            image = self.transform(rgb)  # (3, S, S)
            if not isinstance(image, Tensor) or image.ndim != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                error = f"{name}: the transform returned {shape}, expected a (3, S, S) tensor"
                return None, index, error, None
            return image, index, None, st
        except ImageDecodeError as err:
            return None, index, str(err), None
        except Exception as err:  # anything else must not kill the run: record it for this file
            log.debug("unexpected error on %s", name, exc_info=True)
            detail = " ".join(str(err).split()) or "no message"
            return None, index, f"{name}: unexpected {type(err).__name__} while decoding ({detail})", None


class EncodedDataset(Dataset[RawSample]):
    """``decode="gpu"``'s CPU side: ``dataset[i]`` is the file's bytes and header (an
    :class:`~ramtag.gpu_decode.Encoded`) when nvJPEG can take it, else ``cpu[i]``, the CPU path's sample."""

    def __init__(self, cpu: ImageDataset) -> None:
        self.cpu = cpu

    def __len__(self) -> int:
        return len(self.cpu)

    def __getitem__(self, index: int) -> RawSample:
        item = self.cpu.items[index]
        if not isinstance(item, Image.Image):
            encoded = read_encoded(item, exif_orientation=self.cpu.exif_orientation)
            if encoded is not None:
                return encoded, index, None, encoded.stat
        return self.cpu[index]


def _pack(samples: list[RawSample]) -> tuple[Tensor, list[tuple[int, int]], list[RawSample]]:
    """In a worker: the batch's JPEG bytes concatenated into ONE tensor (one shared-memory segment and
    file descriptor per batch instead of one per image: 128 per batch x workers x prefetch would
    exhaust the descriptor limit), with each image's (start, end) span; the samples keep empty data."""
    jpegs = [s[0] for s in samples if isinstance(s[0], Encoded)]
    blob = torch.cat([e.data for e in jpegs]) if jpegs else torch.empty(0, dtype=torch.uint8)
    spans: list[tuple[int, int]] = []
    start = 0
    for e in jpegs:
        spans.append((start, start + e.data.numel()))
        start += e.data.numel()
        e.data = blob[:0]
    return blob, spans, samples


def _unpack(packed: tuple[Tensor, list[tuple[int, int]], list[RawSample]]) -> list[RawSample]:
    blob, spans, samples = packed
    jpegs = [s[0] for s in samples if isinstance(s[0], Encoded)]
    for e, (a, b) in zip(jpegs, spans, strict=True):
        e.data = blob[a:b]  # (n,) contiguous view
    return samples


def default_workers(device_type: str = "cuda") -> int:
    """Decode processes when the user does not say: for GPUs one per CPU core, at most 4; for CPU
    runs 0 (decoding then runs in :func:`default_threads` threads, see the module doc)."""
    return 0 if device_type == "cpu" else min(4, os.cpu_count() or 1)


def default_threads() -> int:
    """Decoder threads for ``workers == 0``: a quarter of the cores (the model uses the rest), 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def collate(samples: list[Sample], items: Sequence[Item]) -> Batch:
    """Stack the good samples into ``(B, 3, S, S)`` and pass the failures through.

    A sample whose tensor shape differs from the batch's first good sample becomes a failure too (a
    misbehaving transform must not lose the whole batch).
    """
    images: list[Tensor] = []
    indices: list[int] = []
    stats: list[os.stat_result | None] = []
    failures: list[tuple[int, Path | None, str]] = []
    for image, index, error, st in samples:
        path = _item_path(items[index])
        if image is None:
            failures.append((index, path, error or f"{path}: failed"))
        elif images and image.shape != images[0].shape:
            failures.append(
                (
                    index,
                    path,
                    f"{path}: transform gave shape {tuple(image.shape)}, "
                    f"the batch has {tuple(images[0].shape)}",
                )
            )
        else:
            images.append(image)
            indices.append(index)
            stats.append(st)
    stacked = torch.stack(images) if images else torch.empty((0, 3, 0, 0))  # (B, 3, S, S)
    return Batch(
        images=stacked,
        indices=indices,
        paths=[_item_path(items[i]) for i in indices],
        failures=failures,
        stats=stats,
    )


def _check(batch_size: int, workers: int, draft_size: int | None) -> None:
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}; pass --batch-size 1 or more")
    if workers < 0:
        raise UsageError(f"workers must be 0 or more, got {workers}; pass --workers 0 to decode in-process")
    if draft_size is not None and draft_size < 1:
        raise UsageError(f"draft size must be a positive number of pixels, got {draft_size}")


def make_loader(
    items: Sequence[Item],
    transform: Transform,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    exif_orientation: bool = True,
    draft_size: int | None = None,
    prefetch_factor: int = 2,
) -> DataLoader[Sample]:
    """A DataLoader yielding :class:`Batch` objects over ``items`` in order (``len(loader)`` batches).

    Args:
        items: image files (str/Path) and/or in-memory ``PIL.Image``s; indices in each batch refer to
            positions in this sequence.
        transform: RGB ``PIL.Image`` -> ``(3, S, S)`` float32 tensor. With ``workers > 0`` it is sent to the
            worker processes, so it must be picklable (torchvision transforms are).
        batch_size: images per batch (the last batch may be smaller; failed files make batches smaller).
        workers: decoding processes; 0 decodes in the calling process.
        pin_memory: page-locked batches for faster copies to a CUDA device.
        exif_orientation, draft_size: passed to :func:`ramtag.decode.decode_image`.
        prefetch_factor: batches each worker prepares ahead (ignored when ``workers == 0``).
    """
    _check(batch_size, workers, draft_size)
    items = list(items)
    dataset = ImageDataset(items, transform, exif_orientation=exif_orientation, draft_size=draft_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=partial(collate, items=items),
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        persistent_workers=False,
        in_order=True,
    )


def make_batches(
    items: Sequence[Item],
    transform: Transform,
    *,
    batch_size: int,
    workers: int,
    threads: int | None = None,
    pin_memory: bool = False,
    exif_orientation: bool = True,
    draft_size: int | None = None,
    ahead: int = 2,
    decode: str = "cpu",
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """:class:`Batch` objects over ``items`` in order, decoded ahead of the caller.

    ``workers > 0``: :func:`make_loader`'s worker processes. ``workers == 0``: ``threads`` decoder
    threads (default :func:`default_threads`) keep up to ``ahead`` batches ready. Other arguments as in
    :func:`make_loader`.

    ``decode``: ``"cpu"`` (Pillow) or ``"gpu"`` (nvJPEG on ``device``, see the module doc; the
    ``transform`` must be a :class:`ramtag.preprocess.Transform`). Resolve ``"auto"`` first with
    :func:`ramtag.gpu_decode.resolve_decode`.
    """
    _check(batch_size, workers, draft_size)
    if decode not in ("cpu", "gpu"):
        raise UsageError(f"decode must be 'cpu' or 'gpu' here, got {decode!r}")
    if decode == "gpu":
        yield from _gpu_batches(
            items,
            transform,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            exif_orientation=exif_orientation,
            draft_size=draft_size,
            ahead=ahead,
            device=torch.device(device if device is not None else "cuda"),
        )
        return
    if workers > 0:
        yield from make_loader(
            items,
            transform,
            batch_size=batch_size,
            workers=workers,
            pin_memory=pin_memory,
            exif_orientation=exif_orientation,
            draft_size=draft_size,
        )
        return
    items = list(items)
    dataset = ImageDataset(items, transform, exif_orientation=exif_orientation, draft_size=draft_size)
    starts = range(0, len(items), batch_size)

    def batches() -> Generator[Batch, None, None]:
        with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="ramtag-decode") as pool:
            for start in starts:
                indices = range(start, min(start + batch_size, len(items)))
                batch = collate(list(pool.map(dataset.__getitem__, indices)), items)
                if pin_memory and len(batch):
                    batch = batch.pin_memory()
                yield batch

    yield from _ahead(batches, len(starts), ahead)


def _gpu_batches(
    items: Sequence[Item],
    transform: Transform,
    *,
    batch_size: int,
    workers: int,
    threads: int | None,
    exif_orientation: bool,
    draft_size: int | None,
    ahead: int,
    device: torch.device,
) -> Iterator[Batch]:
    """``decode="gpu"``: bytes read by workers/threads, each batch decoded on ``device`` by a producer
    thread on its own CUDA stream (so decoding overlaps the model's work on the default stream)."""
    items = list(items)
    decoder = GpuDecoder.from_transform(transform, device)
    cpu = ImageDataset(items, transform, exif_orientation=exif_orientation, draft_size=draft_size)
    dataset = EncodedDataset(cpu)
    starts = range(0, len(items), batch_size)

    def fallback(index: int) -> tuple[Tensor | None, str | None, os.stat_result | None]:
        image, _, error, st = cpu[index]
        return image, error, st

    def raw_batches() -> Iterator[list[RawSample]]:
        if workers > 0:
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                collate_fn=_pack,
                prefetch_factor=2,
                persistent_workers=False,
                in_order=True,
            )
            for packed in loader:
                yield _unpack(packed)
            return
        with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="ramtag-read") as pool:
            for start in starts:
                yield list(pool.map(dataset.__getitem__, range(start, min(start + batch_size, len(items)))))

    def batches() -> Generator[Batch, None, None]:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        for raw in raw_batches():
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                batch = collate(decode_raw(raw, decoder, fallback), items)
            if stream is not None:
                if len(batch):  # the consumer uses it on the default stream: keep its memory until then
                    batch.images.record_stream(torch.cuda.default_stream(device))
                stream.synchronize()
            yield batch

    yield from _ahead(batches, len(starts), ahead)


def _ahead(batches: Callable[[], Generator[Batch, None, None]], count: int, ahead: int) -> Iterator[Batch]:
    """Run ``batches()`` on a producer thread that keeps up to ``ahead`` batches ready; yields ``count``."""
    ready: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def offer(thing: Batch | BaseException) -> bool:
        while not stop.is_set():  # the consumer may have stopped early
            try:
                ready.put(thing, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = batches()
        try:
            for batch in source:
                if not offer(batch):
                    return
        except BaseException as err:  # a bug here must reach the consumer, not hang it
            offer(err)
        finally:
            source.close()  # shuts its decoder pool down now, also when the consumer stopped early

    thread = threading.Thread(target=produce, name="ramtag-batches", daemon=True)
    thread.start()
    try:
        for _ in range(count):
            got = ready.get()
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        thread.join()
