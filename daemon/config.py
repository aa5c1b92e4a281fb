"""Settings: the shipped ``hotkeys.toml`` with the user's copy read on top.

A user file only needs the keys it changes.  A broken user file never takes
effect: :func:`load_config` raises a :class:`~daemon.errors.ConfigError`
naming the file and line, and callers that already run keep their previous
config (the daemon does so on reload).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.tomlfile import TomlDoc, check_keys, expect_type, load_toml

HOTKEYS_FILE = "hotkeys.toml"
PROMPTS_DIR = "prompts"
_TOP_KEYS = ("settings", "binding")


@dataclass(frozen=True)
class Settings:
    keep_alive_minutes: float = 30
    cancel_hotkey: str = "<ctrl>+<alt>+<esc>"
    history: bool = True
    notify_chars: int = 160


_SETTING_TYPES: dict[str, type | tuple[type, ...]] = {
    "keep_alive_minutes": (int, float),
    "cancel_hotkey": str,
    "history": bool,
    "notify_chars": int,
}


@dataclass(frozen=True)
class Config:
    settings: Settings = field(default_factory=Settings)
    # Raw binding tables with the file each came from; the daemon validates them.
    bindings: tuple[dict[str, Any], ...] = ()
    sources: tuple[Path, ...] = ()


def template_folders() -> list[Path]:
    """Shipped prompts first, then the user's, so user files override by name."""
    return [platform.defaults_dir() / PROMPTS_DIR, platform.config_dir() / PROMPTS_DIR]


def config_files() -> list[Path]:
    files = [platform.defaults_dir() / HOTKEYS_FILE, platform.config_dir() / HOTKEYS_FILE]
    return [path for path in files if path.is_file()]


def _apply(doc: TomlDoc, values: dict[str, Any]) -> tuple[dict[str, Any], ...] | None:
    check_keys(doc, doc.data, _TOP_KEYS)
    table = expect_type(doc, "settings", doc.data.get("settings", {}), dict)
    check_keys(doc, table, _SETTING_TYPES, "[settings]")
    for key, value in table.items():
        values[key] = expect_type(doc, key, value, _SETTING_TYPES[key])
    if "binding" not in doc.data:
        return None
    bindings = expect_type(doc, "binding", doc.data["binding"], list)
    return tuple({**b, "_file": str(doc.path)} for b in bindings)


def load_config(files: list[Path] | None = None) -> Config:
    """Read each file in order; later files override earlier ones key by key.

    Bindings are replaced as a whole by the last file that has any, so a user
    file that lists bindings says exactly which hotkeys exist.
    """
    paths = config_files() if files is None else files
    values: dict[str, Any] = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    bindings: tuple[dict[str, Any], ...] = ()
    for path in paths:
        found = _apply(load_toml(path), values)
        if found is not None:
            bindings = found
    return Config(settings=Settings(**values), bindings=bindings, sources=tuple(paths))
