"""OCR in a process of its own, for the daemon.

onnxruntime and the OCR models take ~100 MB that Python never gives back to the
OS; in a child process they go away with it when the daemon idles (keep_alive,
"Free VRAM now"), and a crash in native code cannot take the tray down.

Protocol (JSON lines, like the model worker): ``{"op": "warm", "id"}`` →
``{"ev": "done", "id"}``; ``{"op": "ocr", "id", "engine", "png"}`` (base64) →
``{"ev": "done", "id", "text", "vertical", "timings"}``; failures →
``{"ev": "error", "id", "kind": "user" | "internal", "message"}``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from daemon.engine.channel import Channel
from daemon.engine.ocr import OcrResult, RapidOcr, Tesseract
from daemon.errors import UserInputError, YomitoriError


def serve(channel: Channel) -> None:
    rapid = RapidOcr()
    engines = {"rapidocr": rapid, "tesseract": Tesseract(rapid)}
    while True:
        message = channel.inbox.get()
        if message.get("ev") == "eof" or message.get("op") == "stop":
            return
        reply: dict[str, Any] = {"ev": "done", "id": message.get("id")}
        try:
            if message.get("op") == "warm":
                rapid.warm_up()
            elif message.get("op") == "ocr":
                from PIL import Image

                image = Image.open(io.BytesIO(base64.b64decode(message["png"]))).convert("RGB")
                found = engines[message.get("engine", "rapidocr")].recognize(image)
                reply.update(text=found.text, vertical=found.vertical, timings=found.timings)
            else:
                raise ValueError(f"unknown op {message.get('op')!r}")
        except UserInputError as err:
            reply = {"ev": "error", "id": message.get("id"), "kind": "user", "message": str(err)}
        except Exception as err:
            reply = {"ev": "error", "id": message.get("id"), "kind": "internal",
                     "message": f"{type(err).__name__}: {err}"}  # fmt: skip
        channel.send(reply)


def main(argv: list[str] | None = None) -> None:
    from daemon.engine.worker import _redirect_output

    parser = argparse.ArgumentParser(prog="yomitori-ocr")
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _redirect_output(args.log)
    channel.start_reader("ocr-channel")
    serve(channel)
    os._exit(0)


class OcrProcess:
    """The daemon side: starts the OCR process on demand, stops it to free memory."""

    def __init__(self, log_path: Path | None = None) -> None:
        from daemon import platform

        self._log = log_path or platform.log_dir() / "ocr.log"
        self._lock = threading.Lock()
        self._proc: Any = None
        self._channel: Channel | None = None
        self._ids = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def request(self, message: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        with self._lock:
            if not self.running:
                from daemon.engine.client import spawn_worker

                self._proc, self._channel = spawn_worker(self._log, "daemon.engine.ocr_worker")
            assert self._channel is not None
            self._ids += 1
            self._channel.send({**message, "id": self._ids})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    reply = self._channel.inbox.get(timeout=0.5)
                except Exception:  # queue.Empty: check the process is alive
                    if not self.running:
                        break
                    continue
                if reply.get("ev") == "eof":
                    break
                if reply.get("id") != self._ids:
                    continue
                if reply["ev"] == "error":
                    if reply.get("kind") == "user":
                        raise UserInputError(reply["message"])
                    raise YomitoriError(f"OCR failed ({reply['message'][:160]}).")
                return reply
            self._stop_locked()
            raise YomitoriError(
                "The OCR process stopped unexpectedly; the next request restarts it."
            )

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None and self._channel is not None:
            try:
                self._channel.send({"op": "stop"})
                self._proc.wait(timeout=5)
            except Exception:
                self._proc.kill()
        if self._channel is not None:
            self._channel.close()
        self._proc, self._channel = None, None


class RemoteOcr:
    """One engine of the OCR process, with the OcrEngine interface."""

    def __init__(self, process: OcrProcess, name: str) -> None:
        self.process = process
        self.name = name

    @property
    def running(self) -> bool:
        return self.process.running

    def warm_up(self) -> None:
        self.process.request({"op": "warm"})

    def release(self) -> None:
        self.process.stop()

    def recognize(self, image: Any) -> OcrResult:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        png = base64.b64encode(buffer.getvalue()).decode()
        reply = self.process.request({"op": "ocr", "engine": self.name, "png": png})
        return OcrResult(text=reply["text"], vertical=reply["vertical"], timings=reply["timings"])


if __name__ == "__main__":
    main()
