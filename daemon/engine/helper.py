"""Warm helper processes of the daemon (OCR, the region overlay): both sides.

A helper is ``python -m MODULE`` speaking JSON lines on its pipes, like the
model worker.  It first says ``{"ev": "ready"}`` (or an error with id 0 when it
cannot work here), then answers each ``{"op", "id", …}`` with ``{"ev": "done",
"id", …}`` or ``{"ev": "error", "id", "kind": "user" | "internal", "message"}``,
and exits on ``{"op": "stop"}`` or when the daemon's end of the pipe closes.
"""

from __future__ import annotations

import argparse
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon.engine.channel import Channel
from daemon.errors import UserInputError, YomitoriError

Message = dict[str, Any]


# -- the helper's side ------------------------------------------------------------


def open_host(prog: str, argv: Sequence[str] | None = None) -> Channel:
    """Parse ``--log``, leave Ctrl-C to the daemon, and open the message channel."""
    from daemon.engine.worker import _redirect_output

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--log", default=None, help="file for native libraries' output")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _redirect_output(args.log)
    channel.start_reader(f"{prog}-channel")
    return channel


def error_reply(request_id: Any, err: BaseException) -> Message:
    if isinstance(err, UserInputError):
        return {"ev": "error", "id": request_id, "kind": "user", "message": str(err)}
    return {"ev": "error", "id": request_id, "kind": "internal",
            "message": f"{type(err).__name__}: {err}"}  # fmt: skip


def serve(channel: Channel, handle: Callable[[Message], Message]) -> None:
    """Answer requests one at a time until stop or end-of-file."""
    while True:
        message = channel.inbox.get()
        if message.get("ev") == "eof" or message.get("op") == "stop":
            return
        try:
            reply = {"ev": "done", "id": message.get("id"), **handle(message)}
        except Exception as err:  # reported to the daemon, which decides
            reply = error_reply(message.get("id"), err)
        channel.send(reply)


# -- the daemon's side ------------------------------------------------------------


class HelperProcess:
    """Starts the helper on demand, restarts it after a crash, stops it to free memory."""

    def __init__(self, module: str, log_name: str, what: str) -> None:
        from daemon import platform

        self.module = module
        self.what = what  # "the OCR process": for messages
        self._log = platform.log_dir() / log_name
        self._lock = threading.Lock()
        self._proc: Any = None
        self._channel: Channel | None = None
        self._ids = 0

    def set_log(self, path: Path) -> None:
        self._log = path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def request(self, message: Message, timeout: float | None = 120) -> Message:
        """Send one request and return its ``done`` reply; raise on an error reply."""
        with self._lock:
            self._start_locked()
            assert self._channel is not None
            self._ids += 1
            self._channel.send({**message, "id": self._ids})
            reply = self._next(self._ids, timeout)
        if reply["ev"] == "error":
            if reply.get("kind") == "user":
                raise UserInputError(reply["message"])
            raise YomitoriError(f"{self.what.capitalize()} failed ({reply['message'][:160]}).")
        return reply

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _start_locked(self) -> None:
        if self.running:
            return
        from daemon.engine.client import spawn_worker

        self._proc, self._channel = spawn_worker(self._log, self.module)
        first = self._next(0, timeout=60)
        if first.get("ev") == "error":
            self._stop_locked()
            raise UserInputError(first.get("message") or f"{self.what} could not start.")

    def _next(self, request_id: int, timeout: float | None) -> Message:
        """The reply to ``request_id`` (0: the start-up word); raises if the helper dies."""
        assert self._channel is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            try:
                reply = self._channel.inbox.get(timeout=0.5)
            except queue.Empty:
                if not self.running:
                    break
                continue
            if reply.get("ev") == "eof":
                break
            if request_id == 0 and reply.get("ev") == "ready":
                return reply
            if reply.get("id") == request_id:
                return reply
        self._stop_locked()
        raise YomitoriError(
            f"{self.what.capitalize()} stopped unexpectedly; the next request starts it again."
        )

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
