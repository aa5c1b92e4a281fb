"""What the fuzzers (tests/test_fuzz_*.py) found, kept as plain tests: each once
raised something other than the project's own errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.tomlfile import load_toml


def test_a_number_too_long_for_python_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("default = " + "9" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="too many digits") as err:
        load_toml(path)
    assert str(path) in str(err.value)


def test_a_path_under_an_unknown_users_home_is_a_config_error(tmp_path: Path) -> None:
    from daemon.models import parse_models

    path = tmp_path / "models.toml"
    path.write_text('[models.m]\npath = "~nobody-by-this-name/m.gguf"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="names no home folder") as err:
        parse_models(load_toml(path))
    assert f"{path}, line 2" in str(err.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://[::1", "url must look like"),  # urlsplit's ValueError
        ("http://a..b/v1", "a..b is not this machine"),  # the resolver's UnicodeError (IDNA)
    ],
)
def test_urls_python_cannot_split_or_encode_are_config_errors(
    tmp_path: Path, url: str, said: str
) -> None:
    from daemon.models import parse_models

    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\nbackend = "openai"\nmodel = "m"\nurl = "{url}"\n',
                    encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match=said) as err:
        parse_models(load_toml(path))
    assert f"{path}, line 4" in str(err.value)


def test_a_template_option_too_large_for_a_float_is_a_config_error(tmp_path: Path) -> None:
    from daemon.prompts import load_template

    path = tmp_path / "t.toml"
    path.write_text('user = "$input"\n[options]\ntemperature = ' + "9" * 400 + "\n",
                    encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match="option 'temperature' must be a number") as err:
        load_template(path)
    assert f"{path}, line 3" in str(err.value)
