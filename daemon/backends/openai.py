"""``backend = "openai"``: a model on any OpenAI-compatible server the user runs
(LM Studio, llama-server, KoboldCpp, vLLM, ``llama_cpp.server``)."""

from __future__ import annotations

import os
import time
from typing import Any

from daemon.backends.common import HTTP_KEYS, parse_http
from daemon.errors import ModelError
from daemon.models import ModelSpec
from daemon.tomlfile import TomlDoc

NAME = "openai"
KEYS = HTTP_KEYS
DEFAULT_URL = None  # no guess: LM Studio, llama-server and KoboldCpp differ
OPTIONS = {k: k for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                          "max_tokens", "stop", "seed")}  # fmt: skip
UNLOAD = "the server keeps its models; LM Studio is asked to unload it"

# One probe per server and model a minute: a job checks the model exists and what it
# can see without paying a round trip or two each time.
_PROBE_TTL_S = 60.0
_probed: dict[tuple[str, str], tuple[float, ModelSpec]] = {}


def parse(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ModelSpec:
    return parse_http(doc, name, raw, NAME, DEFAULT_URL)


def api_key(spec: ModelSpec) -> str | None:
    """The key from the environment variable models.toml names (never from the file)."""
    env = spec.opt("api_key_env")
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ModelError(
            f"Model '{spec.name}' takes its API key from ${env}, which is not set: set it "
            "before starting yomitori, or remove api_key_env from models.toml."
        )
    return key


def check(spec: ModelSpec) -> ModelSpec:
    """The server answers and has the model; the spec says whether it sees images."""
    import httpx

    from daemon.engine.http import HttpErrors, ServerUnavailable, server_hint
    from daemon.engine.probe import ProbeRefused, probe_openai

    key = (spec.url or "", spec.remote or "")
    cached = _probed.get(key)
    if cached is not None and time.monotonic() - cached[0] < _PROBE_TTL_S:
        return _merge(spec, cached[1])
    errors = HttpErrors(spec, server_hint(spec))
    try:
        info = probe_openai(spec.url or "", api_key(spec))
    except ProbeRefused as refused:
        fake = httpx.Response(int(str(refused.args[0])), request=httpx.Request("GET", spec.url))
        raise errors.status(fake) from None
    except httpx.HTTPError:
        raise errors.down() from None
    found = info.find(spec.remote or "")
    if found is None and info.kind in ("llama-server", "koboldcpp") and len(info.models) == 1:
        # One model, served whatever name a request gives (its id is often a file path).
        found = info.models[0]
    if found is None:
        names = ", ".join(info.names) or "none"
        raise ServerUnavailable(
            f"The server at {spec.url} has no model '{spec.remote}' (it has: {names}); fix "
            f"model for '{spec.name}' in models.toml."
        )
    probed = spec.with_opts(server_kind=info.kind, remote_id=found.id)
    if found.vision is not None:
        probed = probed.with_opts(vision=found.vision)
    _probed[key] = (time.monotonic(), probed)
    return _merge(spec, probed)


def _merge(spec: ModelSpec, probed: ModelSpec) -> ModelSpec:
    """What the server said, over what models.toml says (it decides only where the
    server cannot say)."""
    said = {
        k: probed.opt(k)
        for k in ("server_kind", "remote_id", "vision")
        if probed.opt(k) is not None
    }
    return spec.with_opts(**said)


def forget(spec: ModelSpec) -> None:
    """Probe again next time (after a failure: the server may have changed)."""
    _probed.pop((spec.url or "", spec.remote or ""), None)


def engine_key(spec: ModelSpec) -> str:
    return f"{NAME} {spec.url}"


def make_engine(spec: ModelSpec) -> Any:
    from daemon.engine.openai import OpenAIEngine

    return OpenAIEngine(api_key=api_key(spec))
