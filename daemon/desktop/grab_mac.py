"""Global hotkeys on macOS that belong to yomitori: an event tap that swallows the chord.

pynput only listened, so a chord also reached the focused app.  pynput's keyboard
Listener takes a ``darwin_intercept`` callback that sees each Quartz event before any
app does and may return None to delete it.  Here it deletes exactly the key presses
(and their autorepeats and releases) that complete a bound chord; every other event
goes on unchanged.  The chord is matched on the key's virtual key code and the four
modifier flags, not on the character: with Option held the character is another one
(Option+T types †), which is why pynput's own hotkeys missed Option chords.

An event tap cannot tell whether another app has the chord as its hotkey, so nothing
is reported as taken here except keys a Mac keyboard does not have.

The tap runs on pynput's thread, and macOS disables a tap whose callback is slow: the
callbacks only hand the press on (the daemon queues a job).  The Quartz functions come
in as an injectable module, so the matching is tested anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from daemon.chords import MODIFIERS, ChordError, parse_chord
from daemon.desktop.grabbing import ChordUnknown, Taken
from daemon.desktop.keys import mac_untrusted

log = logging.getLogger(__name__)
Hook = Callable[[], None]

# Virtual key codes (kVK_*) of the ANSI keyboard, the fallback where the layout's own map
# has no such character (Cyrillic, Greek…), and the only map for named keys.
ANSI_KEYCODES = {
    "a": 0x00, "s": 0x01, "d": 0x02, "f": 0x03, "h": 0x04, "g": 0x05, "z": 0x06, "x": 0x07,
    "c": 0x08, "v": 0x09, "b": 0x0B, "q": 0x0C, "w": 0x0D, "e": 0x0E, "r": 0x0F, "y": 0x10,
    "t": 0x11, "1": 0x12, "2": 0x13, "3": 0x14, "4": 0x15, "6": 0x16, "5": 0x17, "=": 0x18,
    "9": 0x19, "7": 0x1A, "-": 0x1B, "8": 0x1C, "0": 0x1D, "]": 0x1E, "o": 0x1F, "u": 0x20,
    "[": 0x21, "i": 0x22, "p": 0x23, "l": 0x25, "j": 0x26, "'": 0x27, "k": 0x28, ";": 0x29,
    "\\": 0x2A, ",": 0x2B, "/": 0x2C, "n": 0x2D, "m": 0x2E, ".": 0x2F, "`": 0x32,
}  # fmt: skip
NAMED_KEYCODES = {
    "enter": 0x24, "tab": 0x30, "space": 0x31, "backspace": 0x33, "esc": 0x35,
    "caps_lock": 0x39, "home": 0x73, "page_up": 0x74, "delete": 0x75, "end": 0x77,
    "page_down": 0x79, "left": 0x7B, "right": 0x7C, "down": 0x7D, "up": 0x7E,
    "f1": 0x7A, "f2": 0x78, "f3": 0x63, "f4": 0x76, "f5": 0x60, "f6": 0x61, "f7": 0x62,
    "f8": 0x64, "f9": 0x65, "f10": 0x6D, "f11": 0x67, "f12": 0x6F, "f13": 0x69,
    "f14": 0x6B, "f15": 0x71, "f16": 0x6A, "f17": 0x40, "f18": 0x4F, "f19": 0x50,
    "f20": 0x5A,
}  # fmt: skip
# The Quartz names of the modifier flags (CGEventFlags); AltGr is Option on a Mac.
_FLAG_NAMES = {"shift": "kCGEventFlagMaskShift", "ctrl": "kCGEventFlagMaskControl",
               "alt": "kCGEventFlagMaskAlternate", "alt_gr": "kCGEventFlagMaskAlternate",
               "cmd": "kCGEventFlagMaskCommand"}  # fmt: skip


def mac_chord(chord: str, quartz: Any, layout: Mapping[str, int]) -> tuple[int, int]:
    """(virtual key code, modifier flags) for a chord in pynput syntax; raises
    ChordUnknown.  ``layout`` maps characters to key codes under the current layout."""
    flags, key = 0, ""
    for token in parse_chord(chord):
        if token in MODIFIERS.values():
            flags |= getattr(quartz, _FLAG_NAMES[token])
        else:
            key = token
    if key.startswith("vk"):  # <72>: a virtual key code, as pynput takes it on a Mac
        code = int(key[2:])
        if not 0 <= code < 0x80:
            raise ChordUnknown(f"<{code}> is not a Mac virtual key code (0 to 127)")
        return code, flags
    if key in NAMED_KEYCODES:
        return NAMED_KEYCODES[key], flags
    if len(key) == 1:
        code = layout.get(key, ANSI_KEYCODES.get(key))
        if code is not None:
            return code, flags
        raise ChordUnknown(f"this keyboard layout has no key '{key}'")
    raise ChordUnknown(f"a Mac keyboard has no <{key}> key that yomitori can take")


class ChordTable:
    """The bound chords and what to do with each key event (the part without Quartz)."""

    def __init__(self, chords: Mapping[tuple[int, int], Callable[[], None]], mask: int) -> None:
        self._chords = dict(chords)
        self._mask = mask  # the modifier flags that count; Caps Lock, Fn… do not
        self._swallowed: set[int] = set()  # key codes whose press went to yomitori

    def key_down(self, keycode: int, flags: int, autorepeat: bool) -> tuple[bool, Hook | None]:
        """(swallow the event?, the callback to run now)."""
        callback = self._chords.get((keycode, flags & self._mask))
        if callback is None:
            return keycode in self._swallowed and autorepeat, None
        self._swallowed.add(keycode)
        return True, None if autorepeat else callback

    def key_up(self, keycode: int) -> bool:
        """Swallow the release of a key whose press was swallowed, modifiers or not."""
        if keycode in self._swallowed:
            self._swallowed.discard(keycode)
            return True
        return False


def _default_layout() -> dict[str, int]:
    try:
        from pynput._util.darwin import get_unicode_to_keycode_map

        return dict(get_unicode_to_keycode_map())
    except Exception:  # pynput moved it: the ANSI map still serves Latin layouts
        log.debug("no keyboard layout map from pynput", exc_info=True)
        return {}


class MacHotkeys:
    """Intercepted chords and their callbacks; ``bind`` replaces the whole set.

    ``keyboard`` is pynput's keyboard module and ``quartz`` pyobjc's Quartz (the tests
    pass fakes); ``trusted`` is False when macOS refused the event tap.
    """

    def __init__(self, keyboard: Any = None, quartz: Any = None,
                 layout: Callable[[], Mapping[str, int]] = _default_layout) -> None:  # fmt: skip
        if keyboard is None:
            from pynput import keyboard
        if quartz is None:
            import Quartz as quartz  # type: ignore[import-not-found,no-redef]
        self._quartz = quartz
        self._layout = layout
        self._mask = 0
        for name in set(_FLAG_NAMES.values()):
            self._mask |= getattr(quartz, name)
        self._table = ChordTable({}, self._mask)
        self._lock = threading.Lock()
        self._listener = keyboard.Listener(darwin_intercept=self._intercept)
        self._listener.daemon = True
        self._listener.start()
        self._listener.wait()
        self.trusted = not mac_untrusted(self._listener)

    def bind(self, chords: Mapping[str, Callable[[], None]]) -> list[Taken]:
        """Intercept exactly ``chords``; keys this Mac has not come back as Taken."""
        layout = self._layout()
        table: dict[tuple[int, int], Callable[[], None]] = {}
        taken: list[Taken] = []
        for chord, callback in chords.items():
            try:
                table[mac_chord(chord, self._quartz, layout)] = callback
            except (ChordUnknown, ChordError) as err:
                taken.append(Taken(chord, str(err)))
        with self._lock:
            self._table = ChordTable(table, self._mask)
        return taken

    def close(self) -> None:
        self._listener.stop()

    def _intercept(self, event_type: int, event: Any) -> Any:
        """pynput's darwin_intercept: the event to pass on, or None to delete it."""
        q = self._quartz
        try:
            if event_type not in (q.kCGEventKeyDown, q.kCGEventKeyUp):
                return event
            keycode = q.CGEventGetIntegerValueField(event, q.kCGKeyboardEventKeycode)
            with self._lock:
                table = self._table
            if event_type == q.kCGEventKeyUp:
                return None if table.key_up(keycode) else event
            autorepeat = bool(q.CGEventGetIntegerValueField(event, q.kCGKeyboardEventAutorepeat))
            swallow, callback = table.key_down(keycode, q.CGEventGetFlags(event), autorepeat)
            if callback is not None:
                callback()
            return None if swallow else event
        except Exception:  # an exception here would stop pynput's listener, and the keyboard
            log.exception("hotkey interception failed")
            return event
