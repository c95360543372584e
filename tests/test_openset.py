"""Open-set tags end to end: parsing, descriptions (file / LLM / cache / templates), embeddings, merging,
and faithfulness to the official open-set procedure on the tiny RAM++ and tiny CLIP."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_llm_server import FakeLLM, closed_port_url, fake_llm  # noqa: F401
from PIL import Image, ImageOps

from ramtag.errors import InputError, LLMError, UsageError
from ramtag.tags.vocab import Vocabulary
from ramtag.text.cache import TextCache
from ramtag.text.clip import ClipTextEncoder
from ramtag.text.describe import load_descriptions
from ramtag.text.llm import LLMClient, LLMSettings
from ramtag.text.openset import (
    OpenSetTag,
    build_open_set,
    combine,
    describe_tags,
    embed_templates,
    parse_open_set,
)
from ramtag.text.templates import TEMPLATES, fill_templates

SECRET = "sk-test-SECRET123"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_clip_file(parity_dir: Path) -> Path:
    return parity_dir / "clip_tiny_openai_format.pt"


@pytest.fixture(scope="module")
def builtin(parity_dir: Path) -> Vocabulary:
    return Vocabulary.from_files(
        parity_dir / "tag_list.txt", parity_dir / "thresholds.txt", parity_dir / "tag_list_chinese.txt"
    )


def llm_settings(fake: FakeLLM, **kw: object) -> LLMSettings:
    return LLMSettings(base_url=fake.url, model="fake-model", api_key=SECRET, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- parsing
def test_parse_open_set_spec_and_file(tmp_path: Path) -> None:
    f = tmp_path / "tags.txt"
    f.write_text("# my tags\nmeteor shower = 0.7  # sky\n\n  trampolining\nCORGI=0.9\nhot-air  balloon\n")
    tags = parse_open_set(" corgi , Meteor Shower=0.3,,", f, default_threshold=0.55)
    assert tags == [
        OpenSetTag("corgi", 0.55),
        OpenSetTag("Meteor Shower", 0.3, explicit_threshold=True),
        OpenSetTag("trampolining", 0.55),
        OpenSetTag("hot-air balloon", 0.55),
    ]
    assert parse_open_set(None, None) == []
    assert parse_open_set("x")[0].threshold == 0.5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("cat=high", "threshold 'high' of 'cat' is not a number"),
        ("cat=1.5", "threshold 1.5 of 'cat' is outside"),
        ("=0.3", "has no tag name"),
    ],
)
def test_parse_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "tags.txt"
    f.write_text(f"dog\n# comment\n{line}\n")
    with pytest.raises(UsageError, match=message) as e:
        parse_open_set(None, f)
    assert str(e.value).startswith(f"{f}:3: ")
    with pytest.raises(UsageError, match=r"^--open-set: "):
        parse_open_set(line, None)


@pytest.mark.parametrize("spec", [",,,,", " , ,", "   "])
def test_open_set_naming_no_tag_is_a_usage_error(spec: str, tmp_path: Path) -> None:
    # issue 12 case 8: `--open-set ",,,," --only-open-set` crashed with a traceback
    with pytest.raises(UsageError, match=r"^--open-set '.*' names no tag; write e.g."):
        parse_open_set(spec, None)
    empty = tmp_path / "tags.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(UsageError, match="names no tag"):
        parse_open_set(None, empty)


@pytest.mark.parametrize("name", ["bad\x1b[31mtag", "nul\x00tag", "rtl\u202etag", "x" * 201])
def test_tag_names_that_cannot_be_written_are_refused(name: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_open_set(name, None)
    assert "\x1b" not in str(e.value) and "\u202e" not in str(e.value) and "\n" not in str(e.value)


def test_parse_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="open-set tag file not found"):
        parse_open_set(None, tmp_path / "nope.txt")


# ------------------------------------------------------------------------ descriptions file + faithfulness
def test_descriptions_file_reproduces_the_official_label_embed(
    parity_dir: Path, tiny_clip_file: Path, builtin: Vocabulary
) -> None:
    tags = parse_open_set("corgi,meteor shower,trampolining", None)
    result = build_open_set(
        tags,
        descriptions_file=parity_dir / "openset_descriptions.json",
        clip_file=tiny_clip_file,
        vocabulary=builtin,
    )
    ref = np.load(parity_dir / "openset_label_embed.npy").reshape(3, 51, 512)
    assert result.label_embed.dtype == torch.float32 and tuple(result.label_embed.shape) == (3, 51, 512)
    assert np.abs(result.label_embed.numpy() - ref).max() < 1e-5
    assert result.vocabulary_extension.names == ("corgi", "meteor shower", "trampolining")
    assert result.vocabulary_extension.thresholds == (0.5, 0.5, 0.5)
    assert result.vocabulary_extension.open_set == (True, True, True)
    assert result.sources == {"corgi": "file", "meteor shower": "file", "trampolining": "file"}
    assert result.reused_builtin == [] and result.warnings == []


@pytest.fixture(scope="module")
def tiny_ram(parity_dir: Path) -> torch.nn.Module:
    from ramtag.model import RamPlus
    from ramtag.model.convert import (
        convert_official_state_dict,
        infer_official_config,
        load_state_dict_strict,
        read_official_checkpoint,
    )

    sd = read_official_checkpoint(parity_dir / "ram_plus_tiny_official.pth")
    config = infer_official_config(sd)
    model = RamPlus(config).eval()
    load_state_dict_strict(model, convert_official_state_dict(sd, config))
    return model


@pytest.mark.parametrize("variant", ["images", "images_exif_transposed"])
def test_open_set_scores_match_the_official_code(
    parity_dir: Path, tiny_clip_file: Path, builtin: Vocabulary, tiny_ram: torch.nn.Module, variant: str
) -> None:
    from ramtag.preprocess import make_transform
    from ramtag.weights_format import OFFICIAL_PREPROCESSING

    tags = parse_open_set("corgi,meteor shower,trampolining", None)
    opened = build_open_set(
        tags,
        descriptions_file=parity_dir / "openset_descriptions.json",
        clip_file=tiny_clip_file,
        vocabulary=builtin,
    )
    builtin_embed = tiny_ram.builtin_label_embed().detach()  # type: ignore[operator]
    transform = make_transform(OFFICIAL_PREPROCESSING)
    for ref_file, only in (("reference_openset.json", True), ("reference_combined.json", False)):
        ref = json.loads((parity_dir / ref_file).read_text(encoding="utf-8"))
        vocab, label_embed = combine(builtin, builtin_embed, opened, only_open_set=only)
        assert list(vocab.names) == ref["tags"]
        assert list(vocab.thresholds) == pytest.approx(ref["thresholds"])
        names = list(ref[variant])
        images = []
        for name in names:
            with Image.open(parity_dir / "photos" / name) as im:
                img = ImageOps.exif_transpose(im) if variant == "images_exif_transposed" else im
                images.append(transform(img.convert("RGB")))
        with torch.no_grad():
            logits = tiny_ram(torch.stack(images), label_embed)  # (12, T)
        scores = logits.sigmoid()
        want = torch.tensor([ref[variant][n]["scores"] for n in names])
        assert (scores - want).abs().max() < TOL, ref_file
        for i, n in enumerate(names):
            picked = " | ".join(
                t
                for t, s, th in zip(vocab.names, scores[i].tolist(), vocab.thresholds, strict=True)
                if s > th
            )
            assert picked == ref[variant][n]["tags_en"], (ref_file, n)


# ------------------------------------------------------------------------------------- LLM and caches
def test_llm_descriptions_are_cached_and_second_run_is_free(
    fake_llm: FakeLLM,  # noqa: F811
    tiny_clip_file: Path,
    builtin: Vocabulary,
    ramtag_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tags = parse_open_set("corgi,Meteor Shower=0.7", None)
    enc1 = ClipTextEncoder(tiny_clip_file)
    first = build_open_set(tags, llm=llm_settings(fake_llm), vocabulary=builtin, encoder=enc1)
    assert fake_llm.hits == 10  # 5 prompts per tag, n=10 each
    assert first.sources == {"corgi": "llm", "Meteor Shower": "llm"}
    assert enc1.passes == 2 and first.warnings == []
    assert first.vocabulary_extension.thresholds == (0.5, 0.7)
    norms = first.label_embed.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)

    enc2 = ClipTextEncoder(tiny_clip_file)
    second = build_open_set(tags, llm=llm_settings(fake_llm), vocabulary=builtin, encoder=enc2)
    assert fake_llm.hits == 10  # no LLM request
    assert enc2.passes == 0 and enc2._model is None  # no CLIP text pass; CLIP not even loaded
    assert second.sources == {"corgi": "cache", "Meteor Shower": "cache"}
    assert torch.equal(first.label_embed, second.label_embed)

    # another model on the same server is another cache entry
    other = LLMSettings(base_url=fake_llm.url, model="other-model", api_key=SECRET)
    build_open_set(["corgi"], llm=other, vocabulary=builtin, encoder=enc2)
    assert fake_llm.hits == 15

    files = [p for p in (ramtag_home / "text").rglob("*") if p.is_file()]
    assert {p.parent.name for p in files} == {"descriptions", "embeddings"}
    for p in files:
        assert SECRET.encode() not in p.read_bytes()
        assert not p.name.startswith(".")  # no temp files left
    record = json.loads(next((ramtag_home / "text" / "descriptions").glob("*.json")).read_text())
    assert set(record) == {"tag", "model", "host", "prompt_set", "descriptions"}
    assert SECRET not in caplog.text and SECRET not in repr(first)


def test_describe_tags_uses_the_cache(fake_llm: FakeLLM) -> None:  # noqa: F811
    out = describe_tags(["owl"], llm_settings(fake_llm))
    assert list(out) == ["owl"] and len(out["owl"]) == 51
    assert describe_tags(["owl"], llm_settings(fake_llm)) == out and fake_llm.hits == 5
    fresh = describe_tags(["owl"], llm_settings(fake_llm), use_cache=False)
    assert fake_llm.hits == 10 and fresh != out
    # without an LLM the cached descriptions are still shown (issue 13.6), whatever model made them
    assert describe_tags(["owl"], LLMSettings()) == fresh and fake_llm.hits == 10
    with pytest.raises(
        LLMError, match="no cached descriptions of 'eagle' and no LLM configured; set OPENAI_API"
    ):
        describe_tags(["eagle"], LLMSettings())


def test_descriptions_file_wins_and_llm_fills_the_rest(
    fake_llm: FakeLLM,  # noqa: F811
    parity_dir: Path,
    tiny_clip_file: Path,
    builtin: Vocabulary,
) -> None:
    result = build_open_set(
        ["Corgi", "owl"],
        descriptions_file=parity_dir / "openset_descriptions.json",
        llm=llm_settings(fake_llm),
        clip_file=tiny_clip_file,
        vocabulary=builtin,
    )
    assert result.sources == {"Corgi": "file", "owl": "llm"}
    assert fake_llm.hits == 5


# --------------------------------------------------------------------------------------- fallback
def test_no_llm_falls_back_to_templates_with_one_warning(
    tiny_clip_file: Path, builtin: Vocabulary, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    enc = ClipTextEncoder(tiny_clip_file)
    result = build_open_set(["corgi", "owl"], llm=LLMSettings(), vocabulary=builtin, encoder=enc)
    assert result.sources == {"corgi": "templates", "owl": "templates"}
    assert len(result.warnings) == 1 and len(caplog.records) == 1
    msg = result.warnings[0]
    assert (
        "\n" not in msg and "OPENAI_API_KEY" in msg and "RAMTAG_LLM_BASE_URL" in msg and "--llm-model" in msg
    )
    assert "'corgi', 'owl'" in msg
    emb = result.label_embed
    assert tuple(emb.shape) == (2, 51, 512)
    assert torch.equal(emb[0], emb[0, :1].expand(51, -1))  # one vector repeated
    # = mean of the normalised template embeddings, re-normalised
    rows = enc.encode(fill_templates("corgi"))
    mean = rows.mean(0)
    assert torch.allclose(emb[0, 0], mean / mean.norm(), atol=1e-6)
    assert torch.allclose(emb[0, 0].norm(), torch.tensor(1.0), atol=1e-6)
    assert 50 <= len(TEMPLATES) <= 80 and all(t.count("{}") == 1 for t in TEMPLATES)


def test_template_embeddings_are_cached(tiny_clip_file: Path) -> None:
    enc = ClipTextEncoder(tiny_clip_file)
    a = embed_templates("corgi", enc)
    b = embed_templates("corgi", ClipTextEncoder(tiny_clip_file))
    assert enc.passes == 1 and torch.equal(a, b)


def test_unreachable_llm_falls_back_once_and_require_llm_errors(
    tiny_clip_file: Path, builtin: Vocabulary
) -> None:
    client = LLMClient(LLMSettings(base_url=closed_port_url(), model="m"), sleep=lambda s: None)
    result = build_open_set(["corgi", "owl"], llm=client, vocabulary=builtin, clip_file=tiny_clip_file)
    assert client.requests == 1  # not asked again for the second tag
    assert len(result.warnings) == 1 and "connection refused" in result.warnings[0]
    with pytest.raises(
        LLMError, match=r"'corgi' needs LLM descriptions \(--require-llm\).*connection refused"
    ):
        build_open_set(["corgi"], llm=client, vocabulary=builtin, clip_file=tiny_clip_file, require_llm=True)
    with pytest.raises(LLMError, match="no LLM configured"):
        build_open_set(
            ["corgi"], llm=LLMSettings(), vocabulary=builtin, clip_file=tiny_clip_file, require_llm=True
        )


def test_require_llm_is_satisfied_by_a_descriptions_file(
    parity_dir: Path, tiny_clip_file: Path, builtin: Vocabulary
) -> None:
    result = build_open_set(
        ["corgi"],
        descriptions_file=parity_dir / "openset_descriptions.json",
        llm=LLMSettings(),
        clip_file=tiny_clip_file,
        vocabulary=builtin,
        require_llm=True,
    )
    assert result.sources == {"corgi": "file"}


# ------------------------------------------------------------------------------ built-in reuse + combine
def test_builtin_tags_are_reused_and_combined(
    parity_dir: Path, tiny_clip_file: Path, builtin: Vocabulary, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ramtag.text.openset")
    b0, b5 = builtin.names[0], builtin.names[5]
    tags = parse_open_set(f"{b0.upper()}, corgi, {b5}=0.2", None)
    result = build_open_set(
        tags,
        descriptions_file=parity_dir / "openset_descriptions.json",
        clip_file=tiny_clip_file,
        vocabulary=builtin,
    )
    assert result.reused_builtin == [b0, b5] and result.reused_indices == [0, 5]
    assert result.reused_thresholds == [None, 0.2]
    assert (
        len(caplog.records) == 1 and b0 in caplog.text and result.warnings == []
    )  # reported once, not a warning
    assert result.vocabulary_extension.names == ("corgi",)

    builtin_embed = torch.randn(len(builtin), 51, 512)
    vocab, embed = combine(builtin, builtin_embed, result)
    assert len(vocab) == 41 and embed.shape == (41, 51, 512)
    assert vocab.names[-1] == "corgi" and vocab.open_set[-1] and not any(vocab.open_set[:40])
    assert vocab.thresholds[5] == 0.2 and vocab.thresholds[0] == builtin.thresholds[0]
    assert torch.equal(embed[:40], builtin_embed) and torch.equal(embed[40], result.label_embed[0])
    assert vocab.names_zh is not None and vocab.names_zh[-1] == "corgi"

    only, only_embed = combine(builtin, builtin_embed, result, only_open_set=True)
    assert only.names == (b0, b5, "corgi") and only.thresholds == (builtin.thresholds[0], 0.2, 0.5)
    assert torch.equal(only_embed[:2], builtin_embed[[0, 5]]) and only_embed.shape == (3, 51, 512)


def test_all_tags_builtin(builtin: Vocabulary, tiny_clip_file: Path) -> None:
    result = build_open_set(
        [builtin.names[1]], vocabulary=builtin, clip_file=tiny_clip_file, llm=LLMSettings()
    )
    assert result.label_embed.shape == (0, 51, 512) and len(result.vocabulary_extension) == 0
    embed = torch.randn(len(builtin), 51, 512)
    vocab, out = combine(builtin, embed, result, only_open_set=True)
    assert vocab.names == (builtin.names[1],) and torch.equal(out, embed[[1]])


def test_corrupt_cache_entries_are_recomputed(
    fake_llm: FakeLLM,  # noqa: F811
    tiny_clip_file: Path,
    builtin: Vocabulary,
) -> None:
    enc = ClipTextEncoder(tiny_clip_file)
    first = build_open_set(["owl"], llm=llm_settings(fake_llm), vocabulary=builtin, encoder=enc)
    cache = TextCache()
    for p in (cache.root / "embeddings").glob("*.npy"):
        p.write_bytes(b"garbage")
    for p in (cache.root / "descriptions").glob("*.json"):
        p.write_text("{not json")
    again = build_open_set(["owl"], llm=llm_settings(fake_llm), vocabulary=builtin, encoder=enc)
    assert fake_llm.hits == 10 and enc.passes == 2
    assert again.label_embed.shape == first.label_embed.shape


def test_bad_descriptions_file_is_reported(tmp_path: Path, builtin: Vocabulary, tiny_clip_file: Path) -> None:
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps([{"corgi": ["x"] * 50}]))
    with pytest.raises(InputError, match=r"d\.json: tag 'corgi' has 50 descriptions"):
        build_open_set(["corgi"], descriptions_file=bad, vocabulary=builtin, clip_file=tiny_clip_file)
    assert load_descriptions  # the same validator is used


# ------------------------------------------------------------------ hostile answers (issue 12 case 3)
def test_lone_surrogates_and_escapes_in_answers_are_cached_clean(
    fake_llm: FakeLLM,  # noqa: F811
    ramtag_home: Path,
) -> None:
    # A lone surrogate used to crash the description cache (UnicodeEncodeError) with a traceback.
    fake_llm.answer = lambda prompt, k: f"Owl {k} \ud800 with \x1b[2J\x1b]0;pwned\x07 feathers."
    out = describe_tags(["owl"], llm_settings(fake_llm))["owl"]
    assert out[1] == "Owl 1 with feathers." and len(set(out)) == 51
    (entry,) = (ramtag_home / "text" / "descriptions").glob("*.json")
    text = entry.read_bytes().decode("utf-8")  # valid UTF-8
    assert "\x1b" not in text and "\\ud800" not in text
    assert describe_tags(["owl"], llm_settings(fake_llm)) == {"owl": out}


def test_describe_asks_the_server_for_its_model(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.models = ["qwen2.5:7b"]
    out = describe_tags(["owl"], LLMSettings(base_url=fake_llm.url))
    assert len(out["owl"]) == 51
    assert {b["model"] for b in fake_llm.bodies() if b} == {"qwen2.5:7b"}
    fake_llm.models = ["a", "b"]
    with pytest.raises(LLMError, match=r"serves 2 models.*--llm-model"):
        describe_tags(["eagle"], LLMSettings(base_url=fake_llm.url))


def test_too_few_descriptions_fall_back_for_that_tag_only(
    fake_llm: FakeLLM,  # noqa: F811
    tiny_clip_file: Path,
    builtin: Vocabulary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # issue 13.6: an LLM that repeats itself for one tag gets that tag template embeddings (one warning);
    # the other tags are still described by the LLM
    def answer(prompt: str, k: int) -> str:
        return "A gadget." if "gizmo" in prompt else f"Owl answer {k}."

    fake_llm.answer = answer
    caplog.set_level(logging.WARNING)
    result = build_open_set(
        ["gizmo", "owl"], llm=llm_settings(fake_llm), vocabulary=builtin, clip_file=tiny_clip_file
    )
    assert result.sources == {"gizmo": "templates", "owl": "llm"}
    assert (
        len(result.warnings) == 1 and "only 1 distinct usable descriptions of 'gizmo'" in result.warnings[0]
    )
    with pytest.raises(LLMError, match="only 1 distinct usable descriptions of 'gizmo'"):
        build_open_set(
            ["gizmo"],
            llm=llm_settings(fake_llm),
            vocabulary=builtin,
            clip_file=tiny_clip_file,
            require_llm=True,
        )
