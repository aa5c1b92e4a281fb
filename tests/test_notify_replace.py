"""A job's notifications replace each other on a real notification server (dunst on a
private D-Bus): "queued" or "loading" becomes the result instead of a stack of three."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from xdesktop import desktop, missing_tools

from daemon.sinks.notify import DBusNotifier, NotifySendNotifier

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")


def test_a_tag_replaces_the_earlier_notification_in_place(monkeypatch: pytest.MonkeyPatch):
    with desktop() as desk:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", desk.env["DBUS_SESSION_BUS_ADDRESS"])
        desk.clear_notifications()
        notifier = DBusNotifier()
        assert notifier.is_available()
        notifier.notify("Translate to a prompt", "Queued: it starts when … is done.", "job-1")
        notifier.notify("Translate to a prompt — copied", "A cat sits.", "job-1")
        notifier.notify("Prompt variations", "Loading the model…", "job-2")
        notifier.notify("Prompt variations — copied", "1. …", "job-2")
        # No tag: each is one of its own (bodies differ: dunst folds exact duplicates).
        notifier.notify("Config reloaded", "7 hotkeys")
        notifier.notify("Config reloaded", "8 hotkeys")
        counts = desk.run("dunstctl", "count", "displayed").stdout.strip()
        waiting = desk.run("dunstctl", "count", "waiting").stdout.strip()
        assert int(counts) + int(waiting) == 4
        summaries = [n["summary"] for n in desk.notifications()]
        assert sorted(summaries) == sorted([
            "Translate to a prompt — copied", "Prompt variations — copied",
            "Config reloaded", "Config reloaded",
        ])  # fmt: skip


def test_notify_send_replaces_where_it_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A notify-send of 0.8 prints ids and takes --replace-id; an older one is used as
    it is (every note shown).  Both stand-ins record their command lines."""
    log = tmp_path / "calls"
    for version, helps in (("new", "--replace-id=REPLACE_ID"), ("old", "")):
        folder = tmp_path / version
        folder.mkdir()
        script = folder / "notify-send"
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "--help" ]; then echo "{helps}"; exit 0; fi\n'
            f'echo "{version} $*" >> "{log}"\n'
            "echo 17\n",
            encoding="utf-8",
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
        notifier = NotifySendNotifier()
        notifier.notify("T", "queued", "job-1")
        notifier.notify("T — copied", "done", "job-1")
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls == [
        "new -a yomitori --print-id -- T queued",
        "new -a yomitori --print-id --replace-id 17 -- T — copied done",
        "old -a yomitori -- T queued",
        "old -a yomitori -- T — copied done",
    ]
