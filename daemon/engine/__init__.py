"""The model side, behind one small protocol free of llama-cpp-python types.

An engine loads a :class:`~daemon.models.ModelSpec`, streams a generation for
chat messages, can cancel it from another thread, unloads, and reports stats.
The first engine is :class:`~daemon.engine.client.WorkerEngine` (llama-cpp-python
in a child process); a managed llama-server or an OpenAI-compatible endpoint
can implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.models import ModelSpec

TextSink = Callable[[str], None]


@dataclass
class Generation:
    """One finished (or cancelled) generation, raw text as the model wrote it."""

    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    ttft_s: float | None = None
    total_s: float = 0.0
    load_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"

    def timings(self) -> dict[str, Any]:
        return {
            "load_s": round(self.load_s, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "total_s": round(self.total_s, 4),
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "completion_tokens": self.completion_tokens,
            **self.extra,
        }


class Engine(Protocol):
    """What the action runner needs from a model backend."""

    @property
    def spec(self) -> ModelSpec | None:
        """The model loaded (or to be reloaded on demand), if any."""

    @property
    def loaded(self) -> bool:
        """Whether the model is resident right now (False after unload or a crash)."""

    def load(self, spec: ModelSpec) -> float:
        """Make ``spec`` resident; return the seconds it took (0 when it already was)."""

    def generate(
        self,
        messages: list[dict[str, Any]],
        options: dict[str, Any],
        on_text: TextSink | None = None,
    ) -> Generation:
        """Run one request, calling ``on_text`` with each piece as it streams."""

    def cancel(self) -> None:
        """Stop the running generation, if any (callable from any thread)."""

    def unload(self) -> None:
        """Give the model's memory (and VRAM) back."""

    def stats(self) -> dict[str, Any]:
        """State for ``status`` displays: loaded, model, memory, last timings."""
