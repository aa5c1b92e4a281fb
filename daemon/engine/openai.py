"""A model on an OpenAI-compatible server: ``/v1/chat/completions``, streamed.

llama-server (ours or the user's), LM Studio, KoboldCpp, vLLM and
``llama_cpp.server`` all speak it.  Cancel shuts the streaming socket down, which
every one of them takes as "stop generating" (llama-server frees its slot).
Token counts come from llama-server's ``timings`` where present (``cache_n`` is
the reused prefix), else from ``usage``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx

from daemon.backends import wire_options
from daemon.engine import Generation, TextSink
from daemon.engine.http import HttpEngine, HttpErrors, Pieces, server_hint
from daemon.models import ModelSpec

log = logging.getLogger(__name__)

# Sent every time: Ollama's /v1 forces temperature and top_p to 1.0 when they are missing.
DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 512}


class OpenAIEngine(HttpEngine):
    """One OpenAI-compatible server; a request at a time; cancel from any thread."""

    backend = "openai"

    def __init__(self, api_key: str | None = None, flavour: str | None = None) -> None:
        super().__init__(api_key)
        self._flavour = flavour  # "llama-server" adds its cache and timing fields

    @property
    def loaded(self) -> bool:
        return self._spec is not None

    def load(self, spec: ModelSpec) -> float:
        self._checked(spec)
        if self._spec is not None and self._spec.url != spec.url:
            self.close()
        self._spec = spec
        self._flavour = spec.opt("server_kind", self._flavour)
        return 0.0

    def unload(self) -> None:
        """Forget the model; LM Studio (the one such server that can) is asked to unload
        it, so that its VRAM goes back too."""
        self.cancel()
        spec, self._spec = self._spec, None
        if spec is not None and self._flavour == "lmstudio":
            self._unload_lmstudio(spec)

    def _unload_lmstudio(self, spec: ModelSpec) -> None:
        name = self.remote_name(spec)
        try:
            client = self.http(spec)
            listed = client.get(f"{spec.url}/api/v1/models", timeout=5.0).json()
            for model in listed.get("models") or ():
                if model.get("key") != name:
                    continue
                for instance in model.get("loaded_instances") or ():
                    client.post(f"{spec.url}/api/v1/models/unload",
                                json={"instance_id": instance["id"]}, timeout=30.0)  # fmt: skip
                    log.info("LM Studio: unloaded %s", instance["id"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            log.warning("LM Studio did not unload %s: %s", name, err)

    def request_body(
        self, spec: ModelSpec, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.remote_name(spec),
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(DEFAULTS)
        body.update(wire_options(spec, options))
        if self._flavour == "llama-server":
            body["cache_prompt"] = True
        return body

    def _stream(
        self, spec: ModelSpec, body: dict[str, Any], on_text: TextSink | None
    ) -> Generation:
        errors = HttpErrors(spec, hint=server_hint(spec))
        pieces = Pieces(on_text)
        last: dict[str, Any] = {}
        finish = "stop"
        url = f"{spec.url}{self.path}"
        try:
            with self.http(spec).stream("POST", url, json=body) as response:
                self.opened(response, errors)
                for event in sse_events(response.iter_lines()):
                    if "error" in event:
                        raise errors.in_stream(event["error"])
                    for key in ("timings", "usage"):
                        if event.get(key):
                            last[key] = event[key]
                    for choice in event.get("choices") or ():
                        pieces.add((choice.get("delta") or {}).get("content"))
                        if choice.get("finish_reason"):
                            finish = "length" if choice["finish_reason"] == "length" else "stop"
        except httpx.HTTPError as err:
            self.broken(err, errors, mid_stream=pieces.first is not None)
        return Generation(
            text=pieces.text,
            finish_reason="cancelled" if self._cancelled.is_set() else finish,
            ttft_s=pieces.first,
            total_s=pieces.elapsed(),
            **token_counts(last, pieces=len(pieces.parts)),
        )


def token_counts(last: dict[str, Any], pieces: int = 0) -> dict[str, Any]:
    """prompt / reused / completion tokens from llama-server's timings, else usage, else
    (a server that sends neither) one token per streamed piece, marked as counted so."""
    timings = last.get("timings") or {}
    usage = last.get("usage") or {}
    if "prompt_n" in timings:
        cached = int(timings.get("cache_n") or 0)
        counts = {
            "prompt_tokens": int(timings["prompt_n"]) + cached,
            "reused_tokens": cached,
            "completion_tokens": int(timings.get("predicted_n") or 0),
            "extra": {"prompt_eval_s": round(float(timings.get("prompt_ms") or 0) / 1000, 4)},
        }
        return counts
    details = usage.get("prompt_tokens_details") or {}
    if not usage:
        return {"completion_tokens": pieces, "extra": {"tokens_from": "stream pieces"}}
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "reused_tokens": int(details.get("cached_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent-events stream, up to ``data: [DONE]``; the rest
    is read too, so that the connection goes back to the pool for the next request."""
    done = False
    for line in lines:
        if done or not line.startswith("data:"):
            continue  # comments (": ping"), event names, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
        except ValueError:
            log.debug("skipping an unparsable stream line")
            continue
        if isinstance(event, dict):
            yield event
