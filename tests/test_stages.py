"""One place for each fact: the one folder walker (tagging, untag, training data), the one durable
atomic-write helper, the one image transform (tagging and training), and the Swin checkpoint surgery."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ramtag import formats
from ramtag.discover import Skipped, discover
from ramtag.errors import WeightsError
from ramtag.fsutil import (
    TMP_SUFFIX,
    AtomicBatch,
    AtomicFile,
    atomic_path,
    atomic_write_bytes,
    durable_replace,
)
from ramtag.results import ImageTags, TagScore
from ramtag.training.data import ViewTransform, load_records
from ramtag.weights_format import OFFICIAL_PREPROCESSING
from ramtag.writers import make_writer, untag_paths

needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


# -- the one walker --------------------------------------------------------------------------------


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    path.with_suffix(".txt").write_text("a red square\n", encoding="utf-8")  # a caption for training
    return path


def _library(root: Path) -> None:
    """Hidden files and folders, a link loop, a link to a folder, a link to a file, a HEIC name."""
    _png(root / "a.png")
    _png(root / ".hidden.png")
    _png(root / ".hiddendir" / "b.png")
    _png(root / "sub" / "c.png")
    _png(root / "sub" / "deeper" / "d.png")
    (root / "sub" / "deeper" / "loop").symlink_to(root, target_is_directory=True)  # a link loop
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)  # the same folder twice
    (root / "e.png").symlink_to(root / "a.png")  # the same file twice
    (root / "photo.heic").write_bytes(b"not decoded here")  # taken only where HEIC decodes
    (root / "photo.txt").write_text("a phone photo\n", encoding="utf-8")
    (root / "notes.txt").write_text("not an image", encoding="utf-8")


def _real(paths: list[Path]) -> set[str]:
    return {os.path.realpath(p) for p in paths}


@needs_symlinks
@pytest.mark.parametrize("heif", [False, True], ids=["no-heif", "heif"])
def test_tagging_untag_and_training_walk_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, heif: bool
) -> None:
    extensions = formats.BASE_EXTENSIONS | (formats.HEIF_EXTENSIONS if heif else frozenset())
    monkeypatch.setattr(formats, "supported_extensions", lambda: extensions)
    root = tmp_path / "library"
    _library(root)

    tagging = [p for p in discover([root]) if not isinstance(p, Skipped)]
    training = [r.image for r in load_records(root, check_images=False).records]
    assert training == tagging  # same files, same order, same (unresolved) names

    expected = {"a.png", "sub/c.png", "sub/deeper/d.png"} | ({"photo.heic"} if heif else set())
    assert _real(tagging) == {os.path.realpath(root / name) for name in expected}
    assert len(tagging) == len(expected)  # each real file once (links, loop)

    # untag walks the same way: one sidecar per real image, hidden ones untouched, the loop ends
    writer = make_writer("xmp")
    for image in [*tagging, root / ".hidden.png", root / ".hiddendir" / "b.png"]:
        writer.write(ImageTags(image, [TagScore("cat", 0.9, 0.5)]))
    writer.close()
    outcomes = list(untag_paths([root], embedded=False, dry_run=True))
    assert all(o.action == "dry-run" for o in outcomes), [o.message for o in outcomes]
    untagged = [o.target for o in outcomes if o.target is not None]
    assert _real(untagged) == {p + ".xmp" for p in _real(tagging)}
    assert len(untagged) == len(tagging)


@needs_symlinks
def test_training_folder_reports_broken_links(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    result = load_records(tmp_path)
    assert [r.image.name for r in result.records] == ["a.png"]
    assert any("gone.png" in p and "broken symbolic link" in p for p in result.problems)


def test_one_list_of_extensions() -> None:
    from ramtag.writers import xmp

    assert xmp.IMAGE_SUFFIXES is formats.IMAGE_EXTENSIONS and xmp.RAW_SUFFIXES is formats.RAW_EXTENSIONS
    assert formats.supported_extensions() <= formats.IMAGE_EXTENSIONS
    assert not formats.OUTPUT_EXTENSIONS & formats.IMAGE_EXTENSIONS
    assert ".dng" in formats.RAW_EXTENSIONS
    assert (".dng" in formats.supported_extensions()) == formats.raw_decoding_available()  # rawpy installed
    assert "RAW" in formats.unsupported_reason("IMG_1.CR2")
    from ramtag import raw

    assert raw.RAW_EXTENSIONS is formats.RAW_EXTENSIONS


# -- the one atomic-write helper ------------------------------------------------------------------


class _FsyncSpy:
    """Records what each ``os.fsync`` call flushed (the path behind the descriptor)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.paths: list[str] = []
        self.fail_on = fail_on
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        self.paths.append(path)
        if self.fail_on is not None and path.endswith(self.fail_on):
            raise OSError(5, "Input/output error")
        self._real(fd)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX)]


@needs_proc
@pytest.mark.parametrize("how", ["bytes", "stream", "path", "replace"])
def test_atomic_writes_fsync_the_file_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    spy = _FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "out.bin"
    if how == "bytes":
        atomic_write_bytes(target, b"data")
    elif how == "stream":
        with AtomicFile(target) as f:
            f.write(b"da")
            f.write(b"ta")
    elif how == "path":
        with atomic_path(target) as tmp:
            torch.save({"x": 1}, tmp)
            data = tmp.read_bytes()
    else:
        part = tmp_path / "download.part"
        part.write_bytes(b"data")
        durable_replace(part, target)
    assert target.read_bytes() == (data if how == "path" else b"data")
    assert len(spy.paths) == 2
    flushed_file, flushed_dir = spy.paths
    assert flushed_file.endswith(TMP_SUFFIX) or flushed_file.endswith("download.part")
    assert flushed_dir == str(tmp_path)
    assert _leftovers(tmp_path) == []


@needs_proc
@pytest.mark.parametrize("how", ["bytes", "path"])
def test_atomic_write_failing_fsync_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    target = tmp_path / "keep.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", _FsyncSpy(fail_on=TMP_SUFFIX))
    with pytest.raises(OSError, match="Input/output"):
        if how == "bytes":
            atomic_write_bytes(target, b"new")
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@needs_proc
def test_atomic_batch_puts_each_file_in_place_after_its_fsync_and_fsyncs_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch keeps AtomicFile's order for every file (its data on disk, then the rename) and the
    rename's durability (its folder fsynced after it), with one folder fsync for many files; a file
    whose fsync fails is left as it was and handed back, the others are written."""
    import threading

    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "bad" in path and path.endswith(TMP_SUFFIX):
            raise OSError(5, "Input/output error")
        real_fsync(fd)
        with lock:
            events.append(("fsync", path))

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        with lock:
            events.append(("replace", str(src)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    folders = [tmp_path / "a", tmp_path / "b"]
    targets = [folders[i % 2] / f"f{i}.xmp" for i in range(40)] + [folders[0] / "bad.xmp"]
    for t in targets:
        t.parent.mkdir(exist_ok=True)
        t.write_bytes(b"old")
    batch = AtomicBatch()
    for t in targets:
        batch.add(t, b"new " + t.name.encode())
    assert all(t.read_bytes() == b"old" for t in targets)  # nothing visible before the commit
    failed = batch.commit()
    batch.close()
    assert [(t, str(e)) for t, e in failed] == [(targets[-1], "[Errno 5] Input/output error")]
    assert targets[-1].read_bytes() == b"old"
    assert all(t.read_bytes() == b"new " + t.name.encode() for t in targets[:-1])
    order = {(kind, path): i for i, (kind, path) in enumerate(events)}
    renamed = [path for kind, path in events if kind == "replace"]
    assert len(renamed) == 40
    for tmp in renamed:
        assert order[("fsync", tmp)] < order[("replace", tmp)]
    folder_syncs = [i for i, (kind, path) in enumerate(events) if kind == "fsync" and Path(path) in folders]
    assert len(folder_syncs) == 2 and min(folder_syncs) > max(order[("replace", t)] for t in renamed)
    assert _leftovers(folders[0]) == _leftovers(folders[1]) == []


def test_atomic_batch_in_the_helper_process_reports_real_faults_per_file(tmp_path: Path) -> None:
    """``background=True``: the commit runs in the helper process while the caller goes on; a folder
    that vanished after staging fails only its own files (the real error, per file), and batches
    finish in the order started."""
    import errno

    keep, gone = tmp_path / "keep", tmp_path / "gone"
    batch = AtomicBatch(background=True)
    handles, targets = [], []
    for round_ in range(3):
        for folder in (keep, gone):
            folder.mkdir(exist_ok=True)
            for i in range(5):
                target = folder / f"f{i}.xmp"
                target.write_bytes(b"old") if round_ == 0 else None
                batch.add(target, f"round {round_} {target.name}".encode())
                targets.append(target)
        if round_ == 2:  # staged; then its folder goes before the commit starts
            assert handles[1].wait() == []  # (the round before wrote there)
            for p in gone.iterdir():
                p.unlink()
            gone.rmdir()
        handles.append(batch.start_commit())
    assert batch._helper is not None and batch._helper.proc.poll() is None  # a live helper did it
    last = handles[-1].wait()  # waits for the earlier ones too, in order
    assert all(h.done for h in handles) and handles[0].wait() == []
    assert sorted(t.name for t, _ in last) == [f"f{i}.xmp" for i in range(5)]
    for target, err in last:
        assert target.parent == gone and isinstance(err, OSError) and err.errno == errno.ENOENT
    assert all((keep / f"f{i}.xmp").read_bytes() == f"round 2 f{i}.xmp".encode() for i in range(5))
    proc = batch._helper.proc
    batch.close()
    assert proc.poll() == 0 and _leftovers(keep) == []


def test_atomic_batch_redoes_a_batch_here_when_the_helper_dies(tmp_path: Path) -> None:
    """A helper killed with batches in it: they are done again in this process (same bytes, same
    result), and so is every later batch."""
    import signal

    batch = AtomicBatch(background=True)
    first = [tmp_path / f"a{i}.xmp" for i in range(20)]
    for t in first:
        batch.add(t, b"first " + t.name.encode())
    handle = batch.start_commit()
    assert batch._helper is not None
    batch._helper.proc.send_signal(signal.SIGKILL)
    batch._helper.proc.wait()
    second = [tmp_path / f"b{i}.xmp" for i in range(20)]
    for t in second:
        batch.add(t, b"second " + t.name.encode())
    later = batch.start_commit()
    assert handle.wait() == [] and later.wait() == []
    assert batch._helper is None  # the rest here
    assert all(t.read_bytes() == b"first " + t.name.encode() for t in first)
    assert all(t.read_bytes() == b"second " + t.name.encode() for t in second)
    batch.close()
    assert _leftovers(tmp_path) == []


def test_atomic_path_error_in_the_block_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@needs_proc
def test_weights_and_training_state_go_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ramtag.model.config import get_config
    from ramtag.tags.vocab import Vocabulary
    from ramtag.weights_format import save_weights

    config = dataclasses.replace(get_config("tiny"), num_tags=2)
    spy = _FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    save_weights(
        tmp_path / "w",
        state_dict={"x": torch.zeros(2)},
        config=config,
        vocabulary=Vocabulary(("a", "b"), (0.5, 0.5)),
        preprocessing=OFFICIAL_PREPROCESSING,
        provenance={},
    )
    assert sum(p.endswith(TMP_SUFFIX) for p in spy.paths) == 2  # model.safetensors and ramtag.json
    assert spy.paths.count(str(tmp_path / "w")) == 2
    assert _leftovers(tmp_path / "w") == []


# -- the one transform -----------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_training_view_is_the_tagging_transform(interpolation: str) -> None:
    from ramtag.preprocess import make_transform

    pre = dataclasses.replace(OFFICIAL_PREPROCESSING, image_size=64, interpolation=interpolation)
    img = Image.effect_noise((90, 50), 60).convert("RGB")
    view, clip_view = ViewTransform.for_weights(pre)(img)
    assert clip_view is None
    assert torch.equal(view, make_transform(pre)(img))


@pytest.mark.parametrize(("interpolation", "resize"), [("lanczos", "squash"), ("bilinear", "crop")])
def test_training_raises_where_tagging_raises(interpolation: str, resize: str) -> None:
    from ramtag.preprocess import make_transform

    pre = dataclasses.replace(OFFICIAL_PREPROCESSING, interpolation=interpolation, resize=resize)
    with pytest.raises(WeightsError) as tagging:
        make_transform(pre)
    with pytest.raises(WeightsError) as training:
        ViewTransform.for_weights(pre, augment="standard")
    assert str(training.value) == str(tagging.value)


# -- Swin checkpoint surgery -----------------------------------------------------------------------


def test_rel_pos_table_resize_keeps_what_it_can() -> None:
    from ramtag.model.swin_checkpoint import resize_rel_pos_table, window_of_table

    table = torch.randn(23 * 23, 3)  # window 12, 3 heads
    assert resize_rel_pos_table(table, 12) is table
    small = resize_rel_pos_table(table, 7)
    assert small.shape == (13 * 13, 3) and small.dtype == table.dtype
    assert window_of_table(small.shape[0]) == 7 and window_of_table(table.shape[0]) == 12
    flat = torch.full((13 * 13, 2), 0.25)
    assert torch.allclose(resize_rel_pos_table(flat, 12), torch.full((23 * 23, 2), 0.25))
    # each head is resized on its own
    per_head = torch.stack([torch.zeros(169), torch.ones(169)], dim=1)
    big = resize_rel_pos_table(per_head, 12)
    assert torch.allclose(big[:, 0], torch.zeros(529)) and torch.allclose(big[:, 1], torch.ones(529))


def _swin(img_size: int, window: int, embed_dim: int = 32) -> torch.nn.Module:
    from ramtag.model.backbone import SwinBackbone
    from ramtag.model.config import SwinConfig, get_config

    base = get_config("tiny").swin
    return SwinBackbone(
        SwinConfig(
            **{
                **dataclasses.asdict(base),
                "img_size": img_size,
                "window_size": window,
                "embed_dim": embed_dim,
            }
        )
    )


def test_rel_pos_tables_follow_the_target_model() -> None:
    from ramtag.model.swin_checkpoint import REL_POS_TABLE, resize_rel_pos_tables

    source, target = _swin(384, 12).state_dict(), _swin(96, 3).state_dict()
    out = resize_rel_pos_tables(source, target)
    assert set(out) == set(source)
    for key, value in out.items():
        assert value.shape == target[key].shape
        if not key.endswith(REL_POS_TABLE):
            assert value is source[key]
    assert resize_rel_pos_tables(target, target) == target  # nothing to do


def test_timm_backbone_state_dict_names_what_does_not_fit() -> None:
    from ramtag.model.swin_checkpoint import timm_backbone_state_dict

    target = _swin(96, 3).state_dict()
    source = {**_swin(384, 12).state_dict(), "head.fc.weight": torch.zeros(10, 256)}
    sd, mismatched, missing = timm_backbone_state_dict(source, target)
    assert (mismatched, missing) == ([], [])
    assert "head.fc.weight" not in sd and _swin(96, 3).load_state_dict(sd, strict=True)
    wider = _swin(384, 12, embed_dim=48).state_dict()
    _, mismatched, _ = timm_backbone_state_dict(wider, target)
    assert "patch_embed.proj.weight" in mismatched
    partial = {k: v for k, v in source.items() if not k.startswith("norm.")}
    _, _, missing = timm_backbone_state_dict(partial, target)
    assert missing == ["norm.weight", "norm.bias"]


def test_all_scores_read_the_model_row_as_a_mapping() -> None:
    """``all_scores``: every tag's score, as the model gave it, read like a dict (no dict of
    thousands of floats built per image); the catalog takes the row itself."""
    import numpy as np

    from ramtag.options import TagOptions
    from ramtag.results import ScoreMap
    from ramtag.tagger import Tagger
    from ramtag.tags import Vocabulary

    tagger = object.__new__(Tagger)  # decide() needs only the vocabulary
    tagger.vocabulary = Vocabulary(("cat", "dog", "sky"), (0.5, 0.5, 0.5))
    scores = torch.tensor([[0.9, 0.1, 0.6], [0.2, 0.8, 0.3]])
    first, second = Tagger.decide(
        tagger, scores, [Path("a.jpg"), Path("b.jpg")], None, TagOptions(all_scores=True)
    )
    assert isinstance(first.scores, ScoreMap) and isinstance(second.scores, ScoreMap)
    f32 = [float(np.float32(x)) for x in (0.9, 0.1, 0.6)]
    assert first.scores == dict(zip(("cat", "dog", "sky"), f32, strict=True))
    assert list(second.scores) == ["cat", "dog", "sky"] and len(second.scores) == 3
    assert second.scores["dog"] == float(np.float32(0.8)) and "cow" not in second.scores
    with pytest.raises(KeyError):
        second.scores["cow"]
    assert first.to_dict()["scores"] == {"cat": 0.9, "dog": 0.1, "sky": 0.6}
    assert np.asarray(first.scores.row, np.float32).tolist() == scores[0].tolist()
    assert [t.name for t in first.tags] == ["cat", "sky"]
    (plain,) = Tagger.decide(tagger, scores[:1], [Path("a.jpg")], None, TagOptions())
    assert plain.scores is None
