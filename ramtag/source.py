"""What will tag a run, known before (and often instead of) loading the model.

``ramtag tag`` on a library that is already tagged, or with only deciding settings changed
(thresholds, top-k, renames, language, hierarchy, output mode), needs no model: the catalog holds every tag's
score. A :class:`TaggerSource` knows the vocabulary and the *scorer key* (what produced the scores:
weights file, preprocessing, decoding, open-set tag sources) from the weights folder's ``ramtag.json``
and the options alone, without torch; :meth:`TaggerSource.get` loads the model the first time an
image needs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError, WeightsError
from .options import OpenSetOptions, TagOptions
from .tags.vocab import Vocabulary

if TYPE_CHECKING:
    from .tagger import Tagger

__all__ = ["TaggerSource", "scorer_key"]


def scorer_key(weights_sha: str, preprocessing: Any, options: TagOptions, open_key: str = "") -> str:
    """The key of what produces an image's scores; images scored under another key are scored again.

    Precision is left out: every precision scores with the same weights (bf16/fp16 scores differ in
    the last digits, which matters only for tags sitting on their threshold).
    """
    text = json.dumps(
        {
            "weights_sha": weights_sha,
            "preprocessing": repr(preprocessing),
            "exif_orientation": options.exif_orientation,
            "draft": options.draft,
            "open_set": open_key,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TaggerSource:
    """A tagger to load on demand (``TaggerSource(weights, ...)``) or already loaded (``.of(tagger)``).

    ``vocabulary`` and ``scorer(options)`` are known without torch; ``get()`` loads the model once
    (``on_load`` is then called with it, e.g. to tune the CPU allocator).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        loader: Callable[[], Tagger],
        open_set: OpenSetOptions | None = None,
        download: bool = True,
        on_load: Callable[[Tagger], object] | None = None,
    ) -> None:
        """``loader`` loads the tagger (``ramtag.api.tagger_source`` passes ``load_tagger`` with the
        same weights and options); the rest is read here, without torch."""
        from .weights import resolve_weights
        from .weights_format import META_FILE, Preprocessing

        self._loader, self._on_load = loader, on_load
        self._tagger: Tagger | None = None
        directory = resolve_weights(weights, download=download)
        meta_path = directory / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            builtin = Vocabulary.from_dict(meta["vocabulary"])
            self.preprocessing: Any = Preprocessing.from_dict(meta["preprocessing"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WeightsError(
                f"{meta_path}: unreadable ({type(e).__name__}: {e}); re-import the weights"
            ) from None
        files = meta.get("files") or {}
        self.weights_sha = next((f.get("sha256", "") for f in files.values() if isinstance(f, dict)), "")
        self.name = str(weights) if weights is not None else directory.name
        self.vocabulary, self.open_key = _open_set_vocabulary(builtin, open_set)

    @classmethod
    def of(cls, tagger: Tagger) -> TaggerSource:
        """A source for a tagger already in memory (the Python API's ``tag_library(paths, tagger)``)."""
        self = cls.__new__(cls)
        self._tagger, self._on_load = tagger, None
        self.name, self.vocabulary = tagger.name, tagger.vocabulary
        self.preprocessing = getattr(tagger, "preprocessing", None)
        self.weights_sha = getattr(tagger, "weights_sha", "")
        open_rows = [i for i, flag in enumerate(tagger.vocabulary.open_set) if flag]
        if open_rows:
            emb = tagger.label_embed[open_rows].float().cpu().numpy()
            self.open_key = "embed:" + hashlib.sha256(emb.tobytes()).hexdigest()[:24]
        else:
            self.open_key = ""
        return self

    @property
    def loaded(self) -> Tagger | None:
        return self._tagger

    def scorer(self, options: TagOptions) -> str:
        return scorer_key(self.weights_sha, self.preprocessing, options, self.open_key)

    def get(self) -> Tagger:
        """The tagger, loading the model (and building open-set embeddings) the first time."""
        if self._tagger is None:
            self._tagger = self._loader()
            if self._on_load is not None:
                self._on_load(self._tagger)
        return self._tagger


def _open_set_vocabulary(builtin: Vocabulary, opts: OpenSetOptions | None) -> tuple[Vocabulary, str]:
    """The vocabulary ``load_tagger`` will build (as ``text.openset.combine`` orders it) and a key of
    where the open-set embeddings come from, both without torch."""
    if opts is None or not opts.requested:
        if opts is not None and opts.only_open_set:
            raise UsageError("--only-open-set needs open-set tags: pass --open-set or --open-set-file")
        return builtin, ""
    from .text.llm import LLMSettings
    from .text.openset import OpenSetTag, parse_open_set
    from .text.templates import TEMPLATE_SET_VERSION

    tags = parse_open_set(opts.tags, opts.tags_file, default_threshold=opts.threshold)
    if not tags and opts.descriptions is not None:
        from .text.describe import load_descriptions

        tags = [OpenSetTag(name, opts.threshold) for name in load_descriptions(opts.descriptions)]
    index = builtin.index()
    reused: list[int] = []
    overrides: dict[int, float] = {}
    new: list[OpenSetTag] = []
    for t in tags:
        i = index.get(t.name.lower())
        if i is None:
            new.append(t)
        else:
            reused.append(i)
            if t.explicit_threshold:
                overrides[i] = t.threshold
    base = builtin
    if overrides:
        ths = tuple(overrides.get(i, th) for i, th in enumerate(builtin.thresholds))
        base = Vocabulary(builtin.names, ths, builtin.names_zh, builtin.open_set)
    if opts.only_open_set:
        base = base.subset(reused)
    vocab = base.extend([t.name for t in new], [t.threshold for t in new], open_set=True)
    llm = LLMSettings.from_env(base_url=opts.llm_base_url, model=opts.llm_model, api_key=opts.llm_api_key)
    desc_sha = ""
    if opts.descriptions is not None:
        try:
            desc_sha = hashlib.sha256(Path(opts.descriptions).read_bytes()).hexdigest()
        except OSError:
            desc_sha = str(opts.descriptions)
    source = {
        "tags": [t.name for t in new],
        "descriptions": desc_sha,
        "clip": str(opts.clip or ""),
        "llm": [llm.base_url or "", llm.model or ""],  # never the key
        "require_llm": opts.require_llm,
        "templates": TEMPLATE_SET_VERSION,
    }
    return vocab, "spec:" + hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:24]
