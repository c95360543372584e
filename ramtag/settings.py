"""A tagging run's settings: the option dataclasses, built from a config file, ``--set`` overrides and
the command line's flags (what ``ramtag tag --config FILE --set KEY=VALUE`` reads).

Each section of the file is one option dataclass, its keys are the field names::

    [model]                  # ModelOptions: which model, where
    precision = "fp32"
    [tag]                    # TagOptions: how to decide, which inputs
    threshold = 0.7
    [write]                  # WriteOptions: where the tags go
    hierarchy_root = ""
    [open_set]               # OpenSetOptions: your own tags
    tags = "corgi, meteor shower=0.6"

Precedence: the dataclass defaults < the file < ``--set section.key=value`` < flags given on the
command line. Keys and values are checked by :mod:`ramtag.config`; a new field of one of these
dataclasses is a new key, with nothing to add here. No torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .errors import InputError, UsageError, WeightsError
from .options import (
    DECODES,
    LANGS,
    PRECISIONS,
    SIDECAR_NAMES,
    ModelOptions,
    OpenSetOptions,
    TagOptions,
    WriteOptions,
)

__all__ = ["SECTIONS", "TagSettings", "check_settings", "settings_key", "tag_settings"]

# section name -> its dataclass; a flag named like a field belongs to the first section that has it
SECTIONS: dict[str, type] = {
    "tag": TagOptions,
    "write": WriteOptions,
    "open_set": OpenSetOptions,
    "model": ModelOptions,
}
# values a str field takes (the flags' choices; device is checked where it is chosen, it takes cuda:N)
_CHOICES: dict[str, dict[str, Sequence[str]]] = {
    "tag": {"lang": LANGS, "decode": DECODES},
    "write": {"sidecar_name": SIDECAR_NAMES},
    "model": {"precision": PRECISIONS},
}
# (low, high) of numeric fields, as the flags' min/max
_RANGES: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "tag": {"threshold": (0.0, 1.0), "top_k": (1, None), "batch_size": (1, None), "workers": (0, None)},
    "open_set": {"threshold": (0.0, 1.0)},
}


@dataclass
class TagSettings:
    """Everything a ``ramtag tag`` run was asked to do (the catalog and --force aside)."""

    model: ModelOptions = field(default_factory=ModelOptions)
    tag: TagOptions = field(default_factory=TagOptions)
    write: WriteOptions = field(default_factory=WriteOptions)
    open_set: OpenSetOptions = field(default_factory=OpenSetOptions)
    json_to_stdout: bool = False  # the JSON Lines file was '-': the caller prints each result itself


def settings_key(name: str) -> str | None:
    """``"threshold"`` -> ``"tag.threshold"``: the first section with a field ``name``, else None."""
    return next((f"{s}.{name}" for s, cls in SECTIONS.items() if name in config.field_names(cls)), None)


def _check(section: str, values: Mapping[str, Any], where: str, *, texts: bool = False) -> dict[str, Any]:
    cls = SECTIONS.get(section)
    if cls is None:
        raise config.unknown(section, list(SECTIONS), where, "section")
    from .writers import WRITERS  # (a registry: read when used, so a writer added at run time counts)

    choices = {**_CHOICES.get(section, {}), **({"mode": tuple(WRITERS)} if section == "write" else {})}
    checked = config.check_values(cls, values, where, choices=choices, texts=texts)
    for key, (low, high) in _RANGES.get(section, {}).items():
        v = checked.get(key)
        if v is not None and ((low is not None and v < low) or (high is not None and v > high)):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise UsageError(f"{where}: {key} takes a value {span}, not {v!r}")
    return checked


def _read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {}
    for section, table in config.read_file(path, "config file", "--config").items():
        if not isinstance(table, dict):  # a key outside any section
            key = settings_key(section)
            where = f"put it under [{key.split('.')[0]}]" if key else f"sections: {', '.join(SECTIONS)}"
            raise UsageError(f"{path}: {section!r} is not in a section; {where}")
        values[section] = _check(section, table, f"{path} [{section}]")
    return values


def tag_settings(
    config_file: str | Path | None = None,
    sets: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> TagSettings:
    """The settings from a config file (or none), ``--set section.key=value`` texts and the flags given
    on the command line (``{"tag.threshold": 0.7}``, already typed), each over the one before."""
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, checked in (_read_config(config_file) if config_file is not None else {}).items():
        values[section] |= checked
    for key, text in config.split_set(sets, "tag.threshold=0.7"):
        # an error names the setting; a key's value (llm_api_key, or a typo of it) is never echoed
        secret = any(word in key.lower() for word in ("key", "api", "token", "secret"))
        where = f"--set {key}=***" if secret else f"--set {key}={text}"
        section, dot, name = key.partition(".")
        if not dot:
            hint = settings_key(key) or "tag.threshold"
            raise UsageError(f"{where}: use SECTION.KEY=VALUE, e.g. --set {hint}={text or '...'}")
        checked = _check(section, {name: text}, where, texts=True)
        values[section] |= checked
    for key, value in (flags or {}).items():  # typed by the command line; checked the same way
        section, _, name = key.partition(".")
        checked = _check(section, {name: value}, f"--{name.replace('_', '-')}")
        values[section] |= checked
    parts = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    write: WriteOptions = parts["write"]
    to_stdout = write.json_path is not None and str(write.json_path) == "-"
    if to_stdout:
        write.json_path = None
    return TagSettings(**parts, json_to_stdout=to_stdout)


def check_settings(settings: TagSettings, catalog: Path | None = None) -> None:
    """The checks that need no model (run first, so a typo fails at once): the weights name, the
    output and catalog locations, the open-set tags."""
    from .registry import WEIGHTS
    from .text.openset import parse_open_set
    from .weights import resolve_weights

    weights = settings.model.weights
    try:
        resolve_weights(weights, download=False)
    except WeightsError:
        if weights is not None and weights not in WEIGHTS:
            raise  # unknown names and bad folders; registry weights are downloaded when the model loads
    for path, what, option in (
        (catalog, "catalog", "--catalog"),
        (settings.write.json_path, "JSON Lines file", "--json"),
    ):
        if path is None:
            continue
        folder = path.expanduser().absolute().parent
        if path.is_dir():
            raise InputError(f"{path}: is a folder; {option} needs a file name for the {what}")
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder for the {what}; create it or fix {option}")
    opts = settings.open_set
    parse_open_set(opts.tags, opts.tags_file, opts.threshold)
