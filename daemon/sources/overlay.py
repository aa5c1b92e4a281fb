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
    """Built once, withdrawn, and shown again for every selection."""

    def __init__(self, root: tk.Tk, handlers: dict[str, Handler]) -> None:
        top = self.top = tk.Toplevel(
            root, name="overlay", class_=OVERLAY_CLASS, bg="black", cursor="crosshair"
        )
        top.withdraw()
        top.title("yomitori: select a region")
        top.overrideredirect(True)  # no frame, no taskbar entry, above other windows on X
        with contextlib.suppress(tk.TclError):
            top.attributes("-topmost", True)
        canvas = self.canvas = tk.Canvas(
            top, bg="black", highlightthickness=0, bd=0, cursor="crosshair"
        )
        canvas.pack(fill="both", expand=True)
        self._border = canvas.create_rectangle(0, 0, 0, 0, outline=BORDER, state="hidden")
        # The undimmed selection is a child window showing the bright screenshot shifted
        # by the selection's corner: X clips it, so a drag moves a window, never pixels.
        self._lens = tk.Canvas(top, bg="black", highlightthickness=0, bd=0, cursor="crosshair")
        # The screenshot comes in tiles (one per monitor): (item, x, y) on each canvas.
        self._dim: list[int] = []
        self._bright: list[tuple[int, int, int]] = []
        self._corner = (0, 0)
        self._label = tk.Label(top, text="0 × 0", bg="#1e1e1e", fg="white", padx=6, pady=2)
        # Bindings on the toplevel see events of all its children (their bindtags).
        for sequence, handler in handlers.items():
            (canvas if sequence == "<Expose>" else top).bind(sequence, handler)
        top.update_idletasks()  # create the X windows and load the font now, not on the hotkey

    def show(self, geometry: tuple[int, int, int, int]) -> None:
        x, y, width, height = geometry
        self.top.geometry(f"{width}x{height}+{x}+{y}")  # "+-1920+0" is valid Tk geometry
        self.top.deiconify()
        self.top.lift()

    def add_dim(self, photo: Any, x: int, y: int) -> None:
        """One tile of the dimmed screenshot at (x, y) of the window."""
        item = self.canvas.create_image(x, y, anchor="nw", image=photo)
        self.canvas.tag_lower(item)  # under the border
        self._dim.append(item)

    def add_bright(self, photo: Any, x: int, y: int) -> None:
        """One tile of the undimmed screenshot, for the selection."""
        cx, cy = self._corner
        item = self._lens.create_image(x - cx, y - cy, anchor="nw", image=photo)
        self._bright.append((item, x, y))

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
        self.canvas.focus_force()

    def draw(self, box: tuple[int, int, int, int], text: str) -> None:
        """The selection ``box`` (window units): undimmed inside, a border just outside."""
        x0, y0, x1, y1 = box
        if x1 > x0 and y1 > y0:
            self._lens.place(x=x0, y=y0, width=x1 - x0, height=y1 - y0)
            if self._corner != (x0, y0):
                self._corner = (x0, y0)
                for item, tx, ty in self._bright:
                    self._lens.coords(item, tx - x0, ty - y0)
        else:
            self._lens.place_forget()
        self.canvas.coords(self._border, x0 - 1, y0 - 1, x1, y1)
        self.canvas.itemconfigure(self._border, state="normal")
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
        self._lens.place_forget()
        self._label.place_forget()
        self.canvas.itemconfigure(self._border, state="hidden")
        self.clear()
        self.sync()  # the overlay is off the screen before anyone grabs the screen again

    def clear(self) -> None:
        """Let go of the images so they can be freed (on this thread, by the caller)."""
        for item in self._dim:
            self.canvas.delete(item)
        for item, _x, _y in self._bright:
            self._lens.delete(item)
        self._dim, self._bright, self._corner = [], [], (0, 0)
