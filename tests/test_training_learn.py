"""Training really learns (tiny RAM++ on synthetic coloured shapes), fine-tunes the official-format fixture
with new tags, resumes, evaluates/calibrates, and runs under DDP with 2 CPU processes (gloo).

The frozen CLIP is the tiny random CLIP fixture; its prompt-template embeddings of different tags are
nearly parallel, so the new tags get official-format descriptions (the tag word itself), which the tiny
CLIP embeds far apart, like a real CLIP does for different tags.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MULTIPROCESS_TIMEOUT_S, PARITY
from PIL import Image, ImageDraw

from ramtag.errors import TrainingError
from ramtag.training import EvalOptions, TrainOptions, dry_run, evaluate, train
from ramtag.weights_format import build_model, load_weights

pytestmark = pytest.mark.slow

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("circle", "square", "triangle")
TAGS = [*COLOURS, *SHAPES]
CLIP = PARITY / "clip_tiny_openai_format.pt"


def _shapes(folder: Path, n: int, seed: int, size: int = 64) -> Path:
    """``n`` images of one coloured shape on a light background, captioned "a {colour} {shape}"."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (245, 245, 245))
        d = ImageDraw.Draw(img)
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        w = rng.randint(36, 56)
        x, y = rng.randint(0, size - w), rng.randint(0, size - w)
        box = (x, y, x + w, y + w)
        if shape == "circle":
            d.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            d.rectangle(box, fill=COLOURS[colour])
        else:
            d.polygon([(x + w / 2, y), (x + w, y + w), (x, y + w)], fill=COLOURS[colour])
        img.save(folder / f"img{i:04d}.png")
        lines.append(json.dumps({"image": f"img{i:04d}.png", "caption": f"A {colour} {shape}."}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "data.jsonl"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A RAMTAG_HOME for the module-scoped fixtures (the autouse one is per test)."""
    path = tmp_path_factory.mktemp("train_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAMTAG_HOME", str(path))
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.delenv("RAMTAG_LLM_BASE_URL", raising=False)
        yield path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    (root / "tags.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    descriptions = [{t: [t] + [(t + " ") * (1 + i % 3) for i in range(50)]} for t in TAGS]
    (root / "descriptions.json").write_text(json.dumps(descriptions), encoding="utf-8")
    return {
        "train": _shapes(root / "train", 240, 0),
        "val": _shapes(root / "val", 60, 1),
        "tags": root / "tags.txt",
        "descriptions": root / "descriptions.json",
        "root": root,
    }


def _options(shapes: dict[str, Path], out: Path, **kw: object) -> TrainOptions:
    base: dict[str, object] = dict(
        data=[str(shapes["train"])],
        out=out,
        arch="tiny",
        image_size=64,
        tags=shapes["tags"],
        descriptions=shapes["descriptions"],
        clip=CLIP,
        batch_size=8,
        lr=2e-4,
        warmup_steps=30,
        augment="flip",
        drop_path=0.0,
        num_workers=0,
        save_every=100,
        keep_checkpoints=2,
        log_every=10,
        progress=False,
    )
    base.update(kw)
    return TrainOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(
    shapes: dict[str, Path], home: Path, tmp_path_factory: pytest.TempPathFactory, parity_dir: Path
) -> tuple[Path, object]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run") / "out"
    result = train(_options(shapes, out, max_steps=300))
    return out, result


def test_learns_far_above_chance_and_tags_through_the_library(
    trained: tuple[Path, object], shapes: dict[str, Path]
) -> None:
    out, result = trained
    assert result.steps == 300 and result.images == 240 and result.skipped == 0  # type: ignore[attr-defined]
    assert result.new_tags == TAGS  # type: ignore[attr-defined]

    report = evaluate(EvalOptions(data=[str(shapes["val"])], weights=str(out), num_workers=0))
    (split,) = report.splits
    assert split.images == 60
    chance = np.mean([m.positives / split.images for m in split.per_tag])  # AP of a random ranking
    assert split.mAP is not None and split.mAP > max(0.6, chance + 0.3), (split.mAP, chance)

    # The result is an ordinary weights folder: load it and tag a held-out image with the library.
    loaded = load_weights(out)
    assert list(loaded.vocabulary.names) == TAGS and set(loaded.vocabulary.thresholds) == {0.5}
    assert loaded.preprocessing.image_size == 64 and loaded.config.swin.window_size == 2
    assert loaded.metadata["provenance"]["source"] == "ramtag train"
    from ramtag.api import load_tagger

    tagger = load_tagger(str(out), device="cpu")
    lines = [json.loads(x) for x in shapes["val"].read_text().splitlines()]
    hits = 0
    images = [shapes["val"].parent / x["image"] for x in lines[:20]]
    for line, res in zip(lines[:20], tagger.tag(images, all_scores=True), strict=True):
        assert res.ok and res.scores is not None
        colour = max(COLOURS, key=lambda c: res.scores[c])  # type: ignore[index]
        hits += colour in line["caption"]
    assert hits >= 12  # chance: 5 of 20


def test_metrics_log_checkpoints_and_resume(
    trained: tuple[Path, object], shapes: dict[str, Path], tmp_path: Path
) -> None:
    out, _ = trained
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(10, 301, 10))
    assert {"loss", "tag", "align", "distill", "lr", "images_per_s"} <= set(records[-1])
    assert records[-1]["tag"] < records[0]["tag"]
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000200", "step-00000300"]  # keep 2
    state = torch.load(checkpoints[-1] / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 300 and state["optimizer"]["state"]

    with pytest.raises(TrainingError, match="--resume"):
        train(_options(shapes, out, max_steps=10))  # never overwrites a run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = load_weights(copy).state_dict["fc.weight"].clone()
    result = train(_options(shapes, copy, max_steps=305, resume=True))
    assert result.steps == 305
    assert not torch.equal(load_weights(copy).state_dict["fc.weight"], before)
    assert json.loads((copy / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 305


def test_eval_report_and_calibration(
    trained: tuple[Path, object], shapes: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "w"
    shutil.copytree(trained[0], weights, ignore=shutil.ignore_patterns("checkpoints"))
    report = evaluate(
        EvalOptions(
            data=[f"val={shapes['val']}", f"test={shapes['val']}"],
            weights=str(weights),
            num_workers=0,
            calibrate=True,
        )
    )
    assert [s.name for s in report.splits] == ["val", "test"]
    assert report.calibrated is not None and report.calibration is not None
    assert report.calibrated[0].macro_f1 >= report.splits[0].macro_f1
    saved = load_weights(weights).vocabulary.thresholds
    assert saved != (0.5,) * len(TAGS)
    meta = json.loads((weights / "ramtag.json").read_text())
    assert meta["provenance"]["calibration"]["previous_thresholds"] == [0.5] * len(TAGS)
    d = report.to_dict()
    json.dumps(d)
    assert set(d["splits"]) == {"val", "test"} and d["splits"]["val"]["worst_tags"]
    load_weights(weights, verify=True)  # the tensors file is untouched


def test_dry_run_shows_parsed_tags(shapes: dict[str, Path], tmp_path: Path) -> None:
    report = dry_run(_options(shapes, tmp_path / "out"))
    counts = dict(report.tag_counts)
    captions = [json.loads(x)["caption"] for x in shapes["train"].read_text().splitlines()]
    assert counts["red"] == sum("red" in c for c in captions)
    assert report.images == 240 and report.untagged == 0 and report.new_tags == TAGS
    assert report.samples[0]["parsed_tags"] and not (tmp_path / "out").exists()


def test_finetune_official_fixture_with_two_new_tags(parity_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i, caption in enumerate(
        [
            "a corgi on the grass",
            "a meteor shower in the night sky",
            "two corgis playing",
            "meteor showers over the sea",
        ]
        * 2
    ):
        Image.effect_noise((80, 64), 40 + 10 * i).convert("RGB").save(data / f"{i}.jpg")
        lines.append(json.dumps({"image": f"{i}.jpg", "caption": caption}))
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "new.txt").write_text("corgi\nmeteor shower\n")
    out = tmp_path / "ft"
    result = train(
        TrainOptions(
            data=[str(data / "train.jsonl")],
            out=out,
            init=str(parity_dir / "ram_plus_tiny_official.pth"),
            base_tags=parity_dir / "tag_list.txt",
            base_thresholds=parity_dir / "thresholds.txt",
            tags=tmp_path / "new.txt",
            descriptions=parity_dir / "openset_descriptions.json",
            clip=CLIP,
            image_size=96,
            max_steps=3,
            batch_size=4,
            lr=1e-5,
            augment="none",
            num_workers=0,
            progress=False,
        )
    )
    assert result.new_tags == ["corgi", "meteor shower"] and result.num_tags == 42

    loaded = load_weights(out)
    names = (parity_dir / "tag_list.txt").read_text().splitlines()
    thresholds = [float(x) for x in (parity_dir / "thresholds.txt").read_text().split()]
    assert list(loaded.vocabulary.names) == [*names, "corgi", "meteor shower"]
    assert list(loaded.vocabulary.thresholds) == pytest.approx([*thresholds, 0.5, 0.5])
    assert loaded.config.num_tags == 42 and loaded.config.swin.window_size == 3  # 96 px: window 12 -> 3
    assert (
        loaded.state_dict["visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0] == 25
    )

    # label_embed is frozen: built-in rows are the fixture's, new rows are the official open-set embedding
    official = torch.load(parity_dir / "ram_plus_tiny_official.pth", map_location="cpu", weights_only=True)[
        "model"
    ]
    label_embed = loaded.state_dict["label_embed"]
    assert torch.equal(label_embed[: 40 * 51], official["label_embed"])
    reference = torch.from_numpy(np.load(parity_dir / "openset_label_embed.npy"))[
        : 2 * 51
    ]  # corgi, meteor shower
    assert torch.allclose(label_embed[40 * 51 :], reference, atol=1e-5)
    assert not torch.equal(loaded.state_dict["fc.weight"], official["fc.weight"])  # the rest trained

    model = build_model(loaded)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 96, 96)).shape == (1, 42)


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    from pathlib import Path
    import torch
    import ramtag.training.trainer as T

    captured = {}
    build = T._build_model
    def capture(*args, **kwargs):
        captured["model"] = model = build(*args, **kwargs)
        return model
    T._build_model = capture

    data, out, tags, descriptions, clip = sys.argv[1:6]
    opts = T.TrainOptions(
        data=[data], out=Path(out), arch="tiny", image_size=64, tags=Path(tags),
        descriptions=Path(descriptions), clip=Path(clip), max_steps=4, batch_size=4, lr=1e-4, grad_accum=2,
        augment="flip", drop_path=0.0, num_workers=0, log_every=1, save_every=2, progress=False)
    result = T.train(opts)
    h = hashlib.sha256()
    for k, v in sorted(captured["model"].state_dict().items()):
        h.update(k.encode()); h.update(v.detach().float().numpy().tobytes())
    rank = os.environ["RANK"]
    Path(out).parent.joinpath(f"rank{rank}.sha").write_text(f"{h.hexdigest()} {result.steps}")
""")


def test_ddp_two_cpu_processes(shapes: dict[str, Path], tmp_path: Path, parity_dir: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAMTAG_HOME": str(tmp_path / "home")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(shapes["train"]),
        str(out),
        str(shapes["tags"]),
        str(shapes["descriptions"]),
        str(CLIP),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=MULTIPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = ((tmp_path / f"rank{r}.sha").read_text().split() for r in (0, 1))
    assert rank0 == rank1 and rank0[1] == "4"  # gradients were all-reduced: identical weights on both ranks
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert load_weights(out).config.num_tags == len(TAGS)
