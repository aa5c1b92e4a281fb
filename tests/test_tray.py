"""The tray menu, built by pystray on a real (virtual) X display."""

from __future__ import annotations

import gc
import sys
import threading

import pytest
from fakes import FakeEngine
from xdesktop import desktop, missing_tools

from daemon.config import Config, Settings
from daemon.sinks.history import History

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="builds the menu on an X display"),
    pytest.mark.skipif("Xvfb" in missing_tools(), reason="needs Xvfb"),
]


class FakeDesktop:
    def __init__(self) -> None:
        self.clipboard = ""
        self.notes: list[tuple[str, str]] = []
        self.windows: list[dict] = []

    def read_clipboard(self) -> str:
        return self.clipboard

    def write_clipboard(self, text: str) -> None:
        self.clipboard = text

    def copy_selection(self, chord):
        return ""

    def paste(self, text, chord, keep):
        self.clipboard = text

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        self.notes.append((title, body))

    def window(self, message: dict) -> None:
        self.windows.append(message)


class StubDaemon:
    def __init__(self, service) -> None:
        self.service = service
        self.reloaded = threading.Event()
        self.stopped = threading.Event()

    def reload(self):
        self.reloaded.set()

    def stop(self):
        self.stopped.set()


@pytest.fixture(scope="module")
def display():
    with desktop() as session:
        yield session
        # Let pystray's icons close their X connections while the display still exists.
        gc.collect()


@pytest.fixture
def tray(display, monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", display.env["DISPLAY"])
    monkeypatch.setenv("PYSTRAY_BACKEND", "xorg")
    config = tmp_path / "config"
    config.mkdir()
    (config / "models.toml").write_text(
        'default = "a"\n[models.a]\npath = "a.gguf"\n[models.b]\npath = "b.gguf"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(config))
    from daemon.desktop.tray import Tray
    from daemon.service import Service

    service = Service(FakeDesktop(), lambda _spec: FakeEngine("a prompt"),
                      history=History(tmp_path / "h.sqlite3"),
                      config_loader=lambda: Config(settings=Settings()))  # fmt: skip
    service.load()
    stub = StubDaemon(service)
    parts = [Tray(stub), service, stub]
    yield parts
    service.history.close()
    # pystray's X11 icon closes its display connection in __del__ (it sits in a reference
    # cycle): emptied here, so it goes now, while the display exists, not in a later test.
    parts.clear()
    del stub, service
    gc.collect()


def labels(items):
    return [item.text for item in items if item.text]


def find(items, text):
    return next(item for item in items if item.text == text)


def test_menu_lists_actions_and_controls(tray):
    icon, _service, _stub = tray
    items = icon._items()
    names = labels(items)
    for expected in ("Translate to a prompt", "Prompt variations", "Caption as a prompt",
                     "Read text (vision model)", "Read text", "Screen text to a prompt",
                     "Show last result", "Model", "Free VRAM now", "Pause hotkeys", "Recent",
                     "Open config folder", "Reload config", "Quit"):  # fmt: skip
        assert expected in names


def test_actions_the_model_cannot_do_are_greyed_out(tray, tmp_path):
    icon, service, _stub = tray
    enabled = {item.text: item.enabled for item in icon.action_items()}
    # Model a has no projector: the image actions cannot run; text and OCR can.
    assert enabled["Caption as a prompt"] is False
    assert enabled["Read text (vision model)"] is False
    assert enabled["Translate to a prompt"] is True
    assert enabled["Read text"] is True and enabled["Screen text to a prompt"] is True
    assert "needs a vision model, and 'a' has none" in str(service.unavailable("caption"))
    # No model at all: only what needs none (OCR) stays.
    (tmp_path / "config" / "models.toml").write_text("", encoding="utf-8")
    service.load()
    enabled = {item.text: item.enabled for item in icon.action_items()}
    assert enabled["Translate to a prompt"] is False and enabled["Read text"] is True


def test_show_last_result_opens_a_window(tray):
    icon, service, _stub = tray
    find(icon._items(), "Show last result")(icon.icon)
    assert service.io.notes[-1][0] == "No result yet"
    service.last_result = ("Translate to a prompt", "猫", "A cat.")
    find(icon._items(), "Show last result")(icon.icon)
    opened, done = service.io.windows[-2:]
    assert (opened["do"], opened["title"], opened["source"]) == ("open", "Translate to a prompt",
                                                                 "猫")  # fmt: skip
    assert (done["do"], done["text"], done["tag"]) == ("done", "A cat.", opened["tag"])


def test_actions_queue_jobs_with_the_right_source(tray):
    icon, service, _stub = tray
    queued = []
    service.submit = lambda job: queued.append(job) or True
    items = icon._items()
    find(items, "Translate to a prompt")(icon.icon)
    find(items, "Caption as a prompt")(icon.icon)
    assert [(j.action, j.source, j.origin) for j in queued] == [
        ("translate_en", "clipboard", "tray"),
        ("caption", "region", "tray"),
    ]


def test_pause_model_switch_recent_reload_quit(tray):
    icon, service, stub = tray
    items = icon._items()
    pause = find(items, "Pause hotkeys")
    assert not pause.checked
    pause(icon.icon)
    assert service.paused and find(icon._items(), "Pause hotkeys").checked

    switched = []
    service.switch_model = switched.append
    models = icon._model_items()
    assert labels(models)[:2] == ["a — llama-cpp", "b — llama-cpp"]
    assert find(models, "a — llama-cpp").checked and not find(models, "b — llama-cpp").checked
    find(models, "b — llama-cpp")(icon.icon)
    assert switched == ["b"]

    assert labels(icon._recent_items()) == ["(nothing yet)"]
    service.history.add("translate_en", "clipboard", "入力", "a lighthouse at dusk", "a")
    recent = icon._recent_items()
    assert labels(recent) == ["translate_en: a lighthouse at dusk"]
    recent[0](icon.icon)
    assert service.io.clipboard == "a lighthouse at dusk"

    find(items, "Reload config")(icon.icon)
    find(items, "Quit")(icon.icon)
    assert stub.reloaded.is_set() and stub.stopped.is_set()


def test_icon_follows_the_state(tray):
    icon, service, _stub = tray
    before = icon.icon.icon.tobytes()
    service._set_state("error")
    assert icon.icon.icon.tobytes() != before
    assert icon.icon.title == "yomitori: error"


def test_model_labels_say_backend_and_residence():
    from daemon.desktop.tray import model_label

    assert model_label("llava", "ollama", True) == "llava — ollama, loaded"
    assert model_label("qwen", "llama-server", False) == "qwen — llama-server"
