"""Model backends, by the name a model gives as ``backend`` in models.toml.

Each backend is one module with the same few names:

- ``KEYS``: the models.toml keys its section may have (besides ``backend``);
- ``parse(doc, name, raw) -> ModelSpec``: read and check its section, errors
  naming file, line and key;
- ``check(spec) -> ModelSpec``: what keeps the model from running now (a missing
  GGUF; a server that does not answer or lacks the model), and the spec as found
  (an HTTP backend learns there whether the model sees images);
- ``engine_key(spec)``: specs with the same key share one engine (one worker, one
  server connection);
- ``make_engine(spec) -> Engine``;
- ``OPTIONS``: the templates' sampling options → the backend's wire names;
- ``UNLOAD``: how it gives memory back, for ``yomitori models`` and the docs.

Adding a backend means adding its module and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from daemon.errors import ConfigError, ModelError
from daemon.models import ModelSpec
from daemon.tomlfile import TomlDoc, expect_type

DEFAULT = "llama-cpp"
BACKENDS = {
    "llama-cpp": "daemon.backends.llama_cpp",
    "llama-server": "daemon.backends.llama_server",
    "ollama": "daemon.backends.ollama",
    "openai": "daemon.backends.openai",
}


def get(name: str) -> ModuleType:
    module = BACKENDS.get(name)
    if module is None:
        raise ModelError(f"Unknown backend '{name}' (known: {', '.join(BACKENDS)}).")
    return importlib.import_module(module)


def parse(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ModelSpec:
    """One ``[models.NAME]`` section → its spec, by its backend's rules."""
    backend = expect_type(doc, "backend", raw.get("backend", DEFAULT), str)
    if backend not in BACKENDS:
        raise ConfigError(
            f"{doc.where('backend')}: unknown backend '{backend}' for model '{name}' "
            f"(known: {', '.join(BACKENDS)})."
        )
    section = {k: v for k, v in raw.items() if k != "backend"}
    return get(backend).parse(doc, name, section)


def engine_key(spec: ModelSpec) -> str:
    return str(get(spec.backend).engine_key(spec))


def make_engine(spec: ModelSpec) -> Any:
    return get(spec.backend).make_engine(spec)


def wire_options(spec: ModelSpec, options: dict[str, Any]) -> dict[str, Any]:
    """Sampling options under the backend's names; ones it has no name for are dropped."""
    names = get(spec.backend).OPTIONS
    return {names[k]: v for k, v in options.items() if k in names and v is not None}
