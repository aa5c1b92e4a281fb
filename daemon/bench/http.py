"""The reference for a server: a bare streaming HTTP client sending exactly the request
yomitori's engine would send (same URL, key, body), and parsing no more than it must."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


class RawHttp:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.client = httpx.Client(timeout=600, trust_env=False)

    def stream(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[str]:
        try:
            yield from self._stream(messages, options)
        except httpx.RemoteProtocolError:  # a kept-alive connection the server had closed
            yield from self._stream(messages, options)

    def _stream(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[str]:
        url, headers, body = self.engine.wire(messages, options)
        sse = not url.endswith("/api/chat")
        with self.client.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if sse:
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[6:]).get("choices") or ()
                    piece = choices[0].get("delta", {}).get("content") if choices else None
                else:
                    if not line:
                        continue
                    piece = json.loads(line).get("message", {}).get("content")
                if piece:
                    yield piece

    def close(self) -> None:
        self.client.close()
