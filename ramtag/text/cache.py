"""On-disk caches for open-set tags, under ``ramtag.paths.text_cache_dir()``.

- ``descriptions/<key>.json``: one tag's 51 LLM descriptions, keyed by (tag, LLM model, base-URL host,
  prompt-set version). Holds those fields and the descriptions; never the API key.
- ``embeddings/<key>.npy`` + ``<key>.json``: a text-embedding array (float32, rows L2-normalised), keyed
  by (sha256 of the exact text list + how it is pooled, text-encoder id). The JSON records what it is.

Writes are atomic (temp file in the same folder + ``os.replace``); unreadable entries are ignored
(logged) and recomputed, so a corrupt cache never breaks a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import paths
from ..errors import os_cause
from ..fsutil import atomic_write_bytes
from .describe import DESCRIPTIONS_PER_TAG, PROMPT_SET_VERSION
from .llm import storable_text

log = logging.getLogger(__name__)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a text list (JSON, UTF-8): the identity of a description set."""
    return _sha256(json.dumps(list(texts), ensure_ascii=False, separators=(",", ":")))


class TextCache:
    """Description and embedding caches rooted at ``root`` (default ``paths.text_cache_dir()``)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else paths.text_cache_dir()

    # ------------------------------------------------------------ descriptions
    @staticmethod
    def description_key(tag: str, model: str, host: str, prompt_set: str = PROMPT_SET_VERSION) -> str:
        return _sha256(json.dumps([tag, model, host.lower(), prompt_set]))[:40]

    def _desc_path(self, tag: str, model: str, host: str) -> Path:
        return self.root / "descriptions" / f"{self.description_key(tag, model, host)}.json"

    def get_descriptions(self, tag: str, model: str, host: str) -> list[str] | None:
        """The cached descriptions of ``tag`` from ``model`` at ``host``, or None."""
        path = self._desc_path(tag, model, host)
        data = _read_json(path)
        if data is None:
            return None
        if data.get("tag") != tag or data.get("model") != model or _descriptions(data) is None:
            log.warning("%s: ignoring a malformed description cache entry", path)
            return None
        return _descriptions(data)

    def find_descriptions(self, tag: str) -> tuple[list[str], str, str] | None:
        """The newest cached descriptions of ``tag`` from any model and server (for use without an LLM):
        ``(descriptions, model, host)``, or None. The exact spelling wins over other letter cases."""
        best: tuple[int, float, list[str], str, str] | None = None
        folder = self.root / "descriptions"
        if not folder.is_dir():
            return None
        for path in folder.glob("*.json"):
            data = _read_json(path)
            if (
                data is None
                or not isinstance(data.get("tag"), str)
                or data.get("prompt_set") != PROMPT_SET_VERSION
            ):
                continue
            exact = data["tag"] == tag
            descs = _descriptions(data)
            if descs is None or not (exact or data["tag"].lower() == tag.lower()):
                continue
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            rank = (int(exact), mtime)
            if best is None or rank > best[:2]:
                best = (*rank, descs, str(data.get("model", "")), str(data.get("host", "")))
        return None if best is None else (best[2], best[3], best[4])

    def put_descriptions(self, tag: str, model: str, host: str, descriptions: Sequence[str]) -> Path:
        path = self._desc_path(tag, model, host)
        record = {
            "tag": tag,
            "model": model,
            "host": host.lower(),
            "prompt_set": PROMPT_SET_VERSION,
            "descriptions": [storable_text(d) for d in descriptions],  # UTF-8 cannot hold lone surrogates
        }
        _write(path, json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8"))
        return path

    # -------------------------------------------------------------- embeddings
    @staticmethod
    def embedding_key(texts_sha: str, encoder_id: str, pooling: str) -> str:
        return _sha256(json.dumps([texts_sha, encoder_id, pooling]))[:40]

    def _emb_paths(self, texts: Sequence[str], encoder_id: str, pooling: str) -> tuple[Path, Path]:
        key = self.embedding_key(texts_sha256(texts), encoder_id, pooling)
        base = self.root / "embeddings" / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def get_embedding(
        self, texts: Sequence[str], encoder_id: str, pooling: str = "rows"
    ) -> np.ndarray | None:
        """The cached float32 embedding of ``texts`` by ``encoder_id`` (``pooling`` "rows": (N, E) one
        row per text; "mean": (1, E) the re-normalised mean), or None."""
        npy, meta_path = self._emb_paths(texts, encoder_id, pooling)
        meta = _read_json(meta_path)
        if meta is None or not npy.is_file():
            return None
        try:
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("%s: ignoring an unreadable embedding cache entry (%s)", npy, e)
            return None
        rows = len(texts) if pooling == "rows" else 1
        if (
            meta.get("texts_sha256") != texts_sha256(texts)
            or meta.get("encoder") != encoder_id
            or arr.dtype != np.float32
            or arr.ndim != 2
            or arr.shape[0] != rows
        ):
            log.warning("%s: ignoring a mismatched embedding cache entry", npy)
            return None
        return arr

    def put_embedding(
        self,
        texts: Sequence[str],
        encoder_id: str,
        array: np.ndarray,
        pooling: str = "rows",
        info: dict[str, Any] | None = None,
    ) -> Path:
        npy, meta_path = self._emb_paths(texts, encoder_id, pooling)
        arr = np.ascontiguousarray(array, dtype=np.float32)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        _write(npy, buf.getvalue())
        meta = {
            "texts_sha256": texts_sha256(texts),
            "encoder": encoder_id,
            "pooling": pooling,
            "shape": list(arr.shape),
            **(info or {}),
        }
        _write(meta_path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))  # written last
        return npy


def _descriptions(data: dict[str, Any]) -> list[str] | None:
    descs = data.get("descriptions")
    if not isinstance(descs, list) or len(descs) != DESCRIPTIONS_PER_TAG:
        return None
    return descs if all(isinstance(d, str) for d in descs) else None


_warned: set[str] = set()


def _write(path: Path, data: bytes) -> None:
    """Write a cache entry; a cache that cannot be written (disk full, read-only) is one warning, and the
    run goes on without caching."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        cause = os_cause(e)
        if cause not in _warned:
            _warned.add(cause)
            log.warning("%s: cannot write the text cache (%s); going on without caching", path.parent, cause)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: ignoring an unreadable cache entry (%s)", path, e)
        return None
    return data if isinstance(data, dict) else None
