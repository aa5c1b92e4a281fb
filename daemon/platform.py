"""The one place that reads the platform, the environment and user folders.

Everything else asks this module, so tests (and portable installs) can move
every folder with environment variables.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

from platformdirs import PlatformDirs

from daemon import APP_NAME

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def _dirs() -> PlatformDirs:
    return PlatformDirs(APP_NAME, appauthor=False)


def _env_dir(var: str, default: Callable[[], str]) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else Path(default())


def config_dir() -> Path:
    """The user's config folder (``YOMITORI_CONFIG_DIR`` overrides)."""
    return _env_dir("YOMITORI_CONFIG_DIR", lambda: _dirs().user_config_dir)


def data_dir() -> Path:
    """Where history and other user data live (``YOMITORI_DATA_DIR`` overrides)."""
    return _env_dir("YOMITORI_DATA_DIR", lambda: _dirs().user_data_dir)


def cache_dir() -> Path:
    """Where rebuildable files live, e.g. the assembled demo model."""
    return _env_dir("YOMITORI_CACHE_DIR", lambda: _dirs().user_cache_dir)


def log_dir() -> Path:
    """Where logs go (``YOMITORI_LOG_DIR`` overrides)."""
    return _env_dir("YOMITORI_LOG_DIR", lambda: _dirs().user_log_dir)


def _default_runtime_dir() -> str:
    # Without XDG_RUNTIME_DIR (a bare X session, some containers) platformdirs
    # warns and falls back to a per-user folder in /tmp; that is fine here
    # because the folder is created 0700 below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dirs().user_runtime_dir


def runtime_dir() -> Path:
    """Where the daemon's socket and lock live (``YOMITORI_RUNTIME_DIR`` overrides).

    Created private (0700): only this user may reach the daemon.
    """
    path = _env_dir("YOMITORI_RUNTIME_DIR", _default_runtime_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not is_windows():
        path.chmod(0o700)
    return path


def defaults_dir() -> Path:
    """The shipped ``hotkeys.toml`` and ``prompts/``.

    An installed wheel carries them in ``daemon/_defaults``; a source checkout
    (editable install) has them at the repository's top level.
    """
    packaged = _PACKAGE_DIR / "_defaults"
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent


def env_model() -> str | None:
    """``YOMITORI_MODEL``: a GGUF path that overrides the configured default."""
    return os.environ.get("YOMITORI_MODEL") or None


def beside_python(program: str) -> str | None:
    """``program`` in the folder of this Python (a venv's bin/ or Scripts/), if there."""
    name = f"{program}.exe" if sys.platform == "win32" else program
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else None


def is_x11() -> bool:
    """An X display this process can use (Linux/BSD, including XWayland)."""
    return sys.platform not in ("win32", "darwin") and bool(os.environ.get("DISPLAY"))


def is_windows() -> bool:
    return sys.platform == "win32"


def give_back_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps big freed blocks once its
    mmap threshold has grown: a 4K screenshot's worth stays otherwise).  No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl)
        ctypes.CDLL(None).malloc_trim(0)


def is_linux() -> bool:
    return sys.platform.startswith("linux")


def environment() -> dict[str, str]:
    """A copy of this process's environment, to hand a child process (plus its own keys)."""
    return dict(os.environ)
