"""``yomitori run``: wire the service to the desktop and wait.

Single instance (a lock in the private runtime folder), logs to a rotating
file, hotkeys, the IPC server, the tray on the main thread when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from daemon import pipeline, platform, starter
from daemon.config import Config, Settings, load_config
from daemon.desktop import ipc
from daemon.desktop.hotkeys import Hotkeys
from daemon.errors import Cancelled, ConfigError, UserInputError, YomitoriError
from daemon.service import Job, Service, job_from_binding
from daemon.sinks import notify as notify_mod
from daemon.sinks.history import History
from daemon.sources import clipboard
from daemon.sources.portal import portal_screenshot, use_portal
from daemon.tomlfile import problems_error

log = logging.getLogger(__name__)


def setup_logging(debug: bool) -> None:
    """Rotating file in the user log folder; user text only ever at DEBUG."""
    folder = platform.log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        folder / "yomitori.log", maxBytes=1_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


class DesktopBridge:
    """The :class:`~daemon.service.DesktopIO` of a real desktop."""

    def __init__(self, notifications: notify_mod.NotificationQueue) -> None:
        self.notifications = notifications
        self._keyboard: Any = None
        from daemon.sources.overlay_host import RemoteSelector

        # The overlay runs in a warm process of its own (see overlay_host).
        self.overlay = RemoteSelector()
        self.settings: Callable[[], Settings] = Settings  # the daemon's, once loaded

    @property
    def keyboard(self) -> Any:
        if self._keyboard is None:
            from daemon.desktop.keys import Keyboard

            self._keyboard = Keyboard()
        return self._keyboard

    def read_clipboard(self) -> str:
        return clipboard.read_text()

    def write_clipboard(self, text: str) -> None:
        clipboard.write_text(text)

    def copy_selection(self, chord: str | None) -> str:
        saved = clipboard.read_text()
        marker = f"\u2063yomitori-{time.monotonic_ns()}"
        clipboard.write_text(marker)
        try:
            self.keyboard.shortcut("c")
        except BaseException:  # e.g. macOS refused the keyboard: the user's clipboard back
            clipboard.write_text(saved)
            raise
        deadline = time.monotonic() + 2.0  # a busy app may take a moment to copy
        text = marker
        while time.monotonic() < deadline:
            text = clipboard.read_text()
            if text != marker:
                break
            time.sleep(0.02)
        clipboard.write_text(saved)
        if text == marker and platform.is_x11():
            # The app ignored Ctrl+C (a terminal, say): X11 still has the selected
            # text as the PRIMARY selection.
            text = clipboard.read_primary()
        return "" if text == marker else text

    def paste(self, text: str, chord: str | None, keep: bool) -> None:
        saved = clipboard.read_text()
        clipboard.write_text(text)
        self.keyboard.shortcut("v")
        if not keep:
            # The target reads the clipboard when it handles the key press;
            # give it a moment before the user's own content comes back.
            time.sleep(0.4)
            clipboard.write_text(saved)

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        self.notifications.notify(title, body, tag)

    def read_clipboard_image(self) -> bytes | None:
        return clipboard.read_image()

    def window(self, message: dict[str, Any]) -> None:
        self.overlay.window(message)

    def capture_region(self, repeat: bool = False) -> bytes:
        if use_portal(self.settings().region_capture):
            if repeat:
                raise UserInputError(
                    "Repeating the last region needs the X11 overlay: with the desktop's "
                    "screenshot tool (Wayland) select the region again."
                )
            return portal_screenshot()
        return self.overlay.select_png(repeat)


class Daemon:
    def __init__(self, use_tray: bool | None = None) -> None:
        self.lock = ipc.InstanceLock()
        self.stopping = threading.Event()
        self.tray: Any = None
        self.use_tray = use_tray
        self.hotkeys = Hotkeys()
        self.notifications = notify_mod.NotificationQueue(None)
        from daemon.engine.ocr_worker import OcrProcess, RemoteOcr

        ocr = OcrProcess()
        self.service = Service(DesktopBridge(self.notifications), None,
                               history=None, config_loader=self._load_config,
                               ocr={name: RemoteOcr(ocr, name)
                                    for name in ("rapidocr", "tesseract")})  # fmt: skip
        self.server = ipc.make_server(self.handle)
        # What the user does in a result window (it lives in the overlay's process).
        self.service.io.overlay.on_event = self.service.window_event  # type: ignore[attr-defined]
        self.service.io.settings = lambda: self.service.settings  # type: ignore[attr-defined]

    def _load_config(self) -> Config:
        return load_config()

    # -- start and stop --------------------------------------------------------
    def run(self) -> int:
        if not self.lock.acquire():
            pid = self.lock.holder_pid()
            print(f"yomitori is already running (pid {pid}).")
            return 0
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> int:
        for path in starter.write_starters():  # first run: where to change things
            log.info("wrote the starter %s", path)
            _say(f"yomitori: wrote a commented starter {path}")
        # No earlier good state to keep at start: what loads is used, the rest is said.
        startup_problems = self.service.load(strict=False)
        settings = self.service.settings
        if settings.history:
            self.service.history = History()
        if self.use_tray is None:
            self.use_tray = settings.tray
        if self.use_tray:
            self.tray = _make_tray(self)
        notifier = notify_mod.choose(settings.notifier, self._notifiers())
        self.notifications.notifier = notifier
        if self.tray is not None and not self.tray.has_menu:
            from daemon.desktop.tray import MENU_HINT

            log.warning(MENU_HINT)
            self.notifications.notify("No tray menu", MENU_HINT)
        if startup_problems:
            self.notifications.notify(
                "Config problems",
                problems_error(startup_problems).args[0]
                + " The parts with problems are left out; fix them, then yomitori reload.",
            )
        self.server.start()
        self._bind()
        self._say_hotkeys()
        self.service.done_listeners.append(_say_done)
        self.service.start(preload=self._model_usable())
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        for sig in stop_signals():
            signal.signal(sig, lambda *_: self.stop())
        log.info("yomitori running (pid in %s)", self.lock.path)
        if self.tray is not None:
            self.tray.run()  # the main thread belongs to the tray until stop()
        while not self.stopping.wait(0.5):
            pass
        self._shutdown()
        return 0

    def _model_usable(self) -> bool:
        """Said once at start when no model can run (not on each key press), with what
        to do; actions that need none (OCR) keep working."""
        try:
            self.service.current_spec()
        except YomitoriError as err:
            log.warning("no usable model: %s", err)
            _say(f"yomitori: no model can run yet: {err}")
            self.notifications.notify("No model yet", f"{err} Text actions need one; "
                                      "OCR works without.")  # fmt: skip
            return False
        return True

    def _say_hotkeys(self) -> None:
        bindings = self.service.config.bindings
        if not bindings:
            _say("yomitori is running, with no hotkeys (yomitori trigger ACTION runs one).")
            return
        _say("yomitori is running. Hotkeys:")
        width = max(len(b.hotkey) for b in bindings)
        taken = {line.split(" ", 1)[0] for line in self.service.hotkeys_taken}
        for b in bindings:
            title = pipeline.title_of(b.action, self.service.templates)
            note = "  (taken by another program)" if b.hotkey in taken else ""
            _say(f"  {b.hotkey:<{width}}  {title}: {b.source} → {', '.join(b.output)}{note}")
        _say(f"  {self.service.settings.cancel_hotkey:<{width}}  cancel")

    def _warm_up(self) -> None:
        """Load OCR models and the overlay's Tk now, not on the first hotkey."""
        try:
            self.service.ocr["rapidocr"].warm_up()
        except YomitoriError as err:
            log.warning("OCR unavailable: %s", err)
        if use_portal(self.service.settings.region_capture):
            return  # regions come from the desktop's screenshot portal
        try:
            self.service.io.overlay.start()  # type: ignore[attr-defined]
        except YomitoriError as err:  # no display, no Tk: region hotkeys will say so
            log.info("region overlay not prepared: %s", err)

    def stop(self) -> None:
        self.stopping.set()
        if self.tray is not None:
            self.tray.stop()

    def _shutdown(self) -> None:
        """Quick, and in an order that keeps status true: the running job is cancelled
        first, the IPC server (status, a second ``run``) goes last, the lock after it."""
        self.service.state = "stopping"
        self.hotkeys.unbind()
        overlay = self.service.io.overlay  # type: ignore[attr-defined]
        overlay.interrupt()  # a selection in progress ends, so the capture thread does
        cancelled = self.service.stop()
        if cancelled:
            log.info("%s cancelled: yomitori is stopping", cancelled)
        overlay.stop()
        self.notifications.close()
        if self.service.history is not None:
            self.service.history.close()
        self.server.stop()
        log.info("yomitori stopped")
        _say("yomitori stopped.")
        _console.flush()

    def _notifiers(self) -> list[notify_mod.Notifier]:
        handlers: list[notify_mod.Notifier] = []
        if self.tray is not None:
            handlers.append(self.tray.notifier())
        handlers += [notify_mod.DBusNotifier(), notify_mod.NotifySendNotifier(),
                     notify_mod.OsascriptNotifier()]  # fmt: skip
        return handlers

    # -- hotkeys ---------------------------------------------------------------
    def _bind(self) -> None:
        chords = {b.hotkey: self._on_binding(b) for b in self.service.config.bindings}
        chords[self.service.settings.cancel_hotkey] = self.service.cancel
        try:
            self._report_taken(self.hotkeys.bind(chords))
            # Start tracking held modifiers now, so the first paste already
            # knows what the user is holding.
            _ = self.service.io.keyboard  # type: ignore[attr-defined]
        except YomitoriError as err:
            log.warning("%s", err)
            self.notifications.notify("Hotkeys unavailable", str(err))
        except Exception as err:  # e.g. no X display: everything else keeps working
            log.warning("hotkeys unavailable: %s", err)
            self.notifications.notify("Hotkeys unavailable", f"Global hotkeys failed: {err}")

    def _report_taken(self, taken: list[Any]) -> None:
        """Chords another program holds: said at start and on reload, which binding and
        how to change it (a hotkey that silently never fires is the worst outcome)."""
        names = {b.hotkey: b.action for b in self.service.config.bindings}
        names[self.service.settings.cancel_hotkey] = "cancel"
        lines = [f"{t.chord} ({names.get(t.chord, '?')}): {t.reason}" for t in taken]
        self.service.hotkeys_taken = lines
        if not lines:
            return
        for line in lines:
            log.warning("hotkey not available: %s", line)
        self.notifications.notify(
            "Hotkeys not available",
            "; ".join(lines) + ". Pick other hotkeys in hotkeys.toml (yomitori paths shows "
            "where), then yomitori reload.",
        )

    def _on_binding(self, binding: Any) -> Any:
        def pressed() -> None:
            if not self.service.paused:
                self.service.submit(job_from_binding(binding))

        return pressed

    def reload(self) -> str | None:
        error = self.service.reload()
        if error is None:
            self._bind()
            self.notifications.notify("Config reloaded",
                                      f"{len(self.service.config.bindings)} hotkeys")  # fmt: skip
        return error

    # -- IPC -------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            regions = "portal" if use_portal(self.service.settings.region_capture) else "overlay"
            return {"ok": True, "status": {**self.service.status(), "regions": regions}}
        if cmd == "trigger":
            return self._trigger(request)
        if cmd == "reload":
            error = self.reload()
            return {"ok": error is None, "error": error}
        if cmd == "cancel":
            self.service.cancel()
            self.service.io.overlay.interrupt()  # type: ignore[attr-defined]
            return {"ok": True}
        if cmd == "free":
            self.service.free_vram()
            return {"ok": True}
        if cmd == "quit":
            running = self.service.running
            threading.Thread(target=self.stop, daemon=True).start()
            return {"ok": True, "cancelled": running.action if running is not None else None}
        return {"ok": False, "error": f"Unknown command '{cmd}' (known: {', '.join(COMMANDS)})."}

    def _trigger(self, request: dict[str, Any]) -> dict[str, Any]:
        action = request.get("action")
        if not isinstance(action, str) or not action:
            return {"ok": False, "error": "A trigger needs an action.", "exit_code": 2}
        problem = trigger_problem(request)
        if problem is not None:
            return {"ok": False, "error": f"Malformed trigger request: {problem}.",
                    "exit_code": 2}  # fmt: skip
        outputs = request.get("output") or ["clipboard", "notify"]
        future: Future[Any] = Future()
        job = Job(action=action, source=request.get("source") or "clipboard",
                  outputs=tuple(outputs),
                  vars={k: str(v) for k, v in (request.get("vars") or {}).items()},
                  model=request.get("model"), origin="trigger", text=request.get("text"),
                  future=future if request.get("wait", True) else None)  # fmt: skip
        if not self.service.submit(job):
            return {"ok": False, "error": "yomitori is busy; try again."}
        if job.future is None:
            return {"ok": True, "queued": True}
        timeout = request.get("timeout", 600)
        try:
            result = future.result(timeout=min(timeout, threading.TIMEOUT_MAX))
        except Cancelled:
            return {"ok": False, "error": "Cancelled.", "exit_code": Cancelled.exit_code}
        except YomitoriError as err:
            # The exit code `yomitori do` would give (2: the user's mistake, 1: a failure).
            return {"ok": False, "error": str(err), "exit_code": err.exit_code}
        except TimeoutError:
            return {"ok": False, "error": "The action did not finish in time."}
        return {"ok": True, **result.as_json()}


class _Console:
    """Lines for the terminal ``yomitori run`` was started from, written on a thread of
    their own: a pipe nobody reads fills up and blocks its writer, and that must never
    be a thread of the daemon (lines beyond a few hundred waiting are dropped)."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str] = queue.Queue(maxsize=500)
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write, name="console", daemon=True)
            self._thread.start()
        with contextlib.suppress(queue.Full):
            self._lines.put_nowait(line)

    def _write(self) -> None:
        while True:
            line = self._lines.get()
            with contextlib.suppress(OSError, ValueError):  # closed or detached
                print(line, flush=True)

    def flush(self, timeout: float = 1.0) -> None:
        """Give what waits a moment to be written (at exit)."""
        deadline = time.monotonic() + timeout
        while not self._lines.empty() and time.monotonic() < deadline:
            time.sleep(0.01)


_console = _Console()


def _say(line: str) -> None:
    """A line for the terminal ``yomitori run`` was started from (if any is left)."""
    _console.say(line)


def _say_done(done: Any) -> None:
    """One line per finished action: what, how long, where it went; never its text."""
    went = f", {done.went}" if done.went else ""
    _say(f"{time.strftime('%H:%M:%S')}  {done.title} ({done.action}): {done.outcome} "
         f"in {done.seconds:.1f} s{went}")  # fmt: skip


COMMANDS = ("ping", "status", "trigger", "reload", "cancel", "free", "quit")


def trigger_problem(request: dict[str, Any]) -> str | None:
    """What is wrong with a trigger request's fields (any may be missing), or None."""
    from daemon.config import OUTPUTS

    for key in ("source", "text", "model"):
        if request.get(key) is not None and not isinstance(request[key], str):
            return f"{key} must be a text"
    outputs = request.get("output")
    if outputs is not None and not (isinstance(outputs, list)
                                    and all(o in OUTPUTS for o in outputs)):  # fmt: skip
        return f"output must be a list of {', '.join(OUTPUTS)}"
    variables = request.get("vars")
    if variables is not None and not (isinstance(variables, dict) and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for v in variables.values())):  # fmt: skip
        return "vars must be an object of texts or numbers"
    if not isinstance(request.get("wait", True), bool):
        return "wait must be true or false"
    timeout = request.get("timeout", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return "timeout must be a number of seconds above 0"
    return None


def stop_signals() -> list[signal.Signals]:
    """The signals that end the daemon cleanly.  Windows never sends SIGTERM to another
    process (it terminates it outright); there Ctrl+Break in the console is SIGBREAK."""
    wanted = ["SIGTERM", "SIGINT", "SIGBREAK"] if platform.is_windows() else ["SIGTERM", "SIGINT"]
    return [getattr(signal, name) for name in wanted if hasattr(signal, name)]


def _make_tray(daemon: Daemon) -> Any:
    try:
        from daemon.desktop.tray import Tray, tray_host_missing

        if tray_host_missing():
            log.info("no system tray on this desktop: running without a tray icon")
            return None
        return Tray(daemon)
    except Exception as err:  # no tray here: every other feature keeps working
        log.warning("no tray icon: %s", err)
        return None


def main(use_tray: bool | None = None, debug: bool = False) -> int:
    setup_logging(debug)
    try:
        return Daemon(use_tray=use_tray).run()
    except ConfigError as err:
        print(f"yomitori: {err}")
        return 2
