"""X11: the overlay's frozen screen as X pixmaps, filled through shared memory.

Tk's photo images cost ≈ 90 ms per 4K monitor here: Tk copies the pixels into its own
buffer, converts each one for the visual and sends all 33 MB through the X socket, and
the canvas then draws the image into a scratch pixmap before copying it to the window.
This module writes the screenshot's own BGRX bytes (mss grabs them in the X server's
layout) into a MIT-SHM segment, has the server copy them into a pixmap, and makes that
pixmap the background of a Tk window whose own background is empty: the X server then
paints exposures itself and no pixel passes through Tk or the socket.

Everything runs on the Tk thread, on a connection of its own.  :func:`open_surface`
returns None wherever this cannot work (not X11, no MIT-SHM, a remote display, a visual
that is not 32-bit BGRX) and the overlay uses Tk photo images instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from daemon.sources.screen import Box

log = logging.getLogger(__name__)

_ZPIXMAP, _LSB_FIRST = 2, 0
_IPC_PRIVATE, _IPC_CREAT, _IPC_RMID = 0, 0o1000, 0
# Written off here by default (YOMITORI_OVERLAY_TK=1): the Tk photo path, for comparing.
TK_ONLY_ENV = "YOMITORI_OVERLAY_TK"


class _XImage(ctypes.Structure):
    """The leading fields of Xlib's XImage (the rest is never touched here)."""

    _fields_ = [
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("xoffset", ctypes.c_int),
        ("format", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("byte_order", ctypes.c_int),
        ("bitmap_unit", ctypes.c_int),
        ("bitmap_bit_order", ctypes.c_int),
        ("bitmap_pad", ctypes.c_int),
        ("depth", ctypes.c_int),
        ("bytes_per_line", ctypes.c_int),
        ("bits_per_pixel", ctypes.c_int),
        ("red_mask", ctypes.c_ulong),
        ("green_mask", ctypes.c_ulong),
        ("blue_mask", ctypes.c_ulong),
    ]


class _ShmInfo(ctypes.Structure):
    _fields_ = [
        ("shmseg", ctypes.c_ulong),
        ("shmid", ctypes.c_int),
        ("shmaddr", ctypes.c_void_p),
        ("readOnly", ctypes.c_int),
    ]


_ErrorHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _library(name: str) -> ctypes.CDLL | None:
    path = ctypes.util.find_library(name)
    try:
        return ctypes.CDLL(path or f"lib{name}.so.6")
    except OSError:
        return None


def _declare(lib: ctypes.CDLL, specs: dict[str, tuple[Any, list[Any]]]) -> None:
    for name, (restype, argtypes) in specs.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes


_P, _UL, _I, _U = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
_XIMAGE_P, _SHMINFO_P = ctypes.POINTER(_XImage), ctypes.POINTER(_ShmInfo)
_X11 = {
    "XOpenDisplay": (_P, [ctypes.c_char_p]),
    "XCloseDisplay": (_I, [_P]),
    "XDefaultScreen": (_I, [_P]),
    "XDefaultVisual": (_P, [_P, _I]),
    "XDefaultDepth": (_I, [_P, _I]),
    "XDefaultRootWindow": (_UL, [_P]),
    "XCreatePixmap": (_UL, [_P, _UL, _U, _U, _U]),
    "XFreePixmap": (_I, [_P, _UL]),
    "XCreateGC": (_P, [_P, _UL, _UL, _P]),
    "XFreeGC": (_I, [_P, _P]),
    "XSetForeground": (_I, [_P, _P, _UL]),
    "XFillRectangle": (_I, [_P, _UL, _P, _I, _I, _U, _U]),
    "XSetWindowBackgroundPixmap": (_I, [_P, _UL, _UL]),
    "XClearArea": (_I, [_P, _UL, _I, _I, _U, _U, _I]),
    "XSync": (_I, [_P, _I]),
    "XFlush": (_I, [_P]),
    "XFree": (_I, [_P]),
    "XSetErrorHandler": (_P, [_P]),
}
_XEXT = {
    "XShmQueryExtension": (_I, [_P]),
    "XShmCreateImage": (_XIMAGE_P, [_P, _P, _U, _I, _P, _SHMINFO_P, _U, _U]),
    "XShmAttach": (_I, [_P, _SHMINFO_P]),
    "XShmDetach": (_I, [_P, _SHMINFO_P]),
    "XShmPutImage": (_I, [_P, _UL, _P, _XIMAGE_P, _I, _I, _I, _I, _U, _U, _I]),
}
_LIBC = {
    "shmget": (_I, [_I, ctypes.c_size_t, _I]),
    "shmat": (_P, [_I, _P, _I]),
    "shmdt": (_I, [_P]),
    "shmctl": (_I, [_I, _I, _P]),
}


class _Segment:
    """One MIT-SHM image of the whole desktop, attached to the server."""

    def __init__(self, surface: XSurface, width: int, height: int) -> None:
        self.width, self.height, self.size = width, height, width * height * 4
        self.info = _ShmInfo()
        self.image: Any = None
        libc = surface.libc
        self.info.shmid = libc.shmget(_IPC_PRIVATE, self.size, _IPC_CREAT | 0o600)
        if self.info.shmid < 0:
            raise OSError(ctypes.get_errno(), "shmget failed")
        address = libc.shmat(self.info.shmid, None, 0)
        # Marked for removal at once: the kernel frees it when both sides detach or die.
        libc.shmctl(self.info.shmid, _IPC_RMID, None)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "shmat failed")
        self.info.shmaddr = address
        self.image = surface.xext.XShmCreateImage(
            surface.display, surface.visual, 24, _ZPIXMAP, address, ctypes.byref(self.info),
            width, height,
        )  # fmt: skip
        if not self.image:
            raise OSError("XShmCreateImage failed")
        image = self.image.contents
        layout = (image.bits_per_pixel, image.bytes_per_line, image.byte_order)
        masks = (image.red_mask, image.green_mask, image.blue_mask)
        if layout != (32, width * 4, _LSB_FIRST) or masks != (0xFF0000, 0xFF00, 0xFF):
            raise OSError("the visual is not 32-bit BGRX")
        with surface.trap() as failed:
            surface.xext.XShmAttach(surface.display, ctypes.byref(self.info))
        if failed:
            raise OSError("the X server cannot attach shared memory (a remote display?)")
        self.attached = True
        self.memory = memoryview((ctypes.c_char * self.size).from_address(address)).cast("B")

    def free(self, surface: XSurface) -> None:
        if getattr(self, "attached", False):
            surface.xext.XShmDetach(surface.display, ctypes.byref(self.info))
            surface.x11.XSync(surface.display, 0)
            self.attached = False
        if self.image:
            self.image.contents.data = None
            surface.x11.XFree(self.image)
            self.image = None
        if self.info.shmaddr:
            self.memory.release()
            surface.libc.shmdt(self.info.shmaddr)
            self.info.shmaddr = None


class Layer:
    """A pixmap of the whole desktop and the shared memory that fills it."""

    def __init__(self, surface: XSurface, width: int, height: int) -> None:
        self.segment = _Segment(surface, width, height)
        with surface.trap() as failed:
            self.pixmap = surface.x11.XCreatePixmap(
                surface.display, surface.root, width, height, 24
            )
        if failed:
            self.segment.free(surface)
            raise OSError("the X server has no memory for the overlay's pixmap")

    def free(self, surface: XSurface) -> None:
        surface.x11.XFreePixmap(surface.display, self.pixmap)
        self.segment.free(surface)


class XSurface:
    """The overlay's connection to the X server; every call on the Tk thread."""

    def __init__(
        self, x11: ctypes.CDLL, xext: ctypes.CDLL, libc: ctypes.CDLL, display: int
    ) -> None:
        self.x11, self.xext, self.libc, self.display = x11, xext, libc, display
        screen = x11.XDefaultScreen(display)
        self.visual = x11.XDefaultVisual(display, screen)
        self.depth = x11.XDefaultDepth(display, screen)
        self.root = x11.XDefaultRootWindow(display)
        self.gc = x11.XCreateGC(display, self.root, 0, None)
        x11.XSetForeground(display, self.gc, 0)
        self._layers: dict[str, Layer] = {}
        self._errors = 0

    @contextlib.contextmanager
    def trap(self) -> Iterator[list[int]]:
        """Run X calls with errors counted instead of Xlib's default (which exits the
        process); the list the block gets is non-empty afterwards when one failed.
        Xlib's handler is process-wide: only for calls on the Tk thread, as every Tk call is."""
        failed: list[int] = []

        def handler(_display: int, _event: int) -> int:
            failed.append(1)
            return 0

        callback = _ErrorHandler(handler)
        previous = self.x11.XSetErrorHandler(ctypes.cast(callback, ctypes.c_void_p))
        try:
            yield failed
            self.x11.XSync(self.display, 0)
        finally:
            self.x11.XSetErrorHandler(previous)

    def layer(self, name: str, width: int, height: int) -> Layer:
        """The pixmap ``name`` for a ``width`` × ``height`` desktop, kept between overlays
        (a fresh 4K pixmap and segment cost the server and this process ≈ 20 ms to touch)."""
        layer = self._layers.get(name)
        if layer is not None and (layer.segment.width, layer.segment.height) != (width, height):
            layer.free(self)
            layer = None
        if layer is None:
            layer = self._layers[name] = Layer(self, width, height)
        return layer

    def put(self, layer: Layer, box: Box, pieces: Iterable[tuple[int, Any]]) -> None:
        """Fill ``box`` of ``layer``'s pixmap from (offset, BGRX bytes) ``pieces`` of a
        desktop-sized buffer (see :func:`daemon.sources.screen.bgrx_rows`)."""
        memory = layer.segment.memory
        for offset, data in pieces:
            memory[offset : offset + len(data)] = data
        x0, y0, x1, y1 = box
        self.xext.XShmPutImage(self.display, layer.pixmap, self.gc, layer.segment.image,
                               x0, y0, x0, y0, x1 - x0, y1 - y0, 0)  # fmt: skip

    def fill_black(self, layer: Layer, boxes: list[Box]) -> None:
        for x0, y0, x1, y1 in boxes:
            self.x11.XFillRectangle(self.display, layer.pixmap, self.gc, x0, y0, x1 - x0, y1 - y0)

    def set_background(self, window: int, layer: Layer | None) -> None:
        """``layer``'s pixmap as the background of ``window`` (None: no background)."""
        self.x11.XSetWindowBackgroundPixmap(self.display, window, layer.pixmap if layer else 0)

    def repaint(self, window: int, box: Box) -> None:
        """Have the server paint ``box`` of ``window`` from its background again."""
        x0, y0, x1, y1 = box
        self.x11.XClearArea(self.display, window, x0, y0, x1 - x0, y1 - y0, 0)

    def flush(self) -> None:
        """Send what is queued on this connection (Tk's event loop never flushes it)."""
        self.x11.XFlush(self.display)

    def sync(self) -> None:
        """Everything sent on this connection is done when this returns."""
        self.x11.XSync(self.display, 0)

    def release(self) -> None:
        """Free the pixmaps and segments (windows showing them must have let go)."""
        for layer in self._layers.values():
            layer.free(self)
        self._layers.clear()

    def close(self) -> None:
        self.release()
        self.x11.XFreeGC(self.display, self.gc)
        self.x11.XCloseDisplay(self.display)


def open_surface(windowing_system: str) -> XSurface | None:
    """The shared-memory surface, or None where the overlay must use Tk photo images."""
    if windowing_system != "x11" or not sys.platform.startswith("linux"):
        return None
    if os.environ.get(TK_ONLY_ENV, "") not in ("", "0"):
        return None
    libs = [_library("X11"), _library("Xext"), ctypes.CDLL(None, use_errno=True)]
    if any(lib is None for lib in libs):
        return None
    x11, xext, libc = libs
    try:
        _declare(x11, _X11)
        _declare(xext, _XEXT)
        _declare(libc, _LIBC)
    except AttributeError:
        return None
    display = x11.XOpenDisplay(None)
    if not display:
        return None
    surface = XSurface(x11, xext, libc, display)
    try:
        if not xext.XShmQueryExtension(display) or surface.depth != 24:
            raise OSError("no MIT-SHM or not a 24-bit screen")
        surface.layer("probe", 1, 1)  # attaches shared memory: fails on a remote display
        surface.release()
    except OSError as err:
        log.debug("the overlay draws through Tk photo images (%s)", err)
        surface.close()
        return None
    return surface
