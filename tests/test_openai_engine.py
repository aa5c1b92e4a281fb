"""The OpenAI-compatible engine against real servers: llama.cpp's llama-server, started
here as a user would start it, and llama-cpp-python's ``llama_cpp.server``."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import needs_model
from servers import LlamaCppPythonServer, UserServer, free_port
from standin_servers import LMStudioStandIn

from daemon import runner
from daemon.actions import Payload
from daemon.backends import openai as openai_backend
from daemon.config import template_folders
from daemon.engine.http import ServerFailed, ServerUnavailable, server_hint
from daemon.engine.openai import OpenAIEngine
from daemon.errors import UserInputError
from daemon.models import ModelsConfig, ModelSpec
from daemon.prompts import TemplateSet, load_templates

pytestmark = needs_model

SYSTEM = "You write image prompts. " + " ".join(f"Rule {i}: keep it vivid." for i in range(60))
GREEDY = {"temperature": 0.0, "seed": 1}


def spec_for(url: str, remote: str = "tiny", **opts: object) -> ModelSpec:
    return ModelSpec(name="srv", backend="openai", url=url, remote=remote).with_opts(**opts)


def chat(user: str) -> list[dict[str, object]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def server(vision_files):
    """The user's llama-server with the tiny model (template included)."""
    srv = UserServer(vision_files["model"])
    yield srv
    srv.stop()


@pytest.fixture
def engine(server):
    openai_backend._probed.clear()
    spec = openai_backend.check(spec_for(server.url, remote=remote_id(server)))
    eng = OpenAIEngine(flavour=spec.opt("server_kind"))
    eng.load(spec)
    yield eng
    eng.close()


def remote_id(server: UserServer) -> str:
    import httpx

    return httpx.get(f"{server.url}/v1/models", timeout=5).json()["data"][0]["id"]


def test_streams_with_token_counts(engine, server):
    pieces: list[str] = []
    result = engine.generate(chat("a red fox"), {**GREEDY, "max_tokens": 12}, pieces.append)
    assert result.finish_reason in ("stop", "length")
    assert result.text == "".join(pieces) and pieces
    assert result.prompt_tokens > 100 and result.completion_tokens > 0
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.total_s
    assert engine.spec.opt("server_kind") == "llama-server"


def test_prefix_is_reused_through_the_servers_cache(engine):
    first = engine.generate(chat("a red fox"), {**GREEDY, "max_tokens": 4})
    second = engine.generate(chat("a blue whale"), {**GREEDY, "max_tokens": 4})
    # The fixed system part was evaluated once: llama-server reports it as cache_n.
    assert second.reused_tokens >= first.prompt_tokens - 20, (first, second)
    assert second.prompt_tokens >= second.reused_tokens


def test_cancel_closes_the_stream_and_frees_the_slot(engine, server):
    seen = threading.Event()
    results = []

    def run() -> None:
        results.append(engine.generate(chat("a long story"), {**GREEDY, "max_tokens": 1500},
                                       lambda _p: seen.set()))  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    assert seen.wait(30)
    started = time.perf_counter()
    engine.cancel()
    thread.join(5)
    cancel_ms = (time.perf_counter() - started) * 1000
    assert not thread.is_alive()
    assert results[0].finish_reason == "cancelled"
    assert cancel_ms < 200, cancel_ms
    deadline = time.monotonic() + 5
    while server.slots_busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.slots_busy(), "the server kept generating after the client went"
    after = engine.generate(chat("a cat"), {**GREEDY, "max_tokens": 3})  # the next one works
    assert after.completion_tokens > 0


def test_nothing_listening_says_which_url_and_what_to_do():
    port = free_port()
    spec = spec_for(f"http://127.0.0.1:{port}")
    with pytest.raises(ServerUnavailable) as info:
        openai_backend.check(spec)
    assert f"Nothing answers at http://127.0.0.1:{port}" in str(info.value)
    assert "models.toml" in str(info.value)
    eng = OpenAIEngine()
    eng.load(spec)
    with pytest.raises(ServerUnavailable, match="Nothing answers"):
        eng.generate(chat("x"), {"max_tokens": 2})
    # The usual ports say which program to start.
    assert "LM Studio" in server_hint(spec_for("http://127.0.0.1:1234"))
    assert "ollama serve" in server_hint(ModelSpec(name="o", backend="ollama", url="http://x"))


def test_a_model_the_server_does_not_have_is_named_with_its_list():
    """Against the LM Studio STAND-IN (tests/standin_servers.py): a server of many models."""
    openai_backend._probed.clear()
    with LMStudioStandIn() as studio, pytest.raises(ServerUnavailable) as info:
        openai_backend.check(spec_for(studio.url, remote="qwen3-vl-8b"))
    assert "no model 'qwen3-vl-8b'" in str(info.value)
    assert "qwen2-vl-2b-instruct" in str(info.value) and "models.toml" in str(info.value)


def test_a_single_model_llama_server_answers_to_any_name(server):
    openai_backend._probed.clear()
    spec = openai_backend.check(spec_for(server.url, remote="whatever"))
    assert spec.opt("remote_id") == remote_id(server)


def test_image_action_on_a_text_only_server_is_refused_before_sending(server, tmp_path):
    openai_backend._probed.clear()
    templates: TemplateSet = load_templates(template_folders())
    spec = spec_for(server.url, remote=remote_id(server))
    models = ModelsConfig(models={"srv": spec}, default="srv")
    job = runner.plan("caption", templates, {}, "rapidocr")
    with pytest.raises(UserInputError, match="needs a vision model"):
        runner.choose_model(job, templates, None, models)
    # Declaring vision does not override a server that says it has none.
    models.models["srv"] = spec.with_opts(vision=True)
    openai_backend._probed.clear()
    with pytest.raises(UserInputError, match="needs a vision model"):
        runner.choose_model(job, templates, None, models)


def test_api_key_refused_and_accepted(vision_files, monkeypatch):
    srv = UserServer(vision_files["model"], api_key="sekrit-key-1234")
    try:
        openai_backend._probed.clear()
        spec = spec_for(srv.url, remote="x")
        with pytest.raises(ServerUnavailable, match="refused the API key"):
            openai_backend.check(spec)
        eng = OpenAIEngine()
        eng.load(spec)
        with pytest.raises(ServerUnavailable, match="api_key_env"):
            eng.generate(chat("x"), {"max_tokens": 2})
        monkeypatch.setenv("YOMITORI_TEST_KEY", "sekrit-key-1234")
        keyed = spec.with_opts(api_key_env="YOMITORI_TEST_KEY")
        name = openai_backend.check(keyed.with_opts()).opt("remote_id")
        engine = openai_backend.make_engine(keyed)
        engine.load(keyed)
        assert engine.generate(chat("x"), {**GREEDY, "max_tokens": 2}).completion_tokens > 0
        assert name
    finally:
        srv.stop()


def test_server_dying_mid_stream_fails_that_request_then_works_when_back(vision_files):
    port = free_port()
    srv = UserServer(vision_files["model"], port=port)
    eng = OpenAIEngine()
    eng.load(spec_for(srv.url))
    seen = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            eng.generate(chat("a long story"), {**GREEDY, "max_tokens": 1500},
                         lambda _p: seen.set())  # fmt: skip
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    assert seen.wait(30)
    srv.proc.kill()
    thread.join(10)
    assert errors and isinstance(errors[0], ServerFailed)
    assert "middle of an answer" in str(errors[0]) and "Traceback" not in str(errors[0])
    with pytest.raises(ServerUnavailable, match="Nothing answers"):
        eng.generate(chat("x"), {"max_tokens": 2})
    back = UserServer(vision_files["model"], port=port)
    try:
        assert eng.generate(chat("x"), {**GREEDY, "max_tokens": 2}).completion_tokens > 0
    finally:
        back.stop()


def test_vision_path_through_llama_server(vision_files):
    from PIL import Image

    srv = UserServer(vision_files["model"], mmproj=vision_files["mmproj"])
    try:
        openai_backend._probed.clear()
        spec = openai_backend.check(spec_for(srv.url, remote=remote_id(srv)))
        assert spec.vision  # /props modalities
        templates = load_templates(template_folders())
        job = runner.plan("caption", templates, {"max_tokens": "8"}, "rapidocr")
        models = ModelsConfig(models={"srv": spec}, default="srv")
        chosen = runner.choose_model(job, templates, None, models)
        import io

        buffer = io.BytesIO()
        Image.new("RGB", (224, 224), (200, 40, 40)).save(buffer, format="PNG")
        engines = runner.Engines()
        try:
            result = runner.execute(job, templates, Payload(image=buffer.getvalue()), chosen,
                                    engines, {}, 512)  # fmt: skip
        finally:
            engines.close()
        # 16 image tokens from the generated projector, plus the text around them.
        assert result.timings["prompt_tokens"] > 16 and result.timings["completion_tokens"] > 0
    finally:
        srv.stop()


def test_llama_cpp_python_server_is_a_second_real_server(tiny_spec):
    srv = LlamaCppPythonServer(tiny_spec.path, alias="tiny")
    try:
        openai_backend._probed.clear()
        spec = openai_backend.check(spec_for(srv.url, remote="tiny"))
        assert spec.opt("server_kind") == "openai"
        eng = OpenAIEngine()
        eng.load(spec)
        pieces: list[str] = []
        result = eng.generate(chat("a fox"), {**GREEDY, "max_tokens": 8}, pieces.append)
        assert pieces and result.text == "".join(pieces)
        assert result.completion_tokens > 0  # from usage (no llama-server timings here)
    finally:
        srv.stop()


def test_a_kept_alive_connection_the_server_closed_is_retried_once():
    """A server that closes an idle kept-alive connection just as the next request goes
    out (cpp-httplib's keep-alive limits do): nothing reached the model, so the request
    is sent again on a fresh connection instead of failing."""
    import socket as sockets

    body = (b'data: {"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")  # fmt: skip
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n"
             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    connections = []

    def serve() -> None:
        for index in range(2):
            conn, _ = listener.accept()
            connections.append(conn)
            conn.recv(65536)
            conn.sendall(reply)
            if index == 0:
                conn.recv(65536)  # the second request on the kept-alive connection…
                conn.close()  # …closed without an answer
            else:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    eng = OpenAIEngine()
    eng.load(spec_for(f"http://127.0.0.1:{listener.getsockname()[1]}"))
    try:
        assert eng.generate(chat("x"), {"max_tokens": 2}).text == "ok"
        assert eng.generate(chat("x"), {"max_tokens": 2}).text == "ok"
        assert len(connections) == 2
    finally:
        eng.close()
        listener.close()


def test_free_vram_asks_lm_studio_to_unload():
    """Against the LM Studio STAND-IN: unload goes through its native /api/v1 API."""
    openai_backend._probed.clear()
    with LMStudioStandIn() as studio:
        spec = openai_backend.check(spec_for(studio.url, remote="llama-3.2-1b-instruct"))
        assert spec.opt("server_kind") == "lmstudio"
        engine = openai_backend.make_engine(spec)
        engine.load(spec)
        assert engine.generate(chat("x"), {"max_tokens": 3}).text
        assert studio.loaded("llama-3.2-1b-instruct")
        engine.unload()
        assert not studio.loaded("llama-3.2-1b-instruct")
        assert studio.requests_to("/api/v1/models/unload") == [
            {"instance_id": "llama-3.2-1b-instruct"}]  # fmt: skip


def test_a_server_that_never_answers_times_out_with_a_sentence():
    import socket as sockets

    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts (the kernel does) and never answers
    eng = OpenAIEngine()
    eng.load(spec_for(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(ServerFailed) as info:
            eng.generate(chat("x"), {"max_tokens": 2})
        assert time.monotonic() - started < 5
        assert "did not answer within 0.5 s" in str(info.value)
        assert "timeout_s" in str(info.value)
    finally:
        eng.close()
        listener.close()
