"""JSON-lines messages over a pair of byte streams (the worker's pipes).

JSON rather than pickle: nothing the worker sends can run code on the daemon
side, and other engines (or a debugging human) can speak it too.  Reading
happens on a thread that feeds a queue, because a pipe cannot be polled with
a timeout on every platform.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Any, BinaryIO

EOF_EVENT: dict[str, Any] = {"ev": "eof"}


class Channel:
    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self._reader = reader
        self._writer = writer
        self._send_lock = threading.Lock()
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            self._writer.write(data)
            self._writer.flush()

    def start_reader(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self._read_loop, name=name, daemon=True)
        thread.start()
        return thread

    def _read_loop(self) -> None:
        try:
            for line in self._reader:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # never let one garbled line take the channel down
                if isinstance(message, dict):
                    self.inbox.put(message)
        except (OSError, ValueError):
            pass
        self.inbox.put(EOF_EVENT)

    def close(self) -> None:
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
