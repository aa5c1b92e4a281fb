"""daemon/prompts.py: parsing, rendering, overrides, errors, loading folders."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from daemon.errors import ConfigError, UserInputError
from daemon.prompts import (
    OPTION_TYPES,
    Template,
    Variable,
    image_data_url,
    load_template,
    load_templates,
    placeholders,
    render,
    split_overrides,
)

SHIPPED = Path(__file__).resolve().parents[1] / "prompts"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def template_from(tmp_path: Path, body: str, name: str = "t") -> Template:
    return load_template(write(tmp_path, name, body))


def error_of(tmp_path: Path, body: str, name: str = "t") -> str:
    path = write(tmp_path, name, body)
    with pytest.raises(ConfigError) as info:
        load_template(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# --- the shipped templates -------------------------------------------------


def test_shipped_folder_has_templates():
    names = {p.stem for p in SHIPPED.glob("*.toml")}
    assert {"translate_en", "variations", "caption", "ocr_vlm"} <= names


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_template_parses(path):
    template = load_template(path)
    assert template.name == path.stem
    assert template.kind in ("text", "image", "chain", "conversation")
    assert template.origin == path
    assert template.description
    if template.kind in ("text", "conversation"):
        assert "$input" in template.user
    if template.kind == "chain":
        assert len(template.steps) >= 2


def test_shipped_folder_loads_without_errors():
    loaded = load_templates([SHIPPED])
    assert loaded.errors == {}
    assert set(loaded.templates) == {p.stem for p in SHIPPED.glob("*.toml")}


def test_shipped_translate_en_style_choices():
    template = load_template(SHIPPED / "translate_en.toml")
    style = template.variables["style"]
    assert style.choices is not None
    assert set(style.choices) == {"prose", "tags"}
    assert style.default == "prose"
    assert template.kind == "text"
    assert isinstance(template.options["temperature"], float)
    assert isinstance(template.options["max_tokens"], int)


def test_shipped_translate_en_renders_each_style():
    template = load_template(SHIPPED / "translate_en.toml")
    prose = render(template, text="猫", values={"style": "prose"})
    tags = render(template, text="猫", values={"style": "tags"})
    assert "natural language" in prose.messages[0]["content"]
    assert "comma-separated tags" in tags.messages[0]["content"]
    assert "$style" not in prose.messages[0]["content"]
    assert prose.messages[1] == {"role": "user", "content": "猫"}
    # The system part only depends on $style, never on the input (KV cache reuse).
    other = render(template, text="犬", values={"style": "prose"})
    assert other.messages[0] == prose.messages[0]


def test_shipped_variations_has_count():
    template = load_template(SHIPPED / "variations.toml")
    assert template.variables["count"].default == "4"
    rendered = render(template, text="a cat", values={"count": "7"})
    user = rendered.messages[-1]["content"]
    assert "exactly 7 variations" in user
    assert user.endswith("a cat")


def test_shipped_image_templates_have_no_input():
    for name in ("caption", "ocr_vlm"):
        template = load_template(SHIPPED / f"{name}.toml")
        assert template.kind == "image"
        assert "$input" not in template.user


# --- rendering -------------------------------------------------------------

BASIC = """
    description = "demo"
    system = "You are $role."
    user = "Say: $input ($tone)"

    [vars]
    role = "helpful"

    [vars.tone]
    default = "calm"
    choices = { calm = "speak calmly", loud = "SHOUT" }

    [options]
    temperature = 0.5
    max_tokens = 100
"""


def test_render_system_first_and_input_in_user(tmp_path):
    template = template_from(tmp_path, BASIC)
    rendered = render(template, text="hello")
    assert rendered.messages == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Say: hello (speak calmly)"},
    ]


def test_render_choice_substitutes_its_text(tmp_path):
    template = template_from(tmp_path, BASIC)
    rendered = render(template, text="hi", values={"tone": "loud", "role": "a pirate"})
    assert rendered.messages[0]["content"] == "You are a pirate."
    assert rendered.messages[1]["content"] == "Say: hi (SHOUT)"


def test_render_bad_choice_lists_choices(tmp_path):
    template = template_from(tmp_path, BASIC)
    with pytest.raises(UserInputError) as info:
        render(template, text="hi", values={"tone": "whisper"})
    message = str(info.value)
    assert "calm" in message and "loud" in message and "whisper" in message
    assert "tone" in message


def test_render_unknown_variable_refused(tmp_path):
    template = template_from(tmp_path, BASIC)
    with pytest.raises(UserInputError, match="nope"):
        render(template, text="hi", values={"nope": "x"})


def test_render_options_are_template_defaults(tmp_path):
    template = template_from(tmp_path, BASIC)
    rendered = render(template, text="hi")
    assert rendered.options == {"temperature": 0.5, "max_tokens": 100}
    assert isinstance(rendered.options["temperature"], float)


def test_render_options_overridden(tmp_path):
    template = template_from(tmp_path, BASIC)
    rendered = render(template, text="hi", options={"max_tokens": 7, "seed": 3})
    assert rendered.options == {"temperature": 0.5, "max_tokens": 7, "seed": 3}
    # The template itself is not changed by an override.
    assert template.options == {"temperature": 0.5, "max_tokens": 100}


def test_render_without_system_has_only_user(tmp_path):
    template = template_from(tmp_path, 'user = "$input!"\n')
    rendered = render(template, text="x")
    assert rendered.messages == [{"role": "user", "content": "x!"}]


def test_render_dollar_escape_and_braced(tmp_path):
    template = template_from(tmp_path, 'user = "costs $$5: ${input}s"\n')
    assert render(template, text="apple").messages[-1]["content"] == "costs $5: apples"


def test_render_input_text_is_not_expanded(tmp_path):
    # A "$var" inside the user's text is data, not a placeholder.
    template = template_from(tmp_path, BASIC)
    rendered = render(template, text="pay $role $$ $")
    assert rendered.messages[1]["content"] == "Say: pay $role $$ $ (speak calmly)"


def test_variable_without_default_needs_value(tmp_path):
    template = template_from(
        tmp_path,
        """
        user = "$input in $lang"
        [vars.lang]
        description = "target language"
        """,
    )
    with pytest.raises(UserInputError) as info:
        render(template, text="hi")
    assert "$lang" in str(info.value)
    assert "--set lang=" in str(info.value)
    assert render(template, text="hi", values={"lang": "French"}).messages[-1]["content"] == (
        "hi in French"
    )


def test_variable_resolve_directly():
    var = Variable(name="v", default="a", choices={"a": "AAA", "b": "BBB"})
    assert var.resolve(None, "t") == "AAA"
    assert var.resolve("b", "t") == "BBB"
    assert Variable(name="free", default="x").resolve(None, "t") == "x"
    assert Variable(name="free", default="x").resolve("y", "t") == "y"


def test_numeric_var_default_becomes_string(tmp_path):
    template = template_from(
        tmp_path,
        """
        user = "$input x$n"
        [vars]
        n = 3
        [vars.m]
        default = 2.5
        """,
    )
    assert template.variables["n"].default == "3"
    assert template.variables["m"].default == "2.5"


# --- image -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "image/png"),  # RIFF but not WebP
    ],
)
def test_image_data_url_mime(data, mime):
    url = image_data_url(data)
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == data


def test_render_with_image_is_multipart_image_first(tmp_path):
    template = template_from(
        tmp_path,
        """
        kind = "image"
        system = "Describe."
        user = "What is this?"
        """,
    )
    rendered = render(template, image=PNG)
    assert rendered.messages[0] == {"role": "system", "content": "Describe."}
    user = rendered.messages[1]
    assert user["role"] == "user"
    image_part, text_part = user["content"]
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"] == image_data_url(PNG)
    assert text_part == {"type": "text", "text": "What is this?"}


# --- overrides (--set) -----------------------------------------------------


def test_split_overrides_sorts_and_coerces(tmp_path):
    template = template_from(tmp_path, BASIC)
    values, options = split_overrides(
        template,
        {
            "tone": "loud",
            "temperature": "0.7",
            "max_tokens": "42",
            "stop": "###|END",
            "top_k": "5",
        },
    )
    assert values == {"tone": "loud"}
    assert options == {"temperature": 0.7, "max_tokens": 42, "stop": ["###", "END"], "top_k": 5}
    assert type(options["temperature"]) is float
    assert type(options["max_tokens"]) is int
    rendered = render(template, text="hi", values=values, options=options)
    assert rendered.options["max_tokens"] == 42
    assert rendered.options["temperature"] == 0.7
    assert rendered.messages[1]["content"] == "Say: hi (SHOUT)"


def test_split_overrides_single_stop(tmp_path):
    template = template_from(tmp_path, BASIC)
    assert split_overrides(template, {"stop": "\n\n"})[1] == {"stop": ["\n\n"]}


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("max_tokens", "lots", "an integer"),
        ("max_tokens", "1.5", "an integer"),
        ("temperature", "warm", "a number"),
        ("seed", "", "an integer"),
    ],
)
def test_split_overrides_bad_option_type(tmp_path, key, value, kind):
    template = template_from(tmp_path, BASIC)
    with pytest.raises(UserInputError) as info:
        split_overrides(template, {key: value})
    assert key in str(info.value)
    assert kind in str(info.value)


def test_split_overrides_unknown_key_lists_variables_and_options(tmp_path):
    template = template_from(tmp_path, BASIC)
    with pytest.raises(UserInputError) as info:
        split_overrides(template, {"colour": "red"})
    message = str(info.value)
    assert "colour" in message
    assert "role" in message and "tone" in message
    assert "temperature" in message


def test_option_types_cover_documented_options():
    assert OPTION_TYPES["temperature"] is float
    assert OPTION_TYPES["max_tokens"] is int
    assert OPTION_TYPES["stop"] is list


# --- parse errors ----------------------------------------------------------


def test_malformed_toml_names_file_and_line(tmp_path):
    message = error_of(
        tmp_path,
        """
        description = "ok"
        user = "$input"
        system = "unterminated
        """,
    )
    assert "line 3" in message
    assert "invalid TOML" in message


def test_unknown_top_level_key_named_with_line(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input"

        sytem = "typo"
        """,
    )
    assert "'sytem'" in message
    assert "line 3" in message


def test_unknown_option_key_named(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input"
        [options]
        temperature = 0.1
        max_token = 5
        """,
    )
    assert "'max_token'" in message
    assert "[options]" in message
    assert "line 4" in message


def test_option_wrong_type_named(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input"
        [options]
        max_tokens = "many"
        """,
    )
    assert "max_tokens" in message
    assert "an integer" in message


def test_option_int_for_float_is_accepted(tmp_path):
    template = template_from(tmp_path, 'user = "$input"\n[options]\ntemperature = 1\n')
    assert template.options["temperature"] == 1.0
    assert type(template.options["temperature"]) is float


def test_option_bool_for_number_refused(tmp_path):
    message = error_of(tmp_path, 'user = "$input"\n[options]\ntemperature = true\n')
    assert "temperature" in message


def test_option_stop_list_accepted(tmp_path):
    template = template_from(tmp_path, 'user = "$input"\n[options]\nstop = ["a", "b"]\n')
    assert template.options["stop"] == ["a", "b"]
    message = error_of(tmp_path, 'user = "$input"\n[options]\nstop = [1, 2]\n')
    assert "stop" in message and "a list of strings" in message


def test_unknown_var_key_named(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input $style"
        [vars.style]
        default = "a"
        choises = { a = "A" }
        """,
    )
    assert "'choises'" in message
    assert "[vars.style]" in message
    assert "line 4" in message


def test_undeclared_variable_named(tmp_path):
    message = error_of(tmp_path, 'system = "Be $mood."\nuser = "$input"\n')
    assert "$mood" in message
    assert "[vars]" in message


def test_undeclared_variable_in_user_named(tmp_path):
    message = error_of(tmp_path, 'user = "$input in ${lang}"\n')
    assert "$lang" in message


def test_input_in_system_refused(tmp_path):
    message = error_of(tmp_path, 'system = "Read $input"\nuser = "$input"\n')
    assert "$input" in message
    assert "user part" in message
    assert "line 1" in message


def test_input_declared_as_var_refused(tmp_path):
    message = error_of(tmp_path, 'user = "$input"\n[vars]\ninput = "x"\n')
    assert "$input" in message


def test_text_template_without_input_refused(tmp_path):
    message = error_of(tmp_path, 'system = "hi"\nuser = "no placeholder"\n')
    assert "$input" in message
    assert "line 2" in message


def test_image_template_without_input_allowed(tmp_path):
    template = template_from(tmp_path, 'kind = "image"\nuser = "Look."\n')
    assert template.kind == "image"


def test_missing_user_part_refused(tmp_path):
    message = error_of(tmp_path, 'system = "hi"\n')
    assert "'user'" in message


def test_bad_kind_refused(tmp_path):
    message = error_of(tmp_path, 'kind = "audio"\nuser = "$input"\n')
    assert "audio" in message
    assert "line 1" in message


def test_lone_dollar_refused(tmp_path):
    message = error_of(tmp_path, 'user = "$input costs 5 $ today"\n')
    assert "lone '$'" in message
    assert "$$" in message


def test_lone_dollar_line_counted_within_text():
    with pytest.raises(ConfigError, match="line 2 of the text"):
        placeholders("first $ok\nsecond $ here", "where")


def test_placeholders_names_in_order_without_duplicates():
    assert placeholders("$a ${b} $a $$c", "w") == ["a", "b"]


def test_name_differing_from_stem_refused(tmp_path):
    message = error_of(tmp_path, 'name = "other"\nuser = "$input"\n', name="mine")
    assert "'other'" in message
    assert "other.toml" in message
    assert "line 1" in message


def test_name_equal_to_stem_accepted(tmp_path):
    template = template_from(tmp_path, 'name = "mine"\nuser = "$input"\n', name="mine")
    assert template.name == "mine"


def test_default_not_among_choices_refused(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input $style"
        [vars.style]
        default = "poem"
        choices = { prose = "P", tags = "T" }
        """,
    )
    assert "'poem'" in message
    assert "prose" in message and "tags" in message
    assert "line 3" in message


def test_choice_text_must_be_string(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input $style"
        [vars.style]
        choices = { prose = 1 }
        """,
    )
    assert "prose" in message


def test_wrong_type_for_system_named(tmp_path):
    message = error_of(tmp_path, 'system = 3\nuser = "$input"\n')
    assert "'system'" in message
    assert "a string" in message


def test_not_utf8_file_named(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b'user = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_template(path)
    assert str(path) in str(info.value)
    assert "UTF-8" in str(info.value)


# --- folders and overrides -------------------------------------------------


def test_user_folder_overrides_by_name(tmp_path):
    user = tmp_path / "user"
    write(user, "translate_en", 'description = "mine"\nuser = "Translate: $input"\n')
    loaded = load_templates([SHIPPED, user])
    assert loaded.errors == {}
    mine = loaded.get("translate_en")
    assert mine.description == "mine"
    assert mine.origin == user / "translate_en.toml"
    # The other shipped templates are still there.
    assert loaded.get("variations").origin == SHIPPED / "variations.toml"


def test_user_folder_adds_new_templates(tmp_path):
    user = tmp_path / "user"
    write(user, "shout", 'user = "$input!"\n')
    loaded = load_templates([SHIPPED, user])
    assert "shout" in loaded.templates
    assert "translate_en" in loaded.templates


def test_broken_user_file_is_recorded_and_hides_nothing(tmp_path):
    user = tmp_path / "user"
    broken = write(user, "broken", 'user = "$input\n')
    write(user, "fine", 'user = "ok $input"\n')
    loaded = load_templates([SHIPPED, user])
    assert set(loaded.errors) == {"broken"}
    assert str(broken) in loaded.errors["broken"]
    assert "line 1" in loaded.errors["broken"]
    assert "fine" in loaded.templates
    assert {p.stem for p in SHIPPED.glob("*.toml")} <= set(loaded.templates)
    with pytest.raises(ConfigError) as info:
        loaded.get("broken")
    assert str(broken) in str(info.value)


def test_broken_override_keeps_shipped_template(tmp_path):
    user = tmp_path / "user"
    broken = write(user, "translate_en", 'user = "$input"\nbogus = 1\n')
    loaded = load_templates([SHIPPED, user])
    assert "translate_en" in loaded.errors
    assert "bogus" in loaded.errors["translate_en"]
    assert str(broken) in loaded.errors["translate_en"]
    kept = loaded.get("translate_en")
    assert kept.origin == SHIPPED / "translate_en.toml"


def test_later_good_file_clears_earlier_error(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write(first, "x", "user = \n")
    write(second, "x", 'user = "$input"\n')
    loaded = load_templates([first, second])
    assert loaded.errors == {}
    assert loaded.get("x").origin == second / "x.toml"


def test_missing_folder_is_skipped(tmp_path):
    loaded = load_templates([tmp_path / "nope", SHIPPED])
    assert loaded.errors == {}
    assert "translate_en" in loaded.templates


def test_non_toml_files_ignored(tmp_path):
    (tmp_path / "notes.txt").write_text("not a template")
    write(tmp_path, "a", 'user = "$input"\n')
    assert set(load_templates([tmp_path]).templates) == {"a"}


def test_get_unknown_lists_known_names(tmp_path):
    loaded = load_templates([SHIPPED])
    with pytest.raises(UserInputError) as info:
        loaded.get("tranzlate")
    message = str(info.value)
    assert "tranzlate" in message
    for name in ("translate_en", "variations", "caption"):
        assert name in message


def test_get_unknown_with_no_templates(tmp_path):
    with pytest.raises(UserInputError, match="none"):
        load_templates([tmp_path]).get("anything")


# --- line numbers point at the right table -----------------------------------


def test_bad_default_of_second_variable_points_at_its_own_line(tmp_path):
    # Regression: the line was that of the first "default =" in the file.
    message = error_of(
        tmp_path,
        """
        user = "$input $a $b"
        [vars.a]
        default = "x"
        [vars.b]
        default = "poem"
        choices = { prose = "P" }
        """,
    )
    assert "$b" in message
    assert "line 5" in message


def test_unknown_key_of_second_variable_points_at_its_own_line(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input $a $b"
        [vars.a]
        default = "x"
        [vars.b]
        default = "y"
        [vars.b.choices]
        y = "Y"
        [vars.a.more]
        """,
    )
    assert "'more'" in message
    assert "line 8" in message


def test_option_error_ignores_lookalike_line_in_system_text(tmp_path):
    message = error_of(
        tmp_path,
        '''
        system = """
        temperature = 0.1 is what we use
        """
        user = "$input"
        [options]
        temperature = "hot"
        ''',
    )
    assert "temperature" in message
    assert "line 6" in message


def test_inline_variable_table_still_names_the_file(tmp_path):
    message = error_of(
        tmp_path,
        """
        user = "$input $b"
        [vars]
        b = { default = "poem", choices = { prose = "P" } }
        """,
    )
    assert "'poem'" in message
