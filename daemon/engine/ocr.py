"""OCR engines: RapidOCR (default, offline, Japanese + English), tesseract, and the
vision model (through the ``ocr_vlm`` template, see :mod:`daemon.actions`).

Layout is ours, not the engine's: boxes are ordered in reading order, vertical
Japanese (縦書き) is recognised from the box shapes and read in columns right
to left, and tokens are joined without spaces between Japanese characters.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.errors import UserInputError

log = logging.getLogger(__name__)

ENGINES = ("rapidocr", "tesseract", "vlm")
# Text lines whose height in the image is below this many pixels are read from a
# 2× upscaled image: the detector misses or merges strokes that thin.
SMALL_TEXT_PX = 20
# Detector input: at most this long side.  Screen text needs no upscaling to be
# found, and anything bigger costs time (measured: 0.13 s vs 0.49 s for 800×200).
DET_MAX_SIDE = 1280


@dataclass(frozen=True)
class Line:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass
class OcrResult:
    text: str
    vertical: bool = False
    lines: list[Line] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class OcrEngine(Protocol):
    name: str

    def recognize(self, image: Any) -> OcrResult: ...


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_tokens(parts: list[str]) -> str:
    """Join pieces of one line: a space only between two non-CJK ends."""
    out = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and not _is_wide(out[-1]) and not _is_wide(part[0]):
            out += " "
        out += part
    return out


_FULLWIDTH_PUNCT = {"，": ",", "：": ":", "；": ";", "！": "!", "？": "?", "（": "(", "）": ")"}


def ascii_punctuation(text: str) -> str:
    """Full-width , : ; ! ? ( ) next to Latin letters or digits become ASCII.

    The recogniser often writes "1girl，silver hair" or "Seed：42" for screen text
    that used ASCII; inside Japanese sentences the full-width forms stay.
    """
    chars = list(text)
    for i, char in enumerate(chars):
        if char in _FULLWIDTH_PUNCT:
            before = text[:i].rstrip()[-1:]
            after = text[i + 1 :].lstrip()[:1]
            if (before.isascii() and before.isalnum()) or (after.isascii() and after.isalnum()):
                chars[i] = _FULLWIDTH_PUNCT[char]
    return "".join(chars)


def strip_cjk_spaces(text: str) -> str:
    """Drop the spaces tesseract puts between Japanese characters."""
    chars = list(text)
    kept = []
    for i, char in enumerate(chars):
        if char == " " and 0 < i < len(chars) - 1:
            before, after = kept[-1] if kept else "", chars[i + 1]
            if before and (_is_wide(before) or _is_wide(after)):
                continue
        kept.append(char)
    return "".join(kept)


def is_vertical(lines: list[Line]) -> bool:
    """Vertical writing: most boxes holding several characters are tall and narrow."""
    multi = [line for line in lines if len(line.text) >= 2]
    if not multi:
        return False
    tall = sum(1 for line in multi if line.height > 1.5 * line.width)
    return tall * 2 > len(multi)


def _group(items: list[Line], key_center: Any, key_extent: Any) -> list[list[Line]]:
    """Cluster boxes whose centers fall within half a box of each other."""
    groups: list[list[Line]] = []
    for line in sorted(items, key=key_center):
        if groups:
            last = groups[-1]
            center = sum(key_center(x) for x in last) / len(last)
            extent = max(key_extent(x) for x in [*last, line])
            if abs(key_center(line) - center) < extent / 2:
                last.append(line)
                continue
        groups.append([line])
    return groups


def reading_order(lines: list[Line]) -> tuple[str, bool]:
    """The text in reading order, and whether it was vertical."""
    if not lines:
        return "", False
    if is_vertical(lines):
        columns = _group(lines, lambda ln: (ln.box[0] + ln.box[2]) / 2, lambda ln: ln.width)
        columns.sort(key=lambda col: -min(ln.box[0] for ln in col))  # right to left
        text = "\n".join(join_tokens([x.text for x in sorted(col, key=lambda ln: ln.box[1])])
                         for col in columns)  # fmt: skip
        return text, True
    rows = _group(lines, lambda ln: (ln.box[1] + ln.box[3]) / 2, lambda ln: ln.height)
    text = "\n".join(join_tokens([x.text for x in sorted(row, key=lambda ln: ln.box[0])])
                     for row in rows)  # fmt: skip
    return text, False


class RapidOcr:
    """RapidOCR with the PP-OCR models inside its wheel (no download, ever)."""

    name = "rapidocr"

    def __init__(self, threads: int | None = None, vertical_with_tesseract: bool = True) -> None:
        self._threads = threads
        self._engine: Any = None
        self._lock = threading.Lock()
        self.vertical_reader: Tesseract | None = Tesseract() if vertical_with_tesseract else None
        self._hinted = False

    def warm_up(self) -> None:
        """Load the models now (≈ 0.3 s), so the first hotkey does not pay for it."""
        self._get()

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError:
                    raise UserInputError(
                        "The OCR engine is not installed: pip install rapidocr onnxruntime."
                    ) from None
                params: dict[str, Any] = {
                    "Global.log_level": "error",
                    "Global.use_cls": False,  # screen text is never upside down
                    "Det.limit_type": "max",
                    "Det.limit_side_len": DET_MAX_SIDE,
                }
                if self._threads:
                    params["EngineConfig.onnxruntime.intra_op_num_threads"] = self._threads
                self._engine = RapidOCR(params=params)
            return self._engine

    def _lines(self, image: Any, scale: float) -> list[Line]:
        import numpy as np

        output = self._get()(np.asarray(image.convert("RGB")))
        if output.boxes is None or output.txts is None:
            return []
        lines = []
        for box, text, score in zip(output.boxes, output.txts, output.scores, strict=False):
            xs = [p[0] / scale for p in box]
            ys = [p[1] / scale for p in box]
            box = (min(xs), min(ys), max(xs), max(ys))
            lines.append(Line(text=ascii_punctuation(text), box=box, score=score))
        return lines

    def recognize(self, image: Any) -> OcrResult:
        started = time.perf_counter()
        lines = self._lines(image, 1.0)
        heights = sorted(min(ln.height, ln.width) for ln in lines) or [0.0]
        small = heights[len(heights) // 2] < SMALL_TEXT_PX
        if small or not lines:
            from PIL import Image

            bigger = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
            again = self._lines(bigger, 2.0)
            if len("".join(ln.text for ln in again)) >= len("".join(ln.text for ln in lines)):
                lines = again
        text, vertical = reading_order(lines)
        timings = {"ocr_s": 0.0, "upscaled": float(small)}
        if vertical and self.vertical_reader is not None:
            # RapidOCR finds vertical columns but drops punctuation set in the
            # top-right of its cell (。、); tesseract's jpn_vert reads it whole.
            if self.vertical_reader.available():
                text = self.vertical_reader.read(image, vertical=True)
                timings["vertical_engine"] = 1.0
            elif not self._hinted:
                self._hinted = True
                log.info("vertical text read without punctuation fixes; %s", Tesseract.HINT)
        timings["ocr_s"] = round(time.perf_counter() - started, 4)
        return OcrResult(text=text, vertical=vertical, lines=lines, timings=timings)


# tesseract's OpenMP threads cost more than they give on a screen crop: one thread reads
# a vertical 24 px sample in 0.11 s instead of 0.33 s on 2 cores.
_TESSERACT_ENV = {"OMP_THREAD_LIMIT": "1", **os.environ}
# No console window flashing up on Windows when the daemon runs without one.
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)


@functools.cache
def _tesseract_langs() -> frozenset[str]:
    if shutil.which("tesseract") is None:
        return frozenset()
    done = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True,
                          timeout=10, check=False, creationflags=_NO_WINDOW)  # fmt: skip
    return frozenset(done.stdout.split())


class Tesseract:
    """tesseract, with jpn_vert and --psm 5 for vertical text."""

    name = "tesseract"
    HINT = ("tesseract is not installed: install tesseract-ocr with its Japanese data "
            "(Debian/Ubuntu: tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert).")  # fmt: skip

    def __init__(self, layout: RapidOcr | None = None) -> None:
        self._layout = layout

    @staticmethod
    def available(vertical: bool = True) -> bool:
        langs = _tesseract_langs()
        return "jpn_vert" in langs if vertical else "jpn" in langs

    def _vertical(self, image: Any) -> bool:
        if self._layout is not None:
            try:
                return is_vertical(self._layout._lines(image, 1.0))
            except UserInputError:
                pass
        return image.height > 1.3 * image.width

    def recognize(self, image: Any) -> OcrResult:
        started = time.perf_counter()
        vertical = self._vertical(image)
        text = self.read(image, vertical)
        return OcrResult(text=text, vertical=vertical,
                         timings={"ocr_s": round(time.perf_counter() - started, 4)})  # fmt: skip

    def read(self, image: Any, vertical: bool) -> str:
        if shutil.which("tesseract") is None:
            raise UserInputError(self.HINT)
        langs = "jpn_vert" if vertical else "jpn+eng"
        import io

        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        done = subprocess.run(
            ["tesseract", "stdin", "stdout", "-l", langs, "--psm", "5" if vertical else "6"],
            input=buffer.getvalue(), capture_output=True, timeout=60, check=False,
            env=_TESSERACT_ENV, creationflags=_NO_WINDOW,
        )  # fmt: skip
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise UserInputError(f"tesseract failed ({detail[0][:120]}); {self.HINT}")
        lines = [strip_cjk_spaces(ln.strip()) for ln in done.stdout.decode().splitlines()]
        return "\n".join(ln for ln in lines if ln)
