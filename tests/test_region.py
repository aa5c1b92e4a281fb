"""The screen-region overlay on a real X server: a known picture on screen, xdotool drags
a box, the crop must be exactly those pixels; Esc and right-click cancel; an empty box
is a one-line error; a two-monitor RandR layout; a 4K screen; the overlay benchmark.
What the screen shows is checked both ways the overlay can draw: X pixmaps through shared
memory (what a local X server gets) and Tk photo images (everywhere else)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image, ImageChops
from xdesktop import wait_for

TOOLS = ("Xvfb", "xdotool", "xrandr")
DRAWINGS = ("x11-shm", "tk-photo")
TK_ONLY = "YOMITORI_OVERLAY_TK"  # daemon.sources.xsurface.TK_ONLY_ENV
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"needs {', '.join(MISSING)} (installer/setup.sh --test installs them)",
    ),
    pytest.mark.skipif(sys.platform != "linux", reason="the overlay tests drive an X server"),
]

# Shows a PNG at the top-left of the screen with no frame, then says so on stdout.
PICTURE = textwrap.dedent(
    """
    import sys, tkinter as tk
    root = tk.Tk()
    root.overrideredirect(True)
    photo = tk.PhotoImage(file=sys.argv[1])
    root.geometry(f"{photo.width()}x{photo.height()}+0+0")
    tk.Label(root, image=photo, bd=0, highlightthickness=0).pack()
    root.update()
    root.winfo_pointerxy()  # a round trip: the server has drawn the picture
    print(root.winfo_id(), flush=True)
    root.mainloop()
    """
)


def make_picture(width: int, height: int) -> Image.Image:
    """Every pixel of a 256×256 block differs (red = x, green = y), blue tells the blocks
    apart: a crop shifted by one pixel anywhere cannot match."""
    ramp_x = Image.frombytes("L", (width, 1), bytes(x % 256 for x in range(width)))
    ramp_y = Image.frombytes("L", (1, height), bytes(y % 256 for y in range(height)))
    block_x = Image.frombytes("L", (width, 1), bytes((x // 256) * 37 % 256 for x in range(width)))
    block_y = Image.frombytes(
        "L", (1, height), bytes((y // 256) * 101 % 256 for y in range(height))
    )
    size = (width, height)
    red = ramp_x.resize(size, Image.Resampling.NEAREST)
    green = ramp_y.resize(size, Image.Resampling.NEAREST)
    blue = ImageChops.add_modulo(
        block_x.resize(size, Image.Resampling.NEAREST),
        block_y.resize(size, Image.Resampling.NEAREST),
    )
    return Image.merge("RGB", (red, green, blue))


class Screen:
    """A private Xvfb (``-noreset`` keeps RandR monitors when clients come and go)
    showing a known picture."""

    def __init__(self, tmp: Path, width: int, height: int, monitors: list[str]) -> None:
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-noreset", "-nolisten", "tcp",
             "-screen", "0", f"{width}x{height}x24"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            display = pipe.readline().strip()
        self.env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        self.env["DISPLAY"] = f":{display}"
        self.env["XDG_SESSION_TYPE"] = "x11"  # the overlay, even on a Wayland dev machine
        # RandR 1.5 monitors split the one X screen the way a two-monitor desktop is split.
        for index, spec in enumerate(monitors):
            output = "screen" if index == 0 else "none"  # the first replaces the default
            self.run("xrandr", "--setmonitor", f"M{index}", spec, output)
        self.picture = make_picture(width, height)
        self.picture_path = tmp / "picture.png"
        self.picture.save(self.picture_path)
        self.viewer = subprocess.Popen(
            [sys.executable, "-c", PICTURE, str(self.picture_path)],
            env=self.env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.viewer.stdout is not None
        self.viewer_window = self.viewer.stdout.readline().strip()
        assert self.viewer_window, "the picture window did not start"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    def overlay_visible(self) -> bool:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--class", "YomitoriOverlay"],
            env=self.env, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return bool(found.stdout.strip())

    def capture(self, *args: str, drawing: str = "x11-shm") -> subprocess.Popen[str]:
        env = {**self.env, TK_ONLY: "1" if drawing == "tk-photo" else "0"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.desktop.capture", "--timeout", "30", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert wait_for(self.overlay_visible, 20), "the overlay never appeared"
        time.sleep(0.5)  # the pointer and keyboard grab follow the first drawing
        return proc

    def drag(self, start: tuple[int, int], end: tuple[int, int]) -> None:
        middle = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
        self.run("xdotool", "mousemove", *map(str, start), "mousedown", "1",
                 "mousemove", *map(str, middle), "mousemove", *map(str, end),
                 "mouseup", "1")  # fmt: skip

    def stop(self) -> None:
        for proc in (self.viewer, self.xvfb):
            proc.terminate()
            proc.wait(timeout=10)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """The capture's result; it must come well before its own 30 s timeout would cancel it."""
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the overlay did not react: {out!r} {err!r}") from None
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    screen = Screen(tmp_path_factory.mktemp("single"), 1280, 800, [])
    yield screen
    screen.stop()


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    # A 800×600 monitor and a 640×480 one to its right, 60 px lower: the virtual desktop
    # is 1440×600 and has a strip below the second monitor that no monitor shows.
    monitors = ["800/211x600/159+0+0", "640/169x480/127+800+60"]
    screen = Screen(tmp_path_factory.mktemp("dual"), 1440, 600, monitors)
    yield screen
    screen.stop()


def assert_drag_captures_the_box(screen: Screen, tmp_path: Path, start: tuple[int, int],
                                 end: tuple[int, int]) -> None:  # fmt: skip
    """``yomitori capture --out``, a drag from ``start`` to ``end``: the printed rectangle
    and the saved crop are exactly the box between them, in either direction."""
    out = tmp_path / "crop.png"
    proc = screen.capture("--out", str(out))
    screen.drag(start, end)
    code, stdout, stderr = finish(proc)
    assert code == 0, stderr
    box = (min(start[0], end[0]), min(start[1], end[1]), max(start[0], end[0]),
           max(start[1], end[1]))  # fmt: skip
    assert json.loads(stdout) == {
        "x": box[0], "y": box[1], "width": box[2] - box[0], "height": box[3] - box[1]
    }  # fmt: skip
    crop = Image.open(out)
    assert crop.mode == "RGB"
    assert crop.tobytes() == screen.picture.crop(box).tobytes()


@pytest.mark.parametrize(
    ("start", "end"), [((100, 150), (420, 391)), ((1000, 700), (743, 222))], ids=["down", "up"]
)
def test_drag_saves_exactly_the_selected_pixels(single, tmp_path, start, end):
    assert_drag_captures_the_box(single, tmp_path, start, end)


def seen_while_dragging(
    screen: Screen, tmp_path: Path, box: tuple[int, int, int, int], drawing: str = "x11-shm"
) -> Image.Image:
    """What the X screen shows halfway through a drag over ``box`` (the button still down)."""
    x0, y0, x1, y1 = map(str, box)
    mx, my = str((box[0] + box[2]) // 2), str((box[1] + box[3]) // 2)
    proc = screen.capture(drawing=drawing)
    screen.run("xdotool", "mousemove", x0, y0, "mousedown", "1", "mousemove", mx, my,
               "mousemove", x1, y1)  # fmt: skip
    time.sleep(0.5)
    seen = tmp_path / "seen.png"
    done = screen.python(
        f"from daemon.sources.screen import grab_screen; grab_screen().image.save({str(seen)!r})"
    )
    screen.run("xdotool", "mouseup", "1")
    assert finish(proc)[0] == 0
    assert done.returncode == 0, done.stderr
    return Image.open(seen)


@pytest.mark.parametrize("drawing", DRAWINGS)
def test_while_dragging_the_selection_is_undimmed_and_the_rest_dimmed(single, tmp_path, drawing):
    from daemon.sources.screen import dimmed

    inside, outside = (200, 150, 700, 450), (800, 500, 1100, 700)
    screen = seen_while_dragging(single, tmp_path, inside, drawing)
    assert screen.crop(inside).tobytes() == single.picture.crop(inside).tobytes()
    assert screen.crop(outside).tobytes() == dimmed(single.picture.crop(outside)).tobytes()
    assert screen.crop(outside).tobytes() != single.picture.crop(outside).tobytes()


def test_escape_cancels_even_when_another_window_has_the_focus(single, tmp_path):
    out = tmp_path / "crop.png"
    proc = single.capture("--out", str(out))
    # Without a window manager nobody gives the overlay the focus, and another window can
    # take it at any time: the overlay's keyboard grab must win anyway.
    single.run("xdotool", "windowfocus", "--sync", single.viewer_window)
    assert single.run("xdotool", "getwindowfocus").stdout.strip() == single.viewer_window
    single.run("xdotool", "mousemove", "300", "300", "key", "Escape")
    assert finish(proc) == (1, "", "")
    assert not out.exists()
    assert wait_for(lambda: not single.overlay_visible(), 5)


def test_right_click_cancels(single, tmp_path):
    out = tmp_path / "crop.png"
    proc = single.capture("--out", str(out))
    single.run("xdotool", "mousemove", "500", "400", "click", "3")
    assert finish(proc) == (1, "", "")
    assert not out.exists()


def test_a_click_without_a_drag_is_a_one_line_error(single, tmp_path):
    out = tmp_path / "crop.png"
    proc = single.capture("--out", str(out))
    single.run("xdotool", "mousemove", "640", "400", "click", "1")
    code, stdout, stderr = finish(proc)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("yomitori: The selection is empty")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("start", "end"), [((700, 100), (1000, 420)), ((900, 120), (1381, 533))],
    ids=["across-monitors", "on-the-second"],
)  # fmt: skip
def test_two_monitors_crop_is_exact(dual, tmp_path, start, end):
    assert_drag_captures_the_box(dual, tmp_path, start, end)


@pytest.mark.parametrize("drawing", DRAWINGS)
def test_two_monitors_both_show_the_frozen_screen_and_the_selection_spans_them(
    dual, tmp_path, drawing
):
    # The monitor under the pointer is drawn first, the other right after: once the drag
    # is under way both show the dimmed screen, and the box across them is undimmed.
    from daemon.sources.screen import dimmed

    dual.run("xdotool", "mousemove", "1000", "300")  # on the second monitor
    inside = (600, 100, 1000, 300)
    screen = seen_while_dragging(dual, tmp_path, inside, drawing)
    assert screen.crop(inside).tobytes() == dual.picture.crop(inside).tobytes()
    for outside in ((0, 350, 700, 600), (1050, 100, 1440, 540)):  # one on each monitor
        assert screen.crop(outside).tobytes() == dimmed(dual.picture.crop(outside)).tobytes()
    strip = screen.crop((800, 0, 1440, 60))  # above the second monitor: no monitor shows it
    assert strip.getextrema() == ((0, 0), (0, 0), (0, 0))


MONITORS = ((0, 0, 800, 600), (800, 60, 1440, 540))  # the dual fixture's, as image boxes


# Saves what the screen shows when the overlay first counts as shown, then cancels.
FIRST_DRAWN = textwrap.dedent(
    """
    import sys
    from daemon.sources.region import RegionSelector, grab_screen
    selector = RegionSelector()
    def shown():  # on the Tk thread, before it draws anything else
        grab_screen().image.save(sys.argv[1])
        selector.cancel()
    print(selector.drawing, selector.select(grab_screen(), timeout=20, on_shown=shown))
    selector.close()
    """
)


@pytest.mark.parametrize("drawing", DRAWINGS)
@pytest.mark.parametrize(("pointer", "under"), [((1000, 300), 1), ((300, 300), 0)],
                         ids=["pointer-on-second", "pointer-on-first"])  # fmt: skip
def test_the_monitor_under_the_pointer_is_drawn_before_the_other(
    dual, tmp_path, drawing, pointer, under
):
    """When the overlay first counts as shown, the pointer's monitor shows the dimmed
    frozen screen and the other one nothing yet (it follows on the next idle turns)."""
    from daemon.sources.screen import dimmed

    dual.run("xdotool", "mousemove", *map(str, pointer))
    seen_path = tmp_path / "first.png"
    env = {**dual.env, TK_ONLY: "1" if drawing == "tk-photo" else "0"}
    # A process of its own: a second Tk root in one process does not start (a Tk matter).
    done = subprocess.run([sys.executable, "-c", FIRST_DRAWN, str(seen_path)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [drawing, "None"]
    seen = Image.open(seen_path)
    first, other = MONITORS[under], MONITORS[1 - under]
    assert seen.crop(first).tobytes() == dimmed(dual.picture.crop(first)).tobytes()
    assert seen.crop(other).getextrema() == ((0, 0), (0, 0), (0, 0))


def test_grab_screen_sees_both_monitors_and_the_whole_desktop(dual):
    done = dual.python(
        "import json; from daemon.sources.region import grab_screen; s = grab_screen(); "
        "print(json.dumps([s.left, s.top, s.width, s.height, s.scale, "
        "[list(vars(m).values()) for m in s.monitors]]))"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        0, 0, 1440, 600, 1.0, [[0, 0, 800, 600], [800, 60, 640, 480]]
    ]  # fmt: skip


def test_selector_is_reused_and_remembers_the_last_region(single, monkeypatch):
    monkeypatch.setenv("DISPLAY", single.env["DISPLAY"])
    from daemon.sources.region import RegionSelector, grab_screen

    selector = RegionSelector()
    try:
        results: list[object] = []

        def select() -> None:
            results.append(selector.select(grab_screen(), timeout=30))

        for action in ("drag", "escape"):
            worker = threading.Thread(target=select)
            worker.start()
            assert wait_for(single.overlay_visible, 20)
            time.sleep(0.5)
            if action == "drag":
                single.drag((10, 20), (74, 52))
            else:
                single.run("xdotool", "key", "Escape")
            worker.join(30)
            assert not worker.is_alive()
        region = results[0]
        assert region is not None and region.as_dict() == {
            "x": 10, "y": 20, "width": 64, "height": 32
        }  # fmt: skip
        assert results[1] is None
        assert selector.last_region == region  # a cancel keeps the last good region
        assert 0 < selector.last_timing["mapped_ms"] <= selector.last_timing["shown_ms"]
    finally:
        selector.close()
    assert not selector._thread.is_alive()


@pytest.mark.parametrize(("layout", "size", "monitors"),
                         [("single", "1280x800", 1), ("dual", "1440x600", 2)])  # fmt: skip
def test_overlay_bench_measures_the_overlay(request, layout, size, monitors):
    screen = request.getfixturevalue(layout)
    done = screen.python(
        "import json; from daemon.desktop.capture import overlay_bench; "
        "print(json.dumps(overlay_bench(3)))"
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["runs"] == 3 and figures["screen"] == size
    assert figures["monitors"] == monitors
    assert figures["drawing"] == "x11-shm"  # a local X server: shared memory, not Tk photos
    assert 0 < figures["grab_ms"] < figures["overlay_ms"] <= figures["overlay_ms_p90"]
    assert figures["mapped_ms"] <= figures["overlay_ms"]
    # The monitor under the pointer first, then the others; one monitor is drawn at once.
    if monitors == 1:
        assert figures["overlay_all_ms"] == figures["overlay_ms"]
    else:
        assert figures["overlay_all_ms"] >= figures["overlay_ms"]
    assert not screen.overlay_visible()


def test_without_a_display_both_entries_say_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    bench = subprocess.run(
        [sys.executable, "-c", "from daemon.desktop.capture import overlay_bench; "
         "from daemon.errors import UserInputError\n"
         "try: overlay_bench(1)\nexcept UserInputError as e: print(e)"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert bench.stdout.startswith("The screen overlay needs a graphical desktop")
    assert bench.stdout.count("\n") == 1
    capture = subprocess.run([sys.executable, "-m", "daemon.desktop.capture"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert capture.returncode == 2
    assert capture.stderr.startswith("yomitori: The screen cannot be captured")
    assert capture.stderr.count("\n") == 1 and "Traceback" not in capture.stderr


@pytest.fixture(scope="module")
def uhd(tmp_path_factory):
    screen = Screen(tmp_path_factory.mktemp("uhd"), 3840, 2160, [])
    yield screen
    screen.stop()


def test_at_4k_the_crop_is_exactly_the_full_resolution_pixels(uhd, tmp_path):
    assert_drag_captures_the_box(uhd, tmp_path, (3801, 2150), (1234, 567))


@pytest.mark.parametrize("drawing", DRAWINGS)
def test_at_4k_the_overlay_shows_the_screen_at_full_resolution(uhd, tmp_path, drawing):
    # Every pixel of the test picture differs from its neighbours: a scaled or shifted
    # image anywhere, inside the selection or outside, would not match.
    from daemon.sources.screen import dimmed

    inside = (1000, 800, 2900, 1900)
    screen = seen_while_dragging(uhd, tmp_path, inside, drawing)
    assert screen.crop(inside).tobytes() == uhd.picture.crop(inside).tobytes()
    for outside in ((0, 0, 3840, 700), (2950, 750, 3840, 2160)):
        assert screen.crop(outside).tobytes() == dimmed(uhd.picture.crop(outside)).tobytes()
