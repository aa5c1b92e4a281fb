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


@pytest.mark.parametrize("value", [10**400, 1e308, '"' + "9" * 400 + 'h"'],
                         ids=["huge-int", "1e308-minutes", "huge-text"])  # fmt: skip
def test_a_keep_alive_no_float_holds_is_a_config_error(tmp_path: Path, value: object) -> None:
    from daemon.config import load_config

    path = tmp_path / "hotkeys.toml"
    path.write_text(f"[settings]\nkeep_alive = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="keep_alive is too long") as err:
        load_config([path])
    assert f"{path}, line 2" in str(err.value)


def test_a_keep_alive_of_centuries_leaves_the_action_thread_running(tmp_path: Path) -> None:
    """Its wait once overflowed the lock's timeout and ended the action thread."""
    from concurrent.futures import Future

    from fakes import FakeEngine
    from test_service import FakeDesktop

    from daemon.config import Config, Settings
    from daemon.models import ModelsConfig, ModelSpec
    from daemon.service import Job, Service

    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\x00" * 28)
    config = Config(settings=Settings(keep_alive_s=1e30))
    service = Service(FakeDesktop(), lambda _spec: FakeEngine(), config_loader=lambda: config)
    service.load()
    service.models = ModelsConfig(models={"m": ModelSpec(name="m", path=tmp_path / "m.gguf")},
                                  default="m")  # fmt: skip
    service.start(preload=False)
    try:
        for text in ("one", "two"):  # the second waits on the first's keep_alive
            job = Job(action="translate_en", source="clipboard", outputs=("clipboard",),
                      text=text, future=Future())  # fmt: skip
            assert service.submit(job)
            assert job.future.result(timeout=10).text == "A cat sits."
        assert service._thread is not None and service._thread.is_alive()
    finally:
        service.stop()
