"""End-to-end open-set tagging through the `ramtag` command: official parity and a fake LLM server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import PARITY
from fake_llm_server import FakeLLM, fake_llm  # noqa: F401
from test_cli import photos, read_jsonl, run_cli, tiny_weights  # noqa: F401

TOL = 1e-4


def _max_diff(row: dict, names: list[str], expected: list[float]) -> float:
    return max(abs(row["scores"][n] - e) for n, e in zip(names, expected, strict=True))


def test_only_open_set_matches_official(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = json.loads((PARITY / "reference_openset.json").read_text())
    out = tmp_path / "open.jsonl"
    code, _, err = run_cli(
        [
            "tag",
            str(photos),
            "--weights",
            tiny_weights,
            "--descriptions",
            str(PARITY / "openset_descriptions.json"),
            "--clip",
            str(PARITY / "clip_tiny_openai_format.pt"),
            "--only-open-set",
            "--write",
            "none",
            "--json",
            str(out),
            "--all-scores",
            "--precision",
            "fp32",
            "--quiet",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 12
    for row in rows:
        exp = ref["images_exif_transposed"][Path(row["path"]).name]
        assert set(row["scores"]) == set(ref["tags"])
        assert _max_diff(row, ref["tags"], exp["scores"]) < TOL
        want = {t.strip() for t in exp["tags_en"].split("|") if t.strip()}
        assert {t["name"] for t in row["tags"]} == want
        assert all(t.get("open_set") for t in row["tags"])


def test_open_set_with_builtin_matches_official_combined(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = json.loads((PARITY / "reference_combined.json").read_text())
    out = tmp_path / "combined.jsonl"
    code, _, err = run_cli(
        [
            "tag",
            str(photos),
            "--weights",
            tiny_weights,
            "--open-set",
            "corgi,meteor shower,trampolining",
            "--descriptions",
            str(PARITY / "openset_descriptions.json"),
            "--clip",
            str(PARITY / "clip_tiny_openai_format.pt"),
            "--write",
            "none",
            "--json",
            str(out),
            "--all-scores",
            "--precision",
            "fp32",
            "--quiet",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    for row in read_jsonl(out):
        exp = ref["images_exif_transposed"][Path(row["path"]).name]
        assert _max_diff(row, ref["tags"], exp["scores"]) < TOL
        want = {t.strip() for t in exp["tags_en"].split("|") if t.strip()}
        assert {t["name"] for t in row["tags"]} == want


def test_open_set_from_fake_llm_then_cached(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET123")
    out = tmp_path / "llm.jsonl"
    args = [
        "tag",
        str(photos / "hubble_deep_field.jpg"),
        "--weights",
        tiny_weights,
        "--open-set",
        "corgi=0.4",
        "--clip",
        str(PARITY / "clip_tiny_openai_format.pt"),
        "--llm-base-url",
        fake_llm.url,
        "--llm-model",
        "fake-model",
        "--write",
        "xmp",
        "--json",
        str(out),
        "--all-scores",
        "--precision",
        "fp32",
        "-v",
    ]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert fake_llm.hits >= 5  # the paper's 5 prompts
    (row,) = read_jsonl(out)
    assert "corgi" in row["scores"]
    first_hits = fake_llm.hits
    code, stdout2, err2 = run_cli([*args, "--force"], monkeypatch, capsys)
    assert code == 0, err2
    assert fake_llm.hits == first_hits  # descriptions and embeddings cached: no LLM call
    for text in (stdout, err, stdout2, err2, out.read_text()):
        assert "SECRET123" not in text
    for root, _, files in os.walk(os.environ["RAMTAG_HOME"]):
        for f in files:
            p = Path(root) / f
            if p.stat().st_size < 5_000_000:
                assert b"SECRET123" not in p.read_bytes(), p
    for p in photos.glob("*.xmp"):
        assert "SECRET123" not in p.read_text()


def test_describe_json_roundtrip(
    fake_llm: FakeLLM,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, err = run_cli(
        ["describe", "corgi", "--json", "--llm-base-url", fake_llm.url, "--llm-model", "m"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    data = json.loads(stdout)
    assert list(data[0]) == ["corgi"] and len(data[0]["corgi"]) == 51
    assert data[0]["corgi"][0] == "a photo of a corgi."


def test_describe_without_llm_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["describe", "corgi"], monkeypatch, capsys)
    assert code == 1
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert "OPENAI_API_KEY" in err or "llm-base-url" in err
