"""Image actions on a real vision model.

Runs when ``YOMITORI_TEST_VLM`` (the model GGUF) and ``YOMITORI_TEST_MMPROJ`` (its
projector) point at files, e.g. Qwen3-VL-2B or gemma-3-4b-it with their mmproj;
skips with that reason otherwise (no model is downloaded at test time).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from conftest import needs_model, run_cli

VLM = os.environ.get("YOMITORI_TEST_VLM")
MMPROJ = os.environ.get("YOMITORI_TEST_MMPROJ")
pytestmark = [
    needs_model,
    pytest.mark.skipif(
        not (VLM and MMPROJ and Path(VLM).is_file() and Path(MMPROJ).is_file()),
        reason="set YOMITORI_TEST_VLM and YOMITORI_TEST_MMPROJ to a vision GGUF and its mmproj",
    ),
]


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour, written with the standard library only."""
    row = b"\x00" + bytes(rgb) * width
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def vlm_config(config_dir):
    (config_dir / "models.toml").write_text(
        f'[models.vlm]\npath = "{Path(VLM).as_posix()}"\nmmproj = "{Path(MMPROJ).as_posix()}"\n'
        "n_ctx = 4096\n",
        encoding="utf-8",
    )
    yield "vlm"
    (config_dir / "models.toml").unlink()


def test_caption_describes_the_colour(vlm_config, tmp_path):
    image = tmp_path / "red.png"
    image.write_bytes(solid_png(256, 256, (220, 20, 20)))
    done = run_cli(
        "do", "caption", "--model", vlm_config, "--image", str(image), "--json", timeout=900
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.splitlines()[-1])
    assert "red" in data["text"].lower()
    assert data["timings"]["prompt_tokens"] > 0


def test_tags_style(vlm_config, tmp_path):
    image = tmp_path / "blue.png"
    image.write_bytes(solid_png(128, 128, (20, 40, 230)))
    done = run_cli(
        "do",
        "caption",
        "--model",
        vlm_config,
        "--image",
        str(image),
        "--set",
        "style=tags",
        "--json",
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    text = json.loads(done.stdout.splitlines()[-1])["text"].lower()
    assert "blue" in text and "," in text


def test_caption_reports_image_encode_time(vlm_config, tmp_path):
    image = tmp_path / "big.png"
    image.write_bytes(solid_png(3000, 2000, (30, 160, 60)))  # downscaled to max_image_side first
    done = run_cli("do", "caption", "--model", vlm_config, "--image", str(image), "--json",
                   timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    timings = json.loads(done.stdout.splitlines()[-1])["timings"]
    assert timings["image_encode_s"] > 0
    assert timings["image_side"] <= 1024


def test_ocr_through_the_vision_model(vlm_config, tmp_path):
    from ocr_samples import saved_sample

    path = tmp_path / "text.png"
    saved_sample("en_light_16", path)
    done = run_cli("do", "ocr", "--engine", "vlm", "--model", vlm_config, "--image", str(path),
                   "--json", timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = json.loads(done.stdout.splitlines()[-1])["text"].lower()
    assert "lighthouse" in text
