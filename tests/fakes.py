"""The one stand-in engine the tests share (the service's, the actions', the tray's and the
conversation's tests all used their own; tests/test_engine_protocol.py checks this one
against the Engine protocol, member by member).

Each ``generate`` takes the next scripted step (``then``): a text (streamed in pieces of
``piece_chars``, or as the ``chunks`` given), a whole Generation, or an exception to raise.
Without a script it answers ``default_text``.  ``block()`` makes generate wait for
``release()`` or a cancel, so a test can look at the queue while a job runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from daemon.engine import Generation
from daemon.errors import WorkerCrashed
from daemon.models import ModelSpec

Step = str | BaseException | Generation


class FakeEngine:
    def __init__(
        self,
        default_text: str = "A cat sits.",
        chunks: list[str] | None = None,
        finish_reason: str = "stop",
        load_s: float = 0.125,
        generation_load_s: float = 0.0,
        piece_chars: int | None = None,
    ) -> None:
        self.chunks = chunks  # how the default answer streams (None: in one piece)
        self.default_text = "".join(chunks) if chunks is not None else default_text
        self.finish_reason = finish_reason
        self.load_s = load_s
        self.generation_load_s = generation_load_s
        self.piece_chars = piece_chars
        self.script: deque[Step] = deque()
        self.loads: list[ModelSpec] = []
        self.load_errors: deque[BaseException] = deque()
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []
        self.generation_ends: list[float] = []
        self.unload_times: list[float] = []
        self.cancels = 0
        self.entered = 0  # generations begun
        self.started = threading.Event()  # … set by the first
        self.loaded_reads = 0
        self._gate = threading.Event()
        self._gate.set()
        self._cancel = threading.Event()
        self._spec: ModelSpec | None = None
        self._loaded = False

    # -- test controls --
    def then(self, *steps: Step) -> FakeEngine:
        self.script.extend(steps)
        return self

    def block(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def unloads(self) -> int:
        return len(self.unload_times)

    @property
    def unloaded(self) -> bool:
        return bool(self.unload_times)

    @property
    def cancelled(self) -> bool:
        return self.cancels > 0

    # -- the protocol --
    @property
    def spec(self) -> ModelSpec | None:
        return self._spec

    @property
    def loaded(self) -> bool:
        self.loaded_reads += 1
        return self._loaded

    def load(self, spec: ModelSpec) -> float:
        if self._loaded and self._spec == spec:
            return 0.0
        if self.load_errors:
            raise self.load_errors.popleft()
        self.loads.append(spec)
        self._spec = spec
        self._loaded = True
        return self.load_s

    def generate(
        self,
        messages: list[dict[str, Any]],
        options: dict[str, Any],
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        # Copies: what a caller changes afterwards is not what it sent.
        self.calls.append(([dict(m) for m in messages], dict(options)))
        self.entered += 1
        self.started.set()
        deadline = time.monotonic() + 10
        while not self._gate.wait(0.005):
            if self._cancel.is_set():
                break
            if time.monotonic() > deadline:
                raise AssertionError("the test never released the fake engine")
        self.generation_ends.append(time.monotonic())
        if self._cancel.is_set():  # a cancelled generation takes no step of the script
            self._cancel.clear()
            return Generation(text="partial", finish_reason="cancelled")
        step = self.script.popleft() if self.script else None
        if isinstance(step, WorkerCrashed):
            self._loaded = False  # like the real worker: dead, spec kept for a restart
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Generation):
            return step
        text = self.default_text if step is None else step
        for piece in self._pieces(text, scripted=step is not None):
            if on_text is not None:
                on_text(piece)
        return Generation(text=text, finish_reason=self.finish_reason, ttft_s=0.01,
                          total_s=0.5, load_s=self.generation_load_s, prompt_tokens=12,
                          reused_tokens=8, completion_tokens=len(text.split()))  # fmt: skip

    def _pieces(self, text: str, scripted: bool) -> list[str]:
        if self.chunks is not None and not scripted:
            return list(self.chunks)
        if self.piece_chars:
            return [text[i : i + self.piece_chars] for i in range(0, len(text), self.piece_chars)]
        return [text]

    def cancel(self) -> None:
        self.cancels += 1
        if not self._gate.is_set():
            self._cancel.set()

    def unload(self) -> None:
        self.unload_times.append(time.monotonic())
        self._spec = None
        self._loaded = False

    def stats(self) -> dict[str, Any]:
        return {
            "loaded": self._loaded,
            "model": self._spec.name if self._loaded and self._spec else None,
            "pid": 4242 if self._loaded else None,
        }
