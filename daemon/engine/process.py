"""One child process speaking JSON lines on its pipes: the model worker, a helper.

A :class:`Child` is ``python -m MODULE --log FILE`` and its
:class:`~daemon.engine.channel.Channel`.  It hands out the answer to a request
while making sure the process still lives, ends the process (asking first,
killing if it must) and kills it if it is garbage-collected still running, so
no child outlives its owner holding memory or VRAM.  What a death means to a
user is the owner's to say: :class:`ChildDied` carries no message.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.engine.channel import Channel

Message = dict[str, Any]

# How often a waiting request checks that the child is still alive; a dead
# child normally shows up at once as end-of-file on its pipe.
_POLL_S = 0.5


def _reap(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class ChildDied(Exception):
    """The child exited or closed its pipe."""


class Child:
    """A started ``python -m MODULE`` and its channel."""

    def __init__(self, module: str, log_path: Path) -> None:
        windows = platform.is_windows()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--log", str(log_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_env(),
            # No console window flashing up on Windows.
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if windows else 0,
            # Ctrl-C in the terminal is the daemon side's to handle (it cancels).
            start_new_session=not windows,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.channel = Channel(self.proc.stdout, self.proc.stdin)
        # Its pipe closes when it exits: reaped then, so no zombie waits for the next
        # request to notice (a crashed helper nobody uses would stay one).
        # (The reader holds only the Popen, never this object: a forgotten Child must still
        # be collected, so that its finalizer kills the process.)
        self.channel.start_reader(f"worker-{self.proc.pid}-reader",
                                  on_eof=functools.partial(_reap, self.proc))  # fmt: skip
        weakref.finalize(self, _kill_if_running, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Message) -> None:
        try:
            self.channel.send(message)
        except (OSError, ValueError):
            raise ChildDied from None

    def receive(self, request_id: int, timeout: float | None = None) -> Message:
        """The next message for ``request_id`` (0 takes the start-up word ``ready`` too).

        Raises :class:`ChildDied` if the child dies first, :class:`TimeoutError`
        when ``timeout`` seconds pass; answers to older requests are dropped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                message = self.channel.inbox.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.alive:
                    raise ChildDied from None
            else:
                if message.get("ev") == "eof":
                    raise ChildDied
                if message.get("id") == request_id or (
                    request_id == 0 and message.get("ev") == "ready"
                ):
                    return message
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError

    def end(self, word: Message | None = None, grace_s: float = 5.0) -> int | None:
        """See the child exit and close its pipes; its exit code (None: it would not die).

        ``word`` (``{"op": "stop"}``) asks a running child to exit; one still
        running after ``grace_s`` seconds is killed.
        """
        if word is not None and self.alive:
            try:
                self.send(word)
            except ChildDied:
                self.proc.kill()
        try:
            return self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in a driver call
                return self.proc.wait(timeout=grace_s)
            return None
        finally:
            self.channel.close()


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    """At garbage collection or exit: never leave a child holding memory or VRAM."""
    if proc.poll() is None:
        proc.kill()


def _child_env() -> dict[str, str]:
    """The parent's environment, with this copy of the package importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
