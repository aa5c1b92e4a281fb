"""Clipboard text, through pyperclip (xclip/xsel/wl-clipboard on Linux, pbcopy on
macOS, the Win32 API on Windows)."""

from __future__ import annotations

import logging

from daemon.errors import UserInputError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "No clipboard tool was found: install xclip (X11) or wl-clipboard (Wayland) "
    "with your package manager."
)


def _pyperclip() -> object:
    import pyperclip

    return pyperclip


def read_text() -> str:
    pyperclip = _pyperclip()
    try:
        text = pyperclip.paste()  # type: ignore[attr-defined]
    except pyperclip.PyperclipException:  # type: ignore[attr-defined]
        raise UserInputError(INSTALL_HINT) from None
    return text or ""


def write_text(text: str) -> None:
    pyperclip = _pyperclip()
    try:
        pyperclip.copy(text)  # type: ignore[attr-defined]
    except pyperclip.PyperclipException:  # type: ignore[attr-defined]
        raise UserInputError(INSTALL_HINT) from None


def read_image() -> bytes | None:
    """The clipboard's image as PNG bytes, or None when it holds no image.

    PIL's ImageGrab reads it natively on Windows and macOS, and through
    wl-paste or xclip on Linux.  A copied image *file* counts too.
    """
    import io

    from PIL import Image, ImageGrab

    try:
        grabbed = ImageGrab.grabclipboard()
    except (OSError, NotImplementedError) as err:
        log.debug("no clipboard image: %s", err)
        return None
    if isinstance(grabbed, list):  # file names (a copied file in a file manager)
        for name in grabbed:
            try:
                with open(name, "rb") as handle:
                    return handle.read()
            except OSError:
                continue
        return None
    if not isinstance(grabbed, Image.Image):
        return None
    buffer = io.BytesIO()
    grabbed.save(buffer, format="PNG")
    return buffer.getvalue()


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
