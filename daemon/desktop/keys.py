"""Synthesized copy and paste that wait for the user's own keys first.

A hotkey such as Ctrl+Alt+T is still held when its action starts; pressing
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

log = logging.getLogger(__name__)

_MODIFIER_NAMES = ("ctrl", "ctrl_l", "ctrl_r", "alt", "alt_l", "alt_r", "alt_gr", "shift",
                   "shift_l", "shift_r", "cmd", "cmd_l", "cmd_r")  # fmt: skip


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
                return False
            time.sleep(0.01)
        return True

    def shortcut(self, letter: str) -> None:
        """Ctrl+letter (Cmd+letter on macOS), after the user's modifiers are up."""
        self.wait_released()
        with self._controller.pressed(self.shortcut_key):
            self._controller.tap(letter)

    def stop(self) -> None:
        self._listener.stop()
