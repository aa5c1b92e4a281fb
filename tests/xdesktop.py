"""A real, private X desktop for the daemon tests: Xvfb, a session D-Bus and
the dunst notification server, plus helpers to drive them (xdotool, xclip)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TOOLS = ("Xvfb", "xdotool", "xclip", "dunst", "dunstctl", "dbus-daemon")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return check()


class Desktop:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._after_id = 0
        self.env: dict[str, str] = {}

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        self.procs.append(xvfb)
        with os.fdopen(read_fd) as pipe:
            display = pipe.readline().strip()
        dbus = subprocess.run(
            ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
            capture_output=True,
            text=True,
            check=True,
        )
        address, pid = dbus.stdout.split()[:2]
        self.dbus_pid = int(pid)
        self.env = {"DISPLAY": f":{display}", "DBUS_SESSION_BUS_ADDRESS": address,
                    "XDG_SESSION_TYPE": "x11"}  # fmt: skip
        self.env.pop("WAYLAND_DISPLAY", None)
        dunst_conf = Path(tempfile.mkdtemp(prefix="dunst-")) / "dunstrc"
        dunst_conf.write_text("[global]\n    timeout = 60\n", encoding="utf-8")
        self.procs.append(
            subprocess.Popen(
                ["dunst", "-config", str(dunst_conf)],
                env=self.full_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: self.run("dunstctl", "is-paused").returncode == 0, 10)

    def full_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        return {**env, **self.env, **(extra or {})}

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            env=self.full_env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=30,
            check=False,
        )

    def set_clipboard(self, text: str) -> None:
        # xclip stays in the background to serve the selection: don't wait on its pipes.
        subprocess.run(
            ["xclip", "-selection", "clipboard", "-i"],
            input=text.encode(),
            env=self.full_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        assert wait_for(lambda: self.clipboard() == text, 5), "xclip did not take the text"

    def clipboard(self) -> str:
        done = self.run("xclip", "-selection", "clipboard", "-o")
        return done.stdout if done.returncode == 0 else ""

    def key(self, *chords: str, repeat: int = 1, delay_ms: int = 12) -> None:
        args = ["xdotool", "key", "--delay", str(delay_ms)]
        if repeat > 1:
            args += ["--repeat", str(repeat)]
        self.run(*args, *chords)

    def notifications(self) -> list[dict[str, str]]:
        """Every notification dunst has received (shown ones are closed into its history)."""
        self._close_all()
        return [n for n in self._history() if n["id"] > self._after_id]

    def _history(self) -> list[dict[str, Any]]:
        data = json.loads(self.run("dunstctl", "history").stdout or '{"data": [[]]}')
        return [
            {"id": n["id"]["data"], "summary": n["summary"]["data"], "body": n["body"]["data"]}
            for n in data["data"][0]
        ]

    def _close_all(self) -> None:
        """Close shown notifications until none waits either: dunst shows a few at a
        time and queues the rest, which reach its history only once shown."""
        for _ in range(100):
            self.run("dunstctl", "close-all")
            counts = [self.run("dunstctl", "count", kind).stdout.strip()
                      for kind in ("displayed", "waiting")]  # fmt: skip
            if counts == ["0", "0"]:
                return
            time.sleep(0.02)

    def clear_notifications(self) -> None:
        """From now on, notifications() lists only what arrives later (this dunst has
        no history-clear)."""
        self._close_all()
        self._after_id = max((n["id"] for n in self._history()), default=0)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        with contextlib.suppress(AttributeError, ProcessLookupError):
            os.kill(self.dbus_pid, 15)


@contextmanager
def desktop() -> Iterator[Desktop]:
    session = Desktop()
    session.start()
    try:
        yield session
    finally:
        session.stop()
