"""Actions as steps: a template, the built-in ``ocr``, or a chain of them.

``ocr_translate`` = ``ocr`` → ``translate_en``: each step's result is the next
one's input, and only the last step streams.  Pure orchestration like
:mod:`daemon.actions`: engines come in through :class:`Tools`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.actions import (
    ActionResult,
    Payload,
    no_vision,
    not_a_conversation_here,
    run_action,
)
from daemon.engine import Engine
from daemon.errors import UserInputError
from daemon.images import check_image, open_image, prepare_for_model
from daemon.models import ModelsConfig, ModelSpec, resolve_model
from daemon.prompts import Template, TemplateSet, render, split_pairs

OCR = "ocr"
BUILTIN_ACTIONS = (OCR,)
OCR_ENGINES = ("rapidocr", "tesseract", "vlm")
_TOKEN_KEYS = ("prompt_tokens", "reused_tokens", "completion_tokens")


@dataclass
class Tools:
    """What the steps may use; the model is resolved only if a step needs it."""

    engine: Engine | None = None
    spec: Callable[[], ModelSpec] | None = None
    ocr: Mapping[str, Any] = field(default_factory=dict)
    max_image_side: int = 1024


def steps_of(name: str, templates: TemplateSet, _seen: tuple[str, ...] = ()) -> list[str]:
    """The flat list of steps behind ``name`` (chains may contain chains)."""
    if name in _seen:
        raise UserInputError(f"The chain '{_seen[0]}' contains itself through '{name}'.")
    if name in BUILTIN_ACTIONS:
        return [name]
    template = templates.get(name)
    if template.kind != "chain":
        return [name]
    steps: list[str] = []
    for step in template.steps:
        steps += steps_of(step, templates, (*_seen, name))
    return steps


def _templates(steps: list[str], templates: TemplateSet) -> list[Template]:
    return [templates.get(s) for s in steps if s not in BUILTIN_ACTIONS]


def variables_of(name: str, templates: TemplateSet) -> set[str]:
    """Variables a binding or ``--set`` may give to ``name``."""
    steps = steps_of(name, templates)
    names = {v for t in _templates(steps, templates) for v in t.variables}
    return names | ({"engine"} if OCR in steps else set())


def split_values(
    name: str, templates: TemplateSet, pairs: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """``--set`` pairs → (variables for the steps, sampling options)."""
    values, options = split_pairs(name, sorted(variables_of(name, templates)), pairs)
    engine = values.get("engine")
    if engine is not None and engine not in OCR_ENGINES:
        raise UserInputError(f"engine must be one of {', '.join(OCR_ENGINES)}, not '{engine}'.")
    return values, options


def prefix_messages(
    name: str, templates: TemplateSet, values: Mapping[str, str]
) -> list[dict[str, Any]] | None:
    """The fixed start of what ``name`` will send its model, when an OCR step comes first
    and hands a text step its input (``ocr_translate``): the system part and the user
    part before the text.  Evaluated while the user selects the region, it makes the
    request after mouse-up a warm one.  None where nothing is known ahead."""
    steps = steps_of(name, templates)
    if len(steps) < 2 or steps[0] != OCR or steps[1] in BUILTIN_ACTIONS:
        return None
    template = templates.get(steps[1])
    if template.kind != "text":
        return None
    mine = {k: v for k, v in values.items() if k in template.variables}
    return render(template, text="", values=mine).messages


OCR_TITLE = "Read text"


def title_of(name: str, templates: TemplateSet) -> str:
    """The few words users see for an action (notifications, tray, result window)."""
    if name == OCR:
        return OCR_TITLE
    template = templates.templates.get(name)
    return (template.title if template is not None else "") or name


def value_problems(name: str, templates: TemplateSet, pairs: Mapping[str, str]) -> dict[str, str]:
    """Each given value the action would refuse when run (a choice that is not one, an
    option of the wrong type), by key: said when the config loads, not on a key press."""
    problems: dict[str, str] = {}
    known = variables_of(name, templates)
    steps = _templates(steps_of(name, templates), templates)
    for key, value in pairs.items():
        try:
            if key in known:
                for template in steps:
                    variable = template.variables.get(key)
                    if variable is not None:
                        variable.resolve(str(value), template.name)
            split_values(name, templates, {key: value})
        except UserInputError as err:
            problems[key] = str(err)
    return problems


def wants_image(name: str, templates: TemplateSet) -> bool:
    first = steps_of(name, templates)[0]
    return first == OCR or templates.get(first).kind == "image"


def needs_model(name: str, templates: TemplateSet, values: Mapping[str, str]) -> bool:
    steps = steps_of(name, templates)
    return any(s != OCR for s in steps) or values.get("engine") == "vlm"


def needs_vision(name: str, templates: TemplateSet, values: Mapping[str, str]) -> bool:
    steps = steps_of(name, templates)
    if OCR in steps and values.get("engine") == "vlm":
        return True
    return any(s != OCR and templates.get(s).kind == "image" for s in steps)


def model_for(name: str, templates: TemplateSet, values: Mapping[str, str],
              choice: str | None, models: ModelsConfig) -> ModelSpec | None:  # fmt: skip
    """The model the action will run on (None: it needs none), refused before it loads
    when it cannot do the action."""
    if not needs_model(name, templates, values):
        return None
    vision = needs_vision(name, templates, values)
    spec = resolve_model(choice, models, vision_for=name if vision else None)
    # A server says whether its model sees images only when asked (runner.choose_model).
    if vision and spec.local_file and not spec.vision:
        raise no_vision(name, spec.name)
    return spec


def validate(name: str, templates: TemplateSet, values: Mapping[str, str]) -> None:
    """Render each template step once with these values: bad choices fail now."""
    for template in _templates(steps_of(name, templates), templates):
        mine = {k: v for k, v in values.items() if k in template.variables}
        render(template, text="x", values=mine)


def is_conversation(name: str, templates: TemplateSet) -> bool:
    """Whether ``name`` asks the user questions (:mod:`daemon.conversation`)."""
    return name not in BUILTIN_ACTIONS and templates.get(name).kind == "conversation"


def check_input(
    name: str, templates: TemplateSet, payload: Payload, conversation: bool = False
) -> None:
    """Refuse the wrong kind of input before any engine starts; a conversation only where
    the caller drives one (``conversation``), and never inside a chain."""
    steps = steps_of(name, templates)
    for step in _templates(steps, templates):
        if step.kind == "conversation" and not (conversation and len(steps) == 1):
            raise not_a_conversation_here(step.name)
    if wants_image(name, templates):
        if payload.image is None:
            raise UserInputError(
                f"'{name}' needs an image (--image PATH, a region, or a copied image)."
            )
        check_image(payload.image)  # the header is enough; the step decodes it once
    elif payload.image is not None:
        raise UserInputError(
            f"'{name}' is a text action; give it text (--text or --stdin), not an image."
        )
    elif not (payload.text or "").strip():
        raise UserInputError(f"'{name}' got empty text: there is nothing to work on.")


def run(
    name: str,
    templates: TemplateSet,
    payload: Payload,
    tools: Tools,
    values: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> ActionResult:
    started = time.perf_counter()
    values = dict(values or {})
    check_input(name, templates, payload)
    steps = steps_of(name, templates)
    current = payload
    totals: dict[str, Any] = {"load_s": 0.0, **dict.fromkeys(_TOKEN_KEYS, 0)}
    model = ""
    dirty = False
    finish = "stop"
    read = ""
    for index, step in enumerate(steps):
        last = index == len(steps) - 1
        if step == OCR:
            text, timings = _ocr(current, templates, tools, values.get("engine", "rapidocr"))
            model = model or values.get("engine", "rapidocr")
            read = read or text
        else:
            template = templates.get(step)
            mine = {k: v for k, v in values.items() if k in template.variables}
            if current.image is not None:
                data, prep = prepare_for_model(current.image, tools.max_image_side)
                current = Payload(image=data, source=current.source)
                totals.update(prep)
            result = _llm(template, current, tools, mine, options if last else None,
                          on_text if last else None)  # fmt: skip
            text, timings, model = result.text, result.timings, result.model
            dirty = result.stream_was_dirty
            # A step cut at max_tokens cuts what the chain gives, wherever it is.
            finish = "length" if finish == "length" else result.finish_reason
        for key in ("load_s", *_TOKEN_KEYS):
            totals[key] += timings.get(key) or 0
        for key in ("ttft_s", "ocr_s", "vertical", "prompt_eval_s", "image_encode_s"):
            if key in timings:
                totals[key] = timings[key]
        current = Payload(text=text, source=current.source)
    totals["total_s"] = round(time.perf_counter() - started, 4)
    totals["load_s"] = round(totals["load_s"], 4)
    return ActionResult(action=name, text=current.text or "", model=model, timings=totals,
                        finish_reason=finish, stream_was_dirty=dirty, read=read)  # fmt: skip


def _llm(template: Template, payload: Payload, tools: Tools, values: Mapping[str, str],
         options: Mapping[str, Any] | None, on_text: Any) -> ActionResult:  # fmt: skip
    if tools.engine is None or tools.spec is None:
        raise UserInputError(f"'{template.name}' needs a model; none is available here.")
    return run_action(template, payload, tools.engine, tools.spec(), values, options, on_text)


def _ocr(payload: Payload, templates: TemplateSet, tools: Tools,
         engine: str) -> tuple[str, dict[str, Any]]:  # fmt: skip
    if payload.image is None:
        raise UserInputError("OCR needs an image.")
    if engine == "vlm":
        data, _ = prepare_for_model(payload.image, tools.max_image_side)
        started = time.perf_counter()
        result = _llm(templates.get("ocr_vlm"), Payload(image=data), tools, {}, None, None)
        return result.text, {**result.timings, "ocr_s": round(time.perf_counter() - started, 4)}
    reader = tools.ocr.get(engine)
    if reader is None:
        raise UserInputError(f"The OCR engine '{engine}' is not available here.")
    found = reader.recognize(open_image(payload.image))
    if not found.text.strip():
        raise UserInputError("No text was found in the image.")
    return found.text, {**found.timings, "vertical": found.vertical}
