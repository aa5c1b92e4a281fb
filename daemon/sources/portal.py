"""Screen regions on Wayland: the desktop's own screenshot tool, through the XDG desktop
portal (``org.freedesktop.portal.Screenshot`` on the session D-Bus).

A Wayland client cannot read the screen, and the X11 overlay on XWayland sees only X11
windows (everything else is black), so on a Wayland session a region hotkey asks the
portal for an interactive screenshot: GNOME, KDE and the others show their own selection
UI and hand back a PNG file.  The file is read and deleted at once: the portal leaves it
in the user's Pictures folder otherwise, and this project keeps no screenshots.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from daemon.errors import Cancelled, UserInputError

log = logging.getLogger(__name__)

PORTAL_NAME = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
REQUEST_INTERFACE = "org.freedesktop.portal.Request"
# The user may take their time selecting; a portal that never answers is given up on.
ANSWER_TIMEOUT_S = 600.0
NO_PORTAL = (
    "This Wayland desktop offers no screenshot portal: install xdg-desktop-portal with your "
    "desktop's backend (xdg-desktop-portal-gnome, -kde, -wlr…), or run an X11 session."
)


def wayland_session() -> bool:
    return (
        bool(os.environ.get("WAYLAND_DISPLAY"))
        or os.environ.get("XDG_SESSION_TYPE", "").lower() == "wayland"
    )


def use_portal(setting: str) -> bool:
    """``region_capture``: "portal", "overlay", or "auto" (the portal on Wayland)."""
    return setting == "portal" or (setting == "auto" and wayland_session())


def portal_screenshot(interactive: bool = True, timeout: float = ANSWER_TIMEOUT_S) -> bytes:
    """The PNG the desktop hands back; raises Cancelled when the user cancels."""
    from jeepney import DBusAddress, MatchRule, MessageType, message_bus, new_method_call
    from jeepney.io.blocking import Proxy, open_dbus_connection

    try:
        conn = open_dbus_connection(bus="SESSION")
    except (OSError, KeyError, ValueError) as err:
        raise UserInputError(f"No session D-Bus to reach the screenshot portal ({err}).") from None
    token = f"yomitori{secrets.token_hex(8)}"
    with conn:
        # Every Response signal, subscribed before the call: the request's path is known
        # from handle_token, but a portal older than that names its own, and its answer
        # may come before a subscription made after the reply could catch it.
        rule = MatchRule(type="signal", interface=REQUEST_INTERFACE, member="Response")
        Proxy(message_bus, conn).AddMatch(rule)
        with conn.filter(rule, bufsize=16) as responses:
            portal = DBusAddress(PORTAL_PATH, bus_name=PORTAL_NAME,
                                 interface="org.freedesktop.portal.Screenshot")  # fmt: skip
            options = {"handle_token": ("s", token), "interactive": ("b", interactive),
                       "modal": ("b", True)}  # fmt: skip
            reply = conn.send_and_get_reply(
                new_method_call(portal, "Screenshot", "sa{sv}", ("", options)), timeout=30
            )
            if reply.header.message_type == MessageType.error:
                log.info("screenshot portal: %s %s", reply.header.fields, reply.body)
                raise UserInputError(NO_PORTAL)
            (handle,) = reply.body
            response = _response_for(conn, responses, handle, timeout)
    code, results = response.body
    if code == 1:
        raise Cancelled("Screenshot cancelled.")
    if code != 0:
        raise UserInputError(
            "The desktop refused the screenshot: allow screenshots for yomitori in your "
            "desktop's privacy settings, then try again."
        )
    return _take_file(results.get("uri", ("s", ""))[1])


def _response_for(conn: Any, responses: Any, handle: str, timeout: float) -> Any:
    """The Response signal of our request (``handle``), skipping any other."""
    from jeepney import HeaderFields

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:  # takes what is queued already before reading more
            signal = conn.recv_until_filtered(responses, timeout=min(1.0, left))
        except TimeoutError:
            continue
        if signal.header.fields.get(HeaderFields.path) == handle:
            return signal
    raise UserInputError("The screenshot portal did not answer; try again.")


def _take_file(uri: str) -> bytes:
    """Read the portal's PNG and delete it."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or not parsed.path:
        raise UserInputError(f"The screenshot portal gave no file ({uri[:80]!r}).")
    path = Path(unquote(parsed.path))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserInputError(f"The screenshot portal's file cannot be read ({err}).") from None
    with contextlib.suppress(OSError):
        path.unlink()
    return data
