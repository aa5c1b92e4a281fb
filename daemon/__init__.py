"""yomitori: a local-AI hotkey daemon (import package ``daemon``)."""

from __future__ import annotations

__version__ = "0.1.0"
APP_NAME = "yomitori"
