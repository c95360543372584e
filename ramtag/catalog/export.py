"""Export the catalog (or a query's answer) as CSV / TSV / JSON Lines, or as a list of paths.

Paths that are not valid UTF-8 are written as the original bytes in CSV/TSV/paths output, and as
``\\udcXX`` escapes in JSON (``os.fsencode(json.loads(line)["path"])`` gives the bytes back).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from typing import BinaryIO

from ..errors import UsageError
from .store import CatalogRecord

FORMATS = ("paths", "jsonl", "csv", "tsv")


def _tsv_field(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_records(
    records: Iterable[CatalogRecord], out: BinaryIO, fmt: str = "jsonl", *, nul: bool = False
) -> int:
    """Write ``records`` to a binary stream; returns how many. ``nul``: paths end with NUL (xargs -0)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    n = 0
    if fmt == "csv":
        text = io.TextIOWrapper(
            out, encoding="utf-8", errors="surrogateescape", newline="", write_through=True
        )
        w = csv.writer(text)
        w.writerow(["path", "tags", "scores", "model", "run"])
    for rec in records:
        path = rec.key
        names = [t.name for t in rec.tags]
        scores = [f"{t.score:.3f}" for t in rec.tags]
        if fmt == "paths":
            out.write(path + (b"\0" if nul else b"\n"))
        elif fmt == "jsonl":
            d = rec.to_dict()
            try:
                line = json.dumps(d, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a non-UTF-8 name: keep its bytes as \udcXX escapes
                line = json.dumps(d).encode("ascii")
            out.write(line + b"\n")
        elif fmt == "csv":
            w.writerow([os.fsdecode(path), ";".join(names), ";".join(scores), rec.model, rec.run])
        else:
            fields = [os.fsdecode(path), ",".join(names), ",".join(scores)]
            out.write("\t".join(_tsv_field(f) for f in fields).encode("utf-8", "surrogateescape") + b"\n")
        n += 1
    if fmt == "csv":
        text.detach()
    out.flush()
    return n
