"""Hotkey chords in pynput's syntax, checked without importing pynput.

The core validates ``hotkeys.toml`` headless (pynput needs a display to
import on Linux), so the syntax lives here: ``<alt>+<shift>+<cmd>+t``, ``<f9>``,
``<shift>+<cmd>+<72>`` (a virtual-key code).
"""

from __future__ import annotations

MODIFIERS = {
    "ctrl": "ctrl", "ctrl_l": "ctrl", "ctrl_r": "ctrl",
    "alt": "alt", "alt_l": "alt", "alt_r": "alt", "alt_gr": "alt_gr",
    "shift": "shift", "shift_l": "shift", "shift_r": "shift",
    "cmd": "cmd", "cmd_l": "cmd", "cmd_r": "cmd",
}  # fmt: skip
# Named keys pynput knows (pynput.keyboard.Key), besides the modifiers.
NAMED_KEYS = {
    "backspace", "caps_lock", "delete", "down", "end", "enter", "esc", "home", "insert",
    "left", "menu", "num_lock", "page_down", "page_up", "pause", "print_screen", "right",
    "scroll_lock", "space", "tab", "up", "media_play_pause", "media_volume_mute",
    "media_volume_down", "media_volume_up", "media_previous", "media_next",
    *(f"f{n}" for n in range(1, 25)),
}  # fmt: skip
# Keys that may form a chord on their own without stealing ordinary typing.
_STANDALONE = {"pause", "print_screen", "scroll_lock", "insert", "menu",
               *(f"f{n}" for n in range(1, 25))}  # fmt: skip


class ChordError(ValueError):
    """The chord cannot be parsed; the message says why."""


def parse_chord(text: str) -> frozenset[str]:
    """The chord as a set of canonical key names; raises ChordError."""
    if not isinstance(text, str) or not text.strip():
        raise ChordError("a hotkey cannot be empty")
    keys: set[str] = set()
    for raw in text.lower().split("+"):
        token = raw.strip()
        if not token:
            raise ChordError(f"'{text}' has an empty key between two '+'")
        if token.startswith("<") and token.endswith(">"):
            name = token[1:-1]
            if name in MODIFIERS:
                key = MODIFIERS[name]
            elif name in NAMED_KEYS:
                key = name
            elif name.isascii() and name.isdigit():
                key = f"vk{int(name)}"
            else:
                raise ChordError(f"unknown key <{name}> in '{text}'")
        elif len(token) == 1:
            key = token
        else:
            raise ChordError(
                f"'{token}' in '{text}' is not a key: write one character, or a name in <>, "
                "e.g. <alt>+<shift>+<cmd>+t"
            )
        if key in keys:
            raise ChordError(f"'{text}' names a key twice")
        keys.add(key)
    plain = keys - set(MODIFIERS.values())
    if not plain:
        raise ChordError(f"'{text}' has only modifiers; add a key, e.g. {text}+t")
    if len(plain) > 1:
        raise ChordError(f"'{text}' has more than one non-modifier key")
    if keys - {"shift"} == plain and not plain <= _STANDALONE:
        raise ChordError(
            f"'{text}' has no modifier (<ctrl>, <alt> or <cmd>) and would fire while you type"
        )
    return frozenset(keys)


def modifiers_of(chord: frozenset[str]) -> frozenset[str]:
    return frozenset(chord & set(MODIFIERS.values()))


def format_chord(chord: frozenset[str]) -> str:
    """pynput syntax in a stable order, e.g. ``<alt>+<shift>+<cmd>+t``."""
    order = ["ctrl", "alt", "alt_gr", "shift", "cmd"]
    mods = [f"<{m}>" for m in order if m in chord]
    rest = [k for k in chord if k not in order]
    keys = [f"<{k[2:]}>" if k.startswith("vk") else (f"<{k}>" if len(k) > 1 else k) for k in rest]
    return "+".join(mods + keys)
