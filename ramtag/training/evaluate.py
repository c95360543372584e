"""``ramtag eval``: mAP and P/R/F1 of a set of weights on captioned/tagged images, per split and per tag.

    ramtag eval --data test.jsonl --weights ./my-model [--json]
    ramtag eval --data val=val.jsonl --data test=test.jsonl --weights ./my-model --calibrate

Ground truth per image = explicit tags + vocabulary tags found in its captions (as in training).
Images are preprocessed exactly as ``ramtag tag`` does (the weights' own transform). ``--calibrate``
picks, per tag, the threshold that maximises F1 on the validation split and writes the new
thresholds into the weights' ``ramtag.json`` (the previous ones are kept in its provenance).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..batch import default_workers
from ..errors import UsageError
from ..fsutil import atomic_write_bytes
from .data import Record, TaggingDataset, collate, load_data
from .metrics import SplitMetrics, best_f1_thresholds, split_metrics

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """Options of ``ramtag eval`` (one field per command-line option)."""

    data: list[str]  # --data, repeatable; "NAME=PATH" names the split (val=..., test=...)
    weights: str | None = None  # --weights: registry name or ramtag weights folder (default weights if None)
    batch_size: int = 16  # --batch-size
    device: str = "auto"  # --device: auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # --precision: auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16
    num_workers: int | None = None  # --workers: decoding processes (default min(4, CPUs))
    image_root: Path | None = None  # --image-root: base folder for relative image paths of official json
    calibrate: bool = False  # --calibrate: fit per-tag thresholds on the validation split and save them
    calibrate_split: str = "val"  # --calibrate-split: which split to fit thresholds on
    worst: int = 10  # --worst: how many worst tags to list per split
    min_positives: int = 1  # --min-positives: worst-tag list only considers tags with this many positives
    exif_orientation: bool = True  # --no-exif-orientation to tag images as stored


@dataclass
class EvalReport:
    """What ``ramtag eval`` found; :meth:`to_dict` is the ``--json`` output."""

    weights: str  # the weights folder evaluated
    num_tags: int
    splits: list[SplitMetrics]  # metrics at the weights' thresholds
    calibrated: list[SplitMetrics] | None = None  # the same at the calibrated thresholds
    calibration: dict[str, Any] | None = None  # split, tags changed, where they were saved
    problems: list[str] = field(default_factory=list)  # skipped data entries (missing images, bad lines)
    unknown_tags: dict[str, int] = field(default_factory=dict)  # explicit tags not in the vocabulary
    worst: int = 10

    def to_dict(self, *, per_tag: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "weights": self.weights,
            "num_tags": self.num_tags,
            "splits": {s.name: s.to_dict(per_tag=per_tag, worst=self.worst) for s in self.splits},
        }
        if self.calibrated is not None:
            d["calibrated"] = {s.name: s.to_dict(per_tag=per_tag, worst=self.worst) for s in self.calibrated}
        if self.calibration is not None:
            d["calibration"] = self.calibration
        if self.problems:
            d["problems"] = self.problems
        if self.unknown_tags:
            d["unknown_tags"] = self.unknown_tags
        return d


OFFICIAL_NUM_TAGS = 4585  # size of the official tag list that union_label_id indexes


def official_id_names(names: Sequence[str]) -> list[str] | None:
    """The names official ``union_label_id`` values index: the first 4,585 tags of a vocabulary that
    starts with the official list (official or official + new tags), else None."""
    return list(names[:OFFICIAL_NUM_TAGS]) if len(names) >= OFFICIAL_NUM_TAGS else None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError(f"--precision {precision!r} is unknown; choose auto, fp32, bf16 or fp16")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


@torch.no_grad()
def score_records(
    model: torch.nn.Module,
    records: Sequence[Record],
    positives: Sequence[Sequence[int]],
    num_tags: int,
    transform: Callable[..., Any],
    *,
    device: torch.device,
    batch_size: int = 16,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    exif_orientation: bool = True,
) -> tuple[Tensor, Tensor, list[str]]:
    """Run ``model`` over ``records``: (scores (N, T) float32, targets (N, T) float32, skipped reasons).

    Rows follow the records that could be read (unreadable ones are listed in the third value).
    """
    from torch.utils.data import DataLoader

    dataset = TaggingDataset(records, positives, num_tags, transform, exif_orientation=exif_orientation)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    was_training = model.training
    model.eval()
    scores: list[Tensor] = []
    targets: list[Tensor] = []
    skipped: list[str] = []
    for batch in loader:
        skipped.extend(f.reason for f in batch.failures)
        if not len(batch):
            continue
        images = batch.images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)  # (B, T)
        scores.append(torch.sigmoid(logits.float()).cpu())
        targets.append(batch.targets)
    model.train(was_training)
    if not scores:
        return torch.zeros(0, num_tags), torch.zeros(0, num_tags), skipped
    return torch.cat(scores), torch.cat(targets), skipped


def evaluate(options: EvalOptions) -> EvalReport:
    """Evaluate weights on the data; with ``calibrate`` also fit and save per-tag thresholds."""
    from ..preprocess import make_transform
    from ..weights import resolve_weights
    from ..weights_format import build_model, load_weights
    from .data import build_targets
    from .distributed import pick_device

    directory = resolve_weights(options.weights)
    loaded = load_weights(directory)
    vocab = loaded.vocabulary
    device = pick_device(options.device)
    amp = autocast_dtype(options.precision, device)
    model = build_model(loaded, device=device)
    base_transform = make_transform(loaded.preprocessing)

    def transform(image: Any, rng: Any = None) -> tuple[Tensor, None]:
        return base_transform(image), None

    records = load_data(options.data, image_root=options.image_root)
    for p in records.problems:
        log.warning("%s", p)
    workers = options.num_workers if options.num_workers is not None else default_workers()
    splits = records.splits()
    if not splits:
        raise UsageError("no usable images in --data (every entry was skipped; see the warnings above)")
    if options.calibrate and options.calibrate_split not in splits:
        raise UsageError(
            f"--calibrate needs a {options.calibrate_split!r} split; pass --data "
            f'{options.calibrate_split}=FILE or give records a "split" field (found: {", ".join(splits)})'
        )

    report = EvalReport(
        weights=str(directory),
        num_tags=len(vocab),
        splits=[],
        problems=list(records.problems),
        worst=options.worst,
    )
    thresholds = torch.tensor(vocab.thresholds, dtype=torch.float64)
    names = list(vocab.names)
    results: dict[str, tuple[Tensor, Tensor, int]] = {}
    unknown: dict[str, int] = {}
    for name, recs in splits.items():
        targets_info = build_targets(recs, names, id_names=official_id_names(names))
        for tag, n in targets_info.unknown_tags.items():
            unknown[tag] = unknown.get(tag, 0) + n
        scores, targets, skipped = score_records(
            model,
            recs,
            targets_info.positives,
            len(vocab),
            transform,
            device=device,
            batch_size=options.batch_size,
            num_workers=workers,
            amp_dtype=amp,
            exif_orientation=options.exif_orientation,
        )
        for reason in skipped:
            log.warning("skipped: %s", reason)
        report.problems.extend(f"skipped: {r}" for r in skipped)
        results[name] = (scores, targets, len(skipped))
        report.splits.append(split_metrics(name, names, scores, targets, thresholds, skipped=len(skipped)))
    report.unknown_tags = unknown

    if options.calibrate:
        scores, targets, _ = results[options.calibrate_split]
        new = best_f1_thresholds(scores, targets, thresholds)
        changed = int((new != thresholds).sum())
        report.calibrated = [
            split_metrics(n, names, s, t, new, skipped=k) for n, (s, t, k) in results.items()
        ]
        save_thresholds(
            directory,
            [float(x) for x in new],
            {
                "split": options.calibrate_split,
                "data": [str(d) for d in options.data],
                "images": int(scores.shape[0]),
                "tags_changed": changed,
            },
        )
        report.calibration = {
            "split": options.calibrate_split,
            "tags_changed": changed,
            "saved_to": str(Path(directory) / "ramtag.json"),
        }
    return report


def save_thresholds(directory: str | Path, thresholds: Sequence[float], info: dict[str, Any]) -> Path:
    """Write new per-tag thresholds into a weights folder's ``ramtag.json`` (atomically).

    Only the JSON changes (``model.safetensors`` and its recorded sha256 stay valid). The previous
    thresholds are kept under ``provenance.calibration.previous_thresholds`` so they can be restored.
    """
    from ..weights_format import META_FILE

    path = Path(directory) / META_FILE
    meta = json.loads(path.read_text(encoding="utf-8"))
    vocab = meta["vocabulary"]
    if len(thresholds) != len(vocab["names"]):
        raise UsageError(f"{path}: {len(vocab['names'])} tags but {len(thresholds)} thresholds")
    previous = vocab["thresholds"]
    vocab["thresholds"] = [round(float(t), 6) for t in thresholds]
    provenance = meta.setdefault("provenance", {})
    history = provenance.get("calibration", {}).get("previous_thresholds", previous)
    provenance["calibration"] = {
        **info,
        "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "previous_thresholds": history,
    }
    atomic_write_bytes(path, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
