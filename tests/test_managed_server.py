"""``backend = "llama-server"``: a real llama-server that yomitori starts, talks to,
restarts after a crash and stops, on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import needs_model
from servers import need_llama_server

from daemon.engine.server import ManagedServerEngine, share_file
from daemon.errors import EngineError, ModelError, WorkerCrashed
from daemon.models import ModelSpec, check_spec

pytestmark = needs_model

GREEDY = {"temperature": 0.0, "seed": 1}
MESSAGES = [{"role": "system", "content": "Write image prompts."},
            {"role": "user", "content": "a lighthouse"}]  # fmt: skip


@pytest.fixture(scope="module")
def binary() -> Path:
    return need_llama_server()


def managed(model: Path, binary: Path, **opts: object) -> ModelSpec:
    spec = ModelSpec(name="managed", backend="llama-server", path=model, n_ctx=2048, threads=2)
    return spec.with_opts(server=str(binary), **opts)


@pytest.fixture
def engine(tmp_path):
    eng = ManagedServerEngine(log_path=tmp_path / "llama-server.log", run_dir=tmp_path / "run")
    yield eng
    eng.unload()


def test_starts_answers_and_unload_ends_the_process(engine, vision_files, binary):
    spec = managed(vision_files["model"], binary)
    load_s = engine.load(spec)
    assert load_s > 0 and engine.loaded
    pid = engine.pid
    server = psutil.Process(pid)
    rss_loaded = server.memory_info().rss
    # Loopback only, a port it chose, the key by environment and never on the command line.
    cmdline = server.cmdline()
    assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"
    assert cmdline[cmdline.index("--port") + 1] == "0" and engine.port
    assert engine.api_key and not any(engine.api_key in part for part in cmdline)
    assert server.environ().get("LLAMA_API_KEY") == engine.api_key
    assert "--no-webui" in cmdline and cmdline[cmdline.index("-np") + 1] == "1"
    # Without the key the server refuses (its /health stays public).
    url = f"http://127.0.0.1:{engine.port}"
    assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    result = engine.generate(MESSAGES, {**GREEDY, "max_tokens": 6})
    assert result.completion_tokens > 0 and result.prompt_tokens > 0
    stats = engine.stats()
    assert stats["backend"] == "llama-server" and stats["pid"] == pid
    assert stats["rss_bytes"] > 50 * 2**20
    assert engine.load(spec) == 0.0  # resident: nothing to do
    engine.unload()
    assert not engine.loaded and engine.pid is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # The memory went with the process.
    assert rss_loaded > 50 * 2**20
    assert not list((engine._run_dir).glob("*.json")), "the PID file is removed"


def test_prefix_reuse_through_the_managed_server(engine, vision_files, binary):
    engine.load(managed(vision_files["model"], binary))
    system = "Write image prompts. " + " ".join(f"Rule {i}: be vivid." for i in range(50))
    first = engine.generate(
        [{"role": "system", "content": system}, {"role": "user", "content": "a fox"}],
        {**GREEDY, "max_tokens": 3},
    )
    second = engine.generate(
        [{"role": "system", "content": system}, {"role": "user", "content": "a bear"}],
        {**GREEDY, "max_tokens": 3},
    )
    assert second.reused_tokens >= first.prompt_tokens - 20  # fmt: skip


def test_a_crash_fails_that_request_and_the_next_starts_a_fresh_server(engine, vision_files,
                                                                        binary):  # fmt: skip
    engine.load(managed(vision_files["model"], binary))
    first_pid = engine.pid
    seen = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(MESSAGES, {**GREEDY, "max_tokens": 1500}, lambda _p: seen.set())
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    assert seen.wait(30)
    os.kill(first_pid, signal.SIGKILL)
    thread.join(10)
    assert errors and isinstance(errors[0], WorkerCrashed), errors
    assert "llama-server stopped unexpectedly (signal SIGKILL)" in str(errors[0])
    result = engine.generate(MESSAGES, {**GREEDY, "max_tokens": 3})
    assert result.completion_tokens > 0 and result.load_s > 0
    assert engine.pid not in (None, first_pid)


def test_cancel_returns_at_once(engine, vision_files, binary):
    engine.load(managed(vision_files["model"], binary))
    seen = threading.Event()
    results = []
    options = {**GREEDY, "max_tokens": 1500}
    thread = threading.Thread(
        target=lambda: results.append(engine.generate(MESSAGES, options, lambda _p: seen.set()))
    )
    thread.start()
    assert seen.wait(30)
    started = time.perf_counter()
    engine.cancel()
    thread.join(5)
    assert results[0].finish_reason == "cancelled"
    assert (time.perf_counter() - started) < 0.2


def test_share_keeps_a_fixed_port_and_a_private_key_file(engine, vision_files, binary):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine.load(managed(vision_files["model"], binary, share=True, port=port))
    assert engine.port == port
    path = share_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shared = json.loads(path.read_text())
    assert shared["url"] == f"http://127.0.0.1:{port}/v1"
    # Another program (ComfyUI, Open WebUI) uses the same resident model with that key.
    answer = httpx.post(f"{shared['url']}/chat/completions", timeout=60,
                        headers={"Authorization": f"Bearer {shared['api_key']}"},
                        json={"messages": MESSAGES, "max_tokens": 3})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["choices"]
    engine.unload()
    assert not path.exists()


def test_a_port_already_taken_is_said(engine, vision_files, binary):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ModelError) as info:
            engine.load(managed(vision_files["model"], binary, share=True, port=port))
    assert f"port {port}" in str(info.value) and "another program" in str(info.value)
    assert not engine.loaded


def fake_server(tmp_path: Path, body: str) -> Path:
    """A stand-in *binary* for failure modes a real llama-server cannot be made to show
    on demand (never ready, exits at once)."""
    script = tmp_path / "llama-server"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(0o755)
    return script


def test_a_server_that_never_becomes_ready(engine, vision_files, tmp_path):
    script = fake_server(tmp_path, "import time\nprint('loading', flush=True)\ntime.sleep(60)")
    spec = managed(vision_files["model"], script, timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"did not become ready within 1\.5 s"):
        engine.load(spec)
    assert time.monotonic() - started < 10
    assert not engine.loaded


def test_a_server_that_exits_while_starting(engine, vision_files, tmp_path, binary):
    script = fake_server(tmp_path, "import sys\nprint('error: invalid argument: --no-webui')\n"
                                   "sys.exit(1)")  # fmt: skip
    with pytest.raises(ModelError, match="does not take one of the flags"):
        engine.load(managed(vision_files["model"], script))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="could not load 'managed'"):
        engine.load(managed(broken, binary))


def test_missing_binary_and_files_are_said(vision_files, tmp_path, monkeypatch):
    spec = managed(vision_files["model"], tmp_path / "nope" / "llama-server")
    with pytest.raises(ModelError, match="llama-server not found at"):
        check_spec(spec)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("daemon.platform.beside_python", lambda _name: None)
    plain = ModelSpec(name="m", backend="llama-server", path=vision_files["model"])
    with pytest.raises(ModelError, match="not on PATH"):
        check_spec(plain)
    gone = managed(tmp_path / "gone.gguf", tmp_path)
    with pytest.raises(ModelError, match="Model file not found"):
        check_spec(gone)


def test_vision_through_the_managed_server(engine, vision_files, binary):
    from daemon.prompts import image_data_url

    spec = managed(vision_files["model"], binary)
    spec = ModelSpec(**{**spec.__dict__, "mmproj": vision_files["mmproj"]})
    engine.load(spec)
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), (20, 120, 220)).save(buffer, format="PNG")
    messages = [{"role": "system", "content": "Describe the image."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(buffer.getvalue())}},
                    {"type": "text", "text": "What is in it?"}]}]  # fmt: skip
    result = engine.generate(messages, {**GREEDY, "max_tokens": 4})
    assert result.prompt_tokens > 16 and result.completion_tokens > 0


def test_the_server_dies_with_its_owner(vision_files, binary, tmp_path):
    """A daemon killed with SIGKILL leaves no llama-server holding memory."""
    import subprocess

    code = f"""
import sys, time
from pathlib import Path
from daemon.engine.server import ManagedServerEngine
from daemon.models import ModelSpec
spec = ModelSpec(name="m", backend="llama-server", path=Path({str(vision_files["model"])!r}),
                 n_ctx=1024, threads=1).with_opts(server={str(binary)!r})
engine = ManagedServerEngine(log_path=Path({str(tmp_path / "s.log")!r}),
                             run_dir=Path({str(tmp_path / "run")!r}))
engine.load(spec)
print(engine.pid, flush=True)
time.sleep(120)
"""
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        pid = int(owner.stdout.readline())
        assert psutil.pid_exists(pid)
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        owner.kill()
