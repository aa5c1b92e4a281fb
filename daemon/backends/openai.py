"""``backend = "openai"``: a model on any OpenAI-compatible server the user runs
(LM Studio, llama-server, KoboldCpp, vLLM, ``llama_cpp.server``)."""

from __future__ import annotations

import os
from typing import Any

from daemon.backends.common import HTTP_KEYS, SAME_NAMES, ProbeCache, parse_http
from daemon.errors import ModelError
from daemon.models import ModelSpec
from daemon.tomlfile import TomlDoc

NAME = "openai"
KEYS = HTTP_KEYS
DEFAULT_URL = None  # no guess: LM Studio, llama-server and KoboldCpp differ
OPTIONS = SAME_NAMES
UNLOAD = "the server keeps its models; LM Studio is asked to unload it"

_probed = ProbeCache()


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
    """The server answers and has the model; the spec says whether it sees images (what
    the server says wins; models.toml's ``vision`` decides only where it cannot say)."""
    said = _probed.get(spec)
    if said is None:
        said = _probed.put(spec, _ask(spec))
    return spec.with_opts(**said)


def _ask(spec: ModelSpec) -> dict[str, Any]:
    import httpx

    from daemon.engine.http import HttpErrors, ServerUnavailable, server_hint
    from daemon.engine.probe import ProbeRefused, probe_openai

    errors = HttpErrors(spec, server_hint(spec))
    try:
        info = probe_openai(spec.url or "", api_key(spec))
    except ProbeRefused as refused:
        raise errors.refused(int(refused.args[0])) from None
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
    said: dict[str, Any] = {"server_kind": info.kind, "remote_id": found.id}
    if found.vision is not None:
        said["vision"] = found.vision
    return said


def engine_key(spec: ModelSpec) -> str:
    return f"{NAME} {spec.url}"


def make_engine(spec: ModelSpec) -> Any:
    from daemon.engine.openai import OpenAIEngine

    return OpenAIEngine(api_key=api_key(spec))
