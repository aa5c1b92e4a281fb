"""Global hotkeys through pynput (X11, Windows, macOS).

Callbacks run on pynput's listener thread and only hand the press on: the
daemon enqueues a job and returns at once, so a slow action can never leave
a key stuck.  On Wayland global hotkeys are not possible for an ordinary
program: bind ``yomitori trigger ACTION`` in the desktop's own shortcut
settings instead.  On macOS the app that starts yomitori needs the Accessibility
and Input Monitoring permissions; without them pynput sees no keys at all, which
is said at once rather than left to look like hotkeys that never fire.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping

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


class Hotkeys:
    """A set of chords, replaced as a whole on reload."""

    def __init__(self) -> None:
        self._listener: object | None = None
        self.bound: dict[str, Callable[[], None]] = {}

    def bind(self, chords: Mapping[str, Callable[[], None]]) -> None:
        """Listen for exactly ``chords`` (pynput syntax), replacing earlier ones."""
        check_available()
        from pynput import keyboard

        self.unbind()
        if not chords:
            return
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

    def unbind(self) -> None:
        if self._listener is not None:
            self._listener.stop()  # type: ignore[attr-defined]
            self._listener = None
        self.bound = {}


def _guard(chord: str, callback: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        log.debug("hotkey %s", chord)
        try:
            callback()
        except Exception:  # an exception here would stop pynput's listener
            log.exception("hotkey %s handler failed", chord)

    return run
