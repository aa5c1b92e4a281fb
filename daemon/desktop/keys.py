"""Synthesized copy and paste that wait for the user's own keys first.

A hotkey such as Alt+Shift+Super+T is still held when its action starts; pressing
Ctrl+V on top of a held Alt would send Ctrl+Alt+V.  So before synthesizing
anything we wait until the modifiers of the chord are released (and press
nothing while a key the user holds could mix in).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from daemon.errors import UserInputError

log = logging.getLogger(__name__)

_MODIFIER_NAMES = ("ctrl", "ctrl_l", "ctrl_r", "alt", "alt_l", "alt_r", "alt_gr", "shift",
                   "shift_l", "shift_r", "cmd", "cmd_l", "cmd_r")  # fmt: skip
# macOS virtual key codes of the ANSI (US) layout: kVK_ANSI_C, kVK_ANSI_V.
_MAC_ANSI_KEYCODES = {"c": 0x08, "v": 0x09}
MAC_PERMISSION = (
    "macOS does not let yomitori use the keyboard: in System Settings → Privacy & Security, "
    "allow the app that starts yomitori (your terminal, or Python) under Accessibility and "
    "Input Monitoring, then restart yomitori."
)


def mac_untrusted(listener: Any) -> bool:
    """True when pynput says macOS refused it the keyboard (it only logs a warning and
    then sees no keys, so the user would get hotkeys that silently never fire)."""
    return sys.platform == "darwin" and not getattr(listener, "IS_TRUSTED", True)


class Keyboard:
    def __init__(self) -> None:
        from pynput import keyboard

        self._kb = keyboard
        self._controller = keyboard.Controller()
        self._modifiers = {getattr(keyboard.Key, n) for n in _MODIFIER_NAMES
                           if hasattr(keyboard.Key, n)}  # fmt: skip
        self._held: set[Any] = set()
        self._lock = threading.Lock()
        self._listener = keyboard.Listener(on_press=self._press, on_release=self._release)
        self._listener.daemon = True
        self._listener.start()
        self.shortcut_key = keyboard.Key.cmd if sys.platform == "darwin" else keyboard.Key.ctrl

    def _press(self, key: Any) -> None:
        if key in self._modifiers:
            with self._lock:
                self._held.add(key)

    def _release(self, key: Any) -> None:
        with self._lock:
            self._held.discard(key)

    def modifiers_held(self) -> bool:
        with self._lock:
            return bool(self._held)

    def wait_released(self, timeout: float = 3.0) -> bool:
        """Wait until no modifier is held; False if the user kept holding one."""
        deadline = time.monotonic() + timeout
        while self.modifiers_held():
            if time.monotonic() > deadline:
                log.info("modifiers still held after %.1fs; going ahead", timeout)
                # A release can go unseen (Windows hides keys from hooks on the lock
                # screen and UAC prompts): forget it rather than wait on every action.
                # A key still down repeats its press and comes back.
                with self._lock:
                    self._held.clear()
                return False
            time.sleep(0.01)
        return True

    def letter_key(self, letter: str) -> Any:
        """The key to tap for Ctrl/Cmd+``letter`` under any keyboard layout.

        Shortcuts go by key, not by character: under a Russian or Greek layout there is
        no "c" to type, and pynput would send the character itself (Windows: a Unicode
        event, macOS: key code 0 = A), which no application takes for Ctrl+C.
        """
        if sys.platform == "win32":
            return self._kb.KeyCode.from_vk(ord(letter.upper()))  # VK_C, VK_V: any layout
        if sys.platform == "darwin":
            mapping = getattr(self._controller, "_mapping", None)
            if isinstance(mapping, dict) and letter not in mapping:
                return self._kb.KeyCode.from_vk(_MAC_ANSI_KEYCODES[letter])
        return letter

    def shortcut(self, letter: str) -> None:
        """Ctrl+letter (Cmd+letter on macOS), after the user's modifiers are up."""
        if sys.platform == "darwin":
            self._listener.wait()
            if mac_untrusted(self._listener):
                raise UserInputError(MAC_PERMISSION)
        self.wait_released()
        with self._controller.pressed(self.shortcut_key):
            self._controller.tap(self.letter_key(letter))

    def stop(self) -> None:
        self._listener.stop()
