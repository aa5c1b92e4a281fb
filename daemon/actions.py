"""Run one action: payload → template → engine → cleaned text.

Pure orchestration: no display, no model library.  The engine is anything
that speaks :class:`~daemon.engine.Engine`, so tests pass a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.engine import Engine, Generation
from daemon.errors import Cancelled, EngineError, UserInputError
from daemon.models import ModelSpec
from daemon.prompts import Rendered, Template, render
from daemon.textproc import ThinkFilter, strip_think

IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM")


@dataclass(frozen=True)
class Payload:
    """What a source produced: text, or an image's encoded bytes."""

    text: str | None = None
    image: bytes | None = None
    source: str = "text"


@dataclass
class ActionResult:
    action: str
    text: str
    model: str
    timings: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"
    # True when reasoning or a stray tag was shown while streaming, so a
    # terminal should reprint the clean ``text``.
    stream_was_dirty: bool = False
    # What an OCR step read, for an action that went on from it (history, the window).
    read: str = ""

    def as_json(self) -> dict[str, Any]:
        """The fields ``yomitori do --json`` and ``yomitori trigger --json`` both print."""
        return {"action": self.action, "text": self.text, "model": self.model,
                "timings": self.timings, "finish_reason": self.finish_reason}  # fmt: skip


def is_image(data: bytes) -> bool:
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def check_payload(template: Template, payload: Payload, spec: ModelSpec | None = None) -> None:
    """Refuse a payload the template cannot use, before any model is loaded."""
    if template.kind == "conversation":
        raise not_a_conversation_here(template.name)
    if template.kind == "text":
        if payload.image is not None:
            raise UserInputError(
                f"'{template.name}' is a text action; give it text (--text or --stdin), "
                "not an image."
            )
        if not (payload.text or "").strip():
            raise UserInputError(f"'{template.name}' got empty text: there is nothing to work on.")
        return
    if payload.image is None:
        raise UserInputError(f"'{template.name}' needs an image (--image PATH).")
    if not is_image(payload.image):
        raise UserInputError(
            f"'{template.name}' got data that is not a PNG, JPEG, WebP, GIF or BMP image."
        )
    if spec is not None and not spec.vision:
        raise no_vision(template.name, spec.name)


def not_a_conversation_here(action: str) -> UserInputError:
    return UserInputError(
        f"'{action}' is a conversation that asks you questions; run it in a terminal with "
        f"yomitori do {action} --text …, as hotkeys and chains cannot run it yet."
    )


def no_vision(action: str, model: str) -> UserInputError:
    return UserInputError(
        f"'{action}' needs a vision model, and '{model}' has none: add its mmproj file to the "
        "model in models.toml, or pick a vision model with --model."
    )


def prepare(
    template: Template,
    payload: Payload,
    values: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    spec: ModelSpec | None = None,
) -> Rendered:
    """Validate and render; every user mistake surfaces here, before loading a model."""
    check_payload(template, payload, spec)
    return render(template, text=payload.text, image=payload.image, values=values, options=options)


def run_action(
    template: Template,
    payload: Payload,
    engine: Engine,
    spec: ModelSpec,
    values: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> ActionResult:
    """Run ``template`` on ``payload`` with ``spec`` loaded in ``engine``."""
    rendered = prepare(template, payload, values, options, spec)
    started = time.perf_counter()
    load_s = engine.load(spec)
    reply = generate(engine, rendered, on_text, template.name)
    timings = reply.generation.timings()
    timings["load_s"] = round(load_s + reply.generation.load_s, 4)
    timings["total_s"] = round(time.perf_counter() - started, 4)
    return ActionResult(
        action=template.name,
        text=reply.text,
        model=spec.name,
        timings=timings,
        finish_reason=reply.generation.finish_reason,
        stream_was_dirty=reply.shown_reasoning,
    )


@dataclass(frozen=True)
class Reply:
    """One generation's answer without reasoning, and what the stream showed."""

    text: str
    generation: Generation
    shown_reasoning: bool


def generate(
    engine: Engine, rendered: Rendered, on_text: Callable[[str], None] | None, action: str
) -> Reply:
    """Run ``rendered`` on ``engine``, streaming the visible text; a cancel or an empty
    answer raises."""
    think = ThinkFilter()

    def relay(piece: str) -> None:
        visible = think.feed(piece)
        if visible and on_text is not None:
            on_text(visible)

    generation = engine.generate(rendered.messages, rendered.options, relay)
    tail = think.flush()
    if tail and on_text is not None:
        on_text(tail)
    if generation.cancelled:
        raise Cancelled("Cancelled.")
    text = strip_think(generation.text)
    if not text:
        if generation.finish_reason == "length" and "<think>" in generation.text:
            raise EngineError(
                f"The model spent all {rendered.options.get('max_tokens', '?')} tokens thinking "
                "and gave no answer; raise max_tokens (--set max_tokens=…)."
            )
        raise EngineError(f"The model returned no text for '{action}'.")
    return Reply(text=text, generation=generation, shown_reasoning=think.shown_reasoning)
