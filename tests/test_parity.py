"""Parity with the OFFICIAL RAM++ code: the tiny official checkpoint must reproduce its reference outputs.

../shared/parity/reference_*.json were produced by the official code (fp32, CPU, one image at a time).
Here the whole pipeline runs as ramtag runs it: official .pth -> convert -> RamPlus, PIL -> our transform,
12 photos in one batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from ramtag.errors import CheckpointError, VocabularyError
from ramtag.model import RamPlus
from ramtag.model.convert import (
    convert_official_state_dict,
    infer_official_config,
    load_state_dict_strict,
    read_official_checkpoint,
)
from ramtag.preprocess import make_transform
from ramtag.tags.vocab import OPEN_SET_THRESHOLD, Vocabulary
from ramtag.weights_format import OFFICIAL_PREPROCESSING, build_model, load_weights, save_weights

TOL = 1e-4  # the official code itself: 3e-7 between batched and single images
VARIANTS = ("images", "images_exif_transposed")


@pytest.fixture(scope="module")
def official(parity_dir) -> tuple[RamPlus, Vocabulary]:
    sd = read_official_checkpoint(parity_dir / "ram_plus_tiny_official.pth")
    config = infer_official_config(sd)
    model = RamPlus(config).eval()
    load_state_dict_strict(model, convert_official_state_dict(sd, config))
    vocab = Vocabulary.from_files(
        parity_dir / "tag_list.txt", parity_dir / "thresholds.txt", parity_dir / "tag_list_chinese.txt"
    )
    return model, vocab


@pytest.fixture(scope="module")
def reference(parity_dir) -> dict:
    return json.loads((parity_dir / "reference_scores.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def batches(parity_dir, reference) -> dict[str, tuple[list[str], torch.Tensor]]:
    """Per variant: photo names and the (12, 3, 384, 384) batch, decoded like the reference."""
    transform = make_transform(OFFICIAL_PREPROCESSING)
    out = {}
    for variant in VARIANTS:
        names = list(reference[variant])
        tensors = []
        for name in names:
            with Image.open(parity_dir / "photos" / name) as im:
                img = ImageOps.exif_transpose(im) if variant == "images_exif_transposed" else im
                tensors.append(transform(img.convert("RGB")))
        out[variant] = (names, torch.stack(tensors))
    return out


@pytest.fixture(scope="module")
def image_embeds(official, batches) -> dict[str, torch.Tensor]:
    model, _ = official
    with torch.no_grad():
        return {v: model.encode_image(x) for v, (_, x) in batches.items()}


def select(scores: torch.Tensor, vocab: Vocabulary, chinese: bool = False) -> str:
    """The official tag string: selected tags (score > threshold, strictly) in list order, ' | '-joined."""
    names = vocab.names_zh if chinese else vocab.names
    assert names is not None
    return " | ".join(n for n, s, t in zip(names, scores.tolist(), vocab.thresholds, strict=True) if s > t)


@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_tags_match_the_official_code(official, batches, image_embeds, reference, variant):
    model, vocab = official
    assert list(vocab.names) == reference["tags"]
    assert list(vocab.thresholds) == pytest.approx(reference["thresholds"])
    names, _ = batches[variant]
    label_embed = model.builtin_label_embed()
    with torch.no_grad():
        logits = model.tag_logits(image_embeds[variant], label_embed, model.project_labels(label_embed))
        unprojected = model.tag_logits(image_embeds[variant], label_embed)
    ref = reference[variant]
    want_logits = torch.tensor([ref[n]["logits"] for n in names])
    want_scores = torch.tensor([ref[n]["scores"] for n in names])
    for got in (logits, unprojected):
        assert (got - want_logits).abs().max().item() < TOL
        assert (got.sigmoid() - want_scores).abs().max().item() < TOL
    scores = logits.sigmoid()
    for i, name in enumerate(names):
        assert select(scores[i], vocab) == ref[name]["tags_en"], name
        assert select(scores[i], vocab, chinese=True) == ref[name]["tags_zh"], name
    if variant == "images":  # the photos that select tags do select them (the check is not vacuous)
        assert sum(bool(ref[n]["tags_en"]) for n in names) == 3


def test_open_set_and_combined_vocabularies_match_the_official_code(
    official, batches, image_embeds, parity_dir
):
    """The official open-set label embedding (3 tags x 51 rows) alone and appended to the built-in 40."""
    model, _ = official
    openset = torch.from_numpy(np.load(parity_dir / "openset_label_embed.npy")).view(3, 51, 512)
    combined = torch.cat([model.builtin_label_embed().detach(), openset])
    for file, label_embed in (("reference_openset.json", openset), ("reference_combined.json", combined)):
        ref = json.loads((parity_dir / file).read_text(encoding="utf-8"))
        thresholds = ref["thresholds"]
        assert thresholds[-3:] == [OPEN_SET_THRESHOLD] * 3
        for variant in VARIANTS:
            names, _ = batches[variant]
            with torch.no_grad():
                projected = model.project_labels(label_embed)
                logits = model.tag_logits(image_embeds[variant], label_embed, projected)
            want = torch.tensor([ref[variant][n]["logits"] for n in names])
            assert (logits - want).abs().max().item() < TOL, (file, variant)
            scores = logits.sigmoid()
            for i, name in enumerate(names):
                pairs = zip(ref["tags"], scores[i].tolist(), thresholds, strict=True)
                got = " | ".join(t for t, s, th in pairs if s > th)
                assert got == ref[variant][name]["tags_en"], (file, variant, name)


def test_saved_weights_give_identical_scores(official, batches, tmp_path, parity_dir):
    model, vocab = official
    directory = save_weights(
        tmp_path / "tiny",
        state_dict=model.state_dict(),
        config=model.config,
        vocabulary=vocab,
        preprocessing=OFFICIAL_PREPROCESSING,
        provenance={"source": str(parity_dir / "ram_plus_tiny_official.pth")},
    )
    loaded = load_weights(directory, verify=True)
    assert loaded.vocabulary == vocab and loaded.preprocessing == OFFICIAL_PREPROCESSING
    rebuilt = build_model(loaded)
    ours, ref = rebuilt.state_dict(), model.state_dict()  # loading is exact ...
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], v) for k, v in ref.items())
    _, x = batches["images_exif_transposed"]
    x = x[:4]
    with torch.no_grad():  # ... two instances' outputs agree to fp32 rounding (kernels vary with layout)
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-4, atol=1e-5)


def test_wrong_vocabulary_length_fails_clearly(official, tmp_path):
    model, vocab = official
    with pytest.raises(VocabularyError, match="39 tags but the architecture has 40"):
        save_weights(
            tmp_path / "w",
            state_dict=model.state_dict(),
            config=model.config,
            vocabulary=vocab.subset(range(39)),
            preprocessing=OFFICIAL_PREPROCESSING,
            provenance={},
        )


def test_a_pickle_is_never_loaded_as_weights(official, tmp_path):
    model, vocab = official
    directory = save_weights(
        tmp_path / "w",
        state_dict=model.state_dict(),
        config=model.config,
        vocabulary=vocab,
        preprocessing=OFFICIAL_PREPROCESSING,
        provenance={},
    )
    marker = tmp_path / "pwned"

    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model": Bomb()}, directory / "model.safetensors")  # a torch pickle, safetensors name
    meta = json.loads((directory / "ramtag.json").read_text(encoding="utf-8"))
    meta["files"] = {}
    (directory / "ramtag.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_weights(directory)
    assert not marker.exists()
