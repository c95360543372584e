"""End-to-end: the `ramtag` command on the official-format tiny checkpoint and real photos."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MULTIPROCESS_TIMEOUT_S, PARITY, REPO

from ramtag import cli

TOL = 1e-4


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run `ramtag ARGS` in-process through the real entry point (errors -> exit codes in main())."""
    monkeypatch.setattr(sys, "argv", ["ramtag", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def tiny_weights(
    parity_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    code, _, err = run_cli(
        [
            "weights",
            "import",
            str(parity_dir / "ram_plus_tiny_official.pth"),
            "--tag-list",
            str(parity_dir / "tag_list.txt"),
            "--thresholds",
            str(parity_dir / "thresholds.txt"),
            "--tag-list-zh",
            str(parity_dir / "tag_list_chinese.txt"),
            "--name",
            "tiny-official",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    return "tiny-official"


@pytest.fixture
def photos(tmp_path: Path, parity_dir: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for p in sorted((parity_dir / "photos").iterdir()):
        if p.suffix.lower() in (".jpg", ".png"):
            shutil.copy2(p, d / p.name)
    return d


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_tag_json_matches_official_scores(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = json.loads((PARITY / "reference_scores.json").read_text())
    out = tmp_path / "tags.jsonl"
    code, _, err = run_cli(
        [
            "tag",
            str(photos),
            "--weights",
            tiny_weights,
            "--write",
            "json",
            "--json",
            str(out),
            "--all-scores",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--batch-size",
            "5",
            "--workers",
            "0",
            "--quiet",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 12
    names = ref["tags"]
    for row in rows:
        expected = ref["images_exif_transposed"][Path(row["path"]).name]
        got = [row["scores"][n] for n in names]
        assert max(abs(a - b) for a, b in zip(got, expected["scores"], strict=True)) < TOL, row["path"]
        got_tags = {t["name"] for t in row["tags"]}
        want = {t.strip() for t in expected["tags_en"].split("|") if t.strip()}
        assert got_tags == want, row["path"]
        for t in row["tags"]:
            assert t["score"] > t["threshold"]


def test_official_orientation_flag_matches_untransposed_reference(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = json.loads((PARITY / "reference_scores.json").read_text())
    out = tmp_path / "tags.jsonl"
    name = "cameratrap_elephants_orientation6.jpg"
    code, _, err = run_cli(
        [
            "tag",
            str(photos / name),
            "--weights",
            tiny_weights,
            "--write",
            "none",
            "--json",
            str(out),
            "--all-scores",
            "--precision",
            "fp32",
            "--no-exif-orientation",
            "--quiet",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    (row,) = read_jsonl(out)
    got = [row["scores"][n] for n in ref["tags"]]
    assert max(abs(a - b) for a, b in zip(got, ref["images"][name]["scores"], strict=True)) < TOL


def test_xmp_default_leaves_images_untouched_and_rerun_is_incremental(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos.iterdir()}
    code, out, err = run_cli(
        ["tag", str(photos), "--weights", tiny_weights, "--precision", "fp32"], monkeypatch, capsys
    )
    assert code == 0, err
    assert "hubble_deep_field.jpg" in out
    after = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos.iterdir() if p.suffix != ".xmp"
    }
    assert after == before
    sidecar = photos / "hubble_deep_field.jpg.xmp"
    assert sidecar.exists()
    assert "dc:subject" in sidecar.read_text(encoding="utf-8")
    assert "12 images found, 12 tagged" in err
    code, _, err = run_cli(
        ["tag", str(photos), "--weights", tiny_weights, "--precision", "fp32"], monkeypatch, capsys
    )
    assert code == 0, err
    assert "0 tagged" in err and "12 unchanged" in err


def test_bad_files_are_skipped_counted_and_exit_1(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("not an image")
    good = (photos / "coffee_cup.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "folder.jpg").mkdir()
    out = tmp_path / "tags.jsonl"
    code, _, err = run_cli(
        [
            "tag",
            str(photos),
            "--weights",
            tiny_weights,
            "--write",
            "json",
            "--json",
            str(out),
            "--workers",
            "2",
            "--batch-size",
            "4",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1
    rows = read_jsonl(out)
    ok = [r for r in rows if "error" not in r]
    assert len(ok) == 12
    assert "3 failed" in err
    for name in ("empty.jpg", "notes.jpg", "truncated.jpg"):
        assert name in err
    assert "Traceback" not in err


def test_missing_weights_offline_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], photos: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RAMTAG_OFFLINE", "1")
    code, _, err = run_cli(["tag", str(photos)], monkeypatch, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "ramtag weights download" in err and "ramtag weights import" in err


def test_bad_checkpoint_and_mismatched_tag_list(
    tmp_path: Path, parity_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    code, _, err = run_cli(
        [
            "weights",
            "import",
            str(junk),
            "--tag-list",
            str(parity_dir / "tag_list.txt"),
            "--thresholds",
            str(parity_dir / "thresholds.txt"),
            "--name",
            "junk",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "junk.pth" in err and "Traceback" not in err
    short = tmp_path / "short.txt"
    short.write_text("\n".join((parity_dir / "tag_list.txt").read_text().splitlines()[:39]) + "\n")
    code, _, err = run_cli(
        [
            "weights",
            "import",
            str(parity_dir / "ram_plus_tiny_official.pth"),
            "--tag-list",
            str(short),
            "--thresholds",
            str(parity_dir / "thresholds.txt"),
            "--name",
            "short",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "39" in err and "40" in err and "Traceback" not in err


def test_python_m_ramtag_and_light_import() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "ramtag", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0 and "tag" in res.stdout
    code = (
        "import sys, ramtag; assert 'torch' not in sys.modules, 'torch imported';"
        "import ramtag.api, ramtag.cli;"
        "assert not [m for m in sys.modules if m.startswith('ramtag.training')]"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_usage_error_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(["tag", "x.jpg", "--write", "bogus"], monkeypatch, capsys)
    assert code == 2


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_library_and_merge_json(
    tiny_weights: str, photos: Path, tmp_path: Path
) -> None:
    """`torchrun --nproc-per-node 2 -m ramtag tag ...` on CPU (gloo): each rank tags half, JSON merged."""
    out = tmp_path / "all.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ramtag",
        "tag",
        str(photos),
        "--weights",
        tiny_weights,
        "--device",
        "cpu",
        "--workers",
        "0",
        "--json",
        str(out),
        "--precision",
        "fp32",
        "--quiet",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=MULTIPROCESS_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_jsonl(out)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(
        p.name for p in photos.glob("*.*") if p.suffix != ".xmp"
    )
    assert not list(tmp_path.glob("all.jsonl.rank*"))
    assert len(list(photos.glob("*.xmp"))) >= 1  # each rank wrote its own sidecars
    # Each rank reported only its own share.
    tagged = [
        int(line.split(" tagged")[0].split(", ")[-1]) for line in res.stderr.splitlines() if " tagged" in line
    ]
    assert sorted(tagged) == [6, 6], res.stderr[-2000:]


def test_bf16_checked_tags_are_the_fp32_tags(
    tiny_weights: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the threshold put between an fp32 score and its bf16 value (so plain bf16 decides that tag
    differently), `--precision bf16-checked` still writes exactly the fp32 tags."""

    def run(precision: str, *extra: str) -> dict[str, dict]:
        out = tmp_path / f"{precision}-{len(extra)}.jsonl"
        code, _, err = run_cli(
            [
                "tag",
                str(photos),
                "--weights",
                tiny_weights,
                "--write",
                "none",
                "--json",
                str(out),
                "--precision",
                precision,
                "--quiet",
                *extra,
            ],
            monkeypatch,
            capsys,
        )
        assert code == 0, err
        return {Path(r["path"]).name: r for r in read_jsonl(out)}

    s32, s16 = run("fp32", "--all-scores"), run("bf16", "--all-scores")
    gap, name, tag = max(
        (abs(s32[n]["scores"][t] - s16[n]["scores"][t]), n, t) for n in s32 for t in s32[n]["scores"]
    )
    assert gap > 1e-4  # bf16 really differs from fp32 here
    mid = (s32[name]["scores"][tag] + s16[name]["scores"][tag]) / 2
    assert (s32[name]["scores"][tag] > mid) != (s16[name]["scores"][tag] > mid)  # plain bf16 flips it
    fp32 = run("fp32", "--threshold", repr(mid))
    checked = run("bf16-checked", "--threshold", repr(mid))
    # the same tags (their order may differ where two scores are within bf16 rounding of each other)
    tags = {n: {t["name"] for t in r["tags"]} for n, r in fp32.items()}
    assert {n: {t["name"] for t in r["tags"]} for n, r in checked.items()} == tags
    assert (tag in tags[name]) == (s32[name]["scores"][tag] > mid)


def test_api_tags_paths_and_in_memory_images_alike(tiny_weights: str, photos: Path) -> None:
    """Tagger.tag takes paths and PIL images (the same object twice too) and gives the same tags for both."""
    from PIL import Image, ImageOps

    import ramtag

    tagger = ramtag.load_tagger(tiny_weights, precision="bf16-checked", download=False)
    files = sorted(photos.glob("*.jpg"))[:3]
    with Image.open(files[0]) as im:
        pil = ImageOps.exif_transpose(im).convert("RGB")
    results = list(tagger.tag([*files, pil, pil], batch_size=2, threshold=0.45))
    assert [r.index for r in results] == [0, 1, 2, 3, 4] and all(r.ok for r in results)
    names = [{t.name for t in r.tags} for r in results]
    assert names[0] and names[3] == names[4] == names[0]
    assert results[0].path == files[0] and results[3].path is None
