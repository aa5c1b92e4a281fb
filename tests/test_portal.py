"""Regions through the desktop's screenshot portal (Wayland), against a stand-in portal
on a private session D-Bus: the PNG arrives and its file is deleted; cancel and refusal
are told apart; no portal at all says what to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

from daemon.errors import Cancelled, UserInputError
from daemon.sources.portal import NO_PORTAL, portal_screenshot, use_portal

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None,
    reason="needs dbus-daemon (installer/setup.sh --test installs dbus)",
)


@pytest.fixture
def bus(monkeypatch):
    """A private session bus for this test."""
    started = subprocess.run(
        ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    address, pid = started.stdout.split()[:2]
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    yield address
    os.kill(int(pid), 15)


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "selected.png"
    Image.new("RGB", (120, 40), (10, 200, 30)).save(path)
    return path


def start_portal(mode: str, picture: Path, folder: Path) -> subprocess.Popen[str]:
    folder.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_portal.py"), mode, str(picture), str(folder)],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("mode", ["ok", "legacy"])
def test_the_selected_png_arrives_and_the_portals_file_is_deleted(bus, picture, tmp_path, mode):
    pictures = tmp_path / "Pictures"
    portal = start_portal(mode, picture, pictures)
    try:
        assert portal_screenshot() == picture.read_bytes()
        assert portal_screenshot() == picture.read_bytes()  # a second request works too
    finally:
        portal.terminate()
    assert list(pictures.iterdir()) == []  # nothing left in the user's Pictures


@pytest.mark.parametrize(("mode", "error", "words"), [
    ("cancel", Cancelled, "cancelled"),
    ("deny", UserInputError, "allow screenshots for yomitori"),
])  # fmt: skip
def test_cancel_and_refusal_are_told_apart(bus, picture, tmp_path, mode, error, words):
    portal = start_portal(mode, picture, tmp_path / "Pictures")
    try:
        with pytest.raises(error, match=words):
            portal_screenshot()
    finally:
        portal.terminate()


def test_no_portal_says_what_to_install(bus):
    with pytest.raises(UserInputError) as caught:
        portal_screenshot()
    assert str(caught.value) == NO_PORTAL
    assert "xdg-desktop-portal" in NO_PORTAL and "\n" not in NO_PORTAL


def test_no_session_bus_is_one_sentence(monkeypatch):
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    with pytest.raises(UserInputError, match="No session D-Bus"):
        portal_screenshot()


@pytest.mark.parametrize(("setting", "wayland", "expected"), [
    ("auto", True, True), ("auto", False, False), ("portal", False, True),
    ("overlay", True, False),
])  # fmt: skip
def test_when_the_portal_is_used(monkeypatch, setting, wayland, expected):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland" if wayland else "x11")
    assert use_portal(setting) is expected


def test_capture_on_wayland_saves_what_the_desktop_selected(bus, picture, tmp_path, config_dir):
    (config_dir / "hotkeys.toml").write_text('[settings]\nregion_capture = "portal"\n')
    portal = start_portal("ok", picture, tmp_path / "Pictures")
    out = tmp_path / "crop.png"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "capture", "--out", str(out)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        )  # fmt: skip
    finally:
        portal.terminate()
        (config_dir / "hotkeys.toml").unlink()
    assert done.returncode == 0, done.stderr
    # The portal tells the size of the selection, not where it was.
    assert json.loads(done.stdout) == {"x": None, "y": None, "width": 120, "height": 40}
    assert out.read_bytes() == picture.read_bytes()
