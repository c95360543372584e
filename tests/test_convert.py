"""Official RAM++ state dicts -> ramtag names: key mapping, config inference, strict loading, bad files."""

from __future__ import annotations

import gc
import pickle
import re
from pathlib import Path

import pytest
import torch

from ramtag.errors import CheckpointError
from ramtag.model import CONFIGS, RamPlus
from ramtag.model.convert import (
    convert_official_state_dict,
    infer_official_config,
    load_state_dict_strict,
    read_official_checkpoint,
)


def read_manifest(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in path.read_text().splitlines():
        key, _, shape = line.partition("\t")
        out.append((key, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return out


def random_official_state_dict(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) for key, shape in read_manifest(path)}


def official_to_ours(key: str) -> str:
    """Independent statement of the mapping, to check the converter against."""
    m = re.match(r"visual_encoder\.layers\.(\d+)\.downsample\.(.*)", key)
    if m:
        return f"visual_encoder.layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
    m = re.match(r"tagging_head\.encoder\.layer\.(\d+)\.(.*)", key)
    if m:
        names = {
            "crossattention.self.query": "cross_attn.query",
            "crossattention.self.key": "cross_attn.key",
            "crossattention.self.value": "cross_attn.value",
            "crossattention.output.dense": "cross_attn.out",
            "crossattention.output.LayerNorm": "norm1",
            "intermediate.dense": "ffn.fc1",
            "output.dense": "ffn.fc2",
            "output.LayerNorm": "norm2",
        }
        module, _, param = m.group(2).rpartition(".")
        return f"tagging_head.layers.{m.group(1)}.{names[module]}.{param}"
    return key


def test_tiny_manifest_converts_and_loads_strictly(parity_dir):
    official = random_official_state_dict(parity_dir / "manifest_tiny.tsv")
    assert len(official) == 120
    config = infer_official_config(official)
    assert config == CONFIGS["tiny"]
    converted = convert_official_state_dict(official, config)
    model = RamPlus(config)
    load_state_dict_strict(model, converted)
    ours = model.state_dict()
    assert len(ours) == len(official)
    for key, value in official.items():
        assert torch.equal(ours[official_to_ours(key)], value), key


def test_reading_the_official_file_and_a_bare_state_dict(parity_dir, tmp_path):
    sd = read_official_checkpoint(parity_dir / "ram_plus_tiny_official.pth")  # {'model': sd}
    assert len(sd) == 120 and sd["label_embed"].shape == (2040, 512)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in list(sd.items())[:3]}, bare)  # DDP prefix is removed too
    again = read_official_checkpoint(bare)
    assert list(again) == list(sd)[:3]
    assert all(torch.equal(again[k], sd[k]) for k in again)


def test_swin_buffers_are_dropped_and_the_old_prefix_is_accepted(parity_dir):
    official = random_official_state_dict(parity_dir / "manifest_tiny.tsv")
    official["visual_encoder.layers.2.blocks.1.attn_mask"] = torch.zeros(4, 144, 144)
    official["visual_encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(144, 144)
    old = {k.replace("tagging_head.", "vision_multi.", 1): v for k, v in official.items()}
    config = infer_official_config(old)
    converted = convert_official_state_dict(old, config)
    assert not any("attn_mask" in k or "relative_position_index" in k for k in converted)
    load_state_dict_strict(RamPlus(config), converted)


def test_config_inference_reads_the_shapes(parity_dir):
    full = dict(read_manifest(parity_dir / "ram_plus_swin_l_keys.tsv"))
    meta = {k: torch.empty(s, device="meta") for k, s in full.items()}
    assert infer_official_config(meta) == CONFIGS["swin_l_384"]
    custom = infer_official_config(meta, image_size=448, decoder_heads=8)
    assert custom.name == "custom"
    assert (custom.swin.img_size, custom.decoder.num_heads, custom.num_tags) == (448, 8, 4585)
    del meta["label_embed"]
    with pytest.raises(CheckpointError, match="no 'label_embed'"):
        infer_official_config(meta)


def test_every_missing_unexpected_and_misshaped_key_is_named(parity_dir):
    official = random_official_state_dict(parity_dir / "manifest_tiny.tsv")
    del official["fc.bias"]
    del official["visual_encoder.layers.1.downsample.norm.weight"]
    official["text_encoder.pooler.weight"] = torch.zeros(3)
    official["image_proj.weight"] = torch.zeros(512, 128)
    with pytest.raises(CheckpointError) as info:
        convert_official_state_dict(official, CONFIGS["tiny"], source="ckpt.pth")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ckpt.pth:")
    assert "2 missing" in msg and "fc.bias" in msg and "visual_encoder.layers.2.downsample.norm.weight" in msg
    assert "1 unexpected (text_encoder.pooler.weight)" in msg
    assert "image_proj.weight (512, 128) vs (512, 256)" in msg
    assert "ramtag weights import" in msg


def test_long_key_lists_are_truncated(parity_dir):
    official = random_official_state_dict(parity_dir / "manifest_tiny.tsv")
    converted = convert_official_state_dict(official, CONFIGS["tiny"])
    swin_only = {k: v for k, v in converted.items() if k.startswith("visual_encoder.")}
    with pytest.raises(CheckpointError, match=r"40 missing \(([^,]+, ){10}\.\.\. and 30 more\)") as info:
        load_state_dict_strict(RamPlus(CONFIGS["tiny"]), swin_only)
    assert "'tiny' architecture" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_unreadable_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "ram_plus.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"ram_plus\.pth: not a readable PyTorch checkpoint.*download"):
        read_official_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))

    marker = ""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _Evil()}}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: not a plain checkpoint .*was not loaded") as e:
        read_official_checkpoint(path)
    # issue 12 case 9: no torch advice to re-run with weights_only=False or to download the file again
    assert "weights_only" not in str(e.value) and "download" not in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"model": {"x": 1}}))
    with pytest.raises(CheckpointError, match=r"plain\.pkl"):
        read_official_checkpoint(plain)


def test_missing_file_and_non_state_dicts(tmp_path):
    with pytest.raises(CheckpointError, match="not found; check the path"):
        read_official_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_official_checkpoint(path)
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(CheckpointError, match=r"not named tensors \(b\)"):
        read_official_checkpoint(path)


@pytest.mark.slow
def test_full_size_official_layout_converts_and_loads(parity_dir):
    """Self-check of the mapping at the real size: 367 tensors, 329 M floats (1.3 GB fp32)."""
    manifest = read_manifest(parity_dir / "ram_plus_swin_l_keys.tsv")
    assert len(manifest) == 367
    official = {k: torch.zeros(s) for k, s in manifest}
    official["fc.bias"].fill_(0.25)
    config = infer_official_config(official)
    assert config == CONFIGS["swin_l_384"]
    converted = convert_official_state_dict(official, config)
    with torch.device("meta"):
        model = RamPlus(config)
    load_state_dict_strict(model, converted, assign=True)  # adopt: no second 1.3 GB copy
    assert sum(p.numel() for p in model.parameters()) == 329_493_046
    assert model.fc.bias.item() == 0.25
    assert model.visual_encoder.layers[3].downsample.reduction.weight.shape == (1536, 3072)
    del official, converted, model
    gc.collect()
