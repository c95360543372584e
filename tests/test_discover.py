"""discover(): extensions, recursion, order, hidden entries, links and loops, skip reasons."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ramtag import discover as discover_mod
from ramtag.discover import Skipped, discover, is_image_name, supported_extensions

needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found(paths, **kwargs) -> tuple[list[Path], list[Skipped]]:
    files: list[Path] = []
    skipped: list[Skipped] = []
    for item in discover(paths, **kwargs):
        (skipped if isinstance(item, Skipped) else files).append(item)
    return files, skipped


def test_supported_extensions_case_insensitive() -> None:
    exts = supported_extensions()
    for ext in ("jpg", "jpeg", "jpe", "png", "webp", "tif", "tiff", "bmp", "gif"):
        assert f".{ext}" in exts
    assert is_image_name("IMG_0001.JPG") and is_image_name("a.Jpeg") and is_image_name("x.TIFF")
    assert not is_image_name("notes.txt") and not is_image_name("photo.jpg.xmp")
    assert not is_image_name("photo.jpg.json") and not is_image_name("tags.jsonl")


def test_heif_extensions_follow_plugin_availability() -> None:
    try:
        import pillow_heif  # noqa: F401

        heif = True
    except ImportError:
        heif = False
    assert (".heic" in supported_extensions()) == heif
    from PIL import features

    if features.check("avif"):
        assert ".avif" in supported_extensions()


def test_folder_walk_sorted_recursive_and_filters(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    expected = [
        touch(root / "A.JPG"),
        touch(root / "b.png"),
        touch(root / "sub" / "a.webp"),
        touch(root / "sub" / "deeper" / "z.tif"),
        touch(root / "z.jpeg"),
    ]
    touch(root / "notes.txt")
    touch(root / "b.png.xmp")
    touch(root / "tags.jsonl")
    touch(root / "b.json")
    files, skipped = found([root])
    assert files == expected  # depth-first, names sorted, non-images silently left out
    assert skipped == []
    # deterministic: same order again
    assert found([root])[0] == expected


def test_not_recursive_takes_only_top_level(tmp_path: Path) -> None:
    top = touch(tmp_path / "a.jpg")
    touch(tmp_path / "sub" / "b.jpg")
    files, _ = found([tmp_path], recursive=False)
    assert files == [top]


def test_hidden_files_and_folders(tmp_path: Path) -> None:
    visible = touch(tmp_path / "a.jpg")
    hidden_file = touch(tmp_path / ".secret.jpg")
    hidden_dir_file = touch(tmp_path / ".thumbnails" / "t.jpg")
    files, skipped = found([tmp_path])
    assert files == [visible] and skipped == []
    files, _ = found([tmp_path], include_hidden=True)
    assert set(files) == {visible, hidden_file, hidden_dir_file}
    # a hidden folder or file named explicitly is taken
    assert found([tmp_path / ".thumbnails"])[0] == [hidden_dir_file]
    assert found([hidden_file])[0] == [hidden_file]


def test_explicit_files_missing_and_wrong_extension(tmp_path: Path) -> None:
    img = touch(tmp_path / "photo.JPG")
    txt = touch(tmp_path / "readme.txt")
    side = touch(tmp_path / "photo.JPG.xmp")
    missing = tmp_path / "nope.jpg"
    items = list(discover([img, txt, missing, side]))
    assert items[0] == img
    assert isinstance(items[1], Skipped) and items[1].path == txt
    assert "not an image file extension" in items[1].reason
    assert isinstance(items[2], Skipped) and items[2].reason == "no such file or folder"
    assert isinstance(items[3], Skipped) and "sidecar" in items[3].reason
    assert str(items[2]) == f"{missing}: no such file or folder"


def test_folder_named_like_an_image_is_walked(tmp_path: Path) -> None:
    inner = touch(tmp_path / "x.jpg" / "inside.png")
    files, skipped = found([tmp_path])
    assert files == [inner] and skipped == []
    files, skipped = found([tmp_path / "x.jpg"])
    assert files == [inner] and skipped == []


def test_same_file_twice_yielded_once(tmp_path: Path) -> None:
    img = touch(tmp_path / "a.jpg")
    hard = tmp_path / "hard.jpg"
    os.link(img, hard)
    files, _ = found([img, tmp_path, str(img), tmp_path / "." / "a.jpg"])
    assert files == [img]


def test_overlapping_folders_walked_once(tmp_path: Path) -> None:
    a = touch(tmp_path / "sub" / "a.jpg")
    b = touch(tmp_path / "b.jpg")
    files, _ = found([tmp_path / "sub", tmp_path, tmp_path / "sub"])
    assert files == [a, b]


@needs_symlinks
def test_symlink_loop_terminates_and_links_followed_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = touch(root / "a.jpg")
    b = touch(root / "sub" / "b.jpg")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # loop back to the top
    (root / "self").symlink_to(".", target_is_directory=True)
    files, skipped = found([root])
    assert files == [a, b] and skipped == []


@needs_symlinks
def test_symlinked_folder_and_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    o = touch(outside / "o.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link.jpg").symlink_to(o)
    (root / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    files, skipped = found([root])
    # link.jpg is reached first (sorted: broken.jpg, link.jpg, link_dir), o.jpg is the same file
    assert files == [root / "link.jpg"]
    assert [s.path for s in skipped] == [root / "broken.jpg"] and "broken symbolic link" in skipped[0].reason

    files, skipped = found([root], follow_symlinks=False)
    assert files == []
    assert {s.path for s in skipped} == {root / "broken.jpg", root / "link.jpg"}
    assert any("not followed" in s.reason for s in skipped)
    # an explicitly named link is always followed
    assert found([root / "link_dir"], follow_symlinks=False)[0] == [root / "link_dir" / "o.jpg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_with_image_name_is_not_taken(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    files, skipped = found([tmp_path])
    assert files == [] and [s.path for s in skipped] == [fifo] and "not a regular file" in skipped[0].reason
    files, skipped = found([fifo])
    assert files == [] and "not a regular file" in skipped[0].reason


def test_unreadable_folder_is_skipped_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = touch(tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    touch(locked / "b.jpg")
    real_scandir = os.scandir

    def scandir(path):  # what a chmod 000 folder does for a non-root user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(discover_mod.os, "scandir", scandir)
    files, skipped = found([tmp_path])
    assert files == [ok]
    assert len(skipped) == 1 and skipped[0].path == locked
    assert "cannot read folder" in skipped[0].reason and "Permission denied" in skipped[0].reason


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_real_permissions(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    touch(locked / "b.jpg")
    locked.chmod(0)
    try:
        files, skipped = found([tmp_path])
    finally:
        locked.chmod(0o755)
    assert files == [] and skipped[0].path == locked


def test_shared_photos_all_found(shared_photos: Path) -> None:
    files, skipped = found([shared_photos])
    names = [p.name for p in files]
    assert names == sorted(names)
    assert "cat_orientation6.jpg" in names and "cameraman_gray.png" in names
    assert len(files) == len([p for p in shared_photos.iterdir() if p.suffix in (".jpg", ".png")])
    assert skipped == []  # MANIFEST.tsv is silently not an image


def test_lazy_iteration(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    it = discover([tmp_path, tmp_path / "missing"])
    assert next(it) == tmp_path / "a.jpg"  # yielded before later arguments are looked at
