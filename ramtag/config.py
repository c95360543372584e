"""Config files and ``--set key=value`` overrides, checked against option dataclasses (spaCy's pattern).

Used by ``ramtag tag --config/--set`` (sections of several dataclasses, see :mod:`ramtag.settings`) and
``ramtag train --recipe/--set`` (one dataclass, see ``ramtag.training.recipe``). A file is TOML (or JSON
by its suffix); a ``--set`` value is read as a TOML value (``0.5``, ``true``, ``["a", "b"]``,
``{dog = "hound"}``) or else taken as written, so ``--set write.hierarchy_root=people`` needs no quotes.
Every key and value is checked here, once: an unknown key, or a value of the wrong type, is a one-line
:class:`~ramtag.errors.UsageError` naming it (and the close spellings). No torch, no typer.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import InputError, UsageError

if typing.TYPE_CHECKING:
    import tomllib
else:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

__all__ = [
    "check_values",
    "field_names",
    "from_text",
    "read_file",
    "split_set",
    "unknown",
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null")


def field_names(cls: type) -> list[str]:
    """The keys a file or ``--set`` may use for dataclass ``cls`` (its field names)."""
    return [f.name for f in fields(cls)]


def unknown(key: str, names: Sequence[str], where: str, what: str = "option") -> UsageError:
    """The one-line error for a key that is not one of ``names``, with the closest spelling."""
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return UsageError(f"{where}: unknown {what} {key!r}; {hint}valid: {', '.join(names)}")


def _describe(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + " or none"
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f'a table of {_describe(args[0])} to {_describe(args[1])}, e.g. {{old = "new"}}'
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", Path: "a path"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp``: strings (``--set``, env) are parsed, typed values (TOML/JSON) checked."""
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
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if isinstance(value, str):  # --set section.key=old=new,a=b
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            if not all(sep for _, sep, _ in pairs):
                raise ValueError
            value = {k.strip(): v.strip() for k, _, v in pairs}
        if not isinstance(value, dict):
            raise ValueError
        return {_convert(key_tp, k): _convert(value_tp, v) for k, v in value.items()}
    return _convert_scalar(tp, value)


def _convert_scalar(tp: Any, value: Any) -> Any:
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
    raise TypeError(f"no conversion to {tp}")  # pragma: no cover - a new field type: add it above


def _is_text(tp: Any) -> bool:
    """A str or Path field (optional or not): a --set value for it is taken as written."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    return tp in (str, Path)


def from_text(tp: Any, text: str) -> Any:
    """A ``--set`` value for a field of type ``tp``: a TOML value (``0.5``, ``true``, ``[1, 2]``,
    ``{dog = "hound"}``, ``"quoted"``), or else the text as written (``fp32``, ``a,b``, ``none``)."""
    text = text.strip()
    if _is_text(tp) and not text.startswith(('"', "'")):
        return text  # a name or path: '123' stays text, '~' is expanded by the conversion
    try:
        parsed = tomllib.loads(f"v = {text}")
    except ValueError:
        return text
    return parsed["v"] if len(parsed) == 1 else text  # 'x\ny = 2' is text, never two keys


def check_values(
    cls: type,
    values: Mapping[str, Any],
    where: str,
    *,
    choices: Mapping[str, Sequence[Any]] | None = None,
    texts: bool = False,
) -> dict[str, Any]:
    """``values`` converted to the types of dataclass ``cls``'s fields; a UsageError naming ``where``
    for an unknown key, a value of the wrong type, or one not among ``choices[key]``. ``texts``: the
    values are ``--set`` texts (:func:`from_text`)."""
    types_ = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types_:
            raise unknown(key, field_names(cls), where)
        tp = types_[key]
        try:
            out[key] = _convert(tp, from_text(tp, value) if texts else value)
        except (ValueError, TypeError):
            raise UsageError(f"{where}: {key} takes {_describe(tp)}, not {value!r}") from None
        allowed = (choices or {}).get(key)
        if allowed is not None and out[key] is not None and out[key] not in allowed:
            names = ", ".join(map(str, allowed))
            raise UsageError(f"{where}: {key} takes one of {names}, not {out[key]!r}")
    return out


def split_set(items: Iterable[str], example: str) -> list[tuple[str, str]]:
    """``["lr=1e-5", "max-steps=10"]`` -> ``[("lr", "1e-5"), ("max_steps", "10")]``, in order (a later
    one wins); keys may be written with '-'. ``example``: shown when an item has no '='."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: use KEY=VALUE, e.g. --set {example}")
        out.append((key.strip().replace("-", "_"), value.strip()))
    return out


def read_file(path: str | Path, what: str, option: str) -> dict[str, Any]:
    """The table in a TOML file (or JSON by its suffix). InputError naming the file and ``option`` when
    it cannot be read; UsageError (exit 2) when it is not valid TOML/JSON or not a table."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror}); check {option}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: the {what} is not UTF-8 text; check {option}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except ValueError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{p}: not a valid {what} ({reason})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p}: a {what} is a table of names and values")
    return data
