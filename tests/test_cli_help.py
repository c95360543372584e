"""`ramtag --help` and usage errors (issue 13 point 8): every option explained with its default, flags
without type noise, examples, one-line usage errors with exit code 2; the --write choices come from
the writers registry. None of these load a model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from conftest import REPO
from test_cli import run_cli
from typer.testing import CliRunner

from ramtag.cli import app
from ramtag.writers import WRITERS


def _commands() -> Iterator[tuple[str, object]]:
    """(path, click command) for every command of the tree, groups included."""
    root = typer.main.get_command(app)

    def walk(path: str, cmd: object) -> Iterator[tuple[str, object]]:
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(f"{path} {name}".strip(), sub)

    yield from walk("", root)


COMMANDS = [path for path, _ in _commands()]
LEAVES = [path for path, cmd in _commands() if not getattr(cmd, "commands", None)]


def test_the_tree_has_every_command() -> None:
    assert set(LEAVES) >= {"tag", "untag", "describe", "bench", "train", "eval", "weights list"}


@pytest.mark.parametrize("path", COMMANDS)
def test_every_option_has_help_and_a_default(path: str) -> None:
    cmd = dict(_commands())[path]
    for p in cmd.params:  # type: ignore[attr-defined]
        if p.param_type_name == "argument":
            assert p.help, f"{path} {p.name}: argument without help"
            continue
        assert p.help, f"`ramtag {path}` {p.opts[0]}: no help text"
        if not p.required and not p.is_eager:
            shows = (p.show_default is True and p.default is not None) or isinstance(p.show_default, str)
            assert shows, f"`ramtag {path}` {p.opts[0]}: default not shown"


@pytest.mark.parametrize("path", COMMANDS)
def test_help_reads_well(path: str) -> None:
    """At 100 columns: flags without <bool>, every command ends with examples, nothing cut off."""
    res = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "100"}, terminal_width=100)
    assert res.exit_code == 0, res.output
    text = res.output
    assert "<bool>" not in text and "<list[" not in text
    assert "Examples:" in text and "ramtag" in text.rstrip().splitlines()[-1]
    assert "…" not in text  # no help text cut off
    cmd = dict(_commands())[path]
    for p in cmd.params:  # type: ignore[attr-defined]
        if getattr(p, "is_flag", False) and not p.is_eager:
            assert p.secondary_opts, f"`ramtag {path}` {p.opts[0]}: a flag reads as --flag/--no-flag"
            assert f"--no-{p.opts[0].removeprefix('--no-').removeprefix('--')}" in text


def test_no_argument_is_help_not_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, err = run_cli(["weights"], monkeypatch, capsys)
    assert "Usage" in out + err and "error" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tag", "x.jpg", "--write", "bogus"], ["--write", "bogus", "xmp", "tag --help"]),
        (["tag"], ["PATH"]),
        (["tag", "x.jpg", "--threshold", "2"], ["--threshold"]),
        (["tag", "x.jpg", "--bogus"], ["--bogus"]),
        (["bench", "--size", "abc"], ["--size", "WxH"]),
        (["train", "--set", "arch=tiny"], ["--data", "--out"]),
        (
            ["train", "--set", "batchsize=1", "--data", "d", "--out", "o"],
            ["batchsize", "did you mean batch_size"],
        ),
        (["train", "--set", "lr=fast", "--data", "d", "--out", "o"], ["lr", "number", "'fast'"]),
        (["train", "--set", "batch_size=2.5", "--data", "d", "--out", "o"], ["batch_size", "whole number"]),
        (["train", "--set", "resume=maybe", "--data", "d", "--out", "o"], ["resume", "true/false"]),
        (["train", "--set", "lr", "--data", "d", "--out", "o"], ["KEY=VALUE"]),
        (["train", "--set", "lr=1e-4", "--lr", "1e-5", "--data", "d", "--out", "o"], ["lr", "keep one"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Value error" not in err and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_unknown_weights_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAMTAG_HOME", str(tmp_path / "home"))
    (tmp_path / "a.jpg").write_bytes(b"")
    code, _, err = run_cli(
        ["tag", str(tmp_path / "a.jpg"), "--weights", "no-such-weights"], monkeypatch, capsys
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "unknown weights 'no-such-weights'" in lines[0]
    code, _, err = run_cli(["weights", "download", "no-such-weights"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_library_errors_show_a_traceback_only_with_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAMTAG_HOME", str(tmp_path / "home"))
    args = ["train", "--recipe", str(tmp_path / "missing.toml"), "--data", "d", "--out", "o"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 1 and "missing.toml" in err and "Traceback" not in err
    code, _, err = run_cli([*args, "-v"], monkeypatch, capsys)
    assert code == 1 and "missing.toml" in err and "Traceback" in err


def test_write_choices_come_from_the_writers_registry() -> None:
    """A new output format is one registry entry: the CLI's --write choices and help follow it."""
    from ramtag.cli.common import WriteMode

    assert [m.value for m in WriteMode] == list(WRITERS)
    code = (
        "from ramtag.writers import WRITERS, WriterEntry, make_writer, NullWriter\n"
        "WRITERS['csv'] = WriterEntry(lambda s: NullWriter(), 'comma-separated values')\n"
        "assert isinstance(make_writer('csv'), NullWriter)\n"
        "import sys; from ramtag.cli import main\n"
        "sys.argv = ['ramtag', 'tag', '--help']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "xmp|embed|json|none|csv" in res.stdout and "csv: comma-separated values" in res.stdout
