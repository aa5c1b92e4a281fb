"""STAND-INS for Ollama and LM Studio: small stdlib HTTP servers, not the real programs.

Neither Ollama nor LM Studio can be installed on the test machines, so the tests of
yomitori's HTTP backends, probes and ``yomitori models --discover`` talk to these
instead.  They were written from the two programs' documented wire formats (Ollama's
``docs/api.md`` and ``openai-compatibility`` notes, LM Studio's REST and OpenAI
compatibility docs; summarised in ``shared/research/engines.md`` sections B and C),
not from their code, and they model only what yomitori relies on:

- :class:`OllamaStandIn`: ``/api/version``, ``/api/tags``, ``/api/show``, ``/api/ps``,
  native ``/api/chat`` and ``/api/generate`` (NDJSON streams, load and unload through
  ``keep_alive``, images as raw base64, prompt counts silently capped at ``num_ctx``),
  and the OpenAI-compatible ``/v1/models`` and ``/v1/chat/completions`` (SSE; like
  Ollama's ``/v1`` it ignores ``keep_alive`` and ``num_ctx`` and forces ``temperature``
  and ``top_p`` to 1.0 when they are left out).
- :class:`LMStudioStandIn`: ``/v1/models``, ``/api/v0/models``, ``/api/v1/models``,
  ``/api/v1/models/load`` and ``/unload``, and ``/v1/chat/completions`` (SSE, with a
  ``usage`` chunk when ``stream_options.include_usage``).

The "model" is deterministic: the reply is ``Stand-in reply:`` followed by the words
of the last user message (see :func:`reply_for`), one streamed piece per word, cut to
the request's token limit.  A prompt "costs" ``len(text bytes) // 4 + 1`` tokens
(:func:`estimate_tokens`).

Knobs a test sets on an instance (any time, also while it runs):

- ``api_key``: every endpoint but the health-like ones answers 401 without
  ``Authorization: Bearer KEY``;
- ``delay_s``: a pause before each streamed piece (for cancel tests);
- ``die_after``: close the connection abruptly after that many pieces, without ending
  the response (a server crashing mid-stream);
- ``reply_length``: repeat the user's words until the reply has that many pieces;
- ``reply_text``: reply with this text (split on spaces) instead.

What a test reads back: ``requests`` (method, path, JSON body or None, headers with
lower-case names), ``disconnects`` (streams the client left before their end: noticed
between pieces, so give a cancel test a ``delay_s`` and a ``reply_length`` long enough),
``active_streams`` (streams generating right now; :meth:`StandIn.wait_idle` waits for
0), ``generations`` (the settings each generation actually ran with), ``loads`` (how
many times a model was loaded) and ``errors`` (tracebacks of the stand-in's own bugs;
the client got a 500).

Streams use chunked transfer encoding and ``Connection: close``, so a client sees a
clean end, and a ``die_after`` crash shows as an incomplete body.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import re
import select
import socket
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

REPLY_PREFIX = "Stand-in reply:"
GONE_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_S = TypeVar("_S", bound="StandIn")


def estimate_tokens(text: str) -> int:
    """What a prompt "costs" on the stand-ins: its UTF-8 bytes // 4, plus one."""
    return len(text.encode("utf-8")) // 4 + 1


def reply_pieces(text: str, images: int = 0, length: int | None = None) -> list[str]:
    """The streamed pieces of the reply to a last user message ``text``."""
    words = text.split() or ["(nothing)"]
    if length is not None:
        words = list(itertools.islice(itertools.cycle(words), max(length - 2, 0)))
    head = ["Stand-in", "reply:"]
    if images:
        head.append(f"[{images} image{'s' if images != 1 else ''}]")
    pieces = head + words
    if length is not None:
        pieces = pieces[:length]
    return [p if i == 0 else f" {p}" for i, p in enumerate(pieces)]


def reply_for(text: str, images: int = 0, limit: int | None = None) -> str:
    """The whole reply to ``text``, cut to ``limit`` pieces the way ``num_predict`` or
    ``max_tokens`` cuts it: what a test compares the client's result with."""
    pieces = reply_pieces(text, images)
    return "".join(pieces if limit is None or limit < 0 else pieces[:limit])


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _text_of(content: Any) -> tuple[str, list[str]]:
    """A message's text and its image URLs: a string, or OpenAI content parts."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            images.append(str(url.get("url", "") if isinstance(url, dict) else url))
    return "\n".join(texts), images


class Exchange:
    """One request as a route sees it, with the ways to answer it."""

    def __init__(
        self,
        handler: _Handler,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        raw: bytes,
    ) -> None:
        self.handler = handler
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers
        self.raw = raw

    def json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode("utf-8")
        self.send(status, payload, "application/json; charset=utf-8", headers)

    def send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if self.method != "HEAD":
            h.wfile.write(payload)

    def start_stream(self, content_type: str) -> None:
        h = self.handler
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()

    def chunk(self, data: bytes) -> None:
        """One chunk of the stream; raises one of GONE_ERRORS when the client left."""
        self.handler.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")

    def end_stream(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")

    def client_gone(self, wait_s: float = 0.0) -> bool:
        """Wait up to ``wait_s``; True as soon as the client has closed its end."""
        sock = self.handler.connection
        deadline = time.monotonic() + wait_s
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            try:
                readable, _, _ = select.select([sock], [], [], left)
                if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except (OSError, ValueError):
                return True
            if not readable or time.monotonic() >= deadline:
                return False
            # Data waiting (a pipelined request): not a close; wait out the rest.
            time.sleep(min(left, 0.01))

    def abort(self) -> None:
        """Drop the connection mid-response, as a crashing server does."""
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.handler.connection.shutdown(socket.SHUT_RDWR)


Route = Callable[[Exchange], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandIn  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        self.standin._opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.standin._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        raw = self._read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urlsplit(self.path).path.rstrip("/") or "/"
        exchange = Exchange(self, method, path, body, headers, raw)
        self.standin._serve(exchange)


class StandIn(ABC):
    """The common part: a threaded loopback server, request log, auth and streaming."""

    #: Paths that answer without the API key (the real servers' "is it up" calls).
    HEALTH_PATHS: frozenset[str] = frozenset({"/"})
    #: What a stand-in calls itself in its 401 and 404 messages.
    NAME = "stand-in"

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.delay_s = 0.0
        self.die_after: int | None = None
        self.reply_length: int | None = None
        self.reply_text: str | None = None
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []
        self.generations: list[dict[str, Any]] = []
        self.disconnects = 0
        self.errors: list[str] = []
        self.active_streams = 0
        self.loads = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- life cycle -------------------------------------------------------------------

    def start(self: _S) -> _S:
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"standin": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"{type(self).__name__}:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:  # idle keep-alive connections would linger
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    # -- what tests read ----------------------------------------------------------------

    def requests_to(self, path: str, method: str | None = None) -> list[Any]:
        """The JSON bodies sent to ``path`` (and ``method``), oldest first."""
        with self._lock:
            return [b for m, p, b, _h in self.requests if p == path and method in (None, m)]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no stream is generating; False if one still is after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.active_streams == 0:
                return True
            time.sleep(0.01)
        return self.active_streams == 0

    # -- serving ------------------------------------------------------------------------

    @abstractmethod
    def routes(self) -> dict[tuple[str, str], Route]:
        """(method, path) → handler: what this stand-in serves."""

    def _serve(self, ex: Exchange) -> None:
        with self._lock:
            self.requests.append((ex.method, ex.path, ex.body, ex.headers))
        if (
            self.api_key is not None
            and ex.path not in self.HEALTH_PATHS
            and ex.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            ex.json(401, self.auth_error())
            return
        method = "GET" if ex.method == "HEAD" else ex.method
        route = self.routes().get((method, ex.path))
        if route is None:
            self.not_found(ex)
            return
        if method == "POST" and not isinstance(ex.body, dict):
            ex.json(400, self.error_body(400, "invalid JSON in the request body"))
            return
        try:
            route(ex)
        except Exception:  # a stand-in bug: visible to the test, and a 500 to the client
            with self._lock:
                self.errors.append(traceback.format_exc())
            with contextlib.suppress(Exception):
                ex.json(500, {"error": "stand-in internal error (see .errors)"})

    def auth_error(self) -> dict[str, Any]:
        return {"error": f"{self.NAME}: missing or wrong API key (Authorization: Bearer …)"}

    def error_body(self, _status: int, message: str) -> dict[str, Any]:
        return {"error": message}

    def not_found(self, ex: Exchange) -> None:
        ex.json(404, {"error": f"Unexpected endpoint or method. ({ex.method} {ex.path})"})

    def pieces_for(self, text: str, images: int) -> list[str]:
        if self.reply_text is not None:
            words = self.reply_text.split(" ")
            return [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        return reply_pieces(text, images, self.reply_length)

    def _stream(
        self, ex: Exchange, content_type: str, chunks: Iterable[bytes], tail: Callable[[], bytes]
    ) -> int:
        """Send ``chunks`` one per piece, then ``tail()``; the pieces actually sent.

        Applies ``delay_s`` and ``die_after``, counts a client that leaves early in
        ``disconnects``, and holds ``active_streams`` up while generating."""
        ex.start_stream(content_type)
        sent = 0
        with self._lock:
            self.active_streams += 1
        try:
            for data in chunks:
                if self.die_after is not None and sent >= self.die_after:
                    ex.abort()
                    return sent
                if ex.client_gone(self.delay_s):
                    self._count_disconnect()
                    return sent
                ex.chunk(data)
                sent += 1
            if self.die_after is not None:
                ex.abort()
                return sent
            ex.chunk(tail())
            ex.end_stream()
        except GONE_ERRORS:
            self._count_disconnect()
        finally:
            with self._lock:
                self.active_streams -= 1
        return sent

    def _count_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def _record_generation(self, **values: Any) -> None:
        with self._lock:
            self.generations.append(values)

    # -- the OpenAI-compatible chat both servers speak -----------------------------------

    def _openai_chat(
        self,
        ex: Exchange,
        model: str,
        messages: list[Any],
        limit: int | None,
        prompt_cap: int | None,
        effective: dict[str, Any],
    ) -> None:
        body = ex.body
        text, images, last = self._prompt_of(messages)
        prompt_tokens = estimate_tokens(text)
        if prompt_cap is not None:
            prompt_tokens = min(prompt_tokens, prompt_cap)
        pieces = self.pieces_for(last, len(images))
        finish = "stop"
        if limit is not None and 0 <= limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        self._record_generation(
            endpoint=ex.path,
            model=model,
            stream=bool(body.get("stream")),
            prompt_tokens=prompt_tokens,
            images=len(images),
            **effective,
        )
        ident = f"chatcmpl-{len(self.generations)}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        def usage(completion: int) -> dict[str, int]:
            return {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            }

        if not body.get("stream"):
            ex.json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": model,
                    "choices": [
                        {
                            "index": 0,
                            "logprobs": None,
                            "finish_reason": finish,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                        }
                    ],
                    "usage": usage(len(pieces)),
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def sse(data: Any) -> bytes:
            return f"data: {json.dumps(data)}\n\n".encode()

        def chunks() -> Iterable[bytes]:
            for index, piece in enumerate(pieces):
                delta = (
                    {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                )
                yield sse(chunk(delta, None))

        def tail() -> bytes:
            out = sse(chunk({}, finish))
            if include_usage:
                out += sse({**chunk({}, None), "choices": [], "usage": usage(len(pieces))})
            return out + b"data: [DONE]\n\n"

        self._stream(ex, "text/event-stream", chunks(), tail)

    @staticmethod
    def _prompt_of(messages: list[Any]) -> tuple[str, list[str], str]:
        """All message text, every image, and the last user message's text."""
        texts: list[str] = []
        images: list[str] = []
        last = ""
        for message in messages:
            if not isinstance(message, dict):
                continue
            text, urls = _text_of(message.get("content", ""))
            texts.append(text)
            images.extend(urls)
            images.extend(str(i) for i in message.get("images") or ())
            if message.get("role") == "user":
                last = text
        return "\n".join(texts), images, last


# ------------------------------------------------------------------------------------------
# Ollama


OLLAMA_DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "qwen2.5vl:7b": {
        "capabilities": ["completion", "vision"],
        "size": 6_100_000_000,
        "size_vram": 6_100_000_000,
        "context_length": 128_000,
    },
    "llama3.2:3b": {
        "capabilities": ["completion", "tools"],
        "size": 2_000_000_000,
        "size_vram": 2_000_000_000,
        "context_length": 131_072,
    },
}

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_KEEP_ALIVE_S = 300.0
FOREVER = datetime(2318, 11, 26, tzinfo=timezone.utc)  # what "never expires" looks like


def parse_keep_alive(value: Any) -> float:
    """Ollama's keep_alive: seconds (a number), or a Go duration ("5m", "1h30m", "0");
    negative means forever (``inf``).  Raises ValueError the way Ollama answers 400."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {json.dumps(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            matches = list(_DURATION_RE.finditer(body))
            if not matches or "".join(m.group(0) for m in matches) != body:
                raise ValueError(f'time: invalid duration "{text}"') from None
            seconds = sign * sum(float(m.group(1)) * _UNIT_S[m.group(2)] for m in matches)
    return float("inf") if seconds < 0 else seconds


class OllamaStandIn(StandIn):
    """A STAND-IN for Ollama (not Ollama): its native API and its ``/v1`` as documented.

    ``models``: name → ``{"capabilities": [...], "size": bytes, "size_vram": bytes,
    "context_length": trained context}``; missing keys get defaults.  Extra knobs:
    ``default_num_ctx`` (2048: the context when a request sends no ``num_ctx``, and
    always on ``/v1``) and ``version``.
    """

    HEALTH_PATHS = frozenset({"/", "/api/version"})
    NAME = "Ollama stand-in"

    def __init__(
        self, models: dict[str, dict[str, Any]] | None = None, api_key: str | None = None
    ) -> None:
        super().__init__(api_key=api_key)
        self.version = "0.12.0"
        self.default_num_ctx = 2048
        self.models: dict[str, dict[str, Any]] = {}
        for name, info in (OLLAMA_DEFAULT_MODELS if models is None else models).items():
            self.models[name] = {
                "capabilities": list(info.get("capabilities", ["completion"])),
                "size": int(info.get("size", 1_000_000_000)),
                "size_vram": int(info.get("size_vram", info.get("size", 1_000_000_000))),
                "context_length": int(info.get("context_length", 8192)),
            }
        # name → {"expires": datetime, "num_ctx": int}
        self.resident: dict[str, dict[str, Any]] = {}

    def routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("GET", "/"): lambda ex: ex.send(200, b"Ollama is running", "text/plain"),
            ("GET", "/api/version"): lambda ex: ex.json(200, {"version": self.version}),
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
            ("GET", "/v1/models"): self._v1_models,
            ("POST", "/v1/chat/completions"): self._v1_chat,
        }

    def not_found(self, ex: Exchange) -> None:
        ex.send(404, b"404 page not found", "text/plain")

    # -- models -------------------------------------------------------------------------

    def resolve(self, name: Any) -> str | None:
        """The model's full name (``x`` means ``x:latest``), or None when not pulled."""
        if not isinstance(name, str) or not name:
            return None
        if name in self.models:
            return name
        if ":" not in name and f"{name}:latest" in self.models:
            return f"{name}:latest"
        return None

    @staticmethod
    def _details(name: str) -> dict[str, Any]:
        family = re.split(r"[:.\d]", name, maxsplit=1)[0] or "llama"
        size = re.search(r":(\d+(?:\.\d+)?b)", name)
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": (size.group(1).upper() if size else "7B"),
            "quantization_level": "Q4_K_M",
        }

    @staticmethod
    def _digest(name: str) -> str:
        return "sha256:" + hashlib.sha256(name.encode("utf-8")).hexdigest()

    def _tags(self, ex: Exchange) -> None:
        modified = _now_iso()
        ex.json(
            200,
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": modified,
                        "size": info["size"],
                        "digest": self._digest(name),
                        "details": self._details(name),
                    }
                    for name, info in self.models.items()
                ]
            },
        )

    def _show(self, ex: Exchange) -> None:
        asked = ex.body.get("model", ex.body.get("name"))
        name = self.resolve(asked)
        if name is None:
            ex.json(404, {"error": f"model '{asked}' not found"})
            return
        info = self.models[name]
        details = self._details(name)
        arch = details["family"]
        ex.json(
            200,
            {
                "modelfile": f"# Modelfile generated by the Ollama stand-in\nFROM {name}\n",
                "parameters": 'stop "<|im_end|>"',
                "template": "{{ .Prompt }}",
                "details": details,
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": info["size"] * 2,
                    f"{arch}.block_count": 28,
                    f"{arch}.attention.head_count": 16,
                    f"{arch}.attention.head_count_kv": 4,
                    f"{arch}.embedding_length": 2048,
                    f"{arch}.context_length": info["context_length"],
                },
                "capabilities": list(info["capabilities"]),
                "modified_at": _now_iso(),
            },
        )

    def _purge(self) -> None:
        now = datetime.now(timezone.utc)
        with self._lock:
            for name in [n for n, r in self.resident.items() if r["expires"] <= now]:
                del self.resident[name]

    def _ps(self, ex: Exchange) -> None:
        self._purge()
        with self._lock:
            resident = dict(self.resident)
        ex.json(
            200,
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "size": self.models[name]["size"],
                        "digest": self._digest(name),
                        "details": self._details(name),
                        "expires_at": entry["expires"].isoformat().replace("+00:00", "Z"),
                        "size_vram": self.models[name]["size_vram"],
                        "context_length": entry["num_ctx"],
                    }
                    for name, entry in resident.items()
                ]
            },
        )

    def _load(self, name: str, num_ctx: int, keep_alive_s: float) -> int:
        """Make ``name`` resident with ``num_ctx``; the load time in ns (0 when it was)."""
        self._purge()
        now = datetime.now(timezone.utc)
        forever = keep_alive_s > 1e9  # negative keep_alive (inf), or centuries anyway
        expires = FOREVER if forever else now + timedelta(seconds=keep_alive_s)
        with self._lock:
            entry = self.resident.get(name)
            loaded = entry is None or entry["num_ctx"] != num_ctx
            if loaded:
                self.loads += 1
            self.resident[name] = {"expires": expires, "num_ctx": num_ctx}
        return 250_000_000 if loaded else 0

    def _unload(self, name: str) -> None:
        with self._lock:
            self.resident.pop(name, None)

    # -- native chat and generate ---------------------------------------------------------

    def _not_pulled(self, ex: Exchange, asked: Any) -> None:
        ex.json(404, {"error": f'model "{asked}" not found, try pulling it first'})

    def _chat(self, ex: Exchange) -> None:
        body = ex.body
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            ex.json(400, {"error": "messages must be a list"})
            return
        self._native(ex, "chat", messages or [])

    def _generate(self, ex: Exchange) -> None:
        body = ex.body
        messages = []
        if body.get("system"):
            messages.append({"role": "system", "content": str(body["system"])})
        if body.get("prompt"):
            messages.append(
                {"role": "user", "content": str(body["prompt"]), "images": body.get("images") or []}
            )
        self._native(ex, "generate", messages)

    def _native(self, ex: Exchange, kind: str, messages: list[Any]) -> None:
        """``/api/chat`` and ``/api/generate``: a load, an unload or a generation."""
        body = ex.body
        asked = body.get("model")
        name = self.resolve(asked)
        if name is None:
            self._not_pulled(ex, asked)
            return
        try:
            keep_alive_s = parse_keep_alive(body.get("keep_alive"))
        except ValueError as err:
            ex.json(400, {"error": str(err)})
            return
        options = body.get("options") or {}
        if not isinstance(options, dict):
            ex.json(400, {"error": "options must be an object"})
            return
        num_ctx = int(options.get("num_ctx") or self.default_num_ctx)
        info = self.models[name]
        started = time.monotonic_ns()

        def final(reason: str, **more: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"model": name, "created_at": _now_iso()}
            if kind == "chat":
                out["message"] = {"role": "assistant", "content": ""}
            else:
                out["response"] = ""
            return {**out, "done_reason": reason, "done": True, **more}

        if not messages:  # a load, or with keep_alive 0 an unload
            if keep_alive_s == 0:
                self._unload(name)
                ex.json(200, final("unload"))
            else:
                self._load(name, num_ctx, keep_alive_s)
                ex.json(200, final("load"))
            return
        text, images, last = self._prompt_of(messages)
        if images and "vision" not in info["capabilities"]:
            ex.json(400, {"error": f'"{name}" does not support images'})
            return
        for image in images:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                at = image.find(":") if image.startswith("data:") else 0
                ex.json(400, {"error": f"illegal base64 data at input byte {max(at, 0)}"})
                return
        think = body.get("think")
        if think and "thinking" not in info["capabilities"]:
            ex.json(400, {"error": f'"{name}" does not support thinking'})
            return
        load_ns = self._load(name, num_ctx, keep_alive_s)
        prompt_tokens = min(estimate_tokens(text), num_ctx)  # Ollama truncates silently
        limit = options.get("num_predict")
        limit = None if limit is None or int(limit) < 0 else int(limit)
        pieces = self.pieces_for(last, len(images))
        reason = "stop"
        if limit is not None and limit < len(pieces):
            pieces, reason = pieces[:limit], "length"
        self._record_generation(
            endpoint=ex.path,
            model=name,
            stream=body.get("stream", True),
            prompt_tokens=prompt_tokens,
            images=len(images),
            num_ctx=num_ctx,
            keep_alive=body.get("keep_alive"),
            num_predict=limit,
            temperature=options.get("temperature"),
            top_p=options.get("top_p"),
            think=think,
            options=dict(options),
        )

        def stats(sent: int) -> dict[str, Any]:
            evaluating = max(time.monotonic_ns() - started, 1)
            prompt_ns = 1_000_000
            return {
                "total_duration": load_ns + prompt_ns + evaluating,
                "load_duration": load_ns,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": prompt_ns,
                "eval_count": sent,
                "eval_duration": evaluating,
            }

        def line(piece: str, thinking: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"model": name, "created_at": _now_iso()}
            if kind == "chat":
                out["message"] = {"role": "assistant", "content": piece}
                if thinking is not None:
                    out["message"]["thinking"] = thinking
            else:
                out["response"] = piece
                if thinking is not None:
                    out["thinking"] = thinking
            out["done"] = False
            return out

        try:
            if body.get("stream", True) is False:
                if self.delay_s:
                    time.sleep(self.delay_s * len(pieces))
                whole = line("".join(pieces), "Stand-in thinking." if think else None)
                whole.pop("done")
                ex.json(200, {**final(reason, **stats(len(pieces))), **whole})
                return

            def ndjson(data: dict[str, Any]) -> bytes:
                return json.dumps(data).encode("utf-8") + b"\n"

            def chunks() -> Iterable[bytes]:
                if think:
                    yield ndjson(line("", "Stand-in thinking."))
                for piece in pieces:
                    yield ndjson(line(piece))

            def tail() -> bytes:
                return ndjson(final(reason, **stats(len(pieces))))

            self._stream(ex, "application/x-ndjson", chunks(), tail)
        finally:
            if keep_alive_s == 0:  # answered, then unloaded at once
                self._unload(name)

    # -- /v1 -------------------------------------------------------------------------------

    @staticmethod
    def _v1_error(message: str, kind: str = "api_error") -> dict[str, Any]:
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def _v1_models(self, ex: Exchange) -> None:
        created = int(time.time())
        ex.json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "library"}
                    for name in self.models
                ],
            },
        )

    def _v1_chat(self, ex: Exchange) -> None:
        body = ex.body
        asked = body.get("model")
        name = self.resolve(asked)
        if name is None:
            ex.json(
                404,
                self._v1_error(
                    f'model "{asked}" not found, try pulling it first', "not_found_error"
                ),
            )
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            ex.json(400, self._v1_error("[] is too short - 'messages'", "invalid_request_error"))
            return
        _text, images, _last = self._prompt_of(messages)
        for url in images:
            if not url.startswith("data:"):
                ex.json(400, self._v1_error("invalid image input", "invalid_request_error"))
                return
        if images and "vision" not in self.models[name]["capabilities"]:
            ex.json(400, self._v1_error(f'"{name}" does not support images'))
            return
        # /v1 has no keep_alive and no num_ctx: the server's defaults apply.
        num_ctx = self.default_num_ctx
        self._load(name, num_ctx, DEFAULT_KEEP_ALIVE_S)
        limit = body.get("max_tokens")  # max_completion_tokens is not read
        effective = {
            "num_ctx": num_ctx,
            "num_predict": None if limit is None else int(limit),
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "keep_alive": None,
            "options": {
                k: body[k]
                for k in ("seed", "stop", "frequency_penalty", "presence_penalty")
                if k in body
            },
        }
        self._openai_chat(ex, name, messages, effective["num_predict"], num_ctx, effective)


# ------------------------------------------------------------------------------------------
# LM Studio


LMSTUDIO_DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "qwen2-vl-2b-instruct": {"type": "vlm", "state": "not-loaded"},
    "llama-3.2-1b-instruct": {"type": "llm", "state": "loaded"},
}


class LMStudioStandIn(StandIn):
    """A STAND-IN for LM Studio's server (not LM Studio), from its documented REST APIs.

    ``models``: id → ``{"type": "llm"|"vlm"|"embeddings", "state": "loaded"|"not-loaded",
    "max_context_length": int}``.  A chat request loads its model (JIT loading); an
    unload or ``ttl`` is recorded, eviction by time is not modelled.
    """

    NAME = "LM Studio stand-in"

    def __init__(
        self, models: dict[str, dict[str, Any]] | None = None, api_key: str | None = None
    ) -> None:
        super().__init__(api_key=api_key)
        self.default_context_length = 4096
        self.models: dict[str, dict[str, Any]] = {}
        for key, info in (LMSTUDIO_DEFAULT_MODELS if models is None else models).items():
            self.models[key] = {
                "type": info.get("type", "llm"),
                "state": info.get("state", "not-loaded"),
                "max_context_length": int(info.get("max_context_length", 32768)),
                "context_length": int(info.get("context_length", 4096)),
            }

    def routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("GET", "/v1/models"): self._v1_models,
            ("GET", "/api/v0/models"): self._v0_models,
            ("GET", "/api/v1/models"): self._api_v1_models,
            ("POST", "/api/v1/models/load"): self._load_route,
            ("POST", "/api/v1/models/unload"): self._unload_route,
            ("POST", "/v1/chat/completions"): self._chat,
        }

    def loaded(self, key: str) -> bool:
        with self._lock:
            return self.models[key]["state"] == "loaded"

    def _set_state(self, key: str, state: str, context_length: int | None = None) -> None:
        with self._lock:
            info = self.models[key]
            if state == "loaded" and info["state"] != "loaded":
                self.loads += 1
            info["state"] = state
            if context_length is not None:
                info["context_length"] = context_length

    def _v1_models(self, ex: Exchange) -> None:
        ex.json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": key, "object": "model", "owned_by": "organization_owner"}
                    for key in self.models
                ],
            },
        )

    def _v0_models(self, ex: Exchange) -> None:
        with self._lock:
            models = {k: dict(v) for k, v in self.models.items()}
        ex.json(
            200,
            {
                "object": "list",
                "data": [
                    {
                        "id": key,
                        "object": "model",
                        "type": info["type"],
                        "publisher": "lmstudio-community",
                        "arch": key.split("-")[0],
                        "compatibility_type": "gguf",
                        "quantization": "Q4_K_M",
                        "state": info["state"],
                        "max_context_length": info["max_context_length"],
                    }
                    for key, info in models.items()
                ],
            },
        )

    def _api_v1_models(self, ex: Exchange) -> None:
        with self._lock:
            models = {k: dict(v) for k, v in self.models.items()}
        out = []
        for key, info in models.items():
            loaded = info["state"] == "loaded"
            out.append(
                {
                    "type": "embedding" if info["type"] == "embeddings" else "llm",
                    "publisher": "lmstudio-community",
                    "key": key,
                    "display_name": key,
                    "architecture": key.split("-")[0],
                    "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.5},
                    "size_bytes": 1_500_000_000,
                    "params_string": "2B",
                    "loaded_instances": [
                        {
                            "id": key,
                            "config": {
                                "context_length": info["context_length"],
                                "flash_attention": True,
                            },
                        }
                    ]
                    if loaded
                    else [],
                    "max_context_length": info["max_context_length"],
                    "format": "gguf",
                    "capabilities": {
                        "vision": info["type"] == "vlm",
                        "trained_for_tool_use": False,
                    },
                }
            )
        ex.json(200, {"models": out})

    def _load_route(self, ex: Exchange) -> None:
        key = ex.body.get("model")
        if key not in self.models:
            ex.json(404, {"error": f"Model '{key}' not found"})
            return
        config = ex.body.get("config") or {}
        context = int(config.get("context_length") or self.default_context_length)
        self._set_state(key, "loaded", context)
        ex.json(
            200,
            {
                "type": "llm",
                "instance_id": key,
                "model_instance_id": key,
                "config": {"context_length": context},
                "load_time_seconds": 0.25,
                "status": "loaded",
            },
        )

    def _unload_route(self, ex: Exchange) -> None:
        instance = ex.body.get("instance_id")
        if instance not in self.models or not self.loaded(instance):
            ex.json(404, {"error": f"No loaded model instance with id '{instance}'"})
            return
        self._set_state(instance, "not-loaded")
        ex.json(200, {"instance_id": instance})

    def error_body(self, _status: int, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": "invalid_request_error"}}

    def _chat(self, ex: Exchange) -> None:
        body = ex.body
        key = body.get("model")
        if key not in self.models:
            ex.json(
                404,
                {
                    "error": {
                        "message": f"Model '{key}' not found",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
            )
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            ex.json(400, self.error_body(400, "'messages' field is required"))
            return
        _text, images, _last = self._prompt_of(messages)
        if images and self.models[key]["type"] != "vlm":
            ex.json(
                400,
                self.error_body(
                    400, "Model does not support images. Please use a model that does."
                ),
            )
            return
        self._set_state(key, "loaded")
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        limit = None if limit is None or int(limit) < 0 else int(limit)
        effective = {
            "num_predict": limit,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "ttl": body.get("ttl"),
        }
        self._openai_chat(ex, key, messages, limit, None, effective)
