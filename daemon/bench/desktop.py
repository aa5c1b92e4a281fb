"""``yomitori bench --daemon``: what the daemon itself costs.

Starts a private daemon (own config, data and runtime folders) on the current
X display, then measures in one run:

- ``hotkey_to_clipboard_s``: xdotool presses the hotkey → the X clipboard holds
  the result; against ``do_warm_s``, the same action on the same input through
  a warm worker in-process (the ``do`` path).  The difference is the daemon's
  own overhead: hotkey listener, queue, clipboard read and write.
- ``idle_rss_mb``: the daemon process without a model loaded; ``idle_rss_total_mb``
  with its helper processes (the warm overlay; the OCR process stops with the model).
- ``idle_cpu_percent``: its CPU use while idle for ``idle_seconds``.

The press time comes from an X event listener of the benchmark's own and the
end from XFixes telling that a new owner took the clipboard: no polling load
on the machine being measured.
Needs an X display with xdotool and xclip (Xvfb works).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.errors import UserInputError, YomitoriError

INPUT = "夕焼けの海辺で麦わら帽子の少女"
HOTKEY = "ctrl+alt+y"
CONFIG = """
[settings]
keep_alive = -1
[[binding]]
hotkey = "<ctrl>+<alt>+y"
action = "translate_en"
output = ["clipboard"]
vars = { max_tokens = "16", temperature = "0", seed = "1" }
"""


def _run(env: dict[str, str], *args: str, text_in: str | None = None) -> str:
    done = subprocess.run(list(args), env=env, input=text_in, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    return done.stdout


def _set_clipboard(env: dict[str, str], text: str) -> None:
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=text.encode(), env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip


def _clipboard(env: dict[str, str]) -> str:
    return _run(env, "xclip", "-selection", "clipboard", "-o")


def _wait(check: Any, timeout: float, interval: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError("timed out")


class _PressClock:
    """When the hotkey's key went down, as the X server reported it to a listener
    of our own: xdotool's start-up time is not the daemon's."""

    def __init__(self) -> None:
        from pynput import keyboard

        self._time: float | None = None
        self._listener = keyboard.Listener(on_press=self._press)
        self._listener.start()
        self._listener.wait()

    def _press(self, key: Any) -> None:
        if getattr(key, "char", None) == "y" and self._time is None:
            self._time = time.perf_counter()

    def arm(self) -> None:
        self._time = None

    def at(self) -> float:
        _wait(lambda: self._time is not None, 5, 0.001)
        assert self._time is not None
        return self._time

    def stop(self) -> None:
        self._listener.stop()


class _ClipboardWatch:
    """The moment a new owner takes the X clipboard (XFixes), without polling:
    spawning xclip every few milliseconds would steal the CPU being measured."""

    def __init__(self) -> None:
        from Xlib import display
        from Xlib.ext import xfixes

        self.display = display.Display()
        self.display.xfixes_query_version()
        clipboard = self.display.intern_atom("CLIPBOARD")
        self.display.xfixes_select_selection_input(
            self.display.screen().root, clipboard, xfixes.XFixesSetSelectionOwnerNotifyMask
        )
        self.display.flush()
        self.kind = self.display.extension_event.SetSelectionOwnerNotify

    def drain(self) -> None:
        time.sleep(0.05)
        while self.display.pending_events():
            self.display.next_event()

    def next_change(self, timeout: float) -> float:
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.display.pending_events():
                event = self.display.next_event()
                if (event.type, getattr(event, "sub_code", None)) == tuple(self.kind):
                    return time.perf_counter()
            select.select([self.display], [], [], max(0.0, deadline - time.monotonic()))
        raise RuntimeError("the clipboard did not change in time")

    def close(self) -> None:
        self.display.close()


class PrivateDaemon:
    """``yomitori run`` of the bench's own: its own config, data, log and runtime folders
    (so it runs beside the user's daemon), ``config`` as its hotkeys.toml."""

    def __init__(self, model: str, config: str, env: dict[str, str] | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="yb-"))  # short: a socket path has a limit
        self.env = dict(env or os.environ)
        for name, var in (("config", "CONFIG"), ("data", "DATA"), ("logs", "LOG"),
                          ("run", "RUNTIME")):  # fmt: skip
            (self.base / name).mkdir()
            self.env[f"YOMITORI_{var}_DIR"] = str(self.base / name)
        (self.base / "config" / "hotkeys.toml").write_text(config, encoding="utf-8")
        model_line = f'default = "{model}"\n'
        if model != "tiny":
            path = Path(model).resolve().as_posix()
            model_line = f'default = "m"\n[models.m]\npath = "{path}"\n'
        (self.base / "config" / "models.toml").write_text(model_line, encoding="utf-8")
        self.socket = self.base / "run" / "daemon.sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--no-tray"],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip

    def cli(self, *args: str) -> str:
        return _run(self.env, sys.executable, "-m", "daemon", *args)

    def status(self) -> dict[str, Any]:
        """Its status, or {} while it is not answering (yet)."""
        try:
            reply = self.request({"cmd": "status"}, timeout=30)
        except YomitoriError:
            return {}
        return reply.get("status") or {}

    def request(self, message: dict[str, Any], timeout: float | None = 120) -> dict[str, Any]:
        """Straight to its socket, from this process (no CLI start-up per request)."""
        from daemon.desktop import ipc

        return ipc.request(message, timeout, path=self.socket)

    def wait_loaded(self) -> None:
        _wait(lambda: self.status().get("loaded"), 120, 0.1)

    def stop(self) -> None:
        self.cli("quit")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def need_x_tools(what: str) -> None:
    missing = [t for t in ("xdotool", "xclip") if shutil.which(t) is None]
    if not os.environ.get("DISPLAY") or missing:
        raise UserInputError(
            f"bench {what} needs an X display with xdotool and xclip "
            f"(missing: {', '.join(missing) or 'DISPLAY'}); e.g. run it under xvfb-run."
        )


def run_daemon_bench(model: str, runs: int, idle_seconds: float, say: Any) -> dict[str, Any]:
    import psutil

    need_x_tools("--daemon")
    daemon = PrivateDaemon(model, CONFIG)
    env, proc, status = daemon.env, daemon.proc, daemon.status
    figures: dict[str, Any] = {}
    try:
        daemon.wait_loaded()
        say("hotkey → clipboard, through the running daemon…")
        pressed = _PressClock()
        owner = _ClipboardWatch()
        hotkey_times = []
        for i in range(runs + 1):
            marker = f"{INPUT} {i}"
            _set_clipboard(env, marker)
            _wait(lambda m=marker: _clipboard(env) == m, 5)
            owner.drain()
            pressed.arm()
            _run(env, "xdotool", "key", "--delay", "0", HOTKEY)
            done = owner.next_change(60)
            if _clipboard(env) in ("", marker):
                raise RuntimeError("the daemon did not put a result on the clipboard")
            if i:
                hotkey_times.append(done - pressed.at())
        pressed.stop()
        owner.close()
        say("the same action through a warm worker in-process (the do path)…")
        do_times = _do_times(model, runs, [f"{INPUT} {i}" for i in range(runs + 1)])
        hotkey_s, do_s = statistics.median(hotkey_times), statistics.median(do_times)
        figures.update(
            hotkey_to_clipboard_s=round(hotkey_s, 4), do_warm_s=round(do_s, 4),
            daemon_overhead_ms=round((hotkey_s - do_s) * 1000, 1),
        )  # fmt: skip
        say(f"idle daemon without a model, {idle_seconds:.0f} s…")
        daemon.cli("free")
        _wait(lambda: not status().get("loaded"), 30, 0.1)
        process = psutil.Process(proc.pid)
        time.sleep(1.0)
        cpu_before = sum(process.cpu_times()[:2])
        time.sleep(idle_seconds)
        cpu_used = sum(process.cpu_times()[:2]) - cpu_before
        helpers = process.children(recursive=True)  # the overlay process (model and OCR freed)
        figures.update(
            idle_rss_mb=round(process.memory_info().rss / 2**20, 1),
            idle_rss_total_mb=round(
                sum(p.memory_info().rss for p in [process, *helpers] if p.is_running()) / 2**20, 1
            ),
            idle_cpu_percent=round(100 * cpu_used / idle_seconds, 3),
            idle_seconds=idle_seconds,
        )
    finally:
        daemon.stop()
        daemon.remove()
    return figures


def _do_times(model: str, runs: int, inputs: list[str]) -> list[float]:
    from daemon.actions import Payload, run_action
    from daemon.config import template_folders
    from daemon.models import check_spec, load_models, resolve_model
    from daemon.prompts import load_templates
    from daemon.runner import Engines

    template = load_templates(template_folders()).get("translate_en")
    spec = check_spec(resolve_model(model, load_models()))
    engines = Engines()
    engine = engines.get(spec)  # the daemon's backend for this model, whichever it is
    options = {"max_tokens": 16, "temperature": 0.0, "seed": 1}
    times = []
    try:
        engine.load(spec)
        for i, text in enumerate(inputs):
            started = time.perf_counter()
            run_action(template, Payload(text=text), engine, spec, options=options)
            if i:
                times.append(time.perf_counter() - started)
    finally:
        engines.close()
    return times[:runs]
