"""A stand-in for the desktop's screenshot portal on a test session D-Bus.

``python tests/fake_portal.py MODE PNG DIR``: owns org.freedesktop.portal.Desktop and
answers every Screenshot call the way a real portal does: a Request object path from
the caller's handle_token, then a Response signal on it.  MODE ``ok`` copies PNG into
DIR (as GNOME drops its file into ~/Pictures) and answers with its file URI; ``legacy``
does the same on a request path of its own choosing (portals older than handle_token);
``cancel`` answers 1 (the user cancelled); ``deny`` answers 2.  Prints "ready" once it
owns the name.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from jeepney import (
    DBusAddress,
    HeaderFields,
    MessageType,
    message_bus,
    new_method_return,
    new_signal,
)
from jeepney.io.blocking import Proxy, open_dbus_connection

PATH = "/org/freedesktop/portal/desktop"


def main() -> None:
    mode, png, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    conn = open_dbus_connection(bus="SESSION")
    Proxy(message_bus, conn).RequestName("org.freedesktop.portal.Desktop", 4)
    print("ready", flush=True)
    count = 0
    while True:
        msg = conn.receive()
        fields = msg.header.fields
        if msg.header.message_type != MessageType.method_call:
            continue
        if fields.get(HeaderFields.member) != "Screenshot" or fields.get(HeaderFields.path) != PATH:
            continue
        _parent, options = msg.body
        sender = fields[HeaderFields.sender].lstrip(":").replace(".", "_")
        token = options["handle_token"][1] if mode != "legacy" else f"old{count}"
        handle = f"{PATH}/request/{sender}/{token}"
        conn.send(new_method_return(msg, "o", (handle,)))
        results = {}
        code = {"ok": 0, "legacy": 0, "cancel": 1, "deny": 2}[mode]
        if code == 0:
            count += 1
            target = folder / f"Screenshot-{count}.png"
            shutil.copy(png, target)
            results["uri"] = ("s", target.as_uri())
        request = DBusAddress(handle, interface="org.freedesktop.portal.Request")
        conn.send(new_signal(request, "Response", "ua{sv}", (code, results)))


if __name__ == "__main__":
    main()
