"""Fuzzing the config files: hotkeys.toml, templates and models.toml, mutated.

Each example starts from a shipped file (or a valid example) and mutates it: lines
dropped, duplicated or swapped, values of other types, random strings, invalid
TOML, unicode, huge numbers, tables where lists belong.  Loading must either
succeed or raise one of the project's own errors with a message that names the
file; and a running service that reloads a broken file keeps its last good config.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import config as config_module
from daemon.errors import YomitoriError
from daemon.models import parse_models
from daemon.prompts import load_template
from daemon.tomlfile import load_toml

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HOTKEYS = (ROOT / "hotkeys.toml").read_text(encoding="utf-8")
TEMPLATES = {path.name: path.read_text(encoding="utf-8")
             for path in sorted((ROOT / "prompts").glob("*.toml"))}  # fmt: skip
# Every backend and every key a model section may have (the GGUF paths need not exist:
# loading models.toml never opens them).
MODELS = """
default = "local"

[models.local]
path = "~/models/model.gguf"
mmproj = "mmproj.gguf"
n_ctx = 8192
n_gpu_layers = -1
flash_attn = true
threads = 6
chat_format = "chatml"

[models.managed]
backend = "llama-server"
path = "/models/model.gguf"
server = "bin/llama-server"
share = true
port = 8081
args = ["--parallel", "2"]
timeout_s = 120

[models.ollama]
backend = "ollama"
model = "qwen2.5:7b"
n_ctx = 4096

[models.studio]
backend = "openai"
url = "http://127.0.0.1:1234/v1"
model = "qwen3-vl-8b"
api_key_env = "STUDIO_KEY"
allow_remote = false
vision = true
timeout_s = 30.5
"""

KEYS = sorted({
    *config_module._SETTING_KEYS, *config_module._BINDING_KEYS,
    "default", "models", "backend", "path", "mmproj", "n_ctx", "n_gpu_layers", "flash_attn",
    "threads", "chat_format", "server", "share", "port", "args", "timeout_s", "url", "model",
    "api_key_env", "allow_remote", "vision", "name", "description", "kind", "system", "user",
    "vars", "options", "steps", "choices", "temperature", "max_tokens", "stop", "seed", "think",
})  # fmt: skip
HEADERS = ("[settings]", "[[binding]]", "[models]", "[models.x]", "[models.local]", "[vars]",
           "[vars.style]", "[vars.style.choices]", "[options]", "[[models]]", "[[settings]]",
           "[binding]", "[[vars]]", "[options.stop]", "[")  # fmt: skip


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string, mostly


ODD_LITERALS = (
    "9" * 30, "-" + "9" * 400, "9" * 5000, "0x" + "f" * 40, "1e308", "-1e308", "1e-320", "inf",
    "-inf", "nan", "0", "-1", "true", "false", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z",
    "[]", "{}", "[[]]", '[1, "a"]', "{ a = 1 }", '{ a = { b = [] } }', '"', "'''", '"""', "[",
    "{", "=", "", '"~nobody-here/x.gguf"', '"~"', '"http://[::1"', '"http://a..b"',
    '"http://127.0.0.1:99999"', '"http://\\u0000"', '"ftp://127.0.0.1"', '"<ctrl>+<alt>+"',
    '"<ctrl>+<alt>+<esc>"', '"$"', '"$input $nope"', '"${"', '"99999999999999999999999m"',
    '"-0s"', '"1e3m"', '"clipboard"', '["paste", "paste"]', '"\\u0000"', '"a\\nb"',
)  # fmt: skip

LITERALS = st.one_of(
    st.sampled_from(ODD_LITERALS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=40).map(_string),
    st.lists(st.text(max_size=8).map(_string), max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
    st.dictionaries(st.sampled_from(KEYS), st.integers().map(str), max_size=3).map(
        lambda d: "{ " + ", ".join(f"{k} = {v}" for k, v in d.items()) + " }"
    ),
    st.text(max_size=20),  # not TOML at all
)
LINES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEYS) | st.text(max_size=12), LITERALS),
    st.sampled_from(HEADERS),
    st.text(max_size=30),
)


@st.composite
def mutated(draw: st.DrawFn, base: str) -> str:
    """``base`` with one to four mutations."""
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("drop", "duplicate", "swap", "value", "rename", "insert",
                                   "truncate", "char", "value", "value")))  # fmt: skip
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "drop" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op in ("value", "rename") and lines:
            # Aim at lines that set something: that is where types and values matter.
            setters = [n for n, line in enumerate(lines) if "=" in line] or [i]
            n = draw(st.sampled_from(setters))
            key, _, value = lines[n].partition("=")
            if op == "value":
                lines[n] = f"{key}= {draw(LITERALS)}"
            else:
                lines[n] = f"{draw(st.sampled_from(KEYS) | st.text(max_size=10))} ={value}"
        elif op == "insert":
            lines.insert(i, draw(LINES))
        elif op == "truncate":
            text = "\n".join(lines)
            lines = text[: draw(st.integers(0, len(text)))].splitlines()
        elif op == "char" and lines:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.characters()) + line[at:]
    return "\n".join(lines) + "\n"


def offline_getaddrinfo(host: Any, *_args: Any, **_kwargs: Any) -> Any:
    """The resolver, minus the network: names are encoded as the real one does first
    (which fails for some), then found nowhere.  Fuzzed hosts never reach DNS."""
    if isinstance(host, str):
        host.encode("idna")
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@contextmanager
def no_dns() -> Iterator[None]:
    with mock.patch.object(socket, "getaddrinfo", offline_getaddrinfo):
        yield


def assert_loads_or_says_why(load: Callable[[Path], Any], path: Path, text: str) -> None:
    """Loading ``text`` from ``path`` succeeds, or raises a project error that names the
    file in a sentence; any other exception fails the example."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        with no_dns():
            load(path)
    except YomitoriError as err:
        message = str(err)
        assert str(path) in message, message
        assert message.rstrip().endswith("."), message
        assert "Traceback" not in message, message


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-config-"))


def test_the_unmutated_files_load(folder: Path) -> None:
    """The starting points are valid: mutations, not the bases, make the errors."""
    (folder / "hotkeys.toml").write_text(HOTKEYS, encoding="utf-8")
    assert config_module.load_config([folder / "hotkeys.toml"]).bindings
    (folder / "models.toml").write_text(MODELS, encoding="utf-8")
    assert set(parse_models(load_toml(folder / "models.toml")).models) == {
        "local", "managed", "ollama", "studio"}  # fmt: skip
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text, encoding="utf-8")
        assert load_template(folder / name).name == name.removesuffix(".toml")


@EXAMPLES
@given(text=mutated(HOTKEYS))
def test_mutated_hotkeys_toml(folder: Path, text: str) -> None:
    path = folder / "hotkeys.toml"
    assert_loads_or_says_why(lambda p: config_module.load_config([p]), path, text)


@EXAMPLES
@given(text=mutated(MODELS))
def test_mutated_models_toml(folder: Path, text: str) -> None:
    assert_loads_or_says_why(lambda p: parse_models(load_toml(p)), folder / "models.toml", text)


@EXAMPLES
@given(data=st.data(), name=st.sampled_from(sorted(TEMPLATES)))
def test_mutated_templates(folder: Path, data: st.DataObject, name: str) -> None:
    text = data.draw(mutated(TEMPLATES[name]))
    assert_loads_or_says_why(load_template, folder / name, text)


@EXAMPLES
@given(raw=st.binary(max_size=200))
def test_files_that_are_not_text(folder: Path, raw: bytes) -> None:
    for load, name in ((lambda p: config_module.load_config([p]), "hotkeys.toml"),
                       (lambda p: parse_models(load_toml(p)), "models.toml"),
                       (load_template, "translate_en.toml")):  # fmt: skip
        path = folder / name
        path.write_bytes(raw)
        try:
            load(path)
        except YomitoriError as err:
            assert str(path) in str(err)


# -- a running service reloads broken files and keeps the last good config ----------


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A started Service on the real loaders, a fake desktop and a fake engine, with
    the user's config folder in ``tmp_path/config``."""
    from fakes import FakeEngine
    from test_service import FakeDesktop, FakeOcr

    from daemon.service import Service

    folder = tmp_path / "config"
    (folder / "prompts").mkdir(parents=True)
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\x00" * 28)
    (folder / "models.toml").write_text(
        f'default = "m"\n[models.m]\npath = "{(tmp_path / "m.gguf").as_posix()}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(folder))
    monkeypatch.delenv("YOMITORI_MODEL", raising=False)
    engine = FakeEngine()
    running = Service(FakeDesktop(), lambda _spec: engine, history=None,
                      ocr={"rapidocr": FakeOcr()})  # fmt: skip
    running.good_models = (folder / "models.toml").read_text(encoding="utf-8")
    running.load()
    running.start(preload=False)
    yield running
    running.stop()


def _translate(service: Any) -> str:
    from daemon.service import Job

    job = Job(action="translate_en", source="clipboard", outputs=("clipboard",),
              text="猫", future=Future())  # fmt: skip
    assert service.submit(job)
    return job.future.result(timeout=10).text


@EXAMPLES
@given(data=st.data(), which=st.sampled_from(("hotkeys.toml", "models.toml", "template")))
def test_reload_of_a_broken_file_keeps_the_last_good_config(
    service: Any, data: st.DataObject, which: str
) -> None:
    folder = Path(service.models.path).parent
    files = {"hotkeys.toml": folder / "hotkeys.toml", "models.toml": folder / "models.toml",
             "template": folder / "prompts" / "translate_en.toml"}  # fmt: skip
    good = {"hotkeys.toml": HOTKEYS, "models.toml": service.good_models,
            "template": TEMPLATES["translate_en.toml"]}  # fmt: skip
    for name, path in files.items():  # every example starts from the good files
        path.write_text(good[name], encoding="utf-8")
    assert service.reload() is None
    target = files[which]
    before = (service.config, service.models, service.templates)
    bindings = [(b.hotkey, b.action) for b in service.config.bindings]

    target.write_text(data.draw(mutated(good[which])), encoding="utf-8", errors="surrogatepass")
    with no_dns():
        error = service.reload()
    if error is None:
        return  # a mutation that is still a valid file: nothing to keep
    assert (service.config, service.models, service.templates) == before
    assert [(b.hotkey, b.action) for b in service.config.bindings] == bindings
    assert target.name in error and "Traceback" not in error
    assert service.last_error == error
    assert _translate(service) == "A cat sits."  # still usable on the old config
