"""A supervised child binary: a managed ``llama-server`` that never outlives us.

:class:`BinaryChild` starts a program (the Python workers are
:mod:`daemon.engine.process`'s), copies its merged stdout and stderr into its own
log file, watches for the line that says it is ready, and makes sure the program
dies with the daemon however the daemon ends:

* Linux: ``PR_SET_PDEATHSIG`` (SIGKILL), set in the child before it runs the program;
* Windows: a Job Object that kills its processes when its last handle closes, which
  the system does when the daemon exits, crash included;
* everywhere: a PID file, which :func:`sweep` reads at the next start to kill a server
  whose owner died without ending it.  On macOS this is the only safety net.

The program's output may hold model text, so it goes to that log file and the
in-memory tail only, never to our logger.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import glob
import json
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

from daemon import platform

log = logging.getLogger(__name__)

_T = TypeVar("_T")

LOG_ROTATE_BYTES = 2 * 1024 * 1024  # a log over this at start becomes ``NAME.log.1``
_KEEP_LINES = 200  # output lines kept in memory for tail()
_MAX_LINE = 64 * 1024  # a longer line is cut into pieces of this size
_TAIL_LINES = 20
_DRAIN_S = 2.0  # how long an exit waits for the reader to take the last lines
_KILL_WAIT_S = 2.0  # how long a SIGKILLed process may take to go
# Two readings of one process's create time, in different processes: psutil adds the
# boot time, which Linux derives from the clock, so they may differ by about a second.
_SAME_START_S = 1.0
_SWEEP_GRACE_S = 3.0

# Linux, prctl(2).
_PR_SET_PDEATHSIG = 1
# Win32.
_CREATE_NO_WINDOW = 0x08000000
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9  # JOBOBJECTINFOCLASS JobObjectExtendedLimitInformation


class ChildExited(Exception):
    """The program exited before it was ready: its exit ``code`` and ``tail``, its last lines.

    The tail may hold model text or paths: a message shows one line of it at most,
    and it is never logged above DEBUG.
    """

    def __init__(self, code: int, tail: list[str]) -> None:
        super().__init__(code, tail)
        self.code = code
        self.tail = tail

    def __str__(self) -> str:
        return f"the program exited with code {self.code}"


class BinaryChild:
    """A started program, its log, its PID file and its death with us.

    ``env`` is added to this process's environment for the program (a secret such as
    ``LLAMA_API_KEY`` goes this way, never on the command line).  ``ready_pattern`` is
    searched in each output line until it first matches; :attr:`ready_match` is that
    match.  With ``pidfile_dir``, ``NAME-PID.json`` there records the program for
    :func:`sweep` until :meth:`end` sees it gone: call :meth:`end` also after the
    program exits by itself.
    """

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_pattern: re.Pattern[str] | None = None,
        pidfile_dir: Path | None = None,
        name: str = "llama-server",
    ) -> None:
        if not argv:
            raise ValueError("argv is empty")
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        windows = platform.is_windows()
        pdeathsig = not windows and platform.is_linux()
        child_env = platform.environment()
        child_env.update(env or {})
        log_file = _open_log(log_path)
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- {stamp} starting {name}: {shlex.join(self.argv)}\n")
            log_file.flush()
            self._out = _Output(log_file, ready_pattern)
            popen = functools.partial(
                subprocess.Popen,
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env,
                # No console window flashing up on Windows.
                creationflags=_CREATE_NO_WINDOW if windows else 0,
                # Ctrl-C in the daemon's terminal is the daemon's to handle.
                start_new_session=not windows,
                preexec_fn=_die_with_parent() if pdeathsig else None,
            )
            proc = _on_lasting_thread(popen) if pdeathsig else popen()
        except BaseException:
            log_file.close()
            raise
        self.proc: subprocess.Popen[bytes] = proc
        self._job: _Job | None = None
        self._pidfile: Path | None = None
        self._lock = threading.Lock()
        try:
            if windows:
                try:
                    self._job = _job_for(proc)
                except OSError as error:  # kernel32 would not load: not seen in practice
                    log.warning("no job object for pid %d (%s)", proc.pid, error)
            assert proc.stdout is not None
            threading.Thread(
                target=self._out.read,  # not a method of self: the child stays collectable
                args=(proc.stdout,),
                name=f"{name}-{proc.pid}-output",
                daemon=True,
            ).start()
            if pidfile_dir is not None:
                self._pidfile = _write_pidfile(pidfile_dir, name, proc, self.argv[0])
        except BaseException:
            _reap(proc, self._job, None)
            raise
        self._finalizer = weakref.finalize(self, _reap, proc, self._job, self._pidfile)
        log.debug("started %s as pid %d", name, proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def ready_match(self) -> re.Match[str] | None:
        """The first match of ``ready_pattern`` in the output (None: not yet, or no pattern)."""
        return self._out.match

    def tail(self, n: int = _TAIL_LINES) -> list[str]:
        """The last ``n`` lines of output (of the last 200)."""
        return self._out.tail(n)

    def wait_ready(
        self, timeout: float, health: Callable[[], bool] | None = None, poll_s: float = 0.05
    ) -> None:
        """Return once ``ready_pattern`` has matched and then ``health()`` says True.

        ``health`` (optional) is called every ``poll_s`` seconds after the match; what it
        raises propagates.  Raises :class:`ChildExited` as soon as the program exits and
        :class:`TimeoutError` after ``timeout`` seconds; the program is left running then,
        for the caller to :meth:`end`.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._out.done.wait(_DRAIN_S)  # the last lines say why
                raise ChildExited(code, self.tail())
            matched = self._out.ready.is_set()
            if matched and (health is None or health()):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} was not ready after {timeout:g} s")
            if matched:
                time.sleep(min(poll_s, left))
            else:
                self._out.ready.wait(min(poll_s, left))

    def end(self, grace_s: float = 5.0) -> int | None:
        """Stop the program: terminate it, kill it after ``grace_s`` seconds.

        Returns its exit code (None: it would not die, and its PID file stays for
        :func:`sweep`).  Also takes its last output, closes its pipe and deletes its PID
        file.  Safe to call again, and after the program exited by itself.
        """
        with self._lock:
            proc = self.proc
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.terminate()
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=max(grace_s, _KILL_WAIT_S))
            code = proc.poll()
            if self._job is not None:
                self._job.close()  # and so ends whatever the program started
            if code is None:
                log.warning("%s (pid %d) would not die", self.name, proc.pid)
                return None
            if not self._out.done.wait(_DRAIN_S):
                # The reader closes the pipe at end of file; a process the program
                # started may still hold the other end.
                log.debug("%s (pid %d) exited; its output pipe is still open", self.name, proc.pid)
            if self._pidfile is not None:
                _unlink(self._pidfile)
            self._finalizer.detach()
            return code


class _Output:
    """The program's output as the reader thread sees it (holding no reference to the child)."""

    def __init__(self, log_file: IO[str], pattern: re.Pattern[str] | None) -> None:
        self._log = log_file
        self._lines: collections.deque[str] = collections.deque(maxlen=_KEEP_LINES)
        self._lock = threading.Lock()
        self._pattern = pattern
        self.match: re.Match[str] | None = None
        self.ready = threading.Event()  # the pattern matched (set at once without one)
        self.done = threading.Event()  # end of file: the pipe and the log are closed
        if pattern is None:
            self.ready.set()

    def read(self, pipe: IO[bytes]) -> None:
        try:
            for raw in iter(functools.partial(pipe.readline, _MAX_LINE), b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._lines.append(line)
                # A full disk must not stop the reading: the program would block on the pipe.
                with contextlib.suppress(OSError, ValueError):
                    self._log.write(line + "\n")
                    self._log.flush()
                if self._pattern is not None and not self.ready.is_set():
                    match = self._pattern.search(line)
                    if match is not None:
                        self.match = match
                        self.ready.set()
        except (OSError, ValueError):  # the pipe closed under us
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
            with contextlib.suppress(OSError, ValueError):
                self._log.close()
            self.done.set()

    def tail(self, n: int) -> list[str]:
        if n <= 0:
            return []
        with self._lock:
            return list(self._lines)[-n:]


def _open_log(path: Path) -> IO[str]:
    """``path`` opened to append, private (0600); one over 2 MB is first moved to ``.1``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Missing is fine; so is a log that Windows will not move because a process holds it.
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if not platform.is_windows():
        os.fchmod(fd, 0o600)  # a log from an older version may be wider
    return os.fdopen(fd, "a", encoding="utf-8", errors="replace")


def _reap(proc: subprocess.Popen[bytes], job: _Job | None, pidfile: Path | None) -> None:
    """At garbage collection or exit: never leave the program holding memory or VRAM."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_KILL_WAIT_S)
    if job is not None:
        job.close()
    if pidfile is not None and proc.poll() is not None:
        _unlink(pidfile)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


# -- Linux: die with the parent ------------------------------------------------------------


@functools.cache
def _prctl() -> Any | None:
    """libc's prctl, looked up in the parent: the forked child must not load libraries."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when its parent goes.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
    whole process: that is why :func:`_on_lasting_thread` does the forking.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before the prctl: nobody would send the signal then.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


_lasting: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_lasting_thread: threading.Thread | None = None
_lasting_lock = threading.Lock()


def _on_lasting_thread(call: Callable[[], _T]) -> _T:
    """``call()`` on a thread that lives as long as the process (or this one, if it does).

    A child forked from a short-lived thread (a loader thread, a pool's worker) would
    get its PR_SET_PDEATHSIG the moment that thread ended.
    """
    global _lasting_thread
    if threading.current_thread() is threading.main_thread():
        return call()
    with _lasting_lock:
        if _lasting_thread is None or not _lasting_thread.is_alive():
            _lasting_thread = threading.Thread(target=_serve_lasting, name="spawner", daemon=True)
            _lasting_thread.start()
    future: Future[_T] = Future()
    _lasting.put((call, future))
    return future.result()


def _serve_lasting() -> None:
    while True:
        call, future = _lasting.get()
        try:
            future.set_result(call())
        except BaseException as error:  # handed to the caller's thread
            future.set_exception(error)


# -- Windows: a job object that kills on close ---------------------------------------------


class _IoCounters(ctypes.Structure):
    _fields_ = [
        (field, ctypes.c_uint64)
        for field in (
            "ReadOperationCount",
            "WriteOperationCount",
            "OtherOperationCount",
            "ReadTransferCount",
            "WriteTransferCount",
            "OtherTransferCount",
        )
    ]


class _BasicLimits(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),  # DWORD
        ("MinimumWorkingSetSize", ctypes.c_size_t),  # SIZE_T
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),  # ULONG_PTR
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class _ExtendedLimits(ctypes.Structure):
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION: 144 bytes on 64-bit Windows, 112 on 32-bit."""

    _fields_ = [
        ("BasicLimitInformation", _BasicLimits),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def _kernel32() -> Any:
    """kernel32 with prototypes of our own.

    A private WinDLL, because the functions of the shared ``ctypes.windll.kernel32``
    carry whatever argtypes another library gave them; and without a restype a
    HANDLE would be cut to a 32-bit int.
    """
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle, dword, boolean = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    kernel32.CreateJobObjectW.argtypes = [ctypes.c_void_p, ctypes.c_wchar_p]
    kernel32.CreateJobObjectW.restype = handle
    kernel32.SetInformationJobObject.argtypes = [handle, ctypes.c_int, ctypes.c_void_p, dword]
    kernel32.SetInformationJobObject.restype = boolean
    kernel32.AssignProcessToJobObject.argtypes = [handle, handle]
    kernel32.AssignProcessToJobObject.restype = boolean
    kernel32.CloseHandle.argtypes = [handle]
    kernel32.CloseHandle.restype = boolean
    return kernel32


def _last_error() -> int:
    get = getattr(ctypes, "get_last_error", None)  # Windows only
    return int(get()) if get is not None else 0


class _Job:
    """A job object handle; closing it (or our exit) kills the processes in the job."""

    def __init__(self, kernel32: Any, handle: int) -> None:
        self._kernel32 = kernel32
        self.handle: int | None = handle
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            handle, self.handle = self.handle, None
        if handle is not None:
            self._kernel32.CloseHandle(handle)


def _job_for(proc: subprocess.Popen[bytes]) -> _Job | None:
    """Put ``proc`` in a new kill-on-close job; None, with a warning, if Windows refuses.

    A process the program starts before this returns is not in the job (llama-server
    starts none; in router mode it starts them only when a model loads).
    """
    kernel32 = _kernel32()
    handle = kernel32.CreateJobObjectW(None, None)
    if not handle:
        log.warning(
            "no job object for pid %d (error %d): it may outlive a crash", proc.pid, _last_error()
        )
        return None
    job = _Job(kernel32, handle)
    info = _ExtendedLimits()
    info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    process = int(proc._handle)  # type: ignore[attr-defined]  # Windows' Popen keeps it
    limited = kernel32.SetInformationJobObject(
        handle, _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info), ctypes.sizeof(info)
    )
    if not limited or not kernel32.AssignProcessToJobObject(handle, process):
        log.warning(
            "could not put pid %d in a job object (error %d): it may outlive a crash",
            proc.pid,
            _last_error(),
        )
        job.close()
        return None
    return job


# -- PID files and the sweep ---------------------------------------------------------------


def _write_pidfile(
    directory: Path, name: str, proc: subprocess.Popen[bytes], program: str
) -> Path | None:
    """Record the running program in ``directory/NAME-PID.json`` (0600); None if it is gone."""
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        return None  # nothing left to sweep
    record = {
        "pid": proc.pid,
        "owner": os.getpid(),
        "owner_started": psutil.Process().create_time(),
        "exe": str(Path(shutil.which(program) or program).resolve()),
        "started": started,
    }
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}-{proc.pid}.json"
    partial = directory / f".{path.name}.tmp"  # never matches the sweep's pattern
    _unlink(partial)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(record, file)
    os.replace(partial, path)
    return path


def sweep(pidfile_dir: Path, name: str = "llama-server") -> list[int]:
    """Kill the ``name`` servers left running by an owner that died; their pids.

    Reads the PID files :class:`BinaryChild` writes.  A server is killed (terminated,
    then killed after 3 s) only if its owner is gone, it is the very process recorded
    (same create time: a pid reused since is never touched) and its executable or
    command is called ``name``.  A PID file whose process is gone or was killed is
    deleted; so is one that cannot be read.
    """
    swept: list[int] = []
    for path in sorted(pidfile_dir.glob(f"{glob.escape(name)}-*.json")):
        try:
            pid = _sweep_one(path, name)
        except psutil.AccessDenied:
            log.debug("pid file %s: not ours to inspect; left alone", path.name)
            continue
        if pid is not None:
            swept.append(pid)
    if swept:
        log.info("swept %d %s process(es) left running by a dead owner", len(swept), name)
    else:
        log.debug("swept no %s processes", name)
    return swept


def _sweep_one(path: Path, name: str) -> int | None:
    """The pid killed for the PID file ``path``, if any; deletes the file when it is done."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pid, owner = int(record["pid"]), int(record["owner"])
        started = float(record["started"])
        owner_started = record.get("owner_started")
        owner_started = None if owner_started is None else float(owner_started)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.debug("deleting the unreadable pid file %s", path.name)
        _unlink(path)
        return None
    try:
        server = _same_process(pid, started)
        if server is None:  # gone, or the pid is another process's now
            _unlink(path)
            return None
        if _same_process(owner, owner_started) is not None:
            return None  # its owner lives and answers for it
        if not _called(server, name):
            log.warning("pid file %s: pid %d is not a %s; left alone", path.name, pid, name)
            return None
        killed = _end_orphan(server)
    except psutil.NoSuchProcess:  # it went while we looked
        _unlink(path)
        return None
    if killed is False:
        log.warning("%s (pid %d), left by a dead owner, would not die", name, pid)
        return None
    _unlink(path)
    return pid if killed else None


def _same_process(pid: int, started: float | None) -> psutil.Process | None:
    """The running process ``pid`` if it started at ``started`` (None: any start time)."""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > _SAME_START_S:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped
            return None
    except psutil.NoSuchProcess:  # ZombieProcess included
        return None
    return proc


def _called(proc: psutil.Process, name: str) -> bool:
    """Whether the executable or the first command word of ``proc`` is ``name``."""

    def stem(path: str) -> str:
        base = re.split(r"[\\/]", path)[-1]
        if platform.is_windows():
            base = base.casefold()
        return base[:-4] if base.lower().endswith(".exe") else base

    candidates: list[str] = []
    with contextlib.suppress(psutil.AccessDenied):
        candidates.append(proc.exe())
    with contextlib.suppress(psutil.AccessDenied):
        candidates.extend(proc.cmdline()[:1])
    want = stem(name)
    return any(stem(candidate) == want for candidate in candidates if candidate)


def _end_orphan(proc: psutil.Process) -> bool | None:
    """Terminate, then kill after 3 s: True if it went, None if already gone, False if stuck."""
    try:
        proc.terminate()
    except psutil.NoSuchProcess:
        return None
    try:
        proc.wait(_SWEEP_GRACE_S)
        return True
    except psutil.TimeoutExpired:
        pass
    try:
        proc.kill()
        proc.wait(_SWEEP_GRACE_S)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        # A zombie nobody reaps (a container without an init) is gone all the same.
        with contextlib.suppress(psutil.Error):
            return proc.status() == psutil.STATUS_ZOMBIE
        return True
    return True
