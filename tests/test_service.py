"""daemon/service.py headless: a fake desktop, a fake engine, the real templates.

No display, no model: the loop runs on its own thread as in the daemon, and
every wait is on an event or a condition with a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine

from daemon import platform
from daemon import service as service_module
from daemon.actions import ActionResult
from daemon.config import Binding, Config, Settings
from daemon.engine import Generation
from daemon.errors import (
    Cancelled,
    ConfigError,
    EngineError,
    UserInputError,
    WorkerCrashed,
    YomitoriError,
)
from daemon.service import BUSY_NOTE_S, Job, Service, job_from_binding
from daemon.sinks.history import EXCERPT_CHARS, History

TIMEOUT = 5.0
MODS = "<alt>+<shift>+<cmd>"
CHORD = f"{MODS}+t"
CRASH = "The model worker stopped unexpectedly (exit code -9); the next request starts a fresh one."


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` briefly until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# --- fakes -----------------------------------------------------------------


class FakeDesktop:
    """Records every call; ``clipboard`` and ``selection`` are what the user has."""

    def __init__(self, clipboard: str = "猫が座っている", selection: str = "") -> None:
        self.clipboard = clipboard
        self.selection = selection
        self.region: bytes | BaseException | None = None
        self.clipboard_image: bytes | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.notes: list[tuple[str, str]] = []
        self.tags: list[str | None] = []
        self.windows: list[dict[str, Any]] = []
        self.writes: list[str] = []
        self.pastes: list[tuple[str, str | None, bool]] = []

    def read_clipboard(self) -> str:
        self.calls.append(("read_clipboard",))
        return self.clipboard

    def write_clipboard(self, text: str) -> None:
        self.calls.append(("write_clipboard", text))
        self.writes.append(text)
        self.clipboard = text

    def copy_selection(self, chord: str | None) -> str:
        self.calls.append(("copy_selection", chord))
        return self.selection

    def paste(self, text: str, chord: str | None, keep: bool) -> None:
        self.calls.append(("paste", text, chord, keep))
        self.pastes.append((text, chord, keep))

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        self.calls.append(("notify", title, body))
        self.notes.append((title, body))
        self.tags.append(tag)

    def capture_region(self, repeat: bool = False) -> bytes:
        self.calls.append(("capture_region", repeat))
        if isinstance(self.region, BaseException):
            raise self.region
        assert self.region is not None
        return self.region

    def read_clipboard_image(self) -> bytes | None:
        self.calls.append(("read_clipboard_image",))
        return self.clipboard_image

    def window(self, message: dict[str, Any]) -> None:
        self.calls.append(("window", message.get("do")))
        self.windows.append(message)

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models.toml with two fake GGUF models (check_spec only reads the magic)."""
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ("m", "n"):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF" + b"\x00" * 28)
    (tmp_path / "bad.gguf").write_bytes(b"PK\x03\x04 not a model")
    (folder / "models.toml").write_text(
        'default = "m"\n'
        f'[models.m]\npath = "{tmp_path / "m.gguf"}"\n'
        f'[models.n]\npath = "{tmp_path / "n.gguf"}"\n'
        f'[models.bad]\npath = "{tmp_path / "bad.gguf"}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(folder))
    monkeypatch.delenv("YOMITORI_MODEL", raising=False)
    return folder


@dataclass
class Harness:
    service: Service
    io: FakeDesktop
    engine: FakeEngine
    states: list[str] = field(default_factory=list)

    def run(self, job: Job) -> ActionResult:
        """Submit ``job`` with a future and wait for its result (or exception)."""
        job.future = Future()
        assert self.service.submit(job)
        return job.future.result(timeout=TIMEOUT)

    def fail(self, job: Job) -> BaseException:
        job.future = Future()
        assert self.service.submit(job)
        error = job.future.exception(timeout=TIMEOUT)
        assert error is not None, "the job was expected to fail"
        return error

    def hotkey(self, job: Job) -> None:
        """Submit a hotkey-style job (no future) and wait until the loop is done with it."""
        assert self.service.submit(job)
        self.settle()

    def settle(self) -> None:
        wait_for(
            lambda: (
                self.service.finished == self.service.accepted
                and self.service.state in ("idle", "error")
            ),
            "the queue to drain",
        )


Make = Callable[..., Harness]


@pytest.fixture
def make() -> Iterator[Make]:
    """Build a loaded, started Service; every one is stopped at teardown."""
    made: list[Harness] = []

    def build(
        settings: Settings | None = None,
        bindings: tuple[Binding, ...] = (),
        history: History | None = None,
        engine: FakeEngine | None = None,
        io: FakeDesktop | None = None,
        loader: Callable[[], Config] | None = None,
    ) -> Harness:
        engine = engine or FakeEngine()
        io = io or FakeDesktop()
        config = Config(settings=settings or Settings(), bindings=bindings)
        service = Service(io, lambda _spec: engine, history=history,
                          config_loader=loader or (lambda: config),
                          ocr={"rapidocr": FakeOcr()})  # fmt: skip
        harness = Harness(service, io, engine)
        service.listeners.append(lambda s: harness.states.append(s.state))
        service.load()
        service.start(preload=False)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.engine.release()
        harness.service.stop()


@pytest.fixture
def h(make: Make) -> Harness:
    return make()


def tr(**kwargs: Any) -> Job:
    return Job(action="translate_en", chord=CHORD, **kwargs)


def failures(io: FakeDesktop) -> list[tuple[str, str]]:
    return [note for note in io.notes if note[0].endswith(" failed")]


# --- sources and outputs -----------------------------------------------------


def test_the_fake_desktop_has_every_member_of_the_protocol() -> None:
    """(The fake engines are checked against Engine in test_engine_protocol.py.)"""
    import inspect

    from daemon.jobs import DesktopIO

    members = [n for n in vars(DesktopIO) if not n.startswith("_")]
    assert members
    for name in members:
        wanted = vars(DesktopIO)[name]
        got = inspect.getattr_static(FakeDesktop, name, None)
        assert callable(got), f"FakeDesktop lacks {name}"
        assert list(inspect.signature(got).parameters) == list(
            inspect.signature(wanted).parameters
        ), name


def test_clipboard_source_writes_result_and_notifies(h: Harness) -> None:
    h.io.clipboard = "夕焼けの海辺"
    h.hotkey(tr())
    assert h.io.writes == ["A cat sits."]
    assert h.io.clipboard == "A cat sits."
    assert h.io.notes == [("Translate to a prompt — copied", "A cat sits.")]
    assert h.io.called("read_clipboard") == [("read_clipboard",)]
    assert h.io.called("copy_selection") == []
    assert h.io.pastes == []
    ((messages, options),) = h.engine.calls
    assert messages[-1] == {"role": "user", "content": "夕焼けの海辺"}
    assert messages[0]["role"] == "system"
    assert options["max_tokens"] == 300  # the template's own options
    assert [spec.name for spec in h.engine.loads] == ["m"]
    assert h.service.last_error is None
    assert h.service.state == "idle"


CUT = "\n(the whole result is on the clipboard)"


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("0123456789", "0123456789"),  # exactly the limit: unchanged
        ("0123456789A", "012345678…" + CUT),  # one over: cut, ellipsis included, and said
        ("x" * 500, "x" * 9 + "…" + CUT),
    ],
)
def test_notification_body_is_truncated_to_notify_chars(make: Make, text: str, body: str) -> None:
    h = make(settings=Settings(notify_chars=10), engine=FakeEngine(text))
    h.hotkey(tr())
    assert h.io.notes == [("Translate to a prompt — copied", body)]
    assert len(h.io.notes[0][1].split("\n")[0]) <= 10
    assert h.io.writes == [text]  # the clipboard always gets the whole result


@pytest.mark.parametrize(
    ("outputs", "title", "cut"),
    [
        (("clipboard", "notify"), "Prompt variations — copied",
         "the whole result is on the clipboard"),
        (("paste", "notify"), "Prompt variations — pasted", "yomitori history has all of it"),
        (("paste", "clipboard", "notify"), "Prompt variations — pasted and copied",
         "the whole result is on the clipboard"),
        (("notify",), "Prompt variations", "yomitori history has all of it"),
    ],
)  # fmt: skip
def test_the_title_is_the_actions_and_says_where_the_result_went(
    make: Make, tmp_path: Path, outputs: tuple[str, ...], title: str, cut: str
) -> None:
    history = History(tmp_path / "h.sqlite")
    h = make(settings=Settings(notify_chars=20), engine=FakeEngine("y" * 50), history=history)
    h.hotkey(Job(action="variations", vars={"count": "2"}, outputs=outputs))
    ((shown, body),) = h.io.notes
    assert shown == title
    assert body.endswith(f"…\n({cut})")
    # One tag per job: a later note of the same job replaces the earlier one.
    assert h.io.tags[0] is not None
    h.hotkey(Job(action="variations", vars={"count": "2"}, outputs=outputs))
    assert h.io.tags[1] is not None and h.io.tags[1] != h.io.tags[0]
    history.close()


@pytest.mark.parametrize("clipboard", ["", "   \n\t "])
def test_empty_clipboard_is_a_clear_failure(h: Harness, clipboard: str) -> None:
    h.io.clipboard = clipboard
    h.hotkey(tr())
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "clipboard holds no text" in body
    assert "Traceback" not in body
    assert "Error" not in body  # no exception class names either
    assert h.engine.calls == []
    assert h.io.writes == []
    assert h.service.last_error == body
    assert h.service.state == "error"
    assert h.service.status()["last_error"] == body


def test_empty_clipboard_fails_the_future_with_a_user_error(h: Harness) -> None:
    h.io.clipboard = ""
    error = h.fail(tr(origin="trigger"))
    assert isinstance(error, UserInputError)
    assert "clipboard holds no text" in str(error)


def test_empty_clipboard_is_refused_before_loading_the_model(h: Harness) -> None:
    h.io.clipboard = ""
    h.hotkey(tr())
    assert failures(h.io)
    assert h.engine.loads == []


def test_selection_source_copies_the_selection(h: Harness) -> None:
    h.io.selection = "選択されたテキスト"
    h.hotkey(tr(source="selection"))
    assert h.io.called("copy_selection") == [("copy_selection", CHORD)]
    assert h.io.called("read_clipboard") == []
    assert h.engine.calls[0][0][-1]["content"] == "選択されたテキスト"
    assert h.io.writes == ["A cat sits."]


def test_empty_selection_is_a_clear_failure(h: Harness) -> None:
    h.io.selection = "  "
    h.hotkey(tr(source="selection"))
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "No text is selected" in body
    assert h.engine.calls == []


def test_text_given_directly_skips_the_desktop(h: Harness) -> None:
    result = h.run(tr(origin="trigger", text="直接のテキスト", outputs=("clipboard",)))
    assert result.text == "A cat sits."
    assert h.engine.calls[0][0][-1]["content"] == "直接のテキスト"
    assert h.io.called("read_clipboard") == []
    assert h.io.called("copy_selection") == []
    assert h.io.writes == ["A cat sits."]
    assert h.io.notes == []  # no "notify" output asked for


def test_paste_output_pastes_and_restores_the_clipboard(h: Harness) -> None:
    h.hotkey(tr(outputs=("paste",)))
    assert h.io.pastes == [("A cat sits.", CHORD, False)]
    assert h.io.writes == []
    assert h.io.notes == []


def test_paste_and_clipboard_outputs_paste_once_and_keep(h: Harness) -> None:
    h.hotkey(tr(outputs=("paste", "clipboard")))
    assert h.io.pastes == [("A cat sits.", CHORD, True)]
    assert h.io.called("write_clipboard") == []  # paste(keep=True) leaves it there
    assert h.io.notes == []


def test_paste_and_notify_outputs(h: Harness) -> None:
    h.hotkey(tr(outputs=("paste", "notify")))
    assert h.io.pastes == [("A cat sits.", CHORD, False)]
    assert h.io.notes == [("Translate to a prompt — pasted", "A cat sits.")]
    assert h.io.writes == []


def test_clipboard_output_alone_does_not_notify(h: Harness) -> None:
    h.hotkey(tr(outputs=("clipboard",)))
    assert h.io.writes == ["A cat sits."]
    assert h.io.notes == []


def test_notify_output_alone_leaves_the_clipboard(h: Harness) -> None:
    h.io.clipboard = "原文"
    h.hotkey(tr(outputs=("notify",)))
    assert h.io.writes == []
    assert h.io.clipboard == "原文"
    assert h.io.notes == [("Translate to a prompt", "A cat sits.")]


# --- vars: template variables and sampling options ---------------------------


def test_vars_split_into_template_values_and_options(h: Harness) -> None:
    h.hotkey(tr(vars={"style": "tags", "max_tokens": "7"}))
    ((messages, options),) = h.engine.calls
    assert options["max_tokens"] == 7
    assert isinstance(options["max_tokens"], int)
    assert options["temperature"] == 0.2  # the template's default is kept
    system = messages[0]["content"]
    assert "comma-separated tags" in system
    assert "natural language for Flux" not in system
    assert "$style" not in system


def test_default_vars_render_the_default_choice(h: Harness) -> None:
    h.hotkey(tr())
    ((messages, options),) = h.engine.calls
    assert "natural language for Flux" in messages[0]["content"]
    assert options == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 300}


def test_variations_count_reaches_the_user_message(h: Harness) -> None:
    h.io.clipboard = "a red fox"
    h.hotkey(Job(action="variations", vars={"count": "3", "temperature": "0.5", "stop": "a|b"}))
    ((messages, options),) = h.engine.calls
    assert messages[-1]["content"] == "Write exactly 3 variations of this prompt:\na red fox"
    assert options["temperature"] == 0.5
    assert options["stop"] == ["a", "b"]


@pytest.mark.parametrize(
    ("variables", "needle"),
    [
        ({"style": "poem"}, "prose, tags"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"colour": "red"}, "Unknown key 'colour'"),
    ],
)
def test_bad_vars_fail_before_generating(
    h: Harness, variables: dict[str, str], needle: str
) -> None:
    h.hotkey(tr(vars=variables))
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert needle in body
    assert h.engine.calls == []


def test_job_model_overrides_the_default(h: Harness) -> None:
    result = h.run(tr(origin="trigger", model="n", outputs=("clipboard",)))
    assert result.model == "n"
    h.run(tr(origin="trigger", outputs=("clipboard",)))
    assert [spec.name for spec in h.engine.loads] == ["n", "m"]


def test_unknown_model_is_a_clear_failure(h: Harness) -> None:
    h.hotkey(tr(model="nonexistent"))
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "Unknown model 'nonexistent'" in body
    assert h.engine.loads == []


def test_model_that_is_not_gguf_is_refused(h: Harness) -> None:
    h.hotkey(tr(model="bad"))
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "not a GGUF file" in body
    assert h.engine.loads == []


def test_unknown_action_is_a_clear_failure(h: Harness) -> None:
    h.hotkey(Job(action="summarise"))
    ((title, body),) = h.io.notes
    assert title == "summarise failed"
    assert "Unknown action 'summarise'" in body
    assert "translate_en" in body  # lists what exists


# --- builtin actions and sources without screen-region support ---------------


def png(width: int = 64, height: int = 32) -> bytes:
    import io as iolib

    from PIL import Image

    buffer = iolib.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


class FakeOcr:
    name = "rapidocr"

    def __init__(self, text: str = "夕焼けの海") -> None:
        self.text = text
        self.seen: list[tuple[int, int]] = []

    def recognize(self, image: Any) -> Any:
        from daemon.engine.ocr import OcrResult

        self.seen.append(image.size)
        return OcrResult(text=self.text, timings={"ocr_s": 0.01})


def test_ocr_on_a_region_needs_no_model(h: Harness) -> None:
    h.io.region = png(120, 40)
    h.hotkey(Job(action="ocr", source="region"))
    assert h.io.writes == ["夕焼けの海"]
    assert h.engine.loads == [] and h.engine.calls == []
    assert h.service.ocr["rapidocr"].seen == [(120, 40)]


class ColdOcr(FakeOcr):
    """An OCR process that is not running (stopped after keep_alive)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.warmed = threading.Event()

    def warm_up(self) -> None:
        self.running = True
        self.warmed.set()


class SlowSelection(FakeDesktop):
    """The user takes a moment to drag; the test sees what happened meanwhile."""

    def __init__(self, ocr: ColdOcr, patience_s: float) -> None:
        super().__init__()
        self.ocr = ocr
        self.patience_s = patience_s
        self.warm_during_selection = False

    def capture_region(self, repeat: bool = False) -> bytes:
        self.warm_during_selection = self.ocr.warmed.wait(self.patience_s)
        return super().capture_region(repeat)


@pytest.mark.parametrize(("action", "source", "expected"), [
    ("ocr", "region", True), ("ocr_translate", "last_region", True),
    ("caption", "region", False), ("ocr", "clipboard_image", False),
])  # fmt: skip
def test_a_cold_ocr_process_starts_while_the_user_selects(
    make: Make, action: str, source: str, expected: bool
) -> None:
    ocr = ColdOcr()
    io = SlowSelection(ocr, patience_s=5 if expected else 0.2)
    io.region = io.clipboard_image = png()
    h = make(io=io)
    h.service.ocr["rapidocr"] = ocr
    h.hotkey(Job(action=action, source=source))
    assert ocr.warmed.is_set() is expected
    if source != "clipboard_image":
        assert io.warm_during_selection is expected


def test_ocr_translate_chains_ocr_into_the_model(h: Harness) -> None:
    h.io.region = png()
    h.hotkey(Job(action="ocr_translate", source="region", vars={"style": "tags"}))
    # Two generations: the prompt's start read during the selection, then the request.
    primed, (messages, _options) = h.engine.calls
    assert h.io.writes == ["A cat sits."]
    assert messages[-1]["content"] == "夕焼けの海"  # the OCR text fed the next step
    assert "comma-separated tags" in messages[0]["content"]
    assert primed[0][0] == messages[0]  # with the binding's style, as the request has it


@pytest.mark.parametrize(("action", "engine_var"), [("caption", None), ("ocr", "vlm")])
def test_an_image_model_action_on_a_text_model_is_refused_before_loading(
    h: Harness, action: str, engine_var: str | None
) -> None:
    h.io.region = png()
    h.hotkey(Job(action=action, source="region", vars={"engine": engine_var} if engine_var else {}))
    ((title, body),) = failures(h.io)
    assert title == f"{service_module.pipeline.title_of(action, h.service.templates)} failed"
    assert "needs a vision model, and 'm' has none" in body and "mmproj" in body
    assert h.engine.loads == [] and h.engine.calls == []  # no seconds spent loading first
    assert h.io.called("capture_region") == []  # refused before the overlay opened


def test_a_step_cut_at_max_tokens_is_reported_as_length(h: Harness) -> None:
    h.engine.then(Generation(text="A cat", finish_reason="length"))
    result = h.run(Job(action="translate_en", text="猫"))
    assert result.finish_reason == "length"
    h.io.region = png()
    h.engine.then(Generation(text="A cat sits.", finish_reason="stop"))
    assert h.run(Job(action="ocr_translate", source="region")).finish_reason == "stop"


def test_cancelled_region_is_silent(h: Harness) -> None:
    h.io.region = Cancelled("Cancelled.")
    h.hotkey(Job(action="ocr", source="region"))
    assert h.io.notes == [] and h.io.writes == []
    h.hotkey(tr())  # the loop is still alive
    assert h.io.notes[-1] == ("Translate to a prompt — copied", "A cat sits.")


@pytest.mark.parametrize(
    ("image", "words"),
    [(None, "holds no image"), (b"not an image", "not an image"), (b"", "holds no image")],
)
def test_clipboard_image_problems_are_one_sentence(h: Harness, image: Any, words: str) -> None:
    h.io.clipboard_image = image
    h.hotkey(Job(action="ocr", source="clipboard_image"))
    ((title, body),) = h.io.notes
    assert title == "Read text failed" and words in body and "Traceback" not in body
    assert h.engine.calls == []


def test_tiny_region_is_refused(h: Harness) -> None:
    h.io.region = png(1, 1)
    h.hotkey(Job(action="ocr", source="region"))
    ((title, body),) = h.io.notes
    assert title == "Read text failed" and "too small" in body


def test_text_source_for_an_image_action_is_refused(h: Harness) -> None:
    h.hotkey(Job(action="ocr", source="clipboard"))
    ((_title, body),) = h.io.notes
    assert "needs an image" in body


def test_bindings_to_builtin_actions_load(make: Make) -> None:
    binding = Binding(hotkey="<alt>+<shift>+<cmd>+o", action="ocr", source="region")
    h = make(bindings=(binding,))
    assert h.service.config.bindings == (binding,)


def test_bindings_to_unknown_actions_do_not_load(make: Make) -> None:
    with pytest.raises(ConfigError, match="unknown action 'summarise'"):
        make(bindings=(Binding(hotkey=f"{MODS}+s", action="summarise", where="f, line 3"),))


def test_binding_vars_may_set_options_but_not_unknown_names(make: Make) -> None:
    ok = Binding(hotkey="<alt>+<shift>+<cmd>+t", action="translate_en",
                 vars={"style": "tags", "max_tokens": "9"})  # fmt: skip
    assert make(bindings=(ok,)).service.config.bindings == (ok,)
    bad = Binding(hotkey="<alt>+<shift>+<cmd>+t", action="translate_en", vars={"count": "3"})
    with pytest.raises(ConfigError, match="has no variable 'count'"):
        make(bindings=(bad,))


# --- the queue -------------------------------------------------------------


def test_submit_beyond_queue_size_is_refused(make: Make) -> None:
    h = make(settings=Settings(queue_size=2))
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the first job to start generating")
    assert h.service.state == "busy"
    # queue_size bounds the jobs waiting behind the running one.
    assert h.service.pending == 0
    assert h.service.submit(tr())
    assert h.service.submit(tr())
    assert h.service.pending == 2
    assert not h.service.submit(tr())
    assert not h.service.submit(tr())
    assert h.service.pending == 2
    assert h.service.status()["queue"] == 2
    h.engine.release()
    h.settle()
    assert h.engine.entered == 3
    assert h.io.writes == ["A cat sits."] * 3
    assert h.service.submit(tr())  # room again once the queue drains
    h.settle()
    assert h.engine.entered == 4


def test_burst_of_refused_hotkeys_gives_one_busy_note(make: Make) -> None:
    h = make(settings=Settings(queue_size=1))
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    assert h.service.submit(tr())  # the one waiting place
    refused = [h.service.submit(tr()) for _ in range(5)]
    assert refused == [False] * 5
    busy = [note for note in h.io.notes if note[0] == "yomitori is busy"]
    assert len(busy) == 1
    assert "press again" in busy[0][1]
    h.engine.release()
    h.settle()
    assert h.engine.entered == 2  # the running and the waiting one; the refused never ran


def test_busy_note_repeats_after_the_quiet_period(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert BUSY_NOTE_S > 0
    monkeypatch.setattr(service_module, "BUSY_NOTE_S", 0.05)
    h = make(settings=Settings(queue_size=1))
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    assert h.service.submit(tr())  # the one waiting place
    assert not h.service.submit(tr())
    assert not h.service.submit(tr())
    time.sleep(0.1)
    assert not h.service.submit(tr())
    busy = [note for note in h.io.notes if note[0] == "yomitori is busy"]
    assert len(busy) == 2


def test_refused_trigger_job_gets_an_exception_not_a_note(make: Make) -> None:
    h = make(settings=Settings(queue_size=1))
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    assert h.service.submit(tr())  # the one waiting place
    job = tr(origin="trigger", future=Future())
    assert not h.service.submit(job)
    assert job.future is not None
    error = job.future.exception(timeout=0)
    assert isinstance(error, UserInputError)
    assert "busy" in str(error)
    assert not [note for note in h.io.notes if note[0] == "yomitori is busy"]
    # A trigger without a future is refused silently: its caller gets False.
    assert not h.service.submit(tr(origin="trigger"))
    assert not [note for note in h.io.notes if note[0] == "yomitori is busy"]


def test_jobs_run_one_at_a_time_in_order(make: Make) -> None:
    h = make(settings=Settings(queue_size=3))
    h.engine.then("first", "second", "third").block()
    futures = []
    for text in ("一", "二", "三"):
        job = tr(origin="trigger", text=text, outputs=("clipboard",), future=Future())
        futures.append(job.future)
        assert h.service.submit(job)
    wait_for(lambda: h.engine.entered == 1, "the first job to start")
    assert h.engine.entered == 1  # the others wait their turn
    h.engine.release()
    assert [f.result(timeout=TIMEOUT).text for f in futures] == ["first", "second", "third"]
    assert [call[0][-1]["content"] for call in h.engine.calls] == ["一", "二", "三"]
    assert h.io.writes == ["first", "second", "third"]


# --- futures and errors ------------------------------------------------------


def test_future_gets_the_result(h: Harness) -> None:
    result = h.run(tr(origin="trigger"))
    assert isinstance(result, ActionResult)
    assert result.text == "A cat sits."
    assert result.action == "translate_en"
    assert result.model == "m"
    assert result.timings["load_s"] >= 0.125  # the load done before generating counts
    assert result.timings["completion_tokens"] == 3


def test_future_gets_a_yomitori_error(h: Harness) -> None:
    h.engine.then(EngineError("The model ran out of memory."))
    error = h.fail(tr(origin="trigger"))
    assert isinstance(error, EngineError)
    assert str(error) == "The model ran out of memory."
    assert h.io.notes == [("Translate to a prompt failed", "The model ran out of memory.")]
    assert h.service.last_error == "The model ran out of memory."


def test_trigger_failure_without_notify_output_is_not_notified(h: Harness) -> None:
    h.engine.then(EngineError("The model ran out of memory."))
    error = h.fail(tr(origin="trigger", outputs=("clipboard",)))
    assert isinstance(error, EngineError)
    assert h.io.notes == []
    assert h.service.last_error == "The model ran out of memory."


def test_empty_model_output_is_a_failure(h: Harness) -> None:
    h.engine.then("<think>only thinking</think>  ")
    error = h.fail(tr(origin="trigger"))
    assert isinstance(error, EngineError)
    assert "no text" in str(error)
    assert h.io.writes == []


def test_cancelled_generation_cancels_the_future(h: Harness) -> None:
    h.engine.then(Generation(text="half", finish_reason="cancelled"))
    error = h.fail(tr(origin="trigger"))
    assert isinstance(error, Cancelled)
    assert failures(h.io) == []  # a cancel is not an error to report
    assert h.io.writes == []
    assert h.service.last_error is None
    h.settle()
    assert h.service.state == "idle"
    assert h.run(tr(origin="trigger")).text == "A cat sits."


def test_cancel_stops_the_running_job(h: Harness) -> None:
    h.engine.block()
    job = tr(origin="trigger", future=Future())
    assert h.service.submit(job)
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    h.service.cancel()
    assert h.engine.cancels == 1
    assert job.future is not None
    assert isinstance(job.future.exception(timeout=TIMEOUT), Cancelled)
    assert h.io.writes == []
    h.engine.release()
    assert h.run(tr(origin="trigger")).text == "A cat sits."


def test_unexpected_exception_is_caught_and_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.service")
    h.engine.then(RuntimeError("boom: internal detail"))
    h.hotkey(tr())
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "Internal error (RuntimeError)" in body
    assert "log" in body
    assert "Traceback" not in body
    assert "boom" not in body
    records = [r for r in caplog.records if r.name == "daemon.service" and r.exc_info]
    assert records, "the traceback should be logged"
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is RuntimeError
    assert "Traceback" in caplog.text
    assert "boom: internal detail" in caplog.text
    assert h.service.state == "error"
    # The loop survived: the next job succeeds and clears the error.
    h.hotkey(tr())
    assert h.io.notes[-1] == ("Translate to a prompt — copied", "A cat sits.")
    assert h.service.last_error is None
    assert h.service.state == "idle"


def test_unexpected_exception_fails_the_future_with_a_yomitori_error(h: Harness) -> None:
    h.engine.then(KeyError("x"))
    error = h.fail(tr(origin="trigger"))
    assert isinstance(error, YomitoriError)
    assert "Internal error (KeyError)" in str(error)
    assert h.run(tr(origin="trigger")).text == "A cat sits."


def test_failing_desktop_is_an_internal_error_not_a_dead_loop(h: Harness) -> None:
    def broken(text: str) -> None:
        raise OSError("no clipboard owner")

    h.io.write_clipboard = broken  # type: ignore[method-assign]
    h.hotkey(tr())
    ((title, body),) = h.io.notes
    assert title == "Translate to a prompt failed"
    assert "Internal error (OSError)" in body
    h.hotkey(tr(outputs=("notify",)))
    assert h.io.notes[-1] == ("Translate to a prompt", "A cat sits.")


def test_worker_crash_is_reported_and_the_next_job_restarts_it(h: Harness) -> None:
    h.engine.then(WorkerCrashed(CRASH))
    h.hotkey(tr())
    assert h.io.notes == [("Translate to a prompt failed", CRASH)]
    assert h.service.last_error == CRASH
    status = h.service.status()
    assert status["state"] == "error"
    assert status["last_error"] == CRASH
    assert status["loaded"] is False
    h.hotkey(tr())
    assert h.io.notes[-1] == ("Translate to a prompt — copied", "A cat sits.")
    assert len(h.engine.loads) == 2  # loaded again after the crash
    assert h.service.last_error is None
    assert h.service.status()["state"] == "idle"


def test_user_text_is_not_logged_above_debug(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "私の秘密のパスワード"
    h.io.clipboard = secret
    h.hotkey(tr())
    h.engine.then(EngineError("The model ran out of memory."))
    h.hotkey(tr())
    h.engine.then(RuntimeError("boom"))
    h.hotkey(tr())
    assert len(h.engine.calls) == 3  # the secret did reach the model each time
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r for r in loud if r.levelno >= logging.WARNING], "failures are logged"
    formatter = logging.Formatter()
    for record in loud:
        assert secret not in record.getMessage()
        if record.exc_info:
            assert secret not in formatter.formatException(record.exc_info)


# --- keep_alive ----------------------------------------------------------------


def test_keep_alive_zero_unloads_after_each_job(make: Make) -> None:
    h = make(settings=Settings(keep_alive_s=0))
    h.run(tr(origin="trigger"))
    h.settle()
    assert h.engine.unloads == 1  # before the loop went back to idle, not on a later poll
    assert h.service.status()["loaded"] is False
    h.run(tr(origin="trigger"))
    wait_for(lambda: h.engine.unloads == 2, "the unload after the second job")
    assert len(h.engine.loads) == 2


def test_keep_alive_zero_keeps_the_model_for_queued_jobs(make: Make) -> None:
    h = make(settings=Settings(keep_alive_s=0))
    h.engine.block()
    first = tr(origin="trigger", future=Future())
    second = tr(origin="trigger", future=Future())
    assert h.service.submit(first)
    assert h.service.submit(second)
    h.engine.release()
    assert second.future is not None
    second.future.result(timeout=TIMEOUT)
    wait_for(lambda: h.engine.unloads == 1, "the unload after the last job")
    assert len(h.engine.loads) == 1  # not unloaded (and reloaded) between the two


def test_keep_alive_zero_unloads_after_a_failed_job_too(make: Make) -> None:
    h = make(settings=Settings(keep_alive_s=0))
    h.engine.then(EngineError("The model ran out of memory."))
    h.fail(tr(origin="trigger"))
    wait_for(lambda: h.engine.unloads == 1, "the unload after the failed job")


def test_keep_alive_unloads_after_idling(make: Make) -> None:
    keep = 0.3
    h = make(settings=Settings(keep_alive_s=keep))
    seen: list[bool] = []
    h.service.listeners.append(lambda s: seen.append(s.engine.stats()["loaded"]))
    h.run(tr(origin="trigger"))
    wait_for(lambda: h.engine.unloads == 1, "the idle unload")
    idle = h.engine.unload_times[0] - h.engine.generation_ends[0]
    assert idle >= keep - 0.01, f"unloaded after {idle:.3f}s, before keep_alive"
    assert h.service.status()["loaded"] is False
    wait_for(lambda: seen[-1] is False, "listeners to hear about the unload")
    # The next job loads the model again.
    assert h.run(tr(origin="trigger")).text == "A cat sits."
    assert len(h.engine.loads) == 2
    wait_for(lambda: h.engine.unloads == 2, "the second idle unload")


def test_keep_alive_counts_from_the_last_job(make: Make) -> None:
    keep = 0.3
    h = make(settings=Settings(keep_alive_s=keep))
    h.run(tr(origin="trigger"))
    time.sleep(keep / 2)
    h.run(tr(origin="trigger"))
    wait_for(lambda: h.engine.unloads >= 1, "the idle unload")
    # Whatever the timing, the model never goes within keep_alive of a job's end.
    last_end_before = max(t for t in h.engine.generation_ends if t <= h.engine.unload_times[0])
    assert h.engine.unload_times[0] - last_end_before >= keep - 0.01


def test_keep_alive_never_unloads_when_negative(make: Make) -> None:
    h = make(settings=Settings(keep_alive_s=-1))
    h.run(tr(origin="trigger"))
    ended = h.engine.generation_ends[0]
    wait_for(lambda: time.monotonic() - ended > 0.3, "a short idle period")
    assert h.engine.unloads == 0
    assert h.service.status()["loaded"] is True
    h.run(tr(origin="trigger"))
    assert len(h.engine.loads) == 1


def test_idle_loop_does_not_spin_after_a_worker_crash(make: Make) -> None:
    h = make(settings=Settings(keep_alive_s=0.05))
    h.engine.then(WorkerCrashed(CRASH))
    h.hotkey(tr())
    assert h.engine.spec is not None and not h.engine.stats()["loaded"]
    wait_for(lambda: time.monotonic() - h.engine.generation_ends[0] > 0.2, "keep_alive to pass")
    reads = h.engine.loaded_reads
    time.sleep(0.5)
    assert h.engine.loaded_reads - reads <= 2, "the idle loop polls an engine that is not loaded"


def test_free_vram_unloads_now(h: Harness) -> None:
    h.run(tr(origin="trigger"))
    wait_for(lambda: h.states[-1] == "idle", "the idle state")
    told: list[bool] = []
    h.service.listeners.append(lambda s: told.append(s.engine.stats()["loaded"]))
    h.service.free_vram()
    assert h.engine.unloads == 1
    assert told == [False]  # listeners told at once
    assert h.run(tr(origin="trigger")).text == "A cat sits."
    assert len(h.engine.loads) == 2


# --- loading models ----------------------------------------------------------


def test_preload_loads_the_default_model() -> None:
    engine = FakeEngine()
    config = Config()
    service = Service(FakeDesktop(), lambda _spec: engine, config_loader=lambda: config)
    service.load()
    service.start()  # preload=True
    try:
        wait_for(lambda: len(engine.loads) == 1, "the preload")
        assert engine.loads[0].name == "m"
        wait_for(lambda: service.state == "idle", "the idle state")
    finally:
        service.stop()
    assert engine.unloads == 1  # stop gives the memory back


def test_switch_model_loads_the_chosen_model(h: Harness) -> None:
    h.service.switch_model("n")
    wait_for(lambda: len(h.engine.loads) == 1, "the switch")
    assert h.engine.loads[0].name == "n"
    assert h.service.model_name == "n"
    wait_for(lambda: h.service.state == "idle", "the idle state")
    assert h.service.status()["model"] == "n"
    assert "loading" in h.states
    assert h.run(tr(origin="trigger")).model == "n"
    assert len(h.engine.loads) == 1  # already resident


def test_switch_to_a_broken_model_notifies(h: Harness) -> None:
    h.service.switch_model("bad")
    wait_for(lambda: bool(h.io.notes), "the notification")
    ((title, body),) = h.io.notes
    assert title == "Model not loaded"
    assert "not a GGUF file" in body
    assert h.service.last_error == body
    wait_for(lambda: h.service.state == "error", "the error state")


def test_unexpected_exception_while_loading_does_not_kill_the_loop(h: Harness) -> None:
    h.engine.load_errors.append(RuntimeError("driver exploded"))
    h.service.switch_model("n")
    job = tr(origin="trigger", future=Future())
    assert h.service.submit(job)
    assert job.future is not None
    assert job.future.result(timeout=2).text == "A cat sits."


# --- reload --------------------------------------------------------------------


def test_reload_failure_keeps_the_previous_config(make: Make) -> None:
    good = Config(settings=Settings(queue_size=3),
                  bindings=(Binding(hotkey=CHORD, action="translate_en"),))  # fmt: skip
    current: list[Callable[[], Config]] = [lambda: good]
    h = make(loader=lambda: current[0]())
    assert h.service.config is good

    def broken() -> Config:
        raise ConfigError("hotkeys.toml, line 3: queue_size must be at least 1.")

    current[0] = broken
    message = h.service.reload()
    assert message == "hotkeys.toml, line 3: queue_size must be at least 1."
    assert h.service.config is good
    assert h.service.settings.queue_size == 3
    assert h.service.last_error == message
    ((title, body),) = h.io.notes
    assert title == "Config not reloaded"
    assert message in body
    assert "previous settings stay" in body
    status = h.service.status()
    assert status["last_error"] == message
    assert status["state"] == "error"
    assert status["bindings"] == 1
    # The daemon keeps working with the old config.
    h.hotkey(tr())
    assert h.io.notes[-1] == ("Translate to a prompt — copied", "A cat sits.")


def test_reload_refuses_a_config_that_fails_validation(make: Make) -> None:
    good = Config()
    bad = Config(bindings=(Binding(hotkey="<alt>+<shift>+<cmd>+s", action="summarise", where="f"),))
    current = [good]
    h = make(loader=lambda: current[0])
    current[0] = bad
    message = h.service.reload()
    assert message is not None
    assert "unknown action 'summarise'" in message
    assert h.service.config is good
    assert h.io.notes[0][0] == "Config not reloaded"


def test_good_reload_applies_and_clears_the_error(make: Make) -> None:
    first = Config(settings=Settings(notify_chars=10))
    second = Config(settings=Settings(notify_chars=50),
                    bindings=(Binding(hotkey=CHORD, action="variations"),))  # fmt: skip
    current: list[Callable[[], Config]] = [lambda: first]
    h = make(loader=lambda: current[0]())

    def broken() -> Config:
        raise ConfigError("hotkeys.toml: broken.")

    current[0] = broken
    assert h.service.reload() is not None
    assert h.service.last_error is not None
    calls = len(h.states)
    current[0] = lambda: second
    assert h.service.reload() is None
    assert h.service.last_error is None
    assert h.service.config is second
    assert h.service.status()["bindings"] == 1
    assert h.service.status()["last_error"] is None
    assert len(h.states) > calls  # listeners told
    assert [n for n in h.io.notes if n[0] == "Config not reloaded"] == [
        ("Config not reloaded", "hotkeys.toml: broken. The previous settings stay in use.")
    ]
    h.engine.default_text = "x" * 40
    h.hotkey(tr())
    assert h.io.notes[-1] == (
        "Translate to a prompt — copied",
        "x" * 40,
    )  # the new notify_chars is in use


def test_good_reload_after_a_failed_one_leaves_the_error_state(make: Make) -> None:
    good = Config()
    current: list[Callable[[], Config]] = [lambda: good]
    h = make(loader=lambda: current[0]())

    def broken() -> Config:
        raise ConfigError("hotkeys.toml: broken.")

    current[0] = broken
    h.service.reload()
    assert h.service.state == "error"
    current[0] = lambda: good
    assert h.service.reload() is None
    assert h.service.status()["state"] == "idle"


# --- status and listeners ------------------------------------------------------


STATUS_KEYS = {"state", "model", "loaded", "engines", "queue", "queue_size", "paused",
               "last_error", "bindings", "uptime_s"}  # fmt: skip


def test_status_when_idle(make: Make) -> None:
    bindings = (
        Binding(hotkey="<alt>+<shift>+<cmd>+t", action="translate_en"),
        Binding(hotkey="<alt>+<shift>+<cmd>+v", action="variations"),
    )
    h = make(settings=Settings(queue_size=7), bindings=bindings)
    status = h.service.status()
    assert set(status) >= STATUS_KEYS
    assert status["state"] == "idle"
    assert status["model"] == "m"  # nothing loaded: the configured default
    assert status["loaded"] is False
    assert status["engines"] == []  # none made before the first job
    assert status["queue"] == 0
    assert status["queue_size"] == 7
    assert status["paused"] is False
    assert status["last_error"] is None
    assert status["bindings"] == 2
    assert isinstance(status["uptime_s"], float)
    assert status["uptime_s"] >= 0


def test_status_while_busy_and_after(h: Harness) -> None:
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    assert h.service.status()["queue"] == 0  # running, nothing waiting
    assert h.service.submit(tr())
    busy = h.service.status()
    assert busy["state"] == "busy"
    assert busy["queue"] == 1
    assert busy["loaded"] is True
    assert [e["pid"] for e in busy["engines"]] == [4242]
    h.engine.release()
    h.settle()
    done = h.service.status()
    assert done["state"] == "idle"
    assert done["queue"] == 0
    assert done["model"] == "m"
    h.service.paused = True
    assert h.service.status()["paused"] is True


def test_listeners_follow_the_state(h: Harness) -> None:
    h.run(tr(origin="trigger"))
    h.settle()
    wait_for(lambda: bool(h.states) and h.states[-1] == "idle", "the idle state")
    states = [s for i, s in enumerate(h.states) if i == 0 or s != h.states[i - 1]]
    assert "loading" in states
    assert "busy" in states
    assert states.index("loading") < states.index("busy")
    assert states[-1] == "idle"


def test_listeners_hear_errors(h: Harness) -> None:
    h.io.clipboard = ""
    h.hotkey(tr())
    wait_for(lambda: "error" in h.states, "listeners to hear the error")
    assert h.states[-1] == "error"


def test_listener_that_raises_does_not_break_the_loop(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    h = make()
    calls: list[str] = []

    def bad(service: Service) -> None:
        calls.append(service.state)
        raise ValueError("tray went away")

    h.service.listeners.insert(0, bad)
    result = h.run(tr(origin="trigger"))
    assert result.text == "A cat sits."
    assert calls, "the bad listener was called"
    h.settle()
    assert "busy" in h.states  # the listener after the bad one still heard everything
    assert "state listener failed" in caplog.text
    h.hotkey(tr())
    assert h.io.notes[-1] == ("Translate to a prompt — copied", "A cat sits.")


# --- history -------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    store = History(tmp_path / "data" / "history.sqlite3")
    yield store
    store.close()


def test_history_gets_an_entry_per_successful_job(make: Make, history: History) -> None:
    h = make(history=history)
    long_input = "長" * (EXCERPT_CHARS + 50)
    h.io.clipboard = long_input
    h.engine.then("first result", "second result")
    h.hotkey(tr())
    h.io.selection = "選択"
    h.hotkey(tr(source="selection"))
    second, first = history.recent()
    assert first.action == "translate_en"
    assert first.source == "clipboard"
    assert first.input_excerpt == long_input[:EXCERPT_CHARS]
    assert first.output == "first result"
    assert first.model == "m"
    assert first.timings["completion_tokens"] == 2  # the fake counts words: "first result"
    assert second.source == "selection"
    assert second.input_excerpt == "選択"
    assert second.output == "second result"


def test_history_skips_failed_and_cancelled_jobs(make: Make, history: History) -> None:
    h = make(history=history)
    h.engine.then(EngineError("no"), Generation(text="x", finish_reason="cancelled"))
    h.hotkey(tr())
    h.hotkey(tr())
    h.io.clipboard = ""
    h.hotkey(tr())
    assert len(h.engine.calls) == 2
    assert history.recent() == []


def test_history_off_records_nothing(make: Make, history: History) -> None:
    h = make(settings=Settings(history=False), history=history)
    h.hotkey(tr())
    assert h.io.writes == ["A cat sits."]
    assert history.recent() == []


def test_no_history_store_is_fine(h: Harness) -> None:
    assert h.service.history is None
    assert h.run(tr(origin="trigger")).text == "A cat sits."


# --- job_from_binding ----------------------------------------------------------


def test_job_from_binding_copies_the_fields() -> None:
    variables = {"style": "tags", "max_tokens": "80"}
    binding = Binding(hotkey="<alt>+<shift>+<cmd>+p", action="translate_en", source="selection",
                      output=("paste", "clipboard"), vars=variables, model="n",
                      where="hotkeys.toml, line 9")  # fmt: skip
    job = job_from_binding(binding)
    assert job.action == "translate_en"
    assert job.source == "selection"
    assert job.outputs == ("paste", "clipboard")
    assert isinstance(job.outputs, tuple)
    assert job.vars == variables
    assert job.model == "n"
    assert job.chord == "<alt>+<shift>+<cmd>+p"
    assert job.origin == "hotkey"
    assert job.text is None
    assert job.future is None
    job.vars["style"] = "prose"
    assert variables["style"] == "tags"  # a copy: jobs never change the binding


def test_job_from_binding_defaults() -> None:
    job = job_from_binding(Binding(hotkey="<alt>+<shift>+<cmd>+t", action="variations"))
    assert job.source == "clipboard"
    assert job.outputs == ("clipboard", "notify")
    assert job.vars == {}
    assert job.model is None


def test_job_from_binding_runs(h: Harness) -> None:
    binding = Binding(hotkey=CHORD, action="translate_en", output=("paste",),
                      vars={"style": "tags"})  # fmt: skip
    h.hotkey(job_from_binding(binding))
    assert h.io.pastes == [("A cat sits.", CHORD, False)]
    assert "comma-separated tags" in h.engine.calls[0][0][0]["content"]


# --- stop ------------------------------------------------------------------------


def _action_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "yomitori-actions" and t.is_alive()]


def test_stop_ends_the_loop_and_unloads(make: Make) -> None:
    h = make()
    assert len(_action_threads()) == 1
    h.run(tr(origin="trigger"))
    h.service.stop()
    assert _action_threads() == []
    assert h.engine.unloads == 1
    assert h.service.status()["loaded"] is False


def test_a_clipboard_that_fails_loses_no_result(make: Make, tmp_path) -> None:
    class NoClipboard(FakeDesktop):
        def write_clipboard(self, text: str) -> None:
            raise UserInputError("No clipboard tool was found: install xclip.")

    history = History(tmp_path / "h.sqlite3")
    h = make(io=NoClipboard(), history=history)
    result = h.run(tr(origin="trigger"))
    assert result.text == "A cat sits."
    assert (
        "Translate to a prompt: result not delivered",
        "No clipboard tool was found: install xclip.",
    ) in h.io.notes
    assert history.recent(1)[0].output == "A cat sits."
    history.close()


def test_reload_reports_broken_templates_and_bad_choices_together(
    make: Make, tmp_path: Path
) -> None:
    """Seen: reload said "Config reloaded" while template files were broken and a
    binding had an invalid vars choice.  Every problem is named; nothing changes."""
    good = Config(bindings=(Binding(hotkey="<ctrl>+<alt>+t", action="translate_en"),))
    current = [good]
    h = make(loader=lambda: current[0])
    folder = platform.config_dir() / "prompts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.toml").write_text('kind = "text"\nuser = "$input"\nbogus = 1\n', "utf-8")
    (folder / "other.toml").write_text("this is = = not toml\n", "utf-8")
    choice = Binding(hotkey="<ctrl>+<alt>+v", action="translate_en", source="selection",
                     vars={"style": "haiku", "max_tokens": "many"}, where="u.toml, line 9",
                     var_lines={"style": "u.toml, line 12",
                                "max_tokens": "u.toml, line 13"})  # fmt: skip
    current[0] = Config(bindings=(choice,))
    try:
        message = h.service.reload()
    finally:
        for name in ("mine.toml", "other.toml"):
            (folder / name).unlink()
    assert message is not None
    assert message.startswith("4 problems:\n")
    lines = message.splitlines()[1:]
    assert any(str(folder / "mine.toml") in line and "bogus" in line for line in lines)
    assert any(str(folder / "other.toml") in line and "invalid TOML" in line for line in lines)
    assert "u.toml, line 12: Template 'translate_en': style must be one of prose, tags, " in (
        message
    )
    assert any(line.startswith("u.toml, line 13:") and "max_tokens" in line for line in lines)
    # The last good state is kept, and said to be.
    assert h.service.config is good
    assert h.service.status()["state"] == "error"
    assert h.io.notes[-1][0] == "Config not reloaded"
    # Once fixed, reload takes it.
    current[0] = Config(bindings=(replace(choice, vars={"style": "tags"}),))
    assert h.service.reload() is None
    assert h.service.config.bindings[0].vars == {"style": "tags"}


def test_start_uses_what_loads_and_returns_the_problems(make: Make) -> None:
    ok = Binding(hotkey="<ctrl>+<alt>+t", action="translate_en")
    bad = Binding(hotkey="<ctrl>+<alt>+s", action="summarise", where="f, line 3")
    h = make(bindings=(ok,))
    service = Service(FakeDesktop(), lambda _spec: h.engine,
                      config_loader=lambda: Config(bindings=(ok, bad)))  # fmt: skip
    problems = service.load(strict=False)
    assert problems == ["f, line 3: unknown action 'summarise'."]
    assert service.config.bindings == (ok,)
    with pytest.raises(ConfigError, match="unknown action 'summarise'"):
        service.load()


# --- capture first, then queue (issue: the overlay showed 13.5 s late) ----------------


class DraggingDesktop(FakeDesktop):
    """A region overlay the user is still dragging on until ``drag.set()``."""

    def __init__(self) -> None:
        super().__init__()
        self.region = png(120, 40)
        self.drag = threading.Event()
        self.open = threading.Event()

    def capture_region(self, repeat: bool = False) -> bytes:
        self.open.set()
        assert self.drag.wait(TIMEOUT), "the test never let go of the mouse"
        return super().capture_region(repeat)


def region_job(**kwargs: Any) -> Job:
    return Job(action="ocr_translate", source="region", chord="<ctrl>+<alt>+j", **kwargs)


def test_a_region_is_taken_at_once_while_another_job_runs(make: Make) -> None:
    io = DraggingDesktop()
    h = make(io=io)
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the first job to start generating")
    assert h.service.submit(region_job())
    # The overlay opens now, not when the running generation is done.
    assert io.open.wait(TIMEOUT), "the overlay waited for the running job"
    status = h.service.status()
    assert (status["running"], status["capturing"], status["waiting"]) == (
        "translate_en", "ocr_translate", [])  # fmt: skip
    io.drag.set()  # mouse up
    wait_for(lambda: h.service.status()["waiting"] == ["ocr_translate"], "the job to wait")
    assert h.service.status()["capturing"] is None
    # The user is told it waits, and for what.
    title, body = io.notes[-1]
    assert title == "Screen text to a prompt"
    assert body == "Queued: it starts when “Translate to a prompt” is done."
    queued_tag = io.tags[-1]
    h.engine.release()
    h.settle()
    # The result replaces the "queued" note (same tag), under the action's title.
    assert io.notes[-1] == ("Screen text to a prompt — copied", "A cat sits.")
    assert io.tags[-1] == queued_tag
    assert h.service.status()["running"] is None


def test_a_burst_of_queued_presses_is_said_once(make: Make) -> None:
    h = make(settings=Settings(queue_size=4))
    h.engine.block()
    assert h.service.submit(tr())
    wait_for(lambda: h.engine.entered == 1, "the first job to start")
    for _ in range(3):
        assert h.service.submit(tr())
    wait_for(lambda: len(h.service.status()["waiting"]) == 3, "three jobs to wait")
    assert [body for _, body in h.io.notes if body.startswith("Queued")] == [
        "Queued: it starts when “Translate to a prompt” is done."
    ]
    h.engine.release()
    h.settle()


def test_the_model_loads_while_the_user_selects(make: Make) -> None:
    io = DraggingDesktop()
    h = make(io=io)
    assert h.engine.loads == []  # not preloaded at start in this harness
    assert h.service.submit(region_job())
    assert io.open.wait(TIMEOUT)
    # Hidden behind the drag: by mouse-up the model is resident.
    wait_for(lambda: h.engine.loads != [], "the model to load while the overlay is open")
    io.drag.set()
    h.settle()
    assert [spec.name for spec in h.engine.loads] == ["m"]  # once, not again after
    assert io.notes[-1] == ("Screen text to a prompt — copied", "A cat sits.")


def test_no_preload_jumps_the_queue(make: Make) -> None:
    """With jobs ahead, they load what they need in order: a preload would thrash."""
    io = DraggingDesktop()
    h = make(io=io)
    h.engine.block()
    assert h.service.submit(tr(model="n"))
    wait_for(lambda: h.engine.entered == 1, "the first job to start")
    assert h.service.submit(region_job(model="m"))
    assert io.open.wait(TIMEOUT)
    io.drag.set()
    wait_for(lambda: h.service.status()["waiting"] == ["ocr_translate"], "the job to wait")
    h.engine.release()
    h.settle()
    assert [spec.name for spec in h.engine.loads] == ["n", "m"]


def test_stop_cancels_the_running_job_and_drops_the_waiting_ones(make: Make) -> None:
    """Seen: quit during a generation cancelled nothing and took 12 s."""
    h = make()
    h.engine.block()
    first, second = tr(origin="trigger", future=Future()), tr(origin="trigger", future=Future())
    assert h.service.submit(first) and h.service.submit(second)
    wait_for(lambda: h.engine.entered == 1, "the first job to start")
    assert h.service.stop() == "translate_en"
    assert h.engine.cancels >= 1
    assert first.future is not None and second.future is not None
    assert isinstance(first.future.exception(timeout=TIMEOUT), Cancelled)
    assert isinstance(second.future.exception(timeout=TIMEOUT), Cancelled)
    assert h.engine.entered == 1  # the waiting one never ran
    assert h.engine.unloads >= 1
    assert not h.service.submit(tr())  # a stopping service takes nothing new
    assert h.service.status()["queue"] == 0


# --- the result window -----------------------------------------------------------------


def window_steps(io: FakeDesktop) -> list[tuple[str, str]]:
    return [(m["do"], m.get("text") or m.get("status") or m.get("message") or "")
            for m in io.windows]  # fmt: skip


def test_a_window_job_streams_into_its_window(h: Harness) -> None:
    h.engine.then("A cat sits.")
    h.hotkey(tr(outputs=("window",)))
    assert window_steps(h.io) == [("open", "Working…"), ("text", "A cat sits."),
                                  ("done", "A cat sits.")]  # fmt: skip
    opened, _, done = h.io.windows
    assert opened["title"] == "Translate to a prompt"
    assert opened["source"] == "猫が座っている"  # what it came from
    assert done["tag"] == opened["tag"]
    assert done["status_after"] == "Done: shown."
    assert h.io.notes == [] and h.io.writes == []  # the window alone, as asked


def test_window_buttons_copy_paste_and_retry(h: Harness) -> None:
    h.engine.then("first", "second")
    h.hotkey(tr(outputs=("window",)))
    tag = h.io.windows[0]["tag"]
    h.service.window_event({"ev": "window", "tag": tag, "action": "copy", "text": "2. a fox"})
    assert h.io.writes == ["2. a fox"]
    h.service.window_event({"ev": "window", "tag": tag, "action": "paste", "text": "first"})
    assert h.io.pastes == [("first", None, False)]
    h.service.window_event({"ev": "window", "tag": tag, "action": "retry"})
    h.settle()
    # The same input again, into the same window, without reading the clipboard again.
    assert [m["text"] for m in h.io.windows if m["do"] == "done"] == ["first", "second"]
    assert {m["tag"] for m in h.io.windows} == {tag}
    assert [c for c in h.io.calls if c[0] == "read_clipboard"] == [("read_clipboard",)]
    assert h.engine.calls[0][0] == h.engine.calls[1][0]  # the very same messages


def test_a_window_refused_over_a_fullscreen_game_becomes_a_notification(h: Harness) -> None:
    h.engine.block()
    h.service.submit(tr(outputs=("window",)))
    wait_for(lambda: h.engine.entered == 1, "the job to start")
    tag = h.io.windows[0]["tag"]
    h.service.window_event({"ev": "window", "tag": tag, "action": "refused"})
    h.engine.release()
    h.settle()
    assert h.io.notes == [("Translate to a prompt", "A cat sits.")]


def test_a_failure_is_said_in_the_window(h: Harness) -> None:
    h.engine.then(EngineError("The model ran out of memory."))
    h.hotkey(tr(outputs=("window",)))
    assert window_steps(h.io)[-1] == ("failed", "The model ran out of memory.")
    assert h.io.notes == []


def test_a_region_window_shows_the_picture_then_what_ocr_read(make: Make, tmp_path) -> None:
    history = History(tmp_path / "h.sqlite3")
    h = make(history=history)
    h.io.region = png(120, 40)
    h.hotkey(Job(action="ocr_translate", source="region", outputs=("window", "clipboard")))
    opened = h.io.windows[0]
    assert opened["source"] == "" and opened["image"]  # a thumbnail until OCR has read
    done = next(m for m in h.io.windows if m["do"] == "done")
    assert done["source"] == "夕焼けの海"
    assert done["status_after"] == "Done: copied."
    # History keeps what OCR read as the input (it used to be empty for regions).
    assert history.recent(1)[0].input_excerpt == "夕焼けの海"
    history.close()


# --- the prompt builder in the window ---------------------------------------------------


def test_the_prompt_builder_asks_in_the_window_and_copies_the_final_prompt(
    make: Make, tmp_path: Path
) -> None:
    history = History(tmp_path / "h.sqlite3")
    h = make(history=history)
    h.engine.then("どんな画風にしますか？\n例: 写真 / アニメ / 水彩",
                  "時間帯は？\n例: 朝 / 夕方 / 夜",
                  "A cat on a windowsill at dusk, soft anime style.")  # fmt: skip
    h.io.clipboard = "猫"
    h.hotkey(Job(action="prompt_builder", chord="<f6>"))
    ask = next(m for m in h.io.windows if m["do"] == "ask")
    assert ask["question"] == "どんな画風にしますか？"
    assert ask["choices"] == ["写真", "アニメ", "水彩"]
    tag = ask["tag"]
    # The answer comes from the window; the next question goes back to it.
    h.service.window_event({"ev": "window", "tag": tag, "action": "answer", "text": "アニメ"})
    wait_for(lambda: len([m for m in h.io.windows if m["do"] == "ask"]) == 2, "question 2")
    h.service.window_event({"ev": "window", "tag": tag, "action": "answer", "text": "GO"})
    wait_for(lambda: any(m["do"] == "done" for m in h.io.windows), "the final prompt")
    done = next(m for m in h.io.windows if m["do"] == "done")
    assert done["text"] == "A cat on a windowsill at dusk, soft anime style."
    assert h.io.writes == [done["text"]]  # copied
    # Each turn sent the whole conversation so far: the answers are in the last one.
    last = h.engine.calls[-1][0]
    assert any("アニメ" in str(m["content"]) for m in last if m["role"] == "user")
    wait_for(lambda: history.recent(1) != [], "the history entry")
    assert history.recent(1)[0].output == done["text"]
    assert history.recent(1)[0].input_excerpt == "猫"
    history.close()


def test_closing_the_window_ends_the_conversation(h: Harness) -> None:
    h.engine.then("What style?\nExamples: photo / anime")
    h.hotkey(Job(action="prompt_builder", text="a cat", origin="tray"))
    tag = next(m for m in h.io.windows if m["do"] == "ask")["tag"]
    h.service.window_event({"ev": "window", "tag": tag, "action": "closed"})
    h.service.window_event({"ev": "window", "tag": tag, "action": "answer", "text": "photo"})
    h.settle()
    assert len(h.engine.calls) == 1  # the answer after close went nowhere


def test_the_prompt_start_is_read_while_the_user_selects(make: Make) -> None:
    """ocr_translate: while the user drags, the model loads and reads the fixed start of
    translate_en's prompt, so the request after mouse-up only reads what OCR found."""
    io = DraggingDesktop()
    h = make(io=io)
    assert h.service.submit(region_job())
    assert io.open.wait(TIMEOUT)
    wait_for(lambda: h.engine.entered == 1, "the prompt's start to be read during the drag")
    ((primed, options),) = h.engine.calls
    assert options == {"max_tokens": 1, "temperature": 0.0}
    assert primed[0]["role"] == "system" and "$" not in primed[0]["content"]
    io.drag.set()
    h.settle()
    real = h.engine.calls[1][0]
    assert real[0] == primed[0]  # the same system part: the cache has it
    assert real[-1]["content"].startswith(primed[-1]["content"])  # and the user part's start
    assert "夕焼けの海" in real[-1]["content"]
