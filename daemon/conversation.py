"""An action that asks before it answers: questions one at a time, then the result.

The prompt builder (``prompts/prompt_builder.toml``) asks about the picture the
user has in mind (subject, style, setting, mood…), each question with a few
example answers, and then writes one English prompt.  yomitori, not the model,
decides when the questions end: after ``max_questions`` answers, or as soon as
the user says GO (おまかせ, or nothing at all), it sends the template's ``final``
request itself.  Small local models do not reliably stop on their own.

Every turn sends the whole history (system, the opening turn, each question and
answer), so any chat engine serves.  User and assistant turns alternate, as some
chat templates demand: the last answer and the final request share one turn.
One turn runs at a time; :meth:`Conversation.cancel` stops it from any thread,
and a turn that fails or is cancelled leaves the history as it was, so the same
call can simply be made again.  No display here: ``yomitori do`` and the result
window drive it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.actions import generate
from daemon.engine import Engine
from daemon.errors import UserInputError
from daemon.models import ModelSpec
from daemon.prompts import ANSWER_VAR, INPUT_VAR, Rendered, Template, fill, resolve_values
from daemon.textproc import clean_prompt, has_japanese

log = logging.getLogger(__name__)

QUESTION, FINAL = "question", "final"
# Answers that mean "enough questions, write it now", compared after is_go's folding
# (full-width ＧＯ and half-width ｺﾞｰ included).  Nothing typed counts too.
GO_WORDS = frozenset(
    {"go", "done", "ゴー", "ごー", "おまかせ", "お任せ", "おまかせで", "お任せで", "おまかせします",
     "お任せします", "まかせる", "任せる", "以上", "完成", "おわり", "終わり"}
)  # fmt: skip
_GO_TRIM = " \t\u3000\"'`「」『』.。!！?？、,"

_QUESTION_LABEL = re.compile(r"^\s*(?:question\s*\d*|質問\s*\d*)\s*[:：.]\s*", re.IGNORECASE)
_CHOICE_LABEL = re.compile(r"^[\s*_-]*[^\s:：/／|｜\d][^:：/／|｜\n]{0,19}[:：]\s*")
_CHOICE_SPLIT = re.compile(r"\s*[/／|｜]\s*")
_CHOICE_TRIM = " \t\u3000*・\"'「」『』。."
_INLINE_CHOICES = re.compile(r"[(（]([^()（）]*[/／|｜][^()（）]*)[)）]\s*[?？]?\s*$")
_BULLET = re.compile(r"^\s*(?:[-*•・]|\d+[.)）]|[a-eA-E][.)）])\s*")


def is_go(answer: str) -> bool:
    """Whether the user's answer ends the questions: GO, おまかせ, nothing…"""
    folded = unicodedata.normalize("NFKC", answer).strip(_GO_TRIM).casefold()
    return folded in GO_WORDS or not folded


def split_question(text: str) -> tuple[str, tuple[str, ...]]:
    """A question as the model wrote it → (the question, its example answers).

    The examples may be a line of ``a / b / c`` (after a label like ``Examples:`` or
    ``例:``), a parenthesised ``(a / b / c)`` ending the question, or bullet lines at the
    end.  Whatever else the model wrote, the examples are empty and the text stays whole.
    """
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "", ()
    for index in range(len(lines) - 1, 0, -1):
        choices = _choices(_CHOICE_SPLIT.split(_CHOICE_LABEL.sub("", lines[index])))
        if choices:
            return "\n".join(lines[:index]), choices
    inline = _INLINE_CHOICES.search(lines[-1])
    if inline is not None:
        choices = _choices(_CHOICE_SPLIT.split(inline.group(1)))
        if choices:
            last = (lines[-1][: inline.start()].rstrip() + "?").replace("??", "?")
            return "\n".join([*lines[:-1], last]), choices
    bullets = 0
    while bullets < len(lines) - 1 and _BULLET.match(lines[-1 - bullets]):
        bullets += 1
    choices = _choices([_BULLET.sub("", line) for line in lines[len(lines) - bullets :]])
    if bullets >= 2 and choices:
        head = lines[: len(lines) - bullets]
        if len(head) > 1 and head[-1].strip().endswith((":", "：")):
            head = head[:-1]  # "Examples:" alone on its line
        return "\n".join(head), choices
    return "\n".join(lines), ()


def _choices(parts: list[str]) -> tuple[str, ...]:
    found = tuple(p.strip(_CHOICE_TRIM) for p in parts)
    if 2 <= len(found) <= 8 and all(0 < len(p) <= 40 for p in found):
        return found
    return ()


@dataclass(frozen=True)
class Turn:
    """What one turn produced: a question to answer, or the final result."""

    kind: str  # QUESTION or FINAL
    # A question as the model wrote it (its example answers included, reasoning not);
    # the final result cleaned: one paragraph, no preface, no quotes.
    text: str
    # Questions asked so far, this one included (the final turn: how many were asked).
    number: int
    question: str = ""  # the question without its example answers (QUESTION only)
    choices: tuple[str, ...] = ()  # its example answers, for buttons; may be empty
    finish_reason: str = "stop"
    timings: dict[str, Any] = field(default_factory=dict)
    # Reasoning or a stray tag was streamed: show ``text`` again, clean.
    stream_was_dirty: bool = False

    @property
    def is_final(self) -> bool:
        return self.kind == FINAL


class Conversation:
    """Drive a ``kind = "conversation"`` template on a loaded (or loadable) engine.

    ``start(idea)`` returns the first question, each ``answer(text)`` the next one or,
    when the questions are over, the final result (``turn.is_final``); ``finish()``
    asks for the result now.  Bad ``values`` fail here, before any model work.
    """

    def __init__(
        self,
        template: Template,
        engine: Engine,
        spec: ModelSpec,
        values: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if template.kind != "conversation":
            raise UserInputError(f"'{template.name}' is not a conversation action.")
        self.template = template
        self.engine = engine
        self.spec = spec
        self._values = resolve_values(template, values)
        self._options = {**template.options, **(options or {})}
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._questions: list[Turn] = []
        self._answers: list[str] = []
        self.final: Turn | None = None
        self._input = ""
        # Set by start(): the input has kana or kanji, so the questions come in Japanese.
        self.japanese = False

    # -- state ---------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._messages)

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def running(self) -> bool:
        """A turn is being generated right now."""
        return self._lock.locked()

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The history the next turn builds on (a copy)."""
        return [dict(m) for m in self._messages]

    @property
    def questions(self) -> list[Turn]:
        return list(self._questions)

    @property
    def answers(self) -> list[str]:
        return list(self._answers)

    def transcript(self) -> list[dict[str, Any]]:
        """Each question with its example answers and the user's answer (None: not yet)."""
        return [
            {"question": q.text, "choices": list(q.choices),
             "answer": self._answers[i] if i < len(self._answers) else None}
            for i, q in enumerate(self._questions)
        ]  # fmt: skip

    # -- turns ---------------------------------------------------------------

    def start(self, input_text: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """Open with the user's idea; the first question."""
        if not input_text.strip():
            raise UserInputError(
                f"'{self.template.name}' got empty text: there is nothing to work on."
            )
        with self._turn():
            if self.started:
                raise UserInputError("This conversation has started already; start a new one.")
            japanese = has_japanese(input_text)
            system = fill(self.template.system, self._values).strip()
            if japanese and self.template.japanese.strip():
                note = fill(self.template.japanese, self._values).strip()
                system = f"{system}\n\n{note}" if system else note
            opening = fill(self.template.user, {**self._values, INPUT_VAR: input_text})
            history = [{"role": "system", "content": system}] if system else []
            log.debug("conversation %s opens (japanese=%s): %r",
                      self.template.name, japanese, input_text)  # fmt: skip
            turn = self._generate([*history, {"role": "user", "content": opening}], False, on_text)
            self.japanese, self._input = japanese, input_text
            return turn

    def answer(self, text: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """The user's answer to the last question: the next question, or the final result
        when the answer is GO (おまかせ, empty…) or the last question has been answered."""
        with self._turn():
            self._check_open()
            asked = len(self._questions)
            go = is_go(text)
            parts = [] if go else [fill(self.template.answer, {**self._values, ANSWER_VAR: text})]
            final = go or asked >= self.template.max_questions
            if final:
                parts.append(self._final_request())
            log.debug("conversation %s answer %d (go=%s): %r",
                      self.template.name, asked, go, text)  # fmt: skip
            message = {"role": "user", "content": "\n\n".join(parts)}
            turn = self._generate([*self._messages, message], final, on_text)
            self._answers.append(text)
            return turn

    def finish(self, on_text: Callable[[str], None] | None = None) -> Turn:
        """Skip the remaining questions: the final result now."""
        return self.answer("", on_text)

    def cancel(self) -> None:
        """Stop the running turn (any thread); it raises Cancelled and changes nothing."""
        self.engine.cancel()

    # -- inside --------------------------------------------------------------

    def _turn(self) -> _OneTurn:
        return _OneTurn(self._lock, self.template.name)

    def _check_open(self) -> None:
        if not self.started:
            raise UserInputError("This conversation has not started; call start first.")
        if self.done:
            raise UserInputError("This conversation has ended; start a new one.")

    def _final_request(self) -> str:
        return fill(self.template.final, {**self._values, INPUT_VAR: self._input}).strip()

    def _generate(
        self,
        messages: list[dict[str, Any]],
        final: bool,
        on_text: Callable[[str], None] | None,
    ) -> Turn:
        """Run ``messages``; only when that worked, record them and the turn."""
        started = time.perf_counter()
        load_s = 0.0
        if not (self.engine.loaded and self.engine.spec == self.spec):
            load_s = self.engine.load(self.spec)
        reply = generate(self.engine, Rendered(messages=messages, options=dict(self._options)),
                         on_text, self.template.name)  # fmt: skip
        timings = reply.generation.timings()
        timings["load_s"] = round(load_s + reply.generation.load_s, 4)
        timings["total_s"] = round(time.perf_counter() - started, 4)
        common: dict[str, Any] = {
            "number": len(self._questions) + (0 if final else 1),
            "finish_reason": reply.generation.finish_reason,
            "timings": timings,
            "stream_was_dirty": reply.shown_reasoning,
        }
        if final:
            turn = Turn(kind=FINAL, text=clean_prompt(reply.text), **common)
            self.final = turn
        else:
            text = _QUESTION_LABEL.sub("", reply.text.strip())
            question, choices = split_question(text)
            turn = Turn(kind=QUESTION, text=text, question=question, choices=choices, **common)
            self._questions.append(turn)
        self._messages = [*messages, {"role": "assistant", "content": reply.text}]
        return turn


class _OneTurn:
    """Holds the conversation's lock for one turn; a second caller is told, not queued."""

    def __init__(self, lock: threading.Lock, name: str) -> None:
        self._lock = lock
        self._name = name

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise UserInputError(
                f"A turn of '{self._name}' is still running; wait for it or cancel it."
            )

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
