"""The one job runner under ``yomitori do`` and the daemon: jobs routed to the engine of
their model, so two backends serve one session; the remote-host notice; the hint
naming local servers when no model is configured.

The Ollama side is the STAND-IN in tests/standin_servers.py (Ollama cannot be
installed here); the other side is the real in-process worker on the tiny model."""

from __future__ import annotations

import time

import pytest
from conftest import needs_model, run_cli
from standin_servers import OllamaStandIn
from test_service import FakeDesktop, wait_for

from daemon.backends import ollama as ollama_backend
from daemon.config import Binding, Config, Settings
from daemon.jobs import Job
from daemon.models import ModelsConfig, ModelSpec
from daemon.service import Service


@pytest.fixture
def ollama():
    ollama_backend._probed.clear()
    with OllamaStandIn() as server:
        yield server


@needs_model
def test_two_backends_serve_one_session(ollama, tiny_spec, monkeypatch):
    """A binding on an Ollama model and one on the worker, in one daemon session."""
    models = ModelsConfig(models={
        "local": tiny_spec,
        "o": ModelSpec(name="o", backend="ollama", url=ollama.url, remote="llama3.2:3b"),
    }, default="local")  # fmt: skip
    config = Config(settings=Settings(), bindings=(
        Binding(hotkey="<alt>+<shift>+<cmd>+t", action="translate_en"),
        Binding(hotkey="<alt>+<shift>+<cmd>+y", action="translate_en", model="o"),
    ))  # fmt: skip
    io = FakeDesktop()
    service = Service(io, config_loader=lambda: config)
    monkeypatch.setattr("daemon.service.load_models", lambda: models)
    service.load()
    service.start(preload=False)
    try:
        for model in (None, "o", None):
            job = Job(action="translate_en", chord="<alt>+<shift>+<cmd>+t", text="夕焼けの海",
                      vars={"max_tokens": "4"}, model=model, origin="trigger")  # fmt: skip
            assert service.submit(job)
        wait_for(lambda: service.finished == 3, "three jobs", timeout=120)
        assert not [n for n in io.notes if n[0].endswith("failed")], io.notes
        status = service.status()
        backends = sorted(e["backend"] for e in status["engines"])
        assert backends == ["llama-cpp", "ollama"]
        assert all(e["loaded"] for e in status["engines"])
        assert len(ollama.requests_to("/api/chat")) == 2  # a load, then the one job
        service.free_vram()
        assert "llama3.2:3b" not in ollama.resident  # Free VRAM reached Ollama too
        assert not service.status()["loaded"]
    finally:
        service.stop()


def test_a_remote_model_is_announced_once(ollama, monkeypatch):
    ollama.reply_length = 3
    remote = ModelSpec(name="far", backend="ollama", url=ollama.url,
                       remote="llama3.2:3b").with_opts(allow_remote=True)  # fmt: skip
    models = ModelsConfig(models={"far": remote}, default="far")
    io = FakeDesktop()
    service = Service(io, config_loader=lambda: Config(settings=Settings()))
    monkeypatch.setattr("daemon.service.load_models", lambda: models)
    service.load()
    service.start(preload=False)
    try:
        for _ in range(2):
            service.submit(Job(action="translate_en", chord=None, text="moon",
                               vars={"max_tokens": "3"}, origin="trigger"))  # fmt: skip
        wait_for(lambda: service.finished == 2, "two jobs")
        notes = [n for n in io.notes if n[0] == "Sending to another machine"]
        assert len(notes) == 1 and ollama.url in notes[0][1]
        assert "leave this machine" in notes[0][1]
        assert service.status()["remote"] == [ollama.url]
    finally:
        service.stop()


def test_no_model_configured_names_the_local_servers(ollama, config_dir):
    started = time.monotonic()
    done = run_cli("do", "translate_en", "--text", "x",
                   env={"YOMITORI_DISCOVER_PORTS": f"ollama={ollama.port}"})  # fmt: skip
    assert done.returncode == 2
    message = done.stderr.strip()
    assert "No model configured" in message and "Found on this machine" in message
    assert "qwen2.5vl:7b (ollama at " in message
    assert "yomitori models add" in message and "--backend ollama" in message
    assert len(message.splitlines()) == 1
    assert time.monotonic() - started < 30


def test_keep_alive_leaves_a_shared_server_to_the_programs_using_it():
    from fakes import FakeEngine

    from daemon.runner import Engines

    fakes: dict[str, FakeEngine] = {}
    engines = Engines(lambda spec: fakes.setdefault(spec.name, FakeEngine()))
    shared = ModelSpec(name="shared", backend="llama-server", path=None).with_opts(share=True)
    own = ModelSpec(name="own", backend="ollama", url="http://127.0.0.1:9", remote="x")
    for spec in (shared, own):
        engines.get(spec).load(spec)
    assert engines.expiring
    engines.unload(idle=True)  # what keep_alive does
    assert fakes["shared"].loaded and not fakes["own"].loaded
    assert not engines.expiring  # nothing left for keep_alive: the idle loop sleeps
    engines.unload()  # Free VRAM, quit
    assert not fakes["shared"].loaded
