"""Nothing leaves the machine: every action on every backend, with every connection to
an address outside loopback refused (and recorded) in this process.

The guard replaces ``socket.connect`` before anything is sent, so a refused address
never sees a packet.  Ollama and LM Studio are played by the stand-ins in
tests/standin_servers.py (they cannot be installed here); llama-server is real.
"""

from __future__ import annotations

import io
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import needs_model
from servers import UserServer, need_llama_server
from standin_servers import LMStudioStandIn, OllamaStandIn

from daemon import runner
from daemon.actions import Payload
from daemon.backends import ollama as ollama_backend
from daemon.backends import openai as openai_backend
from daemon.config import template_folders
from daemon.engine.ocr import RapidOcr
from daemon.models import ModelsConfig, ModelSpec
from daemon.prompts import load_templates

pytestmark = needs_model

ACTIONS = ("translate_en", "variations", "caption", "ocr_translate", "ocr")


class Guard:
    def __init__(self) -> None:
        self.refused: list[Any] = []
        self.allowed = 0


@pytest.fixture
def guard(monkeypatch) -> Iterator[Guard]:
    seen = Guard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def outside(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False  # Unix sockets (the daemon's own IPC)
        try:
            return not ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except ValueError:
            return True

    def connect(sock: socket.socket, address: Any) -> None:
        if outside(sock, address):
            seen.refused.append(address)
            raise ConnectionRefusedError(f"test guard: {address} is not loopback")
        seen.allowed += 1
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if outside(sock, address):
            seen.refused.append(address)
            return 111
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield seen


def picture_with_text() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (320, 96), "white")
    try:
        font = ImageFont.truetype("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf", 36)
    except OSError:
        font = ImageFont.load_default()
    ImageDraw.Draw(image).text((12, 24), "夕焼けの海", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def backends_in_use(vision_files, tiny_spec):
    """One vision-capable model on every backend."""
    binary = need_llama_server()
    user = UserServer(vision_files["model"], mmproj=vision_files["mmproj"])
    ollama = OllamaStandIn().start()
    lmstudio = LMStudioStandIn().start()
    files = {"path": vision_files["model"], "mmproj": vision_files["mmproj"], "n_ctx": 2048,
             "threads": 2}  # fmt: skip
    models = {
        "worker": ModelSpec(name="worker", **files),
        "managed": ModelSpec(name="managed", backend="llama-server", **files).with_opts(
            server=str(binary)
        ),
        "openai": ModelSpec(name="openai", backend="openai", url=user.url, remote="x"),
        "ollama": ModelSpec(name="ollama", backend="ollama", url=ollama.url, remote="qwen2.5vl:7b"),
        "lmstudio": ModelSpec(
            name="lmstudio", backend="openai", url=lmstudio.url, remote="qwen2-vl-2b-instruct"
        ),
    }
    import httpx

    remote = httpx.get(f"{user.url}/v1/models", timeout=5).json()["data"][0]["id"]
    models["openai"] = ModelSpec(name="openai", backend="openai", url=user.url, remote=remote)
    yield ModelsConfig(models=models, default="worker")
    for server in (user, ollama, lmstudio):
        server.stop()


@pytest.mark.parametrize("backend", ["worker", "managed", "openai", "ollama", "lmstudio"])
def test_every_action_stays_on_this_machine(backend, backends_in_use, guard):
    openai_backend._probed.clear()
    ollama_backend._probed.clear()
    templates = load_templates(template_folders())
    engines = runner.Engines()
    ocr = {"rapidocr": RapidOcr()}
    image = picture_with_text()
    try:
        for action in ACTIONS:
            pairs = {"max_tokens": "4"} if action != "ocr" else {}
            if action == "ocr":
                pairs["engine"] = "vlm"
            job = runner.plan(action, templates, pairs, "rapidocr")
            spec = runner.choose_model(job, templates, backend, backends_in_use)
            wants_image = action in ("caption", "ocr_translate", "ocr")
            payload = Payload(image=image) if wants_image else Payload(text="夕焼けの海")
            result = runner.execute(job, templates, payload, spec, engines, ocr, 512)
            assert result.text, action
    finally:
        engines.close()
    assert guard.refused == [], f"{backend} tried to reach {guard.refused}"
    if backend != "worker":
        assert guard.allowed > 0  # it did talk to its server, on loopback


def test_the_guard_catches_a_remote_server(guard):
    """The check above can fail: a model allowed to go remote is caught (TEST-NET-1
    address: nothing is sent, the guard refuses before connecting)."""
    openai_backend._probed.clear()
    spec = ModelSpec(name="far", backend="openai", url="http://192.0.2.1:8080", remote="x")
    spec = spec.with_opts(allow_remote=True, timeout_s=2.0)
    with pytest.raises(Exception, match="Nothing answers"):
        openai_backend.check(spec)
    assert guard.refused and guard.refused[0][0] == "192.0.2.1"
