"""The helper processes' request loop (daemon/engine/helper.py), without a process."""

from __future__ import annotations

import queue
import threading
from typing import Any

from xdesktop import wait_for

from daemon.engine.helper import serve


class FakeChannel:
    def __init__(self) -> None:
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def test_cancel_interrupts_the_busy_request_and_stop_refuses_what_is_queued():
    channel = FakeChannel()
    released = threading.Event()
    started: list[int] = []

    def handle(message: dict[str, Any]) -> dict[str, Any]:
        started.append(message["id"])
        assert released.wait(10), "never interrupted"
        released.clear()
        return {"n": message["id"]}

    loop = threading.Thread(target=serve, args=(channel, handle, released.set))
    loop.start()
    channel.inbox.put({"op": "select", "id": 1})
    assert wait_for(lambda: started == [1], 5)
    channel.inbox.put({"op": "cancel"})  # arrives while request 1 is being handled
    assert wait_for(lambda: [m["id"] for m in channel.sent] == [1], 5)
    channel.inbox.put({"op": "select", "id": 2})
    assert wait_for(lambda: started == [1, 2], 5)
    channel.inbox.put({"op": "select", "id": 3})
    channel.inbox.put({"op": "stop"})  # interrupts 2; 3 is refused, never handled
    loop.join(10)
    assert not loop.is_alive()
    assert started == [1, 2]
    assert [(m["id"], m["ev"]) for m in channel.sent] == [(1, "done"), (2, "done"), (3, "error")]


def test_without_interrupt_requests_are_answered_in_order_until_end_of_file():
    channel = FakeChannel()
    for n in (1, 2):
        channel.inbox.put({"op": "ocr", "id": n})
    channel.inbox.put({"ev": "eof"})
    serve(channel, lambda m: {"n": m["id"] * 10})
    assert channel.sent == [{"ev": "done", "id": 1, "n": 10}, {"ev": "done", "id": 2, "n": 20}]


def test_the_overlay_gives_memory_back_only_after_a_quiet_spell(monkeypatch):
    """The timers are the test's own: fired by hand, no sleeping against real ones."""
    from daemon.sources import overlay_host

    calls: list[float] = []
    timers: list[Any] = []

    class Timer:
        def __init__(self, delay: float, function: Any) -> None:
            self.delay, self.function, self.cancelled, self.daemon = delay, function, False, False
            timers.append(self)

        def start(self) -> None:
            pass

        def cancel(self) -> None:
            self.cancelled = True

        def fire(self) -> None:
            if not self.cancelled:
                self.function()

    monkeypatch.setattr(overlay_host.threading, "Timer", Timer)
    monkeypatch.setattr(overlay_host, "give_back_memory", lambda: calls.append(1.0))
    idle = overlay_host._IdleTrim(300)
    idle.schedule()
    idle.cancel()  # a selection came: the clock starts again after it
    idle.schedule()
    first, second = timers
    assert (first.delay, second.delay) == (300, 300) and first.cancelled
    first.fire()  # the cancelled one gives nothing back
    assert calls == []
    second.fire()  # a quiet spell after the last selection
    assert calls == [1.0]
    idle.schedule()  # each schedule replaces the one before
    assert second.cancelled and len(timers) == 3
    idle.cancel()
    assert timers[2].cancelled


GIVE_BACK = """
import gc, psutil
from daemon.platform import give_back_memory
proc = psutil.Process()
chunks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MB on the heap, not mmapped
pin = bytearray(64 * 1024)  # keeps the heap's top in use, so free() alone cannot trim it
del chunks
gc.collect()
before = proc.memory_info().rss
give_back_memory()
print(before, proc.memory_info().rss)
"""


def test_give_back_memory_returns_freed_heap_to_the_system():
    import subprocess
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        from daemon.platform import give_back_memory

        give_back_memory()  # a no-op there: it must not raise
        pytest.skip("malloc_trim is glibc's (Linux)")
    done = subprocess.run([sys.executable, "-c", GIVE_BACK], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    before, after = map(int, done.stdout.split())
    assert before - after > 100 * 2**20, (before, after)  # freed memory left the process


def test_a_helper_that_dies_is_reaped_at_once_not_left_a_zombie(tmp_path):
    """Seen: a killed overlay process stayed a zombie until the next region request."""
    import os
    import signal

    import psutil

    from daemon.engine.process import Child

    # The OCR helper waits for requests until told to stop: a helper like any other.
    child = Child("daemon.engine.ocr_worker", tmp_path / "helper.log")
    try:
        assert psutil.pid_exists(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        # Nobody asks the child anything (no poll): the reader's end-of-file reaps it.
        assert wait_for(lambda: not psutil.pid_exists(child.pid), 10), "left a zombie"
        assert child.proc.returncode == -signal.SIGKILL
    finally:
        child.end()
