"""daemon/actions.py with a fake engine: no model, no display."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine

from daemon.actions import ActionResult, Payload, check_payload, is_image, prepare, run_action
from daemon.errors import Cancelled, EngineError, UserInputError
from daemon.models import ModelSpec
from daemon.prompts import Template, load_template

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8


def engine_with(chunks: list[str] | None = None, **kwargs: Any) -> FakeEngine:
    """The shared fake, streaming "Hello world" in two pieces unless told otherwise."""
    return FakeEngine(chunks=["Hello", " world"] if chunks is None else chunks, **kwargs)


TEXT_TEMPLATE = """
    system = "You translate. $style"
    user = "Translate: $input"
    [vars.style]
    default = "prose"
    choices = { prose = "Use sentences.", tags = "Use tags." }
    [options]
    temperature = 0.2
    max_tokens = 300
"""

IMAGE_TEMPLATE = """
    kind = "image"
    system = "Describe images."
    user = "Describe this."
    [options]
    max_tokens = 50
"""


def make(tmp_path: Path, body: str, name: str) -> Template:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return load_template(path)


@pytest.fixture
def text_template(tmp_path):
    return make(tmp_path, TEXT_TEMPLATE, "tr")


@pytest.fixture
def image_template(tmp_path):
    return make(tmp_path, IMAGE_TEMPLATE, "cap")


@pytest.fixture
def spec(tmp_path):
    return ModelSpec(name="fake", path=tmp_path / "fake.gguf")


@pytest.fixture
def vision_spec(tmp_path):
    return ModelSpec(name="eyes", path=tmp_path / "v.gguf", mmproj=tmp_path / "p.gguf")


def run(template, payload, engine, spec, **kwargs):
    shown: list[str] = []
    result = run_action(template, payload, engine, spec, on_text=shown.append, **kwargs)
    return result, shown


# --- the happy path --------------------------------------------------------


def test_result_is_think_stripped_and_trimmed(text_template, spec):
    engine = engine_with(["<think>", "the user wants", "</think>", "\n\n  A cat", " sits.  \n"])
    result, shown = run(text_template, Payload(text="猫が座る"), engine, spec)
    assert isinstance(result, ActionResult)
    assert result.text == "A cat sits."
    assert result.action == "tr"
    assert result.model == "fake"
    assert result.finish_reason == "stop"
    assert not result.stream_was_dirty
    assert "".join(shown).strip() == "A cat sits."
    assert all("think" not in piece and "user wants" not in piece for piece in shown)


def test_on_text_never_sees_thinking_even_split_inside_tags(text_template, spec):
    engine = engine_with(["Be", "fore <th", "ink>sec", "ret</thi", "nk> after"])
    result, shown = run(text_template, Payload(text="x"), engine, spec)
    assert "".join(shown) == "Before  after"
    assert "secret" not in "".join(shown)
    assert all("<" not in piece for piece in shown)
    assert result.text == "Before  after"


def test_on_text_is_optional(text_template, spec):
    result = run_action(text_template, Payload(text="x"), engine_with(), spec)
    assert result.text == "Hello world"


def test_stray_close_tag_marks_stream_dirty(text_template, spec):
    engine = engine_with(["thinking aloud", "</think>", "answer"])
    result, shown = run(text_template, Payload(text="x"), engine, spec)
    assert result.text == "answer"
    assert result.stream_was_dirty
    assert "".join(shown) == "thinking aloudanswer"


def test_messages_have_system_first_and_input_in_user(text_template, spec):
    engine = engine_with()
    run(text_template, Payload(text="夕焼け"), engine, spec)
    ((messages, _),) = engine.calls
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You translate. Use sentences."
    assert messages[1]["content"] == "Translate: 夕焼け"
    assert "夕焼け" not in messages[0]["content"]


def test_values_reach_the_prompt(text_template, spec):
    engine = engine_with()
    run(text_template, Payload(text="x"), engine, spec, values={"style": "tags"})
    assert engine.calls[0][0][0]["content"] == "You translate. Use tags."


def test_options_merge_template_defaults_and_overrides(text_template, spec):
    engine = engine_with()
    run(text_template, Payload(text="x"), engine, spec, options={"max_tokens": 64, "seed": 1})
    assert engine.calls[0][1] == {"temperature": 0.2, "max_tokens": 64, "seed": 1}


def test_engine_loads_the_given_spec(text_template, spec):
    engine = engine_with()
    run(text_template, Payload(text="x"), engine, spec)
    assert engine.loads == [spec]


def test_image_action_sends_image_first(image_template, vision_spec):
    engine = engine_with(["A red square."])
    result, _ = run(image_template, Payload(image=PNG, source="image"), engine, vision_spec)
    assert result.text == "A red square."
    messages = engine.calls[0][0]
    assert messages[0] == {"role": "system", "content": "Describe images."}
    parts = messages[1]["content"]
    assert parts[0]["type"] == "image_url"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "Describe this."}


def test_timings(text_template, spec):
    engine = engine_with(load_s=0.25, generation_load_s=0.5)
    result, _ = run(text_template, Payload(text="x"), engine, spec)
    timings = result.timings
    for key in ("load_s", "ttft_s", "total_s", "prompt_tokens", "reused_tokens"):
        assert key in timings
    assert "completion_tokens" in timings
    # Load time counts both the explicit load and any reload inside generate.
    assert timings["load_s"] == 0.75
    assert timings["ttft_s"] == 0.01
    assert timings["prompt_tokens"] == 12
    assert timings["reused_tokens"] == 8
    assert timings["completion_tokens"] == 2
    assert timings["total_s"] >= 0


# --- failures --------------------------------------------------------------


def test_cancelled_generation_raises(text_template, spec):
    engine = engine_with(["partial"], finish_reason="cancelled")
    with pytest.raises(Cancelled):
        run(text_template, Payload(text="x"), engine, spec)


@pytest.mark.parametrize("chunks", [[], ["   ", "\n"], ["<think>", "hmm", "</think>", "  "]])
def test_empty_output_is_an_engine_error(text_template, spec, chunks):
    engine = engine_with(chunks)
    with pytest.raises(EngineError) as info:
        run(text_template, Payload(text="x"), engine, spec)
    assert "no text" in str(info.value)
    assert "'tr'" in str(info.value)


def test_all_thinking_at_length_gives_max_tokens_hint(text_template, spec):
    engine = engine_with(["<think>", "still going"], finish_reason="length")
    with pytest.raises(EngineError) as info:
        run(text_template, Payload(text="x"), engine, spec, options={"max_tokens": 77})
    message = str(info.value)
    assert "77" in message
    assert "max_tokens" in message
    assert "--set max_tokens=" in message


def test_empty_at_length_without_thinking_is_plain_empty_error(text_template, spec):
    engine = engine_with([""], finish_reason="length")
    with pytest.raises(EngineError, match="no text"):
        run(text_template, Payload(text="x"), engine, spec)


# --- check_payload ---------------------------------------------------------


def test_image_to_text_action_refused(text_template, spec):
    engine = engine_with()
    with pytest.raises(UserInputError, match="text action"):
        run_action(text_template, Payload(image=PNG), engine, spec)
    # Refused before any model is loaded.
    assert engine.loads == []
    assert engine.calls == []


@pytest.mark.parametrize("text", [None, "", "  \n\t"])
def test_empty_text_refused(text_template, text):
    with pytest.raises(UserInputError, match="empty text"):
        check_payload(text_template, Payload(text=text))


def test_text_to_image_action_refused(image_template, vision_spec):
    with pytest.raises(UserInputError, match="needs an image"):
        check_payload(image_template, Payload(text="a picture of a cat"), vision_spec)


def test_non_image_bytes_refused(image_template, vision_spec):
    with pytest.raises(UserInputError, match="not a PNG"):
        check_payload(image_template, Payload(image=b"%PDF-1.7 not an image"), vision_spec)


def test_image_action_needs_vision_model(image_template, spec):
    engine = engine_with()
    with pytest.raises(UserInputError) as info:
        run_action(image_template, Payload(image=PNG), engine, spec)
    assert "mmproj" in str(info.value)
    assert "'fake'" in str(info.value)
    assert engine.loads == []


def test_image_action_without_spec_skips_vision_check(image_template):
    check_payload(image_template, Payload(image=PNG))


def test_valid_payloads_pass(text_template, image_template, vision_spec):
    check_payload(text_template, Payload(text="hi"), vision_spec)
    for image in (PNG, JPEG, WEBP, b"GIF89a....", b"BM...."):
        check_payload(image_template, Payload(image=image), vision_spec)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, True),
        (JPEG, True),
        (WEBP, True),
        (b"GIF87a", True),
        (b"BM\x00\x00", True),
        (b"RIFF\x00\x00\x00\x00WAVE", False),
        (b"\x89PNG", False),
        (b"", False),
        (b"hello", False),
    ],
)
def test_is_image(data, expected):
    assert is_image(data) is expected


def test_prepare_renders_without_loading(text_template, spec):
    rendered = prepare(text_template, Payload(text="x"), {"style": "tags"}, {"top_k": 3}, spec)
    assert rendered.messages[0]["content"] == "You translate. Use tags."
    assert rendered.options == {"temperature": 0.2, "max_tokens": 300, "top_k": 3}


def test_prepare_reports_bad_value_before_loading(text_template, spec):
    engine = engine_with()
    with pytest.raises(UserInputError, match="prose, tags"):
        run_action(text_template, Payload(text="x"), engine, spec, values={"style": "poem"})
    assert engine.loads == []
