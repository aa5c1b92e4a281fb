"""The overlay's widgets: a borderless window over the whole desktop showing the frozen,
dimmed screen, with the selection undimmed, framed and labelled with its size.

Every method runs on the Tk thread of :class:`daemon.sources.region.RegionSelector`,
which owns the selection logic; this module only draws, in window units.
"""

from __future__ import annotations

import contextlib
import tkinter as tk
from collections.abc import Callable
from typing import Any

BORDER = "#3d9bff"
OVERLAY_CLASS = "YomitoriOverlay"  # WM_CLASS: lets window rules and tests find the overlay

Handler = Callable[[tk.Event], Any]


class Overlay:
    """Built once, withdrawn, and shown again for every selection.

    The dimmed screen is the window's own background and the undimmed one that of the
    lens (a window of the whole desktop's size inside a window of the selection's, shifted
    so X clips it to the box: a drag moves two windows, never pixels).  With ``native``
    (see :mod:`daemon.sources.xsurface`) both backgrounds are X pixmaps the server paints
    by itself and the two windows draw nothing; without, Tk photo images sit on them in
    tiles (labels, one per monitor).
    """

    def __init__(self, root: tk.Tk, handlers: dict[str, Handler], native: bool = False) -> None:
        self._native = native
        empty = "" if native else "black"  # "": Tk paints no background of its own
        top = self.top = tk.Toplevel(
            root, name="overlay", class_=OVERLAY_CLASS, bg=empty, cursor="crosshair"
        )
        top.withdraw()
        top.title("yomitori: select a region")
        top.overrideredirect(True)  # no frame, no taskbar entry, above other windows on X
        with contextlib.suppress(tk.TclError):
            top.attributes("-topmost", True)
        self._lens = tk.Frame(top, bg=empty, bd=0, highlightthickness=0, cursor="crosshair")
        self.lens_image = tk.Frame(self._lens, bg=empty, bd=0, highlightthickness=0)
        # The border just outside the selection: four one-pixel windows.
        self._edges = [tk.Frame(top, bg=BORDER, bd=0, highlightthickness=0) for _ in range(4)]
        self._tiles: list[tk.Label] = []  # Tk photo tiles on either background
        self._dim_tiles: list[tk.Label] = []
        self._label = tk.Label(top, text="0 × 0", bg="#1e1e1e", fg="white", padx=6, pady=2)
        # Bindings on the toplevel see events of all its children (their bindtags).
        for sequence, handler in handlers.items():
            top.bind(sequence, handler)
        top.update_idletasks()  # create the X windows and load the font now, not on the hotkey
        self.lens_image.winfo_id()  # not mapped until the first drag: made to exist now

    def show(self, geometry: tuple[int, int, int, int]) -> None:
        x, y, width, height = geometry
        self.top.geometry(f"{width}x{height}+{x}+{y}")  # "+-1920+0" is valid Tk geometry
        self.lens_image.place(x=0, y=0, width=width, height=height)
        self.top.deiconify()
        self.top.lift()

    def add_dim(self, photo: Any, x: int, y: int) -> None:
        """One tile of the dimmed screenshot at (x, y) of the window (Tk photo images)."""
        tile = self._add_tile(self.top, photo, x, y)
        tile.lower()  # under the lens, border and label
        self._dim_tiles.append(tile)

    def add_bright(self, photo: Any, x: int, y: int) -> None:
        """One tile of the undimmed screenshot, for the selection."""
        self._add_tile(self.lens_image, photo, x, y)

    def _add_tile(self, parent: tk.Misc, photo: Any, x: int, y: int) -> tk.Label:
        tile = tk.Label(parent, image=photo, bg="black", bd=0, highlightthickness=0, padx=0,
                        pady=0)  # fmt: skip
        tile.place(x=x, y=y)
        self._tiles.append(tile)
        return tile

    def shows_screen(self, widget: Any) -> bool:
        """Whether an Expose of ``widget`` is the dimmed screen being drawn (the window
        itself, or a photo tile: their redraw is queued before the Expose's bindings run)."""
        return widget is self.top if self._native else widget in self._dim_tiles

    def size(self) -> tuple[int, int]:
        return self.top.winfo_width(), self.top.winfo_height()

    def origin(self) -> tuple[int, int]:
        return self.top.winfo_rootx(), self.top.winfo_rooty()

    def sync(self) -> None:
        """A round trip to the X server: everything sent before is done when it returns."""
        self.top.winfo_pointerxy()

    def grab(self) -> None:
        """Take pointer and keyboard (raises TclError while someone else holds them)."""
        self.top.grab_set_global()
        self.top.focus_force()

    def draw(self, box: tuple[int, int, int, int], text: str) -> None:
        """The selection ``box`` (window units): undimmed inside, a border just outside."""
        x0, y0, x1, y1 = box
        if x1 > x0 and y1 > y0:
            self._lens.place(x=x0, y=y0, width=x1 - x0, height=y1 - y0)
            self.lens_image.place(x=-x0, y=-y0)
        else:
            self._lens.place_forget()
        across, down = x1 - x0 + 2, y1 - y0 + 2
        edges = ((x0 - 1, y0 - 1, across, 1), (x0 - 1, y1, across, 1),
                 (x0 - 1, y0 - 1, 1, down), (x1, y0 - 1, 1, down))  # fmt: skip
        for edge, (x, y, w, h) in zip(self._edges, edges, strict=True):
            edge.place(x=x, y=y, width=w, height=h)
        self._label.configure(text=text)
        height = self._label.winfo_reqheight()
        # Above the box; below it at the top edge; inside it when it fills the screen.
        ly = y0 - height - 4
        if ly < 0:
            ly = y1 + 4 if y1 + 4 + height <= self.top.winfo_height() else y0 + 4
        self._label.place(x=max(0, x0), y=ly)
        self._label.lift()

    def hide(self) -> None:
        with contextlib.suppress(tk.TclError):
            self.top.grab_release()
        self.top.withdraw()
        for widget in (self._lens, self._label, *self._edges):
            widget.place_forget()
        self.clear()
        self.sync()  # the overlay is off the screen before anyone grabs the screen again

    def clear(self) -> None:
        """Let go of the images so they can be freed (on this thread, by the caller)."""
        for tile in self._tiles:
            tile.destroy()
        self._tiles, self._dim_tiles = [], []
