"""Tag renames (``--rename OLD=NEW``, ``--rename-file``): parsing, the decision rule, and end to end through
`ramtag tag` on the tiny official-format checkpoint: written to XMP and JSON Lines, a deciding setting the
catalog re-decides without torch, undone by removing it, and `untag` keeps the user's own keywords."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_catalog_library import _same_but_float16
from test_cli import photos, read_jsonl, run_cli, tiny_weights  # noqa: F401  (fixtures and helpers)

from ramtag.errors import InputError, UsageError
from ramtag.results import TagScore
from ramtag.tags import Vocabulary, decide, parse_renames
from ramtag.tags.rename import canonical_renames, rename_columns
from ramtag.writers.xmp import XmpPacket

DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
VOCAB = Vocabulary(
    ("cat", "kitten", "selfie", "dog", "beach"), (0.5,) * 5, ("猫", "小猫", "自拍", "狗", "海滩")
)


# ----------------------------------------------------------------------------------- parsing


def test_parse_renames_options_and_file(tmp_path: Path) -> None:
    f = tmp_path / "renames.txt"
    f.write_text(
        "# my keywords\n\n  kitten = Cats  \nbeach\tAt the sea\nsunset = #goldenhour\n  # indented comment\n",
        encoding="utf-8",
    )
    got = parse_renames(["cat=Cats", "selfie="], f)
    assert got == {
        "cat": "Cats",
        "selfie": "",
        "kitten": "Cats",
        "beach": "At the sea",
        "sunset": "#goldenhour",  # a '#' inside a line is part of the name (hashtags)
    }
    assert parse_renames(["Cat=Cats", "cat=Cats"]) == {"Cat": "Cats", "cat": "Cats"}  # the same, twice: fine


@pytest.mark.parametrize(
    ("items", "text", "match"),
    [
        (["cat"], None, r"--rename: 'cat' is not OLD=NEW"),
        (["=Cats"], None, r"names no tag"),
        (["cat=Cats", "CAT=Kitties"], None, r"'CAT' is renamed twice \('Cats' at --rename"),
        ([], "cat = Cats\ndog\n", r"renames.txt:2: 'dog' is not OLD=NEW"),
    ],
)
def test_parse_renames_errors_name_the_place(
    tmp_path: Path, items: list[str], text: str | None, match: str
) -> None:
    f = None
    if text is not None:
        f = tmp_path / "renames.txt"
        f.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=match):
        parse_renames(items, f)


def test_missing_rename_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rename file not found; check --rename-file"):
        parse_renames([], tmp_path / "nope.txt")


def test_unknown_tag_names_close_spellings() -> None:
    with pytest.raises(UsageError, match=r"'kiten': the vocabulary has no such tag; did you mean 'kitten'"):
        parse_renames(["kiten=Cats"], vocab=VOCAB)
    with pytest.raises(UsageError, match=r"`ramtag tags zebra` searches the tags"):
        rename_columns({"zebra": "Z"}, VOCAB)
    # any case of OLD; one canonical form for the catalog however it was typed
    assert canonical_renames({"DOG": "Dogs", "Cat": ""}, VOCAB) == {"cat": "", "dog": "Dogs"}


# ------------------------------------------------------------------------------- deciding


def _names(rows: list[list[TagScore]], lang: str = "en") -> list[list[str]]:
    return [[t.display_name(lang) for t in row] for row in rows]


def test_decide_renames_suppresses_and_merges() -> None:
    scores = np.array([[0.9, 0.95, 0.8, 0.7, 0.1], [0.6, 0.1, 0.1, 0.1, 0.9]])
    rename = {"cat": "Cats", "kitten": "Cats", "selfie": ""}
    rows = decide(scores, VOCAB, rename=rename)
    assert _names(rows) == [["Cats", "dog"], ["beach", "Cats"]]
    cats = rows[0][0]
    # the best of the two
    assert (cats.name, cats.rename, cats.score) == ("kitten", "Cats", pytest.approx(0.95))
    assert cats.to_dict()["name"] == "Cats" and cats.to_dict()["renamed_from"] == "kitten"
    assert "name_zh" not in cats.to_dict()  # the new name is the name in every language
    assert rows[0][1].to_dict() == {"name": "dog", "score": 0.7, "threshold": 0.5, "name_zh": "狗"}
    # --top-k counts what is written: a suppressed or merged tag takes no place
    assert _names(decide(scores, VOCAB, rename=rename, top_k=2)) == [["Cats", "dog"], ["beach", "Cats"]]
    assert _names(decide(scores, VOCAB, top_k=2)) == [["kitten", "cat"], ["beach", "cat"]]
    # the new name whatever the language; the others in it
    assert _names(decide(scores, VOCAB, rename=rename, lang="zh"), "zh") == [["Cats", "狗"], ["海滩", "Cats"]]


def test_open_set_tags_can_be_renamed() -> None:
    vocab = VOCAB.extend(["meteor shower"], [0.5])
    rows = decide(np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.9]]), vocab, rename={"Meteor Shower": "Perseids"})
    assert _names(rows) == [["Perseids"]] and rows[0][0].open_set


def test_decide_merges_a_rename_onto_a_tag_of_that_name() -> None:
    scores = np.array([[0.9, 0.95, 0.1, 0.1, 0.1]])
    rows = decide(scores, VOCAB, rename={"kitten": "cat"})
    assert _names(rows) == [["cat"]] and rows[0][0].score == pytest.approx(0.95)
    # in Chinese the built-in tag is 猫, so the two names differ
    assert _names(decide(scores, VOCAB, rename={"kitten": "cat"}, lang="zh"), "zh") == [["cat", "猫"]]


# ------------------------------------------------------------------------------ end to end


@pytest.fixture
def tag(tiny_weights: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]  # noqa: F811
    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(["tag", *args, "--weights", tiny_weights, "--precision", "fp32"], monkeypatch, capsys)

    return run


def _sidecar(photo: Path) -> Path:
    return photo.with_name(photo.name + ".xmp")


def _record_tags(photo: Path) -> list[str]:
    record = XmpPacket.parse(_sidecar(photo).read_bytes()).read_record()
    return record.tags if record is not None else []


def _values(photo: Path, ns: str, local: str) -> list[str]:
    return XmpPacket.parse(_sidecar(photo).read_bytes()).values(ns, local) or []


def _line(rows: list[dict], photo: Path) -> dict:  # type: ignore[type-arg]
    (row,) = [r for r in rows if Path(r["path"]).name == photo.name]
    return row


def _tag_without_torch(photos: Path, weights: str, *args: str) -> None:
    """`ramtag tag PHOTOS --threshold 0.3 ARGS` in a fresh interpreter that must not import torch."""
    code = (
        "import sys\nfrom ramtag.cli import main\n"
        "sys.argv = ['ramtag', 'tag', *sys.argv[1:], '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    argv = [str(photos), "--weights", weights, "--precision", "fp32", "--threshold", "0.3", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_rename_is_a_deciding_setting(tag, tiny_weights: str, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    low, other = photos / "hubble_deep_field.jpg", photos / "coffee_cup.jpg"
    out = tmp_path / "tags.jsonl"
    code, _, err = tag(str(photos), "--threshold", "0.3", "--json", str(out))
    assert code == 0, err
    before = _record_tags(low)
    first = {t["name"]: t["score"] for t in _line(read_jsonl(out), low)["tags"]}
    mine = [t for t in before if t not in _record_tags(other)]  # tags of low that the other photo lacks
    assert len(mine) >= 4, before
    a, b, c, d = mine[:4]
    other_bytes, other_mtime = _sidecar(other).read_bytes(), _sidecar(other).stat().st_mtime_ns

    # adding renames: re-decided from the catalog's scores, no torch, the sidecar and the JSON line rewritten
    _tag_without_torch(
        photos, tiny_weights, "--json", str(out), "--rename", f"{a}=Renamed A", "--rename", f"{b}=",
        "--rename", f"{c}=Merged", "--rename", f"{d.upper()}=Merged",
    )  # fmt: skip
    renamed = _record_tags(low)
    rename = {a: "Renamed A", b: "", c: "Merged", d: "Merged"}
    assert sorted(renamed) == sorted(dict.fromkeys(rename.get(t, t) for t in before if rename.get(t, t)))
    assert renamed.count("Merged") == 1
    subject, hier = _values(low, DC, "subject"), _values(low, LR, "hierarchicalSubject")
    assert {"Renamed A", "Merged"} <= set(subject) and not {a, b, c, d} & set(subject)
    assert {"ramtag|Renamed A", "ramtag|Merged"} <= set(hier)  # the hierarchy root still applies
    assert not {f"ramtag|{t}" for t in (a, b, c, d)} & set(hier)
    line = {t["name"]: t for t in _line(read_jsonl(out), low)["tags"]}
    assert line["Renamed A"]["renamed_from"] == a and not {a, b, c, d} & set(line)
    # the better score of the two (float16 in the catalog)
    assert line["Merged"]["score"] == pytest.approx(max(first[c], first[d]), abs=1e-3)
    assert line["Merged"]["renamed_from"] in (c, d)
    # a photo none of whose tags is renamed keeps its sidecar as it was: not rewritten
    assert (_sidecar(other).read_bytes(), _sidecar(other).stat().st_mtime_ns) == (other_bytes, other_mtime)

    # the same renames again (typed differently): nothing to do
    again = ["--rename", f"{a.upper()}=Renamed A", "--rename", f"{b}=", "--rename", f"{c}=Merged"]
    again += ["--rename", f"{d}=Merged"]
    code, _, err = tag(str(photos), "--threshold", "0.3", "--json", str(out), *again)
    assert code == 0 and "0 tagged" in err and "re-decided" not in err, err

    # removing them restores the vocabulary's names; the new names leave the sidecar and the JSON line
    code, _, err = tag(str(photos), "--threshold", "0.3", "--json", str(out))
    assert code == 0 and "0 tagged" in err, err
    _same_but_float16(_record_tags(low), before, low, 0.3)
    subject, hier = _values(low, DC, "subject"), _values(low, LR, "hierarchicalSubject")
    assert {a, b, c, d} <= set(subject) and not {"Renamed A", "Merged"} & set(subject)
    assert not {"ramtag|Renamed A", "ramtag|Merged"} & set(hier)
    assert {a, b, c, d} <= {t["name"] for t in _line(read_jsonl(out), low)["tags"]}
    assert all("renamed_from" not in t for r in read_jsonl(out) for t in r["tags"])


USER_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
   <dc:subject><rdf:Bag><rdf:li>Merged</rdf:li><rdf:li>my trip</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_untag_after_rename_keeps_the_users_own_keyword(  # type: ignore[no-untyped-def]
    tag, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    low = photos / "hubble_deep_field.jpg"
    _sidecar(low).write_text(USER_SIDECAR, encoding="utf-8")  # the user already has a keyword "Merged"
    renames = tmp_path / "renames.txt"
    # three tags this photo scores above 0.9 under the tiny weights (far above 0.3 on any CPU)
    renames.write_text("# two tags into the user's keyword\nbelly = Merged\naid\tMerged\nafro = Renamed\n")
    out = tmp_path / "tags.jsonl"
    code, _, err = tag(str(photos), "--threshold", "0.3", "--rename-file", str(renames), "--json", str(out))
    assert code == 0, err
    subject = _values(low, DC, "subject")
    assert subject.count("Merged") == 1 and "Renamed" in subject and "my trip" in subject
    assert not {"belly", "aid", "afro"} & set(subject)
    record = XmpPacket.parse(_sidecar(low).read_bytes()).read_record()
    assert record is not None and "Merged" in record.tags
    assert "Merged" not in record.added["Subject"]  # the user's, not ramtag's
    assert "ramtag|Merged" in record.added["HierarchicalSubject"]

    # untag --below works on the names written: between the two renamed tags' scores, one goes
    score = {t["name"]: t["score"] for t in _line(read_jsonl(out), low)["tags"]}
    assert score["Merged"] > score["Renamed"]
    below = f"{(score['Merged'] + score['Renamed']) / 2:.6f}"
    code, _, err = run_cli(["untag", "--below", below, str(low)], monkeypatch, capsys)
    assert code == 0, err
    subject = _values(low, DC, "subject")
    assert "Renamed" not in subject and subject.count("Merged") == 1 and "my trip" in subject
    assert "ramtag|Merged" in _values(low, LR, "hierarchicalSubject")
    assert "Merged" in {t["name"] for t in _line(read_jsonl(out), low)["tags"]}
    assert "Renamed" not in {t["name"] for t in _line(read_jsonl(out), low)["tags"]}

    code, _, err = run_cli(["untag", str(photos)], monkeypatch, capsys)
    assert code == 0, err
    assert _values(low, DC, "subject") == ["Merged", "my trip"]
    assert not any(v.startswith("ramtag") for v in _values(low, LR, "hierarchicalSubject"))
    assert XmpPacket.parse(_sidecar(low).read_bytes()).read_record() is None


def test_unknown_tag_fails_at_once_with_one_line(tag, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = tag(str(photos), "--rename", "acident=Accidents")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "'acident'" in lines[0] and "did you mean 'accident'" in lines[0], err
    assert not list(photos.glob("*.xmp"))  # nothing tagged, nothing written
    bad = tmp_path / "renames.txt"
    bad.write_text("accident = Accidents\nselfie\n", encoding="utf-8")
    code, _, err = tag(str(photos), "--rename-file", str(bad))
    assert code == 2 and "renames.txt:2: 'selfie' is not OLD=NEW" in err
    bad.write_text("# mine\nacident = Accidents\n", encoding="utf-8")
    code, _, err = tag(str(photos), "--rename-file", str(bad))
    assert (
        code == 2
        and "renames.txt:2: 'acident': the vocabulary has no such tag; did you mean 'accident'" in err
    )
