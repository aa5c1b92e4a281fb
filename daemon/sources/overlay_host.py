"""The region overlay in a warm child process of its own.

Tk runs on this process's main thread (which macOS requires, and where the
daemon's tray lives), and anything that goes wrong inside Tcl or the X
libraries ends this process, never the daemon.  It starts with the daemon,
so a region hotkey pays neither Tk's start-up nor a process start.

Protocol (JSON lines): ``{"op": "select", "id", "repeat"}`` →
``{"ev": "done", "id", "region": {x, y, width, height} | null, "png": base64 | null}``;
failures → ``{"ev": "error", "id", "kind": "user" | "internal", "message"}``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from daemon.engine.channel import Channel
from daemon.errors import Cancelled, UserInputError, YomitoriError


def _serve(channel: Channel, selector: Any) -> None:
    from daemon.sources.region import grab_screen, warm_up

    try:
        selector.wait_ready()
        warm_up()
        channel.send({"ev": "ready"})
    except BaseException as err:  # no display, no Tk: say so, then stop
        channel.send({"ev": "error", "id": 0, "kind": "user", "message": str(err)})
        selector.close()
        return
    while True:
        message = channel.inbox.get()
        if message.get("ev") == "eof" or message.get("op") == "stop":
            selector.close()
            return
        reply: dict[str, Any] = {"ev": "done", "id": message.get("id"), "region": None,
                                 "png": None}  # fmt: skip
        try:
            shot = grab_screen()
            region = selector.last_region if message.get("repeat") else None
            if message.get("repeat") and region is None:
                raise UserInputError("No region was selected yet: use a region hotkey first.")
            if region is None:
                region = selector.select(shot)
            if region is not None:
                buffer = io.BytesIO()
                region.crop(shot).save(buffer, format="PNG", compress_level=1)
                reply.update(region=region.as_dict(),
                             png=base64.b64encode(buffer.getvalue()).decode())  # fmt: skip
        except UserInputError as err:
            reply = {"ev": "error", "id": message.get("id"), "kind": "user", "message": str(err)}
        except Exception as err:
            reply = {"ev": "error", "id": message.get("id"), "kind": "internal",
                     "message": f"{type(err).__name__}: {err}"}  # fmt: skip
        channel.send(reply)


def main(argv: list[str] | None = None) -> None:
    from daemon.engine.worker import _redirect_output

    parser = argparse.ArgumentParser(prog="yomitori-overlay")
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _redirect_output(args.log)
    channel.start_reader("overlay-channel")
    try:
        from daemon.sources.region import RegionSelector

        selector = RegionSelector(own_thread=False)
    except ImportError as err:  # a Python without Tk, or mss missing
        channel.send({"ev": "error", "id": 0, "kind": "user", "message": (
            f"Screen regions need {err.name or 'tkinter'}: install python3-tk (Debian/Ubuntu) "
            "or use a Python with Tk, then restart yomitori.")})  # fmt: skip
        os._exit(0)
    server = threading.Thread(target=_serve, args=(channel, selector), daemon=True)
    server.start()
    selector.run_here()  # Tk on the main thread until close()
    server.join(5)  # let it report why Tk stopped (no display, say) before exiting
    os._exit(0)


class RemoteSelector:
    """The daemon side: a warm overlay process, restarted if it dies."""

    def __init__(self, log_path: Path | None = None) -> None:
        from daemon import platform

        self._log = log_path or platform.log_dir() / "overlay.log"
        self._lock = threading.Lock()
        self._proc: Any = None
        self._channel: Channel | None = None
        self._ids = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self.running:
            return
        from daemon.engine.client import spawn_worker

        self._proc, self._channel = spawn_worker(self._log, "daemon.sources.overlay_host")
        first = self._next(0, timeout=30)
        if first.get("ev") == "error":
            self._stop_locked()
            raise UserInputError(first.get("message") or "The screen overlay could not start.")

    def _next(self, request_id: int, timeout: float | None) -> dict[str, Any]:
        assert self._channel is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            try:
                reply = self._channel.inbox.get(timeout=0.5)
            except Exception:  # queue.Empty
                if not self.running:
                    break
                continue
            if reply.get("ev") == "eof":
                break
            if request_id == 0 and reply.get("ev") in ("ready", "error"):
                return reply
            if reply.get("id") == request_id:
                return reply
        self._stop_locked()
        raise YomitoriError("The screen overlay stopped unexpectedly; try the hotkey again.")

    def select_png(self, repeat: bool = False) -> bytes:
        """The selected pixels as PNG; raises Cancelled when the user cancels."""
        with self._lock:
            self._start_locked()
            assert self._channel is not None
            self._ids += 1
            self._channel.send({"op": "select", "id": self._ids, "repeat": repeat})
            reply = self._next(self._ids, timeout=None)
        if reply["ev"] == "error":
            if reply.get("kind") == "user":
                raise UserInputError(reply["message"])
            raise YomitoriError(f"The screen overlay failed ({reply['message'][:160]}).")
        if reply.get("png") is None:
            raise Cancelled("Selection cancelled.")
        return base64.b64decode(reply["png"])

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None and self._channel is not None:
            try:
                self._channel.send({"op": "stop"})
                self._proc.wait(timeout=5)
            except Exception:
                self._proc.kill()
        if self._channel is not None:
            self._channel.close()
        self._proc, self._channel = None, None


if __name__ == "__main__":
    main()
