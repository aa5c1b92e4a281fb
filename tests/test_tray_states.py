"""The state the tray shows (loading / busy / idle / error), on every backend, through
the daemon's real engines: loading only when a model really loads, busy while it works,
error when the engine fails, and the tray's title naming what is resident."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_model
from servers import UserServer, need_llama_server
from standin_servers import OllamaStandIn

from daemon.backends import ollama as ollama_backend
from daemon.config import Config, Settings
from daemon.errors import YomitoriError
from daemon.service import Job, Service


class Desk:
    """Only what a text job with a given text touches."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []
        self.clipboard = ""

    def read_clipboard(self) -> str:
        return self.clipboard

    def write_clipboard(self, text: str) -> None:
        self.clipboard = text

    def copy_selection(self, chord: str | None) -> str:
        return ""

    def paste(self, text: str, chord: str | None, keep: bool) -> None:
        self.clipboard = text

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        self.notes.append((title, body))

    def capture_region(self, repeat: bool = False) -> bytes:
        raise AssertionError("no region here")

    def read_clipboard_image(self) -> bytes | None:
        return None


@pytest.fixture
def backend_model(request: pytest.FixtureRequest, config_dir: Path,
                  tiny_spec: Any) -> Iterator[str]:  # fmt: skip
    """models.toml with one model ``m`` on the backend named by the test's parameter."""
    backend = request.param
    ollama_backend._probed.clear()
    stop: Any = None
    if backend == "llama-cpp":
        section = f'path = "{tiny_spec.path}"\nn_ctx = 1024\nthreads = 2\n'
    elif backend == "llama-server":
        section = (f'backend = "llama-server"\npath = "{tiny_spec.path}"\nn_ctx = 1024\n'
                   f'threads = 2\nserver = "{need_llama_server()}"\n')  # fmt: skip
    elif backend == "openai":
        server = UserServer(tiny_spec.path, n_ctx=1024)
        stop = server.stop
        section = f'backend = "openai"\nurl = "{server.url}"\nmodel = "tiny"\n'
    else:
        standin = OllamaStandIn().__enter__()
        stop = lambda: standin.__exit__(None, None, None)  # noqa: E731
        section = f'backend = "ollama"\nurl = "{standin.url}"\nmodel = "qwen2.5vl:7b"\n'
    (config_dir / "models.toml").write_text(f'default = "m"\n[models.m]\n{section}', "utf-8")
    try:
        yield backend
    finally:
        (config_dir / "models.toml").unlink()
        if stop is not None:
            stop()


def started() -> tuple[Service, list[str]]:
    """A service on the real engines, and the states it goes through (the tray's)."""
    service = Service(Desk(), config_loader=lambda: Config(settings=Settings()))
    seen: list[str] = []
    service.listeners.append(lambda s: seen.append(s.state))
    service.load()
    service.start(preload=False)
    return service, seen


def run(service: Service, seen: list[str]) -> list[str]:
    """The states one job goes through (the ones the tray draws)."""
    seen.clear()
    future: Future[Any] = Future()
    assert service.submit(Job(action="translate_en", text="猫", origin="trigger",
                              vars={"max_tokens": "8"}, future=future))  # fmt: skip
    future.result(timeout=180)
    states = list(seen)
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


@needs_model
@pytest.mark.model
@pytest.mark.parametrize("backend_model", ["llama-cpp", "llama-server", "openai", "ollama"],
                         indirect=True)  # fmt: skip
def test_the_tray_state_follows_the_job_on_every_backend(backend_model: str) -> None:
    service, seen = started()
    try:
        first = run(service, seen)
        # A cold model: loading, then busy, then idle, in that order and nothing else.
        assert [s for s in first if s != "idle"] == ["loading", "busy"], first
        assert service.state == "idle"
        assert service.resident() == {"m": backend_model}  # the tray's title names it
        second = run(service, seen)
        assert [s for s in second if s != "idle"] == ["busy"], second  # warm: no loading
        service.free_vram()
        assert service.resident() == {}
    finally:
        service.stop()


@needs_model
@pytest.mark.model
def test_the_tray_shows_error_when_the_server_goes_away_and_idle_once_it_is_back(
    config_dir: Path, tiny_spec: Any
) -> None:
    server = UserServer(tiny_spec.path, n_ctx=1024)
    (config_dir / "models.toml").write_text(
        f'default = "m"\n[models.m]\nbackend = "openai"\nurl = "{server.url}"\n'
        'model = "tiny"\n', "utf-8")  # fmt: skip
    service, seen = started()
    try:
        run(service, seen)
        port = server.port
        server.stop()
        future: Future[Any] = Future()
        service.submit(Job(action="translate_en", text="猫", origin="trigger", future=future))
        with pytest.raises(YomitoriError, match=str(port)):
            future.result(timeout=60)
        assert service.state == "error"
        server = UserServer(tiny_spec.path, port=port, n_ctx=1024)
        assert [s for s in run(service, seen) if s not in ("idle",)][-1] == "busy"
        assert service.state == "idle"
    finally:
        service.stop()
        server.stop()
        (config_dir / "models.toml").unlink()
