"""The supervised child binary (a managed llama-server), run on small real programs."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon import platform
from daemon.engine import binary
from daemon.engine.binary import BinaryChild, ChildExited, sweep

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
POSIX = os.name == "posix"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

posix_only = pytest.mark.skipif(not POSIX, reason="needs POSIX signals (SIGTERM can be ignored)")


def script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


SLEEPER = script("import time; time.sleep(60)")
SERVER = script(
    """
    import time
    time.sleep(0.2)
    print("build: 1234 (abcdef)", flush=True)
    print("main: server is listening on http://127.0.0.1:54321 - starting the main loop",
          flush=True)
    print("srv  update_slots: all slots are idle", flush=True)
    time.sleep(60)
    """
)


Start = Callable[..., BinaryChild]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start a BinaryChild logging to tmp_path/logs/server.log; every one is ended after."""
    made: list[BinaryChild] = []

    def make(argv: list[str], log_path: Path | None = None, **kwargs: Any) -> BinaryChild:
        child = BinaryChild(argv, log_path or tmp_path / "logs" / "server.log", **kwargs)
        made.append(child)
        return child

    yield make
    for child in made:
        child.end(grace_s=0.5)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# -- readiness -----------------------------------------------------------------------------


def test_the_ready_line_is_matched_and_its_groups_kept(start: Start) -> None:
    child = start(SERVER, ready_pattern=LISTENING)
    assert child.alive and child.returncode is None and child.pid > 0
    child.wait_ready(timeout=10)
    assert child.ready_match is not None
    assert child.ready_match.group(1) == "54321"
    assert child.ready_match.groups() == ("54321",)
    assert "build: 1234 (abcdef)" in child.tail()


def test_health_is_polled_only_after_the_line(start: Start) -> None:
    child = start(SERVER, ready_pattern=LISTENING)
    seen: list[bool] = []

    def health() -> bool:
        seen.append(child.ready_match is not None)
        return len(seen) >= 3  # 503, 503, then 200

    child.wait_ready(timeout=10, health=health, poll_s=0.01)
    assert seen == [True, True, True]


def test_without_a_pattern_health_alone_decides(start: Start) -> None:
    child = start(SLEEPER)
    assert child.ready_match is None
    answers = iter([False, True])
    child.wait_ready(timeout=5, health=lambda: next(answers), poll_s=0.01)


def test_env_reaches_the_child_and_not_its_command_line(start: Start) -> None:
    child = start(
        script(
            """
            import os, time
            print("key=" + os.environ["LLAMA_API_KEY"], flush=True)
            print("logs=" + os.environ["YOMITORI_LOG_DIR"], flush=True)
            print("listening on http://127.0.0.1:1", flush=True)
            time.sleep(60)
            """
        ),
        env={"LLAMA_API_KEY": "sekrit-4242"},
        ready_pattern=LISTENING,
    )
    child.wait_ready(timeout=10)
    assert "key=sekrit-4242" in child.tail()
    # The rest of our environment goes along.
    assert f"logs={os.environ['YOMITORI_LOG_DIR']}" in child.tail()
    assert not any("sekrit" in word for word in psutil.Process(child.pid).cmdline())
    if LINUX:
        assert b"sekrit" not in Path(f"/proc/{child.pid}/cmdline").read_bytes()
    assert os.environ.get("LLAMA_API_KEY") != "sekrit-4242"


def test_an_early_exit_raises_child_exited_with_code_and_tail(start: Start) -> None:
    child = start(
        script(
            """
            import sys
            print("loading the model", flush=True)
            print("error: invalid argument: --bogus", file=sys.stderr, flush=True)
            sys.exit(3)
            """
        ),
        ready_pattern=LISTENING,
    )
    began = time.monotonic()
    with pytest.raises(ChildExited) as caught:
        child.wait_ready(timeout=30)
    assert time.monotonic() - began < 10
    assert caught.value.code == 3
    assert caught.value.tail[-2:] == ["loading the model", "error: invalid argument: --bogus"]
    assert "bogus" not in str(caught.value)  # the tail is for the caller to choose from
    assert child.returncode == 3 and not child.alive
    assert child.end() == 3


def test_wait_ready_times_out(start: Start) -> None:
    child = start(SLEEPER, ready_pattern=LISTENING)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        child.wait_ready(timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 3
    assert child.alive  # the caller decides
    assert child.end(grace_s=2) is not None


def test_a_health_check_that_never_passes_times_out(start: Start) -> None:
    child = start(SERVER, ready_pattern=LISTENING)
    with pytest.raises(TimeoutError):
        child.wait_ready(timeout=0.6, health=lambda: False)
    assert child.ready_match is not None


# -- ending --------------------------------------------------------------------------------


@posix_only
def test_end_terminates_first(start: Start) -> None:
    child = start(SLEEPER)
    began = time.monotonic()
    assert child.end(grace_s=5) == -signal.SIGTERM
    assert time.monotonic() - began < 3


@posix_only
def test_end_kills_a_child_that_ignores_sigterm_after_the_grace(start: Start) -> None:
    child = start(
        script(
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(60)
            """
        ),
        ready_pattern=re.compile("ready"),
    )
    child.wait_ready(timeout=10)
    began = time.monotonic()
    assert child.end(grace_s=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 3.5
    assert not child.alive
    assert child.end(grace_s=0.5) == -signal.SIGKILL  # twice is fine


def test_a_collected_child_is_killed(tmp_path: Path) -> None:
    child = BinaryChild(SLEEPER, tmp_path / "server.log", pidfile_dir=tmp_path / "run")
    pid = child.pid
    pidfile = tmp_path / "run" / f"llama-server-{pid}.json"
    assert pidfile.exists()
    del child
    gc.collect()
    assert wait_until(lambda: gone(pid), timeout=5)
    assert not pidfile.exists()


def test_an_empty_argv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BinaryChild([], tmp_path / "server.log")


# -- the log -------------------------------------------------------------------------------


def test_every_line_goes_to_a_private_log_and_the_last_ones_to_tail(
    start: Start, tmp_path: Path
) -> None:
    log_path = tmp_path / "deep" / "er" / "llama-server.log"
    child = start(script("for i in range(3000): print(f'line {i}')"), log_path=log_path)
    assert wait_until(lambda: not child.alive)
    assert child.end() == 0
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("--- ") and "starting llama-server" in lines[0]
    assert lines[1:] == [f"line {i}" for i in range(3000)]
    assert child.tail() == [f"line {i}" for i in range(2980, 3000)]
    assert child.tail(3) == ["line 2997", "line 2998", "line 2999"]
    assert child.tail(0) == []
    if POSIX:
        assert log_path.stat().st_mode & 0o777 == 0o600

    again = start(script("print('second run')"), log_path=log_path)
    assert wait_until(lambda: not again.alive)
    again.end()
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "second run" and lines[1] == "line 0"  # appended


def test_the_output_never_reaches_our_logger(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    child = start(script("print('the model says: private text')"))
    assert wait_until(lambda: not child.alive)
    child.end()
    assert "private text" in " ".join(child.tail())
    assert "private text" not in caplog.text


@posix_only
def test_an_older_wider_log_becomes_private(start: Start, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    log_path.write_text("old\n")
    log_path.chmod(0o644)
    child = start(script("print('new')"), log_path=log_path)
    assert wait_until(lambda: not child.alive)
    child.end()
    assert log_path.stat().st_mode & 0o777 == 0o600


def test_a_log_over_2_mb_is_rotated_at_start(start: Start, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    log_path.write_bytes(b"x" * (binary.LOG_ROTATE_BYTES + 1))
    child = start(script("print('fresh')"), log_path=log_path)
    assert wait_until(lambda: not child.alive)
    child.end()
    assert (tmp_path / "server.log.1").stat().st_size == binary.LOG_ROTATE_BYTES + 1
    assert log_path.read_text(encoding="utf-8").splitlines()[-1] == "fresh"
    assert log_path.stat().st_size < 1000


# -- dying with the parent (Linux) ---------------------------------------------------------

MIDDLE = """
import sys, threading, time
from pathlib import Path
from daemon.engine.binary import BinaryChild

made = []
def start():
    made.append(BinaryChild([sys.executable, "-c", "import time; time.sleep(60)"],
                            Path(sys.argv[1])))
if sys.argv[2] == "thread":  # from a thread that ends at once
    spawner = threading.Thread(target=start)
    spawner.start()
    spawner.join()
    time.sleep(0.3)
else:
    start()
print(made[0].pid, made[0].alive, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux-only (macOS relies on sweep)")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_the_child_dies_when_its_parent_is_killed(tmp_path: Path, where: str) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, str(tmp_path / "server.log"), where],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert middle.stdout is not None
    grandchild = 0
    try:
        ready, _, _ = select.select([middle.stdout], [], [], 20)
        assert ready, "the intermediate process printed nothing"
        pid, alive = middle.stdout.readline().decode().split()
        grandchild = int(pid)
        # Started from a thread that has ended, it still lives: PDEATHSIG follows the
        # thread that forked, and the forking happened on a lasting one.
        assert alive == "True" and not gone(grandchild)
        middle.kill()
        middle.wait(5)
        assert wait_until(lambda: gone(grandchild), timeout=5)
    finally:
        middle.kill()
        middle.wait(5)
        middle.stdout.close()
        if grandchild and not gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_child_started_from_an_ending_thread_outlives_the_thread(start: Start) -> None:
    made: list[BinaryChild] = []
    spawner = threading.Thread(target=lambda: made.append(start(SLEEPER)))
    spawner.start()
    spawner.join()
    time.sleep(0.3)
    assert made[0].alive


# -- PID files and the sweep ---------------------------------------------------------------


def test_the_pidfile_is_written_private_and_removed_on_end(start: Start, tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = start(SLEEPER, pidfile_dir=run)
    pidfile = run / f"llama-server-{child.pid}.json"
    record = json.loads(pidfile.read_text())
    assert record["pid"] == child.pid
    assert record["owner"] == os.getpid()
    assert record["exe"] == str(Path(sys.executable).resolve())
    assert record["started"] == pytest.approx(psutil.Process(child.pid).create_time(), abs=1)
    assert record["owner_started"] == pytest.approx(psutil.Process().create_time(), abs=1)
    if POSIX:
        assert pidfile.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in run.iterdir()] == [pidfile.name]  # no temporary left
    assert sweep(run) == []  # its owner (we) lives
    assert child.alive and pidfile.exists()
    child.end(grace_s=2)
    assert not pidfile.exists()
    child.end(grace_s=2)


@pytest.fixture
def named_server(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a sleeping Python whose command is called ``llama-server`` (a link to Python)."""
    link = tmp_path / "bin" / "llama-server"
    link.parent.mkdir()
    link.symlink_to(os.path.realpath(sys.executable))
    made: list[subprocess.Popen[bytes]] = []

    def make(code: str = "import time; time.sleep(60)") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(link), "-c", code])
        made.append(proc)
        assert wait_until(lambda: psutil.Process(proc.pid).cmdline()[:1] == [str(link)])
        return proc

    yield make
    for proc in made:
        proc.kill()
        proc.wait(5)


def dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has exited."""
    proc = subprocess.Popen(SLEEPER)
    started = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait(5)
    return proc.pid, started


def write_pidfile(
    run: Path,
    pid: int,
    owner: int,
    owner_started: float,
    started: float,
    name: str = "llama-server",
) -> Path:
    run.mkdir(exist_ok=True)
    path = run / f"{name}-{pid}.json"
    record = {
        "pid": pid,
        "owner": owner,
        "owner_started": owner_started,
        "exe": "x",
        "started": started,
    }
    path.write_text(json.dumps(record))
    return path


sweep_needs_posix = pytest.mark.skipif(not POSIX, reason="makes its llama-server with a symlink")


@sweep_needs_posix
def test_sweep_kills_a_server_whose_owner_is_dead(
    named_server: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.engine.binary")
    server = named_server()
    owner, owner_started = dead_pid()
    started = psutil.Process(server.pid).create_time()
    pidfile = write_pidfile(tmp_path / "run", server.pid, owner, owner_started, started)
    assert sweep(tmp_path / "run") == [server.pid]
    assert server.poll() is not None
    assert not pidfile.exists()
    assert "swept 1 llama-server" in caplog.text


@sweep_needs_posix
def test_sweep_counts_an_owner_whose_pid_was_reused_as_dead(
    named_server: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = named_server()
    started = psutil.Process(server.pid).create_time()
    me_long_ago = psutil.Process().create_time() - 100
    write_pidfile(tmp_path / "run", server.pid, os.getpid(), me_long_ago, started)
    assert sweep(tmp_path / "run") == [server.pid]


@sweep_needs_posix
def test_sweep_kills_a_server_that_ignores_sigterm(
    named_server: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = named_server(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    time.sleep(0.3)  # the handler is in place
    owner, owner_started = dead_pid()
    started = psutil.Process(server.pid).create_time()
    write_pidfile(tmp_path / "run", server.pid, owner, owner_started, started)
    began = time.monotonic()
    assert sweep(tmp_path / "run") == [server.pid]
    assert 2.5 < time.monotonic() - began < 8
    assert server.poll() is not None  # (psutil reaped it: Popen cannot tell the signal)


@sweep_needs_posix
def test_sweep_never_kills_a_process_that_started_at_another_time(
    named_server: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = named_server()
    owner, owner_started = dead_pid()
    started = psutil.Process(server.pid).create_time() - 60  # the pid was reused since
    pidfile = write_pidfile(tmp_path / "run", server.pid, owner, owner_started, started)
    assert sweep(tmp_path / "run") == []
    time.sleep(0.2)
    assert server.poll() is None
    assert not pidfile.exists()  # the recorded process is gone


@sweep_needs_posix
def test_sweep_leaves_a_server_whose_owner_lives(
    named_server: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = named_server()
    started = psutil.Process(server.pid).create_time()
    me = psutil.Process().create_time()
    pidfile = write_pidfile(tmp_path / "run", server.pid, os.getpid(), me, started)
    assert sweep(tmp_path / "run") == []
    assert server.poll() is None and pidfile.exists()


def test_sweep_leaves_a_process_with_another_name(tmp_path: Path) -> None:
    other = subprocess.Popen(SLEEPER)  # a python, not a llama-server
    try:
        owner, owner_started = dead_pid()
        started = psutil.Process(other.pid).create_time()
        pidfile = write_pidfile(tmp_path / "run", other.pid, owner, owner_started, started)
        assert sweep(tmp_path / "run") == []
        assert other.poll() is None and pidfile.exists()
        # Under the name of its executable it is swept.
        exe_name = Path(psutil.Process(other.pid).exe()).name
        renamed = pidfile.rename(tmp_path / "run" / f"{exe_name}-{other.pid}.json")
        assert sweep(tmp_path / "run", name=exe_name) == [other.pid]
        assert other.poll() is not None and not renamed.exists()
    finally:
        other.kill()
        other.wait(5)


def test_sweep_deletes_files_of_gone_or_unreadable_records(tmp_path: Path) -> None:
    run = tmp_path / "run"
    owner, owner_started = dead_pid()
    server, server_started = dead_pid()
    stale = write_pidfile(run, server, owner, owner_started, server_started)
    junk = run / "llama-server-1.json"
    junk.write_text("{not json")
    listed = run / "llama-server-2.json"
    listed.write_text("[1, 2]")
    unrelated = run / "ollama-3.json"
    unrelated.write_text("{}")
    assert sweep(run) == []
    assert not stale.exists() and not junk.exists() and not listed.exists()
    assert unrelated.exists()
    assert sweep(tmp_path / "missing") == []


# -- Windows: the job object, against a fake kernel32 --------------------------------------


class FakeFunction:
    def __init__(self, name: str, calls: list[tuple[str, tuple[Any, ...]]], result: int) -> None:
        self.name, self.calls, self.result = name, calls, result
        self.argtypes: Any = None
        self.restype: Any = None

    def __call__(self, *args: Any) -> int:
        self.calls.append((self.name, args))
        return self.result


class FakeKernel32:
    JOB = 0x7FFF_0000_1234  # a handle wider than 32 bits

    def __init__(self, assign: int = 1) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.flags: list[int] = []
        self.CreateJobObjectW = FakeFunction("CreateJobObjectW", self.calls, self.JOB)
        self.SetInformationJobObject = FakeFunction("SetInformationJobObject", self.calls, 1)
        self.AssignProcessToJobObject = FakeFunction("AssignProcessToJobObject", self.calls, assign)
        self.CloseHandle = FakeFunction("CloseHandle", self.calls, 1)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKernel32, dict[str, Any]]]:
    """Pretend to be Windows: kernel32 is fake; Popen sees the Windows-only arguments."""
    fake = FakeKernel32()
    popen_args: dict[str, Any] = {}
    real_popen = subprocess.Popen

    class WindowsPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, creationflags: int = 0, **kwargs: Any) -> None:
            popen_args.update(kwargs, creationflags=creationflags)
            super().__init__(*args, **kwargs)
            self._handle = 4242  # what Windows' Popen keeps: the process handle

    def win_dll(name: str, use_last_error: bool = False) -> FakeKernel32:
        assert name == "kernel32" and use_last_error
        return fake

    monkeypatch.setattr(platform, "is_windows", lambda: True)
    monkeypatch.setattr(ctypes, "WinDLL", win_dll, raising=False)
    monkeypatch.setattr(subprocess, "Popen", WindowsPopen)
    yield fake, popen_args


def test_on_windows_the_child_goes_into_a_kill_on_close_job(
    windows: tuple[FakeKernel32, dict[str, Any]], tmp_path: Path
) -> None:
    fake, popen_args = windows
    child = BinaryChild(SLEEPER, tmp_path / "server.log")
    try:
        assert popen_args["creationflags"] == 0x08000000  # CREATE_NO_WINDOW
        assert popen_args["preexec_fn"] is None and popen_args["start_new_session"] is False
        assert fake.names() == [
            "CreateJobObjectW",
            "SetInformationJobObject",
            "AssignProcessToJobObject",
        ]
        (_, create), (_, setinfo), (_, assign) = fake.calls
        assert create == (None, None)
        job, info_class, info_ref, size = setinfo
        assert job == fake.JOB and info_class == 9  # JobObjectExtendedLimitInformation
        info = info_ref._obj  # what ctypes.byref points at
        assert info.BasicLimitInformation.LimitFlags == 0x2000  # KILL_ON_JOB_CLOSE
        assert size == ctypes.sizeof(info) == (144 if ctypes.sizeof(ctypes.c_void_p) == 8 else 112)
        assert assign == (fake.JOB, 4242)
        # Handles are pointer-sized: no restype would cut them to a 32-bit int.
        assert fake.CreateJobObjectW.restype is ctypes.c_void_p
        assert fake.AssignProcessToJobObject.argtypes == [ctypes.c_void_p, ctypes.c_void_p]
    finally:
        child.end(grace_s=2)
    assert fake.calls[-1] == ("CloseHandle", (fake.JOB,))
    child.end(grace_s=2)
    assert fake.names().count("CloseHandle") == 1


def test_on_windows_a_refused_job_is_closed_and_the_child_runs_on(
    windows: tuple[FakeKernel32, dict[str, Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, _ = windows
    fake.AssignProcessToJobObject.result = 0
    child = BinaryChild(SLEEPER, tmp_path / "server.log")
    try:
        assert fake.names()[-1] == "CloseHandle" and child.alive
        assert "could not put pid" in caplog.text
    finally:
        child.end(grace_s=2)
    assert fake.names().count("CloseHandle") == 1


def test_child_exited_carries_code_and_tail() -> None:
    error = ChildExited(3, ["a", "b"])
    assert (error.code, error.tail) == (3, ["a", "b"])
    assert str(error) == "the program exited with code 3"
