"""LLM descriptions of a tag, RAM++ style (paper section 3.3), and the official descriptions file format.

A tag's description set has exactly 51 strings: ``"a photo of a {tag}."`` (as in the official files,
whatever the article) followed by 50 answers: 10 answers to each of the 5 paper prompts, sampled at
temperature 0.99 with at most 77 tokens each. An answer that is a JSON list of strings (some models
answer that way) counts as one answer per item. Answers are cleaned (control characters and
undecodable text removed), refusals and empties dropped, duplicates removed; fewer than
``MIN_DESCRIPTIONS`` distinct ones is an :class:`LLMError` (open-set tagging then falls back to prompt
templates with a warning), otherwise the list is cycled or trimmed back to 50.

Descriptions file (official ``*_llm_tag_descriptions.json`` layout): a JSON list of one-key objects
``[{"corgi": [51 strings]}, {"meteor shower": [...]}]``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import InputError, LLMError
from ..fsutil import atomic_write_bytes
from .llm import LLMClient, storable_text

log = logging.getLogger(__name__)

DESCRIPTIONS_PER_TAG = 51  # rows per tag in RAM++'s label_embed
ANSWERS_PER_PROMPT = 10  # 5 prompts x 10 answers = 50 descriptions
TEMPERATURE = 0.99  # the paper's sampling temperature
MAX_TOKENS = 77  # CLIP's context length; longer answers would be truncated anyway
MAX_CHARS = 400  # a cleaned answer is cut (at a word boundary) beyond this
MIN_DESCRIPTIONS = 10  # fewer distinct usable answers than this: the LLM did not really describe the tag
PROMPT_SET_VERSION = "ram-plus-3.3-v1"  # bump when PROMPTS or the cleaning rules change (cache key)

# The 5 prompts of the RAM++ paper (section 3.3); {a} is the article ("a"/"an"), {tag} the tag.
PROMPTS: tuple[str, ...] = (
    "Describe concisely what {a} {tag} looks like",
    "How can you identify {a} {tag} concisely?",
    "What does {a} {tag} look like concisely?",
    "What are the identifying characteristics of {a} {tag}",
    "Please provide a concise description of the visual characteristics of {tag}",
)

_AN_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir", "herb")  # silent h
_A_EXCEPTIONS = ("uni", "use", "usu", "uten", "uro", "eu", "ewe", "one", "once", "ubiq", "ufo", "uk")


def article(tag: str) -> str:
    """``"an"`` before a vowel sound, else ``"a"`` (English spelling heuristics)."""
    word = tag.strip().lower()
    if word.startswith(_AN_EXCEPTIONS):
        return "an"
    if word.startswith(_A_EXCEPTIONS):
        return "a"
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def photo_prompt(tag: str) -> str:
    """The first description of every tag, exactly as the official files write it."""
    return f"a photo of a {tag}."


def prompts_for(tag: str) -> list[str]:
    """The 5 paper prompts for ``tag`` with the right article."""
    return [p.format(a=article(tag), tag=tag) for p in PROMPTS]


_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013\u2014>]+|\d{1,2}[.)]|[a-zA-Z][.)](?=\s))\s*")
_LEAD = re.compile(r"^(?:answer|description|sure|certainly|of course)\s*[:!,.-]\s*", re.IGNORECASE)
# Control characters, bidi overrides, zero-width characters, U+FFFD (text the server sent undecodable).
_JUNK = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u200b-\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufeff\\ufffd]")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?)")  # CSI / OSC sequences
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*|\s*```\s*$")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_REFUSALS = (
    "i'm sorry",
    "i am sorry",
    "sorry,",
    "as an ai",
    "as a language model",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i do not know",
    "i don't know",
)


def split_answer(text: str) -> list[str]:
    """One LLM answer -> the descriptions in it: the items of a JSON list of strings (also inside a
    markdown code fence), else the answer itself."""
    body = _FENCE.sub("", text.strip())
    if body.startswith("[") and body.endswith("]"):
        try:
            items = json.loads(body)
        except ValueError:
            return [text]
        if isinstance(items, list) and items and all(isinstance(i, str) for i in items):
            return items
    return [text]


def clean_answer(text: str) -> str | None:
    """One LLM answer as one clean line, or None when nothing usable is left.

    Strips whitespace, quotes, markdown emphasis, list bullets and "Answer:"-style lead-ins on every
    line, joins lines with spaces, removes control characters and undecodable text, collapses runs of
    spaces, drops refusals, cuts to ``MAX_CHARS``.
    """
    lines = []
    text = _ANSI.sub(" ", storable_text(text))
    text = _JUNK.sub(lambda m: "\n" if m.group() in "\r\n" else " ", text)
    for line in text.split("\n"):
        line = line.replace("**", "").replace("__", "").strip()
        line = _BULLET.sub("", line)
        line = line.strip().strip(_QUOTES).strip()
        if line:
            lines.append(line)
    out = " ".join(" ".join(lines).split())
    out = _LEAD.sub("", out).strip().strip(_QUOTES).strip()
    if not out or not any(c.isalnum() for c in out):
        return None
    if out.lower().replace("\u2019", "'").startswith(_REFUSALS):
        return None
    if len(out) > MAX_CHARS:
        cut = out[:MAX_CHARS]
        out = cut[: cut.rfind(" ")] if " " in cut else cut
    return out


class TooFewDescriptions(LLMError):
    """The LLM answered, but with too few distinct usable descriptions of one tag (others may be fine)."""


def finalize(
    tag: str, answers: Sequence[str], total: int = DESCRIPTIONS_PER_TAG, minimum: int = MIN_DESCRIPTIONS
) -> list[str]:
    """``photo_prompt(tag)`` + cleaned, de-duplicated answers, cycled or trimmed to ``total`` strings.

    Raises :class:`LLMError` when fewer than ``minimum`` distinct answers are usable.
    """
    first = photo_prompt(tag)
    seen = {first.lower()}
    kept: list[str] = []
    for answer in answers:
        for a in split_answer(answer):
            c = clean_answer(a)
            if c is not None and c.lower() not in seen:
                seen.add(c.lower())
                kept.append(c)
    if len(kept) < max(1, minimum):
        got = f"only {len(kept)} distinct usable descriptions" if kept else "no usable description"
        raise TooFewDescriptions(
            f"the LLM gave {got} of {tag!r} (at least {max(1, minimum)} needed; the rest were refusals, "
            "empty or repeated answers); try another model with --llm-model / RAMTAG_LLM_MODEL"
        )
    need = total - 1
    body = [kept[i % len(kept)] for i in range(need)]  # cycle when short, trim when long
    return [first, *body]


def generate_descriptions(
    tag: str,
    client: LLMClient,
    *,
    answers_per_prompt: int = ANSWERS_PER_PROMPT,
    temperature: float = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    total: int = DESCRIPTIONS_PER_TAG,
    workers: int = 5,
) -> list[str]:
    """Ask the LLM the 5 paper prompts for ``tag`` (``answers_per_prompt`` answers each; the first prompt
    alone, the other 4 in parallel) and return exactly ``total`` descriptions (see :func:`finalize`)."""

    def ask(prompt: str) -> list[str]:
        return client.chat(prompt, n=answers_per_prompt, temperature=temperature, max_tokens=max_tokens)

    prompts = prompts_for(tag)
    # The first prompt alone: a dead server fails once, and the client learns whether n > 1 works.
    per_prompt = [ask(prompts[0])]
    if workers <= 1:
        per_prompt += [ask(p) for p in prompts[1:]]
    else:
        with ThreadPoolExecutor(
            max_workers=min(workers, len(prompts) - 1), thread_name_prefix="ramtag-llm"
        ) as pool:
            per_prompt += list(pool.map(ask, prompts[1:]))
    log.debug("LLM answered %d prompts for %r", len(per_prompt), tag)
    return finalize(tag, [a for answers in per_prompt for a in answers], total)


# ------------------------------------------------------------------ descriptions file (official format)
def load_descriptions(path: str | Path, *, per_tag: int = DESCRIPTIONS_PER_TAG) -> dict[str, list[str]]:
    """Read an official-format descriptions file -> {tag: [per_tag strings]} in file order.

    Also accepts a plain ``{tag: [...]}`` object. Every problem raises :class:`InputError` naming the file.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: descriptions file not found; check --descriptions") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read the descriptions file ({e}); check --descriptions") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f'{p}: not valid JSON (line {e.lineno}: {e.msg}); expected [{{"tag": [51 strings]}}, ...]'
        ) from None
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InputError(f'{p}: expected a JSON list of {{"tag": [51 strings]}} objects')
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f'{p}: item {i} is not an object; expected {{"tag": [51 strings]}}')
        for tag, descs in entry.items():
            name = tag.strip()
            if not name:
                raise InputError(f"{p}: item {i} has an empty tag name")
            if name.lower() in seen:
                raise InputError(f"{p}: tag {name!r} appears twice; keep one entry per tag")
            if not isinstance(descs, list) or not all(isinstance(d, str) and d.strip() for d in descs):
                raise InputError(f"{p}: tag {name!r} must map to a list of non-empty strings")
            if len(descs) != per_tag:
                raise InputError(
                    f"{p}: tag {name!r} has {len(descs)} descriptions; RAM++ needs exactly {per_tag}"
                )
            seen.add(name.lower())
            out[name] = list(descs)
    return out


def dump_descriptions(descriptions: Mapping[str, Sequence[str]], path: str | Path | None = None) -> str:
    """The official-format JSON text for ``descriptions``; also written atomically to ``path`` if given."""
    text = (
        json.dumps([{tag: list(d)} for tag, d in descriptions.items()], ensure_ascii=False, indent=2) + "\n"
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode("utf-8"))
    return text
