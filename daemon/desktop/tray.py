"""The tray icon: state at a glance, and a menu for everything the daemon does.

pystray picks a backend (AppIndicator through PyGObject on Linux, the native
one on Windows and macOS).  Its plain-X11 backend has no menu and no
notifications; then the user is told once what to install, and hotkeys,
notifications over D-Bus and ``yomitori trigger`` keep working.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from daemon import models, platform
from daemon.pipeline import title_of
from daemon.service import BUILTIN_ACTIONS, Job, Service
from daemon.sinks.notify import CallableNotifier

log = logging.getLogger(__name__)

COLOURS = {"idle": (70, 110, 200), "loading": (230, 170, 30), "busy": (40, 170, 90),
           "error": (210, 50, 50)}  # fmt: skip
MENU_HINT = (
    "The tray menu needs AppIndicator: install PyGObject (pip install PyGObject, with "
    "libgirepository1.0-dev) and gir1.2-ayatanaappindicator3-0.1; hotkeys and notifications "
    "work without it."
)


# NOTIFYICONDATAW's szInfoTitle[64] and szInfo[256], each with its terminating NUL.
BALLOON_TITLE = 63
BALLOON_TEXT = 255


def fit_utf16(text: str, units: int) -> str:
    """``text`` cut to at most ``units`` UTF-16 code units (an ellipsis marks a cut)."""
    if len(text.encode("utf-16-le")) // 2 <= units:
        return text
    out, used = [], 1  # room for the ellipsis
    for char in text:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > units:
            break
        out.append(char)
        used += size
    return "".join(out) + "…"


def icon_image(state: str) -> Any:
    """A 64×64 icon: a rounded square in the state's colour with a white 'Y'."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill=COLOURS.get(state, COLOURS["idle"]))
    draw.line((18, 14, 32, 34), fill="white", width=7)
    draw.line((46, 14, 32, 34), fill="white", width=7)
    draw.line((32, 32, 32, 52), fill="white", width=7)
    return image


def open_folder(path: Any) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if platform.is_windows():
        import os

        os.startfile(str(path))  # type: ignore[attr-defined]
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tray_host_missing() -> bool:
    """True when pystray would use plain X11 and no system tray is there to dock in."""
    import pystray

    if not pystray.Icon.__module__.endswith("_xorg"):
        return False
    from Xlib import X, display

    screen = display.Display()
    try:
        atom = screen.intern_atom(f"_NET_SYSTEM_TRAY_S{screen.get_default_screen()}")
        return screen.get_selection_owner(atom) in (X.NONE, None)
    finally:
        screen.close()


class Tray:
    def __init__(self, daemon: Any) -> None:
        import pystray

        self.pystray = pystray
        self.daemon = daemon
        self.service: Service = daemon.service
        self.icon = pystray.Icon("yomitori", icon_image("loading"), "yomitori",
                                 menu=pystray.Menu(self._items))  # fmt: skip
        self.service.listeners.append(self._changed)

    @property
    def has_menu(self) -> bool:
        return bool(self.icon.HAS_MENU)

    def notifier(self) -> CallableNotifier:
        return CallableNotifier("tray", self._notify, self._can_notify)

    def _can_notify(self) -> bool:
        # pystray's macOS notification splices the text into an AppleScript and waits
        # for osascript without a timeout: the osascript notifier passes it as
        # arguments instead.
        return bool(self.icon.HAS_NOTIFICATION) and sys.platform != "darwin"

    def _notify(self, title: str, body: str) -> None:
        if platform.is_windows():
            # The balloon's fields are fixed WCHAR arrays (NOTIFYICONDATAW): longer
            # text makes ctypes raise and the notification is lost.
            title, body = fit_utf16(title, BALLOON_TITLE), fit_utf16(body, BALLOON_TEXT)
        self.icon.notify(body, title)

    def run(self) -> None:
        self.icon.run(setup=self._setup)

    def stop(self) -> None:
        self.icon.stop()

    def _setup(self, icon: Any) -> None:
        icon.visible = True

    def _changed(self, service: Service) -> None:
        if sys.platform == "darwin":
            # AppKit objects belong to the main thread (the tray's run loop); service
            # state changes arrive on worker threads.
            from PyObjCTools.AppHelper import callAfter

            callAfter(self._show_state, service)
            return
        self._show_state(service)

    def _show_state(self, service: Service) -> None:
        self.icon.icon = icon_image(service.state)
        title = f"yomitori: {service.state}"
        resident = service.resident()
        if resident:
            title += " · " + ", ".join(f"{name} ({backend})" for name, backend in resident.items())
        # X11 titles are Latin-1.
        self.icon.title = title.encode("latin-1", "replace").decode("latin-1")
        if self.icon.HAS_MENU:
            self.icon.update_menu()

    # -- the menu -----------------------------------------------------------------
    def _items(self) -> list[Any]:
        item, menu, sep = self.pystray.MenuItem, self.pystray.Menu, self.pystray.Menu.SEPARATOR
        return [
            *self.action_items(),
            item("Show last result", lambda: self.service.show_last()),
            sep,
            item("Model", menu(self._model_items)),
            item("Free VRAM now", lambda: self.service.free_vram()),
            item("Pause hotkeys", self._toggle_pause, checked=lambda _i: self.service.paused),
            item("Recent", menu(self._recent_items)),
            sep,
            item("Open config folder", lambda: open_folder(platform.config_dir())),
            item("Reload config", lambda: self.daemon.reload()),
            item("Quit", lambda: self.daemon.stop()),
        ]

    def action_items(self) -> list[Any]:
        """Every action by its title; greyed out when the current model cannot do it
        (no model, no vision), so a click never ends in an error."""
        actions = [(name, "region" if template.kind in ("image", "chain") else "clipboard")
                   for name, template in self.service.templates.templates.items()]  # fmt: skip
        actions += [(name, "region") for name in BUILTIN_ACTIONS]
        items = []
        for name, source in sorted(actions, key=lambda a: title_of(a[0], self.service.templates)):
            items.append(self.pystray.MenuItem(
                title_of(name, self.service.templates), self._runner(name, source),
                enabled=lambda _i, n=name: self.service.unavailable(n) is None))  # fmt: skip
        return items

    def _runner(self, action: str, source: str) -> Any:
        def run() -> None:
            self.service.submit(Job(action=action, source=source, origin="tray"))

        return run

    def _model_items(self) -> list[Any]:
        specs = {name: spec.backend for name, spec in self.service.models.models.items()}
        if models.tiny_available():
            specs[models.TINY] = "llama-cpp"
        current = models.chosen_name(self.service.model_name, self.service.models)[0]
        resident = self.service.resident()
        return [
            self.pystray.MenuItem(
                model_label(name, backend, name in resident),
                self._switcher(name),
                checked=lambda _i, n=name: n == current,
                radio=True,
            )
            for name, backend in specs.items()
        ]

    def _switcher(self, name: str) -> Any:
        return lambda: self.service.switch_model(name)

    def _toggle_pause(self) -> None:
        self.service.paused = not self.service.paused

    def _recent_items(self) -> list[Any]:
        history = self.service.history
        entries = history.recent(10) if history is not None else []
        if not entries:
            return [self.pystray.MenuItem("(nothing yet)", None, enabled=False)]
        return [
            self.pystray.MenuItem(f"{e.action}: {_label(e.output)}", self._copier(e.output))
            for e in entries
        ]

    def _copier(self, text: str) -> Any:
        return lambda: self.service.io.write_clipboard(text)


def model_label(name: str, backend: str, resident: bool) -> str:
    """``qwen3-vl — ollama, loaded``: which backend, and whether it is in memory now."""
    return f"{name} — {backend}{', loaded' if resident else ''}"


def _label(text: str, width: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
