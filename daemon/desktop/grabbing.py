"""What the grabbing hotkey backends share: the report of a chord they could not take,
and the hand-over of a new chord set to the one thread that owns their grabs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

Hook = Callable[[], None]


@dataclass(frozen=True)
class Taken:
    """A chord that could not be grabbed, and why (a clause: "another program holds it")."""

    chord: str
    reason: str


class ChordUnknown(ValueError):
    """This system has no key for the chord; the message says which, as a clause."""


class BindRequests:
    """Chord sets waiting for the thread that owns the grabs, and the answers it gives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[dict[str, Hook], Future[list[Taken]]]] = []
        self._closed = False

    def add(self, chords: Mapping[str, Hook]) -> Future[list[Taken]]:
        future: Future[list[Taken]] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the hotkeys were closed")
            self._waiting.append((dict(chords), future))
        return future

    def withdraw(self, future: Future[list[Taken]]) -> None:
        with self._lock:
            self._waiting = [w for w in self._waiting if w[1] is not future]

    def serve(self, apply: Callable[[Mapping[str, Hook]], list[Taken]]) -> None:
        """On the owning thread: apply each waiting set in turn and answer its caller."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for chords, future in waiting:
            try:
                future.set_result(apply(chords))
            except Exception as err:  # a bad chord must not end the owning thread
                future.set_exception(err)

    def close(self, reason: str) -> bool:
        """Take no more sets and fail the waiting ones; False if already closed."""
        with self._lock:
            was_open, self._closed = not self._closed, True
            waiting, self._waiting = self._waiting, []
        for _chords, future in waiting:
            future.set_exception(RuntimeError(reason))
        return was_open
