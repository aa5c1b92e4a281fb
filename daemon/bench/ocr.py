"""``yomitori bench --ocr DIR``: OCR latency (and accuracy, where truth is given).

Every ``*.png`` in DIR is read once to warm up and then ``runs`` times; a
``NAME.txt`` beside ``NAME.png`` holds the expected text, and then the
character error rate is reported too.  ``python tests/ocr_samples.py DIR``
writes the rendered set the tests use.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from daemon.errors import UserInputError
from daemon.images import open_image


def cer(truth: str, got: str) -> float:
    """Edit distance over the truth's length, whitespace ignored."""
    a, b = "".join(truth.split()), "".join(got.split())
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] / max(1, len(a))


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def run_ocr_bench(folder: Path, engine: str = "rapidocr", runs: int = 3) -> dict[str, Any]:
    from daemon.engine.ocr import RapidOcr, Tesseract

    files = sorted(folder.glob("*.png"))
    if not files:
        raise UserInputError(f"No PNG files in {folder}.")
    reader: Any = RapidOcr() if engine == "rapidocr" else Tesseract(RapidOcr())
    if engine not in ("rapidocr", "tesseract"):
        raise UserInputError("bench --ocr measures rapidocr or tesseract.")
    images = {path.name: open_image(path.read_bytes()) for path in files}
    reader.recognize(next(iter(images.values())))  # models loaded, caches warm
    times: list[float] = []
    texts: dict[str, str] = {}
    errors: dict[str, float] = {}
    for name, image in images.items():
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            found = reader.recognize(image)
            times.append(time.perf_counter() - started)
        texts[name] = found.text
        truth = folder / (Path(name).stem + ".txt")
        if truth.exists():
            errors[name] = round(cer(truth.read_text(encoding="utf-8"), found.text), 4)
    figures: dict[str, Any] = {
        "engine": engine,
        "files": len(files),
        "ocr_median_s": round(statistics.median(times), 4),
        "ocr_p90_s": round(_p90(times), 4),
    }
    if errors:
        figures["cer_mean"] = round(statistics.mean(errors.values()), 4)
        figures["cer_max"] = max(errors.values())
        figures["cer"] = errors
    figures["texts"] = texts
    return figures
