"""ramtag's weights directory: save/load round trip, validation, never unpickling, build_model."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from ramtag.errors import CheckpointError, VocabularyError, WeightsError
from ramtag.model import DecoderConfig, RamPlus, RamPlusConfig, SwinConfig
from ramtag.tags.vocab import Vocabulary
from ramtag.weights_format import (
    OFFICIAL_PREPROCESSING,
    Preprocessing,
    build_model,
    load_weights,
    save_weights,
    sha256_file,
)

SMALL = RamPlusConfig(
    name="small-test",
    swin=SwinConfig(img_size=96, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=6),
    decoder=DecoderConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=48),
    num_tags=3,
)
VOCAB = Vocabulary(("cat", "dog", "tree"), (0.7, 0.65, 0.8), ("猫", "狗 ", "树"))
PRE = Preprocessing(image_size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
PROVENANCE = {"source": "random test model", "sha256": {"ckpt.pth": "0" * 64}}


@pytest.fixture(scope="module")
def model() -> RamPlus:
    torch.manual_seed(0)
    return RamPlus(SMALL).eval()


@pytest.fixture
def saved(tmp_path, model) -> Path:
    return save_weights(
        tmp_path / "w",
        state_dict=model.state_dict(),
        config=SMALL,
        vocabulary=VOCAB,
        preprocessing=PRE,
        provenance=PROVENANCE,
    )


def rewrite_meta(directory: Path, **changes) -> None:
    path = directory / "ramtag.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    path.write_text(json.dumps(meta), encoding="utf-8")


def test_round_trip(saved, model):
    assert sorted(os.listdir(saved)) == ["model.safetensors", "ramtag.json"]  # no temp files left
    loaded = load_weights(saved, verify=True)
    assert loaded.config == SMALL
    assert loaded.vocabulary == VOCAB and loaded.vocabulary.names_zh[1] == "狗 "  # trailing space kept
    assert loaded.preprocessing == PRE
    assert loaded.metadata["provenance"] == PROVENANCE
    assert loaded.metadata["format_version"] == 1
    assert loaded.metadata["files"]["model.safetensors"]["sha256"] == sha256_file(saved / "model.safetensors")
    ref = model.state_dict()
    assert loaded.state_dict.keys() == ref.keys()
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in ref.items())


def test_built_model_equals_the_original(saved, model):
    built = build_model(load_weights(saved))
    assert not built.training
    # the Swin buffers were recomputed after building on the meta device
    assert dict(built.named_buffers()).keys() == dict(model.named_buffers()).keys()
    for (name, a), (_, b) in zip(built.named_buffers(), model.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    # loading is exact: every tensor equal; the outputs of two instances are only equal to fp32 rounding
    # (kernels may take other paths for other memory layouts, e.g. on AMD Zen 4)
    ours, ref = built.state_dict(), model.state_dict()
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], v) for k, v in ref.items())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), rtol=1e-4, atol=1e-5)


def test_save_twice_replaces_the_files(saved, model):
    vocab = Vocabulary(("a", "b", "c"), (0.5, 0.5, 0.5))
    save_weights(
        saved,
        state_dict=model.state_dict(),
        config=SMALL,
        vocabulary=vocab,
        preprocessing=OFFICIAL_PREPROCESSING,
        provenance={},
    )
    loaded = load_weights(saved)
    assert loaded.vocabulary.names == ("a", "b", "c") and loaded.preprocessing == OFFICIAL_PREPROCESSING
    assert sorted(os.listdir(saved)) == ["model.safetensors", "ramtag.json"]


def test_saving_a_mismatched_vocabulary_fails(tmp_path, model):
    with pytest.raises(VocabularyError, match="has 2 tags but the architecture has 3"):
        save_weights(
            tmp_path / "w",
            state_dict=model.state_dict(),
            config=SMALL,
            vocabulary=Vocabulary(("a", "b"), (0.5, 0.5)),
            preprocessing=PRE,
            provenance={},
        )


def test_mismatched_vocabulary_length_is_a_clear_error(saved):
    rewrite_meta(saved, vocabulary=Vocabulary(("a", "b"), (0.5, 0.5)).to_dict())
    with pytest.raises(VocabularyError) as info:
        load_weights(saved)
    msg = str(info.value)
    assert "ramtag.json" in msg and "2 tags" in msg and "3 (num_tags)" in msg
    assert "ramtag weights import" in msg
    assert "\n" not in msg


def test_pickle_named_safetensors_is_rejected_without_unpickling(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (saved / "model.safetensors").write_bytes(pickle.dumps(Bomb()))
    rewrite_meta(saved, files={})  # skip the size check so the bytes reach the safetensors reader
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors.*weights import"):
        load_weights(saved)
    assert not marker.exists()


def test_truncated_or_corrupt_tensor_file(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    path.write_bytes(data[:-10])
    with pytest.raises(WeightsError, match="incomplete or replaced"):
        load_weights(saved)
    data[-1] ^= 0xFF
    path.write_bytes(data)
    load_weights(saved)  # same size: only verify=True reads the whole file
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_weights(saved, verify=True)


def test_unusable_directories(tmp_path, saved):
    with pytest.raises(WeightsError, match=r"ramtag\.json: not found.*ramtag weights import"):
        load_weights(tmp_path / "empty")
    rewrite_meta(saved, format_version=99)
    with pytest.raises(WeightsError, match=r"format version 99 .*upgrade ramtag"):
        load_weights(saved)
    (saved / "ramtag.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(WeightsError, match="unreadable"):
        load_weights(saved)


def test_build_model_is_strict(saved):
    loaded = load_weights(saved)
    del loaded.state_dict["fc.bias"]
    loaded.state_dict["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"safetensors: .*1 missing \(fc\.bias\); 1 unexpected \(extra"):
        build_model(loaded)


def test_half_precision_files_build_a_float32_model(tmp_path, model):
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    directory = save_weights(
        tmp_path / "half", state_dict=half, config=SMALL, vocabulary=VOCAB, preprocessing=PRE, provenance={}
    )
    assert load_weights(directory).state_dict["label_embed"].dtype == torch.float16
    built = build_model(load_weights(directory))
    assert {p.dtype for p in built.parameters()} == {torch.float32}
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(built(x), model(x), atol=0.05)


# ------------------------------------------------------------------------- hostile ramtag.json (issue 12)
def _no_tensor_reads(monkeypatch):
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("tensors were read before ramtag.json was validated")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "swin_l_384"}, "architecture must be an object, not str"),
        ({"vocabulary": [1, 2]}, "vocabulary must be an object"),
        ({"architecture": {**SMALL.to_dict(), "num_tags": "3"}}, "architecture.num_tags must be an integer"),
        (
            {"architecture": {**SMALL.to_dict(), "swin": {**SMALL.to_dict()["swin"], "depths": 2}}},
            r"architecture.swin.depths must be a list",
        ),
        (
            {
                "architecture": {
                    **SMALL.to_dict(),
                    "decoder": {**SMALL.to_dict()["decoder"], "num_heads": True},
                }
            },
            "decoder.num_heads must be an integer, not bool",
        ),
        ({"vocabulary": {"names": ["a", 2, "c"], "thresholds": [0.5] * 3}}, "names must be a list of str"),
        ({"vocabulary": {"names": ["a", "b", "c"], "thresholds": "0.5"}}, "thresholds must be a list"),
        ({"preprocessing": {**PRE.to_dict(), "mean": [0.5, 0.5]}}, r"preprocessing.mean must be a list of 3"),
        ({"preprocessing": {**PRE.to_dict(), "image_size": 10**9}}, "image_size = 1000000000 is out of"),
        ({"files": ["model.safetensors"]}, "files must be an object"),
    ],
)
def test_wrong_types_in_ramtag_json_are_one_line(saved, monkeypatch, change, message):
    rewrite_meta(saved, **change)
    _no_tensor_reads(monkeypatch)
    with pytest.raises(WeightsError, match=message) as info:
        load_weights(saved)
    assert "ramtag.json: malformed" in str(info.value) and "\n" not in str(info.value)


def test_huge_architecture_is_refused_before_anything_is_built(saved, monkeypatch):
    arch = SMALL.to_dict()
    arch["swin"] = {**arch["swin"], "embed_dim": 10**6}
    rewrite_meta(saved, architecture=arch)
    _no_tensor_reads(monkeypatch)
    with pytest.raises(WeightsError, match=r"architecture.swin.embed_dim = 1000000 is out of range"):
        load_weights(saved)
    arch = SMALL.to_dict()
    arch["swin"] = {**arch["swin"], "depths": [100, 100, 100], "num_heads": [1, 2, 4]}
    rewrite_meta(saved, architecture=arch)
    with pytest.raises(WeightsError, match=r"more than 256 blocks"):
        load_weights(saved)


@pytest.mark.parametrize("num_tags", [2_000_000, 40_000])
def test_announced_tag_count_is_checked_against_the_tensor_shapes(saved, monkeypatch, num_tags):
    # issue 12 case 8: 2,000,000 tags in ramtag.json made ramtag allocate 208 GB before checking anything
    names = [f"t{i}" for i in range(num_tags)]
    rewrite_meta(
        saved,
        architecture={**SMALL.to_dict(), "num_tags": num_tags},
        vocabulary=Vocabulary(tuple(names), (0.5,) * num_tags).to_dict(),
    )
    _no_tensor_reads(monkeypatch)
    with pytest.raises(WeightsError) as info:
        load_weights(saved)
    msg = str(info.value)
    if num_tags > 1_000_000:
        assert "num_tags = 2000000 is out of range" in msg
    else:  # within the bounds: the label_embed shape in the file's header disagrees
        assert isinstance(info.value, CheckpointError)
        assert f"label_embed ({3 * 51}, 512) vs ({num_tags * 51}, 512)" in msg and "\n" not in msg


def test_a_full_disk_during_import_leaves_the_old_weights_usable(saved, model, monkeypatch):
    import errno

    import safetensors.torch

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError):
        save_weights(
            saved,
            state_dict=model.state_dict(),
            config=SMALL,
            vocabulary=VOCAB,
            preprocessing=PRE,
            provenance=PROVENANCE,
        )
    monkeypatch.undo()
    assert load_weights(saved, verify=True).vocabulary == VOCAB
    assert sorted(p.name for p in saved.iterdir()) == ["model.safetensors", "ramtag.json"]
