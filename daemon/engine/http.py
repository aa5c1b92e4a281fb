"""What the HTTP engines share: one sentence per failure, and which server a URL is."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlsplit

import httpx

from daemon.backends.common import check_url
from daemon.engine import Generation, TextSink
from daemon.errors import EngineError, UserInputError
from daemon.models import ModelSpec

log = logging.getLogger(__name__)

# The usual ports, for "how to start it" hints and discovery.
KNOWN_PORTS = {
    11434: ("Ollama", "start Ollama (ollama serve, or its app)"),
    1234: ("LM Studio", "start LM Studio's server (lms server start, or the Developer tab)"),
    8080: ("llama-server", "start llama-server (llama-server -m MODEL.gguf --port 8080)"),
    5001: ("KoboldCpp", "start KoboldCpp"),
}


class ServerUnavailable(UserInputError):
    """Nothing answers at the URL, or it refuses us: the user can fix it (exit 2)."""


class ServerFailed(EngineError):
    """The server failed or went away while working on a request."""


def server_hint(spec: ModelSpec) -> str:
    if spec.backend == "ollama":
        return KNOWN_PORTS[11434][1]
    port = urlsplit(spec.url or "").port
    return KNOWN_PORTS.get(port or 0, ("", "start the server"))[1]


def error_text(response: httpx.Response) -> str:
    """The server's own error message, short."""
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300]
    return str(data)[:300]


class HttpErrors:
    """Failures of one model's server as sentences a user can act on."""

    def __init__(self, spec: ModelSpec, hint: str) -> None:
        self.spec = spec
        self.hint = hint

    @property
    def url(self) -> str:
        return self.spec.url or "?"

    def down(self) -> ServerUnavailable:
        return ServerUnavailable(
            f"Nothing answers at {self.url} — {self.hint}, or change url for '{self.spec.name}' "
            f"in models.toml."
        )

    def transport(self, err: httpx.HTTPError, mid_stream: bool = False) -> EngineError:
        if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout):
            return self.down()
        if isinstance(err, httpx.TimeoutException):
            timeout = self.spec.opt("timeout_s", 600)
            return ServerFailed(
                f"The server at {self.url} did not answer within {timeout:g} s; it may still "
                f"be loading '{self.spec.remote or self.spec.name}'. Try again, or raise "
                "timeout_s in models.toml."
            )
        log.debug("HTTP failure talking to %s: %r", self.url, err)
        when = "in the middle of an answer" if mid_stream else "before answering"
        return ServerFailed(
            f"The server at {self.url} closed the connection {when} (did it stop or crash?); "
            "the next request tries again."
        )

    def status(self, response: httpx.Response) -> YomitoriHttpError:
        code = response.status_code
        said = error_text(response)
        if code in (401, 403):
            return self.refused(code)
        if code == 404 and "model" in said.lower():
            return ServerUnavailable(
                f"The server at {self.url} has no model '{self.spec.remote}' ({said}); "
                "yomitori models --discover lists the ones it has."
            )
        if code == 400 and ("image" in said.lower() or "mmproj" in said.lower()):
            return ServerUnavailable(
                f"The server at {self.url} cannot take images with '{self.spec.remote}' "
                f"({said}): pick a vision model."
            )
        if code in (400, 413) and ("context" in said.lower() or "too long" in said.lower()):
            return ServerUnavailable(
                f"The input is too long for '{self.spec.name}' on {self.url} ({said}): shorten "
                "it or give the model a larger context on the server."
            )
        return ServerFailed(f"The server at {self.url} answered {code}: {said or 'no details'}.")

    def refused(self, code: int) -> ServerUnavailable:
        """The server wants an API key (401/403): which variable to set or check."""
        env = self.spec.opt("api_key_env")
        fix = (
            f"check the key in ${env}" if env else
            "set api_key_env for this model in models.toml to the name of an environment "
            "variable that holds the key"
        )  # fmt: skip
        return ServerUnavailable(f"The server at {self.url} refused the API key ({code}): {fix}.")

    def in_stream(self, error: Any) -> ServerFailed:
        message = error.get("message", error) if isinstance(error, dict) else error
        return ServerFailed(f"The server at {self.url} stopped with an error: {str(message)[:300]}")


YomitoriHttpError = ServerUnavailable | ServerFailed


class StaleConnection(Exception):
    """The request met a connection the server had already closed (internal)."""


# What a pooled connection the server closed in the meantime looks like.
STALE_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Pieces:
    """An answer as it streams in: its pieces, when the first came, who is listening."""

    def __init__(self, on_text: TextSink | None) -> None:
        self.parts: list[str] = []
        self.first: float | None = None
        self._on_text = on_text
        self._started = time.perf_counter()

    def add(self, piece: str | None) -> None:
        if not piece:
            return
        if self.first is None:
            self.first = time.perf_counter() - self._started
        self.parts.append(piece)
        if self._on_text is not None:
            self._on_text(piece)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def elapsed(self) -> float:
        return time.perf_counter() - self._started


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class HttpEngine(ABC):
    """What the HTTP engines share: one request at a time, a pooled client with the
    model's timeout and key, loopback checked again at run time, and cancel by shutting
    the streaming socket (any thread)."""

    backend = "http"

    def __init__(self, api_key: str | None = None) -> None:
        self._api_key = api_key
        self._spec: ModelSpec | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._cancelled = threading.Event()
        self._retried = False
        self.last: Generation | None = None

    @property
    def spec(self) -> ModelSpec | None:
        return self._spec

    def _checked(self, spec: ModelSpec) -> ModelSpec:
        if spec.url is None:
            raise EngineError(f"Model '{spec.name}' has no server url.")
        check_url(spec.url, bool(spec.opt("allow_remote")))
        return spec

    def generate(
        self,
        messages: list[dict[str, Any]],
        options: dict[str, Any],
        on_text: TextSink | None = None,
    ) -> Generation:
        with self._lock:
            spec = self._spec
            if spec is None:
                raise EngineError("No model is loaded; load one first.")
            self._checked(spec)  # also at run time, not only when models.toml was read
            self._cancelled.clear()
            self._retried = False
            body = self.request_body(spec, messages, options)
            try:
                result = self._stream(spec, body, on_text)
            except StaleConnection:
                # A kept-alive connection the server had closed: nothing was sent to the
                # model, so the request goes again on a fresh one (once).
                log.debug("retrying on a fresh connection to %s", spec.url)
                result = self._stream(spec, body, on_text)
            finally:
                self._response = None
            self.last = result
            return result

    #: Where a generation is posted, after the server's URL.
    path = "/v1/chat/completions"

    def wire(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """URL, headers and body of the request ``generate`` would send (for the bench's
        bare reference client)."""
        spec = self._spec
        if spec is None:
            raise EngineError("No model is loaded; load one first.")
        url = f"{spec.url}{self.path}"
        return url, auth_headers(self._api_key), self.request_body(spec, messages, options)

    @abstractmethod
    def request_body(
        self, spec: ModelSpec, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> dict[str, Any]:
        """The body of a streamed generation, in this server's wire format."""

    @abstractmethod
    def _stream(
        self, spec: ModelSpec, body: dict[str, Any], on_text: TextSink | None
    ) -> Generation:
        """Post ``body`` and read the answer's stream; uses :meth:`opened` and :meth:`broken`."""

    @staticmethod
    def remote_name(spec: ModelSpec) -> str:
        """The model's name on the server, as the server spelled it when asked."""
        return str(spec.opt("remote_id") or spec.remote)

    def stats(self) -> dict[str, Any]:
        spec = self._spec
        state: dict[str, Any] = {
            "backend": spec.backend if spec else self.backend,
            "model": spec.name if spec else None,
            "loaded": self.loaded,
            "busy": self._response is not None,
        }
        if spec is not None:
            state["url"] = spec.url
            if spec.opt("allow_remote"):
                state["remote"] = True
        if self.last is not None:
            state["last_timings"] = self.last.timings()
        return state

    @property
    @abstractmethod
    def loaded(self) -> bool:
        """Whether the model is resident (as far as this engine can tell)."""

    def cancel(self) -> None:
        self._cancelled.set()
        response = self._response
        if response is not None:
            shut_down(response)

    def close(self) -> None:
        """Let go of the connection; the server keeps whatever it holds."""
        self.cancel()
        self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def http(self, spec: ModelSpec) -> httpx.Client:
        if self._client is None:
            timeout = float(spec.opt("timeout_s", 600.0))
            self._client = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=3.0),
                headers=auth_headers(self._api_key),
                trust_env=False,
            )
        return self._client

    def opened(self, response: httpx.Response, errors: HttpErrors) -> None:
        """A streaming response has started: make it cancellable; a refusal is an error."""
        self._response = response
        if self._cancelled.is_set():
            shut_down(response)
        if response.status_code >= 400:
            response.read()
            raise errors.status(response)

    def broken(self, err: httpx.HTTPError, errors: HttpErrors, mid_stream: bool) -> None:
        """The stream failed: a cancel if we shut it, else the server's fault."""
        cancelled = self._cancelled.is_set()
        answered = self._response is not None
        self._drop_client()  # a broken connection is not reused
        if cancelled:
            return
        if not answered and not self._retried and isinstance(err, STALE_ERRORS):
            self._retried = True
            raise StaleConnection from None
        raise errors.transport(err, mid_stream=mid_stream) from None


def shut_down(response: httpx.Response) -> None:
    """Close the response's socket from another thread: the blocked read returns at
    once, and the server sees the client go (that is how its generation stops)."""
    stream = response.extensions.get("network_stream")
    sock = None
    with contextlib.suppress(Exception):
        sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:  # no socket to reach (another transport): closing is the best there is
        with contextlib.suppress(Exception):
            response.close()
