"""A model in the user's Ollama, through the native ``/api/chat`` (NDJSON stream).

yomitori's ``keep_alive`` becomes the request's, so Ollama frees VRAM when
yomitori would; ``num_ctx`` is always sent (Ollama's default depends on the GPU
and it cuts longer prompts silently), and a ``prompt_eval_count`` below what the
prompt must have been is reported as a cut prompt.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from daemon.backends import wire_options
from daemon.engine import Generation, TextSink
from daemon.engine.http import HttpEngine, HttpErrors, Pieces, ServerUnavailable, server_hint
from daemon.errors import EngineError
from daemon.models import ModelSpec

log = logging.getLogger(__name__)

# A context ladder, so num_ctx changes rarely: each new value makes Ollama reload.
_CTX_LADDER = (4096, 8192, 16384, 32768, 65536, 131072)
# Tokens an image costs at most at yomitori's default 1024 px (Qwen2.5-VL ≈ 1,300).
_IMAGE_TOKENS = 1600
_UNLOAD_CONFIRM_S = 5.0


def to_ollama(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages (content parts, data-URI images) → Ollama's (raw base64)."""
    result = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            result.append({"role": message["role"], "content": content})
            continue
        texts, images = [], []
        for part in content or ():
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"]
                images.append(url.split(",", 1)[1] if url.startswith("data:") else url)
        entry: dict[str, Any] = {"role": message["role"], "content": "\n".join(texts)}
        if images:
            entry["images"] = images
        result.append(entry)
    return result


def prompt_size(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(UTF-8 bytes of text, number of images) of Ollama-style messages."""
    text = sum(len(m.get("content", "").encode("utf-8")) for m in messages)
    return text, sum(len(m.get("images", ())) for m in messages)


def context_for(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """A num_ctx that holds the prompt and the answer: at most ~3 bytes a token (Japanese),
    from a short ladder so that the model is not reloaded for every size."""
    text, images = prompt_size(messages)
    need = text // 3 + images * _IMAGE_TOKENS + max_tokens + 64
    return next((n for n in _CTX_LADDER if n >= need), _CTX_LADDER[-1])


class OllamaEngine(HttpEngine):
    backend = "ollama"
    path = "/api/chat"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self._resident = False
        self.keep_alive_s = 1800.0

    def set_keep_alive(self, seconds: float) -> None:
        """yomitori's keep_alive, sent with each request (Ollama expires it itself too)."""
        self.keep_alive_s = seconds

    @property
    def loaded(self) -> bool:
        return self._spec is not None and self._resident

    def load(self, spec: ModelSpec) -> float:
        self._checked(spec)
        if self._resident and self._spec is not None and self._spec.load_key() == spec.load_key():
            self._spec = spec
            return 0.0
        self._spec = spec
        started = time.perf_counter()
        body = {"model": self.remote_name(spec), "messages": [], "keep_alive": self._keep_alive(),
                "options": {"num_ctx": int(spec.opt("num_ctx") or _CTX_LADDER[0])}}  # fmt: skip
        response = self._post(spec, "/api/chat", body, stream=False)
        log.info("ollama: %s loaded (%s)", spec.remote, response.get("done_reason"))
        self._resident = True
        return time.perf_counter() - started

    def unload(self) -> None:
        """Tell Ollama to drop the model now and see it leave ``/api/ps``."""
        self.cancel()
        spec, self._spec = self._spec, None
        if spec is None or not self._resident:
            return
        self._resident = False
        try:
            self._post(spec, "/api/chat", {"model": self.remote_name(spec), "messages": [],
                                           "keep_alive": 0}, stream=False)  # fmt: skip
            deadline = time.monotonic() + _UNLOAD_CONFIRM_S
            while time.monotonic() < deadline:
                if self._running(spec) is None:
                    log.info("ollama: %s unloaded", spec.remote)
                    return
                time.sleep(0.1)
            log.warning("ollama: %s still listed in /api/ps after unloading", spec.remote)
        except (EngineError, httpx.HTTPError) as err:
            log.warning("ollama: could not unload %s: %s", spec.remote, err)

    def stats(self) -> dict[str, Any]:
        """The shared state, and what /api/ps says: resident, and how much is on the GPU."""
        state = super().stats()
        spec = self._spec
        if spec is not None:
            try:
                running = self._running(spec)
            except (EngineError, httpx.HTTPError):
                running = None
                state["reachable"] = False
            if running is not None:
                size, vram = int(running.get("size") or 0), int(running.get("size_vram") or 0)
                state.update(resident=True, size_bytes=size, vram_bytes=vram,
                             on_gpu="all" if size and vram >= size else
                             ("partly" if vram else "no"),
                             context_length=running.get("context_length"),
                             expires_at=running.get("expires_at"))  # fmt: skip
            elif state.get("reachable", True):
                state["resident"] = False
        return state

    # -- requests ----------------------------------------------------------------
    def request_body(
        self, spec: ModelSpec, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> dict[str, Any]:
        converted = to_ollama(messages)
        wire = wire_options(spec, options)
        wire.setdefault("temperature", 0.8)
        wire.setdefault("top_p", 0.95)
        max_tokens = int(wire.setdefault("num_predict", 512))
        wire["num_ctx"] = int(spec.opt("num_ctx") or context_for(converted, max_tokens))
        body: dict[str, Any] = {
            "model": self.remote_name(spec),
            "messages": converted,
            "stream": True,
            "keep_alive": self._keep_alive(),
            "options": wire,
        }
        if spec.opt("thinking"):
            body["think"] = bool(options.get("think", False))
        return body

    def _keep_alive(self) -> int | str:
        seconds = self.keep_alive_s
        return -1 if seconds < 0 else (0 if seconds == 0 else f"{int(seconds)}s")

    def _post(self, spec: ModelSpec, path: str, body: dict[str, Any], stream: bool) -> Any:
        errors = HttpErrors(spec, server_hint(spec))
        try:
            response = self.http(spec).post(f"{spec.url}{path}", json={**body, "stream": stream})
        except httpx.HTTPError as err:
            raise errors.transport(err) from None
        if response.status_code >= 400:
            raise errors.status(response)
        return response.json()

    def _running(self, spec: ModelSpec) -> dict[str, Any] | None:
        """This model's entry in /api/ps, None when it is not resident."""
        response = self.http(spec).get(f"{spec.url}/api/ps", timeout=3.0)
        name = self.remote_name(spec)
        for model in response.json().get("models") or ():
            if name in (model.get("name"), model.get("model")):
                return dict(model)
        return None

    def _stream(
        self, spec: ModelSpec, body: dict[str, Any], on_text: TextSink | None
    ) -> Generation:
        errors = HttpErrors(spec, server_hint(spec))
        pieces = Pieces(on_text)
        final: dict[str, Any] = {}
        try:
            with self.http(spec).stream("POST", f"{spec.url}{self.path}", json=body) as response:
                self.opened(response, errors)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        raise errors.in_stream(event["error"])
                    pieces.add((event.get("message") or {}).get("content"))
                    if event.get("done"):
                        final = event  # read on to the end: the connection is then reused
        except httpx.HTTPError as err:
            self.broken(err, errors, mid_stream=pieces.first is not None)
        except ValueError:
            self._drop_client()
            raise EngineError(f"Ollama at {spec.url} sent something that is not JSON.") from None
        self._resident = body["keep_alive"] != 0
        if self._cancelled.is_set():
            finish = "cancelled"
        else:
            finish = "length" if final.get("done_reason") == "length" else "stop"
            self._check_cut(spec, body, final)
        result = Generation(
            text=pieces.text,
            finish_reason=finish,
            ttft_s=pieces.first,
            total_s=pieces.elapsed(),
            prompt_tokens=int(final.get("prompt_eval_count") or 0),
            reused_tokens=int(final.get("prompt_eval_cached_count") or 0),
            completion_tokens=int(final.get("eval_count") or 0),
            extra={"prompt_eval_s": round(int(final.get("prompt_eval_duration") or 0) / 1e9, 4)},
        )
        if final.get("load_duration"):
            # Ollama's own load time (near 0 when resident), apart from ours.
            result.extra["server_load_s"] = round(int(final["load_duration"]) / 1e9, 4)
        return result

    @staticmethod
    def _check_cut(spec: ModelSpec, body: dict[str, Any], final: dict[str, Any]) -> None:
        """Ollama drops the start of a prompt longer than num_ctx and says nothing.  A
        prompt has at least one token per 8 bytes of text, so fewer means it was cut."""
        counted = final.get("prompt_eval_count")
        text, _images = prompt_size(body["messages"])
        if counted is None or counted >= text // 8:
            return
        num_ctx = body["options"]["num_ctx"]
        raise ServerUnavailable(
            f"Ollama cut the prompt to {counted} tokens (num_ctx = {num_ctx}, the prompt needs "
            f"about {text // 3}): set n_ctx = {num_ctx * 2} or more for '{spec.name}' in "
            "models.toml."
        )
