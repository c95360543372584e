"""Training recipes and ``--set key=value`` overrides, both checked against :class:`TrainOptions`.

Precedence: the TrainOptions defaults < the recipe file (TOML or JSON, keys = field names) < the
overrides (``ramtag train --set``, then the command line's own flags). The reading and checking is
:mod:`ramtag.config`'s (shared with ``ramtag tag --config``); what is here is TrainOptions' part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import config
from ..errors import UsageError
from .trainer import TrainOptions


def option_names() -> list[str]:
    """The keys a recipe or ``--set`` may use (the TrainOptions fields)."""
    return config.field_names(TrainOptions)


def check_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` converted to the TrainOptions field types; UsageError naming ``where`` otherwise."""
    return config.check_values(TrainOptions, values, where)


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-5", "grad_checkpointing=true"]`` -> ``{"lr": 1e-05, "grad_checkpointing": True}``.

    Keys may be written with '-' too (``max-steps=10``); a list field (``data``) takes commas.
    """
    out: dict[str, Any] = {}
    for key, text in config.split_set(items, "lr=1e-5"):
        out |= config.check_values(TrainOptions, {key: text}, f"--set {key}={text}", texts=True)
    return out


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The checked values of a recipe file (TOML, or JSON by its suffix)."""
    return check_values(config.read_file(path, "recipe", "--recipe"), str(path))


def options_from_recipe(path: str | Path | None, **overrides: Any) -> TrainOptions:
    """TrainOptions from a recipe file (or none) and overrides; overrides that are None are not given."""
    merged = read_recipe(path) if path is not None else {}
    merged |= check_values({k: v for k, v in overrides.items() if v is not None}, "option")
    if not merged.get("data") or merged.get("out") is None:
        where = f"{path}: a recipe run" if path is not None else "training"
        raise UsageError(f"{where} needs --data and --out (on the command line or in the recipe)")
    return TrainOptions(**merged)
