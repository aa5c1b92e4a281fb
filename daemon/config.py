"""Settings and bindings: the shipped ``hotkeys.toml`` with the user's copy on top.

A user file only needs the keys it changes.  A broken file never takes
effect: :func:`load_config` raises a :class:`~daemon.errors.ConfigError`
naming the file and line, and a daemon that already runs keeps its previous
config (see :meth:`daemon.service.Service.reload`).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.chords import ChordError, format_chord, parse_chord
from daemon.errors import ConfigError
from daemon.tomlfile import Problems, TomlDoc, check_keys, expect_type, load_toml

HOTKEYS_FILE = "hotkeys.toml"
PROMPTS_DIR = "prompts"
_TOP_KEYS = ("settings", "binding")
SOURCES = ("clipboard", "selection", "region", "last_region", "clipboard_image")
OUTPUTS = ("clipboard", "paste", "notify", "window")
_BINDING_KEYS = ("hotkey", "action", "source", "output", "vars", "model", "enabled")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|min)?\s*$")


@dataclass(frozen=True)
class Settings:
    keep_alive_s: float = 30 * 60  # -1: never unload; 0: unload after each action
    cancel_hotkey: str = "<alt>+<shift>+<cmd>+x"
    history: bool = True
    notify_chars: int = 160
    queue_size: int = 4
    notifier: str = "auto"
    tray: bool = True
    max_image_side: int = 1024
    ocr_engine: str = "rapidocr"
    region_capture: str = "auto"  # auto: the desktop's screenshot portal on Wayland
    shipped_bindings: bool = True  # false: only the user's own bindings


_SETTING_KEYS = ("keep_alive", "cancel_hotkey", "history", "notify_chars", "queue_size",
                 "notifier", "tray", "max_image_side", "ocr_engine", "region_capture",
                 "shipped_bindings")  # fmt: skip
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
    where: str = ""  # "file, line N" of its [[binding]] header, for messages
    # Where each of its vars is written (a bad variable is named at its own line).
    var_lines: Mapping[str, str] = field(default_factory=dict, compare=False)
    enabled: bool = field(default=True, compare=False)
    origin: str = field(default="user", compare=False)  # "shipped" or "user"
    replaces: tuple[str, ...] = field(default=(), compare=False)  # earlier ones it overrides


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


def _settings(doc: TomlDoc, values: dict[str, Any], problems: Problems) -> None:
    sub = doc.within("settings")
    with problems.collect():
        table = expect_type(doc, "settings", doc.data.get("settings", {}), dict)
    if not isinstance(doc.data.get("settings", {}), dict):
        return
    table = doc.data.get("settings", {})
    with problems.collect():
        check_keys(sub, table, _SETTING_KEYS, "[settings]")
    for key, value in table.items():
        with problems.collect():
            _setting(sub, key, value, values)
    if "cancel_hotkey" in table and isinstance(values.get("cancel_hotkey"), str):
        with problems.collect():
            try:
                values["cancel_hotkey"] = format_chord(parse_chord(values["cancel_hotkey"]))
            except ChordError as err:
                values["cancel_hotkey"] = Settings().cancel_hotkey
                raise ConfigError(f"{sub.where('cancel_hotkey')}: cancel_hotkey {err}.") from None
            values["_cancel_where"] = sub.where("cancel_hotkey")
            values["_cancel_file"] = doc.path


def _setting(sub: TomlDoc, key: str, value: Any, values: dict[str, Any]) -> None:
    if key == "keep_alive":
        values["keep_alive_s"] = parse_duration(value, sub.where(key))
    elif key in ("history", "tray", "shipped_bindings"):
        values[key] = expect_type(sub, key, value, bool)
    elif key in _CHOICES:
        if value not in _CHOICES[key]:
            raise ConfigError(f"{sub.where(key)}: {key} must be {_words(_CHOICES[key])}, "
                              f"not {value!r}.")  # fmt: skip
        values[key] = value
    elif key in ("notify_chars", "queue_size", "max_image_side"):
        number = expect_type(sub, key, value, int)
        if number < 1:
            raise ConfigError(f"{sub.where(key)}: {key} must be at least 1, not {number}.")
        values[key] = number
    elif key in _SETTING_KEYS:
        values[key] = expect_type(sub, key, value, str)


def _words(words: tuple[str, ...] | list[str]) -> str:
    """``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _binding_lines(doc: TomlDoc) -> list[int]:
    return [n for n, line in enumerate(doc.text.splitlines(), start=1)
            if re.match(r"^\s*\[\[\s*binding\s*\]\]", line)]  # fmt: skip


def _bindings(doc: TomlDoc, problems: Problems) -> list[Binding]:
    """The file's bindings; each problem is collected at the line of its own key, and a
    binding with any problem is left out (the file as a whole is then refused)."""
    with problems.collect():
        raw = expect_type(doc, "binding", doc.data["binding"], list)
    if not isinstance(doc.data["binding"], list):
        return []
    lines = _binding_lines(doc)
    total = len(doc.text.splitlines())
    shipped = _is_shipped(doc.path)
    result = []
    for index, table in enumerate(raw):
        line = lines[index] if index < len(lines) else None
        where = f"{doc.path}, line {line}" if line else f"{doc.path}, binding {index + 1}"
        if line is not None:  # key look-ups limited to this binding's own lines
            end = lines[index + 1] - 1 if index + 1 < len(lines) else total
            keys = replace(doc, scope=((line - 1, end),))
        else:
            keys = None
        before = len(problems)
        binding = _binding(table, where, keys, problems, shipped)
        if binding is not None and len(problems) == before:
            result.append(binding)
    return result


def _binding(
    table: Any, where: str, keys: TomlDoc | None, problems: Problems, shipped: bool
) -> Binding | None:
    def at(key: str) -> str:
        line = keys.line_of(key) if keys is not None else None
        return f"{keys.path}, line {line}" if keys is not None and line else where

    if not isinstance(table, dict):
        problems.add(f"{where}: each binding must be a table ([[binding]]).")
        return None
    for key in table:
        if key not in _BINDING_KEYS:
            problems.add(f"{at(key)}: unknown key '{key}' in [[binding]] "
                         f"(known keys: {', '.join(_BINDING_KEYS)}).")  # fmt: skip
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.add(f"{at('enabled')}: enabled must be true or false, not {enabled!r}.")
        enabled = True
    hotkey: str | None = None
    if "hotkey" in table or enabled:
        value = table.get("hotkey")
        if not isinstance(value, str) or not value.strip():
            if enabled or "hotkey" in table:
                problems.add(f'{at("hotkey") if "hotkey" in table else where}: '
                             'the binding needs hotkey = "…".')  # fmt: skip
        else:
            try:
                hotkey = format_chord(parse_chord(value))
            except ChordError as err:
                problems.add(f"{at('hotkey')}: hotkey {err}.")
    action = table.get("action")
    if not isinstance(action, str) or not action.strip():
        if enabled or "action" in table:
            problems.add(f'{at("action") if "action" in table else where}: '
                         'the binding needs action = "…".')  # fmt: skip
        action = ""
    if not enabled and hotkey is None and not action:
        problems.add(f"{where}: a switched-off binding names the hotkey or the action "
                     "it switches off.")  # fmt: skip
    source = table.get("source", "clipboard")
    if source not in SOURCES:
        problems.add(f"{at('source')}: source must be one of {', '.join(SOURCES)}, "
                     f"not {source!r}.")  # fmt: skip
    output = table.get("output", ["clipboard", "notify"])
    if isinstance(output, str):
        output = [output]
    if not isinstance(output, list) or not output:
        problems.add(f"{at('output')}: output must be a non-empty list of "
                     f"{', '.join(OUTPUTS)}, not {output!r}.")  # fmt: skip
        output = []
    else:
        bad = [o for o in output if o not in OUTPUTS]
        if bad:
            problems.add(f"{at('output')}: output must be a non-empty list of "
                         f"{', '.join(OUTPUTS)}; {bad[0]!r} is none of them.")  # fmt: skip
    variables = table.get("vars", {})
    scalar = (str, int, float)
    if not isinstance(variables, dict) or any(
        isinstance(v, bool) or not isinstance(v, scalar) for v in variables.values()
    ):
        problems.add(f"{at('vars')}: vars must be a table of texts or numbers, "
                     f'e.g. vars = {{ count = "4" }}, not {variables!r}.')  # fmt: skip
        variables = {}
    model = table.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        problems.add(f"{at('model')}: model must be a model name or a .gguf path, "
                     f"not {model!r}.")  # fmt: skip
    return Binding(
        hotkey=hotkey or "", action=action, source=source if source in SOURCES else "clipboard",
        output=tuple(dict.fromkeys(o for o in output if o in OUTPUTS)),
        vars={str(k): str(v) for k, v in variables.items()}, model=model, where=where,
        var_lines={str(k): at(str(k)) if keys is not None and keys.line_of(str(k)) else at("vars")
                   for k in variables},
        enabled=enabled, origin="shipped" if shipped else "user",
    )  # fmt: skip


def _is_shipped(path: Path) -> bool:
    try:
        return path.resolve() == (platform.defaults_dir() / HOTKEYS_FILE).resolve()
    except OSError:
        return False


def _merge(earlier: list[Binding], later: list[Binding]) -> list[Binding]:
    """A later file's bindings on top of the earlier ones: each replaces the earlier
    binding on the same hotkey and the one with the same action and source; a
    switched-off one (``enabled = false``) only removes."""
    kept: list[Binding] = []
    replaced: dict[int, list[str]] = {}
    for old in earlier:
        hits = [i for i, new in enumerate(later) if _replaces(new, old)]
        if hits:
            replaced.setdefault(hits[0], []).append(f"{old.hotkey} {old.action} ({old.where})")
        else:
            kept.append(old)
    added = [
        replace(new, replaces=new.replaces + tuple(replaced.get(i, ())))
        for i, new in enumerate(later)
        if new.enabled
    ]
    return kept + added


def _replaces(new: Binding, old: Binding) -> bool:
    if new.hotkey and parse_chord(new.hotkey) == parse_chord(old.hotkey):
        return True
    if new.enabled:
        return (new.action, new.source) == (old.action, old.source)
    # Switched off by action alone: every binding of that action (and source if given).
    return (
        not new.hotkey
        and new.action == old.action
        and (new.source == old.source or new.source == "clipboard")
    )


def _check_duplicates(doc_bindings: list[Binding], problems: Problems) -> None:
    seen: dict[frozenset[str], Binding] = {}
    for binding in doc_bindings:
        if not binding.hotkey:
            continue
        chord = parse_chord(binding.hotkey)
        if chord in seen:
            problems.add(
                f"{binding.where}: {binding.hotkey} is already bound at {seen[chord].where}."
            )
        else:
            seen[chord] = binding


def load_config(files: list[Path] | None = None) -> Config:
    """Read each file in order; later files override earlier ones key by key.

    A later file's bindings add to the earlier ones and replace those on the same
    hotkey or with the same action and source; ``enabled = false`` switches one off,
    ``binding = []`` or ``shipped_bindings = false`` starts from none.  Every problem
    in every file is collected and reported at once.
    """
    paths = config_files() if files is None else files
    values: dict[str, Any] = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    bindings: list[Binding] = []
    problems = Problems()
    for path in paths:
        try:
            doc = load_toml(path)
        except ConfigError as err:
            problems.add(str(err))
            continue
        with problems.collect():
            check_keys(doc, doc.data, _TOP_KEYS)
        before = values.get("shipped_bindings", True)
        _settings(doc, values, problems)
        if before and not values.get("shipped_bindings", True):
            bindings = [b for b in bindings if b.origin != "shipped"]
        if "binding" in doc.data:
            mine = _bindings(doc, problems)
            _check_duplicates(mine, problems)
            if doc.data["binding"] == []:
                bindings = []
            elif not (_is_shipped(path) and not values.get("shipped_bindings", True)):
                bindings = _merge(bindings, mine)
    cancel_where = values.pop("_cancel_where", None)
    cancel_file = values.pop("_cancel_file", None)
    settings = Settings(**values)
    cancel = parse_chord(settings.cancel_hotkey)
    result = []
    for binding in bindings:
        if parse_chord(binding.hotkey) == cancel:
            if (
                binding.origin == "shipped"
                and cancel_file is not None
                and not _is_shipped(cancel_file)
            ):
                continue  # the user's cancel hotkey wins over a shipped binding
            also = f" (set at {cancel_where})" if cancel_where else ""
            problems.add(f"{binding.where}: {binding.hotkey} is the cancel hotkey{also}.")
            continue
        result.append(binding)
    problems.raise_if_any()
    return Config(settings=settings, bindings=tuple(result), sources=tuple(paths))


def check_actions(
    config: Config, actions: Container[str], variables: Mapping[str, Container[str]]
) -> None:
    """Refuse bindings whose action, or a variable of it, does not exist (all at once)."""
    problems = Problems()
    for binding in config.bindings:
        if binding.action not in actions:
            problems.add(f"{binding.where}: unknown action '{binding.action}'.")
            continue
        known = variables.get(binding.action, ())
        for name in binding.vars:
            if name not in known:
                where = binding.var_lines.get(name, binding.where)
                problems.add(f"{where}: '{binding.action}' has no variable '{name}'.")
    problems.raise_if_any()
