"""Tags from captions: find the vocabulary's tags in free text.

The matcher works on word tokens (lower-cased, punctuation removed, hyphens split), so
"Meteor-Shower" and "meteor shower" are the same two tokens. For every tag it registers the
tag's own tokens and simple inflections of its last word (plurals: "dogs", "buses", "berries",
"knives", "men"; verb forms: "running", "dances", "played"). Longest match wins and matches
never overlap: "a hot dog stand" gives "hot dog" (if it is a tag), not "dog". When two tags
claim the same surface form, the exact name beats a plural, which beats a verb form, so
"glasses" maps to the tag "glasses" when the vocabulary has both "glass" and "glasses".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*", re.UNICODE)  # words; inner apostrophes kept ("rock'n'roll")

_IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "foot": "feet",
    "tooth": "teeth",
    "mouse": "mice",
    "goose": "geese",
    "ox": "oxen",
    "louse": "lice",
    "fish": "fish",
    "sheep": "sheep",
    "deer": "deer",
    "cactus": "cacti",
    "fungus": "fungi",
    "leaf": "leaves",
    "wolf": "wolves",
    "knife": "knives",
    "wife": "wives",
    "life": "lives",
    "calf": "calves",
    "half": "halves",
    "shelf": "shelves",
    "loaf": "loaves",
    "thief": "thieves",
}
_VOWELS = set("aeiou")

# Priority of a surface form: lower wins when two tags claim the same tokens.
EXACT, PLURAL, VERB = 0, 1, 2


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-cased word tokens; possessive "'s" dropped ("dog's" -> "dog")."""
    out = []
    for word in _TOKEN.findall(text.lower()):
        if word.endswith("'s"):
            word = word[:-2]
        out.append(word.replace("'", ""))
    return tuple(w for w in out if w)


def plural_forms(word: str) -> set[str]:
    """English plural forms of a noun (regular rules plus a short irregular list)."""
    forms = set()
    if word in _IRREGULAR_PLURALS:
        forms.add(_IRREGULAR_PLURALS[word])
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    elif word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        forms.add(word[:-1] + "ies")
    elif word.endswith("o"):
        forms.update((word + "s", word + "es"))
    else:
        forms.add(word + "s")
    return forms - {word}


def verb_forms(word: str) -> set[str]:
    """-ing, -ed and -s forms of a verb ("run" -> running/runned/runs; "dance" -> dancing)."""
    if len(word) < 3 or not word.isalpha():
        return set()
    forms = {word + "s"} if not word.endswith(("s", "x", "z", "ch", "sh")) else {word + "es"}
    if word.endswith("ie"):
        forms.update((word[:-2] + "ying", word + "d"))
    elif word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
        forms.update((word[:-1] + "ing", word + "d"))
    elif word.endswith("y") and word[-2] not in _VOWELS:
        forms.update((word + "ing", word[:-1] + "ied", word[:-1] + "ies"))
    else:
        stem = word
        # consonant-vowel-consonant at the end of a short verb doubles: run -> running, sit -> sitting
        if (
            len(word) <= 4
            and word[-1] not in _VOWELS | {"w", "x", "y"}
            and word[-2] in _VOWELS
            and word[-3] not in _VOWELS
        ):
            stem = word + word[-1]
        forms.update((stem + "ing", stem + "ed"))
    return forms - {word}


@dataclass(frozen=True)
class TagMatch:
    """One tag found in a caption."""

    tag: int  # index into the vocabulary
    start: int  # first token index in the caption
    end: int  # one past the last token index
    form: str  # the caption's words that matched, space-joined


class TagParser:
    """Finds vocabulary tags in captions. Build once per vocabulary, then call :meth:`parse`."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self._forms: dict[tuple[str, ...], tuple[int, int]] = {}  # tokens -> (priority, tag index)
        for index, name in enumerate(self.names):
            tokens = tokenize(name)
            if not tokens:
                continue
            self._claim(tokens, EXACT, index)
            head, last = tokens[:-1], tokens[-1]
            if last.isalpha():
                for form in plural_forms(last):
                    self._claim((*head, form), PLURAL, index)
            if len(tokens) == 1:
                for form in verb_forms(last):
                    self._claim((form,), VERB, index)
        self.max_len = max((len(k) for k in self._forms), default=0)

    def _claim(self, tokens: tuple[str, ...], priority: int, index: int) -> None:
        current = self._forms.get(tokens)
        if current is None or (priority, index) < current:
            self._forms[tokens] = (priority, index)

    def matches(self, caption: str) -> list[TagMatch]:
        """Every non-overlapping tag occurrence, scanning left to right, longest match first."""
        tokens = tokenize(caption)
        out: list[TagMatch] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self.max_len, len(tokens) - i), 0, -1):
                hit = self._forms.get(tokens[i : i + n])
                if hit is not None:
                    out.append(TagMatch(hit[1], i, i + n, " ".join(tokens[i : i + n])))
                    i += n
                    break
            else:
                i += 1
        return out

    def parse(self, caption: str) -> list[int]:
        """Sorted, de-duplicated tag indices found in ``caption``."""
        return sorted({m.tag for m in self.matches(caption)})

    def parse_names(self, caption: str) -> list[str]:
        """Like :meth:`parse`, as tag names."""
        return [self.names[i] for i in self.parse(caption)]


def count_tags(parser: TagParser, captions: Iterable[str]) -> Counter[str]:
    """How many captions mention each tag (a tag counts once per caption)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(parser.parse_names(caption))
    return counts
