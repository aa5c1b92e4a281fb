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
