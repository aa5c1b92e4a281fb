"""Hotkeys belong to yomitori on Windows: RegisterHotKey, on a thread with its own message
loop.  No Windows here: a fake user32 plays the system (a per-thread message queue,
hotkeys that other programs hold, ids that only their own thread may unregister), so
the translation, the registration and the reporting run for real."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from daemon.desktop import grab_win32
from daemon.desktop.grab_win32 import (
    ERROR_HOTKEY_ALREADY_REGISTERED,
    MOD_ALT,
    MOD_CONTROL,
    MOD_NOREPEAT,
    MOD_SHIFT,
    MOD_WIN,
    WM_APP,
    WM_HOTKEY,
    WM_QUIT,
    ChordUnknown,
    Win32Hotkeys,
    win_chord,
)

ACCESS_DENIED = 5


class FakeUser32:
    """user32 as the hotkey thread uses it, for one thread with a message queue."""

    def __init__(self, held: set[tuple[int, int]] | None = None,
                 layout: dict[str, int] | None = None) -> None:  # fmt: skip
        self.held = held or set()  # (modifiers, vk) another program registered
        self.refuse: dict[tuple[int, int], int] = {}  # (modifiers, vk) → error code
        self.layout = layout or {";": 0xBA, "/": 0xBF, "%": 0x135}  # VkKeyScanW answers
        self.queue: queue.Queue[tuple[int, int, int]] = queue.Queue()
        self.registered: dict[int, tuple[int, int]] = {}  # id → (fsModifiers, vk)
        self.loop_thread: int | None = None
        self.calls: list[tuple[str, int]] = []  # (function, the thread that called it)
        self.error = 0

    def _on_loop_thread(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))
        assert threading.get_ident() == self.loop_thread, f"{name} off the loop thread"

    def PeekMessageW(self, pmsg: Any, hwnd: Any, first: int, last: int, remove: int) -> int:
        self.loop_thread = threading.get_ident()
        return 0

    def GetMessageW(self, pmsg: Any, hwnd: Any, first: int, last: int) -> int:
        self._on_loop_thread("GetMessageW")
        message, wparam, lparam = self.queue.get(timeout=10)
        msg = pmsg.contents
        msg.message, msg.wParam, msg.lParam = message, wparam, lparam
        return 0 if message == WM_QUIT else 1

    def PostThreadMessageW(self, thread_id: int, message: int, wparam: int, lparam: int) -> int:
        if thread_id != 4242:
            return 0
        self.queue.put((message, wparam, lparam))
        return 1

    def RegisterHotKey(self, hwnd: Any, hotkey_id: int, modifiers: int, vk: int) -> int:
        self._on_loop_thread("RegisterHotKey")
        assert hwnd is None and 0 < hotkey_id <= 0xBFFF
        combo = (modifiers & ~MOD_NOREPEAT, vk)
        if combo in self.held or combo in self.registered.values():
            self.error = ERROR_HOTKEY_ALREADY_REGISTERED
            return 0
        if combo in self.refuse:
            self.error = self.refuse[combo]
            return 0
        self.registered[hotkey_id] = (modifiers, vk)
        return 1

    def UnregisterHotKey(self, hwnd: Any, hotkey_id: int) -> int:
        self._on_loop_thread("UnregisterHotKey")
        return 1 if self.registered.pop(hotkey_id, None) else 0

    def VkKeyScanW(self, char: str) -> int:
        return self.layout.get(char, -1)

    # -- what the user does --------------------------------------------------------------
    def press(self, modifiers: int, vk: int) -> None:
        for hotkey_id, (mods, key) in self.registered.items():
            if (mods & ~MOD_NOREPEAT, key) == (modifiers, vk):
                self.queue.put((WM_HOTKEY, hotkey_id, 0))


class FakeKernel32:
    def GetCurrentThreadId(self) -> int:
        return 4242


def make(user32: FakeUser32) -> Win32Hotkeys:
    return Win32Hotkeys(user32, FakeKernel32(), lambda: user32.error)


def wait_for(check: Callable[[], bool], seconds: float = 5) -> bool:
    done = threading.Event()
    for _ in range(int(seconds * 100)):
        if check():
            return True
        done.wait(0.01)
    return check()


@pytest.mark.parametrize(
    ("chord", "modifiers", "vk"),
    [
        ("<cmd>+<alt>+<shift>+t", MOD_WIN | MOD_ALT | MOD_SHIFT, 0x54),
        ("<ctrl>+<alt>+t", MOD_CONTROL | MOD_ALT, ord("T")),
        ("<ctrl_r>+<shift_l>+a", MOD_CONTROL | MOD_SHIFT, 0x41),
        ("<cmd>+z", MOD_WIN, 0x5A),
        ("<alt>+0", MOD_ALT, 0x30),
        ("<ctrl>+9", MOD_CONTROL, 0x39),
        ("<alt_gr>+e", MOD_CONTROL | MOD_ALT, 0x45),  # AltGr is Ctrl+Alt to Windows
        ("<f1>", 0, 0x70),
        ("<shift>+<f11>", MOD_SHIFT, 0x7A),
        ("<ctrl>+<f13>", MOD_CONTROL, 0x7C),
        ("<f24>", 0, 0x87),
        ("<ctrl>+<esc>", MOD_CONTROL, 0x1B),
        ("<alt>+<space>", MOD_ALT, 0x20),
        ("<alt>+<tab>", MOD_ALT, 0x09),
        ("<ctrl>+<enter>", MOD_CONTROL, 0x0D),
        ("<ctrl>+<backspace>", MOD_CONTROL, 0x08),
        ("<ctrl>+<delete>", MOD_CONTROL, 0x2E),
        ("<ctrl>+<insert>", MOD_CONTROL, 0x2D),
        ("<print_screen>", 0, 0x2C),
        ("<pause>", 0, 0x13),
        ("<scroll_lock>", 0, 0x91),
        ("<menu>", 0, 0x5D),
        ("<ctrl>+<home>", MOD_CONTROL, 0x24),
        ("<ctrl>+<end>", MOD_CONTROL, 0x23),
        ("<ctrl>+<page_up>", MOD_CONTROL, 0x21),
        ("<ctrl>+<page_down>", MOD_CONTROL, 0x22),
        ("<cmd>+<left>", MOD_WIN, 0x25),
        ("<cmd>+<up>", MOD_WIN, 0x26),
        ("<cmd>+<right>", MOD_WIN, 0x27),
        ("<cmd>+<down>", MOD_WIN, 0x28),
        ("<ctrl>+<media_play_pause>", MOD_CONTROL, 0xB3),
        ("<ctrl>+<media_next>", MOD_CONTROL, 0xB0),
        ("<ctrl>+<media_volume_up>", MOD_CONTROL, 0xAF),
        ("<ctrl>+<alt>+<191>", MOD_CONTROL | MOD_ALT, 191),  # a virtual-key code as given
        ("<ctrl>+;", MOD_CONTROL, 0xBA),  # by the layout: VkKeyScanW
        ("<ctrl>+<alt>+/", MOD_CONTROL | MOD_ALT, 0xBF),
    ],
)
def test_chords_translate_to_modifiers_and_virtual_keys(chord, modifiers, vk):
    assert win_chord(chord, FakeUser32().VkKeyScanW) == (modifiers, vk)


@pytest.mark.parametrize(
    ("chord", "words"),
    [
        ("<ctrl>+<f12>", "keeps F12 for debuggers"),
        ("<ctrl>+%", "with Shift or AltGr"),  # VkKeyScanW: needs Shift on this layout
        ("<ctrl>+é", "or not at all"),  # VkKeyScanW: -1, no such key
        ("<ctrl>+<300>", "not a Windows virtual-key code"),
        ("<ctrl>+<0>", "not a Windows virtual-key code"),
    ],
)
def test_keys_windows_cannot_register_say_so_in_one_sentence(chord, words):
    with pytest.raises(ChordUnknown) as caught:
        win_chord(chord, FakeUser32().VkKeyScanW)
    message = str(caught.value)
    assert words in message
    # A clause: the daemon shows it after the chord and its action, in one sentence.
    assert "\n" not in message and not message.endswith(".")


def test_the_chord_is_registered_on_the_loop_thread_and_fires_there():
    user32 = FakeUser32()
    hotkeys = make(user32)
    try:
        fired: list[tuple[str, int]] = []
        taken = hotkeys.bind({
            "<cmd>+<alt>+<shift>+t": lambda: fired.append(("t", threading.get_ident())),
            "<cmd>+<alt>+<shift>+o": lambda: fired.append(("o", threading.get_ident())),
        })  # fmt: skip
        assert taken == []
        flags = MOD_WIN | MOD_ALT | MOD_SHIFT | MOD_NOREPEAT
        assert sorted(user32.registered.values()) == [(flags, 0x4F), (flags, 0x54)]
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x54)
        user32.press(MOD_WIN | MOD_ALT, 0x54)  # another chord: nothing registered
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x4F)
        assert wait_for(lambda: len(fired) == 2), fired
        assert [name for name, _ in fired] == ["t", "o"]
        assert {thread for _, thread in fired} == {user32.loop_thread}
        assert user32.loop_thread != threading.get_ident()
    finally:
        hotkeys.close()


def test_a_chord_another_program_holds_is_reported_and_the_rest_work():
    user32 = FakeUser32(held={(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x54)})
    user32.refuse[(MOD_CONTROL, 0x41)] = ACCESS_DENIED
    hotkeys = make(user32)
    try:
        fired: list[str] = []
        taken = hotkeys.bind({
            "<cmd>+<alt>+<shift>+t": lambda: fired.append("t"),
            "<cmd>+<alt>+<shift>+o": lambda: fired.append("o"),
            "<ctrl>+a": lambda: fired.append("a"),
            "<ctrl>+<f12>": lambda: fired.append("f12"),
        })  # fmt: skip
        assert [(t.chord, t.reason) for t in taken] == [
            ("<cmd>+<alt>+<shift>+t", "another program holds it"),
            ("<ctrl>+a", "Windows refused it (error 5)"),
            ("<ctrl>+<f12>", "Windows keeps F12 for debuggers, so it cannot be a hotkey"),
        ]
        assert list(user32.registered.values()) == [
            (MOD_WIN | MOD_ALT | MOD_SHIFT | MOD_NOREPEAT, 0x4F)]  # fmt: skip
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x4F)
        assert wait_for(lambda: fired == ["o"]), fired
        # Once the other program lets go, a re-bind (yomitori reload) takes it.
        user32.held.clear()
        assert hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: None}) == []
    finally:
        hotkeys.close()


def test_rebinding_unregisters_the_old_set_on_the_loop_thread():
    user32 = FakeUser32()
    hotkeys = make(user32)
    try:
        fired: list[str] = []
        hotkeys.bind({"<cmd>+<alt>+<shift>+j": lambda: fired.append("old")})
        hotkeys.bind({"<cmd>+<alt>+<shift>+h": lambda: fired.append("new")})
        assert list(user32.registered.values()) == [
            (MOD_WIN | MOD_ALT | MOD_SHIFT | MOD_NOREPEAT, 0x48)]  # fmt: skip
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x4A)
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x48)
        assert wait_for(lambda: fired == ["new"]), fired
        assert ("UnregisterHotKey", user32.loop_thread) in user32.calls
    finally:
        hotkeys.close()


def test_close_posts_wm_quit_and_unregisters_everything():
    user32 = FakeUser32()
    hotkeys = make(user32)
    hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: None, "<cmd>+<alt>+<shift>+x": lambda: None})
    assert len(user32.registered) == 2
    thread = hotkeys._thread
    hotkeys.close()
    assert not thread.is_alive()
    assert user32.registered == {}
    hotkeys.close()  # twice is harmless
    with pytest.raises(RuntimeError):
        hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: None})


def test_a_failing_action_does_not_end_the_message_loop():
    user32 = FakeUser32()
    hotkeys = make(user32)
    try:
        fired: list[str] = []

        def broken() -> None:
            raise RuntimeError("boom")

        hotkeys.bind({"<ctrl>+<f9>": broken, "<ctrl>+<f10>": lambda: fired.append("ok")})
        user32.press(MOD_CONTROL, 0x78)
        user32.press(MOD_CONTROL, 0x79)
        assert wait_for(lambda: fired == ["ok"]), fired
        assert hotkeys._thread.is_alive()
    finally:
        hotkeys.close()


def test_the_wake_up_message_is_wm_app_and_unknown_messages_are_ignored():
    user32 = FakeUser32()
    hotkeys = make(user32)
    try:
        user32.queue.put((0x0113, 0, 0))  # WM_TIMER: not ours
        user32.queue.put((WM_HOTKEY, 99, 0))  # an id we never registered
        assert hotkeys.bind({"<ctrl>+<f9>": lambda: None}) == []
        assert WM_APP == 0x8000 and WM_HOTKEY == 0x0312 and WM_QUIT == 0x0012
    finally:
        hotkeys.close()


def test_without_windows_the_backend_says_so() -> None:
    if sys.platform == "win32":
        pytest.skip("this is Windows")
    with pytest.raises(OSError, match="need Windows"):
        Win32Hotkeys()


def test_the_daemon_uses_register_hotkey_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.desktop.hotkeys import Hotkeys

    user32 = FakeUser32(held={(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x4F)})
    monkeypatch.setattr(grab_win32, "_load_windows",
                        lambda: (user32, FakeKernel32(), lambda: user32.error))  # fmt: skip
    monkeypatch.setattr(sys, "platform", "win32")
    hotkeys = Hotkeys()
    try:
        fired: list[str] = []
        taken = hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: fired.append("t"),
                              "<cmd>+<alt>+<shift>+o": lambda: fired.append("o")})  # fmt: skip
        assert [(t.chord, t.reason) for t in taken] == [
            ("<cmd>+<alt>+<shift>+o", "another program holds it")]  # fmt: skip
        assert list(hotkeys.bound) == ["<cmd>+<alt>+<shift>+t"]
        user32.press(MOD_WIN | MOD_ALT | MOD_SHIFT, 0x54)
        assert wait_for(lambda: fired == ["t"]), fired
    finally:
        hotkeys.unbind()
    assert user32.registered == {}
