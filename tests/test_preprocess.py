"""The preprocessing transform equals the official torchvision transform bit for bit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from ramtag.errors import WeightsError
from ramtag.preprocess import make_transform
from ramtag.weights_format import OFFICIAL_PREPROCESSING, Preprocessing


def official_transform(pre: Preprocessing, interpolation: T.InterpolationMode = T.InterpolationMode.BILINEAR):
    """The official ram.get_transform, parameterised like ours."""
    return T.Compose(
        [
            T.Resize((pre.image_size, pre.image_size), interpolation=interpolation),
            T.ToTensor(),
            T.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


def parity_photos(parity_dir):
    return sorted(p for p in (parity_dir / "photos").iterdir() if p.suffix in (".jpg", ".png"))


def test_official_transform_is_bit_exact_on_the_parity_photos(parity_dir):
    ours, theirs = make_transform(OFFICIAL_PREPROCESSING), official_transform(OFFICIAL_PREPROCESSING)
    photos = parity_photos(parity_dir)
    assert len(photos) == 12
    for path in photos:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        a, b = ours(rgb), theirs(rgb)
        assert a.dtype == torch.float32 and a.shape == (3, 384, 384)
        assert torch.equal(a, b), path.name


@pytest.mark.parametrize(
    ("interpolation", "mode"),
    [("bicubic", T.InterpolationMode.BICUBIC), ("nearest", T.InterpolationMode.NEAREST)],
)
def test_other_sizes_and_filters_match_torchvision(parity_dir, interpolation, mode):
    pre = Preprocessing(
        image_size=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation=interpolation
    )
    ours, theirs = make_transform(pre), official_transform(pre, mode)
    for path in parity_photos(parity_dir)[:3]:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        assert torch.equal(ours(rgb), theirs(rgb)), path.name


def test_aspect_ratio_is_not_kept_and_non_rgb_is_converted():
    wide = Image.new("L", (300, 60), color=128)  # greyscale, 5:1
    x = make_transform(OFFICIAL_PREPROCESSING)(wide)
    assert x.shape == (3, 384, 384)
    pre = OFFICIAL_PREPROCESSING
    expected = (128 / 255 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    assert torch.allclose(x[:, 200, 200], expected)


def test_unsupported_preprocessing_is_a_clear_error():
    with pytest.raises(WeightsError, match="resize='letterbox'"):
        make_transform(dataclasses.replace(OFFICIAL_PREPROCESSING, resize="letterbox"))
    with pytest.raises(WeightsError, match=r"interpolation='lanczos9'.*ramtag weights import"):
        make_transform(dataclasses.replace(OFFICIAL_PREPROCESSING, interpolation="lanczos9"))


def test_preprocessing_round_trips_through_a_dict():
    d = OFFICIAL_PREPROCESSING.to_dict()
    assert d == {
        "image_size": 384,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "interpolation": "bilinear",
        "resize": "squash",
    }
    as_json = {**d, "mean": list(d["mean"]), "std": list(d["std"])}
    assert Preprocessing.from_dict(as_json) == OFFICIAL_PREPROCESSING
