"""Global hotkeys on Windows that belong to yomitori: the system's RegisterHotKey.

pynput only listens, so a chord also reached the focused program.  A registered hotkey
is taken out of the input: Windows posts WM_HOTKEY to the thread that registered it
and the focused program never sees the key.  A chord another program registered first
fails with ERROR_HOTKEY_ALREADY_REGISTERED: that chord is reported as taken, as on X11.

One thread owns the registrations.  A hotkey registered without a window belongs to
the calling thread: its WM_HOTKEY arrives in that thread's message queue, and only that
thread can unregister it.  So ``bind`` queues the new set and wakes the thread with a
WM_APP message; the thread registers, answers, and goes back to GetMessageW.  ``close``
posts WM_QUIT, and the thread unregisters everything on its way out.

The Windows calls are made through an injectable ``user32``/``kernel32`` pair, loaded
with ctypes only when the class is first used, so this module imports on any system.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Mapping
from ctypes import wintypes
from typing import Any

from daemon.chords import MODIFIERS, ChordError, parse_chord
from daemon.desktop.grabbing import BindRequests, ChordUnknown, Hook, Taken

log = logging.getLogger(__name__)

# winuser.h
MOD_ALT, MOD_CONTROL, MOD_SHIFT, MOD_WIN, MOD_NOREPEAT = 0x0001, 0x0002, 0x0004, 0x0008, 0x4000
WM_QUIT, WM_USER, WM_HOTKEY, WM_APP = 0x0012, 0x0400, 0x0312, 0x8000
PM_NOREMOVE = 0x0000
ERROR_HOTKEY_ALREADY_REGISTERED = 1409
_MAX_ID = 0xBFFF  # ids an application may use

# AltGr is Ctrl+Alt to Windows: it arrives as Left Ctrl + Right Alt.
_MODIFIER_FLAGS = {"ctrl": MOD_CONTROL, "alt": MOD_ALT, "shift": MOD_SHIFT, "cmd": MOD_WIN,
                   "alt_gr": MOD_CONTROL | MOD_ALT}  # fmt: skip
# pynput's key names → virtual-key codes (letters and digits are their ASCII capitals).
VIRTUAL_KEYS = {
    "backspace": 0x08, "tab": 0x09, "enter": 0x0D, "pause": 0x13, "caps_lock": 0x14,
    "esc": 0x1B, "space": 0x20, "page_up": 0x21, "page_down": 0x22, "end": 0x23,
    "home": 0x24, "left": 0x25, "up": 0x26, "right": 0x27, "down": 0x28,
    "print_screen": 0x2C, "insert": 0x2D, "delete": 0x2E, "menu": 0x5D, "num_lock": 0x90,
    "scroll_lock": 0x91, "media_volume_mute": 0xAD, "media_volume_down": 0xAE,
    "media_volume_up": 0xAF, "media_next": 0xB0, "media_previous": 0xB1,
    "media_play_pause": 0xB3,
    **{f"f{n}": 0x6F + n for n in range(1, 25)},  # VK_F1 = 0x70 … VK_F24 = 0x87
}  # fmt: skip


def win_chord(chord: str, vk_key_scan: Callable[[str], int] | None = None) -> tuple[int, int]:
    """(fsModifiers without MOD_NOREPEAT, virtual-key code) for a chord in pynput syntax.

    ``vk_key_scan`` is user32's VkKeyScanW, asked only for a character that is neither a
    letter nor a digit (its key depends on the keyboard layout).  Raises ChordUnknown
    (and ChordError for a chord that does not parse).
    """
    modifiers, key = 0, ""
    for token in parse_chord(chord):
        if token in MODIFIERS.values():
            modifiers |= _MODIFIER_FLAGS[token]
        else:
            key = token
    return modifiers, _virtual_key(key, vk_key_scan)


def _virtual_key(key: str, vk_key_scan: Callable[[str], int] | None) -> int:
    if key == "f12":
        raise ChordUnknown("Windows keeps F12 for debuggers, so it cannot be a hotkey")
    if key in VIRTUAL_KEYS:
        return VIRTUAL_KEYS[key]
    if key.startswith("vk"):  # <72>: pynput's virtual-key code, as it is
        code = int(key[2:])
        if not 0 < code < 0xFF:
            raise ChordUnknown(f"<{code}> is not a Windows virtual-key code (1 to 254)")
        return code
    if len(key) == 1 and key.isascii() and key.isalnum():
        return ord(key.upper())  # VK_A … VK_Z, VK_0 … VK_9 under every layout
    scanned = vk_key_scan(key) if vk_key_scan is not None and len(key) == 1 else -1
    # VkKeyScanW: the key in the low byte, the shift state it needs in the high byte.
    if scanned == -1 or scanned & 0xFF00 or not scanned & 0xFF:
        raise ChordUnknown(
            f"this keyboard layout types '{key}' with Shift or AltGr or not at all, so "
            "Windows cannot register it; name its key by code instead, such as <191>"
        )
    return scanned & 0xFF


def _load_windows() -> tuple[Any, Any, Callable[[], int]]:
    """user32, kernel32 and GetLastError as ctypes sees them, with their signatures."""
    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        raise OSError("RegisterHotKey hotkeys need Windows")
    user32 = win_dll("user32", use_last_error=True)
    kernel32 = win_dll("kernel32", use_last_error=True)
    msg_p = ctypes.POINTER(wintypes.MSG)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "RegisterHotKey": ([wintypes.HWND, ctypes.c_int, wintypes.UINT, wintypes.UINT],
                           wintypes.BOOL),
        "UnregisterHotKey": ([wintypes.HWND, ctypes.c_int], wintypes.BOOL),
        "GetMessageW": ([msg_p, wintypes.HWND, wintypes.UINT, wintypes.UINT], wintypes.BOOL),
        "PeekMessageW": ([msg_p, wintypes.HWND, wintypes.UINT, wintypes.UINT, wintypes.UINT],
                         wintypes.BOOL),
        "PostThreadMessageW": ([wintypes.DWORD, wintypes.UINT, wintypes.WPARAM,
                                wintypes.LPARAM], wintypes.BOOL),
        "VkKeyScanW": ([wintypes.WCHAR], ctypes.c_short),
    }  # fmt: skip
    for name, (argtypes, restype) in signatures.items():
        function = getattr(user32, name)
        function.argtypes, function.restype = argtypes, restype
    kernel32.GetCurrentThreadId.argtypes, kernel32.GetCurrentThreadId.restype = [], wintypes.DWORD
    return user32, kernel32, ctypes.get_last_error  # type: ignore[attr-defined]


class Win32Hotkeys:
    """Registered chords and their callbacks; ``bind`` replaces the whole set.

    ``user32``, ``kernel32`` and ``last_error`` stand in for the Windows libraries (the
    tests pass fakes); by default they are loaded with ctypes.
    """

    def __init__(self, user32: Any = None, kernel32: Any = None,
                 last_error: Callable[[], int] | None = None) -> None:  # fmt: skip
        if user32 is None:
            user32, kernel32, last_error = _load_windows()
        self._user32, self._kernel32 = user32, kernel32
        self._last_error: Callable[[], int] = last_error or (lambda: 0)
        self._callbacks: dict[int, Hook] = {}
        self._requests = BindRequests()
        self._thread_id = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(started,),
                                        name="win32-hotkeys", daemon=True)  # fmt: skip
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the hotkey thread did not start")

    # -- the caller's side ---------------------------------------------------------------
    def bind(self, chords: Mapping[str, Hook], timeout: float = 10) -> list[Taken]:
        """Register exactly ``chords``; those another program holds come back as Taken."""
        future = self._requests.add(chords)
        if not self._user32.PostThreadMessageW(self._thread_id, WM_APP, 0, 0):
            self._requests.withdraw(future)
            raise RuntimeError("the hotkey thread is gone")
        return future.result(timeout=timeout)

    def close(self) -> None:
        if self._requests.close("the hotkeys were closed"):
            self._user32.PostThreadMessageW(self._thread_id, WM_QUIT, 0, 0)
            self._thread.join(timeout=5)

    # -- the hotkey thread -----------------------------------------------------------------
    def _loop(self, started: threading.Event) -> None:
        msg = wintypes.MSG()
        pmsg = ctypes.pointer(msg)
        # A thread gets its message queue from its first USER call; until then a message
        # posted to it is lost, so make the queue before anyone may post.
        self._user32.PeekMessageW(pmsg, None, WM_USER, WM_USER, PM_NOREMOVE)
        self._thread_id = self._kernel32.GetCurrentThreadId()
        started.set()
        try:
            while True:
                got = self._user32.GetMessageW(pmsg, None, 0, 0)
                if got == 0:  # WM_QUIT
                    break
                if got == -1:
                    log.error("hotkeys stopped: GetMessageW failed (error %d)",
                              self._last_error())  # fmt: skip
                    break
                if msg.message == WM_HOTKEY:
                    self._pressed(int(msg.wParam))
                elif msg.message == WM_APP:
                    self._requests.serve(self._apply)
        finally:
            self._apply({})
            self._requests.close("the hotkey thread stopped")

    def _pressed(self, hotkey_id: int) -> None:
        callback = self._callbacks.get(hotkey_id)
        if callback is None:
            return
        try:
            callback()
        except Exception:  # one failing action must not end the message loop
            log.exception("hotkey %d handler failed", hotkey_id)

    def _apply(self, chords: Mapping[str, Hook]) -> list[Taken]:
        for hotkey_id in self._callbacks:
            self._user32.UnregisterHotKey(None, hotkey_id)
        self._callbacks = {}
        taken: list[Taken] = []
        for hotkey_id, (chord, callback) in enumerate(chords.items(), start=1):
            if hotkey_id > _MAX_ID:
                taken.append(Taken(chord, "Windows allows no more hotkeys to one program"))
                continue
            try:
                modifiers, vk = win_chord(chord, self._user32.VkKeyScanW)
            except (ChordUnknown, ChordError) as err:
                taken.append(Taken(chord, str(err)))
                continue
            if not self._user32.RegisterHotKey(None, hotkey_id, modifiers | MOD_NOREPEAT, vk):
                error = self._last_error()
                taken.append(Taken(chord, "another program holds it"
                                   if error == ERROR_HOTKEY_ALREADY_REGISTERED
                                   else f"Windows refused it (error {error})"))  # fmt: skip
                continue
            self._callbacks[hotkey_id] = callback
        return taken
