"""ramtag.weights: download + convert once, import, list, remove, resolve.

A test-only registry entry points at the tiny official-format checkpoint of ../shared/parity, served
with its tag files by a real loopback HTTP server standing in for the Hub and GitHub raw.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fake_hub import COMMIT, FakeHub, serving

from ramtag import hub, paths, registry, weights
from ramtag.errors import OfflineError, UsageError, VocabularyError, WeightsError
from ramtag.registry import HubFile, UrlFile, WeightsSpec
from ramtag.weights_format import OFFICIAL_PREPROCESSING, load_weights, sha256_file

NAME = "tiny-test"
REPO = "ramtag-tests/tiny-ram-plus"
CHECKPOINT_SHA256 = "1ffc3d4a292655cb8049487c1343bfebb63b3ee54a5132d46fcf4cdd56f6d3fb"  # parity/README.md
FILES = {"tag_list.txt": "tag_list", "tag_list_chinese.txt": "tag_list_zh", "thresholds.txt": "thresholds"}


def _tiny_spec(parity: Path) -> WeightsSpec:
    ckpt = parity / "ram_plus_tiny_official.pth"
    urls = {
        field: UrlFile(
            url=f"{registry.GITHUB_RAW}/ramtag-tests/data/{COMMIT}/{name}",
            sha256=sha256_file(parity / name),
            filename=name,
        )
        for name, field in FILES.items()
    }
    return WeightsSpec(
        name=NAME,
        arch="tiny",
        checkpoint=HubFile(
            repo_id=REPO,
            filename="ram_plus_tiny.pth",
            revision="main",
            size=ckpt.stat().st_size,
            sha256=CHECKPOINT_SHA256,
        ),
        tag_list=urls["tag_list"],
        tag_list_zh=urls["tag_list_zh"],
        thresholds=urls["thresholds"],
        preprocessing=OFFICIAL_PREPROCESSING,
        license="Apache-2.0",
        description="tiny random RAM++ for tests",
        paper="https://arxiv.org/abs/2310.15200",
    )


@pytest.fixture
def tiny(parity_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The tiny entry registered (and made the default) and its files served."""
    spec = _tiny_spec(parity_dir)
    monkeypatch.setitem(registry.WEIGHTS, NAME, spec)
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", NAME)
    with serving(monkeypatch) as fake:
        fake.add_hub_file(REPO, "ram_plus_tiny.pth", (parity_dir / "ram_plus_tiny_official.pth").read_bytes())
        for name in FILES:
            fake.add_raw(f"ramtag-tests/data/{COMMIT}/{name}", (parity_dir / name).read_bytes())
        yield fake


def _weights_dir_entries() -> list[str]:
    root = paths.weights_dir()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _import_tiny(parity: Path, name: str, **extra: Path) -> Path:
    """Import the tiny official checkpoint with its 40-tag files under ``name``."""
    return weights.import_checkpoint(
        parity / "ram_plus_tiny_official.pth",
        tag_list=parity / "tag_list.txt",
        thresholds=parity / "thresholds.txt",
        name=name,
        **extra,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# ------------------------------------------------------------------------------------------------ download


def test_download_converts_once_into_a_loadable_ramtag_folder(tiny: FakeHub, parity_dir: Path) -> None:
    import torch

    from ramtag.model.convert import read_official_checkpoint

    out = weights.download_weights(NAME, progress=False)
    assert out == paths.weights_dir() / NAME
    loaded = load_weights(out, verify=True)
    assert loaded.config.name == "tiny" and loaded.config.num_tags == 40
    assert list(loaded.vocabulary.names) == [n.strip() for n in _lines(parity_dir / "tag_list.txt")]
    assert loaded.vocabulary.names_zh == tuple(_lines(parity_dir / "tag_list_chinese.txt"))
    assert loaded.vocabulary.thresholds == tuple(float(t) for t in _lines(parity_dir / "thresholds.txt"))
    assert loaded.preprocessing == OFFICIAL_PREPROCESSING
    official = read_official_checkpoint(parity_dir / "ram_plus_tiny_official.pth")
    assert torch.equal(loaded.state_dict["label_embed"], official["label_embed"])
    assert torch.equal(
        loaded.state_dict["visual_encoder.layers.1.downsample.reduction.weight"],
        official["visual_encoder.layers.0.downsample.reduction.weight"],
    )

    prov = loaded.metadata["provenance"]
    assert prov["checkpoint"] == {
        "repo_id": REPO,
        "filename": "ram_plus_tiny.pth",
        "revision": "main",
        "commit": COMMIT,
        "bytes": 11_340_879,
        "sha256": CHECKPOINT_SHA256,
    }
    assert prov["tag_list"]["sha256"] == sha256_file(parity_dir / "tag_list.txt")
    assert prov["license"] == "Apache-2.0"
    # the raw checkpoint is dropped once converted; only the converted folder is kept
    assert hub.remove_cached_hub_file(registry.WEIGHTS[NAME].checkpoint) is False

    n = len(tiny.requests)
    assert weights.download_weights(NAME, progress=False) == out
    assert len(tiny.requests) == n  # already converted: no request


def test_download_keep_download_keeps_the_raw_checkpoint(tiny: FakeHub) -> None:
    weights.download_weights(NAME, keep_download=True, progress=False)
    assert hub.remove_cached_hub_file(registry.WEIGHTS[NAME].checkpoint) is True


def test_download_rejects_a_checkpoint_of_another_architecture(
    tiny: FakeHub, monkeypatch: pytest.MonkeyPatch, parity_dir: Path
) -> None:
    spec = _tiny_spec(parity_dir)
    monkeypatch.setitem(registry.WEIGHTS, NAME, WeightsSpec(**{**spec.__dict__, "arch": "swin_l_384"}))
    with pytest.raises(WeightsError, match="'tiny' checkpoint"):
        weights.download_weights(NAME, progress=False)
    assert _weights_dir_entries() == []  # no folder, not even a half-written one


# ------------------------------------------------------------------------------------------------ resolve


def test_resolve_none_downloads_the_default_once_with_one_log_line(
    tiny: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ramtag.weights"):
        out = weights.resolve_weights(None)
    lines = [r.getMessage() for r in caplog.records if "downloading default weights" in r.getMessage()]
    assert len(lines) == 1 and "11.3 MB, once" in lines[0] and NAME in lines[0]
    assert out == paths.weights_dir() / NAME and load_weights(out).config.name == "tiny"
    caplog.clear()
    n = len(tiny.requests)
    assert weights.resolve_weights(NAME) == out and len(tiny.requests) == n
    assert not [r for r in caplog.records if "downloading" in r.getMessage()]


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "RAMTAG_OFFLINE"])
def test_resolve_offline_and_missing_is_one_line_naming_both_fixes(
    tiny: FakeHub, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError) as info:
        weights.resolve_weights(None)
    message = str(info.value)
    assert "\n" not in message and "ramtag weights download" in message and "ramtag weights import" in message
    assert tiny.requests == []


def test_resolve_without_download_names_the_command(tiny: FakeHub) -> None:
    with pytest.raises(WeightsError, match=f"ramtag weights download {NAME}"):
        weights.resolve_weights(NAME, download=False)
    assert tiny.requests == []


def test_resolve_paths(
    tiny: FakeHub, parity_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = weights.download_weights(NAME, progress=False)
    assert weights.resolve_weights(out) == out and weights.resolve_weights(str(out)) == out
    with pytest.raises(WeightsError, match="ramtag weights import"):
        weights.resolve_weights(parity_dir / "ram_plus_tiny_official.pth")
    with pytest.raises(WeightsError, match=r"ramtag\.json"):
        weights.resolve_weights(tmp_path)
    with pytest.raises(WeightsError, match="no such file"):
        weights.resolve_weights(tmp_path / "missing" / "weights")
    with pytest.raises(WeightsError, match="unknown weights 'nope'"):
        weights.resolve_weights("nope")
    # a plain name that is a folder in the working directory, not an installed name
    monkeypatch.chdir(out.parent)
    assert weights.resolve_weights(NAME) == paths.weights_dir() / NAME
    (tmp_path / "local").mkdir()
    shutil.copytree(out, tmp_path / "local" / "folder-weights")
    monkeypatch.chdir(tmp_path / "local")
    assert weights.resolve_weights("folder-weights") == Path("folder-weights")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "../up", "a\\b", "x" * 101, "a b"])
def test_invalid_names_are_rejected(bad: str) -> None:
    with pytest.raises(UsageError):
        weights.validate_name(bad)
    with pytest.raises(UsageError):
        weights.remove_weights(bad)


# ------------------------------------------------------------------------------------------------ import


def test_import_official_checkpoint(parity_dir: Path) -> None:
    out = _import_tiny(parity_dir, "mine", tag_list_zh=parity_dir / "tag_list_chinese.txt")
    assert out == paths.weights_dir() / "mine"
    loaded = load_weights(out, verify=True)
    assert loaded.config.name == "tiny" and len(loaded.vocabulary) == 40 and loaded.vocabulary.names_zh
    prov = loaded.metadata["provenance"]
    assert prov["source"] == "import" and prov["checkpoint"]["sha256"] == CHECKPOINT_SHA256
    assert weights.resolve_weights("mine") == out

    with pytest.raises(WeightsError, match="already installed"):
        _import_tiny(parity_dir, "mine")


def test_import_with_a_vocabulary_of_the_wrong_length_names_the_files(
    parity_dir: Path, official_data: Path
) -> None:
    tag_list, thresholds = official_data / "ram_tag_list.txt", official_data / "ram_tag_list_threshold.txt"
    with pytest.raises(VocabularyError) as info:
        weights.import_checkpoint(
            parity_dir / "ram_plus_tiny_official.pth", tag_list=tag_list, thresholds=thresholds, name="wrong"
        )
    message = str(info.value)
    assert str(tag_list) in message and "4585" in message and "40" in message and "\n" not in message
    assert not (paths.weights_dir() / "wrong").exists()


def test_import_needs_tag_files_for_an_unregistered_name(parity_dir: Path) -> None:
    with pytest.raises(UsageError, match="--tag-list"):
        weights.import_checkpoint(parity_dir / "ram_plus_tiny_official.pth", name="mine")
    with pytest.raises(UsageError, match="both"):
        weights.import_checkpoint(
            parity_dir / "ram_plus_tiny_official.pth", tag_list=parity_dir / "tag_list.txt", name="mine"
        )


def test_import_refuses_a_missing_source_and_a_chinese_list_alone(parity_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope\.pth: not found; pass an official RAM\+\+ \.pth"):
        weights.import_checkpoint(tmp_path / "nope.pth", name="mine")
    with pytest.raises(UsageError, match="a Chinese tag list needs the English tag list and thresholds"):
        weights.import_checkpoint(
            parity_dir / "ram_plus_tiny_official.pth",
            tag_list_zh=parity_dir / "tag_list_chinese.txt",
            name="mine",
        )
    assert _weights_dir_entries() == []


def test_import_under_a_registry_name_offline_says_which_tag_files_to_bring(
    tiny: FakeHub, parity_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAMTAG_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        weights.import_checkpoint(parity_dir / "ram_plus_tiny_official.pth", name=NAME)
    assert str(info.value) == weights.offline_help(NAME) and not tiny.requests
    assert _weights_dir_entries() == []


def test_import_under_a_registry_name_uses_its_pinned_tag_files(tiny: FakeHub, parity_dir: Path) -> None:
    out = weights.import_checkpoint(parity_dir / "ram_plus_tiny_official.pth", name=NAME)
    assert tiny.count("HEAD") == 0  # the checkpoint itself was not downloaded
    assert load_weights(out).metadata["provenance"]["tag_list"]["url"] == registry.WEIGHTS[NAME].tag_list.url
    assert weights.resolve_weights(None) == out  # the default is now installed


def test_import_a_ramtag_folder_and_replace_its_vocabulary(parity_dir: Path, tmp_path: Path) -> None:
    src = _import_tiny(parity_dir, "first")
    copy = weights.import_checkpoint(src, name="copy")
    assert load_weights(copy).vocabulary == load_weights(src).vocabulary
    tags = tmp_path / "tags.txt"
    tags.write_text("".join(f"tag{i}\n" for i in range(40)), encoding="utf-8")
    renamed = weights.import_checkpoint(
        src, tag_list=tags, thresholds=parity_dir / "thresholds.txt", name="renamed"
    )
    assert load_weights(renamed).vocabulary.names[:2] == ("tag0", "tag1")
    short = tmp_path / "short.txt"
    short.write_text("a\n", encoding="utf-8")
    with pytest.raises(VocabularyError):
        weights.import_checkpoint(src, tag_list=short, thresholds=tmp_path / "short.txt", name="bad")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=r"ramtag\.json"):
        weights.import_checkpoint(empty, name="bad")


# ------------------------------------------------------------------------------------------ list, remove


def test_list_and_remove(tiny: FakeHub, parity_dir: Path) -> None:
    rows = {info.name: info for info in weights.list_weights()}
    assert rows[NAME].registered and rows[NAME].default and not rows[NAME].installed
    assert rows[NAME].size == 11_340_879 and rows[NAME].path is None
    official = rows[registry.DEFAULT_WEIGHTS]
    assert official.size == 3_010_210_801 and official.license == "Apache-2.0" and not official.default

    weights.download_weights(NAME, progress=False)
    _import_tiny(parity_dir, "mine")
    (paths.weights_dir() / ".mine.abc.tmp").mkdir()  # an interrupted conversion is not listed
    rows = {info.name: info for info in weights.list_weights()}
    assert rows[NAME].installed and rows[NAME].path == paths.weights_dir() / NAME
    assert rows[NAME].num_tags == 40
    assert rows["mine"].installed and not rows["mine"].registered and rows["mine"].arch == "tiny"
    assert rows["mine"].size is not None and rows["mine"].size > 0
    assert ".mine.abc.tmp" not in rows

    assert weights.remove_weights("mine") == paths.weights_dir() / "mine"
    assert "mine" not in {info.name for info in weights.list_weights()}
    with pytest.raises(WeightsError, match="not installed"):
        weights.remove_weights("mine")
    weights.remove_weights(NAME)
    rows = {info.name: info for info in weights.list_weights()}
    assert not rows[NAME].installed and not (paths.weights_dir() / NAME).exists()


def test_failed_conversion_leaves_no_folder(parity_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pth"
    shutil.copyfile(parity_dir / "ram_plus_tiny_official.pth", broken)
    with open(broken, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(WeightsError):
        weights.import_checkpoint(
            broken,
            tag_list=parity_dir / "tag_list.txt",
            thresholds=parity_dir / "thresholds.txt",
            name="broken",
        )
    assert _weights_dir_entries() == []


def test_unreachable_server_says_which_files_to_bring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a firewall (not offline mode): the error names every file, its URL and the import command."""
    import socket

    from ramtag.errors import DownloadError

    with socket.socket() as s:  # a loopback port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAMTAG_GITHUB_RAW", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)  # no back-off waits between attempts
    with pytest.raises(DownloadError) as info:
        weights.download_weights(registry.DEFAULT_WEIGHTS, progress=False)
    msg = str(info.value)
    spec = registry.WEIGHTS[registry.DEFAULT_WEIGHTS]
    assert "\n" not in msg and "without network access: bring" in msg
    for f in (spec.checkpoint, spec.tag_list, spec.thresholds):
        assert f.filename in msg and hub.file_url(f) in msg
    assert f"ramtag weights import {spec.checkpoint.filename} --name {registry.DEFAULT_WEIGHTS}" in msg
