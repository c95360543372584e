"""What a run has to do for each file: nothing, decide again from stored scores, or run the model.

    plan = plan_run(cat, files, Wanted(scorer, vocab, decide_key, kinds=("xmp",)))
    plan.skip      # the outputs the current settings ask for are there, with that content
    plan.redecide  # stored scores are good (same file, same model, every tag scored): no model needed
    plan.score     # new, changed, or scored by another model / without some tag: the model runs

A file is *the same* when its size, mtime, inode and device match the identity taken when it was
decoded, or when only the stat moved and the content digest matches (the record is refreshed). An
output is *there* when its record was made under the current deciding settings and the file still
holds it: a sidecar whose stat is unchanged since ramtag wrote it, or whose ramtag record has the
recorded fingerprint (the user editing a rating does not count); the image's line in the JSON Lines
file with the recorded fingerprint; embedded keywords while the image is unchanged since writing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..tags.vocab import Vocabulary
from .identity import Identity, PathLike, path_key, unchanged
from .outputs import jsonl_fingerprints, sidecar_fingerprint
from .store import Catalog, ImageRow, OutputRow

log = logging.getLogger(__name__)
P = TypeVar("P", bound=PathLike)

OUTPUT_KINDS = ("xmp", "embed", "json")


@dataclass(frozen=True)
class Wanted:
    """What the current settings ask for."""

    scorer: str  # the key of what produces scores (weights, open-set embeddings, preprocessing...)
    vocab: Vocabulary  # the vocabulary the run decides with
    decide_key: str  # hash of every deciding setting (thresholds, top-k, renames, lang, hierarchy, naming...)
    kinds: tuple[str, ...] = ("xmp",)  # outputs asked for: xmp | embed | json
    json_path: PathLike | None = None  # the JSON Lines file when "json" is asked for


@dataclass
class Plan:
    skip: list[PathLike] = field(default_factory=list)
    redecide: list[PathLike] = field(default_factory=list)
    score: list[PathLike] = field(default_factory=list)
    refreshed: int = 0  # touched / copied files whose content was unchanged (record refreshed)
    rows: dict[bytes, ImageRow] = field(default_factory=dict)  # catalog rows of the files (by key)


def plan_run(cat: Catalog, files: Sequence[P], wanted: Wanted, *, force: bool = False) -> Plan:
    """Sort ``files`` into skip / redecide / score (each keeps the input order)."""
    plan = Plan()
    if force:
        plan.score = list(files)
        return plan
    unknown = set(wanted.kinds) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown output kinds {sorted(unknown)}")
    keys = [path_key(f) for f in files]
    plan.rows = rows = cat.lookup(keys, resolved=True)
    outputs = cat.outputs(list(rows), resolved=True) if wanted.kinds else {}
    json_key = path_key(wanted.json_path) if wanted.json_path is not None else None
    json_lines = jsonl_fingerprints(json_key) if json_key is not None and "json" in wanted.kinds else {}
    vocab_ok: dict[str, bool] = {}
    wanted_names = {n.lower() for n in wanted.vocab.names}
    for f, key in zip(files, keys, strict=True):
        row = rows.get(key)
        if row is None:
            plan.score.append(f)
            continue
        try:
            st = os.stat(key)
        except OSError:
            plan.score.append(f)  # the pipeline reports it
            continue
        same = unchanged(row.identity, key, st)
        if same is False:
            plan.score.append(f)
            continue
        if same is None:
            cat.refresh_identity(key, Identity.from_stat(st, row.identity.digest))
            plan.refreshed += 1
        if row.vocab not in vocab_ok:
            stored = {n.lower() for n in cat.vocabulary(row.vocab).names}
            vocab_ok[row.vocab] = wanted_names <= stored
        if row.scorer != wanted.scorer or not vocab_ok[row.vocab]:
            plan.score.append(f)
            continue
        mine = outputs.get(key, [])
        if all(_output_there(cat, kind, mine, wanted, json_key, json_lines) for kind in wanted.kinds):
            plan.skip.append(f)
        else:
            plan.redecide.append(f)
    if plan.refreshed:
        log.info("catalog: %d touched files have the same content; not tagged again", plan.refreshed)
    return plan


def _output_there(
    cat: Catalog,
    kind: str,
    rows: list[OutputRow],
    wanted: Wanted,
    json_key: bytes | None,
    json_lines: dict[bytes, str],
) -> bool:
    for row in rows:
        if row.kind != kind or row.settings != wanted.decide_key:
            continue
        if kind == "embed" and row.target == row.image:  # the image is unchanged since ramtag wrote into it
            return True
        if kind == "json":
            if row.target == json_key and json_lines.get(row.image) == row.fingerprint:
                return True
            continue
        try:
            st = os.stat(row.target)
        except OSError:
            if not row.tags:
                return True  # no tags: no sidecar was ever needed
            continue  # the sidecar is gone
        if (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns):
            return True
        if sidecar_fingerprint(row.target) == row.fingerprint:
            cat.refresh_output_stat(row.image, kind, row.target, st)  # edited by the user, ours intact
            return True
    return False
