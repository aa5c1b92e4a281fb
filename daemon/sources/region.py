"""The screen-region source: a frozen, dimmed screenshot over the whole desktop; drag a box.

One long-lived Tk root lives on its own thread, created withdrawn at start-up together with
the overlay window, so a hotkey pays for a screenshot and the image uploads, not for Tk's
start-up (NormCap and ShareX take 1–3 s here).  The screenshot goes up one monitor at a
time, the one under the pointer before the window maps, so a large multi-monitor desktop
shows where the user looks as fast as a single monitor would.  On a local X server the
pixels go up as X pixmaps through shared memory (:mod:`daemon.sources.xsurface`: ≈ 25 ms
for a 4K monitor, against ≈ 90 ms through Tk photo images, which remain everywhere else).
Every Tk call happens on that thread;
other threads only schedule work with ``after`` (tkinter hands such calls to the Tk thread,
which needs a threaded Tcl, as every python.org and distribution build has).

macOS: Cocoa wants Tk on the main thread, so there this class needs a main-thread host
(future work); its coordinate handling already copes with Retina points via the ratio
image size / window size.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import threading
import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageTk

from daemon.errors import UserInputError, YomitoriError
from daemon.sources.overlay import Overlay
from daemon.sources.screen import (
    Box,
    Rect,
    Region,
    Screenshot,
    bgrx_rows,
    dimmed,
    ensure_dpi_awareness,
    grab_screen,
    monitor_tiles,
    preload,
    region_of,
    selection_box,
    warm_up,
)
from daemon.sources.xsurface import open_surface

__all__ = [
    "Rect",
    "Region",
    "RegionSelector",
    "Screenshot",
    "ensure_dpi_awareness",
    "grab_screen",
    "warm_up",
]

log = logging.getLogger(__name__)

# If the window manager holds a grab (it may, right after a hotkey), retry this long.
GRAB_RETRIES, GRAB_RETRY_MS = 50, 20
# If no Expose arrives (some compositors), call the overlay shown after this long anyway.
SHOWN_FALLBACK_MS = 300


@dataclass(eq=False)
class _Request:
    shot: Screenshot
    on_shown: Callable[[], None] | None
    on_all_shown: Callable[[], None] | None
    requested_at: float
    done: threading.Event = field(default_factory=threading.Event)
    region: Region | None = None
    error: BaseException | None = None
    mapped_at: float | None = None
    shown_at: float | None = None  # the pointer's monitor drawn
    all_shown_at: float | None = None  # every monitor drawn
    ratio: tuple[float, float] = (1.0, 1.0)
    origin: tuple[int, int] = (0, 0)
    press: tuple[float, float] | None = None
    todo: list[tuple[str, Box]] = field(default_factory=list)  # tiles not on screen yet
    photos: list[Any] = field(default_factory=list)  # Tk images: touched on the Tk thread only
    layers: set[str] = field(default_factory=set)  # X pixmaps drawn into (see xsurface)


class RegionSelector:
    """Shows the selection overlay on request; reuse one instance for the process's life."""

    def __init__(self, own_thread: bool = True) -> None:
        ensure_dpi_awareness()
        self.last_region: Region | None = None
        self.last_timing: dict[str, float] = {}
        self.drawing = "tk-photo"  # or "x11-shm": how the frozen screen reaches the screen
        self._lock = threading.Lock()
        self._calls = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._request: _Request | None = None
        self._thread: threading.Thread | None = None
        if not own_thread:
            return  # the caller runs Tk with run_here() (macOS: on the main thread)
        self._thread = threading.Thread(target=self._run, name="yomitori-overlay", daemon=True)
        self._thread.start()
        self.wait_ready()
        # Tk must be let go on its own thread before the interpreter tears down.
        atexit.register(self.close)

    def wait_ready(self) -> None:
        """Block until Tk runs; raise what stopped it from starting."""
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def run_here(self) -> None:
        """Run Tk on the calling thread until close() (for a process hosting the overlay)."""
        self._run()

    # ---- any thread -------------------------------------------------------------------

    def select(
        self,
        shot: Screenshot,
        timeout: float | None = None,
        on_shown: Callable[[], None] | None = None,
        requested_at: float | None = None,
        on_all_shown: Callable[[], None] | None = None,
    ) -> Region | None:
        """Let the user drag a box over ``shot``; None when cancelled (Esc, right-click,
        ``timeout`` seconds).  ``on_shown`` runs on the Tk thread once the overlay is
        drawn over the monitor under the pointer, ``on_all_shown`` once every monitor is;
        ``requested_at`` (perf_counter) is where ``last_timing`` counts from."""
        start = time.perf_counter() if requested_at is None else requested_at
        request = _Request(shot, on_shown, on_all_shown, start)
        with self._lock:
            self._call(self._show, request)
            if not request.done.wait(timeout):
                self.cancel()
                request.done.wait(5)
        self.last_timing = {
            "requested_at": request.requested_at,
            "mapped_ms": _ms(request.requested_at, request.mapped_at),
            "shown_ms": _ms(request.requested_at, request.shown_at),
            "all_shown_ms": _ms(request.requested_at, request.all_shown_at),
        }
        if request.error is not None:
            raise request.error
        if request.region is not None:
            self.last_region = request.region
        return request.region

    def warm(self, shot: Screenshot) -> None:
        """Convert ``shot`` once into the hidden overlay, so the first hotkey finds Tk's
        and the X server's image memory already sized (the first overlay of a session
        was the slowest)."""
        done = threading.Event()
        self._call(self._warm, shot, done)
        done.wait(30)

    def cancel(self) -> None:
        """Close the overlay as if Esc was pressed (safe from any thread)."""
        self._call(self._finish)

    def on_tk(self, func: Callable[[tk.Misc], None]) -> None:
        """Run ``func(root)`` on the Tk thread soon (safe from any thread): other windows
        of this process (the result window) share its Tk."""
        self._call(lambda: func(self._root))

    def release_memory(self) -> None:
        """Free the screen-sized pixmaps and shared memory kept between selections (the
        next selection makes them again, ≈ 20 ms more at 4K); safe from any thread."""
        with contextlib.suppress(YomitoriError):
            self._call(self._release_surface)

    def close(self) -> None:
        """End the Tk thread; the selector cannot be used afterwards."""
        atexit.unregister(self.close)
        with contextlib.suppress(YomitoriError):
            self._call(self._quit)
        if self._thread is not None:
            self._thread.join(15)

    def _call(self, func: Callable[..., Any], *args: Any) -> None:
        # Counted, so the Tk thread frees Tk only once no other thread is inside a Tk call
        # (whoever drops the last reference frees the interpreter, see _run).
        with self._calls:
            if self._closed:
                raise YomitoriError("The screen overlay has stopped; restart yomitori.")
            self._in_flight += 1
        try:
            self._root.after(0, func, *args)
        except (RuntimeError, tk.TclError) as err:
            raise YomitoriError(f"The screen overlay did not respond ({err}).") from None
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()

    # ---- the Tk thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._root = tk.Tk(className="yomitori")
            self._root.withdraw()
            self._root.report_callback_exception = self._callback_error
            self._surface = open_surface(self._root.tk.call("tk", "windowingsystem"))
            if self._surface is not None:
                self.drawing = "x11-shm"
            self._ui = Overlay(
                self._root,
                {
                    "<Map>": self._on_map,
                    "<Expose>": self._on_expose,
                    "<ButtonPress-1>": self._on_press,
                    "<B1-Motion>": self._on_motion,
                    "<ButtonRelease-1>": self._on_release,
                    "<ButtonPress-3>": lambda _e: self._finish(),
                    "<Escape>": lambda _e: self._finish(),
                },
                native=self._surface is not None,
            )
            preload()
        except tk.TclError as err:
            self._start_error = UserInputError(
                f"The screen overlay needs a graphical desktop and none was found ({err})."
            )
        except BaseException as err:
            log.error("the screen overlay could not start", exc_info=True)
            err.__traceback__ = None
            self._start_error = err
        try:
            if self._start_error is None:
                self._ready.set()
                self._root.mainloop()
                self._root.destroy()
        finally:
            self._release()

    def _release(self) -> None:
        # Tk objects must die on the thread that made them, cycles included: freed on
        # another thread they abort Tcl ("async handler deleted by the wrong thread").
        # A call still on its way gives up within a second once the loop has ended.
        with self._calls:
            self._closed = True
            self._calls.wait_for(lambda: self._in_flight == 0, timeout=10)
        surface = self.__dict__.pop("_surface", None)
        if surface is not None:
            surface.close()
        self.__dict__.pop("_ui", None)
        self.__dict__.pop("_root", None)
        gc.collect()
        self._ready.set()

    def _show(self, request: _Request) -> None:
        self._finish()
        self._request = request
        shot = request.shot
        px, py = self._root.winfo_pointerxy()
        geometry = _plan(request, (round(px * shot.scale), round(py * shot.scale)))
        # Only the monitor under the pointer is drawn before the window maps; the rest
        # follow once it is up (through Tk photo images: ~90 ms per 4K monitor).
        self._next_tile(request)
        if self._surface is not None:
            self._surface.sync()  # the pixmap is filled before the server maps the window
        self._ui.show(geometry)

    def _on_map(self, event: tk.Event) -> None:
        request = self._request
        if event.widget is not self._ui.top or request is None or request.mapped_at is not None:
            return
        request.mapped_at = time.perf_counter()
        width, height = self._ui.size()
        if width > 1 and height > 1:  # the real window, should a window manager resize it
            request.ratio = (request.shot.width / width, request.shot.height / height)
        self._root.after(SHOWN_FALLBACK_MS, self._shown, request)

    def _on_expose(self, event: tk.Event) -> None:
        request = self._request
        if (
            request is not None
            and request.mapped_at is not None
            and request.shown_at is None
            and self._ui.shows_screen(event.widget)
        ):
            # Idle callbacks run in order, so this one follows the tile's own redraw.
            self._root.after_idle(self._shown, request)

    def _shown(self, request: _Request) -> None:
        if request is not self._request or request.shown_at is not None:
            return
        self._sync()  # the X server has drawn what Tk sent
        request.shown_at = time.perf_counter()
        request.origin = self._ui.origin()
        self._grab(request, 0)
        if request.on_shown is not None:
            request.on_shown()
        if request is self._request and not _dims_left(request):
            self._all_shown(request, request.shown_at)  # one monitor: all of it is up
        if request is self._request:
            self._root.after_idle(self._fill, request)

    def _grab(self, request: _Request, tries: int) -> None:
        """Take pointer and keyboard, so Esc arrives even with no window manager to focus us."""
        if request is not self._request:
            return
        try:
            self._ui.grab()
        except tk.TclError as err:
            if tries < GRAB_RETRIES:
                self._root.after(GRAB_RETRY_MS, self._grab, request, tries + 1)
            else:
                log.warning("the overlay could not grab the keyboard (%s)", err)

    def _warm(self, shot: Screenshot, done: threading.Event) -> None:
        """The dimmed tiles of ``shot`` into the hidden overlay, as a selection makes them."""
        request = _Request(shot, None, None, time.perf_counter())
        try:
            if self._request is None:
                _plan(request, None)
                # The undimmed pixmap too: it is kept for the next selection (Tk photos are not).
                while request.todo and (_dims_left(request) or self._native(request)):
                    self._next_tile(request)
                self._ui.top.update_idletasks()
                self._ui.clear()
        finally:
            request.photos.clear()  # freed here, on the Tk thread
            done.set()

    def _fill(self, request: _Request) -> None:
        """The other monitors, then the undimmed tiles, one per idle turn of the event
        loop: a press or Esc in between is not kept waiting, and the canvas redraws each
        tile (its own idle callback, queued first) before the next one is converted."""
        if request is not self._request or not request.todo:
            return
        self._next_tile(request)
        self._root.after_idle(self._fill, request)

    def _native(self, request: _Request) -> bool:
        """Whether this request draws through X pixmaps (one image pixel per window pixel)."""
        return (
            self._surface is not None
            and request.shot.bgrx is not None
            and request.ratio == (1.0, 1.0)
        )

    def _next_tile(self, request: _Request) -> None:
        layer, box = request.todo.pop(0)
        if self._native(request):
            self._put_tile(request, layer, box)
        else:
            self._photo_tile(request, layer, box)
        if layer == "dim" and request.shown_at is not None and not _dims_left(request):
            self._root.after_idle(self._all_shown, request)

    def _put_tile(self, request: _Request, layer: str, box: Box) -> None:
        """One tile into the X pixmap behind the overlay (``dim``) or the lens."""
        assert self._surface is not None
        shot, surface = request.shot, self._surface
        window = (self._ui.top if layer == "dim" else self._ui.lens_image).winfo_id()
        pixmap = surface.layer(layer, shot.width, shot.height)
        whole = (0, 0, shot.width, shot.height)
        if layer not in request.layers:  # this selection's first tile of the layer
            request.layers.add(layer)
            if box != whole:  # no old screenshot where no monitor (or none yet) is drawn
                surface.fill_black(pixmap, [whole])
            surface.set_background(window, pixmap)
        surface.put(pixmap, box, bgrx_rows(shot, box, dim=layer == "dim"))
        surface.repaint(window, box)  # a window already on screen shows the new tile
        surface.flush()

    def _photo_tile(self, request: _Request, layer: str, box: Box) -> None:
        """One tile as a Tk photo image on the overlay (``dim``) or the lens."""
        x0, y0, x1, y1 = box
        image = request.shot.image.crop((x0, y0, x1, y1))
        if layer == "dim":
            image = dimmed(image)
        rx, ry = request.ratio
        wx0, wy0, wx1, wy1 = round(x0 / rx), round(y0 / ry), round(x1 / rx), round(y1 / ry)
        if image.size != (wx1 - wx0, wy1 - wy0):  # Retina: Tk draws one image pixel per point
            image = image.resize((wx1 - wx0, wy1 - wy0), Image.Resampling.BILINEAR)
        photo = ImageTk.PhotoImage(image, master=self._root)
        request.photos.append(photo)
        (self._ui.add_dim if layer == "dim" else self._ui.add_bright)(photo, wx0, wy0)

    def _sync(self) -> None:
        """The X server has done what Tk, and the pixmaps' connection, sent before."""
        self._ui.sync()
        if self._surface is not None:
            self._surface.sync()

    def _release_surface(self) -> None:
        if self._surface is None or self._request is not None:
            return  # nothing kept, or a selection is on screen: the next trim frees them
        for window in (self._ui.top, self._ui.lens_image):
            self._surface.set_background(window.winfo_id(), None)
        self._surface.release()

    def _all_shown(self, request: _Request, at: float | None = None) -> None:
        if request is self._request and request.all_shown_at is None:
            if at is None:
                self._sync()  # the X server has drawn the last tile
            request.all_shown_at = at or time.perf_counter()
            if request.on_all_shown is not None:
                request.on_all_shown()

    def _point(self, event: tk.Event, request: _Request) -> tuple[float, float]:
        # Root coordinates: the same for the canvas, the lens and the label under the pointer.
        return (event.x_root - request.origin[0], event.y_root - request.origin[1])

    def _box(self, request: _Request, point: tuple[float, float]) -> tuple[int, int, int, int]:
        assert request.press is not None
        return selection_box(request.press, point, request.ratio, request.shot.image.size)

    def _on_press(self, event: tk.Event) -> None:
        request = self._request
        if request is not None and request.shown_at is not None:
            request.press = self._point(event, request)
            self._draw(request, self._box(request, request.press))

    def _on_motion(self, event: tk.Event) -> None:
        request = self._request
        if request is not None and request.press is not None:
            self._draw(request, self._box(request, self._point(event, request)))

    def _on_release(self, event: tk.Event) -> None:
        request = self._request
        if request is None or request.press is None:
            return  # a button held down from before the overlay appeared
        box = self._box(request, self._point(event, request))
        try:
            region = region_of(request.shot, box)
        except UserInputError as err:
            self._finish(error=err)
        else:
            self._finish(region=region)

    def _draw(self, request: _Request, box: tuple[int, int, int, int]) -> None:
        """Image pixels → window units through the ratio, so HiDPI stays exact."""
        while request.todo:  # the user is faster than the fill: finish it now
            self._next_tile(request)
        rx, ry = request.ratio
        window_box = (round(box[0] / rx), round(box[1] / ry), round(box[2] / rx),
                      round(box[3] / ry))  # fmt: skip
        self._ui.draw(window_box, f"{box[2] - box[0]} × {box[3] - box[1]}")

    def _finish(self, region: Region | None = None, error: BaseException | None = None) -> None:
        request, self._request = self._request, None
        if request is None:
            return
        self._ui.hide()
        request.photos.clear()  # frees the Tk images here, on their own thread
        if error is not None:
            error.__traceback__ = None  # its frames hold Tk objects (see _run)
        request.region, request.error = region, error
        request.done.set()

    def _quit(self) -> None:
        self._finish()
        self._root.quit()

    def _callback_error(self, exc: type[BaseException], value: BaseException, tb: Any) -> None:
        log.error("screen overlay failed", exc_info=(exc, value, tb))
        self._finish(error=value)


def _plan(request: _Request, pointer: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """Set the request's image → window ratio and its tiles to draw (the monitor under
    ``pointer`` first, dimmed tiles before bright ones); the overlay's window geometry."""
    shot = request.shot
    geometry = shot.window_geometry()
    request.ratio = (shot.width / geometry[2], shot.height / geometry[3])
    tiles = monitor_tiles(shot, pointer)
    request.todo = [("dim", t) for t in tiles] + [("bright", t) for t in tiles]
    return geometry


def _dims_left(request: _Request) -> bool:
    return any(layer == "dim" for layer, _ in request.todo)


def _ms(start: float, end: float | None) -> float:
    return round((end - start) * 1000, 1) if end is not None else -1.0
