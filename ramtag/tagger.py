"""``Tagger``: a runner with its vocabulary and preprocessing; paths or PIL images in, ``ImageTags`` out.

Build one with :func:`ramtag.api.load_tagger` (weights from the registry or a folder) or
:meth:`Tagger.from_model` (a model already in memory: tests, the benchmark).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .options import EXACT_PRECISIONS, TagOptions
from .results import ImageTags, ScoreMap
from .tags import Vocabulary, decide, effective_thresholds

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .model.ram_plus import RamPlus
    from .runner import Runner
    from .weights_format import Preprocessing

__all__ = ["Tagger"]


class Tagger:
    """A loaded RAM++ model with its vocabulary, ready to tag.

    ``tag`` accepts file paths and/or ``PIL.Image`` objects and yields one :class:`ImageTags` per
    input, in input order.

    Args:
        runner: the model on its device with the prepared vocabulary (``label_embed``).
        vocabulary: the tags scored, in output order (built-in and/or open-set).
        preprocessing: how images become model input (travels with the weights).
        label_embed: (T, D, E) float32 description embeddings the runner was prepared with.
        name: weights name or directory.
        weights_sha: sha256 of the weights file ("" when unknown); keys the incremental state.
        notes: one-line notes for the user (e.g. from building open-set tags).
    """

    def __init__(
        self,
        runner: Runner,
        vocabulary: Vocabulary,
        preprocessing: Preprocessing,
        *,
        label_embed: torch.Tensor,
        name: str,
        weights_sha: str = "",
        notes: Sequence[str] = (),
    ) -> None:
        from .preprocess import make_transform

        self.runner = runner
        self.vocabulary = vocabulary
        self.label_embed = label_embed  # (T, 51, 512) float32 description embeddings
        self.preprocessing = preprocessing
        self.transform = make_transform(preprocessing)
        self.name = name
        self.weights_sha = weights_sha
        self.notes = list(notes)

    @classmethod
    def from_model(
        cls,
        model: RamPlus,
        vocabulary: Vocabulary,
        preprocessing: Preprocessing,
        *,
        label_embed: torch.Tensor | None = None,
        name: str,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool = False,
        weights_sha: str = "",
        notes: Sequence[str] = (),
    ) -> Tagger:
        """A tagger for a float32 ``model`` in memory; ``label_embed`` defaults to its built-in tags."""
        from .runner import Runner

        if label_embed is None:
            label_embed = model.builtin_label_embed().detach()  # (T, 51, 512)
        if len(vocabulary) != label_embed.shape[0]:
            raise UsageError(f"{len(vocabulary)} tag names for {label_embed.shape[0]} embedded tags")
        runner = Runner(model, label_embed, device=device, precision=precision, compile=compile)
        return cls(
            runner,
            vocabulary,
            preprocessing,
            label_embed=label_embed,
            name=name,
            weights_sha=weights_sha,
            notes=notes,
        )

    def __repr__(self) -> str:
        return f"Tagger({self.name!r}, tags={len(self.vocabulary)}, {self.runner.describe()})"

    def settings(self, options: TagOptions) -> dict[str, Any]:
        """Everything that changes the tags of an image (keys the incremental state)."""
        vocab_hash = hashlib.sha256(repr(self.vocabulary.to_dict()).encode()).hexdigest()[:16]
        # The built-in rows come from the weights file (its sha256 covers them); hash only open-set rows.
        open_rows = [i for i, flag in enumerate(self.vocabulary.open_set) if flag]
        emb = self.label_embed[open_rows] if open_rows else self.label_embed[:0]
        emb_hash = hashlib.sha256(emb.float().cpu().numpy().tobytes()).hexdigest()[:16]
        return {
            "weights": self.name,
            "weights_sha": self.weights_sha,
            "vocabulary": vocab_hash,
            "label_embed": emb_hash,
            "threshold": options.threshold,
            "top_k": options.top_k,
            "lang": options.lang,
            "exif_orientation": options.exif_orientation,
            "draft": options.draft,
            # GPU decoding moves pixels by a few levels; keyed only when used, so CPU keys stay as they were.
            **({"decode": "gpu"} if self.decode_mode(options) == "gpu" else {}),
            "preprocessing": repr(self.preprocessing),
            # fp32 and bf16-checked decide the same tags; plain bf16/fp16 may differ near thresholds.
            "decisions": "exact" if self.runner.precision in EXACT_PRECISIONS else self.runner.precision,
        }

    def decode_mode(self, options: TagOptions) -> str:
        """``options.decode`` resolved on this tagger's device: "cpu" or "gpu"."""
        from .gpu_decode import resolve_decode

        return resolve_decode(options.decode, self.runner.device)

    # ------------------------------------------------------------------ tagging
    def scores(self, images: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Scores for a preprocessed batch.

        Args:
            images: (B, 3, S, S) float32, normalised as ``self.preprocessing`` says.
            threshold: the override you will decide with (``TagOptions.threshold``): under
                ``bf16-checked`` the scores near these thresholds are the fp32 ones.
        Returns:
            (B, T) float32 sigmoid scores in [0, 1], columns in ``self.vocabulary`` order.
        """
        import torch

        th = torch.from_numpy(effective_thresholds(self.vocabulary, threshold))  # (T,) float64
        return self.runner.scores(images, th)

    def decide(
        self,
        scores: torch.Tensor,
        paths: Sequence[Path | None],
        indices: Sequence[int] | None = None,
        options: TagOptions | None = None,
    ) -> list[ImageTags]:
        """(B, T) scores of images ``paths`` -> one :class:`ImageTags` each, tags decided by ``options``."""
        opts = options or TagOptions()
        arr = scores.float().numpy()
        decided = decide(
            arr,
            self.vocabulary,
            threshold=opts.threshold,
            top_k=opts.top_k,
            rename=opts.rename,
            lang=opts.lang,
        )
        idx = range(len(paths)) if indices is None else indices
        columns = self._columns if opts.all_scores else {}
        out = []
        for row, (path, i, tags) in enumerate(zip(paths, idx, decided, strict=True)):
            all_scores = ScoreMap(columns, arr[row]) if opts.all_scores else None
            out.append(ImageTags(path=path, tags=tags, scores=all_scores, index=i))
        return out

    @functools.cached_property
    def _columns(self) -> dict[str, int]:
        """Tag name -> score column, for :class:`~ramtag.results.ScoreMap` (built once)."""
        return {n: c for c, n in enumerate(self.vocabulary.names)}

    def tag(
        self, items: Iterable[str | Path | Image.Image], options: TagOptions | None = None, **kwargs: Any
    ) -> Iterator[ImageTags]:
        """Tag images given as paths and/or PIL images; yields one result per item, in input order.

        A folder stands for the images in it, walked as ``ramtag tag`` walks it (recursively, hidden
        entries left out; ``options.recursive`` / ``include_hidden``), in that order.
        A file that cannot be decoded yields an ``ImageTags`` with ``error`` set (no exception).
        Keyword arguments override fields of ``options`` (e.g. ``threshold=0.7``).
        """
        from PIL import Image as PILImage

        from .batch import make_batches

        opts = _with(options or TagOptions(), kwargs)
        items = _expand_folders(items, opts)
        if not items:
            return
        in_memory = any(isinstance(x, PILImage.Image) for x in items)
        loader = make_batches(
            items,
            self.transform,
            batch_size=opts.batch_size or self.runner.suggest_batch_size(),
            workers=0 if in_memory else _workers(opts.workers, len(items), self.runner.device.type),
            threads=1 if in_memory else None,  # one thread: the caller's image objects are never shared
            pin_memory=self.runner.pin_memory,
            exif_orientation=opts.exif_orientation,
            draft_size=self.preprocessing.image_size if opts.draft else None,
            decode=self.decode_mode(opts),
            device=self.runner.device,
        )
        for batch in loader:
            results = [ImageTags(path=path, error=reason, index=idx) for idx, path, reason in batch.failures]
            if len(batch.indices):
                scores = self.scores(batch.images, opts.threshold)
                decided = self.decide(scores, batch.paths, batch.indices, opts)
                for res, st in zip(decided, batch.stats, strict=True):
                    res.stat = st
                results += decided
            yield from sorted(results, key=lambda r: r.index)


def _expand_folders(items: Iterable[Any], opts: TagOptions) -> list[Any]:
    """Paths and PIL images, with each folder replaced by the image files under it."""
    from PIL import Image as PILImage

    from .discover import Skipped, discover

    out: list[Any] = []
    for x in items:
        if isinstance(x, PILImage.Image):
            out.append(x)
        elif Path(x).is_dir():
            found = discover([Path(x)], recursive=opts.recursive, include_hidden=opts.include_hidden)
            out.extend(f for f in found if not isinstance(f, Skipped))
        else:
            out.append(Path(x))
    return out


def _with(options: TagOptions, overrides: dict[str, Any]) -> TagOptions:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TagOptions)}
    if unknown:
        raise UsageError(f"unknown tagging option(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(options, **overrides)


def _workers(workers: int | None, n: int, device_type: str) -> int:
    """Decode processes: as asked, else none for a couple of images, else ``default_workers``."""
    if workers is not None:
        return max(0, workers)
    if n <= 2:
        return 0
    from .batch import default_workers

    return default_workers(device_type)
