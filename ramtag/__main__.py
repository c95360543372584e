"""``python -m ramtag``: the same as the ``ramtag`` command."""

from .cli import main

main()
