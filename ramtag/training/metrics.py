"""Multi-label tagging metrics on a score matrix: average precision, P/R/F1, threshold calibration.

Everything works on ``scores`` (N, T) in [0, 1] and ``targets`` (N, T) in {0, 1} as torch tensors
on the CPU; tags without a single positive have no AP (NaN) and are left out of the mAP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-tag AP: mean over the positives of the precision at their rank (scores descending).

    scores, targets: (N, T). Returns (T,) float64; NaN where a tag has no positive. Ties are broken
    pessimistically (negatives first) so a constant score gets the AP of the positive rate, not 1.
    """
    s = scores.double()
    y = targets.double()
    # Sort by score descending; among equal scores put negatives first (pessimistic tie-break).
    key = s * 2.0 - y * 1e-12 if s.numel() else s
    order = torch.argsort(key, dim=0, descending=True, stable=True)  # (N, T)
    y_sorted = torch.gather(y, 0, order)  # (N, T)
    tp = torch.cumsum(y_sorted, dim=0)  # (N, T) true positives at each cut
    rank = torch.arange(1, s.shape[0] + 1, dtype=torch.float64).unsqueeze(1)  # (N, 1)
    precision = tp / rank
    positives = y.sum(dim=0)  # (T,)
    ap = (precision * y_sorted).sum(dim=0) / positives
    return torch.where(positives > 0, ap, torch.full_like(ap, math.nan))


@dataclass(frozen=True)
class Counts:
    """Confusion counts at a threshold."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def confusion(scores: Tensor, targets: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-tag (tp, fp, fn) as (T,) int64 with the strict rule ``score > threshold``."""
    pred = scores > thresholds.to(scores.dtype).unsqueeze(0)  # (N, T)
    y = targets > 0.5
    tp = (pred & y).sum(dim=0)
    fp = (pred & ~y).sum(dim=0)
    fn = (~pred & y).sum(dim=0)
    return tp, fp, fn


def best_f1_thresholds(scores: Tensor, targets: Tensor, current: Tensor) -> Tensor:
    """Per-tag threshold maximising F1 on (scores, targets) with the rule ``score > threshold``.

    Candidates are the midpoints between consecutive distinct scores (and just below the lowest).
    Tags with no positive, or where no threshold gives F1 > 0, keep ``current``. Returns (T,) float64.
    """
    out = current.double().clone()
    for t in range(scores.shape[1]):
        y = targets[:, t] > 0.5
        npos = int(y.sum())
        if npos == 0:
            continue
        s, order = torch.sort(scores[:, t].double(), descending=True)
        ys = y[order]
        tp = torch.cumsum(ys.double(), 0)  # predicting the top k+1 as positive
        fp = torch.arange(1, len(s) + 1, dtype=torch.float64) - tp
        # only cut where the next score is strictly lower (ties are all in or all out)
        valid = torch.ones(len(s), dtype=torch.bool)
        valid[:-1] = s[:-1] > s[1:]
        f1 = 2 * tp / (2 * tp + fp + (npos - tp))
        f1 = torch.where(valid, f1, torch.full_like(f1, -1.0))
        k = int(torch.argmax(f1))
        if f1[k] <= 0:
            continue
        lower = float(s[k + 1]) if k + 1 < len(s) else max(0.0, float(s[k]) - 1e-6)
        out[t] = (float(s[k]) + lower) / 2.0
    return out


@dataclass
class TagMetrics:
    """Metrics of one tag on one split."""

    name: str
    positives: int  # images that have the tag
    predicted: int  # images where score > threshold
    threshold: float
    ap: float | None  # None when the tag has no positive here
    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class SplitMetrics:
    """Metrics of one split."""

    name: str
    images: int  # images evaluated
    skipped: int  # images that could not be read
    tags_with_positives: int
    mAP: float | None  # mean AP over tags with at least one positive
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float  # mean over tags with positives
    macro_recall: float
    macro_f1: float
    per_tag: list[TagMetrics]

    def worst(self, n: int = 10, min_positives: int = 1) -> list[TagMetrics]:
        """The ``n`` tags with the lowest AP (then F1) among those with >= ``min_positives`` positives."""
        cands = [m for m in self.per_tag if m.positives >= min_positives and m.ap is not None]
        return sorted(cands, key=lambda m: (m.ap if m.ap is not None else 0.0, m.f1, m.name))[:n]

    def to_dict(self, *, per_tag: bool = True, worst: int = 10) -> dict[str, Any]:
        d: dict[str, Any] = {
            k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "per_tag"
        }
        d["worst_tags"] = [m.to_dict() for m in self.worst(worst)]
        if per_tag:
            d["per_tag"] = [m.to_dict() for m in self.per_tag if m.positives or m.predicted]
        return d


def split_metrics(
    name: str, names: list[str], scores: Tensor, targets: Tensor, thresholds: Tensor, *, skipped: int = 0
) -> SplitMetrics:
    """All metrics of one split. scores/targets (N, T); thresholds (T,)."""
    ap = average_precision(scores, targets) if scores.shape[0] else torch.full((len(names),), math.nan)
    tp, fp, fn = confusion(scores, targets, thresholds)
    positives = (targets > 0.5).sum(dim=0)
    per_tag: list[TagMetrics] = []
    for t, tag in enumerate(names):
        c = Counts(int(tp[t]), int(fp[t]), int(fn[t]))
        a = float(ap[t])
        per_tag.append(
            TagMetrics(
                tag,
                int(positives[t]),
                int(tp[t] + fp[t]),
                float(thresholds[t]),
                None if math.isnan(a) else a,
                c.precision,
                c.recall,
                c.f1,
            )
        )
    with_pos = [m for m in per_tag if m.positives > 0]
    total = Counts(int(tp.sum()), int(fp.sum()), int(fn.sum()))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    aps = [m.ap for m in with_pos if m.ap is not None]
    return SplitMetrics(
        name=name,
        images=int(scores.shape[0]),
        skipped=skipped,
        tags_with_positives=len(with_pos),
        mAP=mean(aps) if aps else None,
        micro_precision=total.precision,
        micro_recall=total.recall,
        micro_f1=total.f1,
        macro_precision=mean([m.precision for m in with_pos]),
        macro_recall=mean([m.recall for m in with_pos]),
        macro_f1=mean([m.f1 for m in with_pos]),
        per_tag=per_tag,
    )
