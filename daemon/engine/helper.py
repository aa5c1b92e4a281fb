"""Warm helper processes of the daemon (OCR, the region overlay): both sides.

A helper is ``python -m MODULE`` speaking JSON lines on its pipes, like the
model worker.  It first says ``{"ev": "ready"}`` (or an error with id 0 when it
cannot work here), then answers each ``{"op", "id", …}`` with ``{"ev": "done",
"id", …}`` or ``{"ev": "error", "id", "kind": "user" | "internal", "message"}``,
and exits on ``{"op": "stop"}`` or when the daemon's end of the pipe closes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import queue
import signal
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon.engine.channel import Channel
from daemon.engine.process import Child, ChildDied, Message
from daemon.errors import UserInputError, YomitoriError

log = logging.getLogger(__name__)

# A request still running this long after stop() interrupted it gets its helper killed.
STOP_WAIT_S = 5.0

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


def serve(
    channel: Channel,
    handle: Callable[[Message], Message],
    interrupt: Callable[[], None] | None = None,
    immediate: dict[str, Callable[[Message], None]] | None = None,
) -> None:
    """Answer requests one at a time until stop or end-of-file.

    With ``interrupt``, ``{"op": "cancel"}`` calls it at once, even while a request is
    being handled (a selection on screen), and so do stop and end-of-file, after which
    requests still queued are refused.  ``immediate`` ops (with ``interrupt``) are
    handled as they arrive, also while a request runs, and answered with nothing: the
    result window's messages, which must not wait behind a selection.
    """
    requests: queue.Queue[Message] = channel.inbox
    stopping = threading.Event()
    if interrupt is not None:
        requests = queue.Queue()

        def route() -> None:
            while True:
                message = channel.inbox.get()
                ending = message.get("ev") == "eof" or message.get("op") == "stop"
                if ending:
                    stopping.set()
                if ending or message.get("op") == "cancel":
                    try:
                        interrupt()
                    except Exception:  # nothing to interrupt any more
                        log.debug("interrupt failed", exc_info=True)
                op = message.get("op")
                if immediate and op in immediate:
                    try:
                        immediate[op](message)
                    except Exception:  # one bad message never stops the helper
                        log.warning("%s message failed", op, exc_info=True)
                elif op != "cancel":
                    requests.put(message)
                if ending:
                    return

        threading.Thread(target=route, name="helper-router", daemon=True).start()
    while True:
        message = requests.get()
        if message.get("ev") == "eof" or message.get("op") == "stop":
            return
        if stopping.is_set():
            channel.send(error_reply(message.get("id"), UserInputError("Stopping.")))
            continue
        try:
            reply = {"ev": "done", "id": message.get("id"), **handle(message)}
        except Exception as err:  # reported to the daemon, which decides
            reply = error_reply(message.get("id"), err)
        channel.send(reply)


# -- the daemon's side ------------------------------------------------------------


def _route_event(helper: weakref.ref[HelperProcess], message: Message) -> None:
    """A child's event to its helper's handler (held weakly: the reader thread must not
    keep a forgotten helper, and so its process, alive)."""
    target = helper()
    if target is not None and target.on_event is not None:
        target.on_event(message)


class HelperProcess:
    """Starts the helper on demand, restarts it after a crash, stops it to free memory."""

    def __init__(self, module: str, log_name: str, what: str) -> None:
        from daemon import platform

        self.module = module
        self.what = what  # "the OCR process": for messages
        self._log = platform.log_dir() / log_name
        self._lock = threading.Lock()
        self._child: Child | None = None
        self._ids = 0
        # What the user did in a window the helper shows (on its reader thread).
        self.on_event: Callable[[Message], None] | None = None

    def set_log(self, path: Path) -> None:
        self._log = path

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.alive

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def request(self, message: Message, timeout: float | None = 120) -> Message:
        """Send one request and return its ``done`` reply; raise on an error reply."""
        with self._lock:
            child = self._start_locked()
            self._ids += 1
            try:
                child.send({**message, "id": self._ids})
                reply = child.receive(self._ids, timeout)
            except (ChildDied, TimeoutError):
                raise self._gone() from None
        if reply["ev"] == "error":
            if reply.get("kind") == "user":
                raise UserInputError(reply["message"])
            raise YomitoriError(f"{self.what.capitalize()} failed ({reply['message'][:160]}).")
        return reply

    def post(self, message: Message) -> None:
        """Send a message that gets no answer (the result window's), at once: also
        while a request waits on screen.  Starts the helper if it is not running."""
        child = self._child
        if child is None or not child.alive:
            with self._lock:
                child = self._start_locked()
        child.send(message)

    def interrupt(self) -> None:
        """Ask the helper to drop the request it is busy with (a helper that serves with
        an ``interrupt``); safe from any thread, a no-op when none runs."""
        child = self._child
        if child is not None and child.alive:
            with contextlib.suppress(ChildDied):
                child.send({"op": "cancel"})

    def stop(self) -> None:
        """Stop the helper.  One busy with a request (a selection waiting on screen) is
        interrupted first, and killed if the request does not let go in a few seconds."""
        self.interrupt()
        if not self._lock.acquire(timeout=STOP_WAIT_S):
            child = self._child
            if child is not None:
                child.proc.kill()  # the waiting request sees it die and lets go
            self._lock.acquire()
        try:
            self._stop_locked()
        finally:
            self._lock.release()

    def _start_locked(self) -> Child:
        if self._child is not None and self._child.alive:
            return self._child
        self._stop_locked()  # what is left of one that died
        self._child = child = Child(self.module, self._log)
        child.channel.on_event = functools.partial(_route_event, weakref.ref(self))
        try:
            first = child.receive(0, timeout=60)
        except (ChildDied, TimeoutError):
            raise self._gone() from None
        if first.get("ev") == "error":
            self._stop_locked()
            raise UserInputError(first.get("message") or f"{self.what} could not start.")
        return child

    def _gone(self) -> YomitoriError:
        """Stop what is left of a helper that died or hung: the error to raise."""
        self._stop_locked()
        return YomitoriError(
            f"{self.what.capitalize()} stopped unexpectedly; the next request starts it again."
        )

    def _stop_locked(self) -> None:
        if self._child is not None:
            self._child.end({"op": "stop"})
        self._child = None
