"""``yomitori bench --load``: the daemon's loop under load, measured.

Starts a private daemon (as ``bench --daemon`` does) on the current X display, or on
an Xvfb of its own when ``DISPLAY`` is unset, and fires ``actions`` actions at it, one
after another, in a fixed mix:

- ``trigger``: ``translate_en`` on a text, through the daemon's socket (what
  ``yomitori trigger`` sends);
- ``hotkey``: the same action by its hotkey (xdotool), on the X clipboard;
- ``region``: an OCR region: the overlay opens and xdotool drags a box over a line of
  text the bench shows; ``region_esc``: the overlay by its hotkey, closed with Esc;
- ``cancel``: a long generation cancelled midway (``yomitori cancel`` or the cancel hotkey).

Figures: the resident size (RSS) of the daemon and of each helper process (model
worker, overlay host, OCR process) after a warm-up and at the end, the growth in %,
the failed actions (a cancelled one is not a failure), and what is left after quit:
processes of the daemon's and files in its runtime folder.  Every wait has a timeout
and the whole run a time limit; traffic stays on this machine (a Unix socket and X).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from daemon.bench.desktop import (
    INPUT,
    PrivateDaemon,
    _clipboard,
    _ClipboardWatch,
    _run,
    _set_clipboard,
    _wait,
    need_x_tools,
)
from daemon.errors import UserInputError, YomitoriError

CONFIG = """
[settings]
keep_alive = -1
notifier = "none"
region_capture = "overlay"

[[binding]]
hotkey = "<ctrl>+<alt>+y"
action = "translate_en"
output = ["clipboard"]
vars = { max_tokens = "8", temperature = "0", seed = "1" }

[[binding]]
hotkey = "<ctrl>+<alt>+u"
action = "ocr"
source = "region"
output = ["clipboard"]
"""
# Ten actions, round and round: mostly text, a region each way, a cancel.
MIX = ("trigger", "hotkey", "trigger", "region", "hotkey", "trigger", "cancel", "hotkey",
       "trigger", "region_esc")  # fmt: skip
TEXT_WINDOW = """
import sys, tkinter as tk
root = tk.Tk(); root.overrideredirect(True); root.geometry("+80+80")
tk.Label(root, text="READ THIS LINE 2024", font=("DejaVu Sans", 40), bg="white", fg="black",
         padx=20, pady=20).pack()
root.after(300, lambda: open(sys.argv[1], "w").close())
root.mainloop()
"""
SHORT = {"max_tokens": "8", "temperature": "0", "seed": "1"}
ROLES = (("daemon.engine.worker", "worker"), ("overlay_host", "overlay"), ("ocr_worker", "ocr"))


@contextlib.contextmanager
def x_display() -> Iterator[dict[str, str]]:
    """The environment for X programs: the current display, or an Xvfb of our own
    (stopped on exit) when there is none."""
    if os.environ.get("DISPLAY"):
        yield dict(os.environ)
        return
    if shutil.which("Xvfb") is None:
        raise UserInputError("bench --load needs DISPLAY or Xvfb to start a display of its own.")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write_fd)
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise UserInputError("Xvfb did not start, so bench --load has no display.")
        # This process talks to X as well (clipboard watch): its own environment too.
        os.environ.pop("WAYLAND_DISPLAY", None)
        os.environ.update(DISPLAY=f":{number}", XDG_SESSION_TYPE="x11")
        yield dict(os.environ)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        xvfb.terminate()
        try:
            xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()


def processes(pid: int) -> dict[str, Any]:
    """The daemon and its helpers by role, each with its pid and RSS in MiB."""
    import psutil

    daemon = psutil.Process(pid)
    found = {"daemon": daemon}
    for child in daemon.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            line = " ".join(child.cmdline())
            role = next((r for key, r in ROLES if key in line), child.name())
            found[role if role not in found else f"{role}-{child.pid}"] = child
    result = {}
    for role, proc in found.items():
        with contextlib.suppress(psutil.Error):
            result[role] = {"pid": proc.pid, "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                            **_anon_mb(proc.pid)}  # fmt: skip
    return result


def _anon_mb(pid: int) -> dict[str, float]:
    """Linux: the part of RSS that is the process's own memory (RssAnon), apart from file
    pages mapped in (RssFile: a memory-mapped model's weights, paged in as they are first
    read, e.g. embedding rows of tokens not seen before).  A leak shows in the first."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    out = {}
    for key, name in (("RssAnon", "anon_mb"), ("RssFile", "file_mb")):
        if key in fields:
            out[name] = round(int(fields[key].split()[0]) / 1024, 1)
    return out


class LoadRun:
    """The actions, one after another, against one private daemon."""

    def __init__(self, daemon: PrivateDaemon, text_box: tuple[int, int, int, int]) -> None:
        self.daemon = daemon
        self.env = daemon.env
        self.box = text_box
        self.owner = _ClipboardWatch()
        self.counts = {kind: 0 for kind in MIX}
        self.seconds: dict[str, list[float]] = {kind: [] for kind in MIX}
        self.failed = 0
        self.cancelled = 0
        self.samples: list[str] = []

    def fail(self, kind: str, why: str) -> None:
        self.failed += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {why}")

    def one(self, kind: str, i: int) -> None:
        self.counts[kind] += 1
        started = time.perf_counter()
        try:
            getattr(self, f"_{kind}")(i)
        except (YomitoriError, RuntimeError, OSError, ValueError) as err:
            self.fail(kind, str(err) or type(err).__name__)
        self.seconds[kind].append(time.perf_counter() - started)

    def _reply(self, kind: str, reply: dict[str, Any]) -> None:
        if reply.get("ok"):
            return
        if reply.get("error") == "Cancelled.":
            self.cancelled += 1
        else:
            self.fail(kind, str(reply.get("error")))

    def _trigger(self, i: int) -> None:
        self._reply("trigger", self.daemon.request({
            "cmd": "trigger", "action": "translate_en", "text": f"{INPUT} {i}",
            "output": ["clipboard"], "vars": SHORT}))  # fmt: skip

    def _hotkey(self, i: int) -> None:
        marker = f"{INPUT} {i}"
        _set_clipboard(self.env, marker)
        _wait(lambda: _clipboard(self.env) == marker, 5, 0.01)
        self.owner.drain()
        self._key("ctrl+alt+y")
        self.owner.next_change(60)
        if _clipboard(self.env) in ("", marker):
            self.fail("hotkey", "no result on the clipboard")

    def _region(self, _i: int) -> None:
        reply: dict[str, Any] = {}
        region = {"cmd": "trigger", "action": "ocr", "source": "region", "output": ["clipboard"]}
        job = threading.Thread(target=lambda: reply.update(self.daemon.request(region)))
        job.start()
        self._wait_overlay(True)
        x0, y0, x1, y1 = self.box
        _run(self.env, "xdotool", "mousemove", str(x0), str(y0), "mousedown", "1",
             "mousemove", str((x0 + x1) // 2), str((y0 + y1) // 2), "mousemove", str(x1),
             str(y1), "mouseup", "1")  # fmt: skip
        job.join(120)
        self._reply("region", reply or {"ok": False, "error": "no reply in time"})
        if reply.get("ok") and not str(reply.get("text", "")).strip():
            self.fail("region", "no text read")

    def _region_esc(self, _i: int) -> None:
        self._key("ctrl+alt+u")
        self._wait_overlay(True)
        self._key("Escape")
        self._wait_overlay(False)
        _wait(lambda: self.daemon.status().get("state") in ("idle", "error"), 30, 0.05)

    def _cancel(self, i: int) -> None:
        reply: dict[str, Any] = {}
        job = threading.Thread(target=lambda: reply.update(self.daemon.request({
            "cmd": "trigger", "action": "translate_en", "text": f"{INPUT} {i}",
            "output": ["clipboard"], "vars": {"max_tokens": "400"}})))  # fmt: skip
        job.start()
        _wait(lambda: self.daemon.status().get("state") == "busy" or not job.is_alive(), 30, 0.02)
        if i % 20 < 10:
            self.daemon.request({"cmd": "cancel"}, timeout=30)
        else:
            self._key("super+alt+shift+x")  # the shipped cancel hotkey
        job.join(120)
        self._reply("cancel", reply or {"ok": False, "error": "no reply in time"})

    def _key(self, chord: str) -> None:
        _run(self.env, "xdotool", "key", "--delay", "0", chord)

    def _wait_overlay(self, shown: bool) -> None:
        def now() -> bool:
            found = _run(self.env, "xdotool", "search", "--onlyvisible", "--class",
                         "YomitoriOverlay")  # fmt: skip
            return bool(found.strip()) == shown

        try:
            _wait(now, 20, 0.05)
        except RuntimeError:
            raise RuntimeError(f"the overlay did not {'open' if shown else 'close'}") from None

    def close(self) -> None:
        self.owner.close()


def _anon_growth(warm: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    both = [r for r in warm if warm[r].get("anon_mb") and end.get(r, {}).get("anon_mb")]
    return {r: round(100 * (end[r]["anon_mb"] - warm[r]["anon_mb"]) / warm[r]["anon_mb"], 2)
            for r in both}  # fmt: skip


def _growth(warm: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    return {role: round(100 * (end[role]["rss_mb"] - warm[role]["rss_mb"]) / warm[role]["rss_mb"],
                        2)
            for role in warm if role in end and warm[role]["rss_mb"] > 0}  # fmt: skip


def run_load_bench(
    model: str, actions: int, say: Callable[[str], None], max_seconds: float = 3600
) -> dict[str, Any]:
    import psutil

    if actions < 1:
        raise UserInputError("bench --load needs at least one action (--actions N).")
    with x_display():
        need_x_tools("--load")
        daemon = PrivateDaemon(model, CONFIG)
        ready = Path(tempfile.mkdtemp(prefix="yl-")) / "ready"
        window = subprocess.Popen([sys.executable, "-c", TEXT_WINDOW, str(ready)],
                                  env=daemon.env)  # fmt: skip
        figures: dict[str, Any] = {"model": model, "actions_asked": actions}
        seen: dict[int, str] = {}
        run: LoadRun | None = None
        try:
            daemon.wait_loaded()
            _wait(ready.exists, 30, 0.05)
            # The daemon warms its OCR and overlay processes up after the model loads.
            _wait(lambda: {"ocr", "overlay"} <= set(processes(daemon.proc.pid)), 60, 0.2)
            run = LoadRun(daemon, (70, 70, 860, 190))
            warmup = min(actions, max(10, actions // 10))
            deadline = time.monotonic() + max_seconds
            started = time.monotonic()
            warm: dict[str, Any] = {}
            half: dict[str, Any] = {}
            done = 0
            for i in range(actions):
                if time.monotonic() > deadline:
                    break
                run.one(MIX[i % len(MIX)], i)
                done += 1
                if done == warmup:
                    warm = processes(daemon.proc.pid)
                    say(f"warmed up after {done} actions; {actions - done} to go…")
                if done == (actions + warmup) // 2:
                    # Growth from here to the end tells a leak (it keeps on) from caches
                    # and arenas that fill once (they level off).
                    half = processes(daemon.proc.pid)
                elif done % 100 == 0:
                    say(f"{done} of {actions} actions…")
            end = processes(daemon.proc.pid)
            for snapshot in (warm, end):
                seen.update({p["pid"]: role for role, p in snapshot.items()})
            figures.update(
                actions_done=done, stopped_by_time_limit=done < actions,
                seconds=round(time.monotonic() - started, 1), warmup_actions=warmup,
                by_kind=run.counts, median_s_by_kind={k: round(statistics.median(v), 3)
                                                      for k, v in run.seconds.items() if v},
                failed=run.failed, cancelled=run.cancelled,
                failure_samples=run.samples, rss_warm_mb=warm, rss_end_mb=end,
                rss_growth_percent=_growth(warm, end) if warm else {},
                anon_growth_percent=_anon_growth(warm, end) if warm else {},
                rss_half_mb=half,
                rss_growth_second_half_percent=_growth(half, end) if half else {},
                rss_total_growth_percent=round(
                    100 * (sum(p["rss_mb"] for p in end.values())
                           / sum(p["rss_mb"] for p in warm.values()) - 1), 2) if warm else None,
            )  # fmt: skip
        finally:
            if run is not None:
                run.close()
            window.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                window.wait(10)
            shutil.rmtree(ready.parent, ignore_errors=True)
            daemon.stop()
        time.sleep(1.0)  # children end on their own once the daemon has gone
        figures["leftover_processes"] = [
            f"{role} (pid {pid})" for pid, role in seen.items()
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]  # fmt: skip
        runtime = daemon.base / "run"
        figures["runtime_files_after_quit"] = sorted(p.name for p in runtime.iterdir())
        figures["daemon_exit_code"] = daemon.proc.returncode
        daemon.remove()
    return figures
