"""Region and screenshot arithmetic without a display: crops, overlay → image pixels
(HiDPI ratios), the overlay's window geometry, dimming (of the RGB image and of the
grab's BGRX bytes), Windows DPI awareness, where the overlay falls back to Tk photos."""

from __future__ import annotations

import ctypes
import sys

import pytest
from PIL import Image

from daemon.errors import UserInputError
from daemon.sources import screen
from daemon.sources.screen import (
    EMPTY_SELECTION,
    Rect,
    Region,
    Screenshot,
    bgrx_rows,
    dimmed,
    monitor_tiles,
    region_of,
    selection_box,
    to_image,
)


def numbered(width: int, height: int) -> Image.Image:
    """Every pixel different: (x, y, x ^ y) for small images."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x, y, (x ^ y) % 256) for y in range(height) for x in range(width)])
    return image


def shot_at(left: int, top: int, width: int = 40, height: int = 30, scale: float = 1.0):
    return Screenshot(numbered(width, height), left, top, (Rect(left, top, width, height),), scale)


def test_crop_counts_from_the_desktop_origin_even_when_it_is_negative():
    # A monitor left of and above the primary puts the desktop's corner at (-20, -10).
    shot = shot_at(-20, -10)
    crop = Region(-15, -8, 7, 5).crop(shot)
    assert crop.size == (7, 5)
    pixels = [crop.getpixel((x, y)) for y in range(5) for x in range(7)]
    assert pixels == [(x, y, x ^ y) for y in range(2, 7) for x in range(5, 12)]


def test_crop_of_the_whole_desktop_is_the_whole_image():
    shot = shot_at(100, 50)
    assert Region(100, 50, 40, 30).crop(shot).tobytes() == shot.image.tobytes()


@pytest.mark.parametrize(
    "region", [Region(-1, 0, 5, 5), Region(0, 0, 41, 30), Region(30, 25, 10, 6)]
)
def test_a_region_off_the_screen_is_refused(region):
    with pytest.raises(UserInputError, match="not on the screen any more"):
        region.crop(shot_at(0, 0))


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-3, 4)])
def test_an_empty_region_is_a_one_sentence_error(width, height):
    with pytest.raises(UserInputError) as caught:
        Region(1, 2, width, height)
    assert str(caught.value) == EMPTY_SELECTION
    assert "\n" not in EMPTY_SELECTION and EMPTY_SELECTION.endswith(".")


def test_monitor_tiles_put_the_monitor_under_the_pointer_first():
    # Primary 1920×1080 at (0, 0), a second one left of it and 200 px lower: the desktop
    # starts at (-1280, 0) and is 3200×1080.
    image = Image.new("RGB", (3200, 1080))
    monitors = (Rect(0, 0, 1920, 1080), Rect(-1280, 200, 1280, 720))
    shot = Screenshot(image, -1280, 0, monitors)
    primary, left = (1280, 0, 3200, 1080), (0, 200, 1280, 920)
    assert monitor_tiles(shot) == [primary, left]
    assert monitor_tiles(shot, (-5, 500)) == [left, primary]
    assert monitor_tiles(shot, (100, 100)) == [primary, left]
    # A point no monitor shows (above the left one) keeps the order.
    assert monitor_tiles(shot, (-100, 50)) == [primary, left]


def test_monitor_tiles_drop_mirrors_and_clip_to_the_image():
    image = Image.new("RGB", (100, 50))
    mirrored = (Rect(0, 0, 100, 50), Rect(0, 0, 100, 50), Rect(90, 40, 30, 30))
    assert monitor_tiles(Screenshot(image, 0, 0, mirrored)) == [(0, 0, 100, 50), (90, 40, 100, 50)]
    assert monitor_tiles(Screenshot(image, 0, 0, ())) == [(0, 0, 100, 50)]


def test_region_as_dict_is_the_json_shape():
    assert Region(3, -4, 5, 6).as_dict() == {"x": 3, "y": -4, "width": 5, "height": 6}


def test_selection_box_in_either_direction_and_clamped_to_the_image():
    size = (100, 80)
    assert selection_box((10, 20), (30, 50), (1.0, 1.0), size) == (10, 20, 30, 50)
    assert selection_box((30, 50), (10, 20), (1.0, 1.0), size) == (10, 20, 30, 50)
    # With a global grab the pointer can leave the overlay: the box stops at its edge.
    assert selection_box((90, 70), (150, -9), (1.0, 1.0), size) == (90, 0, 100, 70)


def test_a_click_is_an_empty_box_and_region_of_refuses_it():
    box = selection_box((12, 12), (12, 12), (1.0, 1.0), (50, 50))
    assert box == (12, 12, 12, 12)
    with pytest.raises(UserInputError, match="selection is empty"):
        region_of(shot_at(0, 0), box)


def test_retina_overlay_points_map_to_whole_physical_pixels():
    # A 2x screen: the overlay is 50×40 points, the image 100×80 pixels.
    assert selection_box((10, 5), (60, 30), (2.0, 2.0), (100, 80)) == (20, 10, 100, 60)
    assert to_image(10.5, 2.0, 100) == 21
    # 1.5x (Windows 150 % without per-monitor awareness would look like this).
    assert selection_box((1, 1), (3, 3), (1.5, 1.5), (100, 80)) == (2, 2, 4, 4)


def test_region_of_adds_the_desktop_origin():
    shot = shot_at(-20, 7)
    assert region_of(shot, (1, 2, 11, 22)) == Region(-19, 9, 10, 20)


def test_overlay_geometry_is_in_window_units():
    assert shot_at(-40, 0, 80, 60).window_geometry() == (-40, 0, 80, 60)
    retina = shot_at(-400, 200, 80, 60, scale=2.0)
    assert retina.window_geometry() == (-200, 100, 40, 30)


def test_dimmed_darkens_every_channel_by_the_same_table():
    image = Image.new("RGB", (2, 1))
    image.putdata([(255, 128, 0), (10, 200, 100)])
    dark = dimmed(image, 0.5)
    assert [dark.getpixel((0, 0)), dark.getpixel((1, 0))] == [(127, 64, 0), (5, 100, 50)]
    assert dimmed(image).size == image.size


@pytest.mark.parametrize(
    "box", [(0, 0, 40, 30), (0, 7, 40, 19), (5, 3, 17, 29), (39, 29, 40, 30)],
    ids=["whole", "rows", "inside", "corner"],
)  # fmt: skip
@pytest.mark.parametrize("dim", [True, False], ids=["dimmed", "bright"])
def test_bgrx_rows_are_the_image_in_the_x_servers_layout(box, dim):
    # What the X overlay shows must be what the Tk one shows (and the tests compare with).
    image = numbered(40, 30)
    shot = Screenshot(image, 0, 0, (), bgrx=bytearray(image.tobytes("raw", "BGRX")))
    desktop = bytearray(b"\xaa" * (40 * 30 * 4))
    for offset, piece in bgrx_rows(shot, box, dim):
        desktop[offset : offset + len(piece)] = piece
    shown = Image.frombuffer("RGB", (40, 30), bytes(desktop), "raw", "BGRX", 0, 1)
    expected = image.crop(box)
    assert shown.crop(box).tobytes() == (dimmed(expected) if dim else expected).tobytes()
    untouched = shown.copy()
    untouched.paste((170, 170, 170), box)
    assert untouched.getcolors() == [(40 * 30, (170, 170, 170))]  # nothing outside the box


def test_the_overlay_uses_tk_photos_off_x11_and_when_told(monkeypatch):
    from daemon.sources import xsurface

    monkeypatch.delenv(xsurface.TK_ONLY_ENV, raising=False)
    assert xsurface.open_surface("win32") is None
    assert xsurface.open_surface("aqua") is None
    monkeypatch.setenv(xsurface.TK_ONLY_ENV, "1")
    assert xsurface.open_surface("x11") is None  # before it touches any display
    monkeypatch.setenv(xsurface.TK_ONLY_ENV, "0")
    monkeypatch.delenv("DISPLAY", raising=False)
    assert xsurface.open_surface("x11") is None  # no display to open


class FakeDll:
    def __init__(self, results: dict[str, int]) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.results = results

    def __getattr__(self, name: str):
        def call(*args):
            self.calls.append((name, args))
            return self.results.get(name, 1)

        return call


class FakeWindll:
    def __init__(self, user32: dict[str, int], shcore: dict[str, int]) -> None:
        self.user32 = FakeDll(user32)
        self.shcore = FakeDll(shcore)


def test_windows_asks_for_per_monitor_v2_first(monkeypatch):
    fake = FakeWindll({"SetProcessDpiAwarenessContext": 1}, {})
    monkeypatch.setattr(screen, "is_windows", lambda: True)
    monkeypatch.setattr(ctypes, "windll", fake, raising=False)
    screen.ensure_dpi_awareness.__wrapped__()
    ((name, args),) = fake.user32.calls
    assert name == "SetProcessDpiAwarenessContext"
    assert args[0].value == ctypes.c_void_p(-4).value  # DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2
    assert fake.shcore.calls == []


def test_windows_falls_back_to_shcore_per_monitor(monkeypatch):
    fake = FakeWindll({"SetProcessDpiAwarenessContext": 0}, {"SetProcessDpiAwareness": 0})
    monkeypatch.setattr(screen, "is_windows", lambda: True)
    monkeypatch.setattr(ctypes, "windll", fake, raising=False)
    screen.ensure_dpi_awareness.__wrapped__()
    assert fake.shcore.calls == [("SetProcessDpiAwareness", (2,))]
    assert [name for name, _ in fake.user32.calls] == ["SetProcessDpiAwarenessContext"]


def test_dpi_awareness_touches_nothing_elsewhere(monkeypatch):
    fake = FakeWindll({}, {})
    monkeypatch.setattr(screen, "is_windows", lambda: False)
    monkeypatch.setattr(ctypes, "windll", fake, raising=False)
    screen.ensure_dpi_awareness.__wrapped__()
    assert fake.user32.calls == [] and fake.shcore.calls == []


@pytest.mark.skipif(sys.platform != "linux", reason="only X11 has a display variable to unset")
def test_grab_without_a_display_is_a_user_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserInputError, match="The screen cannot be captured here"):
        screen.grab_screen()


class _FakeCall:
    def __init__(self, result: bool) -> None:
        self.result, self.calls, self.restype = result, 0, None

    def __call__(self) -> bool:
        self.calls += 1
        return self.result


@pytest.mark.parametrize("allowed", [True, False])
def test_macos_grabs_full_resolution_and_says_when_screen_recording_is_off(monkeypatch, allowed):
    import ctypes.util
    import types

    darwin = types.SimpleNamespace(IMAGE_OPTIONS=0b10011, kCGWindowImageNominalResolution=1 << 4)
    monkeypatch.setitem(sys.modules, "mss.darwin", darwin)
    import mss

    monkeypatch.setattr(mss, "darwin", darwin, raising=False)
    core = types.SimpleNamespace(CGPreflightScreenCaptureAccess=_FakeCall(allowed),
                                 CGRequestScreenCaptureAccess=_FakeCall(True))  # fmt: skip
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: name)
    monkeypatch.setattr(ctypes.cdll, "LoadLibrary", lambda name: core)
    check = screen._mac_screen_ready.__wrapped__
    if allowed:
        check()
    else:
        with pytest.raises(UserInputError, match="Screen Recording"):
            check()
    assert darwin.IMAGE_OPTIONS == 0b00011  # nominal (point) resolution off: Retina pixels
    assert core.CGRequestScreenCaptureAccess.calls == (0 if allowed else 1)
