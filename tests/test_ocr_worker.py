"""OCR in its own process: results as in-process, memory freed by stopping it,
and a crash costs one request, not the daemon."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from ocr_samples import SAMPLES, cer, font_path, render
from PIL import Image

from daemon.engine.ocr_worker import OcrProcess, RemoteOcr
from daemon.errors import UserInputError, YomitoriError

pytestmark = pytest.mark.skipif(font_path() is None, reason="needs fonts-ipafont-gothic")


@pytest.fixture
def process(tmp_path):
    pytest.importorskip("rapidocr", reason="needs rapidocr")
    proc = OcrProcess(tmp_path / "ocr.log")
    yield proc
    proc.stop()


def test_reads_through_the_process_and_stops_to_free_memory(process):
    reader = RemoteOcr(process, "rapidocr")
    sample = next(s for s in SAMPLES if s.name == "ja_light_20")
    found = reader.recognize(render(sample))
    assert cer(sample.truth, found.text) == 0 and found.vertical is False
    pid = process._child.pid
    assert reader.running and psutil.Process(pid).memory_info().rss > 50 * 2**20
    reader.release()
    assert not reader.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_killed_mid_request_fails_that_request_then_restarts(process):
    reader = RemoteOcr(process, "rapidocr")
    reader.warm_up()
    sample = next(s for s in SAMPLES if s.name == "en_light_16")
    image = render(sample)
    big = Image.new("RGB", (image.width * 2, image.height * 16), "white")
    for y in range(16):  # 64 lines of text: about 2 s of work here
        for x in range(2):
            big.paste(image, (x * image.width, y * image.height))
    failures: list[BaseException] = []

    def busy() -> None:
        try:
            reader.recognize(big)
        except YomitoriError as err:
            failures.append(err)

    worker = threading.Thread(target=busy)
    worker.start()
    time.sleep(0.5)  # the request is in the OCR process by now
    os.kill(process._child.pid, signal.SIGKILL)
    worker.join(30)
    assert len(failures) == 1 and "stopped unexpectedly" in str(failures[0])
    assert cer(sample.truth, reader.recognize(image).text) <= 0.02


def test_killed_while_idle_restarts_without_failing_a_request(process):
    reader = RemoteOcr(process, "rapidocr")
    reader.warm_up()
    old = psutil.Process(process._child.pid)
    old.kill()
    old.wait(10)
    sample = next(s for s in SAMPLES if s.name == "en_light_16")
    assert cer(sample.truth, reader.recognize(render(sample)).text) <= 0.02
    assert process._child.pid != old.pid


def test_user_errors_keep_their_message(process, monkeypatch):
    reader = RemoteOcr(process, "tesseract")
    monkeypatch.setenv("PATH", "/nonexistent")  # the child inherits it: no tesseract
    with pytest.raises(UserInputError, match="tesseract-ocr"):
        reader.recognize(render(SAMPLES[0]))
