"""`ramtag train` / `ramtag eval` through the command line: captioned folder -> weights -> tagged sidecars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import PARITY
from test_cli import read_jsonl, run_cli

CAPTIONS = {
    "hubble_deep_field.jpg": "a meteor shower over a field of distant galaxies",
    "rocket_launchpad_night.jpg": "a rocket on the launch pad at night",
    "grace_hopper.jpg": "a portrait of an officer in uniform",
    "cat_chelsea.png": "a cat looking to the side",
    "coffee_cup.jpg": "a cup of coffee on a saucer",
    "honey_bee_flower.jpg": "a honey bee on a flower",
}


@pytest.fixture
def captioned(tmp_path: Path, parity_dir: Path) -> Path:
    folder = tmp_path / "captioned"
    folder.mkdir()
    for name, caption in CAPTIONS.items():
        shutil.copy2(PARITY / "photos" / name, folder / name)
        (folder / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_train_dry_run_then_finetune_then_tag_and_eval(
    captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    new_tags = tmp_path / "my_tags.txt"
    new_tags.write_text("corgi\nmeteor shower\n", encoding="utf-8")
    common = [
        "--data",
        str(captioned),
        "--init",
        str(PARITY / "ram_plus_tiny_official.pth"),
        "--set",
        f"base_tags={PARITY / 'tag_list.txt'}",
        "--set",
        f"base_thresholds={PARITY / 'thresholds.txt'}",
        "--tags",
        str(new_tags),
        "--set",
        f"descriptions={PARITY / 'openset_descriptions.json'}",
        "--set",
        f"clip={PARITY / 'clip_tiny_openai_format.pt'}",
    ]

    code, out, err = run_cli(["train", *common, "--dry-run"], monkeypatch, capsys)
    assert code == 0, err
    assert "meteor shower" in out  # parsed from the hubble caption

    weights = tmp_path / "my-ram"
    code, out, err = run_cli(
        [
            "train",
            *common,
            "--out",
            str(weights),
            "--set",
            "image_size=96",
            "--max-steps",
            "2",
            "--batch-size",
            "3",
            "--lr",
            "1e-5",
            "--set",
            "augment=none",
            "--workers",
            "0",
            "--set",
            "progress=false",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    meta = json.loads((weights / "ramtag.json").read_text())
    assert meta["vocabulary"]["names"][-2:] == ["corgi", "meteor shower"]

    photos = tmp_path / "to_tag"
    photos.mkdir()
    shutil.copy2(PARITY / "photos" / "hubble_deep_field.jpg", photos)
    jsonl = tmp_path / "tags.jsonl"
    code, _, err = run_cli(
        ["tag", str(photos), "--weights", str(weights), "--json", str(jsonl), "--all-scores", "--quiet"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    (row,) = read_jsonl(jsonl)
    assert {"corgi", "meteor shower"} <= set(row["scores"])
    assert (photos / "hubble_deep_field.jpg.xmp").exists()

    code, out, err = run_cli(
        ["eval", "--data", str(captioned), "--weights", str(weights), "--json", "--workers", "0"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    splits = report["splits"]
    first = next(iter(splits.values())) if isinstance(splits, dict) else splits[0]
    assert first["images"] == len(CAPTIONS)
    assert "mAP" in first


def test_train_needs_data_and_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["train", "--set", "arch=tiny"], monkeypatch, capsys)
    assert code == 2 and "--data" in err
