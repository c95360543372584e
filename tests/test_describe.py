"""Description generation (paper prompts, cleaning, 51 rows) and the official descriptions file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_llm_server import FakeLLM, fake_llm  # noqa: F401

from ramtag.errors import InputError, LLMError
from ramtag.text.describe import (
    DESCRIPTIONS_PER_TAG,
    article,
    clean_answer,
    dump_descriptions,
    finalize,
    generate_descriptions,
    load_descriptions,
    prompts_for,
)
from ramtag.text.llm import LLMClient, LLMSettings


def test_article() -> None:
    assert [article(t) for t in ("apple", "orange", "umbrella", "elephant", "hour glass", "honest man")] == [
        "an"
    ] * 6
    assert [article(t) for t in ("corgi", "unicorn", "uniform", "european city", "one-way sign", "user")] == [
        "a"
    ] * 6


def test_paper_prompts() -> None:
    assert prompts_for("owl") == [
        "Describe concisely what an owl looks like",
        "How can you identify an owl concisely?",
        "What does an owl look like concisely?",
        "What are the identifying characteristics of an owl",
        "Please provide a concise description of the visual characteristics of owl",
    ]
    assert prompts_for("meteor shower")[0] == "Describe concisely what a meteor shower looks like"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('  "A corgi has short legs."  ', "A corgi has short legs."),
        ("- A corgi has\n  short   legs.", "A corgi has short legs."),
        ("1. Short legs.\n2. Big ears.", "Short legs. Big ears."),
        ("Answer: **Short** legs", "Short legs"),
        ("\u201cCurly quotes\u201d", "Curly quotes"),
        ("Sure! A fluffy dog.", "A fluffy dog."),
        ("I'm sorry, but I can't help with that.", None),
        ("As an AI language model, I cannot see images.", None),
        ("I\u2019m sorry, no.", None),
        ("   ", None),
        ("- ", None),
        ("...", None),
    ],
)
def test_clean_answer(raw: str, clean: str | None) -> None:
    assert clean_answer(raw) == clean


def test_clean_answer_caps_length_at_a_word() -> None:
    out = clean_answer("word " * 200)
    assert out is not None and len(out) <= 400 and out.endswith("word")


def test_finalize_pads_dedupes_and_trims() -> None:
    out = finalize("cat", ["A cat.", "a cat.", "Whiskers.", "I'm sorry", ""], minimum=2)
    assert len(out) == DESCRIPTIONS_PER_TAG
    assert out[0] == "a photo of a cat."
    assert out[1:5] == ["A cat.", "Whiskers.", "A cat.", "Whiskers."]  # cycled
    many = finalize("cat", [f"Answer {i}." for i in range(80)])
    assert len(many) == 51 and many[-1] == "Answer 49."  # trimmed
    assert finalize("cat", ["a photo of a cat.", "Fur."], minimum=1)[1:3] == [
        "Fur.",
        "Fur.",
    ]  # the photo prompt is not repeated
    with pytest.raises(LLMError, match="no usable description of 'cat'"):
        finalize("cat", ["I'm sorry, I cannot.", "  "])
    with pytest.raises(LLMError, match=r"only 2 distinct usable descriptions of 'cat' \(at least 10 needed"):
        finalize("cat", ["A cat.", "Whiskers."] * 25)


def test_a_json_list_answer_is_split_into_descriptions() -> None:
    # issue 13.6: one answer holding a JSON list used to be stored as 50 identical "descriptions"
    listed = json.dumps([f"A cat with trait {i}." for i in range(12)] + ["", "A cat with trait 3."])
    out = finalize("cat", [listed] * 5)
    assert out[1:13] == [f"A cat with trait {i}." for i in range(12)] and len(set(out)) == 13
    fenced = "```json\n" + json.dumps(["Fur.", "Paws."]) + "\n```"
    assert finalize("cat", [fenced], minimum=2)[1:3] == ["Fur.", "Paws."]
    assert finalize("cat", ["[not json] but a real answer"], minimum=1)[1] == "[not json] but a real answer"


def test_control_characters_and_undecodable_text_are_removed() -> None:
    dirty = "A \x1b[31mred\x1b[0m cat\x1b]0;pwned\x07 \u202eeman\u202c \ufffd\ud800 \x07sits."
    assert clean_answer(dirty) == "A red cat eman sits."


def test_generate_descriptions_asks_the_paper_prompts(fake_llm: FakeLLM) -> None:  # noqa: F811
    client = LLMClient(LLMSettings(base_url=fake_llm.url, model="m"), sleep=lambda s: None)
    descs = generate_descriptions("owl", client)
    assert len(descs) == 51 and descs[0] == "a photo of a owl."  # the official first row, article as is
    assert len(set(descs)) == 51
    bodies = fake_llm.bodies()
    assert len(bodies) == 5
    assert sorted(b["messages"][0]["content"] for b in bodies) == sorted(prompts_for("owl"))
    for b in bodies:
        assert b["n"] == 10 and b["temperature"] == 0.99 and b["max_tokens"] == 77 and b["model"] == "m"
        assert b["messages"][0]["role"] == "user" and len(b["messages"]) == 1
    # answers in prompt order, cleaned (the fake wraps them in bullets, quotes and spaces)
    for i, prompt in enumerate(prompts_for("owl")):
        block = descs[1 + 10 * i : 11 + 10 * i]
        assert all(d.startswith("Answer ") and d.endswith(f"to: {prompt}") for d in block)


def test_generate_descriptions_with_single_choice_server(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.n_mode = "reject"
    client = LLMClient(LLMSettings(base_url=fake_llm.url, model="m"), sleep=lambda s: None)
    descs = generate_descriptions("owl", client, workers=1)
    assert len(descs) == 51 and len(set(descs)) == 51
    assert fake_llm.hits == 1 + 50  # one rejected n=10 request, then one request per answer


def test_generate_descriptions_pads_repetitive_answers(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.answer = lambda prompt, k: "I'm sorry." if k % 2 else f"Same answer {k % 24}."
    client = LLMClient(LLMSettings(base_url=fake_llm.url, model="m"), sleep=lambda s: None)
    descs = generate_descriptions("owl", client)
    assert len(descs) == 51 and set(descs[1:]) == {f"Same answer {k}." for k in range(0, 24, 2)}


def test_generate_descriptions_refuses_too_few_distinct_answers(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.answer = lambda prompt, k: "I'm sorry." if k % 2 else f"Same answer {k % 4}."
    client = LLMClient(LLMSettings(base_url=fake_llm.url, model="m"), sleep=lambda s: None)
    with pytest.raises(LLMError, match=r"only 2 distinct usable descriptions of 'owl'"):
        generate_descriptions("owl", client)


def test_official_descriptions_file_loads(parity_dir: Path, tmp_path: Path) -> None:
    descs = load_descriptions(parity_dir / "openset_descriptions.json")
    assert list(descs) == ["corgi", "meteor shower", "trampolining"]
    assert all(len(v) == 51 for v in descs.values())
    assert descs["corgi"][0] == "a photo of a corgi."
    out = tmp_path / "sub" / "d.json"
    text = dump_descriptions(descs, out)
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(
        (parity_dir / "openset_descriptions.json").read_text()
    )
    assert json.loads(text) == json.loads(out.read_text(encoding="utf-8"))
    assert load_descriptions(out) == descs
    assert not [p for p in out.parent.iterdir() if p.name != "d.json"]  # no temp file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('"a string"', "expected a JSON list"),
        ("[1]", "item 0 is not an object"),
        ('[{"cat": ["x"]}]', "has 1 descriptions; RAM\\+\\+ needs exactly 51"),
        ('[{"cat": [1, 2]}]', "list of non-empty strings"),
        (json.dumps([{"cat": ["x"] * 51}, {"Cat": ["y"] * 51}]), "'Cat' appears twice"),
        ('[{"  ": []}]', "empty tag name"),
    ],
)
def test_descriptions_file_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "descs.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as e:
        load_descriptions(path)
    assert str(e.value).startswith(str(path))
    with pytest.raises(InputError, match="descriptions file not found"):
        load_descriptions(tmp_path / "missing.json")


def test_plain_mapping_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"cat": ["c"] * 51, "dog": ["d"] * 51}))
    assert list(load_descriptions(path)) == ["cat", "dog"]
