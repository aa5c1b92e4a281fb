"""Screen-like text images for the OCR tests and ``yomitori bench --ocr``.

Rendered here with a Japanese font from the system (Debian: fonts-ipafont-gothic),
so no image data is shipped or downloaded.  ``python tests/ocr_samples.py DIR``
writes the set as NAME.png + NAME.txt (the truth) for the benchmark.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from daemon.bench.ocr import cer

__all__ = ["SAMPLES", "Sample", "cer", "font_path", "render", "write_set"]

FONT_PATHS = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


def font_path() -> str | None:
    return next((p for p in FONT_PATHS if Path(p).exists()), None)


@dataclass(frozen=True)
class Sample:
    name: str
    lines: tuple[str, ...]
    size: int = 20
    dark: bool = False
    vertical: bool = False
    gradient: bool = False
    jpeg: int | None = None

    @property
    def truth(self) -> str:
        return "\n".join(self.lines)


SAMPLES = (
    Sample(
        "ja_light_20",
        ("夕焼けの海辺で麦わら帽子の少女が笑っている。", "背景には白い灯台と入道雲が見える。"),
    ),
    Sample(
        "en_light_16",
        (
            "A lighthouse on a cliff at sunset, dramatic clouds,",
            "warm orange light, wide angle shot.",
        ),
        size=16,
    ),
    Sample("ja_dark_24", ("夜の東京の路地裏、ネオンの看板が雨に濡れて光る。",), size=24, dark=True),
    Sample(
        "mixed_light_18",
        (
            "プロンプト: 1girl, silver hair, 着物, 桜の木の下",
            "Steps: 28, CFG scale: 5.5, Sampler: Euler a",
        ),
        size=18,
    ),
    Sample("ja_small_12", ("小さな文字も正しく読み取れるかを確かめるための一行です。",), size=12),
    Sample(
        "en_small_11", ("Negative prompt: lowres, bad anatomy, extra fingers, blurry",), size=11
    ),
    Sample("ja_large_30", ("森の奥の古い神社",), size=30),
    Sample(
        "en_dark_14",
        (
            "masterpiece, best quality, a cat wearing a tiny wizard hat",
            "sitting on a stack of old books, candle light",
        ),
        size=14,
        dark=True,
    ),
    Sample("ja_gradient_22", ("青空と草原、遠くに風車が回っている風景。",), size=22, gradient=True),
    Sample(
        "en_gradient_20",
        ("Cinematic photo of a rainy street in Kyoto at night",),
        size=20,
        gradient=True,
    ),
    Sample("ja_jpeg_20", ("桜並木の下を自転車で走る高校生たち。",), size=20, jpeg=55),
    Sample(
        "en_jpeg_16",
        ("portrait of an old fisherman, detailed wrinkles, 85mm lens",),
        size=16,
        jpeg=55,
    ),
    Sample(
        "ja_vertical_24",
        ("吾輩は猫である。", "名前はまだ無い。", "どこで生れたか"),
        size=24,
        vertical=True,
    ),
    Sample(
        "ja_vertical_dark_20",
        ("雪の降る夜に", "灯りがともる", "山あいの温泉宿"),
        size=20,
        vertical=True,
        dark=True,
    ),
    Sample(
        "ja_dark_small_13",
        ("ダークモードの小さな文字: 設定、表示、ウィンドウ",),
        size=13,
        dark=True,
    ),
    Sample("mixed_dark_18", ("Seed: 123456789, モデル: flux1-dev-Q8_0.gguf",), size=18, dark=True),
)

_VERTICAL_PUNCT = {"。", "、"}


def render(sample: Sample) -> Image.Image:
    path = font_path()
    if path is None:
        raise FileNotFoundError("no Japanese font: install fonts-ipafont-gothic")
    font = ImageFont.truetype(path, sample.size)
    fg, bg = ((230, 230, 230), (30, 31, 34)) if sample.dark else ((20, 20, 20), (250, 250, 250))
    pad, step = sample.size, int(sample.size * 1.5)
    if sample.vertical:
        longest = max(len(line) for line in sample.lines)
        width = pad * 2 + step * len(sample.lines)
        height = pad * 2 + int(sample.size * 1.15) * longest
    else:
        longest_px = max(int(font.getlength(line)) for line in sample.lines)
        width, height = max(800, longest_px + pad * 2), pad * 2 + step * len(sample.lines)
    image = Image.new("RGB", (width, height), bg)
    if sample.gradient:
        top, bottom = (250, 236, 200), (170, 205, 240)
        for y in range(height):
            t = y / max(1, height - 1)
            colour = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
            ImageDraw.Draw(image).line([(0, y), (width, y)], fill=colour)
    draw = ImageDraw.Draw(image)
    if sample.vertical:
        x = width - pad - sample.size  # columns run right to left
        for line in sample.lines:
            for i, char in enumerate(line):
                y = pad + i * int(sample.size * 1.15)
                if char in _VERTICAL_PUNCT:  # vertical typesetting puts it top-right
                    draw.text((x + sample.size * 0.55, y - sample.size * 0.45), char,
                              font=font, fill=fg)  # fmt: skip
                else:
                    draw.text((x, y), char, font=font, fill=fg)
            x -= step
    else:
        for i, line in enumerate(sample.lines):
            draw.text((pad, pad + i * step), line, font=font, fill=fg)
    if sample.jpeg:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=sample.jpeg)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def saved_sample(name: str, path: Path) -> Sample:
    """For a test: the sample ``name`` rendered into ``path`` (skips without the font)."""
    if font_path() is None:
        import pytest

        pytest.skip("needs a Japanese font (fonts-ipafont-gothic)")
    sample = next(s for s in SAMPLES if s.name == name)
    render(sample).save(path)
    return sample


def write_set(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in SAMPLES:
        render(sample).save(folder / f"{sample.name}.png")
        (folder / f"{sample.name}.txt").write_text(sample.truth, encoding="utf-8")


if __name__ == "__main__":
    write_set(Path(sys.argv[1]))
