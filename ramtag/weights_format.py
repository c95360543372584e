"""ramtag's own weights format: a directory with ``model.safetensors`` + ``ramtag.json``.

``model.safetensors`` holds the tensors under ramtag's names (:class:`ramtag.model.RamPlus`);
it is read with safetensors, never unpickled. ``ramtag.json`` holds everything else needed to use them::

    {"format": "ramtag-weights", "format_version": 1,
     "architecture": RamPlusConfig.to_dict(),
     "vocabulary": Vocabulary.to_dict(),          # names, thresholds, names_zh, open_set
     "preprocessing": Preprocessing.to_dict(),
     "provenance": {...},                         # where the files and descriptions came from, sha256s
     "files": {"model.safetensors": {"bytes": n, "sha256": "..."}}}

Both files are written atomically; ``ramtag.json`` is written last, so a directory with a
``ramtag.json`` always has the matching tensors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, VocabularyError, WeightsError
from .fsutil import atomic_path
from .model.config import RamPlusConfig
from .tags.vocab import Vocabulary

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .model.ram_plus import RamPlus

FORMAT = "ramtag-weights"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "ramtag.json"
_FIX = "re-import with `ramtag weights import` (or `ramtag weights download` for registry weights)"


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input; stored with the weights, applied by :mod:`ramtag.preprocess`."""

    image_size: int  # square input side S in pixels; images are resized to S x S
    mean: tuple[float, float, float]  # per-channel mean subtracted after scaling pixels to [0, 1] (RGB order)
    std: tuple[float, float, float]  # per-channel std the result is divided by (RGB order)
    interpolation: str = "bilinear"  # Pillow resampling filter: "bilinear" (official), "bicubic", "nearest"
    resize: str = "squash"  # "squash": resize straight to S x S, aspect ratio NOT kept (official)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        return cls(
            image_size=int(data["image_size"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
            resize=str(data.get("resize", "squash")),
        )


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


# The official RAM++ transform (ram.get_transform(384)): squash to 384 x 384, ImageNet mean / std.
OFFICIAL_PREPROCESSING = Preprocessing(image_size=384, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass
class LoadedWeights:
    """Everything :func:`load_weights` read from one weights directory."""

    config: RamPlusConfig  # architecture
    state_dict: dict[str, Tensor]  # ramtag names -> CPU tensors
    vocabulary: Vocabulary  # built-in tags, in logit order
    preprocessing: Preprocessing  # image -> tensor parameters
    metadata: dict[str, Any] = field(default_factory=dict)  # the whole ramtag.json (provenance, files, ...)
    directory: Path | None = None  # where it was read from


def save_weights(
    directory: str | Path,
    *,
    state_dict: Mapping[str, Tensor],
    config: RamPlusConfig,
    vocabulary: Vocabulary,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any],
) -> Path:
    """Write ``model.safetensors`` + ``ramtag.json`` into ``directory`` (created if needed); returns it.

    ``provenance`` is free-form JSON (source repo/revision/URLs, sha256 of the source files, where each
    description set came from). Each file is written to a temporary file beside it and moved into place;
    an existing ``ramtag.json`` is removed once the new tensors are complete and the new one written last.
    """
    from safetensors.torch import save_file

    if len(vocabulary) != config.num_tags:
        raise VocabularyError(
            f"{directory}: the vocabulary has {len(vocabulary)} tags but the architecture "
            f"has {config.num_tags}; pass the tag list that belongs to these weights"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta_path = out / META_FILE
    model_path = out / MODEL_FILE
    with atomic_path(model_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        # Only now (the new tensors are complete: a full disk has left the old weights usable) the old
        # ramtag.json goes, so it is never beside the new tensors.
        meta_path.unlink(missing_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.to_dict(),
        "vocabulary": vocabulary.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "provenance": dict(provenance),
        "files": {MODEL_FILE: {"bytes": model_path.stat().st_size, "sha256": sha256_file(model_path)}},
    }
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def load_weights(directory: str | Path, *, verify: bool = False) -> LoadedWeights:
    """Read a directory written by :func:`save_weights`; never unpickles anything.

    Checks the format version, that the vocabulary length equals ``num_tags`` and the tensor file size
    (``verify=True`` also checks its sha256). Errors are :class:`WeightsError` subclasses naming the file.
    """
    from safetensors.torch import load_file

    d = Path(directory)
    meta_path, model_path = d / META_FILE, d / MODEL_FILE
    meta = _read_meta(meta_path, d)
    config, preprocessing, vocabulary = _parse_meta(meta, meta_path)
    size = _check_model_file(model_path, meta, meta_path, verify=verify)
    # Every tensor's name and shape (from the file's header) must fit the architecture before anything
    # is allocated: then the model is never larger than the file, whatever ramtag.json announces.
    from .model.convert import check_state_dict, expected_shapes

    shapes = _header_shapes(model_path, size)
    check_state_dict(shapes, expected_shapes(config), source=str(model_path), architecture=config.name)
    try:
        state_dict = load_file(str(model_path), device="cpu")
    except Exception as e:  # SafetensorError, OSError: whatever the bytes are, they are never unpickled
        raise CheckpointError(
            f"{model_path}: not a valid safetensors file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); {_FIX}"
        ) from None
    return LoadedWeights(
        config=config,
        state_dict=state_dict,
        vocabulary=vocabulary,
        preprocessing=preprocessing,
        metadata=meta,
        directory=d,
    )


def _read_meta(meta_path: Path, d: Path) -> dict[str, Any]:
    """ramtag.json as a dict of a format version this ramtag reads, its fields checked (_check_meta)."""
    if not meta_path.is_file():
        raise WeightsError(f"{meta_path}: not found, so {d} is not a ramtag weights directory; {_FIX}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{meta_path}: unreadable ({type(e).__name__}); {_FIX}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(f"{meta_path}: not a ramtag weights description (format != {FORMAT!r}); {_FIX}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise WeightsError(
            f"{meta_path}: format version {version!r} is not supported by this ramtag "
            f"(reads version {FORMAT_VERSION}); upgrade ramtag or {_FIX}"
        )
    problem = _check_meta(meta)
    if problem:
        raise WeightsError(f"{meta_path}: malformed ({problem}); {_FIX}")
    return meta


def _parse_meta(meta: dict[str, Any], meta_path: Path) -> tuple[RamPlusConfig, Preprocessing, Vocabulary]:
    """The architecture, preprocessing and vocabulary of checked metadata (one tag per num_tags)."""
    try:
        config = RamPlusConfig.from_dict(meta["architecture"])
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        vocab_data = meta["vocabulary"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise WeightsError(f"{meta_path}: malformed ({type(e).__name__}: {e}); {_FIX}") from None
    try:
        vocabulary = Vocabulary.from_dict(vocab_data)
    except (KeyError, TypeError, ValueError) as e:
        raise VocabularyError(
            f"{meta_path}: malformed vocabulary ({type(e).__name__}: {e}); {_FIX}"
        ) from None
    except VocabularyError as e:
        raise VocabularyError(f"{meta_path}: {e}; {_FIX}") from None
    if len(vocabulary) != config.num_tags:
        raise VocabularyError(
            f"{meta_path}: the vocabulary has {len(vocabulary)} tags but the architecture "
            f"has {config.num_tags} (num_tags); {_FIX}"
        )
    return config, preprocessing, vocabulary


def _check_model_file(model_path: Path, meta: dict[str, Any], meta_path: Path, *, verify: bool) -> int:
    """The tensor file's size, after checking it is there with the size (and sha256) recorded."""
    if not model_path.is_file():
        raise WeightsError(f"{model_path}: not found; {_FIX}")
    recorded = (meta.get("files") or {}).get(MODEL_FILE) or {}
    size = model_path.stat().st_size
    if not isinstance(recorded, dict):
        raise WeightsError(f"{meta_path}: malformed (files.{MODEL_FILE} is not an object); {_FIX}")
    if "bytes" in recorded and recorded["bytes"] != size:
        raise WeightsError(
            f"{model_path}: {size} bytes but {recorded['bytes']} were written (incomplete or "
            f"replaced file); {_FIX}"
        )
    if verify and "sha256" in recorded and sha256_file(model_path) != recorded["sha256"]:
        raise WeightsError(f"{model_path}: sha256 does not match {META_FILE} (corrupt file); {_FIX}")
    return size


# Bounds no RAM++ variant comes near (Swin-L: 24 blocks, 192 channels, 384 px), checked before a model is
# even built on the meta device; the tensor shapes in the file are checked against the architecture next.
_MAX_INT = {
    "img_size": 4096,
    "patch_size": 64,
    "embed_dim": 4096,
    "window_size": 256,
    "hidden_size": 16384,
    "num_layers": 64,
    "num_heads": 1024,
    "intermediate_size": 65536,
    "descriptions_per_tag": 4096,
    "num_tags": 1_000_000,
    "image_size": 4096,
}
_MAX_BLOCKS = 256  # Swin blocks over all stages
_MAX_HEADER = 100 * 2**20  # safetensors JSON header bytes (Swin-L's is ~60 KB)


def _check_int(value: Any, name: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be an integer, not {type(value).__name__}"
    if not 1 <= value <= _MAX_INT.get(name.rsplit(".", 1)[-1], 2**31):
        return f"{name} = {value} is out of range"
    return None


def _check_meta(meta: dict[str, Any]) -> str | None:
    """The first type or size problem of a parsed ``ramtag.json`` (None when it is well-formed)."""
    arch, vocab, pre = meta.get("architecture"), meta.get("vocabulary"), meta.get("preprocessing")
    for name, value in (("architecture", arch), ("vocabulary", vocab), ("preprocessing", pre)):
        if not isinstance(value, dict):
            return f"{name} must be an object, not {type(value).__name__}"
    assert isinstance(arch, dict) and isinstance(vocab, dict) and isinstance(pre, dict)
    if not isinstance(arch.get("name", ""), str):
        return "architecture.name must be a string"
    for part in ("swin", "decoder"):
        if not isinstance(arch.get(part, {}), dict):
            return f"architecture.{part} must be an object"
    swin, decoder = arch.get("swin", {}), arch.get("decoder", {})
    checks = [
        (v, f"architecture.{k}")
        for k, v in arch.items()
        if k in ("embed_dim", "descriptions_per_tag", "num_tags")
    ]
    checks += [
        (v, f"architecture.swin.{k}")
        for k, v in swin.items()
        if k in ("img_size", "patch_size", "embed_dim", "window_size")
    ]
    checks += [
        (v, f"architecture.decoder.{k}")
        for k, v in decoder.items()
        if k in ("hidden_size", "num_layers", "num_heads", "intermediate_size")
    ]
    for key in ("depths", "num_heads"):
        values = swin.get(key, [1])
        if not isinstance(values, list) or not 1 <= len(values) <= 8:
            return f"architecture.swin.{key} must be a list of 1 to 8 integers"
        checks += [(v, f"architecture.swin.{key}[{i}]") for i, v in enumerate(values)]
    checks.append((pre.get("image_size"), "preprocessing.image_size"))
    for value, name in checks:
        problem = _check_int(value, name)
        if problem:
            return problem
    if sum(swin.get("depths", [])) > _MAX_BLOCKS:
        return f"architecture.swin.depths has more than {_MAX_BLOCKS} blocks"
    for value, name in (
        (swin.get("mlp_ratio", 4.0), "swin.mlp_ratio"),
        (decoder.get("layer_norm_eps", 1e-12), "decoder.layer_norm_eps"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 64:
            return f"architecture.{name} must be a positive number up to 64"
    names, thresholds, zh = vocab.get("names"), vocab.get("thresholds"), vocab.get("names_zh")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "vocabulary.names must be a list of strings"
    if not isinstance(thresholds, list) or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds
    ):
        return "vocabulary.thresholds must be a list of numbers"
    if zh is not None and (not isinstance(zh, list) or not all(isinstance(n, str) for n in zh)):
        return "vocabulary.names_zh must be a list of strings"
    open_set = vocab.get("open_set")
    if open_set is not None and (
        not isinstance(open_set, list) or not all(isinstance(b, bool) for b in open_set)
    ):
        return "vocabulary.open_set must be a list of true/false"
    for key in ("mean", "std"):
        value = pre.get(key)
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            return f"preprocessing.{key} must be a list of 3 numbers"
    if not isinstance(meta.get("files") or {}, dict):
        return "files must be an object"
    return None


class _Shape:
    """A tensor's shape from the safetensors header (what ``check_state_dict`` reads of a tensor)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def _header_shapes(path: Path, size: int) -> dict[str, Any]:
    """name -> shape of every tensor in a safetensors file, read from its JSON header only."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid safetensors file ({why}); {_FIX}")

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= length <= min(size - 8, _MAX_HEADER):
                raise bad("no valid header length")
            header = json.loads(f.read(length).decode("utf-8"))
    except OSError as e:
        raise WeightsError(f"{path}: cannot read it ({e.strerror}); {_FIX}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not an object")
    shapes: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} has no valid shape")
        shapes[name] = _Shape(tuple(shape))
    return shapes


def build_model(
    loaded: LoadedWeights, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> RamPlus:
    """A :class:`RamPlus` holding ``loaded``'s tensors (strict: every key and shape must match), in eval mode.

    The model is created on the meta device (no random init), so building Swin-L costs no extra time;
    the tensors of ``loaded.state_dict`` are adopted, then moved to ``device`` and cast to ``dtype``
    (default float32, whatever the file stores; autocast handles fp16/bf16 compute).
    """
    import torch

    from .model.convert import load_state_dict_strict
    from .model.ram_plus import RamPlus

    with torch.device("meta"):
        model = RamPlus(loaded.config)
    if _can_recompute_buffers(model):
        model = model.to_empty(device="cpu")
        _recompute_buffers(model)
    else:  # a timm without init_non_persistent_buffers: build normally (random init, slower)
        model = RamPlus(loaded.config)
    source = str(loaded.directory / MODEL_FILE) if loaded.directory is not None else MODEL_FILE
    load_state_dict_strict(model, loaded.state_dict, source=source, assign=True)
    model = model.to(device=device, dtype=dtype or torch.float32)
    return model.eval()


def _can_recompute_buffers(model: torch.nn.Module) -> bool:
    """True when every module with buffers can refill them (timm >= 1.0.20 style)."""
    return all(
        callable(getattr(m, "init_non_persistent_buffers", None))
        for m in model.modules()
        if any(True for _ in m.buffers(recurse=False))
        or type(m).__name__ in ("WindowAttention", "SwinTransformerBlock")
    )


def _recompute_buffers(model: torch.nn.Module) -> None:
    """Refill the non-persistent Swin buffers (relative position index, shift masks) after ``to_empty``."""
    for module in model.modules():
        init = getattr(module, "init_non_persistent_buffers", None)
        if callable(init):
            init()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
