"""daemon/config.py: shipped hotkeys.toml, user overrides, template folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon import platform
from daemon.config import Config, Settings, config_files, load_config, template_folders
from daemon.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "hotkeys.toml"


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(tmp_path / "config"))


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def config_error(files: list[Path]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(files)
    return str(info.value)


def test_shipped_file_loads():
    config = load_config([SHIPPED])
    assert isinstance(config, Config)
    assert config.settings == Settings()
    actions = [b["action"] for b in config.bindings]
    assert actions[:2] == ["translate_en", "variations"]
    assert all(b["_file"] == str(SHIPPED) for b in config.bindings)
    assert config.sources == (SHIPPED,)


def test_shipped_bindings_have_hotkeys_and_outputs():
    for binding in load_config([SHIPPED]).bindings:
        assert binding["hotkey"].startswith("<")
        assert set(binding["output"]) <= {"clipboard", "paste", "notify"}


def test_no_files_gives_defaults():
    config = load_config([])
    assert config.settings == Settings()
    assert config.bindings == ()


def test_user_file_overrides_one_setting(tmp_path):
    user = write(tmp_path / "user.toml", "[settings]\nnotify_chars = 40\n")
    config = load_config([SHIPPED, user])
    assert config.settings.notify_chars == 40
    # Everything else keeps the shipped value.
    shipped = load_config([SHIPPED]).settings
    assert config.settings.keep_alive_minutes == shipped.keep_alive_minutes
    assert config.settings.cancel_hotkey == shipped.cancel_hotkey
    assert config.settings.history == shipped.history
    # A file without bindings keeps the shipped ones.
    assert config.bindings == load_config([SHIPPED]).bindings
    assert config.sources == (SHIPPED, user)


def test_later_file_wins_key_by_key(tmp_path):
    first = write(tmp_path / "a.toml", "[settings]\nhistory = false\nnotify_chars = 10\n")
    second = write(tmp_path / "b.toml", "[settings]\nnotify_chars = 20\n")
    settings = load_config([first, second]).settings
    assert settings.history is False
    assert settings.notify_chars == 20


def test_user_bindings_replace_shipped_as_a_whole(tmp_path):
    user = write(
        tmp_path / "user.toml",
        """
        [[binding]]
        hotkey = "<ctrl>+<alt>+j"
        action = "translate_en"
        source = "selection"
        output = ["paste"]
        """,
    )
    config = load_config([SHIPPED, user])
    assert len(config.bindings) == 1
    assert config.bindings[0]["hotkey"] == "<ctrl>+<alt>+j"
    assert config.bindings[0]["_file"] == str(user)


def test_empty_binding_list_removes_all_hotkeys(tmp_path):
    user = write(tmp_path / "user.toml", "binding = []\n")
    assert load_config([SHIPPED, user]).bindings == ()


def test_bindings_come_from_last_file_that_has_any(tmp_path):
    first = write(tmp_path / "a.toml", '[[binding]]\nhotkey = "<f1>"\naction = "x"\n')
    second = write(tmp_path / "b.toml", "[settings]\nhistory = false\n")
    config = load_config([SHIPPED, first, second])
    assert [b["hotkey"] for b in config.bindings] == ["<f1>"]
    assert config.bindings[0]["_file"] == str(first)


def test_int_accepted_for_float_setting(tmp_path):
    user = write(tmp_path / "u.toml", "[settings]\nkeep_alive_minutes = 2.5\n")
    assert load_config([user]).settings.keep_alive_minutes == 2.5
    user = write(tmp_path / "v.toml", "[settings]\nkeep_alive_minutes = -1\n")
    assert load_config([user]).settings.keep_alive_minutes == -1


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
    assert "'notify_char'" in message
    assert str(user) in message
    assert "line 3" in message
    assert "notify_chars" in message  # the known keys are listed


def test_unknown_top_level_key_named(tmp_path):
    user = write(tmp_path / "user.toml", "[binding_list]\nx = 1\n")
    message = config_error([user])
    assert "'binding_list'" in message
    assert "line 1" in message


@pytest.mark.parametrize(
    ("line", "key", "kind"),
    [
        ('notify_chars = "many"', "notify_chars", "an integer"),
        ("notify_chars = 1.5", "notify_chars", "an integer"),
        ('history = "yes"', "history", "true or false"),
        ("history = 1", "history", "true or false"),
        ("cancel_hotkey = 3", "cancel_hotkey", "a string"),
        ("keep_alive_minutes = true", "keep_alive_minutes", "an integer or a number"),
    ],
)
def test_wrong_type_named(tmp_path, line, key, kind):
    user = write(tmp_path / "user.toml", f"[settings]\n{line}\n")
    message = config_error([user])
    assert f"'{key}'" in message
    assert kind in message
    assert str(user) in message
    assert "line 2" in message


def test_settings_must_be_a_table(tmp_path):
    user = write(tmp_path / "user.toml", "settings = 3\n")
    message = config_error([user])
    assert "'settings'" in message and "a table" in message


def test_binding_must_be_a_list(tmp_path):
    user = write(tmp_path / "user.toml", 'binding = "none"\n')
    message = config_error([user])
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
    assert str(user) in message
    assert str(SHIPPED) not in message
    assert "line 3" in message
    # The previous config is untouched; a caller can keep using it.
    assert load_config([SHIPPED]).settings == Settings()


def test_template_folders_shipped_first_then_user(tmp_path):
    folders = template_folders()
    assert folders == [platform.defaults_dir() / "prompts", tmp_path / "config" / "prompts"]
    assert (folders[0] / "translate_en.toml").is_file()


def test_config_files_include_user_file_when_present(tmp_path):
    assert config_files() == [platform.defaults_dir() / "hotkeys.toml"]
    user = write(tmp_path / "config" / "hotkeys.toml", "[settings]\nhistory = false\n")
    assert config_files() == [platform.defaults_dir() / "hotkeys.toml", user]
    config = load_config()
    assert config.settings.history is False
    assert config.sources[-1] == user
    assert len(config.bindings) == len(load_config([SHIPPED]).bindings)
