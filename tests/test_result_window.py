"""The result window, for real: the overlay's own process under Xvfb, driven as the
daemon drives it, read back with xdotool, and answered with real key presses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from xdesktop import desktop, missing_tools, wait_for

from daemon.sources.result_window import numbered_items

pytestmark = [pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}"),
              pytest.mark.model]  # fmt: skip


def test_numbered_items() -> None:
    text = "Here are three:\n1. a fox in snow\n2) a cat,\n   sleeping\n3、 an owl\n"
    assert numbered_items(text) == ["a fox in snow", "a cat, sleeping", "an owl"]
    assert numbered_items("1. only one") == []
    assert numbered_items("2. b\n1. a") == []
    assert numbered_items("A cat sits on a mat.") == []


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[tuple[Any, Any, list]]:
    with desktop() as desk:
        monkeypatch.setenv("DISPLAY", desk.env["DISPLAY"])
        from daemon.sources.overlay_host import RemoteSelector

        selector = RemoteSelector()
        selector.set_log(tmp_path / "overlay.log")
        events: list[dict[str, Any]] = []
        arrived = threading.Condition()

        def on_event(message: dict[str, Any]) -> None:
            with arrived:
                events.append(message)
                arrived.notify_all()

        selector.on_event = on_event
        selector.start()
        try:
            yield desk, selector, events
        finally:
            selector.stop()


def shown(desk: Any) -> list[str]:
    found = desk.run("xdotool", "search", "--onlyvisible", "--class", "YomitoriResult")
    return found.stdout.split()


def test_it_streams_lists_variations_and_copies_one_by_its_number(host: Any) -> None:
    desk, selector, events = host
    selector.window({"do": "open", "tag": "job-1", "title": "Prompt variations",
                     "source": "a fox", "status": "Working…"})  # fmt: skip
    assert wait_for(lambda: shown(desk), 15), "no window"
    (window,) = shown(desk)
    title = desk.run("xdotool", "getwindowname", window).stdout.strip()
    assert title == "yomitori — Prompt variations"
    for piece in ("1. a red fox in snow\n", "2. a fox at dusk\n", "3. a fox, ink"):
        selector.window({"do": "text", "tag": "job-1", "text": piece})
    selector.window({"do": "done", "tag": "job-1",
                     "text": "1. a red fox in snow\n2. a fox at dusk\n3. a fox, ink"})  # fmt: skip
    desk.run("xdotool", "windowfocus", "--sync", window)
    desk.key("2")
    assert wait_for(lambda: events, 10), "no event from the window"
    assert events[-1] == {"ev": "window", "tag": "job-1", "action": "copy",
                          "text": "a fox at dusk"}  # fmt: skip
    desk.key("ctrl+c")  # the whole result
    assert wait_for(lambda: len(events) == 2, 10)
    assert events[-1]["text"].startswith("1. a red fox")
    desk.key("Escape")
    assert wait_for(lambda: not shown(desk), 10), "Esc did not close it"


def test_enter_pastes_after_closing_and_ctrl_r_retries(host: Any) -> None:
    desk, selector, events = host
    selector.window({"do": "open", "tag": "job-2", "title": "Translate to a prompt"})
    assert wait_for(lambda: shown(desk), 15)
    (window,) = shown(desk)
    desk.run("xdotool", "windowfocus", "--sync", window)
    desk.key("Return")  # nothing to paste while it works: nothing happens
    selector.window({"do": "done", "tag": "job-2", "text": "A cat sits."})
    desk.key("ctrl+r")
    assert wait_for(lambda: events, 10)
    assert events[-1] == {"ev": "window", "tag": "job-2", "action": "retry", "text": "A cat sits."}
    selector.window({"do": "text", "tag": "job-2", "text": "A cat"})
    selector.window({"do": "done", "tag": "job-2", "text": "A cat naps."})
    desk.run("xdotool", "windowfocus", "--sync", window)
    desk.key("Return")
    assert wait_for(lambda: len(events) == 2, 10)
    assert events[-1] == {"ev": "window", "tag": "job-2", "action": "paste", "text": "A cat naps."}
    assert wait_for(lambda: not shown(desk), 10), "the window must go before the paste"


def test_one_window_per_job_and_each_says_its_failure(host: Any) -> None:
    desk, selector, _events = host
    selector.window({"do": "open", "tag": "job-3", "title": "Translate to a prompt"})
    selector.window({"do": "open", "tag": "job-4", "title": "Caption as a prompt"})
    assert wait_for(lambda: len(shown(desk)) == 2, 15), "one window per job"
    selector.window({"do": "close", "tag": "job-4"})
    assert wait_for(lambda: len(shown(desk)) == 1, 10)
    selector.window({"do": "failed", "tag": "job-3", "message": "The server went away."})
    selector.window({"do": "text", "tag": "job-9", "text": "for a window never opened"})
    assert len(shown(desk)) == 1


def test_no_window_over_a_fullscreen_program(host: Any) -> None:
    desk, selector, events = host
    from Xlib import Xatom, display

    screen = display.Display(desk.env["DISPLAY"])
    root = screen.screen().root
    game = root.create_window(0, 0, 320, 200, 0, screen.screen().root_depth)
    game.map()
    state, full = (
        screen.intern_atom("_NET_WM_STATE"),
        screen.intern_atom("_NET_WM_STATE_FULLSCREEN"),
    )
    game.change_property(state, Xatom.ATOM, 32, [full])
    root.change_property(screen.intern_atom("_NET_ACTIVE_WINDOW"), Xatom.WINDOW, 32, [game.id])
    screen.sync()
    try:
        selector.window({"do": "open", "tag": "job-4", "title": "Translate to a prompt"})
        assert wait_for(lambda: events, 10), "the daemon was not told"
        assert events[-1] == {"ev": "window", "tag": "job-4", "action": "refused"}
        assert not shown(desk)
    finally:
        root.delete_property(screen.intern_atom("_NET_ACTIVE_WINDOW"))
        game.destroy()
        screen.sync()
        screen.close()
