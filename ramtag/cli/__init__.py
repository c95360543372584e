"""The ``ramtag`` command line: one module per command, each a few lines calling one library function.

- ``app.py``: the typer app and :func:`main`, the one place where a :class:`ramtag.errors.RamtagError`
  becomes one red line and its exit code (2 for usage errors; a traceback only with ``-v``)
- ``common.py``: consoles, shared option types (the ``--write`` choices come from ``ramtag.writers.WRITERS``),
  help examples, tables that fit the terminal or print plain tab-separated rows when piped
- ``flags.py``: each flag declared once (help, panel, default shown), as ``Annotated`` aliases the commands
  share; ``tag``'s flags are named after the settings fields (``ramtag.settings``)
- ``tag.py``, ``untag.py``, ``describe.py``, ``bench.py``, ``train.py``, ``evaluate.py``, ``weights.py``: the
  commands; ``progress.py`` and ``render.py``: what ``tag`` and ``train``/``eval`` show

This is the only package that uses typer/rich; it does not import torch at module level, so
``ramtag --help`` is instant. A new command = a module here + one ``app.command`` line in ``app.py``.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
