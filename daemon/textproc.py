"""Clean model output: drop ``<think>…</think>`` reasoning, trim the rest.

Reasoning models (Qwen3, DeepSeek-R1 distills…) write their thoughts between
think tags; users want only the answer on their clipboard.  Some chat
templates open the tag inside the prompt, so the output may start mid-thought
and only show the closing tag.
"""

from __future__ import annotations

import re

OPEN, CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)


def strip_think(text: str) -> str:
    """The answer without any reasoning block, trimmed."""
    if CLOSE in text and (OPEN not in text or text.index(CLOSE) < text.index(OPEN)):
        text = text.split(CLOSE, 1)[1]
    return _BLOCK.sub("", text).strip()


class ThinkFilter:
    """Streaming version of :func:`strip_think` for tokens as they arrive.

    ``feed`` returns the text that is safe to show now; a partial tag at the end
    of a chunk is held back until the next chunk decides it.  A closing tag
    with no opening one means the text already shown was reasoning: the filter
    cannot take it back, so it sets ``shown_reasoning`` and the caller shows
    the cleaned final text instead.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False
        self._started = False
        self.shown_reasoning = False

    def feed(self, chunk: str) -> str:
        self._pending += chunk
        out: list[str] = []
        while self._pending:
            tags = (CLOSE,) if self._inside else (OPEN, CLOSE)
            hits = [(self._pending.find(t), t) for t in tags if t in self._pending]
            if hits:
                index, tag = min(hits)
                if not self._inside:
                    out.append(self._pending[:index])
                    if tag == CLOSE:
                        self.shown_reasoning = True
                self._pending = self._pending[index + len(tag) :]
                self._inside = tag == OPEN
                continue
            keep = max(_partial_suffix(self._pending, t) for t in tags)
            if not self._inside:
                out.append(self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep :]
            break
        return self._visible("".join(out))

    def flush(self) -> str:
        """Whatever was held back at the end of the stream."""
        rest = "" if self._inside else self._pending
        self._pending = ""
        return self._visible(rest)

    def _visible(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could start ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
