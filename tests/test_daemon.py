"""The real daemon on a real (virtual) X desktop: hotkeys pressed with xdotool,
the X clipboard, a Tk window to paste into, dunst for notifications, and the
tiny real model in the worker."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import HAVE_LLAMA, HAVE_TINY, ROOT
from PIL import Image
from xdesktop import desktop, missing_tools, wait_for

pytestmark = [
    pytest.mark.skipif(
        not (HAVE_LLAMA and HAVE_TINY), reason="needs llama-cpp-python and the tiny model"
    ),
    pytest.mark.skipif(
        bool(missing_tools()),
        reason=f"needs {', '.join(missing_tools())} (installer/setup.sh --test installs them)",
    ),
    pytest.mark.skipif(sys.platform != "linux", reason="the desktop tests drive an X server"),
]

HOTKEYS = """
[settings]
keep_alive = "{keep_alive}"
queue_size = 3

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+t"
action = "translate_en"
output = ["clipboard", "notify"]
vars = {{ max_tokens = "10", temperature = "0" }}

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+p"
action = "translate_en"
output = ["paste"]
vars = {{ max_tokens = "8", temperature = "0" }}

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+s"
action = "translate_en"
source = "selection"
output = ["clipboard"]
vars = {{ max_tokens = "6", temperature = "0" }}

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+o"
action = "ocr"
source = "region"
output = ["clipboard"]

[[binding]]
hotkey = "<alt>+<shift>+<cmd>+l"
action = "variations"
output = ["clipboard", "notify"]
vars = {{ max_tokens = "1500", count = "50" }}
"""


@pytest.fixture(scope="module")
def desk():
    with desktop() as session:
        yield session


class Daemon:
    def __init__(self, desk, keep_alive: str = "30m") -> None:
        self.desk = desk
        base = Path(tempfile.mkdtemp(prefix="yd-"))  # short: a socket path has a length limit
        self.dirs = {name: base / name for name in ("config", "data", "logs", "run", "cache")}
        for path in self.dirs.values():
            path.mkdir()
        self.env = desk.full_env(
            {
                "YOMITORI_CONFIG_DIR": str(self.dirs["config"]),
                "YOMITORI_DATA_DIR": str(self.dirs["data"]),
                "YOMITORI_LOG_DIR": str(self.dirs["logs"]),
                "YOMITORI_RUNTIME_DIR": str(self.dirs["run"]),
                "YOMITORI_CACHE_DIR": os.environ["YOMITORI_CACHE_DIR"],
            }
        )
        (self.dirs["config"] / "models.toml").write_text('default = "tiny"\n', encoding="utf-8")
        self.hotkeys = self.dirs["config"] / "hotkeys.toml"
        self.hotkeys.write_text(HOTKEYS.format(keep_alive=keep_alive), encoding="utf-8")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--no-tray"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert wait_for(lambda: self.status().get("loaded"), 60), self.log()
        return self

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict:
        done = self.cli("status", "--json", timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def log(self) -> str:
        path = self.dirs["logs"] / "yomitori.log"
        return path.read_text(encoding="utf-8") if path.exists() else "(no log)"

    def history(self) -> list[dict]:
        return json.loads(self.cli("history", "--json").stdout or "[]")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.cli("quit", timeout=30)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(desk):
    running = Daemon(desk).start()
    yield running
    running.stop()


def test_hotkey_puts_the_result_on_the_clipboard_and_notifies(desk, daemon):
    desk.set_clipboard("夕焼けの海辺の少女")
    desk.key("super+alt+shift+t")
    changed = wait_for(lambda: desk.clipboard() not in ("", "夕焼けの海辺の少女"), 60)
    assert changed, daemon.log()
    history = wait_for(daemon.history, 10)
    assert history and history[0]["action"] == "translate_en"
    assert history[0]["input_excerpt"] == "夕焼けの海辺の少女"
    assert desk.clipboard() == history[0]["output"]
    notes = wait_for(
        lambda: [
            n for n in desk.notifications() if n["summary"] == "Translate to a prompt — copied"
        ],
        10,
    )
    assert notes and notes[0]["body"].strip()


TK_TARGET = textwrap.dedent("""
    import sys, tkinter as tk
    root = tk.Tk(); root.title("yomitori-paste-target"); root.geometry("600x200+0+0")
    text = tk.Text(root); text.pack(fill="both", expand=True)
    def dump():
        with open(sys.argv[1], "w", encoding="utf-8") as out:
            out.write(text.get("1.0", "end-1c"))
        root.after(100, dump)
    def grab():
        root.focus_force(); text.focus_set()
    root.after(200, grab); root.after(100, dump); root.mainloop()
""")


def test_paste_mode_types_into_the_focused_window_and_restores_the_clipboard(
    desk, daemon, tmp_path
):
    out = tmp_path / "pasted.txt"
    window = subprocess.Popen([sys.executable, "-c", TK_TARGET, str(out)], env=desk.full_env())
    try:
        assert wait_for(out.exists, 15)
        desk.run(
            "xdotool",
            "search",
            "--sync",
            "--name",
            "yomitori-paste-target",
            "windowactivate",
            "--sync",
            "windowfocus",
            "--sync",
        )
        desk.run("xdotool", "mousemove", "300", "100", "click", "1")
        desk.set_clipboard("the user's own clipboard")
        desk.key("super+alt+shift+p")
        pasted = wait_for(lambda: out.read_text(encoding="utf-8").strip(), 60)
        assert pasted, daemon.log()
        history = wait_for(daemon.history, 10)
        assert history[0]["output"].split()[0] in pasted
        assert wait_for(lambda: desk.clipboard() == "the user's own clipboard", 5)
    finally:
        window.terminate()


TK_SELECTION = textwrap.dedent("""
    import sys, tkinter as tk
    root = tk.Tk(); root.title("yomitori-selection-source"); root.geometry("600x200+0+0")
    text = tk.Text(root); text.pack(fill="both", expand=True)
    text.insert("1.0", sys.argv[1])
    def grab():
        root.focus_force(); text.focus_set(); text.tag_add("sel", "1.0", "end-1c")
        open(sys.argv[2], "w").close()
    root.after(200, grab); root.mainloop()
""")


def test_selection_source_copies_the_selected_text(desk, daemon, tmp_path):
    ready = tmp_path / "ready"
    window = subprocess.Popen(
        [sys.executable, "-c", TK_SELECTION, "森の中の小さな家", str(ready)], env=desk.full_env()
    )
    try:
        assert wait_for(ready.exists, 15)
        desk.run("xdotool", "search", "--sync", "--name", "yomitori-selection-source",
                 "windowactivate", "--sync", "windowfocus", "--sync")  # fmt: skip
        desk.set_clipboard("unrelated clipboard text")
        desk.key("super+alt+shift+s")
        history = wait_for(lambda: [h for h in daemon.history() if h["source"] == "selection"], 60)
        assert history, daemon.log()
        assert history[0]["input_excerpt"] == "森の中の小さな家"
        assert wait_for(lambda: desk.clipboard() == history[0]["output"], 10)
    finally:
        window.terminate()


def test_trigger_status_single_instance_and_socket_mode(daemon):
    done = daemon.cli(
        "trigger",
        "translate_en",
        "--text",
        "桜の木",
        "--set",
        "max_tokens=6",
        "--output",
        "notify",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["text"].strip() and reply["model"] == "tiny"
    second = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--no-tray"],
        env=daemon.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0
    assert "already running" in second.stdout
    assert daemon.status()["state"] in ("idle", "busy", "loading")
    sock = daemon.dirs["run"] / "daemon.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.dirs["run"].stat().st_mode) == 0o700


def test_status_without_a_daemon_exits_non_zero(desk):
    idle = Daemon(desk)
    done = idle.cli("status")
    assert done.returncode == 3
    assert "not running" in done.stderr


def test_malformed_and_oversized_requests_are_refused(daemon):
    import socket

    path = str(daemon.dirs["run"] / "daemon.sock")
    for payload in (b"this is not json\n", b'{"no": "cmd"}\n', b"x" * (200 * 1024)):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(path)
            try:
                conn.sendall(payload)
            except OSError:
                continue  # the daemon may close an oversized request early
            reply = json.loads(conn.recv(65536).split(b"\n")[0])
            assert reply["ok"] is False and reply["error"]
    status = daemon.status()
    assert status["state"] != "error" and status["last_error"] is None
    assert daemon.proc.poll() is None


def test_a_hundred_presses_in_a_second(desk, daemon):
    desk.set_clipboard("a cat")
    started = time.monotonic()
    desk.key("super+alt+shift+t", repeat=100, delay_ms=5)
    assert time.monotonic() - started < 10
    peak = max(daemon.status()["queue"] for _ in range(5))
    assert peak <= 3
    assert wait_for(lambda: daemon.status().get("queue") == 0, 120), daemon.log()
    assert daemon.proc.poll() is None
    done = daemon.cli("trigger", "translate_en", "--text", "dog", "--set", "max_tokens=4")
    assert done.returncode == 0, done.stderr
    busy = [n for n in desk.notifications() if n["summary"] == "yomitori is busy"]
    assert 1 <= len(busy) <= 5, "a burst gives one busy note, not one per press"


def worker_pid(status: dict) -> int | None:
    """The in-process worker's pid from ``status`` (one entry per engine in use)."""
    pids = [e.get("pid") for e in status.get("engines", ()) if e.get("backend") == "llama-cpp"]
    return pids[0] if pids else None


def test_worker_killed_mid_action_notifies_and_recovers(desk, daemon):
    desk.clear_notifications()
    desk.set_clipboard("a very long story about the sea")
    desk.key("super+alt+shift+l")
    assert wait_for(lambda: daemon.status().get("state") == "busy", 30)
    pid = worker_pid(daemon.status())
    worker = psutil.Process(pid)
    start = sum(worker.cpu_times()[:2])
    # Killed while it really generates (it has spent CPU on this request), not before.
    assert wait_for(lambda: sum(worker.cpu_times()[:2]) > start + 0.2, 30)
    os.kill(pid, signal.SIGKILL)
    failed = wait_for(
        lambda: [n for n in desk.notifications() if n["summary"] == "Prompt variations failed"], 30
    )
    assert failed and "stopped unexpectedly" in failed[0]["body"]
    assert "Traceback" not in failed[0]["body"]
    done = daemon.cli(
        "trigger", "translate_en", "--text", "river", "--set", "max_tokens=4", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert worker_pid(daemon.status()) not in (None, pid)


def test_broken_hotkeys_on_reload_keeps_the_bindings(desk, daemon):
    good = daemon.hotkeys.read_text(encoding="utf-8")
    daemon.hotkeys.write_text(
        good + '\n[[binding]]\nhotkey = "<ctrl>+<bogus>+x"\naction = "translate_en"\n',
        encoding="utf-8",
    )
    done = daemon.cli("reload")
    assert done.returncode == 1
    bad_line = len((good + "\n").splitlines()) + 2  # the hotkey's own line
    assert f"line {bad_line}:" in done.stderr and "bogus" in done.stderr
    notes = wait_for(
        lambda: [n for n in desk.notifications() if n["summary"] == "Config not reloaded"], 10
    )
    assert notes and f"line {bad_line}" in notes[0]["body"]
    desk.set_clipboard("山の上の城")
    desk.key("super+alt+shift+t")
    assert wait_for(lambda: desk.clipboard() not in ("", "山の上の城"), 60), daemon.log()


def test_keep_alive_unloads_when_idle_and_reloads_on_demand(desk):
    daemon = Daemon(desk, keep_alive="3s").start()
    try:
        pid = worker_pid(daemon.status())
        assert wait_for(lambda: not daemon.status().get("loaded"), 20), daemon.log()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        done = daemon.cli(
            "trigger", "translate_en", "--text", "moon", "--set", "max_tokens=4", "--json"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["timings"]["load_s"] > 0
    finally:
        daemon.stop()


def test_bench_daemon_prints_its_figures(desk):
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "bench", "--daemon", "--runs", "1",
         "--idle-seconds", "1", "--json"],
        env=desk.full_env(), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["hotkey_to_clipboard_s"] > 0 and figures["do_warm_s"] > 0
    assert 0 < figures["idle_rss_mb"] < figures["idle_rss_total_mb"] < 2000
    assert figures["idle_cpu_percent"] >= 0


TK_PICTURE = textwrap.dedent("""
    import sys, tkinter as tk
    root = tk.Tk(); root.overrideredirect(True); root.geometry("+100+120")
    photo = tk.PhotoImage(file=sys.argv[1])
    tk.Label(root, image=photo, borderwidth=0, highlightthickness=0).pack()
    root.after(300, lambda: open(sys.argv[2], "w").close())
    root.mainloop()
""")


def test_region_hotkey_reads_the_text_under_the_dragged_box(desk, daemon, tmp_path):
    from ocr_samples import cer, saved_sample

    picture = tmp_path / "text.png"
    sample = saved_sample("ja_light_20", picture)
    image = Image.open(picture)
    ready = tmp_path / "ready"
    window = subprocess.Popen([sys.executable, "-c", TK_PICTURE, str(picture), str(ready)],
                              env=desk.full_env())  # fmt: skip
    try:
        assert wait_for(ready.exists, 15)
        desk.set_clipboard("before")
        desk.key("super+alt+shift+o")
        assert wait_for(lambda: _overlay_shown(desk), 15), "the overlay did not open"
        x0, y0 = 100, 120
        desk.run("xdotool", "mousemove", str(x0), str(y0), "mousedown", "1",
                 "mousemove", str(x0 + image.width // 2), str(y0 + image.height // 2),
                 "mousemove", str(x0 + image.width - 1), str(y0 + image.height - 1),
                 "mouseup", "1")  # fmt: skip
        text = wait_for(lambda: desk.clipboard() if desk.clipboard() != "before" else "", 60)
        assert text, daemon.log()
        assert cer(sample.truth, text) <= 0.05, text
        history = wait_for(daemon.history, 10)
        assert history[0]["action"] == "ocr" and history[0]["source"] == "region"
    finally:
        window.terminate()


def test_region_cancelled_with_escape_does_nothing(desk, daemon):
    desk.set_clipboard("untouched")
    desk.clear_notifications()
    desk.key("super+alt+shift+o")
    assert wait_for(lambda: _overlay_shown(desk), 15), "the overlay did not open"
    desk.key("Escape")
    # Esc really ends the selection: the overlay goes, the job ends, nothing is delivered.
    assert wait_for(lambda: not _overlay_shown(desk), 5), "Esc did not close the overlay"
    assert wait_for(lambda: daemon.status().get("state") == "idle", 10), daemon.status()
    assert desk.clipboard() == "untouched"
    assert not [n for n in desk.notifications() if "failed" in n["summary"]]
    assert not [h for h in daemon.history() if h["action"] == "ocr"]


def _overlay_hosts(daemon):
    me = psutil.Process(daemon.proc.pid)
    return [c for c in me.children() if "overlay_host" in " ".join(c.cmdline())]


def test_overlay_runs_apart_and_comes_back_after_a_crash(desk, daemon):
    hosts = wait_for(lambda: _overlay_hosts(daemon), 30)
    assert len(hosts) == 1, "the overlay is warm in its own process"
    assert daemon.status()["regions"] == "overlay"
    hosts[0].kill()
    hosts[0].wait(10)
    desk.set_clipboard("untouched")
    desk.key("super+alt+shift+o")
    # A new overlay process starts and shows the overlay.
    assert wait_for(lambda: _overlay_shown(desk), 30), daemon.log()
    desk.key("Escape")
    new = wait_for(lambda: _overlay_hosts(daemon), 30)
    assert new and new[0].pid != hosts[0].pid
    assert daemon.proc.poll() is None and desk.clipboard() == "untouched"


def _overlay_shown(desk) -> bool:
    found = desk.run("xdotool", "search", "--onlyvisible", "--class", "YomitoriOverlay")
    return bool(found.stdout.strip())


def test_cancel_and_quit_close_an_open_overlay(desk):
    # The overlay holds pointer and keyboard while it waits for a selection: `yomitori
    # cancel` must close it, and quitting (or a logout's SIGTERM) must not wait for it.
    daemon = Daemon(desk).start()
    try:
        desk.clear_notifications()
        desk.key("super+alt+shift+o")
        assert wait_for(lambda: _overlay_shown(desk), 15), daemon.log()
        assert daemon.cli("cancel").returncode == 0
        assert wait_for(lambda: not _overlay_shown(desk), 10)
        desk.key("super+alt+shift+o")
        assert wait_for(lambda: _overlay_shown(desk), 15)
        started = time.monotonic()
        assert daemon.cli("quit").returncode == 0
        daemon.proc.wait(timeout=30)
        assert time.monotonic() - started < 10
        assert not _overlay_shown(desk)
        assert not [n for n in desk.notifications() if "failed" in n["summary"]]
    finally:
        daemon.stop()


def test_on_wayland_regions_come_from_the_desktops_screenshot_portal(desk, tmp_path):
    # region_capture = "portal" is what "auto" picks on a Wayland session: the desktop's
    # own selection UI (here a stand-in portal on the session bus) hands back the PNG.
    from ocr_samples import cer, saved_sample

    picture = tmp_path / "selected.png"
    sample = saved_sample("ja_light_20", picture)
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    portal = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_portal.py"), "ok", str(picture),
         str(pictures)], stdout=subprocess.PIPE, text=True, env=desk.full_env(),
    )  # fmt: skip
    assert portal.stdout is not None and portal.stdout.readline().strip() == "ready"
    daemon = Daemon(desk)
    daemon.hotkeys.write_text(
        daemon.hotkeys.read_text().replace(
            "[settings]\n", '[settings]\nregion_capture = "portal"\n'
        ),
        encoding="utf-8",
    )
    daemon.start()
    try:
        assert not _overlay_hosts(daemon)  # no X11 overlay process is kept for nothing
        assert daemon.status()["regions"] == "portal"
        done = daemon.cli("trigger", "ocr", "--source", "region", "--output", "clipboard")
        assert done.returncode == 0, done.stderr + daemon.log()
        assert cer(sample.truth, done.stdout.strip()) <= 0.05, done.stdout
        assert list(pictures.iterdir()) == []  # the portal's file is gone
        again = daemon.cli("trigger", "ocr", "--source", "last_region")
        assert again.returncode != 0 and "select the region again" in again.stderr
    finally:
        daemon.stop()
        portal.terminate()


def _result_windows(desk) -> list[str]:
    found = desk.run("xdotool", "search", "--onlyvisible", "--class", "YomitoriResult")
    return found.stdout.split()


def test_a_result_window_shows_the_result_and_copies_it_back_through_the_daemon(desk, daemon):
    desk.set_clipboard("untouched")
    done = daemon.cli("trigger", "translate_en", "--text", "夕焼けの海", "--output", "window",
                      "--set", "max_tokens=16", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["text"]
    windows = wait_for(lambda: _result_windows(desk), 15)
    assert windows, daemon.log()
    assert desk.clipboard() == "untouched"  # the window alone was asked for
    desk.run("xdotool", "windowfocus", "--sync", windows[0])
    desk.key("ctrl+c")  # the window's Copy: the daemon writes the clipboard
    assert wait_for(lambda: desk.clipboard() == result, 10), daemon.log()
    desk.key("Escape")
    assert wait_for(lambda: not _result_windows(desk), 10)


def test_trigger_and_do_agree_on_json_fields_and_exit_codes(daemon):
    """The same request through the daemon and without it: the same JSON keys, and the
    same exit code for each kind of failure (2: the user's mistake)."""
    args = ("translate_en", "--text", "桜", "--set", "max_tokens=4", "--json")
    through = daemon.cli("trigger", *args, "--output", "notify")
    alone = daemon.cli("do", *args)
    assert through.returncode == alone.returncode == 0, (through.stderr, alone.stderr)
    assert set(json.loads(through.stdout)) == set(json.loads(alone.stdout)) == {
        "action", "text", "model", "timings", "finish_reason"}  # fmt: skip
    for wrong in (("nope", "--text", "x"),
                  ("translate_en", "--text", "x", "--set", "style=haiku"),
                  ("translate_en", "--text", "x", "--set", "colour=red")):  # fmt: skip
        through = daemon.cli("trigger", *wrong, "--output", "notify")
        alone = daemon.cli("do", *wrong)
        assert (through.returncode, alone.returncode) == (2, 2), wrong
        assert through.stderr.startswith("yomitori: ") and "Traceback" not in through.stderr


MARKER = "灯台守の猫-7f3a"


def test_no_user_text_reaches_the_log_or_the_terminal(desk, tmp_path):
    """A marker through every source (text, clipboard, selection, region, copied image)
    and every sink (clipboard, paste, notification, window, history), on success and on
    failure: it is nowhere in the logs at INFO, nor in `yomitori run`'s own lines."""
    from ocr_samples import Sample, font_path, render

    if font_path() is None:
        pytest.skip("needs a Japanese font (fonts-ipafont-gothic)")
    picture = tmp_path / "marker.png"
    render(Sample("marker", (MARKER,), size=28)).save(picture)
    daemon = Daemon(desk).start()
    windows = []
    try:
        every = ("--output", "clipboard", "--output", "notify", "--output", "window")
        done = daemon.cli("trigger", "translate_en", "--text", MARKER, "--set", "max_tokens=8",
                          *every)  # fmt: skip
        assert done.returncode == 0, done.stderr
        # Failures that carry the text: a bad choice, an image action on text, a model
        # that is not there, a cancel.
        for wrong in (("translate_en", "--text", MARKER, "--set", "style=haiku"),
                      ("caption", "--text", MARKER),
                      ("translate_en", "--text", MARKER, "--model", "absent")):  # fmt: skip
            assert daemon.cli("trigger", *wrong, *every).returncode != 0
        desk.set_clipboard(MARKER)
        desk.key("super+alt+shift+t")  # clipboard → clipboard, notify
        assert wait_for(lambda: desk.clipboard() != MARKER, 60), daemon.log()
        ready = tmp_path / "ready"
        windows.append(subprocess.Popen([sys.executable, "-c", TK_SELECTION, MARKER,
                                         str(ready)], env=desk.full_env()))  # fmt: skip
        assert wait_for(ready.exists, 15)
        desk.run("xdotool", "search", "--sync", "--name", "yomitori-selection-source",
                 "windowactivate", "--sync", "windowfocus", "--sync")  # fmt: skip
        desk.key("super+alt+shift+s")  # selection → clipboard
        assert wait_for(lambda: [h for h in daemon.history() if h["source"] == "selection"], 60)
        desk.key("super+alt+shift+p")  # clipboard → paste into the selection window
        assert wait_for(lambda: len(daemon.history()) >= 4, 60)
        windows[0].terminate()
        shown = tmp_path / "shown"
        windows.append(subprocess.Popen([sys.executable, "-c", TK_PICTURE, str(picture),
                                         str(shown)], env=desk.full_env()))  # fmt: skip
        assert wait_for(shown.exists, 15)
        desk.key("super+alt+shift+o")  # region → OCR → clipboard
        assert wait_for(lambda: _overlay_shown(desk), 15), "the overlay did not open"
        size = Image.open(picture).size
        desk.run("xdotool", "mousemove", "100", "120", "mousedown", "1", "mousemove",
                 str(100 + size[0] - 1), str(120 + size[1] - 1), "mouseup", "1")  # fmt: skip
        assert wait_for(lambda: [h for h in daemon.history() if h["action"] == "ocr"], 60)
        read = next(h for h in daemon.history() if h["action"] == "ocr")["output"]
        assert "7f3a" in read, read  # OCR did read the marker, so it was there to leak
        daemon.cli("trigger", "ocr", "--source", "last_region", *every)
        outputs = [h["output"] for h in daemon.history()]
    finally:
        for window in windows:
            window.terminate()
        daemon.stop()
    assert daemon.proc is not None and daemon.proc.stdout is not None
    # Not read to end-of-file: an xclip the daemon started to serve the clipboard keeps
    # the pipe open after the daemon exited.
    os.set_blocking(daemon.proc.stdout.fileno(), False)
    terminal = daemon.proc.stdout.read() or ""
    logs = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                     for p in daemon.dirs["logs"].glob("*") if p.is_file())  # fmt: skip
    assert "Hotkeys:" in terminal and "translate_en): done in" in terminal  # it did speak
    for piece in (MARKER, "7f3a", "灯台守", *(o for o in outputs if len(o.strip()) >= 8)):
        assert piece not in logs, f"{piece!r} is in the log"
        assert piece not in terminal, f"{piece!r} is in the terminal output"


def test_quit_during_a_generation_cancels_it_and_the_daemon_is_gone_when_it_returns(desk):
    """Seen: quit cancelled nothing and the daemon lived on for 12 s while status said
    "not running" and run said "already running"."""
    daemon = Daemon(desk).start()
    try:
        desk.set_clipboard("a very long story about the sea")
        desk.key("super+alt+shift+l")  # 50 variations, 1500 tokens: a long generation
        assert wait_for(lambda: daemon.status().get("running") == "variations", 30)
        started = time.monotonic()
        done = daemon.cli("quit", timeout=30)
        took = time.monotonic() - started
        print(f"quit during a generation took {took:.2f} s")  # for the record (pytest -s)
        assert done.returncode == 0, done.stderr
        assert "Cancelled the running variations." in done.stdout
        assert "yomitori stopped." in done.stdout
        # When quit returns the daemon is gone: status says so, and run starts at once.
        assert daemon.proc.wait(timeout=5) == 0
        assert daemon.cli("status").returncode == 3
        assert took < 10, f"quit took {took:.1f} s"  # a bound for a hang, not a timing
    finally:
        daemon.stop()
