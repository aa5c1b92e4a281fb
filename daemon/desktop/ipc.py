"""Talking to the running daemon: ``yomitori trigger``, ``status``, ``reload``…

One JSON object per request, one request per connection.  On POSIX the daemon
listens on a Unix socket in the user's private runtime folder (folder 0700,
socket 0600, and the peer's uid is checked where the OS tells it), one JSON
object per line; on Windows on a named pipe (one message each way), where both
sides first prove to each other that they can read a secret key file that only
this user can read.  Requests larger than :data:`MAX_REQUEST` or not valid JSON
are refused with an error reply; the daemon carries on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.errors import YomitoriError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
READ_TIMEOUT_S = 5.0  # for the whole request, however slowly it trickles in
# Refusals, in the words the client shows (``yomitori: …``).
TOO_LARGE = f"The request is larger than {MAX_REQUEST} bytes."
READ_FAILED = "The request could not be read."
Handler = Callable[[dict[str, Any]], dict[str, Any]]
NOT_RUNNING = "yomitori is not running (start it with: yomitori run)."
# Windows: where the lock file keeps its lock.  msvcrt's locks are mandatory, so
# the pid at the start of the file stays readable only if the lock is elsewhere.
LOCK_OFFSET = 1 << 20


class DaemonNotRunning(YomitoriError):
    exit_code = 3


def socket_path() -> Path:
    return platform.runtime_dir() / "daemon.sock"


class InstanceLock:
    """Held for the daemon's lifetime; a second ``yomitori run`` cannot take it.

    The OS drops the lock when the process dies, however it dies, so a lock file
    left behind by a crash never blocks the next start.
    """

    def __init__(self) -> None:
        self.path = platform.runtime_dir() / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if platform.is_windows():
                import msvcrt

                # msvcrt locks from the current position; every instance tries the same
                # byte, one far past the pid so that holder_pid() can still read it.
                os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
        self._fd = fd
        return True

    def holder_pid(self) -> int | None:
        try:
            return int(self.path.read_bytes().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        if platform.is_windows():
            import msvcrt

            # Closing drops the lock too, but "when the OS gets to it": a daemon
            # restarted at once could still find it taken.
            with contextlib.suppress(OSError):
                os.lseek(self._fd, LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        os.close(self._fd)
        self._fd = None


def _parse_request(data: bytes) -> dict[str, Any] | str:
    """The request, or an error text for the reply."""
    try:
        request = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return "Malformed request: one JSON object per line is expected."
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return "Malformed request: an object with a 'cmd' text is expected."
    return request


def _answer(handler: Handler, request: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(request, str):
        log.info("IPC request refused: %s", request)
        return {"ok": False, "error": request}
    try:
        return handler(request)
    except Exception as err:  # one bad request never takes the daemon down
        log.exception("IPC handler failed")
        return {"ok": False, "error": f"Internal error ({type(err).__name__}); details are in "
                                      "the log."}  # fmt: skip


def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")


def _read_request(conn: socket.socket) -> dict[str, Any] | str:
    """The request, or an error text for the reply.  Never more than about
    :data:`MAX_REQUEST` bytes are read, nor for longer than :data:`READ_TIMEOUT_S`."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    data = b""
    try:
        while b"\n" not in data:
            conn.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                return TOO_LARGE
    except TimeoutError:
        return "The request did not arrive in time (one JSON line, then the reply)."
    except OSError as err:
        log.info("IPC read failed: %s", err)
        return READ_FAILED
    return _parse_request(data)


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
        sock.listen(128)
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
                _reply(conn, {"ok": False, "error": "Not the daemon's user."})
                return
            _reply(conn, _answer(self.handler, _read_request(conn)))

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


def make_server(handler: Handler) -> Any:
    """The daemon's listener: a Unix socket, or on Windows a named pipe."""
    if platform.is_windows():
        from daemon.desktop.ipc_pipe import PipeServer

        return PipeServer(handler)
    return UnixServer(handler)


def connect(path: Path, timeout: float | None) -> socket.socket:
    """A connection to the daemon's socket.  A full listen queue (a burst of clients
    the daemon is still accepting) is waited out, up to ``timeout``; with a timeout
    the socket does not block, so connect() says EAGAIN instead of waiting itself."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:
            sock.close()
            if deadline is not None and time.monotonic() >= deadline:
                raise YomitoriError("The daemon did not answer in time.") from None
            time.sleep(0.01)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise DaemonNotRunning(NOT_RUNNING) from None
        except OSError as err:
            sock.close()
            raise YomitoriError(f"Cannot reach the daemon at {path} ({err}).") from None


def request(
    message: dict[str, Any], timeout: float | None = 10.0, path: Path | None = None
) -> dict[str, Any]:
    """Send one request to the running daemon (on POSIX, the one at ``path``) and
    return its reply."""
    if platform.is_windows():
        from daemon.desktop.ipc_pipe import pipe_request

        return pipe_request(message, timeout)
    sock = connect(path or socket_path(), timeout)
    data = b""
    with sock:
        try:
            sock.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise YomitoriError("The daemon did not answer in time.") from None
        except OSError:
            data = b""
    if not data:
        raise YomitoriError("The daemon closed the connection without answering.")
    return json.loads(data.split(b"\n", 1)[0])
