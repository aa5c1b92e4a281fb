"""Settings and bindings: the shipped ``hotkeys.toml`` with the user's copy on top.

A user file only needs the keys it changes.  A broken file never takes
effect: :func:`load_config` raises a :class:`~daemon.errors.ConfigError`
naming the file and line, and a daemon that already runs keeps its previous
config (see :meth:`daemon.service.Service.reload`).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.chords import ChordError, format_chord, parse_chord
from daemon.errors import ConfigError
from daemon.tomlfile import TomlDoc, check_keys, expect_type, load_toml

HOTKEYS_FILE = "hotkeys.toml"
PROMPTS_DIR = "prompts"
_TOP_KEYS = ("settings", "binding")
SOURCES = ("clipboard", "selection", "region", "last_region", "clipboard_image")
OUTPUTS = ("clipboard", "paste", "notify")
_BINDING_KEYS = ("hotkey", "action", "source", "output", "vars", "model")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|min)?\s*$")


@dataclass(frozen=True)
class Settings:
    keep_alive_s: float = 30 * 60  # -1: never unload; 0: unload after each action
    cancel_hotkey: str = "<ctrl>+<alt>+<esc>"
    history: bool = True
    notify_chars: int = 160
    queue_size: int = 4
    notifier: str = "auto"
    tray: bool = True
    max_image_side: int = 1024
    ocr_engine: str = "rapidocr"
    region_capture: str = "auto"  # auto: the desktop's screenshot portal on Wayland


_SETTING_KEYS = ("keep_alive", "cancel_hotkey", "history", "notify_chars", "queue_size",
                 "notifier", "tray", "max_image_side", "ocr_engine", "region_capture")  # fmt: skip
NOTIFIERS = ("auto", "tray", "dbus", "notify-send", "osascript", "none")
# Settings that take one of a few words.
_CHOICES = {
    "ocr_engine": ("rapidocr", "tesseract", "vlm"),
    "notifier": NOTIFIERS,
    "region_capture": ("auto", "overlay", "portal"),
}


@dataclass(frozen=True)
class Binding:
    hotkey: str
    action: str
    source: str = "clipboard"
    output: tuple[str, ...] = ("clipboard", "notify")
    vars: Mapping[str, str] = field(default_factory=dict)
    model: str | None = None
    where: str = ""  # "file, line N" for messages


@dataclass(frozen=True)
class Config:
    settings: Settings = field(default_factory=Settings)
    bindings: tuple[Binding, ...] = ()
    sources: tuple[Path, ...] = ()


def template_folders() -> list[Path]:
    """Shipped prompts first, then the user's, so user files override by name."""
    return [platform.defaults_dir() / PROMPTS_DIR, platform.config_dir() / PROMPTS_DIR]


def config_files() -> list[Path]:
    files = [platform.defaults_dir() / HOTKEYS_FILE, platform.config_dir() / HOTKEYS_FILE]
    return [path for path in files if path.is_file()]


def parse_duration(value: Any, where: str) -> float:
    """Seconds from minutes (a number) or text such as ``"90s"``, ``"30m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(f'{where}: keep_alive must be minutes or a duration like "30m".')
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):  # nan, inf
            raise ConfigError(f"{where}: keep_alive must be a finite number of minutes.")
        try:
            seconds = float(max(value, -1)) * 60
        except OverflowError:  # an integer beyond any float
            seconds = float("inf")
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(
                f'{where}: keep_alive must be minutes or a duration like "90s", "30m", '
                f'"1h" (-1 = never unload), not {value!r}.'
            )
        unit = {"s": 1, "m": 60, "min": 60, "h": 3600, None: 60}[match.group(2)]
        seconds = float(match.group(1)) * unit
    if seconds == float("inf"):  # 1e308 minutes, "99…9h"
        raise ConfigError(f"{where}: keep_alive is too long; -1 never unloads the model.")
    return -1.0 if seconds < 0 else seconds


def _settings(doc: TomlDoc, values: dict[str, Any]) -> None:
    sub = doc.within("settings")
    table = expect_type(doc, "settings", doc.data.get("settings", {}), dict)
    check_keys(sub, table, _SETTING_KEYS, "[settings]")
    for key, value in table.items():
        if key == "keep_alive":
            values["keep_alive_s"] = parse_duration(value, sub.where(key))
        elif key in ("history", "tray"):
            values[key] = expect_type(sub, key, value, bool)
        elif key in _CHOICES:
            if value not in _CHOICES[key]:
                words = _CHOICES[key]
                raise ConfigError(f"{sub.where(key)}: {key} must be "
                                  f"{', '.join(words[:-1])} or {words[-1]}.")  # fmt: skip
            values[key] = value
        elif key in ("notify_chars", "queue_size", "max_image_side"):
            number = expect_type(sub, key, value, int)
            if number < 1:
                raise ConfigError(f"{sub.where(key)}: {key} must be at least 1.")
            values[key] = number
        else:
            values[key] = expect_type(sub, key, value, str)
    if "cancel_hotkey" in table:
        try:
            values["cancel_hotkey"] = format_chord(parse_chord(values["cancel_hotkey"]))
        except ChordError as err:
            raise ConfigError(f"{sub.where('cancel_hotkey')}: cancel_hotkey: {err}.") from None
        values["_cancel_where"] = sub.where("cancel_hotkey")


def _binding_lines(doc: TomlDoc) -> list[int]:
    return [n for n, line in enumerate(doc.text.splitlines(), start=1)
            if re.match(r"^\s*\[\[\s*binding\s*\]\]", line)]  # fmt: skip


def _bindings(doc: TomlDoc) -> list[Binding]:
    raw = expect_type(doc, "binding", doc.data["binding"], list)
    lines = _binding_lines(doc)
    result = []
    for index, table in enumerate(raw):
        line = lines[index] if index < len(lines) else None
        where = f"{doc.path}, line {line}" if line else f"{doc.path}, binding {index + 1}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: each binding must be a table ([[binding]]).")
        for key in table:
            if key not in _BINDING_KEYS:
                raise ConfigError(
                    f"{where}: unknown key '{key}' in [[binding]] "
                    f"(known keys: {', '.join(_BINDING_KEYS)})."
                )
        for key in ("hotkey", "action"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise ConfigError(f'{where}: the binding needs {key} = "…".')
        source = table.get("source", "clipboard")
        if source not in SOURCES:
            raise ConfigError(
                f"{where}: source must be one of {', '.join(SOURCES)}, not {source!r}."
            )
        output = table.get("output", ["clipboard", "notify"])
        if isinstance(output, str):
            output = [output]
        if not isinstance(output, list) or not output or not all(o in OUTPUTS for o in output):
            raise ConfigError(f"{where}: output must be a non-empty list of {', '.join(OUTPUTS)}.")
        output = list(dict.fromkeys(output))
        variables = table.get("vars", {})
        scalar = (str, int, float)
        if not isinstance(variables, dict) or any(
            isinstance(v, bool) or not isinstance(v, scalar) for v in variables.values()
        ):
            raise ConfigError(
                f'{where}: vars must be a table of texts or numbers, e.g. vars = {{ count = "4" }}.'
            )
        model = table.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigError(f"{where}: model must be a model name or a .gguf path.")
        try:
            hotkey = format_chord(parse_chord(table["hotkey"]))
        except ChordError as err:
            raise ConfigError(f"{where}: hotkey {err}.") from None
        result.append(Binding(
            hotkey=hotkey, action=table["action"], source=source, output=tuple(output),
            vars={str(k): str(v) for k, v in variables.items()}, model=model, where=where,
        ))  # fmt: skip
    return result


def load_config(files: list[Path] | None = None) -> Config:
    """Read each file in order; later files override earlier ones key by key.

    Bindings are replaced as a whole by the last file that has any, so a user
    file that lists bindings says exactly which hotkeys exist.
    """
    paths = config_files() if files is None else files
    values: dict[str, Any] = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    bindings: list[Binding] = []
    for path in paths:
        doc = load_toml(path)
        check_keys(doc, doc.data, _TOP_KEYS)
        _settings(doc, values)
        if "binding" in doc.data:
            bindings = _bindings(doc)
    cancel_where = values.pop("_cancel_where", None)
    settings = Settings(**values)
    seen: dict[frozenset[str], Binding] = {}
    for binding in [*bindings]:
        chord = parse_chord(binding.hotkey)
        if chord in seen:
            raise ConfigError(
                f"{binding.where}: {binding.hotkey} is already bound at {seen[chord].where}."
            )
        if chord == parse_chord(settings.cancel_hotkey):
            also = f" (set at {cancel_where})" if cancel_where else ""
            raise ConfigError(f"{binding.where}: {binding.hotkey} is the cancel hotkey{also}.")
        seen[chord] = binding
    return Config(settings=settings, bindings=tuple(bindings), sources=tuple(paths))


def check_actions(
    config: Config, actions: Container[str], variables: Mapping[str, Container[str]]
) -> None:
    """Refuse bindings whose action, or a variable of it, does not exist."""
    for binding in config.bindings:
        if binding.action not in actions:
            raise ConfigError(f"{binding.where}: unknown action '{binding.action}'.")
        known = variables.get(binding.action, ())
        for name in binding.vars:
            if name not in known:
                raise ConfigError(f"{binding.where}: '{binding.action}' has no variable '{name}'.")
