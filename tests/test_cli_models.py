"""daemon/cli_models.py: ``yomitori models --discover`` and ``yomitori models add``.

Discovery runs against the STAND-INS for Ollama and LM Studio in
tests/standin_servers.py (small servers that speak the two programs' documented wire
formats; the real programs cannot be installed here), reached through
YOMITORI_DISCOVER_PORTS or the ``ports`` argument.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest
from standin_servers import LMStudioStandIn, OllamaStandIn

from daemon import cli_models
from daemon.cli import _Parser
from daemon.errors import ConfigError, ModelError, UserInputError
from daemon.models import load_models

COMMENTED = """\
# My models -- hand written, keep this comment
default = "local"  # the one I use most

# A GGUF on disk.
[models.local]
path = "/models/local.gguf"  # downloaded by hand
n_ctx = 8192
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("YOMITORI_MODEL", raising=False)
    # Never ask the real usual ports (a llama-server may be running on 8080).
    monkeypatch.setenv(cli_models.PORTS_ENV, f"ollama={free_port()}")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def servers(monkeypatch):
    with OllamaStandIn() as ollama, LMStudioStandIn() as lmstudio:
        monkeypatch.setenv(
            cli_models.PORTS_ENV,
            f"ollama={ollama.port},lmstudio={lmstudio.port},llama-server={free_port()}",
        )
        yield ollama, lmstudio


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def add_args(name: str | None, **given) -> argparse.Namespace:
    values = {"verb": "add", "name": name, "discover": False, "json": False}
    values.update(dict.fromkeys(("backend", "model", "url", "path", "mmproj"), None))
    values.update(dict.fromkeys(("vision", "default", "allow_remote"), False))
    values["from_discovered"] = None
    values.update(given)
    return argparse.Namespace(**values)


def write(config_dir: Path, text: str) -> Path:
    path = config_dir / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- discovery ---------------------------------------------------------------------------


def test_discover_finds_both_stand_ins(servers):
    ollama, lmstudio = servers
    ports = {"ollama": ollama.port, "lmstudio": lmstudio.port, "koboldcpp": free_port()}
    found = cli_models.discover(ports=ports)
    assert found == [
        {"url": ollama.url, "server": "ollama", "backend": "ollama", "model": "qwen2.5vl:7b",
         "vision": True, "loaded": False},
        {"url": ollama.url, "server": "ollama", "backend": "ollama", "model": "llama3.2:3b",
         "vision": False, "loaded": False},
        {"url": lmstudio.url, "server": "lmstudio", "backend": "openai",
         "model": "qwen2-vl-2b-instruct", "vision": True, "loaded": False},
        {"url": lmstudio.url, "server": "lmstudio", "backend": "openai",
         "model": "llama-3.2-1b-instruct", "vision": False, "loaded": True},
    ]  # fmt: skip
    # The same through YOMITORI_DISCOVER_PORTS (the servers fixture set it).
    assert cli_models.discover() == found


def test_discover_skips_what_is_not_a_server_of_that_kind(servers):
    ollama, lmstudio = servers
    # Ollama's native API asked of LM Studio (and the reverse) finds nothing there.
    ports = {"ollama": lmstudio.port, "llama-server": free_port()}
    assert cli_models.discover(ports=ports) == []
    found = cli_models.discover(ports={"lmstudio": ollama.port})
    # Ollama's /v1 answers an OpenAI client too, and says it is Ollama.
    assert {(e["server"], e["backend"]) for e in found} == {("ollama", "ollama")}
    assert cli_models.discover(ports={}) == []


def test_discover_reports_a_server_that_wants_a_key(servers):
    _ollama, lmstudio = servers
    lmstudio.api_key = "secret"
    refused: list[str] = []
    assert cli_models.discover(ports={"lmstudio": lmstudio.port}, refused=refused) == []
    assert refused == [lmstudio.url]


def test_discover_ports_from_the_environment():
    assert cli_models.discover_ports({}) == cli_models.DEFAULT_PORTS
    assert cli_models.DEFAULT_PORTS == {
        "ollama": 11434,
        "lmstudio": 1234,
        "llama-server": 8080,
        "koboldcpp": 5001,
    }
    env = {cli_models.PORTS_ENV: "ollama=1500, koboldcpp=1501"}
    assert cli_models.discover_ports(env) == {"ollama": 1500, "koboldcpp": 1501}
    for bad in ("ollama", "olama=1", "ollama=x", "ollama=70000"):
        with pytest.raises(UserInputError, match=cli_models.PORTS_ENV):
            cli_models.discover_ports({cli_models.PORTS_ENV: bad})


def test_cmd_discover_table_and_add_hint(servers, capsys):
    ollama, _lmstudio = servers
    assert cli_models.cmd_models_discover(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert "qwen2-vl-2b-instruct" in out and "lmstudio" in out
    assert (
        f"yomitori models add qwen2-5vl-7b --backend ollama --model qwen2.5vl:7b "
        f"--url {ollama.url} --vision"
    ) in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [row[-1] for row in rows] == ["yes", "no", "yes", "no"]


def test_cmd_discover_json(servers, capsys):
    assert cli_models.cmd_models_discover(argparse.Namespace(json=True)) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["model"] for e in entries] == [
        "qwen2.5vl:7b",
        "llama3.2:3b",
        "qwen2-vl-2b-instruct",
        "llama-3.2-1b-instruct",
    ]


def test_cmd_discover_nothing_found_says_what_was_asked(capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv(cli_models.PORTS_ENV, f"ollama={port}")
    assert cli_models.cmd_models_discover(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}" in out
    assert "ollama serve" in out and "lms server start" in out


def test_suggest_name():
    assert cli_models.suggest_name("qwen2.5vl:7b") == "qwen2-5vl-7b"
    assert cli_models.suggest_name("lmstudio-community/Qwen2-VL") == "qwen2-vl"
    assert cli_models.suggest_name("m", {"m", "m-2"}) == "m-3"
    assert cli_models.suggest_name("tiny") == "tiny-2"


# -- add ---------------------------------------------------------------------------------


def test_add_keeps_comments_and_parses(config_dir, capsys):
    path = write(config_dir, COMMENTED)
    url = "http://127.0.0.1:11434"
    args = add_args("vl", backend="ollama", model="qwen2.5vl:7b", url=url + "/", vision=True)
    assert cli_models.cmd_models_add(args) == 0
    text = path.read_text(encoding="utf-8")
    assert text.startswith(COMMENTED)  # every comment and line kept, the section appended
    assert "[models.vl]" in text
    config = load_models()
    spec = config.models["vl"]
    assert (spec.backend, spec.url, spec.remote) == ("ollama", url, "qwen2.5vl:7b")
    assert spec.opt("vision") is True
    assert config.default == "local"  # a default was there: it stays
    out = capsys.readouterr().out
    assert str(path) in out and 'model = "qwen2.5vl:7b"' in out


def test_add_first_model_makes_the_file_and_the_default(config_dir):
    args = add_args("lm", backend="openai", model="qwen2-vl-2b-instruct",
                    url="http://127.0.0.1:1234")  # fmt: skip
    assert cli_models.cmd_models_add(args) == 0
    config = load_models()
    assert config.default == "lm"
    assert config.models["lm"].backend == "openai"
    assert config.models["lm"].url == "http://127.0.0.1:1234"
    assert (config_dir / "models.toml").read_text(encoding="utf-8").startswith("# yomitori")


def test_add_default_flag_and_lone_model(config_dir):
    write(config_dir, '[models.only]\npath = "/m/only.gguf"\n')
    cli_models.cmd_models_add(add_args("two", backend="ollama", model="m"))
    assert load_models().default == "only"  # used until now: it stays the one used
    cli_models.cmd_models_add(add_args("three", backend="ollama", model="m", default=True))
    assert load_models().default == "three"


def test_add_gguf_paths_become_absolute(config_dir, tmp_path):
    args = add_args("g", path="models/g.gguf", mmproj="~/mm.gguf")
    assert cli_models.cmd_models_add(args) == 0
    spec = load_models().models["g"]
    assert spec.backend == "llama-cpp"
    assert spec.path == tmp_path / "models" / "g.gguf"
    assert spec.mmproj == Path("~/mm.gguf").expanduser()
    text = (config_dir / "models.toml").read_text(encoding="utf-8")
    assert str(tmp_path / "models" / "g.gguf") in text


def test_add_llama_server_backend(config_dir):
    assert cli_models.cmd_models_add(add_args("s", backend="llama-server", path="/m/s.gguf")) == 0
    assert load_models().models["s"].backend == "llama-server"


def test_add_refuses_a_duplicate_name(config_dir):
    path = write(config_dir, COMMENTED)
    with pytest.raises(UserInputError, match="already in"):
        cli_models.cmd_models_add(add_args("local", backend="ollama", model="m"))
    assert path.read_text(encoding="utf-8") == COMMENTED


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"backend": "llama-cpp"}, "--path"),
        ({"backend": "llama-server", "model": "m"}, "--path"),
        ({"backend": "ollama"}, "--model"),
        ({"backend": "openai", "url": "http://127.0.0.1:1"}, "--model"),
        ({"backend": "openai", "model": "m", "path": "/x.gguf"}, "--path"),
        ({"path": "/x.gguf", "url": "http://127.0.0.1:1"}, "--url"),
        ({"model": "m"}, "--backend"),
        ({"backend": "openai", "model": "m"}, "--url"),
        ({"backend": "openai", "model": "m", "url": "http://10.1.2.3:1234"}, "allow_remote"),
    ],
)
def test_add_refuses_incomplete_sections(config_dir, given, message):
    with pytest.raises(UserInputError, match=message) as info:
        cli_models.cmd_models_add(add_args("x", **given))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert not (config_dir / "models.toml").exists()


def test_add_bad_names(config_dir):
    for name in (None, "has space", "dotted.name", "tiny"):
        with pytest.raises(UserInputError):
            cli_models.cmd_models_add(add_args(name, backend="ollama", model="m"))


def test_add_remote_with_allow_remote(config_dir):
    args = add_args("far", backend="openai", model="m", url="http://10.1.2.3:1234",
                    allow_remote=True)  # fmt: skip
    assert cli_models.cmd_models_add(args) == 0
    assert load_models().models["far"].opt("allow_remote") is True


def test_add_restores_the_file_when_the_result_does_not_parse(config_dir, monkeypatch):
    path = write(config_dir, COMMENTED)
    calls = []
    real = cli_models.load_models

    def failing_second_time(folder=None):
        calls.append(folder)
        if len(calls) == 2:
            raise ConfigError("broken on purpose")
        return real(folder)

    monkeypatch.setattr(cli_models, "load_models", failing_second_time)
    with pytest.raises(ConfigError, match="on purpose"):
        cli_models.cmd_models_add(add_args("new", backend="ollama", model="m"))
    assert path.read_text(encoding="utf-8") == COMMENTED


def test_add_restores_no_file_when_there_was_none(config_dir, monkeypatch):
    calls = []
    real = cli_models.load_models

    def failing_second_time(folder=None):
        calls.append(folder)
        if len(calls) == 2:
            raise ModelError("broken on purpose")
        return real(folder)

    monkeypatch.setattr(cli_models, "load_models", failing_second_time)
    with pytest.raises(ModelError):
        cli_models.cmd_models_add(add_args("new", backend="ollama", model="m"))
    assert not (config_dir / "models.toml").exists()


def test_add_refuses_to_edit_a_broken_file(config_dir):
    path = write(config_dir, "[models.a]\nbackend = 3\n")
    with pytest.raises(ConfigError):
        cli_models.cmd_models_add(add_args("new", backend="ollama", model="m"))
    assert path.read_text(encoding="utf-8") == "[models.a]\nbackend = 3\n"


def test_add_from_discovered(servers, config_dir):
    _ollama, lmstudio = servers
    assert cli_models.cmd_models_add(add_args("seen", from_discovered=3)) == 0
    spec = load_models().models["seen"]
    assert (spec.backend, spec.url, spec.remote) == (
        "openai",
        lmstudio.url,
        "qwen2-vl-2b-instruct",
    )
    assert spec.opt("vision") is True
    with pytest.raises(UserInputError, match="found 4"):
        cli_models.cmd_models_add(add_args("more", from_discovered=9))


def test_add_from_discovered_with_nothing_there(config_dir):
    with pytest.raises(UserInputError, match="no local model server"):
        cli_models.cmd_models_add(add_args("x", from_discovered=1))


# -- argparse ----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = _Parser(prog="yomitori models")
    cli_models.configure_parser(parser)
    return parser.parse_args(argv)


def test_parser_and_verbs(config_dir, capsys):
    assert cli_models.cmd_models_verbs(parse()) is None  # the listing runs
    args = parse("add", "vl", "--backend", "ollama", "--model", "qwen2.5vl:7b", "--default")
    assert (args.verb, args.name, args.backend, args.default) == ("add", "vl", "ollama", True)
    assert cli_models.cmd_models_verbs(args) == 0
    assert load_models().models["vl"].backend == "ollama"
    assert parse("--discover", "--json").discover is True
    assert parse("add", "x", "--from-discovered", "2").from_discovered == 2
    with pytest.raises(UserInputError, match="--json"):
        cli_models.cmd_models_verbs(parse("--json"))
    with pytest.raises(UserInputError, match="--backend"):
        cli_models.cmd_models_verbs(parse("--backend", "openai"))
    with pytest.raises(SystemExit) as info:
        parse("remove")
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_verbs_discover(servers, capsys):
    assert cli_models.cmd_models_verbs(parse("--discover", "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
