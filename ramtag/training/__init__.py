"""Training and evaluation of RAM++ (imported only by ``ramtag train`` / ``ramtag eval``).

- :func:`train` / :class:`TrainOptions` / :class:`TrainResult`: pre-train or fine-tune (``trainer.py``)
- :func:`dry_run` / :class:`DryRunReport`: show the tags parsed from the captions, load nothing
- :func:`evaluate` / :class:`EvalOptions` / :class:`EvalReport`: mAP, P/R/F1, threshold calibration
- :mod:`.render`: rich tables for the reports (kept apart from the computations)
"""

from __future__ import annotations

from .evaluate import EvalOptions, EvalReport, evaluate
from .trainer import (
    DryRunReport,
    TrainOptions,
    TrainProgress,
    TrainResult,
    dry_run,
    options_from_recipe,
    train,
)

__all__ = [
    "DryRunReport",
    "EvalOptions",
    "EvalReport",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "dry_run",
    "evaluate",
    "options_from_recipe",
    "train",
]
