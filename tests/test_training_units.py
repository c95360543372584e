"""Fast tests of the training building blocks: caption parsing, data sources, losses, metrics, schedule."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from test_hub import fake  # noqa: F401

from ramtag.errors import InputError, TrainingError
from ramtag.model.swin_checkpoint import resize_rel_pos_table
from ramtag.tags.vocab import read_tag_list
from ramtag.training.data import (
    Record,
    TaggingDataset,
    ViewTransform,
    build_targets,
    collate,
    load_data,
    load_records,
    parse_data_arg,
)
from ramtag.training.losses import asymmetric_loss
from ramtag.training.metrics import average_precision, best_f1_thresholds, split_metrics
from ramtag.training.parse import TagParser, count_tags, plural_forms, tokenize, verb_forms
from ramtag.training.trainer import _lr_at

NAMES = [
    "meteor shower",
    "shower",
    "dog",
    "hot dog",
    "glass",
    "glasses",
    "man",
    "run",
    "bus",
    "berry",
    "knife",
    "3D glasses",
    "t-shirt",
    "ride",
    "sky",
]


# -- caption parsing -------------------------------------------------------------------------------


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("A Meteor-Shower, over the SKY!") == ("a", "meteor", "shower", "over", "the", "sky")
    assert tokenize("the dog's ball") == ("the", "dog", "ball")


def test_inflections() -> None:
    assert plural_forms("bus") == {"buses"}
    assert plural_forms("berry") == {"berries"}
    assert "knives" in plural_forms("knife")
    assert plural_forms("man") == {"men", "mans"}
    assert {"running", "runs"} <= verb_forms("run")
    assert "riding" in verb_forms("ride")


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        (
            "A METEOR SHOWER over the sky",
            ["meteor shower", "sky"],
        ),  # multi-word beats the single word inside it
        ("I took a shower", ["shower"]),
        (
            "two hot dogs and a dog",
            ["dog", "hot dog"],
        ),  # plural of the multi-word tag; no "dog" from "hot dogs"
        ("men running past buses", ["bus", "man", "run"]),
        ("a man wearing 3D glasses", ["3D glasses", "man"]),
        ("she drinks from two glasses", ["glasses"]),  # exact tag "glasses" wins over the plural of "glass"
        ("a glass of berries and knives", ["berry", "glass", "knife"]),
        ("a man in a T-Shirt riding", ["man", "ride", "t-shirt"]),
        ("nothing here", []),
    ],
)
def test_parser_finds_tags(caption: str, expected: list[str]) -> None:
    assert TagParser(NAMES).parse_names(caption) == sorted(expected, key=NAMES.index)


def test_parser_on_the_official_vocabulary(official_data: Path) -> None:
    names = read_tag_list(official_data / "ram_tag_list.txt")
    parser = TagParser(names)
    tags = parser.parse_names("Two dogs running on the beach at sunset")
    assert {"dog", "run", "beach", "sunset"} <= set(tags)
    counts = count_tags(parser, ["a dog", "two dogs and a cat", "a cat"])
    assert counts["dog"] == 2 and counts["cat"] == 2


# -- data sources ----------------------------------------------------------------------------------


def _png(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def test_jsonl_csv_json_and_folder(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"image": "img/a.png", "caption": ["a dog", "a hot dog"], "tags": ["sky"]})
        + "\n"
        + "not json\n"
        + json.dumps({"image": "img/missing.png", "caption": "a dog"})
        + "\n"
        + json.dumps({"image": "img/b.png", "caption": "men", "split": "validation"})
        + "\n",
        encoding="utf-8",
    )
    rs = load_records(tmp_path / "d.jsonl")
    assert [r.image.name for r in rs.records] == ["a.png", "b.png"]
    assert rs.records[0].captions == ("a dog", "a hot dog") and rs.records[0].tags == ("sky",)
    assert rs.records[1].split == "val"
    assert rs.missing == 1 and len(rs.problems) == 2 and "d.jsonl:2" in rs.problems[0]

    (tmp_path / "d.csv").write_text(
        'image,caption,tags\nimg/a.png,a dog|a bus,"sky, man"\n', encoding="utf-8"
    )
    (r,) = load_records(tmp_path / "d.csv").records
    assert r.captions == ("a dog", "a bus") and r.tags == ("sky", "man")

    official = [
        {"image_path": "img/a.png", "caption": ["a dog"], "union_label_id": [2, 14], "parse_label_id": [[2]]}
    ]
    (tmp_path / "ram.json").write_text(json.dumps(official), encoding="utf-8")
    (r,) = load_records(tmp_path / "ram.json").records
    assert r.tag_ids == (2, 14)

    folder = tmp_path / "photos"
    _png(folder / "train" / "x.png")
    (folder / "train" / "x.txt").write_text("a dog under the sky\n\nsecond caption\n", encoding="utf-8")
    _png(folder / "val" / "y.png")
    (folder / "val" / "y.tags").write_text("man, bus\nberry\n", encoding="utf-8")
    _png(folder / "z.png")  # no text beside it: reported, skipped
    rs = load_records(folder)
    assert {(r.image.name, r.split) for r in rs.records} == {("x.png", "train"), ("y.png", "val")}
    assert any("z.png" in p for p in rs.problems)
    y = next(r for r in rs.records if r.image.name == "y.png")
    assert y.tags == ("man", "bus", "berry")

    assert parse_data_arg("val=" + str(tmp_path / "d.csv")) == ("val", tmp_path / "d.csv")
    with pytest.raises(InputError):
        load_data([tmp_path / "nope.jsonl"])


def test_targets_union_parsed_and_official_ids(tmp_path: Path) -> None:
    recs = [
        Record(tmp_path / "a.png", ("A dog under the sky",), ("Bus", "unicorn")),
        Record(tmp_path / "b.png", ("a meteor shower",), (), (1,)),
        Record(tmp_path / "c.png", ("nothing",)),
    ]
    t = build_targets(recs, NAMES, id_names=["sky", "dog"])
    assert [NAMES[i] for i in t.positives[0]] == ["dog", "bus", "sky"]
    assert t.unknown_tags == {"unicorn": 1}
    # official ids map through the official names; parsing only adds tags outside that list
    assert [NAMES[i] for i in t.positives[1]] == ["meteor shower", "dog"]
    assert t.untagged == 1
    with pytest.raises(TrainingError):
        build_targets(recs[1:2], NAMES)  # official ids without the official vocabulary


def test_dataset_views_and_failures(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    recs = [Record(good, ("a dog", "a bus")), Record(bad, ("x",))]
    tf = ViewTransform(
        image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), clip_size=24, augment="standard"
    )
    ds = TaggingDataset(recs, [[2], []], len(NAMES), tf, seed=3)
    batch = collate([ds[0], ds[1]])
    assert batch.images.shape == (1, 3, 32, 32) and batch.clip_images is not None
    assert batch.clip_images.shape == (1, 3, 24, 24)
    assert batch.targets[0, 2] == 1 and batch.targets.sum() == 1
    assert batch.captions[0] in ("a dog", "a bus")
    assert len(batch.failures) == 1 and batch.failures[0].path == bad
    # same seed, epoch and index -> same augmentation and caption
    a, b = ds[0], ds[0]
    assert isinstance(a, dict) and isinstance(b, dict)
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]


def test_view_transform_none_matches_inference_transform(tmp_path: Path) -> None:
    from ramtag.preprocess import make_transform
    from ramtag.weights_format import OFFICIAL_PREPROCESSING

    img = Image.effect_noise((50, 40), 60).convert("RGB")
    pre = OFFICIAL_PREPROCESSING
    view, clip_view = ViewTransform(pre.image_size, pre.mean, pre.std)(img)
    assert clip_view is None
    assert torch.allclose(view, make_transform(pre)(img), atol=1e-6)


# -- losses ----------------------------------------------------------------------------------------


def _asl_reference(x: torch.Tensor, y: torch.Tensor, gn: float, gp: float, clip: float) -> float:
    total = 0.0
    for xi, yi in zip(x.flatten().tolist(), y.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-xi))
        if yi:
            total += -((1 - p) ** gp) * math.log(max(p, 1e-8))
        else:
            pm = max(p - clip, 0.0)
            total += -(pm**gn) * math.log(max(1 - pm, 1e-8))
    return total


def test_asymmetric_loss_matches_its_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3
    y = (torch.rand(4, 6) > 0.6).float()
    for gn, gp, clip in ((7, 0, 0.05), (4, 0, 0.05), (2, 1, 0.0)):
        got = float(asymmetric_loss(x, y, gamma_neg=gn, gamma_pos=gp, clip=clip))
        assert got == pytest.approx(_asl_reference(x, y, gn, gp, clip), rel=1e-5)
    # easy negatives (p < clip) cost nothing; the loss pushes positives up and negatives down
    assert float(asymmetric_loss(torch.tensor([[-5.0]]), torch.tensor([[0.0]]), gamma_neg=7)) == 0.0
    x.requires_grad_(True)
    asymmetric_loss(x, y, gamma_neg=7).backward()
    assert x.grad is not None
    assert (x.grad[y == 1] <= 0).all()
    assert (x.grad[y == 0] >= 0).all()


# -- metrics ---------------------------------------------------------------------------------------


def test_average_precision_and_calibration() -> None:
    s = torch.tensor([[0.9, 0.5], [0.8, 0.5], [0.3, 0.5], [0.2, 0.1]])
    y = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]]).float()
    ap = average_precision(s, y)
    assert ap[0].item() == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1].item() == pytest.approx(1 / 3)  # ties are resolved pessimistically
    assert math.isnan(average_precision(s, torch.zeros(4, 2))[0].item())
    new = best_f1_thresholds(s, y, torch.tensor([0.5, 0.5]))
    assert new[0].item() == pytest.approx(0.25)  # keeps 0.9 and 0.3: F1 0.8
    m_before = split_metrics("val", ["a", "b"], s, y, torch.tensor([0.5, 0.5]))
    m_after = split_metrics("val", ["a", "b"], s, y, new)
    assert m_after.macro_f1 > m_before.macro_f1
    assert m_before.mAP == pytest.approx((ap[0].item() + ap[1].item()) / 2)
    assert [t.name for t in m_before.worst(1)] == ["b"]


# -- schedule and architecture helpers ------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine() -> None:
    lrs = [_lr_at(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_relative_position_table_resize() -> None:
    table = torch.randn(23 * 23, 4)  # window 12, 4 heads
    out = resize_rel_pos_table(table, 7)
    assert out.shape == (13 * 13, 4)
    assert resize_rel_pos_table(table, 12) is table


@pytest.mark.parametrize("recipe", sorted((Path(__file__).resolve().parents[1] / "train").glob("*.toml")))
def test_recipes_are_valid_options(recipe: Path, tmp_path: Path) -> None:
    from ramtag.training import options_from_recipe

    opts = options_from_recipe(recipe, data=["x.jsonl"], out=tmp_path / "o", lr=None)
    assert opts.data == ["x.jsonl"] and opts.out == tmp_path / "o" and opts.lr is not None
    assert opts.weight_decay == 0.05


def test_timm_backbone_is_adapted_to_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    from ramtag.model.backbone import SwinBackbone
    from ramtag.model.config import get_config
    from ramtag.model.ram_plus import RamPlus
    from ramtag.training.trainer import _load_timm_backbone

    tiny = get_config("tiny")  # 384 px, window 12: stands in for a downloaded ImageNet Swin
    source = SwinBackbone(tiny.swin)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained, num_classes, **kw: source)
    monkeypatch.setattr("ramtag.hub.fetch_hub_file", lambda f: Path("/nowhere/model.safetensors"))
    small = tiny.from_dict(
        {**tiny.to_dict(), "swin": {**tiny.to_dict()["swin"], "img_size": 96, "window_size": 3}}
    )
    model = RamPlus(small)
    _load_timm_backbone(model, "swin_tiny_patch4_window7_224")
    got = model.visual_encoder.state_dict()
    assert torch.equal(got["patch_embed.proj.weight"], source.state_dict()["patch_embed.proj.weight"])
    assert got["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (25, 1)


def test_timm_imagenet_weights_come_through_ramtags_bounded_download(
    fake: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--init timm:NAME: the weights are fetched by ramtag.hub (attempts, rate floor, deadline, resume),
    not by timm's own unbounded hf_hub_download, and timm is handed the file."""
    import timm

    from ramtag.model.config import get_config
    from ramtag.model.ram_plus import RamPlus
    from ramtag.training.trainer import _load_timm_backbone

    name = "swin_tiny_patch4_window7_224"
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    fake.add_hub_file(repo, "model.safetensors", b"weights stand-in")
    model = RamPlus(get_config("tiny"))
    seen: dict[str, Any] = {}

    def create_model(name: str, pretrained: bool, num_classes: int, **kw: Any) -> Any:
        seen.update(kw)
        return model.visual_encoder

    monkeypatch.setattr(timm, "create_model", create_model)
    _load_timm_backbone(model, name)
    given = Path(seen["pretrained_cfg_overlay"]["file"])
    assert given.name == "model.safetensors" and given.read_bytes() == b"weights stand-in"
    assert fake.count("GET") == 1 and fake.requests[-1].path == f"/{repo}/resolve/main/model.safetensors"
