"""The STAND-INS for Ollama and LM Studio (tests/standin_servers.py) speak the wire
formats the real programs document: these tests pin that down, so the backend tests
that rely on them test against the documented behaviour."""

from __future__ import annotations

import base64
import json
import math
import time

import httpx
import pytest
from standin_servers import (
    LMStudioStandIn,
    OllamaStandIn,
    estimate_tokens,
    parse_keep_alive,
    reply_for,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a picture").decode("ascii")


@pytest.fixture
def ollama():
    with OllamaStandIn() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def lmstudio():
    with LMStudioStandIn() as server:
        yield server
    assert server.errors == []


def client(server, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10, trust_env=False)


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line.strip()]


def sse(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE stream, as sent."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def chat(model: str, text: str, **more) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **more}


# -- Ollama --------------------------------------------------------------------------------


def test_ollama_version_tags_show(ollama):
    with client(ollama) as c:
        assert c.get("/api/version").json() == {"version": "0.12.0"}
        tags = c.get("/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["qwen2.5vl:7b", "llama3.2:3b"]
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(tags[0])
        shown = c.post("/api/show", json={"model": "qwen2.5vl:7b"}).json()
        assert "vision" in shown["capabilities"]
        assert shown["details"]["format"] == "gguf"
        arch = shown["model_info"]["general.architecture"]
        assert shown["model_info"][f"{arch}.context_length"] == 128_000
        text_only = c.post("/api/show", json={"model": "llama3.2:3b"}).json()
        assert "vision" not in text_only["capabilities"]
        missing = c.post("/api/show", json={"model": "nope:1b"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "model 'nope:1b' not found"}
        assert c.get("/api/ps").json() == {"models": []}


def test_ollama_custom_models_and_latest_tag():
    models = {"moondream:latest": {"capabilities": ["completion", "vision"], "size": 10}}
    with OllamaStandIn(models) as server, client(server) as c:
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["moondream:latest"]
        assert c.post("/api/show", json={"model": "moondream"}).status_code == 200


def test_ollama_chat_streams_ndjson(ollama):
    text = "describe this picture please"
    with (
        client(ollama) as c,
        c.stream("POST", "/api/chat", json=chat("llama3.2:3b", text)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = ndjson(response)
    *pieces, last = lines
    assert pieces and all(p["done"] is False for p in pieces)
    assert all(p["message"]["role"] == "assistant" and p["model"] == "llama3.2:3b" for p in pieces)
    assert "".join(p["message"]["content"] for p in pieces) == reply_for(text)
    assert last["done"] is True and last["done_reason"] == "stop"
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[key], int) and last[key] >= 0
    assert last["load_duration"] > 0  # the first request loaded the model
    assert last["eval_count"] == len(pieces)
    assert last["prompt_eval_count"] == estimate_tokens(text)
    assert ollama.generations[-1]["num_ctx"] == 2048


def test_ollama_not_streamed_and_generate(ollama):
    with client(ollama) as c:
        whole = c.post("/api/chat", json=chat("llama3.2:3b", "one two", stream=False)).json()
        assert whole["message"]["content"] == reply_for("one two")
        assert whole["done"] is True and whole["eval_count"] == 4
        body = {"model": "llama3.2:3b", "prompt": "three", "stream": False}
        generated = c.post("/api/generate", json=body).json()
        assert generated["response"] == reply_for("three")


def test_ollama_num_predict_and_silent_truncation(ollama):
    long_text = "word " * 400  # 2000 bytes: 501 "tokens"
    options = {"num_ctx": 64, "num_predict": 3, "temperature": 0.2, "top_p": 0.9}
    with (
        client(ollama) as c,
        c.stream("POST", "/api/chat", json=chat("llama3.2:3b", long_text, options=options)) as r,
    ):
        *pieces, last = ndjson(r)
    assert len(pieces) == 3 and last["done_reason"] == "length"
    assert last["prompt_eval_count"] == 64  # capped at num_ctx, with HTTP 200
    assert ollama.generations[-1]["temperature"] == 0.2


def test_ollama_load_unload_and_ps(ollama):
    with client(ollama) as c:
        body = {"model": "qwen2.5vl:7b", "messages": [], "options": {"num_ctx": 8192}}
        loaded = c.post("/api/chat", json=body).json()
        assert loaded["done"] is True and loaded["done_reason"] == "load"
        (resident,) = c.get("/api/ps").json()["models"]
        assert resident["name"] == "qwen2.5vl:7b"
        assert resident["context_length"] == 8192
        assert resident["size_vram"] == resident["size"] == 6_100_000_000
        assert resident["expires_at"].endswith("Z")
        gone = c.post("/api/chat", json={"model": "qwen2.5vl:7b", "messages": [], "keep_alive": 0})
        assert gone.json()["done_reason"] == "unload"
        assert c.get("/api/ps").json() == {"models": []}
        # A real request with keep_alive 0 answers, then unloads.
        c.post("/api/chat", json=chat("llama3.2:3b", "hi", keep_alive=0, stream=False))
        assert c.get("/api/ps").json() == {"models": []}
        c.post("/api/chat", json=chat("llama3.2:3b", "hi", keep_alive="10m", stream=False))
        assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["llama3.2:3b"]
    assert ollama.loads == 3


def test_ollama_errors_like_ollama(ollama):
    with client(ollama) as c:
        missing = c.post("/api/chat", json=chat("ghost", "hi"))
        assert missing.status_code == 404
        assert missing.json()["error"] == 'model "ghost" not found, try pulling it first'
        picture = {"role": "user", "content": "what is it", "images": [PNG]}
        blind = c.post("/api/chat", json={"model": "llama3.2:3b", "messages": [picture]})
        assert blind.status_code == 400
        assert blind.json()["error"].endswith("does not support images")
        data_uri = {**picture, "images": [f"data:image/png;base64,{PNG}"]}
        wrong = c.post("/api/chat", json={"model": "qwen2.5vl:7b", "messages": [data_uri]})
        assert wrong.status_code == 400 and "base64" in wrong.json()["error"]
        bad = c.post("/api/chat", json=chat("llama3.2:3b", "x", keep_alive="soon"))
        assert bad.status_code == 400
        seen = c.post("/api/chat", json={"model": "qwen2.5vl:7b", "messages": [picture],
                                         "stream": False})  # fmt: skip
        assert seen.json()["message"]["content"] == reply_for("what is it", images=1)
        assert c.get("/nowhere").status_code == 404


def test_ollama_v1_ignores_keep_alive_and_num_ctx(ollama):
    body = chat(
        "llama3.2:3b",
        "hello",
        stream=True,
        keep_alive=0,
        options={"num_ctx": 9999},
        stream_options={"include_usage": True},
    )
    with client(ollama) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response)
        assert events[-1] == "[DONE]"
        usage = json.loads(events[-2])["usage"]
        assert usage["completion_tokens"] == 3
        assert [m["context_length"] for m in c.get("/api/ps").json()["models"]] == [2048]
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == list(ollama.models)
        missing = c.post("/v1/chat/completions", json=chat("ghost", "hi"))
        assert missing.status_code == 404 and "not found" in missing.json()["error"]["message"]
    ran = ollama.generations[-1]
    assert ran["num_ctx"] == 2048 and ran["temperature"] == 1.0 and ran["top_p"] == 1.0
    assert ollama.requests_to("/v1/chat/completions")[0]["keep_alive"] == 0  # recorded as sent


def test_ollama_api_key(ollama):
    ollama.api_key = "sekrit"
    with client(ollama) as c:
        assert c.get("/api/version").status_code == 200  # health-like: open
        refused = c.get("/api/tags")
        assert refused.status_code == 401 and "error" in refused.json()
    with client(ollama, "sekrit") as c:
        assert c.get("/api/tags").status_code == 200
    method, path, body, headers = ollama.requests[-1]
    assert (method, path, body) == ("GET", "/api/tags", None)
    assert headers["authorization"] == "Bearer sekrit"


# -- LM Studio -----------------------------------------------------------------------------


def test_lmstudio_model_lists(lmstudio):
    with client(lmstudio) as c:
        listed = c.get("/v1/models").json()["data"]
        assert [(m["id"], m["object"]) for m in listed] == [
            ("qwen2-vl-2b-instruct", "model"),
            ("llama-3.2-1b-instruct", "model"),
        ]
        v0 = {m["id"]: (m["type"], m["state"]) for m in c.get("/api/v0/models").json()["data"]}
        assert v0 == {
            "qwen2-vl-2b-instruct": ("vlm", "not-loaded"),
            "llama-3.2-1b-instruct": ("llm", "loaded"),
        }
        v1 = {m["key"]: m for m in c.get("/api/v1/models").json()["models"]}
        assert v1["qwen2-vl-2b-instruct"]["capabilities"]["vision"] is True
        assert v1["qwen2-vl-2b-instruct"]["loaded_instances"] == []
        assert v1["llama-3.2-1b-instruct"]["loaded_instances"][0]["id"] == "llama-3.2-1b-instruct"


def test_lmstudio_sse_with_usage_loads_the_model(lmstudio):
    body = chat(
        "qwen2-vl-2b-instruct",
        "ein zwei drei",
        stream=True,
        max_tokens=4,
        stream_options={"include_usage": True},
    )
    with client(lmstudio) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        pieces = [ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]]
        assert "".join(pieces) == reply_for("ein zwei drei", limit=4)
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["choices"] == []
        usage = chunks[-1]["usage"]
        assert usage["completion_tokens"] == 4
        assert usage["total_tokens"] == usage["prompt_tokens"] + 4
        assert lmstudio.loaded("qwen2-vl-2b-instruct")
        # No include_usage: no usage chunk.
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream_options": {}}) as r:
            plain = [json.loads(e) for e in sse(r)[:-1]]
        assert all("usage" not in ch for ch in plain)
        assert plain[-1]["choices"][0]["finish_reason"] == "length"


def test_lmstudio_unload_and_errors(lmstudio):
    with client(lmstudio) as c:
        gone = c.post("/api/v1/models/unload", json={"instance_id": "llama-3.2-1b-instruct"})
        assert gone.status_code == 200
        assert not lmstudio.loaded("llama-3.2-1b-instruct")
        again = c.post("/api/v1/models/unload", json={"instance_id": "llama-3.2-1b-instruct"})
        assert again.status_code == 404
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
        message = {"role": "user", "content": [{"type": "text", "text": "what"}, image]}
        blind = c.post(
            "/v1/chat/completions", json={"model": "llama-3.2-1b-instruct", "messages": [message]}
        )
        assert blind.status_code == 400
        whole = c.post(
            "/v1/chat/completions", json={"model": "qwen2-vl-2b-instruct", "messages": [message]}
        ).json()
        assert whole["choices"][0]["message"]["content"] == reply_for("what", images=1)
        assert whole["usage"]["completion_tokens"] == 4
        assert c.post("/v1/chat/completions", json=chat("ghost", "x")).status_code == 404


def test_lmstudio_api_key(lmstudio):
    lmstudio.api_key = "k1"
    with client(lmstudio) as c:
        assert c.get("/v1/models").status_code == 401
        assert (
            c.post("/v1/chat/completions", json=chat("qwen2-vl-2b-instruct", "x")).status_code
            == 401
        )
    with client(lmstudio, "k1") as c:
        assert c.get("/v1/models").status_code == 200


# -- stream knobs --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ollama", "lmstudio"])
def test_client_leaving_mid_stream_stops_generation(kind):
    server = OllamaStandIn() if kind == "ollama" else LMStudioStandIn()
    path = "/api/chat" if kind == "ollama" else "/v1/chat/completions"
    model = "llama3.2:3b" if kind == "ollama" else "llama-3.2-1b-instruct"
    with server:
        server.delay_s = 0.05
        server.reply_length = 200  # 10 s if nobody stopped it
        started = time.monotonic()
        with client(server) as c, c.stream("POST", path, json=chat(model, "go", stream=True)) as r:
            lines = r.iter_lines()
            next(lines)
            next(lines)
            assert server.active_streams == 1
        # Leaving the block closed the connection: the stand-in notices and stops.
        assert server.wait_idle(3.0)
        assert time.monotonic() - started < 5
        assert server.disconnects == 1
        assert server.active_streams == 0


def test_die_after_breaks_the_stream():
    with OllamaStandIn() as server, client(server) as c:
        server.die_after = 2
        got: list[dict] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            c.stream("POST", "/api/chat", json=chat("llama3.2:3b", "a b c d e")) as response,
        ):
            for line in response.iter_lines():
                got.append(json.loads(line))
        assert [g["done"] for g in got] == [False, False]
        assert server.disconnects == 0


def test_keep_alive_parsing():
    assert parse_keep_alive(None) == 300
    assert parse_keep_alive(0) == parse_keep_alive("0") == 0
    assert parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive("250ms") == 0.25
    assert parse_keep_alive(-1) == parse_keep_alive("-1m") == math.inf
    with pytest.raises(ValueError, match="invalid duration"):
        parse_keep_alive("five minutes")
