"""``backend = "ollama"`` against a STAND-IN for Ollama (tests/standin_servers.py): Ollama
cannot be installed here, so its native API is played by a small server written from
Ollama's documented wire format.  What the HTTP engines share is tested against real
servers in test_openai_engine.py."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from standin_servers import OllamaStandIn

from daemon import runner
from daemon.actions import Payload
from daemon.backends import ollama as ollama_backend
from daemon.config import template_folders
from daemon.engine.http import ServerFailed, ServerUnavailable
from daemon.engine.ollama import OllamaEngine, context_for, to_ollama
from daemon.errors import UserInputError
from daemon.models import ModelsConfig, ModelSpec
from daemon.prompts import load_templates

MESSAGES = [{"role": "system", "content": "Write image prompts."},
            {"role": "user", "content": "夕焼けの海"}]  # fmt: skip


@pytest.fixture
def ollama():
    ollama_backend._probed.clear()
    with OllamaStandIn() as server:
        yield server


def spec_for(server: OllamaStandIn, remote: str = "qwen2.5vl:7b", **opts: object) -> ModelSpec:
    spec = ModelSpec(name="o", backend="ollama", url=server.url, remote=remote)
    return spec.with_opts(allow_remote=False, **opts)


def engine_for(spec: ModelSpec, keep_alive_s: float = 600) -> OllamaEngine:
    engine = OllamaEngine()
    engine.set_keep_alive(keep_alive_s)
    engine.load(ollama_backend.check(spec))
    return engine


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_native_chat_streams_with_keep_alive_num_ctx_and_options(ollama):
    ollama.reply_length = 20
    engine = engine_for(spec_for(ollama, "llama3.2:3b"), keep_alive_s=600)
    pieces: list[str] = []
    result = engine.generate(MESSAGES, {"temperature": 0.1, "max_tokens": 5, "seed": 3},
                             pieces.append)  # fmt: skip
    assert pieces and result.text == "".join(pieces)
    assert result.finish_reason == "length"  # num_predict = max_tokens
    assert result.prompt_tokens > 0 and result.completion_tokens == 5
    (body,) = ollama.requests_to("/api/chat")[1:]  # the first was the load
    assert body["keep_alive"] == "600s"
    assert body["options"]["num_predict"] == 5 and body["options"]["seed"] == 3
    assert body["options"]["temperature"] == 0.1 and body["options"]["top_p"] == 0.95
    assert body["options"]["num_ctx"] == 4096  # sent always: the smallest rung that fits
    assert "max_tokens" not in body["options"] and "think" not in body


def test_load_and_free_vram_confirmed_by_ps(ollama):
    engine = engine_for(spec_for(ollama))
    assert engine.loaded and "qwen2.5vl:7b" in ollama.resident
    stats = engine.stats()
    assert stats["resident"] is True and stats["on_gpu"] == "all"
    assert stats["vram_bytes"] == stats["size_bytes"] > 0
    engine.unload()
    assert not engine.loaded and "qwen2.5vl:7b" not in ollama.resident
    last = ollama.requests_to("/api/chat")[-1]
    assert last["keep_alive"] == 0 and last["messages"] == []
    assert ollama.requests_to("/api/ps")  # it looked


def test_partly_on_the_gpu_is_shown(ollama):
    ollama.models["llama3.2:3b"].update(size=4_000_000_000, size_vram=1_000_000_000)
    engine = engine_for(spec_for(ollama, "llama3.2:3b"))
    assert engine.stats()["on_gpu"] == "partly"


def test_keep_alive_settings_map_to_ollamas():
    engine = OllamaEngine()
    for ours, theirs in ((-1, -1), (0, 0), (90, "90s"), (1800, "1800s")):
        engine.set_keep_alive(ours)
        assert engine._keep_alive() == theirs


def test_images_go_as_raw_base64(ollama):
    data = png()
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," +
                                            base64.b64encode(data).decode()}},
        {"type": "text", "text": "describe"}]}]  # fmt: skip
    converted = to_ollama(messages)
    assert converted == [{"role": "user", "content": "describe",
                          "images": [base64.b64encode(data).decode()]}]  # fmt: skip
    engine = engine_for(spec_for(ollama))
    result = engine.generate(messages, {"max_tokens": 4})
    assert result.completion_tokens > 0


def test_vision_comes_from_show_and_a_text_model_is_refused_before_sending(ollama):
    templates = load_templates(template_folders())
    job = runner.plan("caption", templates, {}, "rapidocr")
    text_only = ModelsConfig(models={"o": spec_for(ollama, "llama3.2:3b")}, default="o")
    with pytest.raises(UserInputError, match="needs a vision model"):
        runner.choose_model(job, templates, None, text_only)
    assert ollama.requests_to("/api/chat") == []
    seeing = ModelsConfig(models={"o": spec_for(ollama)}, default="o")
    spec = runner.choose_model(job, templates, None, seeing)
    assert spec is not None and spec.vision
    engines = runner.Engines()
    result = runner.execute(job, templates, Payload(image=png()), spec, engines, {}, 512)
    assert result.text and ollama.requests_to("/api/chat")[-1]["messages"][-1]["images"]


def test_thinking_models_get_think_false_unless_asked(ollama):
    ollama.models["qwen3:8b"] = {"capabilities": ["completion", "thinking"], "size": 5,
                                 "size_vram": 5, "context_length": 8192}  # fmt: skip
    engine = engine_for(spec_for(ollama, "qwen3:8b"))
    engine.generate(MESSAGES, {"max_tokens": 3})
    assert ollama.requests_to("/api/chat")[-1]["think"] is False
    engine.generate(MESSAGES, {"max_tokens": 3, "think": True})
    assert ollama.requests_to("/api/chat")[-1]["think"] is True


def test_a_cut_prompt_is_reported_with_what_to_do(ollama):
    long_text = "a very detailed scene with many parts " * 400  # ≈ 4,000 tokens
    engine = engine_for(spec_for(ollama, "llama3.2:3b", num_ctx=1024))
    with pytest.raises(ServerUnavailable) as info:
        engine.generate([{"role": "user", "content": long_text}], {"max_tokens": 3})
    assert "cut the prompt to 1024 tokens" in str(info.value)
    assert "n_ctx = 2048" in str(info.value) and "models.toml" in str(info.value)
    # Without n_ctx in models.toml the context is chosen to fit: nothing is cut.
    auto = engine_for(spec_for(ollama, "llama3.2:3b"))
    result = auto.generate([{"role": "user", "content": long_text}], {"max_tokens": 3})
    assert ollama.requests_to("/api/chat")[-1]["options"]["num_ctx"] == 8192
    assert result.prompt_tokens > 3000


def test_context_ladder_changes_rarely():
    short = to_ollama(MESSAGES)
    longer = to_ollama([{"role": "user", "content": "x" * 6000}])
    assert context_for(short, 300) == context_for(longer, 300) == 4096
    assert context_for(to_ollama([{"role": "user", "content": "x" * 30000}]), 300) == 16384


def test_cancel_stops_the_stream(ollama):
    ollama.delay_s = 0.05
    ollama.reply_length = 400
    engine = engine_for(spec_for(ollama, "llama3.2:3b"))
    seen = threading.Event()
    results = []
    thread = threading.Thread(target=lambda: results.append(
        engine.generate(MESSAGES, {"max_tokens": 400}, lambda _p: seen.set())))  # fmt: skip
    thread.start()
    assert seen.wait(10)
    started = time.perf_counter()
    engine.cancel()
    thread.join(5)
    assert results[0].finish_reason == "cancelled"
    assert time.perf_counter() - started < 0.2
    assert ollama.wait_idle(5) and ollama.disconnects == 1


def test_ollama_not_running_says_how_to_start_it():
    spec = ModelSpec(name="o", backend="ollama", url="http://127.0.0.1:9", remote="x")
    with pytest.raises(ServerUnavailable) as info:
        ollama_backend.check(spec)
    assert "Nothing answers at http://127.0.0.1:9" in str(info.value)
    assert "start Ollama (ollama serve" in str(info.value)


def test_a_model_ollama_lacks_is_named_with_its_list(ollama):
    with pytest.raises(ServerUnavailable) as info:
        ollama_backend.check(spec_for(ollama, "gemma3:12b"))
    message = str(info.value)
    assert "no model 'gemma3:12b'" in message and "qwen2.5vl:7b" in message
    assert "ollama pull gemma3:12b" in message


def test_latest_tag_is_implied(ollama):
    ollama.models["gemma3:latest"] = dict(ollama.models["llama3.2:3b"])
    spec = ollama_backend.check(spec_for(ollama, "gemma3"))
    assert spec.opt("remote_id") == "gemma3:latest"


def test_death_mid_stream_fails_that_request_only(ollama):
    ollama.reply_length = 50
    engine = engine_for(spec_for(ollama, "llama3.2:3b"))
    ollama.die_after = 3
    with pytest.raises(ServerFailed, match="middle of an answer"):
        engine.generate(MESSAGES, {"max_tokens": 50})
    ollama.die_after = None
    assert engine.generate(MESSAGES, {"max_tokens": 3}).completion_tokens == 3
