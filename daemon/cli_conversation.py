"""``yomitori do`` for a conversation action (the prompt builder).

In a terminal it asks: each question is printed (streamed), an answer line is
read, GO (or an empty line, or Ctrl-D) writes the prompt now.  Scripted, the
answers come from ``--answer`` (repeatable) or from the lines of stdin, and the
questions end with GO when the answers run out.  ``--json`` prints the final
prompt and every question with its answer as one JSON line.

With ``--stdin`` and no ``--answer``, stdin's first line is the idea and the
lines after it are the answers.  The final prompt goes to stdout; when stdout is
not a terminal, the questions of an interactive run go to stderr so that
``yomitori do prompt_builder --text 猫 > prompt.txt`` keeps only the prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from daemon.actions import Payload
from daemon.conversation import Conversation, Turn, is_go
from daemon.errors import Cancelled, UserInputError
from daemon.prompts import TemplateSet

HINT = ("(Answer in a word or two, or pick an example; GO, おまかせ or an empty line: "
        "write the prompt now.)")  # fmt: skip


def cmd_converse(args: argparse.Namespace, templates: TemplateSet) -> int:
    from daemon import pipeline, runner
    from daemon.cli import load_settings, parse_sets
    from daemon.models import load_models

    name = args.action
    if args.image is not None:
        raise UserInputError(f"'{name}' is a text action; give it text (--text or --stdin), "
                             "not an image.")  # fmt: skip
    interactive = not args.answer and _isatty(sys.stdin)
    shown: IO[str] | None = sys.stdout if _isatty(sys.stdout) and not args.json else None
    if shown is None and interactive:
        shown = sys.stderr
    idea, answers = _idea_and_answers(args, shown if interactive else None)
    pairs = parse_sets(args.set)
    if args.engine:
        pairs["engine"] = args.engine
    settings = load_settings()
    job = runner.plan(name, templates, pairs, settings.ocr_engine)
    pipeline.check_input(name, templates, Payload(text=idea, source="text"), conversation=True)
    spec = runner.choose_model(job, templates, args.model, load_models())
    if spec is None:  # pragma: no cover - a conversation always needs a model
        raise UserInputError(f"'{name}' needs a model.")
    engines = runner.Engines(keep_alive_s=lambda: settings.keep_alive_s)
    try:
        conversation = runner.conversation(job, templates, spec, engines)
        final = _converse(conversation, idea, answers, shown, interactive)
    except KeyboardInterrupt:
        raise Cancelled("Cancelled.") from None
    finally:
        engines.close()
    if args.json:
        print(json.dumps(
            {"action": name, "text": final.text, "model": spec.name,
             "japanese": conversation.japanese, "questions": final.number,
             "turns": conversation.transcript(), "finish_reason": final.finish_reason,
             "timings": final.timings},
            ensure_ascii=False,
        ))  # fmt: skip
    elif shown is not sys.stdout:
        print(final.text)
    return 0


def _converse(conversation: Conversation, idea: str, answers: Callable[[], str],
              shown: IO[str] | None, interactive: bool) -> Turn:  # fmt: skip
    """Ask until the final prompt; what the user sees goes to ``shown``."""
    streamed: list[str] = []

    def show(piece: str) -> None:
        streamed.append(piece)
        if shown is not None:
            shown.write(piece)
            shown.flush()

    def begin(label: str) -> Callable[[str], None]:
        streamed.clear()
        if shown is not None:
            shown.write(label)
            shown.flush()
        return show

    def end(turn: Turn) -> None:
        if shown is None:
            return
        shown.write("\n")
        if turn.stream_was_dirty or "".join(streamed).strip() != turn.text:
            shown.write(f"---\n{turn.text}\n")
        shown.flush()

    most = conversation.template.max_questions
    if interactive and shown is not None:
        shown.write(HINT + "\n")
    turn = conversation.start(idea, begin(f"(1/{most}) "))
    while not turn.is_final:
        end(turn)
        reply = answers()
        if shown is not None and not interactive:
            shown.write(f"> {reply}\n")
        last = is_go(reply) or turn.number >= most
        turn = conversation.answer(reply, begin("" if last else f"({turn.number + 1}/{most}) "))
    end(turn)
    return turn


def _idea_and_answers(
    args: argparse.Namespace, prompt: IO[str] | None
) -> tuple[str, Callable[[], str]]:
    """The idea and where each answer comes from (an empty string once they run out: GO);
    ``prompt``: where to write "> " before reading a line from a terminal."""

    def read() -> str:
        return _read_line(prompt)

    if args.answer:
        given: Iterator[str] = iter(args.answer)
        if args.stdin:
            from daemon.cli import read_payload

            return read_payload(args).text or "", lambda: next(given, "")
        return args.text, lambda: next(given, "")
    if args.stdin:
        return read(), read
    return args.text, read


def _read_line(prompt: IO[str] | None) -> str:
    """One line of stdin without its end; at the end of input, empty (GO)."""
    if prompt is sys.stdout:
        try:
            return input("> ")  # line editing in a terminal
        except EOFError:
            return ""
    if prompt is not None:
        prompt.write("> ")
        prompt.flush()
    data = sys.stdin.buffer.readline()
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UserInputError("stdin is not UTF-8 text.") from None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
