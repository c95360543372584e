"""``ramtag tags``: the built-in vocabulary of the chosen weights, searched
(``ramtag.weights.read_vocabulary``)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated

import typer

from .common import Rows, examples, out, setup_logging, show
from .flags import Verbose, WeightsNoDownload

if TYPE_CHECKING:
    from ..tags.vocab import Vocabulary

EXAMPLES = examples(
    "ramtag tags                         # all tags: name, Chinese name, threshold",
    "ramtag tags dog                     # tags containing 'dog' (close spellings when none do)",
    'ramtag tags --open-set "corgi,dog"  # which of these are built in already',
)


def tags(
    query: Annotated[
        str | None,
        typer.Argument(
            metavar="QUERY",
            help="Show only tags whose English or Chinese name contains QUERY (case-insensitive); "
            "close spellings when none does.",
            show_default="all tags",
        ),
    ] = None,
    open_set: Annotated[
        str | None,
        typer.Option(
            "--open-set",
            metavar="TAGS",
            help="Comma-separated names, as for `ramtag tag --open-set`: say which are built in already.",
            show_default="none",
        ),
    ] = None,
    weights: WeightsNoDownload = None,
    verbose: Verbose = False,
) -> None:
    """List the tags the weights know (name, Chinese name, threshold), or search them."""
    from ..text.openset import parse_open_set
    from ..weights import read_vocabulary

    setup_logging(verbose)
    wanted = [t.name for t in parse_open_set(open_set, None)] if open_set else []
    vocab = read_vocabulary(weights)
    if wanted:
        show([built_in_rows(vocab, wanted)])
        return
    indices, close = match_tags(vocab, query)
    title = (
        f"{len(vocab)} tags" if query is None else f"{len(indices)} of {len(vocab)} tags matching {query!r}"
    )
    if close:
        title = f"no tag contains {query!r}; close spellings"
    if not indices:
        out.print(f"no tag contains {query!r} and none is spelled close to it", highlight=False, markup=False)
        raise typer.Exit(1)
    rows = Rows(title, ("name", "Chinese", "threshold"), left=2)
    for i in indices:
        rows.add(vocab.names[i], _zh(vocab, i), f"{vocab.thresholds[i]:.2f}")
    show([rows])


def match_tags(vocab: Vocabulary, query: str | None) -> tuple[list[int], bool]:
    """(positions of the tags containing ``query`` in either language, False), or when none does
    (the closest spellings by difflib, True); all tags for no query."""
    if query is None:
        return list(range(len(vocab))), False
    q = query.strip().lower()
    zh = vocab.names_zh or ()
    hits = [i for i, n in enumerate(vocab.names) if q in n.lower() or (zh and q in zh[i])]
    if hits:
        return hits, False
    index = vocab.index()
    close = difflib.get_close_matches(q, list(index), n=10, cutoff=0.6)
    return [index[n] for n in close], True


def built_in_rows(vocab: Vocabulary, wanted: list[str]) -> Rows:
    """One row per name: built in (with its threshold), or new with its closest built-in spellings."""
    index = vocab.index()
    rows = Rows("--open-set names", ("name", "built in", "threshold", "close built-in tags"), left=4)
    for name in wanted:
        i = index.get(name.lower())
        if i is not None:
            rows.add(name, "yes: uses the built-in tag", f"{vocab.thresholds[i]:.2f}", "")
        else:
            close = difflib.get_close_matches(name.lower(), list(index), n=3, cutoff=0.75)
            rows.add(
                name, "no: added as an open-set tag", "", ", ".join(vocab.names[index[c]] for c in close)
            )
    return rows


def _zh(vocab: Vocabulary, i: int) -> str:
    return vocab.names_zh[i].strip() if vocab.names_zh is not None else ""
