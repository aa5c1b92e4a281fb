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


# Kana (full and half width), the iteration mark, CJK ideographs: text a Japanese user wrote.
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3005\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def has_japanese(text: str) -> bool:
    """Whether ``text`` has kana or kanji in it (kanji alone counts: 猫)."""
    return _JAPANESE.search(text) is not None


_FENCE = re.compile(r"^\s*```\w*\s*$", re.MULTILINE)
_PREFACE = re.compile(
    r"^(?:sure|okay|ok|certainly|of course|great|alright|absolutely|here(?:'s| is| are))\b",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^[\s*_#>-]*(?:(?:final|english|image|generated|sd|flux)\s+)*prompt\s*\**\s*[:：]\s*\**\s*",
    re.IGNORECASE,
)
# "Here is the prompt: A cat…" on one line.
_INLINE_PREFACE = re.compile(_PREFACE.pattern + r"[^:：\n]{0,60}[:：]\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("「", "」"), ("『", "』"), ("`", "`"))


def clean_prompt(text: str) -> str:
    """A model's final answer as one paragraph of prompt: no reasoning, no "Here is your
    prompt:" preface or "Prompt:" label, no notes after it, no quotes around it."""
    text = _FENCE.sub("", strip_think(text)).replace("**", "")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    while len(paragraphs) > 1 and _is_preface(paragraphs[0]):
        paragraphs.pop(0)
    if not paragraphs:
        return ""
    lines = [line.strip() for line in paragraphs[0].splitlines() if line.strip()]
    if len(lines) > 1 and _is_preface(lines[0]):
        lines.pop(0)
    lines[0] = _INLINE_PREFACE.sub("", lines[0])
    lines = [_BULLET.sub("", _LABEL.sub("", line)).strip() for line in lines]
    lines = [line for line in lines if line]
    tags = all("," in line or len(line.split()) <= 3 for line in lines) and not any(
        line.endswith(".") for line in lines
    )
    joined = ""
    for line in lines:
        if joined:
            joined += " " if joined.endswith(",") or not tags else ", "
        joined += line
    joined = re.sub(r"\s+", " ", joined).strip()
    for opening, closing in _QUOTES:
        if len(joined) > 1 and joined.startswith(opening) and joined.endswith(closing):
            joined = joined[len(opening) : -len(closing)].strip()
    return joined or re.sub(r"\s+", " ", strip_think(text))


def _is_preface(text: str) -> bool:
    """A line that introduces the answer rather than being part of it."""
    text = text.strip()
    if "\n" in text:
        return False
    if text.endswith((":", "：")):
        return True
    return _PREFACE.match(text) is not None and len(text) < 80
