"""A failing notifier is logged without the text it was showing: for notify-send and
osascript the exception's own text is the command line, which holds the result."""

from __future__ import annotations

import logging
import os
import stat
import subprocess

import pytest

from daemon.sinks.notify import NotificationQueue, NotifySendNotifier, failure

MARKER = "夕焼けの海-marker-7f3a"


class Failing:
    name = "failing"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def is_available(self) -> bool:
        return True

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (subprocess.CalledProcessError(1, ["notify-send", "-a", "yomitori", "t", MARKER]),
         "exit status 1"),
        (subprocess.TimeoutExpired(["osascript", "-e", "x", "t", MARKER], 5),
         "no answer within 5 s"),
        (RuntimeError(f"D-Bus said no to {MARKER}"), "RuntimeError"),
    ],
)  # fmt: skip
def test_a_failing_notifier_logs_no_text(error, said, caplog):
    caplog.set_level(logging.INFO)
    queue = NotificationQueue(Failing(error))
    queue.notify("translate_en", MARKER)
    queue.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any(said in w and "failing" in w for w in warnings), warnings
    assert not any(MARKER in w for w in warnings)
    assert failure(error) == said


def test_a_real_failing_notify_send_logs_no_text(tmp_path, monkeypatch, caplog):
    """notify-send itself, failing (a stand-in script on PATH that exits 1)."""
    script = tmp_path / "notify-send"
    script.write_text('#!/bin/sh\necho "cannot connect: $*" >&2\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    caplog.set_level(logging.INFO)
    queue = NotificationQueue(NotifySendNotifier())
    queue.notify("translate_en", MARKER)
    queue.close()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("notify-send failed (exit status 1)" in m for m in messages), messages
    assert not any(MARKER in m for m in messages)
