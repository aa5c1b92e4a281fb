"""daemon/backends: each backend parses its own models.toml section; mistakes name the
file, the line and the key, like the rest of models.toml."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from daemon import backends
from daemon.backends.common import check_url, is_loopback_host
from daemon.errors import ConfigError, ModelError
from daemon.models import load_models


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("YOMITORI_MODEL", raising=False)


def write(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def error_of(tmp_path: Path, body: str) -> str:
    path = write(tmp_path / "config", body)
    with pytest.raises(ConfigError) as info:
        load_models(tmp_path / "config")
    assert str(path) in str(info.value)
    return str(info.value)


def test_every_backend_module_has_the_same_names():
    for name in backends.BACKENDS:
        module = backends.get(name)
        for attr in ("KEYS", "OPTIONS", "UNLOAD", "parse", "check", "engine_key", "make_engine"):
            assert hasattr(module, attr), f"{name} lacks {attr}"
        assert name == module.NAME
        # Every option a template may set has a wire name or is knowingly dropped.
        assert {"temperature", "top_p", "max_tokens"} <= set(module.OPTIONS)


def test_default_backend_is_llama_cpp(tmp_path):
    write(tmp_path / "config", '[models.m]\npath = "m.gguf"\n')
    spec = load_models(tmp_path / "config").models["m"]
    assert spec.backend == "llama-cpp"
    assert spec.path == tmp_path / "config" / "m.gguf"


def test_sections_of_every_backend(tmp_path):
    write(
        tmp_path / "config",
        """
        [models.local]
        backend = "llama-server"
        path = "q.gguf"
        mmproj = "mmproj.gguf"
        server = "bin/llama-server"
        share = true
        port = 8099
        args = ["--ctx-checkpoints", "8"]

        [models.studio]
        backend = "openai"
        url = "http://localhost:1234/"
        model = "qwen2.5-vl-7b-instruct"
        api_key_env = "LMSTUDIO_KEY"

        [models.llava]
        backend = "ollama"
        model = "qwen2.5vl:7b"
        n_ctx = 8192
        vision = true
        """,
    )
    config = load_models(tmp_path / "config")
    local, studio, llava = (config.models[n] for n in ("local", "studio", "llava"))
    assert local.backend == "llama-server" and local.vision
    assert local.opt("server") == str(tmp_path / "config" / "bin" / "llama-server")
    assert local.opt("share") is True and local.opt("port") == 8099
    assert local.opt("args") == ("--ctx-checkpoints", "8")
    assert studio.url == "http://localhost:1234" and studio.remote == "qwen2.5-vl-7b-instruct"
    assert studio.path is None and not studio.vision  # unknown until the server is asked
    assert studio.opt("api_key_env") == "LMSTUDIO_KEY"
    assert llava.url == "http://127.0.0.1:11434" and llava.opt("num_ctx") == 8192
    assert llava.vision  # declared
    assert len({backends.engine_key(s) for s in (local, studio, llava)}) == 3


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        (
            '[models.m]\nbackend = "vllm"\npath = "m.gguf"\n',
            2,
            ["unknown backend 'vllm'", "ollama"],
        ),
        ('[models.m]\nbackend = "openai"\nmodel = "x"\n', 1, ["needs url", "1234"]),
        ('[models.m]\nbackend = "ollama"\n', 1, ["needs model", "--discover"]),
        ('[models.m]\nbackend = "ollama"\nmodel = "x"\npath = "m.gguf"\n', 4, ["'path'", "GGUF"]),
        (
            '[models.m]\nbackend = "openai"\nurl = "http://127.0.0.1:1"\nmodel = "x"\n'
            "n_gpu_layers = 3\n",
            5,
            ["unknown key 'n_gpu_layers'"],
        ),
        ('[models.m]\npath = "m.gguf"\nurl = "http://127.0.0.1:1"\n', 3, ["'url'", "server"]),
        ('[models.m]\nbackend = "ollama"\nmodel = "x"\nurl = "ftp://h"\n', 4, ["http://"]),
        (
            '[models.m]\nbackend = "openai"\nurl = "http://192.0.2.7:8000"\nmodel = "x"\n',
            3,
            ["not this machine", "allow_remote"],
        ),
        (
            '[models.m]\nbackend = "ollama"\nmodel = "x"\nallow_remote = "yes"\n',
            4,
            ["'allow_remote'", "true or false"],
        ),
        ('[models.m]\nbackend = "llama-server"\npath = "m.gguf"\nport = 8099\n', 4, ["share"]),
        (
            '[models.m]\nbackend = "llama-server"\npath = "m.gguf"\nargs = ["--port", "1"]\n',
            4,
            ["--port"],
        ),
        ('[models.m]\nbackend = 3\npath = "m.gguf"\n', 2, ["'backend'", "a string"]),
        ('[models.m]\nbackend = "ollama"\nmodel = "x"\ntimeout_s = 0\n', 4, ["timeout_s"]),
    ],
)
def test_bad_sections_name_file_line_and_key(tmp_path, body, line, words):
    message = error_of(tmp_path, body)
    assert f"line {line}" in message, message
    for word in words:
        assert word in message, message


def test_remote_url_allowed_when_the_section_says_so(tmp_path):
    write(
        tmp_path / "config",
        '[models.m]\nbackend = "openai"\nurl = "http://192.0.2.7:8000"\nmodel = "x"\n'
        "allow_remote = true\n",
    )
    spec = load_models(tmp_path / "config").models["m"]
    assert spec.opt("allow_remote") is True


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["192.168.1.2", "10.0.0.1", "8.8.8.8", "example.invalid"])
def test_other_hosts_are_not_loopback(host, monkeypatch):
    # Name look-ups answer from here: nothing is asked of the network.
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_k: (_ for _ in ()).throw(OSError()))
    assert not is_loopback_host(host)
    with pytest.raises(ModelError, match="allow_remote"):
        check_url(f"http://{host}:8000", allow_remote=False)
    check_url(f"http://{host}:8000", allow_remote=True)


def test_a_name_resolving_to_loopback_is_loopback(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_k: [(2, 1, 6, "", ("127.0.0.1", 0))])
    assert is_loopback_host("my-box.lan")


def test_missing_api_key_variable_is_said(monkeypatch, tmp_path):
    from daemon.backends.openai import api_key

    write(
        tmp_path / "config",
        '[models.m]\nbackend = "openai"\nurl = "http://127.0.0.1:9"\nmodel = "x"\n'
        'api_key_env = "YOMITORI_TEST_KEY"\n',
    )
    spec = load_models(tmp_path / "config").models["m"]
    monkeypatch.delenv("YOMITORI_TEST_KEY", raising=False)
    with pytest.raises(ModelError, match=r"\$YOMITORI_TEST_KEY"):
        api_key(spec)
    monkeypatch.setenv("YOMITORI_TEST_KEY", "s3cret")
    assert api_key(spec) == "s3cret"


def test_wire_options_per_backend(tmp_path):
    from daemon.models import ModelSpec

    options = {"temperature": 0.2, "max_tokens": 40, "stop": ["\n"], "think": False}
    ollama = ModelSpec(name="o", backend="ollama", url="http://127.0.0.1:11434", remote="x")
    assert backends.wire_options(ollama, options) == {
        "temperature": 0.2, "num_predict": 40, "stop": ["\n"]}  # fmt: skip
    worker = ModelSpec(name="w", path=tmp_path / "w.gguf")
    assert backends.wire_options(worker, options)["max_tokens"] == 40
