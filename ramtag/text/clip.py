"""CLIP (OpenAI ViT-B/16 by default) for open-set label embeddings, built with open_clip.

RAM++'s label embeddings are CLIP text features: ``encode_text`` of the description, L2-normalised
row by row. The weights are a plain state dict in OpenAI's key layout (``token_embedding.weight``,
``transformer.resblocks.*``, ``visual.conv1.weight``, ...), either open_clip's
``open_clip_model.safetensors`` fetched through :func:`ramtag.hub.fetch_hub_file` or a local file given
with ``--clip FILE`` (``.safetensors``, or a ``torch.save``'d dict read with ``weights_only=True``;
OpenAI's TorchScript archives are refused). The architecture is inferred from the tensor shapes as
OpenAI's ``build_model`` does (heads = width // 64) and always uses QuickGELU, like the OpenAI models.

Everything runs in float32 on the CPU by default; ``open_clip`` is imported only when a model loads.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

log = logging.getLogger(__name__)

_REQUIRED = (
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "text_projection",
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
)
_DROP = ("input_resolution", "context_length", "vocab_size")  # non-tensor extras of OpenAI's files


def read_clip_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a CLIP state dict (OpenAI key layout) from ``.safetensors`` or a ``torch.save`` file.

    Tensors keep their stored dtype (OpenAI's are float16). Raises :class:`InputError` naming the file
    for TorchScript archives, pickles that are not plain tensors, and missing keys.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: CLIP weights file not found; check --clip")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except Exception as e:
            raise InputError(f"{p}: not a readable safetensors file ({e}); check --clip") from None
    else:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                    raise InputError(
                        f"{p}: is a TorchScript (JIT) archive like OpenAI's ViT-B-16.pt; ramtag reads "
                        "only plain state dicts: omit --clip (ramtag downloads open_clip's ViT-B-16 "
                        "openai weights) or pass an open_clip_model.safetensors"
                    )
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(
                f"{p}: cannot load as a CLIP state dict ({first}); --clip needs OpenAI's "
                "state-dict format (torch.save(state_dict) or .safetensors)"
            ) from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(f"{p}: holds a {type(sd).__name__}, not a CLIP state dict; check --clip")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k not in _DROP}
    missing = [k for k in _REQUIRED if k not in sd]
    if missing or not all(isinstance(v, Tensor) for v in sd.values()):
        raise InputError(
            f"{p}: not an OpenAI-format CLIP ViT state dict (missing {', '.join(missing) or 'tensors'}); "
            "check --clip"
        )
    return sd


def infer_clip_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    """open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) read off the tensor shapes."""

    def count_layers(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

    vision_width, _, patch, _ = sd["visual.conv1.weight"].shape  # (W, 3, P, P)
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    return {
        "embed_dim": int(sd["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI's CLIP models were trained with QuickGELU
        "vision_cfg": {
            "layers": count_layers("visual.transformer.resblocks."),
            "width": int(vision_width),
            "patch_size": int(patch),
            "image_size": int(patch * grid),
            "head_width": 64,
        },
        "text_cfg": {
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "width": int(text_width),
            "heads": int(text_width // 64),
            "layers": count_layers("transformer.resblocks."),
        },
    }


class ClipModel:
    """An open_clip ``CLIP`` in eval mode with OpenAI's tokenizer, normalisation and QuickGELU."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], source: str):
        self.model: Any = model  # open_clip.model.CLIP, eval, requires_grad False
        self.config = config  # see infer_clip_config
        self.source = source  # file it was loaded from (for messages)
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = int(config["text_cfg"]["context_length"])
        self._tokenizer = SimpleTokenizer(context_length=self.context_length)

    @classmethod
    def from_state_dict(
        cls, sd: dict[str, Tensor], *, source: str = "<state dict>", device: str | torch.device = "cpu"
    ) -> ClipModel:
        """Build the architecture the shapes describe and load ``sd`` strictly, in float32."""
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        cfg = infer_clip_config(sd)
        model = CLIP(
            cfg["embed_dim"],
            vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
            text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
            quick_gelu=True,
        )
        result = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise InputError(
                f"{source}: CLIP weights do not fit the inferred architecture (missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}); check --clip"
            )
        model = model.float().to(device).eval().requires_grad_(False)
        return cls(model, cfg, source)

    @classmethod
    def load(cls, clip_file: str | Path | None = None, *, device: str | torch.device = "cpu") -> ClipModel:
        """Load ``clip_file`` (OpenAI state-dict format) or the registry's CLIP ViT-B/16 via the hub."""
        path = Path(clip_file) if clip_file is not None else fetch_default_clip()
        log.info("loading CLIP from %s", path)
        return cls.from_state_dict(read_clip_state_dict(path), source=str(path), device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.config["vision_cfg"]["image_size"])

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """(N, context_length) int64 token ids; longer texts keep their first 76 tokens + end-of-text."""
        return self._tokenizer(list(texts))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256, normalize: bool = True) -> Tensor:
        """CLIP text features of ``texts``: (N, embed_dim) float32 on the CPU, each row L2-normalised."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[i : i + batch_size]).to(self.device)
            out.append(self.model.encode_text(tokens).float().cpu())
        feats = torch.cat(out) if out else torch.empty(0, self.embed_dim)
        return F.normalize(feats, dim=-1) if normalize else feats  # (N, E)

    @torch.no_grad()
    def encode_image(self, images: Tensor, *, normalize: bool = True) -> Tensor:
        """CLIP image features: (B, 3, S, S) normalised pixels (see :meth:`preprocess`) -> (B, embed_dim)."""
        feats = self.model.encode_image(images.to(self.device, torch.float32)).float()
        return F.normalize(feats, dim=-1) if normalize else feats  # (B, E)

    def preprocess(self) -> Any:
        """The OpenAI CLIP eval transform for PIL images (resize shorter side bicubic, centre crop,
        OpenAI mean/std) -> (3, S, S) float tensor."""
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.transform import image_transform

        return image_transform(
            self.image_size, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD
        )


def import_clip(source: str | Path, *, name: str | None = None, force: bool = False) -> Path:
    """Check a CLIP file the user brought (readable, OpenAI key layout, 512-wide text features as RAM++
    needs) and install it as the registry's text encoder (``ramtag weights import FILE --name NAME``)."""
    from ..registry import DEFAULT_TEXT_ENCODER
    from ..weights import import_text_encoder

    path = Path(source).expanduser()
    if path.is_file():
        config = infer_clip_config(read_clip_state_dict(path))  # InputError naming the file if not CLIP
        if config["embed_dim"] != 512:
            raise InputError(
                f"{path}: a CLIP with {config['embed_dim']}-wide text features; RAM++ label embeddings "
                "need ViT-B/16's 512"
            )
    return import_text_encoder(path, name=name or DEFAULT_TEXT_ENCODER, force=force)


def fetch_default_clip() -> Path:
    """The registry's default CLIP text encoder file (downloaded once through ``ramtag.hub``).

    Missing while offline: :class:`OfflineError` naming the file, its URL, ``--clip`` and ``HF_ENDPOINT``.
    """
    from ..errors import DownloadError, OfflineError
    from ..hub import fetch_hub_file
    from ..registry import DEFAULT_TEXT_ENCODER, get_text_encoder
    from ..weights import offline_help, text_encoder_path

    imported = text_encoder_path(DEFAULT_TEXT_ENCODER)  # `ramtag weights import FILE --name clip-vit-b-16`
    if imported is not None:
        return imported
    try:
        return Path(fetch_hub_file(get_text_encoder(DEFAULT_TEXT_ENCODER)))
    except OfflineError:
        raise OfflineError(offline_help(DEFAULT_TEXT_ENCODER)) from None
    except DownloadError as e:
        raise DownloadError(f"{e}; or pass a local CLIP ViT-B/16 with --clip FILE") from None


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    from ..weights_format import sha256_file

    return sha256_file(path)


def clip_encoder_id(clip_file: str | Path | None = None) -> str:
    """A stable id of the text encoder, computed WITHOUT loading it (part of the embedding cache key):
    ``file-sha256:<hex>`` for a local file, ``hub:<repo>@<revision>/<file>`` for the registry default."""
    if clip_file is None:
        from ..registry import DEFAULT_TEXT_ENCODER, get_text_encoder
        from ..weights import text_encoder_id

        imported = text_encoder_id(DEFAULT_TEXT_ENCODER)  # a file the user imported: its own sha256
        if imported is not None:
            return imported
        f = get_text_encoder(DEFAULT_TEXT_ENCODER)
        return f"hub:{f.repo_id}@{f.revision}/{f.filename}" + (f"#{f.sha256}" if f.sha256 else "")
    p = Path(clip_file)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: CLIP weights file not found; check --clip") from None
    return "file-sha256:" + _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


class ClipTextEncoder:
    """Text side of CLIP for label embeddings; the model loads on the first :meth:`encode` call."""

    def __init__(self, clip_file: str | Path | None = None, *, device: str | torch.device = "cpu"):
        self.clip_file = Path(clip_file) if clip_file is not None else None
        self.device = device
        self.passes = 0  # encode() calls that ran the model (tests check the cache avoids them)
        self._model: ClipModel | None = None
        self._id: str | None = None

    @property
    def encoder_id(self) -> str:
        if self._id is None:
            self._id = clip_encoder_id(self.clip_file)
        return self._id

    def ensure_available(self) -> None:
        """Make sure the weights are at hand (the registry's are downloaded now), without loading them:
        called before the first LLM request, so a missing CLIP fails before any LLM call is spent."""
        if self._model is not None:
            return
        if self.clip_file is None:
            fetch_default_clip()  # cached from now on; the encoder id stays the registry's
        elif not self.clip_file.is_file():
            raise InputError(f"{self.clip_file}: CLIP weights file not found; check --clip")

    @property
    def model(self) -> ClipModel:
        if self._model is None:
            self._model = ClipModel.load(self.clip_file, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> Tensor:
        """(N, 512) float32, each row L2-normalised on its own (RAM++'s label-embedding rows)."""
        self.passes += 1
        return self.model.encode_text(texts)
