"""``yomitori capture`` and ``yomitori bench --overlay``: the region overlay from a shell.

``python -m daemon.desktop.capture [--out PNG]`` runs the same as ``yomitori capture``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.errors import Cancelled, ConfigError, UserInputError, YomitoriError
from daemon.sources.portal import portal_screenshot, use_portal
from daemon.sources.region import RegionSelector, grab_screen, warm_up

# How long the benchmark waits for one overlay to appear before calling it broken.
BENCH_TIMEOUT_S = 10.0


def run_capture(out: Path | None, timeout: float | None = None) -> int:
    """Freeze the screen, let the user drag a box, print it as JSON and save the crop.

    Returns 0, or 1 when the user cancelled (Esc or right-click); an empty box raises
    UserInputError.
    """
    if out is not None and not out.parent.is_dir():
        raise UserInputError(f"Cannot save the crop to {out}: its folder does not exist.")
    if use_portal(_region_capture()):
        return _capture_with_portal(out)
    shot = grab_screen()  # first: the overlay shows the screen as it was at the request
    region = _select(shot, timeout)
    if region is None:
        return 1
    if out is not None:
        try:
            region.crop(shot).save(out, format="PNG")
        except OSError as err:
            raise UserInputError(f"Cannot save the crop to {out}: {err.strerror or err}.") from None
    print(json.dumps(region.as_dict()), flush=True)
    return 0


def _select(shot: Any, timeout: float | None) -> Any:
    """One selection over ``shot``: the Region, or None when cancelled."""
    if sys.platform != "darwin":
        selector = RegionSelector()
        try:
            return selector.select(shot, timeout=timeout)
        finally:
            selector.close()
    # macOS: Tk must run on the main thread (on another one it aborts the process), so
    # the selection is asked for from a second thread, as the daemon's overlay process does.
    selector = RegionSelector(own_thread=False)
    outcome: dict[str, Any] = {}

    def pick() -> None:
        try:
            selector.wait_ready()
            outcome["region"] = selector.select(shot, timeout=timeout)
        except BaseException as err:
            outcome["error"] = err
        finally:
            selector.close()

    thread = threading.Thread(target=pick, name="yomitori-capture", daemon=True)
    thread.start()
    selector.run_here()
    thread.join(15)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("region")


def _region_capture() -> str:
    from daemon.config import load_config

    try:
        return load_config().settings.region_capture
    except ConfigError:
        return "auto"


def _capture_with_portal(out: Path | None) -> int:
    """Wayland: the desktop's screenshot tool selects; it tells the size, not the place."""
    import io

    from PIL import Image

    try:
        png = portal_screenshot()
    except Cancelled:
        return 1
    width, height = Image.open(io.BytesIO(png)).size
    if out is not None:
        try:
            out.write_bytes(png)
        except OSError as err:
            raise UserInputError(f"Cannot save the crop to {out}: {err.strerror or err}.") from None
    print(json.dumps({"x": None, "y": None, "width": width, "height": height}), flush=True)
    return 0


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def overlay_bench(runs: int = 10) -> dict[str, Any]:
    """Time from "hotkey" (before the screenshot) to the overlay drawn on screen.

    The selector and the grabber are started first, as the daemon does; each run then grabs
    the screen, shows the overlay and closes it itself as soon as it is drawn.
    ``overlay_ms`` counts to the X server having drawn the overlay on the monitor under the
    pointer (a round trip after Tk's redraw), ``overlay_all_ms`` to every monitor drawn,
    ``mapped_ms`` to the window's Map event, ``grab_ms`` the screenshot alone;
    ``drawing`` says how the pixels went up (X shared-memory pixmaps or Tk photo images).
    """
    if runs < 1:
        raise UserInputError("The overlay benchmark needs at least one run.")
    selector = RegionSelector()  # raises UserInputError without a display
    shot = warm_up()  # as the daemon's overlay process does when it starts
    if shot is not None:
        selector.warm(shot)
    del shot
    shown: list[float] = []
    all_shown: list[float] = []
    mapped: list[float] = []
    grabs: list[float] = []
    drawing = selector.drawing
    try:
        for _ in range(runs):
            start = time.perf_counter()
            shot = grab_screen()
            grabs.append((time.perf_counter() - start) * 1000)
            selector.select(
                shot, timeout=BENCH_TIMEOUT_S, on_all_shown=selector.cancel, requested_at=start
            )
            timing = selector.last_timing
            if timing["shown_ms"] < 0:
                raise YomitoriError(
                    f"The overlay did not appear within {BENCH_TIMEOUT_S:.0f} seconds."
                )
            shown.append(timing["shown_ms"])
            all_shown.append(timing["all_shown_ms"])
            mapped.append(timing["mapped_ms"])
    finally:
        selector.close()
    return {
        "overlay_ms": round(statistics.median(shown), 1),
        "overlay_ms_p90": round(_p90(shown), 1),
        "overlay_ms_first": round(shown[0], 1),
        "overlay_all_ms": round(statistics.median(all_shown), 1),
        "overlay_all_ms_p90": round(_p90(all_shown), 1),
        "mapped_ms": round(statistics.median(mapped), 1),
        "grab_ms": round(statistics.median(grabs), 1),
        "runs": runs,
        "screen": f"{shot.width}x{shot.height}",
        "monitors": len(shot.monitors),
        "drawing": drawing,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="yomitori capture", description="select a screen region; print it as JSON"
    )
    parser.add_argument("--out", type=Path, help="save the selected pixels to this PNG file")
    parser.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    args = parser.parse_args(argv)
    try:
        return run_capture(args.out, args.timeout)
    except YomitoriError as err:
        print(f"yomitori: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("yomitori: cancelled.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
