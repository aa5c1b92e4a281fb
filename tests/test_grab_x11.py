"""Hotkeys belong to yomitori on X11: grabbed, so the chord never reaches the focused
program; a chord another program holds is reported; Num Lock and Caps Lock do not
disable them.  On a real private X desktop (Xvfb), keys pressed with xdotool."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from xdesktop import desktop, missing_tools, wait_for

pytestmark = pytest.mark.skipif(
    bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (setup.sh --test)"
)

# A Tk text box that logs every key it receives, and its text, to a file.
TK_TARGET = textwrap.dedent("""
    import json, sys, tkinter as tk
    root = tk.Tk(); root.title("yomitori-grab-target"); root.geometry("500x200+0+0")
    text = tk.Text(root); text.pack(fill="both", expand=True)
    text.insert("1.0", "abcd")
    keys = []
    def dump():
        with open(sys.argv[1], "w") as out:
            json.dump({"keys": keys, "text": text.get("1.0", "end-1c")}, out)
    def on_key(event):
        keys.append(event.keysym); root.after(50, dump)
    text.bind("<KeyPress>", on_key, add="+")
    def ready():
        root.focus_force(); text.focus_set(); text.mark_set("insert", "1.2"); dump()
    root.after(200, ready); root.mainloop()
""")

# Another program holding a chord first (a plain python-xlib client).
HOLDER = textwrap.dedent("""
    import sys, time
    from Xlib import X, XK, display
    d = display.Display(); root = d.screen().root
    code = d.keysym_to_keycode(XK.string_to_keysym("y"))
    mods = X.Mod1Mask | X.ShiftMask | X.Mod4Mask  # Alt+Shift+Super
    root.grab_key(code, mods, True, X.GrabModeAsync, X.GrabModeAsync)
    d.sync(); print("held", flush=True); time.sleep(60)
""")


@pytest.fixture(scope="module")
def desk():
    with desktop() as session:
        yield session


@pytest.fixture
def grabber(desk, monkeypatch):
    monkeypatch.setenv("DISPLAY", desk.env["DISPLAY"])
    from daemon.desktop.grab_x11 import X11Hotkeys

    hotkeys = X11Hotkeys(desk.env["DISPLAY"])
    yield hotkeys
    hotkeys.close()


def test_the_chord_reaches_yomitori_and_not_the_focused_window(desk, grabber, tmp_path):
    fired: list[str] = []
    assert grabber.bind({"<alt>+<shift>+<cmd>+t": lambda: fired.append("t"),
                         "<alt>+<shift>+<cmd>+v": lambda: fired.append("v")}) == []  # fmt: skip
    log = tmp_path / "keys.json"
    window = subprocess.Popen([sys.executable, "-c", TK_TARGET, str(log)], env=desk.full_env())
    try:
        assert wait_for(log.exists, 15)
        desk.run("xdotool", "search", "--sync", "--name", "yomitori-grab-target",
                 "windowactivate", "--sync", "windowfocus", "--sync")  # fmt: skip
        desk.key("super+alt+shift+t", "super+alt+shift+v", "x")
        state = wait_for(lambda: "x" in json.loads(log.read_text())["keys"] and
                         json.loads(log.read_text()), 10)  # fmt: skip
        assert wait_for(lambda: fired == ["t", "v"], 5), fired
        # Tk saw the plain key, but neither chord: no transposed letters, no paste.
        assert "t" not in state["keys"] and "v" not in state["keys"], state
        assert state["text"] == "abxcd"
    finally:
        window.terminate()


def test_a_chord_another_program_holds_is_reported(desk, grabber):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=desk.full_env(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        fired: list[str] = []
        taken = grabber.bind({"<alt>+<shift>+<cmd>+y": lambda: fired.append("y"),
                              "<alt>+<shift>+<cmd>+u": lambda: fired.append("u")})  # fmt: skip
        assert [(t.chord, t.reason) for t in taken] == [("<alt>+<shift>+<cmd>+y",
                                                         "another program holds it")]  # fmt: skip
        desk.key("super+alt+shift+u", "super+alt+shift+y")
        assert wait_for(lambda: fired == ["u"], 5), fired
        time.sleep(0.3)
        assert fired == ["u"]
    finally:
        holder.kill()
        holder.wait()
    # Once the other program lets go, a re-bind (yomitori reload) takes it.
    assert grabber.bind({"<alt>+<shift>+<cmd>+y": lambda: None}) == []


def test_num_lock_and_caps_lock_do_not_disable_hotkeys(desk, grabber):
    fired: list[str] = []
    grabber.bind({"<alt>+<shift>+<cmd>+k": lambda: fired.append("k")})
    for lock in ("Num_Lock", "Caps_Lock"):
        desk.key(lock)
        desk.key("super+alt+shift+k")
        desk.key(lock)
    desk.key("super+alt+shift+k")
    assert wait_for(lambda: len(fired) == 3, 5), fired


def test_rebinding_replaces_the_set_and_frees_the_old_chords(desk, grabber):
    fired: list[str] = []
    grabber.bind({"<alt>+<shift>+<cmd>+j": lambda: fired.append("old")})
    grabber.bind({"<alt>+<shift>+<cmd>+h": lambda: fired.append("new")})
    desk.key("super+alt+shift+j", "super+alt+shift+h")
    assert wait_for(lambda: fired == ["new"], 5), fired
    from daemon.desktop.grab_x11 import X11Hotkeys

    other = X11Hotkeys(desk.env["DISPLAY"])
    try:
        assert other.bind({"<alt>+<shift>+<cmd>+j": lambda: None}) == []  # free again
    finally:
        other.close()


def test_unknown_keys_are_reported_not_fatal(grabber):
    taken = grabber.bind({"<ctrl>+<alt>+<99999999>": lambda: None, "<f9>": lambda: None})
    assert [t.chord for t in taken] == ["<ctrl>+<alt>+<99999999>"]
    assert "no key" in taken[0].reason


def test_the_daemon_says_which_hotkey_is_taken_and_how_to_change_it(desk):
    from test_daemon import Daemon

    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=desk.full_env(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    daemon = Daemon(desk)
    try:
        assert holder.stdout.readline().strip() == "held"
        daemon.hotkeys.write_text(daemon.hotkeys.read_text(encoding="utf-8") +
                                  '\n[[binding]]\nhotkey = "<alt>+<shift>+<cmd>+y"\n'
                                  'action = "translate_en"\n', encoding="utf-8")  # fmt: skip
        desk.clear_notifications()
        daemon.start()
        assert daemon.status()["hotkeys_taken"] == [
            "<alt>+<shift>+<cmd>+y (translate_en): another program holds it"]  # fmt: skip
        notes = wait_for(lambda: [n for n in desk.notifications()
                                  if n["summary"] == "Hotkeys not available"], 10)  # fmt: skip
        assert notes and "<alt>+<shift>+<cmd>+y (translate_en)" in notes[0]["body"]
        assert "hotkeys.toml" in notes[0]["body"]
        # The other bindings work, grabbed.
        desk.set_clipboard("山の上の城")
        desk.key("super+alt+shift+t")
        assert wait_for(lambda: desk.clipboard() not in ("", "山の上の城"), 60), daemon.log()
    finally:
        holder.kill()
        holder.wait()
        daemon.stop()
