"""``backend = "llama-cpp"`` (the default): llama-cpp-python in yomitori's own worker
process (:mod:`daemon.engine.worker`)."""

from __future__ import annotations

from typing import Any

from daemon.backends.common import GGUF_KEYS, SAME_NAMES, parse_gguf
from daemon.models import ModelSpec, check_files
from daemon.tomlfile import TomlDoc

NAME = "llama-cpp"
KEYS = GGUF_KEYS
OPTIONS = SAME_NAMES
UNLOAD = "the worker process exits: its RAM and VRAM go back"


def parse(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ModelSpec:
    return parse_gguf(doc, name, raw, NAME)


def check(spec: ModelSpec) -> ModelSpec:
    check_files(spec)
    return spec


def engine_key(_spec: ModelSpec) -> str:
    # One worker: switching models replaces the one in it (one model in VRAM).
    return NAME


def make_engine(_spec: ModelSpec) -> Any:
    from daemon.engine.client import WorkerEngine

    return WorkerEngine()
