"""Issue 13 through the `ramtag` command: early checks, progress and summary, dry runs, Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import photos, run_cli, tiny_weights  # noqa: F401  (fixtures)

from ramtag import api
from ramtag.cli import progress

TAG = ["--precision", "fp32", "--batch-size", "4"]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the model fails the test: these checks must come first."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(api, "load_tagger", fail)


# ------------------------------------------------------------------- 2: checked before the model loads


def test_bad_path_fails_before_the_model_loads(
    tiny_weights: str,
    photos: Path,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    t0 = time.perf_counter()
    code, _, err = run_cli(
        ["tag", str(photos), str(photos / "typo"), "--weights", tiny_weights], monkeypatch, capsys
    )
    assert code == 2 and "typo: no such file or folder" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 5  # no model; in practice well under a second


def test_empty_selection_says_what_was_there(
    tiny_weights: str,
    tmp_path: Path,
    no_model: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "clip.mov", "photo.jpg.xmp"):
        (folder / name).write_text("x")
    code, _, err = run_cli(["tag", str(folder), "--weights", tiny_weights], monkeypatch, capsys)
    assert code == 1 and "no images to tag" in err
    assert "3 files that are not images (.txt, .mov)" in err


@pytest.mark.parametrize(
    ("extra", "expected", "exit_code"),
    [
        (["--catalog", "/nonexistent-dir/catalog.sqlite"], "no such folder for the catalog", 1),
        (["--json", "/nonexistent-dir/tags.jsonl"], "no such folder for the JSON Lines file", 1),
        (["--open-set", "corgi=2"], "outside [0, 1]", 2),
        (["--weights", "no-such-weights"], "unknown weights 'no-such-weights'", 2),
    ],
)
def test_bad_options_fail_before_the_model_loads(
    tiny_weights: str,
    photos: Path,
    no_model: None,
    extra: list[str],
    expected: str,
    exit_code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["tag", str(photos), "--weights", tiny_weights, *extra]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == exit_code and expected in err, err


# --------------------------------------------------------------------------- 3: progress and summary


def test_summary_explains_written_no_tags_and_not_images(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "notes.txt").write_text("x")
    (photos / "clip.mov").write_bytes(b"x")
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # stderr is not a terminal here: plain lines
    code, _, err = run_cli(
        ["tag", str(photos), "--weights", tiny_weights, "--threshold", "1.0", *TAG], monkeypatch, capsys
    )
    assert code == 0, err
    assert "12 images found, 12 tagged" in err
    assert "0 written, 12 with no tag above threshold (nothing written, no sidecar)" in err
    assert "skipped 2 files that are not images (.mov, .txt)" in err
    assert "tagging: 12/12 images" in err and "images/s, ETA" in err
    assert not list(photos.glob("*.xmp"))
    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    # only the threshold changed: decided again from the catalog's scores, no model
    assert code == 0 and "12 images found, 0 tagged, 12 re-decided from the catalog" in err
    written = len(list(photos.glob("*.xmp")))
    assert f"{written} written" in err


def test_ctrl_c_writes_what_is_done_and_a_rerun_resumes(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_tag = api.Tagger.tag

    def interrupted_after_five(
        self: api.Tagger, items: Any, *args: Any, **kwargs: Any
    ) -> Iterator[api.ImageTags]:
        for i, res in enumerate(real_tag(self, items, *args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield res

    with monkeypatch.context() as m:
        m.setattr(api.Tagger, "tag", interrupted_after_five)
        code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    assert code == 130
    assert "interrupted: 5 done, 7 left; what was done is saved, re-run the same command to resume" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    assert code == 0 and "7 tagged" in err and "5 unchanged since the last run" in err


def test_ctrl_c_while_re_deciding_counts_what_was_re_decided(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ramtag.library import BackgroundWriter

    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    assert code == 0 and "12 tagged" in err
    real_put = BackgroundWriter.put
    calls = []

    def interrupted_at_six(self: BackgroundWriter, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        real_put(self, *args, **kwargs)

    new = ["--threshold", "0.5"]
    with monkeypatch.context() as m:
        m.setattr(BackgroundWriter, "put", interrupted_at_six)
        code, _, err = run_cli(
            ["tag", str(photos), "--weights", tiny_weights, *TAG, *new], monkeypatch, capsys
        )
    assert code == 130 and "5 re-decided from the catalog" in err
    assert "interrupted: 5 done, 7 left; what was done is saved, re-run the same command to resume" in err
    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG, *new], monkeypatch, capsys)
    assert code == 0 and "7 re-decided from the catalog" in err and "5 unchanged since the last run" in err


def test_plain_progress_line_has_rate_and_labelled_eta() -> None:
    p = progress.PlainProgress("tagging", every=3600)
    p.start -= 10
    p.update(20, 120)
    assert p.line().startswith("tagging: 20/120 images, 2.0 images/s, ETA 0:50")


# --------------------------------------------------------------------------------------- 4: dry run


def test_dry_run_lists_each_image_once_and_only_real_writes(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted(p.name for p in photos.iterdir())
    code, out, err = run_cli(
        ["tag", str(photos), "--weights", tiny_weights, "--dry-run", *TAG], monkeypatch, capsys
    )
    assert code == 0, err
    assert not list(photos.glob("*.xmp"))
    for name in images:
        assert sum(name in line for line in out.splitlines()) == 1, (name, out)
    would = {line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("would write")}
    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    assert code == 0
    assert would == {str(p) for p in photos.glob("*.xmp")}  # exactly what the real run wrote
    code, out, err = run_cli(
        ["tag", str(photos), "--weights", tiny_weights, "--dry-run", "--force", *TAG], monkeypatch, capsys
    )
    assert code == 0 and "would write" not in out
    assert all(line.startswith("would not write") for line in out.splitlines() if line.strip())


# ------------------------------------------------------------------------------- 7: ramtag tags


def test_tags_lists_and_searches_the_vocabulary(
    tiny_weights: str, parity_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    names = (parity_dir / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    code, out, _ = run_cli(["tags", "--weights", tiny_weights], monkeypatch, capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "# 40 tags" and lines[1] == "name\tChinese\tthreshold"
    assert [line.split("\t")[0] for line in lines[2:]] == names
    assert "accessory\t附件\t0.80" in lines
    code, out, _ = run_cli(["tags", "ABA", "--weights", tiny_weights], monkeypatch, capsys)
    assert [line.split("\t")[0] for line in out.splitlines()[2:]] == ["abacus", "abalone"]
    code, out, _ = run_cli(["tags", "算盘", "--weights", tiny_weights], monkeypatch, capsys)
    assert out.splitlines()[2].startswith("abacus\t")
    code, out, _ = run_cli(["tags", "accesory", "--weights", tiny_weights], monkeypatch, capsys)
    assert "close spellings" in out and out.splitlines()[2].startswith("accessory\t")
    code, out, _ = run_cli(["tags", "zzzzqqq", "--weights", tiny_weights], monkeypatch, capsys)
    assert code == 1 and "none is spelled close" in out


def test_tags_says_which_open_set_names_are_built_in(
    tiny_weights: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["tags", "--weights", tiny_weights, "--open-set", "Accessory, corgi=0.6, acessory"],
        monkeypatch,
        capsys,
    )
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()[2:]}
    assert code == 0
    assert rows["Accessory"][:2] == ["yes: uses the built-in tag", "0.80"]
    assert rows["corgi"][0].startswith("no")
    assert rows["acessory"][0].startswith("no") and rows["acessory"][2] == "accessory"


def test_tags_needs_no_torch(tiny_weights: str) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import sys; sys.modules['torch'] = None; from ramtag.cli.app import main;"
        "main(['tags', 'abalone', '--weights', 'tiny-official'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "abalone\t鲍鱼\t0.65" in res.stdout


def test_bench_tells_its_phases_when_not_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.2)
    args = [
        "bench",
        "--arch",
        "tiny",
        "--images",
        "2",
        "--size",
        "384",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    args += ["--no-reference", "--no-decode-check", "--out", str(tmp_path / "bench.json")]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "bench: preparing 2 images (" in err
    assert "bench: ramtag end to end (" in err and "bench: stages one by one (" in err


def test_terminal_bar_has_rate_and_eta_and_lines_above_it(
    tiny_weights: str, photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from rich.console import Console

    screen = io.StringIO()
    term = Console(file=screen, force_terminal=True, width=100)
    stdout = Console(file=screen, force_terminal=True, width=100, highlight=False)
    monkeypatch.setattr(progress, "err", term)
    monkeypatch.setattr(progress, "out", stdout)
    code, _, err = run_cli(["tag", str(photos), "--weights", tiny_weights, *TAG], monkeypatch, capsys)
    assert code == 0, err
    text = screen.getvalue()
    assert "images/s" in text and "ETA" in text and "tagging" in text
    assert "hubble_deep_field.jpg" in text  # the per-image line went through the bar's console
