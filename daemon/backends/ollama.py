"""``backend = "ollama"``: a model in the user's Ollama, through its native API.

Native rather than ``/v1``: only ``/api/chat`` takes ``keep_alive`` and
``num_ctx``, and ``/api/ps`` tells whether the model left VRAM.
"""

from __future__ import annotations

from typing import Any

from daemon.backends.common import ProbeCache, parse_http
from daemon.errors import ConfigError
from daemon.models import ModelSpec
from daemon.tomlfile import TomlDoc, expect_type

NAME = "ollama"
DEFAULT_URL = "http://127.0.0.1:11434"
KEYS = ("url", "model", "allow_remote", "vision", "timeout_s", "n_ctx", "api_key_env")
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "max_tokens": "num_predict",
    "stop": "stop",
    "seed": "seed",
}
UNLOAD = "Ollama is asked to drop it (keep_alive 0) and /api/ps confirms it left"

_probed = ProbeCache()


def parse(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ModelSpec:
    section = dict(raw)
    n_ctx = section.pop("n_ctx", None)
    spec = parse_http(doc, name, section, NAME, DEFAULT_URL)
    if n_ctx is not None:
        n_ctx = expect_type(doc, "n_ctx", n_ctx, int)
        if n_ctx < 256:
            raise ConfigError(f"{doc.where('n_ctx')}: n_ctx must be at least 256.")
        spec = spec.with_opts(num_ctx=n_ctx)
    return spec


def check(spec: ModelSpec) -> ModelSpec:
    """Ollama answers and has the model; what the model can do (vision, thinking)."""
    said = _probed.get(spec)
    if said is None:
        said = _probed.put(spec, _ask(spec))
    return spec.with_opts(**said)


def _ask(spec: ModelSpec) -> dict[str, Any]:
    import httpx

    from daemon.engine.http import HttpErrors, ServerUnavailable, server_hint
    from daemon.engine.probe import client_for, ollama_capabilities, probe_ollama

    try:
        info = probe_ollama(spec.url or DEFAULT_URL, show=False)
    except httpx.HTTPError:
        raise HttpErrors(spec, server_hint(spec)).down() from None
    found = info.find(spec.remote or "")
    if found is None:
        names = ", ".join(info.names) or "none yet"
        raise ServerUnavailable(
            f"Ollama at {spec.url} has no model '{spec.remote}' (it has: {names}): "
            f"ollama pull {spec.remote}, or fix model for '{spec.name}' in models.toml."
        )
    with client_for(None, 5.0) as client:
        capabilities = ollama_capabilities(client, spec.url or DEFAULT_URL, found.id)
    said: dict[str, Any] = {"remote_id": found.id}
    if capabilities is not None:
        said["vision"] = "vision" in capabilities
        said["thinking"] = "thinking" in capabilities
    return said


def engine_key(spec: ModelSpec) -> str:
    return f"{NAME} {spec.url}"


def make_engine(spec: ModelSpec) -> Any:
    from daemon.backends.openai import api_key
    from daemon.engine.ollama import OllamaEngine

    return OllamaEngine(api_key=api_key(spec))
