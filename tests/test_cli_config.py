"""`ramtag tag --config FILE --set SECTION.KEY=VALUE`: the options a run actually gets, the precedence
(defaults < file < --set < flags given), and one-line usage errors for unknown keys, wrong types and bad
TOML. The run itself is recorded, not done: `api.tag_library` is replaced (no model loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from test_cli import photos, read_jsonl, run_cli, tiny_weights  # noqa: F401 (fixtures)

from ramtag import api, config
from ramtag.errors import UsageError
from ramtag.settings import tag_settings
from ramtag.tags import Vocabulary


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photos" / "a.jpg"
    path.parent.mkdir()
    Image.new("RGB", (32, 24), (200, 100, 50)).save(path)
    return path


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each `ramtag tag` run passed to tag_library; "tagger": the tagger_source arguments."""
    seen: list[dict[str, Any]] = []

    def fake_source(weights: Any = None, **kw: Any) -> SimpleNamespace:
        vocab = Vocabulary(("cat", "dog", "kitten"), (0.5, 0.5, 0.5))
        return SimpleNamespace(weights=weights, vocabulary=vocab, **kw)

    def fake_tag_library(paths: Any, tagger: Any, **kw: Any) -> api.RunSummary:
        seen.append({"tagger": tagger, **kw})
        return api.RunSummary(found=1)

    monkeypatch.setattr(api, "tag_library", fake_tag_library)
    monkeypatch.setattr(api, "tagger_source", fake_source)
    return seen


def _tag(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    code, out, err = run_cli(["tag", *args], monkeypatch, capsys)
    return code, out, err


def test_config_file_and_set_reach_the_run(
    photo: Path,
    tmp_path: Path,
    runs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "ramtag.toml"
    cfg.write_text(
        "[model]\nprecision = 'fp32'\ndevice = 'cpu'\n"
        "[tag]\nthreshold = 0.7\ntop_k = 5\nlang = 'zh'\nrecursive = false\n"
        "[write]\nmode = 'none'\nhierarchy_root = ''\njson_path = '-'\n"
        "[open_set]\ntags = 'corgi, meteor shower=0.6'\nthreshold = 0.4\n",
        encoding="utf-8",
    )
    sets = ["--set", "tag.top_k=3", "--set", "write.sidecar_name=replace", "--set", "open-set.clip=~/c.pt"]
    code, _, err = _tag([str(photo.parent), "--config", str(cfg), *sets], monkeypatch, capsys)
    assert code == 0, err
    (run,) = runs
    opts, wopts = run["options"], run["write"]
    assert (opts.threshold, opts.top_k, opts.lang, opts.recursive) == (0.7, 3, "zh", False)
    assert (wopts.mode, wopts.hierarchy_root, wopts.sidecar_name) == ("none", "", "replace")
    assert wopts.json_path is None  # '-': the CLI prints the JSON Lines to stdout itself
    source = run["tagger"]
    assert source.open_set.tags == "corgi, meteor shower=0.6" and source.open_set.threshold == 0.4
    assert source.open_set.clip == Path("~/c.pt").expanduser()
    assert (source.precision, source.device, source.weights) == ("fp32", "cpu", None)


def test_renames_from_the_file_set_and_flags(
    photo: Path,
    tmp_path: Path,
    runs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TagOptions.rename (a mapping) from a TOML table, from --set, and --rename replacing both."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tag]\nrename = { cat = "Cats", kitten = "Cats" }\n[write]\nmode = "none"\n')
    code, _, err = _tag([str(photo), "--config", str(cfg)], monkeypatch, capsys)
    assert code == 0, err
    assert runs[-1]["options"].rename == {"cat": "Cats", "kitten": "Cats"}
    code, _, err = _tag(
        [str(photo), "--config", str(cfg), "--set", 'tag.rename={dog="hound", cat=""}'], monkeypatch, capsys
    )
    assert code == 0, err
    assert runs[-1]["options"].rename == {"dog": "hound", "cat": ""}
    code, _, err = _tag(
        [str(photo), "--config", str(cfg), "--rename", "dog=Dogs, big", "--rename", "cat="],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert runs[-1]["options"].rename == {"dog": "Dogs, big", "cat": ""}
    n = len(runs)
    code, _, err = _tag(
        [str(photo), "--config", str(cfg), "--set", "tag.rename={kiten='x'}"], monkeypatch, capsys
    )
    assert code == 2 and "tag.rename" in err and "kitten" in err and len(err.strip().splitlines()) == 1, err
    assert len(runs) == n  # a misspelt tag fails before anything runs


def test_flag_beats_set_beats_file_and_defaults_do_not_override(
    photo: Path,
    tmp_path: Path,
    runs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tag]\nthreshold = 0.9\ntop_k = 7\nlang = 'zh'\n[write]\nmode = 'json'\n")
    args = [str(photo), "--config", str(cfg), "--set", "tag.threshold=0.8", "--set", "tag.top_k=2"]
    code, _, err = _tag([*args, "--threshold", "0.6", "--write", "none"], monkeypatch, capsys)
    assert code == 0, err
    opts, wopts = runs[-1]["options"], runs[-1]["write"]
    assert opts.threshold == 0.6 and wopts.mode == "none"  # the flags given
    assert opts.top_k == 2  # --set over the file
    assert opts.lang == "zh"  # the file's: --lang was not given, its default does not override
    # the same key twice with --set: the later one wins
    _tag([str(photo), "--set", "tag.top_k=2", "--set", "tag.top_k=4", "--write", "none"], monkeypatch, capsys)
    assert runs[-1]["options"].top_k == 4


@pytest.mark.parametrize(
    ("toml", "sets", "words"),
    [
        (None, ["tag.treshold=0.5"], ["treshold", "did you mean threshold"]),
        (None, ["tags.top_k=3"], ["unknown section 'tags'", "did you mean tag"]),
        (None, ["top_k=3"], ["SECTION.KEY=VALUE", "tag.top_k=3"]),
        (None, ["tag.top_k=many"], ["top_k", "whole number", "'many'"]),
        (None, ["tag.threshold=1.5"], ["threshold", "from 0.0 to 1.0"]),
        (None, ["tag.lang=fr"], ["lang", "en, zh", "'fr'"]),
        (None, ["model.precision=fp64"], ["precision", "bf16-checked"]),
        (None, ["write.backup"], ["KEY=VALUE"]),
        ("[tag]\ntop_k = 'five'\n", [], ["c.toml [tag]", "top_k", "whole number"]),
        ("[tag]\ntopk = 5\n", [], ["c.toml [tag]", "did you mean top_k"]),
        ("threshold = 0.5\n", [], ["c.toml", "'threshold' is not in a section", "[tag]"]),
        ("[tag\nthreshold = 0.5\n", [], ["c.toml", "not a valid config file"]),
        ("[write]\nmode = 'bogus'\n", [], ["mode", "bogus", "xmp"]),
    ],
)
def test_bad_settings_are_one_line_usage_errors(
    toml: str | None,
    sets: list[str],
    words: list[str],
    photo: Path,
    tmp_path: Path,
    runs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(photo)]
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        args += ["--config", str(tmp_path / "c.toml")]
    for s in sets:
        args += ["--set", s]
    code, _, err = _tag(args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not runs  # nothing ran


def test_a_missing_config_file_names_it(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _tag([str(photo), "--config", str(tmp_path / "nope.toml")], monkeypatch, capsys)
    assert code == 1 and "nope.toml" in err and "--config" in err and len(err.strip().splitlines()) == 1


def test_a_real_run_follows_the_config_file(
    tiny_weights: str,  # noqa: F811
    photos: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """End to end on the tiny official-format checkpoint: the file's weights, precision, threshold and
    write mode are the run's; a flag given beside it wins."""
    cfg = tmp_path / "ramtag.toml"
    out = tmp_path / "tags.jsonl"
    cfg.write_text(
        f"[model]\nweights = '{tiny_weights}'\nprecision = 'fp32'\ndevice = 'cpu'\n"
        "[tag]\ntop_k = 2\nthreshold = 0.0\n"
        f"[write]\nmode = 'json'\njson_path = '{out.as_posix()}'\n",
        encoding="utf-8",
    )
    code, _, err = run_cli(["tag", str(photos), "--config", str(cfg), "--top-k", "3"], monkeypatch, capsys)
    assert code == 0, err
    rows = read_jsonl(out)
    assert len(rows) == 12
    assert all(len(r["tags"]) == 3 for r in rows)  # threshold 0 from the file; --top-k 3 over its 2
    assert not list(photos.glob("*.xmp"))  # mode json: no sidecars


@dataclass
class _Deciding:
    """A stand-in with a mapping field, as TagOptions.rename will be (OLD -> NEW tag names)."""

    rename: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    limit: int | None = None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{dog="hound", "sea lion"="seal"}', {"dog": "hound", "sea lion": "seal"}),
        ("dog=hound,cat=kitty", {"dog": "hound", "cat": "kitty"}),
        ("{}", {}),
    ],
)
def test_a_mapping_field_takes_a_toml_table_from_set(text: str, want: dict[str, str]) -> None:
    assert config.check_values(_Deciding, {"rename": text}, "--set", texts=True) == {"rename": want}


def test_values_are_checked_by_type_generically() -> None:
    check = config.check_values
    assert check(_Deciding, {"rename": {"a": "b"}}, "f") == {"rename": {"a": "b"}}  # from a TOML file
    assert check(_Deciding, {"names": '["a", "b"]', "limit": "none"}, "s", texts=True) == {
        "names": ["a", "b"],
        "limit": None,
    }
    with pytest.raises(UsageError, match="rename takes a table of text to text"):
        check(_Deciding, {"rename": ["dog"]}, "f")
    with pytest.raises(UsageError, match="rename takes a table"):
        check(_Deciding, {"rename": "{dog = 1}"}, "s", texts=True)
    with pytest.raises(UsageError, match="limit takes a whole number or none"):
        check(_Deciding, {"limit": "1\ny = 2"}, "s", texts=True)  # one value, never two keys


def test_tag_settings_from_python(tmp_path: Path) -> None:
    """The library call the CLI makes, usable on its own; flags are typed values over both."""
    cfg = tmp_path / "c.json"
    cfg.write_text('{"tag": {"top_k": 5, "threshold": 0.3}, "model": {"weights": "my-ram"}}')
    s = tag_settings(cfg, ["tag.threshold=0.4", "write.hierarchy_root=''"], {"tag.top_k": 9})
    assert (s.tag.top_k, s.tag.threshold, s.model.weights, s.write.hierarchy_root) == (9, 0.4, "my-ram", "")
    assert tag_settings().tag == api.TagOptions() and not tag_settings().json_to_stdout


def test_a_mistyped_api_key_setting_is_refused_without_echoing_the_key() -> None:
    """Secrets never reach a terminal or log: the error names the setting, not its value."""
    from ramtag.settings import tag_settings

    with pytest.raises(UsageError) as info:
        tag_settings(sets=["open_set.llm_api_ky=sk-secret-123"])
    assert "llm_api_ky" in str(info.value) and "sk-secret-123" not in str(info.value)
