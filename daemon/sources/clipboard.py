"""Clipboard text, through pyperclip (xclip/xsel/wl-clipboard on Linux, pbcopy or
AppKit on macOS, the Win32 API on Windows)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from daemon.errors import UserInputError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "No clipboard tool was found: install xclip (X11) or wl-clipboard (Wayland) "
    "with your package manager."
)
# Windows: another program holds the clipboard open (pyperclip retries for 0.5 s);
# macOS: pbcopy/pbpaste failed.  No tool is missing there.
BUSY_HINT = "The clipboard could not be used (another program may be holding it); try again."
# A copied file is read only if it is at most this large and its header is an image's.
MAX_IMAGE_FILE = 100 * 2**20


def _pyperclip() -> object:
    import pyperclip

    return pyperclip


def _clipboard_error() -> UserInputError:
    if sys.platform in ("win32", "darwin"):
        return UserInputError(BUSY_HINT)
    return UserInputError(INSTALL_HINT)


def read_text() -> str:
    pyperclip = _pyperclip()
    try:
        text = pyperclip.paste()  # type: ignore[attr-defined]
    except pyperclip.PyperclipException:  # type: ignore[attr-defined]
        raise _clipboard_error() from None
    return str(text or "")


def write_text(text: str) -> None:
    pyperclip = _pyperclip()
    try:
        pyperclip.copy(text)  # type: ignore[attr-defined]
    except pyperclip.PyperclipException:  # type: ignore[attr-defined]
        raise _clipboard_error() from None


def read_image() -> bytes | None:
    """The clipboard's image as PNG bytes, or None when it holds no image.

    PIL's ImageGrab reads it natively on Windows and macOS, and through
    wl-paste or xclip on Linux.  A copied image *file* (Explorer, Finder)
    counts too: its own bytes, if it is an image.
    """
    import io

    from PIL import Image, ImageGrab

    if sys.platform == "darwin":
        # Finder puts a copied file's icon on the clipboard as a picture as well:
        # the file itself is what the user means.
        named = _mac_clipboard_file()
        if named is not None:
            return image_file(named)
    try:
        grabbed = ImageGrab.grabclipboard()
    except (OSError, NotImplementedError) as err:
        log.debug("no clipboard image: %s", err)
        return None
    if isinstance(grabbed, list):  # file names (Windows: files copied in Explorer)
        return image_file(*grabbed)
    if not isinstance(grabbed, Image.Image):
        return None
    buffer = io.BytesIO()
    try:
        grabbed.save(buffer, format="PNG")  # macOS decodes lazily, here
    except (OSError, ValueError) as err:
        log.debug("clipboard image unreadable: %s", err)
        return None
    return buffer.getvalue()


def image_file(*names: str) -> bytes | None:
    """The bytes of the first of ``names`` that is an image file (header checked, size
    capped: a copied video or folder is not read into memory); None if none is."""
    from PIL import Image, UnidentifiedImageError

    for name in _nonempty(names):
        try:
            if not os.path.isfile(name) or os.path.getsize(name) > MAX_IMAGE_FILE:
                continue
            with Image.open(name):
                pass  # the header only
            with open(name, "rb") as handle:
                return handle.read()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            continue
    return None


def _nonempty(names: Iterable[str]) -> list[str]:
    return [n for n in names if isinstance(n, str) and n]


def _mac_clipboard_file() -> str | None:
    """The POSIX path of a file copied in Finder, or None (no file on the clipboard)."""
    import subprocess

    try:
        done = subprocess.run(
            ["osascript", "-e", "POSIX path of (the clipboard as «class furl»)"],
            capture_output=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None  # no file URL on the clipboard
    return done.stdout.decode("utf-8", errors="replace").strip() or None


def read_primary() -> str:
    """X11's PRIMARY selection: the text currently selected, no copy needed."""
    import shutil
    import subprocess

    for command in (["xclip", "-selection", "primary", "-o"], ["xsel", "--primary", "--output"]):
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run(command, capture_output=True, timeout=2, check=False)
        if done.returncode == 0:
            return done.stdout.decode("utf-8", errors="replace")
    return ""
