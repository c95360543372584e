"""Open-set tags: parse them, find their descriptions, embed them, and merge them into the vocabulary.

For each new tag the label embedding is (51, 512) float32, rows L2-normalised, found in this order:

1. ``--descriptions FILE`` (official format) if the tag is in it;
2. the description cache (same tag, LLM model, server host and prompt set);
3. the LLM (5 paper prompts x 10 answers), then cached;
4. otherwise CLIP prompt templates (mean of ~70 "a photo of a {}." style prompts, repeated to 51 rows)
   with one warning saying how to configure an LLM; ``require_llm=True`` makes this an :class:`LLMError`.

The text embeddings of a description set are cached per (sha256 of the texts, text-encoder id), so a
second run with the same tags makes no LLM request and does not even load CLIP.

RAM++'s tag queries never attend to each other, so appending rows to ``label_embed`` is exact: the
built-in tags score the same as without the open-set tags.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, LLMError, UsageError, printable
from ..fsutil import read_user_text
from ..tags.vocab import OPEN_SET_THRESHOLD, Vocabulary
from .cache import TextCache
from .describe import DESCRIPTIONS_PER_TAG, TooFewDescriptions, generate_descriptions, load_descriptions
from .llm import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, LLMClient, LLMSettings
from .templates import TEMPLATE_SET_VERSION, fill_templates

if TYPE_CHECKING:
    import torch

    from .clip import ClipTextEncoder

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class OpenSetTag:
    """One user tag with its threshold (score > threshold selects it)."""

    name: str  # as the user typed it (surrounding spaces removed)
    threshold: float = OPEN_SET_THRESHOLD  # per-tag threshold in [0, 1]
    explicit_threshold: bool = (
        False  # True when written as "tag=0.6" (then it also overrides a built-in tag's)
    )


MAX_TAG_CHARS = 200  # a tag is a word or a short phrase; it is written into every sidecar
_BAD_TAG_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")


def _parse_item(text: str, default: float, where: str) -> OpenSetTag | None:
    item = text.strip()
    if not item:
        return None
    name, sep, value = item.rpartition("=") if "=" in item else (item, "", "")
    name = " ".join(name.split())
    if not name:
        raise UsageError(f"{where}: {printable(item)!r} has no tag name; write 'tag' or 'tag=0.6'")
    bad = _BAD_TAG_CHARS.search(name)
    if bad is not None:
        raise UsageError(
            f"{where}: tag {printable(name)!r} contains the control character {printable(bad.group())}, "
            "which sidecars and terminals cannot take; remove it"
        )
    if len(name) > MAX_TAG_CHARS:
        raise UsageError(
            f"{where}: tag {printable(name[:40])!r}... is longer than {MAX_TAG_CHARS} characters"
        )
    if not sep:
        return OpenSetTag(name, default)
    try:
        threshold = float(value)
    except ValueError:
        raise UsageError(
            f"{where}: threshold {value.strip()!r} of {name!r} is not a number; write 'tag=0.6'"
        ) from None
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"{where}: threshold {threshold} of {name!r} is outside [0, 1]")
    return OpenSetTag(name, threshold, explicit_threshold=True)


def parse_open_set(
    spec: str | None, file: Path | None = None, default_threshold: float = OPEN_SET_THRESHOLD
) -> list[OpenSetTag]:
    """Tags from ``--open-set "corgi, meteor shower=0.6"`` and/or ``--open-set-file FILE``.

    The file has one tag per line (``tag`` or ``tag=0.6``); ``#`` starts a comment; blank lines are
    skipped. Tags are de-duplicated case-insensitively (the first spelling and threshold win). Errors
    name the option or the file and line.
    """
    if not 0.0 <= default_threshold <= 1.0:
        raise UsageError(f"--open-set-threshold {default_threshold} is outside [0, 1]")
    items: list[OpenSetTag] = []
    if spec:
        for part in spec.split(","):
            tag = _parse_item(part, default_threshold, "--open-set")
            if tag is not None:
                items.append(tag)
        if not items:
            raise UsageError(
                f"--open-set {printable(spec)!r} names no tag; "
                'write e.g. --open-set "corgi,meteor shower=0.6"'
            )
    if file is not None:
        p = Path(file)
        text = read_user_text(p, "open-set tag file", "--open-set-file")
        before = len(items)
        for lineno, line in enumerate(text.splitlines(), 1):
            tag = _parse_item(line.split("#", 1)[0], default_threshold, f"{p}:{lineno}")
            if tag is not None:
                items.append(tag)
        if len(items) == before:
            raise UsageError(f"{p}: the open-set tag file names no tag (one tag per line, '#' comments)")
    seen: set[str] = set()
    out: list[OpenSetTag] = []
    for tag in items:
        if tag.name.lower() not in seen:
            seen.add(tag.name.lower())
            out.append(tag)
    return out


# ------------------------------------------------------------------ descriptions
def _fallback_message(reason: str, tags: Sequence[str]) -> str:
    shown = ", ".join(repr(t) for t in tags[:5]) + (", ..." if len(tags) > 5 else "")
    return (
        f"no LLM descriptions for open-set tags {shown} ({reason}); using CLIP prompt templates, which "
        f"tag less accurately. For LLM descriptions set {ENV_API_KEY} (OpenAI) or --llm-base-url / "
        f"{ENV_BASE_URL} and --llm-model / {ENV_MODEL} (e.g. Ollama http://localhost:11434/v1), or pass "
        "--descriptions FILE"
    )


class _Describer:
    """Finds descriptions: cache first, then the LLM (once it fails, it is not asked again this run).

    Without a usable LLM (none configured, or no model known) the cache is searched for the tag
    under any model and server, so cached descriptions stay usable offline.
    """

    def __init__(
        self,
        llm: LLMSettings | LLMClient | None,
        cache: TextCache,
        use_cache: bool = True,
        before_llm: Callable[[], None] | None = None,
    ):
        settings = llm.settings if isinstance(llm, LLMClient) else (llm or LLMSettings.from_env())
        self.settings = settings
        self.client = llm if isinstance(llm, LLMClient) else LLMClient(settings)
        self.cache = cache
        self.use_cache = use_cache
        self.failure: str | None = None if settings.configured else "no LLM configured"
        self.before_llm = before_llm  # called once before the first LLM request, GET /models too (CLIP check)
        self.tag_failures: dict[str, str] = {}  # tag -> why its answers were unusable (the LLM itself works)

    def _before_request(self) -> None:
        if self.before_llm is not None:
            check, self.before_llm = self.before_llm, None
            check()

    def _model(self) -> str | None:
        if self.failure is not None:
            return None
        if self.client.known_model is None:  # finding it asks the server (GET /models): local checks first
            self._before_request()
        try:
            return self.client.model  # may ask the server (GET /models) once
        except LLMError as e:
            self.failure = str(e)
            return None

    def get(self, tag: str) -> tuple[list[str] | None, str]:
        """(51 descriptions of ``tag``, "cache" | "llm"), or (None, "") when the LLM is unavailable
        (the reason is in ``failure``)."""
        s = self.settings
        model = self._model()
        if self.use_cache:
            if model is not None:
                cached = self.cache.get_descriptions(tag, model, s.host)
            else:
                found = self.cache.find_descriptions(tag)
                cached = found[0] if found else None
                if found:
                    log.info("descriptions of %r cached from %s at %s", tag, found[1], found[2])
            if cached is not None:
                log.debug("descriptions of %r from the cache", tag)
                return cached, "cache"
        if self.failure is not None or model is None:
            return None, ""
        self._before_request()
        try:
            descs = generate_descriptions(tag, self.client)
        except TooFewDescriptions as e:  # this tag only: the next tag still asks the LLM
            self.tag_failures[tag] = str(e)
            return None, ""
        except LLMError as e:
            self.failure = str(e)
            return None, ""
        self.cache.put_descriptions(tag, model, s.host, descs)
        log.info("described %r with %s at %s", tag, model, s.host)
        return descs, "llm"


def describe_tags(
    tags: Sequence[str],
    llm: LLMSettings | LLMClient | None = None,
    *,
    cache: TextCache | None = None,
    use_cache: bool = True,
) -> dict[str, list[str]]:
    """51 LLM descriptions per tag (cached), for ``ramtag describe``; raises :class:`LLMError` when the
    LLM cannot be used for a tag that is not cached. Without an LLM, cached descriptions (from any
    model) are returned. ``dump_descriptions`` turns the result into the official JSON format."""
    d = _Describer(llm, cache or TextCache(), use_cache)
    out: dict[str, list[str]] = {}
    for tag in tags:
        descs, _ = d.get(tag)
        if descs is None:
            if tag in d.tag_failures:
                raise LLMError(d.tag_failures[tag])
            if d.failure != "no LLM configured":
                raise LLMError(str(d.failure))
            raise LLMError(
                f"no cached descriptions of {tag!r} and no LLM configured; set {ENV_API_KEY} (OpenAI) or "
                f"--llm-base-url / {ENV_BASE_URL} and --llm-model / {ENV_MODEL} "
                "(e.g. http://localhost:11434/v1 for Ollama)"
            )
        out[tag] = descs
    return out


# ------------------------------------------------------------------- embeddings
def embed_descriptions(
    descriptions: Sequence[str], encoder: ClipTextEncoder, cache: TextCache | None = None
) -> torch.Tensor:
    """(N, 512) float32 CLIP embeddings of ``descriptions``, each row L2-normalised (cached)."""
    import torch

    cache = cache or TextCache()
    hit = cache.get_embedding(descriptions, encoder.encoder_id, "rows")
    if hit is not None:
        return torch.from_numpy(hit)
    emb = encoder.encode(descriptions)  # (N, 512)
    cache.put_embedding(descriptions, encoder.encoder_id, emb.numpy(), "rows", {"count": len(descriptions)})
    return emb


def embed_templates(
    tag: str, encoder: ClipTextEncoder, cache: TextCache | None = None, rows: int = DESCRIPTIONS_PER_TAG
) -> torch.Tensor:
    """The prompt-template fallback for ``tag``: (rows, 512) float32, one unit vector repeated.

    Every filled template is embedded and normalised; the mean is normalised again (cached).
    """
    import torch
    import torch.nn.functional as F

    cache = cache or TextCache()
    texts = fill_templates(tag)
    hit = cache.get_embedding(texts, encoder.encoder_id, "mean")
    if hit is None:
        mean = F.normalize(encoder.encode(texts).mean(dim=0, keepdim=True), dim=-1)  # (1, 512)
        cache.put_embedding(
            texts, encoder.encoder_id, mean.numpy(), "mean", {"tag": tag, "templates": TEMPLATE_SET_VERSION}
        )
        hit = mean.numpy()
    return torch.from_numpy(hit).expand(rows, -1).contiguous()  # (rows, 512)


# ------------------------------------------------------------------------ build
@dataclass
class OpenSet:
    """Open-set tags ready to append to a model's vocabulary."""

    vocabulary_extension: Vocabulary  # the NEW tags only (open_set=True), user order
    label_embed: torch.Tensor  # (T_new, 51, 512) float32, rows L2-normalised
    reused_builtin: list[str] = field(default_factory=list)  # user tags that are built-in (built-in spelling)
    reused_indices: list[int] = field(default_factory=list)  # their positions in the built-in vocabulary
    reused_thresholds: list[float | None] = field(
        default_factory=list
    )  # explicit "tag=0.6" overrides, else None
    sources: dict[str, str] = field(default_factory=dict)  # new tag -> "file" | "cache" | "llm" | "templates"
    warnings: list[str] = field(default_factory=list)  # one-line messages already logged at WARNING level


def build_open_set(
    tags: Sequence[OpenSetTag | str],
    *,
    vocabulary: Vocabulary,
    descriptions_file: Path | None = None,
    clip_file: Path | None = None,
    llm: LLMSettings | LLMClient | None = None,
    require_llm: bool = False,
    encoder: ClipTextEncoder | None = None,
    cache: TextCache | None = None,
) -> OpenSet:
    """Label embeddings for ``tags`` (see the module docstring for where descriptions come from).

    Tags already in ``vocabulary`` (case-insensitive) keep their built-in embedding and are listed in
    ``reused_builtin`` (reported once). ``encoder`` defaults to ``ClipTextEncoder(clip_file)``, loaded
    only if some embedding is not cached.
    """
    import torch

    from .clip import ClipTextEncoder

    items = [t if isinstance(t, OpenSetTag) else OpenSetTag(t) for t in tags]
    cache = cache or TextCache()
    encoder = encoder or ClipTextEncoder(clip_file)
    result = OpenSet(Vocabulary((), ()), torch.empty(0, DESCRIPTIONS_PER_TAG, 512))
    new = _reuse_builtin(items, vocabulary, result)
    from_file = load_descriptions(descriptions_file) if descriptions_file is not None else {}
    embeds = _embed_new_tags(
        new,
        result,
        from_file={k.lower(): v for k, v in from_file.items()},
        encoder=encoder,
        cache=cache,
        llm=llm,
        require_llm=require_llm,
    )
    result.vocabulary_extension = Vocabulary(
        tuple(t.name for t in new), tuple(t.threshold for t in new), None, (True,) * len(new)
    )
    if embeds:
        result.label_embed = torch.stack(embeds).float()  # (T_new, 51, 512)
    return result


def _reuse_builtin(items: list[OpenSetTag], vocabulary: Vocabulary, result: OpenSet) -> list[OpenSetTag]:
    """The tags not in ``vocabulary`` (case-insensitive); the others are recorded in ``result`` as
    reusing their built-in embedding (and any explicit threshold)."""
    index = vocabulary.index()
    new: list[OpenSetTag] = []
    for t in items:
        i = index.get(t.name.lower())
        if i is None:
            new.append(t)
        else:
            result.reused_builtin.append(vocabulary.names[i])
            result.reused_indices.append(i)
            result.reused_thresholds.append(t.threshold if t.explicit_threshold else None)
    if result.reused_builtin:  # reported once; the caller shows ``reused_builtin`` to the user
        log.info(
            "open-set tags already in the built-in vocabulary use the built-in embeddings: %s",
            ", ".join(result.reused_builtin),
        )
    return new


def _embed_new_tags(
    new: list[OpenSetTag],
    result: OpenSet,
    *,
    from_file: dict[str, list[str]],
    encoder: ClipTextEncoder,
    cache: TextCache,
    llm: LLMSettings | LLMClient | None,
    require_llm: bool,
) -> list[torch.Tensor]:
    """One (51, 512) embedding per new tag: from the descriptions file, else the cache or the LLM, else
    CLIP prompt templates (warned once, in ``result.warnings``; an error with ``require_llm``)."""
    describer: _Describer | None = None
    embeds: list[torch.Tensor] = []
    fallback: list[str] = []
    for t in new:
        descs = from_file.get(t.name.lower())
        source = "file"
        if descs is None:
            # CLIP is checked before the first LLM request: no LLM call is spent when it is missing
            describer = describer or _Describer(llm, cache, before_llm=encoder.ensure_available)
            descs, source = describer.get(t.name)
        if descs is not None:
            emb = embed_descriptions(descs, encoder, cache)  # (51, 512)
        else:
            if require_llm:
                assert describer is not None
                why = describer.tag_failures.get(t.name) or describer.failure
                raise LLMError(
                    f"open-set tag {t.name!r} needs LLM descriptions (--require-llm) but {why}; configure "
                    f"{ENV_API_KEY} or --llm-base-url / {ENV_BASE_URL}, or pass --descriptions FILE"
                )
            emb = embed_templates(t.name, encoder, cache)
            source = "templates"
            fallback.append(t.name)
        if emb.shape != (DESCRIPTIONS_PER_TAG, 512):
            raise InputError(
                f"open-set tag {t.name!r}: embedding shape {tuple(emb.shape)} is not (51, 512); "
                "the CLIP file must have a 512-wide text projection (ViT-B/16)"
            )
        embeds.append(emb)
        result.sources[t.name] = source
    if fallback:
        assert describer is not None
        reason = describer.failure or "; ".join(describer.tag_failures.get(t, "") for t in fallback[:2])
        msg = _fallback_message(reason, fallback)
        log.warning("%s", msg)
        result.warnings.append(msg)
    return embeds


def combine(
    builtin_vocab: Vocabulary,
    builtin_label_embed: torch.Tensor,
    open_set: OpenSet,
    only_open_set: bool = False,
) -> tuple[Vocabulary, torch.Tensor]:
    """The vocabulary and ``(T', 51, 512)`` label embedding to run the model with.

    Default: every built-in tag (explicit thresholds of reused built-in tags applied) followed by the new
    open-set tags. ``only_open_set``: just the reused built-in tags followed by the new ones.
    ``builtin_label_embed`` is (T, 51, 512) in ``builtin_vocab`` order.
    """
    import torch

    if builtin_label_embed.shape[0] != len(builtin_vocab):
        raise ValueError(
            f"builtin_label_embed has {builtin_label_embed.shape[0]} tags, vocabulary {len(builtin_vocab)}"
        )
    overrides = {
        i: th
        for i, th in zip(open_set.reused_indices, open_set.reused_thresholds, strict=True)
        if th is not None
    }
    base = builtin_vocab
    if overrides:
        ths = tuple(overrides.get(i, th) for i, th in enumerate(builtin_vocab.thresholds))
        base = Vocabulary(builtin_vocab.names, ths, builtin_vocab.names_zh, builtin_vocab.open_set)
    base_embed = builtin_label_embed
    if only_open_set:
        base = base.subset(open_set.reused_indices)
        base_embed = builtin_label_embed[list(open_set.reused_indices)]
    ext = open_set.vocabulary_extension
    vocab = base.extend(ext.names, ext.thresholds, open_set=True)
    new = open_set.label_embed.to(base_embed.device, base_embed.dtype)
    if len(ext) == 0:
        return vocab, base_embed.clone() if only_open_set else base_embed
    return vocab, torch.cat([base_embed, new], dim=0)  # (T', 51, 512)
