"""``backend = "llama-server"``: llama.cpp's own server as a child process yomitori
owns (prebuilt CUDA / Vulkan / Metal builds need no compiler).

It listens on loopback only, with a fresh API key each start; unloading ends the
process, so memory really goes back.  ``share = true`` keeps it on a fixed port
with its key in a file only the user can read, so ComfyUI or Open WebUI can use
the same resident model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from daemon.backends.common import GGUF_KEYS, SAME_NAMES, parse_gguf
from daemon.errors import ConfigError, ModelError
from daemon.models import ModelSpec, check_files, path_value
from daemon.tomlfile import TomlDoc, expect_type

NAME = "llama-server"
KEYS = (*GGUF_KEYS, "server", "share", "port", "args", "timeout_s")
OPTIONS = SAME_NAMES
UNLOAD = "the llama-server process exits: its RAM and VRAM go back"
SHARE_PORT = 8091


def parse(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ModelSpec:
    own = {k: raw[k] for k in ("server", "share", "port", "args", "timeout_s") if k in raw}
    spec = parse_gguf(doc, name, raw, NAME, extra=tuple(own))
    settings: dict[str, Any] = {}
    if "server" in own:
        settings["server"] = str(path_value(doc, "server", own["server"]))
    share = expect_type(doc, "share", own.get("share", False), bool)
    settings["share"] = share
    if "port" in own:
        port = expect_type(doc, "port", own["port"], int)
        if not 1024 <= port <= 65535:
            raise ConfigError(f"{doc.where('port')}: port must be between 1024 and 65535.")
        if not share:
            raise ConfigError(
                f"{doc.where('port')}: port is for share = true; a private server picks a free "
                "port itself."
            )
        settings["port"] = port
    if "args" in own:
        args = expect_type(doc, "args", own["args"], list)
        if not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{doc.where('args')}: args must be a list of strings.")
        for banned in ("--host", "--port", "--api-key", "--api-key-file", "-m", "--model"):
            if banned in args:
                raise ConfigError(
                    f"{doc.where('args')}: yomitori sets {banned} itself (loopback, a fresh key)."
                )
        settings["args"] = tuple(args)
    if "timeout_s" in own:
        settings["timeout_s"] = float(expect_type(doc, "timeout_s", own["timeout_s"], (int, float)))
    return spec.with_opts(**settings)


def find_server(spec: ModelSpec) -> Path:
    """``server = PATH`` from models.toml, else llama-server on PATH (or beside Python)."""
    given = spec.opt("server")
    if given:
        path = Path(given)
        if not path.is_file():
            raise ModelError(
                f"llama-server not found at {path} (server for '{spec.name}' in models.toml): "
                "fix the path, or remove it to use llama-server from PATH."
            )
        return path
    from daemon import platform

    found = shutil.which("llama-server") or platform.beside_python("llama-server")
    if found is None:
        raise ModelError(
            f"'{spec.name}' runs on llama-server, which is not on PATH: download a llama.cpp "
            'release for your GPU and set server = "/path/to/llama-server" in models.toml, '
            "or build one with installer/build_llama_server.sh."
        )
    return Path(found)


def check(spec: ModelSpec) -> ModelSpec:
    check_files(spec)
    find_server(spec)
    return spec


def engine_key(_spec: ModelSpec) -> str:
    return NAME  # one managed server: a model switch replaces the one in it


def make_engine(_spec: ModelSpec) -> Any:
    from daemon.engine.server import ManagedServerEngine

    return ManagedServerEngine()
