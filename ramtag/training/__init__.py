"""Training and evaluation of RAM++ (imported only by ``ramtag train`` / ``ramtag eval``).

- :func:`train` / :class:`TrainOptions` / :class:`TrainResult` / :class:`TrainProgress`: pre-train or
  fine-tune (``trainer.py``)
- :func:`dry_run` / :class:`DryRunReport`: show the tags parsed from the captions, load nothing
- :func:`evaluate` / :class:`EvalOptions` / :class:`EvalReport`: mAP, P/R/F1, threshold calibration
- :func:`options_from_recipe` / :func:`parse_set`: recipe files and ``key=value`` overrides (``recipe.py``)

The reports are rendered by the CLI (``ramtag/cli/render.py``); nothing here prints or imports rich.
"""

from __future__ import annotations

from .evaluate import EvalOptions, EvalReport, evaluate
from .recipe import options_from_recipe, parse_set
from .trainer import DryRunReport, TrainOptions, TrainProgress, TrainResult, dry_run, train

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
    "parse_set",
    "train",
]
