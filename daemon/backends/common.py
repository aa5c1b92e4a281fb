"""Section parsing the backends share: GGUF load parameters, and HTTP servers."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from daemon.errors import ConfigError, ModelError
from daemon.models import ModelSpec, path_value
from daemon.tomlfile import TomlDoc, check_keys, expect_type


class ProbeCache:
    """What a server said about a model (its name there, vision…), kept a minute: a job
    checks the model without a round trip or two each time."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._said: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def get(self, spec: ModelSpec) -> dict[str, Any] | None:
        entry = self._said.get((spec.url or "", spec.remote or ""))
        if entry is None or time.monotonic() - entry[0] >= self._ttl_s:
            return None
        return entry[1]

    def put(self, spec: ModelSpec, said: dict[str, Any]) -> dict[str, Any]:
        self._said[(spec.url or "", spec.remote or "")] = (time.monotonic(), said)
        return said

    def clear(self) -> None:
        self._said.clear()


# Sampling options under the templates' own names, which llama-cpp-python and the
# OpenAI-compatible servers take as they are (Ollama has names of its own).
SAME_NAMES = {k: k for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                             "max_tokens", "stop", "seed")}  # fmt: skip

GGUF_KEYS = ("path", "mmproj", "n_ctx", "n_gpu_layers", "flash_attn", "threads", "chat_format")
HTTP_KEYS = ("url", "model", "api_key_env", "allow_remote", "vision", "timeout_s")


def parse_gguf(
    doc: TomlDoc, name: str, raw: dict[str, Any], backend: str, extra: tuple[str, ...] = ()
) -> ModelSpec:
    """A section naming a GGUF file and how to load it."""
    label = f"[models.{name}]"
    for key in HTTP_KEYS[:2]:
        if key in raw:
            raise ConfigError(
                f"{doc.where(key)}: '{key}' is for models on a server; backend '{backend}' "
                'runs a GGUF file: give its path (or set backend = "openai" or "ollama").'
            )
    check_keys(doc, raw, (*GGUF_KEYS, *extra, "backend"), label)
    if "path" not in raw:
        raise ConfigError(f"{doc.where(name)}: model '{name}' needs a path to its GGUF file.")
    spec = ModelSpec(
        name=name, backend=backend, path=path_value(doc, "path", raw["path"]), source=str(doc.path)
    )
    if "mmproj" in raw:
        spec = replace(spec, mmproj=path_value(doc, "mmproj", raw["mmproj"]))
    for key, kind in (("n_ctx", int), ("n_gpu_layers", int), ("threads", int)):
        if key in raw:
            spec = replace(spec, **{key: expect_type(doc, key, raw[key], kind)})
    if "flash_attn" in raw:
        spec = replace(spec, flash_attn=expect_type(doc, "flash_attn", raw["flash_attn"], bool))
    if "chat_format" in raw:
        spec = replace(spec, chat_format=expect_type(doc, "chat_format", raw["chat_format"], str))
    return spec


def parse_http(
    doc: TomlDoc,
    name: str,
    raw: dict[str, Any],
    backend: str,
    default_url: str | None,
    extra: tuple[str, ...] = (),
) -> ModelSpec:
    """A section naming a model on a server: ``url``, ``model`` and the privacy keys."""
    label = f"[models.{name}]"
    for key in ("path", "mmproj"):
        if key in raw:
            raise ConfigError(
                f"{doc.where(key)}: '{key}' is for GGUF files; backend '{backend}' uses a model "
                'the server already has: name it with model = "…" (or use backend = '
                '"llama-cpp" or "llama-server" for a file).'
            )
    check_keys(doc, raw, (*HTTP_KEYS, *extra, "backend"), label)
    if "model" not in raw:
        raise ConfigError(
            f"{doc.where(name)}: model '{name}' needs model = \"…\", the name the server knows "
            "it by (yomitori models --discover lists them)."
        )
    if "url" not in raw and default_url is None:
        raise ConfigError(
            f"{doc.where(name)}: model '{name}' needs url = \"http://127.0.0.1:PORT\", the "
            "server's address (LM Studio: 1234, llama-server: 8080, KoboldCpp: 5001)."
        )
    url = expect_type(doc, "url", raw.get("url", default_url), str).rstrip("/")
    allow_remote = expect_type(doc, "allow_remote", raw.get("allow_remote", False), bool)
    try:
        check_url(url, allow_remote)
    except ModelError as err:
        raise ConfigError(f"{doc.where('url') if 'url' in raw else doc.path}: {err}") from None
    settings: dict[str, Any] = {"allow_remote": allow_remote}
    if "api_key_env" in raw:
        settings["api_key_env"] = expect_type(doc, "api_key_env", raw["api_key_env"], str)
    if "vision" in raw:
        settings["vision"] = expect_type(doc, "vision", raw["vision"], bool)
    if "timeout_s" in raw:
        timeout = expect_type(doc, "timeout_s", raw["timeout_s"], (int, float))
        if timeout <= 0:
            raise ConfigError(f"{doc.where('timeout_s')}: timeout_s must be above 0.")
        settings["timeout_s"] = float(timeout)
    remote = expect_type(doc, "model", raw["model"], str)
    spec = ModelSpec(name=name, backend=backend, url=url, remote=remote, source=str(doc.path))
    return spec.with_opts(**settings)


def check_url(url: str, allow_remote: bool) -> None:
    """``url`` is an http(s) URL with a host; a loopback one unless ``allow_remote``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise ModelError(f"url must look like http://127.0.0.1:11434, not '{url}'.")
    if not allow_remote and not is_loopback_host(host):
        raise ModelError(
            f"{host} is not this machine: yomitori sends text and images to "
            "loopback servers only. To use a server elsewhere set allow_remote = true for "
            "this model (your text and images then leave this machine)."
        )


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1, or a name that resolves to loopback addresses only."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):  # UnicodeError: a name IDNA cannot encode ("a..b")
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
