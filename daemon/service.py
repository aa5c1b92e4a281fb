"""The daemon's loop: jobs from hotkeys, the tray and ``yomitori trigger``, run one
at a time on the action thread.

Headless by design: the desktop (clipboard, synthesized keys, notifications)
comes in through :class:`DesktopIO`, so this module runs and is tested
without a display.  Errors are caught once, here: logged (never with user
text above DEBUG), shown as a notification, and the loop keeps running.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from daemon import pipeline, platform, runner
from daemon.actions import ActionResult, Payload
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
from daemon.tomlfile import Problems, problems_error

__all__ = ["BUILTIN_ACTIONS", "BUSY_NOTE_S", "DesktopIO", "Job", "Service", "job_from_binding"]

log = logging.getLogger(__name__)

# A burst of presses while busy gives one "busy" notification, not one each.
BUSY_NOTE_S = 3.0
# A model load that takes longer than this is said in a notification.
LOADING_NOTE_S = 1.0
# Result windows kept for Retry; a paste from one waits this long for focus to return.
WINDOWS_KEPT = 8
PASTE_AFTER_CLOSE_S = 0.15


@dataclass
class _Control:
    """Work for the action thread that is not an action: load a model (a switch from
    the tray, or the start-up load), or preload one while the user selects a region."""

    kind: str
    model: str | None = None  # a model to load
    tag: str | None = None  # "answer": the window's (its job's) tag
    spec: ModelSpec | None = None
    text: str | None = None  # "answer": what the user answered
    prime: list[dict[str, Any]] | None = None  # "preload": a prompt start to cache


@dataclass
class _Ready:
    """A job whose input is taken: what waits in the queue for the model or OCR."""

    job: Job
    plan: runner.Plan
    payload: Payload
    spec: ModelSpec | None


@dataclass(frozen=True)
class Done:
    """One finished job, for ``yomitori run``'s terminal line (never its text)."""

    action: str
    title: str
    outcome: str  # "done", "failed", "cancelled"
    seconds: float
    went: str  # where the result went: "copied", "pasted", "shown", ""


@dataclass
class State:
    """What the config files say, checked together: the bindings that can work, and
    every problem found (each naming its file and line)."""

    config: Config
    templates: TemplateSet
    models: ModelsConfig | None  # None: models.toml is broken
    problems: list[str]


def read_state(config_loader: Callable[[], Config] = load_config) -> State:
    """hotkeys.toml, templates and models.toml, and the bindings checked against the
    templates (actions, variable names, choices, option types)."""
    problems = Problems()
    try:
        config = config_loader()
    except ConfigError as err:
        problems.add_error(err)
        config = load_config([platform.defaults_dir() / "hotkeys.toml"])
    templates = load_templates(template_folders())
    for message in templates.errors.values():
        problems.add(message)
    actions = {*templates.templates, *BUILTIN_ACTIONS}
    # A binding's vars may also set sampling options (max_tokens = "80").
    variables = {}
    for name in sorted(actions):
        try:
            variables[name] = {*pipeline.variables_of(name, templates), *OPTION_TYPES}
        except UserInputError as err:  # a chain naming a missing step
            problems.add(f"Action '{name}': {err}")
    with problems.collect():
        check_actions(config, actions, variables)
    usable = []
    for binding in config.bindings:
        if binding.action not in variables or not set(binding.vars) <= variables[binding.action]:
            continue
        bad = pipeline.value_problems(binding.action, templates, binding.vars)
        for key, message in bad.items():
            problems.add(f"{binding.var_lines.get(key, binding.where)}: {message}")
        if not bad:
            usable.append(binding)
    models: ModelsConfig | None
    try:
        models = load_models()
    except ConfigError as err:
        problems.add(str(err))
        models = None
    if len(usable) < len(config.bindings):
        config = replace(config, bindings=tuple(usable))
    return State(config, templates, models, problems.items)


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
        self._queue: queue.Queue[_Ready | _Control | None] = queue.Queue()
        # Input is taken here at once (the region overlay, a selection copy), whatever
        # the action thread is doing; only the model or OCR step waits in the queue.
        self._captures: queue.Queue[Job | None] = queue.Queue()
        self._capture_thread: threading.Thread | None = None
        self.capturing: Job | None = None  # whose input is being taken now
        self.running: Job | None = None  # whose model or OCR step runs now
        self._waiting: list[Job] = []  # taken, waiting for the action thread
        self._loading: ModelSpec | None = None  # a model being loaded now
        self.done_listeners: list[Callable[[Done], None]] = []
        self._progress_noted = -BUSY_NOTE_S
        self._stopping = False
        # Result windows by job tag (the job as taken, for Retry); refused: over a game.
        self._windows: dict[str, _Ready] = {}
        self._refused: set[str] = set()
        self._conversations: dict[str, tuple[_Ready, Any]] = {}  # by tag: asking
        self.last_result: tuple[str, str, str] | None = None  # title, source, text
        self._shown = 0
        self._pending = 0  # jobs taken in and not yet started (what queue_size limits)
        self._counted: set[int] = set()  # … by id
        self._pending_lock = threading.Lock()
        self._last_used = time.monotonic()
        self._thread: threading.Thread | None = None
        self._busy_noted = -BUSY_NOTE_S
        self._remote_noted: set[str] = set()
        self.hotkeys_taken: list[str] = []  # chords another program holds (the desktop says)
        self.accepted = 0  # jobs taken into the queue …
        self.finished = 0  # … and done with (tests and status wait on these)

    # -- configuration -----------------------------------------------------
    def load(self, config: Config | None = None, strict: bool = True) -> list[str]:
        """Read config (unless given), templates and models, and check the bindings
        against the templates.  Strict (a reload): any problem raises one ConfigError
        naming every problem, and nothing changes.  Not strict (the daemon's start,
        with no earlier state to keep): what loads is used, the broken parts are left
        out, and the problems are returned."""
        state = read_state(self._config_loader if config is None else lambda: config)
        if strict and state.problems:
            raise problems_error(state.problems)
        self.config, self.templates = state.config, state.templates
        self.models = state.models if state.models is not None else self.models
        for message in state.problems:
            log.warning("config: %s", message)
        return state.problems

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
        self._capture_thread = threading.Thread(target=self._capture_loop,
                                                name="yomitori-capture", daemon=True)  # fmt: skip
        self._capture_thread.start()
        if preload:
            self._queue.put(_Control("load"))

    def submit(self, job: Job) -> bool:
        """Take ``job``: its input is read now (on the capture thread; a given text at
        once), its model step queued.  False (and a notification) when the queue is full."""
        if not self._admit(job):
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
        job.tag = f"job-{self.accepted}"
        if job.text is not None:
            self._take(job)  # nothing to take from the desktop
        else:
            self._captures.put(job)
        self._changed()
        return True

    def _admit(self, job: Job) -> bool:
        """Count ``job`` in, if the queue has room and yomitori is not stopping."""
        with self._pending_lock:
            if self._stopping or self._pending >= self.settings.queue_size:
                return False
            self._pending += 1
            self._counted.add(id(job))
        self.accepted += 1
        job.started = time.monotonic()
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

    def stop(self) -> str | None:
        """Cancel what runs, drop what waits, unload; the running action's name, if any.
        Quick by design: ``yomitori quit`` during a generation ends within a second or
        two, not when the generation would have finished."""
        with self._pending_lock:
            self._stopping = True
        running = self.running.action if self.running is not None else None
        self.engines.cancel()
        self._captures.put(None)
        dropped = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Ready):
                dropped.append(item.job)
        for job in dropped:
            self._finish(job, "cancelled")
            if job.future is not None:
                job.future.set_exception(Cancelled("Cancelled: yomitori is stopping."))
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.engines.unload()
        self._release_ocr()
        return running

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
            "running": self.running.action if self.running is not None else None,
            "capturing": self.capturing.action if self.capturing is not None else None,
            "waiting": [job.action for job in list(self._waiting)],
            "queue": self._pending,
            "queue_size": self.settings.queue_size,
            "paused": self.paused,
            "last_error": self.last_error,
            "bindings": len(self.config.bindings),
            "hotkeys_taken": list(self.hotkeys_taken),
            "uptime_s": round(time.time() - self.started, 1),
        }

    # -- the capture thread: input first -------------------------------------------
    def _capture_loop(self) -> None:
        while True:
            job = self._captures.get()
            if job is None:
                return
            if self._stopping:
                self._failed(job, Cancelled("Cancelled: yomitori is stopping."))
                continue
            self.capturing = job
            self._changed()
            try:
                self._take(job)
            except Exception:  # never let the capture thread die
                log.exception("capture thread: unexpected error")
            finally:
                self.capturing = None
                self._changed()

    def _take(self, job: Job) -> None:
        """Read the job's input and queue its model step; a failure ends the job here."""
        try:
            ready = self._read(job)
        except BaseException as err:
            self._failed(job, err)
            return
        with self._pending_lock:
            busy = self.running is not None or bool(self._waiting) or self._loading is not None
            self._waiting.append(job)
        self._open_window(ready, "Queued…" if busy else "Working…")
        self._queue.put(ready)
        self._changed()
        if busy:
            self._note_waiting(job, ready.spec)

    def _read(self, job: Job) -> _Ready:
        plan = runner.plan(job.action, self.templates, job.vars, self.settings.ocr_engine)

        def model() -> ModelSpec | None:
            return runner.choose_model(plan, self.templates, job.model or self.model_name,
                                       self.models)  # fmt: skip

        # A region: the model first, so that one that cannot do the action (no vision, a
        # server that is down) is said before the overlay opens, not after the selection;
        # and it loads while the user selects.  Otherwise the input first: the selection
        # is copied while the user is still where they pressed the hotkey, and a missing
        # input costs no model check.
        region = job.source in ("region", "last_region")
        spec = model() if region else None
        if region:
            self._preload(spec, pipeline.prefix_messages(job.action, self.templates,
                                                         plan.values))  # fmt: skip
            self._warm_ocr_meanwhile(job, plan.values)
        talk = pipeline.is_conversation(job.action, self.templates)
        if talk and "window" not in job.outputs:
            job.outputs = ("window", *job.outputs)  # its questions are asked there
        payload = read_source(self.io, job)
        pipeline.check_input(job.action, self.templates, payload, conversation=talk)
        if not region:
            spec = model()
        return _Ready(job, plan, payload, spec)

    # -- conversations (the prompt builder) ---------------------------------------------
    def _converse(self, ready: _Ready, spec: ModelSpec) -> ActionResult:
        """The first turn: the question goes to the job's window; each answer the user
        gives there comes back as an item of its own on this thread (_answer)."""
        job = ready.job
        self._set_state("loading" if not self.engines.get(spec).loaded else "busy")
        talk = runner.conversation(ready.plan, self.templates, spec, self.engines)
        self._set_state("busy")
        turn = talk.start(ready.payload.text or "", on_text=self._streamer(job))
        self._conversations[str(job.tag)] = (ready, talk)
        self._ask(job, turn)
        self._finish(job, "asked", "shown")
        return ActionResult(action=job.action, text=turn.text, model=spec.name,
                            timings=dict(turn.timings))  # fmt: skip

    def _streamer(self, job: Job) -> Callable[[str], None]:
        return lambda piece: self._window({"do": "text", "tag": job.tag, "text": piece})

    def _ask(self, job: Job, turn: Any) -> None:
        self._window({"do": "ask", "tag": job.tag, "question": turn.question or turn.text,
                      "choices": list(turn.choices), "number": turn.number})  # fmt: skip

    def _answer(self, item: _Control) -> None:
        """The user's answer in the window: the next question, or the final prompt."""
        held = self._conversations.get(str(item.tag))
        if held is None:
            return  # the window was closed meanwhile
        ready, talk = held
        job = ready.job
        self._set_state("busy")
        try:
            turn = talk.answer(item.text or "", on_text=self._streamer(job))
        except Cancelled:
            self._window({"do": "failed", "tag": job.tag, "message": "Cancelled; answer "
                          "again to go on."})  # fmt: skip
            return
        except YomitoriError as err:
            self._set_error(str(err))
            self._window({"do": "failed", "tag": job.tag, "message": str(err)})
            return
        if not turn.is_final:
            self._ask(job, turn)
            return
        self._conversations.pop(str(job.tag), None)
        title = pipeline.title_of(job.action, self.templates)
        result = ActionResult(action=job.action, text=turn.text,
                              model=ready.spec.name if ready.spec else "",
                              timings=dict(turn.timings))  # fmt: skip
        went = deliver(self.io, job, result, self.settings.notify_chars, title,
                       history=self.history is not None and self.settings.history)  # fmt: skip
        self._window({"do": "done", "tag": job.tag, "text": turn.text,
                      "status_after": f"The prompt: {went}." if went else "Done."})  # fmt: skip
        if self.history is not None and self.settings.history:
            self.history.add(job.action, ready.payload.source, ready.payload.text or "",
                             turn.text, result.model, result.timings)  # fmt: skip
        self.last_result = (title, ready.payload.text or "", turn.text)

    # -- the result window ------------------------------------------------------------
    def _open_window(self, ready: _Ready, status: str) -> None:
        job = ready.job
        if "window" not in job.outputs or job.tag is None:
            return
        self._windows[job.tag] = ready
        while len(self._windows) > WINDOWS_KEPT:
            self._windows.pop(next(iter(self._windows)))
        message: dict[str, Any] = {"do": "open", "tag": job.tag, "status": status,
                                   "title": pipeline.title_of(job.action, self.templates),
                                   "source": ready.payload.text or ""}  # fmt: skip
        if ready.payload.image is not None:
            message["image"] = base64.b64encode(ready.payload.image).decode()
        if not self._window(message):
            self._refused.add(job.tag)  # no window here (no display): a notification

    def _window(self, message: dict[str, Any]) -> bool:
        """Send to the result window; False when there is none to show (no display, the
        overlay process gone), which never fails the job."""
        try:
            self.io.window(message)
        except Exception as err:
            log.info("result window unavailable (%s)", type(err).__name__)
            return False
        return True

    def window_event(self, event: dict[str, Any]) -> None:
        """What the user did in a result window (on the overlay's reader thread)."""
        tag, action = str(event.get("tag") or ""), event.get("action")
        text = event.get("text")
        try:
            if action == "copy" and isinstance(text, str):
                self.io.write_clipboard(text)
            elif action == "paste" and isinstance(text, str):
                time.sleep(PASTE_AFTER_CLOSE_S)  # the window's focus goes back first
                self.io.paste(text, None, keep=False)
            elif action == "retry" and tag in self._windows:
                self._retry(self._windows[tag])
            elif action == "refused":
                self._refused.add(tag)
            elif action == "answer" and tag in self._conversations:
                self._queue.put(_Control("answer", tag=tag, text=str(text or "")))
            elif action == "closed":
                held = self._conversations.pop(tag, None)
                if held is not None and self.running is held[0].job:
                    held[1].cancel()
        except YomitoriError as err:
            self.io.notify("Result window", str(err))

    def _retry(self, ready: _Ready) -> None:
        """The same input again, through the queue, into the same window."""
        job = replace(ready.job, future=None)
        if not self._admit(job):
            self._window({"do": "failed", "tag": job.tag,
                          "message": "yomitori is busy; try again."})  # fmt: skip
            return
        with self._pending_lock:
            self._waiting.append(job)
        again = _Ready(job, ready.plan, ready.payload, ready.spec)
        self._windows[str(job.tag)] = again
        self._queue.put(again)
        self._changed()

    def unavailable(self, action: str) -> str | None:
        """Why the current model cannot run ``action`` (for the tray to grey it out), or
        None.  From the config alone, no server asked: a server's answer comes when the
        action runs."""
        values = {"engine": self.settings.ocr_engine}
        try:
            pipeline.model_for(action, self.templates, values, self.model_name, self.models)
        except YomitoriError as err:
            return str(err)
        return None

    def show_last(self) -> None:
        """The tray's "Show last result": this session's, else the history's newest."""
        last = self.last_result
        if last is None and self.history is not None:
            entries = self.history.recent(1)
            if entries:
                entry = entries[0]
                last = (pipeline.title_of(entry.action, self.templates), entry.input_excerpt,
                        entry.output)  # fmt: skip
        if last is None:
            self.io.notify("No result yet", "Run an action first; its result shows here.")
            return
        self._shown += 1
        tag = f"last-{self._shown}"
        title, source, text = last
        self._window({"do": "open", "tag": tag, "title": title, "source": source,
                        "status": ""})  # fmt: skip
        self._window({"do": "done", "tag": tag, "text": text, "status_after": "Done."})

    def _preload(self, spec: ModelSpec | None, prime: list[dict[str, Any]] | None) -> None:
        """Load the region's model while the user drags, when nothing else runs or waits
        (then the jobs ahead load what they need, in order), and read the fixed start of
        its prompt (``prime``) into the model's cache."""
        if spec is None or any(e.loaded and e.spec == spec for e in self.engines.all()):
            return
        with self._pending_lock:
            idle = self.running is None and not self._waiting and self._queue.empty()
        if idle:
            self._queue.put(_Control("preload", spec=spec, prime=prime))

    def _note_waiting(self, job: Job, spec: ModelSpec | None) -> None:
        """Said once for a burst of presses: the job waits (for another, or a load)."""
        if job.origin not in ("hotkey", "tray") or "window" in job.outputs:
            return  # a result window says it itself
        if time.monotonic() - self._progress_noted < BUSY_NOTE_S:
            return
        self._progress_noted = time.monotonic()
        title = pipeline.title_of(job.action, self.templates)
        running = self.running
        if running is not None:
            ahead = pipeline.title_of(running.action, self.templates)
            body = f"Queued: it starts when “{ahead}” is done."
        else:
            loading = self._loading or spec
            body = f"Waiting for the model{f' {loading.name}' if loading else ''} to load."
        self.io.notify(title, body, tag=job.tag)

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
            if isinstance(item, _Ready):
                with self._pending_lock:
                    if item.job in self._waiting:
                        self._waiting.remove(item.job)
                    self._uncount(item.job)
                    self.running = item.job
            try:
                if isinstance(item, _Control):
                    self._control(item)
                else:
                    self._run(item)
            except Exception:  # never let the action thread die
                log.exception("action thread: unexpected error")
            finally:
                self.running = None
                self._last_used = time.monotonic()
                # keep_alive 0: unload after the last job, not between it and one whose
                # input is still being taken.
                if self.settings.keep_alive_s == 0 and self._queue.empty() and not self._pending:
                    self.engines.unload(idle=True)
                    self._release_ocr()
                self._set_state("error" if self.last_error else "idle")
                self._changed()

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
        if item.kind == "preload":
            self._preload_now(item.spec, item.prime)
            return
        if item.kind == "answer":
            self._answer(item)
            return
        self._set_state("loading")
        try:
            spec = self.current_spec(item.model or self.model_name)
            self._loading = spec
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
        finally:
            self._loading = None
        self._set_error(message)
        self.io.notify("Model not loaded", message)

    def _preload_now(self, spec: ModelSpec | None, prime: list[dict[str, Any]] | None) -> None:
        """A load started while the user selects; if it fails, the job that follows says
        why (once), so nothing is said here.  ``prime``, one token's generation on the
        prompt's fixed start, leaves that start in the model's cache: the request after
        mouse-up only reads the text OCR found."""
        if spec is None:
            return
        self._set_state("loading")
        self._loading = spec
        try:
            engine = self.engines.get(spec)
            engine.load(spec)
            if prime:
                engine.generate(prime, {"max_tokens": 1, "temperature": 0.0})
        except Exception as err:
            log.info("preloading %s failed (%s); the action will say why", spec.name,
                     type(err).__name__)  # fmt: skip
        finally:
            self._loading = None

    def _run(self, ready: _Ready) -> None:
        job = ready.job
        try:
            result = self._execute(ready)
        except BaseException as err:
            self._failed(job, err)
            return
        self.last_error = None
        if job.future is not None:
            job.future.set_result(result)

    def _failed(self, job: Job, err: BaseException) -> None:
        """The job ends with ``err``: said once (a notification replacing its progress
        note, the trigger caller's answer), logged without user text, the loop goes on."""
        title = pipeline.title_of(job.action, self.templates)
        if isinstance(err, Cancelled):
            log.info("%s cancelled", job.action)
            self._finish(job, "cancelled")
            if job.future is not None:
                job.future.set_exception(Cancelled(str(err) or "Cancelled."))
            return
        if isinstance(err, YomitoriError):
            message = str(err)
            log.warning("%s failed: %s", job.action, message)
        elif isinstance(err, Exception):
            log.error("%s: internal error", job.action, exc_info=err)
            message = f"Internal error ({type(err).__name__}); details are in the log."
            err = YomitoriError(message)
        else:  # KeyboardInterrupt, SystemExit: not ours to swallow
            self._finish(job, "failed")
            raise err
        self._set_error(message)
        if "window" in job.outputs and job.tag in self._windows:
            self._window({"do": "failed", "tag": job.tag, "message": message})
        elif "notify" in job.outputs or job.origin in ("hotkey", "tray"):
            self.io.notify(f"{title} failed", message, tag=job.tag)
        self._finish(job, "failed")
        if job.future is not None:
            job.future.set_exception(err)

    def _uncount(self, job: Job) -> None:
        """No longer waiting (started, or ended before it could); under _pending_lock."""
        if id(job) in self._counted:
            self._counted.discard(id(job))
            self._pending -= 1

    def _finish(self, job: Job, outcome: str, went: str = "") -> None:
        with self._pending_lock:
            self._uncount(job)
            if job in self._waiting:
                self._waiting.remove(job)
        self.finished += 1
        done = Done(action=job.action, title=pipeline.title_of(job.action, self.templates),
                    outcome=outcome, went=went,
                    seconds=round(time.monotonic() - job.started, 2))  # fmt: skip
        for listener in list(self.done_listeners):
            try:
                listener(done)
            except Exception:
                log.exception("done listener failed")

    def _execute(self, ready: _Ready) -> ActionResult:
        job, spec, payload = ready.job, ready.spec, ready.payload
        self._note_remote(spec)
        if pipeline.is_conversation(job.action, self.templates) and spec is not None:
            return self._converse(ready, spec)

        note: threading.Timer | None = None

        def loading() -> None:
            nonlocal note
            self._set_state("loading")
            self._loading = spec
            if job.origin in ("hotkey", "tray") and spec is not None:
                # Said only when the load is slow enough to be noticed.
                title = pipeline.title_of(job.action, self.templates)
                note = threading.Timer(LOADING_NOTE_S, lambda: self.io.notify(
                    title, f"Loading the model {spec.name}…", tag=job.tag))  # fmt: skip
                note.daemon = True
                note.start()

        def busy() -> None:
            if note is not None:
                note.cancel()
            self._set_state("busy")

        windowed = "window" in job.outputs and job.tag not in self._refused

        def stream(piece: str) -> None:
            self._window({"do": "text", "tag": job.tag, "text": piece})

        try:
            result = runner.execute(ready.plan, self.templates, payload, spec, self.engines,
                                    self.ocr, self.settings.max_image_side,
                                    on_text=stream if windowed else None,
                                    on_loading=loading, on_busy=busy)  # fmt: skip
        finally:
            self._loading = None
            if note is not None:
                note.cancel()
        title = pipeline.title_of(job.action, self.templates)
        if job.tag in self._refused and "window" in job.outputs:
            # No window over a game (or no display): a notification says it instead.
            outputs = tuple(o for o in job.outputs if o != "window")
            job = replace(job, outputs=tuple(dict.fromkeys((*outputs, "notify"))))
        went = deliver(self.io, job, result, self.settings.notify_chars, title,
                       history=self.history is not None and self.settings.history)  # fmt: skip
        self.last_result = (title, payload.text or result.read, result.text)
        if windowed:
            self._window({"do": "done", "tag": job.tag, "text": result.text,
                            "source": payload.text or result.read,
                            "status_after": f"Done: {went}." if went else "Done."})  # fmt: skip
        if self.history is not None and self.settings.history:
            # A region's input is the text its OCR step read (an image has no other).
            self.history.add(job.action, payload.source, payload.text or result.read,
                             result.text, result.model, result.timings)  # fmt: skip
        self._finish(job, "done", went)
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
