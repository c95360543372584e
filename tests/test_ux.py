"""Issue 13 (first run and everyday use): small writer fixes, tags vocabulary, early checks, progress."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from ramtag.results import ImageTags, TagScore
from ramtag.writers.exiftool import ExiftoolWriter
from ramtag.writers.xmp import XmpPacket, XmpSidecarWriter

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")


def result(path: Path, *names: str) -> ImageTags:
    return ImageTags(path, [TagScore(n, 0.9 - 0.01 * i, 0.5) for i, n in enumerate(names)])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ 9: ramtag:Created


def test_created_is_an_iso_date_kept_across_reruns(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff\xd9")
    sidecar = tmp_path / "photo.jpg.xmp"
    XmpSidecarWriter(model="m").write(result(image, "cat"))
    record = XmpPacket.parse(sidecar.read_bytes()).read_record()
    assert record is not None and record.created
    assert "<ramtag:Created>True" not in sidecar.read_text(encoding="utf-8")
    first = datetime.fromisoformat(record.created_date)  # raises unless ISO 8601
    assert first.tzinfo is not None
    XmpSidecarWriter(model="m").write(result(image, "dog"))
    again = XmpPacket.parse(sidecar.read_bytes()).read_record()
    assert again is not None and again.created and again.created_date == record.created_date


def test_old_true_created_is_still_understood(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff\xd9")
    sidecar = tmp_path / "photo.jpg.xmp"
    XmpSidecarWriter(model="m").write(result(image, "cat"))
    text = sidecar.read_text(encoding="utf-8")
    start = text.index("<ramtag:Created>") + len("<ramtag:Created>")
    end = text.index("</ramtag:Created>")
    sidecar.write_text(text[:start] + "True" + text[end:], encoding="utf-8")
    record = XmpPacket.parse(sidecar.read_bytes()).read_record()
    assert record is not None and record.created and record.created_date == ""
    XmpSidecarWriter(model="m").write(result(image, "dog"))
    record = XmpPacket.parse(sidecar.read_bytes()).read_record()
    assert record is not None and record.created
    datetime.fromisoformat(record.created_date)


def test_load_tagger_is_in_dir_ramtag() -> None:
    import ramtag

    assert "load_tagger" in dir(ramtag)


# ------------------------------------------------------------------- 5: embed only what changes


@needs_exiftool
def test_embed_leaves_images_without_keyword_changes_alone(tmp_path: Path, shared_photos: Path) -> None:
    bee = tmp_path / "bee.jpg"
    shutil.copy(shared_photos / "bee_with_existing_keywords.jpg", bee)
    bee.chmod(0o644)
    before = sha(bee)
    w = ExiftoolWriter(backup=True, model="m")
    try:
        out = w.write(result(bee))  # no tag above threshold, nothing of ramtag's embedded yet
        assert out.action == "unchanged"
        assert sha(bee) == before and not (tmp_path / "bee.jpg_original").exists()
        out = w.write(result(bee, "cat", "dog"))
        assert out.action == "written"
        changed = sha(bee)
        (tmp_path / "bee.jpg_original").unlink()
        w.model = "other-weights"  # the same keywords from other weights: still no rewrite
        out = w.write(result(bee, "cat", "dog"))
        assert out.action == "unchanged"
        assert sha(bee) == changed and not (tmp_path / "bee.jpg_original").exists()
    finally:
        w.close()
