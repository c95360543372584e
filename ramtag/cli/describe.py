"""``ramtag describe``: LLM descriptions of open-set tags (``ramtag.api.describe``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from .common import examples, out, setup_logging
from .flags import LLMBaseURL, LLMKey, LLMModel, Verbose

EXAMPLES = examples(
    'ramtag describe "corgi,meteor shower" --llm-base-url http://localhost:11434/v1',
    'ramtag describe "corgi" --json > corgi.json      # then: ramtag tag --descriptions corgi.json',
)


def describe(
    tags: Annotated[
        str, typer.Argument(metavar="TAGS", help='Comma-separated tags, e.g. "corgi,meteor shower".')
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--no-json",
            help="Print the official descriptions format (a JSON list of {tag: [51 descriptions]}), "
            "which `ramtag tag --descriptions FILE` reads.",
        ),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option("--cache/--no-cache", help="Use cached descriptions (--no-cache asks the LLM again)."),
    ] = True,
    llm_base_url: LLMBaseURL = None,
    llm_model: LLMModel = None,
    llm_api_key: LLMKey = None,
    verbose: Verbose = False,
) -> None:
    """Describe open-set tags with an LLM (51 descriptions each, as RAM++ expects) and cache them."""
    from .. import api

    setup_logging(verbose)
    result = api.describe(
        tags, llm_base_url=llm_base_url, llm_model=llm_model, llm_api_key=llm_api_key, use_cache=cache
    )
    if as_json:
        from ..text.describe import dump_descriptions

        sys.stdout.write(dump_descriptions(result))
        return
    for tag_name, descriptions in result.items():
        out.print(f"[bold]{escape(tag_name)}[/] ({len(descriptions)} descriptions)")
        for d in descriptions:
            out.print(f"  - {escape(d)}", highlight=False)
