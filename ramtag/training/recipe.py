"""Training recipes and ``--set key=value`` overrides, both checked against :class:`TrainOptions`.

Precedence: the TrainOptions defaults < the recipe file (TOML or JSON, keys = field names) < the
overrides (``ramtag train --set``, then the command line's own flags). Every key and value is checked
here, once: an unknown key or a value of the wrong type is a one-line :class:`UsageError` naming it.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from .trainer import TrainOptions

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainOptions)


def option_names() -> list[str]:
    """The keys a recipe or ``--set`` may use (the TrainOptions fields)."""
    return [f.name for f in fields(TrainOptions)]


def _unknown(key: str, where: str) -> UsageError:
    names = option_names()
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return UsageError(f"{where}: unknown option {key!r}; {hint}valid: {', '.join(names)}")


def _describe(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + " or none"
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0])}"
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", Path: "a path"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp``: strings (``--set``) are parsed, typed values (TOML/JSON) are checked."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value)
    if origin is list:
        (item,) = typing.get_args(tp)
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError
        return [_convert(item, v) for v in items]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        raise ValueError
    if tp in (int, float):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = float(value) if tp is float else int(value)
        if tp is int and not isinstance(value, int):
            raise ValueError
        if not isinstance(value, int | float):
            raise ValueError
        return tp(value)
    if tp is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise ValueError
        return Path(value).expanduser()
    if tp is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    return value  # pragma: no cover - every TrainOptions field type is handled above


def check_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` converted to the TrainOptions field types; UsageError naming ``where`` otherwise."""
    types_ = _field_types()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types_:
            raise _unknown(key, where)
        try:
            out[key] = _convert(types_[key], value)
        except (ValueError, TypeError):
            raise UsageError(f"{where}: {key} takes {_describe(types_[key])}, not {value!r}") from None
    return out


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-5", "grad_checkpointing=true"]`` -> ``{"lr": 1e-05, "grad_checkpointing": True}``.

    Keys may be written with '-' too (``max-steps=10``); a list field (``data``) takes commas.
    """
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: use KEY=VALUE, e.g. --set lr=1e-5")
        raw[key.strip().replace("-", "_")] = value.strip()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out |= check_values({key: value}, f"--set {key}={value}")
    return out


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The checked values of a recipe file (TOML, or JSON by its suffix)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{p}: cannot read the recipe ({e.strerror}); check --recipe") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib  # type: ignore[import-not-found,unused-ignore]
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
            data = tomllib.loads(text)
    except ValueError as e:
        raise InputError(f"{p}: not a valid recipe ({e}); keys are TrainOptions field names") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: a recipe is a table of TrainOptions field names and values")
    return check_values(data, str(p))


def options_from_recipe(path: str | Path | None, **overrides: Any) -> TrainOptions:
    """TrainOptions from a recipe file (or none) and overrides; overrides that are None are not given."""
    merged = read_recipe(path) if path is not None else {}
    merged |= check_values({k: v for k, v in overrides.items() if v is not None}, "option")
    if not merged.get("data") or merged.get("out") is None:
        where = f"{path}: a recipe run" if path is not None else "training"
        raise UsageError(f"{where} needs --data and --out (on the command line or in the recipe)")
    return TrainOptions(**merged)
