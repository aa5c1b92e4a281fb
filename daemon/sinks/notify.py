"""Desktop notifications, through the first handler that works here.

Order for ``notifier = "auto"``: the tray icon (when its backend can notify),
D-Bus (Linux, BSD), ``notify-send``, ``osascript`` (macOS).  Each handler says
whether it is available and what to install when it is not.  Sending happens
on a thread of its own, so a slow notification server never delays a hotkey.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)
APP = "yomitori"


class Notifier(Protocol):
    name: str
    install_hint: str

    def is_available(self) -> bool: ...

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        """Show it; one with the ``tag`` of an earlier one replaces that one where this
        notifier can (D-Bus, notify-send 0.8+), else it is shown as another."""


class _Replaces:
    """The server's id of the last notification sent with each tag (a few dozen kept)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, tag: str | None) -> int:
        with self._lock:
            return self._ids.get(tag, 0) if tag else 0

    def put(self, tag: str | None, ident: int) -> None:
        if not tag or not ident:
            return
        with self._lock:
            self._ids.pop(tag, None)
            self._ids[tag] = ident
            while len(self._ids) > 64:
                self._ids.pop(next(iter(self._ids)))


class DBusNotifier:
    """org.freedesktop.Notifications on the session bus (pure Python, via jeepney)."""

    name = "dbus"
    install_hint = "a notification daemon on the session D-Bus (any desktop has one; else dunst)"

    def __init__(self) -> None:
        self._replaces = _Replaces()

    def is_available(self) -> bool:
        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and sys.platform != "linux":
            return False
        try:
            from jeepney import DBusAddress, new_method_call
            from jeepney.io.blocking import open_dbus_connection

            with open_dbus_connection(bus="SESSION") as conn:
                bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                                  interface="org.freedesktop.DBus")  # fmt: skip
                reply = conn.send_and_get_reply(
                    new_method_call(bus, "NameHasOwner", "s", ("org.freedesktop.Notifications",)),
                    timeout=2,
                )
                owned = bool(reply.body[0])
                # D-Bus can also start a notification daemon on demand.
                if not owned:
                    reply = conn.send_and_get_reply(
                        new_method_call(bus, "ListActivatableNames"), timeout=2
                    )
                    owned = "org.freedesktop.Notifications" in reply.body[0]
                return owned
        except Exception as err:
            log.debug("D-Bus notifications unavailable: %s", err)
            return False

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        target = DBusAddress("/org/freedesktop/Notifications",
                             bus_name="org.freedesktop.Notifications",
                             interface="org.freedesktop.Notifications")  # fmt: skip
        # replaces_id: the server swaps the earlier notification of this tag in place.
        message = new_method_call(target, "Notify", "susssasa{sv}i",
                                  (APP, self._replaces.get(tag), "", title, body, [], {},
                                   -1))  # fmt: skip
        with open_dbus_connection(bus="SESSION") as conn:
            reply = conn.send_and_get_reply(message, timeout=3)
        if reply.body and isinstance(reply.body[0], int):
            self._replaces.put(tag, reply.body[0])


class NotifySendNotifier:
    name = "notify-send"
    install_hint = "notify-send (Debian/Ubuntu: libnotify-bin)"

    def is_available(self) -> bool:
        # notify-send talks D-Bus too; without a session bus it can only fail.
        return shutil.which("notify-send") is not None and bool(
            os.environ.get("DBUS_SESSION_BUS_ADDRESS") or os.environ.get("DISPLAY")
        )

    def __init__(self) -> None:
        self._replaces = _Replaces()
        self._can_replace: bool | None = None

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        command = ["notify-send", "-a", APP]
        if tag and self._replacing():
            command += ["--print-id"]
            if self._replaces.get(tag):
                command += ["--replace-id", str(self._replaces.get(tag))]
        done = subprocess.run([*command, "--", title, body], check=True, timeout=5,
                              capture_output=True, text=True)  # fmt: skip
        if "--print-id" in command and done.stdout.strip().isdigit():
            self._replaces.put(tag, int(done.stdout.strip()))

    def _replacing(self) -> bool:
        """notify-send 0.8 and later can print and replace ids; older ones cannot."""
        if self._can_replace is None:
            try:
                text = subprocess.run(["notify-send", "--help"], capture_output=True,
                                      text=True, timeout=5).stdout  # fmt: skip
            except (OSError, subprocess.SubprocessError):
                text = ""
            self._can_replace = "--replace-id" in text
        return self._can_replace


class OsascriptNotifier:
    name = "osascript"
    install_hint = "macOS's osascript"

    def is_available(self) -> bool:
        return sys.platform == "darwin" and shutil.which("osascript") is not None

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        # Title and body travel as arguments, never spliced into the script.
        script = (
            "on run argv\n"
            "display notification (item 2 of argv) with title (item 1 of argv)\n"
            "end run"
        )
        subprocess.run(["osascript", "-e", script, title, body], check=True, timeout=5,
                       capture_output=True)  # fmt: skip


class CallableNotifier:
    """Adapter for the tray icon's own notifications."""

    install_hint = "a tray backend that can notify"

    def __init__(self, name: str, send: Callable[[str, str], None],
                 available: Callable[[], bool]) -> None:  # fmt: skip
        self.name = name
        self._send = send
        self._available = available

    def is_available(self) -> bool:
        return self._available()

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        self._send(title, body)


def choose(preference: str, candidates: list[Notifier]) -> Notifier | None:
    """The forced handler if available, else the first available one."""
    if preference == "none":
        return None
    pool = [n for n in candidates if preference in ("auto", n.name)]
    for notifier in pool:
        if notifier.is_available():
            log.info("notifications through %s", notifier.name)
            return notifier
    wanted = pool or candidates
    log.warning("no way to show notifications; install %s", " or ".join(
        n.install_hint for n in wanted))  # fmt: skip
    return None


def failure(err: BaseException) -> str:
    """What went wrong, without anything the failure carries of the text shown."""
    if isinstance(err, subprocess.CalledProcessError):
        return f"exit status {err.returncode}"
    if isinstance(err, subprocess.TimeoutExpired):
        return f"no answer within {err.timeout:g} s"
    if isinstance(err, OSError) and err.errno is not None:
        return f"{type(err).__name__} {err.errno}"
    return type(err).__name__


class NotificationQueue:
    """Sends on its own thread; never blocks the caller."""

    def __init__(self, notifier: Notifier | None) -> None:
        self.notifier = notifier
        self._queue: queue.Queue[tuple[str, str, str | None] | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._thread.start()

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        try:
            self._queue.put_nowait((title, body, tag))
        except queue.Full:
            log.info("notification dropped: too many at once")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.notifier is None:
                log.info("notification (not shown): %s", item[0])
                continue
            try:
                self.notifier.notify(*item)
            except Exception as err:
                # Not the exception's text: for notify-send and osascript that is the
                # command line, which holds the result.
                log.warning("notification through %s failed (%s)", self.notifier.name,
                            failure(err))  # fmt: skip
                log.debug("notification failure", exc_info=True)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
