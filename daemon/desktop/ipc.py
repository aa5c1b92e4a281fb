"""Talking to the running daemon: ``yomitori trigger``, ``status``, ``reload``…

One JSON object per line, one request per connection.  On POSIX the daemon
listens on a Unix socket in the user's private runtime folder (folder 0700,
socket 0600, and the peer's uid is checked where the OS tells it); on
Windows on a named pipe with a shared secret that only this user can read.
Requests larger than :data:`MAX_REQUEST` or not valid JSON are refused with
an error reply; the daemon carries on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.errors import YomitoriError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
READ_TIMEOUT_S = 5.0
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class DaemonNotRunning(YomitoriError):
    exit_code = 3


def socket_path() -> Path:
    return platform.runtime_dir() / "daemon.sock"


def _pipe_address() -> tuple[str, Path]:
    user = os.environ.get("USERNAME", "user")
    return rf"\\.\pipe\yomitori-{user}", platform.runtime_dir() / "daemon.key"


class InstanceLock:
    """Held for the daemon's lifetime; a second ``yomitori run`` cannot take it."""

    def __init__(self) -> None:
        self.path = platform.runtime_dir() / "daemon.lock"
        self._handle: Any = None

    def acquire(self) -> bool:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open while the daemon runs
        try:
            if platform.is_windows():
                import msvcrt

                handle.seek(0)  # every instance must try to lock the same byte
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def holder_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")


def _read_request(conn: socket.socket) -> dict[str, Any] | str:
    """The request, or an error text for the reply."""
    conn.settimeout(READ_TIMEOUT_S)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                return f"request larger than {MAX_REQUEST} bytes"
    except TimeoutError:
        return "request incomplete"
    except OSError as err:
        return f"read failed ({err})"
    try:
        request = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return "malformed request (one JSON object per line expected)"
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return "malformed request (an object with a 'cmd' is expected)"
    return request


class UnixServer:
    def __init__(self, handler: Handler, path: Path | None = None) -> None:
        self.handler = handler
        self.path = path or socket_path()
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Bind (the caller holds the instance lock, so a leftover file is stale)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="ipc-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="ipc-conn",
                             daemon=True).start()  # fmt: skip

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not _same_user(conn):
                _reply(conn, {"ok": False, "error": "not the daemon's user"})
                return
            request = _read_request(conn)
            if isinstance(request, str):
                log.info("IPC request refused: %s", request)
                _reply(conn, {"ok": False, "error": request})
                return
            try:
                response = self.handler(request)
            except Exception as err:  # one bad request never takes the daemon down
                log.exception("IPC handler failed")
                response = {"ok": False, "error": f"internal error ({type(err).__name__})"}
            _reply(conn, response)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _same_user(conn: socket.socket) -> bool:
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return True  # the 0700 folder and 0600 socket already keep others out
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except OSError:
        return True
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


class PipeServer:
    """Windows: a named pipe; clients must prove they can read the key file."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.address, self.key_path = _pipe_address()
        self._listener: Any = None

    def start(self) -> None:
        from multiprocessing.connection import Listener

        key = secrets.token_bytes(32)
        self.key_path.write_bytes(key)
        self._listener = Listener(self.address, family="AF_PIPE", authkey=key)
        threading.Thread(target=self._accept_loop, name="ipc-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return
            except Exception as err:  # failed authentication and the like
                log.info("IPC connection refused: %s", err)
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Any) -> None:
        with conn:
            try:
                request = json.loads(conn.recv_bytes(MAX_REQUEST))
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise ValueError
                response = self.handler(request)
            except (OSError, ValueError, EOFError):
                response = {"ok": False, "error": "malformed request"}
            except Exception as err:
                log.exception("IPC handler failed")
                response = {"ok": False, "error": f"internal error ({type(err).__name__})"}
            with contextlib.suppress(OSError):
                conn.send_bytes(json.dumps(response, ensure_ascii=False).encode())

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.key_path.unlink()


def make_server(handler: Handler) -> UnixServer | PipeServer:
    return PipeServer(handler) if platform.is_windows() else UnixServer(handler)


def request(message: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
    """Send one request to the running daemon and return its reply."""
    if platform.is_windows():
        return _pipe_request(message, timeout)
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonNotRunning("yomitori is not running (start it with: yomitori run).") from None
    with sock:
        sock.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise YomitoriError("The daemon closed the connection without answering.")
    return json.loads(data.split(b"\n", 1)[0])


def _pipe_request(message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    from multiprocessing.connection import Client

    address, key_path = _pipe_address()
    try:
        key = key_path.read_bytes()
        conn = Client(address, family="AF_PIPE", authkey=key)
    except (FileNotFoundError, OSError):
        raise DaemonNotRunning("yomitori is not running (start it with: yomitori run).") from None
    with conn:
        conn.send_bytes(json.dumps(message, ensure_ascii=False).encode())
        if timeout is not None and not conn.poll(timeout):
            raise YomitoriError("The daemon did not answer in time.")
        return json.loads(conn.recv_bytes())
