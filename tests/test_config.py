"""daemon/config.py: shipped hotkeys.toml, user overrides, settings, bindings, template folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon import platform
from daemon.chords import format_chord, parse_chord
from daemon.config import (
    NOTIFIERS,
    OUTPUTS,
    SOURCES,
    Binding,
    Config,
    Settings,
    check_actions,
    config_files,
    load_config,
    parse_duration,
    template_folders,
)
from daemon.errors import ConfigError
from daemon.tomlfile import tomllib

SHIPPED = Path(__file__).resolve().parents[1] / "hotkeys.toml"


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(tmp_path / "config"))


def line_of(path, key):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip().startswith(f"{key} ="):
            return number
    raise AssertionError(f"{key} not in {path}")


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def config_error(files: list[Path]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(files)
    return str(info.value)


def at(path: Path, line: int) -> str:
    """The exact prefix a message about ``path`` at ``line`` starts with."""
    return f"{path}, line {line}:"


def settings_of(tmp_path: Path, body: str) -> Settings:
    return load_config([write(tmp_path / "user.toml", body)]).settings


def by_action(config: Config) -> dict[str, Binding]:
    return {binding.action: binding for binding in config.bindings}


# --- the shipped file -------------------------------------------------------------------------


def test_shipped_file_loads_with_default_settings():
    config = load_config([SHIPPED])
    assert isinstance(config, Config)
    assert config.settings == Settings()
    assert config.settings.keep_alive_s == 30 * 60
    assert config.sources == (SHIPPED,)
    assert all(isinstance(b, Binding) for b in config.bindings)


def test_shipped_text_bindings_use_clipboard():
    bindings = by_action(load_config([SHIPPED]))
    for action in ("translate_en", "variations"):
        assert bindings[action].source == "clipboard"
    assert bindings["translate_en"].output == ("clipboard", "notify")
    # Variations go to the result window, where one is picked with 1–9.
    assert bindings["variations"].output == ("window", "clipboard")
    assert bindings["variations"].vars == {"count": "4"}
    assert bindings["translate_en"].vars == {}


def test_shipped_image_bindings_use_a_region_or_a_copied_image():
    config = load_config([SHIPPED])
    pairs = {(b.action, b.source) for b in config.bindings}
    for action in ("ocr", "caption", "ocr_translate"):
        assert (action, "region") in pairs
    assert ("caption", "clipboard_image") in pairs
    for binding in config.bindings:
        if binding.action not in ("variations", "prompt_builder"):
            assert binding.output == ("clipboard", "notify")


def test_shipped_bindings_are_canonical_distinct_and_located():
    config = load_config([SHIPPED])
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    hotkeys = [b.hotkey for b in config.bindings]
    assert len(set(hotkeys)) == len(hotkeys) == 7
    assert config.settings.cancel_hotkey not in hotkeys
    for binding in config.bindings:
        assert format_chord(parse_chord(binding.hotkey)) == binding.hotkey
        assert set(binding.output) <= set(OUTPUTS)
        assert binding.source in SOURCES
        assert binding.model is None
        prefix = f"{SHIPPED}, line "
        assert binding.where.startswith(prefix)
        # The line named is the [[binding]] header of that very binding.
        number = int(binding.where[len(prefix) :])
        assert lines[number - 1].strip() == "[[binding]]"
        assert f'action = "{binding.action}"' in lines[number : number + 5]


# --- layering ---------------------------------------------------------------------------------


def test_no_files_gives_defaults():
    config = load_config([])
    assert config.settings == Settings()
    assert config.bindings == ()
    assert config.sources == ()


def test_user_file_overrides_one_setting(tmp_path):
    user = write(tmp_path / "user.toml", "[settings]\nnotify_chars = 40\n")
    config = load_config([SHIPPED, user])
    shipped = load_config([SHIPPED])
    assert config.settings.notify_chars == 40
    # Everything else keeps the shipped value.
    assert config.settings.keep_alive_s == shipped.settings.keep_alive_s
    assert config.settings.cancel_hotkey == shipped.settings.cancel_hotkey
    assert config.settings.history == shipped.settings.history
    assert config.settings.queue_size == shipped.settings.queue_size
    # A file without bindings keeps the shipped ones.
    assert config.bindings == shipped.bindings
    assert config.sources == (SHIPPED, user)


def test_later_file_wins_key_by_key(tmp_path):
    first = write(
        tmp_path / "a.toml",
        '[settings]\nhistory = false\nnotify_chars = 10\nkeep_alive = "5m"\ntray = false\n',
    )
    second = write(tmp_path / "b.toml", '[settings]\nnotify_chars = 20\nkeep_alive = "90s"\n')
    settings = load_config([first, second]).settings
    assert settings.history is False
    assert settings.tray is False
    assert settings.notify_chars == 20
    assert settings.keep_alive_s == 90


def test_user_binding_replaces_the_shipped_one_with_its_hotkey(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [[binding]]
        hotkey = "<alt>+<shift>+<cmd>+j"
        action = "translate_en"
        source = "selection"
        output = ["paste"]
        """,
    )
    shipped = load_config([SHIPPED]).bindings
    config = load_config([SHIPPED, user])
    mine = Binding(hotkey="<alt>+<shift>+<cmd>+j", action="translate_en", source="selection",
                   output=("paste",), where=f"{user}, line 1")  # fmt: skip
    # The shipped binding on that hotkey (ocr_translate) is replaced; the others stay.
    assert config.bindings == (*(b for b in shipped if b.hotkey != "<alt>+<shift>+<cmd>+j"), mine)
    assert config.bindings[-1].origin == "user"
    assert all(b.origin == "shipped" for b in config.bindings[:-1])
    (replaced,) = config.bindings[-1].replaces
    assert replaced.startswith("<alt>+<shift>+<cmd>+j ocr_translate (") and str(SHIPPED) in replaced


def test_user_binding_replaces_the_shipped_one_with_its_action_and_source(tmp_path):
    translate = by_action(load_config([SHIPPED]))["translate_en"]
    user = write(tmp_path / "user.toml", '[[binding]]\nhotkey = "<f8>"\naction = "translate_en"\n')
    config = load_config([SHIPPED, user])
    assert translate.hotkey not in [b.hotkey for b in config.bindings]
    assert [b.hotkey for b in config.bindings if b.action == "translate_en"] == ["<f8>"]
    assert len(config.bindings) == len(load_config([SHIPPED]).bindings)
    # Another source of the same action is a binding of its own: both stay.
    selection = write(tmp_path / "sel.toml",
                      '[[binding]]\nhotkey = "<f8>"\naction = "translate_en"\n'
                      'source = "selection"\n')  # fmt: skip
    actions = [(b.action, b.source) for b in load_config([SHIPPED, selection]).bindings]
    assert actions.count(("translate_en", "clipboard")) == 1
    assert actions.count(("translate_en", "selection")) == 1


def test_user_may_reuse_a_shipped_chord_for_another_action(tmp_path):
    user = write(
        tmp_path / "user.toml",
        '[[binding]]\nhotkey = "<alt>+<shift>+<cmd>+t"\naction = "variations"\n',
    )
    config = load_config([SHIPPED, user])
    pairs = [(b.hotkey, b.action) for b in config.bindings]
    assert ("<alt>+<shift>+<cmd>+t", "variations") in pairs
    # It took the chord from translate_en and the action's place from the shipped
    # variations binding: neither of those is left.
    assert "translate_en" not in [b.action for b in config.bindings]
    assert [a for h, a in pairs if a == "variations"] == ["variations"]


def test_a_binding_is_switched_off_by_hotkey_or_by_action(tmp_path):
    shipped = load_config([SHIPPED]).bindings
    by_key = write(
        tmp_path / "a.toml", '[[binding]]\nhotkey = "<alt>+<shift>+<cmd>+t"\nenabled = false\n'
    )
    assert [b for b in load_config([SHIPPED, by_key]).bindings] == [
        b for b in shipped if b.hotkey != "<alt>+<shift>+<cmd>+t"
    ]
    by_action_ = write(tmp_path / "b.toml", '[[binding]]\naction = "caption"\nenabled = false\n'
                       'source = "clipboard_image"\n')  # fmt: skip
    left = load_config([SHIPPED, by_action_]).bindings
    assert ("caption", "region") in [(b.action, b.source) for b in left]
    assert ("caption", "clipboard_image") not in [(b.action, b.source) for b in left]
    nothing = write(tmp_path / "c.toml", "[[binding]]\nenabled = false\n")
    assert "names the hotkey or the action" in config_error([SHIPPED, nothing])


def test_shipped_bindings_can_be_left_out(tmp_path):
    user = write(tmp_path / "user.toml", "[settings]\nshipped_bindings = false\n"
                 '[[binding]]\nhotkey = "<f8>"\naction = "translate_en"\n')  # fmt: skip
    assert [b.hotkey for b in load_config([SHIPPED, user]).bindings] == ["<f8>"]


def test_empty_binding_list_removes_all_hotkeys(tmp_path):
    user = write(tmp_path / "user.toml", "binding = []\n")
    assert load_config([SHIPPED]).bindings != ()
    assert load_config([SHIPPED, user]).bindings == ()


def test_bindings_of_every_file_add_up(tmp_path):
    first = write(tmp_path / "a.toml", '[[binding]]\nhotkey = "<f1>"\naction = "x"\n')
    second = write(tmp_path / "b.toml", "[settings]\nhistory = false\n")
    config = load_config([SHIPPED, first, second])
    assert [b.hotkey for b in config.bindings][-1] == "<f1>"
    assert len(config.bindings) == len(load_config([SHIPPED]).bindings) + 1
    assert config.bindings[-1].where == f"{first}, line 1"
    assert config.settings.history is False


def test_config_files_include_user_file_when_present(tmp_path):
    assert config_files() == [platform.defaults_dir() / "hotkeys.toml"]
    user = write(tmp_path / "config" / "hotkeys.toml", "[settings]\nhistory = false\n")
    assert config_files() == [platform.defaults_dir() / "hotkeys.toml", user]
    config = load_config()
    assert config.settings.history is False
    assert config.sources[-1] == user
    assert config.bindings == load_config([SHIPPED]).bindings


def test_template_folders_shipped_first_then_user(tmp_path):
    folders = template_folders()
    assert folders == [platform.defaults_dir() / "prompts", tmp_path / "config" / "prompts"]
    assert (folders[0] / "translate_en.toml").is_file()


# --- keep_alive -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30 * 60),  # a number is minutes
        ("2.5", 150),
        ("1", 60),
        ('"90s"', 90),
        ('"30m"', 30 * 60),
        ('"30min"', 30 * 60),
        ('" 30 m "', 30 * 60),
        ('"45"', 45 * 60),  # text without a unit is minutes too
        ('"1h"', 3600),
        ('"1.5h"', 5400),
        ('"0.5s"', 0.5),
        ("0", 0),
        ('"0s"', 0),
        ("-1", -1.0),
        ('"-1"', -1.0),
        ('"-1h"', -1.0),  # any negative value means never
        ("-5", -1.0),
    ],
)
def test_keep_alive_values(tmp_path, value, seconds):
    settings = settings_of(tmp_path, f"[settings]\nkeep_alive = {value}\n")
    assert settings.keep_alive_s == seconds
    assert isinstance(settings.keep_alive_s, float)


@pytest.mark.parametrize(
    "value",
    ['"soon"', '"30 minutes"', '"1d"', '"1h30m"', '""', '"h"', '"30ms"', "true", "false", "[30]"],
)
def test_bad_keep_alive_named_with_file_and_line(tmp_path, value):
    user = write(tmp_path / "user.toml", f"[settings]\nhistory = true\nkeep_alive = {value}\n")
    message = config_error([SHIPPED, user])
    assert message.startswith(at(user, 3))
    assert "keep_alive" in message
    assert "30m" in message  # says what a valid value looks like


def test_parse_duration_directly():
    assert parse_duration(10, "w") == 600
    assert parse_duration("10s", "w") == 10
    assert parse_duration(-1, "w") == -1.0
    with pytest.raises(ConfigError, match=r"^here: keep_alive"):
        parse_duration(True, "here")
    with pytest.raises(ConfigError, match=r"^here: keep_alive.*'tomorrow'"):
        parse_duration("tomorrow", "here")


def test_old_keep_alive_minutes_is_an_unknown_key(tmp_path):
    user = write(tmp_path / "user.toml", "[settings]\nkeep_alive_minutes = 30\n")
    message = config_error([SHIPPED, user])
    assert message.startswith(at(user, 2))
    assert "'keep_alive_minutes'" in message
    assert "keep_alive," in message  # the known keys are listed


# --- other settings ---------------------------------------------------------------------------


def test_all_settings_from_one_file(tmp_path):
    settings = settings_of(
        tmp_path,
        """
        [settings]
        keep_alive = "1h"
        cancel_hotkey = "<ctrl>+<shift>+<f12>"
        history = false
        notify_chars = 1
        queue_size = 1
        notifier = "none"
        tray = false
        """,
    )
    assert settings == Settings(
        keep_alive_s=3600,
        cancel_hotkey="<ctrl>+<shift>+<f12>",
        history=False,
        notify_chars=1,
        queue_size=1,
        notifier="none",
        tray=False,
    )


@pytest.mark.parametrize("notifier", NOTIFIERS)
def test_every_notifier_accepted(tmp_path, notifier):
    assert settings_of(tmp_path, f'[settings]\nnotifier = "{notifier}"\n').notifier == notifier


def test_notifiers_listed():
    assert set(NOTIFIERS) == {"auto", "tray", "dbus", "notify-send", "osascript", "none"}
    assert Settings().notifier in NOTIFIERS


@pytest.mark.parametrize("value", ['"growl"', '"Auto"', '""', "3", "true", '["auto"]'])
def test_bad_notifier_named(tmp_path, value):
    user = write(tmp_path / "user.toml", f"[settings]\ntray = true\nnotifier = {value}\n")
    message = config_error([user])
    assert message.startswith(at(user, 3))
    assert "notifier must be auto, tray, dbus, notify-send, osascript or none, not " in message
    assert message.endswith(f"not {tomllib.loads(f'v = {value}')['v']!r}.")  # the bad value


@pytest.mark.parametrize("value", ['"wayland"', "true", '"Portal"'])
def test_bad_region_capture_named(tmp_path, value):
    user = write(tmp_path / "user.toml", f"[settings]\nregion_capture = {value}\n")
    message = config_error([user])
    assert message.startswith(at(user, 2))
    assert "region_capture must be auto, overlay or portal, not " in message


def test_region_capture_setting(tmp_path):
    user = write(tmp_path / "user.toml", '[settings]\nregion_capture = "portal"\n')
    assert load_config([user]).settings.region_capture == "portal"
    assert Settings().region_capture == "auto"


@pytest.mark.parametrize("key", ["notify_chars", "queue_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_at_least_one(tmp_path, key, value):
    user = write(tmp_path / "user.toml", f"[settings]\n{key} = {value}\n")
    message = config_error([user])
    assert message.startswith(at(user, 2))
    assert f"{key} must be at least 1" in message


@pytest.mark.parametrize(
    ("line", "key", "kind"),
    [
        ('notify_chars = "many"', "notify_chars", "an integer"),
        ("notify_chars = 1.5", "notify_chars", "an integer"),
        ("notify_chars = true", "notify_chars", "an integer"),
        ("queue_size = 2.0", "queue_size", "an integer"),
        ("queue_size = false", "queue_size", "an integer"),
        ('queue_size = "4"', "queue_size", "an integer"),
        ('history = "yes"', "history", "true or false"),
        ("history = 1", "history", "true or false"),
        ('tray = "no"', "tray", "true or false"),
        ("tray = 0", "tray", "true or false"),
        ("cancel_hotkey = 3", "cancel_hotkey", "a string"),
        ('cancel_hotkey = ["<f9>"]', "cancel_hotkey", "a string"),
    ],
)
def test_wrong_type_named(tmp_path, line, key, kind):
    user = write(tmp_path / "user.toml", f"[settings]\n{line}\n")
    message = config_error([user])
    assert message.startswith(at(user, 2))
    assert f"'{key}'" in message
    assert kind in message


@pytest.mark.parametrize(
    "chord", ["<ctrl>+<alt>", "t", "<esc>", "<ctrl>+<nope>", "<ctrl>++t", "", "<ctrl>+a+b"]
)
def test_bad_cancel_hotkey_named(tmp_path, chord):
    user = write(tmp_path / "user.toml", f'[settings]\nhistory = true\ncancel_hotkey = "{chord}"\n')
    message = config_error([SHIPPED, user])
    assert message.startswith(at(user, 3))
    assert "cancel_hotkey" in message


@pytest.mark.parametrize("chord", ["<f9>", "<ctrl>+<shift>+x", "<cmd>+<72>", "<alt_gr>+q"])
def test_good_cancel_hotkey_accepted(tmp_path, chord):
    assert settings_of(tmp_path, f'[settings]\ncancel_hotkey = "{chord}"\n').cancel_hotkey == chord


def test_unknown_setting_named_with_file_and_line(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [settings]
        history = true
        notify_char = 10
        """,
    )
    message = config_error([SHIPPED, user])
    assert message.startswith(at(user, 3))
    assert "'notify_char'" in message
    for known in ("notify_chars", "queue_size", "notifier", "tray", "keep_alive"):
        assert known in message  # the known keys are listed


def test_unknown_top_level_key_named(tmp_path):
    user = write(tmp_path / "user.toml", "[binding_list]\nx = 1\n")
    message = config_error([user])
    assert message.startswith(at(user, 1))
    assert "'binding_list'" in message


def test_settings_must_be_a_table(tmp_path):
    user = write(tmp_path / "user.toml", "settings = 3\n")
    message = config_error([user])
    assert message.startswith(at(user, 1))
    assert "'settings'" in message and "a table" in message


def test_binding_must_be_a_list(tmp_path):
    user = write(tmp_path / "user.toml", 'binding = "none"\n')
    message = config_error([user])
    assert message.startswith(at(user, 1))
    assert "'binding'" in message and "a list" in message


def test_malformed_user_toml_names_user_file_and_line(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [settings]
        history = true
        notify_chars = = 4
        """,
    )
    message = config_error([SHIPPED, user])
    assert message.startswith(f"{user}, line 3, column")
    assert str(SHIPPED) not in message
    # The previous config is untouched; a caller can keep using it.
    assert load_config([SHIPPED]).settings == Settings()


# --- bindings ---------------------------------------------------------------------------------

# A valid first binding, so the bad one's header is on line 5 and not the first match.
FIRST = """\
[[binding]]
hotkey = "<f1>"
action = "first"

"""
BAD_LINE = 5


def key_at(path: Path, key: str) -> str:
    """The prefix of a message about ``key`` of the bad binding: the key's own line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for number in range(BAD_LINE, len(lines)):
        if lines[number].startswith(f"{key} ="):
            return at(path, number + 1)
    return at(path, BAD_LINE)  # not written: the binding's header


def binding_error(tmp_path: Path, body: str) -> tuple[Path, str]:
    user = write(tmp_path / "user.toml", FIRST + "[[binding]]\n" + textwrap.dedent(body))
    return user, config_error([SHIPPED, user])


def test_binding_defaults(tmp_path):
    user = write(tmp_path / "user.toml", FIRST)
    (binding,) = load_config([user]).bindings
    assert binding == Binding(hotkey="<f1>", action="first", where=f"{user}, line 1")
    assert binding.source == "clipboard"
    assert binding.output == ("clipboard", "notify")
    assert binding.vars == {}
    assert binding.model is None


def test_binding_fields_parsed(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        # comment
        [settings]
        history = true

        [[binding]]
        hotkey = "<Ctrl_R>+<ALT>+<shift>+J"
        action = "variations"
        source = "clipboard_image"
        output = "paste"
        vars = { count = 4, style = "tags" }
        model = "qwen3-vl"
        """,
    )
    (binding,) = load_config([user]).bindings
    assert binding.hotkey == "<ctrl>+<alt>+<shift>+j"  # normalized
    assert binding.source == "clipboard_image"
    assert binding.output == ("paste",)  # a single string becomes a tuple
    assert binding.vars == {"count": "4", "style": "tags"}  # values as text
    assert binding.model == "qwen3-vl"
    assert binding.where == f"{user}, line 5"


def test_binding_vars_as_sub_table_keep_header_line(tmp_path):
    user = write(
        tmp_path / "user.toml",
        FIRST
        + """\
[[binding]]
hotkey = "<alt>+<shift>+<cmd>+v"
action = "variations"
[binding.vars]
count = "8"

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+c"
action = "caption"
""",
    )
    first, second, third = load_config([user]).bindings
    assert first.where == f"{user}, line 1"
    assert second.vars == {"count": "8"}
    assert second.where == f"{user}, line {BAD_LINE}"
    assert third.where == f"{user}, line 11"


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_accepted(tmp_path, source):
    user = write(
        tmp_path / "u.toml", FIRST.replace("[[binding]]", f'[[binding]]\nsource="{source}"')
    )
    assert load_config([user]).bindings[0].source == source


def test_all_outputs_accepted_in_order(tmp_path):
    user = write(tmp_path / "u.toml", FIRST + 'output = ["notify", "paste", "clipboard"]\n')
    assert load_config([user]).bindings[0].output == ("notify", "paste", "clipboard")


def test_unknown_binding_key_named_at_its_line(tmp_path):
    user, message = binding_error(
        tmp_path, 'hotkey = "<ctrl>+<alt>+x"\naction = "a"\n\n\noutputs = ["paste"]\n'
    )
    assert message.startswith(key_at(user, "outputs"))
    assert "'outputs'" in message
    assert "known keys: hotkey, action, source, output, vars, model, enabled" in message


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ('action = "a"\n', "hotkey"),
        ('hotkey = ""\naction = "a"\n', "hotkey"),
        ('hotkey = "   "\naction = "a"\n', "hotkey"),
        ('hotkey = 5\naction = "a"\n', "hotkey"),
        ('hotkey = "<ctrl>+<alt>+x"\n', "action"),
        ('hotkey = "<ctrl>+<alt>+x"\naction = ""\n', "action"),
        ('hotkey = "<ctrl>+<alt>+x"\naction = ["a"]\n', "action"),
    ],
)
def test_missing_hotkey_or_action_named(tmp_path, body, missing):
    user, message = binding_error(tmp_path, body)
    assert message.startswith(key_at(user, missing))
    assert f"needs {missing} =" in message


@pytest.mark.parametrize("value", ['"camera"', '"Clipboard"', "3", '["clipboard"]'])
def test_bad_source_named(tmp_path, value):
    user, message = binding_error(
        tmp_path, f'hotkey = "<ctrl>+<alt>+x"\naction = "a"\nsource = {value}\n'
    )
    assert message.startswith(key_at(user, "source"))
    assert (
        "source must be one of clipboard, selection, region, last_region, clipboard_image"
        in message
    )


@pytest.mark.parametrize("value", ['["clipboard", "screen"]', '"screen"', "3", "[1]", "{ a = 1 }"])
def test_bad_output_named(tmp_path, value):
    user, message = binding_error(
        tmp_path, f'hotkey = "<ctrl>+<alt>+x"\naction = "a"\noutput = {value}\n'
    )
    assert message.startswith(key_at(user, "output"))
    assert "output must be a non-empty list of clipboard, paste, notify, window" in message
    assert ("'screen'" in message) == ("screen" in value)  # the bad value is named


@pytest.mark.parametrize("value", ['"count=4"', '["count"]', "4"])
def test_vars_not_a_table_named(tmp_path, value):
    user, message = binding_error(
        tmp_path, f'hotkey = "<ctrl>+<alt>+x"\naction = "a"\nvars = {value}\n'
    )
    assert message.startswith(key_at(user, "vars"))
    assert "vars must be a table" in message


def test_model_not_a_string_named(tmp_path):
    user, message = binding_error(tmp_path, 'hotkey = "<ctrl>+<alt>+x"\naction = "a"\nmodel = 3\n')
    assert message.startswith(key_at(user, "model"))
    assert "model must be" in message


@pytest.mark.parametrize(
    ("chord", "says"),
    [
        ("<ctrl>+<alt>", "only modifiers"),
        ("t", "no modifier"),
        ("<ctrl>+<bogus>", "<bogus>"),
        ("<ctrl>++t", "empty key"),
        ("<ctrl>+a+b", "more than one"),
        ("<ctrl>+<ctrl_l>+t", "twice"),
        ("<ctrl>+tt", "'tt'"),
    ],
)
def test_bad_chord_named(tmp_path, chord, says):
    user, message = binding_error(tmp_path, f'hotkey = "{chord}"\naction = "a"\n')
    assert message.startswith(key_at(user, "hotkey"))
    assert "hotkey" in message
    assert says in message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("<ctrl>+<alt>+t", "<ctrl>+<alt>+t"),
        ("<ctrl>+<alt>+t", "<ctrl_l>+<alt>+T"),
        ("<ctrl>+<alt>+t", "<alt_r>+<ctrl_r>+t"),
        ("<f9>", "<F9>"),
        ("<cmd>+<72>", "<cmd_l>+<072>"),
    ],
)
def test_duplicate_chord_names_both_places(tmp_path, first, second):
    user = write(
        tmp_path / "user.toml",
        f"""
        [[binding]]
        hotkey = "{first}"
        action = "a"

        [[binding]]
        hotkey = "<alt>+<shift>+<cmd>+z"
        action = "b"

        [[binding]]
        hotkey = "{second}"
        action = "c"
        """,
    )
    message = config_error([SHIPPED, user])
    canonical = format_chord(parse_chord(first))
    assert message == f"{user}, line 9: {canonical} is already bound at {user}, line 1."


def test_duplicates_in_inline_bindings_name_their_index(tmp_path):
    user = write(
        tmp_path / "user.toml",
        'binding = [{ hotkey = "<f2>", action = "a" }, { hotkey = "<F2>", action = "b" }]\n',
    )
    message = config_error([user])
    assert message == f"{user}, binding 2: <f2> is already bound at {user}, binding 1."


def test_binding_not_a_table_named(tmp_path):
    user = write(tmp_path / "user.toml", 'binding = [{ hotkey = "<f2>", action = "a" }, 3]\n')
    message = config_error([user])
    assert message.startswith(f"{user}, binding 2:")
    assert "must be a table" in message


@pytest.mark.parametrize(
    "chord", ["<alt>+<shift>+<cmd>+x", "<cmd_r>+<shift_l>+<alt_r>+X", "<shift>+<cmd>+<alt>+x"]
)
def test_binding_on_the_cancel_hotkey_refused(tmp_path, chord):
    user, message = binding_error(tmp_path, f'hotkey = "{chord}"\naction = "a"\n')
    assert message == (
        f"{user}, line {BAD_LINE}: <alt>+<shift>+<cmd>+x is the cancel hotkey "
        f"(set at {SHIPPED}, line {line_of(SHIPPED, 'cancel_hotkey')})."
    )


def test_changed_cancel_hotkey_takes_the_chord_of_a_shipped_binding(tmp_path):
    user = write(tmp_path / "user.toml", '[settings]\ncancel_hotkey = "<cmd>+<alt>+<shift>+T"\n')
    config = load_config([SHIPPED, user])
    # The user's own setting wins: the shipped binding on that chord is left out.
    assert config.settings.cancel_hotkey == "<alt>+<shift>+<cmd>+t"
    assert "<alt>+<shift>+<cmd>+t" not in [b.hotkey for b in config.bindings]
    assert len(config.bindings) == len(load_config([SHIPPED]).bindings) - 1


def test_changed_cancel_hotkey_clashes_with_the_users_own_binding(tmp_path):
    user = write(tmp_path / "user.toml", '[settings]\ncancel_hotkey = "<f7>"\n\n'
                 '[[binding]]\nhotkey = "<F7>"\naction = "a"\n')  # fmt: skip
    assert config_error([SHIPPED, user]) == (
        f"{user}, line 4: <f7> is the cancel hotkey (set at {user}, line 2)."
    )


def test_changed_cancel_hotkey_frees_the_old_chord(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [settings]
        cancel_hotkey = "<pause>"

        [[binding]]
        hotkey = "<alt>+<shift>+<cmd>+x"
        action = "a"
        """,
    )
    config = load_config([SHIPPED, user])
    assert config.settings.cancel_hotkey == "<pause>"
    assert [b.hotkey for b in config.bindings][-1] == "<alt>+<shift>+<cmd>+x"


def test_broken_bindings_in_an_earlier_file_are_an_error(tmp_path):
    # Each file is checked as it is read, even if a later file replaces its bindings.
    bad = write(tmp_path / "a.toml", '[[binding]]\nhotkey = "t"\naction = "a"\n')
    good = write(tmp_path / "b.toml", FIRST)
    message = config_error([bad, good])
    assert message.startswith(at(bad, 2))  # the hotkey's own line


# --- check_actions ----------------------------------------------------------------------------

ACTIONS = {"translate_en", "variations", "caption"}
VARIABLES = {"translate_en": {"style"}, "variations": {"count", "style"}, "caption": {"style"}}


def test_check_actions_accepts_known_actions_and_vars(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [[binding]]
        hotkey = "<alt>+<shift>+<cmd>+t"
        action = "translate_en"

        [[binding]]
        hotkey = "<alt>+<shift>+<cmd>+v"
        action = "variations"
        vars = { count = "4", style = "tags" }
        """,
    )
    assert check_actions(load_config([user]), ACTIONS, VARIABLES) is None


def test_check_actions_unknown_action_named(tmp_path):
    user = write(
        tmp_path / "user.toml",
        FIRST.replace('"first"', '"translate_en"')
        + '[[binding]]\nhotkey = "<f3>"\naction = "ocr"\n',
    )
    with pytest.raises(ConfigError) as info:
        check_actions(load_config([user]), ACTIONS, VARIABLES)
    assert str(info.value) == f"{user}, line {BAD_LINE}: unknown action 'ocr'."


def test_check_actions_unknown_var_named(tmp_path):
    user = write(
        tmp_path / "user.toml",
        FIRST.replace('"first"', '"variations"')
        + '[[binding]]\nhotkey = "<f3>"\naction = "translate_en"\nvars = { count = "4" }\n',
    )
    with pytest.raises(ConfigError) as info:
        check_actions(load_config([user]), ACTIONS, VARIABLES)
    # Named at the line of vars, where the variable is written.
    assert (
        str(info.value) == f"{user}, line {BAD_LINE + 3}: 'translate_en' has no variable 'count'."
    )


def test_every_problem_of_every_file_is_reported_at_once(tmp_path):
    first = write(tmp_path / "a.toml", '[settings]\nqueue_size = 0\nnotifier = "growl"\n')
    second = write(
        tmp_path / "b.toml",
        """
        [[binding]]
        hotkey = "<ctrl>+<alt>+x"
        action = "a"
        source = "camera"
        output = ["clipboard", "screen"]

        [[binding]]
        hotkey = "q"
        action = "b"
        [binding.vars]
        count = true
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config([first, second])
    problems = info.value.problems
    assert problems == [
        f"{first}, line 2: queue_size must be at least 1, not 0.",
        f"{first}, line 3: notifier must be auto, tray, dbus, notify-send, osascript or none, "
        "not 'growl'.",
        f"{second}, line 4: source must be one of clipboard, selection, region, last_region, "
        "clipboard_image, not 'camera'.",
        f"{second}, line 5: output must be a non-empty list of clipboard, paste, notify, window; "
        "'screen' is none of them.",
        f"{second}, line 8: hotkey 'q' has no modifier (<ctrl>, <alt> or <cmd>) and would fire "
        "while you type.",
        f"{second}, line 10: vars must be a table of texts or numbers, e.g. vars = "
        "{ count = \"4\" }, not {'count': True}.",
    ]
    assert str(info.value) == "6 problems:\n" + "\n".join(problems)


def test_check_actions_reports_every_binding(tmp_path):
    user = write(tmp_path / "user.toml", '[[binding]]\nhotkey = "<f2>"\naction = "nope"\n\n'
                 '[[binding]]\nhotkey = "<f3>"\naction = "variations"\n'
                 'vars = { n = "1", count = "2" }\n'
                 '[[binding]]\nhotkey = "<f4>"\naction = "gone"\n')  # fmt: skip
    with pytest.raises(ConfigError) as info:
        check_actions(load_config([user]), ACTIONS, VARIABLES)
    assert info.value.problems == [
        f"{user}, line 1: unknown action 'nope'.",
        f"{user}, line 8: 'variations' has no variable 'n'.",
        f"{user}, line 9: unknown action 'gone'.",
    ]


def test_check_actions_action_without_variables_refuses_any_var(tmp_path):
    user = write(tmp_path / "user.toml", FIRST + 'vars = { x = "1" }\n')
    with pytest.raises(ConfigError, match=r"'first' has no variable 'x'"):
        check_actions(load_config([user]), {"first"}, {})
    # Without vars the same binding passes.
    check_actions(load_config([write(tmp_path / "v.toml", FIRST)]), {"first"}, {})


def test_check_actions_on_shipped_bindings_with_their_actions():
    config = load_config([SHIPPED])
    actions = {b.action for b in config.bindings}
    check_actions(config, actions, {"variations": {"count"}})
    with pytest.raises(ConfigError, match=r"has no variable 'count'"):
        check_actions(config, actions, {})
    with pytest.raises(ConfigError, match=r"unknown action 'caption'"):
        check_actions(config, actions - {"caption"}, {"variations": {"count"}})
