"""Ask a local server what it is, which models it has and which of them see images.

Used before a job (the model must exist; an image action needs a vision model)
and by ``yomitori models --discover``.  Each server says it differently:
llama-server ``/props`` ``modalities``, LM Studio's ``/api/v0/models`` ``type``,
Ollama's ``/api/show`` ``capabilities``, newer OpenAI-style servers
``architecture.input_modalities``; where none says, the answer is None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass
class RemoteModel:
    id: str
    vision: bool | None = None
    loaded: bool | None = None


@dataclass
class ServerInfo:
    url: str
    kind: str  # llama-server | lmstudio | koboldcpp | ollama | openai
    models: list[RemoteModel] = field(default_factory=list)

    def find(self, name: str) -> RemoteModel | None:
        for model in self.models:
            if model.id == name:
                return model
        # Ollama names default to the ":latest" tag.
        for model in self.models:
            if ":" not in name and model.id == f"{name}:latest":
                return model
        return None

    @property
    def names(self) -> list[str]:
        return [m.id for m in self.models]


class ProbeRefused(Exception):
    """The server answered 401/403: it wants an API key."""


def _get(client: httpx.Client, url: str) -> Any:
    response = client.get(url)
    if response.status_code in (401, 403):
        raise ProbeRefused(response.status_code)
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def client_for(api_key: str | None, timeout: float) -> httpx.Client:
    from daemon.engine.http import auth_headers

    return httpx.Client(timeout=httpx.Timeout(timeout), headers=auth_headers(api_key),
                        trust_env=False)  # fmt: skip


def probe_ollama(url: str, timeout: float = 3.0, show: bool = True) -> ServerInfo:
    """Ollama's native API: /api/tags for the models, /api/show for what each can do."""
    with client_for(None, timeout) as client:
        tags = _get(client, f"{url}/api/tags")
        if not isinstance(tags, dict):
            raise httpx.ConnectError(f"{url} is not an Ollama server")
        info = ServerInfo(url=url, kind="ollama")
        running = _get(client, f"{url}/api/ps") or {}
        resident = {m.get("name") for m in running.get("models") or ()}
        for entry in tags.get("models") or ():
            name = entry.get("name") or entry.get("model")
            if not name:
                continue
            model = RemoteModel(id=name, loaded=name in resident)
            if show:
                model.vision = ollama_vision(client, url, name)
            info.models.append(model)
        return info


def ollama_capabilities(client: httpx.Client, url: str, name: str) -> list[str] | None:
    """What ``/api/show`` says the model can do (None: this Ollama does not say)."""
    try:
        response = client.post(f"{url}/api/show", json={"model": name})
        if response.status_code != 200:
            return None
        capabilities = response.json().get("capabilities")
    except (httpx.HTTPError, ValueError):
        return None
    return list(capabilities) if capabilities else None


def ollama_vision(client: httpx.Client, url: str, name: str) -> bool | None:
    capabilities = ollama_capabilities(client, url, name)
    return None if capabilities is None else "vision" in capabilities


def probe_openai(url: str, api_key: str | None = None, timeout: float = 3.0) -> ServerInfo:
    """An OpenAI-compatible server: its kind, its models, and their vision where it says."""
    with client_for(api_key, timeout) as client:
        listed = _get(client, f"{url}/v1/models")
        if not isinstance(listed, dict):
            raise httpx.ConnectError(f"{url} has no /v1/models")
        info = ServerInfo(url=url, kind="openai")
        for entry in listed.get("data") or ():
            if isinstance(entry, dict) and entry.get("id"):
                modalities = (entry.get("architecture") or {}).get("input_modalities")
                vision = None if modalities is None else "image" in modalities
                info.models.append(RemoteModel(id=str(entry["id"]), vision=vision))
        _identify(client, url, info)
        return info


def _identify(client: httpx.Client, url: str, info: ServerInfo) -> None:
    props = _get(client, f"{url}/props")
    if isinstance(props, dict) and (
        "default_generation_settings" in props or "build_info" in props
    ):
        info.kind = "llama-server"
        vision = (props.get("modalities") or {}).get("vision")
        if vision is not None and len(info.models) == 1:
            info.models[0].vision = bool(vision)
        return
    lmstudio = _get(client, f"{url}/api/v0/models")
    if isinstance(lmstudio, dict) and isinstance(lmstudio.get("data"), list):
        info.kind = "lmstudio"
        for entry in lmstudio["data"]:
            model = info.find(str(entry.get("id")))
            if model is not None:
                model.vision = entry.get("type") == "vlm"
                model.loaded = entry.get("state") == "loaded"
        return
    version = _get(client, f"{url}/api/extra/version")
    if isinstance(version, dict) and version.get("result") == "KoboldCpp":
        info.kind = "koboldcpp"
        return
    ollama = _get(client, f"{url}/api/version")
    if isinstance(ollama, dict) and "version" in ollama and len(ollama) == 1:
        info.kind = "ollama"
        for model in info.models:
            model.vision = ollama_vision(client, url, model.id)
