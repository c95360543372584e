"""`ramtag train --recipe/--set` option building, and the reports' tables: fit the terminal, or plain
tab-separated rows when stdout is not a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from test_cli import run_cli

from ramtag.cli.common import show
from ramtag.cli.render import dry_run_report, eval_report, train_result

torch = pytest.importorskip("torch")


def _reports(tmp_path: Path) -> list:
    from ramtag.training.evaluate import EvalReport
    from ramtag.training.metrics import split_metrics
    from ramtag.training.trainer import DryRunReport, TrainResult

    s = torch.tensor([[0.9, 0.2], [0.1, 0.8]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    split = split_metrics("test", ["dog", "sky"], s, y, torch.tensor([0.5, 0.5]))
    dry = DryRunReport(
        1,
        {"train": 1},
        2,
        ["sky"],
        [("dog", 1)],
        [{"image": "a.png", "captions": ["a dog"], "parsed_tags": ["dog"], "tags": ["dog"]}],
        0,
        {},
        [],
    )
    return [
        *eval_report(EvalReport("w", 2, [split], unknown_tags={"unicorn": 2})),
        *dry_run_report(dry),
        *train_result(TrainResult(tmp_path, 3, 1.0, 1, 0, 2, ["sky"], {"loss": 1.5})),
    ]


def test_reports_on_a_terminal_are_tables_that_fit(tmp_path: Path) -> None:
    console = Console(record=True, width=60, force_terminal=True, file=io.StringIO())
    show(_reports(tmp_path), console)
    text = console.export_text()
    assert "100.0" in text and "unicorn" in text and "trained 3 steps" in text
    assert "┃" in text or "│" in text  # a rich table
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "…" not in text  # columns fold, nothing is cut off


def test_reports_piped_are_plain_tab_separated_rows(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False)
    show(_reports(tmp_path), console)
    lines = buf.getvalue().splitlines()
    assert "split\timages\tskipped\ttags\tmAP\tP\tR\tF1\tmacro P\tmacro R\tmacro F1" in lines
    row = next(line for line in lines if line.startswith("test\t"))
    assert row.split("\t")[4] == "100.0"  # mAP, whole, at any width
    assert "image\tcaption\tparsed tags\tall tags" in lines
    assert not any(c in buf.getvalue() for c in "┃│━…\x1b")
    assert any(line.startswith("trained 3 steps") for line in lines)


def test_recipe_and_set_build_train_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """recipe < --set < flags, each value converted to the TrainOptions field's type."""
    import ramtag.training as training
    from ramtag.training import TrainOptions, TrainResult

    recipe = tmp_path / "r.toml"
    recipe.write_text('lr = 1e-4\nbatch_size = 4\nepochs = 3\naugment = "flip"\ngrad_checkpointing = false\n')
    seen: list[TrainOptions] = []

    def fake_train(opts: TrainOptions, progress: object = None) -> TrainResult:  # records; trains nothing
        seen.append(opts)
        return TrainResult(opts.out, 2, 1.0, 6, 0, 40, [], {"loss": 0.5})

    monkeypatch.setattr(training, "train", fake_train)
    args = ["train", "--recipe", str(recipe), "--data", "photos/", "--data", "val=v.jsonl"]
    args += ["--out", str(tmp_path / "o"), "--set", "grad_checkpointing=true", "--set", "image-size=224"]
    args += [
        "--set",
        "max_grad_norm=none",
        "--set",
        "clip=~/clip.pt",
        "--set",
        "batch_size=6",
        "--lr",
        "2e-5",
    ]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    (opts,) = seen
    assert opts.data == ["photos/", "val=v.jsonl"] and opts.out == tmp_path / "o"
    assert opts.lr == 2e-5  # the flag over the recipe
    assert opts.batch_size == 6 and opts.epochs == 3.0 and opts.augment == "flip"  # --set / recipe
    assert opts.grad_checkpointing is True and opts.image_size == 224 and opts.max_grad_norm is None
    assert opts.clip == Path("~/clip.pt").expanduser()
    assert "trained 2 steps" in out


def test_recipe_values_are_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('batch_size = "many"\n')
    code, _, err = run_cli(
        ["train", "--recipe", str(recipe), "--data", "d", "--out", "o"], monkeypatch, capsys
    )
    assert code == 2 and "bad.toml" in err and "batch_size" in err and len(err.strip().splitlines()) == 1
    recipe.write_text("learning_rate = 1e-4\n")
    code, _, err = run_cli(
        ["train", "--recipe", str(recipe), "--data", "d", "--out", "o"], monkeypatch, capsys
    )
    assert code == 2 and "learning_rate" in err and len(err.strip().splitlines()) == 1


def test_train_progress_is_plain_lines_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ramtag.cli.progress import TrainBar

    bar = TrainBar()
    monkeypatch.setattr(TrainBar, "EVERY", 0.0)
    bar.start(10, 4)
    bar.update(5, "loss 0.5  lr 1.00e-05")
    bar.close()
    err = capsys.readouterr().err
    assert "train: 10 steps, starting at 4" in err and "train: step 5/10  loss 0.5" in err
    assert "\x1b" not in err
