"""Fuzzing the daemon's IPC: the real servers (the Unix socket, and the Windows pipe
server on its AF_UNIX stand-in) with the daemon's own request handler in front of a
service on a fake desktop and a fake engine.

Random bytes, random and truncated JSON, requests of the wrong shape and types, lines
far beyond the limit, clients that trickle or say nothing, many clients at once.  The
server never fails, every request gets a reply, every refusal is one sentence in the
server's own words (no traceback, no Python repr, no "internal error"), and valid
requests are still served afterwards.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import SOURCES, load_config
from daemon.desktop import ipc, ipc_pipe
from daemon.errors import Cancelled

EXAMPLES = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
HUGE = 8 * 2**20  # far beyond ipc.MAX_REQUEST


class FakeHotkeys:
    def bind(self, chords: Any) -> list[Any]:
        return []

    def unbind(self) -> None:
        pass


class FakeOverlay:
    def interrupt(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Served:
    daemon: Any
    path: Path
    pipe: ipc_pipe.PipeServer


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The daemon's handler on a real UnixServer and a real PipeServer (AF_UNIX)."""
    from fakes import FakeEngine
    from test_service import FakeDesktop, FakeOcr

    from daemon.desktop.app import Daemon
    from daemon.service import Service

    base = Path(tempfile.mkdtemp(prefix="yf-"))  # short: a socket path has a length limit
    (base / "config").mkdir()
    (base / "m.gguf").write_bytes(b"GGUF" + b"\x00" * 28)
    (base / "config" / "models.toml").write_text(
        f'default = "m"\n[models.m]\npath = "{(base / "m.gguf").as_posix()}"\n', encoding="utf-8"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOMITORI_CONFIG_DIR", str(base / "config"))
        patch.delenv("YOMITORI_MODEL", raising=False)
        daemon = Daemon(use_tray=False)
        io = FakeDesktop()
        io.overlay = FakeOverlay()  # type: ignore[attr-defined]
        io.region = Cancelled("Selection cancelled.")  # a region is Esc'd at once
        engine = FakeEngine()
        shipped = [ROOT / "hotkeys.toml"]
        daemon.service = Service(io, lambda _spec: engine, history=None,
                                 config_loader=lambda: load_config(shipped),
                                 ocr={"rapidocr": FakeOcr(), "tesseract": FakeOcr()})  # fmt: skip
        daemon.hotkeys = FakeHotkeys()
        daemon.service.load()
        daemon.service.start(preload=False)
        unix = ipc.UnixServer(daemon.handle, base / "d.sock")
        unix.start()
        pipe = ipc_pipe.PipeServer(daemon.handle, str(base / "p.sock"), base / "daemon.key",
                                   family="AF_UNIX")  # fmt: skip
        pipe.start()
        yield Served(daemon, base / "d.sock", pipe)
        pipe.stop()
        unix.stop()
        daemon.service.stop()


# -- clients ---------------------------------------------------------------------------


def exchange(path: Path, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``, say we are done, and read the reply until the server hangs up."""
    with ipc.connect(path, timeout) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        return _read_all(conn)


def _read_all(conn: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def one_reply(raw: bytes) -> dict[str, Any]:
    lines = raw.split(b"\n")
    assert len(lines) == 2 and lines[1] == b"", f"one JSON line expected, got {raw[:200]!r}"
    reply = json.loads(lines[0])
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    return reply


def ping(served: Served, timeout: float = 10.0) -> None:
    """The server still answers a valid request (on the socket and on the pipe)."""
    assert one_reply(exchange(served.path, b'{"cmd": "ping"}\n', timeout)) == {"ok": True}
    reply = ipc_pipe.pipe_request({"cmd": "status"}, timeout, served.pipe.address,
                                  served.pipe.key_path, family="AF_UNIX")  # fmt: skip
    assert reply["ok"] is True and reply["status"]["state"] in ("idle", "busy", "error")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


REPR = re.compile(r"<\w[^>]* at 0x|\b\w+(Error|Exception)\(|\{'|\['|\\x[0-9a-f]{2}")


def assert_sentence(error: Any, request: Any = None) -> None:
    """One sentence in the server's own words: the request's own strings, which a
    message may quote back ('…', as they are or escaped), are blanked out first."""
    assert isinstance(error, str) and error.strip(), error
    own = error
    quoted = {f"'{form}'" for text in _strings(request) for form in (text, repr(text)[1:-1])}
    for text in sorted(quoted, key=len, reverse=True):
        own = own.replace(text, "'X'")
    assert "\n" not in own, error
    assert "Traceback" not in own and "nternal error" not in own, error
    assert not REPR.search(own), error
    assert own.endswith("."), error
    assert not own[0].islower() or own.startswith("yomitori"), error


def assert_answered(reply: dict[str, Any], request: Any = None) -> None:
    if not reply["ok"]:
        assert_sentence(reply.get("error"), request)


# -- what clients send -----------------------------------------------------------------


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _containers,
    max_leaves=10,
)
VARIABLES = st.dictionaries(
    st.sampled_from(("style", "count", "max_tokens", "temperature", "nope")),
    st.text(max_size=6) | JSON,
    max_size=3,
)
COMMANDS = ("ping", "status", "trigger", "reload", "cancel", "free", "quit")
ACTIONS = ("translate_en", "variations", "ocr", "ocr_translate", "caption", "nope", "")
TRIGGER = st.fixed_dictionaries(
    {"cmd": st.just("trigger")},
    optional={
        "action": st.sampled_from(ACTIONS) | JSON,
        "source": st.sampled_from(SOURCES) | JSON,
        "text": st.text(max_size=30) | JSON,
        "output": st.lists(st.sampled_from(("clipboard", "paste", "notify")), max_size=3) | JSON,
        "vars": VARIABLES | JSON,
        "model": st.sampled_from(("m", "nope", "x/none.gguf")) | JSON,
        "wait": st.booleans() | JSON,
        "timeout": st.floats() | st.integers() | JSON,
    },
)
REQUESTS = st.one_of(
    TRIGGER,
    st.fixed_dictionaries({"cmd": st.sampled_from(COMMANDS) | JSON}),
    st.dictionaries(st.text(max_size=8), JSON, max_size=4),
    JSON,
)


def _encoded(request: Any) -> bytes:
    return json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


@EXAMPLES
@given(request=REQUESTS)
def test_requests_of_any_shape_get_a_sentence_and_the_server_serves_on(
    served: Served, request: Any
) -> None:
    reply = one_reply(exchange(served.path, _encoded(request)))
    if not (isinstance(request, dict) and isinstance(request.get("cmd"), str)):
        assert reply["ok"] is False
    assert_answered(reply, request)
    served.daemon.stopping.clear()  # a "quit" only sets the flag a real run waits on
    ping(served)


@EXAMPLES
@given(raw=st.binary(max_size=300), newline=st.booleans())
def test_random_bytes_are_refused_in_a_sentence(served: Served, raw: bytes, newline: bool) -> None:
    payload = raw + (b"\n" if newline else b"")
    reply = one_reply(exchange(served.path, payload))
    assert_answered(reply, _maybe_json(payload))
    served.daemon.stopping.clear()
    ping(served)


@EXAMPLES
@given(request=REQUESTS, data=st.data())
def test_truncated_json_is_refused(served: Served, request: Any, data: st.DataObject) -> None:
    whole = _encoded(request)
    cut = data.draw(st.integers(0, len(whole) - 2))  # never the whole line
    reply = one_reply(exchange(served.path, whole[:cut]))
    assert_answered(reply, _maybe_json(whole[:cut]))
    served.daemon.stopping.clear()
    ping(served)


def _maybe_json(payload: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(payload.split(b"\n", 1)[0])
    return None


@EXAMPLES
@given(request=REQUESTS)
def test_the_pipe_server_answers_the_same(served: Served, request: Any) -> None:
    from multiprocessing.connection import Client

    with Client(served.pipe.address, family="AF_UNIX") as conn:
        ipc_pipe._client_handshake(conn, served.pipe.key_path.read_bytes())
        conn.send_bytes(_encoded(request).rstrip(b"\n"))
        reply = json.loads(conn.recv_bytes())
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
    assert_answered(reply, request)
    served.daemon.stopping.clear()
    ping(served)


# -- lines far beyond the limit --------------------------------------------------------


def _send_in_background(send: Any) -> tuple[threading.Thread, dict[str, BaseException | None]]:
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            send()
        except OSError as err:  # the server hung up: what a capped reader does
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("line", [b"x" * HUGE, b'{"cmd": "ping", "pad": "' + b"y" * HUGE + b'"}\n',
                                  b"[" * HUGE])  # fmt: skip
def test_a_huge_line_is_refused_without_reading_it_all(served: Served, line: bytes) -> None:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(20)
        conn.connect(str(served.path))
        sender, outcome = _send_in_background(lambda: conn.sendall(line))
        reply = one_reply(_read_all(conn))
        sender.join(20)
    assert reply["ok"] is False and f"{ipc.MAX_REQUEST}" in reply["error"]
    assert_sentence(reply["error"])
    # The server stopped reading at its limit and hung up: the rest could not be sent.
    assert isinstance(outcome["error"], OSError)
    ping(served)


@pytest.mark.parametrize("stage", ["handshake", "request"])
def test_a_huge_pipe_message_is_refused_without_reading_it_all(served: Served, stage: str) -> None:
    from multiprocessing.connection import Client

    conn = Client(served.pipe.address, family="AF_UNIX")
    try:
        if stage == "handshake":
            conn.recv_bytes()  # the challenge; the answer is megabytes instead of 64 bytes
        else:
            ipc_pipe._client_handshake(conn, served.pipe.key_path.read_bytes())
        sender, outcome = _send_in_background(lambda: conn.send_bytes(b"z" * HUGE))
        sender.join(20)
        assert isinstance(outcome["error"], OSError), "the server read it all"
        if stage == "request":
            reply = json.loads(conn.recv_bytes())
            assert reply["ok"] is False and f"{ipc.MAX_REQUEST}" in reply["error"]
            assert_sentence(reply["error"])
    finally:
        conn.close()
    ping(served)


# -- slow clients and many clients -----------------------------------------------------


def test_silent_connections_do_not_hold_up_others(served: Served) -> None:
    silent = []
    try:
        for _ in range(40):  # more than the listen backlog
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(str(served.path))
            silent.append(conn)
        # Each silent one is given READ_TIMEOUT_S; a server that waited on them in
        # turn would not answer within this client's shorter timeout.
        ping(served, timeout=ipc.READ_TIMEOUT_S / 2)
    finally:
        for conn in silent:
            conn.close()


def test_a_trickling_client_is_cut_off_and_others_are_served(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipc, "READ_TIMEOUT_S", 1.0)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(served.path))
        conn.sendall(b'{"cmd": "ping"')
        replied = b""
        # One byte every 0.1 s for up to 8 s: each byte comes well within the read
        # timeout, the whole request never does.
        for sent in range(80):
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable:
                replied = _read_all(conn)
                break
            with contextlib.suppress(BrokenPipeError):
                conn.sendall(b" ")
            if sent == 3:
                ping(served)  # served meanwhile
    assert replied, "the server waited on the trickle for as long as it went on"
    reply = one_reply(replied)
    assert reply["ok"] is False
    assert_sentence(reply["error"])
    ping(served)


def test_many_clients_at_once(served: Served) -> None:
    payloads = [b'{"cmd": "ping"}\n', b'{"cmd": "status"}\n', b"garbage\n", b'{"cmd": 3}\n',
                b'{"cmd": "trigger", "action": "translate_en", "text": "a cat", '
                b'"output": ["clipboard"]}\n', b"", b'{"cmd": "nope"}\n']  # fmt: skip

    def client(i: int) -> dict[str, Any]:
        return one_reply(exchange(served.path, payloads[i % len(payloads)], timeout=30))

    with ThreadPoolExecutor(max_workers=64) as pool:
        replies = list(pool.map(client, range(256)))
    for i, reply in enumerate(replies):
        assert_answered(reply)
        if payloads[i % len(payloads)].startswith(b'{"cmd": "ping"'):
            assert reply == {"ok": True}
    served.daemon.stopping.clear()
    deadline = time.monotonic() + 10
    while served.daemon.service.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    ping(served)
