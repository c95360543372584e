"""JSON Lines output: one object per image, appended as the run goes (durable after sync), one line per
image across runs, a torn line from a kill cut off, images untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ramtag.errors import UsageError
from ramtag.results import ImageTags, TagScore
from ramtag.writers import DEFAULT_JSONL, JsonlWriter, make_writer
from ramtag.writers.atomic import TMP_SUFFIX


def tagged(path: str | None, *names: str, scores: dict[str, float] | None = None) -> ImageTags:
    tags = [TagScore(n, 0.9 - 0.1 * i, 0.5, "猫" if n == "cat" else None) for i, n in enumerate(names)]
    return ImageTags(Path(path) if path else None, tags, scores=scores)


def lines(path: Path) -> list[dict]:
    """The records, with each path shortened to its file name (the writer writes them absolute)."""
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    ]
    for r in rows:
        if isinstance(r, dict) and isinstance(r.get("path"), str):
            assert os.path.isabs(r["path"])
            r["path"] = os.path.basename(r["path"])
    return rows


def test_one_object_per_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out)
    assert w.write(tagged("a.jpg", "cat", "sofa")).action == "written"
    w.write(ImageTags(Path("b.jpg"), error="b.jpg: cannot identify image file"))
    assert len(lines(out)) == 2  # appended as the run goes
    w.close()
    w.close()  # idempotent
    rows = lines(out)
    assert rows[0] == {
        "path": "a.jpg",
        "tags": [
            {"name": "cat", "score": 0.9, "threshold": 0.5, "name_zh": "猫"},
            {"name": "sofa", "score": 0.8, "threshold": 0.5},
        ],
    }
    assert rows[1] == {"path": "b.jpg", "error": "b.jpg: cannot identify image file", "tags": []}
    assert "猫" in out.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_all_scores_only_when_asked(tmp_path: Path) -> None:
    scores = {"cat": 0.9, "dog": 0.1}
    w = JsonlWriter(tmp_path / "a.jsonl")
    w.write(tagged("a.jpg", "cat", scores=scores))
    w.close()
    w2 = JsonlWriter(tmp_path / "b.jsonl", all_scores=True)
    w2.write(tagged("a.jpg", "cat", scores=scores))
    w2.close()
    assert "scores" not in lines(tmp_path / "a.jsonl")[0]
    assert lines(tmp_path / "b.jsonl")[0]["scores"] == scores


def test_runs_merge_by_path(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        w.write(tagged(name, "cat"))
    w.close()
    w = JsonlWriter(out)
    w.write(tagged("b.jpg", "dog"))
    w.write(tagged("d.jpg", "bird"))
    w.close()
    rows = lines(out)
    assert [r["path"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # newest line, first place
    assert rows[1]["tags"][0]["name"] == "dog"


def test_killed_run_keeps_its_complete_lines_and_cuts_a_torn_one(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out)
    w.write(tagged("a.jpg", "cat"))
    w.close()
    w = JsonlWriter(out)
    w.write(tagged("b.jpg", "dog"))
    w.sync()
    # killed here (no close); the kill also tore a line in the middle of a write
    with open(out, "ab") as f:
        f.write(b'{"path": "c.jpg", "ta')
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)]
    w = JsonlWriter(out)  # the next run
    assert [r["path"] for r in lines(out)] == ["a.jpg", "b.jpg"]
    w.write(tagged("c.jpg", "bird"))
    w.write(tagged("b.jpg", "dog"))  # never recorded by the killed run: written again
    w.close()
    assert [r["path"] for r in lines(out)] == ["a.jpg", "b.jpg", "c.jpg"]


def test_fingerprint_is_of_the_line_written(tmp_path: Path) -> None:
    from ramtag.writers.jsonl import line_fingerprint

    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out)
    o = w.write(tagged("a.jpg", "cat"))
    w.close()
    assert o.fingerprint == line_fingerprint(out.read_bytes())


def test_non_utf8_path_is_one_escaped_line(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")
    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out)
    w.write(tagged(name, "cat"))
    w.close()
    (row,) = lines(out)
    assert os.fsencode(row["path"]) == b"caf\xe9.jpg"  # (lines() keeps the file name)


def test_foreign_lines_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    out.write_text('not json\n{"path": "z.jpg", "tags": []}\n[1, 2]\n', encoding="utf-8")
    w = JsonlWriter(out)
    w.write(tagged("a.jpg", "cat"))
    w.close()
    text = out.read_text(encoding="utf-8").splitlines()
    assert text[:3] == ["not json", '{"path": "z.jpg", "tags": []}', "[1, 2]"] and len(text) == 4


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    w = JsonlWriter(out, dry_run=True)
    o = w.write(tagged("a.jpg", "cat"))
    w.close()
    assert o.action == "dry-run" and o.tags == ("cat",) and list(tmp_path.iterdir()) == []


def test_unwritable_target_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--json .*missing.*tags\.jsonl"):
        JsonlWriter(tmp_path / "missing" / "tags.jsonl")


def test_write_json_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    w = make_writer("json")
    out = w.write(tagged("a.jpg", "cat"))
    w.close()
    assert out.target == tmp_path / DEFAULT_JSONL and len(lines(tmp_path / DEFAULT_JSONL)) == 1


def test_json_beside_sidecars_and_images_untouched(tmp_path: Path, shared_photos: Path) -> None:
    img = tmp_path / "coffee_cup.jpg"
    shutil.copy(shared_photos / "coffee_cup.jpg", img)
    digest = hashlib.sha256(img.read_bytes()).hexdigest()
    w = make_writer("xmp", json_path=tmp_path / "out.jsonl")
    assert w.write(tagged(str(img), "cup", "coffee")).action == "written"
    w.close()
    assert (tmp_path / "coffee_cup.jpg.xmp").exists()
    assert lines(tmp_path / "out.jsonl")[0]["path"] == img.name
    w2 = make_writer("json", json_path=tmp_path / "only.jsonl")
    w2.write(tagged(str(img), "cup"))
    w2.close()
    assert hashlib.sha256(img.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coffee_cup.jpg",
        "coffee_cup.jpg.xmp",
        "only.jsonl",
        "out.jsonl",
    ]
