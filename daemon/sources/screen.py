"""The frozen screen and rectangles on it: grab every monitor with mss, crop exact pixels.

All coordinates here are *physical* pixels of the virtual desktop (the union of all
monitors), because that is what the pixels of a screenshot are.  The overlay's window
system may count in other units (points on a Retina Mac), so the overlay maps its own
coordinates to image pixels through the ratio image size / window size
(:func:`to_image`), never by assuming the two are equal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from PIL import Image

from daemon.errors import UserInputError
from daemon.platform import is_windows

log = logging.getLogger(__name__)

# How bright the frozen screen stays outside the selection (0..1).
DIM = 0.45
EMPTY_SELECTION = (
    "The selection is empty: drag a rectangle at least one pixel wide and tall, "
    "or press Esc to cancel."
)


@cache
def ensure_dpi_awareness() -> None:
    """Make Windows report physical pixels on every monitor (no-op elsewhere).

    Without per-monitor DPI awareness Windows scales the coordinates of a 150 % monitor
    and the overlay, the screenshot and the selection disagree.  It must run before the
    first window or screenshot of the process, so grab_screen and RegionSelector call it
    first; calling it again is free.
    """
    if not is_windows():
        return
    import ctypes

    windll = ctypes.windll  # type: ignore[attr-defined]
    # Per-monitor v2 (Windows 10 1703+) also scales dialogs right; then v1; then
    # system-aware, which is still exact on a single monitor.
    with contextlib.suppress(AttributeError, OSError):
        if windll.user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(-4)):
            return
    with contextlib.suppress(AttributeError, OSError):
        if windll.shcore.SetProcessDpiAwareness(2) == 0:
            return
    with contextlib.suppress(AttributeError, OSError):
        windll.user32.SetProcessDPIAware()


@dataclass(frozen=True)
class Rect:
    """A monitor: left/top/width/height in physical pixels of the virtual desktop."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Screenshot:
    """The whole virtual desktop, frozen.

    ``image`` is RGB in physical pixels; its top-left pixel sits at (``left``, ``top``)
    of the virtual desktop (negative on Windows when a monitor is left of the primary).
    ``scale`` is image pixels per window-system unit: 1 on X11 and on DPI-aware Windows,
    2 on a Retina Mac, where mss reports monitors in points but grabs pixels.
    ``bgrx`` is the same pixels as mss grabbed them (4 bytes each, blue first, rows of
    ``width``), which is the X server's own layout: the overlay hands them to X as they
    are (None where the grab had another shape).
    """

    image: Image.Image
    left: int
    top: int
    monitors: tuple[Rect, ...]
    scale: float = 1.0
    bgrx: bytes | bytearray | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def window_geometry(self) -> tuple[int, int, int, int]:
        """Where the overlay window goes, in window-system units: x, y, width, height."""
        s = self.scale
        return (
            round(self.left / s),
            round(self.top / s),
            round(self.width / s),
            round(self.height / s),
        )


@dataclass(frozen=True)
class Region:
    """A rectangle of the virtual desktop in physical pixels."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise UserInputError(EMPTY_SELECTION)

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    def crop(self, shot: Screenshot) -> Image.Image:
        """Exactly this region's pixels of the frozen screen."""
        left, top = self.x - shot.left, self.y - shot.top
        if left < 0 or top < 0 or left + self.width > shot.width or top + self.height > shot.height:
            raise UserInputError(
                f"The region {self.width}×{self.height} at ({self.x}, {self.y}) is not on "
                "the screen any more; select a new one."
            )
        return shot.image.crop((left, top, left + self.width, top + self.height))


def to_image(value: float, ratio: float, limit: int) -> int:
    """One overlay coordinate → the image pixel edge under it, clamped to the image.

    ``ratio`` is image pixels per overlay unit (image width / window width): with it a
    Retina overlay drawn in points still selects whole physical pixels.
    """
    return max(0, min(limit, round(value * ratio)))


def selection_box(
    press: tuple[float, float],
    release: tuple[float, float],
    ratio: tuple[float, float],
    size: tuple[int, int],
) -> tuple[int, int, int, int]:
    """The image box (x0, y0, x1, y1; x1/y1 exclusive) between two overlay points.

    The pixel under the press point is the first one in; the release point is the edge,
    so a drag from 10 to 30 selects 20 pixels and a click selects none.
    """
    xs = sorted(to_image(v, ratio[0], size[0]) for v in (press[0], release[0]))
    ys = sorted(to_image(v, ratio[1], size[1]) for v in (press[1], release[1]))
    return xs[0], ys[0], xs[1], ys[1]


def region_of(shot: Screenshot, box: tuple[int, int, int, int]) -> Region:
    """An image box of ``shot`` as a virtual-desktop region (raises on an empty box)."""
    x0, y0, x1, y1 = box
    return Region(shot.left + x0, shot.top + y0, x1 - x0, y1 - y0)


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels; x1/y1 exclusive


def monitor_tiles(shot: Screenshot, pointer: tuple[int, int] | None = None) -> list[Box]:
    """The screenshot cut into its monitors (image boxes), the one under ``pointer``
    (physical desktop coordinates) first: the overlay draws that one before it maps the
    window and fills in the others right after, so on a large multi-monitor desktop the
    screen the user looks at is up in the time a single monitor takes.

    Overlapping (mirrored) monitors are kept once; with no monitor list, one tile.
    """
    tiles: list[Box] = []
    for mon in shot.monitors:
        x0, y0 = max(0, mon.left - shot.left), max(0, mon.top - shot.top)
        x1 = min(shot.width, mon.left - shot.left + mon.width)
        y1 = min(shot.height, mon.top - shot.top + mon.height)
        box = (x0, y0, x1, y1)
        if x1 > x0 and y1 > y0 and box not in tiles:
            tiles.append(box)
    if not tiles:
        return [(0, 0, shot.width, shot.height)]
    if pointer is not None:
        px, py = pointer[0] - shot.left, pointer[1] - shot.top
        under = [t for t in tiles if t[0] <= px < t[2] and t[1] <= py < t[3]]
        if under:
            tiles.remove(under[0])
            tiles.insert(0, under[0])
    return tiles


def dimmed(image: Image.Image, factor: float = DIM) -> Image.Image:
    """The frozen screen darkened for the overlay (a lookup table: a few ms for 4K)."""
    return image.point(list(_dim_table(factor)) * len(image.getbands()))


def bgrx_rows(shot: Screenshot, box: Box, dim: bool) -> Iterator[tuple[int, Any]]:
    """``box`` of the screenshot's BGRX pixels as (offset, bytes) pieces of that
    desktop-sized buffer, dimmed as :func:`dimmed` does when ``dim``: one table lookup per
    byte of the grab (padding bytes included), never through the RGB image.  The whole
    screen is one piece; any other box one per row, small enough to stay in the cache
    (joined rows or Pillow's point and unpacking took two to four times as long)."""
    assert shot.bgrx is not None
    x0, y0, x1, y1 = box
    table = _dim_table(DIM) if dim else None
    if box == (0, 0, shot.width, shot.height):
        yield 0, shot.bgrx.translate(table) if table else shot.bgrx
        return
    pixels, stride = memoryview(shot.bgrx), shot.width * 4
    for y in range(y0, y1):
        start = y * stride + x0 * 4
        row = pixels[start : start + (x1 - x0) * 4]
        yield start, row.tobytes().translate(table) if table else row


@cache
def _dim_table(factor: float) -> bytes:
    return bytes(int(v * factor) for v in range(256))


MAC_SCREEN_PERMISSION = (
    "macOS does not let yomitori see the screen: in System Settings → Privacy & Security → "
    "Screen Recording, allow the app that starts yomitori (your terminal, or Python), then "
    "restart yomitori."
)


@cache
def _mac_screen_ready() -> None:
    """macOS: full-resolution grabs, and a clear word when Screen Recording is not
    allowed (without it the screenshot silently shows only the wallpaper)."""
    import ctypes
    import ctypes.util

    import mss.darwin

    # mss grabs at point resolution by default: half the pixels on Retina, which OCR
    # misses.  The overlay maps pixels to points through the image/window ratio.
    mss.darwin.IMAGE_OPTIONS &= ~mss.darwin.kCGWindowImageNominalResolution
    name = ctypes.util.find_library("CoreGraphics")
    core = ctypes.cdll.LoadLibrary(name) if name else None
    preflight = getattr(core, "CGPreflightScreenCaptureAccess", None)  # macOS 10.15+
    if preflight is None:
        return
    preflight.restype = ctypes.c_bool
    if not preflight():
        request = getattr(core, "CGRequestScreenCaptureAccess", None)
        if request is not None:
            request.restype = ctypes.c_bool
            request()  # shows the system's prompt once
        raise UserInputError(MAC_SCREEN_PERMISSION)  # not cached: asked again next time


def _open_mss() -> Any:
    import mss

    ensure_dpi_awareness()
    if sys.platform == "darwin":
        _mac_screen_ready()
    # mss 10.2 renamed the factory to the class mss.MSS; 9.x only has mss.mss.
    factory = getattr(mss, "MSS", None) or mss.mss
    try:
        return factory()
    except mss.ScreenShotError as err:
        raise UserInputError(
            f"The screen cannot be captured here ({err}); run yomitori inside your desktop "
            "session (on Linux an X11 or XWayland display)."
        ) from None


# Each thread keeps one mss instance open: on X11 it owns a shared-memory segment, and
# making and first touching that costs more than the grab itself (about 35 ms vs 3 ms
# for 4K here).  Per thread because mss's Windows backend is bound to its thread.
_local = threading.local()


def preload() -> None:
    """Load mss's native libraries now (about 20 ms), not on the first hotkey."""
    with contextlib.suppress(UserInputError):
        _open_mss().close()


def warm_up() -> Screenshot | None:
    """Open the calling thread's grabber now and grab once, so mss's shared-memory buffer
    and Pillow's memory are sized before the first hotkey (40–50 ms less on the first
    overlay at 7680×2160).  Call it on the thread that will grab.  The screenshot is
    returned for warming the overlay too (None where the screen cannot be captured)."""
    try:
        return grab_screen()
    except UserInputError:
        return None


def _grabber() -> Any:
    sct = getattr(_local, "sct", None)
    if sct is None:
        sct = _local.sct = _open_mss()
    return sct


def _grab(monitor: dict[str, int]) -> Any:
    import mss

    try:
        return _grabber().grab(monitor)
    except mss.ScreenShotError:
        # The desktop grew beyond the kept buffer, or the display restarted: start afresh.
        with contextlib.suppress(Exception):
            _local.sct.close()
        _local.sct = None
    try:
        return _grabber().grab(monitor)
    except mss.ScreenShotError as err:
        raise UserInputError(f"The screen could not be captured ({err}).") from None


def grab_screen() -> Screenshot:
    """Freeze every monitor at once: mss monitor 0 is the bounding box of all of them."""
    # A fresh instance for the layout: mss caches monitors for an instance's life, and
    # monitors come and go (about 2 ms on X11).
    with _open_mss() as sct:
        monitors = sct.monitors
    union = monitors[0]
    raw = _grab(union)
    # Decoded straight from mss's buffer: ``raw.bgra`` would first copy it (11 ms at 8K).
    image = Image.frombuffer("RGB", raw.size, raw.raw, "raw", "BGRX", 0, 1)
    # mss gives monitor rectangles in window-system units and the image in pixels;
    # on a Retina Mac the two differ by the backing scale factor.
    scale = image.width / union["width"] if union["width"] else 1.0

    def physical(mon: dict[str, int]) -> Rect:
        return Rect(
            round(mon["left"] * scale),
            round(mon["top"] * scale),
            round(mon["width"] * scale),
            round(mon["height"] * scale),
        )

    whole = physical(union)
    log.debug("grabbed %dx%d at (%d, %d), scale %.2f", *image.size, whole.left, whole.top, scale)
    return Screenshot(
        image=image,
        left=whole.left,
        top=whole.top,
        monitors=tuple(physical(m) for m in monitors[1:]),
        scale=scale,
        bgrx=raw.raw if len(raw.raw) == image.width * image.height * 4 else None,
    )
