"""Hotkeys belong to yomitori on macOS: pynput's event tap (darwin_intercept) deletes the
events of a bound chord, and only those.  No Mac here: a fake Quartz gives the events
their key code, flags and autorepeat, a fake pynput Listener hands them to the
intercept as macOS would, and the real matching decides."""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from daemon.desktop.grab_mac import ANSI_KEYCODES, ChordUnknown, MacHotkeys, mac_chord

KEY_DOWN, KEY_UP, FLAGS_CHANGED = 10, 11, 12
SHIFT, CONTROL, OPTION, COMMAND = 1 << 17, 1 << 18, 1 << 19, 1 << 20
CAPS_LOCK, NUMERIC_PAD, FN = 1 << 16, 1 << 21, 1 << 23
DEVICE_BITS = 0x0000_0108  # left Command and left Option, as real events carry them
TAP_DISABLED_BY_TIMEOUT = 0xFFFFFFFE

quartz = types.SimpleNamespace(
    kCGEventKeyDown=KEY_DOWN, kCGEventKeyUp=KEY_UP, kCGEventFlagsChanged=FLAGS_CHANGED,
    kCGKeyboardEventAutorepeat=8, kCGKeyboardEventKeycode=9,
    kCGEventFlagMaskShift=SHIFT, kCGEventFlagMaskControl=CONTROL,
    kCGEventFlagMaskAlternate=OPTION, kCGEventFlagMaskCommand=COMMAND,
    CGEventGetIntegerValueField=lambda event, field: event[field],
    CGEventGetFlags=lambda event: event["flags"],
)  # fmt: skip


def event(keycode: int, flags: int = 0, autorepeat: bool = False) -> dict[Any, int]:
    return {9: keycode, 8: int(autorepeat), "flags": flags}


class FakeListener:
    """pynput's keyboard Listener: keeps the intercept; macOS trusts it or not."""

    made: ClassVar[list[FakeListener]] = []
    trusted: ClassVar[bool] = True

    def __init__(self, darwin_intercept: Any = None, **_kwargs: Any) -> None:
        self.intercept = darwin_intercept
        self.IS_TRUSTED = FakeListener.trusted
        self.daemon = False
        self.started = self.stopped = False
        FakeListener.made.append(self)

    def start(self) -> None:
        self.started = True

    def wait(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True

    def feed(self, event_type: int, ev: dict[Any, int]) -> Any:
        """What pynput's tap callback returns to macOS for this event."""
        return self.intercept(event_type, ev)


keyboard = types.SimpleNamespace(Listener=FakeListener)
HYPER = COMMAND | OPTION | SHIFT
KEY_T, KEY_O = ANSI_KEYCODES["t"], ANSI_KEYCODES["o"]


@pytest.fixture
def mac(monkeypatch: pytest.MonkeyPatch) -> MacHotkeys:
    monkeypatch.setattr(sys, "platform", "darwin")
    FakeListener.trusted = True
    FakeListener.made.clear()
    return MacHotkeys(keyboard, quartz, layout=dict)


@pytest.mark.parametrize(
    ("chord", "layout", "keycode", "flags"),
    [
        ("<cmd>+<alt>+<shift>+t", {}, 0x11, COMMAND | OPTION | SHIFT),
        ("<ctrl>+<alt>+o", {}, 0x1F, CONTROL | OPTION),
        ("<cmd>+<shift>+5", {}, 0x17, COMMAND | SHIFT),
        ("<alt_gr>+e", {}, 0x0E, OPTION),  # AltGr is Option on a Mac
        ("<ctrl>+<f5>", {}, 0x60, CONTROL),
        ("<cmd>+<f12>", {}, 0x6F, COMMAND),
        ("<ctrl>+<space>", {}, 0x31, CONTROL),
        ("<cmd>+<esc>", {}, 0x35, COMMAND),
        ("<cmd>+<enter>", {}, 0x24, COMMAND),
        ("<cmd>+<left>", {}, 0x7B, COMMAND),
        ("<cmd>+<72>", {}, 72, COMMAND),
        ("<cmd>+/", {}, 0x2C, COMMAND),
        ("<cmd>+z", {"z": 0x10}, 0x10, COMMAND),  # German: Z where US has Y
        ("<cmd>+t", {"е": 0x11}, 0x11, COMMAND),  # Russian: no "t", the ANSI key
    ],
)
def test_chords_translate_to_key_codes_and_flags(chord, layout, keycode, flags):
    assert mac_chord(chord, quartz, layout) == (keycode, flags)


@pytest.mark.parametrize(
    ("chord", "words"),
    [
        ("<print_screen>", "no <print_screen> key"),
        ("<ctrl>+<media_next>", "no <media_next> key"),
        ("<cmd>+é", "this keyboard layout has no key 'é'"),
        ("<cmd>+<200>", "not a Mac virtual key code"),
    ],
)
def test_keys_a_mac_does_not_have_say_so(chord, words):
    with pytest.raises(ChordUnknown, match=words):
        mac_chord(chord, quartz, {})


def test_only_the_bound_chord_is_swallowed(mac: MacHotkeys) -> None:
    tap = FakeListener.made[0]
    assert tap.started and tap.intercept is not None
    fired: list[str] = []
    assert mac.bind({"<cmd>+<alt>+<shift>+t": lambda: fired.append("t"),
                     "<cmd>+<alt>+<shift>+o": lambda: fired.append("o")}) == []  # fmt: skip
    # Caps Lock and the device bits do not change the chord.
    press = event(KEY_T, HYPER | CAPS_LOCK | DEVICE_BITS)
    assert tap.feed(KEY_DOWN, press) is None
    assert tap.feed(KEY_DOWN, event(KEY_T, HYPER, autorepeat=True)) is None  # held: no repeat
    assert tap.feed(KEY_UP, event(KEY_T, HYPER)) is None
    assert fired == ["t"]
    for other in (event(KEY_T), event(KEY_T, SHIFT), event(KEY_T, COMMAND | OPTION),
                  event(KEY_T, HYPER | CONTROL), event(ANSI_KEYCODES["y"], HYPER)):  # fmt: skip
        assert tap.feed(KEY_DOWN, other) is other
        assert tap.feed(KEY_UP, other) is other
    flags = event(0x37, COMMAND)
    assert tap.feed(FLAGS_CHANGED, flags) is flags
    disabled = event(0)
    assert tap.feed(TAP_DISABLED_BY_TIMEOUT, disabled) is disabled
    assert tap.feed(KEY_DOWN, event(KEY_O, HYPER)) is None
    assert fired == ["t", "o"]


def test_the_release_goes_too_when_the_modifiers_went_first(mac: MacHotkeys) -> None:
    tap = FakeListener.made[0]
    mac.bind({"<cmd>+<alt>+<shift>+t": lambda: None})
    assert tap.feed(KEY_DOWN, event(KEY_T, HYPER)) is None
    assert tap.feed(KEY_DOWN, event(KEY_T, 0, autorepeat=True)) is None  # still the same press
    assert tap.feed(KEY_UP, event(KEY_T, 0)) is None
    again = event(KEY_T, 0)
    assert tap.feed(KEY_DOWN, again) is again  # a new, plain press is the user's


def test_rebinding_replaces_the_set(mac: MacHotkeys) -> None:
    tap = FakeListener.made[0]
    fired: list[str] = []
    mac.bind({"<cmd>+<alt>+<shift>+t": lambda: fired.append("old")})
    taken = mac.bind({"<cmd>+<alt>+<shift>+o": lambda: fired.append("new"),
                      "<print_screen>": lambda: fired.append("never")})  # fmt: skip
    reason = "a Mac keyboard has no <print_screen> key that yomitori can take"
    assert [(t.chord, t.reason) for t in taken] == [("<print_screen>", reason)]
    old = event(KEY_T, HYPER)
    assert tap.feed(KEY_DOWN, old) is old
    assert tap.feed(KEY_DOWN, event(KEY_O, HYPER)) is None
    assert fired == ["new"]


def test_a_failing_action_lets_the_event_through_and_keeps_the_tap(mac: MacHotkeys) -> None:
    tap = FakeListener.made[0]

    def broken() -> None:
        raise RuntimeError("boom")

    mac.bind({"<cmd>+<alt>+<shift>+t": broken})
    press = event(KEY_T, HYPER)
    assert tap.feed(KEY_DOWN, press) is press  # never an exception into pynput's tap


@pytest.fixture
def on_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's own imports find the fake pynput and Quartz."""
    monkeypatch.setitem(sys.modules, "Quartz", quartz)
    monkeypatch.setitem(sys.modules, "pynput", types.SimpleNamespace(keyboard=keyboard))
    monkeypatch.setattr(sys, "platform", "darwin")
    FakeListener.trusted = True
    FakeListener.made.clear()


def test_the_daemon_intercepts_on_macos(on_a_mac: None) -> None:
    from daemon.desktop.hotkeys import Hotkeys

    hotkeys = Hotkeys()
    fired: list[str] = []
    assert hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: fired.append("t")}) == []
    tap = FakeListener.made[0]
    assert tap.feed(KEY_DOWN, event(KEY_T, HYPER)) is None
    assert fired == ["t"]
    hotkeys.unbind()
    assert tap.stopped


def test_without_accessibility_the_daemon_says_what_to_allow(on_a_mac: None) -> None:
    from daemon.desktop.hotkeys import Hotkeys, HotkeysUnavailable

    FakeListener.trusted = False
    hotkeys = Hotkeys()
    with pytest.raises(HotkeysUnavailable, match="Input Monitoring"):
        hotkeys.bind({"<cmd>+<alt>+<shift>+t": lambda: None})
    assert FakeListener.made[0].stopped and hotkeys.bound == {}
