"""OCR: the layout logic on made-up boxes, and the real engines on images the
tests render (Japanese horizontal and vertical, English, dark mode, small text,
JPEG artefacts, gradients)."""

from __future__ import annotations

import json
import statistics
import struct
import zlib

import pytest
from conftest import needs_model, run_cli
from ocr_samples import SAMPLES, cer, font_path, render

from daemon.engine.ocr import (
    Line,
    RapidOcr,
    Tesseract,
    ascii_punctuation,
    is_vertical,
    join_tokens,
    reading_order,
    strip_cjk_spaces,
)

needs_font = pytest.mark.skipif(
    font_path() is None, reason="needs a Japanese font (fonts-ipafont-gothic)"
)
needs_vertical_tesseract = pytest.mark.skipif(
    not Tesseract.available(vertical=True),
    reason="needs tesseract with jpn_vert (tesseract-ocr-jpn-vert)",
)


def test_join_tokens_spaces_only_between_latin():
    assert join_tokens(["夕焼け", "の海"]) == "夕焼けの海"
    assert join_tokens(["Hello", "world"]) == "Hello world"
    assert join_tokens(["モデル:", "flux1"]) == "モデル: flux1"
    assert join_tokens(["1girl,", "着物"]) == "1girl,着物"


def test_strip_cjk_spaces_keeps_latin_spaces():
    assert strip_cjk_spaces("吾輩 は 猫 で ある 。") == "吾輩は猫である。"
    assert strip_cjk_spaces("a cat on a mat") == "a cat on a mat"
    assert strip_cjk_spaces("モデル flux1 dev") == "モデルflux1 dev"


def test_ascii_punctuation_only_next_to_latin():
    assert ascii_punctuation("1girl，silver hair") == "1girl,silver hair"
    assert ascii_punctuation("Seed：42") == "Seed:42"
    assert ascii_punctuation("はい，いいえ") == "はい，いいえ"


def box(x0, y0, x1, y1, text):
    return Line(text=text, box=(x0, y0, x1, y1))


def test_horizontal_reading_order_merges_a_line_split_in_boxes():
    lines = [box(300, 10, 500, 30, "world"), box(10, 12, 200, 32, "Hello"),
             box(10, 50, 400, 70, "次の行です")]  # fmt: skip
    text, vertical = reading_order(lines)
    assert not vertical
    assert text == "Hello world\n次の行です"


def test_vertical_columns_read_right_to_left():
    lines = [box(10, 0, 40, 300, "三列目です"), box(110, 0, 140, 300, "一列目です"),
             box(60, 0, 90, 300, "二列目です")]  # fmt: skip
    assert is_vertical(lines)
    text, vertical = reading_order(lines)
    assert vertical
    assert text.splitlines() == ["一列目です", "二列目です", "三列目です"]


def test_single_characters_do_not_make_text_vertical():
    assert not is_vertical([box(0, 0, 10, 40, "I"), box(20, 0, 300, 20, "a wide line")])


@pytest.fixture(scope="module")
def rapid():
    pytest.importorskip("rapidocr", reason="needs rapidocr (a dependency of yomitori)")
    engine = RapidOcr()
    engine.warm_up()
    return engine


@needs_font
def test_rapidocr_reads_the_rendered_set(rapid):
    errors = {}
    for sample in SAMPLES:
        if sample.vertical and not Tesseract.available(vertical=True):
            continue
        found = rapid.recognize(render(sample))
        errors[sample.name] = cer(sample.truth, found.text)
        assert found.vertical == sample.vertical, sample.name
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 0.05, (worst, errors[worst])
    assert statistics.mean(errors.values()) <= 0.01, errors


@needs_font
@pytest.mark.parametrize("name", ["ja_light_20", "en_small_11", "ja_dark_24", "ja_gradient_22"])
def test_rapidocr_exact_on_clean_samples(rapid, name):
    sample = next(s for s in SAMPLES if s.name == name)
    assert cer(sample.truth, rapid.recognize(render(sample)).text) == 0


@needs_font
@needs_vertical_tesseract
@pytest.mark.parametrize("name", ["ja_vertical_24", "ja_vertical_dark_20"])
def test_vertical_japanese_is_detected_and_read_in_order(rapid, name):
    sample = next(s for s in SAMPLES if s.name == name)
    found = rapid.recognize(render(sample))
    assert found.vertical
    assert found.text.splitlines() == list(sample.lines)


@needs_font
def test_vertical_without_tesseract_still_reads_columns_in_order(monkeypatch):
    pytest.importorskip("rapidocr", reason="needs rapidocr")
    engine = RapidOcr(vertical_with_tesseract=False)
    sample = next(s for s in SAMPLES if s.name == "ja_vertical_dark_20")
    found = engine.recognize(render(sample))
    assert found.vertical and found.text.splitlines() == list(sample.lines)


@needs_font
@needs_vertical_tesseract
def test_tesseract_engine_reads_vertical_text_without_spaces():
    sample = next(s for s in SAMPLES if s.name == "ja_vertical_24")
    found = Tesseract(RapidOcr()).recognize(render(sample))
    assert found.vertical
    assert cer(sample.truth, found.text) <= 0.05
    assert " " not in found.text


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size without carrying the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "not an image"),
        (b"hello, I am text", "not an image"),
        (_png_header(20000, 20000), "too large"),
        (_png_header(1, 1), "too small"),
    ],
)
def test_bad_images_are_one_line_errors(tmp_path, content, words):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    done = run_cli("do", "ocr", "--image", str(path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr


@needs_font
def test_do_ocr_json_has_ocr_timings(tmp_path):
    sample = next(s for s in SAMPLES if s.name == "ja_light_20")
    path = tmp_path / "shot.png"
    render(sample).save(path)
    done = run_cli("do", "ocr", "--image", str(path), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.splitlines()[-1])
    assert data["action"] == "ocr" and cer(sample.truth, data["text"]) <= 0.02
    assert data["timings"]["ocr_s"] > 0 and data["timings"]["vertical"] is False


@needs_font
def test_missing_tesseract_says_what_to_install(tmp_path):
    path = tmp_path / "shot.png"
    render(SAMPLES[0]).save(path)
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_cli("do", "ocr", "--image", str(path), "--engine", "tesseract",
                   env={"PATH": str(empty)})  # fmt: skip
    assert done.returncode == 2
    assert "tesseract-ocr" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@needs_font
@needs_model
def test_ocr_translate_through_the_tiny_model(tmp_path):
    sample = next(s for s in SAMPLES if s.name == "ja_dark_24")
    path = tmp_path / "shot.png"
    render(sample).save(path)
    done = run_cli("do", "ocr_translate", "--model", "tiny", "--image", str(path),
                   "--set", "max_tokens=8", "--set", "style=tags", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.splitlines()[-1])
    assert data["action"] == "ocr_translate" and data["text"].strip()
    timings = data["timings"]
    assert timings["ocr_s"] > 0 and timings["completion_tokens"] >= 1
    # The OCR text (about 25 characters) went into the prompt of the second step.
    assert timings["prompt_tokens"] > 25


@needs_font
def test_bench_ocr_prints_latency_texts_and_cer(tmp_path):
    from ocr_samples import write_set

    write_set(tmp_path / "set")
    done = run_cli("bench", "--ocr", str(tmp_path / "set"), "--runs", "2", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < figures["ocr_median_s"] <= figures["ocr_p90_s"]
    assert set(figures["texts"]) == {f"{s.name}.png" for s in SAMPLES}
    assert figures["cer_mean"] <= 0.05
