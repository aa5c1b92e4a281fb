"""The Windows and macOS code paths, exercised here on Linux.

The named-pipe server and client run over multiprocessing.connection's AF_UNIX
family (the same framing and handshake code as AF_PIPE); msvcrt, pynput, pystray,
PyObjC and ImageGrab are fakes; ``sys.platform`` is patched where code asks it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import platform
from daemon.desktop import ipc, ipc_pipe
from daemon.errors import UserInputError, YomitoriError

# -- the Windows pipe: server and client ----------------------------------------------


class PipeDaemon:
    """A PipeServer on a Unix-socket address, and a client for it."""

    def __init__(self, folder: Path, handler: ipc.Handler) -> None:
        self.address = str(folder / "pipe")
        self.key_path = folder / "daemon.key"
        self.server = ipc_pipe.PipeServer(handler, self.address, self.key_path, family="AF_UNIX")

    def request(self, message: dict[str, Any], timeout: float | None = 10.0,
                key_path: Path | None = None) -> dict[str, Any]:  # fmt: skip
        return ipc_pipe.pipe_request(message, timeout, self.address, key_path or self.key_path,
                                family="AF_UNIX")  # fmt: skip


def _echo(request: dict[str, Any]) -> dict[str, Any]:
    if request["cmd"] == "boom":
        raise RuntimeError("handler bug")
    if request["cmd"] == "slow":
        time.sleep(1.0)
    return {"ok": True, "echo": request}


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[PipeDaemon]:
    daemon = PipeDaemon(tmp_path, _echo)
    daemon.server.start()
    yield daemon
    daemon.server.stop()


def test_pipe_round_trip_with_unicode(pipe: PipeDaemon) -> None:
    reply = pipe.request({"cmd": "trigger", "text": '桜の木 "quoted"\n'})
    assert reply == {"ok": True, "echo": {"cmd": "trigger", "text": '桜の木 "quoted"\n'}}


def test_pipe_refuses_a_client_with_the_wrong_key_and_serves_the_next(
    pipe: PipeDaemon, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"x" * 32)
    with pytest.raises(YomitoriError, match="did not accept"):
        pipe.request({"cmd": "ping"}, key_path=wrong)
    assert pipe.request({"cmd": "ping"})["ok"]


def test_a_silent_connection_does_not_hold_up_others(pipe: PipeDaemon) -> None:
    from multiprocessing.connection import Client

    # Connects and never answers the challenge (as a reader-only open of a real pipe
    # would): the accept loop must not wait on it.
    silent = Client(pipe.address, family="AF_UNIX")
    try:
        started = time.monotonic()
        assert pipe.request({"cmd": "ping"})["ok"]
        assert time.monotonic() - started < 2
    finally:
        silent.close()


def test_pipe_refuses_malformed_and_oversized_requests(pipe: PipeDaemon) -> None:
    from multiprocessing.connection import Client

    def raw(payload: bytes) -> dict[str, Any]:
        import json

        with Client(pipe.address, family="AF_UNIX") as conn:
            ipc_pipe._client_handshake(conn, pipe.key_path.read_bytes())
            # An oversized one is refused from its length: the server answers and hangs
            # up before the rest is sent.
            with contextlib.suppress(BrokenPipeError):
                conn.send_bytes(payload)
            return json.loads(conn.recv_bytes())

    for payload in (b"not json", b'{"no": "cmd"}', b"[1, 2]"):
        reply = raw(payload)
        assert reply["ok"] is False and "Malformed request" in reply["error"]
    reply = raw(b'{"cmd": "x", "text": "' + b"y" * (ipc.MAX_REQUEST + 10) + b'"}')
    assert reply["ok"] is False and "larger than" in reply["error"]
    assert pipe.request({"cmd": "ping"})["ok"]  # and the server carries on


def test_pipe_handler_failure_is_an_error_reply(pipe: PipeDaemon) -> None:
    reply = pipe.request({"cmd": "boom"})
    assert reply == {"ok": False, "error": "Internal error (RuntimeError); details are in the log."}


def test_pipe_client_gives_up_after_its_timeout(pipe: PipeDaemon) -> None:
    with pytest.raises(YomitoriError, match="did not answer in time"):
        pipe.request({"cmd": "slow"}, timeout=0.2)


def test_pipe_client_says_not_running(tmp_path: Path) -> None:
    daemon = PipeDaemon(tmp_path, _echo)
    with pytest.raises(ipc.DaemonNotRunning) as no_key:
        daemon.request({"cmd": "ping"})
    assert no_key.value.exit_code == 3
    daemon.key_path.write_bytes(b"k" * 32)  # a crashed daemon's key, no pipe
    with pytest.raises(ipc.DaemonNotRunning):
        daemon.request({"cmd": "ping"})


def test_pipe_client_will_not_talk_to_an_impostor(tmp_path: Path) -> None:
    from multiprocessing.connection import Listener

    daemon = PipeDaemon(tmp_path, _echo)
    daemon.key_path.write_bytes(b"k" * 32)
    with Listener(daemon.address, family="AF_UNIX") as listener:

        def squat() -> None:
            with listener.accept() as conn:
                conn.send_bytes(ipc_pipe._HELLO + b"n" * ipc_pipe._NONCE)
                conn.recv_bytes()
                conn.send_bytes(b"\0" * 32)  # cannot prove it knows the key
                with contextlib.suppress(EOFError, OSError):
                    conn.recv_bytes()

        thread = threading.Thread(target=squat, daemon=True)
        thread.start()
        with pytest.raises(YomitoriError, match="Something other than yomitori"):
            daemon.request({"cmd": "trigger", "text": "secret"})
        thread.join(5)


def test_pipe_server_stop_ends_the_accept_loop(tmp_path: Path) -> None:
    daemon = PipeDaemon(tmp_path, _echo)
    daemon.server.start()
    assert daemon.key_path.read_bytes()
    daemon.server.stop()
    assert daemon.server.accept_thread is not None
    daemon.server.accept_thread.join(5)
    assert not daemon.server.accept_thread.is_alive()
    assert not daemon.key_path.exists()


def test_pipe_address_is_per_runtime_folder(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setenv("USERNAME", r"DOMAIN\me")
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path / "a"))
    first, key = ipc_pipe._pipe_address()
    assert ipc_pipe._pipe_address()[0] == first
    assert first.startswith("\\\\.\\pipe\\yomitori-DOMAINme-")
    assert "\\" not in first[len("\\\\.\\pipe\\") :]
    assert key == tmp_path / "a" / "daemon.key"
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path / "b"))
    assert ipc_pipe._pipe_address()[0] != first


def test_on_windows_the_cli_says_not_running_with_exit_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon import cli

    monkeypatch.setattr(platform, "is_windows", lambda: True)
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path))
    assert isinstance(ipc.make_server(_echo), ipc_pipe.PipeServer)
    assert cli.main(["status"]) == 3
    assert "not running" in capsys.readouterr().err


# -- the Unix socket client ------------------------------------------------------------


def test_socket_client_stale_socket_is_not_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(ipc.socket_path()))
    stale.close()  # the file stays, nobody listens
    with pytest.raises(ipc.DaemonNotRunning):
        ipc.request({"cmd": "status"})


def test_socket_client_times_out_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path))
    with socket.socket(socket.AF_UNIX) as mute:
        mute.bind(str(ipc.socket_path()))
        mute.listen(1)
        with pytest.raises(YomitoriError, match="did not answer in time"):
            ipc.request({"cmd": "status"}, timeout=0.2)


# -- the instance lock -------------------------------------------------------------------


class FakeMsvcrt(types.ModuleType):
    """msvcrt.locking: mandatory byte-range locks, from the fd's current position."""

    LK_UNLCK, LK_LOCK, LK_NBLCK = 0, 1, 2

    def __init__(self) -> None:
        super().__init__("msvcrt")
        self.held: dict[tuple[int, int], int] = {}
        self.calls: list[tuple[int, int]] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1
        where = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        self.calls.append((mode, where[1]))
        if mode == self.LK_NBLCK:
            if where in self.held:
                raise PermissionError(13, "Permission denied")
            self.held[where] = fd
        elif mode == self.LK_UNLCK:
            if self.held.get(where) != fd:
                raise PermissionError(13, "Permission denied")
            del self.held[where]


def test_instance_lock_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeMsvcrt()
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(platform, "is_windows", lambda: True)
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "daemon.lock").write_text("99999999999")  # left by a crash
    first, second = ipc.InstanceLock(), ipc.InstanceLock()
    assert first.acquire()
    assert fake.calls == [(fake.LK_NBLCK, ipc.LOCK_OFFSET)]  # far from the pid text
    assert not second.acquire()
    assert second.holder_pid() == os.getpid()
    first.release()
    assert (fake.LK_UNLCK, ipc.LOCK_OFFSET) in fake.calls and not fake.held
    assert second.acquire()
    second.release()


def test_instance_lock_on_posix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YOMITORI_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "daemon.lock").write_text("1234567890123")  # longer than any pid
    first, second = ipc.InstanceLock(), ipc.InstanceLock()
    assert first.acquire()
    assert not second.acquire()
    assert second.holder_pid() == os.getpid()
    first.release()
    assert second.acquire()
    second.release()


# -- keys and hotkeys: pynput fakes -----------------------------------------------------


class FakeKeyCode:
    def __init__(self, vk: int | None = None, char: str | None = None) -> None:
        self.vk, self.char = vk, char

    @classmethod
    def from_vk(cls, vk: int) -> FakeKeyCode:
        return cls(vk=vk)


class FakeListener:
    def __init__(self, trusted: bool = True, **_kwargs: Any) -> None:
        self.IS_TRUSTED = trusted
        self.stopped = False
        self.daemon = False

    def start(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


class FakeController:
    def __init__(self, mapping: dict[str, int] | None = None) -> None:
        self._mapping = mapping or {}
        self.events: list[Any] = []

    @contextlib.contextmanager
    def pressed(self, key: Any) -> Iterator[None]:
        self.events.append(("down", key))
        yield
        self.events.append(("up", key))

    def tap(self, key: Any) -> None:
        self.events.append(("tap", key))


def _keyboard(controller: FakeController, listener: FakeListener) -> Any:
    from daemon.desktop.keys import Keyboard

    kb = Keyboard.__new__(Keyboard)
    kb._kb = types.SimpleNamespace(KeyCode=FakeKeyCode)
    kb._controller = controller
    kb._listener = listener
    kb._held = set()
    kb._lock = threading.Lock()
    kb.shortcut_key = "ctrl"
    return kb


def test_copy_and_paste_keys_do_not_depend_on_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    key = _keyboard(FakeController(), FakeListener()).letter_key("c")
    assert key.vk == 0x43  # VK_C: Ctrl+C under a Russian layout too
    monkeypatch.setattr(sys, "platform", "darwin")
    russian = _keyboard(FakeController({"с": 8}), FakeListener())  # Cyrillic es
    assert russian.letter_key("v").vk == 0x09  # kVK_ANSI_V
    dvorak = _keyboard(FakeController({"c": 34}), FakeListener())
    assert dvorak.letter_key("c") == "c"  # the layout has a "c": pynput finds its key
    monkeypatch.setattr(sys, "platform", "linux")
    assert _keyboard(FakeController(), FakeListener()).letter_key("c") == "c"


def test_macos_without_accessibility_says_what_to_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    controller = FakeController({"c": 8})
    kb = _keyboard(controller, FakeListener(trusted=False))
    with pytest.raises(UserInputError, match="Accessibility"):
        kb.shortcut("c")
    assert controller.events == []
    trusted = _keyboard(controller, FakeListener(trusted=True))
    trusted.shortcut_key = "cmd"
    trusted.shortcut("c")
    assert controller.events == [("down", "cmd"), ("tap", "c"), ("up", "cmd")]


def test_a_release_never_seen_stops_delaying_after_one_timeout() -> None:
    kb = _keyboard(FakeController(), FakeListener())
    kb._held.add("ctrl_l")  # its release went to the lock screen
    assert kb.wait_released(timeout=0.05) is False
    assert kb.wait_released(timeout=0.05) is True


# -- the tray: Windows balloons, macOS main thread ----------------------------------------


def test_fit_utf16_counts_code_units() -> None:
    from daemon.desktop.tray import fit_utf16

    assert fit_utf16("short", 10) == "short"
    assert fit_utf16("x" * 10, 10) == "x" * 10
    cut = fit_utf16("桜" * 300, 255)
    assert cut.endswith("…") and len(cut.encode("utf-16-le")) // 2 <= 255
    emoji = fit_utf16("😀" * 40, 63)  # two units each
    assert len(emoji.encode("utf-16-le")) // 2 <= 63 and emoji.endswith("…")


class FakeIcon:
    HAS_NOTIFICATION = True
    HAS_MENU = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.icon: Any = None
        self.title = ""

    def notify(self, message: str, title: str) -> None:
        # pystray's Windows backend: NOTIFYICONDATAW's WCHAR[256] and WCHAR[64].
        if platform.is_windows():
            import ctypes

            ctypes.create_unicode_buffer(256).value = message
            ctypes.create_unicode_buffer(64).value = title
        self.sent.append((title, message))

    def update_menu(self) -> None:
        pass


def _tray() -> Any:
    from daemon.desktop.tray import Tray

    tray = Tray.__new__(Tray)
    tray.icon = FakeIcon()
    return tray


def test_windows_balloon_text_is_cut_to_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "is_windows", lambda: True)
    tray = _tray()
    notifier = tray.notifier()
    notifier.notify("ocr_translate: " + "t" * 80, "本文" * 400)
    title, body = tray.icon.sent[0]
    assert len(title) <= 63 and len(body) <= 255


def test_macos_tray_leaves_notifications_to_osascript_and_updates_on_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    tray = _tray()
    assert not tray.notifier().is_available()
    queued: list[Any] = []
    helper = types.ModuleType("PyObjCTools.AppHelper")
    helper.callAfter = lambda func, *args: queued.append((func, args))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "PyObjCTools", types.ModuleType("PyObjCTools"))
    monkeypatch.setitem(sys.modules, "PyObjCTools.AppHelper", helper)
    service = types.SimpleNamespace(state="busy", resident=dict)
    tray._changed(service)
    assert tray.icon.icon is None  # not touched from this thread
    func, args = queued[0]
    func(*args)
    assert tray.icon.title == "yomitori: busy" and tray.icon.icon is not None


def test_osascript_gets_user_text_as_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.sinks import notify

    runs: list[list[str]] = []
    monkeypatch.setattr(notify.subprocess, "run", lambda args, **_kw: runs.append(args))
    text = 'say "hi" \\ then\nend run\ndo shell script "rm -rf ~"'
    notify.OsascriptNotifier().notify('title "q"', text)
    args = runs[0]
    assert args[0] == "osascript" and args[-2:] == ['title "q"', text]
    assert text not in args[2] and "argv" in args[2]


# -- the clipboard ------------------------------------------------------------------------


def _png(path: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (20, 10), "white").save(path, format="PNG")
    return path.read_bytes()


def test_copied_files_only_images_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from PIL import ImageGrab

    from daemon.sources import clipboard

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    folder = tmp_path / "folder"
    folder.mkdir()
    png = _png(tmp_path / "shot.png")
    listed: list[str] = [
        str(text),
        str(folder),
        str(tmp_path / "gone.png"),
        str(tmp_path / "shot.png"),
    ]
    monkeypatch.setattr(ImageGrab, "grabclipboard", lambda: listed)
    assert clipboard.read_image() == png
    listed[:] = [str(text), str(folder)]
    assert clipboard.read_image() is None
    monkeypatch.setattr(clipboard, "MAX_IMAGE_FILE", 10)  # a copied video is not read whole
    assert clipboard.image_file(str(tmp_path / "shot.png")) is None


def test_macos_finder_file_wins_over_its_icon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from PIL import Image, ImageGrab

    from daemon.sources import clipboard

    png = _png(tmp_path / "photo.png")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(clipboard, "_mac_clipboard_file", lambda: str(tmp_path / "photo.png"))
    monkeypatch.setattr(ImageGrab, "grabclipboard", lambda: Image.new("RGB", (32, 32), "blue"))
    assert clipboard.read_image() == png
    monkeypatch.setattr(clipboard, "_mac_clipboard_file", lambda: None)
    assert clipboard.read_image().startswith(b"\x89PNG")  # a copied picture, not a file


def test_clipboard_errors_name_the_cause_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyperclip

    from daemon.sources import clipboard

    def busy() -> str:
        # Its __init__ asks ctypes.WinError(), which exists on Windows only.
        error = pyperclip.PyperclipWindowsException.__new__(pyperclip.PyperclipWindowsException)
        RuntimeError.__init__(error, "Error calling OpenClipboard")
        raise error

    monkeypatch.setattr(pyperclip, "paste", busy)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(UserInputError, match="try again"):
        clipboard.read_text()
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(UserInputError, match="xclip"):
        clipboard.read_text()


# -- signals, console output, exit codes ---------------------------------------------------


def test_windows_stops_on_ctrl_break(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.desktop.app import stop_signals

    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)
    monkeypatch.setattr(platform, "is_windows", lambda: True)
    assert stop_signals() == [signal.SIGTERM, signal.SIGINT, 21]
    monkeypatch.setattr(platform, "is_windows", lambda: False)
    assert stop_signals() == [signal.SIGTERM, signal.SIGINT]


def test_windows_redirected_output_is_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.cli import utf8_output

    raw = io.BytesIO()
    ansi = io.TextIOWrapper(raw, encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", ansi)
    monkeypatch.setattr(sys, "platform", "win32")
    utf8_output()
    print("桜の木")
    ansi.flush()
    assert raw.getvalue().decode("utf-8").strip() == "桜の木"


def test_windows_crash_codes_read_as_ntstatus() -> None:
    from daemon.engine.client import describe_exit

    assert describe_exit(0xC0000005) == "exit code 0xC0000005"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-11) == "signal SIGSEGV"


def test_capture_on_macos_runs_tk_on_the_main_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.desktop import capture

    seen: dict[str, Any] = {}

    class FakeSelector:
        def __init__(self, own_thread: bool = True) -> None:
            seen["own_thread"] = own_thread
            self._quit = threading.Event()

        def wait_ready(self) -> None:
            pass

        def run_here(self) -> None:
            seen["tk_thread"] = threading.current_thread()
            assert self._quit.wait(5)

        def select(self, shot: Any, timeout: float | None = None) -> str:
            seen["select_thread"] = threading.current_thread()
            return "region"

        def close(self) -> None:
            self._quit.set()

    monkeypatch.setattr(capture, "RegionSelector", FakeSelector)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert capture._select(object(), None) == "region"
    assert seen["own_thread"] is False
    assert seen["tk_thread"] is threading.main_thread()
    assert seen["select_thread"] is not threading.main_thread()


def test_a_refused_copy_gives_the_clipboard_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.desktop import app
    from daemon.desktop.keys import MAC_PERMISSION
    from daemon.sinks.notify import NotificationQueue

    board = ["the user's own text"]
    monkeypatch.setattr(app.clipboard, "read_text", lambda: board[0])
    monkeypatch.setattr(app.clipboard, "write_text", lambda text: board.__setitem__(0, text))

    class Refused:
        def shortcut(self, letter: str) -> None:
            raise UserInputError(MAC_PERMISSION)

    notes = NotificationQueue(None)
    bridge = app.DesktopBridge(notes)
    bridge._keyboard = Refused()
    with pytest.raises(UserInputError, match="Accessibility"):
        bridge.copy_selection(None)
    assert board == ["the user's own text"]
    notes.close()
