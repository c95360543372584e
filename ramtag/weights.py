"""Installed weights: list, download + convert once, import, remove, resolve (the `ramtag weights` commands).

Weights live in ramtag's own format (``model.safetensors`` + ``ramtag.json``, see
:mod:`ramtag.weights_format`) under ``paths.weights_dir()/<name>/``. Registry weights
(:data:`ramtag.registry.WEIGHTS`) are downloaded by :mod:`ramtag.hub` and converted exactly once;
a checkpoint the user already has is converted by :func:`import_checkpoint`. After conversion, nothing
is ever unpickled again.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub, paths
from .errors import (
    CheckpointError,
    DownloadError,
    OfflineError,
    UnknownWeightsError,
    UsageError,
    VocabularyError,
    WeightsError,
)
from .fsutil import fsync_dir
from .registry import (
    DEFAULT_SETUP,
    DEFAULT_WEIGHTS,
    TEXT_ENCODERS,
    WEIGHTS,
    HubFile,
    TextEncoderSpec,
    UrlFile,
    WeightsSpec,
    get_weights_spec,
)
from .tags.vocab import Vocabulary
from .weights_format import META_FILE, OFFICIAL_PREPROCESSING, Preprocessing, sha256_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # a folder name: no separators, no leading dot


@dataclass(frozen=True)
class WeightsInfo:
    """One row of `ramtag weights list`."""

    name: str  # registry or import name (what --weights takes)
    installed: bool  # converted weights are present
    path: Path | None  # the converted directory when installed
    size: int | None  # bytes on disk when installed, else the download size (None if unknown)
    registered: bool  # in the registry (downloadable) rather than imported by the user
    default: bool  # the weights used when none are named
    arch: str | None  # architecture name (registry entry or ramtag.json)
    num_tags: int | None  # built-in vocabulary size when known
    license: str | None  # SPDX licence of the weights when known
    description: str  # one line
    source: str  # where the weights come from (hf://repo/file or the imported path)


def validate_name(name: str) -> str:
    """Return ``name`` if it is usable as a weights name (a plain folder name), else raise UsageError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"invalid weights name {name!r}: use letters, digits, '.', '_', '+', '-' "
            "(no path separators, not starting with '.'), at most 100 characters"
        )
    return name


def weights_path(name: str) -> Path:
    """Where weights called ``name`` are (or would be) installed."""
    return paths.weights_dir() / validate_name(name)


def is_weights_dir(path: Path) -> bool:
    """True when ``path`` is a directory in ramtag's format (has ``ramtag.json``)."""
    return (path / META_FILE).is_file()


def _human(n: int | None) -> str:
    if n is None:
        return "unknown size"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------- list


def list_weights() -> list[WeightsInfo]:
    """Registry entries (installed or not) first, then weights the user imported, by name."""
    out: list[WeightsInfo] = []
    for name, spec in WEIGHTS.items():
        path = paths.weights_dir() / name
        installed = is_weights_dir(path)
        meta = _read_meta(path) if installed else {}
        hub_file = spec.checkpoint
        out.append(
            WeightsInfo(
                name=name,
                installed=installed,
                path=path if installed else None,
                size=_dir_size(path) if installed else hub_file.size,
                registered=True,
                default=name == DEFAULT_WEIGHTS,
                arch=spec.arch,
                num_tags=(meta.get("architecture") or {}).get("num_tags"),
                license=spec.license,
                description=spec.description,
                source=f"hf://{hub_file.repo_id}/{hub_file.filename}",
            )
        )
    for name, enc in TEXT_ENCODERS.items():
        cached = text_encoder_path(name)
        out.append(
            WeightsInfo(
                name=name,
                installed=cached is not None,
                path=cached,
                size=cached.stat().st_size if cached is not None else enc.file.size or enc.approx_bytes,
                registered=True,
                default=False,
                arch="CLIP text encoder",
                num_tags=None,
                license=enc.license,
                description=enc.description,
                source=f"hf://{enc.file.repo_id}/{enc.file.filename}",
            )
        )
    root = paths.weights_dir()
    imported = (
        sorted(
            p
            for p in root.iterdir()
            if p.name not in WEIGHTS and _NAME.fullmatch(p.name) and is_weights_dir(p)
        )
        if root.is_dir()
        else []
    )
    for path in imported:
        meta = _read_meta(path)
        arch = meta.get("architecture") or {}
        prov = meta.get("provenance") or {}
        ckpt = prov.get("checkpoint") or {}
        out.append(
            WeightsInfo(
                name=path.name,
                installed=True,
                path=path,
                size=_dir_size(path),
                registered=False,
                default=False,
                arch=arch.get("name"),
                num_tags=arch.get("num_tags"),
                license=prov.get("license"),
                description=prov.get("description") or f"imported {arch.get('name', 'RAM++')} weights",
                source=str(ckpt.get("path") or prov.get("source") or "imported"),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- conversion


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _install(target: Path, write: Any) -> Path:
    """Run ``write(tmp_dir)`` into a fresh folder beside ``target``, then swap it into place.

    A half-written conversion never sits at ``target``; an existing ``target`` is replaced only after
    the new one is complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def _convert_official(
    checkpoint: Path,
    vocabulary: Vocabulary,
    target: Path,
    *,
    preprocessing: Preprocessing,
    arch: str | None,
    provenance: Mapping[str, Any],
    vocab_files: str,
) -> Path:
    """Official .pth -> ramtag format at ``target`` (strict: every tensor must fit)."""
    from .model.convert import convert_official_state_dict, infer_official_config, read_official_checkpoint
    from .weights_format import save_weights

    log.info("converting %s to ramtag's format", checkpoint)
    official = read_official_checkpoint(checkpoint)
    config = infer_official_config(official, image_size=preprocessing.image_size)
    if arch is not None and config.name != arch:
        raise CheckpointError(
            f"{checkpoint}: is a {config.name!r} checkpoint, but {target.name!r} expects "
            f"{arch!r}; pass the checkpoint that belongs to these weights"
        )
    if len(vocabulary) != config.num_tags:
        raise VocabularyError(
            f"{vocab_files}: {len(vocabulary)} tags, but {checkpoint} was trained with "
            f"{config.num_tags}; pass the tag list and thresholds of this checkpoint"
        )
    state_dict = convert_official_state_dict(official, config, source=str(checkpoint))
    del official
    return _install(
        target,
        lambda tmp: save_weights(
            tmp,
            state_dict=state_dict,
            config=config,
            vocabulary=vocabulary,
            preprocessing=preprocessing,
            provenance=provenance,
        ),
    )


def _url_provenance(f: UrlFile | None) -> dict[str, str] | None:
    return None if f is None else {"url": f.url, "sha256": f.sha256}


def download_weights(
    name: str = DEFAULT_WEIGHTS,
    *,
    force: bool = False,
    keep_download: bool = False,
    progress: bool | hub.ProgressFactory = True,
) -> Path:
    """Download registry weights and convert them once; returns the installed directory.

    Already-converted weights are returned at once (no network) unless ``force``. The checkpoint comes
    from the Hugging Face Hub, the tag files from GitHub (pinned, sha256-checked); the converted folder
    records their sources, revision and sha256s in ``ramtag.json`` (``provenance``). The raw download is
    deleted after a successful conversion unless ``keep_download`` (the converted copy is all ramtag uses).
    """
    if name in TEXT_ENCODERS:
        return download_text_encoder(name, force=force, progress=progress)
    spec = get_weights_spec(validate_name(name))
    target = paths.weights_dir() / name
    if is_weights_dir(target) and not force:
        return target
    try:
        # the small tag files first: a problem with them shows before gigabytes are transferred
        tag_list = hub.fetch_url(spec.tag_list, progress=progress)
        thresholds = hub.fetch_url(spec.thresholds, progress=progress)
        tag_list_zh = hub.fetch_url(spec.tag_list_zh, progress=progress) if spec.tag_list_zh else None
        vocabulary = Vocabulary.from_files(tag_list, thresholds, tag_list_zh)
        checkpoint = hub.fetch_hub_file(spec.checkpoint, progress=progress)
    except OfflineError:
        raise
    except DownloadError as e:  # behind a firewall: say what to bring by hand, not only what failed
        raise DownloadError(f"{e}; without network access: {bring_help(name)}") from e
    ckpt = spec.checkpoint
    provenance = {
        "source": "registry",
        "name": spec.name,
        "description": spec.description,
        "license": spec.license,
        "paper": spec.paper,
        "checkpoint": {
            "repo_id": ckpt.repo_id,
            "filename": ckpt.filename,
            "revision": ckpt.revision,
            "commit": hub.hub_commit(checkpoint),
            "bytes": checkpoint.stat().st_size,
            "sha256": ckpt.sha256 or hub.reported_sha256(checkpoint) or sha256_file(checkpoint),
        },
        "tag_list": _url_provenance(spec.tag_list),
        "tag_list_zh": _url_provenance(spec.tag_list_zh),
        "thresholds": _url_provenance(spec.thresholds),
        "converted_at": _now(),
    }
    out = _convert_official(
        checkpoint,
        vocabulary,
        target,
        preprocessing=spec.preprocessing,
        arch=spec.arch,
        provenance=provenance,
        vocab_files=f"{tag_list} / {thresholds}",
    )
    if not keep_download:
        hub.remove_cached_hub_file(spec.checkpoint)
    log.info("weights %s ready in %s", name, out)
    return out


TEXT_ENCODER_META = "text_encoder.json"  # beside an imported text encoder: its source and sha256


def text_encoder_path(name: str) -> Path | None:
    """The local file of text encoder ``name``: one the user imported, else the downloaded one, else None."""
    folder = paths.weights_dir() / name
    meta = _read_json(folder / TEXT_ENCODER_META)
    imported = folder / str(meta.get("file", ""))
    if meta.get("file") and imported.is_file():
        return imported
    return hub.is_cached(TEXT_ENCODERS[name].file)


def text_encoder_id(name: str) -> str | None:
    """``file-sha256:<hex>`` of an imported text encoder (its embedding-cache identity), else None."""
    meta = _read_json(paths.weights_dir() / name / TEXT_ENCODER_META)
    return f"file-sha256:{meta['sha256']}" if meta.get("sha256") and text_encoder_path(name) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def import_text_encoder(source: Path, *, name: str, force: bool = False) -> Path:
    """Install a CLIP file the user brought (e.g. ``open_clip_model.safetensors`` copied from a machine
    that is online) as text encoder ``name``: copied into the cache with its sha256. The file is not read
    here (weights never import the text stage): :func:`ramtag.text.clip.import_clip` checks it first,
    and loading it reports a bad file by name."""
    target = paths.weights_dir() / name
    if (target / TEXT_ENCODER_META).is_file() and not force:
        raise WeightsError(
            f"{name} is already imported in {target}; `ramtag weights remove {name}` first or pass --force"
        )
    if not source.is_file():
        raise WeightsError(
            f"{source}: not found; pass the CLIP weights file ({TEXT_ENCODERS[name].file.filename})"
        )

    def write(tmp: Path) -> None:
        shutil.copyfile(source, tmp / source.name)
        meta = {
            "name": name,
            "file": source.name,
            "sha256": sha256_file(tmp / source.name),
            "source": str(source.resolve()),
            "imported_at": _now(),
        }
        (tmp / TEXT_ENCODER_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return _install(target, write) / source.name


def download_text_encoder(
    name: str, *, force: bool = False, progress: bool | hub.ProgressFactory = True
) -> Path:
    """Download a registered CLIP text encoder (open-set tags) into the download cache; its path."""
    enc = TEXT_ENCODERS[name]
    if force:
        hub.remove_cached_hub_file(enc.file)
    elif (found := text_encoder_path(name)) is not None:
        return found
    try:
        return hub.fetch_hub_file(enc.file, progress=progress)
    except OfflineError:
        raise OfflineError(offline_help(name)) from None


def download_all(*, force: bool = False, progress: bool | hub.ProgressFactory = True) -> list[Path]:
    """Everything the default setup uses (``registry.DEFAULT_SETUP``): the default weights and CLIP."""
    return [download_weights(name, force=force, progress=progress) for name in DEFAULT_SETUP]


def offline_help(name: str) -> str:
    """One line for weights or a text encoder that are missing while downloads are off: the exact files
    and URLs to bring, the command that installs them, ``--clip`` and ``HF_ENDPOINT``."""
    mirror = "HF_ENDPOINT=https://MIRROR for a Hub mirror"
    off = "downloads are off (HF_HUB_OFFLINE / RAMTAG_OFFLINE)"
    if name in TEXT_ENCODERS:
        enc: TextEncoderSpec = TEXT_ENCODERS[name]
        return (
            f"{name} (needed for open-set tags) is not downloaded and {off}; bring "
            f"{enc.file.filename} from {hub.file_url(enc.file)}, then `ramtag weights import "
            f"{enc.file.filename} --name {name}` (or pass it with --clip FILE), or run "
            f"`ramtag weights download {name}` once while online ({mirror})"
        )
    return (
        f"weights {name!r} are not downloaded and {off}; {bring_help(name)}; or run `ramtag weights "
        f"download --all` once while online ({mirror}); open-set tags also need CLIP ViT-B/16 (`ramtag "
        f"weights download {DEFAULT_SETUP[-1]}` or --clip FILE)"
    )


def bring_help(name: str) -> str:
    """For registry weights ``name``: the exact files and URLs to bring by hand, and the import command."""
    spec = WEIGHTS[name]
    files: list[HubFile | UrlFile] = [spec.checkpoint, spec.tag_list, spec.thresholds]
    files += [spec.tag_list_zh] if spec.tag_list_zh else []
    brought = ", ".join(f"{f.filename} ({hub.file_url(f)})" for f in files)
    zh = f" --tag-list-zh {spec.tag_list_zh.filename}" if spec.tag_list_zh else ""
    return (
        f"bring {brought}, then `ramtag weights import {spec.checkpoint.filename} --name {name} "
        f"--tag-list {spec.tag_list.filename} --thresholds {spec.thresholds.filename}{zh}`"
    )


def _file_provenance(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def import_checkpoint(
    checkpoint: str | Path,
    *,
    tag_list: str | Path | None = None,
    thresholds: str | Path | None = None,
    tag_list_zh: str | Path | None = None,
    name: str,
    force: bool = False,
) -> Path:
    """Install a checkpoint the user already has under ``name``; returns the installed directory.

    ``checkpoint`` is an official-format RAM++ ``.pth`` (converted once, strictly) or a ramtag weights
    directory (copied; its vocabulary is kept unless tag files are given). For a ``.pth``, ``tag_list``
    and ``thresholds`` are required, except when ``name`` is a registry entry: then that entry's pinned
    tag files are used (downloaded once, or already cached). The vocabulary length must equal the
    checkpoint's number of tags (:class:`VocabularyError` naming the files). An existing ``name`` is
    replaced only with ``force``.
    """
    validate_name(name)
    source = Path(checkpoint).expanduser()
    if name in TEXT_ENCODERS:
        return import_text_encoder(source, name=name, force=force)
    target = paths.weights_dir() / name
    _check_import(source, target, name, force, tag_list, thresholds, tag_list_zh)
    given = _given_tag_files(tag_list, thresholds, tag_list_zh)
    if source.is_dir():
        if given is None:
            return _import_weights_dir(source, target, None, {}, name)
        return _import_weights_dir(source, target, given.vocabulary, given.provenance, name)
    spec = WEIGHTS.get(name)
    tags = given if given is not None else _registry_tag_files(source, name, spec)
    return _import_official(source, target, name, spec, tags)


@dataclass(frozen=True)
class _TagFiles:
    """The vocabulary an import installs, and where it came from."""

    vocabulary: Vocabulary  # tags + thresholds (+ Chinese names) to install with the weights
    label: str  # "tag_list / thresholds": named in a VocabularyError when the lengths disagree
    provenance: dict[str, Any]  # the tag_list / thresholds / tag_list_zh entries of ramtag.json


def _check_import(
    source: Path,
    target: Path,
    name: str,
    force: bool,
    tag_list: str | Path | None,
    thresholds: str | Path | None,
    tag_list_zh: str | Path | None,
) -> None:
    """Refuse an import before reading anything: taken name, missing source, half a set of tag files."""
    if is_weights_dir(target) and not force:
        raise WeightsError(
            f"weights {name!r} are already installed in {target}; "
            f"choose another --name or `ramtag weights remove {name}` first"
        )
    if not source.exists():
        raise WeightsError(f"{source}: not found; pass an official RAM++ .pth or a ramtag weights folder")
    if (tag_list is None) != (thresholds is None):
        raise UsageError("pass both a tag list and a threshold list (they match line for line), or neither")
    if tag_list_zh is not None and tag_list is None:
        raise UsageError("a Chinese tag list needs the English tag list and thresholds too")


def _given_tag_files(
    tag_list: str | Path | None, thresholds: str | Path | None, tag_list_zh: str | Path | None
) -> _TagFiles | None:
    """The user's own tag files (--tag-list / --thresholds / --tag-list-zh), or None when not given."""
    if tag_list is None or thresholds is None:
        return None
    tl, th = Path(tag_list).expanduser(), Path(thresholds).expanduser()
    zh = Path(tag_list_zh).expanduser() if tag_list_zh is not None else None
    return _TagFiles(
        Vocabulary.from_files(tl, th, zh),
        f"{tl} / {th}",
        {
            "tag_list": _file_provenance(tl),
            "thresholds": _file_provenance(th),
            "tag_list_zh": _file_provenance(zh),
        },
    )


def _registry_tag_files(source: Path, name: str, spec: WeightsSpec | None) -> _TagFiles:
    """The pinned tag files of registry entry ``name`` (fetched once, or cached) for an official .pth."""
    if spec is None:
        raise UsageError(
            f"{source}: an official checkpoint needs --tag-list and --thresholds "
            f"(or --name one of: {', '.join(WEIGHTS)} to use the registry's tag files)"
        )
    try:
        tl = hub.fetch_url(spec.tag_list)
        th = hub.fetch_url(spec.thresholds)
        zh = hub.fetch_url(spec.tag_list_zh) if spec.tag_list_zh else None
    except OfflineError:
        raise OfflineError(offline_help(name)) from None
    return _TagFiles(
        Vocabulary.from_files(tl, th, zh),
        f"{tl} / {th}",
        {
            "tag_list": _url_provenance(spec.tag_list),
            "thresholds": _url_provenance(spec.thresholds),
            "tag_list_zh": _url_provenance(spec.tag_list_zh),
        },
    )


def _import_official(
    source: Path, target: Path, name: str, spec: WeightsSpec | None, tags: _TagFiles
) -> Path:
    """Convert an official .pth into ``target``, recording where it and its tag files came from."""
    provenance = {
        "source": "import",
        "name": name,
        "description": spec.description if spec else f"imported from {source.name}",
        "license": spec.license if spec else None,
        "checkpoint": _file_provenance(source),
        **tags.provenance,
        "converted_at": _now(),
    }
    return _convert_official(
        source,
        tags.vocabulary,
        target,
        preprocessing=spec.preprocessing if spec else OFFICIAL_PREPROCESSING,
        arch=spec.arch if spec else None,
        provenance=provenance,
        vocab_files=tags.label,
    )


def _import_weights_dir(
    source: Path, target: Path, vocabulary: Vocabulary | None, files: dict[str, Any], name: str
) -> Path:
    """Copy a ramtag weights folder (validated by loading it), optionally with a new vocabulary."""
    from .weights_format import load_weights, save_weights

    if not is_weights_dir(source):
        raise WeightsError(
            f"{source}: a folder without {META_FILE}, so not ramtag weights; "
            "pass an official RAM++ .pth or a folder written by ramtag"
        )
    loaded = load_weights(source, verify=True)
    if vocabulary is not None and len(vocabulary) != loaded.config.num_tags:
        raise VocabularyError(
            f"{files['tag_list']['path']}: {len(vocabulary)} tags, but {source} has "
            f"{loaded.config.num_tags}; pass the tag list and thresholds of these weights"
        )
    provenance = {
        **(loaded.metadata.get("provenance") or {}),
        "imported_from": str(source.resolve()),
        "imported_at": _now(),
        "name": name,
    }
    if vocabulary is not None:
        provenance["vocabulary_replaced_by"] = files
    return _install(
        target,
        lambda tmp: save_weights(
            tmp,
            state_dict=loaded.state_dict,
            config=loaded.config,
            vocabulary=vocabulary or loaded.vocabulary,
            preprocessing=loaded.preprocessing,
            provenance=provenance,
        ),
    )


# ---------------------------------------------------------------------------------------------- vocabulary


def read_vocabulary(spec: str | Path | None = None) -> Vocabulary:
    """The built-in vocabulary of weights ``spec`` (as :func:`resolve_weights` takes it), without torch
    and without loading the model: ``ramtag.json`` of installed weights, else the registry entry's pinned
    tag files (downloaded once, a few hundred KB; the checkpoint itself is not)."""
    name = DEFAULT_WEIGHTS if spec is None else str(spec)
    if name in TEXT_ENCODERS:
        raise UsageError(f"{name} is a CLIP text encoder and has no tag vocabulary; pass RAM++ weights")
    if name in WEIGHTS and not is_weights_dir(paths.weights_dir() / name):
        entry = WEIGHTS[name]
        try:
            zh = hub.fetch_url(entry.tag_list_zh, progress=False) if entry.tag_list_zh else None
            return Vocabulary.from_files(
                hub.fetch_url(entry.tag_list, progress=False),
                hub.fetch_url(entry.thresholds, progress=False),
                zh,
            )
        except OfflineError:
            raise OfflineError(offline_help(name)) from None
    directory = resolve_weights(spec, download=False)
    meta = _read_meta(directory)
    try:
        return Vocabulary.from_dict(meta["vocabulary"])
    except (KeyError, TypeError, ValueError) as e:
        raise VocabularyError(
            f"{directory / META_FILE}: no readable vocabulary ({type(e).__name__}); "
            "re-import these weights with `ramtag weights import`"
        ) from None


# ---------------------------------------------------------------------------------------------- remove


def remove_weights(name: str) -> Path:
    """Delete installed weights ``name`` and any raw download of that registry entry; returns the path."""
    if name in TEXT_ENCODERS:
        found = text_encoder_path(name)
        downloaded = hub.remove_cached_hub_file(TEXT_ENCODERS[name].file)
        imported = paths.weights_dir() / name
        if imported.is_dir():
            shutil.rmtree(imported)
        if found is None and not downloaded:
            raise WeightsError(f"{name} is not installed; see `ramtag weights list`")
        return found or imported
    target = weights_path(name)
    spec = WEIGHTS.get(name)
    had_download = spec is not None and hub.remove_cached_hub_file(spec.checkpoint)
    if not target.exists():
        if had_download:
            return target
        raise WeightsError(f"weights {name!r} are not installed (no {target}); see `ramtag weights list`")
    shutil.rmtree(target)
    return target


# ---------------------------------------------------------------------------------------------- resolve


def resolve_weights(spec: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights directory to load for ``spec``.

    - ``None``: the default registry weights; a registry name: its converted directory, downloaded and
      converted first when missing (``download=True``; one log line says so);
    - an imported name: its directory; a directory with ``ramtag.json``: itself (a plain name is looked up
      as weights first, then as a folder; write ``./NAME`` for the folder);
    - an official ``.pth`` file: an error telling to `ramtag weights import` it.

    Raises :class:`OfflineError` when the weights are missing and downloads are off, :class:`WeightsError`
    for anything unknown.
    """
    if spec is None:
        spec = DEFAULT_WEIGHTS
    text = str(spec)
    as_path = Path(text).expanduser()
    looks_like_path = isinstance(spec, Path) or os.sep in text or bool(os.altsep and os.altsep in text)
    if looks_like_path or not _NAME.fullmatch(text):
        return _resolve_path(as_path)
    # a plain name: installed or registry weights first, then a folder of that name (write ./NAME to force it)
    name = text
    target = paths.weights_dir() / name
    if is_weights_dir(target):
        return target
    if name in TEXT_ENCODERS:
        raise UsageError(
            f"{name} is a CLIP text encoder (for open-set tags), not tagging weights; "
            "pass a RAM++ name to --weights (see `ramtag weights list`)"
        )
    if name not in WEIGHTS and as_path.exists():
        return _resolve_path(as_path)
    if name not in WEIGHTS:
        known = ", ".join(info.name for info in list_weights() if info.name not in TEXT_ENCODERS)
        raise UnknownWeightsError(
            f"unknown weights {name!r}; known: {known}; or pass a ramtag weights folder, "
            "or `ramtag weights import` a checkpoint"
        )
    entry = WEIGHTS[name]
    if not download:
        raise WeightsError(
            f"weights {name!r} are not downloaded; run `ramtag weights download {name}` "
            "or `ramtag weights import` a checkpoint you have"
        )
    if paths.offline():
        raise OfflineError(offline_help(name))
    which = "default weights" if name == DEFAULT_WEIGHTS else "weights"
    log.warning(
        "downloading %s %s from %s (%s, once)",
        which,
        name,
        entry.checkpoint.repo_id,
        _human(entry.checkpoint.size),
    )
    return download_weights(name)


def _resolve_path(path: Path) -> Path:
    if path.is_dir():
        if is_weights_dir(path):
            return path
        raise WeightsError(
            f"{path}: a folder without {META_FILE}, so not ramtag weights; "
            "pass a folder written by `ramtag weights import` or a registry name"
        )
    if path.is_file():
        raise WeightsError(
            f"{path}: a checkpoint file cannot be used directly; convert it once with "
            f"`ramtag weights import {path} --tag-list ... --thresholds ... --name NAME`, "
            "then pass --weights NAME"
        )
    raise WeightsError(
        f"{path}: no such file or folder; pass a registry name (see `ramtag weights list`) "
        "or a ramtag weights folder"
    )
