"""Official RAM++ checkpoints (``ram_plus_swin_large_14m.pth``) -> ramtag's parameter names.

The official file is ``torch.save({'model': state_dict})``. Its tensors map one to one onto
:class:`ramtag.model.RamPlus`; only names change:

- ``visual_encoder.layers.{i}.downsample.*`` -> ``visual_encoder.layers.{i+1}.downsample.*``
  (official Swin merges patches at the end of a stage, timm at the start of the next one);
- the Swin buffers ``relative_position_index`` / ``attn_mask`` are dropped (recomputed, as the official
  loader does);
- ``tagging_head.encoder.layer.{i}.`` (or the older ``vision_multi.`` prefix) -> ``tagging_head.layers.{i}.``
  with BERT's sub-module names replaced by :mod:`ramtag.model.decoder`'s (table ``_DECODER_NAMES``);
- everything else (``label_embed``, ``reweight_scale``, ``image_proj``, ``wordvec_proj``, ``fc``) is kept.

Loading is strict: every missing, unexpected or mis-shaped tensor is reported in one error.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .config import CONFIGS, DecoderConfig, RamPlusConfig, SwinConfig

# BERT sub-module name (official tagging_head) -> ramtag TagDecoder name, per layer.
_DECODER_NAMES = {
    "crossattention.self.query.": "cross_attn.query.",
    "crossattention.self.key.": "cross_attn.key.",
    "crossattention.self.value.": "cross_attn.value.",
    "crossattention.output.dense.": "cross_attn.out.",
    "crossattention.output.LayerNorm.": "norm1.",
    "intermediate.dense.": "ffn.fc1.",
    "output.dense.": "ffn.fc2.",
    "output.LayerNorm.": "norm2.",
}
_DECODER_PREFIXES = ("tagging_head.", "vision_multi.")  # vision_multi: the name in older RAM code
_SWIN_BUFFERS = ("relative_position_index", "attn_mask")  # recomputed, never loaded
_MAX_LISTED = 10  # keys named per category in an error message

_REIMPORT = "use the official RAM++ checkpoint for this architecture (re-import with `ramtag weights import`)"


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read an official ``.pth`` (``{'model': state_dict}`` or a bare state dict) without unpickling code.

    Uses ``torch.load(weights_only=True, map_location='cpu')``. A ``module.`` prefix (DDP) is removed.
    Raises :class:`CheckpointError` naming the file when it is missing, corrupt or not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found; check the path")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e), re.IGNORECASE)
        if found is None:  # not a refused global: a damaged file or one that is no pickle at all
            raise CheckpointError(_unreadable(p, e)) from None
        # the restricted unpickler refused a global: the file holds code or foreign objects
        what = f" (it refers to {found.group(1)})"
        raise CheckpointError(
            f"{p}: not a plain checkpoint - it holds code or objects other than tensors{what}, so it was "
            "not loaded; pass the official RAM++ .pth (only tensors are ever read)"
        ) from None
    except Exception as e:  # corrupt zip, truncated file, ...
        raise CheckpointError(_unreadable(p, e)) from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{p}: holds no state dict (expected {{'model': state_dict}}); pass the official RAM++ .pth"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{p}: entries that are not named tensors ({_listed(bad)}); pass the official RAM++ .pth"
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _unreadable(path: Path, e: Exception) -> str:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return (
        f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {reason}); "
        "download the file again (it may be truncated) or pass the official RAM++ .pth"
    )


def infer_official_config(
    state_dict: Mapping[str, Tensor],
    *,
    image_size: int = SwinConfig.img_size,
    decoder_heads: int = DecoderConfig.num_heads,
) -> RamPlusConfig:
    """Read the architecture off an official state dict's shapes.

    Shapes fix everything except the input size and the decoder's head count (neither changes a shape);
    they default to the published RAM++ values (384 px, 4 heads). The name is that of the matching entry of
    :data:`CONFIGS` (ignoring the vocabulary size) or ``"custom"``.
    """
    sd = state_dict

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(
                f"checkpoint has no {key!r}, so it is not an official RAM++ checkpoint; {_REIMPORT}"
            )
        return tuple(sd[key].shape)

    embed_dim, _, patch_size, _ = shape("visual_encoder.patch_embed.proj.weight")
    depths: list[int] = []
    heads: list[int] = []
    window = 0
    while f"visual_encoder.layers.{len(depths)}.blocks.0.norm1.weight" in sd:
        i = len(depths)
        pattern = re.compile(rf"visual_encoder\.layers\.{i}\.blocks\.(\d+)\.")
        blocks = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
        depths.append(max(blocks) + 1)
        rows, n_heads = shape(f"visual_encoder.layers.{i}.blocks.0.attn.relative_position_bias_table")
        heads.append(n_heads)
        if i == 0:  # stage 1 always has the full window: rows = (2 * window - 1) ** 2
            window = (math.isqrt(rows) + 1) // 2
    if not depths:
        shape("visual_encoder.layers.0.blocks.0.norm1.weight")  # raises
    fc1_out, fc1_in = shape("visual_encoder.layers.0.blocks.0.mlp.fc1.weight")
    swin = SwinConfig(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=window,
        mlp_ratio=fc1_out / fc1_in,
    )

    first_ffn = "encoder.layer.0.intermediate.dense.weight"
    prefix = next((p for p in _DECODER_PREFIXES if f"{p}{first_ffn}" in sd), None)
    if prefix is None:
        shape("tagging_head.encoder.layer.0.intermediate.dense.weight")  # raises
    num_layers = 0
    while f"{prefix}encoder.layer.{num_layers}.intermediate.dense.weight" in sd:
        num_layers += 1
    hidden, embed = shape("wordvec_proj.weight")
    intermediate, _ = shape(f"{prefix}encoder.layer.0.intermediate.dense.weight")
    decoder = DecoderConfig(
        hidden_size=hidden, num_layers=num_layers, num_heads=decoder_heads, intermediate_size=intermediate
    )

    rows, width = shape("label_embed")
    per_tag = RamPlusConfig(name="custom").descriptions_per_tag
    if width != embed or rows % per_tag:
        raise CheckpointError(
            f"checkpoint label_embed has shape ({rows}, {width}), "
            f"expected (num_tags * {per_tag}, {embed}); {_REIMPORT}"
        )
    name = next(
        (
            n
            for n, known in CONFIGS.items()
            if (known.swin, known.decoder, known.embed_dim) == (swin, decoder, embed)
        ),
        "custom",
    )
    return RamPlusConfig(name=name, swin=swin, decoder=decoder, embed_dim=embed, num_tags=rows // per_tag)


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor], config: RamPlusConfig, *, source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename an official RAM++ state dict to ramtag's names (pure: tensors are shared, not copied).

    Raises :class:`CheckpointError` (naming ``source``) listing every missing, unexpected and mis-shaped
    tensor if the result does not fit ``RamPlus(config)`` exactly.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = _convert_key(key)
        if new is not None:
            out[new] = value
    check_state_dict(out, expected_shapes(config), source=source, architecture=config.name)
    return out


def _convert_key(key: str) -> str | None:
    """Official name -> ramtag name; None for buffers that are recomputed."""
    if key.startswith("visual_encoder."):
        if key.rsplit(".", 1)[-1] in _SWIN_BUFFERS:
            return None
        return re.sub(
            r"^visual_encoder\.layers\.(\d+)\.downsample\.",
            lambda m: f"visual_encoder.layers.{int(m.group(1)) + 1}.downsample.",
            key,
        )
    for prefix in _DECODER_PREFIXES:
        m = re.match(rf"^{re.escape(prefix)}encoder\.layer\.(\d+)\.(.*)$", key)
        if m:
            rest = m.group(2)
            for old, new in _DECODER_NAMES.items():
                if rest.startswith(old):
                    return f"tagging_head.layers.{m.group(1)}.{new}{rest[len(old) :]}"
            return key  # unknown sub-module (e.g. self-attention): reported as unexpected
    return key


def expected_shapes(config: RamPlusConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor ``RamPlus(config).state_dict()`` holds (built on the meta device)."""
    from .ram_plus import RamPlus  # local: ram_plus does not need convert

    with torch.device("meta"):
        model = RamPlus(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(
    state_dict: Mapping[str, Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    architecture: str,
) -> None:
    """Raise one :class:`CheckpointError` naming every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {expected[k]}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape, file vs model ({_listed(mismatched)})")
    if problems:
        raise CheckpointError(
            f"{source}: tensors do not fit the {architecture!r} architecture: "
            f"{'; '.join(problems)}; {_REIMPORT}"
        )


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "weights", assign: bool = False
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with one readable :class:`CheckpointError`.

    ``assign=True`` adopts the given tensors instead of copying (no second copy of a large model).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    check_state_dict(state_dict, expected, source=source, architecture=str(name))
    model.load_state_dict(state_dict, strict=True, assign=assign)


def _listed(items: list[str]) -> str:
    head = ", ".join(items[:_MAX_LISTED])
    return head if len(items) <= _MAX_LISTED else f"{head}, ... and {len(items) - _MAX_LISTED} more"
