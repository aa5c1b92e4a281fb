"""OCR in a process of its own, for the daemon.

onnxruntime and the OCR models take ~100 MB that Python never gives back to the
OS; in a child process they go away with it when the daemon idles (keep_alive,
"Free VRAM now"), and a crash in native code cannot take the tray down.

Requests (see :mod:`daemon.engine.helper`): ``{"op": "warm"}``;
``{"op": "ocr", "engine", "png"}`` (base64) → ``{"text", "vertical", "timings"}``.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from daemon.engine.helper import HelperProcess, Message, open_host, serve
from daemon.engine.ocr import OcrResult, RapidOcr, Tesseract


def main(argv: list[str] | None = None) -> None:
    channel = open_host("yomitori-ocr", argv)
    rapid = RapidOcr()
    engines = {"rapidocr": rapid, "tesseract": Tesseract(rapid)}

    def handle(message: Message) -> Message:
        if message.get("op") == "warm":
            rapid.warm_up()
            return {}
        if message.get("op") == "ocr":
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(message["png"]))).convert("RGB")
            found = engines[message.get("engine", "rapidocr")].recognize(image)
            return {"text": found.text, "vertical": found.vertical, "timings": found.timings}
        raise ValueError(f"unknown op {message.get('op')!r}")

    channel.send({"ev": "ready"})  # models load on "warm" or the first request
    serve(channel, handle)
    os._exit(0)


class OcrProcess(HelperProcess):
    """The daemon side: starts the OCR process on demand, stops it to free memory."""

    def __init__(self, log_path: Path | None = None) -> None:
        super().__init__("daemon.engine.ocr_worker", "ocr.log", "the OCR process")
        if log_path is not None:
            self.set_log(log_path)


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
