"""JSON-lines messages over a pair of byte streams (the worker's pipes).

JSON rather than pickle: nothing the worker sends can run code on the daemon
side, and other engines (or a debugging human) can speak it too.  Reading
happens on a thread that feeds a queue, because a pipe cannot be polled with
a timeout on every platform.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

EOF_EVENT: dict[str, Any] = {"ev": "eof"}


class Channel:
    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self._reader = reader
        self._writer = writer
        self._send_lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        # Messages that are no answer to a request (``{"ev": "window", …}``: what the
        # user did in a result window) go here as they arrive, not into the inbox.
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            self._writer.write(data)
            self._writer.flush()

    def start_reader(self, name: str, on_eof: Callable[[], None] | None = None) -> threading.Thread:
        """Read messages into ``inbox`` on a thread; ``on_eof`` runs there once the
        other end has closed (a child process that exited: reap it)."""
        thread = threading.Thread(target=self._read_loop, args=(on_eof,), name=name,
                                  daemon=True)  # fmt: skip
        thread.start()
        return thread

    def _read_loop(self, on_eof: Callable[[], None] | None = None) -> None:
        try:
            for line in self._reader:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # never let one garbled line take the channel down
                if not isinstance(message, dict):
                    continue
                if message.get("ev") == "window" and self.on_event is not None:
                    try:
                        self.on_event(message)
                    except Exception:  # the reader must go on
                        log.warning("event handler failed", exc_info=True)
                    continue
                self.inbox.put(message)
        except (OSError, ValueError):
            pass
        if on_eof is not None:
            try:
                on_eof()
            except Exception:  # the reader's end must still be said
                log.debug("end-of-file handler failed", exc_info=True)
        self.inbox.put(EOF_EVENT)

    def close(self) -> None:
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
