"""The CLIP text encoder (open_clip, QuickGELU, OpenAI state-dict format) against the official embeddings."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ramtag.errors import InputError
from ramtag.text.clip import (
    ClipModel,
    ClipTextEncoder,
    clip_encoder_id,
    infer_clip_config,
    read_clip_state_dict,
)
from ramtag.text.describe import load_descriptions


@pytest.fixture(scope="module")
def tiny_clip(parity_dir: Path) -> ClipModel:
    return ClipModel.load(parity_dir / "clip_tiny_openai_format.pt")


@pytest.fixture(scope="module")
def all_descriptions(parity_dir: Path) -> list[str]:
    return [
        d for descs in load_descriptions(parity_dir / "openset_descriptions.json").values() for d in descs
    ]


def test_matches_official_openset_label_embed(
    tiny_clip: ClipModel, all_descriptions: list[str], parity_dir: Path
) -> None:
    emb = tiny_clip.encode_text(all_descriptions)
    ref = np.load(parity_dir / "openset_label_embed.npy")
    assert emb.dtype == torch.float32 and tuple(emb.shape) == ref.shape == (153, 512)
    assert np.abs(emb.numpy() - ref).max() < 1e-5
    assert torch.allclose(emb.norm(dim=-1), torch.ones(153), atol=1e-6)  # each row on its own


def test_batches_do_not_change_rows(tiny_clip: ClipModel, all_descriptions: list[str]) -> None:
    whole = tiny_clip.encode_text(all_descriptions)
    pieces = tiny_clip.encode_text(all_descriptions, batch_size=7)
    assert (whole - pieces).abs().max() < 1e-6


def test_long_description_is_truncated_keeping_end_token(
    tiny_clip: ClipModel, all_descriptions: list[str]
) -> None:
    long = max(all_descriptions, key=len)
    assert long.startswith("A low, sturdy")  # the corgi description longer than 77 tokens
    tokens = tiny_clip.tokenize([long])[0]
    assert tokens.shape == (77,) and (tokens != 0).all()
    assert tokens[0] == 49406 and tokens[-1] == 49407  # start and end-of-text kept
    full = tiny_clip._tokenizer.encode(long)
    assert len(full) > 75 and tokens[1:76].tolist() == full[:75]
    # the truncated text embeds like any other: pooled at the end token, which is the argmax id
    assert int(tokens.argmax()) == 76


def test_architecture_is_inferred_from_shapes(parity_dir: Path) -> None:
    sd = read_clip_state_dict(parity_dir / "clip_tiny_openai_format.pt")
    cfg = infer_clip_config(sd)
    ref = json.loads((parity_dir / "clip_tiny.json").read_text())
    assert cfg["embed_dim"] == ref["embed_dim"] and cfg["quick_gelu"] is ref["quick_gelu"] is True
    assert cfg["text_cfg"] == ref["text_cfg"]
    assert {k: cfg["vision_cfg"][k] for k in ref["vision_cfg"]} == ref["vision_cfg"]


def test_quick_gelu_matters(tiny_clip: ClipModel, all_descriptions: list[str], parity_dir: Path) -> None:
    """Building the same weights with plain GELU is measurably off: the QuickGELU choice is tested."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    sd = read_clip_state_dict(parity_dir / "clip_tiny_openai_format.pt")
    cfg = infer_clip_config(sd)
    gelu = CLIP(
        cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), CLIPTextCfg(**cfg["text_cfg"]), quick_gelu=False
    )
    gelu.load_state_dict({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        plain = torch.nn.functional.normalize(
            gelu.eval().encode_text(tiny_clip.tokenize(all_descriptions[:20])), dim=-1
        )
    ref = np.load(parity_dir / "openset_label_embed.npy")[:20]
    assert np.abs(plain.numpy() - ref).max() > 1e-4


def test_safetensors_file_gives_the_same_embeddings(
    tmp_path: Path, parity_dir: Path, tiny_clip: ClipModel, all_descriptions: list[str]
) -> None:
    from safetensors.torch import save_file

    sd = read_clip_state_dict(parity_dir / "clip_tiny_openai_format.pt")
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(path))
    other = ClipModel.load(path)
    texts = all_descriptions[:10]
    ours, ref = other.model.state_dict(), tiny_clip.model.state_dict()  # loading is exact ...
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], v) for k, v in ref.items())
    # ... the two instances' embeddings agree to fp32 rounding (kernels may differ with memory layout)
    torch.testing.assert_close(other.encode_text(texts), tiny_clip.encode_text(texts), rtol=1e-4, atol=1e-6)


def test_encode_image(tiny_clip: ClipModel) -> None:
    from PIL import Image

    images = torch.stack([tiny_clip.preprocess()(Image.new("RGB", (300, 200), c)) for c in ("red", "blue")])
    assert images.shape == (2, 3, 224, 224)
    feats = tiny_clip.encode_image(images)
    assert feats.shape == (2, 512) and torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert not torch.allclose(feats[0], feats[1])


def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(path, "w") as z:  # the layout of a TorchScript archive
        z.writestr("ViT-B-16/code/__torch__/model.py", "")
        z.writestr("ViT-B-16/constants.pkl", b"")
    with pytest.raises(InputError, match="TorchScript"):
        read_clip_state_dict(path)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_clip_state_dict(tmp_path / "missing.pt")
    partial = tmp_path / "partial.pt"
    torch.save({"token_embedding.weight": torch.zeros(3, 4)}, partial)
    with pytest.raises(InputError, match=r"missing positional_embedding"):
        read_clip_state_dict(partial)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"garbage\.pt: cannot load"):
        read_clip_state_dict(garbage)


def test_encoder_is_lazy_and_identified_without_loading(parity_dir: Path, tmp_path: Path) -> None:
    path = parity_dir / "clip_tiny_openai_format.pt"
    enc = ClipTextEncoder(path)
    assert enc.encoder_id == clip_encoder_id(path)
    assert enc.encoder_id.startswith("file-sha256:") and enc._model is None and enc.passes == 0
    assert enc.encode(["a photo of a cat."]).shape == (1, 512) and enc.passes == 1
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    assert clip_encoder_id(copy) == enc.encoder_id  # content, not path
    assert clip_encoder_id(None).startswith("hub:")  # the registry default, nothing downloaded


def test_import_stays_light() -> None:
    code = "import sys, ramtag.text, ramtag.text.openset\n"
    code += "print('open_clip' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.slow
def test_vit_b_16_layout_loads_strictly() -> None:
    """open_clip's ViT-B-16 (the layout of the registry's open_clip_model.safetensors) is inferred exactly."""
    import open_clip

    reference = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    sd = reference.state_dict()
    cfg = infer_clip_config(sd)
    want = open_clip.get_model_config("ViT-B-16-quickgelu")
    assert cfg["embed_dim"] == want["embed_dim"] == 512 and cfg["text_cfg"] == want["text_cfg"]
    assert {k: cfg["vision_cfg"][k] for k in want["vision_cfg"]} == want["vision_cfg"]
    ours = ClipModel.from_state_dict(sd)
    texts = ["a photo of a cat.", "a corgi running on a lawn"]
    with torch.no_grad():
        ref = torch.nn.functional.normalize(reference.encode_text(ours.tokenize(texts)), dim=-1)
    assert (ours.encode_text(texts) - ref).abs().max() < 1e-6
