"""The daemon's loop: jobs from hotkeys, the tray and ``yomitori trigger``, run one
at a time on the action thread.

Headless by design: the desktop (clipboard, synthesized keys, notifications)
comes in through :class:`DesktopIO`, so this module runs and is tested
without a display.  Errors are caught once, here: logged (never with user
text above DEBUG), shown as a notification, and the loop keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon import pipeline, runner
from daemon.actions import ActionResult
from daemon.config import Config, check_actions, load_config, template_folders
from daemon.engine import Engine
from daemon.errors import Cancelled, ConfigError, UserInputError, YomitoriError
from daemon.jobs import DesktopIO, Job, deliver, job_from_binding, read_source
from daemon.models import (
    ModelsConfig,
    ModelSpec,
    check_spec,
    chosen_name,
    load_models,
    resolve_model,
)
from daemon.pipeline import BUILTIN_ACTIONS
from daemon.prompts import OPTION_TYPES, TemplateSet, load_templates
from daemon.runner import Engines
from daemon.sinks.history import History

__all__ = ["BUILTIN_ACTIONS", "BUSY_NOTE_S", "DesktopIO", "Job", "Service", "job_from_binding"]

log = logging.getLogger(__name__)

# A burst of presses while busy gives one "busy" notification, not one each.
BUSY_NOTE_S = 3.0


@dataclass
class _Control:
    """Work for the action thread that is not an action (load, unload)."""

    kind: str
    model: str | None = None


class Service:
    def __init__(
        self,
        io: DesktopIO,
        engine_factory: Callable[[ModelSpec], Engine] | None = None,
        history: History | None = None,
        config_loader: Callable[[], Config] = load_config,
        ocr: dict[str, Any] | None = None,
    ) -> None:
        self.io = io
        # One engine per backend in use (the worker, a server…), made when first needed.
        self.engines = Engines(engine_factory or runner.backends.make_engine,
                               keep_alive_s=lambda: self.settings.keep_alive_s)  # fmt: skip
        self.history = history
        # OCR engines load their models on first use; the daemon warms them up.
        self.ocr: dict[str, Any] = dict(ocr or {})
        self._config_loader = config_loader
        self.config = Config()
        self.templates = TemplateSet()
        self.models = ModelsConfig()
        self.model_name: str | None = None  # chosen in the tray; None = configured default
        self.state = "idle"
        self.paused = False
        self.last_error: str | None = None
        self.started = time.time()
        self.listeners: list[Callable[[Service], None]] = []
        self._queue: queue.Queue[Job | _Control | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._last_used = time.monotonic()
        self._thread: threading.Thread | None = None
        self._busy_noted = -BUSY_NOTE_S
        self._remote_noted: set[str] = set()
        self.hotkeys_taken: list[str] = []  # chords another program holds (the desktop says)
        self.accepted = 0  # jobs taken into the queue …
        self.finished = 0  # … and done with (tests and status wait on these)

    # -- configuration -----------------------------------------------------
    def load(self, config: Config | None = None) -> None:
        """Read config (unless given), templates and models; raises if any is broken."""
        config = config if config is not None else self._config_loader()
        templates = load_templates(template_folders())
        actions = {*templates.templates, *BUILTIN_ACTIONS}
        # A binding's vars may also set sampling options (max_tokens = "80").
        variables = {}
        for name in actions:
            try:
                variables[name] = {*pipeline.variables_of(name, templates), *OPTION_TYPES}
            except UserInputError as err:  # a chain naming a missing step
                raise ConfigError(f"Action '{name}': {err}") from None
        check_actions(config, actions, variables)
        models = load_models()
        self.config, self.templates, self.models = config, templates, models
        for name, message in templates.errors.items():
            log.warning("template %s: %s", name, message)

    def reload(self) -> str | None:
        """Re-read everything; on error keep what runs now and return the message."""
        try:
            self.load()
        except YomitoriError as err:
            self._set_error(str(err))
            self.io.notify("Config not reloaded", f"{err} The previous settings stay in use.")
            return str(err)
        self.last_error = None
        if self.state == "error":
            self._set_state("idle")
        self._changed()
        return None

    @property
    def settings(self) -> Any:
        return self.config.settings

    def current_spec(self, override: str | None = None) -> ModelSpec:
        return check_spec(resolve_model(override or self.model_name, self.models))

    @property
    def engine(self) -> Engine | None:
        """The engine used last (the current model's), if any was made."""
        return self.engines.last

    # -- the queue -----------------------------------------------------------
    def start(self, preload: bool = True) -> None:
        self._thread = threading.Thread(target=self._loop, name="yomitori-actions", daemon=True)
        self._thread.start()
        if preload:
            self._queue.put(_Control("load"))

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and a notification) when the queue is full."""
        with self._pending_lock:
            if self._pending >= self.settings.queue_size:
                full = True
            else:
                full = False
                self._pending += 1
        if full:
            log.info("queue full: %s refused", job.action)
            if job.future is not None:
                job.future.set_exception(UserInputError("yomitori is busy; try again."))
            elif job.origin in ("hotkey", "tray") and (
                time.monotonic() - self._busy_noted > BUSY_NOTE_S
            ):
                self._busy_noted = time.monotonic()
                self.io.notify("yomitori is busy", "Still working on earlier requests; "
                               "press again when it is done.")  # fmt: skip
            return False
        self.accepted += 1
        self._queue.put(job)
        self._changed()
        return True

    @property
    def pending(self) -> int:
        return self._pending

    def cancel(self) -> None:
        self.engines.cancel()

    def free_vram(self) -> None:
        """Unload now (every model and the OCR process); the next action loads again."""
        self.engines.unload()
        self._release_ocr()
        self._changed()

    def _resident(self) -> bool:
        """Anything holding model memory: the worker, or a running OCR process."""
        return self.engines.expiring or any(
            getattr(reader, "running", False) for reader in self.ocr.values()
        )

    def _release_ocr(self) -> None:
        for reader in self.ocr.values():
            release = getattr(reader, "release", None)
            if release is not None:
                release()

    def switch_model(self, name: str) -> None:
        """Load ``name``; it becomes the current model only if it loads."""
        self._queue.put(_Control("load", model=name))

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.engines.unload()
        self._release_ocr()

    def resident(self) -> dict[str, str]:
        """Models in memory now, by name, with their backend (for the tray)."""
        return {
            engine.spec.name: engine.spec.backend
            for engine in self.engines.all()
            if engine.loaded and engine.spec is not None
        }

    def status(self) -> dict[str, Any]:
        engines = self.engines.stats()  # in the order of engines.all()
        last = self.engines.last
        current = engines[self.engines.all().index(last)] if last is not None else {}
        return {
            "state": self.state,
            "model": current.get("model") or chosen_name(self.model_name, self.models)[0],
            "loaded": self.engines.loaded,
            "engines": engines,
            "remote": sorted({str(e.get("url")) for e in engines if e.get("remote")}),
            "queue": self._pending,
            "queue_size": self.settings.queue_size,
            "paused": self.paused,
            "last_error": self.last_error,
            "bindings": len(self.config.bindings),
            "hotkeys_taken": list(self.hotkeys_taken),
            "uptime_s": round(time.time() - self.started, 1),
        }

    # -- the action thread ---------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_timeout())
            except queue.Empty:
                self._expire()
                continue
            if item is None:
                return
            if isinstance(item, Job):
                # Counted while waiting: a caller woken by this job's result may
                # submit again at once without finding the queue full.
                with self._pending_lock:
                    self._pending -= 1
            try:
                if isinstance(item, _Control):
                    self._control(item)
                else:
                    self._run(item)
            except Exception:  # never let the action thread die
                log.exception("action thread: unexpected error")
            finally:
                if isinstance(item, Job):
                    self.finished += 1
                self._last_used = time.monotonic()
                if self.settings.keep_alive_s == 0 and self._queue.empty():
                    self.engines.unload(idle=True)
                    self._release_ocr()
                self._set_state("error" if self.last_error else "idle")

    def _idle_timeout(self) -> float | None:
        keep = self.settings.keep_alive_s
        if keep <= 0 or not self._resident():
            return None if keep != 0 else 1.0
        # A keep_alive of centuries waits as long as a lock can (OverflowError beyond).
        wait = max(0.05, self._last_used + keep - time.monotonic())
        return min(wait, threading.TIMEOUT_MAX)

    def _expire(self) -> None:
        keep = self.settings.keep_alive_s
        if keep >= 0 and self._resident() and time.monotonic() - self._last_used >= keep:
            log.info("idle for %.0fs: unloading the model to free memory", keep)
            self.engines.unload(idle=True)
            self._release_ocr()
            self._changed()

    def _control(self, item: _Control) -> None:
        self._set_state("loading")
        try:
            spec = self.current_spec(item.model or self.model_name)
            self.engines.get(spec).load(spec)
        except YomitoriError as err:
            message = str(err)
        except Exception as err:
            log.exception("model load failed")
            message = f"Internal error while loading the model ({type(err).__name__}); see the log."
        else:
            if item.model is not None:
                self.model_name = item.model  # only once it really loaded
            self.last_error = None
            self._set_state("idle")
            return
        self._set_error(message)
        self.io.notify("Model not loaded", message)

    def _run(self, job: Job) -> None:
        try:
            result = self._execute(job)
        except Cancelled:
            log.info("%s cancelled", job.action)
            if job.future is not None:
                job.future.set_exception(Cancelled("Cancelled."))
            return
        except YomitoriError as err:
            self._set_error(str(err))
            log.warning("%s failed: %s", job.action, err)
            if "notify" in job.outputs or job.origin == "hotkey":
                self.io.notify(f"{job.action} failed", str(err))
            if job.future is not None:
                job.future.set_exception(err)
            return
        except Exception as err:  # the loop must survive anything
            log.exception("%s: internal error", job.action)
            message = f"Internal error ({type(err).__name__}); details are in the log."
            self._set_error(message)
            self.io.notify(f"{job.action} failed", message)
            if job.future is not None:
                job.future.set_exception(YomitoriError(message))
            return
        self.last_error = None
        if job.future is not None:
            job.future.set_result(result)

    def _execute(self, job: Job) -> ActionResult:
        plan = runner.plan(job.action, self.templates, job.vars, self.settings.ocr_engine)

        def model() -> ModelSpec | None:
            return runner.choose_model(plan, self.templates, job.model or self.model_name,
                                       self.models)  # fmt: skip

        # A region: the model first, so that one that cannot do the action (no vision, a
        # server that is down) is said before the overlay opens, not after the selection.
        # Otherwise the input first: the selection is copied while the user is still where
        # they pressed the hotkey, and a missing input costs no model check.
        region = job.source in ("region", "last_region")
        spec = model() if region else None
        self._warm_ocr_meanwhile(job, plan.values)
        payload = read_source(self.io, job)
        pipeline.check_input(job.action, self.templates, payload)
        if not region:
            spec = model()
        self._note_remote(spec)
        result = runner.execute(plan, self.templates, payload, spec, self.engines, self.ocr,
                                self.settings.max_image_side,
                                on_loading=lambda: self._set_state("loading"),
                                on_busy=lambda: self._set_state("busy"))  # fmt: skip
        deliver(self.io, job, result, self.settings.notify_chars)
        if self.history is not None and self.settings.history:
            self.history.add(job.action, payload.source, payload.text or "", result.text,
                             result.model, result.timings)  # fmt: skip
        return result

    def _note_remote(self, spec: ModelSpec | None) -> None:
        """The first job on a remote server says, once, that text leaves this machine."""
        if spec is None or not spec.opt("allow_remote") or spec.url in self._remote_noted:
            return
        self._remote_noted.add(str(spec.url))
        self.io.notify(
            "Sending to another machine",
            f"'{spec.name}' runs on {spec.url}: your text and images leave this machine for "
            "that host (allow_remote = true in models.toml).",
        )

    def _warm_ocr_meanwhile(self, job: Job, values: dict[str, str]) -> None:
        """OCR of a region: start the OCR process while the user selects.  It stops with
        the model after keep_alive, and starting it cold added ≈ 0.45 s to the next OCR."""
        if job.source not in ("region", "last_region"):
            return
        if pipeline.steps_of(job.action, self.templates)[0] != pipeline.OCR:
            return
        reader = self.ocr.get(values.get("engine", ""))
        if reader is None or getattr(reader, "running", True):
            return

        def warm() -> None:
            try:
                reader.warm_up()
            except Exception:  # the OCR itself will say what is wrong
                log.debug("OCR warm-up failed", exc_info=True)

        threading.Thread(target=warm, name="ocr-warm-up", daemon=True).start()

    # -- state for the tray and status ---------------------------------------
    def _set_error(self, message: str) -> None:
        self.last_error = message
        self._set_state("error")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._changed()

    def _changed(self) -> None:
        for listener in list(self.listeners):
            try:
                listener(self)
            except Exception:
                log.exception("state listener failed")
