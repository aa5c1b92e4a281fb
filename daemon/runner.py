"""Prepare and run one job, for ``yomitori do`` and the daemon alike.

:func:`plan` checks the action, its variables and options (no model, no input
yet); :func:`choose_model` picks the model and asks its backend whether it can
run (a file that exists, a server that answers and has it) and whether it sees
images; :func:`execute` takes the payload through the steps on the engine of
that model.  :class:`Engines` holds one engine per backend instance, so a
binding on an Ollama model and one on the in-process worker live side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon import backends, pipeline
from daemon.actions import ActionResult, Payload, no_vision
from daemon.conversation import Conversation
from daemon.engine import Engine
from daemon.errors import NoModelConfigured
from daemon.models import ModelsConfig, ModelSpec, check_spec
from daemon.prompts import TemplateSet

log = logging.getLogger(__name__)


@dataclass
class Plan:
    action: str
    values: dict[str, str]
    options: dict[str, Any]


def plan(action: str, templates: TemplateSet, pairs: Mapping[str, str], ocr_engine: str) -> Plan:
    """The action's variables and sampling options, checked; every mistake here is the
    user's and costs no model load."""
    pairs = dict(pairs)
    if pipeline.OCR in pipeline.steps_of(action, templates):
        pairs.setdefault("engine", ocr_engine)
    values, options = pipeline.split_values(action, templates, pairs)
    pipeline.validate(action, templates, values)
    return Plan(action=action, values=values, options=options)


def choose_model(
    job: Plan, templates: TemplateSet, choice: str | None, models: ModelsConfig
) -> ModelSpec | None:
    """The model the job runs on (None: it needs none), as its backend found it."""
    try:
        spec = pipeline.model_for(job.action, templates, job.values, choice, models)
    except NoModelConfigured as err:
        raise NoModelConfigured(f"{err}{servers_found()}") from None
    if spec is None:
        return None
    spec = check_spec(spec)
    if pipeline.needs_vision(job.action, templates, job.values) and not spec.vision:
        raise no_vision(job.action, spec.name)
    return spec


def servers_found() -> str:
    """Local servers and their models, with the command that uses one (for the message
    when no model is configured); empty when none answers."""
    from daemon.cli_models import add_command, discover, suggest_name

    try:
        found = discover(timeout=0.3)
    except Exception:  # a hint must never hide the real message
        log.debug("discovery failed", exc_info=True)
        return ""
    if not found:
        return ""
    listed = ", ".join(f"{e['model']} ({e['server']} at {e['url']})" for e in found[:4])
    first = found[0]
    return (f" Found on this machine: {listed}. To use the first: "
            f"{add_command(first, suggest_name(str(first['model']), set()))}")  # fmt: skip


class Engines:
    """The engines in use, made on first use: one per :func:`backends.engine_key`."""

    def __init__(
        self,
        factory: Callable[[ModelSpec], Engine] = backends.make_engine,
        keep_alive_s: Callable[[], float] | None = None,
    ) -> None:
        self._factory = factory
        self._keep_alive_s = keep_alive_s
        self._engines: dict[str, Engine] = {}
        self.last: Engine | None = None

    def get(self, spec: ModelSpec) -> Engine:
        key = backends.engine_key(spec)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._factory(spec)
            self._engines[key] = engine
        if self._keep_alive_s is not None and hasattr(engine, "set_keep_alive"):
            engine.set_keep_alive(self._keep_alive_s())
        self.last = engine
        return engine

    def all(self) -> list[Engine]:
        return list(self._engines.values())

    @property
    def loaded(self) -> bool:
        return any(engine.loaded for engine in self.all())

    @staticmethod
    def expires(engine: Engine) -> bool:
        """Whether keep_alive may unload it: not a server shared with other programs."""
        spec = engine.spec
        return not (spec is not None and spec.opt("share"))

    @property
    def expiring(self) -> bool:
        """Something resident that keep_alive would unload."""
        return any(engine.loaded and self.expires(engine) for engine in self.all())

    def cancel(self) -> None:
        for engine in self.all():
            engine.cancel()

    def unload(self, idle: bool = False) -> None:
        """Every model out of memory (Free VRAM, quit); ``idle``: those keep_alive may
        unload (a shared server stays for the programs using it)."""
        for engine in self.all():
            if idle and not self.expires(engine):
                continue
            try:
                engine.unload()
            except Exception:  # one backend failing must not keep the others resident
                log.exception("unloading %s failed", type(engine).__name__)

    def close(self) -> None:
        """Let go of every engine: our processes exit, other servers keep their models."""
        for engine in self.all():
            closer = getattr(engine, "close", engine.unload)
            try:
                closer()
            except Exception:
                log.exception("closing %s failed", type(engine).__name__)

    def stats(self) -> list[dict[str, Any]]:
        return [engine.stats() for engine in self.all()]


def load_for(engine: Engine, spec: ModelSpec, on_loading: Callable[[], None] | None) -> float:
    """Make ``spec`` resident in ``engine``; seconds it took."""
    if engine.loaded and engine.spec == spec:
        return 0.0
    if on_loading is not None:
        on_loading()
    return engine.load(spec)


def execute(
    job: Plan,
    templates: TemplateSet,
    payload: Payload,
    spec: ModelSpec | None,
    engines: Engines,
    ocr: Mapping[str, Any],
    max_image_side: int,
    on_text: Callable[[str], None] | None = None,
    on_loading: Callable[[], None] | None = None,
    on_busy: Callable[[], None] | None = None,
) -> ActionResult:
    """The payload through the job's steps; ``load_s`` counts a load done for it.

    The caller has checked the payload (``pipeline.check_input``) before choosing the
    model, so that a wrong input costs no model check or load."""
    engine = engines.get(spec) if spec is not None else None
    load_s = 0.0
    if engine is not None and spec is not None:
        load_s = load_for(engine, spec, on_loading)
    if on_busy is not None:
        on_busy()
    tools = pipeline.Tools(engine=engine, spec=lambda: spec, ocr=ocr,
                           max_image_side=max_image_side)  # fmt: skip
    result = pipeline.run(job.action, templates, payload, tools, job.values, job.options, on_text)
    result.timings["load_s"] = round(result.timings["load_s"] + load_s, 4)
    return result


def conversation(
    job: Plan, templates: TemplateSet, spec: ModelSpec, engines: Engines
) -> Conversation:
    """A conversation for ``job`` (``pipeline.is_conversation``) on its model's engine; the
    model loads with the first turn, unless it is resident already."""
    return Conversation(templates.get(job.action), engines.get(spec), spec, job.values,
                        job.options)  # fmt: skip
