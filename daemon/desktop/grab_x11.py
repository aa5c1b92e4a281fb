"""Global hotkeys on X11 that belong to yomitori: the X server's key grabs (XGrabKey).

pynput only listens, so a chord also reached the focused program (Ctrl+Alt+T opened a
terminal, Ctrl+Alt+V pasted into a Tk text box).  A grab makes the server deliver the
chord to us alone.  Each chord is grabbed with every combination of the lock
modifiers (Caps Lock, Num Lock, Scroll Lock), or it would die whenever Num Lock is on.
A chord another program holds makes the server answer BadAccess: that chord is
reported (which one, and that another program has it), never left silently dead.

One thread owns the X connection (python-xlib is not thread-safe): it grabs, ungrabs
and reads the key events; ``bind`` hands it the new set and waits for the outcome.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Mapping
from itertools import combinations
from typing import Any

from daemon.chords import parse_chord
from daemon.desktop.grabbing import BindRequests, ChordUnknown, Taken

__all__ = ["ChordUnknown", "Taken", "X11Hotkeys", "keysym_name"]

log = logging.getLogger(__name__)

# pynput's key names → X keysym names (the rest are the same, or capitalised).
_KEYSYM_NAMES = {
    "esc": "Escape", "enter": "Return", "page_up": "Prior", "page_down": "Next",
    "print_screen": "Print", "backspace": "BackSpace", "caps_lock": "Caps_Lock",
    "num_lock": "Num_Lock", "scroll_lock": "Scroll_Lock", "space": "space",
    "media_play_pause": "XF86AudioPlay", "media_volume_mute": "XF86AudioMute",
    "media_volume_down": "XF86AudioLowerVolume", "media_volume_up": "XF86AudioRaiseVolume",
    "media_previous": "XF86AudioPrev", "media_next": "XF86AudioNext",
}  # fmt: skip
_MODIFIER_KEYSYMS = {
    "alt": ("Alt_L", "Alt_R", "Meta_L", "Meta_R"),
    "cmd": ("Super_L", "Super_R", "Hyper_L", "Hyper_R"),
    "alt_gr": ("ISO_Level3_Shift", "Mode_switch"),
    "num_lock": ("Num_Lock",),
    "scroll_lock": ("Scroll_Lock",),
}
_DEFAULT_MASKS = {"alt": 1 << 3, "cmd": 1 << 6, "alt_gr": 1 << 7, "num_lock": 1 << 4,
                  "scroll_lock": 0}  # fmt: skip
SHIFT, LOCK, CONTROL = 1 << 0, 1 << 1, 1 << 2


def keysym_name(token: str) -> str:
    if token in _KEYSYM_NAMES:
        return _KEYSYM_NAMES[token]
    if token.startswith("f") and token[1:].isdigit():
        return token.upper()
    if len(token) == 1:
        return token
    return token.capitalize()  # home, end, insert, delete, tab, left, up, pause, menu…


class X11Hotkeys:
    """Grabbed chords and their callbacks; ``bind`` replaces the whole set."""

    def __init__(self, display_name: str | None = None) -> None:
        from Xlib import display

        self._display = display.Display(display_name)
        self._root = self._display.screen().root
        self._masks = self._modifier_masks()
        self._grabs: dict[tuple[int, int], Callable[[], None]] = {}
        self._grabbed: list[tuple[int, int]] = []
        self._down: set[int] = set()
        self._released_at: dict[int, int] = {}
        self._requests = BindRequests()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="x11-hotkeys", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------
    def bind(self, chords: Mapping[str, Callable[[], None]], timeout: float = 10) -> list[Taken]:
        """Grab exactly ``chords``; those another program holds come back as Taken."""
        future = self._requests.add(chords)
        os.write(self._wake_w, b"x")
        return future.result(timeout=timeout)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # -- the X thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        from Xlib import X

        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._display, self._wake_r], [], [], 1.0)
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                    self._requests.serve(self._apply)
                while self._display.pending_events():
                    event = self._display.next_event()
                    if event.type == X.KeyPress:
                        self._pressed(event)
                    elif event.type == X.KeyRelease:
                        self._down.discard(event.detail)
                        self._released_at[event.detail] = event.time
            self._apply({})
            self._display.close()
        except Exception:  # the X server went away: hotkeys end, the daemon goes on
            log.exception("X11 hotkeys stopped")
            self._requests.close("the X connection closed")

    def _pressed(self, event: Any) -> None:
        # X's autorepeat sends release + press with the same time stamp: a held chord
        # fires once, as pynput's did; real presses in quick succession all count.
        if event.detail in self._down or self._released_at.get(event.detail) == event.time:
            return
        self._down.add(event.detail)
        callback = self._grabs.get((event.detail, event.state & ~self._ignored()))
        if callback is not None:
            callback()

    def _ignored(self) -> int:
        return LOCK | self._masks["num_lock"] | self._masks["scroll_lock"]

    def _lock_variants(self) -> list[int]:
        locks = [m for m in (LOCK, self._masks["num_lock"], self._masks["scroll_lock"]) if m]
        return [sum(c) for n in range(len(locks) + 1) for c in combinations(locks, n)]

    def _apply(self, chords: Mapping[str, Callable[[], None]]) -> list[Taken]:
        from Xlib import X, error

        for keycode, modifiers in self._grabbed:
            self._root.ungrab_key(keycode, modifiers)
        self._grabbed, self._grabs = [], {}
        taken: list[Taken] = []
        for chord, callback in chords.items():
            try:
                keycode, modifiers = self._resolve(chord)
            except ChordUnknown as err:
                taken.append(Taken(chord, str(err)))
                continue
            done: list[tuple[int, int]] = []
            refused = False
            for variant in self._lock_variants():
                catcher = error.CatchError(error.BadAccess)
                self._root.grab_key(keycode, modifiers | variant, True, X.GrabModeAsync,
                                    X.GrabModeAsync, onerror=catcher)  # fmt: skip
                self._display.sync()
                if catcher.get_error() is not None:
                    refused = True
                    break
                done.append((keycode, modifiers | variant))
            if refused:
                for grab in done:
                    self._root.ungrab_key(*grab)
                taken.append(Taken(chord, "another program holds it"))
                continue
            self._grabbed += done
            self._grabs[(keycode, modifiers)] = callback
        self._display.sync()
        return taken

    def _resolve(self, chord: str) -> tuple[int, int]:
        from Xlib import XK

        modifiers, key = 0, None
        for token in parse_chord(chord):
            if token == "ctrl":
                modifiers |= CONTROL
            elif token == "shift":
                modifiers |= SHIFT
            elif token in ("alt", "cmd", "alt_gr"):
                modifiers |= self._masks[token]
            else:
                key = token
        if key is None:
            raise ChordUnknown("it has no key besides the modifiers")
        if key.startswith("vk") and key[2:].isdigit():  # <72>: a key code, a keysym on X
            keysym = int(key[2:])
        else:
            keysym = XK.string_to_keysym(keysym_name(key))
        keycode = self._display.keysym_to_keycode(keysym) if keysym else 0
        if not keycode:
            raise ChordUnknown(f"this keyboard layout has no key '{key}'")
        return keycode, modifiers

    def _modifier_masks(self) -> dict[str, int]:
        """Which ModN each modifier is on here (Alt is usually Mod1, Num Lock Mod2…)."""
        from Xlib import XK

        masks = dict(_DEFAULT_MASKS)
        mapping = self._display.get_modifier_mapping()
        for name, keysyms in _MODIFIER_KEYSYMS.items():
            codes = {self._display.keysym_to_keycode(XK.string_to_keysym(k)) for k in keysyms}
            codes.discard(0)
            for index, row in enumerate(mapping):
                if index >= 3 and codes & set(row):
                    masks[name] = 1 << index
                    break
        return masks
