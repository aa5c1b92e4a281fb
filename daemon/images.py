"""Images from the user (a file, the clipboard, a screen region): checked before
any model sees them, and downscaled for the vision model."""

from __future__ import annotations

import io
import time
from typing import Any

from daemon.errors import UserInputError

MIN_SIDE = 8
# 40 megapixels: an 8K screen is 33 MP.  A bigger image is almost surely a
# mistake (or a decompression bomb); refusing is kinder than freezing.
MAX_PIXELS = 40_000_000


def check_image(data: bytes) -> str | None:
    """Refuse empty, unreadable, tiny or huge images from the header alone (no decode);
    the format's name when fine."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UserInputError("The image is empty (0 bytes).")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            kind = probe.format
    except Image.DecompressionBombError:  # PIL refuses to even open it
        raise UserInputError(
            f"The image is too large; select or save a smaller part "
            f"(at most {MAX_PIXELS // 1_000_000} megapixels)."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserInputError(
            "That is not an image yomitori can read (PNG, JPEG, WebP, GIF, BMP)."
        ) from None
    if width * height > MAX_PIXELS:
        raise UserInputError(
            f"The image is too large ({width}×{height}); select or save a smaller part "
            f"(at most {MAX_PIXELS // 1_000_000} megapixels)."
        )
    if min(width, height) < MIN_SIDE:
        raise UserInputError(f"The image is too small to read ({width}×{height} pixels).")
    return kind


def open_image(data: bytes) -> Any:
    """A decoded RGB PIL image, or a one-sentence UserInputError."""
    from PIL import Image

    kind = check_image(data)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise UserInputError(
            f"The {kind or 'image'} file is damaged and cannot be decoded."
        ) from None
    return image.convert("RGB")


def downscale(image: Any, max_side: int) -> Any:
    """Fit within ``max_side``: image tokens dominate a vision model's latency."""
    from PIL import Image

    if max_side <= 0 or max(image.size) <= max_side:
        return image
    ratio = max_side / max(image.size)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, Image.Resampling.LANCZOS)


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: it only crosses a pipe
    return buffer.getvalue()


def prepare_for_model(data: bytes, max_side: int) -> tuple[bytes, dict[str, float]]:
    """Check, downscale and re-encode; also how long that took."""
    started = time.perf_counter()
    image = downscale(open_image(data), max_side)
    return png_bytes(image), {"image_prepare_s": round(time.perf_counter() - started, 4),
                              "image_side": float(max(image.size))}  # fmt: skip
