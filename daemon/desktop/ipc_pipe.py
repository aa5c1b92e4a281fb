"""Talking to the daemon on Windows: a named pipe (one message each way per request),
where both sides first prove to each other that they can read a secret key file only
this user can read.  The POSIX side and the shared request handling are in
:mod:`daemon.desktop.ipc`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.desktop.ipc import (
    MAX_REQUEST,
    NOT_RUNNING,
    READ_FAILED,
    READ_TIMEOUT_S,
    TOO_LARGE,
    DaemonNotRunning,
    Handler,
    _answer,
    _parse_request,
)
from daemon.errors import YomitoriError

log = logging.getLogger(__name__)


def _pipe_address() -> tuple[str, Path]:
    """The pipe's name and the key file.  Named after the runtime folder as well as
    the user, so that, as with the Unix socket, each runtime folder has its own daemon
    (pipe names are machine-wide; the lock and the key are per folder)."""
    folder = platform.runtime_dir()
    user = "".join(c for c in os.environ.get("USERNAME", "user") if c not in "\\/") or "user"
    tag = hashlib.sha256(os.path.normcase(os.path.abspath(folder)).encode()).hexdigest()[:12]
    return rf"\\.\pipe\yomitori-{user}-{tag}", folder / "daemon.key"


# -- Windows: a named pipe ---------------------------------------------------------
#
# multiprocessing.connection gives message framing on a named pipe.  Its own
# ``authkey`` handshake is not used: Listener.accept() runs it on the accepting
# thread with no timeout, so one client that connects and says nothing (the pipe's
# default security lets any local user open it for reading) would stall every
# later connection.  Here each connection proves itself on its own thread, with a
# timeout, and the client checks the daemon too (nothing else can squat the name).

_HELLO = b"yomitori-pipe-1:"
_NONCE = 32


def _mac(key: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


class _TooLarge(OSError):
    """A message longer than the reader's limit."""


def _recv(conn: Any, limit: int, timeout: float | None = READ_TIMEOUT_S) -> bytes:
    """One message; OSError/EOFError when none comes in time or it is too large.  A
    message over ``limit`` is refused from its length, before any of it is read."""
    if timeout is not None and not conn.poll(timeout):
        raise TimeoutError("no answer in time")
    try:
        return conn.recv_bytes(limit)
    except OSError as err:
        if err.errno is None:  # multiprocessing's own "bad message length": over the limit
            raise _TooLarge(f"message larger than {limit} bytes") from None
        raise


def _server_handshake(conn: Any, key: bytes) -> bool:
    challenge = secrets.token_bytes(_NONCE)
    try:
        conn.send_bytes(_HELLO + challenge)
        answer = _recv(conn, 256)
    except (OSError, EOFError):
        return False
    proof, theirs = answer[:-_NONCE], answer[-_NONCE:]
    if len(answer) <= _NONCE or not hmac.compare_digest(proof, _mac(key, b"client", challenge)):
        return False
    try:
        conn.send_bytes(_mac(key, b"daemon", theirs))
    except OSError:
        return False
    return True


def _client_handshake(conn: Any, key: bytes) -> None:
    hello = _recv(conn, 256)
    if not hello.startswith(_HELLO) or len(hello) != len(_HELLO) + _NONCE:
        raise YomitoriError("Something other than yomitori answers on its pipe.")
    mine = secrets.token_bytes(_NONCE)
    conn.send_bytes(_mac(key, b"client", hello[len(_HELLO) :]) + mine)
    try:
        proof = _recv(conn, 256)
    except TimeoutError:
        raise
    except (EOFError, OSError):  # the daemon hangs up on a wrong key
        raise YomitoriError(
            "The daemon did not accept this client's key; restart yomitori "
            "(yomitori quit, then yomitori run)."
        ) from None
    if not hmac.compare_digest(proof, _mac(key, b"daemon", mine)):
        raise YomitoriError("Something other than yomitori answers on its pipe.")


class PipeServer:
    """Windows: a named pipe; clients must prove they can read the key file."""

    def __init__(self, handler: Handler, address: str | None = None,
                 key_path: Path | None = None, family: str = "AF_PIPE") -> None:  # fmt: skip
        self.handler = handler
        if address is None or key_path is None:
            address, key_path = _pipe_address()
        self.address, self.key_path, self.family = address, key_path, family
        self._key = b""
        self._listener: Any = None
        self._key_handle: Any = None
        self._stopping = threading.Event()
        self.accept_thread: threading.Thread | None = None

    def start(self) -> None:
        from multiprocessing.connection import Listener

        self._key = secrets.token_bytes(32)
        # Readable by this user only: the runtime folder is in the user's profile,
        # whose permissions the file inherits (0600 elsewhere).
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | getattr(os, "O_BINARY", 0), 0o600)  # fmt: skip
        with open(fd, "wb") as handle:
            handle.write(self._key)
        # Held open while the daemon runs: Windows' temp-file cleanup (the runtime
        # folder is under %LOCALAPPDATA%\Temp) cannot delete an open file.
        self._key_handle = open(self.key_path, "rb")  # noqa: SIM115
        self._listener = Listener(self.address, family=self.family)
        self.accept_thread = threading.Thread(target=self._accept_loop, name="ipc-accept",
                                              daemon=True)  # fmt: skip
        self.accept_thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                return  # closed
            except Exception as err:  # never let one odd connection end the loop
                log.info("IPC connection refused: %s", err)
                continue
            if self._stopping.is_set():
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), name="ipc-conn",
                             daemon=True).start()  # fmt: skip

    def _serve(self, conn: Any) -> None:
        with conn:
            if not _server_handshake(conn, self._key):
                log.info("IPC connection refused: no valid key")
                return
            request: dict[str, Any] | str
            try:
                request = _parse_request(_recv(conn, MAX_REQUEST))
            except _TooLarge:
                request = TOO_LARGE
            except (OSError, EOFError) as err:
                log.info("IPC read failed: %s", err)
                request = READ_FAILED
            response = _answer(self.handler, request)
            with contextlib.suppress(OSError):
                conn.send_bytes(json.dumps(response, ensure_ascii=False).encode())

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            # Closing the listener does not wake a pending accept (on Windows it waits
            # on a pipe instance the listener no longer lists): connect once instead.
            from multiprocessing.connection import Client

            with contextlib.suppress(OSError):
                Client(self.address, family=self.family).close()
            self._listener.close()
        if self._key_handle is not None:
            self._key_handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.key_path.unlink()


def pipe_request(
    message: dict[str, Any],
    timeout: float | None,
    address: str | None = None,
    key_path: Path | None = None,
    family: str = "AF_PIPE",
) -> dict[str, Any]:
    """:func:`request` over the Windows pipe (``family`` is for tests elsewhere)."""
    from multiprocessing.connection import Client

    if address is None or key_path is None:
        address, key_path = _pipe_address()
    try:
        key = key_path.read_bytes()
        conn = Client(address, family=family)
    except (FileNotFoundError, ConnectionRefusedError):  # no key file, or no pipe
        raise DaemonNotRunning(NOT_RUNNING) from None
    except OSError as err:  # e.g. every pipe instance busy for 20 s, or access denied
        raise YomitoriError(f"Cannot reach the daemon ({err}).") from None
    with conn:
        try:
            _client_handshake(conn, key)
            conn.send_bytes(json.dumps(message, ensure_ascii=False).encode())
            data = _recv(conn, 1 << 30, timeout)
        except TimeoutError:
            raise YomitoriError("The daemon did not answer in time.") from None
        except (OSError, EOFError):
            raise YomitoriError("The daemon closed the connection without answering.") from None
    return json.loads(data)
