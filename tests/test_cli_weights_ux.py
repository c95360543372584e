"""Issue 13 point 1: CLIP ViT-B/16 is a registry entry; downloads, listing and offline messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _fake_hub import COMMIT, FakeHub, serving
from fake_llm_server import FakeLLM, fake_llm  # noqa: F401
from test_cli import photos, run_cli, tiny_weights  # noqa: F401  (fixtures)
from test_weights import FILES, NAME, REPO, _tiny_spec

from ramtag import registry, weights
from ramtag.cli import progress
from ramtag.registry import DEFAULT_TEXT_ENCODER

CLIP = registry.TEXT_ENCODERS[DEFAULT_TEXT_ENCODER].file


@pytest.fixture
def hub_with_clip(parity_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake Hub serving the tiny RAM++ (registered as the default) and CLIP at the registry's place."""
    monkeypatch.setitem(registry.WEIGHTS, NAME, _tiny_spec(parity_dir))
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", NAME)
    monkeypatch.setattr(registry, "DEFAULT_SETUP", (NAME, DEFAULT_TEXT_ENCODER))
    monkeypatch.setattr(weights, "DEFAULT_SETUP", (NAME, DEFAULT_TEXT_ENCODER))
    with serving(monkeypatch) as fake:
        fake.add_hub_file(REPO, "ram_plus_tiny.pth", (parity_dir / "ram_plus_tiny_official.pth").read_bytes())
        for name in FILES:
            fake.add_raw(f"ramtag-tests/data/{COMMIT}/{name}", (parity_dir / name).read_bytes())
        fake.add_hub_file(
            CLIP.repo_id, CLIP.filename, (parity_dir / "clip_tiny_openai_format.pt").read_bytes()
        )
        yield fake


def test_download_list_and_remove_clip(
    hub_with_clip: FakeHub,
    parity_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["weights", "list"], monkeypatch, capsys)
    assert code == 0 and "clip-vit-b-16  not downloaded (about 600.0 MB)" in out
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # stderr is not a terminal here: plain lines
    code, _, err = run_cli(["weights", "download", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 0, err
    assert "downloading open_clip_model.safetensors (6.9 MB)" in err, err
    assert "MB/s, ETA" in err and "downloaded open_clip_model.safetensors (6.9 MB)" in err
    assert f"/{CLIP.repo_id}/resolve/main/{CLIP.filename}" in {r.path for r in hub_with_clip.requests}
    size = (parity_dir / "clip_tiny_openai_format.pt").stat().st_size
    code, out, _ = run_cli(["weights", "list"], monkeypatch, capsys)
    assert f"clip-vit-b-16  installed ({size / 1e6:.1f} MB)" in out
    code, _, err = run_cli(["weights", "remove", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 0, err
    code, out, _ = run_cli(["weights", "list"], monkeypatch, capsys)
    assert "clip-vit-b-16  not downloaded" in out


def test_download_all_fetches_the_default_setup(
    hub_with_clip: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["weights", "download", "--all"], monkeypatch, capsys)
    assert code == 0, err
    assert f"ready: {NAME}" in err and "ready: clip-vit-b-16" in err
    code, out, _ = run_cli(["weights", "list"], monkeypatch, capsys)
    assert out.count("  installed (") == 2, out
    code, _, err = run_cli(["weights", "download", "clip-vit-b-16", "--all"], monkeypatch, capsys)
    assert code == 2


def test_offline_messages_name_files_urls_import_clip_and_mirror(
    photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAMTAG_OFFLINE", "1")
    spec = registry.WEIGHTS[registry.DEFAULT_WEIGHTS]
    code, _, err = run_cli(["tag", str(photos)], monkeypatch, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    for needed in (
        spec.checkpoint.filename,
        f"https://huggingface.co/{spec.checkpoint.repo_id}/resolve/main/{spec.checkpoint.filename}",
        spec.tag_list.url,
        spec.thresholds.url,
        "ramtag weights import",
        "--clip",
        "HF_ENDPOINT",
    ):
        assert needed in err, needed
    code, _, err = run_cli(["weights", "download", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 1
    for needed in (CLIP.filename, f"/{CLIP.repo_id}/resolve/main/", "--clip", "HF_ENDPOINT"):
        assert needed in err, needed


@pytest.mark.parametrize("model", [["--llm-model", "m"], []], ids=["model-given", "model-asked"])
def test_open_set_checks_clip_before_any_llm_call(
    tiny_weights: str,
    photos: Path,
    fake_llm: FakeLLM,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    model: list[str],
) -> None:
    """Every local check comes before the first request, GET /models (finding the model) included."""
    fake_llm.models = ["m"]
    monkeypatch.setenv("RAMTAG_OFFLINE", "1")
    args = ["tag", str(photos), "--weights", tiny_weights, "--open-set", "corgi,meteor shower"]
    code, _, err = run_cli([*args, "--llm-base-url", fake_llm.url, *model], monkeypatch, capsys)
    assert code == 1 and "clip-vit-b-16" in err and "--clip" in err, err
    assert fake_llm.hits == 0
    monkeypatch.delenv("RAMTAG_OFFLINE")
    code, _, err = run_cli(
        [*args, "--clip", str(photos / "no-clip.pt"), "--llm-base-url", fake_llm.url, *model],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "no-clip.pt: CLIP weights file not found; check --clip" in err, err
    assert fake_llm.hits == 0
    for bad in (["--open-set", ",,,,"], ["--open-set", "corgi", "--descriptions", str(photos / "none.json")]):
        code, _, err = run_cli([*args[:4], *bad, "--llm-base-url", fake_llm.url, *model], monkeypatch, capsys)
        assert code in (1, 2) and "Traceback" not in err, err
        assert fake_llm.hits == 0, (bad, err)


def test_tags_of_registry_weights_need_only_the_tag_files(
    hub_with_clip: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["tags", "abacus"], monkeypatch, capsys)
    assert code == 0, err
    assert out.splitlines()[2].startswith("abacus\t算盘\t")
    fetched = {r.path for r in hub_with_clip.requests}
    assert not [p for p in fetched if p.endswith(".pth")]  # the checkpoint was not downloaded


def test_import_clip_offline_then_open_set_uses_it(
    tiny_weights: str,
    photos: Path,
    parity_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Offline: bring the CLIP file, `weights import` it under the registry name, tag without --clip."""
    import shutil

    monkeypatch.setenv("RAMTAG_OFFLINE", "1")
    wrong = parity_dir / "ram_plus_tiny_official.pth"
    code, _, err = run_cli(["weights", "import", str(wrong), "--name", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 1 and "ram_plus_tiny_official.pth: not an OpenAI-format CLIP" in err, err
    brought = tmp_path / "open_clip_model.pt"
    shutil.copy(parity_dir / "clip_tiny_openai_format.pt", brought)
    code, _, err = run_cli(
        ["weights", "import", str(brought), "--name", "clip-vit-b-16"], monkeypatch, capsys
    )
    assert code == 0, err
    code, out, _ = run_cli(["weights", "list"], monkeypatch, capsys)
    assert "clip-vit-b-16  installed (6.9 MB)" in out
    desc = parity_dir / "openset_descriptions.json"
    args = [
        "tag",
        str(photos / "hubble_deep_field.jpg"),
        "--weights",
        tiny_weights,
        "--descriptions",
        str(desc),
    ]
    code, _, err = run_cli([*args, "--write", "none", "--precision", "fp32"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["weights", "import", str(tmp_path / "x.pt"), "--name", "clip-vit-b-16"], monkeypatch, capsys
    )
    assert code == 1 and "already imported" in err
    code, _, err = run_cli(["weights", "remove", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 0, err
    # --force: the catalog already holds these scores, and an unchanged re-run needs neither model nor CLIP
    code, _, err = run_cli([*args, "--write", "none", "--force"], monkeypatch, capsys)
    assert code == 1 and "weights import open_clip_model.safetensors --name clip-vit-b-16" in err, err


def test_a_trickling_hub_is_one_line_and_the_next_run_resumes(
    hub_with_clip: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ramtag weights download` from a Hub that sends a byte now and then: cut below the rate floor, a
    bounded number of tries, one line (no traceback), the partial file kept; the next run resumes it."""
    import time

    from ramtag import hub

    monkeypatch.setattr(hub, "_STALL_SECONDS", 0.3)
    monkeypatch.setattr(hub, "_MIN_RATE", 1000)
    sleep = time.sleep  # (one function for the whole process: the server's trickle pauses use it too)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: sleep(seconds) if seconds < 0.5 else None)
    path = f"/{CLIP.repo_id}/resolve/main/{CLIP.filename}"
    hub_with_clip.trickle[path] = 0.01
    code, _, err = run_cli(["weights", "download", "clip-vit-b-16"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if "server too slow" in line]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert CLIP.filename in lines[0] and "stopped after 3 attempts; re-run to resume" in lines[0]
    assert err.count(f"stopped {CLIP.filename} at 0.0 of 6.9 MB") == 3  # no "downloaded" for a failed try
    assert f"downloaded {CLIP.filename}" not in err
    del hub_with_clip.trickle[path]
    code, _, err = run_cli(["weights", "download", "clip-vit-b-16"], monkeypatch, capsys)
    assert code == 0, err
    assert hub_with_clip.ranges()[-1].startswith("bytes=") and hub_with_clip.ranges()[-1] != "bytes=0-"
