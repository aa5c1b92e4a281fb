"""Global hotkeys that belong to yomitori: the chord reaches yomitori and not the
focused program.

Each system has its own way: X11 grabs the key (:mod:`daemon.desktop.grab_x11`),
Windows registers it (:mod:`daemon.desktop.grab_win32`), and on macOS an event tap
swallows it (:mod:`daemon.desktop.grab_mac`); elsewhere pynput only listens.
Callbacks run on the backend's own thread and only hand the press on: the daemon
enqueues a job and returns at once, so a slow action can never leave a key stuck.
On Wayland global hotkeys are not possible for an ordinary program: bind
``yomitori trigger ACTION`` in the desktop's own shortcut settings instead.  On macOS
the app that starts yomitori needs the Accessibility and Input Monitoring permissions;
without them no key arrives at all, which is said at once rather than left to look
like hotkeys that never fire.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from daemon import platform
from daemon.desktop.keys import MAC_PERMISSION, mac_untrusted
from daemon.errors import YomitoriError

log = logging.getLogger(__name__)


class HotkeysUnavailable(YomitoriError):
    pass


def check_available() -> None:
    """Raise with what to do when global hotkeys cannot work here."""
    if sys.platform not in ("win32", "darwin") and not os.environ.get("DISPLAY"):
        if os.environ.get("WAYLAND_DISPLAY"):
            raise HotkeysUnavailable(
                "Global hotkeys are not available on Wayland; bind 'yomitori trigger ACTION' "
                "in your desktop's keyboard shortcut settings."
            )
        raise HotkeysUnavailable(
            "No X display (DISPLAY is not set), so no global hotkeys; 'yomitori trigger "
            "ACTION' still works."
        )


def grabbing_backend() -> Callable[[], Any] | None:
    """The class that takes chords for yomitori alone on this system, if there is one."""
    if platform.is_x11():
        from daemon.desktop.grab_x11 import X11Hotkeys

        return X11Hotkeys
    if sys.platform == "win32":
        from daemon.desktop.grab_win32 import Win32Hotkeys

        return Win32Hotkeys
    if sys.platform == "darwin":
        from daemon.desktop.grab_mac import MacHotkeys

        return MacHotkeys
    return None


class Hotkeys:
    """A set of chords, replaced as a whole on reload.

    Where the system allows it (X11, Windows, macOS) the chords are taken for yomitori
    alone, so they never reach the focused program; elsewhere pynput listens for them.
    """

    def __init__(self) -> None:
        self._listener: object | None = None
        self._grabber: Any = None
        self.bound: dict[str, Callable[[], None]] = {}
        self.taken: list[Any] = []

    def bind(self, chords: Mapping[str, Callable[[], None]]) -> list[Any]:
        """Take exactly ``chords`` (pynput syntax), replacing earlier ones; the chords that
        another program holds come back (``Taken``: chord and reason)."""
        check_available()
        backend = grabbing_backend()
        if backend is not None:
            return self._grab(chords, backend)
        from pynput import keyboard

        self.unbind()
        if not chords:
            return []
        listener = keyboard.GlobalHotKeys(
            {chord: _guard(chord, cb) for chord, cb in chords.items()}
        )
        listener.daemon = True
        listener.start()
        listener.wait()
        if mac_untrusted(listener):
            listener.stop()
            raise HotkeysUnavailable(MAC_PERMISSION)
        self._listener = listener
        self.bound = dict(chords)
        log.info("listening for %d hotkeys", len(chords))
        return []

    def _grab(self, chords: Mapping[str, Callable[[], None]],
              backend: Callable[[], Any]) -> list[Any]:  # fmt: skip
        if self._grabber is None:
            grabber = backend()
            if not getattr(grabber, "trusted", True):  # macOS refused the keyboard
                grabber.close()
                raise HotkeysUnavailable(MAC_PERMISSION)
            self._grabber = grabber
        guarded = {chord: _guard(chord, cb) for chord, cb in chords.items()}
        self.taken = self._grabber.bind(guarded)
        refused = {t.chord for t in self.taken}
        self.bound = {c: cb for c, cb in chords.items() if c not in refused}
        log.info("took %d hotkeys (%d not available)", len(self.bound), len(self.taken))
        return list(self.taken)

    def unbind(self) -> None:
        if self._listener is not None:
            self._listener.stop()  # type: ignore[attr-defined]
            self._listener = None
        if self._grabber is not None:
            self._grabber.close()
            self._grabber = None
        self.bound = {}
        self.taken = []


def _guard(chord: str, callback: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        log.debug("hotkey %s", chord)
        try:
            callback()
        except Exception:  # an exception here would stop pynput's listener
            log.exception("hotkey %s handler failed", chord)

    return run
