"""The region overlay in a warm child process of its own.

Tk runs on this process's main thread (which macOS requires, and where the
daemon's tray lives), and anything that goes wrong inside Tcl or the X
libraries ends this process, never the daemon.  It starts with the daemon,
so a region hotkey pays neither Tk's start-up nor a process start.

Requests (see :mod:`daemon.engine.helper`): ``{"op": "select", "repeat"}`` →
``{"region": {x, y, width, height} | null, "png": base64 | null}`` (null: cancelled).
``{"op": "window", …}`` messages drive the result windows
(:mod:`daemon.sources.result_window`), which share this process's Tk.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
from collections.abc import Callable
from typing import Any

from daemon.engine.channel import Channel
from daemon.engine.helper import HelperProcess, Message, error_reply, open_host, serve
from daemon.engine.process import ChildDied
from daemon.errors import Cancelled, UserInputError, YomitoriError
from daemon.platform import give_back_memory

# Idle this long, the process hands its screenshot-sized memory back to the system
# (≈ 125 MB on two 4K monitors, and the overlay's X pixmaps and shared memory as much
# again).  Kept until then, because touching fresh memory again makes the next overlay
# slower: dual 4K ≈ 115 → 175 ms.
TRIM_AFTER_S = 300.0


class _IdleTrim:
    """Gives freed memory back once no selection came for ``delay`` seconds, after
    ``release`` (when given) has let go of what was kept for the next selection."""

    def __init__(self, delay: float, release: Callable[[], None] | None = None) -> None:
        self.delay = delay
        self._release = release
        self._timer: threading.Timer | None = None

    def _trim(self) -> None:
        if self._release is not None:
            self._release()
        give_back_memory()

    def schedule(self) -> None:
        self.cancel()
        self._timer = threading.Timer(self.delay, self._trim)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _serve(channel: Channel, selector: Any) -> None:
    from daemon.sources.region import grab_screen, warm_up

    try:
        selector.wait_ready()
        shot = warm_up()
        channel.send({"ev": "ready"})
    except BaseException as err:  # no display, no Tk: say so, then stop
        channel.send(error_reply(0, UserInputError(str(err))))
        selector.close()
        return
    if shot is not None:  # through the hidden overlay once, so the first hotkey is fast
        with contextlib.suppress(YomitoriError):  # the overlay stopped: requests will say
            selector.warm(shot)
    del shot  # a whole screenshot: not kept while the process waits for hotkeys

    idle = _IdleTrim(TRIM_AFTER_S, selector.release_memory)
    idle.schedule()

    def handle(message: Message) -> Message:
        idle.cancel()
        try:
            return select(message)
        finally:
            idle.schedule()

    def select(message: Message) -> Message:
        shot = grab_screen()
        region = selector.last_region if message.get("repeat") else None
        if message.get("repeat") and region is None:
            raise UserInputError("No region was selected yet: use a region hotkey first.")
        if region is None:
            region = selector.select(shot)
        if region is None:
            return {"region": None, "png": None}
        buffer = io.BytesIO()
        region.crop(shot).save(buffer, format="PNG", compress_level=1)
        return {"region": region.as_dict(), "png": base64.b64encode(buffer.getvalue()).decode()}

    windows: list[Any] = []  # the result windows, made on the Tk thread when first needed

    def window(message: Message) -> None:
        def on_tk(root: Any) -> None:
            if not windows:
                from daemon.sources.result_window import ResultWindows

                windows.append(ResultWindows(root, channel.send))
            windows[0].handle(message)

        selector.on_tk(on_tk)

    # cancel, stop: close the overlay; window messages never wait behind a selection.
    serve(channel, handle, interrupt=selector.cancel, immediate={"window": window})
    selector.close()


def main(argv: list[str] | None = None) -> None:
    channel = open_host("yomitori-overlay", argv)
    try:
        from daemon.sources.region import RegionSelector

        selector = RegionSelector(own_thread=False)
    except ImportError as err:  # a Python without Tk, or mss missing
        channel.send(error_reply(0, UserInputError(
            f"Screen regions need {err.name or 'tkinter'}: install python3-tk (Debian/Ubuntu) "
            "or use a Python with Tk, then restart yomitori.")))  # fmt: skip
        os._exit(0)
    server = threading.Thread(target=_serve, args=(channel, selector), daemon=True)
    server.start()
    selector.run_here()  # Tk on the main thread until close()
    server.join(5)  # let it report why Tk stopped (no display, say) before exiting
    os._exit(0)


class RemoteSelector(HelperProcess):
    """The daemon side: a warm overlay process, restarted if it dies."""

    def __init__(self) -> None:
        super().__init__("daemon.sources.overlay_host", "overlay.log", "the screen overlay")

    def window(self, message: Message) -> None:
        """Drive a result window: ``{"do": "open" | "text" | "done" | …, "tag", …}``."""
        try:
            self.post({"op": "window", **message})
        except ChildDied:
            raise YomitoriError(
                "The screen overlay's process stopped; the next region or "
                "result window starts it again."
            ) from None

    def select_png(self, repeat: bool = False) -> bytes:
        """The selected pixels as PNG; raises Cancelled when the user cancels."""
        reply = self.request({"op": "select", "repeat": repeat}, timeout=None)
        if reply.get("png") is None:
            raise Cancelled("Selection cancelled.")
        return base64.b64decode(reply["png"])


if __name__ == "__main__":
    main()
